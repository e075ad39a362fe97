"""Where a responder worker finds published CRLs: Redis, with a small in-process cache.

The publisher (:mod:`ca_core.crl_publisher`) writes each CRL as chunks plus a manifest
(:mod:`ca_core.storage.crls`). A worker keeps

- the manifests it served, while its subscription to the publication channel is up (a new
  publication drops the scope's manifest at once; without the subscription every request
  reads the manifest again, so nothing stale is served);
- recently served chunks, up to ``cache_bytes``: a chunk is named by its CRL number and
  never changes, so a cached chunk is never stale, only evicted.

It also relays new deltas to the push stream (:mod:`responder.crl_stream`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ca_core.storage import crls as store
from ca_core.storage import postgres as db
from ca_core.storage.fastredis import FastRedis, RedisUnavailable

from .server import stop_task

__all__ = ["CRLIssuer", "CRLSource", "parse_scope"]

_log = logging.getLogger(__name__)

_PARTITION: Final = re.compile(r"^(0|[1-9][0-9]{0,3})$")


@dataclasses.dataclass(frozen=True, slots=True)
class CRLIssuer:
    id: int
    name: str
    partitions: int  # 0: publishes only its full CRL (the root)


class ScopeNotFound(LookupError):
    """The issuer or partition does not exist; the message says which."""


def parse_scope(issuer: CRLIssuer, partition: str | None, *, delta: bool) -> str:
    """The scope of a CRL URL, or :class:`ScopeNotFound` with a message for a 404."""
    if partition is None:
        return store.scope_name(None, delta=delta)
    if not _PARTITION.match(partition) or int(partition) >= issuer.partitions:
        if issuer.partitions == 0:
            raise ScopeNotFound(f"issuer {issuer.name} publishes no partition CRLs; its CRL is /crl/{issuer.name}.crl")
        raise ScopeNotFound(
            f"issuer {issuer.name} has CRL partitions 0 to {issuer.partitions - 1}; there is no partition {partition}"
        )
    return store.scope_name(int(partition), delta=delta)


class CRLSource:
    """Manifests and chunks of published CRLs (see the module docstring).

    :param on_delta: called with (issuer id, CRL number) when a delta joins the push stream.
    :param on_subscribed: called each time the publication subscription is (re)established.
    :param ping_interval: seconds of silence after which the subscription is pinged.
    :param pong_timeout: a PING unanswered this long means the connection is dead.
    """

    def __init__(
        self,
        fast: FastRedis,
        subscriber: aioredis.Redis,
        *,
        cache_bytes: int = 64 << 20,
        on_delta: Callable[[int, int], object] | None = None,
        on_subscribed: Callable[[], object] | None = None,
        ping_interval: float = 5.0,
        pong_timeout: float = 5.0,
    ) -> None:
        self.fast = fast
        self.subscriber = subscriber
        self.cache_bytes = cache_bytes
        self.on_delta = on_delta
        self.on_subscribed = on_subscribed
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.issuers: dict[str, CRLIssuer] = {}
        self._manifests: dict[tuple[int, str], store.Manifest] = {}
        self._chunks: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._cached = 0
        self._subscribed = False
        self._generation = 0  # bumped by every publication message and (re)subscription

    @staticmethod
    async def load_issuers(pool: asyncpg.Pool) -> dict[str, CRLIssuer]:
        async with pool.acquire() as conn:
            rows = await db.list_issuers(conn)
        return {r.name: CRLIssuer(r.id, r.name, 0 if r.kind == "root" else r.crl_partitions) for r in rows}

    async def manifest(self, issuer_id: int, scope: str) -> store.Manifest | None:
        """The CRL served for a scope now, or None if none is published (yet)."""
        key = (issuer_id, scope)
        if self._subscribed:
            cached = self._manifests.get(key)
            if cached is not None:
                return cached
        generation = self._generation
        raw = await self.fast.get(store.manifest_key(issuer_id, scope))
        if raw is None:
            return None
        manifest = store.Manifest.from_json(raw)
        # Cached only if no publication message arrived while it was read: the read may
        # have returned the manifest that message superseded.
        if self._subscribed and generation == self._generation:
            self._manifests[key] = manifest
        return manifest

    async def chunk(self, issuer_id: int, scope: str, manifest: store.Manifest, index: int) -> bytes | None:
        """One chunk of a CRL (None if Redis no longer holds it: a long-superseded CRL)."""
        key = store.chunk_key(issuer_id, scope, manifest.number, index)
        cached = self._chunks.get(key)
        if cached is not None:
            self._chunks.move_to_end(key)
            return cached
        value = await self.fast.get(key)
        if value is None:
            return None
        if len(value) <= self.cache_bytes // 4:
            self._chunks[key] = value
            self._cached += len(value)
            while self._cached > self.cache_bytes:
                _, old = self._chunks.popitem(last=False)
                self._cached -= len(old)
        return value

    def _message(self, data: bytes) -> None:
        parts = data.split(b":")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            return
        issuer_id, scope, number = int(parts[0]), parts[1].decode(), int(parts[2])
        if scope == "stream":
            if self.on_delta is not None:
                self.on_delta(issuer_id, number)
            return
        self._generation += 1
        self._manifests.pop((issuer_id, scope), None)

    async def follow(self) -> None:
        """Keep the publication subscription up (reconnecting), applying its messages."""
        while True:
            pubsub = self.subscriber.pubsub()
            try:
                await pubsub.subscribe(store.CHANNEL)
                pinged: float | None = None  # when an unanswered PING was sent
                while True:
                    message = await pubsub.get_message(timeout=self.ping_interval)
                    now = time.monotonic()
                    if pinged is not None and now - pinged > self.pong_timeout:
                        # A connection that stopped answering (a half-open socket after a
                        # fail-over) would otherwise look idle until TCP gives up.
                        raise RedisUnavailable(f"no answer to PING within {self.pong_timeout:g} s")
                    if message is None:
                        if pinged is None:
                            await pubsub.ping()
                            pinged = now
                        continue
                    if message["type"] == "pong":
                        pinged = None
                    elif message["type"] == "subscribe":
                        self._generation += 1
                        self._manifests.clear()
                        self._subscribed = True
                        if self.on_subscribed is not None:
                            self.on_subscribed()
                    elif message["type"] == "message":
                        self._message(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, RedisUnavailable, OSError) as e:
                _log.warning("CRL publication subscription lost (%s); reconnecting", e)
            finally:
                self._subscribed = False
                self._generation += 1
                self._manifests.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(0.5)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CRLSource]:
        task = asyncio.create_task(self.follow(), name="crl-subscription")
        try:
            yield self
        finally:
            await stop_task(task)
            await self.fast.close()
