"""The flat scan against the hardware's floor and faiss, in one run: the table of issue 13.

* **Floor**: the tight Numba XOR+popcount loop of ``bench_floor.py`` (one query against every word of a
  contiguous uint64 array, summing, selecting nothing) over an L1-sized (2,048 words), an 8 MB (1 Mi
  words) and a DRAM-sized (``--dram-mib``, 512 MiB) array, on one core and on two (two threads, each
  scanning the whole shared array). Best of ``--repeat`` timed runs of at least ``--seconds`` each.
* **Flat vs faiss**: FlatIndex and faiss IndexBinaryFlat on ``--n`` uniform random codes of 64, 128 and
  256 bits, ``--batch`` random queries, k = ``--k``, ``--threads`` threads (faiss through
  ``omp_set_num_threads``), each the best of ``--repeat`` calls after a warm-up call, the two methods
  alternating. FlatIndex's answers are checked equal to faiss's distances. Scan rate per core =
  q/s x n x words per code / threads, reported as a share of the one-core L1 floor.
* **Single query**: the median of ``--single`` one-query calls, 64 bits, same n, FlatIndex and faiss,
  with ``--threads`` threads and with one.

Prints a markdown table (with the load average and the command) and appends JSON rows to
``<out>.jsonl`` with ``--out``. ``--asm`` prints the popcount instructions of the scan's inner loop.

    flock /tmp/hashtool-heavy.lock python benchmarks/bench_scan.py --out benchmarks/results/scan-13
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

from bench_floor import best_rate, xor_popcount_sum  # noqa: E402

from hashtool.hashindex import FlatIndex  # noqa: E402


def floor_rates(seconds: float, repeat: int, dram_words: int) -> list[dict]:
    """Words per second of the floor loop, per place, on one core and on two."""
    rng = np.random.default_rng(0)
    a = np.uint64(rng.integers(0, 2**63))
    rows = []
    for where, n in (("L1", 2048), ("8MB", 1 << 20), ("DRAM", dram_words)):
        x = rng.integers(0, 2**63, size=n, dtype=np.uint64)
        one = best_rate(lambda r: xor_popcount_sum(x, a, r), n, 1, seconds, repeat)
        rows.append({"what": "floor", "where": where, "words": n, "cores": 1, "rate": one, "rate_per_core": one})

        def two(reps):  # two threads (the kernel releases the GIL), each over the whole array
            xs = [x if where != "L1" else x.copy() for _ in range(2)]  # L1: one private array per core
            ts = [threading.Thread(target=xor_popcount_sum, args=(xi, a, reps)) for xi in xs]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        both = best_rate(two, 2 * n, 1, seconds, repeat)
        rows.append({"what": "floor", "where": where, "words": n, "cores": 2, "rate": both, "rate_per_core": both / 2})
        del x
    return rows


def best_of(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def flat_vs_faiss(n, nbits_list, batch, k, threads, repeat, l1_floor) -> list[dict]:
    import faiss

    rows = []
    for nbits in nbits_list:
        rng = np.random.default_rng(nbits)
        db = rng.integers(0, 256, size=(n, nbits // 8), dtype=np.uint8)
        q = rng.integers(0, 256, size=(batch, nbits // 8), dtype=np.uint8)
        flat = FlatIndex(nbits, threads=threads)
        flat.add(db)
        ff = faiss.IndexBinaryFlat(nbits)
        ff.add(db)
        faiss.omp_set_num_threads(threads)
        flat.search(q[:4], k)
        ff.search(q[:4], k)
        best = {"flat": float("inf"), "faiss": float("inf")}
        res = {}
        for _ in range(repeat):  # alternate, so background load hits both alike
            for name, fn in (("flat", lambda: flat.search(q, k)), ("faiss", lambda: ff.search(q, k))):
                secs, res[name] = best_of(fn, 1)
                best[name] = min(best[name], secs)
        nw = -(-nbits // 64)
        rate = batch / best["flat"] * n * nw / threads
        rows.append({
            "what": "flat-vs-faiss", "n": n, "nbits": nbits, "batch": batch, "k": k, "threads": threads,
            "flat_qps": round(batch / best["flat"], 1), "faiss_qps": round(batch / best["faiss"], 1),
            "ratio": round(best["faiss"] / best["flat"], 2), "words_per_s_per_core": rate,
            "share_of_l1_floor": round(rate / l1_floor, 3),
            "distances_equal": bool((res["flat"][0] == res["faiss"][0]).all()),
        })
    return rows


def single_query(n, k, threads, count) -> list[dict]:
    import faiss

    rng = np.random.default_rng(64)
    db = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    q = rng.integers(0, 256, size=(count, 8), dtype=np.uint8)
    flat = FlatIndex(64)
    flat.add(db)
    ff = faiss.IndexBinaryFlat(64)
    ff.add(db)
    rows = []
    for t in dict.fromkeys((threads, 1)):
        flat.threads = t
        faiss.omp_set_num_threads(t)
        for name, fn in (("flat", flat.search), ("faiss", ff.search)):
            fn(q[:1], k)
            times = []
            for i in range(count):
                t0 = time.perf_counter()
                fn(q[i: i + 1], k)
                times.append(time.perf_counter() - t0)
            rows.append({"what": "single", "method": name, "n": n, "nbits": 64, "k": k, "threads": t,
                         "median_ms": round(float(np.median(times)) * 1e3, 3),
                         "p90_ms": round(float(np.quantile(times, 0.9)) * 1e3, 3)})
    return rows


def scan_asm() -> dict:
    """Popcount instructions in fresh compilations of the flat scan's counting loops: the row-major one
    (``block_hits``), the byte-sliced one (``sliced_hits``, AVX2 only) and the word-plane one
    (``plane_hits``, AVX-512 VPOPCNTDQ only)."""
    from numba import njit, types

    from hashtool.hashindex import _flat_kernels as K

    arr_u = types.Array(types.uint64, 1, "C")
    arr_i = types.Array(types.int64, 1, "C")
    arr_b = types.Array(types.uint8, 1, "C")
    i64 = types.int64
    sigs = {"block_hits": (arr_u, i64, i64, i64, arr_u, arr_i, i64, arr_i)}
    if K.NIBBLE_LOOP:
        sigs["sliced_hits"] = (arr_u, i64, i64, i64, i64, arr_u, arr_b, i64, arr_u, arr_i, arr_i)
    if K.WIDE_POPCOUNT:
        sigs["plane_hits"] = (arr_u, i64, i64, arr_u, arr_i, arr_i)
    out = {}
    for name, sig in sigs.items():
        fresh = njit(nogil=True)(getattr(K, name).py_func)
        fresh.compile(sig)
        asm = fresh.inspect_asm(sig)
        out[name] = {i: len(re.findall(rf"\b{i}\b", asm)) for i in ("vpshufb", "vpsadbw", "vpminub", "popcntq", "vpopcntq")}
    return out


def markdown(rows, stamp) -> str:
    out = [f"Command: `{stamp['command']}` ({stamp['date']}, load average {stamp['load_start']} at the start, "
           f"{stamp['load_end']} at the end)", ""]
    out += ["| floor | cores | words/s | per core |", "|---|---|---|---|"]
    out += [f"| {r['where']} ({r['words']} words) | {r['cores']} | {r['rate']:.3g} | {r['rate_per_core']:.3g} |"
            for r in rows if r["what"] == "floor"]
    out += ["", "| n x bits | threads | FlatIndex q/s | faiss q/s | Flat / faiss | scan words/s per core | share of L1 floor |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {r['n']:.0e} x {r['nbits']} | {r['threads']} | {r['flat_qps']} | {r['faiss_qps']} | {r['ratio']}x | "
            f"{r['words_per_s_per_core']:.3g} | {r['share_of_l1_floor']} |" for r in rows if r["what"] == "flat-vs-faiss"]
    out += ["", "| single query, 64 bits | threads | median ms | p90 ms |", "|---|---|---|---|"]
    out += [f"| {r['method']} ({r['n']:.0e}) | {r['threads']} | {r['median_ms']} | {r['p90_ms']} |"
            for r in rows if r["what"] == "single"]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--nbits", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--single", type=int, default=300)
    p.add_argument("--seconds", type=float, default=0.3)
    p.add_argument("--dram-mib", type=int, default=512)
    p.add_argument("--skip-floor", action="store_true")
    p.add_argument("--asm", action="store_true", help="print the popcount instructions of the scan's loop")
    p.add_argument("--out", default=None, help="append JSON rows to <out>.jsonl and write <out>.md")
    args = p.parse_args(argv)
    stamp = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "command": "python benchmarks/bench_scan.py " + " ".join(sys.argv[1:] if argv is None else argv),
             "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    rows = [] if args.skip_floor else floor_rates(args.seconds, args.repeat, args.dram_mib * 2**20 // 8)
    l1 = next((r["rate"] for r in rows if r["where"] == "L1" and r["cores"] == 1), float("nan"))
    rows += flat_vs_faiss(args.n, args.nbits, args.batch, args.k, args.threads, args.repeat, l1)
    rows += single_query(args.n, args.k, args.threads, args.single)
    stamp["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.asm:
        stamp["asm"] = scan_asm()
    md = markdown(rows, stamp) + (f"\n\nscan loop instructions: {stamp['asm']}" if args.asm else "")
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".jsonl", "a") as f:
            for r in rows:
                f.write(json.dumps({**stamp, **r}) + "\n")
        with open(args.out + ".md", "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
