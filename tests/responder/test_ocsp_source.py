"""Pure parts of responder.ocsp_source (the rest is exercised over HTTP elsewhere)."""

from __future__ import annotations

from responder.ocsp_source import keep_newest


def test_keep_newest_keeps_the_most_recent_insertions_in_order() -> None:
    d = {i: str(i) for i in range(10)}
    del d[3]
    d[3] = "again"  # re-inserted: now the newest
    assert list(keep_newest(d, 4).items()) == [(7, "7"), (8, "8"), (9, "9"), (3, "again")]
    assert keep_newest(d, 0) == {}
    assert keep_newest(d, 100) == d


def test_eviction_under_churn_stays_bounded_and_keeps_the_latest() -> None:
    cache: dict[int, int] = {}
    limit = 1000
    for i in range(50_000):
        if len(cache) >= limit:
            cache = keep_newest(cache, limit * 7 // 8)
        cache[i] = i
    assert len(cache) <= limit
    assert 49_999 in cache and 0 not in cache
    assert list(cache)[-1] == 49_999
