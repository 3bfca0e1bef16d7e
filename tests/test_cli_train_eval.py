"""hashtool train / hashtool eval through click's CliRunner, and the torch-free baseline path as a process."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from hashtool.cli import main
from hashtool.datasets import write_idx


@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory):
    """A tiny labeled IDX dataset: a bright square whose place depends on the class."""
    folder = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 30)):
        labels = rng.integers(0, 3, n)
        imgs = rng.integers(0, 60, (n, 12, 12)).astype(np.int32)
        for i, c in enumerate(labels):
            imgs[i, 1 + 3 * c : 5 + 3 * c, 1 + 3 * c : 5 + 3 * c] += 180
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.clip(imgs, 0, 255).astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return folder


def test_train_and_eval_itq(idx_folder, tmp_path):
    out = tmp_path / "itq.npz"
    r = CliRunner().invoke(main, ["train", "-m", "itq", "-b", "16", "-d", str(idx_folder), "-o", str(out), "--json", "-q"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["protocol"]["queries"] == 30 and res["protocol"]["database"] == 120
    assert 0.0 < res["metrics"]["map"] <= 1.0
    r = CliRunner().invoke(main, ["eval", str(out), "-d", str(idx_folder), "--json", "-q"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    assert ev["metrics"]["map"] == pytest.approx(res["metrics"]["map"])
    assert len(ev["metrics"]["pr_curve"]["precision"]) == 17
    r = CliRunner().invoke(main, ["eval", str(out), "-d", str(idx_folder), "-q"])
    assert r.exit_code == 0 and "map@1000" in r.output and "protocol" in r.output


def test_train_and_eval_deep(idx_folder, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "ae.pt"
    args = ["train", "-m", "ae-tanh", "-b", "8", "-d", str(idx_folder), "-o", str(out), "--epochs", "2",
            "--hp", "hidden=16", "--batch-size", "32", "--epoch-images", "96", "--threads", "1", "--json", "-q"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    r = CliRunner().invoke(main, ["eval", str(out), "-d", str(idx_folder), "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"]["map"] == pytest.approx(res["metrics"]["map"])
    from hashtool.train.checkpoint import read_checkpoint

    meta = read_checkpoint(out)["meta"]
    assert meta["metrics"]["map"] == pytest.approx(res["metrics"]["map"])  # stored in the model
    assert meta["train_config"]["hparams"]["hidden"] == 16


def test_clear_cli_errors(idx_folder, tmp_path):
    r = CliRunner().invoke(main, ["train", "-m", "itq", "-b", "12", "-d", str(idx_folder), "-o", str(tmp_path / "x")])
    assert r.exit_code != 0 and "multiple of 8" in r.output
    r = CliRunner().invoke(main, ["train", "-m", "itq", "-b", "16", "-d", "nowhere", "-o", str(tmp_path / "x")])
    assert r.exit_code != 0 and "not a known dataset name" in r.output
    r = CliRunner().invoke(main, ["train", "-m", "itq", "-b", "16", "-d", str(idx_folder), "-o", str(tmp_path / "x"), "--epochs", "3"])
    assert r.exit_code != 0 and "--epochs does not apply" in r.output
    r = CliRunner().invoke(main, ["train", "-m", "itq", "-b", "16", "-d", str(idx_folder), "-o", str(tmp_path / "x"), "--hp", "oops"])
    assert r.exit_code != 0 and "NAME=VALUE" in r.output
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"hello")
    r = CliRunner().invoke(main, ["eval", str(bogus), "-d", str(idx_folder)])
    assert r.exit_code != 0 and "bogus.pt" in r.output
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "none.pt"), "-d", str(idx_folder)])
    assert r.exit_code != 0 and "no such model file" in r.output


def test_itq_command_never_imports_torch(idx_folder, tmp_path):
    code = (
        "import sys, json\n"
        "from hashtool.cli import main\n"
        f"try:\n    main(['train','-m','itq','-b','16','-d',{str(idx_folder)!r},'-o',{str(tmp_path / 'i.npz')!r},'-q'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print(json.dumps({'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False}


def test_train_and_eval_on_a_folder_of_images(tmp_path):
    import shutil
    from pathlib import Path

    from click.testing import CliRunner

    from hashtool.cli import main

    src = Path(__file__).parent / "data" / "images" / "fmnist"
    folder = tmp_path / "imgs"
    shutil.copytree(src, folder)
    for i in range(3):  # a few more per class so the protocol has queries and a database
        for p in list(folder.glob("*/*.png")):
            shutil.copy(p, p.with_name(f"{p.stem}_{i}.png"))
    out = tmp_path / "m.npz"
    args = ["-d", str(folder), "--image-size", "28", "--color", "L"]
    r = CliRunner().invoke(main, ["train", "-m", "lsh", "-b", "16", "-o", str(out), "--queries", "4", "--val", "2", *args])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["eval", str(out), "--queries", "4", "--json", *args])
    assert r.exit_code == 0, r.output
    assert '"mAP"' in r.output or '"map"' in r.output.lower()


def test_list_methods_prints_every_method_with_its_kind():
    from click.testing import CliRunner

    from hashtool.cli import main
    from hashtool.train.methods import METHODS

    r = CliRunner().invoke(main, ["train", "--list-methods"])
    assert r.exit_code == 0, r.output
    rows = [line.split("\t") for line in r.output.strip().splitlines()]
    assert all(len(row) == 3 and row[2] for row in rows)
    kinds = {name: kind for name, kind, _ in rows}
    assert set(kinds) == set(METHODS) | {"lsh", "pcah", "itq"}
    assert kinds["itq"] == "baseline" and kinds["nin-latent"] == "supervised"
    assert kinds["adalabel"] == "semi-supervised" and kinds["edit-contrastive"] == "unsupervised"
