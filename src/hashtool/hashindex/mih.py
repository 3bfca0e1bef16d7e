"""MIHIndex: exact k-NN and range search by multi-index hashing, with a fallback to the scan.

Choices (see :mod:`hashtool.hashindex._mih_kernels` for the search itself):

* ``m`` substrings; by default ``round(nbits / log2(n))`` (Norouzi et al.'s rule: substrings about as
  wide as log2 of the number of codes, so buckets hold about one code on uniform data), clamped so that
  every substring is 8 to 32 bits wide (and ``m <= nbits // 8``). With ``m=None`` the value is chosen
  again whenever the tables are rebuilt, since it depends on ``len(index)``.
* A table is *dense* (offsets over all ``2**width`` keys) when ``width <= 24`` and ``2**width`` is at most
  ``max(8 n, 65536)``; otherwise *sparse* (sorted distinct keys, binary search).
* ``add``/``remove`` drop the tables; the next search rebuilds them (count-then-fill, O(n m)). A search
  never sees stale tables.
* Fallback (``fallback=True``, the default): tiny indexes (at most ``SMALL_SCAN_WORDS`` words) are
  scanned outright; a range search whose enumeration alone would cost more than the budget is scanned;
  otherwise each query runs the multi-index search with a work budget of ``FALLBACK_FRACTION`` of a full
  scan, and a query that exceeds it is answered by the scan. So a query costs at most about
  ``1 + FALLBACK_FRACTION`` scans. ``fallback=False`` forces the multi-index path (for tests and
  benchmarks). The fraction was 0.1 while the kernel looked buckets up one at a time; with the staged
  kernel (see :mod:`hashtool.hashindex._mih_kernels`) and its refitted work model, 1e7 x 64 clustered
  codes (1,000 queries, 2 threads, round 6) went from 12x the scan's speed at 0.1 (3.9% of the queries
  fell back) to 26x at 0.2 (0.7%), 31x at 0.3 (0.1%) and 39x at 0.5 (none), uniform codes staying at
  0.99-1.12x at every fraction in that sweep (0.93-1.01x in three later runs of the issue's command: see
  RESULTS.md, round 6); 0.3 keeps the worst query at 1.3 scans.
* Routing (k-NN), a function of the call and of the stored codes only (never of earlier calls, so the
  same call takes the same path in every process and thread). Every call first asks
  :meth:`MIHIndex.mih_pays`: ``CALIBRATION_QUERIES`` stored codes, at fixed evenly spaced positions, are
  searched once per ``k`` after every table build; if more than ``ROUTE_SCAN_ABOVE`` of them fell back, calls
  with that ``k`` are scanned directly, whatever their size. Otherwise a large batch sends a probe of
  ``max(PROBE_QUERIES, nq // PROBE_SHARE)`` of its queries through the multi-index path first (its queries
  may be unlike the stored codes); if more than ``ROUTE_SCAN_ABOVE`` of them fell back, the rest of the batch
  is scanned directly. Until round 7 a large batch skipped the calibration and always paid for its probe
  (1e7 x 64 uniform codes: 0.93-0.94x the scan's speed in round 6). This keeps uniform data, where
  multi-index hashing cannot win at these sizes, near the scan's speed after the first call with a given ``k``.
  Range search needs no routing: its enumeration cost is known before it starts.
* Per-query statistics of the last search are in :attr:`MIHIndex.last_stats` (and returned with
  ``return_stats=True``): ``lookups`` (buckets probed), ``candidates`` (table entries checked),
  ``radius`` (last substring radius reached, -1 if none), ``path`` ("mih" or "scan").
"""

from __future__ import annotations

import math

import numpy as np

from hashtool.errors import ArgumentError, IndexFormatError
from hashtool.hashindex import _numpy_scan, _pool
from hashtool.hashindex._base import BaseIndex, _as_int
from hashtool.hashindex.flat import flat_knn, flat_range

MK = _pool.LazyModule("hashtool.hashindex._mih_kernels")

