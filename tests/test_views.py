"""The contrastive view ops (hashtool.train.views, in the --augment language) against their slow twins."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings, strategies as st  # noqa: E402

import naive  # noqa: E402
from hashtool.errors import ArgumentError  # noqa: E402
from hashtool.train.data import augment_batch, parse_augment  # noqa: E402
from hashtool.train import views  # noqa: E402

sizes = st.tuples(st.integers(1, 4), st.integers(1, 2), st.integers(3, 9), st.integers(3, 9))
fills = st.floats(-1.0, 0.0)


def _batch(shape, seed):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@settings(max_examples=25)
@given(shape=sizes, seed=st.integers(0, 2**31), scale=st.floats(0.05, 1.0), degrees=st.floats(0.0, 180.0), fill=fills)
def test_crops_and_rotations_equal_the_pixel_loop(shape, seed, scale, degrees, fill):
    x = _batch(shape, seed)
    n, c, h, w = shape
    f = torch.full((c,), fill)
    g = torch.Generator().manual_seed(seed)
    for theta in (views.crop_thetas(n, scale, h, w, g), views.rotation_thetas(n, degrees, h, w, g)):
        out = views.warp(x, theta, f)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert np.allclose(out.numpy(), naive.affine_warp(x.numpy(), theta.numpy(), f.numpy()), atol=1e-4)


@settings(max_examples=25)
@given(shape=sizes, seed=st.integers(0, 2**31), scale=st.floats(0.05, 1.0))
def test_crops_lie_inside_the_image_and_keep_its_aspect_range(shape, seed, scale):
    n, _, h, w = shape
    t = views.crop_thetas(n, scale, h, w, torch.Generator().manual_seed(seed)).double()
    fw, fh, cx, cy = t[:, 0, 0], t[:, 1, 1], t[:, 0, 2], t[:, 1, 2]
    assert (t[:, 0, 1] == 0).all() and (t[:, 1, 0] == 0).all()
    assert ((fw > 0) & (fw <= 1) & (fh > 0) & (fh <= 1)).all()
    assert ((cx.abs() <= 1 - fw + 1e-6) & (cy.abs() <= 1 - fh + 1e-6)).all()  # never reads outside the image
    area = fw * fh
    assert (area >= min(scale, 1.0) * 0.5 - 1e-6).all() and (area <= 1 + 1e-6).all()


def test_rotation_of_a_constant_image_brings_black_into_the_corners_only():
    x = torch.ones(8, 1, 15, 15)
    g = torch.Generator().manual_seed(0)
    out = views.warp(x, views.rotation_thetas(8, 45.0, 15, 15, g), torch.tensor([-1.0]))
    assert torch.allclose(out[:, :, 5:10, 5:10], torch.ones(8, 1, 5, 5), atol=1e-5)
    assert (out < 1 - 1e-3).any() and (out >= -1 - 1e-5).all()
    same = views.warp(x, views.rotation_thetas(8, 0.0, 15, 15, g), torch.tensor([-1.0]))
    assert torch.allclose(same, x, atol=1e-6)  # a 0 degree rotation is the identity


@settings(max_examples=25)
@given(shape=sizes, seed=st.integers(0, 2**31), amount=st.floats(0.0, 0.9), fill=fills)
def test_jitter_equals_the_per_image_loop(shape, seed, amount, fill):
    x = _batch(shape, seed)
    f = torch.full((shape[1],), fill)
    b, c = views.jitter_factors(shape[0], amount, torch.Generator().manual_seed(seed))
    assert ((b >= 1 - amount - 1e-6) & (b <= 1 + amount + 1e-6)).all() and ((c >= 1 - amount - 1e-6) & (c <= 1 + amount + 1e-6)).all()
    out = views.jitter(x, b, c, f)
    assert out.shape == x.shape
    assert np.allclose(out.numpy(), naive.jitter(x.numpy(), b.numpy(), c.numpy(), f.numpy()), atol=1e-4)


@settings(max_examples=25)
@given(shape=sizes, seed=st.integers(0, 2**31), prob=st.floats(0.0, 1.0), fill=fills)
def test_erase_equals_the_per_image_loop_and_fills_black(shape, seed, prob, fill):
    x = _batch(shape, seed)
    n, c, h, w = shape
    f = torch.full((c,), fill)
    boxes = views.erase_boxes(n, prob, h, w, torch.Generator().manual_seed(seed))
    top, left, bh, bw = boxes.T
    assert ((top >= 0) & (left >= 0) & (top + bh <= h) & (left + bw <= w) & (bw >= 1)).all()
    if prob == 0.0:
        assert (bh == 0).all()
    if prob == 1.0:
        assert (bh >= 1).all()
    out = views.erase(x, boxes, f)
    assert np.array_equal(out.numpy(), naive.erase(x.numpy(), boxes.numpy(), f.numpy()).astype(np.float32))
    assert int((out == fill).sum()) >= int((bh * bw).sum()) * c


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31))
def test_the_augment_language_is_deterministic_under_a_seeded_generator(seed):
    ops = parse_augment("crop:0.3,hflip,rotate:20,jitter:0.5,erase:0.7,shift:1")
    x = _batch((6, 1, 12, 12), 0)
    fill = torch.tensor([-1.0])
    a = augment_batch(x, ops, fill, torch.Generator().manual_seed(seed))
    b = augment_batch(x, ops, fill, torch.Generator().manual_seed(seed))
    c = augment_batch(x, ops, fill, torch.Generator().manual_seed(seed + 1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_view_ops_parse_with_defaults_and_refuse_bad_values():
    assert parse_augment("crop,rotate,jitter,erase") == [("crop", 0.5), ("rotate", 15.0), ("jitter", 0.4), ("erase", 0.5)]
    assert parse_augment("crop:0.3, rotate:5") == [("crop", 0.3), ("rotate", 5.0)]
    for bad, words in (("crop:0", "crop must be in"), ("rotate:x", "rotate takes a number"), ("jitter:1.5", "jitter must be in"),
                       ("erase:-1", "erase must be in"), ("blur", "unknown augmentation")):
        with pytest.raises(ArgumentError, match=words):
            parse_augment(bad)
