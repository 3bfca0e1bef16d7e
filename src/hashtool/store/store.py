"""An on-disk image index: codes, catalog and encoder, replaced atomically as one (standard library only).

Layout of an index folder::

    PATH/HASHTOOL_INDEX     marker: {"format": "hashtool-index-store", "version": 1}
    PATH/CURRENT            the name of the live generation, e.g. "gen-000007"
    PATH/LOCK               the writers' lock file (empty; see "Locking")
    PATH/gen-000007/
        codes.hidx          the Hamming index (hashtool.hashindex file, ids = catalog file ids), or, when
                            built with a shard size, codes.shards naming codes-00000.hidx, codes-00001.hidx...
        catalog.sqlite      root folder, encoder identity, walk options, one row per file, the failures
        encoder.onnx        the encoder that made the codes (a query uses it, so codes always match)
        build.log           what the build that made this generation did, failures included
        READERS             the readers' lock file of this generation (empty)

A build writes a complete new generation folder, fsyncs it, then replaces ``CURRENT`` by an atomic
rename; only then are older generations deleted. A crash (even ``kill -9``) at any point leaves
``CURRENT`` naming a complete generation: the old one or the new one, never a mix. Half-written
generations are removed by the next build.

Locking (``fcntl.flock``; locks vanish with the process that held them, so a killed process never
leaves a stale lock):

* **Writers** (``index build``, ``dups``) hold an exclusive lock on ``PATH/LOCK`` from reading the live
  generation to deleting the old ones (:meth:`IndexStore.write_lock`). A second writer waits for it,
  or with ``wait=False`` (``--no-wait``) fails at once with :class:`~hashtool.errors.IndexLockedError`.
* **Readers** (``query``, ``index info``, ``index verify``) hold a shared lock on the ``READERS`` file
  of the generation they read for as long as they read it (:meth:`IndexStore.reading`). After a
  commit, the writer deletes an old generation only if it can take that lock exclusively without
  waiting; a generation still read is kept, and the next build collects it. The reader re-checks,
  once it holds its lock, that its generation was not collected in between, and otherwise starts over
  from ``CURRENT``: a reader never sees a generation disappear under it.
* **Network file systems**: on Linux, ``flock`` on NFS (since 2.6.12) is emulated with POSIX byte-range
  locks, which work across clients when the server supports locking; on SMB/CIFS and some FUSE file
  systems locks may be local to one client. Then two builds on different machines can run at once
  (each still writes its own complete generation and renames ``CURRENT`` atomically, so the index stays
  readable, but one build's result replaces the other's) and a reader on another machine may see its
  old generation deleted (it then fails with a message to retry, never with wrong results). Build an
  index from one machine at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hashtool.errors import ArgumentError, IndexFormatError, IndexLockedError
from hashtool.fileio import atomic_write, fsync_dir
from hashtool.files.walk import INDEX_MARKER

STORE_FORMAT = "hashtool-index-store"
STORE_VERSION = 1
CODES_FILE = "codes.hidx"
SHARDS_FILE = "codes.shards"  # instead of CODES_FILE in a sharded generation (hashtool.hashindex.sharded)
CATALOG_FILE = "catalog.sqlite"
ENCODER_FILE = "encoder.onnx"
LOG_FILE = "build.log"
READERS_FILE = "READERS"
LOCK_FILE = "LOCK"
_GEN_RE = re.compile(r"^gen-(\d{6,})$")
_TRASH_PREFIX = ".trash-"
_READ_RETRIES = 20

# Fault injection for the crash tests and benchmarks/bench_faults.py: when set, called with the name of
# each step of writing a generation ("codes", "catalog", "encoder", "log", "fsync", "current", "gc").
FAULT_HOOK: Callable[[str], None] | None = None


def checkpoint(step: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(step)

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE failures (path TEXT PRIMARY KEY, reason TEXT NOT NULL);
"""


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_atomic(path: Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


@dataclass
class Generation:
    """One complete, immutable generation of an index."""

    store: "IndexStore"
    name: str

    @property
    def path(self) -> Path:
        return self.store.path / self.name

    @property
    def codes_path(self) -> Path:
        return self.path / CODES_FILE

    @property
    def shards_path(self) -> Path:
        return self.path / SHARDS_FILE

    def open_codes(self, mmap: bool = True, verify: bool | None = None, threads: int | None = None, engine: str = "numba"):
        """The generation's index: a FlatIndex or MIHIndex, or a ShardedIndex when it was built in shards.

        ``verify`` and ``engine`` as in :func:`hashtool.hashindex.load_index` (None: sections are checked lazily
        when mapped, in full otherwise; "numpy" answers small calls without loading the Numba kernels).
        """
        from hashtool.hashindex import ShardedIndex, load_index

        if self.shards_path.is_file():
            return ShardedIndex.load(self.shards_path, mmap=mmap, verify=verify, threads=threads)
        return load_index(self.codes_path, mmap=mmap, verify=verify, threads=threads, engine=engine)

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_FILE

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def readers_path(self) -> Path:
        return self.path / READERS_FILE

    def catalog(self, readonly: bool = True) -> "Catalog":
        return Catalog.open(self.catalog_path, readonly=readonly)


class IndexStore:
    """An index folder (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    # -- opening -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / INDEX_MARKER).is_file()

    def check(self) -> None:
        """Raise IndexFormatError unless this is a readable index folder of a supported version."""
        if not self.path.exists():
            raise IndexFormatError(f"{self.path}: no index here; build one with `hashtool index build FOLDER`")
        marker = self.path / INDEX_MARKER
        if not marker.is_file():
            raise IndexFormatError(f"{self.path}: not a hashtool index (no {INDEX_MARKER} file)")
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{marker}: unreadable index marker ({exc})") from None
        if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
            raise IndexFormatError(f"{marker}: not a hashtool index marker")
        version = info.get("version")
        if not isinstance(version, int) or not 1 <= version <= STORE_VERSION:
            raise IndexFormatError(
                f"{self.path}: index format version {version!r} is not supported (this hashtool reads 1..{STORE_VERSION}); upgrade hashtool"
            )

    def current(self) -> Generation:
        """The live generation."""
        self.check()
        pointer = self.path / "CURRENT"
        try:
            name = pointer.read_text().strip()
        except OSError:
            raise IndexFormatError(
                f"{self.path}: the index has no complete build yet (no CURRENT); run `hashtool index build` again"
            ) from None
        if not _GEN_RE.match(name) or not (self.path / name).is_dir():
            raise IndexFormatError(f"{pointer}: names {name!r}, which is not a generation folder of this index")
        gen = Generation(self, name)
        for p in (gen.shards_path if gen.shards_path.is_file() else gen.codes_path, gen.catalog_path, gen.encoder_path):
            if not p.is_file():
                raise IndexFormatError(f"{self.path}: generation {name} lacks {p.name}; rebuild the index")
        return gen

    @contextmanager
    def reading(self):
        """Yield the live generation while holding its readers' lock (see "Locking" above)."""
        for _ in range(_READ_RETRIES):
            gen = self.current()
            try:
                fd = os.open(gen.readers_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not gen.path.is_dir():
                    continue  # collected between reading CURRENT and opening: start over
                yield gen  # a generation written before readers' locks existed
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if not (self.path / gen.name).is_dir():
                    continue  # collected while we waited for the lock
                yield gen
                return
            finally:
                os.close(fd)
        raise IndexFormatError(f"{self.path}: the index kept changing while being opened; try again")

    def current_or_none(self) -> Generation | None:
        if not self.exists():
            return None
        try:
            return self.current()
        except IndexFormatError:
            if (self.path / "CURRENT").exists():
                raise
            return None  # created but never completed: treat as empty

    # -- writing -------------------------------------------------------------------------------
    def create(self) -> None:
        """Make ``path`` an index folder. Refuses a non-empty folder that is not an index, or a file."""
        if self.path.exists():
            if self.exists():
                self.check()
                return
            if not self.path.is_dir():
                raise ArgumentError(f"{self.path}: exists and is not a folder; choose another --index path")
            if any(not _own_scratch(p.name) for p in self.path.iterdir()):
                raise ArgumentError(
                    f"{self.path}: folder exists, is not empty and is not a hashtool index; "
                    "choose another --index path (nothing was written)"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path / INDEX_MARKER, json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}) + "\n")

    def _generation_numbers(self) -> list[int]:
        nums = []
        for p in self.path.iterdir():
            m = _GEN_RE.match(p.name)
            if m:
                nums.append(int(m.group(1)))
        return sorted(nums)

    def new_generation(self) -> Generation:
        """A fresh, empty generation folder (not live until :meth:`commit`)."""
        nums = self._generation_numbers()
        name = f"gen-{(nums[-1] + 1 if nums else 1):06d}"
        (self.path / name).mkdir()
        gen = Generation(self, name)
        gen.readers_path.touch()
        return gen

    @contextmanager
    def write_lock(self, wait: bool = True, on_wait: Callable[[str], None] | None = None):
        """Hold the writers' exclusive lock; ``wait=False`` raises IndexLockedError if another holds it."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                msg = f"{self.path}: another process (a build or dups) is writing this index"
                if not wait:
                    raise IndexLockedError(f"{msg}; run again when it has finished, or drop --no-wait to wait for it") from None
                if on_wait is not None:
                    on_wait(f"{msg}; waiting for it to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def commit(self, gen: Generation) -> list[str]:
        """Make ``gen`` live atomically, then delete every other generation no reader holds.

        Returns the names of old generations kept because a reader still had them open. Call it with
        :meth:`write_lock` held.
        """
        for p in gen.path.iterdir():
            _fsync_file(p)
        fsync_dir(gen.path)
        checkpoint("fsync")
        _write_atomic(self.path / "CURRENT", gen.name + "\n")
        checkpoint("current")
        return self.collect_garbage(keep=gen.name)

    def collect_garbage(self, keep: str) -> list[str]:
        """Delete every generation but ``keep`` that no reader holds (see "Locking"); returns those kept."""
        kept = []
        for p in sorted(self.path.iterdir()):
            if p.name.startswith(_TRASH_PREFIX):
                shutil.rmtree(p, ignore_errors=True)  # left by a collection that was killed
            elif _GEN_RE.match(p.name) and p.name != keep:
                if not _collect(p):
                    kept.append(p.name)
                checkpoint("gc")
        return kept

    def discard(self, gen: Generation) -> None:
        shutil.rmtree(gen.path, ignore_errors=True)

    def size_on_disk(self) -> int:
        total = 0
        for dirpath, _, names in os.walk(self.path):
            for n in names:
                try:
                    total += os.path.getsize(os.path.join(dirpath, n))
                except OSError:
                    pass
        return total


def _own_scratch(name: str) -> bool:
    """Entries a concurrent first build may have created in a new index folder."""
    return name == LOCK_FILE or name.startswith(f".{INDEX_MARKER}.")


def _collect(gen_dir: Path) -> bool:
    """Delete one old generation unless a reader holds it; True when deleted."""
    try:
        fd = os.open(gen_dir / READERS_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        shutil.rmtree(gen_dir, ignore_errors=True)  # half-written, or from before readers' locks
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        trash = gen_dir.with_name(f"{_TRASH_PREFIX}{gen_dir.name}-{os.getpid()}")
        os.rename(gen_dir, trash)  # while locked: a reader that gets the lock next sees the folder gone
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)
    return True


class Catalog:
    """The SQLite catalog of a generation: meta key/values, files, failures."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    @classmethod
    def create(cls, path) -> "Catalog":
        path = Path(path)
        conn = sqlite3.connect(path)
        conn.executescript(SCHEMA)
        return cls(conn, path)

    @classmethod
    def open(cls, path, readonly: bool = True) -> "Catalog":
        path = Path(path)
        if not path.is_file():
            raise IndexFormatError(f"{path}: catalog missing; rebuild the index")
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
            else:
                conn = sqlite3.connect(path)
            conn.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{path}: catalog is not readable ({exc}); rebuild the index") from None
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # meta
    def get_meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
        )

    # files
    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM files").fetchone()[0]

    def all_files(self) -> dict[str, tuple[int, int, int, str]]:
        """path -> (id, size, mtime_ns, sha256)."""
        return {r[0]: r[1:] for r in self.conn.execute("SELECT path, id, size, mtime_ns, sha256 FROM files")}

    def paths_for(self, ids) -> dict[int, str]:
        return {i: row[0] for i, row in self.files_for(ids).items()}

    def files_for(self, ids) -> dict[int, tuple[str, int, int]]:
        """id -> (path, size, mtime_ns) for the ids that are in the catalog."""
        ids = [int(i) for i in ids if int(i) >= 0]
        out: dict[int, tuple[str, int, int]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT id, path, size, mtime_ns FROM files WHERE id IN ({marks})", chunk)
            out.update((r[0], r[1:]) for r in rows)
        return out

    def failures(self) -> list[tuple[str, str]]:
        return list(self.conn.execute("SELECT path, reason FROM failures ORDER BY path"))
