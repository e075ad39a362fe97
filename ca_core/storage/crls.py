"""Published CRLs in Redis/Valkey: key names, value layouts, and the publishing writes.

Like the OCSP responses, these are derived bytes (DESIGN invariant 2): the publisher
rebuilds whatever is missing. All keys of one issuer share the hash tag ``{crl:<id>}``, so
on a Redis Cluster they live in one slot and the publishing script may touch several.

``crl:{<id>}:<scope>`` (the manifest)
    JSON describing the CRL currently served for one scope: ``full``, ``delta``, ``p<k>``
    (partition k) or ``p<k>-delta``. Fields: number, base (delta CRLs), this_update,
    next_update, refresh_at (when the publisher will have reissued it: caching headers use
    it), length, chunks, chunk_size, etag, entries. Replaced by :data:`_SWITCH_SOURCE` only
    by a higher CRL number, so of two racing publishers the later number wins, whatever
    the order they finish in.

``crl:{<id>}:<scope>:<number>:<i>``
    The CRL's DER, cut into chunks of ``chunk_size`` octets (1 MiB): a large CRL is never
    one value, and a responder streams it chunk by chunk. Every chunk is written before the
    manifest points at it, so nobody sees a half-published CRL. A superseded CRL's chunks
    expire a few minutes later (downloads under way finish); the current ones a week after
    nextUpdate.

``crl:{<id>}:stream`` and ``crl:{<id>}:stream:<number>``
    The recent issuer-wide delta CRLs, for push-stream subscribers that reconnect: a sorted
    set scored by CRL number whose members are ``<number>:<base>:<length>``, and each
    delta's DER.

Channel ``certstatus:crl:published``
    ``<id>:<scope>:<number>`` after each manifest switch (responders drop their cached
    manifest), and ``<id>:stream:<number>`` after a delta joins the stream (responders
    push it to their subscribers).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any, Final

import orjson
import redis.asyncio as aioredis

__all__ = [
    "CHANNEL",
    "Manifest",
    "StreamEntry",
    "add_to_stream",
    "chunk_key",
    "manifest_key",
    "parse_stream_member",
    "scope_name",
    "stream_der_key",
    "stream_key",
    "switch_manifest",
    "write_chunks",
]

CHANNEL: Final = "certstatus:crl:published"
CHUNK_SIZE: Final = 1 << 20


def scope_name(partition: int | None, *, delta: bool) -> str:
    """``full``, ``delta``, ``p3``, ``p3-delta``."""
    base = "full" if partition is None else f"p{partition}"
    if delta:
        return "delta" if partition is None else f"{base}-delta"
    return base


def manifest_key(issuer_id: int, scope: str) -> bytes:
    return b"crl:{%d}:%s" % (issuer_id, scope.encode())


def chunk_key(issuer_id: int, scope: str, number: int, index: int) -> bytes:
    return b"crl:{%d}:%s:%d:%d" % (issuer_id, scope.encode(), number, index)


def stream_key(issuer_id: int) -> bytes:
    return b"crl:{%d}:stream" % issuer_id


def stream_der_key(issuer_id: int, number: int) -> bytes:
    return b"crl:{%d}:stream:%d" % (issuer_id, number)


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """The CRL served for one scope (see the module docstring)."""

    number: int
    base: int | None
    this_update: int
    next_update: int
    refresh_at: int
    length: int
    chunks: int
    chunk_size: int
    etag: str
    entries: int

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


async def write_chunks(
    redis: aioredis.Redis,
    issuer_id: int,
    scope: str,
    number: int,
    pieces: Iterable[bytes],
    *,
    expire_at: int,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[int, int, str]:
    """Store a CRL's DER under its number, chunk by chunk (``pieces`` must already be cut
    to ``chunk_size``). Returns (length, chunks, etag); the ETag is a prefix of the SHA-256
    of the whole DER. ``expire_at`` is in seconds since the epoch."""
    digest = hashlib.sha256()
    length = count = 0
    pipe = redis.pipeline(transaction=False)
    pending = 0
    for piece in pieces:
        digest.update(piece)
        pipe.set(chunk_key(issuer_id, scope, number, count), piece, exat=expire_at)
        length += len(piece)
        count += 1
        pending += len(piece)
        if pending >= 8 * chunk_size:
            await pipe.execute()
            pending = 0
    if pending or count:
        await pipe.execute()
    return length, count, f'"{number:x}-{digest.hexdigest()[:24]}"'


# KEYS[1]: manifest. ARGV[1]: the new manifest (JSON); ARGV[2]: its CRL number; ARGV[3]:
# seconds the superseded chunks stay readable; ARGV[4]: the channel message.
# Returns 1 if switched, 0 if the stored manifest has the same or a higher number.
_SWITCH_SOURCE: Final = """
local cur = redis.call('GET', KEYS[1])
local old = nil
if cur then
  old = cjson.decode(cur)
  if tonumber(old['number']) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
if old then
  for i = 0, tonumber(old['chunks']) - 1 do
    redis.call('EXPIRE', KEYS[1] .. ':' .. old['number'] .. ':' .. i, ARGV[3])
  end
end
redis.call('PUBLISH', 'CHANNEL', ARGV[4])
return 1
""".replace("CHANNEL", CHANNEL)


async def switch_manifest(
    redis: aioredis.Redis, issuer_id: int, scope: str, manifest: Manifest, *, superseded_grace: int = 600
) -> bool:
    """Point the scope at a CRL whose chunks are stored, unless a newer one is already
    served; tell the responders. Returns whether it switched."""
    script = redis.register_script(_SWITCH_SOURCE)
    key = manifest_key(issuer_id, scope)
    message = b"%d:%s:%d" % (issuer_id, scope.encode(), manifest.number)
    return bool(await script(keys=[key], args=[manifest.to_json(), manifest.number, superseded_grace, message]))


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEntry:
    number: int
    base: int
    length: int


def parse_stream_member(member: bytes) -> StreamEntry:
    number, base, length = member.split(b":")
    return StreamEntry(int(number), int(base), int(length))


# KEYS[1]: stream set; KEYS[2]: the delta's DER key. ARGV: number, base, DER, TTL (s),
# how many deltas to keep, channel message.
_STREAM_SOURCE: Final = """
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1] .. ':' .. ARGV[2] .. ':' .. string.len(ARGV[3]))
local n = redis.call('ZCARD', KEYS[1])
if n > tonumber(ARGV[5]) then
  local old = redis.call('ZRANGE', KEYS[1], 0, n - tonumber(ARGV[5]) - 1)
  for _, member in ipairs(old) do
    local number = string.match(member, '^(%d+):')
    redis.call('DEL', KEYS[1] .. ':' .. number)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - tonumber(ARGV[5]) - 1)
end
redis.call('PUBLISH', 'CHANNEL', ARGV[6])
return 1
""".replace("CHANNEL", CHANNEL)


async def add_to_stream(
    redis: aioredis.Redis, issuer_id: int, number: int, base: int, der: bytes, *, keep: int, ttl: int
) -> bool:
    """Append an issuer-wide delta CRL to the push stream and announce it (only if it is
    newer than the stream's newest)."""
    script = redis.register_script(_STREAM_SOURCE)
    message = b"%d:stream:%d" % (issuer_id, number)
    return bool(
        await script(
            keys=[stream_key(issuer_id), stream_der_key(issuer_id, number)],
            args=[number, base, der, ttl, keep, message],
        )
    )
