"""A running public worker for the CRL tests, and the clients that talk to it.

The worker is the real one (:func:`responder.public.public_server`: fast path, aiohttp,
CRL source, stream hub) over real PostgreSQL and Valkey, in the test's event loop. Unlike
``ocsp_harness.start_responder`` it runs no OCSP signer sweep: the CRL paths never read
OCSP responses, and the sweep is most of that harness's start-up time.

The stream client speaks raw HTTP/1.1 on its own socket (the fast path takes such a
connection over as a subscriber), decodes the chunked body and splits it into Server-Sent
Events. :class:`CRLFollower` is the relying party of ``responder/crl_stream.py``'s
docstring: it holds a full CRL and applies deltas by the rules written there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict

from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.storage import crls as store
from ca_core.storage import postgres as db
from responder.public import PublicServer, public_server
from responder.runtime import Storage

from . import ocsp_harness

# RFC 5280 5.3.1 CRLReason codes as the certificates table stores them.
REASONS = {
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}

Listing = dict[int, x509.ReasonFlags | None]


@dataclasses.dataclass
class CRLResponder:
    url: str
    port: int
    server: PublicServer
    ca: CertificateAuthority
    pool: asyncpg.Pool
    redis: aioredis.Redis
    http: aiohttp.ClientSession
    issuer_ids: dict[str, int]
    issuer_certs: dict[str, x509.Certificate]
    clients: list[StreamClient] = dataclasses.field(default_factory=list)

    async def subscribe(self, issuer: str = "moica", last_event_id: int | str | None = None, **kw: Any) -> StreamClient:
        """A stream client on a fresh connection, closed at the latest when the worker stops."""
        client = await StreamClient.connect(self.port, issuer, last_event_id, **kw)
        self.clients.append(client)
        return client

    async def get(self, path: str, *, method: str = "GET", **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        async with self.http.request(method, self.url + path, headers=headers) as r:
            return r.status, r.headers.copy(), await r.read()

    async def issue(self, issuer: str = "moica") -> CertRecord:
        record, _ = await self.ca.issue_with_generated_key(
            issuer=issuer,
            profile="citizen-signing",
            subject=ocsp_harness.HOLDER,
            actor="test",
            key_type=KeyType.EC_P256,
        )
        return record

    async def listed(self, issuer: str = "moica") -> Listing:
        """What PostgreSQL says the issuer's CRLs must list: every certificate not good."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT serial, status::text, reason FROM certificates WHERE issuer_id = $1 AND status <> 'good'",
                self.issuer_ids[issuer],
            )
        return {int.from_bytes(r[0], "big"): None if r[2] == 0 else REASONS[r[2]] for r in rows}

    async def bulk_listed(
        self, count: int, *, issuer: str = "moica", events: bool = False, first: int = 0
    ) -> list[int]:
        """Insert ``count`` revoked (keyCompromise) and suspended certificates with COPY,
        much faster than issuing them. With ``events`` each also gets a status event in the
        outbox, so the next delta CRLs list it as well."""
        now = dt.datetime.now(dt.UTC)
        iid = self.issuer_ids[issuer]
        serials = [(0x5A << 120) + first + i for i in range(count)]
        rows = [
            (iid, s.to_bytes(16, "big"), "citizen-signing", "CN=bulk", None, now - dt.timedelta(days=1),
             now + dt.timedelta(days=365), "suspended" if s % 5 == 0 else "revoked", now, 6 if s % 5 == 0 else 1,
             None, s % 4, b"\x30\x00", now, now)
            for s in serials
        ]  # fmt: skip
        async with self.pool.acquire() as conn:
            await db.copy_certificates(conn, rows)
            if events:
                await conn.executemany(
                    "INSERT INTO outbox (issuer_id, serial, event, status, created_at) VALUES ($1, $2, $3, $4, $5)",
                    [(iid, r[1], r[7], r[7], now) for r in rows],
                )
        return serials

    async def served_der(self, scope: str, issuer: str = "moica") -> tuple[store.Manifest, bytes]:
        """The manifest and DER a scope points at in Redis, read directly."""
        iid = self.issuer_ids[issuer]
        raw = await self.redis.get(store.manifest_key(iid, scope))
        assert isinstance(raw, bytes), f"no {scope} CRL of {issuer} in Redis"
        manifest = store.Manifest.from_json(raw)
        keys = [store.chunk_key(iid, scope, manifest.number, i) for i in range(manifest.chunks)]
        chunks = [c for c in await self.redis.mget(keys) if isinstance(c, bytes)]
        assert len(chunks) == manifest.chunks, f"chunks of the {scope} CRL are missing"
        return manifest, b"".join(chunks)


