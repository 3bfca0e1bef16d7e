"""`hashtool watch` as a real process: files added and removed reach the index; SIGTERM and SIGINT stop it cleanly."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hashtool.store.store import IndexStore

try:
    import watchdog  # noqa: F401
except ImportError:
    watchdog = None

DATA = Path(__file__).parent / "data" / "images" / "fmnist"


def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def indexed(idx) -> set[str]:
    store = IndexStore(idx)
    if store.current_or_none() is None:
        return set()
    with store.current().catalog() as cat:
        return set(cat.all_files())


@pytest.mark.skipif(watchdog is None, reason="hashtool watch needs watchdog (the [watch] extra, also in [dev])")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_follows_changes_and_stops_cleanly(tmp_path, sig):
    folder, idx, err = tmp_path / "photos", tmp_path / "idx", tmp_path / "stderr.txt"
    shutil.copytree(DATA, folder)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with open(err, "w") as ferr:
        proc = subprocess.Popen([sys.executable, "-m", "hashtool", "watch", str(folder), "--index", str(idx), "--debounce", "0.3"],
                                stdout=subprocess.PIPE, stderr=ferr, text=True, env=env)
    try:
        wait_for(lambda: "watching" in err.read_text(), "the watcher to start")
        assert len(indexed(idx)) == 5
        shutil.copy(DATA / "bags" / "bag_8.png", folder / "new_bag.png")
        wait_for(lambda: "new_bag.png" in indexed(idx), "the new file in the index")
        (folder / "shoes" / "ankle_boot_0.png").unlink()
        (folder / "tops").rename(folder / "upper")  # a moved folder: old paths go, new ones come
        wait_for(lambda: indexed(idx) >= {"new_bag.png", "upper/pullover_1.png"} and "shoes/ankle_boot_0.png" not in indexed(idx),
                 "the removal and the move in the index")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.read_text()
    assert "stopped; the index is complete" in err.read_text() and "Traceback" not in err.read_text()
    assert len(out.strip().splitlines()) >= 3  # the first build and at least two batches, one line each
    assert len(indexed(idx)) == 5  # 5 - 1 + 1


def test_without_watchdog_says_what_to_install(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hashtool.cli import main

    for name in [m for m in sys.modules if m == "watchdog" or m.startswith("watchdog.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "watchdog", None)  # import watchdog now raises ImportError
    r = CliRunner().invoke(main, ["watch", str(tmp_path), "--index", str(tmp_path / "idx")])
    assert r.exit_code == 1 and "pip install 'hashtool[watch]'" in r.output
    assert not (tmp_path / "idx").exists()
