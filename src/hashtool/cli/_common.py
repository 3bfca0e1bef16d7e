"""Options and helpers shared by the commands (heavy imports inside functions).

The conventions they implement are listed in :mod:`hashtool.cli` (and in ``hashtool --help``).
"""

from __future__ import annotations

import json
import sys

import click

from hashtool.store import INDEX_ENV_VAR

index_option = click.option(
    "--index",
    "index_path",
    type=click.Path(),
    default=None,
    help=f"Index folder. Default: ${INDEX_ENV_VAR} if set, else ./hashtool-index.",
)


class ThreadsType(click.ParamType):
    """``--threads``: a positive integer; unset means $HASHTOOL_THREADS, else the CPUs available."""

    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            try:
                n = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a whole number of threads (for example 2)", param, ctx)
        if n < 1:
            self.fail(f"{n} is not a positive number of threads", param, ctx)
        return n


def resolved_threads(threads: int | None) -> int:
    """The thread count a command uses: --threads, else $HASHTOOL_THREADS (checked), else the CPUs."""
    from hashtool.threads import resolve_threads

    return resolve_threads(threads)


def threads_option(fn=None, *, help_text: str = "Threads for encoding and search."):
    """The one ``--threads`` option of every command (usable as ``@threads_option``)."""
    option = click.option(
        "--threads",
        type=ThreadsType(),
        default=None,
        help=f"{help_text} A positive integer. Default: $HASHTOOL_THREADS, else the CPUs this process may use.",
    )
    return option(fn) if fn is not None else option


json_option = click.option("--json", "as_json", is_flag=True, help="JSON Lines on stdout: one JSON object per line.")
no_wait_option = click.option(
    "--no-wait", is_flag=True, help="If another build is writing the index, fail at once instead of waiting for it."
)
max_distance_option = click.option(
    "--max-distance", "-r", "max_distance", type=click.IntRange(min=0), default=None,
    help="Hamming radius (inclusive).",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress or notes on stderr.")


def note(msg: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(msg, err=True)


def emit_json(obj) -> None:
    """Write ``obj`` as one JSON Lines record (compact, one line) on stdout: the only JSON writer of the CLI."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(value):
    """numpy scalars/arrays and paths as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fail(exc) -> click.ClickException:
    return click.ClickException(str(exc))


def open_encoder(path, threads):
    from hashtool.encode import Encoder

    return Encoder(path, threads=threads)


def encode_files_fn(encoder, batch_size: int | None = None):
    """Adapt Encoder.encode_files to store.build's EncodeFiles: (paths, progress) -> (codes, positions,
    failures, sha256 of the bytes each code was decoded from)."""
    import numpy as np

    def run(paths, progress):
        res = encoder.encode_files(paths, batch_size=batch_size, progress=lambda done, total: progress(done))
        failures = [(f.index, f.reason) for f in res.failures]
        return res.codes, np.asarray(res.indices, dtype=np.int64), failures, list(res.sha256)

    return run


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def report_failures(failures, quiet: bool, index_path) -> None:
    """Each unreadable file on stderr (path and reason); with --quiet one line with the count."""
    if not failures:
        return
    if quiet:
        click.echo(f"{len(failures)} file(s) could not be read; `hashtool index info --failures --index {index_path}` lists them", err=True)
        return
    for path, reason in failures:
        click.echo(f"skipped {path}: {reason}", err=True)