@contextlib.asynccontextmanager
async def running_responder(
    pool: asyncpg.Pool, redis: aioredis.Redis, redis_url: str, ca: CertificateAuthority, **config: object
) -> AsyncIterator[CRLResponder]:
    async with pool.acquire() as conn:
        issuers = await db.list_issuers(conn)
    certs = {i.name: x509.load_der_x509_certificate(i.certificate) for i in issuers}
    ids = {i.name: i.id for i in issuers}
    cfg = ocsp_harness.test_config(**config)
    async with public_server(cfg, Storage(pool, redis), redis_url, port=0) as srv, aiohttp.ClientSession() as http:
        # Both subscriptions up, as in production: manifests are cached only then. (And a
        # server stopped in the middle of subscribing can hang: see test_crl_serving.)
        for _ in range(500):
            if srv.crls._subscribed and srv.source._subscribed:
                break
            await asyncio.sleep(0.01)
        assert srv.crls._subscribed, "the CRL publication subscription did not come up"
        r = CRLResponder(f"http://127.0.0.1:{srv.port}", srv.port, srv, ca, pool, redis, http, ids, certs)
        try:
            yield r
        finally:
            for client in r.clients:
                client.writer.transport.abort()
            await asyncio.sleep(0)


def verifies(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """Whether the CRL's signature verifies with the issuer's key."""
    key = issuer.public_key()
    assert isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)), key
    return crl.is_signature_valid(key)


