"""The OCSP signer: keeps a signed, fresh response for every certificate in Redis.

Three loops share one process (and several processes share the work through PostgreSQL):

- **Outbox** (:meth:`Signer.process_outbox`): status events written by the lifecycle in the
  same transaction as the change. The signer locks a batch (``FOR UPDATE SKIP LOCKED``),
  signs each certificate's *current* row, writes the responses to Redis and publishes the
  changed keys, and only then marks the events done and commits. A crash anywhere before
  the commit leaves the events pending for the next signer: at-least-once, and harmless to
  repeat because every write carries the row's version.
- **Sweep** (:meth:`Signer.sweep_chunk`): re-signs everything before half its validity has
  passed. Work is cut into 256 chunks per issuer, leased one at a time, signed in batches
  whose progress is recorded so that another signer can finish a chunk whose owner died.
  Chunks fall due at spread-out times, so the steady refresh is a trickle, not a wave.
- **Fill check** (:meth:`Signer.check_fills`): notices that Redis lost the responses (a
  flush, a restart without persistence) and schedules a full refill; sets the issuer's
  "filled" marker (see :mod:`ca_core.storage.responses`) once every chunk has been signed
  again.

Nothing here knows about HTTP; the CLI wires it to a process and a progress display.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import zlib
from collections.abc import Callable, Sequence

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .clock import Clock
from .errors import CAError, StorageError
from .keystore import KeyVault
from .model import serial_to_bytes
from .ocsp import HashAlgorithm, ResponseSigner, SingleStatus
from .pki import load_ocsp_signer
from .storage import postgres as db
from .storage import responses as store
from .storage.fastredis import FastRedis, RedisUnavailable

__all__ = ["IssuerSigning", "Signer", "SignerSettings", "load_issuer_signers"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class SignerSettings:
    """How the signer paces itself.

    :param validity: thisUpdate to nextUpdate of every response (RFC 5019 4: responses are
        pre-produced and valid for a while). Refreshed before half of it has passed.
    :param batch_size: responses signed and written per round trip; a batch blocks the
        event loop while it signs (about 40 us per ECDSA P-256 response).
    :param lease: how long a chunk stays with a signer that stopped reporting progress.
    :param expired_grace: responses are kept for certificates expired less than this long.
    :param outbox_poll: the longest wait for outbox events when no NOTIFY arrives.
    """

    validity: dt.timedelta = dt.timedelta(days=4)
    batch_size: int = 500
    lease: dt.timedelta = dt.timedelta(seconds=60)
    expired_grace: dt.timedelta = dt.timedelta(days=7)
    outbox_poll: float = 1.0
    fill_check_interval: float = 1.0
    #: How often a sweep records its position in a chunk (seconds): what a successor
    #: repeats at most if this signer dies mid-chunk.
    progress_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.validity < dt.timedelta(minutes=2):
            raise CAError("OCSP response validity must be at least 2 minutes")
        if not 1 <= self.batch_size <= 10_000:
            raise CAError("signer batch size must be between 1 and 10000")


@dataclasses.dataclass(frozen=True, slots=True)
class IssuerSigning:
    """An issuer with its current delegated OCSP signer, ready to sign."""

    issuer: db.IssuerRow
    signer: ResponseSigner
    signer_not_after: int  # seconds since the epoch: no response may outlive it


async def load_issuer_signers(conn: asyncpg.Connection, vault: KeyVault, now: dt.datetime) -> dict[int, IssuerSigning]:
    """Every issuer that has a usable OCSP signer (the root has none: its certificates'
    status is on its CRL), by issuer id."""
    from cryptography import x509

    out: dict[int, IssuerSigning] = {}
    for issuer in await db.list_issuers(conn):
        if await db.current_ocsp_signer(conn, issuer.id, now) is None:
            continue
        cert, key = await load_ocsp_signer(conn, vault, issuer, now)
        signer = ResponseSigner(x509.load_der_x509_certificate(issuer.certificate), cert, key)
        out[issuer.id] = IssuerSigning(issuer, signer, int(cert.not_valid_after_utc.timestamp()))
    return out


_GOOD = SingleStatus.good()


def _status_of(row: db.StatusRow) -> SingleStatus:
    if row.status == "good":
        return _GOOD
    assert row.revoked_at is not None
    return SingleStatus(True, row.revoked_at, row.reason)


class Signer:
    """One signer process's share of the work (see the module docstring).

    :param pool: PostgreSQL, the system of record.
    :param redis: where the signed responses go.
    :param vault: opens the OCSP signing keys.
    :param clock: "now" for thisUpdate, leases and due times.
    :param on_signed: called with the number of responses each sweep batch wrote (progress).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        vault: KeyVault,
        clock: Clock,
        settings: SignerSettings | None = None,
        *,
        owner: str | None = None,
        on_signed: Callable[[int], None] | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.vault = vault
        self.clock = clock
        self.settings = settings or SignerSettings()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.on_signed = on_signed
        # Bulk writes go through the lean pipelined client (see its module docstring).
        self.fast = FastRedis.like(redis, timeout=10.0)
        self.issuers: dict[int, IssuerSigning] = {}
        self._wake = asyncio.Event()

    # Issuers ----------------------------------------------------------------------

    async def load_issuers(self) -> None:
        """(Re)load issuers and their current OCSP signers, and make sure each has its
        sweep chunks. Call at start and whenever signers may have been renewed."""
        now = self.clock.now()
        async with self.pool.acquire() as conn:
            issuers = await load_issuer_signers(conn, self.vault, now)
            await db.ensure_sweep_chunks(conn, list(issuers), now)
        self.issuers = issuers

    # Signing ----------------------------------------------------------------------

    def sign_rows(self, rows: Sequence[db.StatusRow], now: dt.datetime) -> list[tuple[bytes, bytes, int]]:
        """Sign one response per row; return (key, stored value, expire-at ms) triples.
        Rows of issuers without a signer are skipped."""
        this_update = int(now.timestamp())
        validity = int(self.settings.validity.total_seconds())
        out = []
        pack, key_of, sha1 = store.pack, store.response_key, HashAlgorithm.SHA1
        for row in rows:
            issuing = self.issuers.get(row.issuer_id)
            if issuing is None:
                continue
            next_update = min(this_update + validity, issuing.signer_not_after)
            der = issuing.signer.sign(
                row.serial, _status_of(row), this_update=this_update, next_update=next_update, hash_algorithm=sha1
            )
            out.append((key_of(row.issuer_id, row.serial), pack(row.version, this_update, next_update, der),
                        next_update * 1000))  # fmt: skip
        return out

    # Outbox -----------------------------------------------------------------------

    async def process_outbox(self, limit: int | None = None) -> int:
        """Handle one batch of pending status events; returns how many were handled."""
        limit = limit or self.settings.batch_size
        with db.storage_errors("processing the outbox"):
            async with self.pool.acquire() as conn, conn.transaction():
                events = await db.claim_outbox(conn, limit)
                if not events:
                    return 0
                keys = sorted({(e.issuer_id, e.serial) for e in events})
                rows = await db.statuses(conn, keys)
                now = self.clock.now()
                items = self.sign_rows(rows, now)
                # Redis first, then the commit that marks the events done: if Redis
                # fails, the exception rolls the transaction back and they stay pending.
                await store.write_responses(self.fast, items, publish=True)
                await db.finish_outbox(conn, [e.id for e in events], now)
        return len(events)

    def wake(self, *_: object) -> None:
        """NOTIFY callback: new outbox events were committed."""
        self._wake.set()

    async def outbox_loop(self) -> None:
        """Process events as they are committed (LISTEN), polling as a fallback."""
        listener: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if listener is None or listener.is_closed():
                        listener = await self.pool.acquire()
                        await listener.add_listener(db.OUTBOX_CHANNEL, self.wake)
                    while await self.process_outbox():
                        pass
                except (StorageError, RedisError, RedisUnavailable, OSError, asyncpg.PostgresError) as e:
                    _log.warning("outbox: %s; retrying", e)
                    if listener is not None:
                        await self._release(listener)
                        listener = None
                    await asyncio.sleep(0.5)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll)
                self._wake.clear()
        finally:
            if listener is not None:
                # Shielded: this runs on cancellation, and the pool waits for every
                # connection to come back before it closes.
                await asyncio.shield(self._release(listener))

    async def _release(self, conn: asyncpg.Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.remove_listener(db.OUTBOX_CHANNEL, self.wake)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    # Sweep ------------------------------------------------------------------------

    def _next_due(self, issuer_id: int, chunk: int, pass_started_at: dt.datetime) -> dt.datetime:
        # Due between a quarter and a half of the validity after the pass began, at a
        # point fixed per chunk: after the first fill the chunks spread out over time.
        spread = (zlib.crc32(b"%d:%d" % (issuer_id, chunk)) & 0xFFFF) / 0x10000
        return pass_started_at + self.settings.validity * (0.25 + 0.25 * spread)

    async def sweep_chunk(self) -> int | None:
        """Lease one due chunk and sign it through; ``None`` if nothing is due.

        The next batch is read from PostgreSQL while the current one is written to Redis,
        and progress is recorded about once a second rather than per batch: a signer that
        dies mid-chunk costs its successor at most a second of repeated work.
        """
        s = self.settings
        with db.storage_errors("leasing a sweep chunk"):
            async with self.pool.acquire() as conn:
                lease = await db.lease_sweep_chunk(conn, self.owner, self.clock.now(), s.lease, list(self.issuers))
        if lease is None:
            return None

        async def fetch(after: bytes | None) -> list[db.StatusRow]:
            with db.storage_errors("reading a sweep batch"):
                async with self.pool.acquire() as conn:
                    return await db.sweep_batch(
                        conn, lease.issuer_id, lease.chunk, after, s.batch_size, self.clock.now() - s.expired_grace
                    )

        signed = 0
        recorded = asyncio.get_running_loop().time()
        rows = await fetch(lease.cursor)
        while True:
            items = self.sign_rows(rows, self.clock.now())
            last = len(rows) < s.batch_size
            following = None if last else asyncio.ensure_future(fetch(serial_to_bytes(rows[-1].serial)))
            try:
                await store.write_responses(self.fast, items, publish=False)
            except BaseException:
                if following is not None:
                    following.cancel()
                    with contextlib.suppress(BaseException):
                        await following
                raise
            signed += len(items)
            if self.on_signed is not None and items:
                self.on_signed(len(items))
            now = self.clock.now()
            if last:
                with db.storage_errors("finishing a sweep chunk"):
                    async with self.pool.acquire() as conn:
                        due = self._next_due(lease.issuer_id, lease.chunk, lease.pass_started_at)
                        await db.finish_sweep_chunk(conn, lease, self.owner, now, due)
                return signed
            assert following is not None
            next_rows = await following
            if asyncio.get_running_loop().time() - recorded >= s.progress_interval:
                recorded = asyncio.get_running_loop().time()
                with db.storage_errors("recording sweep progress"):
                    async with self.pool.acquire() as conn:
                        cursor = serial_to_bytes(rows[-1].serial)
                        if not await db.advance_sweep(conn, lease, self.owner, cursor, now, s.lease):
                            _log.info("lost the lease on chunk %d of issuer %d", lease.chunk, lease.issuer_id)
                            return signed
            rows = next_rows
            if not rows:  # the chunk ended exactly on a batch boundary
                with db.storage_errors("finishing a sweep chunk"):
                    async with self.pool.acquire() as conn:
                        due = self._next_due(lease.issuer_id, lease.chunk, lease.pass_started_at)
                        await db.finish_sweep_chunk(conn, lease, self.owner, self.clock.now(), due)
                return signed

    async def sweep_loop(self) -> None:
        while True:
            try:
                if await self.sweep_chunk() is None:
                    await asyncio.sleep(1.0)
            except (StorageError, RedisError, RedisUnavailable, OSError) as e:
                _log.warning("sweep: %s; retrying", e)
                await asyncio.sleep(1.0)

    # Fill --------------------------------------------------------------------------

    async def check_fills(self) -> None:
        """For each issuer: start a refill if Redis lost its responses, and set or extend
        its "filled" marker when every chunk holds a current pass."""
        validity = self.settings.validity
        run_id = (await self.redis.info("server")).get("run_id")
        # Whether every issuer is known to be repaired for this server instance by the end.
        repaired = run_id is not None
        for issuer_id, issuing in self.issuers.items():
            filled_key, epoch_key = store.filled_key(issuer_id), store.epoch_key(issuer_id)
            pipe = self.redis.pipeline(transaction=False)
            pipe.exists(filled_key)
            pipe.get(epoch_key)
            filled, seen_epoch = await pipe.execute()
            async with self.pool.acquire() as conn, conn.transaction():
                state = await db.fill_state(conn, issuer_id)
                now = self.clock.now()
                lost_mid_fill = state.fill_started_at is not None and seen_epoch != str(state.epoch).encode()
                # A Redis that restarted may have loaded an older snapshot: answers of
                # certificates changed since could be stale, and the marker a lie.
                new_instance = run_id is not None and state.redis_run_id != run_id
                if (state.fill_started_at is None and not filled) or lost_mid_fill or new_instance:
                    epoch = await db.start_fill(conn, issuer_id, state.epoch, now, run_id)
                    if epoch is None:
                        repaired = False  # another signer is at it; stamp next round
                    else:
                        # Written before the commit: a signer that sees the new fill in
                        # PostgreSQL also sees its epoch in Redis. The marker goes first,
                        # so misses are tryLater from here on.
                        pipe = self.redis.pipeline(transaction=True)
                        pipe.delete(filled_key)
                        pipe.set(epoch_key, str(epoch))
                        await pipe.execute()
                        if new_instance and state.redis_run_id is not None:
                            # Re-sign what an old snapshot could have wrong, before the sweep.
                            rows = await db.changed_statuses(conn, issuer_id)
                            for i in range(0, len(rows), self.settings.batch_size):
                                batch = rows[i : i + self.settings.batch_size]
                                await store.write_responses(self.fast, self.sign_rows(batch, now), publish=True)
                        _log.info(
                            "issuer %s: OCSP responses missing or possibly stale in Redis; full fill started",
                            issuing.issuer.name,
                        )
                    continue
                if state.chunks_pending or state.oldest_pass_started_at is None:
                    continue
                expires = min(
                    state.oldest_pass_started_at + validity - dt.timedelta(seconds=1),
                    dt.datetime.fromtimestamp(issuing.signer_not_after, dt.UTC),
                )
                expire_ms = int(expires.timestamp() * 1000)
                if state.fill_started_at is not None:
                    await self.redis.set(filled_key, str(state.epoch), pxat=expire_ms)
                    await db.complete_fill(conn, issuer_id, state.epoch)
                    _log.info("issuer %s: OCSP responses filled", issuing.issuer.name)
                elif filled:
                    await self.redis.pexpireat(filled_key, expire_ms)
        if repaired and run_id is not None:
            # Responders trust this server instance from here on (see responses.INSTANCE_KEY).
            await self.redis.set(store.INSTANCE_KEY, run_id)

    async def start_refill(self) -> None:
        """Re-sign everything now, as a new fill: the issuers' "filled" markers are removed
        until it completes, so a serial Redis does not hold yet is ``tryLater``, not
        ``unauthorized``. For after a bulk load (which writes no outbox events)."""
        for issuer_id in self.issuers:
            async with self.pool.acquire() as conn, conn.transaction():
                state = await db.fill_state(conn, issuer_id)
                epoch = await db.start_fill(conn, issuer_id, state.epoch, self.clock.now())
                if epoch is not None:
                    pipe = self.redis.pipeline(transaction=True)
                    pipe.delete(store.filled_key(issuer_id))
                    pipe.set(store.epoch_key(issuer_id), str(epoch))
                    await pipe.execute()

    async def fill_loop(self) -> None:
        while True:
            try:
                await self.check_fills()
            except (StorageError, RedisError, RedisUnavailable, OSError, asyncpg.PostgresError) as e:
                _log.warning("fill check: %s; retrying", e)
            await asyncio.sleep(self.settings.fill_check_interval)

    async def reload_loop(self, interval: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load_issuers()
            except (CAError, OSError, asyncpg.PostgresError) as e:
                _log.warning("reloading OCSP signers: %s", e)

    async def aclose(self) -> None:
        """Close the signer's own Redis connection (the pool and client are the caller's)."""
        await self.fast.close()

    async def run(self) -> None:
        """Run every loop until cancelled."""
        try:
            await self.load_issuers()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.outbox_loop())
                tg.create_task(self.fill_loop())
                tg.create_task(self.sweep_loop())
                tg.create_task(self.reload_loop())
        finally:
            await asyncio.shield(self.aclose())
