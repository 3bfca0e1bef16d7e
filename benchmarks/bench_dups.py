"""Memory and time of store.dups.find_groups on a folder-sized set with one huge group of equal codes.

    python benchmarks/bench_dups.py [--equal 20000] [--random 200000] [--bits 64] [--radius 3]

Prints one line per run: codes, pairs counted, groups, seconds, and how much the peak RSS grew during the
call (the kernels are warmed first, so their compilation is not counted). Not a pass/fail test.
"""

import argparse
import resource
import time

import numpy as np

from hashtool.hashindex import warmup
from hashtool.store.dups import find_groups


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--equal", type=int, default=20000)
    ap.add_argument("--random", type=int, default=200000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--radius", type=int, default=3)
    a = ap.parse_args()
    nbytes = a.bits // 8
    warmup(a.bits)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 256, (20000, nbytes), dtype=np.uint8)
    list(find_groups(w, np.arange(len(w)), a.radius).groups)
    codes = np.concatenate([np.full((a.equal, nbytes), 7, np.uint8), rng.integers(0, 256, (a.random, nbytes), dtype=np.uint8)])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    res = find_groups(codes, np.arange(len(codes)), a.radius)
    groups = list(res.groups)
    dt = time.perf_counter() - t
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024
    print(f"{len(codes)} codes x {a.bits} bits, radius {a.radius}: {res.pairs} pairs counted, {res.n_groups} groups "
          f"(largest {len(groups[0].ids) if groups else 0}), {dt:.2f} s, peak RSS grew {grown} MiB")


if __name__ == "__main__":
    main()
