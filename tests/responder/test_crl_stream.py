"""The delta-CRL push stream (``GET /crl/{issuer}/stream``) against a real worker and a real
CRLPublisher: live and missed deltas, refetch, bad requests, what a follower ends up
holding, and what subscribers cost."""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import functools
import gc
import json
import random
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509

from ca_core.clock import FakeClock
from ca_core.crl_publisher import CRLPublisher, CRLSettings
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertStatus, RevocationReason
from ca_core.profiles import PublicURLs
from responder import public as public_module
from responder.crl_stream import QueueSubscriber, RawSubscriber, StreamHub

from .crl_harness import (
    CRLFollower,
    CRLResponder,
    Event,
    StreamClient,
    StreamClosed,
    crl_number,
    delta_base,
    running_responder,
)
from .ocsp_harness import now_clock


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
def hub_options() -> dict[str, Any]:
    """Keyword arguments for the worker's StreamHub (override with parametrize)."""
    return {}


@pytest.fixture
def sndbuf() -> int | None:
    """SO_SNDBUF of the worker's connections (override with parametrize). Loopback lets the
    kernel buffer megabytes for a client that does not read; a small send buffer stands in
    for a real network, where the kernel holds far less."""
    return None


@pytest.fixture
async def responder(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    redis_url: str,
    ca: CertificateAuthority,
    hub_options: dict[str, Any],
    sndbuf: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[CRLResponder]:
    if hub_options:
        # The worker builds its hub itself; its heartbeat loop starts sleeping at once, so
        # setting server.streams.heartbeat afterwards only counts after that first sleep.
        monkeypatch.setattr(public_module, "StreamHub", functools.partial(StreamHub, **hub_options))
    if sndbuf is not None:
        listen = public_module.listening_socket

        def small_buffers(*args: Any, **kwargs: Any) -> socket.socket:
            sock = listen(*args, **kwargs)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)  # accepted sockets inherit it
            return sock

        monkeypatch.setattr(public_module, "listening_socket", small_buffers)
    async with running_responder(pool, redis_client, redis_url, ca) as r:
        yield r


@pytest.fixture
def settings() -> CRLSettings:
    return CRLSettings()


@pytest.fixture
async def publisher(
    responder: CRLResponder, vault: KeyVault, clock: FakeClock, urls: PublicURLs, settings: CRLSettings
) -> CRLPublisher:
    p = CRLPublisher(responder.pool, responder.redis, vault, clock, urls, settings)
    await p.load_issuers()
    return p


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def revoke_one(r: CRLResponder, reason: RevocationReason = RevocationReason.KEY_COMPROMISE) -> int:
    rec = await r.issue()
    await r.ca.revoke("moica", rec.serial, actor="t", reason=reason)
    return rec.serial


async def delta(p: CRLPublisher) -> int:
    result = await p.publish_delta("moica")
    assert result is not None and result.kind == "delta"
    return result.number


async def base(p: CRLPublisher) -> int:
    result = await p.publish_base("moica")
    assert result is not None
    return result.number


def refetch(e: Event) -> dict[str, Any]:
    assert e.event == "refetch" and e.id is None, e
    body: dict[str, Any] = json.loads(e.data)
    assert body["url"].endswith("/crl/moica.crl"), body
    return body


async def first_block(client: StreamClient) -> None:
    """The stream opens with the reconnection delay."""
    e = await client.event()
    assert e.retry == 5000 and e.event is None and e.id is None, e


# Live and missed deltas ----------------------------------------------------------------------


