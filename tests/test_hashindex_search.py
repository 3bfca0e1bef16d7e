"""FlatIndex and MIHIndex against the naive twin, over hypothesis-drawn shapes with heavy ties."""

import contextlib
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, strategies as st

from hashtool.hashindex import FlatIndex, MIHIndex, mih as mih_module
from naive import knn_search, range_search, sparse_table

NOJIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
MAX_N = 150 if NOJIT else 5000
# Without JIT the kernels run as Python and unsigned scalar arithmetic wraps on purpose (numpy warns).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
NBITS = [8, 16, 24, 56, 64, 72, 120, 128, 136, 200, 256, 320, 512]


def make_codes(rng, n, nbits, style):
    """Codes with ties: 'uniform', 'few' distinct codes (duplicates), or 'clustered' near a few centres."""
    nbytes = nbits // 8
    if style == "uniform" or n == 0:
        return rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    if style == "few":
        pool = rng.integers(0, 256, size=(int(rng.integers(1, 6)), nbytes), dtype=np.uint8)
        return pool[rng.integers(0, len(pool), size=n)]
    centres = rng.integers(0, 256, size=(int(rng.integers(1, 8)), nbytes), dtype=np.uint8)
    bits = np.unpackbits(centres[rng.integers(0, len(centres), size=n)], axis=1)
    flips = rng.random(bits.shape) < rng.choice([0.02, 0.08])
    return np.packbits(bits ^ flips, axis=1)


