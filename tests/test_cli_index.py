"""`hashtool index build / info`, `query` and `dups` through click's CliRunner, every error path, a real
process, and the whole index/query path with torch made unimportable."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hashtool.cli import main

DATA = Path(__file__).parent / "data" / "images"
N_GOOD, N_BAD = 20, 8  # tests/data/images/README.md


def export_tiny(path: Path, bits: int, seed: int) -> Path:
    import torch

    from hashtool.export import export_model
    from hashtool.train.checkpoint import save_checkpoint
    from hashtool.train.models import MODELS
    from tiny_models import TinyConfig, TinyConvHash, preprocess_for

    torch.manual_seed(seed)
    name = "_cli-tiny"

    class CliTiny(TinyConvHash):  # a subclass, so the shared test model class is left as it is
        model_name = name

    MODELS[name] = (TinyConfig, CliTiny)
    try:
        model = CliTiny(TinyConfig(bits=bits)).eval()
        save_checkpoint(path.with_suffix(".pt"), model, preprocess_for(model.config), meta={"dataset": "none"})
        export_model(path.with_suffix(".pt"), path, parity_images=16)
    finally:
        MODELS.pop(name, None)
    return path


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    d = tmp_path_factory.mktemp("encoders")
    return export_tiny(d / "a.onnx", 32, 0), export_tiny(d / "b.onnx", 32, 1)


@pytest.fixture
def images(tmp_path):
    dst = tmp_path / "images"
    shutil.copytree(DATA, dst)
    return dst


def run(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


def test_build_info_query_dups(images, encoders, tmp_path):
    enc, _ = encoders
    idx = tmp_path / "idx"
    r = run("index", "build", images, "--model", enc, "--index", idx, "--json")
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert (report["total"], report["added"], report["failed"]) == (N_GOOD, N_GOOD, N_BAD)
    for bad in ("truncated.png", "truncated.jpg", "corrupt.png", "bomb_header.png", "not_an_image.png"):
        assert f"broken/{bad}" in r.stderr
    assert report["ignored"] == 2  # notes.txt and README.md; hidden and ._ files are not even counted

    info = json.loads(run("index", "info", "--index", idx, "--json").stdout)
    assert info["count"] == N_GOOD and info["bits"] == 32 and info["failures"] == N_BAD
    assert len(info["failed_files"]) == N_BAD and info["encoder"]["sha256"]

    q = images / "fmnist" / "shoes" / "ankle_boot_0.png"
    lines = [json.loads(line) for line in run("query", q, "-k", 5, "--index", idx, "--json").stdout.splitlines()]
    assert [x["rank"] for x in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["distance"] == 0 and lines[0]["path"] == str(q.resolve())  # itself
    assert [x["distance"] for x in lines] == sorted(x["distance"] for x in lines)

    text = run("query", q, "-k", 3, "--index", idx).stdout.splitlines()
    assert text[0].startswith("# ") and len(text) == 4 and text[1].split("\t")[:2] == ["1", "0"]

    # range search: every result within the radius, at most k
    lines = [json.loads(x) for x in run("query", q, "--max-distance", 32, "-k", 0, "--index", idx, "--json").stdout.splitlines()]
    assert len(lines) == N_GOOD and all(x["distance"] <= 32 for x in lines)

    page = tmp_path / "out.html"
    run("query", q, "-k", 3, "--index", idx, "--html", page)
    html = page.read_text()
    assert html.count("<figure") == 4 and "data:image/jpeg;base64," in html

    # dups brings the index up to date first: a byte-identical copy added now is found as a pair
    shutil.copy(images / "formats" / "drawing.png", images / "dup_copy.png")
    groups = [json.loads(x) for x in run("dups", images, "--index", idx, "-r", 0, "--json", "-q").stdout.splitlines()]
    names = [{Path(m["path"]).name for m in g["members"]} for g in groups]
    assert any({"drawing.png", "dup_copy.png"} <= n for n in names)
    assert all(g["diameter"] == 0 and len(g["members"]) >= 2 for g in groups)


def test_incremental_rebuild_and_k_larger_than_index(images, encoders, tmp_path):
    enc, _ = encoders
    idx = tmp_path / "idx"
    run("index", "build", images, "--model", enc, "--index", idx, "-q")
    (images / "fmnist" / "bags" / "bag_8.png").unlink()
    shutil.copy(images / "formats" / "drawing.png", images / "formats" / "copy.png")
    r = json.loads(run("index", "build", images, "--index", idx, "--json", "-q").stdout.strip().splitlines()[-1])
    assert (r["added"], r["removed"], r["unchanged"], r["total"]) == (1, 1, N_GOOD - 1, N_GOOD)
    q = images / "formats" / "copy.png"
    r = run("query", q, "-k", 100, "--index", idx)
    assert "holds 20 images, fewer than -k 100" in r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 + N_GOOD


def test_errors(images, encoders, tmp_path):
    enc, other = encoders
    idx = tmp_path / "idx"
    r = run("index", "build", tmp_path / "missing", "--model", enc, "--index", idx, ok=False)
    assert r.exit_code != 0 and "missing" in r.output
    r = run("query", images / "formats" / "drawing.png", "--index", idx, ok=False)
    assert r.exit_code == 1 and "no index here" in r.output

    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("index", "build", empty, "--model", enc, "--index", tmp_path / "idx-empty", "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["total"] == 0
    r = run("query", images / "formats" / "drawing.png", "--index", tmp_path / "idx-empty")
    assert "0 result(s)" in r.stdout

    run("index", "build", images, "--model", enc, "--index", idx, "-q")
    gen_before = (idx / "CURRENT").read_text()
    r = run("index", "build", images, "--model", other, "--index", idx, ok=False)
    assert r.exit_code == 1 and "encoder" in r.output and (idx / "CURRENT").read_text() == gen_before
    r = run("query", images / "formats" / "drawing.png", "--model", other, "--index", idx, ok=False)
    assert r.exit_code == 1 and "not the encoder" in r.output

    r = run("query", images / "broken" / "corrupt.png", images / "formats" / "drawing.png", "--index", idx, ok=False)
    assert r.exit_code == 1 and "corrupt.png" in r.stderr and "# " in r.stdout  # the good query still answered
    r = run("query", images / "broken" / "not_an_image.png", "--index", idx, ok=False)
    assert r.exit_code == 1 and "no query image could be read" in r.output

    r = run("index", "build", images, "--index", idx, "--strict", ok=False)
    assert r.exit_code == 1 and "--strict" in r.output and (idx / "CURRENT").read_text() == gen_before

    notindex = tmp_path / "notindex"
    notindex.mkdir()
    (notindex / "keep.txt").write_text("keep")
    r = run("index", "build", images, "--model", enc, "--index", notindex, ok=False)
    assert r.exit_code == 1 and "not a hashtool index" in r.output and (notindex / "keep.txt").read_text() == "keep"
    r = run("index", "info", "--index", notindex, ok=False)
    assert r.exit_code == 1 and "not a hashtool index" in r.output

    gen = idx / gen_before.strip()
    (gen / "codes.hidx").write_bytes((gen / "codes.hidx").read_bytes()[:50])
    r = run("query", images / "formats" / "drawing.png", "--index", idx, ok=False)
    assert r.exit_code == 1 and "codes.hidx" in r.output
    r = run("query", images / "formats" / "drawing.png", "--index", idx, "-k", 0, ok=False)
    assert r.exit_code == 2 and "--max-distance" in r.output


def test_default_index_location_and_env(images, encoders, tmp_path, monkeypatch):
    enc, _ = encoders
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HASHTOOL_INDEX", raising=False)
    run("index", "build", images, "--model", enc, "-q")
    assert (tmp_path / "hashtool-index" / "CURRENT").is_file()
    assert "# " in run("query", images / "formats" / "drawing.png", "-k", 1).stdout
    monkeypatch.setenv("HASHTOOL_INDEX", str(tmp_path / "elsewhere"))
    run("index", "build", images, "--model", enc, "-q")
    assert (tmp_path / "elsewhere" / "CURRENT").is_file()


def test_real_process_and_no_torch(images, encoders, tmp_path):
    enc, _ = encoders
    idx = tmp_path / "idx"
    exe = shutil.which("hashtool") or str(Path(sys.executable).with_name("hashtool"))
    out = subprocess.run([exe, "index", "build", str(images), "--model", str(enc), "--index", str(idx), "-q"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{N_GOOD} images indexed" in out.stdout
    code = textwrap.dedent(f"""
        import sys, json
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        from click.testing import CliRunner
        from hashtool.cli import main
        r1 = CliRunner().invoke(main, ["index", "build", {str(images)!r}, "--index", {str(tmp_path / "idx2")!r}, "--model", {str(enc)!r}, "-q"])
        r2 = CliRunner().invoke(main, ["query", {str(images / "formats" / "drawing.png")!r}, "--index", {str(tmp_path / "idx2")!r}, "-k", "2", "--json"])
        print(json.dumps({{"codes": [r1.exit_code, r2.exit_code], "out": r2.output, "exc": repr(r1.exception or r2.exception)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["codes"] == [0, 0], res
    assert res["out"].count('"rank"') == 2


def test_kill_9_during_build_leaves_a_working_index(encoders, tmp_path):
    """A build killed at any moment leaves the old index or the new one, never a mix."""
    import signal
    import time

    from PIL import Image

    enc, _ = encoders
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    idx = tmp_path / "idx"
    exe = [sys.executable, "-m", "hashtool"]
    base = exe + ["index", "build", str(folder), "--model", str(enc), "--index", str(idx), "-q", "--batch-size", "8", "--threads", "1"]
    assert subprocess.run(base, capture_output=True, timeout=300).returncode == 0
    query = exe + ["query", str(folder / "000.png"), "--index", str(idx), "-k", "1", "--json"]
    for round_, delay in enumerate((0.5, 1.0, 1.5, 2.5, 4.0)):
        for i in range(round_ * 40, round_ * 40 + 40):  # change 40 files so the build has work to do
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i % 300:03d}.png")
        p = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        out = subprocess.run(query, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.splitlines()[0])["path"].endswith(".png")
    out = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["total"] == 300
    assert len([p for p in idx.iterdir() if p.name.startswith("gen-")]) == 1  # half-written generations cleaned
