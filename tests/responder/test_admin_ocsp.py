"""End to end: what the admin API acknowledges is in PostgreSQL, the outbox and the audit log
together, and relying parties see it over OCSP once the signer has run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from cryptography.x509 import ocsp as cocsp

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord
from ca_core.storage import postgres as db
from ca_core.tokens import make_token
from responder.admin import build_admin_app

from .ocsp_harness import Responder, now_clock, start_responder


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def responder(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:  # fmt: skip
    async for r in start_responder(pool, redis_client, redis_url, vault, clock, ca):
        yield r


@pytest.fixture
async def admin(pool: asyncpg.Pool, ca: CertificateAuthority, clock: FakeClock) -> AsyncIterator[Any]:
    token = make_token()
    async with pool.acquire() as conn:
        token_id = await db.insert_token(conn, name="ops", role="operator", secret_hash=token.secret_hash,
                                         now=clock.now())  # fmt: skip
    server = TestServer(build_admin_app(pool, ca, clock))
    await server.start_server()
    async with ClientSession(headers={"Authorization": f"Bearer {token.text(token_id)}"}) as http:

        async def post(path: str, body: Any) -> tuple[int, Any]:
            async with http.post(str(server.make_url(path)), json=body) as r:
                return r.status, orjson.loads(await r.read())

        yield post
    await server.close()


async def trail(pool: asyncpg.Pool, record: CertRecord) -> tuple[str, int, int]:
    """(status in PostgreSQL, outbox events after issuance, audit rows after issuance)."""
    serial = record.serial.to_bytes((record.serial.bit_length() + 7) // 8, "big")
    return (
        await pool.fetchval("SELECT status::text FROM certificates WHERE serial = $1", serial),
        await pool.fetchval("SELECT count(*) FROM outbox WHERE serial = $1 AND event <> 'issued'", serial),
        await pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE serial = $1 AND action <> 'certificate.issue'", serial
        ),
    )


async def ocsp_status(responder: Responder, record: CertRecord) -> cocsp.OCSPCertStatus:
    status, _, body = await responder.post(responder.request(record))
    assert status == 200
    return cocsp.load_der_ocsp_response(body).certificate_status


async def test_acknowledged_changes_are_stored_together_and_reach_ocsp(
    responder: Responder, admin: Any, pool: asyncpg.Pool
) -> None:
    revoked, suspended = await responder.issue(), await responder.issue()
    assert await ocsp_status(responder, revoked) == cocsp.OCSPCertStatus.GOOD

    status, body = await admin(f"/v1/certificates/moica/{revoked.serial_hex}/revoke", {"reason": "keyCompromise"})
    assert status == 200 and body["status"] == "revoked"
    status, body = await admin(f"/v1/certificates/moica/{suspended.serial_hex}/suspend", {})
    assert status == 200
    assert await trail(pool, revoked) == ("revoked", 1, 1)
    assert await trail(pool, suspended) == ("suspended", 1, 1)

    await responder.settle()  # one pass of the signer's outbox loop
    assert await ocsp_status(responder, revoked) == cocsp.OCSPCertStatus.REVOKED
    assert await ocsp_status(responder, suspended) == cocsp.OCSPCertStatus.REVOKED  # certificateHold

    # A refused change leaves no trace anywhere.
    status, body = await admin(f"/v1/certificates/moica/{revoked.serial_hex}/suspend", {})
    assert status == 409 and body["type"] == "urn:certstatus:problem:illegal-transition"
    assert await trail(pool, revoked) == ("revoked", 1, 1)


async def test_a_batch_reaches_ocsp_item_by_item(responder: Responder, admin: Any, pool: asyncpg.Pool) -> None:
    records = [await responder.issue() for _ in range(20)]
    items: list[dict[str, Any]] = [{"issuer": "moica", "serial": r.serial_hex} for r in records]
    items.insert(7, {"issuer": "moica", "serial": "ABCDEF"})  # never issued
    status, body = await admin("/v1/revocations:batch", {"items": items, "reason": "cessationOfOperation"})
    assert status == 207 and (body["revoked"], body["failed"]) == (20, 1)
    assert [r["index"] for r in body["results"] if not r["ok"]] == [7]
    await responder.settle()
    for record in records:
        assert await trail(pool, record) == ("revoked", 1, 1)
        assert await ocsp_status(responder, record) == cocsp.OCSPCertStatus.REVOKED
