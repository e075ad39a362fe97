"""CRLs over HTTP and the push stream, against a running responder and a real publisher."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from multidict import CIMultiDict

from ca_core.clock import FakeClock
from ca_core.crl_publisher import CRLPublisher, CRLSettings
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import RevocationReason
from ca_core.profiles import PublicURLs

from .ocsp_harness import Responder, now_clock, start_responder


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def responder(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    redis_url: str,
    vault: KeyVault,
    clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:
    await redis_client.flushdb()
    async for r in start_responder(pool, redis_client, redis_url, vault, clock, ca):
        yield r


@pytest.fixture
async def publisher(responder: Responder, vault: KeyVault, clock: FakeClock, urls: PublicURLs) -> CRLPublisher:
    p = CRLPublisher(responder.pool, responder.redis, vault, clock, urls, CRLSettings())
    await p.load_issuers()
    return p


async def fetch(r: Responder, path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with r.http.get(r.url + path, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def test_published_crls_are_served_with_caching_headers(responder: Responder, publisher: CRLPublisher) -> None:
    rec = await responder.issue()
    await responder.ca.revoke("moica", rec.serial, actor="t", reason=RevocationReason.KEY_COMPROMISE)
    base = await publisher.publish_base("moica")
    assert base is not None
    status, headers, body = await fetch(responder, "/crl/moica.crl")
    assert status == 200, body
    assert headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(body)
    assert crl.get_revoked_certificate_by_serial_number(rec.serial) is not None
    assert headers["X-CRL-Number"] == str(base.number)
    status, _, _ = await fetch(responder, "/crl/moica.crl", **{"If-None-Match": headers["ETag"]})
    assert status == 304
    status, _, body = await fetch(responder, f"/crl/moica/{rec.crl_partition}.crl")
    assert status == 200 and x509.load_der_x509_crl(body).get_revoked_certificate_by_serial_number(rec.serial)
    status, _, body = await fetch(responder, "/crl/moica/99.crl")
    assert status == 404 and b"partitions 0 to 3" in body
    status, _, body = await fetch(responder, "/crl/nosuch.crl")
    assert status == 404


async def test_the_stream_sends_missed_and_live_deltas(responder: Responder, publisher: CRLPublisher) -> None:
    base = await publisher.publish_base("moica")
    assert base is not None
    rec = await responder.issue()
    reader, writer = await asyncio.open_connection("127.0.0.1", int(responder.url.rsplit(":", 1)[1]))
    writer.write(b"GET /crl/moica/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: %d\r\n\r\n" % base.number)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    await asyncio.sleep(0.2)
    await responder.ca.revoke("moica", rec.serial, actor="t")
    delta = await publisher.publish_delta("moica")
    assert delta is not None
    data = b""
    async with asyncio.timeout(5):
        while b"event: delta" not in data or not data.rstrip().endswith(b"0"):
            data += await reader.read(65536)
            if b"\n\n" in data.split(b"event: delta", 1)[-1]:
                break
    text = data.decode()
    assert f"id: {delta.number}" in text
    b64 = text.split("event: delta\ndata: ", 1)[1].split("\n", 1)[0]
    crl = x509.load_der_x509_crl(base64.b64decode(b64))
    assert crl.get_revoked_certificate_by_serial_number(rec.serial) is not None
    writer.close()
    await writer.wait_closed()


async def test_a_malformed_last_event_id_is_refused(responder: Responder, publisher: CRLPublisher) -> None:
    status, _, body = await fetch(responder, "/crl/moica/stream", **{"Last-Event-ID": "abc"})
    assert status == 400 and b"Last-Event-ID" in body
