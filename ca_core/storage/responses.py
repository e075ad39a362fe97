"""Signed OCSP responses in Redis/Valkey: every key name, the value layout and the writes.

Redis holds only derived bytes (DESIGN invariant 2): flushing it loses nothing, the signer
refills it. Layout, all in this module:

``ocsp:<issuer_id>:<SERIAL HEX>``
    One certificate's pre-signed response (SHA-1 CertID), expiring at its nextUpdate.
    The value is a 16-octet header followed by the exact DER served::

        version      8 octets  the certificate row's updated_at, microseconds since the epoch
        this_update  4 octets  seconds since the epoch (also producedAt)
        next_update  4 octets  seconds since the epoch (the key expires then too)

    The version makes writes monotonic: a write carrying an older version than the stored
    one is refused by :data:`_WRITE_SCRIPT`, so a slow refresh that read a certificate
    before its revocation can never overwrite the revoked answer, whatever the order in
    which two signers finish. The times let a responder set HTTP caching headers and refuse
    a response past its nextUpdate without parsing DER.

``ocsp:filled:<issuer_id>``
    Present while every certificate of the issuer has a response in Redis. A responder that
    finds no response for a serial answers ``unauthorized`` (never issued) only while this
    marker exists, and ``tryLater`` otherwise (Redis was flushed and is being refilled).
    It expires when the oldest response does, so a stalled signer turns misses into
    ``tryLater`` rather than claims about serials.

``ocsp:epoch:<issuer_id>``
    Written when a fill starts. If it vanishes mid-fill, Redis was flushed again, and the
    signer starts over rather than marking a half-filled issuer as filled.

``ocsp:instance``
    The ``run_id`` of the Redis server the signer last checked and repaired. A responder that
    finds another server behind its connection (a restart, a fail-over) answers ``tryLater``
    until the two agree: a server back from an old snapshot may hold stale answers until the
    signer has re-signed what changed since (see :meth:`ca_core.signer.Signer.check_fills`).

Channel ``certstatus:ocsp:changed``
    After a status change is written, its key name is published here; every responder
    process drops its cached copy (:mod:`responder.ocsp_source`).

Keys carry no hash tag: each write touches one key, so they spread freely over a Redis
Cluster's slots.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Sequence
from typing import Final

import hiredis

from .fastredis import FastRedis, RedisUnavailable, command

__all__ = [
    "CHANGED_CHANNEL",
    "HEADER",
    "INSTANCE_KEY",
    "StoredResponse",
    "epoch_key",
    "filled_key",
    "pack",
    "response_key",
    "unpack",
    "write_responses",
]

CHANGED_CHANNEL: Final = "certstatus:ocsp:changed"
HEADER: Final = struct.Struct(">QII")


def response_key(issuer_id: int, serial: int) -> bytes:
    return b"ocsp:%d:%X" % (issuer_id, serial)


def filled_key(issuer_id: int) -> bytes:
    return b"ocsp:filled:%d" % issuer_id


def epoch_key(issuer_id: int) -> bytes:
    return b"ocsp:epoch:%d" % issuer_id


INSTANCE_KEY: Final = b"ocsp:instance"


@dataclasses.dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as stored: the DER and the header fields beside it."""

    version: int
    this_update: int
    next_update: int
    der: bytes


def pack(version: int, this_update: int, next_update: int, der: bytes) -> bytes:
    return HEADER.pack(version, this_update, next_update) + der


def unpack(value: bytes) -> StoredResponse:
    """Split a stored value; raises ``ValueError`` if it is too short to be one."""
    if len(value) <= HEADER.size:
        raise ValueError("stored OCSP response is truncated")
    version, this_update, next_update = HEADER.unpack_from(value)
    return StoredResponse(version, this_update, next_update, value[HEADER.size :])


# KEYS[1]: the response key. ARGV[1]: the value; ARGV[2]: expiry (ms since the epoch);
# ARGV[3]: "1" to publish the key name on the change channel. Returns 1 if written.
# The 8-octet versions are compared octet by octet (big-endian, so that is numeric order);
# an equal version is rewritten, which is how a refresh extends nextUpdate.
_WRITE_SOURCE: Final = """
local cur = redis.call('GETRANGE', KEYS[1], 0, 7)
if #cur == 8 then
  local new = string.sub(ARGV[1], 1, 8)
  for i = 1, 8 do
    local a, b = string.byte(cur, i), string.byte(new, i)
    if a > b then return 0 end
    if a < b then break end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
if ARGV[3] == '1' then redis.call('PUBLISH', 'CHANNEL', KEYS[1]) end
return 1
""".replace("CHANNEL", CHANGED_CHANNEL)


_WRITE_SHA: Final = hashlib.sha1(_WRITE_SOURCE.encode()).hexdigest().encode()  # noqa: S324 - EVALSHA names scripts by SHA-1
_PUBLISH_FLAG: Final = {True: b"1", False: b"0"}


async def write_responses(
    client: FastRedis,
    items: Sequence[tuple[bytes, bytes, int]],
    *,
    publish: bool,
) -> int:
    """Write (key, packed value, expire-at ms) triples in one round trip, each only if it
    is not older than what Redis holds. Returns how many were written.

    Raises :class:`RedisUnavailable` if Redis fails or refuses; nothing is then known to
    be written, and the caller must not mark the work done.
    """
    if not items:
        return 0
    flag = _PUBLISH_FLAG[publish]
    # RESP by hand: this runs once per signed response, next to the signature itself.
    head = b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n" + _WRITE_SHA + b"\r\n$1\r\n1\r\n"
    tail = b"$1\r\n" + flag + b"\r\n"
    commands = []
    for key, value, expire_ms in items:
        expiry = b"%d" % expire_ms
        commands.append(
            b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s"
            % (head, len(key), key, len(value), value, len(expiry), expiry, tail)
        )
    for attempt in (1, 2):
        replies = await client.batch(commands)
        errors = [r for r in replies if isinstance(r, hiredis.ReplyError)]
        if not errors:
            return sum(1 for r in replies if r == 1)
        if attempt == 1 and all(str(e).startswith("NOSCRIPT") for e in errors):
            # The server lost its script cache (restart, SCRIPT FLUSH): load and redo.
            await client.batch([command(b"SCRIPT", b"LOAD", _WRITE_SOURCE.encode())])
            continue
        raise RedisUnavailable(f"Redis refused a response write: {errors[0]}")
    raise AssertionError("unreachable")
