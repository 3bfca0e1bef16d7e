import sys, time, numpy as np
sys.path.insert(0, sys.argv.pop(1))
from hashtool.hashindex import _flat_kernels as K
rng = np.random.default_rng(0)
n = 1_000_000
for nw in [int(a) for a in sys.argv[1:]] or [1, 2, 4]:
    words = rng.integers(0, 2**63, size=n * nw, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=n * nw, dtype=np.uint64)
    nq, k = 64, 10
    q = rng.integers(0, 2**63, size=nq * nw, dtype=np.uint64)
    out_d = np.empty((nq, k), np.int32); out_p = np.empty((nq, k), np.int64); out_n = np.empty(nq, np.int64)
    claims = np.zeros(0, np.int64)
    K.knn_scan(words, nw, 64 * nw, q, 0, nq, 0, n, k, out_d, out_p, out_n, claims)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter(); K.knn_scan(words, nw, 64 * nw, q, 0, nq, 0, n, k, out_d, out_p, out_n, claims); best = min(best, time.perf_counter() - t)
    # check against numpy
    x = words.reshape(n, nw); qq = q.reshape(nq, nw)
    d0 = sum(np.bitwise_count(x[:, w][None, :] ^ qq[:8, w][:, None]).astype(np.int32) for w in range(nw))
    assert (np.sort(d0, axis=1)[:, :k] == out_d[:8]).all()
    print(f"nw={nw}: {nq * n * nw / best:.3g} query-words/s, one thread ({best*1e3:.1f} ms)")
