import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/naive.py

# Load the Numba kernels up front, so index tests exercise them and not the numpy scan that a fresh
# process uses for small searches (hashtool/hashindex/_numpy_scan.py; tested on its own).
import hashtool.hashindex._flat_kernels  # noqa: E402,F401
import hashtool.hashindex._mih_kernels  # noqa: E402,F401

settings.register_profile("ci", deadline=None, max_examples=100, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.register_profile("nojit", deadline=None, max_examples=15, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
