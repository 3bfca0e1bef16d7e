"""The one ``threads`` setting shared by the index kernels and the onnxruntime encoder.

Resolution order: an explicit value, then the ``HASHTOOL_THREADS`` environment variable, then the
number of CPUs this process may run on (its affinity mask, not the host's core count). Also where the
host CPU's instruction-set features are asked for (:func:`host_cpu_has`).
"""

import functools
import os

from hashtool.errors import ArgumentError

ENV_VAR = "HASHTOOL_THREADS"


def available_cpus() -> int:
    """CPUs this process may use (``os.sched_getaffinity`` where the platform has it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None = None) -> int:
    """Return the thread count to use; ``threads`` of None or 0 means "the default"."""
    if threads is None or threads == 0:
        env = os.environ.get(ENV_VAR, "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ArgumentError(f"{ENV_VAR}={env!r} is not an integer; set it to a thread count such as 2") from None
            if threads <= 0:
                raise ArgumentError(f"{ENV_VAR}={env!r} must be a positive thread count")
            return threads
        return available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ArgumentError(f"threads must be a positive integer, got {threads!r}")
    return threads


def host_cpu_has(feature: str) -> bool:
    """The host CPU has instruction-set ``feature``, in LLVM's spelling ("avx512vpopcntdq", "avx512bf16")."""
    return bool(_host_cpu_features().get(feature, False))


@functools.cache
def host_cpu_name() -> str:
    """LLVM's name of the host CPU's micro-architecture ("znver4", "emeraldrapids", ...)."""
    import llvmlite.binding as llvm

    return str(llvm.get_host_cpu_name())


@functools.cache
def _host_cpu_features() -> dict:
    """LLVM's host feature map, asked once a process (each query builds the whole map: about 0.3 ms)."""
    import llvmlite.binding as llvm

    return dict(llvm.get_host_cpu_features())
