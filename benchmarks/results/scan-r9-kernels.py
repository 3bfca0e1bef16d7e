"""Kernel-only rates on an L1-resident block (16 KB): the floor loop, the 4-query minimum per chunk, an 8-query one."""
import sys, time, os
import numpy as np
sys.path.insert(0, "/work/main/src")
from numba import njit
from hashtool.hashindex._popcount import popcount, min_popcount4


@njit(cache=True)
def floor_loop(x, a, reps):
    s = 0
    for r in range(reps):
        for i in range(x.shape[0]):
            s += popcount(x[i] ^ (a ^ np.uint64(r)))
    return s


@njit(cache=True)
def min4_chunks(x, q, reps, chunk):
    s = 0
    for r in range(reps):
        for c in range(0, x.shape[0], chunk):
            s += min_popcount4(x, c, chunk, q[0] ^ np.uint64(r), q[1], q[2], q[3])
    return s


@njit(cache=True)
def _min8(words, start, count, a0, a1, a2, a3, a4, a5, a6, a7):
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = 255
    x = words[start:start + count]
    for i in range(count):
        v = x[i]
        m0 = min(m0, popcount(v ^ a0))
        m1 = min(m1, popcount(v ^ a1))
        m2 = min(m2, popcount(v ^ a2))
        m3 = min(m3, popcount(v ^ a3))
        m4 = min(m4, popcount(v ^ a4))
        m5 = min(m5, popcount(v ^ a5))
        m6 = min(m6, popcount(v ^ a6))
        m7 = min(m7, popcount(v ^ a7))
    return m0 | (m1 << 8) | (m2 << 16) | (m3 << 24) | (m4 << 32) | (m5 << 40) | (m6 << 48) | (m7 << 56)


@njit(cache=True)
def min8_chunks(x, q, reps, chunk):
    s = 0
    for r in range(reps):
        for c in range(0, x.shape[0], chunk):
            s += _min8(x, c, chunk, q[0] ^ np.uint64(r), q[1], q[2], q[3], q[4], q[5], q[6], q[7])
    return s


@njit(cache=True)
def _or4(x, t, a0, a1, a2, a3):
    c0 = c1 = c2 = c3 = np.uint64(0)
    for i in range(x.shape[0]):
        v = x[i]
        c0 |= np.uint64(popcount(v ^ a0)) - t
        c1 |= np.uint64(popcount(v ^ a1)) - t
        c2 |= np.uint64(popcount(v ^ a2)) - t
        c3 |= np.uint64(popcount(v ^ a3)) - t
    return (c0 >> np.uint64(63)) | (c1 >> np.uint64(63)) | (c2 >> np.uint64(63)) | (c3 >> np.uint64(63))


@njit(cache=True)
def or4_chunks(x, q, reps, chunk):
    s = np.uint64(0)
    t = np.uint64(20)
    for r in range(reps):
        for c in range(0, x.shape[0], chunk):
            s += _or4(x[c:c + chunk], t, q[0] ^ np.uint64(r), q[1], q[2], q[3])
    return s


@njit(cache=True)
def _or8(x, t, a0, a1, a2, a3, a4, a5, a6, a7):
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.uint64(0)
    for i in range(x.shape[0]):
        v = x[i]
        c0 |= np.uint64(popcount(v ^ a0)) - t
        c1 |= np.uint64(popcount(v ^ a1)) - t
        c2 |= np.uint64(popcount(v ^ a2)) - t
        c3 |= np.uint64(popcount(v ^ a3)) - t
        c4 |= np.uint64(popcount(v ^ a4)) - t
        c5 |= np.uint64(popcount(v ^ a5)) - t
        c6 |= np.uint64(popcount(v ^ a6)) - t
        c7 |= np.uint64(popcount(v ^ a7)) - t
    return (c0 | c1 | c2 | c3 | c4 | c5 | c6 | c7) >> np.uint64(63)


@njit(cache=True)
def or8_chunks(x, q, reps, chunk):
    s = np.uint64(0)
    t = np.uint64(20)
    for r in range(reps):
        for c in range(0, x.shape[0], chunk):
            s += _or8(x[c:c + chunk], t, q[0] ^ np.uint64(r), q[1], q[2], q[3], q[4], q[5], q[6], q[7])
    return s


rng = np.random.default_rng(0)
x = rng.integers(0, 2**63, size=2048, dtype=np.uint64)
q = rng.integers(0, 2**63, size=8, dtype=np.uint64)
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
print("start", os.popen("uptime").read().strip())
for rnd in range(3):
    for name, f, nq, args in [("floor", floor_loop, 1, (x, q[0], reps)),
                              ("min4 c256", min4_chunks, 4, (x, q, reps, 256)),
                              ("min4 c512", min4_chunks, 4, (x, q, reps, 512)),
                              ("min4 c2048", min4_chunks, 4, (x, q, reps, 2048)),
                              ("or4 c256", or4_chunks, 4, (x, q, reps, 256)),
                              ("or4 c512", or4_chunks, 4, (x, q, reps, 512)),
                              ("or8 c256", or8_chunks, 8, (x, q, reps, 256)),
                              ("min8 c256", min8_chunks, 8, (x, q, reps, 256)),
                              ("min8 c512", min8_chunks, 8, (x, q, reps, 512)),
                              ("min8 c2048", min8_chunks, 8, (x, q, reps, 2048))]:
        f(*args[:-1], 1) if f is floor_loop else f(args[0], args[1], 1, args[3])
        t = time.perf_counter(); f(*args); dt = time.perf_counter() - t
        print(f"{name:12s} {nq * reps * x.shape[0] / dt:.3g} query-words/s", flush=True)
print("end", os.popen("uptime").read().strip())
