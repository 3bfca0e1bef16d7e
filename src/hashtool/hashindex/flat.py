"""FlatIndex: exhaustive Hamming search over bit-packed codes (the exact baseline, and fast).

See :mod:`hashtool.hashindex._flat_kernels` for the kernels (tiling, counting selection, how threads
split the work) and :mod:`hashtool.hashindex._base` for the result conventions.
"""

from __future__ import annotations

import numpy as np

from hashtool.hashindex import _numpy_scan, _pool

K = _pool.LazyModule("hashtool.hashindex._flat_kernels")
from hashtool.hashindex._base import BaseIndex

# Split the database (not the queries) across threads when there are fewer than this many query tiles per
# thread: one query, or a handful, must still keep every core busy.
_TILES_PER_THREAD = 2
_MIN_CHUNK_ROWS = 4096
_NO_CLAIMS = np.zeros(0, dtype=np.int64)
PLANS = ("empty", "numpy", "queries", "database")


def scan_plan(nq: int, n: int, nw: int, threads: int, engine: str = "numba") -> str:
    """How a scan of ``nq`` queries against ``n`` codes of ``nw`` words runs, from those inputs alone.

    ``"empty"``: nothing to scan; ``"numpy"``: the numpy scan (``engine="numpy"`` and a small call, see
    :func:`hashtool.hashindex._numpy_scan.use_numpy`); ``"queries"``: the kernels, the threads taking
    tiles of queries in turn; ``"database"``: the kernels, the threads claiming blocks of the database in
    turn (few queries: one query still keeps every core busy), then a merge. Within a tile, the loop is
    :func:`hashtool.hashindex._flat_kernels.sliced_pays`'s choice (the tile's size and the code length).
    No process-wide state takes part, so the same call takes the same path in every process and thread.
    """
    if nq == 0 or n == 0:
        return "empty"
    if _numpy_scan.use_numpy(engine, nq, n, nw):
        return "numpy"
    ntiles = (nq + K.TILE_Q - 1) // K.TILE_Q
    if threads == 1 or ntiles >= _TILES_PER_THREAD * threads or n < 2 * _MIN_CHUNK_ROWS:
        return "queries"
    return "database"


