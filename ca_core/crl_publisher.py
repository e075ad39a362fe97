"""The CRL publisher: full, partitioned and delta CRLs, kept current in Redis.

Runs inside the signer process (:class:`ca_core.signer.Signer` owns the OCSP loops; the
signer command runs this next to it) and from ``certstatus crl publish``. Per issuer:

- **Base publication** (:meth:`CRLPublisher.publish_base`), every ``full_interval`` or when
  Redis lost it: one pass over the issuer's listed certificates in (partition, serial)
  order, read from one consistent cut of PostgreSQL (:func:`~ca_core.storage.postgres.
  crl_snapshot`), feeds the issuer-wide CRL and the partition CRLs at once; every entry is
  encoded once and written to both spools (:mod:`ca_core.crl`). All of them get the same
  new CRL number. If an earlier base exists, a *bridge* delta of that base is issued from
  the same cut with the same number, so a push-stream subscriber holding the old base
  moves to the new state without downloading the new base.
- **Delta publication** (:meth:`CRLPublisher.publish_delta`), at most every
  ``delta_interval`` while something changed, when the current delta is half-way to its
  nextUpdate, or on demand: every certificate named by a status event after the base's
  cut, in its current state: revoked and suspended certificates with their reason,
  resumed ones as removeFromCRL. Deltas are cumulative since their base (RFC 5280 5.2.4),
  for the issuer-wide scope and for each partition (same issuingDistributionPoint as the
  partition's base).

Order of writes: chunks, then each manifest (a compare-and-set on the CRL number), then
the PostgreSQL record, then the stream. A publisher that dies in between leaves either
nothing visible or a complete CRL; the next publication takes a new number. Only one
publisher works on an issuer at a time (an advisory lock); numbers come from PostgreSQL
and survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import redis.asyncio as aioredis
from cryptography import x509
from redis.exceptions import RedisError

from .clock import Clock
from .crl import CRLEncoder, CRLParams, CRLSigner, EncodedCRL, encode_entries
from .errors import CAError, StorageError, UnknownIssuer
from .keystore import KeyVault
from .pki import load_signing_ca
from .profiles import PublicURLs
from .storage import crls as store
from .storage import postgres as db

__all__ = ["CRLPublisher", "CRLSettings", "PublishResult"]

_log = logging.getLogger(__name__)

_REMOVE_FROM_CRL = 8


@dataclasses.dataclass(frozen=True, slots=True)
class CRLSettings:
    """How often CRLs are issued and how long they are valid.

    :param full_interval: a new base (full and partition CRLs) at least this often.
    :param validity: thisUpdate to nextUpdate of a base CRL; more than ``full_interval``,
        so a late publication does not leave relying parties with an expired CRL.
    :param delta_interval: the shortest time between two delta CRLs while changes come in;
        a change waits at most this long (plus the publication) to appear.
    :param delta_validity: thisUpdate to nextUpdate of a delta CRL; a delta is reissued,
        changes or not, once half of it has passed.
    :param expired_grace: a listed certificate stays on base CRLs this long after it
        expires (RFC 5280 5.1.2.6: at least one regularly scheduled CRL after expiry).
    :param stream_history: how many issuer-wide deltas are kept for subscribers that
        reconnect.
    :param stream_ttl: seconds a delta stays in that history.
    """

    full_interval: dt.timedelta = dt.timedelta(hours=24)
    validity: dt.timedelta = dt.timedelta(hours=48)
    delta_interval: dt.timedelta = dt.timedelta(seconds=60)
    delta_validity: dt.timedelta = dt.timedelta(hours=1)
    expired_grace: dt.timedelta = dt.timedelta(days=7)
    stream_history: int = 1440
    stream_ttl: int = 2 * 86400
    chunk_size: int = store.CHUNK_SIZE
    superseded_grace: int = 600
    poll: float = 0.25

    def __post_init__(self) -> None:
        if self.chunk_size < 4096:
            raise CAError("CRL chunks must be at least 4096 bytes")
        if self.validity <= self.full_interval:
            raise CAError("CRL validity must be longer than the interval between full CRLs")
        if self.delta_validity <= self.delta_interval:
            raise CAError("delta CRL validity must be longer than the delta interval")
        if self.expired_grace < self.full_interval:
            raise CAError("expired certificates must stay listed for at least one full-CRL interval (RFC 5280 5.1.2.6)")


@dataclasses.dataclass(frozen=True, slots=True)
class PublishResult:
    issuer: str
    kind: str
    number: int
    base: int | None
    entries: int
    length: int
    scopes: int
    seconds: float
    switched: bool


@dataclasses.dataclass(slots=True)
class _Issuer:
    row: db.IssuerRow
    certificate: x509.Certificate
    signer: CRLSigner
    partitioned: bool
    base: db.CRLPublication | None = None
    delta: db.CRLPublication | None = None

    @property
    def partitions(self) -> int:
        return self.row.crl_partitions if self.partitioned else 0


class CRLPublisher:
    """Publishes the CRLs of every issuer (see the module docstring).

    :param on_published: called with each :class:`PublishResult` (logging, the CLI).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        vault: KeyVault,
        clock: Clock,
        urls: PublicURLs,
        settings: CRLSettings | None = None,
        *,
        on_published: Callable[[PublishResult], None] | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.vault = vault
        self.clock = clock
        self.urls = urls
        self.settings = settings or CRLSettings()
        self.on_published = on_published
        self.issuers: dict[int, _Issuer] = {}
        self._wake = asyncio.Event()

    # Issuers ---------------------------------------------------------------------------

    async def load_issuers(self) -> None:
        """Open every CA's key (the CRL signing key is the CA key: DESIGN invariant 4)."""
        out: dict[int, _Issuer] = {}
        async with self.pool.acquire() as conn:
            for row in await db.list_issuers(conn):
                known = self.issuers.get(row.id)
                if known is not None:
                    out[row.id] = known
                    continue
                ca = await load_signing_ca(conn, self.vault, row)
                out[row.id] = _Issuer(row, ca.certificate, CRLSigner(ca.key), partitioned=row.kind != "root")
        self.issuers = out

    def _issuer(self, name: str) -> _Issuer:
        for issuing in self.issuers.values():
            if issuing.row.name == name:
                return issuing
        raise UnknownIssuer(f"no issuer named {name!r}")

    def _scope_url(self, issuing: _Issuer, partition: int | None) -> str | None:
        return None if partition is None else self.urls.partition_crl(issuing.row.name, partition)

    # Publishing ------------------------------------------------------------------------

    async def publish_base(self, name: str) -> PublishResult | None:
        """Issue a new base (full + partition CRLs, and the bridge delta); ``None`` if
        another publisher holds the issuer."""
        issuing = self._issuer(name)
        async with self._publishing(issuing) as lock_conn:
            if lock_conn is None:
                return None
            return await self._publish_base(issuing, lock_conn)

    async def publish_delta(self, name: str) -> PublishResult | None:
        """Issue a delta CRL now (a base first if there is none yet)."""
        issuing = self._issuer(name)
        async with self._publishing(issuing) as lock_conn:
            if lock_conn is None:
                return None
            if issuing.base is None:
                return await self._publish_base(issuing, lock_conn)
            return await self._publish_delta(issuing, lock_conn)

    @contextlib.asynccontextmanager
    async def _publishing(self, issuing: _Issuer) -> AsyncIterator[asyncpg.Connection | None]:
        with db.storage_errors(f"publishing the CRLs of {issuing.row.name}"):
            async with self.pool.acquire() as conn:
                if not await db.try_crl_publish_lock(conn, issuing.row.id):
                    yield None
                    return
                try:
                    # Another publisher may have published since we last looked.
                    issuing.base = await db.latest_crl_publication(conn, issuing.row.id, "base")
                    issuing.delta = await db.latest_crl_publication(conn, issuing.row.id, "delta")
                    yield conn
                finally:
                    await db.crl_publish_unlock(conn, issuing.row.id)

    async def _publish_base(self, issuing: _Issuer, conn: asyncpg.Connection) -> PublishResult:
        started = time.perf_counter()
        s = self.settings
        iid, name, partitions = issuing.row.id, issuing.row.name, issuing.partitions
        now = self.clock.now()
        number = await db.allocate_crl_number(conn, iid, now)
        this_update = int(now.timestamp())
        next_update = this_update + int(s.validity.total_seconds())
        previous = issuing.base

        def params(partition: int | None) -> CRLParams:
            return CRLParams(
                issuing.certificate,
                number,
                this_update,
                next_update,
                scope_url=self._scope_url(issuing, partition),
                freshest_url=self.urls.delta_crl(name, partition),
            )

        full = CRLEncoder(params(None), issuing.signer)
        refresh_at = this_update + int(s.full_interval.total_seconds())
        manifests: dict[str, store.Manifest] = {}
        bridge_rows: list[asyncpg.Record] = []
        # Rows arrive in partition order, so each partition CRL is finished, signed and
        # stored as soon as the next partition begins: one partition's spool at a time,
        # whatever the number of partitions.
        done = 0  # partitions [0, done) are stored
        open_part: list[CRLEncoder] = []  # the encoder of partition `done`, once begun

        async def finish_partitions(end: int) -> None:
            nonlocal done
            while done < end:
                enc = open_part.pop() if open_part else CRLEncoder(params(done), issuing.signer)
                try:
                    scope = store.scope_name(done, delta=False)
                    manifests[scope] = await self._store(iid, scope, await asyncio.to_thread(enc.finish), refresh_at)
                finally:
                    enc.close()
                done += 1

        try:
            async with self.pool.acquire() as snap, db.crl_snapshot(snap, iid) as mark:
                async for batch in db.listed_certificates(snap, iid, now - s.expired_grace):
                    ders, length = encode_entries(batch)
                    full.add_encoded(ders, length)
                    for p, chosen, chosen_length in _partition_groups(batch, ders):
                        if not 0 <= p < partitions:
                            if partitions == 0:
                                continue  # the root publishes no partition CRLs
                            raise StorageError(
                                f"a certificate is in CRL partition {p}, beyond the issuer's {partitions}"
                            )
                        if p < done:
                            raise StorageError("listed certificates did not come in partition order")
                        await finish_partitions(p)
                        if chosen:
                            if not open_part:
                                open_part.append(CRLEncoder(params(p), issuing.signer))
                            open_part[0].add_encoded(chosen, chosen_length)
                if previous is not None:
                    # What changed between the two cuts, and what the new base no longer
                    # lists because its expiry grace ended (removeFromCRL, RFC 5280 5.3.1):
                    # previous base + bridge = the new base.
                    cutoff = now - s.expired_grace
                    changed = await db.changed_since(snap, iid, previous.outbox_mark, mark, cutoff)
                    gone = await db.expired_out(snap, iid, previous.this_update - s.expired_grace, cutoff)
                    bridge_rows = sorted([*changed, *gone], key=lambda r: (r[4], r[0]))
            await finish_partitions(partitions)
            manifests["full"] = await self._store(iid, "full", await asyncio.to_thread(full.finish), refresh_at)
        finally:
            full.close()
            for enc in open_part:
                enc.close()
        switched = await self._switch(iid, manifests)
        full_manifest = manifests["full"]
        pub = db.CRLPublication(iid, number, "base", None, mark, dt.datetime.fromtimestamp(this_update, dt.UTC),
                                dt.datetime.fromtimestamp(next_update, dt.UTC), full_manifest.entries,
                                full_manifest.length, self.clock.now())  # fmt: skip
        await db.record_crl_publication(conn, pub)
        issuing.base = pub
        if previous is not None:
            # The bridge: changes between the previous base's cut and this one, as a delta
            # of the previous base, issued with this base's number.
            await self._issue_delta(issuing, conn, number, previous, mark, bridge_rows, this_update)
        result = PublishResult(name, "base", number, None, full_manifest.entries, full_manifest.length,
                               len(manifests), time.perf_counter() - started, switched)  # fmt: skip
        self._report(result)
        return result

    async def _publish_delta(self, issuing: _Issuer, conn: asyncpg.Connection) -> PublishResult:
        started = time.perf_counter()
        base = issuing.base
        assert base is not None
        iid = issuing.row.id
        now = self.clock.now()
        number = await db.allocate_crl_number(conn, iid, now)
        async with self.pool.acquire() as snap, db.crl_snapshot(snap, iid) as mark:
            rows = await db.changed_since(snap, iid, base.outbox_mark, mark, now - self.settings.expired_grace)
        result = await self._issue_delta(issuing, conn, number, base, mark, rows, int(now.timestamp()))
        result = dataclasses.replace(result, seconds=time.perf_counter() - started)
        self._report(result)
        return result

    async def _issue_delta(
        self,
        issuing: _Issuer,
        conn: asyncpg.Connection,
        number: int,
        base: db.CRLPublication,
        mark: int,
        rows: list[asyncpg.Record],
        this_update: int,
    ) -> PublishResult:
        s = self.settings
        iid, name, partitions = issuing.row.id, issuing.row.name, issuing.partitions
        next_update = this_update + int(s.delta_validity.total_seconds())
        # A newer delta can come as soon as delta_interval has passed: caches must not keep
        # this one longer, or a revocation would reach relying parties late.
        refresh_at = this_update + max(1, int(s.delta_interval.total_seconds()))
        entries = [_delta_entry(r) for r in rows]

        def params(partition: int | None) -> CRLParams:
            return CRLParams(issuing.certificate, number, this_update, next_update,
                             scope_url=self._scope_url(issuing, partition), delta_base=base.number)  # fmt: skip

        by_scope: dict[int | None, list[tuple[bytes, int, int | None, int | None]]] = {None: entries}
        for p in range(partitions):
            by_scope[p] = []
        if partitions:
            for row, entry in zip(rows, entries, strict=True):
                if row[5]:
                    bucket = by_scope.get(row[4])
                    if bucket is None:
                        raise StorageError(
                            f"a certificate is in CRL partition {row[4]}, beyond the issuer's {partitions}"
                        )
                    bucket.append(entry)
        full_der = b""
        manifests = {}
        for part, scope_entries in by_scope.items():
            enc = CRLEncoder(params(part), issuing.signer)
            try:
                enc.add_rows(scope_entries)
                crl = await asyncio.to_thread(enc.finish)  # RSA signing off the event loop
                scope = store.scope_name(part, delta=True)
                manifests[scope] = await self._store(iid, scope, crl, refresh_at)
                if part is None:
                    full_der = crl.der()
            finally:
                enc.close()
        switched = await self._switch(iid, manifests)
        pub = db.CRLPublication(iid, number, "delta", base.number, mark, dt.datetime.fromtimestamp(this_update, dt.UTC),
                                dt.datetime.fromtimestamp(next_update, dt.UTC), len(entries), len(full_der),
                                self.clock.now())  # fmt: skip
        await db.record_crl_publication(conn, pub)
        issuing.delta = pub
        await store.add_to_stream(
            self.redis, iid, number, base.number, full_der, keep=s.stream_history, ttl=s.stream_ttl
        )
        return PublishResult(name, "delta", number, base.number, len(entries), len(full_der), len(manifests), 0.0,
                             switched)  # fmt: skip

    async def _switch(self, issuer_id: int, manifests: dict[str, store.Manifest]) -> bool:
        """Point every scope at its new CRL; whether all of them switched (a newer number
        from another publisher wins)."""
        switched = True
        for scope, manifest in manifests.items():
            switched &= await store.switch_manifest(
                self.redis, issuer_id, scope, manifest, superseded_grace=self.settings.superseded_grace
            )
        return switched

    async def _store(self, issuer_id: int, scope: str, crl: EncodedCRL, refresh_at: int) -> store.Manifest:
        s = self.settings
        p = crl.params
        length, chunks, etag = await store.write_chunks(
            self.redis, issuer_id, scope, p.number, crl.chunks(s.chunk_size),
            expire_at=p.next_update + 7 * 86400, chunk_size=s.chunk_size,
        )  # fmt: skip
        return store.Manifest(
            number=p.number,
            base=p.delta_base,
            this_update=p.this_update,
            next_update=p.next_update,
            refresh_at=min(refresh_at, p.next_update),
            length=length,
            chunks=chunks,
            chunk_size=s.chunk_size,
            etag=etag,
            entries=crl.count,
        )

    def _report(self, result: PublishResult) -> None:
        _log.info(
            "issuer %s: %s CRL %d published (%d entries, %d bytes, %d scopes, %.2f s)",
            result.issuer, result.kind, result.number, result.entries, result.length, result.scopes, result.seconds,
        )  # fmt: skip
        if self.on_published is not None:
            self.on_published(result)

    # Scheduling ------------------------------------------------------------------------

    async def due(self, issuing: _Issuer) -> str | None:
        """What the issuer needs now: ``"base"``, ``"delta"`` or nothing."""
        s = self.settings
        now = self.clock.now()
        base, delta = issuing.base, issuing.delta
        if (
            base is None
            or now - base.this_update >= s.full_interval
            or base.next_update - now < (s.validity - s.full_interval) / 2
        ):
            return "base"
        served = await self._served(issuing.row.id)
        full, served_delta = served.get("full"), served.get("delta")
        if full is None or full.number < base.number:
            # Redis lost the base (a flush, a restart without persistence, a chunk evicted) or
            # went back to an older one (an old snapshot, a lagging replica): publish again.
            return "base"
        if served_delta is None or (delta is not None and served_delta.number < delta.number):
            return "delta"
        if delta is None or delta.base_number is None or delta.base_number < base.number:
            return "delta"  # none yet, or the bridge: the served base and delta must combine
        if delta.next_update - now <= s.delta_validity / 2:
            return "delta"
        if now - delta.this_update >= s.delta_interval:
            async with self.pool.acquire() as conn:
                if await db.status_changed_after(conn, issuing.row.id, delta.outbox_mark):
                    return "delta"
        return None

    async def _served(self, issuer_id: int) -> dict[str, store.Manifest]:
        """The full and delta manifests Redis serves, if their first chunk is there too."""
        pipe = self.redis.pipeline(transaction=False)
        for scope in ("full", "delta"):
            pipe.get(store.manifest_key(issuer_id, scope))
        raw_full, raw_delta = await pipe.execute()
        out: dict[str, store.Manifest] = {}
        for scope, raw in (("full", raw_full), ("delta", raw_delta)):
            if raw is not None:
                out[scope] = store.Manifest.from_json(raw)
        if out:
            pipe = self.redis.pipeline(transaction=False)
            for scope, m in out.items():
                pipe.exists(store.chunk_key(issuer_id, scope, m.number, 0))
            present = await pipe.execute()
            out = {scope: m for (scope, m), ok in zip(out.items(), present, strict=True) if ok}
        return out

    async def tick(self) -> list[PublishResult]:
        """Publish whatever is due, issuer by issuer."""
        done = []
        for issuing in list(self.issuers.values()):
            if issuing.base is None and issuing.delta is None:
                async with self.pool.acquire() as conn:
                    issuing.base = await db.latest_crl_publication(conn, issuing.row.id, "base")
                    issuing.delta = await db.latest_crl_publication(conn, issuing.row.id, "delta")
            try:
                result = await self._tick_issuer(issuing)
            except Exception as e:  # noqa: BLE001 - one issuer's trouble must not starve the others
                _log.warning("CRL publisher: issuer %s: %s; retrying", issuing.row.name, e,
                             exc_info=not isinstance(e, (CAError, RedisError, OSError, asyncpg.PostgresError)))  # fmt: skip
                continue
            if result is not None:
                done.append(result)
        return done

    async def _tick_issuer(self, issuing: _Issuer) -> PublishResult | None:
        if await self.due(issuing) is None:
            return None
        async with self._publishing(issuing) as lock_conn:
            if lock_conn is None:
                return None
            # Decided again with the state just read under the lock: another publisher
            # (another signer, 'certstatus crl publish') may have done it meanwhile.
            need = await self.due(issuing)
            if need == "base" or (need == "delta" and issuing.base is None):
                return await self._publish_base(issuing, lock_conn)
            if need == "delta":
                return await self._publish_delta(issuing, lock_conn)
        return None

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Publish as things fall due, until cancelled."""
        await self.load_issuers()
        reloaded = time.monotonic()
        while True:
            try:
                if time.monotonic() - reloaded > 60:
                    await self.load_issuers()
                    reloaded = time.monotonic()
                await self.tick()
            except (CAError, StorageError, RedisError, OSError, asyncpg.PostgresError) as e:
                _log.warning("CRL publisher: %s; retrying", e)
                await asyncio.sleep(1.0)
            except Exception:
                # Never let a surprise end the loop: the signer process would stop with it.
                _log.exception("CRL publisher: unexpected error; retrying")
                await asyncio.sleep(1.0)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as its inner wait completes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll):
                    await self._wake.wait()
            self._wake.clear()


def _partition_groups(batch: list[asyncpg.Record], ders: list[bytes]) -> Iterator[tuple[int, list[bytes], int]]:
    """Split a batch (in partition order) into runs of one partition: (partition, encoded
    entries that belong on its CRL, their total length). End-entity certificates only."""
    start, n = 0, len(batch)
    while start < n:
        p = batch[start][4]
        end = start
        chosen: list[bytes] = []
        length = 0
        while end < n and batch[end][4] == p:
            if batch[end][5]:
                der = ders[end]
                chosen.append(der)
                length += len(der)
            end += 1
        yield p, chosen, length
        start = end


def _delta_entry(row: asyncpg.Record) -> tuple[bytes, int, int | None, int | None]:
    serial, when, reason, invalidity, _partition, _user, status = row
    if status in ("good", "expired"):
        # Resumed since the base (dated when it was resumed), or past its expiry grace
        # (dated as it was listed): removeFromCRL (RFC 5280 5.3.1).
        return serial, when, _REMOVE_FROM_CRL, None
    return serial, when, reason, invalidity
