"""``contrastive``: unsupervised hash codes from two augmented views of each image, trained with a contrastive loss.

Our method, after CIBHash ("Unsupervised Hashing with Contrastive Information Bottleneck": two augmented views of
every image, straight-through sign codes, a contrastive loss between the codes of the views) and IMSAT
("Learning Discrete Representations via Information Maximizing Self-Augmented Training": codes invariant to
augmentation, balanced and decorrelated bits). It learns from the images alone; labels are never read.

Per batch of ``batch_size`` training images, two views of each are drawn by the view ops of ``views`` (the
``--augment`` language, :mod:`hashtool.train.views`: random resized crops, flips, rotations, brightness and
contrast jitter, random erasing) and go through the encoder together (one batch of 2n, so BatchNorm sees both).
The loss is the contrastive loss on codes shared with ``edit-contrastive``
(:func:`hashtool.train.contrastive.code_contrastive_loss`): NT-Xent at ``temperature`` between the two views'
codes (sign with a straight-through gradient when ``straight_through`` is 1, the tanh outputs otherwise), plus
``quant``, ``balance`` and ``decorr`` times the quantisation, bit-balance and decorrelation terms.

The encoder: 3x3 convolutions with BatchNorm and ReLU (``filters`` per stage, two per stage, 2x2 max-pooling
between stages), global average pooling, ``Linear(filters[-1], hidden) -> BatchNorm -> ReLU -> Linear(hidden,
bits) -> tanh``. Bits are ``u >= 0`` (the sign rule).

``rotate`` (on by default): after the last epoch the code layer is centred and rotated by ITQ's rotation fitted
on training codes (:func:`hashtool.train.methods.common.fold_itq_rotation`), folded into the last linear layer.

Schedule: 3 epochs of 10,000 images (``epoch_images``, pairs of views), batch 256, Adam with the learning rate
decayed from ``lr`` to ``lr / 100`` by a cosine; about 22 s at 2 threads here. Every default was chosen on
validation mAP (benchmarks/RESULTS.md, "contrastive: what was tried"): cosine similarity of the tanh outputs
beat straight-through codes, mild views (``crop:0.7,hflip,jitter:0.2``) beat strong ones, the flattened last
feature map beat global pooling, the rotation added 0.076; a 16-epoch schedule scored far lower. The engine
keeps the last epoch (``select`` = "last": no label is used for selection either). Measured on Fashion-MNIST:
level with ITQ (0.441 / 0.464 / 0.479 at 16 / 32 / 64 bits against 0.449 / 0.472 / 0.477), not above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hashtool.train.contrastive import code_contrastive_loss
from hashtool.train.methods import Method, Phase, register_method
from hashtool.train.methods.common import fold_itq_rotation
from hashtool.train.models import HashConfig, HashModel, register_model

NAME = "contrastive"
MEAN, STD = (0.5,), (0.5,)

HPARAMS = {
    "epochs": 3,
    "lr": 2e-3,
    "views": "crop:0.7,hflip,jitter:0.2",
    "temperature": 0.3,
    "straight_through": 0,
    "quant": 0.0,
    "balance": 0.1,
    "decorr": 0.1,
    "hidden": 256,
    "filters": "16,32,64",
    "convs_per_stage": 1,
    "pool": "flatten",
    "rotate": True,
}


@dataclass
class ContrastiveConfig(HashConfig):
    filters: tuple = (16, 32, 64)
    convs_per_stage: int = 1
    hidden: int = 256
    pool: str = "flatten"  # "flatten": the last stage's whole feature map; "avg": global average pooling

    def __post_init__(self):
        self.filters = [int(f) for f in self.filters]


def conv_bn_encoder(in_channels: int, filters, per_stage: int, pool: str) -> nn.Sequential:
    """Stages of ``per_stage`` x (3x3 conv, BatchNorm, ReLU), 2x2 max-pool between stages, then the last
    stage's feature map flattened (``pool`` = "flatten") or averaged over space ("avg")."""
    layers, c = [], in_channels
    for i, f in enumerate(filters):
        for _ in range(per_stage):
            layers += [nn.Conv2d(c, f, 3, padding=1, bias=False), nn.BatchNorm2d(f), nn.ReLU(inplace=True)]
            c = f
        if i < len(filters) - 1:
            layers.append(nn.MaxPool2d(2))
    if pool == "avg":
        layers.append(nn.AdaptiveAvgPool2d(1))
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