def make_queries(rng, db, nq, nbits):
    """Queries near stored codes (a few bits flipped), exact copies, and one random code.

    Without JIT the random (far) query is left out: the pure-Python multi-index enumeration for it takes
    seconds; the JIT run covers it.
    """
    nbytes = nbits // 8
    out = [rng.integers(0, 256, size=(0 if NOJIT and len(db) else 1, nbytes), dtype=np.uint8)]
    if len(db):
        pick = db[rng.integers(0, len(db), size=nq)]
        bits = np.unpackbits(pick, axis=1)
        flips = rng.random(bits.shape) < 0.03
        flips[: nq // 2] = False  # some exact copies: distance-0 ties
        out.append(np.packbits(bits ^ flips, axis=1))
    return np.concatenate(out)


def make_ids(rng, n, sequential):
    if sequential:
        return None, np.arange(n, dtype=np.int64)
    ids = rng.permutation(4 * n + 10)[:n].astype(np.int64)
    return ids, ids


def mih_forced(nbits, m=None):
    """A MIHIndex that always takes the multi-index path (fallback off), with substrings <= 16 bits
    (<= 8 without JIT, where enumerating keys runs as Python)."""
    if m is None:
        m = max(1, -(-nbits // (8 if NOJIT else 16)))
    return MIHIndex(nbits, m=m, fallback=False)


case = st.fixed_dictionaries(
    {
        "nbits": st.sampled_from(NBITS),
        "n": st.integers(0, MAX_N),
        "style": st.sampled_from(["uniform", "few", "clustered"]),
        "seed": st.integers(0, 2**32 - 1),
        "sequential": st.booleans(),
        "nq": st.integers(0, 6),
        "extra_k": st.integers(0, 5),
    }
)


def build(c):
    rng = np.random.default_rng(c["seed"])
    db = make_codes(rng, c["n"], c["nbits"], c["style"])
    ids_arg, ids = make_ids(rng, c["n"], c["sequential"])
    queries = make_queries(rng, db, c["nq"], c["nbits"])
    return rng, db, ids_arg, ids, queries


@given(c=case, kfrac=st.floats(0, 1))
def test_flat_and_mih_knn_equal_naive(c, kfrac):
    rng, db, ids_arg, ids, queries = build(c)
    k = 1 + int(kfrac * (c["n"] + c["extra_k"]))
    want_d, want_i = knn_search(queries, db, ids, k)
    indexes = [FlatIndex(c["nbits"]), mih_forced(c["nbits"]), MIHIndex(c["nbits"])]
    for index in indexes:
        if c["n"]:
            index.add(db, ids_arg)
        d, i = index.search(queries, k)
        assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (len(queries), k)
        np.testing.assert_array_equal(d, want_d, err_msg=repr(index))
        np.testing.assert_array_equal(i, want_i, err_msg=repr(index))


@given(c=case, rfrac=st.floats(0, 1))
def test_flat_and_mih_range_equal_naive(c, rfrac):
    rng, db, ids_arg, ids, queries = build(c)
    r = int(rfrac * rfrac * c["nbits"])  # small radii are the interesting ones
    want = range_search(queries, db, ids, r)
    for index in [FlatIndex(c["nbits"]), mih_forced(c["nbits"]), MIHIndex(c["nbits"])]:
        if c["n"]:
            index.add(db, ids_arg)
        lims, d, i = index.range_search(queries, r)
        assert lims.dtype == np.int64 and d.dtype == np.int32 and i.dtype == np.int64
        for got, exp in zip((lims, d, i), want):
            np.testing.assert_array_equal(got, exp, err_msg=repr(index))


@given(
    seed=st.integers(0, 2**32 - 1),
    nbits=st.sampled_from([16, 40] if NOJIT else [16, 40, 64, 96]),
    m=st.integers(1, 6),
    k=st.integers(1, 5 if NOJIT else 40),
    r=st.integers(0, 4 if NOJIT else 12),
)
def test_mih_any_m_including_sparse_tables(seed, nbits, m, k, r):
    """Every m (uneven substrings, widths up to 32 bits: sparse tables) gives the naive answer."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 150 if NOJIT else 2000))
    db = make_codes(rng, n, nbits, "clustered")
    queries = db[rng.integers(0, n, size=3)]  # near the data: enumeration stays short even at 32 bits
    m = max(m, -(-nbits // (20 if NOJIT else 32)))
    index = MIHIndex(nbits, m=m, fallback=False)
    index.add(db)
    want_d, want_i = knn_search(queries, db, np.arange(n), k)
    d, i, stats = index.search(queries, k, return_stats=True)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    assert (stats["path"] == "mih").all()
    lims, rd, ri = index.range_search(queries, r)
    for got, exp in zip((lims, rd, ri), range_search(queries, db, np.arange(n), r)):
        np.testing.assert_array_equal(got, exp)


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 30), r=st.integers(0, 20))
def test_mih_fallback_is_exact(seed, k, r):
    """With a tiny work budget most queries fall back to the scan; answers stay exact and are marked."""
    rng = np.random.default_rng(seed)
    n = 300 if NOJIT else 3000
    db = make_codes(rng, n, 64, "uniform")
    queries = make_queries(rng, db, 4, 64)
    index = MIHIndex(64)
    index.add(db)
    with mock.patch.object(mih_module, "SMALL_SCAN_WORDS", 0), mock.patch.object(mih_module, "FALLBACK_FRACTION", 1e-4):
        d, i, stats = index.search(queries, k, return_stats=True)
        lims, rd, ri = index.range_search(queries, r)
    want_d, want_i = knn_search(queries, db, np.arange(n), k)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    assert (stats["path"] == "scan").any()
    for got, exp in zip((lims, rd, ri), range_search(queries, db, np.arange(n), r)):
        np.testing.assert_array_equal(got, exp)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 80), st.booleans()),
        st.tuples(st.just("remove"), st.floats(0, 1), st.booleans()),
        st.tuples(st.just("search"), st.integers(1, 30), st.integers(0, 16)),
    ),
    min_size=1,
    max_size=12,
)


@given(seed=st.integers(0, 2**32 - 1), nbits=st.sampled_from([8, 32, 64, 72, 128]), ops=ops)
def test_add_remove_search_sequences(seed, nbits, ops):
    """Flat and MIH follow a model dict through adds (sequential or chosen ids) and removes."""
    rng = np.random.default_rng(seed)
    model = {}
    indexes = [FlatIndex(nbits), mih_forced(nbits)]
    for op in ops:
        if op[0] == "add":
            n = op[1]
            codes = make_codes(rng, n, nbits, "few")
            if op[2] and n:
                free = np.setdiff1d(np.arange(4 * (len(model) + n) + 10), np.fromiter(model, np.int64, len(model)))
                ids = rng.permutation(free)[:n]
            else:
                start = max(model) + 1 if model else 0
                ids = np.arange(start, start + n)
            for index in indexes:
                index.add(codes, ids if op[2] else None)
            model.update({int(x): c for x, c in zip(ids, codes)})
        elif op[0] == "remove":
            stored = np.fromiter(model, np.int64, len(model))
            chosen = stored[rng.random(len(stored)) < op[1]]
            for index in indexes:
                if op[2]:  # include an unknown id: reported, nothing removed
                    bogus = np.append(chosen, 10**12)
                    try:
                        index.remove(bogus)
                        raise AssertionError("unknown id not reported")
                    except ValueError as exc:
                        assert "not in the index" in str(exc)
                    assert index.remove(bogus, missing="ignore") == len(chosen)
                else:
                    assert index.remove(chosen) == len(chosen)
            for x in chosen:
                del model[int(x)]
        else:
            ids = np.array(sorted(model), dtype=np.int64)
            db = np.array([model[int(x)] for x in ids], dtype=np.uint8).reshape(-1, nbits // 8)
            queries = make_queries(rng, db, 3, nbits)
            want_d, want_i = knn_search(queries, db, ids, op[1])
            want_r = range_search(queries, db, ids, op[2])
            for index in indexes:
                assert len(index) == len(model)
                np.testing.assert_array_equal(index.ids, ids)
                d, i = index.search(queries, op[1])
                np.testing.assert_array_equal(d, want_d)
                np.testing.assert_array_equal(i, want_i)
                for got, exp in zip(index.range_search(queries, op[2]), want_r):
                    np.testing.assert_array_equal(got, exp)


def test_threads_and_both_parallel_splits_agree():
    """One query splits the database across threads, many queries split the queries: same answers."""
    from hashtool.hashindex import flat as flat_module

    rng = np.random.default_rng(7)
    n = 700 if NOJIT else 5000
    db = make_codes(rng, n, 128, "few")  # heavy ties across chunk borders
    queries = make_queries(rng, db, 40, 128)
    want_d, want_i = knn_search(queries, db, np.arange(n), 25)
    want_r = range_search(queries[:3], db, np.arange(n), 40)
    with mock.patch.object(flat_module, "_MIN_CHUNK_ROWS", 100):  # chunks of a small database
        for threads in (1, 2, 3):
            index = FlatIndex(128, threads=threads)
            index.add(db)
            for sl in (slice(0, 1), slice(1, 3), slice(None)):
                d, i = index.search(queries[sl], 25)
                np.testing.assert_array_equal(d, want_d[sl])
                np.testing.assert_array_equal(i, want_i[sl])
            for got, exp in zip(index.range_search(queries[:3], 40), want_r):
                np.testing.assert_array_equal(got, exp)


def test_mih_verifies_fewer_candidates_than_n_on_clustered_data():
    rng = np.random.default_rng(3)
    n = 2000 if NOJIT else 20000
    centres = rng.integers(0, 256, size=(50, 8), dtype=np.uint8)
    bits = np.unpackbits(centres[rng.integers(0, 50, size=n)], axis=1)
    db = np.packbits(bits ^ (rng.random(bits.shape) < 0.05), axis=1)
    queries = db[:20]
    index = MIHIndex(64, fallback=False)
    index.add(db)
    d, i, stats = index.search(queries, 10, return_stats=True)
    want_d, want_i = knn_search(queries, db, np.arange(n), 10)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    assert (stats["path"] == "mih").all()
    assert stats["candidates"].max() < n // 2, stats["candidates"]
    assert (stats["lookups"] > 0).all() and (stats["radius"] >= 0).all()
    assert index.last_stats is stats


def test_small_calls_are_routed_by_the_stored_codes_and_k_the_same_every_time():
    rng = np.random.default_rng(11)
    n = 300 if NOJIT else 3000
    db = make_codes(rng, n, 64, "uniform")
    queries = make_queries(rng, db, 6, 64)
    want = knn_search(queries, db, np.arange(n), 5)
    index = MIHIndex(64, engine="numba")
    index.add(db)
    paths = []
    with mock.patch.object(mih_module, "SMALL_SCAN_WORDS", 0), mock.patch.object(mih_module, "FALLBACK_FRACTION", 1e-6):
        assert index.mih_pays(5) is False  # every calibration query falls back on a tiny budget
        for _ in range(12):
            d, i, stats = index.search(queries, 5, return_stats=True)
            np.testing.assert_array_equal(d, want[0])
            np.testing.assert_array_equal(i, want[1])
            paths.append(stats["path"].tolist())
        index._pays.clear()
        with mock.patch.object(mih_module, "ROUTE_SCAN_ABOVE", 1.0):  # the same data, told that MIH pays
            assert index.mih_pays(5) is True
            d, i, stats = index.search(queries, 5, return_stats=True)
            assert (stats["lookups"] > 0).all()  # tried the multi-index path (and fell back)
            np.testing.assert_array_equal(i, want[1])
    assert paths == [["scan"] * len(queries)] * 12  # the first call already, and every later one alike


@pytest.mark.skipif(NOJIT, reason="the compiled path is the one that matters; minutes as Python")
def test_the_same_call_takes_the_same_path_in_a_fresh_process(tmp_path):
    import json
    import subprocess
    import sys
    import textwrap

    rng = np.random.default_rng(5)
    n = 50_000
    centres = rng.integers(0, 256, size=(2000, 8), dtype=np.uint8)
    bits = np.unpackbits(centres[rng.integers(0, 2000, size=n)], axis=1)
    clustered = np.packbits(bits ^ (rng.random(bits.shape) < 0.03), axis=1)
    uniform = make_codes(rng, n, 64, "uniform")
    want = {}
    for name, db in (("clustered", clustered), ("uniform", uniform)):
        index = MIHIndex(64, engine="numba")
        index.add(db)
        index.save(tmp_path / f"{name}.htidx")
        for nq in (1, 3, 200):
            stats = index.search(db[:nq], 10, return_stats=True)[2]
            want[f"{name}-{nq}"] = [stats["path"].tolist(), stats["lookups"].tolist()]
            assert index.search(db[:nq], 10, return_stats=True)[2]["path"].tolist() == want[f"{name}-{nq}"][0]
    assert want["clustered-1"][0] == ["mih"] and want["uniform-1"][0] == ["scan"]  # both paths are covered
    code = textwrap.dedent(f"""
        import json
        import numpy as np
        from hashtool.hashindex import load_index
        out = {{}}
        for name in ("clustered", "uniform"):
            index = load_index({str(tmp_path)!r} + "/" + name + ".htidx", engine="numba")
            db = index.codes()
            for nq in (1, 3, 200):
                stats = index.search(db[:nq], 10, return_stats=True)[2]
                out[name + "-" + str(nq)] = [stats["path"].tolist(), stats["lookups"].tolist()]
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == want


@pytest.mark.parametrize("pays", [True, False])
def test_a_large_batch_probes_first_then_scans_the_rest_unless_the_stored_codes_say_scan(pays):
    rng = np.random.default_rng(12)
    n = 300 if NOJIT else 3000
    db = make_codes(rng, n, 64, "uniform")
    queries = make_queries(rng, db, 399, 64)
    index = MIHIndex(64)
    index.add(db)
    with mock.patch.object(mih_module, "SMALL_SCAN_WORDS", 0), mock.patch.object(mih_module, "FALLBACK_FRACTION", 1e-6):
        # every query falls back on this budget; the calibration on the stored codes says so unless told otherwise
        with mock.patch.object(index, "mih_pays", return_value=True) if pays else contextlib.nullcontext():
            d, i, stats = index.search(queries, 4, return_stats=True)
        assert index.mih_pays(4) is False
    want_d, want_i = knn_search(queries, db, np.arange(n), 4)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    tried = stats["lookups"] > 0
    probe = max(mih_module.PROBE_QUERIES, len(queries) // mih_module.PROBE_SHARE) if pays else 0
    assert tried[:probe].all() and not tried[probe:].any()
    assert (stats["path"] == "scan").all()


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), width=st.integers(17, 32), distinct=st.integers(1, 40))
def test_sparse_tables_are_built_like_a_stable_argsort(seed, n, width, distinct):
    """The radix sort that builds sparse tables against the naive twin: keys with the top bit set, few
    distinct keys (long runs of ties, whose rows must stay in row order) or many."""
    from hashtool.hashindex import _mih_kernels as MK

    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**width, size=distinct, dtype=np.uint64)
    pool[0] = 2**width - 1
    keys = pool[rng.integers(0, distinct, size=n)].astype(np.uint32)
    want_pos, want_keys, want_off = sparse_table(keys)
    work, pos = keys.copy(), np.empty(n, np.int32)
    got = MK.build_sparse(work, n, width, pos, np.empty(n, np.uint32), np.empty(n, np.int32))
    assert got == len(want_keys)
    out_keys, out_off = np.empty(got, np.uint32), np.empty(got + 1, np.int32)
    MK.fill_sparse(work, n, out_keys, out_off)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_array_equal(out_keys, want_keys)
    np.testing.assert_array_equal(out_off, want_off)


@given(
    seed=st.integers(0, 2**32 - 1),
    nbits=st.sampled_from([16, 32] if NOJIT else [16, 32, 64, 128]),
    style=st.sampled_from(["uniform", "few", "clustered"]),
    n=st.integers(0, 200 if NOJIT else 3000),
    extra_k=st.integers(0, 6),
    threads=st.sampled_from([1, 2]),
)
def test_chunked_lookups_and_verification_equal_naive(seed, nbits, style, n, extra_k, threads):
    """The staged search (keys looked up and rows verified CHUNK_KEYS at a time, candidate buffers grown
    for large buckets) against the naive twin: substrings of 12-16 bits, so a radius of 2 already has more
    keys than one chunk; 'few' codes fill buckets past the candidate buffer; k up to past n; ties."""
    from hashtool.hashindex import _mih_kernels as MK

    rng = np.random.default_rng(seed)
    db = make_codes(rng, n, nbits, style)
    dups = max(8, n // 3)
    if n > 10:
        db[n // 2: n // 2 + dups] = db[0]  # exact duplicates: ties at every k, and one large bucket per table
    width = 8 if NOJIT else int(rng.integers(12, 17))
    m = max(1, nbits // width)
    queries = make_queries(rng, db, 4, nbits)
    if n:
        queries = np.concatenate([queries, db[:1]])
    k = max(1, min(int(rng.integers(1, 40)), n) + extra_k)
    index = MIHIndex(nbits, m=m, fallback=False, threads=threads)
    index.add(db)
    want_d, want_i = knn_search(queries, db, np.arange(n), k)
    d, i, stats = index.search(queries, k, return_stats=True)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    if n:
        assert (stats["path"] == "mih").all()
        assert int(index._ensure_tables()["sub_width"].min()) >= (8 if NOJIT else 12)
        if n > 10 and dups > 8 * MK.CHUNK_KEYS:  # the bucket of db[0] is past the candidate buffer
            assert stats["candidates"][-1] > 8 * MK.CHUNK_KEYS
    r = int(rng.integers(0, 2 * m + 2))
    for got, exp in zip(index.range_search(queries, r), range_search(queries, db, np.arange(n), r)):
        np.testing.assert_array_equal(got, exp)


@pytest.mark.skipif(NOJIT, reason="enumerates radii of 16- and 32-bit substrings")
@given(seed=st.integers(0, 2**32 - 1), style=st.sampled_from(["uniform", "clustered"]),
       budget_frac=st.floats(0.001, 0.5), k=st.integers(1, 20), sparse=st.booleans())
def test_a_query_falls_back_exactly_when_its_whole_search_would_pass_the_budget(seed, style, budget_frac, k, sparse):
    """The early fallback (the next table's keys alone would pass the budget) only moves the moment a
    query gives up, never whether it does: with 64-bit codes (no full verifications) a query falls back
    iff the lookups (each at its table's cost: 4 dense 16-bit tables, or 2 sparse 32-bit ones) and
    candidates of its complete, unbudgeted search cost more than the budget."""
    from hashtool.hashindex import _mih_kernels as MK

    rng = np.random.default_rng(seed)
    n = 4000
    db = make_codes(rng, n, 64, "clustered" if sparse else style)
    queries = make_queries(rng, db, 12, 64)
    if sparse:  # near queries only: a far one enumerates millions of 32-bit keys
        queries = queries[len(queries) - 12:]
    index = MIHIndex(64, m=2 if sparse else 4, fallback=False, threads=1)
    index.add(db)
    t = index._ensure_tables()
    assert (t["t_dense"] == (0 if sparse else 1)).all()
    lookup_cost = MK.SPARSE_LOOKUP_COST if sparse else MK.LOOKUP_COST
    full = index.search(queries, k, return_stats=True)[2]
    cost = full["lookups"] * lookup_cost + full["candidates"] * MK.CANDIDATE_COST
    budget = int(budget_frac * n)
    q = index._prepare_codes(queries, "queries")
    nq = len(queries)
    d, p = np.empty((nq, k), np.int32), np.empty((nq, k), np.int64)
    lookups, cands, radius, bad = (np.zeros(nq, np.int64) for _ in range(4))
    fell = np.zeros(nq, np.bool_)
    MK.mih_knn(index._words, 1, n, q, 0, nq, k, *index._args(t), budget, d, p, lookups, cands, radius, fell, bad)
    np.testing.assert_array_equal(fell, cost > budget)
    spent = lookups * lookup_cost + cands * MK.CANDIDATE_COST
    assert (spent[~fell] == cost[~fell]).all()
    assert (spent[fell] <= cost[fell]).all()
    want_d = knn_search(queries, db, np.arange(n), k)[0]
    np.testing.assert_array_equal(d[~fell], want_d[~fell])


@pytest.mark.skipif(NOJIT, reason="16-bit substrings")
@pytest.mark.parametrize("seed", range(5))
def test_the_early_fallback_gives_up_at_the_level_boundary(seed):
    """A budget that covers radius 0 but not the 16 keys of the next level: the query gives up right
    after radius 0 (m lookups), instead of looking up the next table's keys and passing the budget."""
    from hashtool.hashindex import _mih_kernels as MK
    from hashtool.hashindex.mih import substring_layout

    rng = np.random.default_rng(seed)
    n, m, k = 4000, 4, 10
    db = make_codes(rng, n, 64, "uniform")
    query = make_codes(rng, 1, 64, "uniform")
    index = MIHIndex(64, m=m, fallback=False, threads=1)
    index.add(db)
    words = index._words
    q = index._prepare_codes(query, "queries")
    starts, widths = substring_layout(64, m)
    sub = lambda w, j: (w >> np.uint64(starts[j])) & np.uint64((1 << int(widths[j])) - 1)  # noqa: E731
    r0_cands = sum(int((sub(words, j) == sub(q[0], j)).sum()) for j in range(m))
    assert r0_cands < k  # radius 0 cannot finish the search
    r0_cost = m * MK.LOOKUP_COST + r0_cands * MK.CANDIDATE_COST
    budget = r0_cost + 16 * MK.LOOKUP_COST - 1  # the 16 keys at radius 1 of table 0 do not fit
    d, p = np.empty((1, k), np.int32), np.empty((1, k), np.int64)
    lookups, cands, radius, bad = (np.zeros(1, np.int64) for _ in range(4))
    fell = np.zeros(1, np.bool_)
    MK.mih_knn(words, 1, n, q, 0, 1, k, *index._args(index._ensure_tables()), budget, d, p, lookups, cands,
               radius, fell, bad)
    assert fell[0] and lookups[0] == m and cands[0] == r0_cands and radius[0] == 0
