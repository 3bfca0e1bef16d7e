"""Incremental, crash-safe index builds over a folder of images (torch-free).

A build compares the folder with the live generation's catalog, file by file:

* new path -> encoded and added;
* same size and mtime -> unchanged, not read;
* other size or mtime -> its sha256 is computed; the same content only refreshes the stored mtime (the
  file is not decoded again), other content is re-encoded (old code removed, new code added under a new
  id); a new or re-encoded file is read once: :data:`EncodeFiles` returns the sha256 of the bytes it
  decoded, and that is the hash stored, so hash and code always describe the same bytes;
* path gone from the folder -> removed; but a path the walk could not examine (its folder could not be
  listed, it could not be stat'ed) is *unknown*, not gone: its entry is kept and the failure reported;
* files that failed in an earlier build are tried again (the reason may have been fixed).

Every file that cannot be read is reported with its path and reason, counted, written to the
generation's ``build.log`` and ``failures`` table, and never silently dropped; with ``strict`` the
first such file aborts the build and the live index stays as it was. Ids are never reused.

The walk options (``exclude``, ``follow_symlinks``) are stored in the catalog; a later build (or
``dups``) that does not pass them reuses the stored ones. Writers hold the store's lock
(:meth:`IndexStore.write_lock`) from reading the live generation to committing the new one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hashtool.errors import ArgumentError, ImageError
from hashtool.fileio import sha256_file
from hashtool.health import code_health
from hashtool.files.walk import WalkResult, check_root, walk_images
from hashtool.store.store import Catalog, Generation, IndexStore, checkpoint

# (absolute paths, progress callback(n_done)) ->
#   (packed codes (m, nbytes), positions of the m loaded files, failures [(position, reason)],
#    sha256 hex of the bytes each of the m codes was decoded from)
# Each file must be read once and its hash computed over the bytes decoded (see hashtool.files.read_image).
EncodeFiles = Callable[
    [list[str], Callable[[int], None]], tuple[np.ndarray, np.ndarray, list[tuple[int, str]], list[str]]
]

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
    walked: int = 0  # entries the walk looked at (images + ignored + reported walk errors)
    kept_unreadable: int = 0  # entries kept because their path could not be examined or read
    kept_generations: list[str] = field(default_factory=list)  # old generations a reader still held
    exclude: list[str] = field(default_factory=list)  # the walk options used
    follow_symlinks: bool = False
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
    copy_radius: int | None = None  # the encoder's own duplicate radius (its ``copy_radius`` metadata), if any


def _choose_structure(structure: str, n: int) -> str:
    if structure not in ("auto", "flat", "mih"):
        raise ArgumentError(f"--structure must be auto, flat or mih, got {structure!r}")
    if structure == "auto":
        return "mih" if n >= MIH_THRESHOLD else "flat"
    return structure


@dataclass
class _Plan:
    """What a build will do, decided from the walk and the live catalog."""

    to_encode: list[tuple[str, int, int]] = field(default_factory=list)  # rel, size, mtime
    previous: dict[str, int] = field(default_factory=dict)  # rel -> old id, for files whose content changed
    deleted: list[int] = field(default_factory=list)  # ids of paths gone from the folder (or now unreadable)
    touch: list[tuple[int, int, str]] = field(default_factory=list)  # (mtime, id, rel): same content


def build(
    folder,
    store: IndexStore,
    encoder: EncoderInfo,
    encode_files: EncodeFiles,
    *,
    exclude=None,
    follow_symlinks: bool | None = None,
    strict: bool = False,
    structure: str = "auto",
    extensions=(),
    threads: int | None = None,
    wait: bool = True,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    shard_size: int | None = None,
) -> BuildReport:
    """Build or update the index in ``store`` from ``folder``; see the module docstring.

    ``exclude``/``follow_symlinks`` of None reuse the index's stored walk options (none for a new index).
    ``wait=False`` fails with IndexLockedError at once if another writer holds the index.
    ``shard_size``: write the codes as shards of at most this many codes (hashtool.hashindex.ShardedIndex);
    0 writes one index file; None keeps the live generation's choice (one file for a new index).
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    if shard_size is not None and (isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 0):
        raise ArgumentError(f"--shard-size must be a whole number of codes >= 0 (0: one index file), got {shard_size!r}")
    root = str(check_root(folder))
    store.create()
    with store.write_lock(wait=wait, on_wait=log):
        live = store.current_or_none()
        meta, old_files, old_failures = _read_live(live)
        _check_same_index(store, live, meta, root, encoder)
        exclude = list(meta.get("exclude", [])) if exclude is None else list(exclude)
        follow_symlinks = bool(meta.get("follow_symlinks", False)) if follow_symlinks is None else bool(follow_symlinks)
        walked = walk_images(folder, extensions, exclude=exclude, follow_symlinks=follow_symlinks)
        report = BuildReport(index=str(store.path), root=root, ignored=walked.ignored, walked=walked.seen,
                             exclude=exclude, follow_symlinks=follow_symlinks)
        plan = _plan(walked, old_files, report)
        report.failures.extend(walked.errors)
        n_retry = sum(1 for rel, *_ in plan.to_encode if rel in old_failures)
        if n_retry:
            log(f"retrying {n_retry} file(s) that failed in the previous build")
        codes, new_ids, new_rows, drop_ids = _encode(walked, plan, encoder, encode_files, report, progress,
                                                     int(meta.get("next_id", 0)))
        touch = plan.touch
        report.failed = len(report.failures)
        if strict and report.failures:
            rel, reason = report.failures[0]
            raise ImageError(
                f"{walked.root / rel}: {reason} ({report.failed} file(s) failed; --strict aborts, the existing index was left as it is)"
            )
        next_id = int(meta.get("next_id", 0)) + len(new_ids)
        walk_changed = live is not None and (meta.get("exclude", []) != exclude
                                             or bool(meta.get("follow_symlinks", False)) != follow_symlinks)
        changed = bool(new_rows or drop_ids or plan.deleted or touch or walk_changed) or live is None
        changed = changed or (shard_size is not None and shard_size != _live_shard_size(live))
        if not changed and {p for p, _ in report.failures} == old_failures:
            report.total = len(old_files)
            report.structure = str(meta.get("structure", ""))
            report.kept_generations = store.collect_garbage(keep=live.name)  # generations readers have let go
            report.seconds = time.perf_counter() - t0
            log("index is up to date; nothing written")
            return report
        all_codes, all_ids = _new_contents(live, drop_ids + plan.deleted, codes, new_ids)
        report.total = len(all_ids)
        report.structure, report.kept_generations = write_generation(
            store, live, root, encoder, all_codes, all_ids, next_id, new_rows, drop_ids + plan.deleted, touch,
            report.failures, structure, threads, log_lines=lambda: _log_lines(report, time.perf_counter() - t0),
            walk_options={"exclude": exclude, "follow_symlinks": follow_symlinks},
            shard_size=_live_shard_size(live) if shard_size is None else shard_size,
        )
    if report.kept_generations:
        log(f"kept {', '.join(report.kept_generations)}: still open by a reader; the next build deletes it")
    report.seconds = time.perf_counter() - t0
    report.committed = True
    return report


