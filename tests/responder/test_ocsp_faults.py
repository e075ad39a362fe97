"""Failures against real servers: Valkey stopped and flushed, a signer killed between its
Redis write and its commit, signers racing each other, and a revocation racing the cache.

The rule checked throughout is DESIGN invariant 3 (never wrong): whatever breaks, an answer
is either the correct status or tryLater; never 'unauthorized' for an issued certificate,
never 'good' for a revoked one (the one documented exception: while a worker cannot reach
Redis, an answer it cached before stands in until its nextUpdate), never a hang or a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as cocsp
from redis.exceptions import RedisError

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.ocsp import UNSUCCESSFUL, ResponseStatus
from ca_core.signer import Signer, SignerSettings
from ca_core.storage import postgres as db
from ca_core.storage import responses as store
from ca_core.storage.embedded import EmbeddedServices
from responder.runtime import redis_client
from tests.conftest import TEST_PASSPHRASE

from .ocsp_harness import HOLDER, Responder, now_clock, start_responder

TRY_LATER = UNSUCCESSFUL[ResponseStatus.TRY_LATER]
UNAUTHORIZED = UNSUCCESSFUL[ResponseStatus.UNAUTHORIZED]
REPO = Path(__file__).resolve().parents[2]

serving = contextlib.asynccontextmanager(start_responder)


@pytest.fixture
def clock() -> FakeClock:
    """Redis expires keys by its own clock, so responses are signed near real time."""
    return now_clock()


def classify(body: bytes) -> str:
    """'good', 'revoked:<reason>', 'tryLater', 'unauthorized' or 'other:<status>'."""
    if body == TRY_LATER:
        return "tryLater"
    if body == UNAUTHORIZED:
        return "unauthorized"
    resp = cocsp.load_der_ocsp_response(body)
    if resp.response_status != cocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"other:{resp.response_status.name}"
    if resp.certificate_status == cocsp.OCSPCertStatus.GOOD:
        return "good"
    if resp.certificate_status == cocsp.OCSPCertStatus.REVOKED:
        reason = resp.revocation_reason
        return f"revoked:{reason.name if reason else None}"
    return "unknown"


async def ask(r: Responder, record: CertRecord | int, issuer: str = "moica", *, sha256: bool = False,
              limit: float = 2.0) -> str:
    """POST one query; the answer must come within ``limit`` seconds, with HTTP 200."""
    der = r.request(record, issuer, hashes.SHA256() if sha256 else None)
    started = time.monotonic()
    status, _, body = await asyncio.wait_for(r.post(der), limit + 1)
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"answered after {elapsed:.2f} s"
    assert status == 200, (status, body)
    return classify(body)


async def issue(ca: CertificateAuthority, issuer: str = "moica") -> CertRecord:
    record, _ = await ca.issue_with_generated_key(
        issuer=issuer, profile="citizen-signing", subject=HOLDER, actor="test", key_type=KeyType.EC_P256
    )
    return record


async def drain(signer: Signer) -> int:
    total = 0
    while n := await signer.process_outbox():
        total += n
    return total


async def sweep_all(signer: Signer) -> tuple[int, int]:
    """(chunks finished, responses signed) until nothing is due."""
    chunks = signed = 0
    while (n := await signer.sweep_chunk()) is not None:
        chunks += 1
        signed += n
    return chunks, signed


@contextlib.asynccontextmanager
async def signers(pool: asyncpg.Pool, redis: aioredis.Redis, vault: KeyVault, clock: FakeClock, n: int,
                  batch_size: int) -> AsyncIterator[list[Signer]]:
    made = [Signer(pool, redis, vault, clock, SignerSettings(batch_size=batch_size)) for _ in range(n)]
    try:
        for s in made:
            await s.load_issuers()
        yield made
    finally:
        for s in made:
            await s.aclose()


async def issuer_ids(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {i.name: i.id for i in await db.list_issuers(conn)}


async def stored(redis: aioredis.Redis, issuer_id: int, serial: int) -> str | None:
    value = await redis.get(store.response_key(issuer_id, serial))
    return None if value is None else classify(store.unpack(value).der)


async def pending(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await db.pending_outbox(conn)


async def eventually(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(interval)


# Valkey stopped ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_valkey_stopped_answers_try_later_and_recovers_without_a_restart(
    pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority, tmp_path: Path
) -> None:
    data = tmp_path / "v"
    first = EmbeddedServices(data, postgres=False, valkey=True).start()
    url = first.redis_url
    second: EmbeddedServices | None = None
    redis = redis_client(url)
    signer_task: asyncio.Task[None] | None = None
    try:
        async with serving(pool, redis, url, vault, clock, ca) as r:
            ids = await issuer_ids(pool)
            good, revoked, later = await r.issue(), await r.issue("gca"), await r.issue()
            uncached = await r.issue()
            await r.ca.revoke("gca", revoked.serial, actor="test", reason="keyCompromise")
            await r.settle()
            expected = {good.serial: "good", revoked.serial: "revoked:key_compromise", later.serial: "good",
                        uncached.serial: "good"}
            issuers = {good.serial: "moica", revoked.serial: "gca", later.serial: "moica", uncached.serial: "moica"}
            for serial in (good.serial, revoked.serial, later.serial):
                assert await ask(r, serial, issuers[serial]) == expected[serial]
            # The signer's loops run from here on, as in production.
            signer_task = asyncio.create_task(r.signer.run())

            await asyncio.to_thread(first.stop)
            # Redis is gone: every query is answered at once, tryLater when nothing current
            # is cached, never an error or a wrong status, for the whole outage.
            outage_end = time.monotonic() + 1.5
            rounds = 0
            while time.monotonic() < outage_end:
                rounds += 1
                for serial, issuer in issuers.items():
                    for sha256 in (False, True):
                        answer = await ask(r, serial, issuer, sha256=sha256)
                        assert answer in (expected[serial], "tryLater"), (serial, answer)
                        if serial == uncached.serial:
                            assert answer == "tryLater"
                await asyncio.sleep(0.05)
            assert rounds > 5
            # A change made while Redis is down is committed; it cannot be published yet.
            await r.ca.revoke("moica", later.serial, actor="test", reason="superseded")
            expected[later.serial] = "revoked:superseded"
            assert await pending(pool) == 1

            # Valkey comes back on the same socket, having lost its data (no snapshot),
            # a little later.
            clock.set(dt.datetime.now(dt.UTC))
            (data / "valkey" / "dump.rdb").unlink(missing_ok=True)
            second = EmbeddedServices(data, postgres=False, valkey=True).start()
            assert second.redis_url == url

            # No restart of the responder or the signer: the signer refills, the responder
            # reconnects; meanwhile nothing wrong is said.
            never = 0x4123456789ABCDEF0123456789ABCDEF

            async def all_correct() -> bool:
                # Until the revocation made during the outage is in Redis again, the copy of
                # 'later' cached before the outage may still stand in whenever this worker
                # finds Redis unreachable (the documented fallback); from then on, never.
                try:
                    published = await stored(redis, ids["moica"], later.serial) == expected[later.serial]
                except RedisError:  # the test's own client reconnecting
                    published = False
                answers = {s: await ask(r, s, i) for s, i in issuers.items()}
                for s, a in answers.items():
                    stale_ok = s == later.serial and not published and a == "good"
                    assert a in (expected[s], "tryLater") or stale_ok, (s, a)
                # Never-issued: 'unauthorized' only once the issuer's refill is complete.
                unissued = await ask(r, never)
                moica_done = all(a == expected[s] for s, a in answers.items() if issuers[s] == "moica")
                assert unissued == "tryLater" or (unissued == "unauthorized" and moica_done), answers
                return answers == expected and unissued == "unauthorized" and r.server.source._subscribed

            await eventually(all_correct, 15, "the responder answers correctly again", interval=0.1)
            assert await pending(pool) == 0
            for sha256 in (False, True):
                assert await ask(r, good, sha256=sha256) == "good"

            # The change subscription is back too: a cached answer is dropped on a change.
            assert await ask(r, good) == "good"
            hits = r.server.source.stats["cache_hits"]
            assert await ask(r, good) == "good"
            assert r.server.source.stats["cache_hits"] == hits + 1
            await r.ca.suspend("moica", good.serial, actor="test")

            async def suspended() -> bool:
                return await ask(r, good) == "revoked:certificate_hold"

            await eventually(suspended, 5, "the suspension shows")
    finally:
        if signer_task is not None:
            signer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await signer_task
        await redis.aclose()
        await asyncio.to_thread(first.stop)
        if second is not None:
            await asyncio.to_thread(second.stop)


@pytest.mark.slow
async def test_cached_answer_stands_in_only_briefly_while_valkey_is_down(
    pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority, tmp_path: Path
) -> None:
    """Redis gone: the cached answer is served for at most OUTAGE_GRACE after Redis last
    answered (a revocation acknowledged later could not be published), then tryLater."""
    from responder.ocsp_source import OUTAGE_GRACE

    services = EmbeddedServices(tmp_path / "v", postgres=False, valkey=True).start()
    redis = redis_client(services.redis_url)
    try:
        async with serving(pool, redis, services.redis_url, vault, clock, ca) as r:
            record = await r.issue()
            assert await ask(r, record) == "good"
            hits = r.server.source.stats["cache_hits"]
            assert await ask(r, record) == "good"
            assert r.server.source.stats["cache_hits"] == hits + 1  # served from the cache
            stopped_at = time.monotonic()
            await asyncio.to_thread(services.stop)
            answers: list[tuple[float, str]] = []
            while time.monotonic() - stopped_at < OUTAGE_GRACE + 1.0:
                answers.append((time.monotonic() - stopped_at, await ask(r, record)))
                await asyncio.sleep(0.05)
            said = [a for _, a in answers]
            assert set(said) <= {"good", "tryLater"}, answers
            # Never good again once it said tryLater, and tryLater once the grace is over.
            assert "good" not in said[said.index("tryLater"):] if "tryLater" in said else False, answers
            assert all(a == "tryLater" for t, a in answers if t > OUTAGE_GRACE + 0.3), answers
    finally:
        await redis.aclose()
        await asyncio.to_thread(services.stop)


@pytest.mark.slow
async def test_valkey_back_from_an_older_snapshot_never_answers_good_for_a_revoked_certificate(
    pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority, tmp_path: Path
) -> None:
    data = tmp_path / "v"
    first = EmbeddedServices(data, postgres=False, valkey=True).start()
    url = first.redis_url
    second: EmbeddedServices | None = None
    redis = redis_client(url)
    signer_task: asyncio.Task[None] | None = None
    try:
        async with serving(pool, redis, url, vault, clock, ca) as r:
            revoked, good = await r.issue(), await r.issue()
            await redis.save()  # a snapshot in which both are good
            await r.ca.revoke("moica", revoked.serial, actor="test", reason="keyCompromise")
            await r.settle()
            assert await ask(r, revoked) == "revoked:key_compromise"

            # Valkey crashes (no snapshot on the way down) and restarts from the older one
            # (say the host rebooted, and the signer is not back yet).
            pid = first.pids()["valkey"]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(first.stop)
            clock.set(dt.datetime.now(dt.UTC))
            second = EmbeddedServices(data, postgres=False, valkey=True).start()
            assert second.redis_url == url

            answers: list[tuple[float, str]] = []
            restarted = time.monotonic()

            async def revoked_again() -> bool:
                answers.append((round(time.monotonic() - restarted, 2), await ask(r, revoked)))
                return answers[-1][1] == "revoked:key_compromise"

            while time.monotonic() - restarted < 1.0:
                await revoked_again()
                await asyncio.sleep(0.02)
            signer_task = asyncio.create_task(r.signer.run())  # the signer is back
            await eventually(revoked_again, 10, "the signer puts the revocation back", interval=0.02)
            assert await ask(r, good) in ("good", "tryLater")
            wrong = [a for a in answers if a[1] == "good"]
            assert not wrong, f"'good' for a revoked certificate {len(wrong)} times, {wrong[0][0]}-{wrong[-1][0]} s"
    finally:
        if signer_task is not None:
            signer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await signer_task
        await redis.aclose()
        await asyncio.to_thread(first.stop)
        if second is not None:
            await asyncio.to_thread(second.stop)


# Valkey flushed ----------------------------------------------------------------------------


async def test_flushall_never_gives_a_wrong_answer_until_refilled(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> None:
    async with serving(pool, redis_client, redis_url, vault, clock, ca) as r:
        records: dict[int, tuple[str, str]] = {}  # serial -> (issuer, expected)
        for issuer in ("moica", "gca"):
            for _ in range(3):
                records[(await r.issue(issuer)).serial] = (issuer, "good")
            revoked = await r.issue(issuer)
            await r.ca.revoke(issuer, revoked.serial, actor="test", reason="keyCompromise")
            records[revoked.serial] = (issuer, "revoked:key_compromise")
            held = await r.issue(issuer)
            await r.ca.suspend(issuer, held.serial, actor="test")
            records[held.serial] = (issuer, "revoked:certificate_hold")
        await r.settle()
        serials = list(records)
        cached = {serials[0], serials[3], serials[5], serials[8]}  # good, revoked, good, revoked
        for s in cached:
            for sha256 in (False, True):
                assert await ask(r, s, records[s][0], sha256=sha256) == records[s][1]
        never = 0x4123456789ABCDEF0123456789ABCDEF
        # A never-issued serial is 'unauthorized' while the issuer is filled...
        assert await ask(r, never) == "unauthorized"

        await redis_client.flushall()

        async def check_all(phase: str) -> dict[str, int]:
            tally: dict[str, int] = {}
            complete = {"moica": True, "gca": True}
            for s, (issuer, expected) in records.items():
                for sha256 in (False, True):
                    answer = await ask(r, s, issuer, sha256=sha256)
                    assert answer in (expected, "tryLater"), (phase, hex(s), expected, answer)
                    if s in cached:  # in-process copies survive a flush and stay right
                        assert answer == expected, (phase, hex(s), answer)
                    complete[issuer] &= answer == expected
                    tally[answer] = tally.get(answer, 0) + 1
            for issuer in complete:
                # 'unauthorized' for a never-issued serial only once every issued one is back.
                answer = await ask(r, never, issuer)
                assert answer == "tryLater" or (answer == "unauthorized" and complete[issuer]), (phase, issuer, answer)
                tally[f"never:{answer}"] = tally.get(f"never:{answer}", 0) + 1
            return tally

        # ...but right after the flush nobody can tell a never-issued serial from a lost one.
        tally = await check_all("flushed")
        assert tally["tryLater"] == 2 * (len(records) - len(cached))
        assert tally["never:tryLater"] == 2

        # A change during the refill is published and shows at once, cached or not.
        first = serials[0]
        await r.ca.revoke(records[first][0], first, actor="test", reason="affiliationChanged")
        records[first] = (records[first][0], "revoked:affiliation_changed")
        await r.settle()
        await asyncio.sleep(0.05)  # the invalidation message
        assert await ask(r, first, records[first][0]) == "revoked:affiliation_changed"

        # The refill, a few chunks at a time: still nothing wrong in between.
        clock.set(dt.datetime.now(dt.UTC))  # time has passed since the first fill
        await r.signer.check_fills()
        chunks = 0
        while await r.signer.sweep_chunk() is not None:
            chunks += 1
            if chunks % 64 == 0:
                await r.signer.check_fills()  # as the fill loop would: no marker while chunks are left
                await check_all(f"refilling, {chunks} chunks")
        assert chunks == 2 * 256
        await r.signer.check_fills()
        tally = await check_all("refilled")
        assert set(tally) == {"good", "revoked:key_compromise", "revoked:certificate_hold",
                              "revoked:affiliation_changed", "never:unauthorized"}, tally


async def test_refill_is_not_marked_done_early_when_signer_clocks_differ(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority
) -> None:
    ids = await issuer_ids(pool)
    record = await issue(ca)
    ahead = FakeClock(clock.now() + dt.timedelta(seconds=2))  # another machine, 2 s fast
    async with signers(pool, redis_client, vault, ahead, 1, batch_size=50) as (fast,), \
            signers(pool, redis_client, vault, clock, 1, batch_size=50) as (slow,):
        await drain(fast)
        await fast.check_fills()
        await sweep_all(fast)
        await fast.check_fills()
        assert await redis_client.exists(store.filled_key(ids["moica"]))
        # A second later Redis loses everything; the other signer notices first.
        clock.advance(dt.timedelta(seconds=1))
        ahead.advance(dt.timedelta(seconds=1))
        await redis_client.flushall()
        await slow.check_fills()  # starts the refill
        await slow.check_fills()  # nothing has been re-signed yet
        filled = await redis_client.exists(store.filled_key(ids["moica"]))
        response = await redis_client.get(store.response_key(ids["moica"], record.serial))
        # The marker claims every response is there; one issued certificate has none.
        assert not (filled and response is None)


# A signer dies between its Redis write and its commit ------------------------------------


LOCKED_OUTBOX_UPDATE = """SELECT count(*) FROM pg_stat_activity
    WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE outbox SET processed_at%'"""


