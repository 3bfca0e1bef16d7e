"""Issue 11 defects 8-10: eval uses the protocol stored in the model, baselines refuse up front, and the
CLI conventions (JSON Lines everywhere, one --threads, -r/--max-distance uncapped without -k)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashtool.cli import main


def run(*args, ok=True, env=None):
    r = CliRunner(env=env).invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


def json_lines(text: str) -> list[dict]:
    """Every stdout line is one compact JSON object (never indented, never a bare list)."""
    lines = text.strip().splitlines()
    out = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) for o in out) and all(not line.startswith(" ") for line in lines)
    return out


@pytest.fixture(scope="module")
def labeled_folder(tmp_path_factory):
    """A folder of images in class sub-folders and no test part: queries come from all images."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir()
        for i in range(40):
            a = rng.integers(0, 60, (12, 12)).astype(np.uint8)
            a[1 + 3 * c : 5 + 3 * c, 1 + 3 * c : 5 + 3 * c] = 230
            Image.fromarray(a).save(root / f"c{c}" / f"{i}.png")
    return root


def test_eval_uses_the_protocol_stored_in_the_model(labeled_folder, tmp_path):
    out = tmp_path / "itq.npz"
    common = ["--image-size", "12", "--color", "L"]
    train = json_lines(run("train", "-m", "itq", "-b", "16", "-d", labeled_folder, "-o", out, "--queries", "17",
                           "--seed", "5", "--json", "-q", *common).stdout)[0]
    ev = json_lines(run("eval", out, "-d", labeled_folder, "--json", "-q", *common).stdout)[0]
    assert ev["protocol"] == train["protocol"]  # same seed, same 17 queries, same validation size
    assert ev["metrics"]["map"] == pytest.approx(train["metrics"]["map"])
    r = run("eval", out, "-d", labeled_folder, "--json", "--queries", "20", *common)
    assert "some queries may be training images" in r.stderr


def test_unlabeled_baseline_is_refused_before_fitting(tmp_path, monkeypatch):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(np.full((8, 8), i * 8, np.uint8)).save(folder / f"{i}.png")
    import hashtool.baselines

    calls = []
    monkeypatch.setattr(hashtool.baselines, "fit_baseline", lambda *a, **k: calls.append(1))
    r = run("train", "-m", "itq", "-b", "8", "-d", folder, "-o", tmp_path / "m.npz", "--image-size", "8", "--color", "L", ok=False)
    assert r.exit_code == 1 and "no labels" in r.output and "--no-eval" in r.output and "Traceback" not in r.output
    assert calls == []  # nothing fitted only to be thrown away
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("method", ["itq", "pcah", "lsh"])
def test_baseline_exports_to_an_encoder_with_the_same_codes(labeled_folder, tmp_path, method):
    pytest.importorskip("onnx")
    out, enc_path = tmp_path / f"{method}.npz", tmp_path / f"{method}.onnx"
    run("train", "-m", method, "-b", "16", "-d", labeled_folder, "-o", out, "--image-size", "12", "--color", "L", "-q")
    res = json_lines(run("export", out, enc_path, "--json", "-q").stdout)[0]
    assert res["parity"]["ok"] and res["metadata"]["method"] == method
    from hashtool.baselines import load_baseline
    from hashtool.datasets import flatten_features
    from hashtool.encode import Encoder
    from hashtool.files import find_images, load_image

    enc, base = Encoder(enc_path, threads=1), load_baseline(out)
    paths = find_images(labeled_folder)[:50]
    images = np.stack([load_image(p, enc.preprocess) for p in paths])
    np.testing.assert_array_equal(enc.encode(images), base.transform(flatten_features(images)))
    # and it indexes a folder like any encoder
    idx = tmp_path / "idx"
    run("index", "build", labeled_folder, "--model", enc_path, "--index", idx, "-q")
    top = json_lines(run("query", paths[0], "--index", idx, "-k", 1, "--json").stdout)[0]
    assert top["distance"] == 0


@pytest.mark.parametrize("cmd", [["index", "build", "{f}"], ["query", "{f}/c0/0.png"], ["eval", "x.npz", "-d", "{f}"],
                                 ["train", "-m", "itq", "-b", "8", "-d", "{f}", "-o", "x.npz"]])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_is_checked_the_same_way_everywhere(labeled_folder, cmd, value):
    r = run(*[c.format(f=labeled_folder) for c in cmd], "--threads", value, ok=False)
    assert r.exit_code == 2 and "--threads" in r.output and ("positive" in r.output or "whole number" in r.output)


@pytest.fixture(scope="module")
def index(labeled_folder, tmp_path_factory):
    idx = tmp_path_factory.mktemp("idx") / "index"
    run("index", "build", labeled_folder, "--index", idx, "-q")
    return idx


def test_query_max_distance_without_k_is_uncapped(labeled_folder, index):
    q = labeled_folder / "c0" / "0.png"
    everything = json_lines(run("query", q, "-r", 32, "--index", index, "--json").stdout)
    assert len(everything) == 120  # every image is within 32 bits of a 32-bit code: no silent cap at 10
    assert [x["rank"] for x in everything] == list(range(1, 121))
    long_form = json_lines(run("query", q, "--max-distance", 32, "--index", index, "--json").stdout)
    assert long_form == everything
    capped = run("query", q, "-r", 32, "-k", 7, "--index", index, "--json")
    assert json_lines(capped.stdout) == everything[:7]
    assert "showing the first 7" in capped.stderr
    assert len(json_lines(run("query", q, "--index", index, "--json").stdout)) == 10  # -k default without -r


def test_every_json_output_is_json_lines(labeled_folder, index, tmp_path):
    for args in (["index", "info", "--index", index, "--json"], ["index", "verify", "--index", index, "--json"],
                 ["index", "build", labeled_folder, "--index", index, "--json", "-q"]):
        assert len(json_lines(run(*args).stdout)) == 1
    out = tmp_path / "lsh.npz"
    train = run("train", "-m", "lsh", "-b", "8", "-d", labeled_folder, "-o", out, "--image-size", "12", "--color", "L", "--json", "-q")
    assert len(json_lines(train.stdout)) == 1
    ev = run("eval", out, "-d", labeled_folder, "--image-size", "12", "--color", "L", "--json", "-q")
    assert len(json_lines(ev.stdout)) == 1


def test_help_documents_the_conventions():
    out = run("--help").stdout
    assert "JSON Lines" in out and "--threads" in out and "-r/--max-distance" in out
    assert "-r, --max-distance" in run("query", "--help").stdout
