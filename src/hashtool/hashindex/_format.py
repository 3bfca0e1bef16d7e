"""The index file format: one versioned binary file, written atomically, read with or without mmap.

Layout of version 2 (all integers little-endian)::

    offset  size  field
    0       8     magic  b"HTIDX\\x00\\r\\n"  (the \\r\\n catches text-mode mangling)
    8       4     format version (2)
    12      4     index type (1 = flat, 2 = multi-index hashing)
    16      4     nbits
    20      4     number of sections
    24      8     number of codes
    32      8     file size in bytes
    40      8     flags (reserved, 0)
    48      8     reserved (0)
    56      64    8 int64 type parameters (MIH: m, m as requested (0 = automatic), fallback, ...)
    120     56*s  section table: name (24 bytes, NUL padded ASCII), dtype (8 bytes, numpy str such as "<u8"),
                  offset (8), element count (8), CRC-32 of the section's bytes (4), reserved (4)
    ...     4     CRC-32 of every header byte before it
    payload       sections, each starting on a 64-byte boundary, zero padding between them

Version 1 (still read) had one CRC-32 of the whole payload at offset 48 and 48-byte section entries
without a CRC.

Opening checks, always: the file is large enough for the fixed header, the magic, the version, the header
CRC, the recorded file size against the real one, every section's bounds and dtype, and the CRC of every
small section (at most :data:`SMALL_SECTION` bytes: the MIH table directory). What opening does not read
is checked by :meth:`IndexFile.verify_bytes` (every section CRC, or the version-1 payload CRC, and that the
padding is zero), which ``load_index(verify=True)`` and ``index.verify()`` call: opening a large mapped
file costs microseconds, not a read of the whole file. Any failure raises
:class:`~hashtool.errors.IndexFormatError` naming the file and the problem.

Saving computes every section CRC from the arrays being written and goes through
:func:`hashtool.fileio.atomic_write` (temporary file in the same folder, fsync, rename, folder fsync, the
permissions of a plain ``open()``): a crash mid-save leaves the previous file intact.
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
VERSION = 2
TYPE_FLAT = 1
TYPE_MIH = 2
TYPE_NAMES = {TYPE_FLAT: "flat", TYPE_MIH: "mih"}
_FIXED = struct.Struct("<8sIIIIQQQII8q")
_SECTION = struct.Struct("<24s8sQQI4x")
_SECTION_V1 = struct.Struct("<24s8sQQ")
_CRC = struct.Struct("<I")
ALIGN = 64
MAX_SECTIONS = 64
ALLOWED_DTYPES = {"<u8", "<i8", "<i4", "<u4", "|u1"}
SMALL_SECTION = 1 << 16  # sections up to this size are checksummed at every open
_CHUNK = 1 << 22


def _align(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


def _crc(arr: np.ndarray, crc: int = 0) -> int:
    flat = memoryview(arr).cast("B")
    for i in range(0, len(flat), _CHUNK):
        crc = zlib.crc32(flat[i: i + _CHUNK], crc)
    return crc


def write_index(path, index_type: int, nbits: int, count: int, params, sections: dict) -> None:
    """Write ``sections`` (name -> 1-D array) atomically to ``path``, with a CRC-32 per section."""
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
    fixed = _FIXED.pack(MAGIC, VERSION, index_type, nbits, len(names), count, file_size, 0, 0, 0, *params)
    table = b"".join(
        _SECTION.pack(name.encode("ascii"), arr.dtype.str.encode("ascii"), off, arr.size, _crc(arr))
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
            written = len(header)
            for off, arr in zip(offsets, arrays):
                f.write(b"\0" * (off - written))
                f.write(memoryview(arr).cast("B"))
                written = off + arr.nbytes
            f.write(b"\0" * (file_size - written))
    except OSError as exc:
        raise IndexFormatError(f"{path}: saving failed ({exc}); the previous file, if any, is unchanged") from exc


class IndexFile:
    """A parsed index file: header fields, its sections as numpy arrays, and what is needed to verify them."""

    def __init__(self, path, version, index_type, nbits, count, params, sections, mapping, layout):
        self.path = path
        self.version = version
        self.index_type = index_type
        self.nbits = nbits
        self.count = count
        self.params = params
        self.sections = sections
        self.verified = False
        self._mapping = mapping  # keeps the mmap alive as long as the arrays live
        self._layout = layout  # (header_size, file_size, specs [(name, dtype, offset, length, crc)], v1 payload crc)

    def verify_bytes(self) -> int:
        """Check every byte after the header: section CRCs (version 2) or the payload CRC (version 1), and
        zero padding. Returns the number of bytes checked; raises IndexFormatError on a mismatch."""
        header_size, file_size, specs, payload_crc = self._layout
        gaps = []
        end = header_size
        for name, dtype, off, length, crc in specs:
            gaps.append((end, off))
            end = off + length * np.dtype(dtype).itemsize
        gaps.append((end, file_size))
        if self._mapping is not None:
            for a, b in gaps:
                if b > a and self._mapping[a:b].count(0) != b - a:
                    raise _fail(self.path, "padding bytes are not zero: the file is corrupted", "save or rebuild the index")
        # without a mapping the padding was read and checked at open
        if self.version == 1:
            crc = 0
            for (a, b), (name, *_rest) in zip(gaps, specs):
                crc = zlib.crc32(b"\0" * (b - a), crc)
                crc = _crc(self.sections[name], crc)
            crc = zlib.crc32(b"\0" * (gaps[-1][1] - gaps[-1][0]), crc)
            if crc != payload_crc:
                raise _fail(self.path, "payload checksum mismatch: the file is corrupted", "save or rebuild the index")
        else:
            for name, _dtype, _off, _length, crc in specs:
                if _crc(self.sections[name]) != crc:
                    raise _fail(self.path, f"section {name!r} checksum mismatch: the file is corrupted",
                                "save or rebuild the index")
        self.verified = True
        return file_size - header_size


def _fail(path, problem: str, fix: str = "") -> IndexFormatError:
    msg = f"{path}: {problem}"
    if fix:
        msg += f"; {fix}"
    return IndexFormatError(msg)


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise _fail(path, "no such index file", "check the path or build the index first") from None
    except IsADirectoryError:
        raise _fail(path, "is a folder, not an index file") from None
    except OSError as exc:
        raise _fail(path, f"cannot be opened ({exc.strerror})") from None


def _read_header(f, path):
    """Parse and check the header; returns (fields, header size, section specs)."""
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
    if version not in (1, VERSION):
        raise _fail(
            path,
            f"has index format version {version}, this hashtool reads versions 1 and {VERSION}",
            "rebuild the index with this version of hashtool",
        )
    entry = _SECTION_V1 if version == 1 else _SECTION
    if nsections > MAX_SECTIONS:
        raise _fail(path, f"header is corrupted (claims {nsections} sections)", "save the index again")
    table_bytes = f.read(entry.size * nsections + _CRC.size)
    if len(table_bytes) < entry.size * nsections + _CRC.size:
        raise _fail(path, f"is truncated ({real_size} bytes) inside its header", "save the index again")
    header = head + table_bytes[:-_CRC.size]
    (stored_crc,) = _CRC.unpack(table_bytes[-_CRC.size:])
    if zlib.crc32(header) != stored_crc:
        raise _fail(path, "header checksum mismatch: the file is corrupted", "save or rebuild the index")
    if index_type not in TYPE_NAMES:
        raise _fail(path, f"has unknown index type {index_type}")
    if flags != 0:
        raise _fail(path, f"uses flags {flags:#x} that this hashtool does not know")
    if version > 1 and (payload_crc or _res):
        raise _fail(path, "header is corrupted (reserved fields are not zero)", "save or rebuild the index")
    if real_size != file_size:
        what = "truncated" if real_size < file_size else "longer than recorded"
        raise _fail(path, f"is {what}: {real_size} bytes, header says {file_size}", "save the index again")
    header_size = len(header) + _CRC.size
    specs = []
    prev_end = header_size
    for s in range(nsections):
        if version == 1:
            raw_name, raw_dtype, off, length = entry.unpack_from(table_bytes, s * entry.size)
            crc = None
        else:
            raw_name, raw_dtype, off, length, crc = entry.unpack_from(table_bytes, s * entry.size)
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
        specs.append((name, dtype, off, length, crc))
    return fields, header_size, specs


def read_index(path, mmap: bool = True, verify: bool = True) -> IndexFile:
    """Parse and validate an index file; with ``mmap`` the sections are views of a private mapping.

    ``verify``: also check every byte after the header (:meth:`IndexFile.verify_bytes`), a read of the
    whole file. Without it only the header, the section bounds and the small sections are checked.
    """
    path = os.fspath(path)
    with _open(path) as f:
        fields, header_size, specs = _read_header(f, path)
        version, index_type, nbits, count, file_size, payload_crc = (fields[i] for i in (1, 2, 3, 5, 6, 8))
        sections = {}
        mapping = None
        if mmap and file_size > header_size:
            mapping = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)
            for name, dtype, off, length, _crc32 in specs:
                sections[name] = np.frombuffer(mapping, dtype=np.dtype(dtype), count=length, offset=off)
        else:
            end = header_size
            for name, dtype, off, length, _crc32 in specs:
                f.seek(end)
                gap = f.read(off - end)
                if gap.count(0) != off - end:
                    raise _fail(path, "padding bytes are not zero: the file is corrupted", "save or rebuild the index")
                arr = np.empty(length, dtype=np.dtype(dtype))
                got = f.readinto(memoryview(arr).cast("B"))
                if got != arr.nbytes:
                    raise _fail(path, f"is truncated inside section {name!r}", "save the index again")
                sections[name] = arr
                end = off + arr.nbytes
            gap = f.read(file_size - end)
            if len(gap) != file_size - end or gap.count(0) != len(gap):
                raise _fail(path, "padding bytes are not zero: the file is corrupted", "save or rebuild the index")
    for name, dtype, off, length, crc in specs:
        if crc is not None and length * np.dtype(dtype).itemsize <= SMALL_SECTION and _crc(sections[name]) != crc:
            raise _fail(path, f"section {name!r} checksum mismatch: the file is corrupted", "save or rebuild the index")
    native = {}
    for name, arr in sections.items():
        if arr.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
            arr = arr.astype(arr.dtype.newbyteorder("="))
        native[name] = arr.view(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder == "<" else arr
    out = IndexFile(path, version, index_type, nbits, count, list(fields[10:]), native, mapping,
                    (header_size, file_size, specs, payload_crc))
    if verify:
        out.verify_bytes()
    return out