def listing(crl: x509.CertificateRevocationList) -> Listing:
    """serial -> reason of every entry (None: no reason code, i.e. unspecified)."""
    out: Listing = {}
    for entry in crl:
        try:
            out[entry.serial_number] = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            out[entry.serial_number] = None
    return out


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def delta_base(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
    except x509.ExtensionNotFound:
        return None


# The push stream ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """One Server-Sent Events block: an event, or only comments (a heartbeat)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    comments: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        assert self.id is not None, self
        return int(self.id)


def parse_events(text: str) -> list[Event]:
    """Complete blocks of an event stream (WHATWG HTML 9.2.6), in order."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        ident = event = None
        retry = None
        comments = []
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "retry":
                retry = int(value)
            elif name == "id":
                ident = value
            elif name == "event":
                event = value
            else:
                raise AssertionError(f"unexpected field in the event stream: {line!r}")
        events.append(Event(ident, event, "\n".join(data), retry, tuple(comments)))
    return events


class StreamClosed(Exception):
    """The server ended the stream (closed the connection)."""


class StreamClient:
    """``GET /crl/{issuer}/stream`` on a socket of its own (a fresh connection: the fast
    path turns it into a subscriber). ``status`` and ``headers`` are the response head;
    ``body`` the whole body of a non-200 answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self._text = ""
        self._events: list[Event] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        issuer: str = "moica",
        last_event_id: int | str | None = None,
        *,
        method: str = "GET",
        rcvbuf: int | None = None,
        extra: bytes = b"",
        body: bytes = b"",
    ) -> StreamClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so the advertised window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        client = cls(reader, writer)
        head = b"%s /crl/%s/stream HTTP/1.1\r\nHost: status.example.test\r\nAccept: text/event-stream\r\n" % (
            method.encode(),
            issuer.encode(),
        )
        if last_event_id is not None:
            head += b"Last-Event-ID: %s\r\n" % str(last_event_id).encode()
        writer.write(head + extra + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(5):
            raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        client.status = int(lines[0].split(" ", 2)[1])
        client.headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
        if client.status != 200:
            async with asyncio.timeout(5):
                client.body = await reader.readexactly(int(client.headers.get("content-length", "0")))
        return client

    async def _read_chunk(self) -> None:
        try:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.strip(), 16)
            if size == 0:
                raise StreamClosed("the server ended the chunked body")
            piece = await self.reader.readexactly(size + 2)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise StreamClosed(str(e)) from None
        assert piece.endswith(b"\r\n"), piece[-10:]
        self._text += piece[:-2].decode()
        blocks, sep, rest = self._text.rpartition("\n\n")
        if sep:
            self._events.extend(parse_events(blocks + sep))
            self._text = rest

    async def event(self, timeout: float = 5.0) -> Event:
        """The next block (event or comment)."""
        async with asyncio.timeout(timeout):
            while not self._events:
                await self._read_chunk()
        return self._events.pop(0)

    async def next_matching(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> list[Event]:
        """Every block up to and including the first one ``predicate`` accepts."""
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                e = await self.event(timeout)
                seen.append(e)
                if predicate(e):
                    return seen

    async def deltas_until(self, number: int, timeout: float = 5.0) -> list[Event]:
        """The delta and refetch events up to the delta numbered ``number`` (or a refetch)."""
        blocks = await self.next_matching(
            lambda e: e.event == "refetch" or (e.event == "delta" and e.number >= number), timeout
        )
        return [e for e in blocks if e.event in ("delta", "refetch")]

    async def quiet(self, seconds: float) -> list[Event]:
        """Whatever arrives within ``seconds`` (for 'nothing more is sent')."""
        got = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    got.append(await self.event(seconds))
        return got

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class NeedsRefetch(Exception):
    pass


class CRLFollower:
    """A relying party following the push stream (the rules of ``responder/crl_stream.py``):
    hold a full CRL (number B); apply each delta whose deltaCRLIndicator is at most the
    number the copy is current to (upsert its entries, drop the removeFromCRL ones);
    otherwise refetch. Every CRL's signature is checked against the issuer."""

    def __init__(self, issuer: x509.Certificate) -> None:
        self.issuer = issuer
        self.number: int | None = None
        self.entries: Listing = {}
        self.applied: list[int] = []
        self.removals = 0  # removeFromCRL entries applied

    def _load(self, der: bytes) -> x509.CertificateRevocationList:
        crl = x509.load_der_x509_crl(der)
        assert verifies(crl, self.issuer), "a CRL whose signature does not verify"
        return crl

    def load_full(self, der: bytes) -> None:
        crl = self._load(der)
        assert delta_base(crl) is None, "the full CRL URL served a delta CRL"
        self.number = crl_number(crl)
        self.entries = listing(crl)

    def apply(self, event: Event) -> None:
        if event.event == "refetch":
            raise NeedsRefetch(event.data)
        assert event.event == "delta", event
        crl = self._load(base64.b64decode(event.data, validate=True))
        number, base = crl_number(crl), delta_base(crl)
        assert base is not None, "the stream sent a CRL without a deltaCRLIndicator"
        assert number == event.number, f"event id {event.id} but the delta's CRL number is {number}"
        assert self.number is not None and number > self.number, f"delta {number} after {self.number}: out of order"
        if base > self.number:
            raise NeedsRefetch(f"delta {number} is based on {base}, beyond the {self.number} held")
        for serial, reason in listing(crl).items():
            if reason == x509.ReasonFlags.remove_from_crl:
                self.entries.pop(serial, None)
                self.removals += 1
            else:
                self.entries[serial] = reason
        self.number = number
        self.applied.append(number)
