"""The public port's own HTTP/1.1 handling (responder.fastpath), over real sockets.

Every test talks raw bytes to a running responder (real PostgreSQL, Valkey, signer and
listening socket, see ocsp_harness), so what is checked is exactly what a client sees:
status lines, headers, bodies, the order of pipelined answers, and when the server closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email.utils
import gc
import hashlib
import logging
import random
import re
import time
import urllib.parse
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as cocsp

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord
from ca_core.ocsp import UNSUCCESSFUL, ResponseStatus, _subject_public_key_bits

from .ocsp_harness import Responder, now_clock, start_responder

MALFORMED = UNSUCCESSFUL[ResponseStatus.MALFORMED_REQUEST]
UNAUTHORIZED = UNSUCCESSFUL[ResponseStatus.UNAUTHORIZED]


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def responder(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:
    async for r in start_responder(pool, redis_client, redis_url, vault, clock, ca):
        yield r


# A raw HTTP/1.1 client -------------------------------------------------------------------


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def ocsp(self) -> cocsp.OCSPResponse:
        assert self.headers["content-type"] == "application/ocsp-response"
        return cocsp.load_der_ocsp_response(self.body)

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class Conn:
    """One client connection; the server's bytes are read strictly as HTTP/1.1 responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 10.0) -> Reply:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), line
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        code = int(status)
        if code == 304 or code < 200:
            assert "content-length" not in headers or headers["content-length"] == "0"
            body = b""
        elif "content-length" in headers:
            body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), timeout)
        else:
            assert headers.get("transfer-encoding") == "chunked", headers
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        return Reply(code, headers, body)

    async def request(self, data: bytes) -> Reply:
        await self.send(data)
        return await self.reply()

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF, or a reset) without sending more."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except ConnectionResetError:
            return True
        assert data == b"", f"unexpected bytes from the server: {data!r}"
        return True


@contextlib.asynccontextmanager
async def connect(responder: Responder) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection("127.0.0.1", responder.server.port)
    try:
        yield Conn(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def ocsp_path(der: bytes) -> str:
    return "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")


