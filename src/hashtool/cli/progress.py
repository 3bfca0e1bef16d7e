"""A small progress line on stderr: count, rate and ETA; redrawn in place on a terminal, a line every
few seconds otherwise, nothing with ``quiet``."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, quiet: bool = False, stream=None, interval: float | None = None):
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self.start = time.perf_counter()
        self.last = 0.0
        self.drawn = False
        self.last_done = -1

    def update(self, done: int, total: int) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if done == self.last_done or (done < total and now - self.last < self.interval):
            return
        self.last_done = done
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
        width = 24
        filled = int(width * done / total) if total else width
        line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:7.1f} files/s ETA {eta_s}"
        if self.tty:
            self.stream.write("\r" + line)
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
