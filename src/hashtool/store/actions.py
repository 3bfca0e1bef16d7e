"""Acting on duplicate groups safely: move all but one member of each group aside, and undo (standard library).

Rules, all enforced here:

* **Never delete.** A file is moved (a hard link then an unlink of the old name on one file system, a
  copy then an unlink across file systems); nothing else removes a file.
* **Never overwrite.** A destination that exists is refused before anything moves (the whole plan is
  checked first), and each move creates its destination exclusively, so a file that appears meanwhile
  is not overwritten either.
* **Relative paths kept.** ``FOLDER/a/b.jpg`` moves to ``DIR/a/b.jpg``. ``DIR`` must lie outside the
  indexed folder (else the next build would index the moved copies again).
* **A manifest first.** The manifest (every planned move) is written atomically with
  :func:`hashtool.fileio.atomic_write` before the first file moves, and rewritten with each move's
  outcome at the end, so :func:`undo_moves` can reverse a run even if it was interrupted.
* The index is not changed: the next build (or ``dups``, which builds first) sees the files gone.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hashtool.errors import ArgumentError
from hashtool.fileio import atomic_write

KEEP_RULES = ("largest", "newest", "oldest")
MANIFEST_FORMAT = "hashtool-dups-moves"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileInfo:
    rel: str  # path relative to the indexed folder
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Move:
    src: str  # absolute
    dst: str  # absolute


def choose_keep(members: list[FileInfo], rule: str) -> int:
    """Position of the member to keep: largest size, newest or oldest mtime; ties go to the first path."""
    if rule not in KEEP_RULES:
        raise ArgumentError(f"--keep must be one of {', '.join(KEEP_RULES)}, got {rule!r}")
    if rule == "largest":
        key = lambda m: (-m.size, m.rel)  # noqa: E731
    elif rule == "newest":
        key = lambda m: (-m.mtime_ns, m.rel)  # noqa: E731
    else:
        key = lambda m: (m.mtime_ns, m.rel)  # noqa: E731
    return min(range(len(members)), key=lambda k: key(members[k]))


def plan_moves(root, move_to, groups: list[list[FileInfo]], rule: str) -> list[Move]:
    """The moves that keep one member of each group (by ``rule``) and move the others under ``move_to``."""
    root = Path(root).resolve()
    target = Path(move_to).resolve()
    if target == root or root in target.parents:
        raise ArgumentError(f"--move-to {move_to}: lies inside the indexed folder {root}; choose a folder outside it")
    moves = []
    for members in groups:
        keep = choose_keep(members, rule)
        moves += [Move(str(root / m.rel), str(target / m.rel)) for k, m in enumerate(members) if k != keep]
    return moves


def check_moves(moves: list[Move]) -> None:
    """Refuse the whole plan if a source is missing or a destination exists (nothing moved yet)."""
    for mv in moves:
        if not os.path.lexists(mv.src):
            raise ArgumentError(f"{mv.src}: no longer exists (the folder changed since it was indexed); run dups again")
        if os.path.lexists(mv.dst):
            raise ArgumentError(f"{mv.dst}: already exists; refusing to overwrite it (nothing was moved)")
    dsts = [mv.dst for mv in moves]
    if len(set(dsts)) != len(dsts):
        raise ArgumentError("two files would move to the same destination; nothing was moved")


def default_manifest_path(move_to) -> Path:
    return Path(move_to) / f"hashtool-moves-{time.strftime('%Y%m%d-%H%M%S')}.json"


def apply_moves(moves: list[Move], manifest_path, root, log=None) -> dict:
    """Check, write the manifest, move every file (never overwriting), rewrite the manifest; returns it."""
    check_moves(moves)
    manifest_path = Path(manifest_path)
    if manifest_path.exists():
        raise ArgumentError(f"{manifest_path}: a manifest already exists there; refusing to overwrite it")
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "root": str(Path(root).resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "moves": [{"from": mv.src, "to": mv.dst, "done": False} for mv in moves],
    }
    _write_manifest(manifest_path, manifest)
    try:
        for entry in manifest["moves"]:
            move_no_overwrite(entry["from"], entry["to"])
            entry["done"] = True
            if log:
                log(f"moved {entry['from']} -> {entry['to']}")
    finally:
        _write_manifest(manifest_path, manifest)
    return manifest


def undo_moves(manifest_path, log=None) -> tuple[int, list[str]]:
    """Move every file of a manifest back; returns (files moved back, problems). Never overwrites."""
    manifest = read_manifest(manifest_path)
    back, problems = 0, []
    for entry in reversed(manifest["moves"]):
        src, dst = entry["from"], entry["to"]
        if os.path.lexists(src):
            if not os.path.lexists(dst):
                continue  # never moved, or already back
            problems.append(f"{src}: exists again; not overwritten ({dst} left where it is)")
            continue
        if not os.path.lexists(dst):
            problems.append(f"{dst}: missing; cannot move it back to {src}")
            continue
        move_no_overwrite(dst, src)
        back += 1
        if log:
            log(f"moved back {dst} -> {src}")
    return back, problems


def read_manifest(path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArgumentError(f"{path}: no such manifest") from None
    except (OSError, ValueError) as exc:
        raise ArgumentError(f"{path}: not a readable hashtool moves manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ArgumentError(f"{path}: not a hashtool moves manifest (written by `hashtool dups --move-to`)")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ArgumentError(f"{path}: manifest version {manifest.get('version')!r} is not supported; upgrade hashtool")
    return manifest


def move_no_overwrite(src, dst) -> None:
    """Move ``src`` to ``dst``, creating ``dst``'s folders; FileExistsError if ``dst`` exists."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # fails if dst exists: no overwrite, atomically
    except FileExistsError:
        raise ArgumentError(f"{dst}: already exists; refusing to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        _copy_exclusive(src, dst)
    os.unlink(src)


def _copy_exclusive(src, dst) -> None:
    with open(src, "rb") as fin:
        try:
            fout = open(dst, "xb")
        except FileExistsError:
            raise ArgumentError(f"{dst}: already exists; refusing to overwrite it") from None
        try:
            with fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            shutil.copystat(src, dst)
        except BaseException:
            os.unlink(dst)  # our own partial copy; the source is untouched
            raise


def _write_manifest(path: Path, manifest: dict) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
