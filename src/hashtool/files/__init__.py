"""Files in, pixels out: folder walking and the one image loader (a leaf: standard library, numpy, Pillow,
:mod:`hashtool.errors` and :mod:`hashtool.preprocess` only).

``encode``, ``store`` and ``datasets`` all walk folders and decode images through this package; none of
them reaches sideways into another to borrow it (``tests/test_architecture.py`` checks the direction).
"""

from hashtool.files.images import (
    ALLOWED_FORMATS,
    BACKGROUND,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    SUPPORTED_EXTENSIONS,
    LoadedImage,
    convert_image,
    find_images,
    load_image,
    open_image,
    read_image,
)
from hashtool.files.walk import INDEX_MARKER, FileEntry, WalkResult, check_root, walk_images

__all__ = [
    "ALLOWED_FORMATS",
    "BACKGROUND",
    "check_root",
    "INDEX_MARKER",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "FileEntry",
    "LoadedImage",
    "WalkResult",
    "convert_image",
    "find_images",
    "load_image",
    "open_image",
    "read_image",
    "walk_images",
]
