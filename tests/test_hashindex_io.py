"""Persistence: round trips (mmap and not), atomic saves, and every corruption raising IndexFormatError."""

import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, strategies as st

from hashtool.errors import IndexFormatError
from hashtool.hashindex import FlatIndex, MIHIndex, _format, load_index

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
    report = loaded.verify()
    assert report["path"] == str(path) and report["format_version"] == 2 and report["codes"] == n
    assert report["bytes_checked"] == path.stat().st_size - (120 + 56 * len(index._sections()[1]) + 4)
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
    # what a lazy open (mapped, verify=False) reads: the header and every section of at most SMALL_SECTION
    # bytes (here all of them), not the zero padding between sections
    header_size, _size, specs, _crc = _format.read_index(path, verify=False)._layout
    read_lazily = np.zeros(len(data), bool)
    read_lazily[:header_size] = True
    for _name, dtype, off, length, _c in specs:
        nbytes = length * np.dtype(dtype).itemsize
        read_lazily[off: off + nbytes] = nbytes <= _format.SMALL_SECTION
    assert read_lazily.sum() > len(data) // 2
    undetected = []
    for i in range(0, len(data), 5 if NOJIT else 1):  # the JIT run covers every byte; loading is JIT-free
        flipped = bytearray(data)
        flipped[i] ^= 0x5A if i % 2 else 0x01
        bad.write_bytes(bytes(flipped))
        # every path that reads every byte: an open without a mapping, verify=True, and index.verify(); and
        # the lazy open for the bytes it reads
        for how in ("read", "verify", "mapped-then-verify") + (("lazy",) if read_lazily[i] else ()):
            try:
                if how == "read":
                    load_index(bad, mmap=False)
                elif how == "verify":
                    load_index(bad, mmap=True, verify=True)
                elif how == "lazy":
                    load_index(bad, mmap=True, verify=False)
                else:
                    load_index(bad, mmap=True).verify()
                undetected.append((i, how))
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
    header_len = 120 + 56 * nsec

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
        load_index(path, verify=True)
    with pytest.raises(IndexFormatError, match="strictly increasing"):
        load_index(path).verify()
    m = small_index(MIHIndex, nbits=64, n=40_000, fallback=False)  # large enough to skip the scan
    params, sections = m._sections()
    sections["t_pos"] = sections["t_pos"] + 100
    _format.write_index(path, 2, 64, len(m), params, sections)
    with pytest.raises(IndexFormatError, match="positions"):
        load_index(path, verify=True)
    lazy = load_index(path)  # opened without reading the tables: a search must not read out of bounds
    with pytest.raises(IndexFormatError, match="out of range.*index verify"):
        lazy.search(m.codes()[-5:], 3)
    with pytest.raises(IndexFormatError, match="out of range"):
        lazy.range_search(m.codes()[-5:], 2)
    with pytest.raises(IndexFormatError, match="positions"):
        lazy.verify()


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
    assert mapped.verify()["codes"] == 4  # the mapping still holds the old file's bytes
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


FIXTURES = os.path.join(os.path.dirname(__file__), "data", "index_v1")


@pytest.mark.parametrize("mmap", [True, False])
def test_version_1_files_still_open_and_answer_like_a_fresh_build(mmap, tmp_path):
    expected = np.load(os.path.join(FIXTURES, "expected.npz"))
    rng = np.random.default_rng(0)
    cases = [
        ("flat64.htidx", FlatIndex(64), expected["db64"], expected["ids64"]),
        ("mih40.htidx", MIHIndex(40, m=2, fallback=False), expected["db40"], None),
        ("mih16-dense.htidx", MIHIndex(16, fallback=False), expected["db40"][:, :2], None),
    ]
    for name, fresh, db, ids in cases:
        fresh.add(db, ids)
        old = load_index(os.path.join(FIXTURES, name), mmap=mmap, verify=True)
        assert type(old) is type(fresh) and old.verify()["format_version"] == 1
        np.testing.assert_array_equal(old.ids, fresh.ids)
        far = rng.integers(0, 256, size=(0 if NOJIT else 3, db.shape[1]), dtype=np.uint8)  # slow as Python
        queries = np.concatenate([db[:5], far])
        k = 2 if NOJIT else 12
        for a, b in zip(old.search(queries, k), fresh.search(queries, k)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(old.range_search(queries, 3), fresh.range_search(queries, 3)):
            np.testing.assert_array_equal(a, b)
        old.save(tmp_path / name)  # saving an old index writes the current version
        assert load_index(tmp_path / name).verify()["format_version"] == 2
    data = bytearray(open(os.path.join(FIXTURES, "mih40.htidx"), "rb").read())
    data[-100] ^= 1  # inside the last section (old files have one payload CRC)
    (tmp_path / "bad.htidx").write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="payload checksum"):
        load_index(tmp_path / "bad.htidx").verify()


def test_a_lean_file_drops_what_can_be_derived(tmp_path):
    """Sequential ids are not stored, nor first-word copies; offsets and positions are int32."""
    from hashtool.hashindex import _format

    rng = np.random.default_rng(4)
    n = 200_000
    index = MIHIndex(64)
    index.add(rng.integers(0, 256, size=(n, 8), dtype=np.uint8))
    index.save(tmp_path / "seq.htidx")
    f = _format.read_index(tmp_path / "seq.htidx", verify=False)
    assert "ids" not in f.sections and "t_word0" not in f.sections
    assert f.sections["t_pos"].dtype == np.int32 and f.sections["t_offsets"].dtype == np.int32
    m = index.m
    offsets = f.sections["t_offsets"].shape[0]
    payload = 8 * n + 4 * m * n + 4 * offsets + 4 * f.sections["t_keys"].shape[0]
    assert (tmp_path / "seq.htidx").stat().st_size <= payload + 4096
    loaded = load_index(tmp_path / "seq.htidx")
    np.testing.assert_array_equal(loaded.ids, np.arange(n))
    q = index.codes()[:3]
    for a, b in zip(loaded.search(q, 5), index.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    index.remove([0])  # ids 1..n-1: no longer 0..n-1, so they are stored
    index.save(tmp_path / "ids.htidx")
    assert "ids" in _format.read_index(tmp_path / "ids.htidx", verify=False).sections
    np.testing.assert_array_equal(load_index(tmp_path / "ids.htidx").ids, np.arange(1, n))
