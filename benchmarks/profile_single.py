"""Where one FlatIndex query's time goes: 1e6 x 64-bit uniform codes, k = 10, medians of 300 calls (ms).

Rows: ``FlatIndex.search`` with 1 and 2 threads; the scan kernel alone on one thread over the whole
database and over half of it; both halves at once on the thread pool (what a 2-thread single query does,
without the merge), with each half's start and end measured from the call. Compare with
``bench_floor.py``'s ``8MB`` rows (the same 8 MB of codes).

    flock /tmp/hashtool-heavy.lock python benchmarks/profile_single.py
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from bench_index import median_latency  # noqa: E402 (also puts src/ on the path)
from hashtool.hashindex import FlatIndex, _flat_kernels as K, _pool, flat as F  # noqa: E402

N, K_NN, CALLS = 1_000_000, 10, 300


def median_ms(fn, queries) -> float:
    """Median of CALLS calls ``fn(query)``, one (1, 8) query each, in ms."""
    return median_latency(fn, queries, CALLS) * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, size=(N, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(CALLS, 8), dtype=np.uint8)
    print(f"load average {os.getloadavg()[0]:.2f}")
    for threads in (1, 2):
        index = FlatIndex(64, threads=threads)
        index.add(db)
        index.search(queries[:1], K_NN)
        print(f"FlatIndex.search, {threads} thread(s): {median_ms(lambda q: index.search(q, K_NN), queries):.3f}")
    codes = index._words
    d, p, c = np.empty((2, 1, K_NN), np.int32), np.empty((2, 1, K_NN), np.int64), np.empty((2, 1), np.int64)

    def scan(q, slot, a, b):
        K.knn_scan(codes, 1, 64, q.view(np.uint64).ravel(), 0, 1, a, b, K_NN, d[slot], p[slot], c[slot], F._NO_CLAIMS)

    scan(queries[:1], 0, 0, N)
    print(f"kernel, one thread, whole database: {median_ms(lambda q: scan(q, 0, 0, N), queries):.3f}")
    print(f"kernel, one thread, half of it: {median_ms(lambda q: scan(q, 0, 0, N // 2), queries):.3f}")
    spans = []

    def halves(q):
        t0, span = time.perf_counter(), [0.0] * 4

        def task(slot):
            span[2 * slot] = time.perf_counter() - t0
            scan(q, slot, slot * N // 2, (slot + 1) * N // 2)
            span[2 * slot + 1] = time.perf_counter() - t0

        _pool.run(2, task, [(0,), (1,)])
        spans.append(span)

    ms = median_ms(halves, queries)
    s = np.median(spans, axis=0) * 1e3
    print(f"both halves at once on the pool: {ms:.3f}; caller's half {s[0]:.3f} -> {s[1]:.3f}, "
          f"worker's half {s[2]:.3f} -> {s[3]:.3f}")

if __name__ == "__main__":
    main()
