"""The delta-CRL push stream: ``GET /crl/{issuer}/stream`` as Server-Sent Events.

Framing (the WHATWG Server-Sent Events format, one event per new issuer-wide delta CRL)::

    id: 1043
    event: delta
    data: MIIB...base64 of the delta CRL's DER...

- The event id is the delta's CRL number. A client that reconnects sends the last id it
  applied as ``Last-Event-ID`` (browsers' EventSource do this by themselves); it may also
  send the number of the full CRL it downloaded. It then receives every delta published
  after that number, in order, before the live ones.
- ``event: refetch`` (no id) with a JSON body ``{"url", "number", "reason"}`` says: download
  the full CRL at ``url`` instead. Sent when the missed deltas are no longer kept, when the
  number is unknown, or when the missed deltas together are larger than the full CRL.
- Comment lines (``: keep-alive``) every 15 s keep proxies from timing the stream out.

How a subscriber keeps its copy exact: hold a full CRL (number B); apply each delta whose
own number is above the number the copy is current to and whose deltaCRLIndicator is at
most that number (upsert its entries; drop the removeFromCRL ones; the copy is then current
to the delta's number); skip a delta whose number is not above it; refetch the full CRL
otherwise. Deltas are cumulative since their base, and when a new base is published the
stream carries a *bridge* delta from the old base, so a subscriber never has to download a
full CRL just because a new one was issued.

A reconnecting subscriber gets every delta it missed, in order, written with flow control
(the next once the socket has taken the previous), unless together they are larger than
the full CRL, when it is told to refetch. If the history cannot say yet (Redis was flushed
and the publisher has not republished, or a new base is out but its bridge is not on the
stream yet) the connection is closed with a comment and the client retries in 5 s.

Cost: a subscriber on a connection the fast path accepted is one small protocol object
and its socket: no task, no aiohttp request. Each event is framed once and the same bytes
written to every subscriber. One timer per worker sends heartbeats. A live subscriber that
stops reading is disconnected once more than 1 MiB is still buffered for it when the next
event comes (it will reconnect with its Last-Event-ID and lose nothing); the backlog sent at
connection is not counted; one that disconnects is forgotten.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Final

import orjson

from ca_core.profiles import PublicURLs
from ca_core.storage import crls as store
from ca_core.storage.fastredis import FastRedis, RedisUnavailable, command

from .crl_source import CRLIssuer, CRLSource

__all__ = ["BadLastEventID", "StreamHub", "parse_last_event_id"]

_log = logging.getLogger(__name__)

HEARTBEAT: Final = b": keep-alive\n\n"
RETRY: Final = b"retry: 5000\n\n"
MAX_BUFFER: Final = 1 << 20
_ID: Final = re.compile(rb"^[0-9]{1,18}$")


class BadLastEventID(ValueError):
    """A Last-Event-ID that is not a CRL number."""


def parse_last_event_id(value: bytes | str | None) -> int | None:
    """The CRL number a reconnecting subscriber holds, or None if it sent none."""
    if value is None:
        return None
    raw = value.encode("latin-1") if isinstance(value, str) else value
    raw = raw.strip()
    if not raw:
        return None
    if not _ID.match(raw):
        raise BadLastEventID("Last-Event-ID must be a CRL number (decimal digits), as sent in the stream's id: lines")
    return int(raw)


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (the fast path's stream responses are chunked)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


HEARTBEAT_CHUNK: Final = chunked(HEARTBEAT)


class _Retry(Exception):
    """The history cannot answer yet; the client should reconnect shortly."""


def delta_event(number: int, der: bytes) -> bytes:
    return b"id: %d\nevent: delta\ndata: %s\n\n" % (number, base64.b64encode(der))


def refetch_event(url: str, number: int | None, reason: str) -> bytes:
    return b"event: refetch\ndata: %s\n\n" % orjson.dumps({"url": url, "number": number, "reason": reason})


class Subscriber:
    """One stream client. ``write`` sends bytes of the event stream; ``close`` ends it."""

    __slots__ = ("issuer_id", "last", "pending", "ready")

    def __init__(self, issuer_id: int) -> None:
        self.issuer_id = issuer_id
        self.last = -1  # the newest delta number delivered
        self.ready = False  # until the backlog is out, live events wait in pending
        self.pending: list[tuple[int, bytes]] = []

    def deliver(self, number: int, event: bytes, framed: bytes | None = None) -> None:
        if not self.ready:
            self.pending.append((number, event))
        elif number > self.last:
            self.last = number
            self.send(event, framed)

    def send(self, event: bytes, framed: bytes | None = None) -> None:
        """Write an event (``framed``: the same bytes as an HTTP chunk, if already made)."""
        self.write(event)

    def write(self, data: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def drain(self) -> None:
        """Wait until the client has taken what was written (the backlog's flow control)."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def closed(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class RawSubscriber(asyncio.Protocol, Subscriber):
    """A subscriber on a socket taken over from the fast path: HTTP/1.1 chunked framing
    written straight to the transport."""

    __slots__ = ("_drained", "hub", "transport")

    def __init__(self, hub: StreamHub, issuer_id: int, transport: asyncio.Transport) -> None:
        Subscriber.__init__(self, issuer_id)
        self.hub = hub
        self.transport = transport
        self._drained: asyncio.Future[None] | None = None  # set while the transport is paused

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained

    def data_received(self, data: bytes) -> None:
        # A stream client has nothing more to say; one that keeps talking is not one.
        if len(data) > 4096:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.remove(self)
        self.resume_writing()  # wake a backlog writer waiting on a connection that is gone

    def write(self, data: bytes) -> None:
        self.send(data, None)

    def send(self, event: bytes, framed: bytes | None = None) -> None:
        t = self.transport
        if t.is_closing():
            self.hub.remove(self)
            return
        if self.ready and t.get_write_buffer_size() > self.hub.max_buffer:
            # Still holding more than the limit from earlier events: the client stopped
            # reading. Abort, not close: close would wait for it to read. (Checked before
            # writing, so one large delta alone never cuts off a client that reads, and
            # not during the backlog, which is written all at once.)
            self.hub.remove(self)
            t.abort()
            return
        t.write(framed if framed is not None else chunked(event))

    def close(self) -> None:
        self.hub.remove(self)
        if not self.transport.is_closing():
            self.transport.close()

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()


class QueueSubscriber(Subscriber):
    """A subscriber served by an aiohttp handler (a connection aiohttp already owned)."""

    __slots__ = ("_closed", "max_buffer", "queue", "size", "transport")

    def __init__(
        self, issuer_id: int, transport: asyncio.BaseTransport | None = None, max_buffer: int = MAX_BUFFER
    ) -> None:
        super().__init__(issuer_id)
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.size = 0  # bytes queued and not yet handed to the response
        self.transport = transport
        self.max_buffer = max_buffer
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if self.ready and self.size > self.max_buffer:
            # The handler is stuck writing to a client that stopped reading: abort the
            # connection, which fails its write and ends it.
            self.close()
            if self.transport is not None:
                self.transport.abort()  # type: ignore[attr-defined]
            return
        self.size += len(data)
        self.queue.put_nowait(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.queue.put_nowait(None)

    @property
    def closed(self) -> bool:
        return self._closed


class StreamHub:
    """Every stream subscriber of one worker, by issuer (see the module docstring)."""

    def __init__(
        self,
        fast: FastRedis,
        source: CRLSource,
        urls: PublicURLs,
        *,
        heartbeat: float = 15.0,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        self.fast = fast
        self.source = source
        self.urls = urls
        self.heartbeat = heartbeat
        self.max_buffer = max_buffer
        self.by_issuer: dict[int, set[Subscriber]] = {}
        self._published: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.delivered = 0

    @property
    def count(self) -> int:
        return sum(len(s) for s in self.by_issuer.values())

    def remove(self, sub: Subscriber) -> None:
        subs = self.by_issuer.get(sub.issuer_id)
        if subs is not None:
            subs.discard(sub)

    # Joining ----------------------------------------------------------------------------

    async def join(self, sub: Subscriber, issuer: CRLIssuer, last_event_id: int | None) -> None:
        """Register a subscriber, then send what it missed, then let live events through
        (registered first, so nothing published meanwhile is lost; duplicates are skipped
        by number)."""
        self.by_issuer.setdefault(issuer.id, set()).add(sub)
        sub.write(RETRY)
        try:
            if last_event_id is not None:
                sub.last = last_event_id
                for number, event in await self.backlog(issuer, last_event_id):
                    if sub.closed:
                        return
                    if number is None:
                        # A refetch: the client's number means nothing here, so every
                        # live delta from now on goes through.
                        sub.last = -1
                        sub.write(event)
                    elif number > sub.last:
                        sub.last = number
                        sub.write(event)
                        await sub.drain()
        except _Retry:
            sub.write(b": the history cannot answer yet; reconnect in a few seconds\n\n")
            sub.close()
            return
        except (RedisUnavailable, OSError) as e:
            _log.warning("stream backlog unavailable (%s); closing the subscriber to let it retry", e)
            sub.close()
            return
        except Exception:  # noqa: BLE001 - a subscriber left half-joined would leak
            _log.exception("unexpected error sending a stream backlog; closing the subscriber")
            sub.close()
            return
        sub.ready = True
        for number, event in sub.pending:
            sub.deliver(number, event)
        sub.pending.clear()

    async def backlog(self, issuer: CRLIssuer, after: int) -> list[tuple[int | None, bytes]]:
        """What a subscriber holding CRL number ``after`` must receive before the live events."""
        full_url = self.urls.full_crl(issuer.name)
        full = await self.source.manifest(issuer.id, "full")
        if full is None:
            raise _Retry  # nothing published (yet, or since a flush): the publisher is at it
        replies = await self.fast.batch([
            command(b"ZRANGEBYSCORE", store.stream_key(issuer.id), b"(%d" % after, b"+inf"),
            command(b"ZREVRANGE", store.stream_key(issuer.id), b"0", b"0"),
        ])  # fmt: skip
        for reply in replies:
            if not isinstance(reply, list):
                raise RedisUnavailable(f"unexpected reply {reply!r} reading the stream history")
        members, newest = replies
        missed = [store.parse_stream_member(m) for m in members]
        newest_number = max([store.parse_stream_member(m).number for m in newest] + [full.number])
        current = full.number
        if not missed:
            if after > newest_number:
                return [(None, refetch_event(full_url, current, f"CRL number {after} was never published here"))]
            if after < full.number:
                # Older than the current base and nothing kept after it: either the bridge to
                # the new base is not on the stream yet (it follows within moments) or the
                # history was lost (the publisher republishes). Either way, try again soon.
                raise _Retry
            return []
        if missed[0].base > after:
            return [(None, refetch_event(full_url, current, f"the deltas after CRL {after} are no longer kept"))]
        entries = missed
        if sum(e.length for e in entries) > full.length:
            return [(None, refetch_event(full_url, current, "the missed deltas are larger than the full CRL"))]
        ders = await self.fast.batch([command(b"GET", store.stream_der_key(issuer.id, e.number)) for e in entries])
        if any(d is None for d in ders):
            return [(None, refetch_event(full_url, current, f"the deltas after CRL {after} are no longer kept"))]
        return [(e.number, delta_event(e.number, d)) for e, d in zip(entries, ders, strict=True)]

    # Live -------------------------------------------------------------------------------

    def resubscribed(self) -> None:
        """The worker's publication subscription was (re)established: deltas published while
        it was down never reached these subscribers, so end their streams; they reconnect
        with their Last-Event-ID and get the missed deltas from the kept history."""
        for subs in self.by_issuer.values():
            for sub in list(subs):
                sub.close()

    def published(self, issuer_id: int, number: int) -> None:
        """A new delta joined the stream (called by the CRL source's subscription)."""
        self._published.put_nowait((issuer_id, number))

    async def _relay(self) -> None:
        while True:
            issuer_id, number = await self._published.get()
            subs = self.by_issuer.get(issuer_id)
            if not subs:
                continue
            try:
                der = await self.fast.get(store.stream_der_key(issuer_id, number))
            except (RedisUnavailable, OSError) as e:
                # Subscribers would silently miss it: end their streams so they reconnect
                # with their Last-Event-ID and catch up.
                _log.warning("cannot read delta CRL %d (%s); disconnecting its subscribers", number, e)
                for sub in list(subs):
                    sub.close()
                continue
            if der is None:
                continue
            event = delta_event(number, der)
            framed = chunked(event)  # framed once: the same bytes go to every subscriber
            started = time.perf_counter()
            for sub in list(subs):
                sub.deliver(number, event, framed)
            self.delivered += len(subs)
            _log.debug("delta %d sent to %d subscribers in %.3f s", number, len(subs), time.perf_counter() - started)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for subs in self.by_issuer.values():
                for sub in list(subs):
                    if sub.ready:
                        sub.send(HEARTBEAT, HEARTBEAT_CHUNK)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StreamHub]:
        tasks = [asyncio.create_task(self._relay(), name="crl-stream-relay"),
                 asyncio.create_task(self._heartbeats(), name="crl-stream-heartbeat")]  # fmt: skip
        try:
            yield self
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            for subs in self.by_issuer.values():
                for sub in list(subs):
                    sub.close()
            await self.fast.close()
