"""Image indexes on disk: the crash-safe, locked generation store, incremental builds, verification,
near-duplicate groups. Torch-free: numpy, the hashindex, the onnxruntime encoder and the
:mod:`hashtool.files` leaf (folder walking, image loading) only.

Where an index lives: ``--index PATH`` if given, else the ``HASHTOOL_INDEX`` environment variable, else
``hashtool-index`` in the current folder, so ``hashtool index build images/`` followed by
``hashtool query img.png`` from the same folder just works. The encoder of a new index: ``--model`` if given,
else ``HASHTOOL_MODEL``, else the bundled photo encoder.
"""

from __future__ import annotations

import os
from pathlib import Path

INDEX_ENV_VAR = "HASHTOOL_INDEX"
DEFAULT_INDEX_NAME = "hashtool-index"
# Encoders that ship with hashtool (package data), by the name ``--model`` accepts for them.
BUNDLED_ENCODERS = {
    "photo": "photo-encoder.onnx",  # edit-contrastive on EfficientNet-Lite0: natural photos (the default)
    "fashion-mnist": "fashion-mnist-encoder.onnx",  # nin-latent, 28x28 grey clothing classes (research examples)
}
DEFAULT_ENCODER = "photo"


def resolve_index_path(path=None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get(INDEX_ENV_VAR, "").strip()
    return Path(env) if env else Path(DEFAULT_INDEX_NAME)


def bundled_encoder_path(name: str = DEFAULT_ENCODER) -> Path:
    """The file of a bundled encoder (see :data:`BUNDLED_ENCODERS`)."""
    from importlib import resources

    from hashtool.errors import ArgumentError

    if name not in BUNDLED_ENCODERS:
        raise ArgumentError(f"no bundled encoder named {name!r}; the bundled ones are {', '.join(BUNDLED_ENCODERS)}")
    return Path(str(resources.files("hashtool") / "assets" / BUNDLED_ENCODERS[name]))


MODEL_ENV_VAR = "HASHTOOL_MODEL"


def default_encoder_path() -> Path:
    """The encoder a new index uses when no ``--model`` is given: ``$HASHTOOL_MODEL`` (a bundled encoder's name
    or a file), else the bundled photo encoder."""
    chosen = os.environ.get(MODEL_ENV_VAR, "").strip()
    if not chosen:
        return bundled_encoder_path(DEFAULT_ENCODER)
    return Path(resolve_model(chosen))


def resolve_model(model):
    """``--model`` as a file path: a bundled encoder's name becomes its file; anything else is kept as given."""
    if model is not None and str(model) in BUNDLED_ENCODERS and not Path(model).exists():
        return str(bundled_encoder_path(str(model)))
    return model
