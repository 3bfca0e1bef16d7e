"""The ``hashtool`` command line: thin click adapters over the library.

Subcommands are loaded lazily from :data:`COMMANDS` (name -> "module:attribute"), so ``hashtool --help``
and ``hashtool --version`` import neither numpy, numba, onnxruntime nor torch. A command module imports
its heavy dependencies inside the command function, never at module level.

Conventions for every command: results on stdout, progress and logs on stderr, ``--json`` for machines,
``--quiet`` to silence progress; library errors (:class:`hashtool.errors.HashtoolError`) become
:class:`click.ClickException` with the message that names the file and what to do.
"""

from __future__ import annotations

import importlib

import click

from hashtool import __version__

# name -> "module:attribute". A command is listed here only once it works.
COMMANDS: dict[str, str] = {
    "calibrate": "hashtool.cli.calibrate:calibrate_cmd",
    "data": "hashtool.cli.data:data",
    "dups": "hashtool.cli.dups:dups",
    "eval": "hashtool.cli.eval:eval_cmd",
    "export": "hashtool.cli.export:export_cmd",
    "index": "hashtool.cli.index:index",
    "query": "hashtool.cli.query:query",
    "train": "hashtool.cli.train:train_cmd",
    "watch": "hashtool.cli.watch:watch_cmd",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used (or listed by --help)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


def run_library(fn, *args, **kwargs):
    """Call a library function, turning hashtool errors into click errors with their message."""
    from hashtool.errors import HashtoolError

    try:
        return fn(*args, **kwargs)
    except HashtoolError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="hashtool")
def main():
    """hashtool: learned binary hash codes for image retrieval.

    Train deep hashing models (PyTorch, optional), export their encoders to ONNX, and index and search
    millions of binary codes on the CPU with no PyTorch at deployment.
    """
