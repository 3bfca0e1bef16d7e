"""ShardedIndex: one logical index kept as several shard indexes, searched in parallel and merged exactly.

An index too large for one file or one process is split into shards (each a :class:`FlatIndex` or
:class:`MIHIndex`). ``search`` asks every shard for its ``k`` best, in parallel threads, and merges the
``S * k`` candidates by (distance, id); ``range_search`` concatenates the shards' matches and sorts them
the same way. Ids are unique across shards, so the answers are exactly those of one index over all the
codes, ties included (the shard a code sits in never matters). The merge functions :func:`merge_knn` and
:func:`merge_range` are also used by :mod:`hashtool.cluster`, where the shards live on Dask workers.

Adding fills the last shard up to ``shard_size`` codes, then opens new shards; ids follow the usual
rules (default: largest stored id + 1; given ids must be new and distinct).

On disk (``save(path)`` / :meth:`ShardedIndex.load`): a JSON manifest at ``path`` naming the shard files,
``{stem}-00000.hidx``, ``{stem}-00001.hidx``, ... in the same folder, each an ordinary index file. The
shards are written first and the manifest last, atomically, so a reader sees the old set or the new one.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hashtool import codes as _codes
from hashtool.errors import ArgumentError, IndexFormatError
from hashtool.fileio import atomic_write
from hashtool.threads import resolve_threads

SHARDS_FORMAT = "hashtool-shards"
SHARDS_VERSION = 1
_STRUCTURES = ("flat", "mih")


def merge_knn(parts, k: int, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard k-NN answers ``[(distances (nq, k_s), ids (nq, k_s)), ...]`` into the ``k`` best.

    Sorted by (distance, id), -1 padding (distance -1 sorts last). Exact when every shard returned its own
    ``k`` best and ids are unique across shards.
    """
    nq = parts[0][0].shape[0] if parts else 0
    out_d = np.full((nq, k), -1, dtype=np.int32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0 or not parts:
        return out_d, out_i
    d = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts], axis=1)
    ids = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts], axis=1)
    key = np.where(d < 0, nbits + 1, d)  # padding after every real distance
    order = np.lexsort((ids, key), axis=-1)[:, :k]
    take_d = np.take_along_axis(key, order, axis=1)
    take_i = np.take_along_axis(ids, order, axis=1)
    real = take_d <= nbits
    width = take_d.shape[1]
    out_d[:, :width] = np.where(real, take_d, -1)
    out_i[:, :width] = np.where(real, take_i, -1)
    return out_d, out_i


