"""MIHIndex at sizes where its table layout changes: dense and sparse tables side by side, 32-bit keys
above 2**31 (stored as uint32), and a saved-then-mapped copy; answers must equal FlatIndex's and the naive
twin's, ties included."""

import os

import numpy as np
import pytest

from hashtool.hashindex import FlatIndex, MIHIndex, load_index
from hashtool.hashindex.mih import is_dense, substring_layout
from naive import knn_search, range_search

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="large n: JIT only")


def clustered(rng, n, nbytes, centres, p):
    c = rng.integers(0, 256, size=(centres, nbytes), dtype=np.uint8)
    bits = np.unpackbits(c[rng.integers(0, centres, size=n)], axis=1)
    return np.packbits(bits ^ (rng.random(bits.shape) < p), axis=1)


@pytest.mark.parametrize("m", [3, 2])
def test_large_n_crossing_the_dense_sparse_switch(tmp_path, m):
    rng = np.random.default_rng(m)
    n = 300_000  # 64 bits, m=3: widths 22, 21, 21; 8n is between 2**21 and 2**22: one sparse table, two dense
    db = clustered(rng, n, 8, 20_000, 0.04)
    db[1000:1050] = db[7]  # exact duplicates: ties at distance 0
    ids = np.sort(rng.choice(3 * n, size=n, replace=False)).astype(np.int64)
    mih = MIHIndex(64, m=m, fallback=False)
    mih.add(db, ids)
    _, widths = substring_layout(64, m)
    dense = [is_dense(int(w), n) for w in widths]
    assert (m == 3 and dense == [False, True, True]) or (m == 2 and dense == [False, False])
    mih.save(tmp_path / "i.htidx")
    mapped = load_index(tmp_path / "i.htidx")
    keys = mapped._ensure_tables()["t_keys"]
    if m == 2:
        assert keys.dtype == np.uint32 and int(keys.max()) >= 2**31  # keys with the top bit set
    flat = FlatIndex(64)
    flat.add(db, ids)
    # near queries (32-bit substrings enumerate C(32, r) keys per radius r: keep the radius small)
    queries = np.concatenate([db[[7, 3, 99_999, n - 1]], clustered(rng, 12 if m == 3 else 2, 8, 20_000, 0.02)])
    k = 25 if m == 3 else 10
    want_d, want_i = knn_search(queries[:6], db, ids, k)
    for index in (mih, mapped):
        d, i = index.search(queries, k)
        fd, fi = flat.search(queries, k)
        np.testing.assert_array_equal(d, fd)
        np.testing.assert_array_equal(i, fi)
        np.testing.assert_array_equal(d[:6], want_d)
        np.testing.assert_array_equal(i[:6], want_i)
        for got, exp in zip(index.range_search(queries[:6], 5), range_search(queries[:6], db, ids, 5)):
            np.testing.assert_array_equal(got, exp)
    assert mapped.verify()["codes"] == n


def _sparse_memmap(path, dtype, count):
    """A zero-filled file-backed array of ``count`` entries that occupies (almost) no disk: a sparse file."""
    probe = path.with_name(path.name + ".probe")  # ask the file system first, with a file it can afford to fill
    with open(probe, "wb") as f:
        f.truncate(1 << 28)
    sparse = os.stat(probe).st_blocks * 512 < (1 << 26)
    probe.unlink()
    if not sparse:
        pytest.skip(f"{path.parent} does not keep sparse files")
    arr = np.memmap(path, dtype=dtype, mode="w+", shape=(count,))
    if os.stat(path).st_blocks * 512 > (1 << 26):
        pytest.skip(f"{path.parent} does not keep sparse files")
    return arr


