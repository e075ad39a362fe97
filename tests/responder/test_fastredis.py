"""responder.fastredis against a real Valkey, a private Valkey that is stopped and started,
and plain asyncio servers that misbehave (accept and never answer, hang up at once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ca_core.storage.embedded import EmbeddedServices
from responder.fastredis import FastRedis, RedisUnavailable


@contextlib.asynccontextmanager
async def fast(url: str, **kw: float) -> AsyncIterator[FastRedis]:
    client = FastRedis(url, **kw)
    try:
        yield client
    finally:
        await client.close()


class TcpServer:
    """A plain asyncio TCP server on 127.0.0.1 whose behaviour a test picks per connection."""

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.handler = handler
        self.accepted: list[float] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await self.handler(reader, writer)

    async def __aenter__(self) -> TcpServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        for w in self.writers:
            with contextlib.suppress(Exception):
                await w.wait_closed()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read everything, answer nothing."""
    while await reader.read(65536):
        pass


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.fixture
async def client(redis_client: aioredis.Redis) -> aioredis.Redis:
    return redis_client  # the session's Valkey, flushed


async def test_get_present_and_missing_keys_and_exists(client: aioredis.Redis, redis_url: str) -> None:
    await client.set(b"ocsp:1:ABC", b"value")
    async with fast(redis_url) as fr:
        assert await fr.get(b"ocsp:1:ABC") == b"value"
        assert await fr.get(b"ocsp:1:MISSING") is None
        assert await fr.exists(b"ocsp:1:ABC") is True
        assert await fr.exists(b"ocsp:1:MISSING") is False
        assert await fr.ping() is True
        # A key with every byte value in its name.
        odd_key = bytes(range(256))
        await client.set(odd_key, b"odd")
        assert await fr.get(odd_key) == b"odd"


async def test_binary_values_up_to_one_megabyte(client: aioredis.Redis, redis_url: str) -> None:
    values = {
        b"empty": b"",
        b"nul": b"\x00",
        b"resp-lookalike": b"\r\n$-1\r\n*2\r\n:1\r\n+OK\r\n-ERR x\r\n",
        b"all-bytes": bytes(range(256)) * 4,
        b"64k": os.urandom(65536),
        b"1m": os.urandom(1 << 20),
    }
    await client.mset(values)
    async with fast(redis_url, timeout=5.0) as fr:
        for key, value in values.items():
            assert await fr.get(key) == value, key
        # The same, all in flight at once (the 1 MB reply arrives in many reads).
        got = await asyncio.gather(*(fr.get(k) for k in values))
        assert got == list(values.values())


async def test_a_thousand_concurrent_gets_come_back_matched_and_in_order(
    client: aioredis.Redis, redis_url: str
) -> None:
    keys = [b"k:%d" % i for i in range(1000)]
    values = {k: os.urandom(8 + i % 300) for i, k in enumerate(keys) if i % 7}
    await client.mset(values)
    clients_before = (await client.info("clients"))["connected_clients"]
    async with fast(redis_url) as fr:
        got = await asyncio.gather(*(fr.get(k) for k in keys))
        assert got == [values.get(k) for k in keys]
        # Pipelined over one connection, not one per request.
        assert (await client.info("clients"))["connected_clients"] == clients_before + 1
        # Interleaved with EXISTS, still matched.
        mixed = await asyncio.gather(*(fr.exists(k) if i % 2 else fr.get(k) for i, k in enumerate(keys[:200])))
        assert mixed == [(k in values) if i % 2 else values.get(k) for i, k in enumerate(keys[:200])]


async def test_an_error_reply_fails_only_its_request(client: aioredis.Redis, redis_url: str) -> None:
    await client.lpush(b"a-list", b"x")
    await client.set(b"k", b"v")
    async with fast(redis_url) as fr:
        results = await asyncio.gather(fr.get(b"k"), fr.get(b"a-list"), fr.get(b"k"), return_exceptions=True)
        assert results[0] == b"v" and results[2] == b"v"
        assert isinstance(results[1], RedisUnavailable) and "WRONGTYPE" in str(results[1])
        assert await fr.get(b"k") == b"v"


async def test_url_with_a_database_number(client: aioredis.Redis, redis_url: str) -> None:
    assert redis_url.startswith("unix://")
    db3 = aioredis.Redis.from_url(redis_url + "?db=3")
    try:
        await db3.flushdb()
        await db3.set(b"only-in-3", b"three")
        await client.set(b"only-in-0", b"zero")
        async with fast(redis_url + "?db=3") as fr3, fast(redis_url) as fr0:
            assert await fr3.get(b"only-in-3") == b"three"
            assert await fr3.get(b"only-in-0") is None
            assert await fr0.get(b"only-in-0") == b"zero"
            assert await fr0.get(b"only-in-3") is None
    finally:
        await db3.flushdb()
        await db3.aclose()


