"""End-to-end timings of the `hashtool` command as a user runs it (fresh processes, real files).

Protocol:
* images: Fashion-MNIST training images written as 28x28 PNG files in class folders
  (`hashtool data export fashion-mnist DIR --part train --limit N`), N = 10,000 and 60,000;
* `hashtool index build DIR` with the bundled default encoder: first build, then a re-build after
  rewriting 1% of the files with different pixels (so they must be re-encoded);
* `hashtool query IMG -k 10` as a fresh process against an index of 1,000,000 codes (clustered random
  codes written through the same store code as a build, with a real catalog), first with an empty
  Numba cache directory (cold) and then again (warm);
* wall time from the parent, peak RSS of the child from GNU time (`%M`).

Usage: python benchmarks/bench_cli.py [--sizes 10000 60000] [--query-codes 1000000] [--out benchmarks/out]
Writes benchmarks/out/bench_cli.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HASHTOOL = [sys.executable, "-m", "hashtool"]


def timed(cmd, env=None) -> dict:
    """Run cmd under GNU time; return wall seconds, peak RSS (MiB) and stdout."""
    t0 = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    rss_kib = int(out.stderr.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mib": rss_kib / 1024, "stdout": out.stdout}


def write_images(folder: Path, n: int) -> None:
    subprocess.run(HASHTOOL + ["data", "export", "fashion-mnist", str(folder), "--part", "train", "--limit", str(n), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)


def change_files(folder: Path, fraction: float, seed: int = 0) -> int:
    from PIL import Image

    files = sorted(folder.rglob("*.png"))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), size=max(1, int(len(files) * fraction)), replace=False)
    for i in chosen:
        arr = np.asarray(Image.open(files[i])).copy()
        arr[: arr.shape[0] // 2] = 255 - arr[: arr.shape[0] // 2]
        Image.fromarray(arr).save(files[i])
    return len(chosen)


def bench_build(n: int, work: Path) -> dict:
    folder = work / f"images-{n}"
    index = work / f"index-{n}"
    write_images(folder, n)
    first = timed(HASHTOOL + ["index", "build", str(folder), "--index", str(index), "--quiet", "--json"])
    changed = change_files(folder, 0.01)
    again = timed(HASHTOOL + ["index", "build", str(folder), "--index", str(index), "--quiet", "--json"])
    r1, r2 = json.loads(first["stdout"]), json.loads(again["stdout"])
    assert r2["updated"] == changed, (r2["updated"], changed)
    return {
        "images": n,
        "first_build_s": first["wall_s"],
        "first_build_peak_rss_mib": first["peak_rss_mib"],
        "first_images_per_s": n / first["wall_s"],
        "changed_files": changed,
        "rebuild_s": again["wall_s"],
        "rebuild_peak_rss_mib": again["peak_rss_mib"],
        "rebuild_ratio": again["wall_s"] / first["wall_s"],
        "structure": r1["structure"],
        "query_image": str(next(folder.rglob("*.png"))),
    }


def make_big_index(n: int, work: Path, query_image: str) -> Path:
    """An index of n clustered codes with a real catalog, written through the store's own writer."""
    from hashtool.encode import Encoder
    from hashtool.store import bundled_encoder_path
    from hashtool.store.build import EncoderInfo, write_generation
    from hashtool.store.store import IndexStore

    enc = Encoder(bundled_encoder_path("fashion-mnist"))
    nbytes = enc.nbits // 8
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 256, (300, nbytes), dtype=np.uint8)
    flips = np.packbits(rng.random((n, enc.nbits)) < 0.1, axis=1, bitorder="little")
    codes = centres[rng.integers(0, 300, n)] ^ flips
    ids = np.arange(n, dtype=np.int64)
    rows = [(i, f"synthetic/{i:07d}.png", 0, 0, "0" * 64) for i in range(n)]
    store = IndexStore(work / "index-big")
    store.create()
    info = EncoderInfo(path=str(bundled_encoder_path("fashion-mnist")), sha256=enc.sha256, nbits=enc.nbits, method=enc.method)
    write_generation(store, None, str(work), info, codes, ids, n, rows, [], [], [], "auto")
    return store.path


def bench_query(index: Path, query_image: str, work: Path) -> dict:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(work / "numba-cache")
    shutil.rmtree(env["NUMBA_CACHE_DIR"], ignore_errors=True)
    cmd = HASHTOOL + ["query", query_image, "-k", "10", "--index", str(index), "--quiet"]
    cold = timed(cmd, env)
    warm = [timed(cmd, env) for _ in range(5)]
    warm_s = sorted(w["wall_s"] for w in warm)
    return {
        "cold_s": cold["wall_s"],
        "warm_median_s": warm_s[len(warm_s) // 2],
        "warm_min_s": warm_s[0],
        "peak_rss_mib": warm[0]["peak_rss_mib"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000])
    ap.add_argument("--query-codes", type=int, default=1_000_000)
    ap.add_argument("--out", default="benchmarks/out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"builds": [], "query": None, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="hashtool-bench-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            r = bench_build(n, work)
            results["builds"].append(r)
            print(json.dumps(r), file=sys.stderr)
        query_image = results["builds"][0]["query_image"]
        big = make_big_index(args.query_codes, work, query_image)
        results["query"] = {"codes": args.query_codes, **bench_query(big, query_image, work)}
        print(json.dumps(results["query"]), file=sys.stderr)
    (out / "bench_cli.json").write_text(json.dumps(results, indent=2))
    lines = ["| images | first build (s) | images/s | peak RSS (MiB) | 1% changed: files | re-build (s) | re-build / first |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["builds"]:
        lines.append(f"| {r['images']:,} | {r['first_build_s']:.1f} | {r['first_images_per_s']:.0f} | {r['first_build_peak_rss_mib']:.0f} "
                     f"| {r['changed_files']} | {r['rebuild_s']:.2f} | {r['rebuild_ratio']:.1%} |")
    q = results["query"]
    lines += ["", f"`hashtool query IMG -k 10` against {q['codes']:,} codes: cold Numba cache {q['cold_s']:.2f} s, "
              f"warm median of 5 {q['warm_median_s']:.2f} s (min {q['warm_min_s']:.2f} s), peak RSS {q['peak_rss_mib']:.0f} MiB"]
    (out / "bench_cli.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
