"""The augmentation ops of hashtool.train.data (the ``--augment`` language) against their naive twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import naive
from hashtool.errors import ArgumentError
from hashtool.train.data import augment_batch, contrast_images, cutout_images, flip_images, parse_augment, shift_images


@st.composite
def batches(draw, max_side=7):
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    x = draw(arrays(np.float32, (n, c, h, w), elements=st.floats(-4, 4, width=32)))
    fill = draw(arrays(np.float32, (c,), elements=st.floats(-2, 2, width=32)))
    return x, fill


def _t(a, dtype=None):
    return torch.from_numpy(np.asarray(a, dtype=dtype))


@given(b=batches(), p=st.integers(0, 4), data=st.data())
def test_shift_matches_naive(b, p, data):
    x, fill = b
    n = len(x)
    dy = data.draw(arrays(np.int64, (n,), elements=st.integers(0, 2 * p)))
    dx = data.draw(arrays(np.int64, (n,), elements=st.integers(0, 2 * p)))
    got = shift_images(_t(x), _t(dy), _t(dx), p, _t(fill)).numpy()
    assert np.allclose(got, naive.shift_images(x, dy, dx, p, fill), atol=1e-5)


@given(b=batches(), data=st.data())
def test_flip_matches_naive(b, data):
    x, _ = b
    flip = data.draw(arrays(np.bool_, (len(x),)))
    assert np.array_equal(flip_images(_t(x), _t(flip)).numpy(), naive.flip_images(x, flip))


@given(b=batches(), size=st.integers(1, 9), data=st.data())
def test_cutout_matches_naive(b, size, data):
    x, fill = b
    n, _, h, w = x.shape
    cy = data.draw(arrays(np.int64, (n,), elements=st.integers(0, h - 1)))
    cx = data.draw(arrays(np.int64, (n,), elements=st.integers(0, w - 1)))
    got = cutout_images(_t(x), _t(cy), _t(cx), size, _t(fill)).numpy()
    assert np.array_equal(got, naive.cutout_images(x, cy, cx, size, fill).astype(np.float32))


@given(b=batches(), data=st.data())
def test_contrast_matches_naive(b, data):
    x, _ = b
    factor = data.draw(arrays(np.float32, (len(x),), elements=st.floats(0, 2, width=32)))
    got = contrast_images(_t(x), _t(factor)).numpy()
    assert np.allclose(got, naive.contrast_images(x, factor), atol=1e-4)


@settings(max_examples=25)
@given(b=batches(), seed=st.integers(0, 2**31 - 1))
def test_augment_batch_is_the_ops_with_drawn_parameters(b, seed):
    """augment_batch draws, per op in order, its parameters from the generator and applies the op."""
    x, fill = b
    n, _, h, w = x.shape
    ops = parse_augment("shift:2,hflip,cutout:3,contrast:0.5")
    got = augment_batch(_t(x), ops, _t(fill), torch.Generator().manual_seed(seed)).numpy()
    g = torch.Generator().manual_seed(seed)
    dy, dx = torch.randint(0, 5, (n,), generator=g).numpy(), torch.randint(0, 5, (n,), generator=g).numpy()
    want = naive.shift_images(x, dy, dx, 2, fill)
    want = naive.flip_images(want, (torch.rand(n, generator=g) < 0.5).numpy())
    cy, cx = torch.randint(0, h, (n,), generator=g).numpy(), torch.randint(0, w, (n,), generator=g).numpy()
    want = naive.cutout_images(want, cy, cx, 3, fill)
    want = naive.contrast_images(want, 0.5 + torch.rand(n, generator=g).numpy().astype(np.float64))
    assert np.allclose(got, want, atol=1e-4)


def test_parse_augment_defaults_and_errors():
    assert parse_augment("shift,hflip,cutout,contrast") == [("shift", 2), ("hflip", 0), ("cutout", 8), ("contrast", 0.5)]
    assert parse_augment("none") == [] and parse_augment(None) == []
    for bad, word in (("cutout:0", "cutout"), ("cutout:x", "cutout"), ("contrast:1.5", "contrast"), ("contrast:a", "contrast"),
                      ("shift:17", "shift"), ("shift:1.5", "shift takes an integer"), ("hflip:1", "hflip takes no parameter"),
                      ("blur", "unknown")):
        with pytest.raises(ArgumentError, match=word):
            parse_augment(bad)
