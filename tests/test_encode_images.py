"""The image loader on every file of tests/data/images (see its README.md for what each one exercises)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashtool.encode import SUPPORTED_EXTENSIONS, find_images, load_image
from hashtool.errors import ImageError
from hashtool.preprocess import RESIZE_POLICIES, Preprocess

IMAGES = Path(__file__).parent / "data" / "images"
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")

LOADABLE = sorted(
    str(p.relative_to(IMAGES)) for p in find_images(IMAGES) if not p.relative_to(IMAGES).parts[0] == "broken"
)
BROKEN = {  # file -> words its reason must contain
    "broken/truncated.png": "truncated",
    "broken/truncated.jpg": "truncated",
    "broken/corrupt.png": "not an image",
    "broken/bad_pixels.png": "corrupt",
    "broken/not_an_image.png": "not an image",
    "broken/empty.jpg": "not an image",
    "broken/ppm_named.png": "not an image",
    "broken/bomb_header.png": "decompression bomb",
}

L28 = Preprocess(28, 28, "L")
RGB32 = Preprocess(32, 32, "RGB", mean=(0.5,) * 3, std=(0.5,) * 3)


def native(path: str, color: str) -> Preprocess:
    """A preprocess at the image's own (displayed) size: no resampling, so pixels can be checked exactly."""
    w, h = Image.open(IMAGES / path).size
    c = 1 if color == "L" else 3
    return Preprocess(h, w, color, mean=(0.5,) * c, std=(0.5,) * c)


def test_image_set_is_complete_and_small():
    assert len(LOADABLE) == 20 and len(find_images(IMAGES)) == 28
    total = sum(p.stat().st_size for p in IMAGES.rglob("*") if p.is_file())
    assert total < 200_000


@pytest.mark.parametrize("rel", LOADABLE)
@pytest.mark.parametrize("resize", RESIZE_POLICIES)
def test_every_loadable_file_loads_in_both_colour_modes(rel, resize):
    for base in (L28, RGB32):
        pp = Preprocess(base.height, base.width, base.color, resize, base.mean, base.std)
        arr = load_image(IMAGES / rel, pp)
        assert arr.dtype == np.uint8 and arr.shape == pp.shape_hwc and arr.flags.c_contiguous
        assert arr.max() > arr.min(), "a real picture is not one flat colour"


@pytest.mark.parametrize("rel,reason", sorted(BROKEN.items()))
def test_broken_files_raise_image_error_naming_path_and_reason(rel, reason):
    with pytest.raises(ImageError) as info:
        load_image(IMAGES / rel, L28)
    msg = str(info.value)
    assert msg.startswith(str(IMAGES / rel)) and reason in msg


def test_appledouble_missing_and_folder_are_image_errors():
    for path, reason in ((IMAGES / "._drawing.png", "not an image"), (IMAGES / "nope.png", "no such file"),
                         (IMAGES / "fmnist", "folder")):
        with pytest.raises(ImageError, match=reason):
            load_image(path, L28)


def test_own_pixel_limit_refuses_before_decoding():
    with pytest.raises(ImageError, match="decompression-bomb guard"):
        load_image(IMAGES / "formats/drawing.png", L28, max_pixels=48 * 40 - 1)
    assert load_image(IMAGES / "formats/drawing.png", L28, max_pixels=48 * 40).shape == (28, 28, 1)


