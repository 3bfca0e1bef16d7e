"""Small HashModel subclasses for the export/encode tests and benchmarks/bench_encode.py.

They are NOT registered in hashtool.train.models.MODELS at import (other test modules iterate over the
registry); :func:`registered` registers one for the duration of a ``with`` block when a checkpoint is needed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from hashtool.preprocess import Preprocess
from hashtool.train.models import MODELS, HashConfig, HashModel


@dataclass
class TinyConfig(HashConfig):
    bits: int = 32
    in_channels: int = 1
    height: int = 28
    width: int = 28
    rule: str = "sign"  # "sign" (tanh head) or "sigmoid" (sigmoid head)
    width_mult: int = 1


class TinyConvHash(HashModel):
    """conv-BN-ReLU-pool x2 -> linear hash layer -> tanh/sigmoid, plus a decoder that export must drop."""

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.binarize = config.rule
        c, m = config.in_channels, config.width_mult
        self.features = nn.Sequential(
            nn.Conv2d(c, 8 * m, 3, padding=1), nn.BatchNorm2d(8 * m), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8 * m, 16 * m, 3, padding=1), nn.BatchNorm2d(16 * m), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.hash = nn.Linear(16 * m * 16, config.bits)
        self.decoder = nn.Linear(config.bits, c * config.height * config.width)  # not part of the encoder
        g = torch.Generator().manual_seed(config.bits * 7 + c)
        for mod in self.modules():  # non-trivial batchnorm statistics, so eval-mode BN matters
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.1)

    def encode(self, x):
        h = self.hash(self.features(x))
        return torch.tanh(h) if self.binarize == "sign" else torch.sigmoid(h)

    def forward(self, x):
        return self.decoder(self.encode(x))


@dataclass
class IdentityConfig(HashConfig):
    bits: int = 784
    in_channels: int = 1
    height: int = 28
    width: int = 28


class IdentityHash(HashModel):
    """encode(x) = the normalised input, flattened: exporting it with output="real" exposes the graph's normalisation."""

    def __init__(self, config: IdentityConfig):
        super().__init__(config)
        assert config.bits == config.in_channels * config.height * config.width

    def encode(self, x):
        return x.flatten(1)


@dataclass
class ConstConfig(HashConfig):
    bits: int = 16
    rule: str = "sign"


class ConstHash(HashModel):
    """encode(x) = fixed values on and around the threshold (plus 0 * x, so the input stays in the graph)."""

    def __init__(self, config: ConstConfig):
        super().__init__(config)
        self.binarize = config.rule
        t = 0.0 if config.rule == "sign" else 0.5
        vals = [t, -0.0 + t, t + 1e-7, t - 1e-7, t + 0.25, t - 0.25, 1e30, -1e30]
        vals = (vals * (config.bits // len(vals) + 1))[: config.bits]
        self.register_buffer("values", torch.tensor(vals, dtype=torch.float32))

    def encode(self, x):
        return self.values.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


class NoisyHash(TinyConvHash):
    """Adds fresh noise at every call: onnxruntime and torch disagree, so the parity check must fail."""

    def encode(self, x):
        return super().encode(x) + torch.randn(x.shape[0], self.bits)


def preprocess_for(config) -> Preprocess:
    c = config.in_channels
    return Preprocess(config.height, config.width, "L" if c == 1 else "RGB", "stretch", (0.5,) * c, (0.5,) * c)


# (id, model factory) for parametrised tests and the benchmark: both rules, 1 and 3 channels
TINY_VARIANTS = {
    "tiny-sign-L28": lambda: TinyConvHash(TinyConfig(bits=32, rule="sign")),
    "tiny-sigmoid-L28": lambda: TinyConvHash(TinyConfig(bits=48, rule="sigmoid")),
    "tiny-sign-RGB32": lambda: TinyConvHash(TinyConfig(bits=64, in_channels=3, height=32, width=32, rule="sign")),
    "tiny-sigmoid-RGB32": lambda: TinyConvHash(TinyConfig(bits=16, in_channels=3, height=32, width=32, rule="sigmoid")),
}


@contextlib.contextmanager
def registered(name: str, config_cls, model_cls):
    """Register ``model_cls`` under ``name`` for the block (so save/load_checkpoint work), then remove it."""
    if name in MODELS:
        raise RuntimeError(f"{name} already registered")
    old = model_cls.__dict__.get("model_name")
    model_cls.model_name = name
    MODELS[name] = (config_cls, model_cls)
    try:
        yield
    finally:
        MODELS.pop(name, None)
        if old is None:
            del model_cls.model_name
        else:
            model_cls.model_name = old


def registered_methods() -> list[str]:
    """Names of every real method: MODELS after importing hashtool.train.methods (if it exists yet)."""
    try:
        import hashtool.train.methods  # noqa: F401  (registers the methods)
    except ModuleNotFoundError as exc:
        if exc.name != "hashtool.train.methods":
            raise
    return sorted(MODELS)
