"""The public OCSP endpoint over real HTTP, answered from real Redis, signed for real."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as cocsp

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.ocsp import UNSUCCESSFUL, ResponseStatus

from .ocsp_harness import Responder, now_clock, start_responder


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def responder(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:
    async for r in start_responder(pool, redis_client, redis_url, vault, clock, ca):
        yield r


def parse(body: bytes) -> cocsp.OCSPResponse:
    return cocsp.load_der_ocsp_response(body)


async def test_good_over_get_and_post_with_rfc5019_headers(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    for status, headers, body in (await responder.post(der), await responder.get(der)):
        assert status == 200
        assert headers["Content-Type"] == "application/ocsp-response"
        resp = parse(body)
        assert resp.response_status == cocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.certificate_status == cocsp.OCSPCertStatus.GOOD
        assert resp.serial_number == record.serial
        assert "max-age=" in headers["Cache-Control"] and "public" in headers["Cache-Control"]
        assert "no-transform" in headers["Cache-Control"] and "must-revalidate" in headers["Cache-Control"]
        assert headers["ETag"].startswith('"')
        assert resp.next_update_utc is not None
        assert headers["Expires"] == resp.next_update_utc.strftime("%a, %d %b %Y %H:%M:%S GMT")
        assert headers["Last-Modified"] == resp.this_update_utc.strftime("%a, %d %b %Y %H:%M:%S GMT")


async def test_revocation_suspension_and_resumption_show_at_once(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    assert parse((await responder.get(der))[2]).certificate_status == cocsp.OCSPCertStatus.GOOD  # now cached
    await responder.ca.suspend("moica", record.serial, actor="test")
    await responder.settle()
    await asyncio.sleep(0.05)  # the invalidation message
    resp = parse((await responder.get(der))[2])
    assert resp.certificate_status == cocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is not None and resp.revocation_reason.name == "certificate_hold"
    await responder.ca.resume("moica", record.serial, actor="test")
    await responder.settle()
    await asyncio.sleep(0.05)
    assert parse((await responder.get(der))[2]).certificate_status == cocsp.OCSPCertStatus.GOOD


async def test_sha256_certid_is_answered_with_a_sha256_certid(responder: Responder) -> None:
    record = await responder.issue("gca")
    der = responder.request(record, "gca", hashes.SHA256())
    resp = parse((await responder.post(der))[2])
    assert resp.certificate_status == cocsp.OCSPCertStatus.GOOD
    assert resp.hash_algorithm.name == "sha256"
    assert resp.serial_number == record.serial


async def test_never_issued_serial_and_unknown_issuer_are_unauthorized(responder: Responder) -> None:
    body = (await responder.post(responder.request(0x1234567890ABCDEF)))[2]
    assert body == UNSUCCESSFUL[ResponseStatus.UNAUTHORIZED]


async def test_malformed_gets_400_and_the_worker_keeps_serving(responder: Responder) -> None:
    status, _, body = await responder.get(path="/ocsp/not-base64!!")
    assert status == 400 and body == UNSUCCESSFUL[ResponseStatus.MALFORMED_REQUEST]
    status, _, body = await responder.post(b"\x30\x03\x02\x01\x01")
    assert status == 400
    record = await responder.issue()
    assert (await responder.post(responder.request(record)))[0] == 200


async def test_other_paths_go_to_aiohttp(responder: Responder) -> None:
    async with responder.http.get(responder.url + "/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with responder.http.get(responder.url + "/ca/moica.crt") as r:
        assert r.status == 200


async def test_get_quirks(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    b64 = base64.b64encode(der).decode()
    for path in ["/ocsp/" + b64, "/ocsp//" + b64.replace("+", "%2B"), "/ocsp/" + b64.rstrip("=").replace("+", " ").replace(" ", "%20")]:
        status, _, body = await responder.get(path=path)
        assert status == 200, path
        assert parse(body).serial_number == record.serial
