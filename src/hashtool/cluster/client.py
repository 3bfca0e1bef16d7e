"""Connecting to a Dask scheduler, or starting a LocalCluster for ``local:N``."""

from __future__ import annotations

import re
from contextlib import contextmanager

from hashtool.errors import ArgumentError, ClusterError
from hashtool.threads import available_cpus

SCHEDULER_ENV_VAR = "DASK_SCHEDULER_ADDRESS"  # Dask's own variable: hashtool reads the same one
_LOCAL_RE = re.compile(r"^local:(\d+)$")


def parse_address(address: str) -> tuple[str, int | str]:
    """``"local:N"`` -> ``("local", N)``; anything else -> ``("remote", address)`` (Dask checks its form)."""
    if not isinstance(address, str) or not address.strip():
        raise ArgumentError(f"--scheduler needs an address such as tcp://HOST:8786 or local:4, got {address!r}")
    address = address.strip()
    m = _LOCAL_RE.match(address)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise ArgumentError(f"--scheduler {address}: local:N needs N >= 1 worker processes")
        return "local", n
    if address.startswith("local"):
        raise ArgumentError(f"--scheduler {address!r}: write local:N with N the number of worker processes, e.g. local:4")
    return "remote", address


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("--scheduler needs Dask distributed: pip install 'hashtool[cluster]'") from None
    return distributed


@contextmanager
def connect(address: str, *, timeout: float = 30.0, threads_per_worker: int = 1):
    """Yield a ``distributed.Client`` for ``address``; closes it (and a cluster it started) on exit.

    ``local:N`` starts N worker processes on 127.0.0.1 (no dashboard; the scheduler's HTTP server on a free
    loopback port), each with ``threads_per_worker`` task threads and an equal share of this process's
    CPUs for its encoder (``HASHTOOL_THREADS``).
    """
    kind, where = parse_address(address)
    distributed = _import_distributed()
    cluster = None
    try:
        if kind == "local":
            import logging

            share = max(1, available_cpus() // (int(where) * threads_per_worker))
            cluster = distributed.LocalCluster(
                n_workers=int(where), threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR, env={"HASHTOOL_THREADS": str(share)},
            )
            client = distributed.Client(cluster, timeout=timeout)
        else:
            client = distributed.Client(where, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise ClusterError(
            f"--scheduler {address}: cannot connect ({type(exc).__name__}: {str(exc)[:200]}); "
            "check that a dask scheduler runs there and this machine can reach it"
        ) from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