@pytest.mark.skipif(not FMNIST.is_file(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_pngs_are_pixel_identical_to_the_dataset():
    with gzip.open(FMNIST, "rb") as f:
        _, _, rows, cols = struct.unpack(">IIII", f.read(16))
        data = np.frombuffer(f.read(10 * rows * cols), dtype=np.uint8).reshape(10, rows, cols)
    for rel, i in (("fmnist/shoes/ankle_boot_0.png", 0), ("fmnist/trousers/deeper/trouser_3.png", 3), ("fmnist/bags/bag_8.png", 8)):
        np.testing.assert_array_equal(load_image(IMAGES / rel, L28)[:, :, 0], data[i])


def test_extension_does_not_decide_the_format():
    arr = load_image(IMAGES / "formats/png_named.jpg", native("formats/png_named.jpg", "RGB"))
    ref = np.asarray(Image.open(IMAGES / "formats/png_named.jpg").convert("RGB"))
    np.testing.assert_array_equal(arr, ref)  # PNG is lossless: exact


def test_gif_uses_the_first_frame():
    arr = load_image(IMAGES / "formats/animated.gif", native("formats/animated.gif", "RGB"))
    yellow = np.all(arr == np.array([255, 255, 0], dtype=np.uint8), axis=2)
    assert yellow.mean() < 0.5  # frame 1 is entirely yellow; frame 0 is the drawing


def test_exif_orientation_is_applied():
    arr = load_image(IMAGES / "formats/exif_rotated.jpg", Preprocess(40, 20, "L"))  # displayed 20 wide, 40 high
    assert arr.shape == (40, 20, 1)
    assert arr[:8].mean() > 200 and arr[12:].mean() < 30  # the band stored on the left is now on top
    with pytest.raises(AssertionError):  # without orientation the band would be on the left: check the check
        raw = np.asarray(Image.open(IMAGES / "formats/exif_rotated.jpg"))
        assert raw[:8].mean() > 200 and raw[12:].mean() < 30


@pytest.mark.parametrize("rel", ["modes/rgba.png", "modes/gray_alpha_la.png"])
def test_alpha_is_composited_on_black(rel):
    img = Image.open(IMAGES / rel)
    rgba = np.asarray(img.convert("RGBA")).astype(np.float64)
    expected = rgba[:, :, :3] * rgba[:, :, 3:4] / 255.0
    arr = load_image(IMAGES / rel, native(rel, "RGB")).astype(np.float64)
    assert np.abs(arr - expected).max() <= 1.0
    assert (arr[rgba[:, :, 3] == 0] == 0).all()


def test_transparent_palette_index_is_black():
    rel = "modes/palette_transparent.png"
    img = Image.open(IMAGES / rel)
    transparent = np.asarray(img) == img.info["transparency"]
    assert transparent.any() and not transparent.all()
    arr = load_image(IMAGES / rel, native(rel, "RGB"))
    assert (arr[transparent] == 0).all() and arr[~transparent].max() > 0


def test_16_bit_keeps_the_high_byte():
    rel = "modes/gray16.png"
    raw = np.asarray(Image.open(IMAGES / rel)).astype(np.int64)
    assert raw.max() > 255  # really 16-bit data
    arr = load_image(IMAGES / rel, native(rel, "L"))[:, :, 0]
    np.testing.assert_array_equal(arr, (raw >> 8).astype(np.uint8))


def test_one_bit_and_cmyk():
    arr = load_image(IMAGES / "modes/bilevel_1bit.png", native("modes/bilevel_1bit.png", "L"))
    assert set(np.unique(arr)) == {0, 255}
    rel = "modes/cmyk.jpg"
    assert Image.open(IMAGES / rel).mode == "CMYK"
    arr = load_image(IMAGES / rel, native(rel, "RGB"))
    np.testing.assert_array_equal(arr, np.asarray(Image.open(IMAGES / rel).convert("RGB")))


def test_resize_policies():
    rel = "formats/drawing.png"  # 48 wide x 40 high
    src = Image.open(IMAGES / rel).convert("RGB")
    bil = Image.Resampling.BILINEAR
    stretch = load_image(IMAGES / rel, Preprocess(28, 28, "RGB", "stretch", (0.5,) * 3, (0.5,) * 3))
    np.testing.assert_array_equal(stretch, np.asarray(src.resize((28, 28), bil)))
    # fit-pad: 48x40 -> 28x23 (40 * 28 / 48 = 23.3), centred: 2 black rows on top, 3 at the bottom
    fit = load_image(IMAGES / rel, Preprocess(28, 28, "RGB", "fit-pad", (0.5,) * 3, (0.5,) * 3))
    assert (fit[:2] == 0).all() and (fit[25:] == 0).all()
    np.testing.assert_array_equal(fit[2:25], np.asarray(src.resize((28, 23), bil)))
    # center-crop: 48x40 -> 34x28 (scale 0.7), crop columns 3..30
    crop = load_image(IMAGES / rel, Preprocess(28, 28, "RGB", "center-crop", (0.5,) * 3, (0.5,) * 3))
    np.testing.assert_array_equal(crop, np.asarray(src.resize((34, 28), bil).crop((3, 0, 31, 28))))


def test_find_images_skips_hidden_and_other_extensions():
    found = find_images(IMAGES)
    names = {p.name for p in found}
    assert found == sorted(found)
    assert ".hidden.png" not in names and "._drawing.png" not in names and "notes.txt" not in names
    assert all(p.suffix.lower() in SUPPORTED_EXTENSIONS for p in found)
    assert "trouser_3.png" in names  # two levels deep
    hidden = {p.name for p in find_images(IMAGES, include_hidden=True)}
    assert {".hidden.png", "._drawing.png"} <= hidden
    assert find_images(IMAGES, recursive=False) == []
    assert [p.name for p in find_images(IMAGES / "fmnist/trousers", recursive=False)] == ["trouser_2.png"]
    with pytest.raises(ImageError, match="not a folder"):
        find_images(IMAGES / "notes.txt")
