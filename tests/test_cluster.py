"""Distributed build and sharded search on a 2-process LocalCluster (loopback only), against local twins.

One cluster serves the module (started and torn down by the fixture, every wait bounded); the test that
kills a worker runs last, and the cluster's nanny restarts the worker it killed.
"""

import os
import shutil
import signal
import sqlite3
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

distributed = pytest.importorskip("distributed")

from hashtool.cli._common import encode_files_fn  # noqa: E402
from hashtool.cluster import DaskShardedIndex, dask_encode_files  # noqa: E402
from hashtool.encode import SUPPORTED_EXTENSIONS, Encoder  # noqa: E402
from hashtool.errors import ArgumentError, ClusterError  # noqa: E402
from hashtool.hashindex import FlatIndex, ShardedIndex, load_index  # noqa: E402
from hashtool.store import default_encoder_path  # noqa: E402
from hashtool.store.build import EncoderInfo, build  # noqa: E402
from hashtool.store.store import IndexStore  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "images")
TIMEOUT = 60


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP server: loopback, any free port
        silence_logs=50, env={"HASHTOOL_THREADS": "1"}, timeout=TIMEOUT,
    )
    c = distributed.Client(cluster, timeout=TIMEOUT)
    c.wait_for_workers(2, timeout=TIMEOUT)
    yield c
    c.close(timeout=TIMEOUT)
    cluster.close(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def encoder():
    return Encoder(default_encoder_path(), threads=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The committed test images (corrupt ones included) plus 150 generated PNGs in nested folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    shutil.copytree(DATA, root / "data")
    rng = np.random.default_rng(0)
    for i in range(150):
        sub = root / "gen" / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(24 + i % 9, 20 + i % 5, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    return root


def _info(encoder):
    return EncoderInfo(path=str(encoder.path), sha256=encoder.sha256, nbits=encoder.nbits, method=encoder.method)


def _state(store):
    """Everything a build decides: codes by id, catalog rows, failures and meta (but the time of day)."""
    gen = store.current()
    index = load_index(gen.codes_path, mmap=False)
    conn = sqlite3.connect(gen.catalog_path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key != 'updated'").fetchall())
    finally:
        conn.close()
    return {"ids": index.ids.tolist(), "codes": index.codes().tobytes(), "meta": meta, **_state_catalog(store)}


def _build(folder, path, encoder, encode_files, progress=None):
    return build(folder, IndexStore(path), _info(encoder), encode_files, extensions=SUPPORTED_EXTENSIONS, progress=progress)


@given(st.integers(0, 60), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_assemble_puts_task_answers_back_in_path_order(n, per_task, seed):
    """Against the one-piece answer: random failures, random task size, answers of 0..per_task codes."""
    from hashtool.cluster.encode import assemble

    rng = np.random.default_rng(seed)
    failed = rng.random(n) < 0.3
    codes = rng.integers(0, 256, size=(n, 4), dtype=np.uint8)
    want_pos = np.flatnonzero(~failed)
    want_fail = [(int(i), f"reason {i}") for i in np.flatnonzero(failed)]
    starts = list(range(0, n, per_task))
    answers = []
    for s in starts:
        local = np.arange(s, min(n, s + per_task))
        ok = local[~failed[local]]
        answers.append((codes[ok], ok - s, [(int(i - s), f"reason {i}") for i in local[failed[local]]], [f"h{i}" for i in ok]))
    if not starts:
        return
    got_codes, got_pos, got_fail, got_hashes = assemble(answers, starts, 4)
    np.testing.assert_array_equal(got_pos, want_pos)
    np.testing.assert_array_equal(got_codes, codes[want_pos])
    assert got_fail == want_fail
    assert got_hashes == [f"h{i}" for i in want_pos]


def test_distributed_encode_returns_what_the_local_encoder_returns(client, encoder, folder):
    from hashtool.files.walk import walk_images

    paths = [str(folder / f.rel) for f in walk_images(folder, SUPPORTED_EXTENSIONS).files]
    seen = []
    local = encode_files_fn(encoder)(paths, lambda n: None)
    remote = dask_encode_files(client, encoder, files_per_task=11, timeout=TIMEOUT)(paths, seen.append)
    np.testing.assert_array_equal(remote[0], local[0])
    np.testing.assert_array_equal(remote[1], local[1])
    assert remote[2] == local[2]
    assert remote[3] == local[3]  # the sha256 of the bytes each worker decoded
    assert len(local[2]) >= 5  # the corrupt test images are among them
    assert seen == sorted(seen) and seen[-1] == len(paths)  # progress counts up to every file


def test_the_same_paths_encoded_again_at_once_do_not_hang(client, encoder, folder):
    """Runs back to back submit the same work while the scheduler may still be forgetting the last run's keys."""
    paths = sorted(str(p) for p in (folder / "gen").rglob("*.png"))[:40]
    fn = dask_encode_files(client, encoder, files_per_task=5, timeout=TIMEOUT)
    first = fn(paths, lambda n: None)
    for _ in range(4):
        again = fn(paths, lambda n: None)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])


def test_distributed_build_equals_local_build_and_updates_incrementally(client, encoder, folder, tmp_path):
    local = _build(folder, tmp_path / "local", encoder, encode_files_fn(encoder))
    remote = _build(folder, tmp_path / "remote", encoder, dask_encode_files(client, encoder, files_per_task=16, timeout=TIMEOUT))
    assert _state(IndexStore(tmp_path / "remote")) == _state(IndexStore(tmp_path / "local"))
    assert (remote.total, remote.failed, remote.failures) == (local.total, local.failed, local.failures)
    # an incremental update through the cluster: only the new file is sent to the workers
    from PIL import Image

    extra = folder / "gen" / "late.png"
    Image.fromarray(np.full((9, 9, 3), 77, np.uint8)).save(extra)
    try:
        again = _build(folder, tmp_path / "remote", encoder, dask_encode_files(client, encoder, timeout=TIMEOUT))
        fresh = _build(folder, tmp_path / "fresh", encoder, encode_files_fn(encoder))
    finally:
        extra.unlink()
    assert again.added == 1 and again.encoded == 1
    assert _state(IndexStore(tmp_path / "remote"))["codes"] == _state(IndexStore(tmp_path / "fresh"))["codes"]


def test_sharded_search_on_actors_equals_flat_index(client, tmp_path):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, size=(40, 8), dtype=np.uint8)
    codes = base[rng.integers(0, 40, size=3000)]  # many ties
    ids = rng.permutation(100_000)[:3000]
    sharded = ShardedIndex(64, shard_size=700)
    sharded.add(codes, ids)
    sharded.save(tmp_path / "codes.shards")
    flat = FlatIndex(64)
    flat.add(codes, ids)
    queries = np.concatenate([base[:5], rng.integers(0, 256, size=(5, 8), dtype=np.uint8)])
    for remote in (DaskShardedIndex.open(client, tmp_path / "codes.shards"), DaskShardedIndex.from_index(client, sharded)):
        with remote:
            assert len(remote) == 3000 and remote.nbits == 64
            for k in (1, 17, 4000):
                for got, want in zip(remote.search(queries, k), flat.search(queries, k)):
                    np.testing.assert_array_equal(got, want)
            for r in (0, 20, 64):
                for got, want in zip(remote.range_search(queries, r), flat.range_search(queries, r)):
                    np.testing.assert_array_equal(got, want)
            with pytest.raises(ArgumentError, match="k must be"):
                remote.search(queries, 0)


def test_a_task_that_fails_everywhere_is_a_cluster_error_not_a_hang(client, encoder, folder):
    def boom(*args):
        raise ArgumentError("the worker refused")

    with pytest.raises(ArgumentError, match="the worker refused"):
        dask_encode_files(client, encoder, timeout=TIMEOUT, batch_fn=boom)([str(folder / "gen" / "d0" / "0.png")], lambda n: None)

    def slow(*args):
        time.sleep(2)

    with pytest.raises(ClusterError, match="in the 0.5 s allowed"):
        dask_encode_files(client, encoder, timeout=0.5, batch_fn=slow)([str(folder / "gen" / "d0" / "7.png")], lambda n: None)


def test_a_killed_worker_mid_build_loses_nothing(client, encoder, folder, tmp_path):
    """SIGKILL one worker process after the first batch: its tasks run again elsewhere, nothing is missing."""
    pids = client.run(os.getpid)
    assert len(pids) == 2
    victim = sorted(pids.values())[0]
    killed = []

    def progress(done, total):
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append((done, total))

    remote = _build(folder, tmp_path / "remote", encoder, dask_encode_files(client, encoder, files_per_task=4, timeout=TIMEOUT),
                    progress=progress)
    local = _build(folder, tmp_path / "local", encoder, encode_files_fn(encoder))
    assert killed and killed[0][0] < killed[0][1]  # the kill came while batches were still outstanding
    client.wait_for_workers(2, timeout=TIMEOUT)  # the nanny restarted it
    assert victim not in client.run(os.getpid).values()
    assert _state(IndexStore(tmp_path / "remote")) == _state(IndexStore(tmp_path / "local"))
    assert remote.total == local.total and remote.failures == local.failures


def test_a_shard_actor_on_a_killed_worker_is_a_cluster_error(client):
    index = ShardedIndex(64, shard_size=30)
    index.add(np.random.default_rng(5).integers(0, 256, size=(120, 8), dtype=np.uint8))
    remote = DaskShardedIndex.from_index(client, index)
    np.testing.assert_array_equal(remote.search(index.codes()[:3], 4)[1], index.search(index.codes()[:3], 4)[1])
    os.kill(sorted(client.run(os.getpid).values())[0], signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT
    with pytest.raises(ClusterError, match="open the index again"):
        while time.monotonic() < deadline:  # until the scheduler has noticed the death
            remote.search(index.codes()[:3], 4)
            time.sleep(0.2)
    client.wait_for_workers(2, timeout=TIMEOUT)


def test_cli_scheduler_local_and_env_var_match_a_local_build(folder, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hashtool.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["index", "build", str(folder), "--index", str(tmp_path / "local"), "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["index", "build", str(folder), "--index", str(tmp_path / "remote"), "--scheduler", "local:2",
                             "--shard-size", "40"])
    assert r.exit_code == 0, r.output
    assert "encoding on 2 Dask worker(s) of local:2" in r.output  # stderr is mixed in by CliRunner
    remote, local = IndexStore(tmp_path / "remote"), IndexStore(tmp_path / "local")
    assert remote.current().shards_path.is_file()
    # the catalogs agree row for row; the sharded codes equal the single file's
    want, got = _state(local), {**_state_catalog(remote), "codes": remote.current().open_codes().codes().tobytes()}
    assert {k: got[k] for k in ("files", "failures", "codes")} == {k: want[k] for k in ("files", "failures", "codes")}

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "local:nope")
    r = runner.invoke(main, ["index", "build", str(folder), "--index", str(tmp_path / "env")])
    assert r.exit_code != 0 and "local:N" in r.output


def _state_catalog(store):
    conn = sqlite3.connect(store.current().catalog_path)
    try:
        return {
            "files": conn.execute("SELECT id, path, size, mtime_ns, sha256 FROM files ORDER BY id").fetchall(),
            "failures": conn.execute("SELECT path, reason FROM failures ORDER BY path").fetchall(),
        }
    finally:
        conn.close()


def test_addresses_are_checked_and_an_unreachable_scheduler_is_named():
    from hashtool.cluster import connect, parse_address

    assert parse_address("local:3") == ("local", 3)
    assert parse_address(" tcp://10.0.0.5:8786 ") == ("remote", "tcp://10.0.0.5:8786")
    for bad in ("", "local:0", "local", "localhost4"):
        with pytest.raises(ArgumentError):
            parse_address(bad)
    with pytest.raises(ClusterError, match="tcp://127.0.0.1:9"):
        with connect("tcp://127.0.0.1:9", timeout=2):
            pass


def test_real_process_with_local_workers(tmp_path):
    """`hashtool index build --scheduler local:2` as a user runs it: the worker processes start from the CLI."""
    import subprocess
    import sys

    shutil.copytree(DATA, tmp_path / "img")
    cmd = [sys.executable, "-m", "hashtool", "index", "build", str(tmp_path / "img"), "--json", "--quiet"]
    out = subprocess.run(cmd + ["--index", str(tmp_path / "remote"), "--scheduler", "local:2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    local = subprocess.run(cmd + ["--index", str(tmp_path / "local")], capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    assert _state(IndexStore(tmp_path / "remote"))["codes"] == _state(IndexStore(tmp_path / "local"))["codes"]
    assert _state_catalog(IndexStore(tmp_path / "remote")) == _state_catalog(IndexStore(tmp_path / "local"))