def _read_live(live: Generation | None):
    if live is None:
        return {}, {}, set()
    with live.catalog() as cat:
        return cat.get_meta(), cat.all_files(), {p for p, _ in cat.failures()}


def _check_same_index(store, live, meta, root, encoder) -> None:
    if live is None:
        return
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


def _plan(walked: WalkResult, old_files, report: BuildReport) -> _Plan:
    plan = _Plan()
    present = set()
    for f in walked.files:
        present.add(f.rel)
        old = old_files.get(f.rel)
        if old is None:
            plan.to_encode.append((f.rel, f.size, f.mtime_ns))
            continue
        fid, size, mtime, sha = old
        if size == f.size and mtime == f.mtime_ns:
            report.unchanged += 1
            continue
        try:
            new_sha = sha256_file(walked.root / f.rel)
        except OSError as exc:  # changed, then unreadable: its old code no longer describes it
            report.failures.append((f.rel, f"cannot read: {exc.strerror or exc}"))
            plan.deleted.append(fid)
            continue
        if new_sha == sha and size == f.size:
            plan.touch.append((f.mtime_ns, fid, f.rel))
        else:
            plan.to_encode.append((f.rel, f.size, f.mtime_ns))
            plan.previous[f.rel] = fid
    for rel, row in old_files.items():
        if rel in present:
            continue
        if walked.unreadable(rel):
            report.kept_unreadable += 1  # unknown, not gone: keep it (the walk error is reported)
        else:
            plan.deleted.append(row[0])
            report.removed += 1
    report.touched = len(plan.touch)
    return plan