async def test_a_live_subscriber_gets_each_delta_soon_after_it_is_published(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    b = await base(publisher)
    client = await responder.subscribe(last_event_id=b)
    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream"
    assert client.headers["transfer-encoding"] == "chunked"
    assert "no-cache" in client.headers["cache-control"]
    await first_block(client)
    await until(lambda: responder.server.streams.count == 1)
    for _ in range(3):
        serial = await revoke_one(responder)
        number = await delta(publisher)
        published = time.monotonic()
        e = await client.event(timeout=2)
        latency = time.monotonic() - published
        assert e.event == "delta" and e.number == number, e
        assert latency < 0.5, f"delta {number} arrived {latency:.2f} s after publication"
        _, served = await responder.served_der("delta")
        assert base64.b64decode(e.data, validate=True) == served, "the event is not the issuer-wide delta CRL"
        crl = x509.load_der_x509_crl(served)
        assert delta_base(crl) == b and crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert await client.quiet(0.2) == [], "nothing is sent twice"
    await client.close()


async def test_a_reconnecting_subscriber_gets_what_it_missed_in_order_then_live_deltas(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await responder.bulk_listed(200)  # a full CRL larger than the deltas missed
    b = await base(publisher)
    client = await responder.subscribe(last_event_id=b)
    await first_block(client)
    await until(lambda: responder.server.streams.count == 1)
    await revoke_one(responder)
    d1 = await delta(publisher)
    assert [e.number for e in await client.deltas_until(d1)] == [d1]
    await client.close()
    await until(lambda: responder.server.streams.count == 0)

    missed = []
    for _ in range(3):
        await revoke_one(responder)
        missed.append(await delta(publisher))
    client = await responder.subscribe(last_event_id=d1)
    await first_block(client)
    got = await client.deltas_until(missed[-1])
    assert [(e.event, e.id) for e in got] == [("delta", str(n)) for n in missed]
    await revoke_one(responder)
    live = await delta(publisher)
    assert [e.number for e in await client.deltas_until(live)] == [live]
    assert [e for e in await client.quiet(0.2) if e.event] == []
    await client.close()


async def test_last_event_id_may_be_the_number_of_the_full_crl_downloaded(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await responder.bulk_listed(200)
    await base(publisher)
    earlier = []
    for _ in range(2):
        await revoke_one(responder)
        earlier.append(await delta(publisher))
    # A relying party downloads the full CRL now (the base: deltas leave it as it is), and
    # deltas go on being published.
    follower = CRLFollower(responder.issuer_certs["moica"])
    status, headers, der = await responder.get("/crl/moica.crl")
    assert status == 200
    follower.load_full(der)
    assert headers["X-CRL-Number"] == str(follower.number)
    later = []
    for _ in range(2):
        await revoke_one(responder)
        later.append(await delta(publisher))
    client = await responder.subscribe(last_event_id=follower.number)
    await first_block(client)
    for e in await client.deltas_until(later[-1]):
        follower.apply(e)
    assert follower.applied == earlier + later
    assert follower.entries == await responder.listed()
    await client.close()


async def test_an_unknown_future_number_gets_refetch(responder: CRLResponder, publisher: CRLPublisher) -> None:
    b = await base(publisher)
    await revoke_one(responder)
    d = await delta(publisher)
    for future in (d + 1, d + 10, 10**17):
        client = await responder.subscribe(last_event_id=future)
        await first_block(client)
        body = refetch(await client.event())
        assert body["number"] == b and str(future) in body["reason"], body
        await client.close()


async def test_after_a_refetch_for_a_future_number_live_deltas_still_arrive(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await base(publisher)
    client = await responder.subscribe(last_event_id=10**17)
    await first_block(client)
    refetch(await client.event())
    await until(lambda: responder.server.streams.count == 1)
    await revoke_one(responder)
    live = await delta(publisher)
    # Either the next delta, or the end of the stream (so the client reconnects with the
    # number of the full CRL it fetched); never silence.
    try:
        got = await client.deltas_until(live, timeout=1)
    except StreamClosed:
        return
    assert [e.number for e in got] == [live]


async def test_last_event_id_zero_gets_retry_then_refetch(responder: CRLResponder, publisher: CRLPublisher) -> None:
    """0 is older than the base; while nothing is on the stream after it (a base is out, its
    delta not yet), the stream says so and closes (the client retries); once the delta of
    the base is there, the answer is a refetch."""
    await base(publisher)
    client = await responder.subscribe(last_event_id=0)
    await first_block(client)
    e = await client.event(timeout=0.5)
    assert e.event is None and any("reconnect" in c for c in e.comments), e
    await client.close()
    await delta(publisher)
    client = await responder.subscribe(last_event_id=0)
    await first_block(client)
    refetch(await client.event(timeout=0.5))
    await client.close()


@pytest.mark.parametrize("settings", [CRLSettings(stream_history=2)])
async def test_a_number_older_than_the_kept_history_gets_refetch(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await responder.bulk_listed(200)
    b1 = await base(publisher)
    deltas = []
    for _ in range(4):
        await revoke_one(responder)
        deltas.append(await delta(publisher))
    # Only the last two deltas are kept, but they are cumulative since b1: a subscriber
    # holding b1 (or the first delta) still needs no refetch.
    follower = CRLFollower(responder.issuer_certs["moica"])
    follower.load_full((await responder.get("/crl/moica.crl"))[2])
    assert follower.number == b1
    client = await responder.subscribe(last_event_id=b1)
    await first_block(client)
    for e in await client.deltas_until(deltas[-1]):
        follower.apply(e)
    assert follower.applied == deltas[-2:]
    assert follower.entries == await responder.listed()
    await client.close()

    # A new base, and deltas of it: the history now holds nothing based on b1 or earlier.
    b2 = await base(publisher)
    for _ in range(2):
        await revoke_one(responder)
        await delta(publisher)
    for held in (b1, deltas[0], deltas[-1]):
        client = await responder.subscribe(last_event_id=held)
        await first_block(client)
        body = refetch(await client.event())
        assert body["number"] == b2 and "no longer kept" in body["reason"], (held, body)
        await client.close()


async def test_missed_deltas_larger_than_the_full_crl_get_refetch(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    b = await base(publisher)  # an empty CRL: a few hundred bytes
    for _ in range(4):
        await revoke_one(responder)
        await delta(publisher)
    client = await responder.subscribe(last_event_id=b)
    await first_block(client)
    body = refetch(await client.event())
    assert body["number"] == b and "larger than the full CRL" in body["reason"], body
    await client.close()


# Bad requests -----------------------------------------------------------------------------


async def test_a_malformed_last_event_id_is_400(responder: CRLResponder, publisher: CRLPublisher) -> None:
    await base(publisher)
    for bad in ("abc", "-1", "1.5", "9" * 30, "+5", "0x10", "1 2"):
        client = await responder.subscribe(last_event_id=bad)
        assert client.status == 400, bad
        assert b"Last-Event-ID" in client.body, (bad, client.body)
        await client.close()
        status, _, body = await responder.get("/healthz")  # the worker is unharmed
        assert status == 200
    assert responder.server.streams.count == 0


async def test_bad_stream_requests_are_refused(responder: CRLResponder, publisher: CRLPublisher) -> None:
    await base(publisher)
    cases = [
        ({"issuer": "nosuch"}, 404, b"no CA named nosuch"),
        ({"method": "POST"}, 405, b"GET"),
        ({"method": "HEAD"}, 405, b""),
        ({"extra": b"Content-Length: 3\r\n", "body": b"abc"}, 400, b"no body"),
        ({"extra": b"Transfer-Encoding: chunked\r\n"}, 411, b""),
    ]
    for kwargs, status, text in cases:
        client = await responder.subscribe(**kwargs)  # type: ignore[arg-type]
        assert client.status == status, kwargs
        assert text in client.body, (kwargs, client.body)
        if status == 405:
            assert client.headers["allow"] == "GET"
        await client.close()
    assert responder.server.streams.count == 0


# The key property: a follower holds exactly the database's revocation state ---------------


def _end_entity_reasons() -> list[RevocationReason]:
    return [RevocationReason.UNSPECIFIED, RevocationReason.KEY_COMPROMISE, RevocationReason.AFFILIATION_CHANGED,
            RevocationReason.SUPERSEDED, RevocationReason.CESSATION_OF_OPERATION,
            RevocationReason.PRIVILEGE_WITHDRAWN]  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_follower_of_the_stream_holds_exactly_what_the_database_lists(
    responder: CRLResponder, publisher: CRLPublisher, clock: FakeClock, seed: int
) -> None:
    rng = random.Random(seed)
    ca = responder.ca
    await responder.bulk_listed(250)  # listed in every base, never changed
    status_of = {(await responder.issue()).serial: CertStatus.GOOD for _ in range(14)}
    stream_numbers: list[int] = []  # every delta the stream carries, bridges included
    done: collections.Counter[str] = collections.Counter()

    async def change_some() -> None:
        for _ in range(rng.randint(1, 4)):
            moves = [(serial, op) for serial, st in status_of.items()
                     for op in {CertStatus.GOOD: ("revoke", "suspend"), CertStatus.SUSPENDED: ("resume", "revoke"),
                                CertStatus.REVOKED: ()}[st]]  # fmt: skip
            if not moves:
                return
            serial, op = rng.choice(moves)
            clock.advance(dt.timedelta(seconds=1))
            if op == "revoke":
                rec = await ca.revoke("moica", serial, actor="t", reason=rng.choice(_end_entity_reasons()))
            elif op == "suspend":
                rec = await ca.suspend("moica", serial, actor="t")
            else:
                rec = await ca.resume("moica", serial, actor="t")
            status_of[serial] = rec.status
            done[op] += 1

    async def publish(kind: str) -> int:
        clock.advance(dt.timedelta(seconds=1))
        result = await (publisher.publish_base if kind == "base" else publisher.publish_delta)("moica")
        assert result is not None
        stream_numbers.append(result.number)  # a base after a base issues the bridge delta
        return result.number

    async def catch_up(client: StreamClient, follower: CRLFollower, number: int) -> list[int]:
        before = len(follower.applied)
        for e in await client.deltas_until(number):
            follower.apply(e)  # raises on refetch: the full CRL here is larger than any backlog
        return follower.applied[before:]

    await publish("base")
    stream_numbers.clear()  # the first base has no bridge
    follower = CRLFollower(responder.issuer_certs["moica"])
    follower.load_full((await responder.get("/crl/moica.crl"))[2])
    assert follower.entries == await responder.listed()
    client = await responder.subscribe(last_event_id=follower.number)
    await first_block(client)
    await until(lambda: responder.server.streams.count == 1)

    plan = ["delta", "delta", "base", "delta", "gone", "delta", "base", "delta", "back", "delta", "base", "delta"]
    for step in plan:
        if step == "gone":
            await client.close()
            continue
        if step == "back":
            assert follower.number is not None
            missed = [n for n in stream_numbers if n > follower.number]
            assert len(missed) == 3
            client = await responder.subscribe(last_event_id=follower.number)
            await first_block(client)
            assert await catch_up(client, follower, missed[-1]) == missed, "missed deltas, in order"
            assert follower.entries == await responder.listed()
            continue
        await change_some()
        number = await publish(step)
        if client.writer.is_closing():
            continue
        assert await catch_up(client, follower, number) == [number]
        assert follower.entries == await responder.listed(), f"after {step} {number}"
    assert follower.applied == stream_numbers
    assert follower.entries == await responder.listed()
    assert min(done[op] for op in ("revoke", "suspend", "resume")) >= 1 and follower.removals >= 1, done
    assert [e for e in await client.quiet(0.2) if e.event] == [], "nothing more is on its way"
    # A relying party that downloads the served full CRL and delta CRL holds the same.
    fresh = CRLFollower(responder.issuer_certs["moica"])
    fresh.load_full((await responder.get("/crl/moica.crl"))[2])
    status, headers, delta_der = await responder.get("/crl/moica/delta.crl")
    assert status == 200
    fresh.apply(Event(id=headers["X-CRL-Number"], event="delta", data=base64.b64encode(delta_der).decode()))
    assert fresh.entries == follower.entries
    await client.close()


# What subscribers cost ----------------------------------------------------------------------


async def test_subscribers_that_disconnect_are_forgotten(responder: CRLResponder, publisher: CRLPublisher) -> None:
    b = await base(publisher)
    hub = responder.server.streams
    clients = [await responder.subscribe(last_event_id=b) for _ in range(30)]
    await until(lambda: hub.count == 30)
    assert all(isinstance(s, RawSubscriber) for subs in hub.by_issuer.values() for s in subs)
    for c in clients[:20]:
        await c.close()
    await until(lambda: hub.count == 10)
    for c in clients[20:]:
        c.writer.transport.abort()  # a reset rather than a FIN
    await until(lambda: hub.count == 0)
    # Publishing to nobody is fine, and a new subscriber still gets the next delta.
    await revoke_one(responder)
    latest = await delta(publisher)
    client = await responder.subscribe(last_event_id=latest)
    await first_block(client)
    await until(lambda: hub.count == 1)
    await revoke_one(responder)
    d = await delta(publisher)
    assert [e.number for e in await client.deltas_until(d)] == [d]
    await client.close()


@pytest.mark.parametrize(("hub_options", "sndbuf"), [({"max_buffer": 64 * 1024}, 16 * 1024)])
async def test_a_subscriber_that_never_reads_is_cut_off_and_the_others_go_on(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    b = await base(publisher)
    # Deltas of ~20 KB: many certificates with status events after the base.
    await responder.bulk_listed(400, events=True)
    hub = responder.server.streams
    stalled = await responder.subscribe(last_event_id=b, rcvbuf=4096)
    await until(lambda: hub.count == 1)
    (stalled_sub,) = hub.by_issuer[responder.issuer_ids["moica"]]
    reader = await responder.subscribe(last_event_id=b)
    await until(lambda: hub.count == 2)
    received: list[int] = []

    async def read() -> None:
        while True:
            e = await reader.event(timeout=30)
            if e.event == "delta":
                received.append(e.number)

    reading = asyncio.create_task(read())
    published: list[int] = []
    try:
        while hub.count == 2:
            assert len(published) < 40, "the stalled subscriber was never cut off"
            published.append(await delta(publisher))
        await until(lambda: received[-1:] == published[-1:], timeout=10)
    finally:
        reading.cancel()
    assert len(published) >= 3, "cut off before anything much was buffered"
    assert received == published, "the reading subscriber missed deltas"
    (left,) = hub.by_issuer[responder.issuer_ids["moica"]]
    assert isinstance(left, RawSubscriber)
    assert left.transport.get_extra_info("peername") == reader.writer.get_extra_info("sockname"), (
        "the wrong one was cut"
    )
    # Its connection is closed and what was buffered for it is let go, though it reads nothing.
    assert isinstance(stalled_sub, RawSubscriber)
    transport = stalled_sub.transport
    await until(lambda: transport.is_closing() and transport.get_write_buffer_size() == 0, timeout=2)
    # The client, reading at last, finds the stream ended.
    with pytest.raises(StreamClosed):
        while True:
            await stalled.event(timeout=5)


@pytest.mark.parametrize(("hub_options", "sndbuf"), [({"max_buffer": 64 * 1024}, 16 * 1024)])
async def test_a_subscriber_that_reads_gets_a_delta_larger_than_the_buffer_limit(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    b = await base(publisher)
    await responder.bulk_listed(2500, events=True)  # a delta of ~110 KB, ~150 KB as base64
    client = await responder.subscribe(last_event_id=b)
    await first_block(client)
    await until(lambda: responder.server.streams.count == 1)
    d = await delta(publisher)
    assert [e.number for e in await client.deltas_until(d)] == [d]


@pytest.mark.parametrize(("hub_options", "sndbuf"), [({"max_buffer": 64 * 1024}, 16 * 1024)])
async def test_a_backlog_larger_than_the_buffer_limit_reaches_a_client_that_reads(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    """The backlog is written with flow control and not counted against the slow-reader
    limit: a reconnecting client several times the limit behind still gets every delta."""
    await responder.bulk_listed(12_000, first=500_000)  # a full CRL larger than the missed deltas
    b = await base(publisher)
    missed = []
    for i in range(4):  # cumulative deltas of ~40 to ~160 KB (more as base64), ~550 KB in all
        await responder.bulk_listed(600, events=True, first=10_000 * (i + 1))
        missed.append(await delta(publisher))
    client = await responder.subscribe(last_event_id=b)
    await first_block(client)
    assert [e.number for e in await client.deltas_until(missed[-1], timeout=10)] == missed
    assert responder.server.streams.count == 1  # still connected, live from here on
    await client.close()


@pytest.mark.parametrize("hub_options", [{"heartbeat": 0.1}])
async def test_heartbeats_keep_an_idle_stream_alive(responder: CRLResponder, publisher: CRLPublisher) -> None:
    b = await base(publisher)
    client = await responder.subscribe(last_event_id=b)
    await first_block(client)
    blocks = await client.quiet(0.55)
    assert len(blocks) >= 3, blocks
    assert all(e.comments == ("keep-alive",) and e.event is None and e.id is None for e in blocks), blocks
    await client.close()


async def test_a_thousand_idle_subscribers_all_get_the_next_delta(
    responder: CRLResponder, publisher: CRLPublisher, record_property: Any
) -> None:
    n = 1000
    b = await base(publisher)
    hub = responder.server.streams
    loop = asyncio.get_running_loop()
    request = b"GET /crl/moica/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: %d\r\n\r\n" % b
    socks: list[socket.socket] = []

    async def subscribe() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        socks.append(s)
        await loop.sock_connect(s, ("127.0.0.1", responder.port))
        await loop.sock_sendall(s, request)

    async def read_until(s: socket.socket, marker: bytes) -> bytes:
        data = b""
        while marker not in data:
            piece = await loop.sock_recv(s, 65536)
            assert piece, "a subscriber was disconnected"
            data += piece
        return data

    try:
        # Warm up (one subscriber), so the measurement counts subscribers, not first use.
        await subscribe()
        await until(lambda: hub.count == 1)
        gc.collect()
        before = _rss_kib()
        tracemalloc.start()
        for _ in range(n - 1):
            await subscribe()  # one by one: uvloop is slow with many concurrent sock_connect
        await until(lambda: hub.count == n, timeout=20)
        await asyncio.gather(*(read_until(s, b"retry: 5000") for s in socks))
        gc.collect()
        after = _rss_kib()
        heap = tracemalloc.get_traced_memory()[0] / (n - 1)
        tracemalloc.stop()
        per = (after - before) * 1024 / (n - 1)
        record_property("rss_bytes_per_subscriber", round(per))
        record_property("traced_heap_bytes_per_subscriber", round(heap))
        print(
            f"\nworker RSS {before} -> {after} KiB for {n - 1} subscribers: {per:.0f} bytes each "
            f"(Python heap, tracemalloc: {heap:.0f} bytes each)"
        )
        assert per < 50 * 1024, f"{per:.0f} bytes of RSS per idle subscriber"

        await revoke_one(responder)
        d = await delta(publisher)
        started = time.monotonic()
        marker = b"id: %d\nevent: delta\n" % d
        await asyncio.wait_for(asyncio.gather(*(read_until(s, marker) for s in socks)), 20)
        print(f"delta {d} reached {n} subscribers in {time.monotonic() - started:.3f} s")
        assert hub.delivered >= n
    finally:
        for s in socks:
            s.close()
    await until(lambda: hub.count == 0, timeout=10)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


# Connections aiohttp already owns ----------------------------------------------------------


@pytest.mark.parametrize("hub_options", [{"heartbeat": 0.1}])
async def test_a_stream_on_a_connection_already_handed_to_aiohttp(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    b = await base(publisher)
    hub = responder.server.streams
    stats = responder.server.fastpath.stats
    created = []
    trace = aiohttp.TraceConfig()

    async def on_create(*_: object) -> None:
        created.append(1)

    trace.on_connection_create_end.append(on_create)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]) as http:
        async with http.get(responder.url + "/healthz") as r:
            assert r.status == 200
        async with http.get(responder.url + "/crl/moica/stream", headers={"Last-Event-ID": "abc"}) as r:
            assert r.status == 400 and "Last-Event-ID" in await r.text()
        async with http.get(responder.url + "/crl/nosuch/stream") as r:
            assert r.status == 404
        async with http.get(responder.url + "/crl/moica/stream", headers={"Last-Event-ID": str(b)}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
            await until(lambda: hub.count == 1)
            (sub,) = hub.by_issuer[responder.issuer_ids["moica"]]
            assert isinstance(sub, QueueSubscriber), "the aiohttp route should serve this connection"
            text = ""
            async with asyncio.timeout(5):
                while ": keep-alive" not in text:  # heartbeats on this route too
                    text += (await r.content.readuntil(b"\n\n")).decode()
            assert text.startswith("retry: 5000\n\n")
            await revoke_one(responder)
            d = await delta(publisher)
            async with asyncio.timeout(5):
                while f"id: {d}\n" not in text:
                    text += (await r.content.readuntil(b"\n\n")).decode()
            event = text.split(f"id: {d}\n", 1)[1].split("\n\n", 1)[0]
            assert event.startswith("event: delta\ndata: ")
            assert crl_number(x509.load_der_x509_crl(base64.b64decode(event.split("data: ", 1)[1]))) == d
    assert len(created) == 1, "the requests did not share one connection"
    assert stats["streams"] == 0, "the fast path never saw this stream"
    # The client is gone: the next heartbeat write notices, and the subscriber is dropped.
    await until(lambda: hub.count == 0)


@pytest.mark.parametrize("sndbuf", [16 * 1024])
async def test_a_stalled_subscriber_on_a_connection_aiohttp_owns_is_cut_off(
    responder: CRLResponder, publisher: CRLPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = await base(publisher)
    await responder.bulk_listed(400, events=True)  # deltas of ~20 KB
    hub = responder.server.streams
    monkeypatch.setattr(hub, "max_buffer", 64 * 1024)  # the aiohttp route takes the hub's limit
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", responder.port))
        await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert head.startswith(b"HTTP/1.1 200")
        await loop.sock_sendall(sock, b"GET /crl/moica/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: %d\r\n\r\n" % b)
        await until(lambda: hub.count == 1)
        (sub,) = hub.by_issuer[responder.issuer_ids["moica"]]
        assert isinstance(sub, QueueSubscriber)
        for _ in range(25):  # ~500 KB: several times the limit plus every buffer on the way
            await delta(publisher)
            if hub.count == 0:
                break
        await until(lambda: hub.count == 0, timeout=1)
    finally:
        sock.close()
