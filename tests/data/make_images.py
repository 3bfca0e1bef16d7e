"""Regenerate the tiny committed image set in tests/data/images/ (deterministic; see its README.md).

Run from the repository root:  python tests/data/make_images.py
Needs numpy and pillow, and the Debian package dataset-fashion-mnist for the real photographs
(/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz). Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
OUT = HERE / "images"
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
# test-set indices of the Fashion-MNIST samples written (0: ankle boot, 1: pullover, 2/3: trouser, 8: bag)
FMNIST_PICKS = {"fmnist/shoes/ankle_boot_0.png": 0, "fmnist/tops/pullover_1.png": 1,
                "fmnist/trousers/trouser_2.png": 2, "fmnist/trousers/deeper/trouser_3.png": 3,
                "fmnist/bags/bag_8.png": 8}


def fashion_mnist(n: int) -> np.ndarray:
    with gzip.open(FMNIST, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, "not an IDX image file"
        return np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, rows, cols)


def drawing(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """A simple drawing with structure in every channel (so colour conversions are visible)."""
    img = Image.new("RGB", (w, h), (20, 30, 60))
    d = ImageDraw.Draw(img)
    d.ellipse((w * 0.1, h * 0.1, w * 0.6, h * 0.7), fill=(230, 60, 40))
    d.rectangle((w * 0.5, h * 0.4, w * 0.9, h * 0.9), fill=(40, 200, 90))
    d.line((0, h - 1, w - 1, 0), fill=(250, 250, 250), width=max(1, w // 20))
    return img.convert(mode)


def photo_like(w: int, h: int, seed: int) -> Image.Image:
    """Smooth gradients plus noise: compresses like a photograph (JPEG has many scans/blocks)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 64], axis=2)
    arr = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def save(img: Image.Image, rel: str, **kw) -> Path:
    p = OUT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p, **kw)
    return p


def write_bytes(rel: str, data: bytes) -> Path:
    p = OUT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height 8-bit grey pixels, followed by an empty IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT / "fmnist", ignore_errors=True)
        for sub in ("formats", "modes", "broken"):
            shutil.rmtree(OUT / sub, ignore_errors=True)
        for p in OUT.glob("*"):
            if p.is_file() and p.name != "README.md":
                p.unlink()
            elif p.is_file() and p.name.startswith("."):
                p.unlink()
    OUT.mkdir(parents=True, exist_ok=True)

    # real images, nested folders
    samples = fashion_mnist(10)
    for rel, i in FMNIST_PICKS.items():
        save(Image.fromarray(samples[i], "L"), rel)

    # every allowed format
    save(drawing(48, 40), "formats/drawing.png")
    save(photo_like(64, 48, 1), "formats/photo.jpg", quality=85)
    save(drawing(30, 20), "formats/drawing.bmp")
    frame0 = drawing(32, 32).convert("P", palette=Image.Palette.ADAPTIVE)
    frame1 = Image.new("RGB", (32, 32), (255, 255, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    save(frame0, "formats/animated.gif", save_all=True, append_images=[frame1], duration=100, loop=0)
    save(drawing(40, 40), "formats/drawing.webp", lossless=True)
    save(drawing(36, 28), "formats/drawing.tiff", compression="tiff_lzw")
    write_bytes("formats/png_named.jpg", encoded(drawing(24, 24), "PNG"))  # decoded format wins
    # EXIF orientation 6 ("rotate 90 CW to display"): stored 40 wide x 20 high, displayed 20 x 40.
    rot = Image.new("L", (40, 20), 0)
    ImageDraw.Draw(rot).rectangle((0, 0, 9, 19), fill=255)  # bright band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    save(rot, "formats/exif_rotated.jpg", exif=exif.tobytes(), quality=95)

    # odd modes
    p_img = drawing(32, 24).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save(p_img, "modes/palette_transparent.png", transparency=0)
    la = Image.merge("LA", (drawing(32, 24, "L"), Image.linear_gradient("L").resize((32, 24))))
    save(la, "modes/gray_alpha_la.png")
    rgba = drawing(32, 24).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").rotate(90).resize((32, 24)))
    save(rgba, "modes/rgba.png")
    save(drawing(32, 24).convert("CMYK"), "modes/cmyk.jpg", quality=90)
    g16 = (np.linspace(0, 65535, 32 * 24).reshape(24, 32)).astype(np.uint16)
    save(Image.fromarray(g16), "modes/gray16.png")
    save(drawing(32, 24, "L").convert("1"), "modes/bilevel_1bit.png")
    save(drawing(32, 24, "L"), "modes/gray.tiff")

    # broken files
    good_png = encoded(photo_like(40, 40, 2), "PNG")
    good_jpg = encoded(photo_like(64, 64, 3), "JPEG", quality=90)
    write_bytes("broken/truncated.png", good_png[: len(good_png) // 2])
    write_bytes("broken/truncated.jpg", good_jpg[: len(good_jpg) // 2])
    rng = np.random.default_rng(7)
    write_bytes("broken/corrupt.png", good_png[:33] + rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
    write_bytes("broken/not_an_image.png", b"This is a text file with an image extension.\n" * 4)
    write_bytes("broken/empty.jpg", b"")
    write_bytes("broken/ppm_named.png", encoded(drawing(8, 8), "PPM"))  # PPM: not in the allowlist
    # valid header, damaged compressed pixel data (IDAT payload bytes inverted)
    idat = good_png.index(b"IDAT") + 4
    bad = bytearray(good_png)
    for k in range(idat + 10, idat + 60):
        bad[k] ^= 0xFF
    write_bytes("broken/bad_pixels.png", bytes(bad))
    # decompression bomb: a header claiming 100000 x 100000 pixels (10 gigapixels), a few bytes of data
    write_bytes("broken/bomb_header.png", png_header_only(100_000, 100_000))

    # files folder walking must skip (hidden, AppleDouble) or ignore (extension)
    save(drawing(16, 16), ".hidden.png")
    write_bytes("._drawing.png", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    write_bytes("notes.txt", b"not an image, and no image extension\n")


if __name__ == "__main__":
    main()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in OUT.rglob('*') if p.is_file())} files, {total / 1024:.1f} KiB, under {OUT}")
