"""Flat-border trimming ("trim-stretch"): the fast trim_box against its twin, and letterboxes undone."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import naive
from hashtool.files.images import TRIM_KEEP, TRIM_TOLERANCE, convert_image, image_trim_box, trim_box
from hashtool.preprocess import Preprocess


@st.composite
def bordered(draw):
    """A picture (random pixels, or flat with a few marks) inside random bars of random colours."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    kind = draw(st.sampled_from(["noise", "low-noise", "marks"]))
    if kind == "noise":
        inner = rng.integers(0, 256, (h, w, c))
    elif kind == "low-noise":  # spreads around the tolerance
        inner = 100 + rng.integers(0, TRIM_TOLERANCE + 3, (h, w, c))
    else:
        inner = np.full((h, w, c), int(rng.integers(0, 256)))
        inner[rng.integers(0, h, 3), rng.integers(0, w, 3)] = rng.integers(0, 256, c)
    img = inner
    for _ in range(draw(st.integers(0, 3))):  # nested frames: black bars around a white frame...
        t, b, l, r = (draw(st.integers(0, 12)) for _ in range(4))
        colour = rng.integers(0, 256, c)
        out = np.empty((img.shape[0] + t + b, img.shape[1] + l + r, c))
        out[:] = colour
        out[t:t + img.shape[0], l:l + img.shape[1]] = img
        img = out
    return img.astype(np.uint8)


@settings(max_examples=300, deadline=None)
@given(bordered())
def test_trim_box_equals_its_twin(arr):
    assert trim_box(arr) == naive.trim_box(arr, TRIM_TOLERANCE, TRIM_KEEP)
    if arr.shape[2] == 1:
        assert trim_box(arr[:, :, 0]) == trim_box(arr)


@settings(max_examples=300, deadline=None)
@given(bordered())
def test_trim_box_of_an_image_reads_strips_to_the_same_box(arr):
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    assert image_trim_box(img) == naive.trim_box(arr, TRIM_TOLERANCE, TRIM_KEEP)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 20), st.integers(0, 20), st.integers(0, 20), st.integers(0, 20))
def test_bars_of_any_colour_are_cut_to_the_picture(seed, t, b, l, r):
    rng = np.random.default_rng(seed)
    h, w = 40, 30
    inner = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    for edge in (inner[0], inner[-1], inner[:, 0], inner[:, -1]):  # every edge line spans 0..255: never flat
        edge[::2], edge[1::2] = 0, 255
    canvas = np.empty((h + t + b, w + l + r, 3), np.uint8)
    canvas[:] = rng.integers(0, 256, 3)
    canvas[t:t + h, l:l + w] = inner
    assert trim_box(canvas) == (l, t, l + w, t + h)


def test_letterboxed_copy_reaches_the_model_as_the_original():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    canvas = Image.new("RGB", (80, 140), (0, 0, 0))  # 4:3 photo in a 4:7 frame: bars top and bottom
    canvas.paste(photo, (0, 40))
    pp = Preprocess(32, 32, "RGB", "trim-stretch", (0.5,) * 3, (0.5,) * 3)
    np.testing.assert_array_equal(convert_image(canvas, pp), convert_image(photo, pp))
    stretch = Preprocess(32, 32, "RGB", "stretch", (0.5,) * 3, (0.5,) * 3)
    assert not np.array_equal(convert_image(canvas, stretch), convert_image(photo, stretch))


def test_blank_and_mostly_flat_images_are_kept_whole():
    blank = np.full((20, 30, 3), 7, np.uint8)
    assert trim_box(blank) == (0, 0, 30, 20)
    thin = np.zeros((100, 30), np.uint8)
    thin[50:52] = 255  # 2 rows of 100 would remain: under TRIM_KEEP, rows kept; columns are not flat
    assert trim_box(thin) == (0, 0, 30, 100)
