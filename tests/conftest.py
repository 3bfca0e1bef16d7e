import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/naive.py

# New indexes in the tests use the small Fashion-MNIST encoder (28x28 grey: fast, and many tests count on its
# class-level codes); tests of the photo default unset this (tests/test_photo_default.py).
os.environ["HASHTOOL_MODEL"] = "fashion-mnist"

# Load the Numba kernels up front, so index tests exercise them and not the numpy scan that a fresh
# process uses for small searches (hashtool/hashindex/_numpy_scan.py; tested on its own).
import hashtool.hashindex._flat_kernels  # noqa: E402,F401
import hashtool.hashindex._mih_kernels  # noqa: E402,F401

settings.register_profile("ci", deadline=None, max_examples=100, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.register_profile("nojit", deadline=None, max_examples=15, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
