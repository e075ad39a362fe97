"""Serving published CRLs over HTTP: the four URL forms, caching headers, conditional
requests, HEAD, large CRLs in chunks, publications racing downloads, and every error a
client can meet. A real worker (crl_harness) and a real CRLPublisher."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.utils
import logging
import re
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509

from ca_core.clock import FakeClock
from ca_core.crl_publisher import CRLPublisher, CRLSettings
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import RevocationReason
from ca_core.profiles import PublicURLs
from ca_core.storage import crls as store
from ca_core.storage.fastredis import FastRedis
from responder.crl_source import CRLSource

from .crl_harness import CRLResponder, crl_number, delta_base, listing, running_responder, verifies
from .ocsp_harness import now_clock

FULL, DELTA = "/crl/moica.crl", "/crl/moica/delta.crl"


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def responder(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, ca: CertificateAuthority
) -> AsyncIterator[CRLResponder]:
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


def http_time(value: str) -> int:
    return int(email.utils.parsedate_to_datetime(value).timestamp())


def max_age(cache_control: str) -> int:
    m = re.search(r"max-age=(\d+)", cache_control)
    assert m is not None, cache_control
    return int(m.group(1))


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def revoke_some(r: CRLResponder, n: int = 2) -> list[int]:
    serials = []
    for _ in range(n):
        rec = await r.issue()
        await r.ca.revoke("moica", rec.serial, actor="t", reason=RevocationReason.KEY_COMPROMISE)
        serials.append(rec.serial)
    return serials


# Headers ----------------------------------------------------------------------------------


SCOPES = [
    ("/crl/moica.crl", "full", "moica"),
    ("/crl/moica/2.crl", "p2", "moica"),
    ("/crl/moica/delta.crl", "delta", "moica"),
    ("/crl/moica/2/delta.crl", "p2-delta", "moica"),
    ("/crl/root.crl", "full", "root"),
    ("/crl/root/delta.crl", "delta", "root"),
]


async def test_every_crl_url_serves_its_scope_with_caching_headers(
    responder: CRLResponder, publisher: CRLPublisher, urls: PublicURLs
) -> None:
    await revoke_some(responder)
    base = await publisher.publish_base("moica")
    await revoke_some(responder)
    delta = await publisher.publish_delta("moica")
    root = await publisher.publish_delta("root")  # the first publication of an issuer is a base
    assert base and delta and root and root.kind == "base"
    await publisher.publish_delta("root")
    for path, scope, issuer in SCOPES:
        status, headers, body = await responder.get(path)
        assert status == 200, (path, body)
        assert headers["Content-Type"] == "application/pkix-crl", path
        manifest, der = await responder.served_der(scope, issuer)
        assert body == der, f"{path} served other bytes than the published {scope} CRL"
        crl = x509.load_der_x509_crl(body)
        assert verifies(crl, responder.issuer_certs[issuer])
        assert headers["X-CRL-Number"] == str(crl_number(crl)) == str(manifest.number), path
        assert headers["ETag"] == manifest.etag and headers["ETag"].startswith('"'), path
        assert http_time(headers["Last-Modified"]) == int(crl.last_update_utc.timestamp()), path
        assert crl.next_update_utc is not None
        assert http_time(headers["Expires"]) == int(crl.next_update_utc.timestamp()), path
        cache = headers["Cache-Control"]
        assert "public" in cache and "no-transform" in cache, cache
        assert 0 < max_age(cache) <= crl.next_update_utc.timestamp() - time.time() + 1, (path, cache)
        assert headers["Content-Length"] == str(len(body)), path
        if scope.endswith("delta"):
            assert delta_base(crl) is not None, f"{path} is not a delta CRL"
        else:
            assert delta_base(crl) is None, f"{path} is a delta CRL"
        if scope.startswith("p2"):
            idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
            assert idp.full_name == [x509.UniformResourceIdentifier(urls.partition_crl("moica", 2))]
    _, headers, _ = await responder.get(DELTA)
    assert headers["X-CRL-Number"] == str(delta.number)


async def test_max_age_stops_at_the_publishers_next_reissue_and_never_passes_next_update(
    responder: CRLResponder, publisher: CRLPublisher, clock: FakeClock, settings: CRLSettings
) -> None:
    base = await publisher.publish_base("moica")
    assert base is not None
    _, headers, _ = await responder.get(FULL)
    planned = int(clock.now().timestamp() + settings.full_interval.total_seconds())
    assert abs(max_age(headers["Cache-Control"]) - (planned - time.time())) <= 2, headers["Cache-Control"]

    # A manifest whose planned reissue lies past nextUpdate (a hand-made one: the publisher
    # clamps it too): max-age still ends at nextUpdate.
    manifest, der = await responder.served_der("full")
    number = manifest.number + 100
    iid = responder.issuer_ids["moica"]
    length, chunks, etag = await store.write_chunks(
        responder.redis, iid, "full", number, [der], expire_at=manifest.next_update + 3600
    )
    odd = dataclasses.replace(manifest, number=number, refresh_at=manifest.next_update + 30 * 86400, etag=etag)
    assert await store.switch_manifest(responder.redis, iid, "full", odd)
    await until(lambda: (iid, "full") not in responder.server.crls._manifests)
    _, headers, _ = await responder.get(FULL)
    assert headers["X-CRL-Number"] == str(number)
    assert 0 < max_age(headers["Cache-Control"]) <= manifest.next_update - time.time() + 1, headers["Cache-Control"]


async def test_a_crl_past_its_planned_reissue_must_be_revalidated(
    responder: CRLResponder, publisher: CRLPublisher, clock: FakeClock
) -> None:
    # Published 30 hours ago (valid 48 h, reissue planned after 24 h): the publisher is late.
    clock.advance(dt.timedelta(hours=-30))
    assert await publisher.publish_base("moica") is not None
    status, headers, body = await responder.get(FULL)
    assert status == 200 and x509.load_der_x509_crl(body) is not None
    assert max_age(headers["Cache-Control"]) == 0 and "must-revalidate" in headers["Cache-Control"]
    assert http_time(headers["Expires"]) > time.time(), "the CRL itself is still valid"


async def test_conditional_requests(responder: CRLResponder, publisher: CRLPublisher) -> None:
    await publisher.publish_base("moica")
    status, headers, body = await responder.get(FULL)
    assert status == 200 and body
    etag, this_update = headers["ETag"], http_time(headers["Last-Modified"])

    def date(t: int) -> str:
        return email.utils.formatdate(t, usegmt=True)

    cases = [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f'"other", {etag}'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": date(this_update)}, 304),
        ({"If-Modified-Since": date(this_update + 3600)}, 304),
        ({"If-Modified-Since": date(this_update - 1)}, 200),
        # RFC 9110 13.1.3: If-Modified-Since is ignored when If-None-Match is present.
        ({"If-None-Match": '"other"', "If-Modified-Since": date(this_update + 3600)}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
    ]
    for conditional, expected in cases:
        status, got, body = await responder.get(FULL, **conditional)
        assert status == expected, conditional
        if expected == 304:
            assert body == b"" and got["ETag"] == etag and "Expires" in got and "Cache-Control" in got, conditional
        else:
            assert x509.load_der_x509_crl(body) is not None

    # A new publication changes the validator: the old ETag is no longer "not modified".
    await revoke_some(responder, 1)
    await publisher.publish_base("moica")
    await until(lambda: (responder.issuer_ids["moica"], "full") not in responder.server.crls._manifests)
    status, got, _ = await responder.get(FULL, **{"If-None-Match": etag})
    assert status == 200 and got["ETag"] != etag


async def test_head_gives_the_headers_and_length_without_a_body(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await revoke_some(responder)
    await publisher.publish_base("moica")
    await publisher.publish_delta("moica")
    for path in (FULL, DELTA, "/crl/moica/1.crl"):
        _, full_headers, body = await responder.get(path)
        status, headers, head_body = await responder.get(path, method="HEAD")
        assert status == 200 and head_body == b"", path
        assert headers["Content-Length"] == str(len(body)), path
        assert headers["Content-Type"] == "application/pkix-crl", path
        for name in ("ETag", "Last-Modified", "Expires", "X-CRL-Number"):
            assert headers[name] == full_headers[name], (path, name)


# Large CRLs -------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [CRLSettings(chunk_size=4096)])
async def test_a_large_crl_is_streamed_chunk_by_chunk(responder: CRLResponder, publisher: CRLPublisher) -> None:
    bulk = await responder.bulk_listed(600)
    await publisher.publish_base("moica")
    manifest, der = await responder.served_der("full")
    assert manifest.chunks >= 4, "the test needs a CRL of several chunks"
    async with responder.http.get(responder.url + FULL) as r:
        assert r.status == 200
        assert r.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in r.headers
        assert r.headers["Content-Type"] == "application/pkix-crl"
        assert r.headers["X-CRL-Number"] == str(manifest.number)
        body = await r.read()
    assert body == der and len(body) == manifest.length
    crl = x509.load_der_x509_crl(body)
    assert verifies(crl, responder.issuer_certs["moica"])
    assert set(listing(crl)) == set(bulk)
    # HEAD still tells the length, which chunked transfer does not.
    status, headers, _ = await responder.get(FULL, method="HEAD")
    assert status == 200 and headers["Content-Length"] == str(manifest.length)
    # Served again from the worker's chunk cache: the same bytes.
    assert (await responder.get(FULL))[2] == der


@pytest.mark.parametrize("settings", [CRLSettings(chunk_size=4096)])
async def test_a_chunk_vanishing_mid_download_cuts_the_connection_and_the_worker_goes_on(
    responder: CRLResponder, publisher: CRLPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    await responder.bulk_listed(600)
    await publisher.publish_base("moica")
    manifest, der = await responder.served_der("full")
    iid = responder.issuer_ids["moica"]
    assert await responder.redis.delete(store.chunk_key(iid, "full", manifest.number, 2)) == 1
    got = b""
    with caplog.at_level(logging.WARNING), pytest.raises(aiohttp.ClientPayloadError):
        async with responder.http.get(responder.url + FULL) as r:
            assert r.status == 200 and r.headers["Transfer-Encoding"] == "chunked"
            async for piece in r.content.iter_any():
                got += piece
    assert 0 < len(got) < len(der) and der.startswith(got), "the client must see a cut transfer, not a short CRL"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], "an error was logged"
    assert any("chunk 2 unavailable" in rec.getMessage() for rec in caplog.records)
    # The worker is fine: other paths, and the same CRL again once it is whole.
    assert (await responder.get("/healthz"))[0] == 200
    status, _, body = await responder.get("/crl/moica/1.crl")
    assert status == 200 and x509.load_der_x509_crl(body) is not None
    await responder.redis.set(store.chunk_key(iid, "full", manifest.number, 2), der[2 * 4096 : 3 * 4096])
    assert (await responder.get(FULL))[2] == der


# Publications racing downloads -------------------------------------------------------------


@pytest.mark.parametrize("settings", [CRLSettings(chunk_size=4096)])
async def test_downloads_during_publications_always_get_a_whole_signed_crl(
    responder: CRLResponder, publisher: CRLPublisher, clock: FakeClock
) -> None:
    await responder.bulk_listed(400)
    await publisher.publish_base("moica")
    await publisher.publish_delta("moica")
    issuer_cert = responder.issuer_certs["moica"]
    done = asyncio.Event()
    seen: dict[str, set[int]] = {FULL: set(), DELTA: set(), "/crl/moica/3.crl": set()}
    downloads = 0

    async def publish() -> None:
        try:
            for i in range(8):
                await revoke_some(responder, 1)
                clock.advance(dt.timedelta(seconds=1))
                if i % 3 == 2:
                    await publisher.publish_base("moica")
                else:
                    await publisher.publish_delta("moica")
                await asyncio.sleep(0.02)
        finally:
            done.set()

    async def download(path: str) -> None:
        nonlocal downloads
        while not done.is_set():
            status, headers, body = await responder.get(path)
            assert status == 200, body
            crl = x509.load_der_x509_crl(body)
            assert verifies(crl, issuer_cert), f"{path}: a CRL whose signature does not verify"
            assert headers["X-CRL-Number"] == str(crl_number(crl)), f"{path}: headers of one CRL, bytes of another"
            seen[path].add(crl_number(crl))
            downloads += 1

    async with asyncio.TaskGroup() as tg:
        tg.create_task(publish())
        for path in seen:
            for _ in range(3):
                tg.create_task(download(path))
    assert downloads > 20 and all(len(numbers) > 1 for numbers in seen.values()), (downloads, seen)

    # Downloads have stopped; the worker holds the current manifest in its cache, and a new
    # publication replaces it at once (pub/sub invalidation), for every scope.
    iid = responder.issuer_ids["moica"]
    await asyncio.sleep(0.1)  # the last publication messages
    await responder.get(FULL)
    assert (iid, "full") in responder.server.crls._manifests, "the manifest should be cached"
    await revoke_some(responder, 1)
    result = await publisher.publish_base("moica")
    assert result is not None
    await until(lambda: (iid, "full") not in responder.server.crls._manifests)
    for path in (FULL, "/crl/moica/3.crl", DELTA):
        _, headers, body = await responder.get(path)
        assert headers["X-CRL-Number"] == str(result.number) == str(crl_number(x509.load_der_x509_crl(body))), path


async def test_a_manifest_read_racing_a_publication_is_not_cached(
    responder: CRLResponder, publisher: CRLPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await publisher.publish_base("moica")
    assert first is not None
    source = responder.server.crls
    iid = responder.issuer_ids["moica"]
    manifest_key = store.manifest_key(iid, "full")
    read, release, message_seen = asyncio.Event(), asyncio.Event(), asyncio.Event()
    real_get, real_message = source.fast.get, source._message

    async def slow_get(key: bytes) -> bytes | None:
        value = await real_get(key)
        if key == manifest_key and not release.is_set():
            # The reply is on its way while the publication message overtakes it (they come
            # on two connections, in either order).
            read.set()
            await release.wait()
        return value

    def message(data: bytes) -> None:
        real_message(data)
        message_seen.set()

    monkeypatch.setattr(source.fast, "get", slow_get)
    monkeypatch.setattr(source, "_message", message)
    in_flight = asyncio.create_task(responder.get(FULL))
    await asyncio.wait_for(read.wait(), 5)
    second = await publisher.publish_base("moica")
    assert second is not None
    await asyncio.wait_for(message_seen.wait(), 5)
    release.set()
    _, headers, _ = await in_flight
    assert headers["X-CRL-Number"] == str(first.number)  # it was under way: fine
    _, headers, _ = await responder.get(FULL)
    assert headers["X-CRL-Number"] == str(second.number), "the worker keeps serving a superseded CRL"


async def test_after_a_new_base_the_served_base_and_delta_combine(
    responder: CRLResponder, publisher: CRLPublisher, clock: FakeClock, settings: CRLSettings
) -> None:
    assert [r.kind for r in await publisher.tick()] == ["base"] * 3  # root, moica, gca
    clock.advance(settings.full_interval)
    assert {r.kind for r in await publisher.tick()} == {"base"}
    for _ in range(3):
        await publisher.tick()
    for full_path, delta_path in ((FULL, DELTA), ("/crl/moica/1.crl", "/crl/moica/1/delta.crl")):
        full = x509.load_der_x509_crl((await responder.get(full_path))[2])
        delta = x509.load_der_x509_crl((await responder.get(delta_path))[2])
        base_number = delta_base(delta)
        assert base_number is not None and base_number <= crl_number(full) < crl_number(delta), (
            f"{delta_path} (number {crl_number(delta)}, base {base_number}) does not complete "
            f"{full_path} (number {crl_number(full)})"
        )


# Errors -----------------------------------------------------------------------------------


async def test_unknown_issuers_and_partitions_are_404_naming_what_exists(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await publisher.publish_base("moica")
    await publisher.publish_base("root")
    for path in ("/crl/nosuch.crl", "/crl/nosuch/delta.crl", "/crl/nosuch/1.crl", "/crl/nosuch/1/delta.crl"):
        status, headers, body = await responder.get(path)
        assert status == 404 and b"no CA named 'nosuch'" in body, (path, body)
        assert "Traceback" not in body.decode()
    for path in ("/crl/moica/4.crl", "/crl/moica/4/delta.crl", "/crl/moica/01.crl", "/crl/moica/99999.crl",
                 "/crl/moica/" + "9" * 40 + ".crl"):  # fmt: skip
        status, _, body = await responder.get(path)
        assert status == 404 and b"partitions 0 to 3" in body, (path, body)
    for path in ("/crl/root/0.crl", "/crl/root/0/delta.crl"):
        status, _, body = await responder.get(path)
        assert status == 404 and b"root publishes no partition CRLs" in body and b"/crl/root.crl" in body, body


async def test_a_partition_that_is_not_a_number_is_404_naming_the_valid_range(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await publisher.publish_base("moica")
    for path in ("/crl/moica/abc.crl", "/crl/moica/-1.crl", "/crl/moica/1x/delta.crl"):
        status, _, body = await responder.get(path)
        assert status == 404, path
        assert b"partitions 0 to 3" in body, (path, body)


async def test_nothing_published_yet_is_503_with_retry_after(responder: CRLResponder) -> None:
    for path in (FULL, DELTA, "/crl/moica/0.crl", "/crl/moica/0/delta.crl", "/crl/root.crl"):
        for method in ("GET", "HEAD"):
            status, headers, body = await responder.get(path, method=method)
            assert status == 503, (path, method)
            assert int(headers["Retry-After"]) > 0, path
            if method == "GET":
                assert b"not published yet" in body, body


async def test_a_redis_flush_leaves_the_cached_crls_served_and_the_others_503(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await publisher.publish_base("moica")
    status, _, der = await responder.get(FULL)  # its manifest and chunk are cached now
    assert status == 200
    await responder.redis.flushdb()  # derived bytes only (DESIGN invariant 2); no message is sent
    status, _, body = await responder.get(FULL)
    assert status == 200 and body == der
    for path in ("/crl/moica/2.crl", "/crl/root.crl"):
        status, headers, body = await responder.get(path)
        assert status == 503 and int(headers["Retry-After"]) > 0, (path, body)


# Connections aiohttp already owns ----------------------------------------------------------


@pytest.mark.parametrize("settings", [CRLSettings(chunk_size=4096)])
async def test_crls_on_a_keep_alive_connection_already_handed_to_aiohttp(
    responder: CRLResponder, publisher: CRLPublisher
) -> None:
    await responder.bulk_listed(300)
    await publisher.publish_base("moica")
    await publisher.publish_delta("moica")
    stats = responder.server.fastpath.stats
    before = stats["handed_off"]
    _, large = await responder.served_der("full")
    created = []
    trace = aiohttp.TraceConfig()

    async def on_create(*_: object) -> None:
        created.append(1)

    trace.on_connection_create_end.append(on_create)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as http:

        async def get(path: str, **headers: str) -> tuple[int, bytes, aiohttp.ClientResponse]:
            async with http.get(responder.url + path, headers=headers) as r:
                return r.status, await r.read(), r

        status, _, _ = await get("/healthz")
        assert status == 200
        status, body, r = await get(FULL)
        assert status == 200 and body == large and r.headers["Transfer-Encoding"] == "chunked"
        status, body, r = await get(DELTA)
        assert status == 200 and delta_base(x509.load_der_x509_crl(body)) is not None
        status, _, _ = await get(FULL, **{"If-None-Match": r.headers["ETag"]})
        assert status == 200  # the delta's ETag is not the full CRL's
        status, _, r = await get(DELTA, **{"If-None-Match": r.headers["ETag"]})
        assert status == 304
        status, body, _ = await get("/crl/moica/4.crl")
        assert status == 404 and b"partitions 0 to 3" in body
        status, body, _ = await get(FULL)
        assert status == 200 and body == large
    assert len(created) == 1, "the requests did not share one connection"
    assert stats["handed_off"] == before + 1, "the connection should be handed to aiohttp once"


# Shutdown ---------------------------------------------------------------------------------


async def test_the_crl_source_stops_even_when_stopped_while_subscribing(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    async def start_and_stop(source: CRLSource, steps: int) -> None:
        async with source.running():
            for _ in range(steps):
                await asyncio.sleep(0)

    hung = []
    for steps in range(12):
        source = CRLSource(FastRedis(redis_url), redis_client)
        task = asyncio.create_task(start_and_stop(source, steps))
        done, _ = await asyncio.wait([task], timeout=0.5)
        if not done:
            hung.append(steps)
            for t in asyncio.all_tasks():
                if t.get_name() == "crl-subscription":
                    t.cancel()  # a second cancel gets through; clean up
            await asyncio.wait([task], timeout=5.0)
            break
    assert not hung, f"CRLSource.running() did not return (stopped after {hung[0]} loop steps)"


async def test_a_subscription_that_stops_answering_is_replaced(redis_client: aioredis.Redis, redis_url: str) -> None:
    """A connection that stops answering (here: the server pauses every client) is given up
    after the PING timeout, not kept until TCP notices; the subscription comes back after."""
    source = CRLSource(FastRedis(redis_url), redis_client, ping_interval=0.1, pong_timeout=0.3)
    async with source.running():
        async with asyncio.timeout(5):
            while not source._subscribed:
                await asyncio.sleep(0.01)
        other = aioredis.Redis.from_url(redis_url)
        try:
            await other.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            async with asyncio.timeout(1.2):  # well before the pause ends
                while source._subscribed:
                    await asyncio.sleep(0.01)
        finally:
            await other.aclose()
        async with asyncio.timeout(10):
            while not source._subscribed:
                await asyncio.sleep(0.05)


async def test_an_answering_subscription_is_kept(redis_client: aioredis.Redis, redis_url: str) -> None:
    """PONGs are recognised: a quiet but healthy subscription is never given up."""
    source = CRLSource(FastRedis(redis_url), redis_client, ping_interval=0.05, pong_timeout=0.2)
    async with source.running():
        async with asyncio.timeout(5):
            while not source._subscribed:
                await asyncio.sleep(0.01)
        generation = source._generation
        for _ in range(100):  # 1 s: twenty pings
            assert source._subscribed
            await asyncio.sleep(0.01)
        assert source._generation == generation  # no resubscription either
