"""A lean, pipelined Redis client for the two hot paths: the responder's GETs and the
signer's bulk writes.

Why not redis-py here: one ``await client.get(key)`` through redis-py's asyncio client
costs about 200 us of Python (connection pool checkout, command packing, response
parsing, a lock), which caps an aiohttp worker at a few thousand OCSP answers a second.
This client keeps one connection, writes each GET straight to the socket without waiting
for earlier replies (pipelining: replies come back in order), and lets hiredis's C parser
read the replies. It does little: GET and EXISTS with a deadline, and :meth:`FastRedis.batch`,
which sends many pre-packed commands in one write and returns their replies in one await
(the signer writes 500 responses per batch this way: redis-py's pipeline spent more time
packing and parsing than the ECDSA signatures took).

Failure handling is deliberate and simple: any connection error or a reply later than
``timeout`` fails every outstanding request with :class:`RedisUnavailable` and drops the
connection; the next request reconnects (at most one attempt per ``retry_interval``), so
a Redis that comes back is used again without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from typing import Any, Protocol

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

__all__ = ["FastRedis", "RedisUnavailable", "Waiter", "command"]


class RedisUnavailable(Exception):
    """Redis could not answer in time (down, unreachable, or too slow)."""


def command(*parts: bytes) -> bytes:
    """One command in RESP, ready for :meth:`FastRedis.batch`."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def _get_command(key: bytes) -> bytes:
    """``GET key``, encoded in one step (:func:`command` for the hottest command)."""
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


