"""The bundled photo encoder is the default of a new index, and bundled encoders are chosen by name."""

import os

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


def _photo(name: str) -> Image.Image:
    """A real photograph from scikit-image's bundled data (the dev extra; read from disk, nothing fetched). Drawn
    scenes were used before; their exactly flat backgrounds are trim-stretch's known weakness (README), so a
    resized copy's distance sat within a few bits of the radius and said little about photos."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def test_a_new_index_of_photos_uses_the_photo_encoder_and_its_radius(monkeypatch, tmp_path):
    from hashtool.encode import Encoder

    monkeypatch.delenv("HASHTOOL_MODEL", raising=False)
    enc = Encoder(bundled_encoder_path("photo"), threads=1)
    assert enc.nbits == 128 and enc.method == "edit-contrastive" and int(enc.metadata["copy_radius"]) > 0
    assert "Apache" in enc.metadata["licence"]
    folder = tmp_path / "photos"
    folder.mkdir()
    cat = _photo("chelsea")
    cat.save(folder / "a.jpg", quality=95)
    cat.resize((cat.width // 2, cat.height // 2)).save(folder / "a_small.jpg", quality=60)  # a resized, re-compressed copy
    _photo("coffee").save(folder / "b.jpg", quality=95)
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
