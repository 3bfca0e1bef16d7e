"""A corpus of hostile inputs, generated small, through a real build with the bundled encoder: every
entry the walk sees ends up indexed, reported or ignored (never silently dropped), nothing hangs
(a FIFO among the images), nothing crashes."""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashtool.cli._common import encode_files_fn, open_encoder
from hashtool.files import SUPPORTED_EXTENSIONS
from hashtool.store import build as build_mod
from hashtool.store import default_encoder_path
from hashtool.store.build import EncoderInfo, build
from hashtool.store.store import IndexStore

RNG = np.random.default_rng(11)


def img_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(w=40, h=30) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(w=100_000, h=100_000) -> bytes:
    """A valid PNG header announcing 10 gigapixels, with a tiny (wrong) data stream."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def frames(fmt, **kw) -> bytes:
    a, b = rgb(20, 20), Image.new("RGB", (20, 20), (255, 255, 0))
    return img_bytes(a, fmt, save_all=True, append_images=[b], **kw)


# name -> (bytes, expected outcome: "ok" indexed, "fail" reported, "ignore" not an image extension)
def corpus() -> dict[str, tuple[bytes, str]]:
    jpg, png, webp, gif = (img_bytes(rgb(), f) for f in ("JPEG", "PNG", "WEBP", "GIF"))
    c = {
        "empty.jpg": (b"", "fail"), "empty.png": (b"", "fail"), "empty.gif": (b"", "fail"), "empty.webp": (b"", "fail"),
        "trunc.jpg": (jpg[: len(jpg) // 2], "fail"), "trunc.png": (png[: len(png) // 2], "fail"),
        "trunc.webp": (webp[: len(webp) // 2], "fail"), "trunc.gif": (gif[: len(gif) // 2], "fail"),
        "page.jpg": (b"<!doctype html><html><body>404 not found</body></html>", "fail"),
        "text.png": (b"just some text\n", "fail"),
        "one.png": (img_bytes(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "ok"),
        "one.jpg": (img_bytes(Image.new("RGB", (1, 1), (9, 9, 9)), "JPEG"), "ok"),
        "tall.png": (img_bytes(Image.new("L", (1, 50_000), 128), "PNG"), "ok"),
        "wide.png": (img_bytes(Image.new("L", (50_000, 1), 128), "PNG"), "ok"),
        "bomb.png": (bomb_png(), "fail"),
        "gray16.png": (img_bytes(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), "PNG"), "ok"),
        "gray16.tif": (img_bytes(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), "TIFF"), "ok"),
        "cmyk.jpg": (img_bytes(rgb().convert("CMYK"), "JPEG"), "ok"),
        "cmyk.tiff": (img_bytes(rgb().convert("CMYK"), "TIFF"), "ok"),
        "palette.png": (img_bytes(rgb().convert("P"), "PNG"), "ok"),
        "palette_t.png": (img_bytes(rgb().convert("P"), "PNG", transparency=0), "ok"),
        "la.png": (img_bytes(rgb().convert("LA"), "PNG"), "ok"),
        "rgba.webp": (img_bytes(rgb().convert("RGBA"), "WEBP"), "ok"),
        "bilevel.png": (img_bytes(rgb().convert("1"), "PNG"), "ok"),
        "anim.gif": (frames("GIF"), "ok"), "anim.webp": (frames("WEBP"), "ok"), "anim.png": (frames("PNG"), "ok"),
        "progressive.jpg": (img_bytes(rgb(), "JPEG", progressive=True), "ok"),
        "gray.jpg": (img_bytes(rgb().convert("L"), "JPEG"), "ok"),
        "UPPER.JPG": (jpg, "ok"),
        "png_named.jpg": (png, "ok"), "jpeg_named.png": (jpg, "ok"),
        "café.png": (png, "ok"), "日本の写真.jpg": (jpg, "ok"), "new\nline.png": (png, "ok"),
        "quote ' \" and space.png": (png, "ok"),
        "bad.bmp": (img_bytes(rgb(), "BMP")[:60], "fail"),
        "notes.txt": (b"not an image", "ignore"), "data.json": (b"{}", "ignore"),
        "junk_after.png": (png + b"\0" * 100, "ok"),
        "deep/a/b/c/nested.png": (png, "ok"),
        "x.jpg/inside.png": (png, "ok"),  # a folder named x.jpg
    }
    return c


def make_corpus(root: Path) -> dict[str, str]:
    """Write the corpus; returns rel path -> expected outcome for every entry the walk should see."""
    expected = {}
    for rel, (data, outcome) in corpus().items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expected[rel] = outcome
    os.mkfifo(root / "pipe.jpg")
    expected["pipe.jpg"] = "fail"
    os.mkfifo(root / "pipe.txt")
    expected["pipe.txt"] = "ignore"
    os.symlink("..", root / "deep" / "loop")  # a symlink loop (a link to a parent folder)
    expected["deep/loop"] = "ignore"  # links are not followed by default
    os.symlink("self.png", root / "self.png")  # a link to itself
    expected["self.png"] = "ignore"
    os.symlink(root / "one.png", root / "link_to_one.png")
    expected["link_to_one.png"] = "ignore"
    (root / ".hidden.png").write_bytes(b"")  # hidden: not even seen
    (root / "vanishes.png").write_bytes(corpus()["one.png"][0])
    expected["vanishes.png"] = "fail"  # deleted between the walk and the read (see the test)
    return expected


def naive_count(root: Path) -> int:
    """Twin of the walk's `seen` for follow_symlinks=False: every non-hidden entry that is not a folder."""
    n = 0
    for e in os.scandir(root):
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            n += naive_count(Path(e.path))
        else:
            n += 1
    return n


@pytest.fixture(scope="module")
def encoder():
    return open_encoder(default_encoder_path(), 1)


@pytest.mark.parametrize("follow", [False, True])
def test_every_hostile_input_is_indexed_reported_or_ignored(tmp_path, monkeypatch, encoder, follow):
    root = tmp_path / "corpus"
    expected = make_corpus(root)
    assert len(expected) >= 40
    real_walk = build_mod.walk_images

    def walk_then_delete(*a, **k):
        walked = real_walk(*a, **k)
        (root / "vanishes.png").unlink()
        return walked

    monkeypatch.setattr(build_mod, "walk_images", walk_then_delete)
    store = IndexStore(tmp_path / "idx")
    info = EncoderInfo(str(default_encoder_path()), encoder.sha256, encoder.nbits, encoder.method)
    report = build(root, store, info, encode_files_fn(encoder), extensions=SUPPORTED_EXTENSIONS, follow_symlinks=follow)
    with store.reading() as gen, gen.catalog() as cat:
        indexed = set(cat.all_files())
        failed = {p for p, _ in cat.failures()}
    assert indexed.isdisjoint(failed)
    assert len(indexed) + len(failed) + report.ignored == report.walked  # nothing silently dropped
    assert report.total == len(indexed) and report.failed == len(failed)
    if not follow:
        assert report.walked == naive_count(root) + 1  # + the file that vanished after the walk
        assert indexed == {r for r, o in expected.items() if o == "ok"}
        assert failed == {r for r, o in expected.items() if o == "fail"}
        assert report.ignored == sum(o == "ignore" for o in expected.values())
    else:
        # followed: the link to one.png is indexed too, the self-link is reported, the loop walked once
        assert "link_to_one.png" in indexed and "self.png" in failed
        assert not any("loop/" in p for p in indexed | failed)
    reasons = dict(report.failures)
    assert "named pipe" in reasons["pipe.jpg"] and "no such file" in reasons["vanishes.png"]
    assert "decompression bomb" in reasons["bomb.png"]
