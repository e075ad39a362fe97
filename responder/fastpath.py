"""The public port's HTTP/1.1 front: OCSP answered here directly, everything else by aiohttp.

Why this exists (profiles in bench/results): aiohttp's request machinery (parser objects,
Request/Response objects, middleware, the router, a task per request) costs ~100 us per
request, which caps a worker near 10 k answers/s before any OCSP work. An OCSP request
needs none of it: a request line, three headers, a body of ~100 bytes. So the public
port's protocol reads each request head itself and

- answers ``GET /ocsp/{base64}`` and ``POST /ocsp`` here (RFC 6960 Appendix A, RFC 5019),
  synchronously when the answer is cached, and otherwise when the source delivers it (for
  the usual miss, in the callback of its Redis reply: :meth:`OCSPSource.answer_soon
  <responder.ocsp_source.OCSPSource.answer_soon>`), keeping pipelined responses in order;
- turns a ``GET /crl/{issuer}/stream`` connection into a push-stream subscriber
  (:mod:`responder.crl_stream`): a small protocol object, no task, no aiohttp request, so
  thousands of idle subscribers cost little;
- hands the connection to aiohttp (``transport.set_protocol``) at the first request for
  any other path (``/crl/...``, ``/ca/...``, ``/healthz``), replaying the bytes it holds;
  from then on that connection is aiohttp's, with all its features.

It is deliberately strict, since it faces the Internet: heads are capped (431), bodies are
capped (413) and must be ``application/ocsp-request`` (415), ``Transfer-Encoding`` is refused
(411: no smuggling surface), a client that sends a partial request or idles too long is
disconnected, and a bad request is answered and the connection closed. Nothing a client
sends reaches a traceback: an unexpected error closes that one connection and is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import email.utils
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Final

from ca_core.errors import MalformedRequest
from ca_core.ocsp import UNSUCCESSFUL, FlatQuery, ResponseStatus, parse_flat

from .crl_stream import BadLastEventID, RawSubscriber, StreamHub, parse_last_event_id
from .ocsp_source import Answer, OCSPSource, put_bounded

__all__ = ["FastPath", "PublicProtocol", "decode_get_path"]

_log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192
MAX_BODY: Final = 16 * 1024
_MALFORMED: Final = UNSUCCESSFUL[ResponseStatus.MALFORMED_REQUEST]
_MEMO_ENTRIES: Final = 100_000
_STREAM_PATH: Final = re.compile(rb"^crl/([a-z][a-z0-9-]{0,30})/stream(?:\?[^#]*)?$")
# A CRLF not followed by a header name (an RFC 9110 token) and a colon.
_BAD_HEADER_LINE: Final = re.compile(rb"\r\n(?![!#$%&'*+.^_`|~0-9A-Za-z-]+:)")


def decode_get_path(encoded: bytes) -> bytes:
    """The DER of a GET request's path segment (after ``/ocsp/``).

    RFC 6960 Appendix A.1: ``url-encoding of base-64 encoding of the DER encoding of the
    OCSPRequest``. Real clients and proxies bend that, and we accept what they send:
    percent-encoded or raw '+', '/' and '='; '+' turned into ' ' by a form decoder; padding
    left off; base64url's '-' and '_'; leading slashes doubled by a base URL that ended in
    '/'. Raises MalformedRequest otherwise.
    """
    text = urllib.parse.unquote_to_bytes(encoded).lstrip(b"/").replace(b" ", b"+")
    text = text.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
    if not text:
        raise MalformedRequest("no request in the URL")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest("the URL is not base64") from None


class _Date:
    """The HTTP Date header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self, t: float) -> bytes:
        second = int(t)
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(second, usegmt=True).encode()
        return self._value


def _http_date(t: int) -> bytes:
    return email.utils.formatdate(t, usegmt=True).encode()


