import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/naive.py

settings.register_profile("ci", deadline=None, max_examples=100, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.register_profile("nojit", deadline=None, max_examples=15, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
