"""The view ops of the contrastive methods, as torch batch ops: random resized crops, rotations, brightness and
contrast jitter, random erasing. They are part of the ``--augment`` language of :mod:`hashtool.train.data`
(``crop:S``, ``rotate:D``, ``jitter:J``, ``erase:P``; described there) and work on normalised NCHW batches.
The whole language's table of ops (:data:`AUGMENT_OPS`: default, range, example) and the one parser of an op's
parameter (:func:`parse_augment_op`) live here too, so every op is checked by the same rule.

Every op draws its random parameters for the whole batch from the given ``torch.Generator`` (on the CPU, so a
seeded generator gives the same views on any device), then applies them in one batched call; the drawing and
the applying are separate functions so tests can check each (the slow twins are in ``tests/naive.py``).
"Black" is ``fill``, the per-channel normalised value of a 0 pixel: what comes in from outside the image under
a crop or rotation, and what an erased rectangle holds. Jitter does not clip to the pixel range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hashtool.errors import ArgumentError

# name -> (default parameter, lowest, highest, example)
VIEW_OPS = {
    "crop": (0.5, 0.05, 1.0, "crop:0.5"),
    "rotate": (15.0, 0.0, 180.0, "rotate:15"),
    "jitter": (0.4, 0.0, 0.9, "jitter:0.4"),
    "erase": (0.5, 0.0, 1.0, "erase:0.5"),
}
# Every op of the --augment language (the others are applied by hashtool.train.data.augment_batch), same
# layout; an int default means an integer parameter, None an op without one.
AUGMENT_OPS = {
    "shift": (2, 0, 16, "shift:2"),
    "hflip": (None, None, None, "hflip"),
    "cutout": (8, 1, 64, "cutout:8"),
    "contrast": (0.5, 0.0, 1.0, "contrast:0.5"),
    **VIEW_OPS,
}
AUGMENT_HELP = "use " + ", ".join(n if d is None else f"{n}[:{ex.partition(':')[2]}]" for n, (d, _, _, ex) in AUGMENT_OPS.items()) + " or none"
CROP_RATIO = (3 / 4, 4 / 3)
ERASE_AREA = (0.02, 0.25)
ERASE_RATIO = (0.3, 3.3)


def parse_augment_op(spec: str, name: str, arg: str) -> float | int:
    """The parameter of ``--augment`` op ``name`` (a key of :data:`AUGMENT_OPS`) written ``arg`` (empty: the
    default; 0 for an op without a parameter), validated against its type and range. ``spec`` is the whole
    ``--augment`` value, for the message."""
    default, lo, hi, example = AUGMENT_OPS[name]
    if default is None:
        if arg:
            raise ArgumentError(f"--augment {spec!r}: {name} takes no parameter, as in {example}")
        return 0
    kind, what = (int, "an integer") if isinstance(default, int) else (float, "a number")
    try:
        value = kind(arg) if arg else default
    except ValueError:
        raise ArgumentError(f"--augment {spec!r}: {name} takes {what}, as in {example}") from None
    if not lo <= value <= hi:
        raise ArgumentError(f"--augment {spec!r}: {name} must be in [{lo:g}, {hi:g}], got {value:g}")
    return value


def _uniform(n: int, lo: float, hi: float, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _log_uniform(n: int, lo: float, hi: float, generator) -> torch.Tensor:
    return torch.exp(_uniform(n, math.log(lo), math.log(hi), generator))


def crop_thetas(n: int, min_scale: float, h: int, w: int, generator) -> torch.Tensor:
    """(n, 2, 3) affine maps (output -> input, normalised coordinates) of random resized crops."""
    area = _uniform(n, min_scale, 1.0, generator)
    ratio = _log_uniform(n, *CROP_RATIO, generator)
    fw = torch.sqrt(area * ratio * h / w).clamp(max=1.0)  # crop width as a share of the image width
    fh = torch.sqrt(area / ratio * w / h).clamp(max=1.0)
    cx = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * (1 - fw)
    cy = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * (1 - fh)
    zero = torch.zeros(n, dtype=torch.float64)
    return torch.stack([torch.stack([fw, zero, cx], 1), torch.stack([zero, fh, cy], 1)], 1).float()


def rotation_thetas(n: int, degrees: float, h: int, w: int, generator) -> torch.Tensor:
    """(n, 2, 3) affine maps (output -> input) of rotations by uniform angles in [-degrees, degrees]."""
    a = _uniform(n, -degrees, degrees, generator) * (math.pi / 180)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros(n, dtype=torch.float64)
    return torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1).float()


def warp(x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``x`` (n, C, H, W) at ``theta``'s grid (align_corners=False), ``fill`` outside."""
    f = fill.to(x.dtype)[None, :, None, None]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x - f, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + f


def jitter_factors(n: int, amount: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(brightness, contrast) factors, each uniform in [1 - amount, 1 + amount], float32 (n,)."""
    b = _uniform(n, 1 - amount, 1 + amount, generator).float()
    c = _uniform(n, 1 - amount, 1 + amount, generator).float()
    return b, c


def jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Scale the intensity above black by ``brightness``, then the spread about each image's mean by ``contrast``."""
    f = fill.to(x.dtype)[None, :, None, None]
    y = (x - f) * brightness.to(x.device, x.dtype)[:, None, None, None] + f
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    return (y - m) * contrast.to(x.device, x.dtype)[:, None, None, None] + m


def erase_boxes(n: int, prob: float, h: int, w: int, generator) -> torch.Tensor:
    """int64 (n, 4): (top, left, height, width) of each image's erased rectangle; height 0 where none."""
    on = torch.rand(n, generator=generator, dtype=torch.float64) < prob
    area = _uniform(n, *ERASE_AREA, generator) * h * w
    ratio = _log_uniform(n, *ERASE_RATIO, generator)
    bh = torch.sqrt(area / ratio).round().clamp(1, h).long()
    bw = torch.sqrt(area * ratio).round().clamp(1, w).long()
    top = (torch.rand(n, generator=generator, dtype=torch.float64) * (h - bh + 1)).long().clamp(max=h - bh)
    left = (torch.rand(n, generator=generator, dtype=torch.float64) * (w - bw + 1)).long().clamp(max=w - bw)
    return torch.stack([top, left, torch.where(on, bh, torch.zeros_like(bh)), bw], 1)


def erase(x: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Set each image's rectangle ``boxes[i]`` = (top, left, height, width) to ``fill``."""
    _, _, h, w = x.shape
    b = boxes.to(x.device)
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_r = (rows >= b[:, :1]) & (rows < b[:, :1] + b[:, 2:3])
    in_c = (cols >= b[:, 1:2]) & (cols < b[:, 1:2] + b[:, 3:4])
    mask = (in_r[:, :, None] & in_c[:, None, :])[:, None]
    return torch.where(mask, fill.to(x.dtype)[None, :, None, None], x)


def apply_view_op(x: torch.Tensor, name: str, p: float, fill: torch.Tensor, generator) -> torch.Tensor:
    """One view op (a name of :data:`VIEW_OPS` with its parameter) on a normalised NCHW batch."""
    n, _, h, w = x.shape
    if name == "crop":
        return warp(x, crop_thetas(n, p, h, w, generator), fill)
    if name == "rotate":
        return warp(x, rotation_thetas(n, p, h, w, generator), fill) if p > 0 else x
    if name == "jitter":
        return jitter(x, *jitter_factors(n, p, generator), fill)
    if name == "erase":
        return erase(x, erase_boxes(n, p, h, w, generator), fill)
    raise ValueError(f"unknown view op {name!r}")