def merge_range(parts, nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-shard range answers ``[(lims, distances, ids), ...]`` into one CSR answer by (distance, id)."""
    lims = np.zeros(nq + 1, dtype=np.int64)
    if nq == 0 or not parts:
        return lims, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    qs, ds, ids = [], [], []
    for p_lims, p_d, p_i in parts:
        counts = np.diff(np.asarray(p_lims, dtype=np.int64))
        qs.append(np.repeat(np.arange(nq, dtype=np.int64), counts))
        ds.append(np.asarray(p_d, dtype=np.int32))
        ids.append(np.asarray(p_i, dtype=np.int64))
    q, d, i = np.concatenate(qs), np.concatenate(ds), np.concatenate(ids)
    order = np.lexsort((i, d, q))
    np.cumsum(np.bincount(q, minlength=nq), out=lims[1:])
    return lims, d[order], i[order]


def _shard_class(structure: str):
    from hashtool.hashindex.flat import FlatIndex
    from hashtool.hashindex.mih import MIHIndex

    if structure not in _STRUCTURES:
        raise ArgumentError(f"structure must be 'flat' or 'mih', got {structure!r}")
    return FlatIndex if structure == "flat" else MIHIndex


class ShardedIndex:
    """Several shard indexes behind the interface of :class:`FlatIndex` (see the module docstring).

    >>> index = ShardedIndex(64, shard_size=1_000_000)   # doctest: +SKIP
    >>> index.add(codes)                                  # 1e7 codes -> 10 shards
    >>> distances, ids = index.search(queries, k=10)      # identical to FlatIndex over all codes

    ``shard_size``: codes per shard when adding (None: one shard). ``structure``: "flat" or "mih", the
    class of new shards. ``threads``: the total thread budget; shards are searched on
    ``min(threads, shards)`` threads and each shard gets an equal share of the rest.
    """

    def __init__(self, nbits: int, shard_size: int | None = None, structure: str = "flat",
                 threads: int | None = None, shards=None):
        self._nbits = _codes.check_nbits(nbits)
        if shard_size is not None and (isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1):
            raise ArgumentError(f"shard_size must be a positive integer or None, got {shard_size!r}")
        self._shard_size = None if shard_size is None else int(shard_size)
        self._cls = _shard_class(structure)
        self._structure = structure
        self._shards = list(shards or [])
        for s in self._shards:
            if s.nbits != self._nbits:
                raise ArgumentError(f"a shard holds {s.nbits}-bit codes, not {self._nbits}")
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.threads = threads

    # ------------------------------------------------------------------ properties
    @property
    def nbits(self) -> int:
        return self._nbits

    @property
    def shards(self) -> list:
        """The shard indexes (a copy of the list)."""
        return list(self._shards)

    @property
    def structure(self) -> str:
        """The class of new shards: "flat" or "mih"."""
        return self._structure

    @property
    def shard_size(self) -> int | None:
        return self._shard_size

    @property
    def threads(self) -> int:
        return self._threads

    @threads.setter
    def threads(self, value):
        self._threads = resolve_threads(value)
        self._spread_threads()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None

    def _spread_threads(self) -> None:
        per_shard = max(1, self._threads // max(1, len(self._shards)))
        for s in self._shards:
            s.threads = per_shard

    @property
    def ids(self) -> np.ndarray:
        """Stored ids, ascending."""
        if not self._shards:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([np.asarray(s.ids) for s in self._shards]))

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)

    def __repr__(self) -> str:
        return f"ShardedIndex(nbits={self._nbits}, n={len(self)}, shards={len(self._shards)}, threads={self._threads})"

    def codes(self) -> np.ndarray:
        """Stored codes, packed uint8 (n, nbits // 8), in id order."""
        if not self._shards:
            return np.zeros((0, self._nbits // 8), dtype=np.uint8)
        codes = np.concatenate([s.codes() for s in self._shards])
        ids = np.concatenate([np.asarray(s.ids) for s in self._shards])
        return codes[np.argsort(ids, kind="stable")]

    # ------------------------------------------------------------------ mutation
    def add(self, codes, ids=None) -> None:
        """Add codes; fills the last shard up to ``shard_size``, then opens new ones. Ids as in FlatIndex.add."""
        packed = _codes.ensure_packed(np.asarray(codes), self._nbits) if np.asarray(codes).size else np.zeros((0, self._nbits // 8), np.uint8)
        n = packed.shape[0]
        if ids is None:
            start = int(self.ids[-1]) + 1 if len(self) else 0
            new_ids = np.arange(start, start + n, dtype=np.int64)
        else:
            new_ids = np.asarray(ids)
            if new_ids.ndim != 1 or new_ids.shape[0] != n:
                raise ArgumentError(f"got {n} codes but ids of shape {new_ids.shape}; pass one id per code")
            if n and not np.issubdtype(new_ids.dtype, np.integer):
                raise ArgumentError(f"ids must be integers, got dtype {new_ids.dtype}")
            new_ids = new_ids.astype(np.int64)
            clash = np.intersect1d(new_ids, self.ids)
            if clash.shape[0]:
                raise ArgumentError(f"{clash.shape[0]} id(s) already in the index, e.g. {clash[:5].tolist()}; remove them first or pass other ids")
        if n == 0:
            return
        # validate everything (ids >= 0, distinct) before touching any shard: a probe shard checks them
        self._cls(self._nbits, threads=1).add(packed, new_ids)
        start = 0
        while start < n:
            if not self._shards or (self._shard_size is not None and len(self._shards[-1]) >= self._shard_size):
                self._shards.append(self._cls(self._nbits, threads=1))
                self._spread_threads()
            room = n - start if self._shard_size is None else self._shard_size - len(self._shards[-1])
            end = min(n, start + room)
            self._shards[-1].add(packed[start:end], new_ids[start:end])
            start = end

    def remove(self, ids, missing: str = "error") -> int:
        """Remove codes by id; see FlatIndex.remove (unknown ids: an error naming them, or ignored)."""
        if missing not in ("error", "ignore"):
            raise ArgumentError(f"missing must be 'error' or 'ignore', got {missing!r}")
        req = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if missing == "error":
            unknown = np.setdiff1d(req, self.ids)
            if unknown.shape[0]:
                raise ArgumentError(
                    f"{unknown.shape[0]} id(s) not in the index, e.g. {unknown[:5].tolist()}; nothing was removed "
                    "(pass missing='ignore' to remove the others)"
                )
        return sum(s.remove(req, missing="ignore") for s in self._shards)

    # ------------------------------------------------------------------ search
    def _map(self, fn) -> list:
        """``fn(shard)`` for every shard, in parallel threads; results in shard order."""
        if len(self._shards) <= 1 or self._threads <= 1:
            return [fn(s) for s in self._shards]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=min(self._threads, len(self._shards)), thread_name_prefix="hashtool-shard")
            pool = self._pool
        return [f.result() for f in [pool.submit(fn, s) for s in self._shards]]

    def _nq(self, queries) -> int:
        arr = np.asarray(queries)
        return _codes.ensure_packed(arr, self._nbits).shape[0] if arr.size else 0

    def search(self, queries, k):
        """The ``k`` nearest codes over all shards: ``(distances int32 (nq, k), ids int64 (nq, k))``, by (distance, id)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ArgumentError(f"k must be an integer >= 1, got {k!r}")
        if not self._shards:
            return self._cls(self._nbits).search(queries, k)
        parts = self._map(lambda s: s.search(queries, k))
        return merge_knn(parts, int(k), self._nbits)

    def range_search(self, queries, max_distance):
        """Every code within ``max_distance`` (inclusive), over all shards, as CSR ``(lims, distances, ids)``."""
        if not self._shards:
            return self._cls(self._nbits).range_search(queries, max_distance)
        parts = self._map(lambda s: s.range_search(queries, max_distance))
        return merge_range(parts, parts[0][0].shape[0] - 1)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write every shard to ``{stem}-NNNNN.hidx`` beside ``path``, then the manifest at ``path`` (atomic)."""
        path = Path(path)
        names = [shard_file_name(path, i) for i in range(len(self._shards))]
        path.parent.mkdir(parents=True, exist_ok=True)
        for shard, name in zip(self._shards, names):
            shard.save(path.parent / name)
        manifest = {
            "format": SHARDS_FORMAT,
            "version": SHARDS_VERSION,
            "nbits": self._nbits,
            "structure": self._structure,
            "shard_size": self._shard_size,
            "shards": [{"file": name, "count": len(s)} for s, name in zip(self._shards, names)],
        }
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=1) + "\n")
        stale = len(names)
        while (path.parent / shard_file_name(path, stale)).exists():  # shards of an older, larger set
            (path.parent / shard_file_name(path, stale)).unlink()
            stale += 1

    @classmethod
    def load(cls, path, mmap: bool = True, verify: bool | None = None, threads: int | None = None) -> "ShardedIndex":
        """Open a shard set written by :meth:`save`; a bad manifest or shard raises IndexFormatError naming it.

        ``verify`` is passed to each shard's :func:`~hashtool.hashindex.load_index`; the check that no id is in
        two shards always runs (it is cheap where id ranges do not overlap)."""
        from hashtool.hashindex import load_index

        manifest = read_manifest(path)
        path = Path(path)
        shards = []
        for entry in manifest["shards"]:
            shard = load_index(path.parent / entry["file"], mmap=mmap, verify=verify, threads=1)
            if shard.nbits != manifest["nbits"] or len(shard) != entry["count"]:
                raise IndexFormatError(
                    f"{path.parent / entry['file']}: holds {len(shard)} {shard.nbits}-bit codes, the manifest {path} says "
                    f"{entry['count']} of {manifest['nbits']} bits; the shard set is inconsistent, rebuild it"
                )
            shards.append(shard)
        index = cls(manifest["nbits"], shard_size=manifest.get("shard_size"), structure=manifest.get("structure", "flat"),
                    threads=threads, shards=shards)
        if not _ids_disjoint(shards):
            raise IndexFormatError(f"{path}: an id is stored in two shards; the shard set is corrupted, rebuild it")
        return index


def _ids_disjoint(shards) -> bool:
    """No id in two shards. Each shard's ids are sorted, so shards whose id ranges do not overlap (the usual
    case: ids appended in order) are checked in O(shards); otherwise all ids are sorted once."""
    ranges = sorted((int(s.ids[0]), int(s.ids[-1])) for s in shards if len(s))
    if all(a[1] < b[0] for a, b in zip(ranges, ranges[1:])):
        return True
    all_ids = np.concatenate([np.asarray(s.ids) for s in shards])
    return np.unique(all_ids).shape[0] == all_ids.shape[0]


def shard_file_name(manifest_path, i: int) -> str:
    """The file name of shard ``i`` of the set whose manifest is ``manifest_path``."""
    return f"{Path(manifest_path).stem}-{i:05d}.hidx"


def read_manifest(path) -> dict:
    """Parse and check a shard manifest; IndexFormatError names the file and what is wrong."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: no such shard manifest") from None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable shard manifest ({exc}); rebuild the index") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDS_FORMAT:
        raise IndexFormatError(f"{path}: not a hashtool shard manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or not 1 <= version <= SHARDS_VERSION:
        raise IndexFormatError(f"{path}: shard manifest version {version!r} is not supported (this hashtool reads 1..{SHARDS_VERSION}); upgrade hashtool")
    shards = manifest.get("shards")
    if not isinstance(manifest.get("nbits"), int) or not isinstance(shards, list) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("count"), int) and "/" not in e["file"]
        for e in shards
    ):
        raise IndexFormatError(f"{path}: shard manifest lacks nbits or a valid list of shards; rebuild the index")
    return manifest