class FastPath:
    """What every connection of one worker shares: the answer source, the aiohttp server
    to hand other paths to, memos, limits, and the idle-connection watchdog.

    :param source: answers OCSP queries.
    :param handoff: a protocol factory for everything that is not OCSP (aiohttp's
        ``web.Server``); None answers other paths 404.
    :param head_timeout: the longest a client may take to send a complete request.
    :param keepalive_timeout: how long an idle connection is kept, before its first request or between requests.
    """

    def __init__(
        self,
        source: OCSPSource,
        handoff: Callable[[], asyncio.Protocol] | None,
        *,
        head_timeout: float = 10.0,
        keepalive_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.handoff = handoff
        self.head_timeout = head_timeout
        self.keepalive_timeout = keepalive_timeout
        self.clock = clock
        self.date = _Date()
        self.connections: set[PublicProtocol] = set()
        # Request bytes (GET path or POST body) -> parsed query: popular certificates are
        # asked about with the very same bytes again and again. Flat queries, so that the
        # garbage collector stops tracking the entries (ca_core.ocsp.FlatQuery).
        self.get_memo: collections.OrderedDict[bytes, FlatQuery] = collections.OrderedDict()
        self.post_memo: collections.OrderedDict[bytes, FlatQuery] = collections.OrderedDict()
        self._watchdog: asyncio.TimerHandle | None = None
        self.stats = collections.Counter[str]()
        #: The CRL push stream's subscribers, once the worker has one.
        self.streams: StreamHub | None = None

    def start(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for conn in list(self.connections):
            conn.close()

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self._watchdog = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def query(self, raw: bytes, *, from_get: bool) -> FlatQuery:
        """The query in a GET path's encoded part or a POST body; raises MalformedRequest."""
        memo = self.get_memo if from_get else self.post_memo
        q = memo.get(raw)
        if q is None:
            q = parse_flat(decode_get_path(raw) if from_get else raw)
            put_bounded(memo, raw, q, _MEMO_ENTRIES)
        return q

    def parts(
        self, answer: Answer, conditional: tuple[bytes | None, bytes | None]
    ) -> tuple[int, dict[str, str], bytes]:
        """(HTTP status, headers, body) for an answer: :meth:`render` for frameworks (the
        aiohttp routes that serve OCSP on connections already handed off)."""
        raw = self.render(answer, keep_alive=True, conditional=conditional)
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = dict(line.split(": ", 1) for line in lines[1:])
        for hop in ("Content-Length", "Date", "Connection"):
            headers.pop(hop, None)
        return status, headers, body

    def render(self, answer: Answer, *, keep_alive: bool, conditional: tuple[bytes | None, bytes | None]) -> bytes:
        """The full HTTP response for an answer, with RFC 5019 6.2 caching headers."""
        now = self.clock()
        date = self.date.now(now)
        conn = b"" if keep_alive else b"Connection: close\r\n"
        if not answer.signed:
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: %d\r\n"
                b"Cache-Control: no-store\r\nDate: %s\r\n%s\r\n%s" % (len(answer.der), date, conn, answer.der)
            )
        if answer.etag is None:  # carries the client's nonce: for this client only
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: %d\r\n"
                b"Cache-Control: no-store\r\nDate: %s\r\n%s\r\n%s" % (len(answer.der), date, conn, answer.der)
            )
        max_age = max(0, answer.next_update - int(now))
        cache = b"%sCache-Control: max-age=%d, public, no-transform, must-revalidate\r\n" % (
            answer.static_headers,
            max_age,
        )
        if_none_match, if_modified_since = conditional
        if if_none_match is not None:
            not_modified = _etag_matches(if_none_match, answer.etag)
        elif if_modified_since is not None:
            not_modified = _not_modified_since(if_modified_since, answer.this_update)
        else:
            not_modified = False
        if not_modified:
            return b"HTTP/1.1 304 Not Modified\r\n%sDate: %s\r\n%s\r\n" % (cache, date, conn)
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: %d\r\n%sDate: %s\r\n%s\r\n%s"
            % (len(answer.der), cache, date, conn, answer.der)
        )


