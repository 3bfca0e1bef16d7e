"""The JPEG draft decoder against the full decoder: same orientation, nearly the same pixels, the
smallest sufficient DCT scale, and one read whose sha256 is that of the bytes decoded."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hashtool.files import images as images_mod
from hashtool.files import load_image, read_image
from hashtool.files.images import draft_size
from hashtool.preprocess import Preprocess

DATA = Path(__file__).parent.parent / "data" / "images"


def asymmetric(w=480, h=240) -> Image.Image:
    """A smooth RGB picture whose orientation is unambiguous: a bright block in the top-left corner."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=-1).astype(np.uint8)
    arr[: h // 4, : w // 6] = 255
    return Image.fromarray(arr, "RGB")


def jpeg_with_orientation(path: Path, orientation: int) -> Path:
    img = asymmetric()
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def pp(h, w, color="RGB", resize="stretch") -> Preprocess:
    c = 1 if color == "L" else 3
    return Preprocess(h, w, color, resize, (0.5,) * c, (0.5,) * c)


def test_exif_test_image_same_orientation_draft_and_full():
    path = DATA / "formats" / "exif_rotated.jpg"  # stored 40x20, orientation 6: displayed 20 wide, 40 high
    target = pp(8, 4, "L")
    draft, full = load_image(path, target), load_image(path, target, draft=False)
    assert draft.shape == full.shape == (8, 4, 1)
    # the bright band lands on the same side (on top when upright)
    assert np.argmax(draft[:, :, 0].mean(axis=1)) == np.argmax(full[:, :, 0].mean(axis=1)) == 0
    assert np.abs(draft.astype(int) - full.astype(int)).mean() < 12


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("resize", ["stretch", "fit-pad", "center-crop"])
def test_every_orientation_draft_matches_full(tmp_path, orientation, resize):
    path = jpeg_with_orientation(tmp_path / f"o{orientation}.jpg", orientation)
    target = pp(24, 32, "RGB", resize)
    draft, full = load_image(path, target), load_image(path, target, draft=False)
    assert draft.shape == full.shape == (24, 32, 3)
    # orientation: the bright corner block is found in the same quadrant
    def corner(a):
        g = a.astype(float).mean(axis=2)
        return tuple(np.unravel_index(np.argmax(g), g.shape) >= np.array(g.shape) // 2)

    assert corner(draft) == corner(full)
    assert np.abs(draft.astype(int) - full.astype(int)).mean() < 6


def test_draft_actually_decodes_smaller(tmp_path, monkeypatch):
    path = jpeg_with_orientation(tmp_path / "o6.jpg", 6)  # stored 480x240, displayed 240x480
    sizes = []
    real = images_mod.convert_image

    def spy(img, preprocess, *, name="<image>"):
        sizes.append(img.size)
        return real(img, preprocess, name=name)

    monkeypatch.setattr(images_mod, "convert_image", spy)
    load_image(path, pp(56, 28))  # displayed target 28 wide, 56 high: stored needs >= 56 x 28
    load_image(path, pp(56, 28), draft=False)
    # 1/8 scale (60x30 stored, 30x60 upright: the smallest covering 28x56); without the axis swap it
    # would have been 1/4 (120x60). Then the full decode.
    assert sizes == [(30, 60), (240, 480)]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6000), st.integers(1, 6000), st.integers(1, 512), st.integers(1, 512),
       st.sampled_from(["stretch", "fit-pad", "center-crop"]), st.integers(1, 8))
def test_draft_size_is_enough_for_the_resize(w, h, tw, th, resize, orientation):
    """Naive twin: the size the resize step samples from, for the upright image, must fit in the draft."""
    need_w, need_h = draft_size((w, h), pp(th, tw, "L", resize), orientation)
    swap = orientation >= 5
    dw, dh = (h, w) if swap else (w, h)  # displayed
    if resize == "fit-pad":
        s = min(tw / dw, th / dh)
        used = (max(1, min(tw, round(dw * s))), max(1, min(th, round(dh * s))))
    elif resize == "center-crop":
        s = max(tw / dw, th / dh)
        used = (max(tw, round(dw * s)), max(th, round(dh * s)))
    else:
        used = (tw, th)
    # what Pillow's JpegImageFile.draft does with the size asked for: one power-of-two scale for both axes
    scale = min(w // need_w, h // need_h)
    s = next((f for f in (8, 4, 2) if scale >= f), 1)
    drafted = (-(-w // s), -(-h // s))
    shown = (drafted[1], drafted[0]) if swap else drafted
    # the draft covers what the resize samples from (an upscale cannot be covered by any draft)
    assert shown[0] >= min(used[0], dw) and shown[1] >= min(used[1], dh)


def test_read_image_hashes_the_bytes_it_decoded(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(path)
    before = path.read_bytes()
    real = images_mod.read_file_bytes

    def read_then_change(p, *a, **k):
        data = real(p, *a, **k)
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(path)  # the file changes right after the read
        return data

    monkeypatch.setattr(images_mod, "read_file_bytes", read_then_change)
    loaded = read_image(path, pp(8, 8, "L"))
    assert loaded.sha256 == hashlib.sha256(before).hexdigest() != hashlib.sha256(path.read_bytes()).hexdigest()
    assert (loaded.array == 7).all()  # the pixels of the bytes hashed, not of the new file


def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    from hashtool.errors import ImageError

    with pytest.raises(ImageError, match="not a regular file"):
        read_image(fifo, pp(8, 8, "L"))


def test_png_bytes_roundtrip_unchanged_by_draft():
    """Draft mode only applies to JPEG: other formats decode identically either way."""
    for rel in ("formats/drawing.png", "formats/drawing.webp", "modes/gray16.png"):
        a = load_image(DATA / rel, pp(16, 16))
        b = load_image(DATA / rel, pp(16, 16), draft=False)
        np.testing.assert_array_equal(a, b)
