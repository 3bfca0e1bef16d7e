"""hashtool.edits: every kind is seeded, never the identity, and does what its docstring says."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from hashtool import edits
from hashtool.errors import ArgumentError


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth, textured RGB image (edits such as blur must have something to change)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], axis=-1)
    noise = rng.integers(0, 40, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


sizes = st.tuples(st.integers(40, 300), st.integers(40, 300))


@pytest.mark.parametrize("kind", list(edits.EDITS))
def test_each_kind_is_seeded_rgb_and_changes_the_image(kind):
    img = _photo(160, 120)
    a = edits.apply_edit(img, kind, np.random.default_rng(5))
    b = edits.apply_edit(img, kind, np.random.default_rng(5))
    assert a.mode == "RGB"
    assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    same_size = a.size == img.size
    assert not same_size or not np.array_equal(np.asarray(a), np.asarray(img))


@given(sizes, st.integers(0, 2**32 - 1))
def test_geometry_of_the_geometric_kinds(size, seed):
    w, h = size
    img = _photo(w, h)
    rng = lambda: np.random.default_rng(seed)  # noqa: E731
    assert np.array_equal(np.asarray(edits.apply_edit(img, "mirror", rng())), np.asarray(img)[:, ::-1])
    turned = edits.apply_edit(img, "rot90", rng())
    assert turned.size == (h, w)
    arr = np.asarray(turned)
    assert np.array_equal(arr, np.rot90(np.asarray(img), 1)) or np.array_equal(arr, np.rot90(np.asarray(img), -1))
    cw, ch = edits.apply_edit(img, "crop25", rng()).size
    assert cw <= w and ch <= h and abs(cw * ch / (w * h) - 0.75) < 0.05 + 16 / min(w, h)
    cw, ch = edits.apply_edit(img, "crop5", rng()).size
    assert 0.9 * w - 1 <= cw <= w and 0.9 * h - 1 <= ch <= h
    lw, lh = edits.apply_edit(img, "letterbox", rng()).size
    assert (lw == w and lh > h) or (lh == h and lw > w)
    grey = np.asarray(edits.apply_edit(img, "grey", rng())).astype(int)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def test_parse_kinds_expands_groups_and_rejects_unknown_names():
    assert edits.parse_kinds("hard,mirror,jpeg") == edits.kinds("hard") + ("jpeg",)
    assert set(edits.kinds()) == set(edits.EDITS)
    assert set(edits.kinds("easy")) | set(edits.kinds("hard")) | set(edits.kinds("other")) == set(edits.EDITS)
    with pytest.raises(ArgumentError, match="unknown edit 'sharpen'"):
        edits.parse_kinds("easy,sharpen")


def test_random_edit_chains_distinct_kinds_from_the_choices():
    img = _photo(120, 90)
    for seed in range(20):
        out, picked = edits.random_edit(img, np.random.default_rng(seed), choices=("jpeg", "mirror", "grey"))
        assert 1 <= len(picked) <= 3 and len(set(picked)) == len(picked)
        assert set(picked) <= {"jpeg", "mirror", "grey"}
        assert out.mode == "RGB"
