"""A progress line for a long replay, on stderr: how far into the file, how fast.

On a terminal the line is rewritten in place (``\\r``) about every :data:`EVERY` seconds and
wiped at the end; elsewhere (``--progress`` into a log) each update is a line of its own,
every :data:`EVERY_PIPED` seconds. The wall clock is read here, in the command line, only to
pace the updates: what the engine does never depends on it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Final, TextIO

__all__ = ["EVERY", "EVERY_PIPED", "Progress"]

#: Seconds between updates on a terminal, and piped.
EVERY: Final = 0.5
EVERY_PIPED: Final = 5.0
#: Lines between looks at the clock: cheap enough for millions of lines a second.
_CHECK: Final = 4096


class Progress:
    """Counts the lines of a file as they are read, and says so on ``stream``."""

    def __init__(
        self, label: str, size: int, stream: TextIO | None = None, terminal: bool | None = None
    ) -> None:
        self.label = label
        self.size = size
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.every = EVERY if self.terminal else EVERY_PIPED
        self.lines = 0
        self.bytes = 0
        self.start = time.monotonic()
        self._next = self.start + self.every
        self._shown = False

    def watch(self, lines: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        """``lines`` unchanged, counted on the way."""
        count = 0
        for item in lines:
            count += 1
            self.bytes += len(item[1]) + 1
            if count == _CHECK:
                self.lines += count
                count = 0
                now = time.monotonic()
                if now >= self._next:
                    self._next = now + self.every
                    self.show(now)
            yield item
        self.lines += count

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        share = f" ({min(self.bytes / self.size, 1.0):.0%})" if self.size else ""
        return (
            f"{self.label}: {self.lines:,} lines, {self.bytes / 1e6:,.0f} MB{share}, "
            f"{self.lines / elapsed:,.0f} lines/s"
        )

    def show(self, now: float) -> None:
        text = self.line(now)
        if self.terminal:
            self.stream.write(f"\r\x1b[2K{text}")
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        """Wipe the line on a terminal (the timeline follows); piped, say the total."""
        if self.terminal:
            if not self._shown:
                return
            self.stream.write("\r\x1b[2K")
        else:
            self.stream.write(f"{self.line(time.monotonic())} (done)\n")
        self.stream.flush()
