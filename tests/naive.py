"""Slow, obviously-correct reference implementations ("naive twins") of hashtool's fast paths.

Each function here is written for clarity, with plain Python loops where that makes it obvious, and
is compared with the real implementation over inputs drawn by hypothesis.
"""

from __future__ import annotations

import numpy as np


def pack_bits(bits) -> np.ndarray:
    """Pack 0/1 bits (n, B): bit j of a code is bit (j % 8) of byte (j // 8)."""
    bits = np.asarray(bits)
    n, nbits = bits.shape
    out = np.zeros((n, nbits // 8), dtype=np.uint8)
    for i in range(n):
        for j in range(nbits):
            if bits[i, j]:
                out[i, j // 8] |= 1 << (j % 8)
    return out


def unpack_bits(packed, nbits: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    n = packed.shape[0]
    out = np.zeros((n, nbits), dtype=np.uint8)
    for i in range(n):
        for j in range(nbits):
            out[i, j] = (int(packed[i, j // 8]) >> (j % 8)) & 1
    return out


def hamming_matrix(queries, database) -> np.ndarray:
    """All pairwise Hamming distances between packed codes, via np.unpackbits."""
    q = np.unpackbits(np.asarray(queries, dtype=np.uint8), axis=1).astype(np.int32)
    d = np.unpackbits(np.asarray(database, dtype=np.uint8), axis=1).astype(np.int32)
    if len(q) == 0 or len(d) == 0:
        return np.zeros((len(q), len(d)), dtype=np.int32)
    return (q[:, None, :] != d[None, :, :]).sum(axis=2).astype(np.int32)


def normalize_pixels(images, mean, std) -> np.ndarray:
    """uint8 NHWC -> float64 NCHW with (x / 255 - mean[c]) / std[c], one pixel at a time."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    out = np.zeros((n, c, h, w), dtype=np.float64)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for ch in range(c):
                    out[i, ch, y, x] = (images[i, y, x, ch] / 255.0 - mean[ch]) / std[ch]
    return out


def binarize_values(real, rule: str) -> np.ndarray:
    """Bits from real values: "sign" -> 1 where value >= 0 (so 0 and -0 give 1); "sigmoid" -> 1 where value > 0.5."""
    real = np.asarray(real, dtype=np.float64)
    out = np.zeros(real.shape, dtype=np.uint8)
    for idx, v in np.ndenumerate(real):
        out[idx] = 1 if (v >= 0 if rule == "sign" else v > 0.5) else 0
    return out
