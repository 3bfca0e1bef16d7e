"""Walking a folder for images (standard library only).

Rules, in order, for every entry below the root:

* hidden entries (name starts with ".") are skipped, files and folders alike; that includes macOS
  AppleDouble files ``._name``;
* symbolic links are not followed unless ``follow_symlinks`` is set; a symlink loop is then detected
  by (device, inode) and walked once;
* an entry whose path relative to the root, or whose bare name, matches an ``exclude`` glob
  (:func:`fnmatch.fnmatchcase`, "/" as separator) is skipped; a folder that matches is not entered;
* folders that hold a hashtool index (a file named :data:`INDEX_MARKER`) are skipped, so an index
  kept inside the indexed folder never indexes itself;
* a file is a candidate image when its extension is in ``extensions`` (case-insensitive); other files
  are counted as ``ignored``, not read.

Paths are returned relative to the root with "/" separators, sorted, so runs are deterministic.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
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


def _excluded(rel: str, name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def walk_images(root, extensions, exclude=(), follow_symlinks: bool = False, include_hidden: bool = False,
                recursive: bool = True) -> WalkResult:
    """List candidate image files below ``root`` (see the module docstring for the rules).

    ``include_hidden`` keeps hidden entries; ``recursive=False`` lists ``root`` itself only.
    """
    root = Path(root)
    if not root.exists():
        raise ArgumentError(f"{root}: no such folder")
    if not root.is_dir():
        raise ArgumentError(f"{root}: not a folder (give the folder of images to index)")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    result = WalkResult(root=root.resolve())
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
            try:
                if entry.is_symlink() and not follow_symlinks:
                    continue
                if entry.is_dir(follow_symlinks=follow_symlinks):
                    if recursive:
                        stack.append((rel, Path(entry.path)))
                    continue
                if not entry.is_file(follow_symlinks=follow_symlinks):
                    continue
                if os.path.splitext(name)[1].lower() not in exts:
                    result.ignored += 1
                    continue
                st = entry.stat(follow_symlinks=follow_symlinks)
            except OSError as exc:
                result.errors.append((rel, f"cannot stat: {exc.strerror or exc}"))
                continue
            result.files.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
    result.files.sort(key=lambda f: f.rel)
    return result
