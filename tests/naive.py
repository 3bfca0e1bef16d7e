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


def hamming_rows(query, database) -> np.ndarray:
    """Hamming distances from one packed query (w,) to every packed code of ``database`` (n, w)."""
    q = np.unpackbits(np.asarray(query, dtype=np.uint8)[None, :], axis=1)
    d = np.unpackbits(np.asarray(database, dtype=np.uint8).reshape(-1, q.shape[1] // 8), axis=1)
    return (q != d).sum(axis=1).astype(np.int32)


def knn_search(queries, database, ids, k):
    """Exact k-NN the slow way: every distance, then a stable argsort by (distance, id).

    Returns (distances int32 (nq, k), ids int64 (nq, k)), missing entries -1 in both.
    """
    queries = np.asarray(queries, dtype=np.uint8)
    ids = np.asarray(ids, dtype=np.int64)
    out_d = np.full((len(queries), k), -1, dtype=np.int32)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    by_id = np.argsort(ids, kind="stable")
    for i, q in enumerate(queries):
        dist = hamming_rows(q, database)
        order = by_id[np.argsort(dist[by_id], kind="stable")][:k]
        out_d[i, : len(order)] = dist[order]
        out_i[i, : len(order)] = ids[order]
    return out_d, out_i


def range_search(queries, database, ids, max_distance):
    """Exact range search (``max_distance`` inclusive) the slow way, as CSR (lims, distances, ids)."""
    queries = np.asarray(queries, dtype=np.uint8)
    ids = np.asarray(ids, dtype=np.int64)
    by_id = np.argsort(ids, kind="stable")
    lims, dists, found = [0], [], []
    for q in queries:
        dist = hamming_rows(q, database)
        order = by_id[np.argsort(dist[by_id], kind="stable")]
        order = order[dist[order] <= max_distance]
        dists.append(dist[order])
        found.append(ids[order])
        lims.append(lims[-1] + len(order))
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return np.array(lims, dtype=np.int64), cat(dists, np.int32), cat(found, np.int64)
