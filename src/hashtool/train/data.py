"""The torch side of the datasets: normalised in-memory tensors, seeded batches, augmentation, encoding.

The whole split is normalised once with :meth:`hashtool.preprocess.Preprocess.affine` and kept as one float32
NCHW tensor on the training device (Fashion-MNIST's 55,000 training images take 172 MB). Batches are slices
by a seeded permutation, so there are no worker processes and no per-image Python. Measured on the 2 shared
cores (1 thread): a 128-image batch with ``shift:2`` takes 1% of an ``ae-tanh`` training step, so the pipeline
is not the bottleneck (the ``images/s`` in the progress line includes it).

Augmentations (``--augment``, a comma-separated list applied in order; "none" for none):
``shift:P``     translate each image by a uniform random integer offset in [-P, P] per axis, filling with the
                normalised value of a black pixel (P = 2 when written as ``shift``);
``hflip``       mirror half of the images left-right;
``cutout:S``    erase one S x S square per image (clipped at the border; centre uniform over the image) to
                black, as in DeVries and Taylor's cutout (S = 8 when written as ``cutout``);
``contrast:F``  scale each image's contrast around its own mean by a uniform factor in [1 - F, 1 + F]
                (F = 0.5 when written as ``contrast``; in [0, 1]).

Every op is one function of explicit per-image parameters (``shift_images``, ``flip_images``, ``cutout_images``,
``contrast_images``); :func:`augment_batch` draws the parameters from a generator and calls them, so the
semi-supervised views (the weak and the strong one) and the engine's batches share one definition.

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
from hashtool.train.views import AUGMENT_HELP, AUGMENT_OPS, VIEW_OPS, apply_view_op, parse_augment_op


def to_tensor(images: np.ndarray, preprocess: Preprocess, device="cpu") -> torch.Tensor:
    """uint8 NHWC numpy -> normalised float32 NCHW tensor (the torch twin of Preprocess.normalize)."""
    images = preprocess.check_images(images)
    scale, shift = preprocess.affine()
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float()
    x = x * torch.from_numpy(scale).to(device)[None, :, None, None] + torch.from_numpy(shift).to(device)[None, :, None, None]
    return x.contiguous()


def parse_augment(spec: str | None) -> list[tuple[str, float]]:
    """Parse an augmentation spec such as "shift:2,hflip" into [(name, param)] (each op's parameter by
    :func:`hashtool.train.views.parse_augment_op`)."""
    if spec is None or spec.strip() in ("", "none"):
        return []
    out = []
    for part in spec.split(","):
        name, _, arg = part.strip().partition(":")
        if name not in AUGMENT_OPS:
            raise ArgumentError(f"--augment {spec!r}: unknown augmentation {part!r}; {AUGMENT_HELP}")
        out.append((name, parse_augment_op(spec, name, arg)))
    return out


def shift_images(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, p: int, fill: torch.Tensor) -> torch.Tensor:
    """Image i moved by (dy[i] - p, dx[i] - p) pixels (dy, dx in [0, 2p]), new pixels set to ``fill`` (per channel):
    output pixel (r, c) is input pixel (r + dy - p, c + dx - p)."""
    n, c, h, w = x.shape
    padded = F.pad(x - fill[None, :, None, None], (p, p, p, p)) + fill[None, :, None, None]
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, :]
    nidx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[nidx, rows, cols].permute(0, 3, 1, 2).contiguous()


def flip_images(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Images where ``flip`` (bool, n) is True mirrored left-right."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout_images(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int, fill: torch.Tensor) -> torch.Tensor:
    """Pixels (r, c) with cy - size//2 <= r < cy - size//2 + size (likewise c) set to ``fill`` in image i."""
    n, _, h, w = x.shape
    top, left = cy - size // 2, cx - size // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys >= top[:, None, None]) & (ys < top[:, None, None] + size)
              & (xs >= left[:, None, None]) & (xs < left[:, None, None] + size))
    return torch.where(inside[:, None], fill[None, :, None, None].to(x.dtype), x)


def contrast_images(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Image i's contrast scaled by ``factor[i]`` around its mean (over all pixels and channels)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * factor[:, None, None, None].to(x.dtype)


def augment_batch(x: torch.Tensor, ops: list[tuple[str, float]], fill: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``ops`` to a normalised NCHW batch; ``fill`` is the per-channel value of a black pixel.
    The random parameters come from ``generator`` (None: torch's global generator)."""
    n, c, h, w = x.shape

    def ints(hi):
        return torch.randint(0, hi, (n,), generator=generator).to(x.device)

    def uniform():
        return torch.rand(n, generator=generator).to(x.device)

    for name, p in ops:
        if name == "shift" and p > 0:
            x = shift_images(x, ints(2 * p + 1), ints(2 * p + 1), int(p), fill)
        elif name == "hflip":
            x = flip_images(x, uniform() < 0.5)
        elif name == "cutout":
            x = cutout_images(x, ints(h), ints(w), int(p), fill)
        elif name == "contrast":
            x = contrast_images(x, 1.0 - p + 2.0 * p * uniform())
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
