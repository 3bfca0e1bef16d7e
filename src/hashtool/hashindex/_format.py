"""The index file format: one versioned binary file, written atomically, read with or without mmap.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"HTIDX\\x00\\r\\n"  (the \\r\\n catches text-mode mangling)
    8       4     format version (1)
    12      4     index type (1 = flat, 2 = multi-index hashing)
    16      4     nbits
    20      4     number of sections
    24      8     number of codes
    32      8     file size in bytes
    40      8     flags (reserved, 0)
    48      4     CRC-32 of the payload (every byte from the end of the header to the end of the file)
    52      4     reserved (0)
    56      64    8 int64 type parameters (MIH: m, m as requested (0 = automatic), fallback, ...)
    120     48*s  section table: name (24 bytes, NUL padded ASCII), dtype (8 bytes, numpy str such as "<u8"),
                  offset (8), element count (8)
    ...     4     CRC-32 of every header byte before it
    payload       sections, each starting on a 64-byte boundary, zero padding between them

Loading checks, in order: the file is large enough for the fixed header, the magic, the version, the
header CRC, the recorded file size against the real one, every section's bounds and dtype, and (with
``verify=True``, the default) the payload CRC, read in chunks through ordinary reads so that a mapped
index does not become resident. Any failure raises :class:`~hashtool.errors.IndexFormatError` naming the
file and the problem.

Saving goes through :func:`hashtool.fileio.atomic_write` (temporary file in the same folder, fsync, rename,
folder fsync, the permissions of a plain ``open()``): a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import mmap as _mmap
import os
import struct
import zlib

import numpy as np

from hashtool.errors import IndexFormatError
from hashtool.fileio import atomic_write

MAGIC = b"HTIDX\x00\r\n"
VERSION = 1
TYPE_FLAT = 1
TYPE_MIH = 2
TYPE_NAMES = {TYPE_FLAT: "flat", TYPE_MIH: "mih"}
_FIXED = struct.Struct("<8sIIIIQQQII8q")
_SECTION = struct.Struct("<24s8sQQ")
_CRC = struct.Struct("<I")
ALIGN = 64
MAX_SECTIONS = 64
ALLOWED_DTYPES = {"<u8", "<i8", "<i4", "|u1"}
_CHUNK = 1 << 22


def _align(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


def write_index(path, index_type: int, nbits: int, count: int, params, sections: dict) -> None:
    """Write ``sections`` (name -> 1-D array) atomically to ``path``."""
    path = os.fspath(path)
    params = list(params) + [0] * (8 - len(params))
    names = list(sections)
    arrays = []
    for name in names:
        arr = np.ascontiguousarray(sections[name])
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise IndexFormatError(f"internal: section {name} has unsupported dtype {arr.dtype}")
        arrays.append(arr.reshape(-1))
    header_size = _FIXED.size + _SECTION.size * len(names) + _CRC.size
    offsets = []
    pos = _align(header_size)
    for arr in arrays:
        offsets.append(pos)
        pos = _align(pos + arr.nbytes)
    file_size = pos
    crc = 0
    pad_end = []
    for i, arr in enumerate(arrays):
        start = offsets[i]
        prev_end = header_size if i == 0 else offsets[i - 1] + arrays[i - 1].nbytes
        pad_end.append(start - prev_end)
    # payload CRC over padding + data, in file order
    for i, arr in enumerate(arrays):
        crc = zlib.crc32(b"\0" * pad_end[i], crc)
        crc = zlib.crc32(memoryview(arr).cast("B"), crc)
    tail = file_size - (offsets[-1] + arrays[-1].nbytes if arrays else header_size)
    crc = zlib.crc32(b"\0" * tail, crc)
    fixed = _FIXED.pack(MAGIC, VERSION, index_type, nbits, len(names), count, file_size, 0, crc, 0, *params)
    table = b"".join(
        _SECTION.pack(name.encode("ascii"), arr.dtype.str.encode("ascii"), off, arr.size)
        for name, arr, off in zip(names, arrays, offsets)
    )
    header = fixed + table
    header += _CRC.pack(zlib.crc32(header))

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise IndexFormatError(f"{path}: cannot write the index; check that the folder exists and is writable")
    try:
        with atomic_write(path) as f:
            f.write(header)
            for i, arr in enumerate(arrays):
                f.write(b"\0" * pad_end[i])
                f.write(memoryview(arr).cast("B"))
            f.write(b"\0" * tail)
    except OSError as exc:
        raise IndexFormatError(f"{path}: saving failed ({exc}); the previous file, if any, is unchanged") from exc


class IndexFile:
    """A parsed index file: header fields and its sections as read-only-in-spirit numpy arrays."""

    def __init__(self, path, index_type, nbits, count, params, sections, mapping, verified):
        self.path = path
        self.verified = verified
        self.index_type = index_type
        self.nbits = nbits
        self.count = count
        self.params = params
        self.sections = sections
        self._mapping = mapping  # keeps the mmap alive as long as the arrays live


def _fail(path, problem: str, fix: str = "") -> IndexFormatError:
    msg = f"{path}: {problem}"
    if fix:
        msg += f"; {fix}"
    return IndexFormatError(msg)


def read_index(path, mmap: bool = True, verify: bool = True) -> IndexFile:
    """Parse and validate an index file; with ``mmap`` the sections are views of a private mapping."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise _fail(path, "no such index file", "check the path or build the index first") from None
    except IsADirectoryError:
        raise _fail(path, "is a folder, not an index file") from None
    except OSError as exc:
        raise _fail(path, f"cannot be opened ({exc.strerror})") from None
    with f:
        real_size = os.fstat(f.fileno()).st_size
        head = f.read(_FIXED.size)
        if len(head) < 8 or head[:8] != MAGIC:
            if len(head) < 8 and MAGIC.startswith(head):
                raise _fail(path, f"is truncated ({real_size} bytes)", "save the index again")
            raise _fail(path, "is not a hashtool index file (bad magic bytes)")
        if len(head) < _FIXED.size:
            raise _fail(path, f"is truncated ({real_size} bytes, header needs {_FIXED.size})", "save the index again")
        fields = _FIXED.unpack(head)
        _, version, index_type, nbits, nsections, count, file_size, flags, payload_crc, _res = fields[:10]
        params = list(fields[10:])
        if version != VERSION:
            raise _fail(
                path,
                f"has index format version {version}, this hashtool reads version {VERSION}",
                "rebuild the index with this version of hashtool",
            )
        if nsections > MAX_SECTIONS:
            raise _fail(path, f"header is corrupted (claims {nsections} sections)", "save the index again")
        table_bytes = f.read(_SECTION.size * nsections + _CRC.size)
        if len(table_bytes) < _SECTION.size * nsections + _CRC.size:
            raise _fail(path, f"is truncated ({real_size} bytes) inside its header", "save the index again")
        header = head + table_bytes[:-_CRC.size]
        (stored_crc,) = _CRC.unpack(table_bytes[-_CRC.size:])
        if zlib.crc32(header) != stored_crc:
            raise _fail(path, "header checksum mismatch: the file is corrupted", "save or rebuild the index")
        if index_type not in TYPE_NAMES:
            raise _fail(path, f"has unknown index type {index_type}")
        if flags != 0:
            raise _fail(path, f"uses flags {flags:#x} that this hashtool does not know")
        if real_size != file_size:
            what = "truncated" if real_size < file_size else "longer than recorded"
            raise _fail(path, f"is {what}: {real_size} bytes, header says {file_size}", "save the index again")
        header_size = len(header) + _CRC.size
        specs = []
        prev_end = header_size
        for s in range(nsections):
            raw_name, raw_dtype, off, length = _SECTION.unpack_from(table_bytes, s * _SECTION.size)
            try:
                name = raw_name.rstrip(b"\0").decode("ascii")
                dtype = raw_dtype.rstrip(b"\0").decode("ascii")
            except UnicodeDecodeError:
                raise _fail(path, f"section {s} has a corrupted name or dtype") from None
            if dtype not in ALLOWED_DTYPES:
                raise _fail(path, f"section {name!r} has unsupported dtype {dtype!r}")
            nbytes = length * np.dtype(dtype).itemsize
            if off % ALIGN or off < prev_end or off + nbytes > file_size:
                raise _fail(path, f"section {name!r} lies outside the file (offset {off}, {nbytes} bytes)")
            prev_end = off + nbytes
            specs.append((name, dtype, off, length))
        if verify:
            f.seek(header_size)
            crc = 0
            remaining = file_size - header_size
            buf = bytearray(min(_CHUNK, max(remaining, 1)))
            view = memoryview(buf)
            while remaining > 0:
                got = f.readinto(view[: min(len(buf), remaining)])
                if not got:
                    raise _fail(path, "is truncated while reading", "save the index again")
                crc = zlib.crc32(view[:got], crc)
                remaining -= got
            if crc != payload_crc:
                raise _fail(path, "payload checksum mismatch: the file is corrupted", "save or rebuild the index")
        sections = {}
        mapping = None
        if mmap and file_size > header_size:
            mapping = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)
            for name, dtype, off, length in specs:
                sections[name] = np.frombuffer(mapping, dtype=np.dtype(dtype), count=length, offset=off)
        else:
            for name, dtype, off, length in specs:
                f.seek(off)
                arr = np.empty(length, dtype=np.dtype(dtype))
                got = f.readinto(memoryview(arr).cast("B"))
                if got != arr.nbytes:
                    raise _fail(path, f"is truncated inside section {name!r}", "save the index again")
                sections[name] = arr
    native = {}
    for name, arr in sections.items():
        if arr.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
            arr = arr.astype(arr.dtype.newbyteorder("="))
        native[name] = arr.view(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder == "<" else arr
    return IndexFile(path, index_type, nbits, count, params, native, mapping, verify)
