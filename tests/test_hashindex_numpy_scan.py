"""The numpy scan that answers small searches (engine="numpy", or tiny calls), and the rule that picks it."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashtool import codes as hcodes
from hashtool.hashindex import FlatIndex, _numpy_scan

from naive import knn_search, range_search


@st.composite
def problems(draw):
    nbits = 8 * draw(st.integers(1, 20))
    n = draw(st.integers(0, 300))
    distinct = draw(st.integers(1, 6))  # few distinct codes: heavy ties
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = rng.integers(0, 256, (distinct, nbits // 8), dtype=np.uint8)
    db = pool[rng.integers(0, distinct, n)] if n else np.zeros((0, nbits // 8), np.uint8)
    q = np.concatenate([pool[:1], rng.integers(0, 256, (draw(st.integers(0, 4)), nbits // 8), dtype=np.uint8)])
    return nbits, db, q, draw(st.integers(1, n + 5)), draw(st.integers(0, nbits))


@settings(max_examples=100)
@given(problems())
def test_numpy_scan_equals_naive(problem):
    nbits, db, q, k, r = problem
    nw = hcodes.words_per_code(nbits)
    words = hcodes.to_words(db, nbits).reshape(-1) if len(db) else np.zeros(0, np.uint64)
    qw = hcodes.to_words(q, nbits).reshape(-1)
    ids = np.arange(len(db), dtype=np.int64)  # positions are ids here (rows are stored sorted by id)
    d, p = _numpy_scan.knn(words, nw, nbits, len(db), qw, k)
    nd, ni = knn_search(q, db, ids, k)
    np.testing.assert_array_equal(d, nd)
    np.testing.assert_array_equal(p, ni)
    lims, rd, rp = _numpy_scan.range_search(words, nw, len(db), qw, r)
    nl, nrd, nrp = range_search(q, db, ids, r)
    np.testing.assert_array_equal(lims, nl)
    np.testing.assert_array_equal(rd, nrd)
    np.testing.assert_array_equal(rp, nrp)


def test_fresh_process_answers_small_searches_without_numba(tmp_path):
    rng = np.random.default_rng(1)
    db = rng.integers(0, 256, (20_000, 8), dtype=np.uint8)
    db[100:200] = db[0]  # ties
    ids = rng.permutation(10**6)[:20_000].astype(np.int64)
    for cls in ("FlatIndex", "MIHIndex"):
        from hashtool import hashindex

        index = getattr(hashindex, cls)(64)
        index.add(db, ids)
        index.save(tmp_path / f"{cls}.hidx")
    ref = FlatIndex(64)
    ref.add(db, ids)
    d, i = ref.search(db[:3], 150)  # the kernels (loaded in this process by conftest)
    lims, rd, ri = ref.range_search(db[:3], 20)
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from hashtool.hashindex import load_index
        out = {{}}
        q = np.load({str(tmp_path / "q.npy")!r})
        for cls in ("FlatIndex", "MIHIndex"):
            idx = load_index({str(tmp_path)!r} + "/" + cls + ".hidx", engine="numpy")
            d, i = idx.search(q, 150)
            lims, rd, ri = idx.range_search(q, 20)
            out[cls] = [d.tolist(), i.tolist(), lims.tolist(), rd.tolist(), ri.tolist()]
        out["numba"] = "numba" in sys.modules
        print(json.dumps(out))
    """)
    np.save(tmp_path / "q.npy", db[:3])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["numba"] is False
    for cls in ("FlatIndex", "MIHIndex"):
        assert out[cls] == [d.tolist(), i.tolist(), lims.tolist(), rd.tolist(), ri.tolist()]


def test_the_engine_is_a_function_of_the_call_only():
    """Same arguments, same answer, however many calls came before (no process-wide counters)."""
    from hashtool.errors import ArgumentError

    big = _numpy_scan.MAX_WORDS
    first = [_numpy_scan.use_numpy(e, 1, big // 2, 1) for e in _numpy_scan.ENGINES]
    for _ in range(50):
        assert [_numpy_scan.use_numpy(e, 1, big // 2, 1) for e in _numpy_scan.ENGINES] == first
    assert first == [False, True]  # numba: never; numpy: small enough
    assert _numpy_scan.use_numpy("numpy", 1, big + 1, 1) is False  # too big even when asked for
    assert _numpy_scan.use_numpy("numpy", 2, big // 2, 1) is True
    assert _numpy_scan.use_numpy("numpy", 2, big // 2 + 1, 1) is False
    assert _numpy_scan.use_numpy("numba", 1, 1, 1) is False
    from hashtool.hashindex import MIHIndex

    for cls in (FlatIndex, MIHIndex):
        with pytest.raises(ArgumentError, match="engine must be one of"):
            cls(64, engine="gpu")