async def test_a_server_that_never_answers_fails_every_pending_request_in_time() -> None:
    async with TcpServer(swallow) as server, fast(server.url, timeout=0.3, retry_interval=0.05) as fr:
        started = time.monotonic()
        results = await asyncio.gather(*(fr.get(b"k%d" % i) for i in range(20)), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, RedisUnavailable) for r in results), results
        assert "did not answer" in str(results[0])
        # Failed after the timeout, and not much later (the watchdog runs every timeout/2).
        assert 0.3 <= elapsed < 0.3 * 1.5 + 0.3, elapsed
        assert len(server.accepted) == 1
        # The connection was dropped: the next request connects afresh (and fails again).
        await asyncio.sleep(0.06)
        with pytest.raises(RedisUnavailable):
            await fr.get(b"again")
        assert len(server.accepted) == 2


async def test_retry_interval_is_respected() -> None:
    async with TcpServer(hang_up) as server, fast(server.url, timeout=0.5, retry_interval=0.3) as fr:
        outcomes: list[str] = []
        end = time.monotonic() + 1.25
        while time.monotonic() < end:
            try:
                await fr.get(b"k")
                outcomes.append("ok")
            except RedisUnavailable as e:
                outcomes.append("shortly" if "retrying shortly" in str(e) else "attempt")
            await asyncio.sleep(0.01)
        assert "ok" not in outcomes
        # Attempts at about 0, 0.3, 0.6, 0.9 and 1.2 s; everything between refused without connecting.
        assert 3 <= len(server.accepted) <= 5, server.accepted
        gaps = [b - a for a, b in zip(server.accepted, server.accepted[1:], strict=False)]
        assert min(gaps) >= 0.3 - 0.02, gaps
        assert outcomes.count("attempt") == len(server.accepted)
        assert outcomes.count("shortly") > 2 * len(server.accepted)


@pytest.mark.slow
async def test_reconnects_when_the_server_comes_back(tmp_path: Path) -> None:
    # Started in the test's own thread: the server's parent-death signal follows the
    # thread that started it.
    services = EmbeddedServices(tmp_path / "v", postgres=False, valkey=True).start()
    url = services.redis_url
    try:
        setter = aioredis.Redis.from_url(url)
        await setter.set(b"k", b"before")
        await setter.aclose()
        async with fast(url, timeout=0.5, retry_interval=0.2) as fr:
            assert await fr.get(b"k") == b"before"
            await asyncio.to_thread(services.stop)
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(RedisUnavailable):
                    await fr.get(b"k")
                assert time.monotonic() - started < 0.6
                await asyncio.sleep(0.1)

            services = EmbeddedServices(tmp_path / "v", postgres=False, valkey=True).start()
            assert services.redis_url == url  # the same socket path
            deadline = time.monotonic() + 3
            value = None
            while value is None and time.monotonic() < deadline:
                try:
                    value = await fr.get(b"k")  # Valkey saved on SIGTERM and loaded it again
                except RedisUnavailable:
                    await asyncio.sleep(0.05)
            assert value == b"before"
            assert await fr.exists(b"k") is True
    finally:
        await asyncio.to_thread(services.stop)


class SwitchableProxy(TcpServer):
    """Swallows the first connection's bytes; later connections are forwarded to Valkey."""

    def __init__(self, valkey_socket: str) -> None:
        super().__init__(self._serve)
        self.valkey_socket = valkey_socket

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.accepted) == 1:
            await swallow(reader, writer)
            return
        up_reader, up_writer = await asyncio.open_unix_connection(self.valkey_socket)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()


async def test_recovers_after_a_select_that_timed_out(client: aioredis.Redis, redis_url: str) -> None:
    db3 = aioredis.Redis.from_url(redis_url + "?db=3")
    try:
        await db3.set(b"k", b"in db 3")
        async with SwitchableProxy(redis_url.removeprefix("unix://")) as proxy:
            async with fast(proxy.url + "/3", timeout=0.3, retry_interval=0.05) as fr:
                with pytest.raises(RedisUnavailable):
                    await fr.get(b"k")  # the first connection never answers its SELECT
                got: list[object] = []
                for _ in range(10):
                    await asyncio.sleep(0.06)
                    try:
                        got.append(await fr.get(b"k"))
                    except RedisUnavailable as e:
                        got.append(str(e))
                assert got[-1] == b"in db 3", got
    finally:
        await db3.flushdb()
        await db3.aclose()
