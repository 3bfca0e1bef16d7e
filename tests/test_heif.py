"""HEIC/HEIF (pillow-heif, extra [heif]) and AVIF photos through the one loader; without a decoder such files
are reported with what to install, never skipped silently (checked in a process where pillow_heif is hidden)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, features

from hashtool.cli import main
from hashtool.encode import load_image
from hashtool.files.images import convert_image
from hashtool.files.heif import missing_decoder, sniff
from hashtool.store import default_encoder_path

DATA = Path(__file__).parent / "data" / "images"
pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC tests need pillow-heif (the [heif] extra, also in [dev])")


def photo() -> Image.Image:
    return Image.open(DATA / "formats" / "photo.jpg").convert("RGB")


def test_heic_loads_like_pillow_heif_decodes_it(tmp_path):
    from hashtool.encode import Encoder

    pillow_heif.register_heif_opener()
    path = tmp_path / "IMG_0001.HEIC"
    photo().save(path, format="HEIF", quality=90)
    assert sniff(path) == "HEIF"
    pp = Encoder(default_encoder_path()).preprocess
    decoded = pillow_heif.open_heif(path).to_pillow()
    np.testing.assert_array_equal(load_image(path, pp), convert_image(decoded, pp))
    renamed = tmp_path / "renamed.jpg"  # the content decides, not the extension
    renamed.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(load_image(renamed, pp), load_image(path, pp))


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow build has no AVIF support")
def test_avif_and_heic_are_indexed(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    photo().save(folder / "a.heic", format="HEIF")
    photo().save(folder / "b.avif", format="AVIF")
    (folder / "broken.heic").write_bytes(b"not a heic file at all")
    r = CliRunner().invoke(main, ["index", "build", str(folder), "--index", str(tmp_path / "idx"), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert (report["added"], report["failed"]) == (2, 1)
    assert "broken.heic" in r.stderr and "install hashtool[heif]" not in r.stderr  # a decoder is there: just broken


def test_without_pillow_heif_heic_files_say_what_to_install(tmp_path):
    pillow_heif.register_heif_opener()
    folder = tmp_path / "phone"
    folder.mkdir()
    photo().save(folder / "IMG_0002.heic", format="HEIF")
    (folder / "renamed.jpg").write_bytes((folder / "IMG_0002.heic").read_bytes())
    photo().save(folder / "ok.png")
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["pillow_heif"] = None  # import pillow_heif raises ImportError
        from click.testing import CliRunner
        from hashtool.cli import main
        r = CliRunner().invoke(main, ["index", "build", {str(folder)!r}, "--index", {str(tmp_path / "idx")!r}, "--json"])
        print(json.dumps({{"code": r.exit_code, "stderr": r.stderr, "report": json.loads(r.stdout.strip().splitlines()[-1])}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["code"] == 0 and (res["report"]["added"], res["report"]["failed"]) == (1, 2)
    for name in ("IMG_0002.heic", "renamed.jpg"):
        line = [x for x in res["stderr"].splitlines() if name in x]
        assert line and "a HEIC/HEIF photo" in line[0] and "install hashtool[heif]" in line[0]


def test_missing_decoder_ignores_other_files(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(p)
    assert missing_decoder(p) is None and sniff(p) is None
