"""Where OCSP answers come from, in the order the responder tries them.

1. **Issuer table** (in memory): a CertID's (hash algorithm, issuer name hash, issuer key
   hash) names the issuer; anything else is ``unauthorized`` at once.
2. **In-process cache**: recently served responses, dropped the moment the signer publishes
   a change (Redis pub/sub, :data:`~ca_core.storage.responses.CHANGED_CHANNEL`). The cache
   is only trusted while the subscription is up; every (re)subscription starts it empty,
   so a missed message can never leave a stale answer behind.
3. **Redis**: the pre-signed SHA-1 CertID response (:mod:`ca_core.storage.responses`).
4. **Live signing, bounded**: answers derived from the pre-signed one: the same status and
   times for a SHA-256 CertID, or with the client's nonce when nonces are honoured; and
   RFC 6960 "extended revoked" for never-issued serials when configured. At most
   ``live_signing_limit`` signatures run at once; beyond that a SHA-256 or never-issued
   query gets ``tryLater`` and a nonce query gets the pre-signed answer without its nonce.

Why SHA-1 pre-signed and SHA-256 on demand (figures in bench/results): a response with the
responder certificate is ~790 bytes, so pre-signing both CertID forms would double Redis
to ~1.7 KB per certificate and double the sweep's signing, for the ~20 % of checks that
use SHA-256 (TAX_SEASON.md). Derived SHA-256 answers are cached here like any other, so a
popular certificate is signed once per worker per change, not per request.

Never wrong (DESIGN invariant 3): nothing is served past its nextUpdate; a serial Redis
does not hold is ``unauthorized`` only while Redis holds the issuer's "filled" marker,
and ``tryLater`` otherwise; when Redis is unreachable a cached answer is served only
while it is still within its validity, else ``tryLater``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import email.utils
import enum
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, NamedTuple, TypeVar

import asyncpg
import redis.asyncio as aioredis
from cryptography import x509
from redis.exceptions import RedisError

from ca_core.clock import Clock
from ca_core.keystore import KeyVault
from ca_core.ocsp import (
    EXTENDED_REVOKE_TIME,
    HASH_ALGORITHMS,
    UNSUCCESSFUL,
    FlatQuery,
    HashAlgorithm,
    ResponseSigner,
    ResponseStatus,
    SingleStatus,
    issuer_hashes,
    response_status,
)
from ca_core.signer import load_issuer_signers
from ca_core.storage import postgres as db
from ca_core.storage import responses as store

from .fastredis import FastRedis, RedisUnavailable
from .server import stop_task

__all__ = ["Answer", "IssuerEntry", "IssuerKey", "OCSPSource", "UnknownSerialPolicy"]

_log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")


def put_bounded(d: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """``d[key] = value``, first evicting the oldest insertions so that at most ``limit`` remain.

    For the worker's memos and answer cache, whose entries are exact tuples of bytes and ints
    that the garbage collector stops tracking (ca_core.ocsp.FlatQuery). An OrderedDict, not a
    dict, for two reasons, both measured:

    - a plain dict whose entries are all untracked is itself untracked by a full collection,
      and the next insertion of a fresh tuple re-tracks it *into the youngest generation*,
      where every collection walks all its entries until it is promoted again: 25-60 ms
      gen-0 collections, collecting nothing, at x50 with 200,000-entry caches. The collector
      never untracks an OrderedDict, so the container stays in the oldest generation;
    - evicting one entry per insertion is O(1) (``popitem(last=False)``), where a dict's
      ``d.pop(next(iter(d)))`` is O(n) on a front of deleted slots (profiled at 29 % of a busy
      worker) and rebuilding it put a new 175,000-entry dict into the youngest generation.
    """
    if limit <= 0:
        return
    while len(d) >= limit:
        d.popitem(last=False)
    d[key] = value


class UnknownSerialPolicy(enum.StrEnum):
    """How to answer for a serial the issuer never issued (RFC 6960 2.2)."""

    UNAUTHORIZED = "unauthorized"
    EXTENDED_REVOKED = "revoked"


class Answer(NamedTuple):
    """An OCSP response ready to send. ``this_update``/``next_update`` are set for signed
    responses (they drive the caching headers); ``etag`` too unless it carries a nonce.

    The cache keeps each as a plain tuple of the same fields (:meth:`OCSPSource._remember`):
    CPython never stops tracking a tuple *subclass* in its garbage collector, only an
    exact tuple of untracked values, so 200,000 cached NamedTuples would be walked by
    every collection of the generation holding them (see :data:`ca_core.ocsp.FlatQuery`)."""

    der: bytes
    this_update: int = 0
    next_update: int = 0
    etag: bytes | None = None
    #: ETag, Last-Modified and Expires header lines, rendered once per answer.
    static_headers: bytes = b""

    @property
    def signed(self) -> bool:
        return self.next_update != 0


#: How long after Redis last answered a cached copy may stand in for it (seconds): the
#: propagation bound of DESIGN invariant 3.
OUTAGE_GRACE = 1.0

_UNAUTHORIZED = Answer(UNSUCCESSFUL[ResponseStatus.UNAUTHORIZED])
_TRY_LATER = Answer(UNSUCCESSFUL[ResponseStatus.TRY_LATER])
_INTERNAL_ERROR = Answer(UNSUCCESSFUL[ResponseStatus.INTERNAL_ERROR])
#: A cached answer (the exact-tuple form of an Answer) back as an Answer.
_as_answer = functools.partial(tuple.__new__, Answer)

#: Where an issuer is found: (index in HASH_ALGORITHMS, issuer name hash, issuer key
#: hash), the first three fields of a FlatQuery.
IssuerKey = tuple[int, bytes, bytes]
#: A cache key: (issuer id, serial, index in HASH_ALGORITHMS). Ints only, so untracked.
_CacheKey = tuple[int, int, int]
#: A cached answer: Answer's fields as an exact tuple (Answer's docstring).
_Cached = tuple[bytes, int, int, bytes | None, bytes]
_SHA1 = HASH_ALGORITHMS.index(HashAlgorithm.SHA1)


@functools.lru_cache(maxsize=8192)
def _http_date(t: int) -> bytes:
    # Memoised: every response of a signer batch shares its thisUpdate and nextUpdate, and a
    # million certificates are signed in a few thousand batches (64 entries missed at 1 M).
    return email.utils.formatdate(t, usegmt=True).encode()


def _answer(der: bytes, this_update: int, next_update: int) -> Answer:
    etag = b'"' + hashlib.blake2b(der, digest_size=16).hexdigest().encode() + b'"'
    static = b"ETag: %s\r\nLast-Modified: %s\r\nExpires: %s\r\n" % (
        etag,
        _http_date(this_update),
        _http_date(next_update),
    )
    return Answer(der, this_update, next_update, etag, static)


class _Fill:
    """A cache miss waiting for its Redis GET (:meth:`OCSPSource.answer_soon`): the
    :class:`~ca_core.storage.fastredis.Waiter` the reply is handed to."""

    __slots__ = ("deliver", "entry", "generation", "query", "source")

    def __init__(
        self,
        source: OCSPSource,
        query: FlatQuery,
        entry: IssuerEntry,
        deliver: Callable[[Answer], None],
        generation: int,
    ) -> None:
        self.source, self.query, self.entry, self.deliver, self.generation = source, query, entry, deliver, generation

    def done(self) -> bool:
        return False  # the reader hands over each reply once

    def set_result(self, value: bytes | None, /) -> None:
        self.source._filled(self, value, failed=False)

    def set_exception(self, exception: BaseException, /) -> None:
        self.source._filled(self, None, failed=True)


@dataclasses.dataclass(frozen=True, slots=True)
class IssuerEntry:
    id: int
    name: str
    signer: ResponseSigner | None  # None: no OCSP key loaded; live signing unavailable


class OCSPSource:
    """Answers OCSP queries for one responder process (see the module docstring).

    :param fast: the pipelined GET client for responses.
    :param subscriber: a redis-py client for the change subscription.
    :param issuers: the issuer table, from :meth:`load_issuers`.
    :param cache_entries: the most answers kept in process (FIFO eviction).
    :param live_signing_limit: signatures in flight at once in this process.
    :param honour_nonce: sign nonce-bearing queries live (RFC 8954) instead of ignoring
        the nonce (RFC 5019 default).
    """

    def __init__(
        self,
        fast: FastRedis,
        subscriber: aioredis.Redis,
        issuers: dict[IssuerKey, IssuerEntry],
        *,
        clock: Clock | None = None,
        cache_entries: int = 200_000,
        live_signing_limit: int = 8,
        honour_nonce: bool = False,
        unknown_serial: UnknownSerialPolicy = UnknownSerialPolicy.UNAUTHORIZED,
    ) -> None:
        self.fast = fast
        self.subscriber = subscriber
        self.issuers = issuers
        self.cache_entries = cache_entries
        self.live_signing_limit = live_signing_limit
        self.honour_nonce = honour_nonce
        self.unknown_serial = unknown_serial
        self._time = (lambda: clock.now().timestamp()) if clock is not None else time.time
        # Values are Answers as exact tuples: with the int-only keys, entries the garbage
        # collector stops tracking (Answer's docstring).
        self._cache: OrderedDict[_CacheKey, _Cached] = OrderedDict()
        self._subscribed = False
        self._generation = 0  # bumped by every invalidation; guards in-flight fills
        self._live = 0
        # FastRedis.connections_made when the server behind it was last found trustworthy.
        self._validated_connection = -1
        self._validating: asyncio.Future[bool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"cache_hits": 0, "redis_gets": 0, "live_signed": 0, "shed": 0, "invalidations": 0}

    # Issuers ----------------------------------------------------------------------

    @staticmethod
    async def load_issuers(
        pool: asyncpg.Pool, vault: KeyVault | None, now: dt.datetime
    ) -> dict[IssuerKey, IssuerEntry]:
        """The issuer table: every issuing CA with an OCSP signer, under both hash forms."""
        async with pool.acquire() as conn:
            issuers = await db.list_issuers(conn)
            signers = await load_issuer_signers(conn, vault, now) if vault is not None else {}
            with_signer = {i.id for i in issuers if await db.current_ocsp_signer(conn, i.id, now) is not None}
        table: dict[IssuerKey, IssuerEntry] = {}
        for issuer in issuers:
            if issuer.id not in with_signer:
                continue  # the root: its certificates' status is on its CRL
            signing = signers.get(issuer.id)
            entry = IssuerEntry(issuer.id, issuer.name, signing.signer if signing else None)
            for h in issuer_hashes(x509.load_der_x509_certificate(issuer.certificate)).values():
                table[(HASH_ALGORITHMS.index(h.hash_algorithm), h.name_hash, h.key_hash)] = entry
        return table

    # Invalidation -----------------------------------------------------------------

    def invalidate(self, key: bytes) -> None:
        """Drop every cached answer for the certificate a changed response key names."""
        self._generation += 1
        self.stats["invalidations"] += 1
        try:
            _, issuer, serial = key.split(b":")
            ident = (int(issuer), int(serial, 16))
        except ValueError:
            self._cache.clear()  # not one of ours: be safe
            return
        for alg in range(len(HASH_ALGORITHMS)):
            self._cache.pop((*ident, alg), None)

    def _drop_all(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def follow_changes(self) -> None:
        """Subscribe to the change channel until cancelled, resubscribing after failures."""
        while True:
            pubsub = self.subscriber.pubsub()
            try:
                await pubsub.subscribe(store.CHANGED_CHANNEL)
                pinged: float | None = None  # when an unanswered PING was sent
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    now = time.monotonic()
                    if pinged is not None and now - pinged > 5.0:
                        # A connection that stopped answering (half-open after a fail-over)
                        # would otherwise keep the cache trusted while changes go unheard.
                        raise RedisError("the change subscription did not answer PING within 5 s")
                    if message is None:
                        # A quiet channel: make sure the connection is really alive.
                        if pinged is None:
                            await pubsub.ping()
                            pinged = now
                        continue
                    kind = message["type"]
                    if kind == "pong":
                        pinged = None
                    elif kind == "subscribe":
                        self._drop_all()
                        self._subscribed = True
                    elif kind == "message":
                        self.invalidate(message["data"])
            except (RedisError, OSError) as e:
                if self._subscribed:
                    _log.warning("lost the OCSP change subscription (%s); cache off until it is back", e)
                # The cache is kept, but no longer trusted for hits: it only stands in
                # when Redis cannot answer at all (then nothing newer can be published
                # either). It is emptied when the subscription is back.
                self._subscribed = False
                self._generation += 1
                await asyncio.sleep(0.25)
            finally:
                self._subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[OCSPSource]:
        """Follow changes for the duration of the block."""
        task = asyncio.create_task(self.follow_changes(), name="ocsp-changes")
        try:
            yield self
        finally:
            await stop_task(task)
            await self.fast.close()

    # Answers ----------------------------------------------------------------------

    def cached(self, query: FlatQuery) -> Answer | None:
        """The answer from the in-process cache, if it holds a current one (no I/O)."""
        if not self._subscribed or (query[4] is not None and self.honour_nonce):
            return None
        entry = self.issuers.get(query[:3])
        if entry is None:
            return _UNAUTHORIZED
        hit = self._current((entry.id, query[3], query[0]))
        if hit is not None:
            self.stats["cache_hits"] += 1
        return hit

    def _current(self, key: _CacheKey) -> Answer | None:
        """The cached answer under ``key`` if it is still within its validity."""
        entry = self._cache.get(key)
        if entry is not None and entry[2] > self._time():  # next_update
            return _as_answer(entry)
        return None

    def _remember(self, key: _CacheKey, answer: Answer, generation: int) -> None:
        # Kept even while unsubscribed (a fresh read from Redis is the truth, and it is the
        # copy to fall back on if Redis goes away), but not if a change or a lost
        # subscription may have raced this read.
        if generation != self._generation or self.cache_entries == 0:
            return
        entry: _Cached = (answer.der, answer.this_update, answer.next_update, answer.etag, answer.static_headers)
        put_bounded(self._cache, key, entry, self.cache_entries)

    async def _server_trusted(self) -> bool:
        """Whether the Redis server behind the connection is one the signer has checked
        since it (re)started (responses.INSTANCE_KEY). Asked once per new connection."""
        if self.fast.connections_made == self._validated_connection:
            return True
        if self._validating is None:
            self._validating = asyncio.ensure_future(self._validate())
        validating = self._validating
        try:
            return await asyncio.shield(validating)
        finally:
            if self._validating is validating and validating.done():
                self._validating = None

    async def _validate(self) -> bool:
        # Connected first, so that the check below is recorded for the connection it went
        # over (before, the first check of a new client connected in it and was not kept).
        await self.fast.connect()
        connection = self.fast.connections_made
        run_id, stamp = await self.fast.run_id_and_get(store.INSTANCE_KEY)
        trusted = run_id is not None and stamp is not None and stamp.decode() == run_id
        if trusted and self.fast.connections_made == connection:
            self._validated_connection = connection
        elif not trusted:
            _log.warning("Redis server %s is not yet checked by the signer; answering tryLater", run_id)
        return trusted

    async def _presigned(self, entry: IssuerEntry, serial: int) -> Answer | None:
        """The SHA-1 answer from cache or Redis; None if Redis has none.
        Raises RedisUnavailable when Redis cannot say and no current copy is cached."""
        key = (entry.id, serial, _SHA1)
        if self._subscribed:
            hit = self._current(key)
            if hit is not None:
                return hit
        generation = self._generation
        try:
            self.stats["redis_gets"] += 1
            value = await self.fast.get(store.response_key(entry.id, serial))
        except RedisUnavailable:
            stale = self._stand_in(key)
            if stale is not None:
                return stale
            raise
        # The comparison in line: this runs for every Redis read, the await only on a new connection.
        if self.fast.connections_made != self._validated_connection and not await self._server_trusted():
            raise RedisUnavailable("Redis server not yet checked by the signer")
        return self._from_redis(entry, serial, value, generation)

    def _stand_in(self, key: _CacheKey) -> Answer | None:
        """What may answer for ``key`` when Redis just stopped answering: a cached copy, only
        within the propagation bound of Redis's last answer, since a change acknowledged later
        could not be published (DESIGN invariant 3)."""
        stale = self._current(key)
        if stale is not None and time.monotonic() - self.fast.last_reply < OUTAGE_GRACE:
            return stale
        return None

    def _from_redis(self, entry: IssuerEntry, serial: int, value: bytes | None, generation: int) -> Answer | None:
        """The SHA-1 answer in a value read from Redis (remembered in the cache), or None."""
        if value is None:
            return None
        try:
            stored = store.unpack(value)
        except ValueError:
            _log.error("unreadable response in Redis for issuer %s serial %X", entry.name, serial)
            return None
        if stored.next_update <= self._time():
            return None
        answer = _answer(stored.der, stored.this_update, stored.next_update)
        self._remember((entry.id, serial, _SHA1), answer, generation)
        return answer

    async def _issuer_filled(self, issuer_id: int) -> bool:
        """Whether Redis holds every response of the issuer. Asked afresh on every miss
        (misses are rare: never-issued serials, or a refill under way): a remembered
        "filled" could outlive a flush and turn an issued certificate into "unauthorized"."""
        return await self.fast.exists(store.filled_key(issuer_id))

    def _try_live(self) -> bool:
        if self._live >= self.live_signing_limit:
            self.stats["shed"] += 1
            return False
        return True

    async def _sign_live(
        self,
        signer: ResponseSigner,
        serial: int,
        status: SingleStatus,
        this_update: int,
        next_update: int,
        alg: HashAlgorithm,
        nonce: bytes | None,
        extended: bool,
    ) -> bytes:
        if signer.signs_fast:
            return self._sign_now(signer, serial, status, this_update, next_update, alg, nonce, extended)
        self._live += 1
        try:
            self.stats["live_signed"] += 1
            # In a thread: an RSA signature would otherwise stall every connection.
            return await asyncio.to_thread(
                signer.sign, serial, status, this_update=this_update, next_update=next_update,
                hash_algorithm=alg, nonce=nonce, extended_revoked=extended,
            )  # fmt: skip
        finally:
            self._live -= 1

    def _sign_now(
        self,
        signer: ResponseSigner,
        serial: int,
        status: SingleStatus,
        this_update: int,
        next_update: int,
        alg: HashAlgorithm,
        nonce: bytes | None,
        extended: bool,
    ) -> bytes:
        """Sign here and now with a signer that signs fast (ECDSA): nothing is awaited, so no
        live-signing slot is held."""
        self.stats["live_signed"] += 1
        return signer.sign(
            serial, status, this_update=this_update, next_update=next_update,
            hash_algorithm=alg, nonce=nonce, extended_revoked=extended,
        )  # fmt: skip

    async def answer(self, query: FlatQuery, *, probed: bool = False) -> Answer:
        """The answer to one query (:attr:`OCSPQuery.flat <ca_core.ocsp.OCSPQuery.flat>`);
        never raises for any query. ``probed``: the caller already found :meth:`cached` empty."""
        if not probed:
            hit = self.cached(query)
            if hit is not None:
                return hit
        entry = self.issuers.get(query[:3])
        if entry is None:  # also every algorithm we do not answer: no issuer is keyed by it
            return _UNAUTHORIZED
        serial = query[3]
        try:
            base = await self._presigned(entry, serial) if serial > 0 else None
        except RedisUnavailable:
            return _TRY_LATER
        return await self._finish(query, entry, base)

    def answer_soon(self, query: FlatQuery, deliver: Callable[[Answer], None]) -> Answer | None:
        """:meth:`answer` for a query :meth:`cached` had no answer to, without a task in the
        usual case. Returns the answer if it is known at once; otherwise returns None and
        later calls ``deliver`` with it, exactly once.

        The usual miss (a subscribed cache, a checked Redis connection up) sends one GET with
        :meth:`FastRedis.get_soon <ca_core.storage.fastredis.FastRedis.get_soon>`; the reply
        is turned into the answer in the Redis reader's callback, a SHA-256 one signed there
        too (ECDSA, tens of microseconds). Everything else (a never-issued serial, a signer
        that needs a thread, no connection yet, an unchecked server) takes a task running
        :meth:`answer`: the rules are the same either way."""
        entry = self.issuers.get(query[:3])
        if entry is None:
            return _UNAUTHORIZED
        serial = query[3]
        if (
            self._subscribed
            and serial > 0
            and (query[4] is None or not self.honour_nonce)
            and self.fast.connections_made == self._validated_connection
        ):
            base = self._current((entry.id, serial, _SHA1))
            if base is not None:  # a SHA-256 query whose SHA-1 answer is cached
                answer = self._derived(query, entry, base)
                if answer is not None:
                    return answer
            else:
                fill = _Fill(self, query, entry, deliver, self._generation)
                if self.fast.get_soon(store.response_key(entry.id, serial), fill):
                    self.stats["redis_gets"] += 1
                    return None
        self._later(self.answer(query, probed=True), deliver)
        return None

    def _later(self, answering: Coroutine[Any, Any, Answer], deliver: Callable[[Answer], None]) -> None:
        """Run ``answering`` in a task and deliver what it returns."""

        async def run() -> None:
            try:
                answer = await answering
            except Exception:  # noqa: BLE001 - every query gets an answer
                _log.exception("error answering an OCSP query")
                answer = _INTERNAL_ERROR
            deliver(answer)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # held: the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)

    def _filled(self, fill: _Fill, value: bytes | None, failed: bool) -> None:
        """Redis answered an :meth:`answer_soon` GET with ``value``, or ``failed`` to answer.
        Runs in the Redis reader's callback: nothing may escape."""
        try:
            if failed:
                base = self._stand_in((fill.entry.id, fill.query[3], _SHA1))
                if base is None:
                    fill.deliver(_TRY_LATER)
                    return
            else:
                base = self._from_redis(fill.entry, fill.query[3], value, fill.generation)
            answer = None if base is None else self._derived(fill.query, fill.entry, base)
            if answer is None:  # never issued, or a signer that needs a thread
                self._later(self._finish(fill.query, fill.entry, base), fill.deliver)
                return
        except Exception:  # noqa: BLE001
            _log.exception("error answering an OCSP query")
            answer = _INTERNAL_ERROR
        fill.deliver(answer)

    async def _finish(self, query: FlatQuery, entry: IssuerEntry, base: Answer | None) -> Answer:
        """The answer given the SHA-1 answer Redis holds for the serial (None: none)."""
        try:
            if base is None:
                return await self._never_issued(entry, query[3], HASH_ALGORITHMS[query[0]])
        except RedisUnavailable:
            return _TRY_LATER
        answer = self._derived(query, entry, base)
        if answer is not None:
            return answer
        # A signer that does not sign fast (RSA): in a thread. _derived checked the limit.
        assert entry.signer is not None
        generation = self._generation
        nonce = query[4] if self.honour_nonce else None
        der = await self._sign_live(
            entry.signer, query[3], response_status(base.der), base.this_update, base.next_update,
            HASH_ALGORITHMS[query[0]], nonce, False,
        )  # fmt: skip
        return self._live_answer(query, entry, base, der, nonce, generation)

    def _derived(self, query: FlatQuery, entry: IssuerEntry, base: Answer) -> Answer | None:
        """The answer to ``query`` from the SHA-1 answer ``base``, with no waiting: ``base``
        itself, a cached derived answer, a refusal, or one signed here and now. None when
        it must be signed in a thread (the live-signing slot is then free)."""
        nonce = query[4] if self.honour_nonce else None
        alg_index = query[0]
        alg = HASH_ALGORITHMS[alg_index]
        if alg is HashAlgorithm.SHA1 and nonce is None:
            return base
        signer = entry.signer
        if signer is None:
            return _TRY_LATER if nonce is None else base
        serial = query[3]
        if nonce is None and self._subscribed:
            hit = self._current((entry.id, serial, alg_index))
            if hit is not None:
                return hit
        if not self._try_live():
            # Saturated: a nonce is optional (RFC 8954 allows answering without it), a
            # SHA-256 CertID is not.
            return base if alg is HashAlgorithm.SHA1 else _TRY_LATER
        if not signer.signs_fast:
            return None
        generation = self._generation
        der = self._sign_now(
            signer, serial, response_status(base.der), base.this_update, base.next_update, alg, nonce, False
        )
        return self._live_answer(query, entry, base, der, nonce, generation)

    def _live_answer(
        self, query: FlatQuery, entry: IssuerEntry, base: Answer, der: bytes, nonce: bytes | None, generation: int
    ) -> Answer:
        if nonce is not None:  # for this client only: never cached
            return Answer(der, base.this_update, base.next_update, None)
        answer = _answer(der, base.this_update, base.next_update)
        self._remember((entry.id, query[3], query[0]), answer, generation)
        return answer

    async def _never_issued(self, entry: IssuerEntry, serial: int, alg: HashAlgorithm) -> Answer:
        if not await self._issuer_filled(entry.id):
            return _TRY_LATER  # Redis is being (re)filled: we cannot tell "never issued" yet
        if self.unknown_serial is UnknownSerialPolicy.UNAUTHORIZED or entry.signer is None:
            return _UNAUTHORIZED
        if not self._try_live():
            return _TRY_LATER
        now = int(self._time())
        der = await self._sign_live(
            entry.signer, serial, SingleStatus(True, EXTENDED_REVOKE_TIME, 6), now, now + 3600, alg, None, True
        )
        return _answer(der, now, now + 3600)
