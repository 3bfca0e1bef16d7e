"""The torch side of the datasets: normalised in-memory tensors, seeded batches, augmentation, encoding.

The whole split is normalised once with :meth:`hashtool.preprocess.Preprocess.affine` and kept as one float32
NCHW tensor on the training device (Fashion-MNIST's 55,000 training images take 172 MB). Batches are slices
by a seeded permutation, so there are no worker processes and no per-image Python. Measured on the 2 shared
cores (1 thread): a 128-image batch with ``shift:2`` takes 1% of an ``ae-tanh`` training step, so the pipeline
is not the bottleneck (the ``images/s`` in the progress line includes it).

Augmentations (``--augment``, a comma-separated list; "none" for none):
``shift:P``  translate each image by a uniform random integer offset in [-P, P] per axis, filling with the
             normalised value of a black pixel (P = 2 when written as ``shift``);
``hflip``    mirror half of the images left-right.

The view ops of the contrastive methods (:mod:`hashtool.train.views`, same language, same generator rules):
``crop:S``   random resized crop: a rectangle of a uniform share in [S, 1] of the area and aspect ratio
             log-uniform in [3/4, 4/3], resized back to the full size (bilinear) (S = 0.5 when written ``crop``);
``rotate:D`` rotate by a uniform angle in [-D, D] degrees about the centre, black outside (D = 15);
``jitter:J`` brightness and contrast each scaled by a uniform factor in [1 - J, 1 + J] (J = 0.4);
``erase:P``  with probability P, fill a random rectangle (2% to 25% of the area, aspect 0.3 to 3.3) with
             black (P = 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hashtool.codes import binarize, pack
from hashtool.errors import ArgumentError
from hashtool.preprocess import Preprocess
from hashtool.train.methods import Batch
from hashtool.train.views import VIEW_OPS, apply_view_op, parse_view_op


def to_tensor(images: np.ndarray, preprocess: Preprocess, device="cpu") -> torch.Tensor:
    """uint8 NHWC numpy -> normalised float32 NCHW tensor (the torch twin of Preprocess.normalize)."""
    images = preprocess.check_images(images)
    scale, shift = preprocess.affine()
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float()
    x = x * torch.from_numpy(scale).to(device)[None, :, None, None] + torch.from_numpy(shift).to(device)[None, :, None, None]
    return x.contiguous()


def parse_augment(spec: str | None) -> list[tuple[str, float]]:
    """Parse an augmentation spec such as "shift:2,hflip" into [(name, param)]."""
    if spec is None or spec.strip() in ("", "none"):
        return []
    out = []
    for part in spec.split(","):
        name, _, arg = part.strip().partition(":")
        if name == "shift":
            try:
                p = int(arg) if arg else 2
            except ValueError:
                raise ArgumentError(f"--augment {spec!r}: shift takes an integer, as in shift:2") from None
            if not 0 <= p <= 16:
                raise ArgumentError(f"--augment {spec!r}: shift must be in [0, 16]")
            out.append(("shift", p))
        elif name == "hflip" and not arg:
            out.append(("hflip", 0))
        elif name in VIEW_OPS:  # the contrastive view ops (hashtool.train.views)
            out.append((name, parse_view_op(spec, name, arg)))
        else:
            raise ArgumentError(f"--augment {spec!r}: unknown augmentation {part!r}; use shift[:P], hflip, "
                                f"{', '.join(f'{k}[:X]' for k in VIEW_OPS)} or none")
    return out


def augment_batch(x: torch.Tensor, ops: list[tuple[str, int]], fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply ``ops`` to a normalised NCHW batch; ``fill`` is the per-channel value of a black pixel."""
    n, c, h, w = x.shape
    for name, p in ops:
        if name == "shift" and p > 0:
            padded = F.pad(x - fill[None, :, None, None], (p, p, p, p)) + fill[None, :, None, None]
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, :, None]
            cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, :]
            nidx = torch.arange(n, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[nidx, rows, cols].permute(0, 3, 1, 2).contiguous()
        elif name == "hflip":
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        elif name in VIEW_OPS:
            x = apply_view_op(x, name, p, fill, generator)
    return x


@dataclass
class TrainData:
    """One split as tensors on the device: images, labels (-1 = none/hidden), labeled mask."""

    images: torch.Tensor
    labels: torch.Tensor
    labeled: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_numpy(cls, images, labels, preprocess: Preprocess, device="cpu", labeled_mask=None) -> "TrainData":
        x = to_tensor(images, preprocess, device)
        n = len(x)
        if labels is None:
            lab = torch.full((n,), -1, dtype=torch.int64)
            mask = torch.zeros(n, dtype=torch.bool)
        else:
            lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))
            mask = torch.ones(n, dtype=torch.bool) if labeled_mask is None else torch.as_tensor(np.asarray(labeled_mask, dtype=bool))
            lab = torch.where(mask, lab, torch.full_like(lab, -1))
        return cls(images=x, labels=lab.to(device), labeled=mask.to(device))

    def batches(self, batch_size: int, generator: torch.Generator | None = None, augment=(), fill=None, shuffle=True,
                drop_last=False, count: int | None = None):
        """Yield :class:`Batch` objects over the split (seeded shuffle by ``generator``).

        ``count`` images per call (default: one pass): fewer than the split is a random subset, more cycles
        through fresh permutations, so every image appears as evenly as possible.
        """
        n = len(self)
        if shuffle:
            perms = [torch.randperm(n, generator=generator) for _ in range(max(1, -(-(count or n) // n)))]
            order = torch.cat(perms)[: count or n]
        else:
            order = torch.arange(n)
        order = order.to(self.images.device)
        n = len(order)
        stop = n - (n % batch_size) if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            clean = self.images[idx]
            imgs = augment_batch(clean, augment, fill, generator) if augment else clean
            yield Batch(images=imgs, clean=clean, labels=self.labels[idx], labeled=self.labeled[idx], indices=idx)


def black_value(preprocess: Preprocess, device="cpu") -> torch.Tensor:
    """Per-channel normalised value of a 0 pixel (the fill for shifts)."""
    _, shift = preprocess.affine()
    return torch.from_numpy(shift).to(device)


@torch.no_grad()
def encode_real(model, images, preprocess: Preprocess, device="cpu", batch_size: int = 1024) -> np.ndarray:
    """The real-valued hash layer (n, bits) float32 of uint8 NHWC images (numpy) or a normalised tensor."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        n = len(images)
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            x = chunk.to(device) if isinstance(chunk, torch.Tensor) else to_tensor(chunk, preprocess, device)
            outs.append(model.encode(x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.zeros((0, model.bits), np.float32)


def real_to_packed(real: np.ndarray, rule: str) -> np.ndarray:
    """Packed codes from the real-valued hash layer under the model's binarize rule."""
    return pack(binarize(real, rule))


def encode_packed(model, images, preprocess: Preprocess, device="cpu", batch_size: int = 1024) -> np.ndarray:
    """Packed uint8 codes (n, bits // 8) of uint8 NHWC images, in the hashtool.codes format."""
    return real_to_packed(encode_real(model, images, preprocess, device, batch_size), model.binarize)


def binary_share(real: np.ndarray, rule: str, tol: float = 0.05) -> float:
    """Share of hash-layer units within ``tol`` of a binary level (+-1 for "sign", 0/1 for "sigmoid")."""
    real = np.asarray(real, dtype=np.float32)
    if real.size == 0:
        return 0.0
    if rule == "sign":
        return float((np.abs(real) >= 1.0 - tol).mean())
    return float(((real <= tol) | (real >= 1.0 - tol)).mean())