def _etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 13.1.2: If-None-Match uses the weak comparison (W/ prefixes ignored)."""
    if if_none_match.strip() == b"*":
        return True
    return any(t.strip().removeprefix(b"W/") == etag for t in if_none_match.split(b","))


def _not_modified_since(value: bytes, this_update: int) -> bool:
    try:
        since = email.utils.parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return False  # RFC 9110 13.1.3: an invalid date is ignored
    if since.tzinfo is None:
        return False
    return since.timestamp() >= this_update


def _header(head: bytes, lower: bytes, marker: bytes) -> bytes | None:
    """The value of the first header whose ``\\r\\nname:`` marker (lower case) is in the head."""
    i = lower.find(marker)
    if i < 0:
        return None
    start = i + len(marker)
    stop = head.find(b"\r\n", start)
    return head[start : stop if stop >= 0 else len(head)].strip()


def _error(status: bytes, body: bytes, date: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\nConnection: close\r\n\r\n%s" % (
        status,
        content_type,
        len(body),
        date,
        body,
    )


class _Slot:
    """One response in a connection's queue: written when its turn comes (pipelined responses
    go out in request order). A cache miss's slot is the callback its answer is delivered to."""

    __slots__ = ("close", "conditional", "data", "owner")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False
        self.owner: PublicProtocol | None = None
        self.conditional: tuple[bytes | None, bytes | None] = (None, None)

    def __call__(self, answer: Answer) -> None:
        owner = self.owner
        assert owner is not None
        try:
            self.data = owner.fp.render(answer, keep_alive=not self.close, conditional=self.conditional)
        except Exception:  # noqa: BLE001 - a bug must not leave the connection hanging
            _log.exception("error rendering an OCSP answer")
            body = UNSUCCESSFUL[ResponseStatus.INTERNAL_ERROR]
            self.data = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: %d\r\n"
                b"Cache-Control: no-store\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.close = True
        owner._flush()


