"""The CRL publisher against real PostgreSQL and Valkey: bases, deltas, numbers, races."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509

from ca_core.clock import FakeClock
from ca_core.crl_publisher import CRLPublisher, CRLSettings
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType, RevocationReason
from ca_core.profiles import HolderSubject, PublicURLs
from ca_core.storage import crls as store
from ca_core.storage import postgres as db

HOLDER = HolderSubject("王小明", "0000000111729553")


async def issue(ca: CertificateAuthority, issuer: str = "moica") -> CertRecord:
    record, _ = await ca.issue_with_generated_key(
        issuer=issuer, profile="citizen-signing", subject=HOLDER, actor="test", key_type=KeyType.EC_P256
    )
    return record


@pytest.fixture
def clock() -> FakeClock:
    """Redis expires keys by its own (real) clock, so CRLs are dated near real time."""
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
async def publisher(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, vault: KeyVault, clock: FakeClock, urls: PublicURLs, pki: object
) -> AsyncIterator[CRLPublisher]:
    await redis_client.flushdb()
    p = CRLPublisher(pool, redis_client, vault, clock, urls, CRLSettings())
    await p.load_issuers()
    yield p


async def served(redis: aioredis.Redis, pool: asyncpg.Pool, issuer: str, scope: str) -> x509.CertificateRevocationList:
    async with pool.acquire() as conn:
        row = await db.get_issuer(conn, issuer)
    assert row is not None
    manifest = store.Manifest.from_json(await redis.get(store.manifest_key(row.id, scope)))
    der = b"".join([await redis.get(store.chunk_key(row.id, scope, manifest.number, i)) for i in range(manifest.chunks)])
    assert len(der) == manifest.length
    return x509.load_der_x509_crl(der)


def serials(crl: x509.CertificateRevocationList) -> dict[int, x509.ReasonFlags | None]:
    out = {}
    for entry in crl:
        try:
            out[entry.serial_number] = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            out[entry.serial_number] = None
    return out


async def test_base_then_delta_lists_revoked_suspended_and_resumed(
    publisher: CRLPublisher, ca: CertificateAuthority, redis_client: aioredis.Redis, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    a, b, c = [await issue(ca) for _ in range(3)]
    await ca.revoke("moica", a.serial, actor="t", reason=RevocationReason.KEY_COMPROMISE)
    await ca.suspend("moica", b.serial, actor="t")
    base = await publisher.publish_base("moica")
    assert base is not None
    full = await served(redis_client, pool, "moica", "full")
    assert serials(full) == {a.serial: x509.ReasonFlags.key_compromise, b.serial: x509.ReasonFlags.certificate_hold}
    part = await served(redis_client, pool, "moica", f"p{a.crl_partition}")
    assert a.serial in serials(part)

    clock.advance(dt.timedelta(seconds=5))
    await ca.resume("moica", b.serial, actor="t")
    await ca.revoke("moica", c.serial, actor="t")
    delta = await publisher.publish_delta("moica")
    assert delta is not None and delta.base == base.number and delta.number > base.number
    d = await served(redis_client, pool, "moica", "delta")
    assert serials(d) == {b.serial: x509.ReasonFlags.remove_from_crl, c.serial: None}
    ind = d.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert ind.critical and ind.value.crl_number == base.number
