"""The images a model's parity check runs on (numpy and Pillow; torch-free).

Their source, in order: an array given by the caller; images under a folder; the Fashion-MNIST test set
(Debian's dataset-fashion-mnist), converted to the model's input by the runtime loader's conversion;
uniform random pixels as a last resort. The source is named, and the parity report carries the name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hashtool.datasets import FASHION_MNIST_DIR, read_idx
from hashtool.errors import ArgumentError, DatasetError
from hashtool.preprocess import Preprocess

FASHION_MNIST_TEST = FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"


def fashion_mnist_images(n: int, path=FASHION_MNIST_TEST) -> np.ndarray | None:
    """The first ``n`` Fashion-MNIST test images, uint8 (n, 28, 28), or None if the file is absent or not images."""
    if not Path(path).is_file():
        return None
    try:
        arr = read_idx(path)
    except DatasetError:
        return None
    return arr[:n] if arr.dtype == np.uint8 and arr.ndim == 3 else None


def parity_inputs(parity_images, parity_dir, preprocess: Preprocess) -> tuple[np.ndarray | None, str]:
    """(uint8 NHWC images at ``preprocess``'s input or None, where they came from).

    ``parity_images``: a uint8 NHWC array, or how many images to gather (0: none, the check is skipped).
    """
    if isinstance(parity_images, np.ndarray):
        arr = parity_images
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != preprocess.shape_hwc:
            raise ArgumentError(
                f"parity images must be uint8 {('n',) + preprocess.shape_hwc}, got {arr.dtype} {arr.shape}"
            )
        return arr, "given array"
    n = int(parity_images or 0)
    if n < 0:
        raise ArgumentError(f"parity_images must be >= 0, got {n}")
    if n == 0:
        return None, "none"
    from hashtool.files.images import convert_image, find_images, load_image
    from hashtool.errors import ImageError

    if parity_dir is not None:
        out = []
        for p in find_images(parity_dir):
            try:
                out.append(load_image(p, preprocess))
            except ImageError:
                continue
            if len(out) == n:
                break
        if not out:
            raise ArgumentError(f"--parity-dir {parity_dir}: no readable images found")
        return np.stack(out), f"{len(out)} images from {parity_dir}"
    fm = fashion_mnist_images(n)
    if fm is not None:
        if preprocess.shape_hwc == (28, 28, 1):
            return fm[:, :, :, None].copy(), "Fashion-MNIST test set"
        from PIL import Image

        arr = np.stack([convert_image(Image.fromarray(a, "L"), preprocess) for a in fm])
        return arr, f"Fashion-MNIST test set, converted to {preprocess.color} {preprocess.height}x{preprocess.width}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *preprocess.shape_hwc), dtype=np.uint8), "uniform random pixels (no dataset found)"
