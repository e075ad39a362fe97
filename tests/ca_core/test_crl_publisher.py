"""The CRL publisher against real PostgreSQL and Valkey: bases, deltas, numbers, races."""

from __future__ import annotations

import asyncio
import contextlib
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
    der = b"".join(
        [await redis.get(store.chunk_key(row.id, scope, manifest.number, i)) for i in range(manifest.chunks)]
    )
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
    publisher: CRLPublisher,
    ca: CertificateAuthority,
    redis_client: aioredis.Redis,
    pool: asyncpg.Pool,
    clock: FakeClock,
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


def settings(**kw: object) -> CRLSettings:
    return CRLSettings(**{"delta_interval": dt.timedelta(seconds=10), **kw})  # type: ignore[arg-type]


async def test_tick_publishes_what_is_due_and_nothing_else(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    vault: KeyVault,
    clock: FakeClock,
    urls: PublicURLs,
    ca: CertificateAuthority,
) -> None:
    await redis_client.flushdb()
    p = CRLPublisher(pool, redis_client, vault, clock, urls, settings())
    await p.load_issuers()
    first = await p.tick()
    # Every issuer (root, moica, gca): a base, then at once a delta of it.
    assert sorted((r.issuer, r.kind) for r in first) == [("gca", "base"), ("moica", "base"), ("root", "base")]
    second = await p.tick()
    assert sorted((r.issuer, r.kind) for r in second) == [("gca", "delta"), ("moica", "delta"), ("root", "delta")]
    assert await p.tick() == []  # nothing changed

    rec = await issue(ca)
    assert await p.tick() == []  # an issuance changes no CRL
    await ca.revoke("moica", rec.serial, actor="t")
    assert await p.tick() == []  # changed, but the last delta is younger than the interval
    clock.advance(dt.timedelta(seconds=10))
    [delta] = await p.tick()
    assert (delta.issuer, delta.kind, delta.entries) == ("moica", "delta", 1)
    assert await p.tick() == []

    clock.advance(dt.timedelta(minutes=31))  # past half the delta validity (1 h): refreshed, changes or not
    assert sorted(r.issuer for r in await p.tick()) == ["gca", "moica", "root"]

    clock.advance(dt.timedelta(hours=24))  # the full interval: a new base (and its bridge)
    bases = await p.tick()
    assert sorted((r.issuer, r.kind) for r in bases) == [("gca", "base"), ("moica", "base"), ("root", "base")]
    async with pool.acquire() as conn:
        moica = await db.get_issuer(conn, "moica")
        assert moica is not None
        pubs = await db.list_crl_publications(conn, moica.id, 50)
    newest = [x for x in pubs if x.number == pubs[0].number]
    assert sorted(x.kind for x in newest) == ["base", "delta"]  # the bridge shares the base's number
    bridge = next(x for x in newest if x.kind == "delta")
    assert bridge.entries == 1 and bridge.base_number is not None and bridge.base_number < bridge.number


async def test_a_flushed_redis_gets_its_crls_back(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    vault: KeyVault,
    clock: FakeClock,
    urls: PublicURLs,
    ca: CertificateAuthority,
) -> None:
    await redis_client.flushdb()
    p = CRLPublisher(pool, redis_client, vault, clock, urls, settings())
    await p.load_issuers()
    await p.tick()
    await p.tick()
    before = store.Manifest.from_json(await redis_client.get(store.manifest_key(p._issuer("moica").row.id, "full")))
    await redis_client.flushdb()
    results = await p.tick()
    assert ("moica", "base") in {(r.issuer, r.kind) for r in results}
    after = store.Manifest.from_json(await redis_client.get(store.manifest_key(p._issuer("moica").row.id, "full")))
    assert after.number > before.number


async def test_the_running_publisher_puts_a_revocation_on_the_delta(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    vault: KeyVault,
    urls: PublicURLs,
    ca: CertificateAuthority,
) -> None:
    """With the real clock: the loop notices the change and publishes it (the latency goal is
    measured by bench/crl.py, not asserted here)."""
    from ca_core.clock import SystemClock

    await redis_client.flushdb()
    p = CRLPublisher(pool, redis_client, vault, SystemClock(), urls, settings(delta_interval=dt.timedelta(seconds=1)))
    rec = await issue(ca)
    task = asyncio.create_task(p.run())
    try:
        async with asyncio.timeout(20):
            moica = p._issuer("moica").row.id if p.issuers else None
            while moica is None or not await redis_client.exists(store.manifest_key(moica, "delta")):
                moica = p._issuer("moica").row.id if p.issuers else None
                await asyncio.sleep(0.05)
            await ca.suspend("moica", rec.serial, actor="t")
            while True:
                crl = await served(redis_client, pool, "moica", "delta")
                if crl.get_revoked_certificate_by_serial_number(rec.serial) is not None:
                    break
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(10):  # a publisher that ignores cancellation fails the test
                await task
    assert serials(crl)[rec.serial] == x509.ReasonFlags.certificate_hold
