"""Run GIL-free Numba kernels on Python threads.

Every kernel is compiled ``nogil=True``, so plain Python threads run them truly in parallel. This replaces
Numba's ``parallel=True``/``prange``: the kernels stay serial (they compile several times faster, and the
``threads`` setting is honoured exactly, without touching Numba's global threading layer), and the split
of work is chosen here, in one readable place.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hashindex")
            _pools[threads] = pool
        return pool


def run(threads: int, fn, tasks) -> list:
    """Call ``fn(*args)`` for every ``args`` in ``tasks`` on up to ``threads`` threads.

    Returns the results in task order; the first error is re-raised.
    """
    tasks = list(tasks)
    if threads <= 1 or len(tasks) <= 1:
        return [fn(*args) for args in tasks]
    futures = [_pool(threads).submit(fn, *args) for args in tasks]
    return [f.result() for f in futures]


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, nearly equal, non-empty ranges covering 0..n-1 (fewer when n is small)."""
    parts = max(1, min(parts, n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


class LazyModule:
    """A module imported on first attribute access: the kernels (and numba) load only when a search
    needs them (see :mod:`hashtool.hashindex._numpy_scan`)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        return getattr(importlib.import_module(self._name), attr)
