"""Incremental, crash-safe index builds over a folder of images (torch-free).

A build compares the folder with the live generation's catalog, file by file:

* new path -> encoded and added;
* same size and mtime -> unchanged, not read;
* other size or mtime -> its sha256 is computed; the same content only refreshes the stored mtime, other
  content is re-encoded (old code removed, new code added under a new id);
* path gone from the folder -> removed;
* files that failed in an earlier build are tried again (the reason may have been fixed).

Every file that cannot be read is reported with its path and reason, counted, written to the
generation's ``build.log`` and ``failures`` table, and never silently dropped; with ``strict`` the
first such file aborts the build and the live index stays as it was. Ids are never reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hashtool.errors import ArgumentError, ImageError
from hashtool.fileio import sha256_file
from hashtool.store.store import Catalog, Generation, IndexStore
from hashtool.store.walk import walk_images

# (absolute paths, progress callback(n_done)) -> (packed codes (m, nbytes), positions of the m loaded files, failures [(position, reason)])
EncodeFiles = Callable[[list[str], Callable[[int], None]], tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]]

MIH_THRESHOLD = 200_000  # "auto" structure: multi-index hashing from this many codes up


@dataclass
class BuildReport:
    index: str
    root: str
    total: int = 0  # codes in the index after the build
    added: int = 0
    updated: int = 0  # re-encoded because the content changed
    touched: int = 0  # mtime changed, same content: not re-encoded
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    ignored: int = 0  # files without an image extension
    encoded: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0
    structure: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)
    committed: bool = False

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        return d


@dataclass
class EncoderInfo:
    """What the catalog records about the encoder (see hashtool.encode.Encoder)."""

    path: str
    sha256: str
    nbits: int
    method: str


def _choose_structure(structure: str, n: int) -> str:
    if structure not in ("auto", "flat", "mih"):
        raise ArgumentError(f"--structure must be auto, flat or mih, got {structure!r}")
    if structure == "auto":
        return "mih" if n >= MIH_THRESHOLD else "flat"
    return structure


def build(
    folder,
    store: IndexStore,
    encoder: EncoderInfo,
    encode_files: EncodeFiles,
    *,
    exclude=(),
    follow_symlinks: bool = False,
    strict: bool = False,
    structure: str = "auto",
    extensions=(),
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    shard_size: int | None = None,
) -> BuildReport:
    """Build or update the index in ``store`` from ``folder``; see the module docstring.

    ``shard_size``: write the codes as shards of at most this many codes (hashtool.hashindex.ShardedIndex);
    0 writes one index file; None keeps the live generation's choice (one file for a new index).
    """

    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    if shard_size is not None and (isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 0):
        raise ArgumentError(f"--shard-size must be a whole number of codes >= 0 (0: one index file), got {shard_size!r}")
    walked = walk_images(folder, extensions, exclude=exclude, follow_symlinks=follow_symlinks)
    root = str(walked.root)
    report = BuildReport(index=str(store.path), root=root, ignored=walked.ignored)

    # the live generation, if any, and the guards that protect it
    store.create()
    live = store.current_or_none()
    old_files: dict[str, tuple[int, int, int, str]] = {}
    old_failures: set[str] = set()
    next_id = 0
    if live is not None:
        with live.catalog() as cat:
            meta = cat.get_meta()
            old_files = cat.all_files()
            old_failures = {p for p, _ in cat.failures()}
        if meta.get("root") != root:
            raise ArgumentError(
                f"{store.path}: this index was built from {meta.get('root')}, not {root}; "
                "pass another --index to index a different folder (the existing index was left as it is)"
            )
        if meta.get("encoder_sha256") != encoder.sha256:
            raise ArgumentError(
                f"{store.path}: this index was built with encoder {meta.get('encoder_path')} "
                f"(sha256 {str(meta.get('encoder_sha256'))[:12]}...), not {encoder.path} ({encoder.sha256[:12]}...); "
                "build a new index with --index, or drop --model to keep the index's own encoder"
            )
        next_id = int(meta.get("next_id", 0))

    # plan
    to_encode: list[tuple[str, int, int, str | None]] = []  # rel, size, mtime, sha (None: compute)
    drop_ids: list[int] = []
    touch: list[tuple[int, int, str]] = []  # (mtime, id, rel) content unchanged
    present = set()
    for f in walked.files:
        present.add(f.rel)
        old = old_files.get(f.rel)
        if old is None:
            to_encode.append((f.rel, f.size, f.mtime_ns, None))
            continue
        fid, size, mtime, sha = old
        if size == f.size and mtime == f.mtime_ns:
            report.unchanged += 1
            continue
        try:
            new_sha = sha256_file(walked.root / f.rel)
        except OSError as exc:
            report.failures.append((f.rel, f"cannot read: {exc.strerror or exc}"))
            drop_ids.append(fid)
            continue
        if new_sha == sha and size == f.size:
            touch.append((f.mtime_ns, fid, f.rel))
            report.touched += 1
        else:
            drop_ids.append(fid)
            to_encode.append((f.rel, f.size, f.mtime_ns, new_sha))
    deleted = [old_files[p][0] for p in old_files if p not in present]
    report.removed = len(deleted)
    report.failures.extend((rel, reason) for rel, reason in walked.errors)
    n_retry = sum(1 for rel, *_ in to_encode if rel in old_failures)
    if n_retry:
        log(f"retrying {n_retry} file(s) that failed in the previous build")

    # encode
    t_enc = time.perf_counter()
    abs_paths = [str(walked.root / rel) for rel, *_ in to_encode]
    if abs_paths:
        done_cb = (lambda n: progress(n, len(abs_paths))) if progress else (lambda n: None)
        codes, positions, enc_failures = encode_files(abs_paths, done_cb)
    else:
        codes = np.zeros((0, encoder.nbits // 8), dtype=np.uint8)
        positions = np.zeros(0, dtype=np.int64)
        enc_failures = []
    report.encode_seconds = time.perf_counter() - t_enc
    positions = np.asarray(positions, dtype=np.int64)
    for pos, reason in enc_failures:
        report.failures.append((to_encode[pos][0], reason))
    report.encoded = len(positions)
    report.failed = len(report.failures)
    if strict and report.failures:
        rel, reason = report.failures[0]
        raise ImageError(
            f"{walked.root / rel}: {reason} ({report.failed} file(s) failed; --strict aborts, the existing index was left as it is)"
        )

    # sha256 of the files that encoded (the ones re-encoded after a change already have it)
    new_rows = []
    new_ids = np.arange(next_id, next_id + len(positions), dtype=np.int64)
    for new_id, pos in zip(new_ids.tolist(), positions.tolist()):
        rel, size, mtime, sha = to_encode[pos]
        if sha is None:
            try:
                sha = sha256_file(walked.root / rel)
            except OSError as exc:  # vanished between encode and hash
                report.failures.append((rel, f"cannot read: {exc.strerror or exc}"))
                continue
        new_rows.append((new_id, rel, size, mtime, sha))
    keep = np.isin(new_ids, np.array([r[0] for r in new_rows], dtype=np.int64))
    codes, new_ids = codes[keep], new_ids[keep]
    report.failed = len(report.failures)
    next_id += len(positions)
    report.added = sum(1 for r in new_rows if r[1] not in old_files)
    report.updated = len(new_rows) - report.added

    changed = bool(new_rows or drop_ids or deleted or touch) or live is None
    changed = changed or (shard_size is not None and shard_size != _live_shard_size(live))
    failures_changed = {p for p, _ in report.failures} != old_failures
    if not changed and not failures_changed:
        report.total = len(old_files)
        report.structure = _current_structure(live)
        report.seconds = time.perf_counter() - t0
        log("index is up to date; nothing written")
        return report

    # write the new generation
    if live is not None:
        old_index = live.open_codes(mmap=False)
        gone = np.array(drop_ids + deleted, dtype=np.int64)
        if len(gone):
            old_index.remove(gone)
        all_codes, all_ids = _index_contents(old_index)
        all_codes = np.concatenate([all_codes, codes])
        all_ids = np.concatenate([all_ids, new_ids])
    else:
        all_codes, all_ids = codes, new_ids
    report.total = len(all_ids)
    report.structure = write_generation(
        store, live, root, encoder, all_codes, all_ids, next_id, new_rows, drop_ids + deleted, touch,
        report.failures, structure, threads, log_lines=lambda: _log_lines(report, time.perf_counter() - t0),
        shard_size=_live_shard_size(live) if shard_size is None else shard_size,
    )
    report.seconds = time.perf_counter() - t0
    report.committed = True
    return report


def write_generation(store, live, root, encoder, all_codes, all_ids, next_id, new_rows, gone_ids, touch,
                     failures, structure="auto", threads=None, log_lines=None, shard_size=0) -> str:
    """Write a complete generation (codes, catalog, encoder, log) and make it live; returns the structure.

    ``all_codes``/``all_ids`` are every code of the new generation; ``new_rows`` (id, path, size, mtime,
    sha256), ``gone_ids`` and ``touch`` (mtime, id, path) are the catalog changes against ``live``.
    ``shard_size`` > 0 writes shards of that many codes instead of one index file.
    """
    from hashtool.hashindex import FlatIndex, MIHIndex, ShardedIndex

    gen = store.new_generation()
    try:
        if shard_size:
            kind = _choose_structure(structure, min(len(all_ids), shard_size))
            index = ShardedIndex(encoder.nbits, shard_size=shard_size, structure=kind, threads=threads)
        else:
            kind = _choose_structure(structure, len(all_ids))
            index = MIHIndex(encoder.nbits, threads=threads) if kind == "mih" else FlatIndex(encoder.nbits, threads=threads)
        if len(all_ids):
            index.add(all_codes, all_ids)
        index.save(gen.shards_path if shard_size else gen.codes_path)
        _write_catalog(gen, live, root, encoder, next_id, new_rows, gone_ids, touch, failures, kind)
        _link_or_copy(Path(encoder.path) if live is None else live.encoder_path, gen.encoder_path)
        gen.log_path.write_text("\n".join(log_lines() if log_lines else []) + "\n")
        store.commit(gen)
    except BaseException:
        store.discard(gen)
        raise
    return kind


def _live_shard_size(live: Generation | None) -> int:
    if live is None or not live.shards_path.is_file():
        return 0
    from hashtool.hashindex.sharded import read_manifest

    return int(read_manifest(live.shards_path).get("shard_size") or 0)


def _current_structure(live: Generation | None) -> str:
    if live is None:
        return ""
    with live.catalog() as cat:
        return str(cat.get_meta().get("structure", ""))


def _index_contents(index) -> tuple[np.ndarray, np.ndarray]:
    """(packed codes, ids) of every stored code, in storage order."""
    return index.codes(), np.asarray(index.ids, dtype=np.int64)


def _write_catalog(gen, live, root, encoder, next_id, new_rows, gone_ids, touch, failures, structure) -> None:
    import shutil
    import sqlite3

    if live is not None:
        shutil.copyfile(live.catalog_path, gen.catalog_path)
        cat = Catalog.open(gen.catalog_path, readonly=False)
    else:
        cat = Catalog.create(gen.catalog_path)
    with cat:
        conn: sqlite3.Connection = cat.conn
        with conn:
            conn.executemany("DELETE FROM files WHERE id = ?", [(int(i),) for i in gone_ids])
            conn.executemany("UPDATE files SET mtime_ns = ? WHERE id = ?", [(m, i) for m, i, _ in touch])
            conn.executemany("INSERT INTO files (id, path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?, ?)", new_rows)
            conn.execute("DELETE FROM failures")
            conn.executemany("INSERT OR REPLACE INTO failures (path, reason) VALUES (?, ?)", failures)
            cat.set_meta(
                root=root,
                nbits=encoder.nbits,
                encoder_path=encoder.path,
                encoder_sha256=encoder.sha256,
                encoder_method=encoder.method,
                next_id=int(next_id),
                structure=structure,
                updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            )


def _link_or_copy(src: Path, dst: Path) -> None:
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _log_lines(report: BuildReport, seconds: float) -> list[str]:
    lines = [
        f"build at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} of {report.root}",
        f"total {report.total}, added {report.added}, updated {report.updated}, touched {report.touched}, "
        f"removed {report.removed}, unchanged {report.unchanged}, failed {report.failed}, ignored {report.ignored}",
        f"{seconds:.2f} s",
    ]
    return lines + [f"FAILED {p}: {r}" for p, r in report.failures]
