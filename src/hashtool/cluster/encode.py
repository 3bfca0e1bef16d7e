"""Distributed encoding: the ``encode_files`` callable of :func:`hashtool.store.build.build` on Dask workers.

The client cuts the list of paths into tasks of ``files_per_task`` paths and submits them all; a task
(:func:`encode_batch`) opens the encoder once per worker process (cached by the file's sha256) and
returns ``(codes, positions, failures, sha256s)`` for its paths, exactly what the local encoder returns for them
(each sha256 is that of the bytes the worker decoded, so the client never reads an image).
The client puts the tasks' answers back in path order, so the build that receives them, and everything it
writes, is the same as a local build's, byte for byte.

Tasks are pure (their answer depends only on their arguments and the files), so Dask may run one twice:
when a worker dies, the scheduler runs its tasks again on another worker and the build goes on with
nothing missing. A task that keeps killing workers (``distributed.scheduler.allowed-failures``, 3 by
default) ends the build with a :class:`~hashtool.errors.ClusterError`; nothing is written.

The encoder file is sent from the client once (broadcast to every worker), written to the worker's
temporary folder under its sha256 and checked against it; the images must be readable by every worker at
the same absolute paths (a shared file system).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from hashtool.errors import ClusterError, ModelError

FILES_PER_TASK = 256  # about 1 s of work for a worker at 256 images/s; ~40 tasks per 10,000 files

_ENCODERS: dict = {}  # (sha256, threads) -> Encoder, per worker process
_ENCODERS_LOCK = threading.Lock()


def worker_encoder(blob: bytes, sha256: str, threads: int | None = None):
    """The encoder whose file content is ``blob``, opened once per process and kept (keyed by sha256)."""
    from hashtool.encode import Encoder
    from hashtool.fileio import atomic_write

    key = (sha256, threads)
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            if hashlib.sha256(blob).hexdigest() != sha256:
                raise ModelError(f"the encoder sent to this worker does not match its sha256 {sha256[:12]}...")
            path = Path(tempfile.gettempdir()) / f"hashtool-encoder-{sha256}.onnx"
            if not path.is_file() or path.stat().st_size != len(blob):
                with atomic_write(path) as f:
                    f.write(blob)
            encoder = Encoder(path, threads=threads or _worker_threads())
            if encoder.sha256 != sha256:
                raise ModelError(f"{path}: changed on disk while opening (sha256 {encoder.sha256[:12]}..., expected {sha256[:12]}...)")
            _ENCODERS[key] = encoder
    return encoder


def _worker_threads() -> int:
    """$HASHTOOL_THREADS, else this process's CPUs shared among the worker's task threads."""
    from hashtool.threads import ENV_VAR, available_cpus, resolve_threads

    if os.environ.get(ENV_VAR, "").strip():
        return resolve_threads(None)
    try:
        from distributed import get_worker

        slots = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        slots = 1
    return max(1, available_cpus() // slots)


def encode_batch(blob: bytes, sha256: str, paths: list[str], batch_size: int | None, threads: int | None = None):
    """Worker side: ``(codes uint8 (m, nbytes), positions int64 (m,), failures [(position, reason)], sha256 [m])``."""
    encoder = worker_encoder(blob, sha256, threads)
    res = encoder.encode_files(paths, batch_size=batch_size)
    return res.codes, np.asarray(res.indices, dtype=np.int64), [(int(f.index), f.reason) for f in res.failures], list(res.sha256)


def dask_encode_files(client, encoder, *, batch_size: int | None = None, files_per_task: int = FILES_PER_TASK,
                      threads: int | None = None, timeout: float | None = None, batch_fn: Callable = encode_batch):
    """An ``encode_files(paths, progress)`` callable (see :data:`hashtool.store.build.EncodeFiles`) on ``client``.

    ``encoder``: the :class:`hashtool.encode.Encoder` the index uses (its file is sent to the workers).
    ``threads``: onnxruntime threads per task (None: ``$HASHTOOL_THREADS`` on the worker, else its CPUs
    divided among its task threads). ``timeout``: seconds the whole encoding may take (None: no limit).
    ``batch_fn``: the worker function (tests and benchmarks swap it).
    """
    from hashtool.errors import ArgumentError

    if files_per_task < 1:
        raise ArgumentError(f"files_per_task must be >= 1, got {files_per_task}")
    blob = Path(encoder.path).read_bytes()
    sha256 = hashlib.sha256(blob).hexdigest()
    if sha256 != encoder.sha256:
        raise ModelError(f"{encoder.path}: changed on disk since it was opened; run the build again")
    nbytes = encoder.nbits // 8

    def run(paths, progress):
        return _run_tasks(client, batch_fn, blob, sha256, [str(p) for p in paths], batch_size, files_per_task,
                          threads, nbytes, progress, timeout)

    return run


def _run_tasks(client, batch_fn, blob, sha256, paths, batch_size, files_per_task, threads, nbytes, progress, timeout):
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    starts = list(range(0, len(paths), files_per_task))
    if not starts:
        return np.zeros((0, nbytes), dtype=np.uint8), np.zeros(0, dtype=np.int64), [], []
    # a fresh key for every run (hash=False): the keys of its tasks, derived from it, never meet the keys of an
    # earlier run that the scheduler may still be forgetting (a released key scattered again can be lost)
    blob_future = client.scatter(blob, broadcast=True, hash=False)
    chunks = [paths[s : s + files_per_task] for s in starts]
    n = len(chunks)
    submitted = client.map(batch_fn, [blob_future] * n, [sha256] * n, chunks, [batch_size] * n, [threads] * n, pure=True)
    futures = {f: c for c, f in enumerate(submitted)}  # one message submits them all
    del submitted
    answers: list = [None] * len(starts)
    done = 0
    try:
        for fut, answer in as_completed(list(futures), with_results=True, timeout=timeout):
            c = futures.pop(fut)
            answers[c] = answer
            fut.release()
            done += min(files_per_task, len(paths) - starts[c])
            progress(done)
    except TimeoutError:
        raise ClusterError(
            f"the cluster encoded {done} of {len(paths)} images in the {timeout} s allowed; nothing was written"
        ) from None
    except KilledWorker as exc:
        raise ClusterError(
            f"the cluster lost the workers running a batch of images several times ({exc}); "
            "check the workers' logs (memory limits?) and run the build again: nothing was written"
        ) from None
    finally:
        if futures:
            client.cancel(list(futures))
    return assemble(answers, starts, nbytes)


def assemble(answers, starts, nbytes: int):
    """Per-task ``(codes, positions, failures, sha256s)`` -> one answer with positions in the whole list, in order."""
    codes = [np.asarray(a[0], dtype=np.uint8).reshape(-1, nbytes) for a in answers]
    positions = [np.asarray(a[1], dtype=np.int64) + s for a, s in zip(answers, starts)]
    failures = [(int(p) + s, r) for a, s in zip(answers, starts) for p, r in a[2]]
    hashes = [h for a in answers for h in a[3]]
    return np.concatenate(codes), np.concatenate(positions), failures, hashes