def GET(target: str, *headers: str, version: str = "HTTP/1.1", host: bool = True) -> bytes:
    lines = [f"GET {target} {version}", *(["Host: 127.0.0.1"] if host else []), *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def POST(body: bytes, *headers: str, target: str = "/ocsp", content_type: str | None = "application/ocsp-request",
         version: str = "HTTP/1.1") -> bytes:
    lines = [f"POST {target} {version}", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *headers]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_good(reply: Reply, record: CertRecord | int, algorithm: str = "sha1") -> cocsp.OCSPResponse:
    assert reply.status == 200, (reply.status, reply.body[:200])
    resp = reply.ocsp()
    assert resp.response_status is cocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.serial_number == (record if isinstance(record, int) else record.serial)
    assert resp.certificate_status is cocsp.OCSPCertStatus.GOOD
    assert resp.hash_algorithm.name == algorithm
    return resp


def assert_malformed(reply: Reply) -> None:
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/ocsp-response"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.body == MALFORMED


def der_with_every_base64_special(responder: Responder, record: CertRecord) -> bytes:
    """A request for ``record`` whose base64 has '+', '/' and '=' (the nonce varies the bytes;
    nonces are ignored by default, so the answer is the cached pre-signed one)."""
    for i in range(10_000):
        der = responder.request(record, nonce=i.to_bytes(4 + i % 3, "big"))
        text = base64.b64encode(der)
        if b"+" in text and b"/" in text and text.endswith(b"="):
            return der
    raise AssertionError("no such request")


# GET forms ---------------------------------------------------------------------------------


async def test_every_get_quirk_and_absolute_form_is_answered(responder: Responder) -> None:
    record = await responder.issue()
    der = der_with_every_base64_special(responder, record)
    b64 = base64.b64encode(der).decode()
    urlsafe = base64.urlsafe_b64encode(der).decode()
    quirks = {
        "percent-encoded (RFC 6960 A.1)": "/ocsp/" + urllib.parse.quote(b64, safe=""),
        "raw base64": "/ocsp/" + b64,
        "'+' as %20": "/ocsp/" + b64.replace("+", "%20"),
        "padding left off": "/ocsp/" + b64.rstrip("="),
        "base64url": "/ocsp/" + urlsafe,
        "base64url without padding": "/ocsp/" + urlsafe.rstrip("="),
        "doubled slash after ocsp": "/ocsp//" + b64.replace("+", "%2B"),
        "doubled leading slash": "//ocsp/" + b64,
        "query string ignored": "/ocsp/" + urllib.parse.quote(b64, safe="") + "?cache=no",
        "lower-case escapes": "/ocsp/" + b64.replace("+", "%2b").replace("/", "%2f").replace("=", "%3d"),
    }
    host = f"127.0.0.1:{responder.server.port}"
    async with connect(responder) as conn:
        for name, target in quirks.items():
            reply = await conn.request(GET(target))
            assert_good(reply, record)
            assert not reply.closes, name
            assert "etag" in reply.headers, name
        # Absolute-form targets (RFC 9112 3.2.2), as sent to a proxy.
        for scheme in ("http", "https"):
            assert_good(await conn.request(GET(f"{scheme}://{host}{quirks['raw base64']}")), record)
        assert_good(await conn.request(POST(der, target=f"http://{host}/ocsp")), record)
        assert_malformed(await conn.request(GET(f"http://{host}/ocsp")))
        health = await conn.request(GET(f"http://{host}/healthz"))  # handed to aiohttp
        assert health.status == 200 and b'"ok"' in health.body


async def test_http10_closes_unless_keep_alive_is_asked_for(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    async with connect(responder) as conn:
        reply = await conn.request(GET(ocsp_path(der), version="HTTP/1.0"))
        assert_good(reply, record)
        assert reply.closes
        assert await conn.closed_by_server()
    async with connect(responder) as conn:
        reply = await conn.request(POST(der, version="HTTP/1.0"))
        assert_good(reply, record)
        assert reply.closes and await conn.closed_by_server()
    async with connect(responder) as conn:
        for _ in range(3):
            reply = await conn.request(GET(ocsp_path(der), "Connection: keep-alive", version="HTTP/1.0"))
            assert_good(reply, record)
            assert not reply.closes
    async with connect(responder) as conn:  # HTTP/1.1 asking to close
        reply = await conn.request(GET(ocsp_path(der), "Connection: close"))
        assert_good(reply, record)
        assert reply.closes and await conn.closed_by_server()
    async with connect(responder) as conn:  # the simplest HTTP/1.0 request: no header at all
        reply = await conn.request(GET(ocsp_path(der), version="HTTP/1.0", host=False))
        assert_good(reply, record)
        assert reply.closes and await conn.closed_by_server()


async def test_keep_alive_serves_many_requests_on_one_connection(responder: Responder) -> None:
    records = [await responder.issue() for _ in range(3)]
    fast = responder.server.fastpath.stats["fast"]
    async with connect(responder) as conn:
        for _ in range(3):
            for record in records:
                der = responder.request(record)
                assert_good(await conn.request(GET(ocsp_path(der))), record)
                assert_good(await conn.request(POST(der)), record)
        # Expect: 100-continue: the interim answer comes before the body is sent.
        der = responder.request(records[0])
        head = POST(der, "Expect: 100-continue")[: -len(der)]
        await conn.send(head)
        interim = await conn.reply()
        assert interim.status == 100
        await conn.send(der)
        assert_good(await conn.reply(), records[0])
        # A body sent in pieces is waited for.
        request = POST(der)
        for i in range(0, len(request), 7):
            await conn.send(request[i : i + 7])
            await asyncio.sleep(0)
        assert_good(await conn.reply(), records[0])
    # 20 answers; only the first for each certificate needed Redis, the rest came from the cache.
    assert responder.server.fastpath.stats["fast"] - fast >= 17


async def test_pipelined_requests_are_answered_in_order(responder: Responder) -> None:
    records = [await responder.issue() for _ in range(6)]
    await responder.ca.suspend("moica", records[5].serial, actor="test")
    await responder.settle()
    await asyncio.sleep(0.05)  # the invalidation
    async with connect(responder) as conn:  # warm the cache for the first three only
        for record in records[:3]:
            assert_good(await conn.request(GET(ocsp_path(responder.request(record)))), record)
    never_issued = 0x7777_0000_1234
    plan: list[tuple[bytes, tuple[str, int, str]]] = []
    for i in range(20):
        record = records[i % 6]
        if i == 9:
            plan.append((POST(b"\x30\x03\x02\x01\x01"), ("malformed", 0, "")))
        elif i == 13:
            plan.append((GET(ocsp_path(responder.request(never_issued))), ("unauthorized", 0, "")))
        elif i % 4 == 3:
            der = responder.request(record, algorithm=hashes.SHA256())  # signed live: slowest
            plan.append((GET(ocsp_path(der)), ("answer", record.serial, "sha256")))
        elif i % 2:
            plan.append((POST(responder.request(record)), ("answer", record.serial, "sha1")))
        else:
            plan.append((GET(ocsp_path(responder.request(record))), ("answer", record.serial, "sha1")))
    async with connect(responder) as conn:
        await conn.send(b"".join(request for request, _ in plan))
        for i, (_, (kind, serial, algorithm)) in enumerate(plan):
            reply = await conn.reply()
            assert not reply.closes, i
            if kind == "malformed":
                assert_malformed(reply)
            elif kind == "unauthorized":
                assert reply.status == 200 and reply.body == UNAUTHORIZED, i
            else:
                resp = reply.ocsp()
                assert resp.serial_number == serial, f"answer {i} is out of order"
                assert resp.hash_algorithm.name == algorithm, i
                expected = cocsp.OCSPCertStatus.REVOKED if serial == records[5].serial else cocsp.OCSPCertStatus.GOOD
                assert resp.certificate_status is expected, i
        assert_good(await conn.request(GET(ocsp_path(responder.request(records[0])))), records[0])
    # A refused request behind queued answers: they are written first, then the refusal, then the close.
    der256 = responder.request(records[1], algorithm=hashes.SHA256())
    async with connect(responder) as conn:
        await conn.send(GET(ocsp_path(der256)) + POST(responder.request(records[2])) + b"PUT /ocsp HTTP/1.1\r\nHost: a\r\n\r\n"
                        + GET(ocsp_path(der256)))
        assert_good(await conn.reply(), records[1], "sha256")
        assert_good(await conn.reply(), records[2])
        refused = await conn.reply()
        assert refused.status == 405 and refused.closes
        assert await conn.closed_by_server()


async def test_deep_pipeline_is_paused_and_resumed_in_order(responder: Responder) -> None:
    """More requests in flight than the protocol queues (32) before it stops reading."""
    records = [await responder.issue() for _ in range(3)]
    async with connect(responder) as conn:
        for record in records:
            assert_good(await conn.request(GET(ocsp_path(responder.request(record)))), record)
    plan = []
    for i in range(150):
        if i % 2:
            plan.append((POST(responder.request(0x5E_0000 + i)), None))  # never issued: asks Redis twice
        else:
            record = records[i % 3]
            plan.append((GET(ocsp_path(responder.request(record))), record.serial))
    async with connect(responder) as conn:
        await conn.send(b"".join(r for r, _ in plan))
        for i, (_, serial) in enumerate(plan):
            reply = await conn.reply()
            if serial is None:
                assert reply.body == UNAUTHORIZED, i
            else:
                assert reply.ocsp().serial_number == serial, i
        assert_good(await conn.request(POST(responder.request(records[0]))), records[0])


# Refusals ------------------------------------------------------------------------------------

REFUSALS = {
    "Content-Length over 16 KiB": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length: 16385\r\n\r\n",
        413,
    ),
    "absurd Content-Length": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length: 99999999999\r\n\r\n",
        400,
    ),
    "negative Content-Length": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length: -1\r\n\r\n",
        400,
    ),
    "POST as text/plain": (POST(b"\x30\x00", content_type="text/plain"), 415),
    "POST without Content-Type": (POST(b"\x30\x00", content_type=None), 415),
    "POST as form": (POST(b"a=b", content_type="application/x-www-form-urlencoded"), 415),
    "chunked body": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n0\x00\r\n0\r\n\r\n",
        411,
    ),
    "chunked with Content-Length (smuggling)": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        411,
    ),
    "head over 8 KiB, complete": (GET("/ocsp/AAAA", "X-Padding: " + "a" * 9000), 431),
    "head over 8 KiB, incomplete": (b"GET /ocsp/AAAA HTTP/1.1\r\nX-Padding: " + b"a" * 9000, 431),
    "request line without version": (b"GET /ocsp/AAAA\r\nHost: a\r\n\r\n", 400),
    "request line with extra space": (b"GET  /ocsp/AAAA HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    "garbage line": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    "PUT": (b"PUT /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length: 0\r\n\r\n", 405),
    "DELETE": (b"DELETE /ocsp/AAAA HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    "duplicate Content-Length": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length: 2\r\n"
        b"Content-Length: 2\r\n\r\n0\x00",
        400,
    ),
    "Content-Length in other case, twice": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\ncontent-length: 2\r\n"
        b"CONTENT-LENGTH: 3\r\n\r\n0\x00\x00",
        400,
    ),
    "space before the colon of Content-Length": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length : 2\r\n\r\n0\x00",
        400,
    ),
    "space before the colon of Transfer-Encoding": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding : chunked\r\n\r\n0\x00",
        400,  # RFC 9112 5.1: whitespace before the colon is a 400, whatever the header
    ),
    "Content-Length hidden by line folding": (
        b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\nX-A: b\r\n Content-Length: 2"
        b"\r\n\r\n0\x00",
        400,
    ),
    "obsolete line folding": (b"GET /ocsp/AAAA HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n", 400),
}


