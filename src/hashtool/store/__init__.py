"""Image indexes on disk: the crash-safe, locked generation store, incremental builds, verification,
near-duplicate groups. Torch-free: numpy, the hashindex, the onnxruntime encoder and the
:mod:`hashtool.files` leaf (folder walking, image loading) only.

Where an index lives: ``--index PATH`` if given, else the ``HASHTOOL_INDEX`` environment variable, else
``hashtool-index`` in the current folder, so ``hashtool index build images/`` followed by
``hashtool query img.png`` from the same folder just works.
"""

from __future__ import annotations

import os
from pathlib import Path

INDEX_ENV_VAR = "HASHTOOL_INDEX"
DEFAULT_INDEX_NAME = "hashtool-index"
DEFAULT_ENCODER = "default-encoder.onnx"


def resolve_index_path(path=None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get(INDEX_ENV_VAR, "").strip()
    return Path(env) if env else Path(DEFAULT_INDEX_NAME)


def default_encoder_path() -> Path:
    """The encoder bundled with hashtool (package data)."""
    from importlib import resources

    return Path(str(resources.files("hashtool") / "assets" / DEFAULT_ENCODER))
