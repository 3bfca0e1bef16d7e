"""Kernel-only rates in L1: floor loop vs block_hits / plane_hits on one 2048-word block, tight thresholds."""
import sys, time, numpy as np
sys.path.insert(0, sys.argv.pop(1))
sys.path.insert(0, "/work/main/benchmarks")
from numba import njit
from hashtool.hashindex import _flat_kernels as K
from bench_floor import xor_popcount_sum
rng = np.random.default_rng(0)
B = K.BLOCK_WORDS
words = rng.integers(0, 2**63, size=B, dtype=np.uint64)

@njit(nogil=True)
def rep_block(words, nw, a, th, flags, reps):
    m = words.shape[0] // nw
    for _ in range(reps):
        K.block_hits(words, nw, 0, m, a, th, 4, flags)
    return flags[0]

@njit(nogil=True)
def rep_plane(planes, nw, a, th, flags, reps):
    m = planes.shape[0] // nw
    for _ in range(reps):
        K.plane_hits(planes, nw, m, a, th, flags)
    return flags[0]

def rate(f, reps, work):
    f(1); best = 1e9
    for _ in range(5):
        t = time.perf_counter(); f(reps); best = min(best, time.perf_counter() - t)
    return work * reps / best

reps = 20000
print(f"floor L1: {rate(lambda r: xor_popcount_sum(words, np.uint64(12345), r), reps, B):.3g} words/s")
for nw in (1, 2, 4):
    a = rng.integers(0, 2**63, size=4 * nw, dtype=np.uint64)
    th = np.ones(4, np.int64)
    flags = np.zeros(4 * 64, np.int64)
    print(f"block_hits nw={nw}: {rate(lambda r: rep_block(words, nw, a, th, flags, r), reps, 4 * B):.3g} query-words/s")
    if nw > 1 and hasattr(K, "plane_hits"):
        planes = np.empty(B, np.uint64); K.transpose_planes(words, nw, 0, B // nw, planes)
        print(f"plane_hits nw={nw}: {rate(lambda r: rep_plane(planes, nw, a, th, flags, r), reps, 4 * B):.3g} query-words/s")
