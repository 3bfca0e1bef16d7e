"""What every index shares: input validation, id bookkeeping, storage, threads, persistence.

Storage. Codes live in one contiguous 1-D uint64 array of ``len(index) * words_per_code(nbits)`` words
(little-endian, zero-padded to a whole word, see :func:`hashtool.codes.to_words`) and ids in an int64
array. Rows are kept **sorted by id**, so a row's position orders ties exactly like its id: the kernels
work on positions and the results come out in (distance, id) order. Adding ids above every stored id
(the default sequential ids) appends; other ids cost a merge.

Results. ``search`` returns ``(distances int32 (nq, k), ids int64 (nq, k))`` sorted by (distance, id);
when fewer than ``k`` codes are stored, the missing entries are ``distance = -1, id = -1``.
``range_search`` returns ``(lims int64 (nq + 1,), distances int32, ids int64)`` in CSR form: query
``i``'s matches are ``[lims[i]:lims[i + 1]]``, sorted the same way; ``max_distance`` is inclusive.
"""

from __future__ import annotations

import numpy as np

from hashtool import codes as _codes
from hashtool.errors import ArgumentError, IndexFormatError
from hashtool.threads import resolve_threads


def _as_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ArgumentError(f"{name} must be >= {minimum}, got {value}")
    return value


