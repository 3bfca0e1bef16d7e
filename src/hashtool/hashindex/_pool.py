"""Run GIL-free Numba kernels on Python threads.

Every kernel is compiled ``nogil=True``, so plain Python threads run them truly in parallel. This replaces
Numba's ``parallel=True``/``prange``: the kernels stay serial (they compile several times faster, and the
``threads`` setting is honoured exactly, without touching Numba's global threading layer), and the split
of work is chosen here, in one readable place.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pools: dict[int, ThreadPoolExecutor] = {}
_crews: dict[int, "_Crew"] = {}
_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hashindex")
            _pools[threads] = pool
        return pool


class _Job:
    """Tasks that the caller and the crew's workers take in turn (``next`` on a count is atomic under the
    GIL); each result goes to its task's slot, the first error is kept."""

    def __init__(self, fn, tasks):
        self.fn, self.tasks = fn, tasks
        self.results = [None] * len(tasks)
        self.error = None
        self._next = itertools.count()

    def work(self) -> None:
        while True:
            i = next(self._next)
            if i >= len(self.tasks) or self.error is not None:
                return
            try:
                self.results[i] = self.fn(*self.tasks[i])
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                if self.error is None:
                    self.error = exc


class _Worker:
    """A daemon thread that runs :meth:`_Job.work` each time it is handed a job (two locks: go and done)."""

    def __init__(self):
        self.go = threading.Lock()
        self.go.acquire()
        self.done = threading.Lock()
        self.done.acquire()
        self.job = None
        threading.Thread(target=self._loop, name="hashindex-crew", daemon=True).start()

    def _loop(self):
        while True:
            self.go.acquire()
            try:
                self.job.work()
            finally:
                self.job = None
                self.done.release()

    def start(self, job) -> None:
        self.job = job
        self.go.release()


class _Crew:
    """``threads - 1`` workers for one caller at a time (``busy``)."""

    def __init__(self, threads: int):
        self.busy = threading.Lock()
        self.workers = [_Worker() for _ in range(threads - 1)]


def _crew(threads: int) -> _Crew:
    with _lock:
        crew = _crews.get(threads)
        if crew is None:
            crew = _crews[threads] = _Crew(threads)
        return crew


def _forget_threads() -> None:
    """In a forked child: the parent's threads (and any lock one of them held) do not exist here."""
    global _lock
    _lock = threading.Lock()
    _crews.clear()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def run(threads: int, fn, tasks) -> list:
    """Call ``fn(*args)`` for every ``args`` in ``tasks`` on up to ``threads`` threads.

    Returns the results in task order; the first error is re-raised once every task has stopped (they
    share the output buffers).

    The calling thread works too, and every thread takes the next task when it is free: a worker that
    wakes late (a busy machine) costs its share of one task, not a wait. Waking a worker is one lock
    release (about half of a ThreadPoolExecutor hand-off). A second caller that finds the workers busy
    (searches from several threads at once) runs on the shared executor instead.
    """
    tasks = list(tasks)
    if threads <= 1 or len(tasks) <= 1:
        return [fn(*args) for args in tasks]
    crew = _crew(threads)
    if not crew.busy.acquire(blocking=False):
        return _run_on_executor(threads, fn, tasks)
    try:
        job = _Job(fn, tasks)
        helpers = crew.workers[: len(tasks) - 1]
        for w in helpers:
            w.start(job)
        job.work()
        for w in helpers:
            w.done.acquire()
    finally:
        crew.busy.release()
    if job.error is not None:
        raise job.error
    return job.results


def _run_on_executor(threads: int, fn, tasks) -> list:
    futures = [_pool(threads).submit(fn, *args) for args in tasks[1:]]
    try:
        first = fn(*tasks[0])
    except BaseException:
        for f in futures:  # let the others finish before the error propagates (they share the buffers)
            f.exception()
        raise
    return [first, *[f.result() for f in futures]]


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, nearly equal, non-empty ranges covering 0..n-1 (fewer when n is small)."""
    parts = max(1, min(parts, n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


class LazyModule:
    """A module imported on first attribute access: the kernels (and numba) load only when a search
    needs them (see :mod:`hashtool.hashindex._numpy_scan`)."""

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        module = self._module
        if module is None:  # once: a search pays for one attribute lookup, not for an import call
            import importlib

            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)
