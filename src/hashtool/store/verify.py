"""``hashtool index verify``: check a whole index and say what is wrong (torch-free).

Heavy checks live here, run on request (and the file checksums of ``codes.hidx`` when it is loaded),
never on every query. Checks, each reported as a problem naming the file and what to do:

* the store: marker, ``CURRENT``, the generation's files (:meth:`IndexStore.current`);
* the catalog: SQLite ``integrity_check``, tables and meta keys, unique paths and ids below ``next_id``;
* the codes: ``codes.hidx`` loads with its checksums verified, has the catalog's bit width, and holds
  exactly the catalog's ids, once each;
* the encoder: ``encoder.onnx`` has the sha256 the catalog records, opens, and makes codes of that width;
* with ``check_files``: every indexed file still exists below the root and has its recorded sha256
  (missing or changed files are notes, not problems: the index is sound, a build would update it).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hashtool.errors import HashtoolError
from hashtool.fileio import sha256_file
from hashtool.store.store import IndexStore

_META_KEYS = ("root", "nbits", "encoder_sha256", "next_id")


@dataclass
class VerifyResult:
    index: str
    generation: str = ""
    count: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"index": self.index, "generation": self.generation, "count": self.count, "ok": self.ok,
                "problems": self.problems, "notes": self.notes}


def verify_index(store: IndexStore, check_files: bool = False, progress: Callable[[str], None] | None = None) -> VerifyResult:
    store.check()  # not an index at all: an error for the caller, not a finding
    result = VerifyResult(index=str(store.path))
    try:
        with store.reading() as gen:
            result.generation = gen.name
            meta, ids = _check_catalog(gen.catalog_path, result)
            if meta is None:
                return result
            _check_codes(gen.codes_path, meta, ids, result)
            _check_encoder(gen.encoder_path, meta, result)
            if check_files:
                _check_files(gen, meta, result, progress)
    except HashtoolError as exc:
        result.problems.append(str(exc))
    return result


def _check_catalog(path: Path, result: VerifyResult):
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        result.problems.append(f"{path}: cannot open the catalog ({exc}); rebuild the index")
        return None, None
    try:
        status = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if status != ["ok"]:
            result.problems.append(f"{path}: SQLite integrity check failed: {'; '.join(status[:5])}; rebuild the index")
            return None, None
        from hashtool.store.store import Catalog

        cat = Catalog(conn, path)
        meta = cat.get_meta()
        missing = [k for k in _META_KEYS if k not in meta]
        if missing:
            result.problems.append(f"{path}: catalog meta lacks {missing}; rebuild the index")
            return None, None
        ids = np.array([r[0] for r in conn.execute("SELECT id FROM files ORDER BY id")], dtype=np.int64)
        result.count = len(ids)
        if len(ids) and int(ids[-1]) >= int(meta["next_id"]):
            result.problems.append(f"{path}: file id {int(ids[-1])} is not below next_id {meta['next_id']}; ids could be reused")
        bad = conn.execute("SELECT count(*) FROM files WHERE length(sha256) != 64 OR size < 0").fetchone()[0]
        if bad:
            result.problems.append(f"{path}: {bad} catalog row(s) with an invalid sha256 or size")
        return meta, ids
    except (sqlite3.Error, ValueError) as exc:
        result.problems.append(f"{path}: catalog is not readable ({exc}); rebuild the index")
        return None, None
    finally:
        conn.close()


def _check_codes(path: Path, meta: dict, ids: np.ndarray, result: VerifyResult) -> None:
    from hashtool.hashindex import load_index

    try:
        index = load_index(path, mmap=False, verify=True)
    except (HashtoolError, OSError) as exc:
        result.problems.append(f"{path}: the codes file does not load: {exc}")
        return
    if index.nbits != int(meta["nbits"]):
        result.problems.append(f"{path}: codes have {index.nbits} bits, the catalog says {meta['nbits']}")
    stored = np.sort(np.asarray(index.ids, dtype=np.int64))
    if len(np.unique(stored)) != len(stored):
        result.problems.append(f"{path}: some ids appear more than once among the codes")
    only_codes = np.setdiff1d(stored, ids)
    only_catalog = np.setdiff1d(ids, stored)
    if len(only_codes):
        result.problems.append(f"{path}: {len(only_codes)} code(s) with no catalog entry (ids {only_codes[:5].tolist()}...)")
    if len(only_catalog):
        result.problems.append(f"{path}: {len(only_catalog)} catalog entr(ies) with no code (ids {only_catalog[:5].tolist()}...)")


def _check_encoder(path: Path, meta: dict, result: VerifyResult) -> None:
    try:
        sha = sha256_file(path)
    except OSError as exc:
        result.problems.append(f"{path}: cannot read the encoder: {exc.strerror or exc}")
        return
    if sha != meta.get("encoder_sha256"):
        result.problems.append(
            f"{path}: encoder sha256 {sha[:12]}... is not the {str(meta.get('encoder_sha256'))[:12]}... the catalog records; "
            "the codes may not match queries: rebuild the index"
        )
        return
    try:
        from hashtool.encode import Encoder

        enc = Encoder(path, threads=1)
    except HashtoolError as exc:
        result.problems.append(str(exc))
        return
    if enc.nbits != int(meta["nbits"]):
        result.problems.append(f"{path}: the encoder makes {enc.nbits}-bit codes, the catalog says {meta['nbits']}")


def _check_files(gen, meta: dict, result: VerifyResult, progress) -> None:
    root = Path(meta["root"])
    with gen.catalog() as cat:
        rows = cat.all_files()
    missing = changed = 0
    for n, (rel, (_, _, _, sha)) in enumerate(sorted(rows.items()), 1):
        try:
            if sha256_file(root / rel) != sha:
                changed += 1
                result.notes.append(f"{root / rel}: changed since the build (a new build re-encodes it)")
        except OSError as exc:
            missing += 1
            result.notes.append(f"{root / rel}: {exc.strerror or exc} (a new build removes or reports it)")
        if progress is not None and n % 1000 == 0:
            progress(f"checked {n}/{len(rows)} files")
    result.notes.append(f"files: {len(rows) - missing - changed} as indexed, {changed} changed, {missing} unreadable or missing")