async def test_refused_requests_get_an_error_and_the_connection_closes(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    for name, (request, status) in REFUSALS.items():
        async with connect(responder) as conn:
            await conn.send(request)
            reply = await conn.reply()
            assert reply.status == status, (name, reply.status, reply.body)
            assert reply.closes, name
            assert reply.headers["content-type"].startswith("text/plain"), name
            assert "date" in reply.headers, name
            assert await conn.closed_by_server(), name
        async with connect(responder) as conn:  # the worker is unharmed
            assert_good(await conn.request(POST(der)), record)
    assert responder.server.fastpath.stats["rejected"] >= len(REFUSALS)


async def test_invalid_header_sections_are_refused(responder: Responder) -> None:
    record = await responder.issue()
    target = ocsp_path(responder.request(record)).encode()
    cases = {
        "two Host lines": b"Host: a\r\nHost: b",
        "no Host in HTTP/1.1": b"Accept: */*",
        "space before a colon": b"Host : a",
        "line without a colon": b"Host: a\r\nthis is not a header",
    }
    statuses = {}
    for name, lines in cases.items():
        async with connect(responder) as conn:
            statuses[name] = (await conn.request(b"GET " + target + b" HTTP/1.1\r\n" + lines + b"\r\n\r\n")).status
    assert statuses == dict.fromkeys(cases, 400)


# Malformed OCSP ------------------------------------------------------------------------------


async def test_malformed_ocsp_is_400_malformed_request_and_keep_alive_survives(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    bad = [
        GET("/ocsp/not-base64!!"),
        GET("/ocsp/" + base64.b64encode(b"\x30\x03\x02\x01\x01").decode()),  # base64 of bad DER
        GET("/ocsp/" + base64.b64encode(der[:-1]).decode()),  # truncated DER
        GET("/ocsp"),
        GET("/ocsp/"),
        GET("/ocsp//"),
        GET("/ocsp?x=1"),
        POST(b"\x30\x03\x02\x01\x01"),
        POST(b""),
        POST(der + b"\x00"),
        POST(b"\xff" * 2000),
    ]
    async with connect(responder) as conn:
        for request in bad:
            reply = await conn.request(request)
            assert_malformed(reply)
            assert not reply.closes, request[:40]
            assert_good(await conn.request(GET(ocsp_path(der))), record)
    async with connect(responder) as conn:  # without keep-alive: answered, then closed
        reply = await conn.request(GET("/ocsp/not-base64!!", version="HTTP/1.0"))
        assert_malformed(reply)
        assert reply.closes and await conn.closed_by_server()
    assert responder.server.fastpath.stats["malformed"] >= len(bad) + 1


async def test_post_body_in_base64_is_malformed_even_after_the_same_get(responder: Responder) -> None:
    record = await responder.issue()
    text = base64.b64encode(responder.request(record))
    async with connect(responder) as conn:
        assert_good(await conn.request(GET("/ocsp/" + text.decode())), record)
        assert_malformed(await conn.request(POST(text)))


# Conditional GET ----------------------------------------------------------------------------


async def test_conditional_get(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    async with connect(responder) as conn:
        first = await conn.request(GET(ocsp_path(der)))
        resp = assert_good(first, record)
        etag, last_modified = first.headers["etag"], first.headers["last-modified"]
        assert last_modified == email.utils.format_datetime(resp.this_update_utc, usegmt=True)
        assert first.headers["expires"] == email.utils.format_datetime(resp.next_update_utc, usegmt=True)
        modified = email.utils.parsedate_to_datetime(last_modified)

        def http_date(delta: int) -> str:
            return email.utils.formatdate(modified.timestamp() + delta, usegmt=True)

        cases = [
            (f"If-None-Match: {etag}", 304),
            (f'If-None-Match: "other", {etag}', 304),
            ("If-None-Match: *", 304),
            ('If-None-Match: "other"', 200),
            (f"If-Modified-Since: {last_modified}", 304),
            (f"If-Modified-Since: {http_date(3600)}", 304),
            (f"If-Modified-Since: {http_date(-1)}", 200),
            ("If-Modified-Since: not a date", 200),
            ("If-Modified-Since: Mon, 99 Foo 2026 99:99:99 GMT", 200),
            ("If-Modified-Since: ", 200),
            # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
            (f'If-None-Match: "other"\r\nIf-Modified-Since: {http_date(3600)}', 200),
        ]
        for header, status in cases:
            reply = await conn.request(GET(ocsp_path(der), header))
            assert reply.status == status, (header, reply.status)
            assert reply.headers["etag"] == etag, header
            assert reply.headers["last-modified"] == last_modified, header
            assert reply.headers["expires"] == first.headers["expires"], header
            assert reply.headers["cache-control"].startswith("max-age="), header
            assert "public" in reply.headers["cache-control"], header
            if status == 304:
                assert reply.body == b"" and "content-length" not in reply.headers, header
            else:
                assert reply.body == first.body, header
        # Conditionals do not apply to POST: the answer is always sent.
        reply = await conn.request(POST(der, f"If-None-Match: {etag}"))
        assert reply.status == 200 and reply.body == first.body
        # 304 had no body: the connection is still in step.
        assert_good(await conn.request(GET(ocsp_path(der))), record)


async def test_if_none_match_uses_weak_comparison(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    async with connect(responder) as conn:
        etag = (await conn.request(GET(ocsp_path(der)))).headers["etag"]
        assert (await conn.request(GET(ocsp_path(der), f"If-None-Match: W/{etag}"))).status == 304


# Timeouts -----------------------------------------------------------------------------------


async def seconds_to_408(responder: Responder, partial: bytes, *, idle_first: float = 0.0) -> float:
    """Connect, stay silent ``idle_first`` seconds, send ``partial`` (an incomplete request):
    the seconds from then until its 408, after which the server closes the connection."""
    async with connect(responder) as conn:
        await asyncio.sleep(idle_first)
        start = time.monotonic()
        await conn.send(partial)
        reply = await conn.reply(timeout=5)
        assert reply.status == 408 and reply.closes
        assert await conn.closed_by_server()
        return time.monotonic() - start

async def test_slow_and_idle_clients_are_disconnected(responder: Responder) -> None:
    fastpath = responder.server.fastpath
    fastpath.head_timeout = 1.0
    fastpath.keepalive_timeout = 1.5
    record = await responder.issue()
    der = responder.request(record)

    async def idle_after_a_request() -> float:
        async with connect(responder) as conn:
            assert_good(await conn.request(GET(ocsp_path(der))), record)
            start = time.monotonic()
            assert await conn.closed_by_server(timeout=5)
            return time.monotonic() - start

    async def busy() -> int:
        """Requests every 0.4 s for 3 s: never idle long enough to be closed."""
        async with connect(responder) as conn:
            for _ in range(8):
                assert_good(await conn.request(GET(ocsp_path(der))), record)
                await asyncio.sleep(0.4)
            return 8

    slow, no_body, idle, served = await asyncio.gather(
        seconds_to_408(responder, GET(ocsp_path(der))[:30]),
        seconds_to_408(responder, POST(der)[: -len(der) + 3]),
        idle_after_a_request(),
        busy(),
    )
    # The watchdog runs once a second: closed after the limit, and not much later.
    assert 1.0 <= slow < 3.5 and 1.0 <= no_body < 3.5
    assert 1.4 <= idle < 4.0
    assert served == 8
    assert fastpath.stats["timeouts"] >= 2
    for _ in range(50):
        if not fastpath.connections:
            break
        await asyncio.sleep(0.05)
    assert not fastpath.connections


async def test_a_connection_not_yet_used_is_idle_not_slow(responder: Responder) -> None:
    """A client pool opens connections before it needs them: one that has sent nothing is idle
    (the keep-alive limit), not a slow request (the head limit). Closing it at the head limit
    raced with the pool's first request on it, which was then lost."""
    fastpath = responder.server.fastpath
    fastpath.head_timeout = 1.0
    fastpath.keepalive_timeout = 4.0
    record = await responder.issue()
    der = responder.request(record)

    async def used_late() -> None:
        async with connect(responder) as conn:
            await asyncio.sleep(2.6)  # past the head limit by at least one watchdog sweep
            assert_good(await conn.request(GET(ocsp_path(der))), record)

    async def never_used() -> float:
        async with connect(responder) as conn:
            start = time.monotonic()
            assert await conn.closed_by_server(timeout=8)
            return time.monotonic() - start

    # Half a head sent late: the head limit runs from its first byte.
    half_head_late = seconds_to_408(responder, GET(ocsp_path(der))[:30], idle_first=2.6)
    _, idle, slow = await asyncio.gather(used_late(), never_used(), half_head_late)
    assert 3.9 <= idle < 6.5
    assert 0.9 <= slow < 3.5


# Hand-off to aiohttp ------------------------------------------------------------------------


async def test_other_paths_are_handed_to_aiohttp_after_the_ocsp_answer(responder: Responder) -> None:
    record = await responder.issue()
    issuer_der = responder.issuer_certs["moica"].public_bytes(serialization.Encoding.DER)
    for algorithm in (hashes.SHA1(), hashes.SHA256()):  # cached answer, and one answered in a task
        der = responder.request(record, algorithm=algorithm)
        requests = [GET(ocsp_path(der)), GET("/healthz"), GET("/ca/moica.crt")]
        for pipelined in (False, True):
            async with connect(responder) as conn:
                if pipelined:
                    await conn.send(b"".join(requests))
                    replies = [await conn.reply() for _ in requests]
                else:
                    replies = [await conn.request(r) for r in requests]
                assert_good(replies[0], record, algorithm.name)
                assert replies[1].status == 200 and replies[1].headers["content-type"].startswith("application/json")
                assert b'"status": "ok"' in replies[1].body or b'"status":"ok"' in replies[1].body
                assert replies[2].status == 200 and replies[2].body == issuer_der
                assert replies[2].headers["content-type"] == "application/pkix-cert"
                x509.load_der_x509_certificate(replies[2].body)
    assert responder.server.fastpath.stats["handed_off"] == 4


async def test_ocsp_after_a_hand_off_on_the_same_connection(responder: Responder) -> None:
    record = await responder.issue()
    der = responder.request(record)
    async with connect(responder) as conn:
        assert (await conn.request(GET("/ca/moica.crt"))).status == 200
        assert_good(await conn.request(GET(ocsp_path(der))), record)


# Answers ------------------------------------------------------------------------------------


async def test_unauthorized_sha256_and_ignored_nonce_answers(responder: Responder) -> None:
    record = await responder.issue()
    source = responder.server.source
    async with connect(responder) as conn:
        # A serial the issuer never issued: unauthorized (the default policy), not cacheable.
        for request in (GET(ocsp_path(responder.request(0x0BAD_5E41A1))), POST(responder.request(0x0BAD_5E41A1))):
            reply = await conn.request(request)
            assert reply.status == 200 and reply.body == UNAUTHORIZED
            assert reply.headers["cache-control"] == "no-store" and "etag" not in reply.headers
            assert reply.ocsp().response_status is cocsp.OCSPResponseStatus.UNAUTHORIZED

        # A CertID hashed with an algorithm we do not answer (SHA-384; its hashes are the real
        # ones): unauthorized, parsed the first time and from the request memo after.
        issuer = responder.issuer_certs["moica"]
        der384 = (
            cocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(hashlib.sha384(issuer.subject.public_bytes()).digest(),
                                     hashlib.sha384(_subject_public_key_bits(issuer)).digest(),
                                     record.serial, hashes.SHA384())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )  # fmt: skip
        for request in (GET(ocsp_path(der384)), POST(der384), GET(ocsp_path(der384))):
            reply = await conn.request(request)
            assert reply.status == 200 and reply.body == UNAUTHORIZED, reply.body[:50]

        # A SHA-256 CertID is answered with a SHA-256 CertID: signed live once, then cached.
        der256 = responder.request(record, algorithm=hashes.SHA256())
        asked = cocsp.load_der_ocsp_request(der256)
        for _ in range(2):
            resp = assert_good(await conn.request(GET(ocsp_path(der256))), record, "sha256")
            assert resp.issuer_name_hash == asked.issuer_name_hash
            assert resp.issuer_key_hash == asked.issuer_key_hash
        assert source.stats["live_signed"] == 1

        # A nonce is ignored by default (RFC 5019): the cached pre-signed answer, without a nonce.
        plain = await conn.request(GET(ocsp_path(responder.request(record))))
        assert_good(plain, record)
        hits = source.stats["cache_hits"]
        for nonce in (b"\x01" * 16, b"\x02" * 32):
            reply = await conn.request(POST(responder.request(record, nonce=nonce)))
            resp = assert_good(reply, record)
            assert len(resp.extensions) == 0
            assert reply.body == plain.body and reply.headers["etag"] == plain.headers["etag"]
        assert source.stats["cache_hits"] == hits + 2
        assert source.stats["live_signed"] == 1


async def test_memos_and_cache_hold_nothing_the_garbage_collector_tracks(responder: Responder) -> None:
    """A busy worker keeps hundreds of thousands of parsed requests and answers. If those
    entries stayed tracked, every collection of their generation would walk them all (the
    ~100 ms stalls bench/README.md describes), so after one collection none may be tracked,
    and answers served back from the cache must still be right."""
    records = [await responder.issue() for _ in range(3)]
    source, fp = responder.server.source, responder.server.fastpath
    requests = []
    for i, record in enumerate(records):
        for algorithm in (hashes.SHA1(), hashes.SHA256()):
            der = responder.request(record, algorithm=algorithm, nonce=bytes([i + 1]) * 16)
            requests.append((GET(ocsp_path(der)), record, algorithm.name))
            requests.append((POST(der), record, algorithm.name))
    never_issued = responder.request(0x0BAD_5E41A1)
    async with connect(responder) as conn:
        for _ in range(2):  # the second round is answered from the cache
            for request, record, algorithm in requests:
                assert_good(await conn.request(request), record, algorithm)
            assert (await conn.request(POST(never_issued))).body == UNAUTHORIZED
    assert source.stats["cache_hits"] >= len(requests)

    gc.collect()
    assert len(source._cache) == 2 * len(records)  # SHA-1 and SHA-256 answers per certificate
    assert len(fp.get_memo) == len(requests) // 2
    assert len(fp.post_memo) == len(requests) // 2 + 1  # and the never-issued serial
    held = [*source._cache.items(), *fp.get_memo.items(), *fp.post_memo.items()]
    tracked = [(type(k).__name__, type(v).__name__) for k, v in held if gc.is_tracked(k) or gc.is_tracked(v)]
    assert tracked == [], f"{len(tracked)} of {len(held)} entries still tracked, e.g. {tracked[:3]}"

    # New entries after that collection must not bring the containers back into the young
    # generations (where every young collection would walk all their entries).
    extra = await responder.issue()
    async with connect(responder) as conn:
        for request in (GET(ocsp_path(responder.request(extra))), POST(responder.request(extra, nonce=b"\x09" * 16))):
            assert_good(await conn.request(request), extra)
    assert len(source._cache) == 2 * len(records) + 1 and len(fp.get_memo) == len(requests) // 2 + 1
    young = {id(o) for generation in (0, 1) for o in gc.get_objects(generation=generation)}
    assert not {id(source._cache), id(fp.get_memo), id(fp.post_memo)} & young


@pytest.fixture
async def extended_revoked_responder(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:
    async for r in start_responder(pool, redis_client, redis_url, vault, clock, ca, ocsp_unknown_serial="revoked"):
        yield r


async def test_never_issued_serials_with_the_extended_revoked_policy(extended_revoked_responder: Responder) -> None:
    """ocsp_unknown_serial = "revoked" (RFC 6960 2.2): revoked, certificateHold, 1970-01-01, with the
    extended revoke extension, for any serial the issuer never issued, even zero or negative ones."""
    responder = extended_revoked_responder
    record = await responder.issue()
    template = responder.request(5)
    assert template.count(b"\x02\x01\x05") == 1
    async with connect(responder) as conn:
        assert_good(await conn.request(POST(responder.request(record))), record)
        for octet, serial in [(b"\x05", 5), (b"\x00", 0), (b"\x80", -128), (b"\xff", -1)]:
            reply = await conn.request(POST(template.replace(b"\x02\x01\x05", b"\x02\x01" + octet)))
            assert reply.status == 200, serial
            resp = reply.ocsp()
            assert resp.serial_number == serial
            assert resp.certificate_status is cocsp.OCSPCertStatus.REVOKED
            assert resp.revocation_reason is x509.ReasonFlags.certificate_hold
            assert resp.revocation_time_utc is not None and resp.revocation_time_utc.timestamp() == 0
            assert [e.oid.dotted_string for e in resp.extensions] == ["1.3.6.1.5.5.7.48.1.9"]


# Fuzz ---------------------------------------------------------------------------------------


def _mutate(data: bytes, rng: random.Random, edits: int) -> bytes:
    buf = bytearray(data)
    for _ in range(edits):
        kind = rng.randrange(3)
        if kind == 1 or not buf:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        elif kind == 0:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        else:
            del buf[rng.randrange(len(buf))]
    return bytes(buf)


async def test_fuzzed_connections_never_get_500_or_a_traceback(
    responder: Responder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fastpath = responder.server.fastpath
    fastpath.head_timeout = 1.0
    fastpath.keepalive_timeout = 1.0
    record = await responder.issue()
    der = responder.request(record)
    der256 = responder.request(record, algorithm=hashes.SHA256())
    valid = [GET(ocsp_path(der)), POST(der), GET(ocsp_path(der256)), POST(der256, "Connection: close"),
             GET(ocsp_path(der), "If-None-Match: *"), POST(der, "Expect: 100-continue")]
    rng = random.Random(6960)

    def payload() -> bytes:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.randint(1, 300))
        if kind == 1:  # a valid request, mutated anywhere
            return _mutate(rng.choice(valid), rng, rng.randint(1, 6))
        if kind == 2:  # framing intact, the OCSP request mutated
            body = _mutate(rng.choice((der, der256)), rng, rng.randint(1, 4))
            if rng.randrange(2):
                return POST(body)
            return GET("/ocsp/" + urllib.parse.quote(base64.b64encode(body).decode(), safe=""))
        if kind == 3:  # random header lines
            lines = [rng.randbytes(rng.randint(0, 40)).replace(b"\r\n", b"") for _ in range(rng.randint(1, 5))]
            return b"GET " + ocsp_path(der).encode() + b" HTTP/1.1\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
        if kind == 4:  # a valid pipeline with one mutated request in it
            requests = [rng.choice(valid) for _ in range(rng.randint(2, 5))]
            at = rng.randrange(len(requests))
            requests[at] = _mutate(requests[at], rng, rng.randint(1, 3))
            return b"".join(requests)
        return _mutate(GET(rng.choice(["/healthz", "/ca/moica.crt", "/nowhere", "/ocsp"])), rng, rng.randint(1, 4))

    payloads = [payload() for _ in range(200)]
    statuses: list[int] = []

    async def one(data: bytes) -> None:
        async with connect(responder) as conn:
            with contextlib.suppress(ConnectionError):
                await conn.send(data)
            received = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(3.0):  # aiohttp keeps handed-off connections longer
                    while chunk := await conn.reader.read(65536):
                        received += chunk
            statuses.extend(int(s) for s in re.findall(rb"(?:^|\r\n|\n)HTTP/1\.[01] (\d{3}) ", received))

    await asyncio.gather(*(one(p) for p in payloads))
    # The campaign reached every branch: answers, malformed OCSP, refusals, time-outs and hand-offs.
    assert all(fastpath.stats[k] > 0 for k in ("fast", "malformed", "rejected", "timeouts", "handed_off")), fastpath.stats
    assert 500 not in statuses
    assert all(100 <= s < 500 for s in statuses), sorted(set(statuses))
    assert len(statuses) >= 150  # most connections got at least one answer
    assert {200, 400} <= set(statuses)
    # aiohttp logs every bad request it is handed at ERROR, with a traceback ("Error handling request");
    # that is aiohttp's own policy. Nothing else may log an error: not the fast path, not asyncio.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name != "aiohttp.server"]
    assert not errors, [(r.name, r.getMessage()) for r in errors]
    assert not any("unexpected error on an OCSP connection" in r.getMessage() for r in caplog.records)
    assert not any(r.name.startswith("responder") and r.exc_info for r in caplog.records)
    # The worker still answers, correctly.
    async with connect(responder) as conn:
        assert_good(await conn.request(GET(ocsp_path(der))), record)
        assert_good(await conn.request(POST(der256)), record, "sha256")
