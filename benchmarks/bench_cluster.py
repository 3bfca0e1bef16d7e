"""What a Dask cluster costs and buys: build throughput, the client's own per-file cost, sharded search.

Protocol (one machine; a LocalCluster's workers share its cores with the client and the scheduler):
* images: Fashion-MNIST test images as 28x28 PNG files (`hashtool data export fashion-mnist DIR --limit N`);
  bundled default encoder (64 bits).
* build: `store.build.build` of the folder into a fresh index, (a) locally with the CLI's encoder
  (onnxruntime on `--threads` threads) and (b) through `hashtool.cluster.dask_encode_files` on a
  `local:W` cluster (W worker processes, 1 task thread and CPUs/W onnxruntime threads each): first build
  (workers open the encoder) and a second build into another fresh index (encoder cached on the workers).
  Cluster start-up is timed apart. Results are checked equal (codes, catalog rows, failures).
* client cost: a folder of M empty `.png` files; time (a) `walk_images`, (b) `dask_encode_files` with a
  no-op worker function (returns a zero code per path) on the same cluster: cutting into tasks,
  submitting, gathering, putting answers back in order (wall time, and CPU time of this process, which
  also runs the LocalCluster's scheduler), and (c) a whole `build()` with a no-op local
  encoder (walk, plan, sha256 of every file on the client, catalog, index write).
* search: N uniform random 64-bit codes; `FlatIndex` (T threads) against `ShardedIndex` of S shards (local
  threads, T in all) and `DaskShardedIndex` (S shard actors opened from the saved shard files on the
  W workers); nq = 1 and 100 queries, k = 10; median of R runs after one warm-up; answers checked equal.

Usage: python benchmarks/bench_cluster.py [--images 2000] [--workers 2] [--client-files 50000]
       [--codes 10000000] [--shards 4] [--out benchmarks/results/cluster.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def noop_batch(blob, sha256, paths, batch_size, threads=None):
    """A worker that encodes nothing: one zero 32-bit code (the bundled encoder's width) per path."""
    return np.zeros((len(paths), 4), np.uint8), np.arange(len(paths), dtype=np.int64), [], ["0" * 64] * len(paths)


def export_images(folder: Path, n: int) -> None:
    subprocess.run([sys.executable, "-m", "hashtool", "data", "export", "fashion-mnist", str(folder), "--limit", str(n), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)


def catalog_rows(store):
    import sqlite3

    conn = sqlite3.connect(store.current().catalog_path)
    try:
        return (conn.execute("SELECT id, path, size, mtime_ns, sha256 FROM files ORDER BY id").fetchall(),
                conn.execute("SELECT path, reason FROM failures ORDER BY path").fetchall())
    finally:
        conn.close()


def bench_build(client, folder: Path, work: Path, threads: int) -> dict:
    from hashtool.cli._common import encode_files_fn
    from hashtool.cluster import dask_encode_files
    from hashtool.encode import SUPPORTED_EXTENSIONS, Encoder
    from hashtool.store import bundled_encoder_path
    from hashtool.store.build import EncoderInfo, build
    from hashtool.store.store import IndexStore

    enc = Encoder(bundled_encoder_path("fashion-mnist"), threads=threads)
    info = EncoderInfo(path=str(enc.path), sha256=enc.sha256, nbits=enc.nbits, method=enc.method)
    out = {}
    runs = [("local", encode_files_fn(enc)), ("cluster_first", dask_encode_files(client, enc)),
            ("cluster_second", dask_encode_files(client, enc))]
    for name, fn in runs:
        store = IndexStore(work / f"idx-{name}")
        t0 = time.perf_counter()
        rep = build(folder, store, info, fn, extensions=SUPPORTED_EXTENSIONS, threads=threads)
        wall = time.perf_counter() - t0
        out[name] = {"wall_s": wall, "encode_s": rep.encode_seconds, "images": rep.encoded,
                     "images_per_s": rep.encoded / wall, "encode_images_per_s": rep.encoded / rep.encode_seconds}
        print(f"build {name}: {rep.encoded} images in {wall:.2f} s ({rep.encoded / wall:.0f}/s; encoding {rep.encoded / rep.encode_seconds:.0f}/s)", flush=True)
    want = catalog_rows(IndexStore(work / "idx-local"))
    out["identical"] = all(catalog_rows(IndexStore(work / f"idx-{n}")) == want for n in ("cluster_first", "cluster_second"))
    from hashtool.hashindex import load_index

    codes = [load_index(IndexStore(work / f"idx-{n}").current().codes_path).codes().tobytes() for n, _ in runs]
    out["identical"] = out["identical"] and len(set(codes)) == 1
    return out


def bench_client(client, work: Path, n_files: int) -> dict:
    from hashtool.cluster import dask_encode_files
    from hashtool.cluster.encode import FILES_PER_TASK
    from hashtool.encode import Encoder
    from hashtool.store import bundled_encoder_path
    from hashtool.store.build import EncoderInfo, build
    from hashtool.store.store import IndexStore
    from hashtool.files.walk import walk_images

    folder = work / "empty"
    for d in range(n_files // 1000 + 1):
        (folder / f"d{d:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (folder / f"d{i // 1000:03d}" / f"{i:07d}.png").touch()
    out = {"files": n_files, "files_per_task": FILES_PER_TASK}
    t0 = time.perf_counter()
    walked = walk_images(folder, [".png"])
    out["walk_s"] = time.perf_counter() - t0
    paths = [str(walked.root / f.rel) for f in walked.files]
    enc = Encoder(bundled_encoder_path("fashion-mnist"), threads=1)
    fn = dask_encode_files(client, enc, batch_fn=noop_batch)
    fn(paths[:1000], lambda n: None)  # warm: the encoder bytes reach the workers, the function is pickled
    t0, c0 = time.perf_counter(), time.process_time()
    codes, positions, failures, _ = fn(paths, lambda n: None)
    out["dispatch_gather_s"] = time.perf_counter() - t0
    out["dispatch_gather_cpu_s"] = time.process_time() - c0  # this process: client + LocalCluster's scheduler thread
    assert codes.shape == (n_files, 4) and len(positions) == n_files and not failures
    info = EncoderInfo(path=str(enc.path), sha256=enc.sha256, nbits=32, method="noop")
    local_noop = lambda p, progress: noop_batch(None, None, p, 0)  # noqa: E731
    t0 = time.perf_counter()
    build(folder, IndexStore(work / "idx-noop"), info, local_noop, extensions=[".png"])
    out["build_noop_s"] = time.perf_counter() - t0
    for k in ("walk_s", "dispatch_gather_s", "dispatch_gather_cpu_s", "build_noop_s"):
        out[k.replace("_s", "_files_per_s")] = n_files / out[k]
    print(f"client: walk {out['walk_files_per_s']:.0f} files/s, dispatch+gather {out['dispatch_gather_files_per_s']:.0f} files/s "
          f"({out['dispatch_gather_cpu_files_per_s']:.0f} per CPU second of client + scheduler), "
          f"whole no-op build {out['build_noop_files_per_s']:.0f} files/s", flush=True)
    return out


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_search(client, work: Path, n: int, shards: int, threads: int, repeats: int) -> dict:
    from hashtool.cluster import DaskShardedIndex
    from hashtool.hashindex import FlatIndex, ShardedIndex

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    queries = {1: rng.integers(0, 256, size=(1, 8), dtype=np.uint8), 100: rng.integers(0, 256, size=(100, 8), dtype=np.uint8)}
    flat = FlatIndex(64, threads=threads)
    flat.add(codes)
    sharded = ShardedIndex(64, shard_size=-(-n // shards), threads=threads)
    sharded.add(codes)
    del codes
    sharded.save(work / "codes.shards")
    remote = DaskShardedIndex.open(client, work / "codes.shards")
    out = {"codes": n, "shards": shards, "threads": threads, "repeats": repeats}
    for nq, q in queries.items():
        want = flat.search(q, 10)
        for name, index in (("flat", flat), ("sharded_threads", sharded), ("sharded_dask", remote)):
            got = index.search(q, 10)
            assert all(np.array_equal(a, b) for a, b in zip(got, want)), name
            out[f"{name}_nq{nq}_ms"] = 1000 * _median_time(lambda: index.search(q, 10), repeats)
        print(f"search nq={nq}: flat {out[f'flat_nq{nq}_ms']:.1f} ms, sharded (threads) {out[f'sharded_threads_nq{nq}_ms']:.1f} ms, "
              f"sharded (dask actors) {out[f'sharded_dask_nq{nq}_ms']:.1f} ms", flush=True)
    remote.close()
    return out


def markdown(r: dict) -> str:
    """The tables of RESULTS.md's Cluster section from a result dict."""
    b, c, s = r["build"], r["client"], r["search"]
    lines = [
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in r['load_before'])}; after: "
        f"{', '.join(f'{x:.2f}' for x in r['load_after'])}. Cluster start-up ({r['args']['workers']} workers): {r['cluster_start_s']:.1f} s.",
        "",
        "| build of the folder | wall s | images/s (whole build) | images/s (encoding) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in ("local", "cluster_first", "cluster_second"):
        x = b[name]
        lines.append(f"| {name} | {x['wall_s']:.2f} | {x['images_per_s']:.0f} | {x['encode_images_per_s']:.0f} |")
    lines += [
        "",
        f"Results identical to the local build (codes, catalog rows, failures): {b['identical']}.",
        "",
        f"| client cost, {c['files']} files, {c['files_per_task']} per task | s | files/s |",
        "| --- | ---: | ---: |",
        f"| walk (`walk_images`) | {c['walk_s']:.2f} | {c['walk_files_per_s']:.0f} |",
        f"| cut, submit, gather, assemble (no-op workers), wall | {c['dispatch_gather_s']:.2f} | {c['dispatch_gather_files_per_s']:.0f} |",
        f"| the same, CPU of client + scheduler | {c['dispatch_gather_cpu_s']:.2f} | {c['dispatch_gather_cpu_files_per_s']:.0f} |",
        f"| whole `build()` with a no-op local encoder | {c['build_noop_s']:.2f} | {c['build_noop_files_per_s']:.0f} |",
        "",
        f"| search, {s['codes']:,} x 64 bits, k = 10 | nq = 1, ms | nq = 100, ms |",
        "| --- | ---: | ---: |",
    ]
    for name, label in (("flat", f"FlatIndex, {s['threads']} threads"), ("sharded_threads", f"ShardedIndex, {s['shards']} shards, threads"),
                        ("sharded_dask", f"DaskShardedIndex, {s['shards']} shard actors")):
        lines.append(f"| {label} | {s[f'{name}_nq1_ms']:.1f} | {s[f'{name}_nq100_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the local build and of the single index")
    ap.add_argument("--client-files", type=int, default=50_000)
    ap.add_argument("--codes", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cluster.json"))
    args = ap.parse_args(argv)

    from hashtool.cluster import connect

    result = {"args": {k: str(v) for k, v in vars(args).items()}, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        export_images(work / "images", args.images)
        t0 = time.perf_counter()
        with connect(f"local:{args.workers}") as client:
            client.wait_for_workers(args.workers, timeout=120)
            result["cluster_start_s"] = time.perf_counter() - t0
            print(f"cluster of {args.workers} workers up in {result['cluster_start_s']:.1f} s", flush=True)
            result["build"] = bench_build(client, work / "images", work, args.threads)
            result["client"] = bench_client(client, work, args.client_files)
            result["search"] = bench_search(client, work, args.codes, args.shards, args.threads, args.repeats)
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out}; load average before {result['load_before']}, after {result['load_after']}")


if __name__ == "__main__":
    main()
