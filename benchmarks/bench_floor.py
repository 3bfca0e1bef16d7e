"""The floor: how many 64-bit words per second one core can XOR with a query and popcount.

A tight Numba loop (the same ``popcount`` intrinsic the index kernels use) over a contiguous uint64 array,
summing the popcounts and selecting nothing, on one thread, with the array in three places:

* ``L1``: 2048 words (16 KiB), scanned again and again;
* ``8MB``: a 1 Mi-word array (beyond L2, inside L3 on this machine);
* ``DRAM``: a 64 Mi-word array (512 MiB, far beyond every cache).

``8MB 2 threads`` and ``DRAM 2 threads``: the same one-query scan split in halves over two threads at once,
in words per second for the pair: the floor of a single query on both cores.

Also ``L1 x4``: the same L1 loop comparing each loaded word with 4 queries (register blocking), reported
in (query, word) pairs per second: the most a blocked scan can reach when the data is in cache.

Every figure is the best of ``--repeat`` timed runs of at least ``--seconds`` each. Prints a table and
appends one JSON object per figure to ``--out`` (jsonl) when given; the assembly of the inner loop is
printed with ``--asm`` (look for ``popcnt`` or ``vpopcntq``). Run it again with ``NUMBA_LOOP_VECTORIZE=0``
(and ``NUMBA_CACHE_DIR`` pointing elsewhere) for the scalar ``popcnt`` loop.

    flock /tmp/hashtool-heavy.lock python benchmarks/bench_floor.py --out benchmarks/results/floor
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from hashtool.hashindex import _pool  # noqa: E402
from hashtool.hashindex._popcount import popcount  # noqa: E402


@njit(cache=True, nogil=True)
def xor_popcount_sum(x, a, reps):
    """sum over ``reps`` passes of popcount(x[i] ^ a): one query against every word."""
    s = 0
    for _ in range(reps):
        for i in range(x.shape[0]):
            s += popcount(x[i] ^ a)
    return s


@njit(cache=True, nogil=True)
def xor_popcount_sum4(x, a, b, c, d, reps):
    """Four queries against every loaded word (register blocking)."""
    s0 = 0
    s1 = 0
    s2 = 0
    s3 = 0
    for _ in range(reps):
        for i in range(x.shape[0]):
            v = x[i]
            s0 += popcount(v ^ a)
            s1 += popcount(v ^ b)
            s2 += popcount(v ^ c)
            s3 += popcount(v ^ d)
    return s0 + s1 + s2 + s3


def best_rate(fn, words, pairs_per_word, seconds, repeat):
    fn(1)  # compile, or load from the cache, outside the timing
    reps = 1
    while True:  # calibrate the repetitions to at least `seconds`
        t0 = time.perf_counter()
        fn(reps)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
        reps = max(reps * 2, int(reps * seconds / max(dt, 1e-6) * 1.2))
    best = dt
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        fn(reps)
        best = min(best, time.perf_counter() - t0)
    return words * reps * pairs_per_word / best


def measure(seconds: float, repeat: int) -> list[dict]:
    rng = np.random.default_rng(0)
    q = rng.integers(0, 2**63, size=4, dtype=np.uint64)
    out = []
    for name, n in (("L1", 2048), ("8MB", 1 << 20), ("DRAM", 1 << 26)):
        x = rng.integers(0, 2**63, size=n, dtype=np.uint64)
        rate = best_rate(lambda r: xor_popcount_sum(x, q[0], r), n, 1, seconds, repeat)
        out.append({"where": name, "words": n, "queries_per_word": 1, "rate": rate})
        if name == "L1":
            rate4 = best_rate(lambda r: xor_popcount_sum4(x, q[0], q[1], q[2], q[3], r), n, 4, seconds, repeat)
            out.append({"where": "L1 x4", "words": n, "queries_per_word": 4, "rate": rate4})
        else:  # one query's scan split over both cores: what the cores share (L3, memory) sets this one
            halves = (x[: n // 2], x[n // 2:])
            rate2 = best_rate(lambda r: _pool.run(2, xor_popcount_sum, [(h, q[0], r) for h in halves]), n, 1, seconds, repeat)
            out.append({"where": f"{name} 2 threads", "words": n, "queries_per_word": 1, "threads": 2, "rate": rate2})
    return out


def _asm() -> str:
    """Assembly of the floor loop, from a fresh (uncached) compilation: a cached kernel has none to show."""
    fresh = njit(nogil=True)(xor_popcount_sum.py_func)
    fresh(np.zeros(8, np.uint64), np.uint64(1), 1)
    return "\n".join(fresh.inspect_asm().values())


def inner_loop_asm() -> dict:
    """Which popcount instructions the compiled floor kernel uses."""
    asm = _asm()
    return {
        "vpopcntq": len(re.findall(r"\bvpopcntq\b", asm)),
        "popcnt": len(re.findall(r"\bpopcnt[q]?\b", asm)),
        "vpshufb": len(re.findall(r"\bvpshufb\b", asm)),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=None, help="append to <out>.jsonl")
    p.add_argument("--asm", action="store_true", help="print the popcount instructions found in the kernel")
    args = p.parse_args(argv)
    rows = measure(args.seconds, args.repeat)
    asm = inner_loop_asm()
    stamp = {
        "vectorize": os.environ.get("NUMBA_LOOP_VECTORIZE", "1") != "0",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load": os.getloadavg(),
        "command": " ".join(sys.argv),
        "asm": asm,
    }
    print(f"load average {stamp['load'][0]:.2f} {stamp['load'][1]:.2f} {stamp['load'][2]:.2f}; asm {asm}; "
          f"loop vectorisation {'on' if stamp['vectorize'] else 'off (NUMBA_LOOP_VECTORIZE=0)'}")
    print("| where | words | queries per word | (query, word) pairs / s, one core (the pair for \"2 threads\") |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['where']} | {r['words']} | {r['queries_per_word']} | {r['rate']:.3g} |")
    if args.asm:
        print("\n".join(line for line in _asm().splitlines() if "popcnt" in line or "vpshufb" in line))
    if args.out:
        with open(args.out + ".jsonl", "a") as f:
            for r in rows:
                f.write(json.dumps({**stamp, **r}) + "\n")


if __name__ == "__main__":
    main()
