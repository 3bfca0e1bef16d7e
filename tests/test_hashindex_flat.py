"""The flat scan's kernels against the naive twin, on the shapes their code paths turn on, and the rule that
picks a scan's path (a function of the call only)."""

import functools
import json
import os
import subprocess
import sys
import textwrap
import threading
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashtool.hashindex import FlatIndex, flat as flat_module
from naive import knn_search, range_search

NOJIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
# 1, 2 and 4 words have their own register-blocked loops; 3 and 5 words take the generic one
NBITS = [8, 56, 64, 72, 128, 136, 192, 256, 320]


def descending(rng, n, nbits, query):
    """Rows ever closer to ``query``: every row beats all before it, so every row is admitted and the
    candidate buffer fills and is compacted again and again."""
    bits = np.unpackbits(query[None, :], axis=1).repeat(n, axis=0)
    for i in range(n):
        flip = rng.permutation(nbits)[: max(0, nbits - 1 - (i * nbits) // max(n, 1))]
        bits[i, flip] ^= 1
    return np.packbits(bits, axis=1)


@st.composite
def problems(draw):
    nbits = draw(st.sampled_from(NBITS))
    n = draw(st.integers(0, 300 if NOJIT else 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    style = draw(st.sampled_from(["uniform", "few", "descending"]))
    nq = draw(st.integers(0, 11))  # tails of the 4-query groups, one query alone
    q = rng.integers(0, 256, (nq, nbits // 8), dtype=np.uint8)
    if style == "uniform" or n == 0:
        db = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
    elif style == "few":  # heavy ties at every distance, the k-th included
        pool = rng.integers(0, 256, (int(rng.integers(1, 6)), nbits // 8), dtype=np.uint8)
        db = pool[rng.integers(0, len(pool), n)]
        if nq:
            q[: nq // 2] = pool[0]
    else:
        db = descending(rng, n, nbits, q[0] if nq else np.zeros(nbits // 8, np.uint8))
    k = draw(st.one_of(st.integers(1, 12), st.integers(1, n + 5)))  # k > n pads with -1
    return nbits, db, q, k, draw(st.sampled_from([1, 2, 3]))


@settings(max_examples=60 if NOJIT else 200, deadline=None)
@given(problems(), st.sampled_from([50, 4096]))
def test_flat_knn_equals_naive_on_every_kernel_path(problem, min_chunk_rows):
    """Both splits (a small ``_MIN_CHUNK_ROWS`` splits even small databases across threads and merges)."""
    check_knn(problem, min_chunk_rows)


def check_knn(problem, min_chunk_rows):
    """FlatIndex's k-NN of a drawn problem, with ``_MIN_CHUNK_ROWS`` patched, equals the naive twin."""
    nbits, db, q, k, threads = problem
    index = FlatIndex(nbits, threads=threads)
    index.add(db)
    with mock.patch.object(flat_module, "_MIN_CHUNK_ROWS", min_chunk_rows):
        d, i = index.search(q, k)
    want_d, want_i = knn_search(q, db, np.arange(len(db)), k)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)


@pytest.mark.skipif(NOJIT, reason="a database of many blocks and tiles: JIT only")
@pytest.mark.parametrize("nbits", [64, 128, 256, 192])
def test_many_tiles_and_blocks(nbits):
    """More queries than a tile (64) and rows than a block, sizes that are multiples of nothing, ties."""
    rng = np.random.default_rng(nbits)
    n = 3 * 2048 + 77
    pool = rng.integers(0, 256, (40, nbits // 8), dtype=np.uint8)
    db = pool[rng.integers(0, 40, n)]
    bits = np.unpackbits(db, axis=1)
    db = np.packbits(bits ^ (rng.random(bits.shape) < 0.05), axis=1)
    q = np.concatenate([db[:70], rng.integers(0, 256, (61, nbits // 8), dtype=np.uint8)])
    want_d, want_i = knn_search(q, db, np.arange(n), 17)
    want_r = range_search(q[:9], db, np.arange(n), nbits // 8)
    for threads in (1, 2):
        index = FlatIndex(nbits, threads=threads)
        index.add(db)
        for sl in (slice(None), slice(0, 1), slice(3, 8)):
            d, i = index.search(q[sl], 17)
            np.testing.assert_array_equal(d, want_d[sl])
            np.testing.assert_array_equal(i, want_i[sl])
        for got, exp in zip(index.range_search(q[:9], nbits // 8), want_r):
            np.testing.assert_array_equal(got, exp)


# ---------------------------------------------------------------------------------------------- the plan
GRID = [
    (nq, n, nw, threads, engine)
    for nq in (1, 3, 64, 200, 1000)
    for n in (10, 8192, 10**6, 10**8)
    for nw in (1, 2, 4)
    for threads in (1, 2, 8)
    for engine in ("numba", "numpy")
]


def plans():
    return [flat_module.scan_plan(*args) for args in GRID]


def test_the_plan_is_a_function_of_the_call_only():
    """The same inputs give the same path before and after other searches, and in other threads."""
    first = plans()
    assert set(first) == set(flat_module.PLANS) - {"empty"}  # every path is on the grid
    assert flat_module.scan_plan(0, 10, 1, 2) == flat_module.scan_plan(5, 0, 1, 2) == "empty"
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, (20_000, 8), dtype=np.uint8)
    for engine in ("numba", "numpy"):
        index = FlatIndex(64, threads=2, engine=engine)
        index.add(db)
        for nq in (1, 5, 300):
            index.search(db[:nq], 10)
            index.range_search(db[:nq], 3)
    assert plans() == first
    seen = []
    workers = [threading.Thread(target=lambda: seen.append(plans())) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen == [first] * 4


def test_the_plan_is_the_same_in_a_fresh_process():
    code = textwrap.dedent(f"""
        import json
        from hashtool.hashindex import flat
        print(json.dumps([flat.scan_plan(*args) for args in {GRID!r}]))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == plans()


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_searches_take_the_planned_path(engine):
    """What a search runs is what scan_plan says, call after call (no drift with the process's history)."""
    rng = np.random.default_rng(1)
    db = rng.integers(0, 256, (9000, 8), dtype=np.uint8)
    index = FlatIndex(64, threads=2, engine=engine)
    index.add(db)
    K = flat_module.K
    for _ in range(3):
        for nq in (1, 3, 200):
            ran = []
            with (
                mock.patch.object(flat_module._numpy_scan, "knn", wraps=flat_module._numpy_scan.knn) as np_knn,
                mock.patch.object(K, "knn_merge", wraps=K.knn_merge) as merge,
                mock.patch.object(K, "knn_scan", wraps=K.knn_scan) as scan,
            ):
                index.search(db[:nq], 5)
                ran = "numpy" if np_knn.called else "database" if merge.called else "queries" if scan.called else "?"
            assert ran == flat_module.scan_plan(nq, len(db), 1, 2, engine)


@pytest.mark.skipif(NOJIT, reason="compiled specialisations exist only with the JIT")
def test_every_kernel_compiles_once():
    """Python ints, numpy ints, every code length, both splits, k-NN and range: one specialisation each
    (no literal arguments, no per-width variants), so a process compiles or loads each kernel once."""
    from numba.core.registry import CPUDispatcher

    from hashtool.hashindex import _flat_kernels as K

    rng = np.random.default_rng(2)
    for nbits in (64, 128, 200, 256):
        db = rng.integers(0, 256, (9000, nbits // 8), dtype=np.uint8)
        for threads in (1, 2):
            index = FlatIndex(nbits, threads=threads)
            index.add(db)
            for nq in (1, 3, 150):
                index.search(db[:nq], 5)
                index.search(db[:nq], np.int32(7))
                index.range_search(db[:nq], np.int64(3))
    kernels = {name: f for name, f in vars(K).items() if isinstance(f, CPUDispatcher)}
    used = {name: len(f.signatures) for name, f in kernels.items() if f.signatures}
    assert {"knn_scan", "knn_merge", "range_scan"} <= set(used)  # the entry points (the rest, when loaded
    # from the on-disk cache, come inside their callers' machine code)
    assert all(count == 1 for count in used.values()), used


@pytest.mark.skipif(NOJIT, reason="the compiled loop (AVX2 IR where the CPU has it)")
@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.integers(0, 700))
def test_min_popcount4_equals_numpy(seed, start, count):
    from numba import njit

    from hashtool.hashindex._popcount import min_popcount4

    call = njit(lambda w, s, c, a: min_popcount4(w, s, c, a[0], a[1], a[2], a[3]))
    rng = np.random.default_rng(seed)
    count -= count % 4
    words = rng.integers(0, 2**64, start + count + 5, dtype=np.uint64)
    a = rng.integers(0, 2**64, 4, dtype=np.uint64)
    if count:
        a[1] = words[start + count - 1]  # distance 0, at the last word of the range
    got = call(words, start, count, a)
    want = [int(np.bitwise_count(words[start:start + count] ^ a[j]).min()) if count else 255 for j in range(4)]
    assert [(got >> (8 * j)) & 255 for j in range(4)] == want


@pytest.mark.skipif(NOJIT, reason="compiles the kernels for a generic CPU in a subprocess")
def test_the_portable_loop_on_a_cpu_without_avx2(tmp_path):
    """NUMBA_CPU_NAME=generic: no AVX2 IR, the plain loop; the answers stay the naive ones."""
    rng = np.random.default_rng(4)
    db = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    db[100:140] = db[7]  # ties
    q = np.concatenate([db[[7, 2999]], rng.integers(0, 256, (5, 8), dtype=np.uint8)])
    np.save(tmp_path / "db.npy", db)
    np.save(tmp_path / "q.npy", q)
    code = textwrap.dedent(f"""
        import json
        import numpy as np
        from hashtool.hashindex import FlatIndex, _popcount
        index = FlatIndex(64, threads=1)
        index.add(np.load({str(tmp_path / "db.npy")!r}))
        d, i = index.search(np.load({str(tmp_path / "q.npy")!r}), 50)
        print(json.dumps([_popcount.NIBBLE_LOOP, d.tolist(), i.tolist()]))
    """)
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    nibble_loop, d, i = json.loads(res.stdout.strip().splitlines()[-1])
    want_d, want_i = knn_search(q, db, np.arange(len(db)), 50)
    assert nibble_loop is False
    assert d == want_d.tolist() and i == want_i.tolist()


# ---------------------------------------------------------------------------------------------- byte-sliced loop
SLICED = not NOJIT and flat_module.K.NIBBLE_LOOP
PLANES = not NOJIT and flat_module.K.WIDE_POPCOUNT


@functools.cache
def _sliced_run():
    """Transpose units, write 4 queries' tables, take their smallest distances (compiled once)."""
    from numba import njit

    from hashtool.hashindex import _sliced as S

    @njit
    def run(words, woff, nunits, uoff, q, nw):
        scratch = np.empty(nunits * S.UNIT_WORDS, np.uint64)
        tables = np.zeros(4 * S.TABLE_BYTES, np.uint8)
        S.transpose_units(words, woff, nunits, scratch)
        for s in range(4):
            S.query_tables(q, s * nw, nw, tables, s * S.TABLE_BYTES)
        if nw == 1:
            return S.sliced_min4_w1(scratch, uoff, nunits - uoff, tables, 0)
        if nw == 2:
            return S.sliced_min4_w2(scratch, uoff, nunits - uoff, tables, 0)
        return S.sliced_min4_w4(scratch, uoff, nunits - uoff, tables, 0)

    return run


@pytest.mark.skipif(not SLICED, reason="the byte-sliced loop runs only on AVX2 with the JIT")
@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 4]), st.integers(1, 9), st.integers(0, 8), st.integers(0, 3))
def test_sliced_min4_equals_numpy(seed, nw, nunits, woff, special):
    """Transpose ``nunits`` units from word ``woff`` and take the 4 queries' smallest distance over a range of
    them; one query at distance 0 (a stored row), one at the largest distance (256 bits: saturated to 255)."""
    from hashtool.hashindex import _sliced as S

    run = _sliced_run()
    rng = np.random.default_rng(seed)
    woff *= nw
    uoff = int(rng.integers(0, nunits))
    words = rng.integers(0, 2**64, woff + S.UNIT_WORDS * nunits + 3, dtype=np.uint64)
    q = rng.integers(0, 2**64, 4 * nw, dtype=np.uint64)
    rows = words[woff + uoff * S.UNIT_WORDS: woff + nunits * S.UNIT_WORDS].reshape(-1, nw)
    q[special * nw:(special + 1) * nw] = rows[rng.integers(0, len(rows))]
    q[((special + 1) % 4) * nw:((special + 1) % 4 + 1) * nw] = ~rows[rng.integers(0, len(rows))]
    got = run(words, woff, nunits, uoff, q, nw)
    want = [min(255, int(np.bitwise_count(rows ^ q[s * nw:(s + 1) * nw]).sum(axis=1).min())) for s in range(4)]
    assert [(got >> (8 * s)) & 255 for s in range(4)] == want


@st.composite
def tiles(draw):
    """Tiles of at least SLICED_MIN_QUERIES queries (the byte-sliced loop) at 64, 128 and 256 bits, databases
    whose size leaves a tail past the last whole unit, ties at every distance, k > n."""
    nbits = draw(st.sampled_from([64, 128, 256]))
    n = draw(st.integers(0, 5000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nq = draw(st.integers(flat_module.K.SLICED_MIN_QUERIES, 80))
    q = rng.integers(0, 256, (nq, nbits // 8), dtype=np.uint8)
    style = draw(st.sampled_from(["uniform", "few", "descending", "near"]))
    if style == "uniform" or n == 0:
        db = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
    elif style == "few":
        pool = rng.integers(0, 256, (int(rng.integers(1, 6)), nbits // 8), dtype=np.uint8)
        db = pool[rng.integers(0, len(pool), n)]
        q[: nq // 2] = pool[0]
    elif style == "near":  # rows a few bits from the queries, at the end of the range too (the tail rows)
        base = q[rng.integers(0, nq, n)]
        bits = np.unpackbits(base, axis=1)
        db = np.packbits(bits ^ (rng.random(bits.shape) < 0.03), axis=1)
    else:
        db = descending(rng, n, nbits, q[0])
    k = draw(st.one_of(st.integers(1, 12), st.integers(1, n + 5)))
    return nbits, db, q, k, draw(st.sampled_from([1, 2]))


@pytest.mark.skipif(not (SLICED or PLANES), reason="tiles take a loop of their own only on AVX2 or AVX-512 VPOPCNTDQ")
@settings(max_examples=60, deadline=None)
@given(tiles(), st.sampled_from([50, 4096]))
def test_flat_knn_on_the_tile_loops_equals_naive(problem, min_chunk_rows):
    """The byte-sliced loop (AVX2) or the word-plane loop (AVX-512 VPOPCNTDQ), whichever this CPU takes."""
    check_knn(problem, min_chunk_rows)


def test_the_sliced_loop_rule_is_a_function_of_the_tile():
    K = flat_module.K
    for nw in (1, 2, 3, 4, 5):
        for nt in (1, 4, K.SLICED_MIN_QUERIES - 1, K.SLICED_MIN_QUERIES, 64):
            want = bool(K.NIBBLE_LOOP) and nw in (1, 2, 4) and nt >= K.SLICED_MIN_QUERIES
            assert K.sliced_pays(nt, nw) == want


# ---------------------------------------------------------------------------------------------- word-plane loop
@settings(max_examples=40 if NOJIT else 200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 4]), st.integers(1, 1024), st.integers(0, 3))
def test_plane_hits_flag_exactly_the_chunks_below_each_threshold(seed, nw, m, special):
    """Plain code, so it runs on every CPU: a block of ``m`` rows (a partial last chunk), one query at
    distance 0 from a row, one at the largest distance, thresholds from 0 (nothing flagged) to past ``nbits``."""
    K = flat_module.K
    rng = np.random.default_rng(seed)
    m = min(m, K.BLOCK_WORDS // nw)  # at most a block
    p0 = int(rng.integers(0, 5))
    words = rng.integers(0, 2**64, (p0 + m + 2) * nw, dtype=np.uint64)
    rows = words.reshape(-1, nw)[p0:p0 + m]
    a = rng.integers(0, 2**64, K.QB * nw, dtype=np.uint64)
    a[special * nw:(special + 1) * nw] = rows[rng.integers(0, m)]
    a[((special + 1) % 4) * nw:((special + 1) % 4 + 1) * nw] = ~rows[rng.integers(0, m)]
    chunk = K.PLANE_CHUNK_ROWS
    dist = np.bitwise_count(rows[None, :, :] ^ a.reshape(K.QB, 1, nw)).sum(axis=2)  # (query, row)
    # thresholds at some chunk's minimum or one above it (the boundary a "<" must get right), or 0
    th = np.array([dist[j, c:c + chunk].min() + rng.integers(0, 2) for j, c in
                   enumerate(rng.integers(0, (m + chunk - 1) // chunk, K.QB) * chunk)], dtype=np.int64)
    th[rng.random(K.QB) < 0.2] = 0
    planes = np.empty(K.BLOCK_WORDS, np.uint64)
    K.transpose_planes(words, nw, p0, p0 + m, planes)
    flags = np.full(K.QB * ((m + chunk - 1) // chunk), 7, np.int64)
    K.plane_hits(planes, nw, m, a, th, flags)
    for j in range(K.QB):
        want = [int(dist[j, c:c + chunk].min() < th[j]) for c in range(0, m, chunk)]
        assert flags[j::K.QB].tolist() == want


def test_the_plane_loop_rule_is_a_function_of_the_tile():
    K = flat_module.K
    for nw in (1, 2, 3, 4, 5):
        for nt in (1, 4, K.SLICED_MIN_QUERIES - 1, K.SLICED_MIN_QUERIES, 64):
            want = bool(K.WIDE_POPCOUNT) and nw in (2, 4) and nt >= K.SLICED_MIN_QUERIES
            assert K.planes_pays(nt, nw) == want
            assert not (K.planes_pays(nt, nw) and K.sliced_pays(nt, nw))  # one loop per tile