def test_kernels_at_the_int32_boundaries(tmp_path):
    """n = 2**31 - 1 codes of 128 bits (the most an MIHIndex holds), without allocating them: the codes and
    the tables' positions are sparse memory-mapped files (32 GiB each, all zero) and only the rows the query
    meets are written. Row positions near 2**31, word indexes p * 2 near 2**32, entry indexes j * n + offset
    up to 4 * 2**31 and 32-bit keys with the top bit set must all come out exactly as the naive twin says."""
    from hashtool.hashindex import _mih_kernels as MK
    from hashtool.hashindex.mih import MAX_CODES, check_capacity
    from hashtool.errors import ArgumentError

    check_capacity(MAX_CODES)
    with pytest.raises(ArgumentError, match="2\\*\\*31 - 1"):
        check_capacity(MAX_CODES + 1)

    n, nbits, m = MAX_CODES, 128, 4
    nw = nbits // 64
    starts, widths = substring_layout(nbits, m)
    assert list(widths) == [32] * 4
    # every bit set but the top bit of each substring: the query's keys are 0x7FFFFFFF, the zero rows are
    # at distance 124
    query = np.full(nw, np.uint64(0x7FFFFFFF7FFFFFFF))

    def flipped(*bits):
        code = query.copy()
        for b in bits:
            code[b // 64] ^= np.uint64(1 << (b % 64))
        return code

    # which substrings (32 bits each) a row differs in decides the (radius, table) where the search meets
    # it; no special row flips a substring's top bit, so their keys sort below 0x80000000
    special = {
        n - 1: flipped(0, 32, 64),  # distance 3, equal to the query only in substring 3
        n - 2: flipped(33, 65, 97),  # 3, only in substring 0
        n - 3: flipped(1, 2, 98),  # 3, in substrings 1 and 2
        n - 4: flipped(66),  # 1
        n - 5: flipped(3, 34, 67, 99),  # 4, in no substring: met at radius 1
    }
    for row in range(n - 9, n - 5):  # far rows (distance 30), equal to the query in substrings 2 and 3
        s0 = row % 7
        special[row] = flipped(*range(s0, s0 + 15), *range(32 + s0, 47 + s0))
    words = _sparse_memmap(tmp_path / "words", np.uint64, n * nw)
    t_pos = _sparse_memmap(tmp_path / "pos", np.int32, m * n)
    for row, code in special.items():
        words[row * nw: (row + 1) * nw] = code

    def key(code, j):  # substring j of a code given as nw words
        v = int(code[0]) | (int(code[1]) << 64)
        return (v >> int(starts[j])) & ((1 << int(widths[j])) - 1)

    # sparse tables, keys ascending: 0 (rows that are not special), the special rows' keys, then 0x80000000
    # (gap[j] more rows); both fillers are 31-32 bits from the query's key, never probed, their positions
    # left zero. gap[j] differs per table, so each table's special entries sit at another relative place
    # and an entry index that lands in the wrong table meets zero rows, not the right ones
    gap = [1000 * (j + 1) + 7 for j in range(m)]
    offsets, keys, key_len = [], [], []
    for j in range(m):
        by_key = sorted((key(code, j), row) for row, code in special.items())
        distinct = sorted({kk for kk, _ in by_key})
        assert distinct[-1] < 0x80000000
        first = n - len(special) - gap[j]
        off = [0, first]
        for kk in distinct:
            off.append(off[-1] + sum(1 for k2, _ in by_key if k2 == kk))
        off.append(n)
        for e, (_kk, row) in enumerate(by_key):
            t_pos[j * n + first + e] = row
        offsets += off
        keys += [0] + distinct + [0x80000000]
        key_len.append(2 + len(distinct))
    assert max(keys) >= 2**31 and m * n > 2**32
    key_len = np.array(key_len, np.int64)
    t_key_base = np.concatenate([[0], np.cumsum(key_len)[:-1]]).astype(np.int64)
    t_off_base = t_key_base + np.arange(m)
    args = (m, starts, widths, np.zeros(m, np.int64), t_off_base, t_key_base, key_len,
            np.array(offsets, np.int32), np.array(keys, np.uint32), t_pos)
    q = np.ascontiguousarray(query)
    db = np.zeros((len(special) + 1, nbits // 8), np.uint8)  # the twin: the special rows and one zero row
    db_ids = np.array(sorted(special) + [0], np.int64)
    for i, row in enumerate(sorted(special)):
        db[i] = special[row].view(np.uint8)
    # a misplaced entry index cannot change the answer (rows are met again in other tables at higher
    # radii, with their true distances) but it does change where the search stops: k = 4 needs row n - 1,
    # met at radius 0 only in table 3, through entries past 2**32
    for k, stop_radius in ((1, 0), (3, 0), (4, 0), (5, 1)):
        d, p = np.empty((1, k), np.int32), np.empty((1, k), np.int64)
        lookups, cands, radius, bad = (np.zeros(1, np.int64) for _ in range(4))
        fell = np.zeros(1, np.bool_)
        MK.mih_knn(words, nw, n, q, 0, 1, k, *args, 2**62, d, p, lookups, cands, radius, fell, bad)
        want_d, want_i = knn_search(q.view(np.uint8)[None, :], db, db_ids, k)
        assert bad[0] == 0 and not fell[0] and cands[0] < 100 and radius[0] == stop_radius
        np.testing.assert_array_equal(d, want_d)
        np.testing.assert_array_equal(p, want_i)
    lookups, cands, radius, bad = (np.zeros(1, np.int64) for _ in range(4))
    fell = np.zeros(1, np.bool_)
    keys_out, counts = MK.mih_range(words, nw, n, q, 0, 1, 4, *args, 2**62, lookups, cands, radius, fell, bad)
    lims, want_d, want_i = range_search(q.view(np.uint8)[None, :], db, db_ids, 4)
    assert bad[0] == 0 and counts.tolist() == [lims[1]] == [5]
    np.testing.assert_array_equal(keys_out >> MK.POS_SHIFT, want_d)
    np.testing.assert_array_equal(keys_out & ((1 << MK.POS_SHIFT) - 1), want_i)
    del words, t_pos
    for name in ("words", "pos"):
        (tmp_path / name).unlink()
