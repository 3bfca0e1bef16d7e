import sys, time, numpy as np
sys.path.insert(0, sys.argv.pop(1))
from numba import njit
from hashtool.hashindex import _flat_kernels as K
rng = np.random.default_rng(0)
words = rng.integers(0, 2**63, size=2048, dtype=np.uint64)
q = rng.integers(0, 2**63, size=64, dtype=np.uint64)

@njit
def take_rows(words, q, reps, rows, fixed):
    bd = np.empty((64, 52), np.int32); bp = np.empty((64, 52), np.int64); hist = np.zeros((64, 66), np.int64)
    st = np.zeros((64, 3), np.int64)
    dist = np.empty(256, np.int32)
    for t in range(64):
        st[t, 1] = 5
    b0, p0, h0, s0 = bd[0], bp[0], hist[0], st[0]
    for r in range(reps):
        for c in range(8):
            if fixed:
                K.take_hits(words, 1, c * 256, c * 256 + rows, q, 0, 10, dist, b0, p0, h0, s0)
            else:
                t = r & 63
                K.take_hits(words, 1, c * 256, c * 256 + rows, q, t, 10, dist, bd[t], bp[t], hist[t], st[t])
    return st[0, 0]

for rows in (8, 256):
    for fixed in (False, True):
        take_rows(words, q, 10, rows, fixed)
        best = 1e9
        for _ in range(3):
            t = time.perf_counter(); take_rows(words, q, 20000, rows, fixed); best = min(best, time.perf_counter() - t)
        print(f"rows {rows} views {'hoisted' if fixed else 'per call'}: {best / 20000 / 8 * 1e9:.0f} ns per call")
