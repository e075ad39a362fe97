"""Garbage-collection pauses of a serving process, timed and logged.

A collection runs on the thread that triggered it and stops the worker's event loop: every
request in flight waits until it ends. One that walks a large population of live, tracked
objects takes tens to hundreds of milliseconds (issue 6 found 95-107 ms gen-1 collections,
collecting nothing, from parsed-request memos and cached answers; ``ca_core.ocsp.FlatQuery``
is the remedy), which is the whole p99 budget. :class:`GCWatch` times every collection
through :data:`gc.callbacks` and logs the long ones, so a stall shows in the responder's own
log with its cause, and ``bench/tax_season.py`` counts them in its report.

:func:`collect_young_every` works around a CPython (3.11-3.13) accounting quirk that those
warnings found at x50. A collection of the youngest generation starts when its count
(allocations minus deallocations of collectable objects) passes the threshold, but freeing an
object the collector no longer tracks counts too. A full cache evicts an old, untracked entry
for each new, still-tracked one, so the count stands still while hundreds of thousands of new
tuples pile up in generation 0. The collection that finally comes walks them all: 53-127 ms
gen-0 collections, collecting nothing. Collecting generation 0 on a timer keeps it to what a
tenth of a second allocates.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WARN_AFTER", "YOUNG_EVERY", "GCWatch", "collect_young_every"]

_log = logging.getLogger(__name__)

#: Collections longer than this (seconds) are logged at WARNING: well under the 50 ms p99
#: goal, far above a healthy young collection (well under 1 ms).
WARN_AFTER = 0.02
#: How often a serving process collects its youngest generation itself (seconds).
YOUNG_EVERY = 0.1


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


def collect_young_every(interval: float = YOUNG_EVERY) -> Callable[[], None]:
    """Collect generation 0 every ``interval`` seconds on the running event loop, whatever
    its count says (the module docstring says why); return a function that stops it.
    Each such collection untracks the tuples made since the last one: at 5,000 checks/s
    a few hundred objects, well under a millisecond."""
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal handle
        gc.collect(0)
        # The older generations as the allocator would have collected them had the count
        # moved: each every threshold-many collections of the one below (here, by default,
        # generation 1 every 2 s and a full collection every 40 s), so that cycles which
        # outlived a young collection are still found.
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[1] > thresholds[1]:
            gc.collect(1)
        elif counts[2] > thresholds[2]:
            gc.collect(2)
        handle = loop.call_later(interval, tick)

    handle = loop.call_later(interval, tick)

    def stop() -> None:
        if handle is not None:
            handle.cancel()

    return stop
