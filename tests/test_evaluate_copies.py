"""Copy-retrieval metrics against their naive twins."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from naive import tie_aware_hit

from hashtool.errors import ArgumentError
from hashtool.evaluate import radius_for_recall, tie_aware_hits


@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_tie_aware_hits_match_the_enumeration_of_tied_orders(nq, n, seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 3, size=(nq, n))  # few values: many ties
    target = rng.integers(0, n, size=nq)
    valid = rng.random((nq, n)) < 0.7
    for v in (None, valid):
        got = tie_aware_hits(d, target, ks=(1, 2, 5), valid=v)
        for i in range(nq):
            for k in (1, 2, 5):
                want = tie_aware_hit(d[i], target[i], k, None if v is None else v[i])
                assert got[f"top{k}"][i] == pytest.approx(float(want))


def test_radius_for_recall_is_the_inclusive_quantile():
    d = np.array([5, 1, 3, 3, 9, 2, 7, 4, 6, 8])
    assert radius_for_recall(d, 0.5) == 4
    assert radius_for_recall(d, 1.0) == 9
    assert (d <= radius_for_recall(d, 0.95)).mean() >= 0.95
    with pytest.raises(ArgumentError):
        radius_for_recall(d, 0.0)
