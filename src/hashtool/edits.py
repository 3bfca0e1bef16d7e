"""The edits people make to photos, as seeded PIL operations (Pillow and numpy only, no torch).

One definition serves every place that needs edited copies: the photo encoder's training views
(:mod:`hashtool.train.methods.edit_contrastive`), the near-duplicate benchmark (``benchmarks/bench_photos.py``)
and ``hashtool calibrate``. Each edit takes an RGB :class:`PIL.Image.Image` and a
:class:`numpy.random.Generator` and returns a new RGB image; the same image, kind and generator state give
the same result. Strengths are relative to the image's size, so an edit means the same on a 300 px
thumbnail and a 12-megapixel photo.

Kinds, by group (the benchmark reports top-1 per kind and per group):

``easy``   resize (to 30-70% of each side), jpeg (re-compressed at quality 15-50), brighten (brightness
           x0.6-0.85 or x1.15-1.5), blur (Gaussian, radius 0.4-1.2% of the short side), crop5 (up to 5% off
           each side), grey (greyscale, kept as RGB), letterbox (black bars to another aspect ratio);
``hard``   crop25 (a random window holding 75% of the area, each side at least 75%), mirror (left-right),
           caption (a bar of 12-20% of the height with text, at the top or bottom), rot90 (a quarter turn
           either way);
``other``  contrast (x0.6-0.8 or x1.25-1.6), colour (saturation x0.3-0.7 or x1.4-1.8), border (a
           coloured frame, 3-8% of the short side), logo (a half-transparent mark in a corner, 8-15% of the
           short side), rotate (2-8 degrees either way, cropped to the largest inner rectangle).

:func:`random_edit` chains one to three kinds, the way a photo is resized, then captioned, then
re-compressed on its way through a messenger.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from hashtool.errors import ArgumentError

_RESAMPLE = Image.Resampling.BILINEAR


@dataclass(frozen=True)
class Edit:
    name: str
    group: str  # "easy", "hard" or "other"
    fn: Callable[[Image.Image, np.random.Generator], Image.Image]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _either(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]) -> float:
    """A factor from ``low`` or ``high`` with equal chance (an edit that is never the identity)."""
    return _u(rng, *(low if rng.random() < 0.5 else high))


def _short(img: Image.Image) -> int:
    return min(img.size)


def resize(img, rng):
    f = _u(rng, 0.3, 0.7)
    w, h = img.size
    return img.resize((max(8, round(w * f)), max(8, round(h * f))), _RESAMPLE)


def jpeg(img, rng):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(15, 51)))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def brighten(img, rng):
    return ImageEnhance.Brightness(img).enhance(_either(rng, (0.6, 0.85), (1.15, 1.5)))


def contrast(img, rng):
    return ImageEnhance.Contrast(img).enhance(_either(rng, (0.6, 0.8), (1.25, 1.6)))


def colour(img, rng):
    return ImageEnhance.Color(img).enhance(_either(rng, (0.3, 0.7), (1.4, 1.8)))


def blur(img, rng):
    return img.filter(ImageFilter.GaussianBlur(radius=max(0.5, _short(img) * _u(rng, 0.004, 0.012))))


def _crop_window(img, rng, fw: float, fh: float) -> Image.Image:
    w, h = img.size
    cw, ch = max(8, round(w * fw)), max(8, round(h * fh))
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch))


def crop5(img, rng):
    w, h = img.size
    left, top, right, bottom = (_u(rng, 0.0, 0.05) for _ in range(4))
    box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
    return img.crop(box)


def crop25(img, rng):
    fw = _u(rng, 0.75, 1.0)
    return _crop_window(img, rng, fw, 0.75 / fw)


def grey(img, rng):
    return img.convert("L").convert("RGB")


def letterbox(img, rng):
    w, h = img.size
    aspect = w / h
    targets = [a for a in (1.0, 4 / 3, 3 / 2, 16 / 9, 9 / 16, 3 / 4) if abs(math.log(a / aspect)) > 0.15]
    target = targets[int(rng.integers(0, len(targets)))]
    if target > aspect:  # wider: bars left and right
        cw, ch = round(h * target), h
    else:  # taller: bars top and bottom
        cw, ch = w, round(w / target)
    canvas = Image.new("RGB", (cw, ch), (0, 0, 0))
    canvas.paste(img, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def mirror(img, rng):
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def rot90(img, rng):
    return img.transpose(Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.ROTATE_270)


_WORDS = ("holiday", "best day ever", "lol", "look at this", "2026", "summer", "family", "wow", "sale -50%",
          "good morning", "home", "weekend", "beautiful", "forwarded")


def _font(size: int):
    try:
        return ImageFont.load_default(size=max(8, size))
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _random_colour(rng) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def caption(img, rng):
    w, h = img.size
    bar = max(8, round(h * _u(rng, 0.12, 0.2)))
    out = Image.new("RGB", (w, h + bar), _random_colour(rng))
    top = rng.random() < 0.5
    out.paste(img, (0, bar if top else 0))
    draw = ImageDraw.Draw(out)
    text = _WORDS[int(rng.integers(0, len(_WORDS)))]
    y = 0 if top else h
    draw.text((round(w * 0.04), y + bar * 0.2), text, fill=_random_colour(rng), font=_font(round(bar * 0.6)))
    return out


def border(img, rng):
    pad = max(2, round(_short(img) * _u(rng, 0.03, 0.08)))
    w, h = img.size
    out = Image.new("RGB", (w + 2 * pad, h + 2 * pad), _random_colour(rng))
    out.paste(img, (pad, pad))
    return out


def logo(img, rng):
    w, h = img.size
    size = max(8, round(_short(img) * _u(rng, 0.08, 0.15)))
    mark = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    fill = (*_random_colour(rng), 150)
    if rng.random() < 0.5:
        draw.ellipse((0, 0, size - 1, size - 1), fill=fill)
    else:
        draw.text((0, 0), "©", fill=fill, font=_font(size))
    margin = round(_short(img) * 0.03)
    x = margin if rng.random() < 0.5 else w - size - margin
    y = margin if rng.random() < 0.5 else h - size - margin
    out = img.convert("RGBA")
    out.alpha_composite(mark, (max(0, x), max(0, y)))
    return out.convert("RGB")


def rotate(img, rng):
    deg = _either(rng, (-8.0, -2.0), (2.0, 8.0))
    w, h = img.size
    turned = img.rotate(deg, resample=_RESAMPLE, expand=False)
    # the largest axis-aligned rectangle of the original aspect ratio inside the turned frame
    a = math.radians(abs(deg))
    scale = 1.0 / (math.cos(a) + math.sin(a) * max(w / h, h / w))
    cw, ch = max(8, round(w * scale)), max(8, round(h * scale))
    x, y = (w - cw) // 2, (h - ch) // 2
    return turned.crop((x, y, x + cw, y + ch))


EDITS: dict[str, Edit] = {
    e.name: e
    for e in (
        Edit("resize", "easy", resize),
        Edit("jpeg", "easy", jpeg),
        Edit("brighten", "easy", brighten),
        Edit("blur", "easy", blur),
        Edit("crop5", "easy", crop5),
        Edit("grey", "easy", grey),
        Edit("letterbox", "easy", letterbox),
        Edit("crop25", "hard", crop25),
        Edit("mirror", "hard", mirror),
        Edit("caption", "hard", caption),
        Edit("rot90", "hard", rot90),
        Edit("contrast", "other", contrast),
        Edit("colour", "other", colour),
        Edit("border", "other", border),
        Edit("logo", "other", logo),
        Edit("rotate", "other", rotate),
    )
}
GROUPS = ("easy", "hard", "other")


def kinds(group: str | None = None) -> tuple[str, ...]:
    """Edit names, all of them or those of one group, in a fixed order."""
    if group is not None and group not in GROUPS:
        raise ArgumentError(f"edit group must be one of {GROUPS}, got {group!r}")
    return tuple(name for name, e in EDITS.items() if group is None or e.group == group)


def parse_kinds(spec: str) -> tuple[str, ...]:
    """A comma-separated list of edit names or group names ("easy,mirror") -> edit names, in order."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        names = kinds(part) if part in GROUPS else (part,) if part in EDITS else None
        if names is None:
            raise ArgumentError(f"unknown edit {part!r}; choose from {', '.join(GROUPS + tuple(EDITS))}")
        out.extend(n for n in names if n not in out)
    return tuple(out)


