"""responder.gcwatch: collections timed per generation, the long ones logged."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import OrderedDict

import pytest

from responder.gcwatch import GCWatch, collect_young_every
from responder.ocsp_source import put_bounded


class Ticks:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_long_collection_is_counted_and_logged_a_short_one_only_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock, cpu = Ticks(), Ticks()
    watch = GCWatch(warn_after=0.02, clock=clock, cpu_clock=cpu)
    with caplog.at_level(logging.WARNING, logger="responder.gcwatch"):
        watch("start", {"generation": 0, "collected": 0, "uncollectable": 0})
        clock.now += 0.001
        watch("stop", {"generation": 0, "collected": 12, "uncollectable": 0})
        watch("start", {"generation": 1, "collected": 0, "uncollectable": 0})
        clock.now += 0.1065
        cpu.now += 0.0312  # the rest of the time it waited for a core
        watch("stop", {"generation": 1, "collected": 0, "uncollectable": 0})
    assert watch.collections[:2] == [1, 1]
    assert watch.seconds[0] == pytest.approx(0.001) and watch.longest[1] == pytest.approx(0.1065)
    assert watch.slow == 1
    assert [r.getMessage() for r in caplog.records] == [
        "garbage collection paused this process: generation 1, 106.5 ms (31.2 ms of CPU), 0 objects collected"
    ]


def test_a_stop_without_its_start_is_ignored() -> None:
    watch = GCWatch(clock=Ticks())
    watch("stop", {"generation": 2, "collected": 5, "uncollectable": 0})
    assert watch.collections == [0, 0, 0] and watch.slow == 0


def test_installed_it_times_real_collections_and_uninstalls_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    watch = GCWatch(warn_after=0.0).install()
    try:
        assert watch.install() is watch and gc.callbacks.count(watch) == 1  # installing twice adds it once
        cycles = []
        for _ in range(1000):
            a: list[object] = []
            a.append(a)
            cycles.append(a)
        del cycles, a
        with caplog.at_level(logging.WARNING, logger="responder.gcwatch"):
            gc.collect()
    finally:
        watch.uninstall()
    assert watch not in gc.callbacks
    assert watch.collections[2] >= 1 and watch.seconds[2] > 0
    full = [r.getMessage() for r in caplog.records if "generation 2," in r.getMessage()]
    assert full, [r.getMessage() for r in caplog.records]
    assert int(full[-1].split(", ")[-1].split()[0]) >= 1000  # our cycles, and whatever else was garbage


async def test_tune_gc_freezes_start_up_installs_a_watch_and_collects_generation_0_on_a_timer() -> None:
    from responder.public import tune_gc

    thresholds = gc.get_threshold()
    watch = tune_gc()
    try:
        assert isinstance(watch, GCWatch) and watch in gc.callbacks
        assert gc.get_threshold() == (10_000, 20, 20)
        assert gc.get_freeze_count() > 0
        before = watch.collections[0]
        await asyncio.sleep(0.45)  # the timer collects every 0.1 s, whatever the count says
        assert watch.collections[0] - before >= 2
    finally:
        watch.uninstall()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _churn(cache: OrderedDict[int, tuple[bytes, int]], start: int, n: int) -> None:
    """A full cache taking n fresh entries, each evicting an old, untracked one."""
    for i in range(start, start + n):
        put_bounded(cache, i, (i.to_bytes(4, "big") * 3, i), 20_000)


async def test_evictions_hide_generation_0_from_its_count_and_the_timer_keeps_it_small() -> None:
    """The CPython accounting quirk collect_young_every works around: freeing untracked
    entries counts as deallocations, so a churning cache keeps generation 0's count near
    zero while its fresh tuples pile up there."""
    cache: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
    _churn(cache, 0, 20_000)
    gc.collect()
    gc.freeze()  # as a serving process does: only what follows is young
    try:
        _churn(cache, 20_000, 50_000)
        assert gc.get_count()[0] < 10_000 < len(gc.get_objects(generation=0))  # the count says nothing is due

        gc.collect(0)
        stop = collect_young_every(0.01)
        try:
            largest = 0
            for k in range(10):
                _churn(cache, 100_000 + k * 2_000, 2_000)
                await asyncio.sleep(0.05)
                largest = max(largest, len(gc.get_objects(generation=0)))
        finally:
            stop()
        assert largest < 5_000, largest  # what 2,000 insertions leave, not 10 times that
    finally:
        gc.unfreeze()


async def test_the_timer_also_collects_the_older_generations_in_turn() -> None:
    """Cycles that outlive a young collection must still be found: generation 1 after every
    threshold-many young collections, generation 2 after threshold-many of those."""
    thresholds = gc.get_threshold()
    gc.set_threshold(10_000, 5, 5)
    watch = GCWatch(warn_after=10.0).install()
    stop = collect_young_every(0.001)
    try:
        for _ in range(200):  # at most 10 s on a slow machine; about 0.1 s here
            if watch.collections[2] >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        stop()
        watch.uninstall()
        gc.set_threshold(*thresholds)
    young, middle, full = watch.collections
    assert full >= 2 and middle >= 3 * full and young >= 3 * middle, watch.collections
