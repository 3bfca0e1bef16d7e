"""`hashtool dups` (JSON lines, radius, --tta, --keep/--move-to/--undo, --html) and `query --tta` through
CliRunner, with the bundled encoder (no torch needed)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hashtool.cli import main
from hashtool.store.tta import merge_results, parse_tta

DATA = Path(__file__).parent / "data" / "images"
BOOT = "fmnist/shoes/ankle_boot_0.png"


def run(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


@pytest.fixture
def photos(tmp_path):
    """The five Fashion-MNIST images, a byte copy of the boot (older, smaller name) and a boot turned 90 degrees."""
    dst = tmp_path / "photos"
    shutil.copytree(DATA / "fmnist", dst / "fmnist")
    (dst / "copies").mkdir()
    shutil.copy(dst / BOOT, dst / "copies" / "boot_copy.png")
    os.utime(dst / "copies" / "boot_copy.png", ns=(1_000_000_000, 1_000_000_000))
    Image.open(dst / BOOT).transpose(Image.Transpose.ROTATE_90).save(dst / "copies" / "boot_turned.png")
    return dst


def groups_of(r):
    return [json.loads(line) for line in r.stdout.splitlines()]


def names(group):
    return sorted(Path(m["path"]).name for m in group["members"])


def test_dups_json_lines_and_default_radius(photos, tmp_path):
    idx = tmp_path / "idx"
    r = run("dups", photos, "--index", idx, "--json")
    assert "using the default radius 2" in r.stderr and "hashtool calibrate" in r.stderr
    groups = groups_of(r)
    boot = [g for g in groups if "boot_copy.png" in names(g)]
    assert len(boot) == 1 and {"ankle_boot_0.png", "boot_copy.png"} <= set(names(boot[0]))
    assert "boot_turned.png" not in names(boot[0])  # a quarter turn is 19 bits away for this encoder
    g = boot[0]
    assert g["max_distance"] == 2 and g["size"] == len(g["members"]) and g["diameter_exact"]
    first = g["members"][0]
    assert first["distance"] == 0
    for m in g["members"]:
        st_ = os.stat(m["path"])
        assert (m["size"], m["mtime_ns"]) == (st_.st_size, st_.st_mtime_ns)
        assert 0 <= m["distance"] <= g["diameter"]
    # -r overrides the stored/default radius and is reported in every record
    groups = groups_of(run("dups", photos, "--index", idx, "--json", "-r", 0, "-q"))
    assert all(g["max_distance"] == 0 and g["diameter"] == 0 for g in groups)


def test_dups_text_summary(tmp_path):
    r = run("dups", DATA / "fmnist", "--index", tmp_path / "i", "-r", 32)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("1 group(s) of 5 images, 10 pair(s) within distance 32 among 5 images")
    assert lines[1].startswith("group 1: 5 images, diameter ")


def test_tta_finds_turned_copies(photos, tmp_path):
    idx = tmp_path / "idx"
    groups = groups_of(run("dups", photos, "--index", idx, "--json", "-r", 2, "--tta", "rot90", "-q"))
    boot = [g for g in groups if "boot_turned.png" in names(g)]
    assert len(boot) == 1 and {"ankle_boot_0.png", "boot_copy.png", "boot_turned.png"} <= set(names(boot[0]))
    turned = [m for m in boot[0]["members"] if m["path"].endswith("boot_turned.png")][0]
    assert turned["distance"] == 0

    q = photos / BOOT
    plain = [json.loads(x) for x in run("query", q, "-k", 0, "--max-distance", 3, "--index", idx, "--json").stdout.splitlines()]
    with_tta = [json.loads(x) for x in run("query", q, "-k", 0, "--max-distance", 3, "--index", idx, "--json", "--tta", "rot90").stdout.splitlines()]
    assert not any(x["path"].endswith("boot_turned.png") for x in plain)
    hit = [x for x in with_tta if x["path"].endswith("boot_turned.png")]
    assert hit and hit[0]["distance"] == 0
    assert [(x["distance"], x["id"]) for x in with_tta] == sorted((x["distance"], x["id"]) for x in with_tta)
    r = run("query", q, "--index", idx, "--tta", "spin", ok=False)
    assert r.exit_code == 1 and "--tta: unknown transform(s) spin" in r.output


@settings(max_examples=100)
@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 12)), max_size=10), min_size=1, max_size=4),
       st.integers(0, 5))
def test_merge_results_matches_naive(lists, k):
    lists = [sorted({i: d for d, i in rows}.items(), key=lambda t: (t[1], t[0])) for rows in lists]
    lists = [[(d, i) for i, d in rows] for rows in lists]
    best = {}
    for rows in lists:
        for d, i in rows:
            best[i] = min(d, best.get(i, d))
    expected = sorted((d, i) for i, d in best.items())
    assert merge_results(lists, k) == (expected[:k] if k else expected)


def test_parse_tta():
    assert parse_tta("flip, rot90,flip") == ("flip", "rot90")
    assert parse_tta(None) == () and parse_tta("") == ()


def test_move_dry_run_yes_undo(photos, tmp_path):
    idx, aside = tmp_path / "idx", tmp_path / "aside"
    before = sorted(p.relative_to(photos) for p in photos.rglob("*") if p.is_file())
    r = run("dups", photos, "--index", idx, "-r", 0, "--keep", "newest", "--move-to", aside)
    assert "would move" in r.stderr and "add --yes" in r.stderr and not aside.exists()
    assert "(keep)" in r.stdout
    r = run("dups", photos, "--index", idx, "-r", 0, "--keep", "newest", "--move-to", aside, "--yes")
    # the copy has the older mtime: it moves, keeping its relative path; the original stays
    assert (aside / "copies" / "boot_copy.png").is_file() and not (photos / "copies" / "boot_copy.png").exists()
    assert (photos / BOOT).is_file()
    manifests = list(aside.glob("hashtool-moves-*.json"))
    assert len(manifests) == 1 and "--undo" in r.stderr
    m = json.loads(manifests[0].read_text())
    assert [e["done"] for e in m["moves"]] == [True] * len(m["moves"]) and len(m["moves"]) >= 1
    # the next dups sees the file gone
    groups = groups_of(run("dups", photos, "--index", idx, "-r", 0, "--json", "-q"))
    assert not any("boot_copy.png" in names(g) for g in groups)

    # undo refuses to overwrite a file that came back meanwhile, and leaves both in place
    moved = [Path(e["to"]) for e in m["moves"]]
    (photos / "copies" / "boot_copy.png").write_bytes(b"new")
    r = run("dups", "--undo", manifests[0], ok=False)
    assert r.exit_code == 1 and "not overwritten" in r.output
    assert (photos / "copies" / "boot_copy.png").read_bytes() == b"new" and (aside / "copies" / "boot_copy.png").is_file()
    (photos / "copies" / "boot_copy.png").unlink()
    run("dups", "--undo", manifests[0])
    after = sorted(p.relative_to(photos) for p in photos.rglob("*") if p.is_file())
    assert after == before and not any(p.exists() for p in moved)
    r = run("dups", "--undo", manifests[0])  # twice: nothing to do, nothing lost
    assert "moved 0 file(s) back" in r.stderr


def test_move_refuses_overwrite_and_inside_folder(photos, tmp_path):
    idx, aside = tmp_path / "idx", tmp_path / "aside"
    (aside / "copies").mkdir(parents=True)
    (aside / "copies" / "boot_copy.png").write_bytes(b"mine")
    r = run("dups", photos, "--index", idx, "-r", 0, "--keep", "newest", "--move-to", aside, "--yes", ok=False)
    assert r.exit_code == 1 and "refusing to overwrite" in r.output
    assert (aside / "copies" / "boot_copy.png").read_bytes() == b"mine" and (photos / "copies" / "boot_copy.png").exists()
    r = run("dups", photos, "--index", idx, "-r", 0, "--keep", "newest", "--move-to", photos / "dupes", "--yes", ok=False)
    assert r.exit_code == 1 and "inside the indexed folder" in r.output
    for args in (["--keep", "largest"], ["--move-to", aside], ["--yes"]):
        r = run("dups", photos, "--index", idx, *args, ok=False)
        assert r.exit_code == 2
    assert run("dups", "--undo", tmp_path / "nope.json", ok=False).exit_code == 1


def test_keep_rules():
    from hashtool.store.actions import FileInfo, choose_keep

    members = [FileInfo("b", 10, 5), FileInfo("a", 10, 9), FileInfo("c", 3, 1)]
    assert choose_keep(members, "largest") == 1  # tie on size: the first path
    assert choose_keep(members, "newest") == 1
    assert choose_keep(members, "oldest") == 2


def test_groups_page(photos, tmp_path):
    page = tmp_path / "dups.html"
    run("dups", photos, "--index", tmp_path / "idx", "-r", 0, "--html", page, "-q")
    text = page.read_text()
    assert "near-duplicates within distance 0" in text and text.count("<figure") >= 2
    assert text.count('loading="lazy"') == text.count("<img")


def test_page_is_capped_and_says_so(tmp_path):
    from hashtool.store.html import write_results_page

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(img)
    left = write_results_page(tmp_path / "p.html", [(img, [(1, img)] * 30)], limit=10)
    text = (tmp_path / "p.html").read_text()
    assert left == 21 and text.count("<img") == 10 and "21 more result(s) not shown" in text
