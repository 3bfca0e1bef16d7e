"""The method registry and the engine's extension contract. Importing this package registers every method.

How to add a method (one module in this package, imported at the bottom of this file)
====================================================================================

1. The model: a :class:`hashtool.train.models.HashModel` subclass with a config dataclass (fields ``bits``,
   ``in_channels``, ``height``, ``width`` plus the architecture's own, JSON-able), registered with
   ``@register_model("my-method", MyConfig)``. ``model.encode(x)`` maps NORMALISED float NCHW images to the
   real-valued hash layer (n, bits) through the encoder only (export cuts the graph there);
   ``model.binarize`` is "sign" (bit = value >= 0) or "sigmoid" (bit = value > 0.5). Anything else the
   method learns (a decoder, a classifier, a per-class codeword table as an ``nn.Parameter``) lives in the
   same module, so it is saved in the checkpoint and optimised by the engine, but is never used by ``encode``.

2. The loss, with the uniform signature every method shares::

       def my_loss(model, batch: Batch, ctx: Context) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]

   It returns the scalar loss to minimise and, optionally, a dict of floats to log (averaged per epoch and
   kept in the history). The engine calls it in train mode for each training batch (then ``backward`` and an
   Adam step) and under ``torch.no_grad()`` in eval mode for the validation loss.

   ``batch`` (:class:`Batch`), all tensors on the training device:
     ``images``   float32 (n, C, H, W), normalised by the model's :class:`~hashtool.preprocess.Preprocess`,
                  augmented when the method (or ``--augment``) asks for it;
     ``clean``    the same images without augmentation (a reconstruction target);
     ``labels``   int64 (n,), the class, or -1 where the label is hidden or the dataset has none;
     ``labeled``  bool (n,), True where ``labels`` may be used (with ``--labeled-fraction F`` only a seeded
                  fraction F of the training set is labeled; unlabeled images still come in every batch);
     ``indices``  int64 (n,), positions in the training split (stable across epochs: per-image state such
                  as pseudo-labels can be kept in a buffer indexed by them).

   ``ctx`` (:class:`Context`): ``epoch`` (0-based, over the whole run), ``epochs`` (total), ``phase``
   (name of the current :class:`Phase`), ``phase_epoch``, ``step`` and ``steps`` (within the run),
   ``progress`` (0..1 over the run), ``phase_progress`` (0..1 within the phase), ``lr``, ``hparams`` (the
   method's hyper-parameters after ``--hp key=value`` overrides), ``num_classes``, ``train_size``,
   ``training`` (False during validation), ``device``, ``data`` (the whole training split as a
   :class:`hashtool.train.data.TrainData`, for methods that draw extra images in their loss, such as labeled
   images in semi-supervised training; read it, never modify it), ``augment`` and ``fill`` (the run's parsed
   ``--augment`` ops and black-pixel value, to augment such extra images with
   :func:`hashtool.train.data.augment_batch`).

3. The :class:`Method` record, registered with :func:`register_method`: ``name`` (also the model name),
   ``loss``, ``phases(hp) -> list[Phase]`` (the default schedule: epochs, learning rates, which parameters
   train in each phase), ``hparams`` (defaults), ``make_config(bits, in_channels, height, width, hp)``,
   ``supervised`` (needs labels), ``semi_supervised`` (accepts ``--labeled-fraction`` < 1), ``semi_hparams``
   (hyper-parameters that replace the defaults in such runs, below a preset and ``--hp``: a semi-supervised
   step costs more, so its schedule may differ),
   ``augment`` (default augmentation, see :mod:`hashtool.train.data`), ``batch_size``, ``epoch_images``
   (images per epoch, a seeded sample that cycles permutations when the split is smaller; None: one pass,
   so a schedule can be the same amount of work on a 4,000- and a 55,000-image set), ``select`` ("last",
   "val_loss" or "val_map": how the engine picks the epoch to keep), and optional hooks
   ``on_phase_start(model, ctx)`` / ``on_epoch_start(model, ctx)`` / ``on_epoch_end(model, ctx, data)``
   (e.g. raise a tanh slope, re-estimate codewords from the whole training set; ``data`` is the
   :class:`hashtool.train.data.TrainData` with ``images``/``labels``/``labeled`` tensors of the split).

Own procedures. A method with ``fit`` trains outside the engine's loop; ``data`` says what ``--data`` it takes:

* ``data="folder"`` (``edit-contrastive``): any folder of photos, no labels, its own validation protocol;
  ``fit(TrainConfig, folder, out_path, quiet) -> (model, meta)``;
* ``data="dataset"`` (``neighbour-contrastive``): a dataset the engine loads, with the engine's seeded splits,
  evaluated on the standard protocol like every engine method (the same metrics, stored in the checkpoint by
  :func:`hashtool.train.evaluation.score_codes`); ``fit(TrainConfig, splits, out_path, quiet, evaluate) ->
  (model, meta, metrics or None)``.

A :class:`Phase` is ``(name, epochs, lr, lr_end=None, schedule="constant"|"linear"|"cosine",
params=None|callable(model)->parameters, select=True, warmup=0.0, weight_decay=0.0, precision="fp32")``; a fresh
Adam optimiser is made per phase over ``params(model)`` (default: all parameters), AdamW (decoupled weight decay,
each step multiplies a weight by ``1 - lr * weight_decay``) when ``weight_decay`` > 0, on the weight matrices and
convolution kernels only (parameters of two or more dimensions; biases and BatchNorm's scales and shifts are
not decayed); ``select=False`` keeps the phase's epochs out of model selection (layer-wise pre-training, for
instance). ``precision="bf16"`` runs the phase's training losses under ``torch.autocast`` with bfloat16 (matrix
products and convolutions in bfloat16, the weights, their updates and validation in float32): on a CPU with
AVX-512 BF16 a training step of the default CNN took 72 ms instead of 111-116 ms (issue 12, round 9).

Classes: a method whose hyper-parameters hold ``num_classes`` with the value 0 gets it replaced by the number of
classes in the training labels before ``make_config`` is called, so a classifier or codeword table is sized
from the data (and the resolved value is stored with the run's hyper-parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

SELECT_RULES = ("last", "val_loss", "val_map")
SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "bf16")
DATA_KINDS = ("dataset", "folder")


@dataclass
class Batch:
    """One training (or validation) batch; see the module docstring."""

    images: torch.Tensor
    clean: torch.Tensor
    labels: torch.Tensor
    labeled: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class Context:
    """Where the run stands, passed to every loss call and hook."""

    epoch: int = 0
    epochs: int = 1
    phase: str = ""
    phase_epoch: int = 0
    phase_epochs: int = 1
    step: int = 0
    steps: int = 1
    progress: float = 0.0
    phase_progress: float = 0.0
    lr: float = 0.0
    hparams: dict = field(default_factory=dict)
    num_classes: int = 0
    train_size: int = 0
    training: bool = True
    device: str = "cpu"
    data: object = None  # the training split (TrainData); read-only for losses and hooks
    augment: list = field(default_factory=list)  # the run's parsed --augment ops (hashtool.train.data.parse_augment)
    fill: torch.Tensor | None = None  # the normalised value of a black pixel per channel (the augmentation fill)


@dataclass
class Phase:
    """A stretch of training with its own optimiser, learning-rate schedule and trainable parameters."""

    name: str
    epochs: int
    lr: float
    lr_end: float | None = None
    schedule: str = "constant"
    params: Callable | None = None
    select: bool = True
    warmup: float = 0.0
    weight_decay: float = 0.0
    precision: str = "fp32"

    def lr_at(self, t: float) -> float:
        """Learning rate at fraction ``t`` in [0, 1] of the phase.

        With ``warmup`` w > 0 the rate first rises linearly from ``lr / 25`` to ``lr`` over the fraction w of the
        phase (a one-cycle start, as in Smith's one-cycle policy), then follows the schedule over the rest."""
        if self.warmup > 0 and t < self.warmup:
            return self.lr / 25 + (self.lr - self.lr / 25) * t / self.warmup
        if self.warmup > 0:
            t = (t - self.warmup) / max(1.0 - self.warmup, 1e-12)
        end = self.lr if self.lr_end is None else self.lr_end
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "linear":
            return self.lr + (end - self.lr) * t
        import math

        return end + (self.lr - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class Method:
    """A registered training method; see the module docstring."""

    name: str
    loss: Callable
    phases: Callable
    make_config: Callable
    hparams: dict = field(default_factory=dict)
    supervised: bool = False
    semi_supervised: bool = False
    augment: str = "none"
    batch_size: int = 128
    epoch_images: int | None = None
    select: str = "last"
    mean: tuple = (0.5,)
    std: tuple = (0.5,)
    on_phase_start: Callable | None = None
    on_epoch_start: Callable | None = None
    on_epoch_end: Callable | None = None
    summary: str = ""
    presets: dict = field(default_factory=dict)  # name -> {"hparams": {...}, "augment": ..., "batch_size": ...}
    semi_hparams: dict = field(default_factory=dict)  # hparams over the defaults when --labeled-fraction < 1
    fit: Callable | None = None  # a method with its own procedure (see "Own procedures" in the module docstring)
    data: str = "dataset"  # what --data it takes: "dataset" (the engine's datasets, with splits) or "folder" (of photos)
    # (model, preprocess, threads) -> a function from uint8 images to packed codes, faster than the model's eager
    # forward pass (a frozen backbone in onnxruntime); ``hashtool eval`` uses it when a method has one.
    encoder: Callable | None = None


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    if method.data not in DATA_KINDS:
        raise ValueError(f"method {method.name!r}: data must be one of {DATA_KINDS}")
    if method.select not in SELECT_RULES:
        raise ValueError(f"method {method.name!r}: select must be one of {SELECT_RULES}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    from hashtool.errors import ArgumentError

    if name not in METHODS:
        raise ArgumentError(f"--method {name!r}: unknown deep method; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


# Importing a method module registers its model and its Method record.
from hashtool.train.methods import ae_tanh  # noqa: E402,F401
from hashtool.train.methods import scae  # noqa: E402,F401
from hashtool.train.methods import nin_latent  # noqa: E402,F401
from hashtool.train.methods import adalabel  # noqa: E402,F401
from hashtool.train.methods import edit_contrastive  # noqa: E402,F401
from hashtool.train.methods import contrastive  # noqa: E402,F401
from hashtool.train.methods import neighbour_contrastive  # noqa: E402,F401