def _db_chunks(n: int, threads: int) -> list[tuple[int, int]]:
    return _pool.split(n, min(threads, n // _MIN_CHUNK_ROWS))


def flat_knn(words, nw, nbits, n, q, k, threads, engine="numba"):
    """k-NN by exhaustive scan over positions; returns (distances int32 (nq,k), positions int64 (nq,k)).

    The path is :func:`scan_plan`'s.
    """
    nq = q.shape[0] // nw
    plan = scan_plan(nq, n, nw, threads, engine)
    if plan == "numpy":
        return _numpy_scan.knn(words, nw, nbits, n, q, k)
    if plan == "empty":
        return np.full((nq, k), -1, dtype=np.int32), np.full((nq, k), -1, dtype=np.int64)
    out_d = np.empty((nq, k), dtype=np.int32)  # every row is written whole (-1 past the stored codes)
    out_p = np.empty((nq, k), dtype=np.int64)
    out_n = np.empty(nq, dtype=np.int64)
    if plan == "queries":
        # one task per tile, taken by whichever thread is free: a descheduled thread delays one tile
        tiles = [(qa, min(qa + K.TILE_Q, nq)) for qa in range(0, nq, K.TILE_Q)] if threads > 1 else [(0, nq)]
        tasks = [(words, nw, nbits, q, qa, qb, 0, n, k, out_d, out_p, out_n, _NO_CLAIMS) for qa, qb in tiles]
        _pool.run(threads, K.knn_scan, tasks)
    elif plan == "database":
        # every thread scans the blocks it claims from one shared counter per tile: a thread that starts
        # late or is descheduled simply claims fewer (the answer does not depend on who took which)
        claims = np.zeros((nq + K.TILE_Q - 1) // K.TILE_Q, dtype=np.int64)
        cd = np.empty((threads, nq, k), dtype=np.int32)
        cp = np.empty((threads, nq, k), dtype=np.int64)
        cn = np.empty((threads, nq), dtype=np.int64)
        tasks = [(words, nw, nbits, q, 0, nq, 0, n, k, cd[t], cp[t], cn[t], claims) for t in range(threads)]
        _pool.run(threads, K.knn_scan, tasks)
        K.knn_merge(cd, cp, cn, k, out_d, out_p, out_n)
    return out_d, out_p


def flat_range(words, nw, nbits, n, q, max_distance, threads, engine="numba"):
    """Range search by exhaustive scan; returns (lims int64, distances int32, positions int64).

    The path is :func:`scan_plan`'s."""
    nq = q.shape[0] // nw
    plan = scan_plan(nq, n, nw, threads, engine)
    if plan == "empty":
        return np.zeros(nq + 1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    max_distance = min(max_distance, nbits)
    if plan == "numpy":
        return _numpy_scan.range_search(words, nw, n, q, max_distance)
    lims = np.zeros(nq + 1, dtype=np.int64)
    if plan == "queries":
        parts = _pool.split(nq, threads)
        tasks = [(words, nw, nbits, q, qa, qb, 0, n, max_distance) for qa, qb in parts]
        results = _pool.run(threads, K.range_scan, tasks)
        np.cumsum(np.concatenate([r[0] for r in results]), out=lims[1:])
        return lims, np.concatenate([r[1] for r in results]), np.concatenate([r[2] for r in results])
    # few queries: chunks of the database; per query, chunk results (in position order) are concatenated
    # and stably sorted by distance
    tasks = [(words, nw, nbits, q, 0, nq, pa, pb, max_distance) for pa, pb in _db_chunks(n, threads)]
    results = _pool.run(threads, K.range_scan, tasks)
    ends = [np.cumsum(r[0]) for r in results]
    out_d, out_p = [], []
    for qi in range(nq):
        d = np.concatenate([r[1][e[qi] - r[0][qi]: e[qi]] for r, e in zip(results, ends)])
        p = np.concatenate([r[2][e[qi] - r[0][qi]: e[qi]] for r, e in zip(results, ends)])
        order = np.argsort(d, kind="stable")
        out_d.append(d[order])
        out_p.append(p[order])
        lims[qi + 1] = lims[qi] + d.shape[0]
    return lims, np.concatenate(out_d), np.concatenate(out_p)


class FlatIndex(BaseIndex):
    """Exhaustive search: every query is compared with every stored code.

    >>> index = FlatIndex(64)
    >>> index.add(codes)                      # packed uint8 (n, 8), ids 0..n-1
    >>> distances, ids = index.search(queries, k=10)
    >>> lims, distances, ids = index.range_search(queries, max_distance=8)

    ``engine``: "numba" (the kernels) or "numpy" (numpy for small calls), which scan answers a call (see
    :mod:`hashtool.hashindex._numpy_scan`); a function of the call, never of the process's history.
    """

    _TYPE = 1

    def search(self, queries, k):
        """The ``k`` nearest codes of each query: ``(distances int32 (nq, k), ids int64 (nq, k))``.

        Sorted by (distance, id); missing entries (fewer than k codes stored) are -1 in both arrays.
        """
        k = self._check_k(k)
        q = self._prepare_codes(queries, "queries")
        d, p = flat_knn(self._words, self._nw, self._nbits, len(self), q, k, self._threads, self._engine)
        return d, self._ids_of(p)

    def range_search(self, queries, max_distance):
        """Every code within ``max_distance`` (inclusive) of each query, as CSR ``(lims, distances, ids)``."""
        r = self._check_radius(max_distance)
        q = self._prepare_codes(queries, "queries")
        lims, d, p = flat_range(self._words, self._nw, self._nbits, len(self), q, r, self._threads, self._engine)
        return lims, d, self._ids_of(p)
