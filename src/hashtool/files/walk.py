"""Walking a folder for images (standard library only; part of the :mod:`hashtool.files` leaf).

Rules, in order, for every entry below the root:

* hidden entries (name starts with ".") are skipped, files and folders alike; that includes macOS
  AppleDouble files ``._name``;
* symbolic links are not followed unless ``follow_symlinks`` is set (a link not followed is counted in
  ``ignored``); a folder reached twice (a symlink loop) is detected by (device, inode) and walked once;
  a link that cannot be resolved (dangling, or a link to itself) is reported in ``errors``;
* an entry whose path relative to the root, or whose bare name, matches an ``exclude`` glob
  (:func:`fnmatch.fnmatchcase`, "/" as separator) is skipped; a folder that matches is not entered;
* folders that hold a hashtool index (a file named :data:`INDEX_MARKER`) are skipped, so an index
  kept inside the indexed folder never indexes itself;
* a regular file is a candidate image when its extension is in ``extensions`` (case-insensitive); other
  files are counted as ``ignored``, not read;
* an entry with an image extension that is not a regular file (a named pipe, socket or device) is
  reported in ``errors`` and never opened (opening a FIFO would hang the build);
* a folder that cannot be listed, or an entry that cannot be stat'ed, is reported in ``errors`` with its
  path and reason. A caller must treat the paths under it as *unknown*, not as gone
  (:meth:`WalkResult.unreadable` tells).

Every entry the walk looks at (hidden and excluded ones aside) lands in exactly one of ``files``,
``ignored`` and ``errors``: :attr:`WalkResult.seen` is their sum.

Paths are returned relative to the root with "/" separators, sorted, so runs are deterministic.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from hashtool.errors import ArgumentError

INDEX_MARKER = "HASHTOOL_INDEX"


@dataclass
class FileEntry:
    rel: str  # path relative to the root, "/" separated
    size: int
    mtime_ns: int


@dataclass
class WalkResult:
    root: Path
    files: list[FileEntry] = field(default_factory=list)
    ignored: int = 0  # files without an image extension
    errors: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason) for unreadable entries
    unlisted: list[str] = field(default_factory=list)  # folders (relative, "." for the root) that could not be listed

    @property
    def seen(self) -> int:
        """Entries the walk looked at: candidates + ignored + reported."""
        return len(self.files) + self.ignored + len(self.errors)

    def unreadable(self, rel: str) -> bool:
        """True when ``rel`` could not be examined: it, or a folder above it, is in ``errors``."""
        if any(d == "." or rel == d or rel.startswith(d + "/") for d in self.unlisted):
            return True
        return rel in self._error_paths

    @cached_property
    def _error_paths(self) -> set[str]:
        return {p for p, _ in self.errors}


def _excluded(rel: str, name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def check_root(root) -> Path:
    """The resolved folder ``root``, or ArgumentError naming it when it is missing or not a folder."""
    root = Path(root)
    if not root.exists():
        raise ArgumentError(f"{root}: no such folder")
    if not root.is_dir():
        raise ArgumentError(f"{root}: not a folder (give the folder of images to index)")
    return root.resolve()


def walk_images(root, extensions, exclude=(), follow_symlinks: bool = False, include_hidden: bool = False,
                recursive: bool = True) -> WalkResult:
    """List candidate image files below ``root`` (see the module docstring for the rules).

    ``include_hidden`` keeps hidden entries; ``recursive=False`` lists ``root`` itself only.
    """
    root = check_root(root)
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    result = WalkResult(root=root)
    seen_dirs: set[tuple[int, int]] = set()
    stack = [("", result.root)]
    while stack:
        rel_dir, path = stack.pop()
        try:
            st = path.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            result.errors.append((rel_dir or ".", f"cannot list folder: {exc.strerror or exc}"))
            result.unlisted.append(rel_dir or ".")
            continue
        if rel_dir and any(e.name == INDEX_MARKER for e in entries):
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") and not include_hidden:
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if exclude and _excluded(rel, name, exclude):
                continue
            is_image = os.path.splitext(name)[1].lower() in exts
            try:
                if entry.is_symlink() and not follow_symlinks:
                    result.ignored += 1
                    continue
                if entry.is_dir(follow_symlinks=follow_symlinks):  # d_type: no system call
                    if recursive:
                        stack.append((rel, Path(entry.path)))
                    continue
                regular = entry.is_file(follow_symlinks=follow_symlinks)
                if regular and not is_image:
                    result.ignored += 1
                    continue
                st = entry.stat(follow_symlinks=follow_symlinks)  # raises for a link that does not resolve
            except OSError as exc:
                result.errors.append((rel, f"cannot stat: {exc.strerror or exc}"))
                continue
            if not regular:
                if is_image:
                    result.errors.append((rel, f"not a regular file ({_kind(st.st_mode)}); not read"))
                else:
                    result.ignored += 1
                continue
            result.files.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
    result.files.sort(key=lambda f: f.rel)
    return result


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"