@register_model(NAME, ContrastiveConfig)
class ContrastiveHash(HashModel):
    binarize = "sign"

    def __init__(self, config: ContrastiveConfig):
        super().__init__(config)
        if config.pool not in ("flatten", "avg"):
            raise ValueError(f"pool must be flatten or avg, got {config.pool!r}")
        self.features = conv_bn_encoder(config.in_channels, config.filters, config.convs_per_stage, config.pool)
        fh, fw = config.height, config.width
        for _ in config.filters[1:]:
            fh, fw = fh // 2, fw // 2
        dim = config.filters[-1] * (1 if config.pool == "avg" else fh * fw)
        self.head = nn.Sequential(nn.Linear(dim, config.hidden), nn.BatchNorm1d(config.hidden),
                                  nn.ReLU(inplace=True), nn.Linear(config.hidden, config.bits))

    def pre_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pre_code(x))


def _fill(channels: int) -> torch.Tensor:
    return torch.full((channels,), -MEAN[0] / STD[0])  # the normalised value of a black pixel


def two_views(x: torch.Tensor, spec: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the normalised batch ``x`` under the ``--augment`` spec ``spec``."""
    from hashtool.train.data import augment_batch, parse_augment

    ops, fill = parse_augment(spec), _fill(x.shape[1]).to(x.device)
    return augment_batch(x, ops, fill, generator), augment_batch(x, ops, fill, generator)


def contrastive_loss(model: ContrastiveHash, batch, ctx):
    hp = ctx.hparams
    # Training views follow torch's seeded global generator (restored on --resume); validation views are
    # fixed by the batch, so the validation loss compares epochs on the same views.
    seed = int(torch.randint(0, 2**62, (1,))) if ctx.training else int(batch.indices[0])
    a, b = two_views(batch.clean, hp["views"], torch.Generator().manual_seed(seed))
    x = torch.cat([a, b])
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    u = model.encode(x)
    return code_contrastive_loss(u[: len(a)], u[len(a):], hp)


def _on_epoch_end(model: ContrastiveHash, ctx, data):
    # After the last epoch: centre and ITQ-rotate the code layer (module docstring), with BatchNorm in eval mode.
    if ctx.hparams["rotate"] and ctx.epoch == ctx.epochs - 1:
        model.eval()
        try:
            fold_itq_rotation(model.head[-1], model.pre_code, data.images)
        finally:
            model.train()


def _phases(hp):
    return [Phase("main", epochs=int(hp["epochs"]), lr=float(hp["lr"]), lr_end=float(hp["lr"]) * 0.01, schedule="cosine")]


def _make_config(bits, in_channels, height, width, hp):
    from hashtool.errors import ArgumentError

    try:
        filters = [int(f) for f in str(hp["filters"]).split(",")]
    except ValueError:
        raise ArgumentError(f"--hp filters={hp['filters']!r}: give the filters per stage as integers, as in 16,32,64") from None
    if not filters or min(filters) < 1 or int(hp["convs_per_stage"]) < 1:
        raise ArgumentError("--hp filters and convs_per_stage must be positive")
    if hp["pool"] not in ("flatten", "avg"):
        raise ArgumentError(f"--hp pool={hp['pool']!r}: use flatten or avg")
    return ContrastiveConfig(bits=bits, in_channels=in_channels, height=height, width=width, hidden=int(hp["hidden"]),
                             filters=filters, convs_per_stage=int(hp["convs_per_stage"]), pool=str(hp["pool"]))


register_method(
    Method(
        name=NAME,
        loss=contrastive_loss,
        phases=_phases,
        make_config=_make_config,
        hparams=dict(HPARAMS),
        augment="none",  # the loss draws its two views from the clean batch
        batch_size=256,
        epoch_images=10000,
        select="last",
        mean=MEAN,
        std=STD,
        on_epoch_end=_on_epoch_end,
        summary="two augmented views per image, a contrastive loss on straight-through sign codes, balanced and decorrelated bits; after CIBHash and IMSAT",
    )
)
