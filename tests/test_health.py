"""hashtool.health.code_health against its naive twin, and its collapse warning."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashtool.health import code_health

import naive


@settings(max_examples=60)
@given(st.integers(1, 40), st.sampled_from([8, 16, 24]), st.integers(1, 12), st.randoms(use_true_random=False))
def test_matches_naive(n, nbits, distinct, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**32 - 1))
    pool = rng.integers(0, 256, (distinct, nbits // 8), dtype=np.uint8)
    pool[0, 0] = 0  # some bits constant in small samples: the correlation must skip them
    codes = pool[rng.integers(0, distinct, n)]
    h = code_health(codes, nbits)
    share, corr, ndistinct, largest, top = naive.code_health(codes, nbits)
    assert h.images == n and h.bits == nbits
    assert h.ones_min == pytest.approx(min(share)) and h.ones_max == pytest.approx(max(share))
    assert h.ones_median == pytest.approx(float(np.median(share)))
    if corr is None:
        assert h.mean_abs_correlation is None
    else:
        assert h.mean_abs_correlation == pytest.approx(corr, abs=1e-9)
    assert (h.distinct_codes, h.largest_group) == (ndistinct, largest)
    assert h.top_codes_share == pytest.approx(top)


def test_collapse_is_warned_and_healthy_codes_are_not():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 256, (10, 4), dtype=np.uint8)
    collapsed = classes[rng.integers(0, 10, 100)]
    h = code_health(collapsed)
    assert h.warnings and "100% of images share 10 code(s)" in h.warnings[0] and "dups will group unrelated photos" in h.warnings[0]
    assert any(line.startswith("WARNING: 100% of images share") for line in h.lines())
    healthy = code_health(rng.integers(0, 256, (1000, 4), dtype=np.uint8))
    assert healthy.warnings == [] and healthy.distinct_codes == 1000
    dead = rng.integers(0, 256, (1000, 4), dtype=np.uint8)
    dead[:, 0] &= 0b11111100  # two bits always 0
    assert any("2 of 32 bits are (nearly) constant" in w for w in code_health(dead).warnings)
    assert code_health(collapsed[:5]).warnings == []  # too few images to judge
    assert code_health(np.zeros((0, 4), np.uint8)).lines() == ["no codes"]
