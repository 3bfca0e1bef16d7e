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

    The calling thread runs the first task itself while the pool runs the others: one hand-off fewer,
    which is most of the cost of splitting a single query across threads.
    """
    tasks = list(tasks)
    if threads <= 1 or len(tasks) <= 1:
        return [fn(*args) for args in tasks]
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
