"""`hashtool watch FOLDER`: keep the index of FOLDER current as files appear, change and vanish."""

from __future__ import annotations

import click

from hashtool.cli._common import fail, index_option, note, quiet_option, report_failures, threads_option


@click.command("watch")
@click.argument("folder", type=click.Path(file_okay=False, path_type=str))
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Encoder for a new index: a file or a bundled name (photo, fashion-mnist). Default: the index's own; for a new one $HASHTOOL_MODEL, else the bundled photo encoder.")
@index_option
@click.option("--debounce", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds the folder must stay quiet before a batch of changes is indexed.")
@click.option("--max-delay", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Index a batch at the latest this many seconds after its first change, even while changes go on.")
@threads_option
@quiet_option
def watch_cmd(folder, model, index_path, debounce, max_delay, threads, quiet):
    """Index FOLDER now, then again after each batch of changes, until Ctrl-C (SIGINT) or SIGTERM.

    Each update is an ordinary incremental `hashtool index build` (same walking rules, failures
    reported, new generation switched atomically), so stopping at any moment leaves a complete index.
    Needs the watchdog package (pip install 'hashtool[watch]').
    """
    import signal
    import threading
    import time

    from hashtool.cli.index import run_build
    from hashtool.errors import HashtoolError
    from hashtool.store import resolve_index_path
    from hashtool.store.watch import _import_watchdog, watch

    try:
        _import_watchdog()
    except HashtoolError as exc:
        raise fail(exc) from exc
    index_path = str(resolve_index_path(index_path))
    stop = threading.Event()

    def on_signal(signum, frame):
        note(f"{signal.Signals(signum).name}: stopping after the update in progress, if any", quiet)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def rebuild():
        report = run_build(folder, model, index_path, threads=threads, quiet=True)
        report_failures(report.failures, quiet, report.index)
        if report.committed:
            click.echo(f"{time.strftime('%H:%M:%S')} {report.total} images ({report.added} added, {report.updated} re-encoded, "
                       f"{report.removed} removed, {report.failed} failed)")
        return report

    try:
        rebuild()
        watch(folder, index_path, rebuild, stop, debounce=debounce, max_delay=max_delay, log=lambda m: note(m, quiet),
              on_ready=lambda: note(f"watching {folder} (index {index_path}); Ctrl-C stops", quiet))
    except HashtoolError as exc:
        raise fail(exc) from exc
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    note("stopped; the index is complete", quiet)