def apply_edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """``img`` (any mode; converted to RGB) edited by ``kind``."""
    if kind not in EDITS:
        raise ArgumentError(f"unknown edit {kind!r}; choose from {', '.join(EDITS)}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return EDITS[kind].fn(img, rng)


def parse_weights(spec: str) -> dict[str, float]:
    """``"grey=3,brighten=2"`` -> {edit name: relative weight}; unnamed edits keep weight 1."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in EDITS:
            raise ArgumentError(f"edit weight {part!r}: write NAME=WEIGHT with NAME one of {', '.join(EDITS)}")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not (weight >= 0 and math.isfinite(weight)):
            raise ArgumentError(f"edit weight {part!r}: the weight must be a number >= 0")
        out[name] = weight
    return out


def random_edit(img: Image.Image, rng: np.random.Generator, choices=None, max_edits: int = 3,
                weights: dict[str, float] | None = None) -> tuple[Image.Image, list[str]]:
    """Chain 1 to ``max_edits`` distinct kinds drawn from ``choices`` (default: all); returns (image, kinds).

    ``weights`` (edit name -> relative weight, 1 for those not named) makes some kinds more likely than others;
    without it every kind is equally likely.
    """
    choices = tuple(choices or EDITS)
    p = None
    if weights:
        w = np.array([float(weights.get(c, 1.0)) for c in choices])
        if (w > 0).sum() == 0:
            raise ArgumentError("edit weights: at least one edit must have a weight above 0")
        choices, w = tuple(c for c, x in zip(choices, w) if x > 0), w[w > 0]
        p = w / w.sum()
    n = int(rng.integers(1, min(max_edits, len(choices)) + 1))
    picked = [choices[i] for i in rng.choice(len(choices), size=n, replace=False, p=p)]
    for kind in picked:
        img = apply_edit(img, kind, rng)
    return img, picked