class PublicProtocol(asyncio.Protocol):
    """One client connection on the public port (see the module docstring)."""

    __slots__ = (
        "_buf", "_closing", "_handing_off", "_last_active", "_paused", "_queue", "_request_started", "_stream",
        "_write_paused", "fp", "transport",
    )  # fmt: skip

    def __init__(self, fp: FastPath) -> None:
        self.fp = fp
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._queue: collections.deque[_Slot] = collections.deque()
        self._closing = False
        self._handing_off = False
        self._paused = False
        self._write_paused = False
        self._last_active = time.monotonic()
        self._request_started: float | None = None
        self._stream: tuple[int, int | None] | None = None  # (issuer id, Last-Event-ID) to subscribe

    # asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport  # type: ignore[assignment]
        self.fp.connections.add(self)
        # Not yet a request: a connection that has sent nothing is idle (keepalive_timeout),
        # as client pools open them before use. The head timeout runs from a request's first byte.
        self._last_active = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fp.connections.discard(self)
        self._closing = True
        self._queue.clear()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._maybe_resume()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_active = time.monotonic()
        if self._request_started is None:
            self._request_started = self._last_active
        self._buf += data
        try:
            self._process()
        except Exception:  # noqa: BLE001 - never let one client's bytes take the worker down
            _log.exception("unexpected error on an OCSP connection; closing it")
            self.close()

    # Helpers --------------------------------------------------------------------------

    def close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        if self._closing or self._handing_off:
            return
        if self._request_started is not None and now - self._request_started > self.fp.head_timeout:
            self.fp.stats["timeouts"] += 1
            if self._buf:
                self._fail(b"408 Request Timeout", b"request not received in time\n")
            else:
                self.close()
        elif not self._queue and now - self._last_active > self.fp.keepalive_timeout:
            self.close()

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if self._paused and not self._write_paused and len(self._queue) < 8 and not self._closing:
            self._paused = False
            assert self.transport is not None
            self.transport.resume_reading()
            if self._buf:
                self._process()

    def _send(self, data: bytes, close: bool) -> None:
        """Send now if nothing is queued ahead, else queue in order."""
        if self._queue:
            slot = _Slot()
            slot.data, slot.close = data, close
            self._queue.append(slot)
            return
        assert self.transport is not None
        self.transport.write(data)
        if close:
            self.close()

    def _fail(self, status: bytes, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        """Answer a request we will not serve, then close: its framing may be untrustworthy."""
        self.fp.stats["rejected"] += 1
        self._buf.clear()
        self._send(_error(status, body, self.fp.date.now(self.fp.clock()), content_type), True)
        self._closing = True

    def _flush(self) -> None:
        queue = self._queue
        transport = self.transport
        while queue and queue[0].data is not None:
            slot = queue.popleft()
            if transport is None or transport.is_closing():
                queue.clear()
                return
            transport.write(slot.data)  # type: ignore[arg-type]
            if slot.close:
                queue.clear()
                self.close()
                return
        if not queue and self._handing_off:
            self._hand_off()
        else:
            self._maybe_resume()

    # Requests ---------------------------------------------------------------------------

    def _process(self) -> None:
        buf = self._buf
        while buf and not self._closing and not self._handing_off and not self._paused:
            if buf.startswith(b"\r\n"):
                del buf[:2]  # RFC 9112 2.2: ignore empty lines before a request line
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._fail(b"431 Request Header Fields Too Large", b"request head too large\n")
                return
            if end > MAX_HEAD:
                self._fail(b"431 Request Header Fields Too Large", b"request head too large\n")
                return
            head = bytes(buf[:end])
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            parts = request_line.split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self._fail(b"400 Bad Request", b"malformed request line\n")
                return
            method, target, version = parts
            path = target
            if path.startswith((b"http://", b"https://")):  # absolute-form (RFC 9112 3.2.2)
                slash = path.find(b"/", path.find(b"//") + 2)
                path = path[slash:] if slash >= 0 else b"/"
            trimmed = path.lstrip(b"/")
            stream = None
            if not (trimmed == b"ocsp" or trimmed.startswith((b"ocsp/", b"ocsp?"))):
                stream = _STREAM_PATH.match(trimmed) if self.fp.streams is not None else None
                if stream is None:
                    self._start_hand_off()
                    return
            # Header look-ups by search over the lower-cased head instead of a dict of
            # every header: a few C-level scans instead of a Python loop per line. One
            # regular expression first checks that every line is "token:" something
            # (RFC 9112 5.1: no space before the colon, no obsolete folding that could
            # hide a header), so the searches below cannot be fooled. Framing headers
            # get extra care (request smuggling): Transfer-Encoding is refused, and
            # Content-Length and Host must appear at most once.
            if line_end >= 0 and _BAD_HEADER_LINE.search(head, line_end):
                self._fail(b"400 Bad Request", b"malformed header line\n")
                return
            lower = head.lower()
            if b"\r\ntransfer-encoding:" in lower:
                self._fail(b"411 Length Required", b"send OCSP requests with a Content-Length\n")
                return
            hosts = lower.count(b"\r\nhost:")
            if hosts > 1 or (hosts == 0 and version == b"HTTP/1.1"):
                self._fail(b"400 Bad Request", b"exactly one Host header, please (RFC 9112 3.2)\n")
                return
            mentions = lower.count(b"\r\ncontent-length:")
            if mentions:
                length_text = _header(head, lower, b"\r\ncontent-length:")
                if mentions > 1 or length_text is None:
                    self._fail(b"400 Bad Request", b"bad or duplicate Content-Length\n")
                    return
            else:
                length_text = b"0"
            if not length_text.isdigit() or len(length_text) > 9:
                self._fail(b"400 Bad Request", b"bad Content-Length\n")
                return
            length = int(length_text)
            if length > MAX_BODY:
                self._fail(b"413 Content Too Large", b"OCSP requests are small; this one is not\n")
                return
            if len(buf) < end + 4 + length:
                if len(buf) == end + 4 and (_header(head, lower, b"\r\nexpect:") or b"").lower() == b"100-continue":
                    assert self.transport is not None
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return  # wait for the rest of the body
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            self._request_started = None if not buf else time.monotonic()
            connection = (_header(head, lower, b"\r\nconnection:") or b"").lower()
            keep_alive = (b"close" not in connection) if version == b"HTTP/1.1" else (b"keep-alive" in connection)
            if stream is not None:
                self._subscribe(method, stream.group(1).decode(), head, lower, body, version)
                return
            self._dispatch(method, trimmed, head, lower, body, keep_alive)
            if len(self._queue) > 32:
                self._pause()

    def _dispatch(self, method: bytes, path: bytes, head: bytes, lower: bytes, body: bytes, keep_alive: bool) -> None:
        fp = self.fp
        if method == b"GET":
            encoded = path[5:].split(b"?", 1)[0] if path.startswith(b"ocsp/") else b""
            if not encoded.strip(b"/"):
                self._malformed(keep_alive)
                return
            raw, from_get = encoded, True
        elif method == b"POST":
            ctype = (_header(head, lower, b"\r\ncontent-type:") or b"").split(b";", 1)[0].strip().lower()
            if ctype != b"application/ocsp-request":
                self._fail(b"415 Unsupported Media Type", b"POST application/ocsp-request (RFC 6960 A.1)\n")
                return
            if not body:
                self._malformed(keep_alive)
                return
            raw, from_get = body, False
        else:
            self._fail(b"405 Method Not Allowed\r\nAllow: GET, POST", b"use GET or POST for OCSP\n")
            return
        try:
            query = fp.query(raw, from_get=from_get)
        except MalformedRequest:
            self._malformed(keep_alive)
            return
        if from_get and b"\r\nif-" in lower:
            conditional = (_header(head, lower, b"\r\nif-none-match:"), _header(head, lower, b"\r\nif-modified-since:"))
        else:
            conditional = (None, None)
        answer = fp.source.cached(query)
        if answer is not None:
            fp.stats["fast"] += 1
        else:
            slot = _Slot()
            slot.close, slot.owner, slot.conditional = not keep_alive, self, conditional
            answer = fp.source.answer_soon(query, slot)
            if answer is None:  # the slot is called with it
                self._queue.append(slot)
                return
        self._send(fp.render(answer, keep_alive=keep_alive, conditional=conditional), not keep_alive)

    def _malformed(self, keep_alive: bool) -> None:
        # RFC 6960 2.3: malformedRequest. HTTP 400 too, so caches and logs see the error.
        self.fp.stats["malformed"] += 1
        date = self.fp.date.now(self.fp.clock())
        self._send(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/ocsp-response\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\nDate: %s\r\n%s\r\n%s"
            % (len(_MALFORMED), date, b"" if keep_alive else b"Connection: close\r\n", _MALFORMED),
            not keep_alive,
        )

    # The CRL push stream ----------------------------------------------------------------

    def _subscribe(self, method: bytes, name: str, head: bytes, lower: bytes, body: bytes, version: bytes) -> None:
        hub = self.fp.streams
        assert hub is not None
        if method != b"GET":
            # A HEAD response carries no body (RFC 9110 9.3.2).
            body = b"" if method == b"HEAD" else b"the CRL stream is read with GET\n"
            self._fail(b"405 Method Not Allowed\r\nAllow: GET", body)
            return
        if body:
            self._fail(b"400 Bad Request", b"a stream request has no body\n")
            return
        if version != b"HTTP/1.1":
            self._fail(b"505 HTTP Version Not Supported", b"the CRL stream needs HTTP/1.1 (chunked transfer)\n")
            return
        issuer = hub.source.issuers.get(name)
        if issuer is None:
            self._fail(b"404 Not Found", b"no CA named %s\n" % name.encode())
            return
        try:
            last = parse_last_event_id(_header(head, lower, b"\r\nlast-event-id:"))
        except BadLastEventID as e:
            self._fail(b"400 Bad Request", str(e).encode() + b"\n")
            return
        self.fp.stats["streams"] += 1
        self._stream = (issuer.id, last)
        self._handing_off = True
        if not self._queue:
            self._hand_off()

    def _become_subscriber(self, transport: asyncio.Transport) -> None:
        hub = self.fp.streams
        assert hub is not None and self._stream is not None
        issuer_id, last = self._stream
        issuer = next((i for i in hub.source.issuers.values() if i.id == issuer_id), None)
        if issuer is None:  # pragma: no cover - the table changed between two lines
            transport.close()
            return
        transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-store\r\n"
            b"X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\nDate: %s\r\n\r\n"
            % self.fp.date.now(self.fp.clock())
        )
        sub = RawSubscriber(hub, issuer_id, transport)
        transport.set_protocol(sub)
        asyncio.get_running_loop().create_task(hub.join(sub, issuer, last))

    # Hand-off to aiohttp ----------------------------------------------------------------

    def _start_hand_off(self) -> None:
        if self.fp.handoff is None:
            self._fail(b"404 Not Found", b"not found\n")
            return
        self._handing_off = True
        if not self._queue:
            self._hand_off()

    def _hand_off(self) -> None:
        assert self.transport is not None
        self.fp.connections.discard(self)
        transport = self.transport
        if transport.is_closing():
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._stream is not None:
            self.transport = None
            self._closing = True
            self._buf.clear()
            self._become_subscriber(transport)
            return
        assert self.fp.handoff is not None
        self.fp.stats["handed_off"] += 1
        protocol = self.fp.handoff()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        self.transport = None
        self._closing = True
        if data:
            protocol.data_received(data)
