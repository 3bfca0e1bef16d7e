"""The thread crew that runs the kernels (hashindex._pool), and the database split that shares blocks."""

import os
import threading
import time
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashtool.hashindex import FlatIndex, _pool, flat as flat_module
from naive import knn_search


@pytest.mark.parametrize("threads, ntasks", [(2, 2), (2, 7), (3, 2), (4, 13)])
def test_run_returns_every_result_in_task_order(threads, ntasks):
    seen = set()

    def task(i):
        seen.add(threading.get_ident())
        time.sleep(0.002)
        return i * i

    assert _pool.run(threads, task, [(i,) for i in range(ntasks)]) == [i * i for i in range(ntasks)]
    assert len(seen) >= 1


def test_the_first_error_is_raised_after_every_task_stopped():
    done = []

    def task(i):
        if i == 1:
            raise ValueError("task 1")
        time.sleep(0.01)
        done.append(i)

    with pytest.raises(ValueError, match="task 1"):
        _pool.run(2, task, [(0,), (1,), (2,)])
    time.sleep(0.05)
    snapshot = list(done)
    time.sleep(0.05)
    assert done == snapshot  # nothing still running after run() returned
    assert _pool.run(2, lambda i: i, [(5,), (6,)]) == [5, 6]  # the crew is usable again


def test_callers_on_several_threads_at_once_all_get_their_answers():
    results = {}

    def caller(c):
        results[c] = _pool.run(2, lambda i: (c, i), [(i,) for i in range(6)])

    ts = [threading.Thread(target=caller, args=(c,)) for c in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == {c: [(c, i) for i in range(6)] for c in range(5)}


@pytest.mark.parametrize("late", [0, 1])
def test_a_late_thread_claims_fewer_blocks_and_the_answer_is_the_same(late):
    """The database split: one thread starts 50 ms late, so the other claims (nearly) every block."""
    rng = np.random.default_rng(3)
    n, nbits = 40_000, 64
    pool = rng.integers(0, 256, (30, nbits // 8), dtype=np.uint8)
    db = pool[rng.integers(0, 30, n)]  # ties everywhere
    q = np.concatenate([pool[:2], rng.integers(0, 256, (3, nbits // 8), dtype=np.uint8)])
    index = FlatIndex(nbits, threads=2)
    index.add(db)
    assert flat_module.scan_plan(len(q), n, 1, 2) == "database"
    scan = flat_module.K.knn_scan
    calls = []

    def slow_scan(*args):
        calls.append(args[9])
        if len(calls) == 1 + late:
            time.sleep(0.05)
        return scan(*args)

    with mock.patch.object(flat_module.K, "knn_scan", slow_scan):
        d, i = index.search(q, 25)
    want_d, want_i = knn_search(q, db, np.arange(n), 25)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    assert len(calls) == 2


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 3), st.integers(1, 20))
def test_knn_merge_orders_interleaved_lists_by_distance_then_position(seed, nlists, nq, k):
    """Lists whose positions interleave (blocks claimed by several threads), each sorted by (distance,
    position): the merge equals one sort of all of them by (distance, position), cut at k, padded with -1."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    owner = rng.integers(0, nlists, n)  # which list holds each position
    cd = np.full((nlists, nq, k), -7, np.int32)
    cp = np.full((nlists, nq, k), -7, np.int64)
    cn = np.zeros((nlists, nq), np.int64)
    want_d = np.full((nq, k), -1, np.int32)
    want_p = np.full((nq, k), -1, np.int64)
    for qi in range(nq):
        dist = rng.integers(0, 5, n)  # ties
        for c in range(nlists):
            pos = np.flatnonzero(owner == c)
            order = pos[np.lexsort((pos, dist[pos]))][:k]
            cn[c, qi] = len(order)
            cd[c, qi, : len(order)] = dist[order]
            cp[c, qi, : len(order)] = order
        allp = np.lexsort((np.arange(n), dist))[:k]
        want_d[qi, : len(allp)] = dist[allp]
        want_p[qi, : len(allp)] = allp
    out_d = np.empty((nq, k), np.int32)
    out_p = np.empty((nq, k), np.int64)
    out_n = np.empty(nq, np.int64)
    flat_module.K.knn_merge(cd, cp, cn, k, out_d, out_p, out_n)
    np.testing.assert_array_equal(out_d, want_d)
    np.testing.assert_array_equal(out_p, want_p)
    np.testing.assert_array_equal(out_n, (want_p >= 0).sum(axis=1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_gets_its_own_crew():
    """The parent's workers do not exist in a forked child: the child makes its own instead of waiting for them."""
    rng = np.random.default_rng(5)
    db = rng.integers(0, 256, (20_000, 8), dtype=np.uint8)
    index = FlatIndex(64, threads=2)
    index.add(db)
    want = index.search(db[:1], 5)  # the parent's crew exists now
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when the 2-thread answers are right
        ok = False
        try:
            got = index.search(db[:1], 5)
            ok = bool((got[0] == want[0]).all() and (got[1] == want[1]).all())
            ok = ok and _pool.run(2, lambda i: i, [(1,), (2,), (3,)]) == [1, 2, 3]
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung waiting for its parent's workers")
