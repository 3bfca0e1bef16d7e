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


def adalabel_supervised_loss(h, codeword_logits, labels, scale: float, quant: float) -> float:
    """AdaLabelHash's fully labeled loss, one image and one class at a time (float64).

    For each image i: similarities s_c = scale * sum_j h[i, j] * tanh(V[c, j]) / bits, cross-entropy
    -log(exp(s_y) / sum_c exp(s_c)); averaged over images, plus quant * mean over all units of (|h| - 1)^2.
    """
    import math

    h = np.asarray(h, dtype=np.float64)
    v = np.asarray(codeword_logits, dtype=np.float64)
    n, bits = h.shape
    ce = 0.0
    for i in range(n):
        sims = []
        for c in range(v.shape[0]):
            sims.append(scale * sum(h[i, j] * math.tanh(v[c, j]) for j in range(bits)) / bits)
        top = max(sims)
        log_norm = top + math.log(sum(math.exp(s - top) for s in sims))
        ce += log_norm - sims[int(labels[i])]
    q = sum((abs(h[i, j]) - 1.0) ** 2 for i in range(n) for j in range(bits)) / (n * bits)
    return ce / n + quant * q
