"""hashtool: learned binary hash codes for image retrieval.

This module stays import-light on purpose: ``hashtool --help`` imports it, and must not pay for numpy,
numba, onnxruntime or torch.
"""

__version__ = "0.1.0"
