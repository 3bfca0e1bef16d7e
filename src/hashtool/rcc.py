"""A reader for Qt binary resource bundles (``.rcc`` files), standard library only.

GCompris ships its photos inside such bundles. The format (Qt's ``rcc`` tool, versions 1 to 3), all integers
big-endian:

* header: ``b"qres"``, version (u32), offset of the tree, of the data and of the names (u32 each), and from
  version 3 a flags word (u32);
* tree: fixed-size nodes, 14 bytes (version 1) or 22 (version 2 and later: a trailing u64 modification time).
  A node starts with the offset of its name (u32) and its flags (u16: 1 zlib-compressed, 2 directory,
  4 zstd-compressed); a directory then holds its child count and the index of its first child (u32 each), a
  file its country and language (u16 each) and the offset of its data (u32). Node 0 is the root;
* names: a u16 length in UTF-16 code units, a u32 hash, then the name in UTF-16BE;
* data: a u32 length, then the bytes; zlib-compressed entries hold a u32 uncompressed length and a zlib stream.

Only reading is supported; zstd-compressed entries are reported, not decoded (no zstd in the standard library).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from hashtool.errors import HashtoolError

COMPRESSED, DIRECTORY, COMPRESSED_ZSTD = 0x01, 0x02, 0x04


class RccError(HashtoolError):
    """A file that is not a readable Qt resource bundle."""


@dataclass(frozen=True)
class RccEntry:
    path: str  # "/"-separated, without a leading slash
    flags: int
    data_offset: int

    @property
    def zstd(self) -> bool:
        return bool(self.flags & COMPRESSED_ZSTD)


class RccFile:
    """The files of one ``.rcc`` bundle: ``entries()`` lists them, ``read(entry)`` returns their bytes."""

    def __init__(self, path):
        self.path = Path(path)
        self._buf = self.path.read_bytes()
        if len(self._buf) < 20 or self._buf[:4] != b"qres":
            raise RccError(f"{self.path}: not a Qt resource bundle (no 'qres' header)")
        self.version, self._tree, self._data, self._names = struct.unpack_from(">IIII", self._buf, 4)
        if not 1 <= self.version <= 3:
            raise RccError(f"{self.path}: Qt resource format version {self.version} is not supported (1 to 3 are)")
        self._node_size = 14 if self.version == 1 else 22

    def _u(self, fmt: str, offset: int):
        try:
            return struct.unpack_from(fmt, self._buf, offset)
        except struct.error:
            raise RccError(f"{self.path}: truncated or corrupt bundle (offset {offset} is outside the file)") from None

    def _name(self, offset: int) -> str:
        (length,) = self._u(">H", self._names + offset)
        start = self._names + offset + 6
        raw = self._buf[start : start + 2 * length]
        if len(raw) != 2 * length:
            raise RccError(f"{self.path}: truncated name table")
        return raw.decode("utf-16-be")

    def entries(self) -> list[RccEntry]:
        """Every file in the bundle, depth first, in the bundle's (name-hash) order."""
        out: list[RccEntry] = []
        stack = [(0, "")]
        seen: set[int] = set()
        while stack:
            node, prefix = stack.pop()
            if node in seen:
                raise RccError(f"{self.path}: the resource tree has a cycle")
            seen.add(node)
            base = self._tree + node * self._node_size
            name_off, flags = self._u(">IH", base)
            name = "" if node == 0 else self._name(name_off)
            path = f"{prefix}/{name}" if prefix else name
            if flags & DIRECTORY:
                count, first = self._u(">II", base + 6)
                stack.extend((first + i, path) for i in reversed(range(count)))
            else:
                (data_off,) = self._u(">I", base + 10)
                out.append(RccEntry(path, flags, data_off))
        return out

    def read(self, entry: RccEntry) -> bytes:
        if entry.zstd:
            raise RccError(f"{self.path}:{entry.path}: zstd-compressed resources are not supported")
        (size,) = self._u(">I", self._data + entry.data_offset)
        start = self._data + entry.data_offset + 4
        payload = self._buf[start : start + size]
        if len(payload) != size:
            raise RccError(f"{self.path}:{entry.path}: truncated data")
        if entry.flags & COMPRESSED:
            try:
                return zlib.decompress(payload[4:])
            except zlib.error as exc:
                raise RccError(f"{self.path}:{entry.path}: corrupt compressed data ({exc})") from None
        return payload
