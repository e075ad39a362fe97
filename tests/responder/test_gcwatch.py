"""responder.gcwatch: collections timed per generation, the long ones logged."""

from __future__ import annotations

import gc
import logging

import pytest

from responder.gcwatch import GCWatch


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


def test_tune_gc_freezes_start_up_and_installs_a_watch() -> None:
    from responder.public import tune_gc

    thresholds = gc.get_threshold()
    watch = tune_gc()
    try:
        assert isinstance(watch, GCWatch) and watch in gc.callbacks
        assert gc.get_threshold() == (10_000, 20, 20)
        assert gc.get_freeze_count() > 0
    finally:
        watch.uninstall()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
