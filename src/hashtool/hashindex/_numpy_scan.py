"""An exhaustive scan in plain numpy (``np.bitwise_count``), and the rule that decides when to use it.

Loading the Numba kernels costs a process the numba import plus the cached machine code of every kernel
(0.3 s on a quiet machine, several seconds under load, minutes with an empty cache), while one query
against a million 64-bit codes takes numpy about 20 ms. Which one answers is a function of the call
(:func:`use_numpy`), never of what the process did before, so the same call takes the same path in every
process and thread:

* ``engine="numba"`` (the default): always the kernels.
* ``engine="numpy"``: numpy for every call of at most :data:`MAX_WORDS` words (about 25-50 ms of numpy),
  the kernels beyond. For short-lived processes that answer a few queries (the CLI), where loading the
  kernels would cost more than the searches.

Results are exactly the kernels': stored rows are sorted by id, so a stable sort by distance gives the
(distance, id) order, with -1 padding past the stored codes.
"""

from __future__ import annotations

import numpy as np

from hashtool.errors import ArgumentError

ENGINES = ("numba", "numpy")
MAX_WORDS = 50_000_000  # ~25-50 ms of numpy on one core


def check_engine(engine) -> str:
    """Validate an ``engine`` argument (see the module docstring)."""
    if engine not in ENGINES:
        raise ArgumentError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    return engine


def use_numpy(engine: str, nq: int, n: int, nw: int) -> bool:
    """Answer a call comparing ``nq`` queries with ``n`` codes of ``nw`` words by the numpy scan?"""
    return engine == "numpy" and nq * n * nw <= MAX_WORDS


def _distances(words2d: np.ndarray, query: np.ndarray) -> np.ndarray:
    x = np.bitwise_count(words2d ^ query)
    return (x[:, 0] if x.shape[1] == 1 else x.sum(axis=1, dtype=np.int32)).astype(np.int32)


def knn(words, nw: int, nbits: int, n: int, q, k: int):
    """(distances int32 (nq, k), positions int64 (nq, k)), -1 past the stored codes."""
    words2d = np.asarray(words[: n * nw]).reshape(n, nw)
    q2d = np.asarray(q).reshape(-1, nw)
    nq = q2d.shape[0]
    out_d = np.full((nq, k), -1, dtype=np.int32)
    out_p = np.full((nq, k), -1, dtype=np.int64)
    for i in range(nq):
        if n == 0:
            break
        d = _distances(words2d, q2d[i])
        if k < n:
            # the k-th smallest distance from a histogram, then only rows at or below it
            th = int(np.searchsorted(np.cumsum(np.bincount(d, minlength=nbits + 1)), k))
            cand = np.flatnonzero(d <= th)
        else:
            cand = np.arange(n)
        order = cand[np.argsort(d[cand], kind="stable")][:k]
        out_d[i, : len(order)] = d[order]
        out_p[i, : len(order)] = order
    return out_d, out_p


def range_search(words, nw: int, n: int, q, max_distance: int):
    """CSR (lims int64 (nq+1), distances int32, positions int64), sorted by (distance, position)."""
    words2d = np.asarray(words[: n * nw]).reshape(n, nw)
    q2d = np.asarray(q).reshape(-1, nw)
    nq = q2d.shape[0]
    lims = np.zeros(nq + 1, dtype=np.int64)
    out_d, out_p = [], []
    for i in range(nq):
        if n:
            d = _distances(words2d, q2d[i])
            cand = np.flatnonzero(d <= max_distance)
            order = cand[np.argsort(d[cand], kind="stable")]
        else:
            order = np.zeros(0, dtype=np.int64)
            d = np.zeros(0, dtype=np.int32)
        out_d.append(d[order])
        out_p.append(order.astype(np.int64))
        lims[i + 1] = lims[i] + len(order)
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dtype=dt))
    return lims, cat(out_d, np.int32), cat(out_p, np.int64)
