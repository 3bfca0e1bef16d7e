"""Keep an index current while files appear, change and vanish (the ``watchdog`` package, extra ``[watch]``).

File-system events only say *that* something changed below the folder; what changed is decided by the
ordinary incremental build (:func:`hashtool.store.build.build`, through the caller's ``rebuild``), which
compares the folder with the catalog and writes a new generation atomically. So a missed or coalesced
event can delay an update but never corrupt or skew the index, and the watcher shares every rule of
``hashtool index build`` (walking, failures, locking, crash safety).

Events are batched: a rebuild starts once the folder has been quiet for ``debounce`` seconds, or
``max_delay`` seconds after the first change of a batch while changes keep coming. Events inside the
index folder itself (when it lies below the watched folder) are ignored. ``stop`` (a
:class:`threading.Event`, set by the command's SIGINT/SIGTERM handlers) ends the loop after the build
in progress, if any, has finished.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from hashtool.errors import ArgumentError


def _import_watchdog():
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        raise ArgumentError("hashtool watch needs the watchdog package: pip install 'hashtool[watch]'") from None
    return Observer, FileSystemEventHandler


class _Changes:
    """Thread-safe record of the first and last change of the current batch."""

    def __init__(self, ignore: Path):
        self.ignore = str(ignore.resolve())
        self.lock = threading.Lock()
        self.first = self.last = None
        self.count = 0
        self.wake = threading.Event()

    def saw(self, path) -> None:
        p = os.path.abspath(os.fsdecode(path)) if path else ""
        if p == self.ignore or p.startswith(self.ignore + os.sep):
            return
        now = time.monotonic()
        with self.lock:
            self.first = self.first or now
            self.last = now
            self.count += 1
        self.wake.set()

    def due(self, debounce: float, max_delay: float) -> bool:
        with self.lock:
            if self.first is None:
                return False
            now = time.monotonic()
            return now - self.last >= debounce or now - self.first >= max_delay

    def take(self) -> int:
        with self.lock:
            n, self.first, self.last, self.count = self.count, None, None, 0
            self.wake.clear()
            return n


def watch(folder, index_path, rebuild: Callable[[], object], stop: threading.Event, *, debounce: float = 2.0,
          max_delay: float = 30.0, log: Callable[[str], None] = lambda m: None, on_ready: Callable[[], None] = lambda: None) -> int:
    """Watch ``folder`` and call ``rebuild()`` after each batch of changes until ``stop`` is set; returns the batches."""
    Observer, FileSystemEventHandler = _import_watchdog()
    folder = Path(folder)
    if not folder.is_dir():
        raise ArgumentError(f"{folder}: not a folder; give the folder of images to watch")
    changes = _Changes(Path(index_path))

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in ("opened", "closed_no_write"):
                return  # reads (ours included) change nothing
            changes.saw(event.src_path)
            if getattr(event, "dest_path", None):
                changes.saw(event.dest_path)

    observer = Observer()
    observer.schedule(Handler(), str(folder), recursive=True)
    observer.start()
    batches = 0
    try:
        on_ready()
        while not stop.is_set():
            changes.wake.wait(0.2)
            if stop.is_set():
                break
            if not changes.due(debounce, max_delay):
                if changes.first is not None:
                    stop.wait(min(0.2, debounce))
                continue
            n = changes.take()
            log(f"{n} change event(s): updating the index")
            rebuild()
            batches += 1
    finally:
        observer.stop()
        observer.join(timeout=10)
    return batches
