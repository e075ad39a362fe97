"""Time as a parameter.

Every component that needs "now" takes a :class:`Clock`; production passes
:class:`SystemClock`, tests pass :class:`FakeClock` and move it by hand. All
times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "UTC"]

UTC = dt.UTC


class Clock(Protocol):
    """Something that tells the current time, in UTC."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The wall clock."""

    __slots__ = ()

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that only moves when told to; for tests and simulations."""

    __slots__ = ("_now",)

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> None:
        """Move the clock forward (or backward, with a negative delta)."""
        self._now += delta

    def set(self, when: dt.datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware datetime")
        self._now = when.astimezone(UTC)

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
