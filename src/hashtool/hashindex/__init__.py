"""hashtool.hashindex: bit-packed Hamming search on the CPU with Numba (no torch, no faiss).

* :class:`FlatIndex`: exhaustive search, exact.
* :class:`MIHIndex`: exact multi-index hashing (Norouzi, Punjani and Fleet), falling back to the scan
  when that is cheaper; answers are identical to :class:`FlatIndex`, ties included.
* :func:`load_index`: open a saved index (mmap by default) as the right class.
* :func:`warmup`: compile, or load from Numba's on-disk cache, every kernel the search path uses.

Conventions (after faiss's ``IndexBinary``): ``search(queries, k) -> (distances int32 (nq, k), ids int64
(nq, k))`` sorted by (distance, id), padded with -1 when fewer than ``k`` codes are stored;
``range_search(queries, max_distance) -> (lims, distances, ids)`` in CSR form with an **inclusive**
``max_distance``; ``add(codes, ids=None)``, ``remove(ids) -> int``, ``len(index)``, ``save(path)``.
"""

from __future__ import annotations

import time

from hashtool.errors import IndexFormatError
from hashtool.hashindex._base import BaseIndex
from hashtool.hashindex.flat import FlatIndex
from hashtool.hashindex.mih import MIHIndex
from hashtool.hashindex.sharded import ShardedIndex

__all__ = ["BaseIndex", "FlatIndex", "MIHIndex", "ShardedIndex", "load_index", "warmup"]

_CLASSES = {1: FlatIndex, 2: MIHIndex}


def load_index(path, mmap: bool = True, verify: bool | None = None, threads: int | None = None, engine: str = "numba"):
    """Open an index saved with ``index.save(path)``; returns a :class:`FlatIndex` or :class:`MIHIndex`.

    ``mmap=True`` maps the file privately (copy-on-write), so opening is fast and pages are read on
    demand; the file can be replaced while mapped. ``verify=True`` checks every checksum (a read of the
    whole file) and the structure of ids and tables, as :meth:`~BaseIndex.verify` does; ``verify=False``
    checks the header, its checksum, the section bounds and the small sections, an open in microseconds
    whatever the size. The default, ``None``, verifies when ``mmap=False`` (every byte is read then
    anyway) and not with a mapping: call ``index.verify()`` (``hashtool index verify``) to check a mapped
    file. Searches never read outside the arrays, whatever the bytes (the kernels check positions and
    bucket bounds). A bad file raises :class:`~hashtool.errors.IndexFormatError` naming it. ``engine``
    (``"numba"``, ``"numpy"``) says which scan answers a call, see
    :mod:`hashtool.hashindex._numpy_scan`: a short-lived process answering a few queries passes ``"numpy"``.
    """
    from hashtool.hashindex import _format

    f = _format.read_index(path, mmap=mmap, verify=(not mmap) if verify is None else verify)
    cls = _CLASSES.get(f.index_type)
    if cls is None:  # pragma: no cover - _format already rejects unknown types
        raise IndexFormatError(f"{path}: unknown index type {f.index_type}")
    try:
        index = cls(f.nbits, threads=threads, engine=engine)
    except ValueError as exc:
        raise IndexFormatError(f"{path}: header is inconsistent ({exc})") from None
    index._restore(f)
    if f.verified:
        index._check_structure()
    return index


def warmup(nbits: int = 64) -> dict:
    """Compile (or load from Numba's cache) every kernel of the search path; return seconds per step.

    All kernels are typed on uint64 words and int64 sizes whatever ``nbits`` is, so one call covers
    every code length. A CLI calls this once before timing anything the user waits for.
    """
    import numpy as np

    timings = {}
    t0 = time.perf_counter()
    from hashtool.hashindex import _flat_kernels, _mih_kernels  # noqa: F401  loaded: searches use them from now on

    timings["import"] = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(9000, nbits // 8), dtype=np.uint8)  # > 2 chunks of 4096 rows
    t0 = time.perf_counter()
    flat = FlatIndex(nbits, threads=2)
    flat.add(codes)
    flat.search(codes[:40], 3)  # query tiles
    flat.search(codes[:1], 3)  # database chunks + merge
    flat.range_search(codes[:40], nbits // 4)
    flat.range_search(codes[:1], nbits // 4)
    timings["flat"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mih = MIHIndex(nbits, threads=2, fallback=False)
    mih.add(codes[:300])
    mih.search(codes[:5], 3)
    mih.range_search(codes[:5], 2)
    sparse = MIHIndex(nbits, m=-(-nbits // 32), fallback=False)  # 32-bit substrings: sparse tables
    sparse.add(codes[:300])
    sparse.search(codes[:2], 1)
    timings["mih"] = time.perf_counter() - t0
    timings["total"] = timings["import"] + timings["flat"] + timings["mih"]
    return timings
