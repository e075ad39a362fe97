"""The OCSP signer against real PostgreSQL and Valkey: outbox, sweep, fill, versions."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.x509 import ocsp as cocsp

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.profiles import HolderSubject
from ca_core.signer import Signer, SignerSettings
from ca_core.storage import postgres as db
from ca_core.storage import responses as store

HOLDER = HolderSubject("王小明", "0000000111729553")


async def issue(ca: CertificateAuthority, issuer: str = "moica") -> CertRecord:
    record, _ = await ca.issue_with_generated_key(
        issuer=issuer, profile="citizen-signing", subject=HOLDER, actor="test", key_type=KeyType.EC_P256
    )
    return record


async def stored(redis: aioredis.Redis, pool: asyncpg.Pool, record: CertRecord) -> cocsp.OCSPResponse | None:
    async with pool.acquire() as conn:
        issuer = await db.get_issuer(conn, record.issuer)
    assert issuer is not None
    value = await redis.get(store.response_key(issuer.id, record.serial))
    if value is None:
        return None
    return cocsp.load_der_ocsp_response(store.unpack(value).der)


@pytest.fixture
def clock() -> FakeClock:
    """Redis expires keys by its own (real) clock, so responses are signed near real time."""
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
async def signer(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, vault: KeyVault, clock: FakeClock, pki: object
) -> AsyncIterator[Signer]:
    s = Signer(pool, redis_client, vault, clock, SignerSettings(batch_size=3))
    await s.load_issuers()
    await drain(s)  # the PKI's own certificates (issuing CAs, OCSP signers)
    yield s
    await s.aclose()


async def drain(signer: Signer) -> int:
    total = 0
    while (n := await signer.process_outbox()):
        total += n
    return total


async def sweep_all(signer: Signer) -> int:
    total = 0
    while (n := await signer.sweep_chunk()) is not None:
        total += n
    return total


async def test_outbox_signs_each_change_and_marks_it_done(signer: Signer, ca: CertificateAuthority, pool: asyncpg.Pool, redis_client: aioredis.Redis) -> None:
    record = await issue(ca)
    assert await drain(signer) == 1
    resp = await stored(redis_client, pool, record)
    assert resp is not None and resp.certificate_status == cocsp.OCSPCertStatus.GOOD
    assert resp.serial_number == record.serial

    await ca.revoke("moica", record.serial, actor="test", reason="keyCompromise")
    await drain(signer)
    resp = await stored(redis_client, pool, record)
    assert resp is not None and resp.certificate_status == cocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is not None and resp.revocation_reason.name == "key_compromise"
    async with pool.acquire() as conn:
        assert await db.pending_outbox(conn) == 0


async def test_an_older_version_never_overwrites_a_newer_one(signer: Signer, ca: CertificateAuthority, pool: asyncpg.Pool, redis_client: aioredis.Redis, clock: FakeClock) -> None:
    record = await issue(ca)
    async with pool.acquire() as conn:
        moica = await db.get_issuer(conn, "moica")
        assert moica is not None
        (old_row,) = await db.statuses(conn, [(moica.id, record.serial)])
    await drain(signer)
    clock.advance(dt.timedelta(seconds=5))
    await ca.suspend("moica", record.serial, actor="test")
    await drain(signer)
    # A slow sweep that read the row before the suspension finishes last: refused.
    stale = signer.sign_rows([old_row], clock.now())
    assert await store.write_responses(signer.fast, stale, publish=False) == 0
    resp = await stored(redis_client, pool, record)
    assert resp is not None and resp.certificate_status == cocsp.OCSPCertStatus.REVOKED


async def test_sweep_fills_everything_and_sets_the_marker(signer: Signer, ca: CertificateAuthority, pool: asyncpg.Pool, redis_client: aioredis.Redis) -> None:
    records = [await issue(ca, "moica") for _ in range(4)] + [await issue(ca, "gca") for _ in range(3)]
    await signer.check_fills()  # starts the first fill
    signed = await sweep_all(signer)
    assert signed >= 7
    for r in records:
        assert await stored(redis_client, pool, r) is not None
    await signer.check_fills()
    for issuer_id in signer.issuers:
        assert await redis_client.exists(store.filled_key(issuer_id))
    # Nothing is due again straight away.
    assert await signer.sweep_chunk() is None

    # Redis loses everything: the next check starts a refill, the marker stays away until done.
    await redis_client.flushdb()
    await signer.check_fills()
    for issuer_id in signer.issuers:
        assert not await redis_client.exists(store.filled_key(issuer_id))
    assert await sweep_all(signer) >= 7
    await signer.check_fills()
    for issuer_id in signer.issuers:
        assert await redis_client.exists(store.filled_key(issuer_id))
    for r in records:
        assert await stored(redis_client, pool, r) is not None


async def test_refill_after_a_bulk_load_signs_the_new_rows_and_hides_the_marker_meanwhile(
    signer: Signer, pool: asyncpg.Pool, redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    await signer.check_fills()
    await sweep_all(signer)
    await signer.check_fills()
    (moica_id,) = [i for i, s in signer.issuers.items() if s.issuer.name == "moica"]
    assert await redis_client.exists(store.filled_key(moica_id))

    now = clock.now()
    serials = [0x3A00_0000_0000_0000_0000_0000_0000_0000 + i for i in range(5)]
    async with pool.acquire() as conn:
        await db.copy_certificates(conn, [
            (moica_id, s.to_bytes(16, "big"), "citizen-signing", "CN=bulk", None, now, now + dt.timedelta(days=365),
             "good", None, None, None, s % 4, b"not a certificate", now, now)
            for s in serials
        ])  # fmt: skip
    await signer.start_refill()
    # Until the refill completes, a miss must not be read as "never issued".
    assert not await redis_client.exists(store.filled_key(moica_id))
    await sweep_all(signer)
    await signer.check_fills()
    assert await redis_client.exists(store.filled_key(moica_id))
    for s in serials:
        value = await redis_client.get(store.response_key(moica_id, s))
        assert value is not None
        assert cocsp.load_der_ocsp_response(store.unpack(value).der).serial_number == s


@pytest.mark.slow
async def test_a_redis_restarted_from_an_old_snapshot_is_repaired_before_it_can_mislead(
    pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority, tmp_path: Path
) -> None:
    """Valkey crashes and comes back from a snapshot taken before a revocation: the snapshot
    says 'good'. The signer notices the new server instance, re-signs every certificate whose
    status ever changed at once, and withdraws the marker until a full pass is done."""
    from ca_core.storage.embedded import EmbeddedServices

    services = EmbeddedServices(tmp_path / "v", postgres=False, valkey=True).start()
    try:
        client = aioredis.Redis.from_url(services.redis_url)
        signer = Signer(pool, client, vault, clock, SignerSettings(batch_size=50))
        await signer.load_issuers()
        record = await issue(ca)
        await drain(signer)
        await signer.check_fills()
        await sweep_all(signer)
        await signer.check_fills()
        (moica_id,) = [i for i, s in signer.issuers.items() if s.issuer.name == "moica"]
        assert await client.exists(store.filled_key(moica_id))
        await client.save()  # the snapshot: 'good'
        await ca.revoke("moica", record.serial, actor="test", reason="keyCompromise")
        await drain(signer)
        resp = await stored(client, pool, record)
        assert resp is not None and resp.certificate_status == cocsp.OCSPCertStatus.REVOKED
        # A crash: the server exits without saving, and comes back from the old snapshot.
        with contextlib.suppress(Exception):
            await client.shutdown(nosave=True)
        await client.aclose()
        await signer.aclose()
        services.stop()
        services = EmbeddedServices(tmp_path / "v", postgres=False, valkey=True).start()
        client = aioredis.Redis.from_url(services.redis_url)
        resp = await stored(client, pool, record)
        assert resp is not None and resp.certificate_status == cocsp.OCSPCertStatus.GOOD  # stale, as feared

        signer = Signer(pool, client, vault, clock, SignerSettings(batch_size=50))
        await signer.load_issuers()
        await signer.check_fills()
        resp = await stored(client, pool, record)
        assert resp is not None and resp.certificate_status == cocsp.OCSPCertStatus.REVOKED
        assert not await client.exists(store.filled_key(moica_id))
        await sweep_all(signer)
        await signer.check_fills()
        assert await client.exists(store.filled_key(moica_id))
        await client.aclose()
        await signer.aclose()
    finally:
        services.stop()


def test_chunks_cover_every_serial_and_spread_ours_evenly() -> None:
    from ca_core.issue import random_serial
    from ca_core.model import serial_to_bytes

    bounds = [db.chunk_bounds(c) for c in range(db.SWEEP_CHUNKS)]
    assert bounds[0][0] == b"" and bounds[-1][1] is None
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))  # contiguous
    counts = [0] * db.SWEEP_CHUNKS
    for _ in range(25_600):
        raw = serial_to_bytes(random_serial())
        (chunk,) = [c for c, (lo, hi) in enumerate(bounds) if raw >= lo and (hi is None or raw < hi)]
        counts[chunk] += 1
    assert min(counts) > 40 and max(counts) < 180  # ~100 each: every chunk gets a share


async def test_a_chunk_larger_than_a_batch_records_progress_and_a_successor_resumes(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, vault: KeyVault, clock: FakeClock, pki: object
) -> None:
    settings = SignerSettings(batch_size=2, progress_interval=0.0)
    first = Signer(pool, redis_client, vault, clock, settings, owner="first")
    await first.load_issuers()
    (moica_id,) = [i for i, s in first.issuers.items() if s.issuer.name == "moica"]
    low, _ = db.chunk_bounds(100)
    now = clock.now()
    serials = [int.from_bytes(low + bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i]), "big") for i in range(1, 8)]
    async with pool.acquire() as conn:
        await db.copy_certificates(conn, [
            (moica_id, s.to_bytes(16, "big"), "citizen-signing", "CN=bulk", None, now, now + dt.timedelta(days=365),
             "good", None, None, None, s % 4, b"not a certificate", now, now)
            for s in serials
        ])  # fmt: skip
        await conn.execute("UPDATE ocsp_sweep SET due_at = $1::timestamptz + interval '1 day' WHERE chunk <> 100", now)
        await conn.execute("UPDATE ocsp_sweep SET due_at = $1 WHERE chunk = 100", now)
    # The first signer dies during its second batch: the first batch's progress is on record.
    written: list[int] = []

    def die_on_second_batch(n: int) -> None:
        written.append(n)
        if len(written) == 2:
            raise RuntimeError("signer died")

    first.on_signed = die_on_second_batch
    with pytest.raises(RuntimeError):
        await first.sweep_chunk()
    await first.aclose()
    async with pool.acquire() as conn:
        cursor = await conn.fetchval("SELECT cursor FROM ocsp_sweep WHERE issuer_id = $1 AND chunk = 100", moica_id)
        assert cursor is not None and int.from_bytes(cursor, "big") == serials[1]
        # Its lease runs out.
        await conn.execute("UPDATE ocsp_sweep SET lease_until = $1::timestamptz - interval '1 second' WHERE chunk = 100", now)
    second = Signer(pool, redis_client, vault, clock, settings, owner="second")
    await second.load_issuers()
    done = await second.sweep_chunk()
    await second.aclose()
    assert done == len(serials) - 2  # resumed after the cursor, not from the start
    for s in serials:
        assert await redis_client.exists(store.response_key(moica_id, s))
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT cursor, lease_owner FROM ocsp_sweep WHERE issuer_id = $1 AND chunk = 100",
                                  moica_id)
    assert row["cursor"] is None and row["lease_owner"] is None
