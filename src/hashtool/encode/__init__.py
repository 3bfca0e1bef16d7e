"""Torch-free runtime: the onnxruntime encoder (numpy, pillow, onnxruntime).

``load_image(path, preprocess)`` (from the :mod:`hashtool.files` leaf, re-exported here as part of the
runtime API) turns a file into the uint8 HWC array a model takes;
``Encoder(path, threads=None)`` opens an encoder written by ``hashtool export`` and turns such arrays
(``encode``) or image files (``encode_files``) into packed codes in :mod:`hashtool.codes`' format.
"""

from hashtool.encode.encoder import ENCODER_FORMAT, ENCODER_FORMAT_VERSION, EncodeResult, Encoder, Failure
from hashtool.files.images import (
    ALLOWED_FORMATS,
    BACKGROUND,
    MAX_PIXELS,
    SUPPORTED_EXTENSIONS,
    convert_image,
    find_images,
    load_image,
    read_image,
)

__all__ = [
    "ALLOWED_FORMATS",
    "BACKGROUND",
    "ENCODER_FORMAT",
    "ENCODER_FORMAT_VERSION",
    "MAX_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "EncodeResult",
    "Encoder",
    "Failure",
    "convert_image",
    "find_images",
    "load_image",
    "read_image",
]
