"""Persistence: round trips (mmap and not), atomic saves, and every corruption raising IndexFormatError."""

import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, strategies as st

from hashtool.errors import IndexFormatError
from hashtool.hashindex import FlatIndex, MIHIndex, load_index

NOJIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def small_index(cls, nbits=16, n=6, **kw):
    rng = np.random.default_rng(0)
    index = cls(nbits, **kw)
    index.add(rng.integers(0, 256, size=(n, nbits // 8), dtype=np.uint8), ids=np.arange(n) * 3 + 1)
    return index


@given(
    seed=st.integers(0, 2**32 - 1),
    nbits=st.sampled_from([8, 64, 72, 128, 256]),
    n=st.integers(0, 500),
    mih=st.booleans(),
    mmap=st.booleans(),
    verify=st.booleans(),
)
def test_round_trip_gives_identical_answers(tmp_path_factory, seed, nbits, n, mih, mmap, verify):
    rng = np.random.default_rng(seed)
    db = rng.integers(0, 4, size=(n, nbits // 8), dtype=np.uint8)  # few distinct bytes: many ties
    ids = rng.permutation(3 * n + 1)[:n]
    index = MIHIndex(nbits, fallback=False) if mih else FlatIndex(nbits)
    if n:
        index.add(db, ids)
    path = tmp_path_factory.mktemp("idx") / "a.htidx"
    index.save(path)
    loaded = load_index(path, mmap=mmap, verify=verify)
    assert type(loaded) is type(index) and loaded.nbits == nbits and len(loaded) == n
    np.testing.assert_array_equal(loaded.ids, index.ids)
    np.testing.assert_array_equal(loaded.codes(), index.codes())
    if mih:
        assert loaded.m == index.m and loaded.fallback is False
    queries = rng.integers(0, 4, size=(4, nbits // 8), dtype=np.uint8)
    for a, b in zip(index.search(queries, 7), loaded.search(queries, 7)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(index.range_search(queries, nbits // 8), loaded.range_search(queries, nbits // 8)):
        np.testing.assert_array_equal(a, b)
    # a mapped index stays usable after changes, and the file does not change
    before = path.read_bytes()
    loaded.add(db[:3] if n else np.zeros((1, nbits // 8), np.uint8))
    if n:
        loaded.remove(ids[:1])
    loaded.search(queries, 3)
    assert path.read_bytes() == before


@pytest.mark.parametrize("make", [lambda: small_index(FlatIndex), lambda: small_index(MIHIndex, nbits=40, m=2)])
def test_every_byte_flip_and_truncation_is_detected(tmp_path, make):
    path = tmp_path / "small.htidx"
    make().save(path)  # the MIH one has two sparse tables (20-bit substrings): a small file
    data = path.read_bytes()
    assert 300 < len(data) < 20000
    bad = tmp_path / "bad.htidx"
    undetected = []
    for i in range(0, len(data), 5 if NOJIT else 1):  # the JIT run covers every byte; loading is JIT-free
        flipped = bytearray(data)
        flipped[i] ^= 0x5A if i % 2 else 0x01
        bad.write_bytes(bytes(flipped))
        for mmap in (True, False):
            try:
                load_index(bad, mmap=mmap)
                undetected.append((i, mmap))
            except IndexFormatError as exc:
                assert str(bad) in str(exc)
    assert undetected == []
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        with pytest.raises(IndexFormatError, match="bad.htidx"):
            load_index(bad)
    bad.write_bytes(data + b"\0")
    with pytest.raises(IndexFormatError, match="longer"):
        load_index(bad)


def test_header_only_checks_without_verify(tmp_path):
    """verify=False still catches header damage and truncation (the payload CRC is what it skips)."""
    path = tmp_path / "i.htidx"
    small_index(FlatIndex).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(IndexFormatError, match="truncated"):
        load_index(path, verify=False)
    flipped = bytearray(data)
    flipped[30] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match="header checksum"):
        load_index(path, verify=False)


def test_wrong_version_type_and_not_an_index(tmp_path):
    import struct
    import zlib

    path = tmp_path / "i.htidx"
    small_index(MIHIndex).save(path)
    data = bytearray(path.read_bytes())
    nsec = struct.unpack_from("<I", data, 20)[0]
    header_len = 120 + 48 * nsec

    def rewrite(offset, value):
        d = bytearray(data)
        struct.pack_into("<I", d, offset, value)
        struct.pack_into("<I", d, header_len, zlib.crc32(bytes(d[:header_len])))  # a valid header CRC
        path.write_bytes(bytes(d))

    rewrite(8, 99)
    with pytest.raises(IndexFormatError, match="version 99"):
        load_index(path)
    rewrite(12, 7)
    with pytest.raises(IndexFormatError, match="unknown index type"):
        load_index(path)
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="not a FlatIndex"):
        FlatIndex.load(path)
    assert isinstance(MIHIndex.load(path), MIHIndex)
    path.write_bytes(b"hello, I am a text file\n" * 10)
    with pytest.raises(IndexFormatError, match="not a hashtool index"):
        load_index(path)
    with pytest.raises(IndexFormatError, match="no such index file"):
        load_index(tmp_path / "missing.htidx")
    with pytest.raises(IndexFormatError, match="folder"):
        load_index(tmp_path)


def test_structurally_bad_payload_with_valid_checksums_is_rejected(tmp_path):
    """A file whose CRCs are right but whose ids are out of order (a buggy writer) is refused."""
    from hashtool.hashindex import _format

    index = small_index(FlatIndex)
    path = tmp_path / "i.htidx"
    _format.write_index(path, 1, 16, len(index), [], {"words": index._words, "ids": index._ids[::-1].copy()})
    with pytest.raises(IndexFormatError, match="strictly increasing"):
        load_index(path)
    m = small_index(MIHIndex, fallback=False)
    params, sections = m._sections()
    sections["t_pos"] = sections["t_pos"] + 100
    _format.write_index(path, 2, 16, len(m), params, sections)
    with pytest.raises(IndexFormatError, match="positions"):
        load_index(path)


def test_save_is_atomic(tmp_path):
    path = tmp_path / "i.htidx"
    first = small_index(FlatIndex, n=4)
    first.save(path)
    before = path.read_bytes()
    second = small_index(FlatIndex, n=9)
    with mock.patch("os.replace", side_effect=OSError("disk gone")):
        with pytest.raises(IndexFormatError, match="unchanged"):
            second.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["i.htidx"]  # no temporary file left behind
    # saving over the file an index is mapped from is safe: the mapping keeps the old inode
    mapped = load_index(path, mmap=True)
    second.save(path)
    assert len(mapped) == 4 and len(load_index(path)) == 9
    mapped.search(np.zeros((1, 2), np.uint8), 2)
    with pytest.raises(IndexFormatError, match="folder exists"):
        second.save(tmp_path / "no" / "such" / "folder.htidx")


def test_saved_file_has_the_permissions_of_a_plain_open(tmp_path):
    """An index file is 0666 less the umask, like any file the user writes (a bare mkstemp gives 0600)."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "i.htidx"
        small_index(FlatIndex).save(path)
        assert (path.stat().st_mode & 0o777) == 0o644
        os.umask(0o002)
        small_index(MIHIndex).save(path)  # replacing a file: the new one gets the new umask
        assert (path.stat().st_mode & 0o777) == 0o664
    finally:
        os.umask(old)
