"""Options and helpers shared by the index, query and dups commands (heavy imports inside functions)."""

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
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for encoding and search. Default: $HASHTOOL_THREADS, else the CPUs this process may use.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress or notes on stderr.")


def note(msg: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(msg, err=True)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def fail(exc) -> click.ClickException:
    return click.ClickException(str(exc))


def open_encoder(path, threads):
    from hashtool.encode import Encoder

    return Encoder(path, threads=threads)


def encode_files_fn(encoder, batch_size: int = 64):
    """Adapt Encoder.encode_files to the (paths, progress) -> (codes, positions, failures) shape of store.build."""
    import numpy as np

    def run(paths, progress):
        res = encoder.encode_files(paths, batch_size=batch_size, progress=lambda done, total: progress(done))
        return res.codes, np.asarray(res.indices, dtype=np.int64), [(f.index, f.reason) for f in res.failures]

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
