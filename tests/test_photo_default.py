"""The bundled photo encoder is the default of a new index, and bundled encoders are chosen by name."""

import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashtool.cli import main
from hashtool.errors import ArgumentError
from hashtool.store import BUNDLED_ENCODERS, bundled_encoder_path, default_encoder_path, resolve_model


def test_default_is_the_photo_encoder_unless_hashtool_model_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("HASHTOOL_MODEL", raising=False)
    assert default_encoder_path() == bundled_encoder_path("photo")
    monkeypatch.setenv("HASHTOOL_MODEL", "fashion-mnist")
    assert default_encoder_path() == bundled_encoder_path("fashion-mnist")
    monkeypatch.setenv("HASHTOOL_MODEL", str(tmp_path / "mine.onnx"))
    assert default_encoder_path() == tmp_path / "mine.onnx"
    assert all(bundled_encoder_path(n).is_file() for n in BUNDLED_ENCODERS)
    assert resolve_model("photo") == str(bundled_encoder_path("photo")) and resolve_model("x.onnx") == "x.onnx"
    with pytest.raises(ArgumentError, match="no bundled encoder named 'nope'"):
        bundled_encoder_path("nope")


def _scene(kind: int) -> Image.Image:
    """Two clearly different drawn scenes: a sky with a sun over a field, or stripes with a checkerboard, with the
    mild pixel noise of a real photo. (Without it every sky row is exactly flat, and trim-stretch cuts a different
    number of sky rows from the q95 original and the q60 copy: distance 44 against the encoder's radius 43.)"""
    from PIL import ImageDraw

    img = Image.new("RGB", (240, 180))
    draw = ImageDraw.Draw(img)
    if kind == 0:
        for y in range(120):
            draw.line([(0, y), (240, y)], fill=(90 + y, 150 + y // 2, 255))
        draw.rectangle((0, 120, 240, 180), fill=(40, 140, 40))
        draw.ellipse((160, 20, 210, 70), fill=(255, 220, 0))
    else:
        for x in range(0, 240, 20):
            draw.rectangle((x, 0, x + 9, 180), fill=(200, 30, 60))
        for i in range(6):
            for j in range(4):
                if (i + j) % 2:
                    draw.rectangle((20 + 30 * i, 30 + 30 * j, 50 + 30 * i, 60 + 30 * j), fill=(20, 20, 20))
    noise = np.random.default_rng(kind).normal(0, 6, (180, 240, 3))
    return Image.fromarray((np.asarray(img, dtype=np.float64) + noise).clip(0, 255).astype(np.uint8))


def test_a_new_index_of_photos_uses_the_photo_encoder_and_its_radius(monkeypatch, tmp_path):
    from hashtool.encode import Encoder

    monkeypatch.delenv("HASHTOOL_MODEL", raising=False)
    enc = Encoder(bundled_encoder_path("photo"), threads=1)
    assert enc.nbits == 128 and enc.method == "edit-contrastive" and int(enc.metadata["copy_radius"]) > 0
    assert "Apache" in enc.metadata["licence"]
    folder = tmp_path / "photos"
    folder.mkdir()
    _scene(0).save(folder / "a.jpg", quality=95)
    _scene(0).resize((120, 90)).save(folder / "a_small.jpg", quality=60)  # a resized, re-compressed copy
    _scene(1).save(folder / "b.jpg", quality=95)
    runner = CliRunner()
    r = runner.invoke(main, ["index", "info", "--index", str(tmp_path / "idx")])
    assert r.exit_code != 0  # no index yet
    r = runner.invoke(main, ["dups", str(folder), "--index", str(tmp_path / "idx"), "--json"])
    assert r.exit_code == 0, r.output
    assert "using the encoder's radius" in r.stderr
    groups = [g for g in r.stdout.splitlines() if g.strip()]
    assert len(groups) == 1 and "a_small.jpg" in groups[0] and "b.jpg" not in groups[0]
    r = runner.invoke(main, ["index", "info", "--index", str(tmp_path / "idx"), "--json"])
    assert '"bits":128' in r.stdout.replace(" ", "")