class Waiter(Protocol):
    """What a request's reply is handed to: an :class:`asyncio.Future`, or any object with the
    same three methods (:meth:`FastRedis.get_soon`). Its methods are called from the reader's
    callback, so they must return quickly and never raise."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


# (waiter, sent at, replies so far or None for a single command, replies expected)
_Pending = tuple[Waiter, float, list[Any] | None, int]


class _Protocol(asyncio.Protocol):
    """One connection. Its replies resolve only its own requests: a connection that is
    being torn down can never hand its late replies to requests sent on the next one."""

    def __init__(self, owner: FastRedis) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[_Pending] = collections.deque()
        self.dead = False
        # Commands queued in this loop iteration, written together by flush(): one
        # system call for every GET the responder's connections asked for meanwhile.
        self.outbox: list[bytes] = []

    def flush(self) -> None:
        out, self.outbox = self.outbox, []
        if out and self.transport is not None and not self.dead:
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return
        self.owner.last_reply = time.monotonic()
        self.reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:
                self.owner._fail(self, "protocol error")
                return
            if reply is False:
                return
            if not pending:
                self.owner._fail(self, "unexpected reply")
                return
            entry = pending[0]
            fut, results = entry[0], entry[2]
            if results is not None:  # a batch: collect replies (errors included) in order
                results.append(reply)
                if len(results) < entry[3]:
                    continue
                pending.popleft()
                if not fut.done():
                    fut.set_result(results)
                continue
            pending.popleft()
            if not fut.done():
                if isinstance(reply, hiredis.ReplyError):
                    fut.set_exception(RedisUnavailable(f"Redis error: {reply}"))
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._fail(self, "connection lost")


class FastRedis:
    """One pipelined connection to Redis for GET/EXISTS.

    :param url: the same ``redis://``, ``rediss://`` or ``unix://`` URL the rest uses.
    :param timeout: the longest wait for any one reply.
    :param retry_interval: the shortest time between two connection attempts.
    """

    def __init__(self, url: str, *, timeout: float = 0.5, retry_interval: float = 0.25) -> None:
        self._params: dict[str, Any] = dict(parse_url(url))
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        #: Connections opened so far: a change means "possibly another server now".
        self.connections_made = 0
        #: When the server last sent anything (monotonic clock).
        self.last_reply = float("-inf")
        self._last_attempt = float("-inf")
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def like(cls, client: Any, **kw: Any) -> FastRedis:
        """A FastRedis to the same server and database as a redis-py asyncio client."""
        pool = client.connection_pool
        params = {k: v for k, v in pool.connection_kwargs.items()
                  if k in ("path", "host", "port", "db", "username", "password")}  # fmt: skip
        params["connection_class"] = pool.connection_class
        fast = cls("redis://localhost", **kw)
        fast._params = params
        return fast

    # Connection --------------------------------------------------------------------

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        p = self._params
        cls = p.get("connection_class")
        if cls is UnixDomainSocketConnection:
            _, proto = await loop.create_unix_connection(lambda: _Protocol(self), p["path"])
        else:
            ctx = ssl.create_default_context() if cls is SSLConnection else None
            _, proto = await loop.create_connection(
                lambda: _Protocol(self), p.get("host", "localhost"), p.get("port", 6379), ssl=ctx
            )
        try:
            if p.get("password") is not None:
                user = p.get("username")
                auth = (b"AUTH", user.encode(), p["password"].encode()) if user else (b"AUTH", p["password"].encode())
                await self._send_nowait(proto, command(*auth))
            if p.get("db"):
                await self._send_nowait(proto, command(b"SELECT", str(p["db"]).encode()))
        except BaseException:
            # Timed out or refused: this connection is unusable; close it and fail
            # whatever it still owes, so nothing is left pending on it.
            self._fail(proto, "did not accept the connection set-up")
            raise
        return proto

    async def _connection(self) -> _Protocol:
        if self._proto is not None:
            return self._proto
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        now = time.monotonic()
        if now - self._last_attempt < self.retry_interval:
            raise RedisUnavailable("Redis is unreachable (retrying shortly)")
        self._last_attempt = now
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            async with asyncio.timeout(self.timeout):
                proto = await self._open()
        except BaseException as e:
            # Whatever happened (refused, timed out, or this caller was cancelled), the
            # callers waiting on this attempt must hear of it, and the next may retry.
            self._proto = None
            err = RedisUnavailable(f"cannot connect to Redis: {e or type(e).__name__}")
            self._connecting.set_exception(err)
            self._connecting.exception()  # retrieved: no "never retrieved" warning
            self._connecting = None
            if isinstance(e, (OSError, TimeoutError, RedisUnavailable)):
                raise err from None
            raise
        self._proto = proto
        self.connections_made += 1
        self._connecting.set_result(proto)
        self._connecting = None
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout / 2, self._check_deadlines)
        return proto

    async def connect(self) -> None:
        """Open the connection now if none is up; raises RedisUnavailable."""
        await self._connection()

    def _fail(self, proto: _Protocol, why: str) -> None:
        if self._proto is proto:
            self._proto = None
        proto.dead = True
        if proto.transport is not None:
            proto.transport.abort()
        pending, proto.pending = proto.pending, collections.deque()
        for fut, *_ in pending:
            if not fut.done():
                fut.set_exception(RedisUnavailable(f"Redis {why}"))

    def _check_deadlines(self) -> None:
        self._watchdog = None
        proto = self._proto
        if proto is not None and proto.pending and time.monotonic() - proto.pending[0][1] > self.timeout:
            self._fail(proto, f"did not answer within {self.timeout} s")
        if self._proto is not None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout / 2, self._check_deadlines)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._proto is not None:
            self._fail(self._proto, "client closed")

    # Commands ----------------------------------------------------------------------

    def _send_nowait(self, proto: _Protocol, cmd: bytes, batch: int = 0) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(proto, cmd, fut, batch)
        return fut

    @staticmethod
    def _enqueue(proto: _Protocol, cmd: bytes, waiter: Waiter, batch: int = 0) -> None:
        proto.pending.append((waiter, time.monotonic(), [] if batch else None, batch))
        if not proto.outbox:
            asyncio.get_running_loop().call_soon(proto.flush)
        proto.outbox.append(cmd)

    async def _send(self, cmd: bytes, batch: int = 0) -> Any:
        proto = self._proto if self._proto is not None else await self._connection()
        if proto.transport is None or proto.transport.is_closing():
            self._fail(proto, "connection closed")
            raise RedisUnavailable("Redis connection closed")
        return await self._send_nowait(proto, cmd, batch)

    async def batch(self, commands: list[bytes]) -> list[Any]:
        """Send pre-packed commands (see :func:`command`) in one write; return every reply
        in order, error replies as ``hiredis.ReplyError`` values (not raised)."""
        if not commands:
            return []
        result: list[Any] = await self._send(b"".join(commands), len(commands))
        return result

    async def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None; raises RedisUnavailable."""
        result: bytes | None = await self._send(_get_command(key))
        return result

    def get_soon(self, key: bytes, waiter: Waiter) -> bool:
        """Send ``GET key`` if a connection is up, and return True: the value (or None) will
        be handed to ``waiter.set_result``, or RedisUnavailable to ``waiter.set_exception``,
        from the reader's callback, never before this returns. False, and nothing sent, when
        no connection is up: :meth:`get` (which connects) is the way then.

        For the responder's cache misses: no future, no task and no coroutine per request,
        which cost about 18 us a miss in a micro-benchmark (bench/README.md)."""
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return False
        self._enqueue(proto, _get_command(key), waiter)
        return True

    async def exists(self, key: bytes) -> bool:
        return bool(await self._send(command(b"EXISTS", key)))

    async def run_id_and_get(self, key: bytes) -> tuple[str | None, bytes | None]:
        """The server's ``run_id`` (INFO server) and the value of ``key``, read together
        on the connection the GETs use."""
        info, value = await self.batch([command(b"INFO", b"server"), command(b"GET", key)])
        run_id = None
        if isinstance(info, bytes):
            for line in info.splitlines():
                if line.startswith(b"run_id:"):
                    run_id = line[7:].strip().decode()
        return run_id, value if isinstance(value, bytes) else None

    async def ping(self) -> bool:
        with contextlib.suppress(RedisUnavailable):
            return await self._send(command(b"PING")) == b"PONG"
        return False
