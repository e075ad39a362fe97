"""Garbage-collection pauses of a serving process, timed and logged.

A collection runs on the thread that triggered it and stops the worker's event loop: every
request in flight waits until it ends. One that walks a large population of live, tracked
objects takes tens to hundreds of milliseconds (issue 6 found 95-107 ms gen-1 collections,
collecting nothing, from parsed-request memos and cached answers; ``ca_core.ocsp.FlatQuery``
is the remedy), which is the whole p99 budget. :class:`GCWatch` times every collection
through :data:`gc.callbacks` and logs the long ones, so a stall shows in the responder's own
log with its cause, and ``bench/tax_season.py`` counts them in its report.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WARN_AFTER", "GCWatch"]

_log = logging.getLogger(__name__)

#: Collections longer than this (seconds) are logged at WARNING: well under the 50 ms p99
#: goal, far above a healthy young collection (well under 1 ms).
WARN_AFTER = 0.02


class GCWatch:
    """A :data:`gc.callbacks` hook: counts and times collections per generation, logs the
    ones over ``warn_after`` seconds of wall time with the CPU time they took: on a busy
    machine a collection can also wait for a core, and then the two differ. The clocks
    are injectable for tests."""

    def __init__(
        self,
        *,
        warn_after: float = WARN_AFTER,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.warn_after = warn_after
        self.clock = clock
        self.cpu_clock = cpu_clock
        self._cpu_started = 0.0
        generations = len(gc.get_threshold())
        self.collections = [0] * generations
        self.seconds = [0.0] * generations
        self.longest = [0.0] * generations
        self.slow = 0
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
            self._cpu_started = self.cpu_clock()
            return
        if self._started is None:  # installed between a start and its stop
            return
        took = self.clock() - self._started
        self._started = None
        generation = info["generation"]
        self.collections[generation] += 1
        self.seconds[generation] += took
        self.longest[generation] = max(self.longest[generation], took)
        if took > self.warn_after:
            self.slow += 1
            _log.warning(
                "garbage collection paused this process: generation %d, %.1f ms (%.1f ms of CPU), %d objects collected",
                generation, took * 1000, (self.cpu_clock() - self._cpu_started) * 1000, info["collected"],
            )  # fmt: skip

    def install(self) -> GCWatch:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        while self in gc.callbacks:
            gc.callbacks.remove(self)