@contextlib.asynccontextmanager
async def outbox_commit_blocked(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """Hold a SHARE lock on the outbox: claiming events (SELECT ... FOR UPDATE) still works,
    marking them done (UPDATE) waits. A signer is thereby held after its Redis write and
    before its commit, for as long as the block lasts."""
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            await conn.execute("LOCK TABLE outbox IN SHARE MODE")
            yield conn
        finally:
            await tr.rollback()


async def test_signer_dying_before_its_commit_leaves_the_events_pending(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority
) -> None:
    ids = await issuer_ids(pool)
    async with signers(pool, redis_client, vault, clock, 3, batch_size=50) as (first, other, fresh):
        await drain(first)  # the PKI's own certificates
        record = await issue(ca)
        await drain(first)
        assert await stored(redis_client, ids["moica"], record.serial) == "good"
        await ca.revoke("moica", record.serial, actor="test", reason="keyCompromise")
        assert await pending(pool) == 1

        async with outbox_commit_blocked(pool) as locker:
            task = asyncio.create_task(first.process_outbox())

            async def written() -> bool:
                return await stored(redis_client, ids["moica"], record.serial) == "revoked:key_compromise"

            await eventually(written, 10, "the revocation is written to Redis")
            await eventually(lambda: locker.fetchval(LOCKED_OUTBOX_UPDATE), 5, "the signer waits to commit")
            assert not task.done()
            # Another signer meanwhile skips the claimed events instead of doing them twice.
            assert await other.process_outbox() == 0
            # The signer dies here: after writing Redis, before committing.
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await pending(pool) == 1  # at-least-once: the event is still to do
        assert await stored(redis_client, ids["moica"], record.serial) == "revoked:key_compromise"
        # The next signer does it (rewriting the same version is allowed) and marks it done.
        assert await fresh.process_outbox() == 1
        assert await pending(pool) == 0
        assert await stored(redis_client, ids["moica"], record.serial) == "revoked:key_compromise"


def signer_process(database_url: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTSTATUS_", "DATABASE_URL", "REDIS_URL"))}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, CERTSTATUS_KEY_PASSPHRASE=TEST_PASSPHRASE)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "responder", "signer", "--quiet"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


@pytest.mark.slow
async def test_signer_process_killed_between_redis_write_and_commit(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, database_url: str, redis_url: str,
    ca: CertificateAuthority, tmp_path: Path,
) -> None:
    ids = await issuer_ids(pool)
    record = await issue(ca, "gca")
    await ca.revoke("gca", record.serial, actor="test", reason="keyCompromise")
    events = await pending(pool)
    assert events >= 2  # the PKI's own certificates, the issuance and the revocation
    key = store.response_key(ids["gca"], record.serial)
    log = tmp_path / "signer.log"
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.CHANGED_CHANNEL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with outbox_commit_blocked(pool) as locker:
            procs.append(signer_process(database_url, redis_url, log))

            async def published() -> bool:
                # Only the outbox publishes (the sweep writes silently): this is its write.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                return message is not None and message["data"] == key

            await eventually(published, 30, "the signer publishes the revocation", interval=0)
            assert await stored(redis_client, ids["gca"], record.serial) == "revoked:key_compromise"
            await eventually(lambda: locker.fetchval(LOCKED_OUTBOX_UPDATE), 10, "the signer waits to commit")
            assert await asyncio.to_thread(stop_process, procs[0]) == -signal.SIGKILL
        # The dead signer's transaction never commits: everything it wrote stays pending.
        await eventually(lambda: _no_lock_waiters(pool), 10, "the dead signer's session ends")
        assert await pending(pool) == events

        procs.append(signer_process(database_url, redis_url, log))

        async def done() -> bool:
            return await pending(pool) == 0

        await eventually(done, 10, "a restarted signer processes the events")
        assert await stored(redis_client, ids["gca"], record.serial) == "revoked:key_compromise"
        assert await asyncio.to_thread(stop_process, procs[1], signal.SIGTERM) in (0, 143), log.read_text()
    finally:
        for p in procs:
            await asyncio.to_thread(stop_process, p)
        await pubsub.aclose()


async def _no_lock_waiters(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        return await conn.fetchval(LOCKED_OUTBOX_UPDATE) == 0 and not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        )


# Signers side by side ----------------------------------------------------------------------


async def test_two_signers_process_each_outbox_event_exactly_once(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority
) -> None:
    ids = await issuer_ids(pool)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.CHANGED_CHANNEL)
    try:
        async with signers(pool, redis_client, vault, clock, 3, batch_size=4) as (s0, s1, s2):
            await drain(s0)  # the PKI's own certificates
            await _published(pubsub)
            records = [await issue(ca, ("moica", "gca")[i % 2]) for i in range(30)]
            assert await pending(pool) == 30

            n1, n2 = await asyncio.gather(drain(s1), drain(s2))
            assert n1 + n2 == 30 and n1 > 0 and n2 > 0, (n1, n2)
            assert await pending(pool) == 0
            # One write (and one change message) per event: nothing was done twice.
            assert sorted(await _published(pubsub)) == sorted(
                store.response_key(ids[r.issuer], r.serial) for r in records
            )

            # Several changes to one certificate, handled by different signers one event at
            # a time: the last state wins whatever the order of their writes.
            changed = records[:5]
            for r in changed:
                await ca.suspend(r.issuer, r.serial, actor="test")
                await ca.resume(r.issuer, r.serial, actor="test")
                await ca.revoke(r.issuer, r.serial, actor="test", reason="keyCompromise")
            async with signers(pool, redis_client, vault, clock, 2, batch_size=1) as (one, two):
                n1, n2 = await asyncio.gather(drain(one), drain(two))
            assert n1 + n2 == 15 and n1 > 0 and n2 > 0, (n1, n2)
            assert await pending(pool) == 0
            assert len(await _published(pubsub)) == 15
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL") == 0
            for r in records:
                want = "revoked:key_compromise" if r in changed else "good"
                assert await stored(redis_client, ids[r.issuer], r.serial) == want
    finally:
        await pubsub.aclose()


async def _published(pubsub: Any) -> list[bytes]:
    """Every change message received so far (waits until the channel is quiet for 0.3 s)."""
    out = []
    quiet_until = time.monotonic() + 0.3
    while time.monotonic() < quiet_until:
        m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if m is not None:
            out.append(m["data"])
            quiet_until = time.monotonic() + 0.3
    return out


async def test_two_signers_sweeping_share_the_chunks_and_sign_each_certificate_once(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority
) -> None:
    records = [await issue(ca, ("moica", "gca")[i % 2]) for i in range(60)]
    ids = await issuer_ids(pool)
    async with signers(pool, redis_client, vault, clock, 2, batch_size=2) as (s1, s2):
        async with pool.acquire() as conn:
            expected = await db.count_certificates(
                conn, list(s1.issuers), clock.now() - s1.settings.expired_grace
            )
        assert expected >= len(records)
        (c1, n1), (c2, n2) = await asyncio.gather(sweep_all(s1), sweep_all(s2))
        # 256 chunks per issuer, each leased and finished by exactly one of them.
        assert c1 + c2 == 2 * 256 and c1 > 0 and c2 > 0, (c1, c2)
        assert n1 + n2 == expected, (n1, n2, expected)
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT count(*) AS chunks, count(*) FILTER (WHERE lease_owner IS NULL) AS free,
                          count(*) FILTER (WHERE due_at > $1) AS later
                   FROM ocsp_sweep""",
                clock.now(),
            )
        assert dict(row) == {"chunks": 512, "free": 512, "later": 512}
        for r in records:
            assert await stored(redis_client, ids[r.issuer], r.serial) == "good"
        keys = [k async for k in redis_client.scan_iter(match=b"ocsp:*")]
        assert len([k for k in keys if k.count(b":") == 2 and not k.startswith((b"ocsp:filled", b"ocsp:epoch"))]) \
            == expected
        # A pass is done: nothing is due for either of them.
        assert await s1.sweep_chunk() is None and await s2.sweep_chunk() is None


# A revocation while the answer is cached ---------------------------------------------------


async def test_revocation_shows_promptly_while_served_from_cache(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> None:
    async with serving(pool, redis_client, redis_url, vault, clock, ca) as r:
        record = await r.issue()
        assert await ask(r, record) == "good"
        hits = r.server.source.stats["cache_hits"]
        assert await ask(r, record) == "good"
        assert r.server.source.stats["cache_hits"] == hits + 1  # served from the cache
        loop = asyncio.create_task(r.signer.outbox_loop())
        try:
            await asyncio.sleep(0.2)  # LISTEN is set up
            await r.ca.revoke("moica", record.serial, actor="test", reason="keyCompromise")
            acknowledged = time.monotonic()
            answers = []
            while (answer := await ask(r, record)) != "revoked:key_compromise":
                answers.append(answer)
                assert answer == "good", answers  # the old answer until the new one, nothing else
                assert time.monotonic() - acknowledged < 2.0, "revocation not visible within 2 s"
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - acknowledged
            assert elapsed < 2.0, elapsed

            async def committed() -> bool:
                return await pending(pool) == 0

            # Published before it is marked done (at-least-once): let the commit land.
            await eventually(committed, 2, "the event is marked done")
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        assert await ask(r, record, sha256=True) == "revoked:key_compromise"