class BaseIndex:
    """Shared base of :class:`FlatIndex` and :class:`MIHIndex` (not used directly)."""

    _TYPE = 0

    def __init__(self, nbits: int, threads: int | None = None, engine: str = "numba"):
        self._nbits = _codes.check_nbits(nbits)
        self.engine = engine
        self._nw = _codes.words_per_code(self._nbits)
        self._words = np.zeros(0, dtype=np.uint64)
        self._ids_arr = np.zeros(0, dtype=np.int64)  # None: the ids are 0..n-1 (not materialised)
        self.threads = threads
        self._file = None

    # ------------------------------------------------------------------ properties
    @property
    def nbits(self) -> int:
        """Code length in bits."""
        return self._nbits

    @property
    def threads(self) -> int:
        """Threads used by every kernel (set to None for the default, see hashtool.threads)."""
        return self._threads

    @threads.setter
    def threads(self, value):
        self._threads = resolve_threads(value)

    @property
    def engine(self) -> str:
        """Which scan answers a call: "numba" (the kernels) or "numpy" for small calls.

        See :mod:`hashtool.hashindex._numpy_scan`."""
        return self._engine

    @engine.setter
    def engine(self, value) -> None:
        from hashtool.hashindex._numpy_scan import check_engine

        self._engine = check_engine(value)

    @property
    def _ids(self) -> np.ndarray:
        if self._ids_arr is None:
            self._ids_arr = np.arange(len(self), dtype=np.int64)
        return self._ids_arr

    @_ids.setter
    def _ids(self, value) -> None:
        self._ids_arr = value

    @property
    def ids(self) -> np.ndarray:
        """Stored ids, ascending (a read-only view)."""
        v = self._ids.view()
        v.flags.writeable = False
        return v

    def __len__(self) -> int:
        return int(self._words.shape[0] // self._nw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nbits={self._nbits}, n={len(self)}, threads={self._threads})"

    def codes(self) -> np.ndarray:
        """Stored codes, packed uint8 (n, nbits // 8), in id order."""
        if len(self) == 0:
            return np.zeros((0, self._nbits // 8), dtype=np.uint8)
        return _codes.from_words(self._words.reshape(-1, self._nw), self._nbits)

    # ------------------------------------------------------------------ validation
    def _prepare_codes(self, codes, what: str) -> np.ndarray:
        """Validate codes or queries and return them as contiguous 1-D uint64 words (may be empty)."""
        try:
            arr = np.asarray(codes)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"{what} cannot be converted to an array: {exc}") from None
        if arr.ndim == 2 and arr.shape[0] == 0:
            if arr.shape[1] not in (self._nbits // 8, self._nbits):
                raise ArgumentError(
                    f"{what} has width {arr.shape[1]}; {self._nbits}-bit codes are {self._nbits // 8} "
                    f"bytes packed or {self._nbits} bits unpacked"
                )
            return np.zeros(0, dtype=np.uint64)
        packed = _codes.ensure_packed(arr, self._nbits)
        return np.ascontiguousarray(_codes.to_words(packed, self._nbits).reshape(-1))

    # ------------------------------------------------------------------ mutation
    def add(self, codes, ids=None) -> None:
        """Add codes (packed uint8 (n, nbits // 8), or anything :func:`hashtool.codes.pack` accepts).

        ``ids``: int64-compatible, one per code, >= 0, distinct and not already stored. By default they
        continue from the largest stored id + 1 (0 for an empty index).
        """
        words = self._prepare_codes(codes, "codes")
        n_new = words.shape[0] // self._nw
        if ids is None and len(self) == 0:  # ids 0..n-1: kept implicit (no n-element id array, no sort)
            if n_new:
                self._words = words
                self._ids = None
                self._changed()
            return
        if ids is None:
            start = int(self._ids[-1]) + 1 if len(self) else 0
            new_ids = np.arange(start, start + n_new, dtype=np.int64)
        else:
            new_ids = self._check_ids(ids, "ids")
            if new_ids.shape[0] != n_new:
                raise ArgumentError(f"got {n_new} codes but {new_ids.shape[0]} ids; pass one id per code")
        if n_new == 0:
            return
        order = np.argsort(new_ids, kind="stable")
        sorted_new = new_ids[order]
        if sorted_new.shape[0] > 1:
            dup = sorted_new[1:] == sorted_new[:-1]
            if dup.any():
                raise ArgumentError(f"ids contain duplicates, e.g. {int(sorted_new[1:][dup][0])}; ids must be distinct")
        if len(self):
            where = np.searchsorted(self._ids, sorted_new)
            hit = (where < len(self)) & (self._ids[np.minimum(where, len(self) - 1)] == sorted_new)
            if hit.any():
                clash = sorted_new[hit]
                raise ArgumentError(
                    f"{clash.shape[0]} id(s) already in the index, e.g. {clash[:5].tolist()}; remove them first "
                    "or pass other ids"
                )
        if order.shape[0] > 1 and (np.diff(order) < 0).any():
            words = words.reshape(n_new, self._nw)[order].reshape(-1)
        if len(self) == 0 or sorted_new[0] > self._ids[-1]:
            self._words = np.concatenate([self._words, words])
            self._ids = np.concatenate([self._ids, sorted_new])
        else:
            all_ids = np.concatenate([self._ids, sorted_new])
            perm = np.argsort(all_ids, kind="stable")
            all_words = np.concatenate([self._words, words]).reshape(-1, self._nw)
            self._words = np.ascontiguousarray(all_words[perm].reshape(-1))
            self._ids = all_ids[perm]
        self._changed()

    def remove(self, ids, missing: str = "error") -> int:
        """Remove codes by id and return how many were removed.

        Unknown ids are reported: with ``missing="error"`` (the default) an :class:`ArgumentError` names
        them and nothing is removed; with ``missing="ignore"`` the known ones are removed and the return
        value tells how many that was. Repeated ids count once.
        """
        if missing not in ("error", "ignore"):
            raise ArgumentError(f"missing must be 'error' or 'ignore', got {missing!r}")
        req = np.unique(self._check_ids(ids, "ids to remove"))
        if req.shape[0] == 0:
            return 0
        if len(self):
            where = np.searchsorted(self._ids, req)
            found = (where < len(self)) & (self._ids[np.minimum(where, len(self) - 1)] == req)
        else:
            where = np.zeros(req.shape[0], dtype=np.int64)
            found = np.zeros(req.shape[0], dtype=bool)
        if not found.all() and missing == "error":
            unknown = req[~found]
            raise ArgumentError(
                f"{unknown.shape[0]} id(s) not in the index, e.g. {unknown[:5].tolist()}; nothing was removed "
                "(pass missing='ignore' to remove the others)"
            )
        rows = where[found]
        if rows.shape[0] == 0:
            return 0
        keep = np.ones(len(self), dtype=bool)
        keep[rows] = False
        self._words = np.ascontiguousarray(self._words.reshape(-1, self._nw)[keep].reshape(-1))
        self._ids = self._ids[keep]
        self._changed()
        return int(rows.shape[0])

    def _check_ids(self, ids, what: str) -> np.ndarray:
        try:
            arr = np.asarray(ids)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"{what} cannot be converted to an array: {exc}") from None
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise ArgumentError(f"{what} must be 1-D, got shape {arr.shape}")
        if arr.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ArgumentError(f"{what} must be integers, got dtype {arr.dtype}")
        if arr.dtype == np.uint64 and (arr > np.iinfo(np.int64).max).any():
            raise ArgumentError(f"{what} must fit in int64")
        arr = arr.astype(np.int64)
        if (arr < 0).any():
            raise ArgumentError(f"{what} must be >= 0 (-1 marks a missing result), got {int(arr.min())}")
        return arr

    def _changed(self) -> None:
        """Hook: called after every add/remove (MIH also invalidates its tables); the file no longer
        describes the index."""
        self._file = None

    # ------------------------------------------------------------------ search
    def _check_k(self, k) -> int:
        return _as_int(k, "k", 1)

    def _check_radius(self, max_distance) -> int:
        return _as_int(max_distance, "max_distance", 0)

    def _ids_of(self, pos: np.ndarray) -> np.ndarray:
        if self._ids_arr is None:  # ids are positions
            return np.array(pos, dtype=np.int64)
        out = np.full(pos.shape, -1, dtype=np.int64)
        ok = pos >= 0
        if len(self):
            out[ok] = self._ids[pos[ok]]
        return out

    # ------------------------------------------------------------------ persistence
    def _id_sections(self) -> dict:
        """The codes, and the ids unless they are 0..n-1 (rows are sorted by id, so that holds exactly when
        the last id is n - 1)."""
        n = len(self)
        if self._ids_arr is None or n == 0 or int(self._ids_arr[-1]) == n - 1:
            return {"words": self._words}
        return {"words": self._words, "ids": self._ids_arr}

    def _sections(self) -> tuple[list, dict]:
        return [], self._id_sections()

    def save(self, path) -> None:
        """Write the index to ``path`` atomically (see :mod:`hashtool.hashindex._format`)."""
        from hashtool.hashindex import _format

        params, sections = self._sections()
        _format.write_index(path, self._TYPE, self._nbits, len(self), params, sections)

    @classmethod
    def load(cls, path, mmap: bool = True, verify: bool | None = None, threads: int | None = None, engine: str = "numba"):
        """Load an index of this class; see :func:`hashtool.hashindex.load_index`."""
        from hashtool.hashindex import load_index

        index = load_index(path, mmap=mmap, verify=verify, threads=threads, engine=engine)
        if not isinstance(index, cls):
            raise IndexFormatError(
                f"{path}: holds a {type(index).__name__}, not a {cls.__name__}; use hashtool.hashindex.load_index"
            )
        return index

    def _restore(self, f) -> None:
        """Fill this (fresh) index from a parsed file; subclasses extend it."""
        words = f.sections.get("words")
        ids = f.sections.get("ids")
        if words is None or (ids is None and f.version == 1):
            raise IndexFormatError(f"{f.path}: a section ('words' or 'ids') is missing")
        if words.dtype != np.uint64 or (ids is not None and ids.dtype != np.int64):
            raise IndexFormatError(f"{f.path}: sections have the wrong dtypes")
        if words.shape[0] != f.count * self._nw or (ids is not None and ids.shape[0] != f.count):
            raise IndexFormatError(
                f"{f.path}: section sizes ({words.shape[0]} words, {'implicit' if ids is None else ids.shape[0]} ids) "
                f"do not match {f.count} codes of {self._nbits} bits"
            )
        self._words = words
        self._ids_arr = ids
        self._file = f

    def _check_structure(self) -> None:
        """Check what checksums cannot: the ids are >= 0 and strictly increasing (subclasses extend it)."""
        where = self._file.path if self._file is not None else "the index"
        ids = self._ids_arr
        if ids is not None and ids.shape[0] > 1 and not (np.diff(ids) > 0).all():
            raise IndexFormatError(f"{where}: ids are not strictly increasing; the file is corrupted")
        if ids is not None and ids.shape[0] and ids[0] < 0:
            raise IndexFormatError(f"{where}: holds a negative id; the file is corrupted")

    def verify(self) -> dict:
        """Check the index against its file: every checksum and the structure (what ``hashtool index verify``
        runs). Returns ``{"path", "format_version", "bytes_checked", "codes"}`` (path and version None for an
        index not loaded from a file, or changed since); raises IndexFormatError naming the file when the
        file or the structure is damaged."""
        f = self._file
        checked = f.verify_bytes() if f is not None else 0
        self._check_structure()
        return {
            "path": f.path if f is not None else None,
            "format_version": f.version if f is not None else None,
            "bytes_checked": checked,
            "codes": len(self),
        }
