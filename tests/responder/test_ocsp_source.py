"""Pure parts of responder.ocsp_source (the rest is exercised over HTTP elsewhere)."""

from __future__ import annotations

import gc
from collections import OrderedDict

from responder.ocsp_source import put_bounded


def test_put_bounded_keeps_the_most_recent_insertions_in_order() -> None:
    d: OrderedDict[int, str] = OrderedDict()
    for i in range(10):
        put_bounded(d, i, str(i), 4)
    assert list(d.items()) == [(6, "6"), (7, "7"), (8, "8"), (9, "9")]
    put_bounded(d, 8, "again", 4)  # an overwrite keeps its place (and may evict one more)
    assert d[8] == "again" and list(d)[-1] == 9 and len(d) <= 4
    put_bounded(d, 10, "10", 0)  # a zero limit keeps nothing new
    assert 10 not in d


def test_eviction_under_churn_stays_bounded_and_keeps_the_latest() -> None:
    cache: OrderedDict[int, int] = OrderedDict()
    for i in range(50_000):
        put_bounded(cache, i, i, 1000)
    assert len(cache) == 1000
    assert list(cache) == list(range(49_000, 50_000))


def _young() -> set[int]:
    return {id(o) for o in gc.get_objects(generation=0)} | {id(o) for o in gc.get_objects(generation=1)}


def test_the_container_stays_old_when_its_untracked_entries_change() -> None:
    """Why put_bounded takes an OrderedDict: after a full collection a plain dict of untracked
    tuples is untracked too, and the next fresh entry re-tracks it into the youngest
    generation, where each young collection walks every entry; the OrderedDict stays put."""

    def fresh(i: int) -> tuple[bytes, int]:
        return (i.to_bytes(4, "big") * 3, i)  # built at run time: tracked until a collection

    ordered: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
    plain: dict[int, tuple[bytes, int]] = {}
    for i in range(5000):
        put_bounded(ordered, i, fresh(i), 10_000)
        plain[i] = fresh(i)
    gc.collect()
    assert not any(gc.is_tracked(v) for v in ordered.values())
    assert gc.is_tracked(ordered) and not gc.is_tracked(plain)
    put_bounded(ordered, 10**6, fresh(10**6), 10_000)
    plain[10**6] = fresh(10**6)
    young = _young()
    assert id(ordered) not in young
    assert id(plain) in young  # the CPython behaviour this guards against
