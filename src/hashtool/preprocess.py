"""The one definition of preprocessing, shared by training, export and the runtime encoder (numpy only).

An image reaches a model as a uint8 array in NHWC layout at the model's input size (``height``,
``width``, ``channels``), in colour mode ``color`` ("L" for one channel, "RGB" for three). Decoding and
resizing to that size is :mod:`hashtool.files.images`' job, driven by ``resize``. Normalisation is the
per-channel affine map ``x * scale + shift`` with ``scale = 1 / (255 * std)`` and ``shift = -mean / std``,
i.e. ``(x / 255 - mean) / std``; training applies it in torch, the exported ONNX graph applies it
inside the graph, and :meth:`Preprocess.normalize` is the numpy reference. All three read the constants
from :meth:`Preprocess.affine`, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from hashtool.errors import ArgumentError

COLOR_MODES = {"L": 1, "RGB": 3}
RESIZE_POLICIES = ("stretch", "fit-pad", "center-crop", "trim-stretch")


@dataclass(frozen=True)
class Preprocess:
    """Input geometry and normalisation of a model.

    ``resize`` is how an image of another size is brought to ``height`` x ``width``: "stretch" resizes
    ignoring aspect ratio, "fit-pad" keeps aspect ratio and pads with black, "center-crop" keeps aspect
    ratio, resizes the short side and crops the centre, "trim-stretch" first cuts off flat borders (letterbox
    bars, frames: :func:`hashtool.files.images.trim_box`) and then stretches. Resampling is bilinear with
    antialiasing (PIL).
    """

    height: int
    width: int
    color: str = "L"
    resize: str = "stretch"
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))

    def __post_init__(self):
        if self.color not in COLOR_MODES:
            raise ArgumentError(f"color must be one of {sorted(COLOR_MODES)}, got {self.color!r}")
        if self.resize not in RESIZE_POLICIES:
            raise ArgumentError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
                raise ArgumentError(f"{name} must be an integer in [1, 4096], got {v!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        c = self.channels
        if len(self.mean) != c or len(self.std) != c:
            raise ArgumentError(f"mean and std need {c} values for color {self.color!r}, got {self.mean} and {self.std}")
        if any(not s > 0 for s in self.std):
            raise ArgumentError(f"std values must be positive, got {self.std}")

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color]

    @property
    def shape_hwc(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float32 ``(scale, shift)`` with ``normalised = x * scale + shift``."""
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)

    def check_images(self, images) -> np.ndarray:
        """Return ``images`` as a uint8 NHWC array at this input size, or raise ArgumentError."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != self.shape_hwc:
            raise ArgumentError(
                f"expected uint8 images of shape (n, {self.height}, {self.width}, {self.channels}), "
                f"got {images.dtype} {images.shape}"
            )
        return images

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC (n, h, w, c) -> float32 NCHW, normalised. The numpy reference of the affine map."""
        images = self.check_images(images)
        scale, shift = self.affine()
        out = images.astype(np.float32) * scale + shift
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        try:
            return cls(
                height=int(d["height"]),
                width=int(d["width"]),
                color=str(d["color"]),
                resize=str(d.get("resize", "stretch")),
                mean=tuple(d["mean"]),
                std=tuple(d["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArgumentError(f"invalid preprocessing description {d!r}: {exc}") from None
