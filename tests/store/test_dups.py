"""store.dups.find_groups against the breadth-first twin in tests/naive.py, and its memory bound."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashtool.errors import ArgumentError
from hashtool.store.dups import find_groups

from naive import dup_groups


def _clustered(rng, n, distinct, nbytes=2, flip=0.1):
    centres = rng.integers(0, 256, (distinct, nbytes), dtype=np.uint8)
    codes = centres[rng.integers(0, distinct, n)]
    flips = rng.random((n, nbytes * 8)) < flip
    return codes ^ np.packbits(flips, axis=1, bitorder="little")


def _run(codes, ids, r, variants=None, **kw):
    res = find_groups(codes, ids, r, variants=variants, **kw)
    groups = list(res.groups)
    return res, groups


@settings(max_examples=80)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 8), st.booleans(), st.integers(1, 64),
       st.randoms(use_true_random=False))
def test_groups_match_naive(n, distinct, r, with_variants, budget, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**32 - 1))
    codes = _clustered(rng, n, distinct)
    ids = rng.permutation(1000)[:n].astype(np.int64)
    variants = _clustered(rng, n * 2, distinct).reshape(n, 2, 2) if with_variants else None
    expected, pairs = dup_groups(codes, ids, r, variants)
    res, groups = _run(codes, ids, r, variants, result_budget=budget)  # tiny budgets: many query blocks
    assert sorted((g.ids, g.distances, g.diameter) for g in groups) == expected
    assert all(g.diameter_exact and g.diameter_max == g.diameter for g in groups)
    assert res.n_groups == len(expected) and res.n_grouped == sum(len(g[0]) for g in expected)
    assert res.pairs == (None if with_variants else pairs)
    sizes = [(-len(g.ids), g.ids[0]) for g in groups]
    assert sizes == sorted(sizes)  # largest group first, then by first id


@settings(max_examples=40)
@given(st.integers(3, 60), st.integers(0, 10), st.booleans(), st.randoms(use_true_random=False))
def test_huge_group_bounds_hold(n, r, with_variants, rnd):
    """Past the exact limit the diameter is a true lower bound and diameter_max a true upper bound."""
    rng = np.random.default_rng(rnd.randint(0, 2**32 - 1))
    codes = _clustered(rng, n, 2, flip=0.2)
    ids = np.arange(n, dtype=np.int64)
    variants = _clustered(rng, n, 2).reshape(n, 1, 2) if with_variants else None
    expected, _ = dup_groups(codes, ids, r, variants)
    _, groups = _run(codes, ids, r, variants, exact_nodes=1)
    truth = {tuple(e[0]): e for e in expected}
    for g in groups:
        members, distances, diameter = truth[tuple(g.ids)]
        assert g.distances == distances
        assert g.diameter <= diameter <= g.diameter_max
        assert g.diameter_exact == (g.diameter == g.diameter_max)


def test_chain_has_diameter_above_radius():
    # a - b - c in a line, 2 bits apart each: a and c are 4 apart
    codes = np.packbits(np.array([[0] * 8, [1, 1] + [0] * 6, [1, 1, 1, 1] + [0] * 4], dtype=np.uint8), axis=1, bitorder="little")
    _, groups = _run(codes, [10, 11, 12], 2)
    assert [(g.ids, g.distances, g.diameter) for g in groups] == [([10, 11, 12], [0, 2, 4], 4)]


def test_bad_input_is_refused():
    with pytest.raises(ArgumentError, match="max-distance"):
        find_groups(np.zeros((2, 1), np.uint8), [0, 1], -1)
    with pytest.raises(ArgumentError, match="variants"):
        find_groups(np.zeros((2, 1), np.uint8), [0, 1], 1, variants=np.zeros((2, 1, 2), np.uint8))


def test_twenty_thousand_equal_codes_in_bounded_memory():
    """2e8 pairs among 20,000 equal codes: counted, never materialised; peak memory stays small."""
    script = textwrap.dedent("""
        import resource, numpy as np
        from hashtool.store.dups import find_groups
        rng = np.random.default_rng(0)
        codes = np.concatenate([np.full((20000, 8), 7, np.uint8), rng.integers(0, 256, (5000, 8), dtype=np.uint8)])
        ids = np.arange(len(codes))
        find_groups(codes[:50], ids[:50], 3)  # warm imports and kernels before the baseline
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        res = find_groups(codes, ids, 3)
        groups = list(res.groups)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(res.pairs, len(groups[0].ids), groups[0].diameter, (peak - base) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pairs, size, diameter, grown_mib = map(int, out.stdout.split())
    assert size == 20000 and diameter == 0
    assert pairs >= 20000 * 19999 // 2
    assert grown_mib < 100, f"memory grew by {grown_mib} MiB"
