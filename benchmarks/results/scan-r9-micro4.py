"""knn_scan, one thread, 64 queries, 64 bits: a database in L2 (1e5 codes) against one in L3/DRAM (1e6), interleaved."""
import sys, time, numpy as np
sys.path.insert(0, sys.argv.pop(1))
from hashtool.hashindex import _flat_kernels as K
rng = np.random.default_rng(0)
nq, k = 64, 10
q = rng.integers(0, 2**63, size=nq, dtype=np.uint64)
res = {}
for n in (100_000, 1_000_000):
    res[n] = rng.integers(0, 2**63, size=n, dtype=np.uint64)
out_d = np.empty((nq, k), np.int32); out_p = np.empty((nq, k), np.int64); out_n = np.empty(nq, np.int64)
claims = np.zeros(0, np.int64)
for rnd in range(5):
    line = []
    for n, words in res.items():
        reps = 10 if n == 100_000 else 1
        best = 1e9
        for _ in range(5):
            t = time.perf_counter()
            for r in range(reps):
                K.knn_scan(words, 1, 64, q, 0, nq, 0, n, k, out_d, out_p, out_n, claims)
            best = min(best, (time.perf_counter() - t) / reps)
        line.append(f"n={n}: {nq * n / best:.3g}")
    print("  ".join(line), flush=True) if rnd < 2 else None
