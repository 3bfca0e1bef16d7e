"""Checkpoints that rebuild their model on their own, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain values and tensors:

``format``      "hashtool-checkpoint"
``version``     :data:`CHECKPOINT_VERSION`; a newer one is refused with a clear error
``method``      registered model name (see :mod:`hashtool.train.models`)
``config``      ``dataclasses.asdict(model.config)``
``state_dict``  the model's weights
``bits``, ``binarize``
``preprocess``  :meth:`hashtool.preprocess.Preprocess.to_dict`
``meta``        free-form JSON-able dict: dataset, protocol, metrics, training history, epoch...
``versions``    hashtool, torch, numpy, python
"""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import numpy as np
import torch

from hashtool import __version__
from hashtool.errors import ModelError
from hashtool.preprocess import Preprocess
from hashtool.train.models import MODELS, HashModel

CHECKPOINT_FORMAT = "hashtool-checkpoint"
CHECKPOINT_VERSION = 1


def atomic_torch_save(obj, path) -> None:
    """torch.save through :func:`hashtool.fileio.atomic_write`: the old file survives any crash."""
    from hashtool.fileio import atomic_write

    with atomic_write(path) as f:
        torch.save(obj, f)


def save_checkpoint(path, model: HashModel, preprocess: Preprocess, meta: dict | None = None, extra: dict | None = None) -> None:
    """Save ``model`` atomically. ``extra`` holds additional tensors/plain values (optimizer state...)."""
    if model.model_name not in MODELS:
        raise ModelError(f"model class {type(model).__name__} is not registered; use @register_model")
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "method": model.model_name,
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "bits": int(model.bits),
        "binarize": model.binarize,
        "preprocess": preprocess.to_dict(),
        "meta": dict(meta or {}),
        "versions": {
            "hashtool": __version__,
            "torch": str(torch.__version__),  # TorchVersion is not weights_only-loadable
            "numpy": str(np.__version__),
            "python": platform.python_version(),
        },
    }
    if extra:
        ckpt["extra"] = extra
    atomic_torch_save(ckpt, path)


def read_checkpoint(path) -> dict:
    """Load and validate the raw checkpoint dict (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for non-checkpoint files
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a hashtool checkpoint (no 'format': '{CHECKPOINT_FORMAT}' entry)")
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION or version < 1:
        raise ModelError(
            f"{path}: checkpoint format version {version!r} is not supported by hashtool {__version__} "
            f"(supports 1..{CHECKPOINT_VERSION}); upgrade hashtool"
        )
    if ckpt.get("method") not in MODELS:
        _import_methods()
    if ckpt.get("method") not in MODELS:
        raise ModelError(f"{path}: unknown method {ckpt.get('method')!r}; known: {sorted(MODELS)}")
    return ckpt


def _import_methods() -> None:
    """Import the modules that register models (they register on import)."""
    import importlib

    for mod in ("hashtool.train.methods",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def load_checkpoint(path) -> tuple[HashModel, dict]:
    """Rebuild the model of a checkpoint in eval mode; returns ``(model, checkpoint dict)``."""
    ckpt = read_checkpoint(path)
    config_cls, model_cls = MODELS[ckpt["method"]]
    try:
        config = config_cls(**ckpt["config"])
        model = model_cls(config)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise ModelError(f"{path}: checkpoint does not match method {ckpt['method']!r}: {str(exc)[:300]}") from None
    model.eval()
    return model, ckpt


def checkpoint_preprocess(ckpt: dict) -> Preprocess:
    return Preprocess.from_dict(ckpt["preprocess"])
