"""A dependency-free progress line for long work (fills, loads, bulk issuance).

On a terminal it redraws one line (count, percent, rate, time left) at most five times a
second; into a pipe or a log it prints a plain line every few seconds instead, so logs
stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None, unit: str = "") -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._shown = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._shown >= (0.2 if self.tty else 5.0):
            self._shown = now
            self._draw(now)

    def set(self, done: int) -> None:
        self.update(done - self.done)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {self.done:,}{self.unit}"
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            bar = "#" * int(pct / 5)
            left = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
            text = f"{self.label}: [{bar:<20}] {self.done:,}/{self.total:,}{self.unit} {pct:5.1f}% ETA {left:4.0f}s"
        return f"{text} {rate:,.0f}/s"

    def _draw(self, now: float) -> None:
        line = self._line(now)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        now = time.monotonic()
        line = self._line(now) + f" in {now - self.started:.1f}s"
        self.stream.write(("\r\x1b[2K" if self.tty else "") + line + "\n")
        self.stream.flush()