def _encode(walked, plan: _Plan, encoder, encode_files, report, progress, next_id):
    """Encode the planned files; returns (codes, ids, new catalog rows, ids of replaced codes)."""
    t_enc = time.perf_counter()
    abs_paths = [str(walked.root / rel) for rel, *_ in plan.to_encode]
    if abs_paths:
        done_cb = (lambda n: progress(n, len(abs_paths))) if progress else (lambda n: None)
        codes, positions, enc_failures, hashes = encode_files(abs_paths, done_cb)
    else:
        codes, positions, enc_failures, hashes = np.zeros((0, encoder.nbits // 8), dtype=np.uint8), [], [], []
    report.encode_seconds = time.perf_counter() - t_enc
    positions = np.asarray(positions, dtype=np.int64)
    if len(hashes) != len(positions) or len(codes) != len(positions):
        raise ArgumentError(f"encode_files returned {len(codes)} codes, {len(positions)} positions and {len(hashes)} hashes")
    replaced = [fid for pos, (rel, *_) in enumerate(plan.to_encode) if (fid := plan.previous.get(rel)) is not None]
    for pos, reason in enc_failures:
        report.failures.append((plan.to_encode[pos][0], reason))
    report.encoded = len(positions)
    new_ids = np.arange(next_id, next_id + len(positions), dtype=np.int64)
    rows = [(int(i), *plan.to_encode[pos], sha) for i, pos, sha in zip(new_ids.tolist(), positions.tolist(), hashes)]
    report.added = sum(1 for r in rows if r[1] not in plan.previous)
    report.updated = len(rows) - report.added
    return np.asarray(codes, dtype=np.uint8).reshape(len(positions), encoder.nbits // 8), new_ids, rows, replaced


def _new_contents(live, gone_ids, codes, new_ids):
    if live is None:
        return codes, new_ids
    old_index = live.open_codes(mmap=False)
    gone = np.array(gone_ids, dtype=np.int64)
    if len(gone):
        old_index.remove(gone)
    all_codes, all_ids = _index_contents(old_index)
    return np.concatenate([all_codes, codes]), np.concatenate([all_ids, new_ids])


def write_generation(store, live, root, encoder, all_codes, all_ids, next_id, new_rows, gone_ids, touch,
                     failures, structure="auto", threads=None, log_lines=None, walk_options=None,
                     shard_size=0) -> tuple[str, list[str]]:
    """Write a complete generation (codes, catalog, encoder, log) and make it live; returns the structure
    and the old generations kept because a reader held them. Call it holding ``store.write_lock()``.

    ``all_codes``/``all_ids`` are every code of the new generation; ``new_rows`` (id, path, size, mtime,
    sha256), ``gone_ids`` and ``touch`` (mtime, id, path) are the catalog changes against ``live``;
    ``walk_options`` ({"exclude": [...], "follow_symlinks": bool}) are stored for the next build.
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
        checkpoint("codes")
        _write_catalog(gen, live, root, encoder, next_id, new_rows, gone_ids, touch, failures, kind, walk_options or {},
                       code_health(all_codes, encoder.nbits).as_dict())
        checkpoint("catalog")
        _link_or_copy(Path(encoder.path) if live is None else live.encoder_path, gen.encoder_path)
        checkpoint("encoder")
        gen.log_path.write_text("\n".join(log_lines() if log_lines else []) + "\n")
        checkpoint("log")
    except BaseException:
        store.discard(gen)
        raise
    return kind, store.commit(gen)


def _live_shard_size(live: Generation | None) -> int:
    if live is None or not live.shards_path.is_file():
        return 0
    from hashtool.hashindex.sharded import read_manifest

    return int(read_manifest(live.shards_path).get("shard_size") or 0)


def _index_contents(index) -> tuple[np.ndarray, np.ndarray]:
    """(packed codes, ids) of every stored code, in storage order."""
    return index.codes(), np.asarray(index.ids, dtype=np.int64)


def _write_catalog(gen, live, root, encoder, next_id, new_rows, gone_ids, touch, failures, structure, walk_options,
                   health) -> None:
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
                encoder_copy_radius=encoder.copy_radius,
                health=health,  # computed here, once per generation, so `index info` stays instant at any size
                next_id=int(next_id),
                structure=structure,
                updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **walk_options,
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
