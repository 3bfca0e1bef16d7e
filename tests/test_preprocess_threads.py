import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hashtool.errors import ArgumentError
from hashtool.preprocess import Preprocess
from hashtool.threads import ENV_VAR, resolve_threads


@given(
    st.sampled_from(["L", "RGB"]).flatmap(
        lambda color: st.tuples(
            st.just(color),
            hnp.arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(5), st.just(4), st.just(1 if color == "L" else 3))),
        )
    )
)
def test_normalize_is_x_over_255_minus_mean_over_std(args):
    color, images = args
    c = images.shape[-1]
    mean, std = tuple(np.linspace(0.2, 0.6, c)), tuple(np.linspace(0.1, 0.3, c))
    pre = Preprocess(height=5, width=4, color=color, mean=mean, std=std)
    out = pre.normalize(images)
    assert out.shape == (images.shape[0], c, 5, 4) and out.dtype == np.float32
    for n in range(images.shape[0]):
        for ch in range(c):
            expected = (images[n, :, :, ch] / 255.0 - mean[ch]) / std[ch]
            np.testing.assert_allclose(out[n, ch], expected, rtol=1e-5, atol=1e-5)


def test_preprocess_round_trip_and_validation():
    pre = Preprocess(height=32, width=32, color="RGB", resize="center-crop", mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ArgumentError, match="mean and std"):
        Preprocess(height=8, width=8, color="RGB")
    with pytest.raises(ArgumentError, match="resize"):
        Preprocess(height=8, width=8, resize="squash")
    with pytest.raises(ArgumentError, match="positive"):
        Preprocess(height=8, width=8, std=(0.0,))
    with pytest.raises(ArgumentError, match="expected uint8"):
        Preprocess(height=8, width=8).normalize(np.zeros((1, 8, 8, 1), np.float32))


def test_threads_resolution(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_threads(3) == 3
    assert resolve_threads() >= 1
    monkeypatch.setenv(ENV_VAR, "5")
    assert resolve_threads() == 5 and resolve_threads(2) == 2
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ArgumentError, match=ENV_VAR):
        resolve_threads()
    with pytest.raises(ArgumentError):
        resolve_threads(-1)
