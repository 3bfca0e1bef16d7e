"""The ``hashtool`` command line: thin click adapters over the library.

Subcommands are loaded lazily from :data:`COMMANDS` (name -> "module:attribute"), so ``hashtool --help``
and ``hashtool --version`` import neither numpy, numba, onnxruntime nor torch. A command module imports
its heavy dependencies inside the command function, never at module level.

Conventions for every command (``docs``: the lead's conventions file; ``hashtool --help`` repeats them):

* results on stdout, progress and logs on stderr, ``--quiet`` silences progress;
* ``--json``: JSON Lines on stdout, one compact object per line (:func:`hashtool.cli._common.emit_json`);
* ``--threads N``: a positive integer, default ``$HASHTOOL_THREADS`` or the CPUs available (one shared
  option, :data:`hashtool.cli._common.threads_option`);
* ``-d`` is ``--data`` (train, eval) only; a Hamming radius is ``-r/--max-distance``, inclusive;
* **one error path** (:meth:`LazyGroup.invoke`): every :class:`OSError` and
  :class:`hashtool.errors.HashtoolError` that escapes a command becomes one line ``Error: ...`` naming
  the file and what to do, exit status 1 (usage errors: 2), never a traceback.
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

    def invoke(self, ctx):
        """Run the subcommand; the one place where library and I/O errors become messages."""
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except BrokenPipeError:  # stdout closed early (`hashtool query ... | head`): not an error
            raise SystemExit(0) from None
        except Exception as exc:
            message = user_message(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def user_message(exc: BaseException) -> str | None:
    """The one-line message for a user mistake or an I/O error, or None for a bug (which keeps its traceback)."""
    from hashtool.errors import HashtoolError

    if isinstance(exc, HashtoolError):
        return str(exc)
    if isinstance(exc, OSError):
        name = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or str(exc)
        hint = _ERRNO_HINTS.get(exc.errno, "") or _OS_HINTS.get(type(exc).__name__, "")
        return f"{name}: {reason}{hint}" if name else f"{reason}{hint}"
    return None


_ERRNO_HINTS = {
    28: " (the disk is full: free some space and run again; files already stored are unchanged)",  # ENOSPC
    122: " (disk quota exceeded: free some space and run again; files already stored are unchanged)",  # EDQUOT
    30: " (the file system is read-only)",  # EROFS
}
_OS_HINTS = {
    "FileNotFoundError": " (check the path)",
    "PermissionError": " (check the file's permissions)",
    "IsADirectoryError": " (give a file, not a folder)",
}


def run_library(fn, *args, **kwargs):
    """Call ``fn``. Errors need no wrapping any more (:meth:`LazyGroup.invoke` turns them into messages);
    kept so that commands written against the older helper keep working. New code calls ``fn`` directly."""
    return fn(*args, **kwargs)


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

    \b
    Conventions of every command:
      results on stdout, progress on stderr; --quiet silences progress
      --json       JSON Lines: one compact JSON object per line
      --threads N  a positive integer (default: $HASHTOOL_THREADS, else the CPUs available)
      -d/--data    the dataset (train, eval); -r/--max-distance a Hamming radius (inclusive)
      errors       one line "Error: ..." naming the file, exit status 1 (2 for usage errors)
    """