MAX_CODES = 2**31 - 1
MIN_WIDTH = 8
MAX_WIDTH = 32
DENSE_MAX_BITS = 24
SMALL_SCAN_WORDS = 1 << 14
FALLBACK_FRACTION = 0.3
ROUTE_SCAN_ABOVE = 0.9
PROBE_QUERIES = 8
PROBE_SHARE = 32  # a large batch probes 1/32 of its queries (1/16 before round 6: see RESULTS.md)
CALIBRATION_QUERIES = 16
_TABLE_KEYS = ("sub_start", "sub_width", "t_dense", "t_off_base", "t_key_base", "t_key_len")
_TABLE_ARRAYS = ("t_offsets", "t_keys", "t_pos")
_TABLE_DTYPES = {"t_offsets": np.int32, "t_keys": np.uint32, "t_pos": np.int32}


def check_capacity(n: int) -> None:
    """Tables hold int32 positions and offsets: at most :data:`MAX_CODES` codes (entry indexes, ``j * n +
    offset``, are int64 in the kernels, so ``m * n`` may pass 2**32)."""
    if n > MAX_CODES:
        raise ArgumentError(f"MIHIndex holds at most 2**31 - 1 codes, got {n}; use FlatIndex or a ShardedIndex")


def default_m(nbits: int, n: int) -> int:
    """``round(nbits / log2(n))`` clamped to substrings of 8..32 bits."""
    m = round(nbits / math.log2(max(n, 2)))
    lo = -(-nbits // MAX_WIDTH)
    hi = max(1, nbits // MIN_WIDTH)
    return max(lo, min(hi, m, 64))


def is_dense(width: int, n: int) -> bool:
    """Whether the table of a ``width``-bit substring of ``n`` codes is dense (see the module docstring)."""
    return width <= DENSE_MAX_BITS and (1 << width) <= max(8 * n, 1 << 16)


def substring_layout(nbits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(start bit, width) of each of the ``m`` substrings; the first ``nbits % m`` are one bit wider."""
    base, extra = divmod(nbits, m)
    widths = np.array([base + (1 if j < extra else 0) for j in range(m)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    return starts, widths


class MIHIndex(BaseIndex):
    """Exact Hamming search with multi-index hashing; same answers as :class:`FlatIndex`, to the last tie.

    ``m``: number of substrings (None: automatic, see the module docstring). ``fallback``: answer a query
    by the exhaustive scan when the multi-index search would cost more.
    """

    _TYPE = 2

    def __init__(self, nbits: int, m: int | None = None, threads: int | None = None, fallback: bool = True,
                 engine: str = "numba"):
        super().__init__(nbits, threads, engine)
        if m is not None:
            m = _as_int(m, "m", 1)
            lo = -(-self._nbits // MAX_WIDTH)
            if m < lo or m > self._nbits:
                raise ArgumentError(
                    f"m={m} is out of range for {self._nbits}-bit codes: substrings must be at most "
                    f"{MAX_WIDTH} bits, so m must be between {lo} and {self._nbits}"
                )
        self._m_req = m
        self._fallback = bool(fallback)
        self._tables = None
        self.last_stats = None
        self._pays = {}  # k -> does the multi-index path pay for small calls (see mih_pays)

    @property
    def m(self) -> int:
        """Number of substrings in use (or that the next build will use)."""
        if self._tables is not None:
            return int(self._tables["sub_width"].shape[0])
        return self._m_req if self._m_req is not None else default_m(self._nbits, len(self))

    @property
    def fallback(self) -> bool:
        return self._fallback

    @fallback.setter
    def fallback(self, value: bool) -> None:
        self._fallback = bool(value)

    def __repr__(self) -> str:
        return f"MIHIndex(nbits={self._nbits}, m={self.m}, n={len(self)}, threads={self._threads})"

    # ------------------------------------------------------------------ tables
    def _changed(self) -> None:
        super()._changed()
        self._tables = None
        self._pays = {}

    def _ensure_tables(self) -> dict:
        if self._tables is None:
            self._tables = self._build_tables()
        return self._tables

    def _build_tables(self) -> dict:
        n, nw, words = len(self), self._nw, self._words
        check_capacity(n)
        m = self.m
        starts, widths = substring_layout(self._nbits, m)
        t_dense = np.zeros(m, dtype=np.int64)
        t_off_base = np.zeros(m, dtype=np.int64)
        t_key_base = np.zeros(m, dtype=np.int64)
        t_key_len = np.zeros(m, dtype=np.int64)
        t_pos = np.empty(m * n, dtype=np.int32)
        offsets, keys_all = [], []
        off_base = key_base = 0
        keys = np.empty(n, dtype=np.uint32)  # substrings are at most 32 bits
        scratch = None  # the radix sort's buffers, allocated for the first sparse table
        for j in range(m):
            w = int(widths[j])
            MK.substring_keys(words, nw, n, int(starts[j]), w, keys)
            dense = is_dense(w, n)
            seg = slice(j * n, (j + 1) * n)
            if dense:
                off = np.zeros((1 << w) + 1, dtype=np.int32)
                MK.build_dense(keys, n, off, t_pos[seg])
                klen = 0
            else:
                if scratch is None:
                    scratch = np.empty(n, np.uint32), np.empty(n, np.int32)
                klen = int(MK.build_sparse(keys, n, w, t_pos[seg], *scratch))
                sparse_keys = np.empty(klen, np.uint32)
                off = np.empty(klen + 1, np.int32)
                MK.fill_sparse(keys, n, sparse_keys, off)
                keys_all.append(sparse_keys)
            t_dense[j] = int(dense)
            t_off_base[j] = off_base
            t_key_base[j] = key_base
            t_key_len[j] = klen
            offsets.append(off)
            off_base += off.shape[0]
            key_base += klen
        del keys, scratch  # before the concatenations: the peak of a large build
        return {
            "sub_start": starts,
            "sub_width": widths,
            "t_dense": t_dense,
            "t_off_base": t_off_base,
            "t_key_base": t_key_base,
            "t_key_len": t_key_len,
            "t_offsets": np.concatenate(offsets) if offsets else np.zeros(0, np.int32),
            "t_keys": np.concatenate(keys_all) if keys_all else np.zeros(0, np.uint32),
            "t_pos": t_pos,
        }

    def _args(self, t):
        return (
            t["sub_width"].shape[0], t["sub_start"], t["sub_width"], t["t_dense"], t["t_off_base"],
            t["t_key_base"], t["t_key_len"], t["t_offsets"], t["t_keys"], t["t_pos"],
        )

    def _budget(self) -> int:
        if not self._fallback:
            return 2**62
        return int(FALLBACK_FRACTION * len(self) * self._nw) + 1

    def mih_pays(self, k: int) -> bool:
        """Whether the multi-index path can pay for ``k``-NN calls on these codes (see the module docstring).

        Decided once per ``k`` for the stored codes by searching ``CALIBRATION_QUERIES`` of them (fixed
        positions), so it depends only on the index's contents and ``k``.
        """
        k = self._check_k(k)
        pays = self._pays.get(k)
        if pays is None:
            n, nw = len(self), self._nw
            rows = np.unique(np.linspace(0, n - 1, min(n, CALIBRATION_QUERIES)).astype(np.int64))
            q = np.ascontiguousarray(self._words.reshape(n, nw)[rows].reshape(-1))
            fell = self._run_mih(q, k, self._ensure_tables())[-1]
            pays = bool(fell.mean() <= ROUTE_SCAN_ABOVE)
            self._pays[k] = pays
        return pays

    def _run_mih(self, q, k, t):
        """The multi-index path for the queries ``q``, a large batch probed first (see the module docstring).

        Returns (d, p, lookups, candidates, radius, fell); queries the probe sent to the scan are marked
        as fallen back with no lookups.
        """
        nq = q.shape[0] // self._nw
        d, p = np.empty((nq, k), np.int32), np.empty((nq, k), np.int64)
        lookups, cands, radius = (np.zeros(nq, np.int64) for _ in range(3))
        fell = np.ones(nq, np.bool_)
        bad = np.zeros(nq, np.int64)
        args, budget = self._args(t), self._budget()

        def run(qa, qb):
            tasks = [
                (self._words, self._nw, len(self), q, qa + a, qa + b, k, *args, budget, d, p, lookups, cands, radius,
                 fell, bad)
                for a, b in _pool.split(qb - qa, 4 * self._threads)
            ]
            _pool.run(self._threads, MK.mih_knn, tasks)
            self._raise_if_bad(bad)

        probe = max(PROBE_QUERIES, nq // PROBE_SHARE)
        if nq > 2 * probe and self._fallback:
            run(0, probe)
            if fell[:probe].mean() <= ROUTE_SCAN_ABOVE:
                run(probe, nq)
        else:
            run(0, nq)
        return d, p, lookups, cands, radius, fell

    def _raise_if_bad(self, bad) -> None:
        if bad.any():
            where = self._file.path if self._file is not None else "the index"
            raise IndexFormatError(
                f"{where}: multi-index tables are corrupted ({int(bad.sum())} entries out of range); "
                "run `hashtool index verify`, then rebuild or restore the index"
            )

    def _scan_everything(self) -> bool:
        return self._fallback and len(self) * self._nw <= SMALL_SCAN_WORDS

    @staticmethod
    def _stats(nq, n, lookups=None, cands=None, radius=None, fell=None):
        if lookups is None:
            return {
                "lookups": np.zeros(nq, np.int64),
                "candidates": np.full(nq, n, np.int64),
                "radius": np.full(nq, -1, np.int64),
                "path": np.full(nq, "scan"),
            }
        return {
            "lookups": lookups,
            "candidates": np.where(fell, cands + n, cands),
            "radius": radius,
            "path": np.where(fell, "scan", "mih"),
        }

    # ------------------------------------------------------------------ search
    def search(self, queries, k, return_stats: bool = False):
        """Exact k-NN, identical to :meth:`FlatIndex.search`; with ``return_stats`` also the stats dict."""
        k = self._check_k(k)
        q = self._prepare_codes(queries, "queries")
        nq, n, nw = q.shape[0] // self._nw, len(self), self._nw
        scan = n == 0 or nq == 0 or self._scan_everything() or _numpy_scan.use_numpy(self._engine, nq, n, nw)
        if not scan and self._fallback:
            scan = not self.mih_pays(k)
        if scan:  # the whole call is routed to the scan: no per-query bookkeeping
            d, p = flat_knn(self._words, nw, self._nbits, n, q, k, self._threads, self._engine)
            self.last_stats = self._stats(nq, n)
        else:
            d, p, lookups, cands, radius, fell = self._run_mih(q, k, self._ensure_tables())
            radius[fell & (lookups == 0)] = -1  # routed straight to the scan by the probe
            if fell.any():
                rows = np.flatnonzero(fell)
                qf = np.ascontiguousarray(q.reshape(nq, nw)[rows].reshape(-1))
                d[rows], p[rows] = flat_knn(self._words, nw, self._nbits, n, qf, k, self._threads, self._engine)
            self.last_stats = self._stats(nq, n, lookups, cands, radius, fell)
        ids = self._ids_of(p)
        return (d, ids, self.last_stats) if return_stats else (d, ids)

    def _range_lookup_work(self, widths, r: int) -> int:
        """The work of the buckets the range search with radius ``r`` probes (pigeonhole rule), for the
        fallback test: each lookup at its table's cost (dense or sparse)."""
        m = widths.shape[0]
        total = 0
        for j in range(m):
            # substring j is searched to radius rho with m * rho + j <= r
            rho = (r - j) // m
            w = int(widths[j])
            cost = MK.LOOKUP_COST if is_dense(w, len(self)) else MK.SPARSE_LOOKUP_COST
            total += cost * sum(math.comb(w, x) for x in range(0, min(rho, w) + 1))
        return total

    def range_search(self, queries, max_distance, return_stats: bool = False):
        """Exact range search, identical to :meth:`FlatIndex.range_search`; optionally with stats."""
        r = self._check_radius(max_distance)
        q = self._prepare_codes(queries, "queries")
        nq, n, nw = q.shape[0] // self._nw, len(self), self._nw
        r = min(r, self._nbits)
        scan = n == 0 or nq == 0 or self._scan_everything() or _numpy_scan.use_numpy(self._engine, nq, n, nw)
        if not scan and self._fallback:
            widths = self._tables["sub_width"] if self._tables is not None else substring_layout(self._nbits, self.m)[1]
            scan = self._range_lookup_work(widths, r) > self._budget()
        if scan:
            lims, d, p = flat_range(self._words, nw, self._nbits, n, q, r, self._threads, self._engine)
            self.last_stats = self._stats(nq, n)
        else:
            t = self._ensure_tables()
            args, budget = self._args(t), self._budget()
            nmih = nq
            lookups, cands, radius = (np.zeros(nq, np.int64) for _ in range(3))
            radius[nmih:] = -1
            fell = np.ones(nq, dtype=np.bool_)  # queries routed straight to the scan count as fallen back
            bad = np.zeros(nq, np.int64)
            parts = _pool.split(nmih, 4 * self._threads) if nmih else []
            results = _pool.run(
                self._threads,
                MK.mih_range,
                [(self._words, nw, n, q, qa, qb, r, *args, budget, lookups, cands, radius, fell, bad)
                 for qa, qb in parts],
            )
            self._raise_if_bad(bad)
            mask = (1 << MK.POS_SHIFT) - 1
            per_query_d = [np.zeros(0, np.int32)] * nq
            per_query_p = [np.zeros(0, np.int64)] * nq
            for (qa, qb), (keys, counts) in zip(parts, results):
                ends = np.cumsum(counts)
                dists = (keys >> MK.POS_SHIFT).astype(np.int32)
                pos = keys & mask
                for j in range(qb - qa):
                    per_query_d[qa + j] = dists[ends[j] - counts[j]: ends[j]]
                    per_query_p[qa + j] = pos[ends[j] - counts[j]: ends[j]]
            if fell.any():
                rows = np.flatnonzero(fell)
                qf = np.ascontiguousarray(q.reshape(nq, nw)[rows].reshape(-1))
                fl, fd, fp = flat_range(self._words, nw, self._nbits, n, qf, r, self._threads, self._engine)
                for i, row in enumerate(rows):
                    per_query_d[row] = fd[fl[i]: fl[i + 1]]
                    per_query_p[row] = fp[fl[i]: fl[i + 1]]
            counts = np.array([a.shape[0] for a in per_query_d], dtype=np.int64)
            lims = np.zeros(nq + 1, dtype=np.int64)
            np.cumsum(counts, out=lims[1:])
            d = np.concatenate(per_query_d).astype(np.int32, copy=False) if nq else np.zeros(0, np.int32)
            p = np.concatenate(per_query_p).astype(np.int64, copy=False) if nq else np.zeros(0, np.int64)
            self.last_stats = self._stats(nq, n, lookups, cands, radius, fell)
        ids = self._ids_of(p)
        return (lims, d, ids, self.last_stats) if return_stats else (lims, d, ids)

    # ------------------------------------------------------------------ persistence
    def _sections(self):
        sections = self._id_sections()
        if len(self):
            t = self._ensure_tables()
            for name in _TABLE_KEYS + _TABLE_ARRAYS:
                sections[name] = t[name]
        return [self.m, self._m_req or 0, int(self._fallback)], sections

    def _restore(self, f) -> None:
        super()._restore(f)
        m_used, m_req, fallback = f.params[:3]
        self._m_req = int(m_req) or None
        self._fallback = bool(fallback)
        names = _TABLE_KEYS + _TABLE_ARRAYS + (("t_word0",) if f.version == 1 else ())
        present = [name for name in names if name in f.sections]
        if not present:
            if len(self):
                raise IndexFormatError(f"{f.path}: the multi-index tables are missing")
            return
        if len(present) != len(names):
            raise IndexFormatError(f"{f.path}: some multi-index tables are missing")
        t = {name: f.sections[name] for name in _TABLE_KEYS + _TABLE_ARRAYS}
        if f.version == 1:  # int64 offsets and keys, and a first-word copy, which version 2 drops
            bad = IndexFormatError(f"{f.path}: multi-index tables are corrupted (dtypes)")
            if t["t_offsets"].dtype != np.int64 or t["t_keys"].dtype != np.int64:
                raise bad
            if len(self) and (t["t_offsets"].min() < 0 or t["t_offsets"].max() > len(self)):
                raise IndexFormatError(f"{f.path}: multi-index tables are corrupted (offsets)")
            if t["t_keys"].shape[0] and (t["t_keys"].min() < 0 or t["t_keys"].max() >= 2**32):
                raise IndexFormatError(f"{f.path}: multi-index tables are corrupted (keys)")
            t["t_offsets"] = t["t_offsets"].astype(np.int32)
            t["t_keys"] = t["t_keys"].astype(np.uint32)
        self._check_tables(f.path, t, int(m_used), deep=False)
        self._tables = t

    def _check_structure(self) -> None:
        super()._check_structure()
        if self._tables is not None:
            where = self._file.path if self._file is not None else "the index"
            self._check_tables(where, self._tables, self.m, deep=True)

    def _check_tables(self, where, t, m: int, deep: bool) -> None:
        """Check the table directory (always: it is small); with ``deep`` also every offset, key and position."""
        bad = lambda what: IndexFormatError(f"{where}: multi-index tables are corrupted ({what})")  # noqa: E731
        n = len(self)
        for name in _TABLE_KEYS:
            if t[name].dtype != np.int64 or t[name].shape[0] != m:
                raise bad(f"{name} should hold {m} int64 values")
        starts, widths = substring_layout(self._nbits, m) if 1 <= m <= self._nbits else (None, None)
        if starts is None or not (np.array_equal(starts, t["sub_start"]) and np.array_equal(widths, t["sub_width"])):
            raise bad("substring layout")
        if any(t[name].dtype != dt for name, dt in _TABLE_DTYPES.items()):
            raise bad("dtypes")
        if t["t_pos"].shape[0] != m * n:
            raise bad("entry count")
        off_base = key_base = 0
        for j in range(m):
            w = int(widths[j])
            dense = int(t["t_dense"][j])
            klen = int(t["t_key_len"][j])
            if dense not in (0, 1) or int(t["t_off_base"][j]) != off_base or int(t["t_key_base"][j]) != key_base:
                raise bad(f"table {j} bases")
            nofs = (1 << w) + 1 if dense else klen + 1
            if (dense and klen != 0) or klen < 0 or klen > n:
                raise bad(f"table {j} keys")
            if off_base + nofs > t["t_offsets"].shape[0] or key_base + klen > t["t_keys"].shape[0]:
                raise bad(f"table {j} sizes")
            if deep:
                off = t["t_offsets"][off_base: off_base + nofs]
                if off[0] != 0 or off[-1] != n or (np.diff(off) < 0).any():
                    raise bad(f"table {j} offsets")
                if not dense:
                    keys = t["t_keys"][key_base: key_base + klen].astype(np.int64)
                    if klen and (keys[-1] >= (1 << w) or (np.diff(keys) <= 0).any()):
                        raise bad(f"table {j} keys")
                pos = t["t_pos"][j * n: (j + 1) * n]
                if n and (pos.min() < 0 or pos.max() >= n):
                    raise bad(f"table {j} positions")
            off_base += nofs
            key_base += klen
        if off_base != t["t_offsets"].shape[0] or key_base != t["t_keys"].shape[0]:
            raise bad("section lengths")
