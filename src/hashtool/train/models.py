"""Models and their dataclass configs, and nothing else.

Every deep hashing model derives from :class:`HashModel` and is registered under its method name with
:func:`register_model`, so a checkpoint can rebuild it from ``(name, config dict)`` alone.

The contract export and evaluation rely on:

* ``model.encode(x)`` takes float32 NCHW images already normalised by
  :meth:`hashtool.preprocess.Preprocess.affine` and returns the real-valued hash layer ``(n, bits)``
  (the activations just before binarisation: tanh outputs, sigmoid outputs...). It must use the encoder
  part only (no decoder, classifier or codeword table), so export can cut the graph there.
* ``model.binarize`` names the rule that turns that layer into bits: ``"sign"`` (bit = value >= 0, so 0 is
  bit 1, as in :mod:`hashtool.codes`) or ``"sigmoid"`` (bit = value > 0.5).
* ``model.config`` is a dataclass with a ``bits`` field; ``dataclasses.asdict(config)`` must hold only
  JSON-able values so the checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hashtool.codes import BINARIZE_RULES, rule_threshold  # noqa: F401  (the one rule lives in codes; re-exported)

MODELS: dict[str, tuple[type, type]] = {}


def register_model(name: str, config_cls: type):
    """Class decorator: register a HashModel subclass and its config dataclass under ``name``."""

    def deco(cls):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.model_name = name
        MODELS[name] = (config_cls, cls)
        return cls

    return deco


def binarize(real: torch.Tensor, rule: str) -> torch.Tensor:
    """Bits (uint8 0/1) from the real-valued hash layer under ``rule`` (:data:`hashtool.codes.BINARIZE_RULES`)."""
    threshold, inclusive = rule_threshold(rule)
    return ((real >= threshold) if inclusive else (real > threshold)).to(torch.uint8)


@dataclass
class HashConfig:
    """Fields every model config has."""

    bits: int = 32
    in_channels: int = 1
    height: int = 28
    width: int = 28


class HashModel(nn.Module):
    """Base class of hashtool's deep hashing models."""

    model_name: str = ""
    binarize: str = "sign"

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def bits(self) -> int:
        return self.config.bits

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Real-valued hash layer (n, bits) from normalised NCHW images; encoder part only."""
        raise NotImplementedError

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 0/1 bits (n, bits) under this model's binarize rule."""
        return binarize(self.encode(x), self.binarize)
