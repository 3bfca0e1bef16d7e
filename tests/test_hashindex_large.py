"""MIHIndex at sizes where its table layout changes: dense and sparse tables side by side, 32-bit keys
above 2**31 (stored as uint32), and a saved-then-mapped copy; answers must equal FlatIndex's and the naive
twin's, ties included."""

import os

import numpy as np
import pytest

from hashtool.hashindex import FlatIndex, MIHIndex, load_index
from hashtool.hashindex.mih import DENSE_MAX_BITS, substring_layout
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
    dense = [w <= DENSE_MAX_BITS and (1 << int(w)) <= 8 * n for w in widths]
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
