"""Code health in `hashtool index info` (text and --json), with the bundled encoder."""

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from hashtool.cli import main
from hashtool.hashindex import load_index
from hashtool.health import code_health
from hashtool.store.store import IndexStore

DATA = Path(__file__).parent / "data" / "images" / "fmnist"


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def test_info_reports_health_and_collapse(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for n, p in enumerate(sorted(DATA.rglob("*.png")) * 5):  # 25 files, 5 distinct pictures
        shutil.copy(p, folder / f"{n:02d}_{p.name}")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    info = json.loads(run("index", "info", "--index", idx, "--json").stdout)
    codes = load_index(IndexStore(idx).current().codes_path).codes()
    assert info["health"] == code_health(codes, 32).as_dict()
    assert info["health"]["images"] == 25 and info["health"]["distinct_codes"] <= 5
    assert info["health"]["largest_group"] >= 5
    text = run("index", "info", "--index", idx).stdout
    assert "health:     ones per bit min" in text
    assert "WARNING: 100% of images share" in text and "dups will group unrelated photos" in text
    # a healthy set of random codes gives no warning (the same function, so the CLI shows none)
    assert code_health(np.random.default_rng(0).integers(0, 256, (500, 4), dtype=np.uint8)).warnings == []
