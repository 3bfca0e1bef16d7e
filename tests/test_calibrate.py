"""`hashtool calibrate`: radius choice against a naive twin, storage in the catalog, use by `dups`."""

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hashtool.cli import main
from hashtool.encode import Encoder
from hashtool.hashindex import load_index
from hashtool.store.calibrate import META_KEY, choose_radius, copy_distances, unrelated_distances
from hashtool.store.store import IndexStore

DATA = Path(__file__).parent / "data" / "images"


def run(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


@settings(max_examples=100)
@given(st.lists(st.integers(0, 16), min_size=1, max_size=30), st.lists(st.integers(0, 16), max_size=30),
       st.floats(0.05, 1.0))
def test_choose_radius_matches_naive(copies, unrelated, target):
    r, recall, false = choose_radius(np.array(copies), np.array(unrelated, dtype=np.int64), 16, target)
    for radius in range(17):
        assert recall[radius] == sum(d <= radius for d in copies) / len(copies)
        assert false[radius] == (sum(d <= radius for d in unrelated) / len(unrelated) if unrelated else 0.0)
    naive = next((x for x in range(17) if sum(d <= x for d in copies) / len(copies) >= target), 16)
    assert r == naive


def test_unrelated_pairs_are_distinct_rows():
    codes = np.arange(10, dtype=np.uint8)[:, None]  # distinct codes: a distance 0 would be a row paired with itself
    d = unrelated_distances(codes, 5000, np.random.default_rng(0))
    assert len(d) == 5000 and d.min() > 0


def test_copy_distances_are_distances_of_edited_copies(tmp_path):
    from hashtool.store import default_encoder_path

    enc = Encoder(default_encoder_path())
    p = DATA / "fmnist" / "shoes" / "ankle_boot_0.png"
    code = enc.encode(np.asarray(Image.open(p))[None, :, :, None])[0]
    got, skipped = copy_distances(enc, [(str(p), code), (str(tmp_path / "gone.png"), code)], ["mirror"], np.random.default_rng(0))
    mirrored = np.asarray(Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT))[None, :, :, None]
    assert got["mirror"] == [int(np.bitwise_count(enc.encode(mirrored)[0] ^ code).sum())]
    assert len(skipped) == 1 and "gone.png" in skipped[0]


def test_calibrate_stores_radius_used_by_dups(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(DATA / "fmnist", folder / "fmnist")
    shutil.copytree(DATA / "formats", folder / "formats")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    before = sorted(p for p in folder.rglob("*"))
    r = run("calibrate", "--index", idx, "--sample", 6, "--pairs", 300, "--dry-run")
    assert "dry run: nothing stored" in r.stdout and META_KEY not in _meta(idx)
    (folder / "formats" / "drawing.bmp").touch()  # changed since the build: skipped, said so
    r = run("calibrate", "--index", idx, "--sample", 50, "--pairs", 300, "--json")
    cal = json.loads(r.stdout)
    assert "drawing.bmp: changed since the index was built" in r.stderr
    assert sorted(p for p in folder.rglob("*")) == before  # nothing written into the folder
    stored = _meta(idx)[META_KEY]
    assert stored["radius"] == cal["radius"] and cal["stored_in"] == IndexStore(idx).current().name
    assert stored["copies"] == stored["images"] * 16 and stored["recall"] >= 0.95 or stored["radius"] == 32
    assert stored["recall"] == stored["recall_by_radius"][stored["radius"]]
    r = run("dups", folder, "--index", idx, "--json")
    assert f"using the calibrated radius {stored['radius']}" in r.stderr
    assert all(json.loads(g)["max_distance"] == stored["radius"] for g in r.stdout.splitlines())
    # the calibration survives a build (the catalog is carried over) and -r stores a chosen radius
    (folder / "formats" / "drawing.bmp").unlink()
    run("index", "build", folder, "--index", idx, "-q")
    assert _meta(idx)[META_KEY]["radius"] == stored["radius"]
    r = run("calibrate", "--index", idx, "--sample", 3, "--pairs", 100, "-r", 7)
    assert "radius 7 (as given by -r)" in r.stdout and _meta(idx)[META_KEY]["radius"] == 7
    with IndexStore(idx).current().catalog() as cat:
        count = cat.count()
    assert count == 12 and len(load_index(IndexStore(idx).current().codes_path).codes()) == count  # every code kept


def test_calibrate_errors(tmp_path):
    r = run("calibrate", "--index", tmp_path / "none", ok=False)
    assert r.exit_code == 1 and "no index here" in r.output
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(DATA / "fmnist" / "bags" / "bag_8.png", folder)
    run("index", "build", folder, "--index", tmp_path / "i1", "-q")
    r = run("calibrate", "--index", tmp_path / "i1", ok=False)
    assert r.exit_code == 1 and "at least 2 indexed images" in r.output
    r = run("calibrate", "--index", tmp_path / "i1", "--edits", "smudge", ok=False)
    assert r.exit_code == 1 and "unknown edit 'smudge'" in r.output


def _meta(idx):
    with IndexStore(idx).current().catalog() as cat:
        return cat.get_meta()


def test_dups_radius_prefers_calibration_then_the_encoders_radius_then_the_default():
    from hashtool.store.calibrate import DEFAULT_RADIUS, META_KEY, dups_radius

    cal = {"encoder_sha256": "ab", "radius": 7, "recall": 0.95, "false_pair_rate": 0.001}
    assert dups_radius({META_KEY: cal, "encoder_sha256": "ab"}, encoder_radius=20)[0] == 7
    r, why = dups_radius({META_KEY: {**cal, "encoder_sha256": "other"}, "encoder_sha256": "ab"}, encoder_radius=20)
    assert r == 20 and "encoder's radius" in why  # a calibration of another encoder does not count
    assert dups_radius({}, encoder_radius=None)[0] == DEFAULT_RADIUS
