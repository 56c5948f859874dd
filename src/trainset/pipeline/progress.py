"""Progress for long work: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Count finished items of ``total``; draw a bar on a TTY, else print about every 10%.

    Use as a context manager or call :meth:`close`; output goes to stderr by default.
    """

    def __init__(self, total: int, desc: str, *, stream: TextIO | None = None) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._next_log = 0.1
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, note: str = "") -> None:
        """Mark ``n`` more items finished."""
        self.done += n
        frac = self.done / self.total if self.total else 1.0
        if self.tty:
            width = 30
            filled = int(width * min(frac, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.desc} [{bar}] {self.done}/{self.total} {note[:40]:<40}")
            self.stream.flush()
        elif frac >= self._next_log or self.done == self.total:
            elapsed = time.monotonic() - self.start
            self.stream.write(f"{self.desc}: {self.done}/{self.total} ({elapsed:.1f} s)\n")
            self.stream.flush()
            while self._next_log <= frac:
                self._next_log += 0.1

    def close(self) -> None:
        """Finish the bar line."""
        if self.tty and not self._closed:
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True
