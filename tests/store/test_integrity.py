"""Issue 11: one error path, unreadable paths never delete, walk options kept, the writer lock, readers
keep their generation, a half-written build leaves the old index, `index verify`. With the bundled
encoder (no torch)."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashtool.cli import main
from hashtool.hashindex import load_index
from hashtool.store.store import IndexStore

DATA = Path(__file__).parent.parent / "data" / "images"


def run(*args, ok=True, env=None):
    r = CliRunner(env=env).invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


def assert_clean_error(r, *needles):
    """Exit status 1, one `Error: ...` message, no traceback, the exception handled."""
    assert r.exit_code == 1, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert "Error: " in r.output
    for n in needles:
        assert n in r.output, r.output


def make_folder(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        where = root / "sub" if i % 2 else root
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(where / f"img{i}.png")
    return root


def state(idx: Path) -> dict[str, tuple[bytes, str]]:
    """path -> (code, sha256) of the live generation, read through the catalog and the codes file."""
    store = IndexStore(idx)
    with store.reading() as gen, gen.catalog() as cat:
        index = load_index(gen.codes_path, mmap=False)
        files = cat.all_files()
    by_id = {i: bytes(c) for i, c in zip(index.ids.tolist(), index.codes())}
    assert len(by_id) == len(files)
    return {rel: (by_id[row[0]], row[3]) for rel, row in files.items()}


# -- defect 1: one error path ------------------------------------------------------------------------


def test_missing_model_is_a_message_not_a_traceback(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    q = folder / "img0.png"
    assert_clean_error(run("query", q, "--model", tmp_path / "missing.onnx", "--index", idx, ok=False), "missing.onnx")


@pytest.mark.parametrize("args", [
    ["index", "info", "--index", "{tmp}/nope"],
    ["index", "build", "{tmp}/no-such-folder", "--index", "{tmp}/idx2"],
    ["index", "build", "{tmp}/imgs", "--index", "{tmp}/idx", "--model", "{tmp}/imgs/img0.png"],
    ["query", "{tmp}/imgs/img0.png", "--index", "{tmp}/nope"],
    ["index", "verify", "--index", "{tmp}/nope"],
])
def test_user_mistakes_are_one_line_errors(tmp_path, args):
    make_folder(tmp_path / "imgs")
    assert_clean_error(run(*[a.format(tmp=tmp_path) for a in args], ok=False))


def test_bad_threads_env_is_an_error_message(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    r = run("index", "build", folder, "--index", tmp_path / "idx", ok=False, env={"HASHTOOL_THREADS": "many"})
    assert_clean_error(r, "HASHTOOL_THREADS")
    r = run("index", "build", folder, "--index", tmp_path / "idx", "--threads", "0", ok=False)
    assert r.exit_code == 2 and "positive" in r.output


def test_real_process_prints_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hashtool", "query", str(tmp_path / "x.png"), "--model",
                          str(tmp_path / "missing.onnx"), "--index", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr and out.stderr.startswith("Error: ")
    assert len(out.stderr.strip().splitlines()) == 1


# -- defect 2: an unreadable folder is a failure, not a deletion -------------------------------------


def test_unlistable_folder_keeps_its_entries(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    before = state(idx)
    assert any(p.startswith("sub/") for p in before)
    real = os.scandir
    blocked = str((folder / "sub").resolve())

    def scandir(path="."):
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    r = run("index", "build", folder, "--index", idx, "--json")
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert state(idx) == before  # nothing under sub/ dropped
    assert report["removed"] == 0 and report["failed"] >= 1
    assert "sub" in r.stderr and "Permission denied" in r.stderr


def test_unstatable_file_keeps_its_entry(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "--follow-symlinks", "-q")
    before = state(idx)
    target = folder / "img0.png"
    target.rename(tmp_path / "away.png")
    os.symlink(tmp_path / "gone.png", target)  # dangling: the walk cannot stat it
    r = run("index", "build", folder, "--index", idx, "--json")
    assert state(idx) == before
    assert "img0.png" in r.stderr


# -- defect 3: hash and code of the same bytes ---------------------------------------------------------


def test_file_changing_during_the_build_gets_the_hash_of_what_was_encoded(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs", n=2)
    victim = folder / "img0.png"
    old_bytes = victim.read_bytes()
    from PIL import ImageFile

    real_load = ImageFile.ImageFile.load
    done = []

    def load_then_rewrite(self):  # the file is rewritten right after its pixels are decoded
        out = real_load(self)
        if not done:
            done.append(1)
            victim.write_bytes(new_bytes)
        return out

    buf = __import__("io").BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, "PNG")
    new_bytes = buf.getvalue()
    folder.joinpath("sub", "img1.png").unlink()  # one file: the first decode is img0's
    monkeypatch.setattr(ImageFile.ImageFile, "load", load_then_rewrite)
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    monkeypatch.undo()
    code, sha = state(idx)["img0.png"]
    assert sha == hashlib.sha256(old_bytes).hexdigest()  # the bytes that were decoded, not the new ones
    # and the next build sees the change (size/mtime differ, sha differs) and re-encodes
    report = json.loads(run("index", "build", folder, "--index", idx, "--json").stdout.strip().splitlines()[-1])
    assert state(idx)["img0.png"][1] == hashlib.sha256(victim.read_bytes()).hexdigest()
    assert report["updated"] + report["touched"] >= 1


# -- defect 4: walk options are kept ---------------------------------------------------------------------


def test_exclude_and_follow_symlinks_are_stored_and_reused(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    (folder / "skip").mkdir()
    Image.new("L", (28, 28), 9).save(folder / "skip" / "x.png")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "--exclude", "skip", "-q")
    assert not any(p.startswith("skip/") for p in state(idx))
    run("index", "build", folder, "--index", idx, "-q")  # no --exclude: the stored one
    assert not any(p.startswith("skip/") for p in state(idx))
    run("dups", folder, "--index", idx, "-q")  # dups rebuilds first: also with the stored options
    assert not any(p.startswith("skip/") for p in state(idx))
    run("index", "build", folder, "--index", idx, "--no-exclude", "-q")
    assert any(p.startswith("skip/") for p in state(idx))


# -- defect 6: one writer at a time; readers keep their generation ----------------------------------------


def test_second_writer_with_no_wait_fails_at_once(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    fd = os.open(idx / "LOCK", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another build would hold it
        (folder / "img0.png").unlink()
        r = run("index", "build", folder, "--index", idx, "--no-wait", ok=False)
        assert_clean_error(r, "another process", "--no-wait")
    finally:
        os.close(fd)
    assert "img0.png" in state(idx)  # the refused build changed nothing
    run("index", "build", folder, "--index", idx, "--no-wait", "-q")
    assert "img0.png" not in state(idx)


def test_second_writer_waits_for_the_first(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    fd = os.open(idx / "LOCK", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    proc = subprocess.Popen([sys.executable, "-m", "hashtool", "index", "build", str(folder), "--index", str(idx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # blocked on the lock, not failed
    finally:
        os.close(fd)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "waiting" in err


def test_a_generation_held_by_a_reader_is_kept_until_released(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    store = IndexStore(idx)
    with store.reading() as gen:
        (folder / "img0.png").unlink()
        report = json.loads(run("index", "build", folder, "--index", idx, "--json").stdout.strip().splitlines()[-1])
        assert report["kept_generations"] == [gen.name]
        assert gen.catalog_path.is_file() and gen.codes_path.is_file()  # still readable
        with gen.catalog() as cat:
            assert "img0.png" in cat.all_files()
    run("index", "build", folder, "--index", idx, "-q")  # nothing to write, but it collects
    assert not gen.path.exists()  # collected once released
    assert sorted(p.name for p in idx.iterdir() if p.name.startswith("gen-")) == [store.current().name]


def test_reader_starts_over_when_its_generation_is_collected(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    store = IndexStore(idx)
    first = store.current()
    real_current = IndexStore.current
    calls = []

    def current_then_rebuild(self):
        gen = real_current(self)
        if not calls:  # a writer commits and collects between reading CURRENT and taking the lock
            calls.append(gen.name)
            (folder / "img0.png").unlink()
            monkeypatch.setattr(IndexStore, "current", real_current)
            run("index", "build", folder, "--index", idx, "-q")
            monkeypatch.setattr(IndexStore, "current", current_then_rebuild)
        return gen

    monkeypatch.setattr(IndexStore, "current", current_then_rebuild)
    with store.reading() as gen:
        assert gen.name != first.name and gen.catalog_path.is_file()


# -- a write that fails half way -------------------------------------------------------------------------


def test_disk_full_half_way_leaves_the_old_index(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    before = state(idx)
    gens_before = sorted(p.name for p in idx.iterdir())
    from hashtool.hashindex import FlatIndex

    def save_half(self, path):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(FlatIndex, "save", save_half)
    (folder / "img0.png").unlink()
    r = run("index", "build", folder, "--index", idx, ok=False)
    assert_clean_error(r, "No space left on device", "codes.hidx")
    monkeypatch.undo()
    assert state(idx) == before
    assert sorted(p.name for p in idx.iterdir()) == gens_before  # the half-written generation is gone
    assert run("index", "verify", "--index", idx).exit_code == 0


# -- index verify ------------------------------------------------------------------------------------------


def test_verify_finds_what_is_wrong(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    ok = json.loads(run("index", "verify", "--index", idx, "--json", "--files").stdout)
    assert ok["ok"] and ok["count"] == 6 and ok["problems"] == []
    gen = IndexStore(idx).current()

    # a catalog row without a code
    import sqlite3

    saved = gen.catalog_path.read_bytes()
    conn = sqlite3.connect(gen.catalog_path)
    conn.execute("INSERT INTO files (id, path, size, mtime_ns, sha256) VALUES (999, 'ghost.png', 1, 1, ?)", ("0" * 64,))
    conn.commit()
    conn.close()
    r = run("index", "verify", "--index", idx, "--json", ok=False)
    bad = json.loads(r.stdout)
    assert r.exit_code == 1 and not bad["ok"] and any("no code" in p for p in bad["problems"])
    assert any("next_id" in p for p in bad["problems"])
    gen.catalog_path.write_bytes(saved)

    # a flipped byte in the codes file
    codes = bytearray(gen.codes_path.read_bytes())
    codes[-5] ^= 0xFF
    gen.codes_path.write_bytes(bytes(codes))
    r = run("index", "verify", "--index", idx, ok=False)
    assert r.exit_code == 1 and "codes.hidx" in r.stdout
    codes[-5] ^= 0xFF
    gen.codes_path.write_bytes(bytes(codes))

    # another encoder in place of the index's own
    enc = gen.encoder_path.read_bytes()
    gen.encoder_path.unlink()  # it may be a hard link to the bundled file: never write through it
    gen.encoder_path.write_bytes(enc + b"\0")
    r = run("index", "verify", "--index", idx, ok=False)
    assert r.exit_code == 1 and "encoder sha256" in r.stdout
    gen.encoder_path.unlink()
    gen.encoder_path.write_bytes(enc)

    # a changed image is a note, not a problem
    Image.new("L", (28, 28), 1).save(folder / "img0.png")
    res = json.loads(run("index", "verify", "--index", idx, "--json", "--files").stdout)
    assert res["ok"] and any("img0.png" in n and "changed" in n for n in res["notes"])


def test_copy_of_index_is_independent(tmp_path):
    """Sanity for the helpers above: state() reads exactly what a build wrote."""
    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    shutil.copytree(idx, tmp_path / "copy")
    assert state(tmp_path / "copy") == state(idx) and len(state(idx)) == 6


def test_a_waiting_build_opens_the_index_encoder_safely(tmp_path, monkeypatch):
    """A build that picks the index's own encoder while another build commits and collects the old
    generation still opens it (it holds the readers' lock while opening)."""
    import hashtool.cli.index as cli_index

    folder = make_folder(tmp_path / "imgs")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    real_open = cli_index.open_encoder
    raced = []

    def open_after_a_concurrent_build(path, threads):
        if not raced:
            raced.append(path)
            (folder / "img0.png").unlink()
            run("index", "build", folder, "--index", idx, "-q")  # commits a new generation, collects the old
        return real_open(path, threads)

    monkeypatch.setattr(cli_index, "open_encoder", open_after_a_concurrent_build)
    (folder / "img2.png").unlink()
    run("index", "build", folder, "--index", idx, "-q")
    assert raced and not any(p in state(idx) for p in ("img0.png", "img2.png"))
