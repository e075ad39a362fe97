"""The admin HTTP API (default port 8081, never the public port): authenticated, role-checked,
RFC 9457 errors.

Every route needs a credential: a bearer token (``Authorization: Bearer cst_<id>_<secret>``,
from ``certstatus admin token create``), or, when the API is served over TLS, a client
certificate issued by this CA and registered with ``certstatus admin cert create``. The
credential's role decides what it may do (:data:`ca_core.tokens.PERMISSIONS`); the audit
log names it (``token:<name>`` or ``cert:<name>``). A client certificate is checked against
the database at every request: revoking or suspending it, or withdrawing its registration,
shuts its holder out at once.

Failures are ``application/problem+json`` with a stable ``type``
(``urn:certstatus:problem:<slug>``): validation, not-found, illegal-transition, conflict,
unauthorized, forbidden, rate-limited, unavailable, internal. Failed authentication is
rate-limited per client address. Bodies are capped at 64 KiB (2 MiB for a batch), must be
JSON objects, and unknown fields are refused. Handlers are thin: parse, call
:class:`ca_core.lifecycle.CertificateAuthority`, render.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import asyncpg
import orjson
from aiohttp import web
from cryptography import x509

from ca_core.clock import Clock
from ca_core.errors import (
    CAError,
    ConfigurationError,
    IdempotencyConflict,
    IllegalTransition,
    IssuerUnavailable,
    NotFound,
    StorageError,
    ValidationError,
)
from ca_core.lifecycle import CertificateAuthority, Revocation, certificate_pem
from ca_core.model import CertStatus, KeyType, parse_serial, parse_time
from ca_core.pkcs8 import encrypt_private_key
from ca_core.profiles import CITIZEN_PROFILES, HolderSubject
from ca_core.storage import postgres as db
from ca_core.tokens import PERMISSIONS, Action, Role, Unauthorized, parse_token, verify_secret

__all__ = ["Forbidden", "admin_ssl_context", "build_admin_app", "openapi_document"]

_log = logging.getLogger(__name__)

MAX_BODY: Final = 64 * 1024
#: A batch of 10,000 revocations is about 800 KB of JSON.
MAX_BATCH_BODY: Final = 2 * 1024 * 1024
PROBLEM: Final = "application/problem+json"
CA = web.AppKey("ca", CertificateAuthority)
POOL = web.AppKey("pool", asyncpg.Pool)
CLOCK = web.AppKey("clock", Clock)
#: DER subject of each issuer's CA certificate → issuer id, for client certificates.
ISSUERS_BY_SUBJECT = web.AppKey("issuers_by_subject", dict)
ALLOW_GENERATED_KEYS = web.AppKey("allow_generated_keys", bool)


class Forbidden(CAError):
    """Authenticated, but the role may not do this."""

    code = "forbidden"


class RateLimited(CAError):
    code = "rate-limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def problem(status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": f"urn:certstatus:problem:{slug}", "title": title, "status": status, "detail": detail}
    return web.Response(status=status, body=orjson.dumps(body), content_type=PROBLEM, headers=headers)


# (class, HTTP status, slug, title), most specific first.
_ERRORS: Final[list[tuple[type[CAError], int, str, str]]] = [
    (Unauthorized, 401, "unauthorized", "Authentication required"),
    (Forbidden, 403, "forbidden", "Not allowed for this role"),
    (RateLimited, 429, "rate-limited", "Too many failed attempts"),
    (ValidationError, 400, "validation", "Invalid request"),
    (NotFound, 404, "not-found", "Not found"),
    (IllegalTransition, 409, "illegal-transition", "Not possible in the certificate's state"),
    (IdempotencyConflict, 409, "conflict", "Conflicting request"),
    (IssuerUnavailable, 409, "illegal-transition", "The issuer cannot sign"),
    (StorageError, 503, "unavailable", "Storage unavailable"),
]


class FailureLimiter:
    """Failed authentications per client address: more than ``limit`` within ``window``
    seconds and that address is refused (429) until the window has passed."""

    def __init__(self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, client: str) -> collections.deque[float]:
        q = self._failures.get(client)
        if q is None:
            return collections.deque()
        cutoff = self.clock() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        if not q:
            del self._failures[client]
        return q

    def blocked(self, client: str) -> float | None:
        """Seconds until the address may try again, or None."""
        q = self._recent(client)
        if len(q) >= self.limit:
            return max(1.0, q[0] + self.window - self.clock())
        return None

    def failed(self, client: str) -> None:
        if len(self._failures) > 100_000:  # a flood of addresses: forget the oldest
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(client, collections.deque()).append(self.clock())


LIMITER = web.AppKey("limiter", FailureLimiter)
ACTOR = web.RequestKey("actor", str)
ROLE = web.RequestKey("role", Role)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure as problem+json; never a traceback."""
    try:
        return await handler(request)
    except CAError as e:
        status, slug, title, detail = problem_fields(e)
        headers = {"WWW-Authenticate": 'Bearer realm="certstatus-admin"'} if status == 401 else None
        if isinstance(e, RateLimited):
            headers = {"Retry-After": str(e.retry_after)}
        return problem(status, slug, title, detail, headers)
    except web.HTTPException as e:
        if e.status == 405:
            return problem(405, "method-not-allowed", "Method not allowed", f"{request.method} is not allowed here",
                           {"Allow": e.headers.get("Allow", "")})  # fmt: skip
        if e.status == 413:
            return problem(413, "validation", "Request too large",
                           f"request bodies are limited to {MAX_BODY} bytes ({MAX_BATCH_BODY} for a batch)")  # fmt: skip
        return problem(e.status, "not-found" if e.status == 404 else "http", e.reason, e.text or e.reason)
    except Exception:
        _log.exception("admin API: unexpected error in %s %s", request.method, request.path)
        return problem(500, "internal", "Internal error", "the request could not be completed; it was logged")


def problem_fields(e: CAError) -> tuple[int, str, str, str]:
    """(status, slug, title, detail) of a refusal. A storage failure's own text (server
    messages, socket paths) goes to the log, not to the client."""
    for cls, status, slug, title in _ERRORS:
        if isinstance(e, cls):
            if isinstance(e, StorageError):
                _log.warning("admin API: %s", e)
                return status, slug, title, "the database is unreachable or refused the operation (logged); retry later"
            return status, slug, title, e.args[0] if e.args else title
    _log.warning("admin API: %s", e)
    return 400, "validation", "Invalid request", str(e)


def _client(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return str(peer[0]) if peer else "unknown"


@web.middleware
async def authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A credential (bearer token, else a TLS client certificate) → actor and role on the
    request, for every route."""
    limiter = request.app[LIMITER]
    client = _client(request)
    wait = limiter.blocked(client)
    if wait is not None:
        raise RateLimited("too many failed authentications from this address; try again later", int(wait) + 1)
    header = request.headers.get("Authorization")
    try:
        if header is None and _peer_certificate(request) is not None:
            actor, role = await _certificate_credential(request)
        else:
            actor, role = await _token_credential(request, header or "")
    except Unauthorized:
        limiter.failed(client)
        raise
    request[ACTOR] = actor
    request[ROLE] = role
    if any("\x00" in k or "\x00" in v for k, v in request.query.items()):
        raise ValidationError("a query parameter contains a NUL character")
    return await handler(request)


async def _token_credential(request: web.Request, header: str) -> tuple[str, Role]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "send 'Authorization: Bearer <token>' (create one with 'certstatus admin token create'), "
            "or connect over TLS with a registered client certificate"
        )
    parts = parse_token(value)
    async with _connection(request, "check a token") as conn:
        row = await db.get_token(conn, parts.token_id)
        if row is None or row.revoked_at is not None or not verify_secret(parts.secret, row.secret_hash):
            raise Unauthorized("the token is unknown, revoked or wrong")
        await db.touch_token(conn, row.id, request.app[CLOCK].now())
    return f"token:{row.name}", Role(row.role)


@contextlib.asynccontextmanager
async def _connection(request: web.Request, what: str) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection whose failures are StorageError (503), like the lifecycle's."""
    with db.storage_errors(what):
        async with request.app[POOL].acquire() as conn:
            yield conn


def _peer_certificate(request: web.Request) -> bytes | None:
    """The DER of the client certificate the TLS handshake verified, if any."""
    if request.transport is None:
        return None
    tls = request.transport.get_extra_info("ssl_object")
    if not isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
        return None
    return tls.getpeercert(binary_form=True)


async def _certificate_credential(request: web.Request) -> tuple[str, Role]:
    """The TLS layer proved the client holds the key of a certificate chaining to this CA;
    this decides whether that certificate is an admin credential, now."""
    der = _peer_certificate(request)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    issuers = request.app[ISSUERS_BY_SUBJECT]
    async with _connection(request, "check a client certificate") as conn:
        issuer_key = cert.issuer.public_bytes()
        if issuer_key not in issuers:  # an issuer created since the server started
            issuers.clear()
            issuers.update(await db.issuer_ids_by_subject(conn))
        issuer_id = issuers.get(issuer_key)
        row = await db.find_client_cert(conn, issuer_id, cert.serial_number) if issuer_id is not None else None
        now = request.app[CLOCK].now()
        if row is None or row.der != der:
            raise Unauthorized("this client certificate is not registered for the admin API "
                               "('certstatus admin cert create' registers one)")  # fmt: skip
        if row.revoked_at is not None:
            raise Unauthorized(f"the client certificate credential {row.name!r} was withdrawn")
        if row.status != CertStatus.GOOD.value:
            raise Unauthorized(f"the client certificate of {row.name!r} is {row.status}")
        if row.not_after <= now:
            raise Unauthorized(f"the client certificate of {row.name!r} has expired")
        await db.touch_client_cert(conn, row.id, now)
    return f"cert:{row.name}", Role(row.role)


def _require(request: web.Request, action: Action, query: frozenset[str] = frozenset()) -> str:
    """The actor, if its role may do ``action``; also refuses query parameters the route does
    not take (``POST .../revoke?reason=keyCompromise`` must not revoke as unspecified)."""
    role = request[ROLE]
    if action not in PERMISSIONS[role]:
        raise Forbidden(f"the {role.value} role may not {action.value}")
    unknown = sorted(set(request.query) - query)
    if unknown:
        raise ValidationError(f"unknown query parameter(s) {', '.join(unknown)}"
                              + (f"; allowed: {', '.join(sorted(query))}" if query else "; this route takes none"))  # fmt: skip
    return request[ACTOR]


async def _body(request: web.Request, allowed: set[str], limit: int = MAX_BODY) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = await request.read()
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise ValidationError("send the request body as application/json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValidationError(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    if _has_nul(data):
        raise ValidationError("the body contains a NUL character (\\u0000), which no field may hold")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed)) or 'none'}")
    return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _idempotency_key(request: web.Request) -> str | None:
    return request.headers.get("Idempotency-Key")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


# Handlers ---------------------------------------------------------------------------------


async def list_issuers(request: web.Request) -> web.Response:
    _require(request, Action.READ)
    async with _connection(request, "list the issuers") as conn:
        issuers = await db.list_issuers(conn)
    out = []
    for i in issuers:
        cert = x509.load_der_x509_certificate(i.certificate)
        out.append({"name": i.name, "kind": i.kind, "subject": cert.subject.rfc4514_string(),
                    "not_after": cert.not_valid_after_utc.isoformat(), "crl_partitions": i.crl_partitions})  # fmt: skip
    return _json({"issuers": out})


async def get_certificate(request: web.Request) -> web.Response:
    _require(request, Action.READ)
    record = await request.app[CA].get(request.match_info["issuer"], request.match_info["serial"])
    return _json(record.to_json())


def _time(value: Any, field: str) -> dt.datetime:
    return parse_time(value, field)


async def revoke(request: web.Request) -> web.Response:
    actor = _require(request, Action.REVOKE)
    body = await _body(request, {"reason", "invalidity_date"})
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str | int):
        raise ValidationError("reason must be an RFC 5280 reason name (e.g. keyCompromise) or code")
    invalidity = _time(body["invalidity_date"], "invalidity_date") if body.get("invalidity_date") is not None else None
    record = await request.app[CA].revoke(
        request.match_info["issuer"], request.match_info["serial"], actor=actor, reason=reason,
        invalidity_date=invalidity, idempotency_key=_idempotency_key(request), profiles=API_PROFILES,
    )  # fmt: skip
    return _json(record.to_json())


async def suspend(request: web.Request) -> web.Response:
    actor = _require(request, Action.SUSPEND)
    await _body(request, set())
    record = await request.app[CA].suspend(request.match_info["issuer"], request.match_info["serial"], actor=actor,
                                           idempotency_key=_idempotency_key(request), profiles=API_PROFILES)  # fmt: skip
    return _json(record.to_json())


async def resume(request: web.Request) -> web.Response:
    actor = _require(request, Action.RESUME)
    await _body(request, set())
    record = await request.app[CA].resume(request.match_info["issuer"], request.match_info["serial"], actor=actor,
                                          idempotency_key=_idempotency_key(request), profiles=API_PROFILES)  # fmt: skip
    return _json(record.to_json())


def _cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


#: What each cursor field's column can hold (smallint issuer ids, bigint audit ids, 20-octet serials).
_CURSOR_LIMITS: Final = {"issuer_id": 2**15, "id": 2**63, "serial": 2**160}
_DIGITS = re.compile(r"[0-9]+")


def _read_cursor(request: web.Request, keys: set[str]) -> dict[str, int] | None:
    """A cursor handed out with a previous page: non-negative integers (serials in hex)."""
    text = request.query.get("cursor")
    if not text:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(data, dict) or set(data) != keys:
            raise ValueError
        out = {k: int(v, 16) if k == "serial" else v for k, v in data.items()}
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _CURSOR_LIMITS[k] for k, v in out.items()):
            raise ValueError
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationError("cursor is not one this API handed out") from None
    return out


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "100")
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= 1000:
        raise ValidationError("limit must be a whole number from 1 to 1000")
    return int(text)


async def _issuer_id(conn: asyncpg.Connection, name: str) -> int:
    row = await db.get_issuer(conn, name)
    if row is None:
        raise NotFound(f"no issuer named {name!r}")
    return row.id


async def list_certificates(request: web.Request) -> web.Response:
    """``GET /v1/certificates?holder=&issuer=&status=&limit=&cursor=``, in (issuer, serial) order."""
    _require(request, Action.READ, frozenset({"holder", "issuer", "status", "cursor", "limit"}))
    q = request.query
    status = None
    if "status" in q:
        try:
            status = CertStatus(q["status"])
        except ValueError:
            raise ValidationError(f"status must be one of {', '.join(s.value for s in CertStatus)}") from None
    holder = q.get("holder")
    if holder is not None and not (len(holder) == 16 and _DIGITS.fullmatch(holder)):
        raise ValidationError("holder must be a 16-digit holder number")
    after = _read_cursor(request, {"issuer_id", "serial"})
    limit = _limit(request)
    async with _connection(request, "search certificates") as conn:
        issuer_id = await _issuer_id(conn, q["issuer"]) if "issuer" in q else None
        # One row more than the page: a cursor only when there is a next page to read.
        records = await db.find_certificates(conn, holder_id=holder, issuer_id=issuer_id, status=status,
                                             limit=limit + 1,
                                             after=(after["issuer_id"], after["serial"]) if after else None)  # fmt: skip
        ids = {i.name: i.id for i in await db.list_issuers(conn)}
    next_cursor = None
    if len(records) > limit:
        records = records[:limit]
        last = records[-1]
        next_cursor = _cursor({"issuer_id": ids[last.issuer], "serial": format(last.serial, "X")})
    return _json({"certificates": [r.to_json() for r in records], "next_cursor": next_cursor})


async def list_audit(request: web.Request) -> web.Response:
    """``GET /v1/audit?actor=&issuer=&serial=&since=&until=&limit=&cursor=``, oldest first."""
    _require(request, Action.READ, frozenset({"actor", "issuer", "serial", "since", "until", "cursor", "limit"}))
    q = request.query
    serial = parse_serial(q["serial"]) if "serial" in q else None
    after = _read_cursor(request, {"id"})
    limit = _limit(request)
    since = _time(q["since"], "since") if "since" in q else None
    until = _time(q["until"], "until") if "until" in q else None
    async with _connection(request, "read the audit log") as conn:
        issuer_id = await _issuer_id(conn, q["issuer"]) if "issuer" in q else None
        entries = await db.list_audit(conn, issuer_id=issuer_id, serial=serial, actor=q.get("actor"), since=since,
                                      until=until, limit=limit + 1, after_id=after["id"] if after else None)  # fmt: skip
    next_cursor = None
    if len(entries) > limit:
        entries = entries[:limit]
        next_cursor = _cursor({"id": entries[-1].id})
    return _json({"entries": [e.to_json() for e in entries], "next_cursor": next_cursor})


async def issue(request: web.Request) -> web.Response:
    """``POST /v1/certificates``: issue a citizen certificate from a PKCS#10 CSR (PEM), or,
    only where ``CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS`` is on, for a key generated here
    (``generate_key``), returned once, encrypted under the caller's ``key_passphrase``."""
    actor = _require(request, Action.ISSUE)
    body = await _body(request, {"issuer", "profile", "csr", "email", "validity_days", "generate_key", "holder",
                                 "key_passphrase"})  # fmt: skip
    for field in ("issuer", "profile"):
        if not isinstance(body.get(field), str) or not body[field].strip():
            raise ValidationError(f"{field} is required (a string)")
    if body["profile"] not in CITIZEN_PROFILES:
        raise ValidationError(f"profile must be one of {', '.join(sorted(CITIZEN_PROFILES))}; "
                              "admin credentials are issued with 'certstatus admin cert create'")  # fmt: skip
    email = body.get("email")
    if email is not None and not isinstance(email, str):
        raise ValidationError("email must be a string")
    validity = None
    if body.get("validity_days") is not None:
        days = body["validity_days"]
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 20 * 366:
            raise ValidationError("validity_days must be a whole number of days from 1 to 7320")
        validity = dt.timedelta(days=days)
    if "generate_key" not in body:
        if not isinstance(body.get("csr"), str) or not body["csr"].strip():
            raise ValidationError("csr is required (a PEM string), unless generate_key is given")
        for field in ("holder", "key_passphrase"):
            if field in body:
                raise ValidationError(f"{field} goes with generate_key; with a CSR the subject comes from the CSR")
        record = await request.app[CA].issue(issuer=body["issuer"], profile=body["profile"], actor=actor,
                                             csr=body["csr"].encode(), email=email, validity=validity,
                                             idempotency_key=_idempotency_key(request))  # fmt: skip
        out = record.to_json()
        out["certificate_pem"] = certificate_pem(record)
        return _json(out, status=201)
    return await _issue_generated(request, body, actor, email, validity)


MIN_KEY_PASSPHRASE: Final = 12


async def _issue_generated(
    request: web.Request, body: dict[str, Any], actor: str, email: str | None, validity: dt.timedelta | None
) -> web.Response:
    if not request.app[ALLOW_GENERATED_KEYS]:
        raise Forbidden("this CA does not generate subjects' keys (CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS is off): "
                        "send a CSR made where the key will live")  # fmt: skip
    if "csr" in body:
        raise ValidationError("give either csr or generate_key, not both")
    if _idempotency_key(request) is not None:
        raise ValidationError("Idempotency-Key cannot be used with generate_key: each call makes a new key")
    spec = body["generate_key"]
    if not isinstance(spec, dict) or set(spec) - {"key_type"}:
        raise ValidationError('generate_key must be an object like {"key_type": "ec-p256"}')
    key_type = spec.get("key_type", KeyType.EC_P256.value)
    if not isinstance(key_type, str):
        raise ValidationError("generate_key.key_type must be a string")
    holder = body.get("holder")
    if not isinstance(holder, dict) or set(holder) - {"name", "id"} or not all(
        isinstance(holder.get(k), str) for k in ("name", "id")
    ):
        raise ValidationError('holder must be {"name": <CN>, "id": <16-digit holder number>}')
    passphrase = body.get("key_passphrase")
    if not isinstance(passphrase, str) or len(passphrase) < MIN_KEY_PASSPHRASE or len(passphrase) > 1024:
        raise ValidationError(f"key_passphrase (at least {MIN_KEY_PASSPHRASE} characters) is required: "
                              "the generated key is returned encrypted under it")  # fmt: skip
    record, key = await request.app[CA].issue_with_generated_key(
        issuer=body["issuer"], profile=body["profile"], actor=actor, key_type=KeyType.parse(key_type),
        subject=HolderSubject(holder["name"], holder["id"], email), validity=validity)  # fmt: skip
    out = record.to_json()
    out["certificate_pem"] = certificate_pem(record)
    out["private_key_pem"] = (await asyncio.to_thread(encrypt_private_key, key, passphrase.encode())).decode()
    return web.Response(status=201, body=orjson.dumps(out), content_type="application/json",
                        headers={"Cache-Control": "no-store"})  # fmt: skip


MAX_BATCH: Final = 10_000


async def revoke_batch(request: web.Request) -> web.Response:
    """``POST /v1/revocations:batch``: revoke a batch of cards' certificates.

    Body ``{"items": [{"issuer", "serial", "reason"?, "invalidity_date"?}, ...], "reason"?}``
    (up to 10,000; an item's reason wins over the batch's). Items are revoked by
    :meth:`CertificateAuthority.revoke_many` (chunks of 1,000, one transaction each), and each
    succeeds or fails on its own, so the answer says exactly which were revoked and which
    failed and why (a problem object per failure); repeating the batch is safe:
    with an Idempotency-Key, each item's key is ``<key>/<index>``, so a repeat replays the
    items that were done and retries the ones that failed."""
    actor = _require(request, Action.REVOKE)
    body = await _body(request, {"items", "reason"}, limit=MAX_BATCH_BODY)
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ValidationError(f"items must be a list of 1 to {MAX_BATCH} revocations")
    default_reason = body.get("reason")
    if default_reason is not None and (not isinstance(default_reason, str | int) or isinstance(default_reason, bool)):
        raise ValidationError("reason must be a reason name or code")
    parsed: list[tuple[str, str, Any, dt.datetime | None]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError(f"items[{i}] must be an object")
        unknown = sorted(set(item) - {"issuer", "serial", "reason", "invalidity_date"})
        if unknown:
            raise ValidationError(f"items[{i}]: unknown field(s) {', '.join(unknown)}")
        if not isinstance(item.get("issuer"), str) or not isinstance(item.get("serial"), str):
            raise ValidationError(f"items[{i}] needs issuer and serial (strings)")
        reason = item.get("reason", default_reason)
        if reason is not None and not isinstance(reason, str | int):
            raise ValidationError(f"items[{i}].reason must be a reason name or code")
        when = _time(item["invalidity_date"], f"items[{i}].invalidity_date") if item.get("invalidity_date") is not None else None
        parsed.append((item["issuer"], item["serial"], reason, when))
    outcomes = await request.app[CA].revoke_many(
        [Revocation(issuer, serial, reason, when) for issuer, serial, reason, when in parsed],
        actor=actor, idempotency_key=_idempotency_key(request), profiles=API_PROFILES)  # fmt: skip
    results: list[dict[str, Any]] = []
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, CAError):
            status, slug, title, detail = problem_fields(outcome)
            results.append({"index": i, "ok": False, "problem": {
                "type": f"urn:certstatus:problem:{slug}", "title": title, "status": status, "detail": detail}})  # fmt: skip
        else:
            results.append({"index": i, "ok": True, "certificate": outcome.to_json()})
    failed = sum(1 for r in results if not r["ok"])
    return _json({"revoked": len(results) - failed, "failed": failed, "results": results},
                 status=200 if not failed else 207)  # fmt: skip


async def openapi(request: web.Request) -> web.Response:
    _require(request, Action.READ)
    return _json(openapi_document())


# Any segment: a malformed serial is a 400 naming it, an unknown issuer a 404 naming it
# (the lifecycle's checks), not the router's bare 404.
_ISSUER = "{issuer}"
_SERIAL = "{serial}"
#: What the admin API may change: citizens' certificates. CA-side certificates belong to the CA
#: host, and admin client certificates to 'certstatus admin cert' (else a registration
#: officer could resume an operator's suspended credential).
API_PROFILES: Final = CITIZEN_PROFILES


def build_admin_app(
    pool: asyncpg.Pool,
    ca: CertificateAuthority,
    clock: Clock,
    *,
    limiter: FailureLimiter | None = None,
    allow_generated_keys: bool = False,
) -> web.Application:
    app = web.Application(middlewares=[errors, authenticate], client_max_size=MAX_BATCH_BODY)
    app[POOL] = pool
    app[ISSUERS_BY_SUBJECT] = {}
    app[ALLOW_GENERATED_KEYS] = allow_generated_keys
    app[CA] = ca
    app[CLOCK] = clock
    app[LIMITER] = limiter or FailureLimiter()
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/issuers", list_issuers)
    app.router.add_get("/v1/certificates", list_certificates)
    app.router.add_post("/v1/certificates", issue)
    app.router.add_get("/v1/audit", list_audit)
    app.router.add_post("/v1/revocations:batch", revoke_batch)
    app.router.add_get(f"/v1/certificates/{_ISSUER}/{_SERIAL}", get_certificate)
    app.router.add_post(f"/v1/certificates/{_ISSUER}/{_SERIAL}/revoke", revoke)
    app.router.add_post(f"/v1/certificates/{_ISSUER}/{_SERIAL}/suspend", suspend)
    app.router.add_post(f"/v1/certificates/{_ISSUER}/{_SERIAL}/resume", resume)
    return app


def admin_ssl_context(cert_file: str, key_file: str, key_password: bytes | None, trust: list[bytes]) -> ssl.SSLContext:
    """Server TLS for the admin port: TLS 1.2+, the server's certificate and key (the key
    may be encrypted under ``key_password``), and client certificates requested (not
    required: tokens still work) and verified against this CA's certificates (``trust``,
    DER), so only a certificate this CA issued gets past the handshake."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert_file, key_file, password=key_password)
    except (OSError, ssl.SSLError) as e:
        raise ConfigurationError(f"cannot load the admin TLS certificate {cert_file} and key {key_file}: {e}") from None
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=b"".join(trust))
    return ctx


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the routes above."""
    problem_ref = {"$ref": "#/components/responses/Problem"}
    errors_ = {code: problem_ref for code in ("400", "401", "403", "404", "405", "409", "413", "429", "500", "503")}
    cert = {"200": {"description": "the certificate record",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Certificate"}}}}}  # fmt: skip
    path_params = [
        {
            "name": "issuer",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}$"},
        },
        {
            "name": "serial",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^(0[xX])?[0-9A-Fa-f:]{1,80}$",
                       "description": "hexadecimal, as printed (50CDEC...), with colons or 0x also accepted"},
        },
    ]
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
    }
    empty = {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": False}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "certstatus admin API", "version": "1"},
        "security": [{"bearer": []}, {"clientCertificate": []}],
        "paths": {
            "/v1/issuers": {"get": {"summary": "the CAs", "responses": {"200": {"description": "issuers"}, **errors_}}},
            "/v1/certificates/{issuer}/{serial}": {
                "get": {"summary": "one certificate", "parameters": path_params, "responses": {**cert, **errors_}}
            },
            "/v1/certificates/{issuer}/{serial}/revoke": {"post": {
                "summary": "revoke (operator)", "parameters": [*path_params, idem],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"reason": {"type": ["string", "integer"]},
                                   "invalidity_date": {"type": "string", "format": "date-time"}}}}}},
                "responses": {**cert, **errors_}}},
            "/v1/certificates/{issuer}/{serial}/suspend": {"post": {
                "summary": "suspend: certificateHold (operator, registration officer)",
                "parameters": [*path_params, idem], "requestBody": empty, "responses": {**cert, **errors_}}},
            "/v1/certificates/{issuer}/{serial}/resume": {"post": {
                "summary": "resume a suspended certificate (operator, registration officer)",
                "parameters": [*path_params, idem], "requestBody": empty, "responses": {**cert, **errors_}}},
            "/v1/certificates": {
                "get": {"summary": "find certificates (cursor pagination)", "parameters": [
                    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                    for n in ("holder", "issuer", "status", "limit", "cursor")],
                    "responses": {"200": {"description": "a page of certificates and next_cursor", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CertificatePage"}}}}, **errors_}},
                "post": {"summary": "issue from a PKCS#10 CSR (operator, registration officer)", "parameters": [idem],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "required": ["issuer", "profile"],
                             "properties": {"issuer": {"type": "string"},
                                            "profile": {"type": "string", "enum": sorted(CITIZEN_PROFILES)},
                                            "csr": {"type": "string", "description": "PEM; the usual way"},
                                            "email": {"type": "string"},
                                            "validity_days": {"type": "integer", "minimum": 1, "maximum": 7320},
                                            "generate_key": {
                                                "type": "object", "additionalProperties": False,
                                                "description": "instead of csr, only where the CA allows it",
                                                "properties": {"key_type": {"type": "string", "enum": [
                                                    k.value for k in KeyType]}}},
                                            "holder": {"type": "object", "additionalProperties": False,
                                                       "required": ["name", "id"],
                                                       "properties": {"name": {"type": "string"},
                                                                      "id": {"type": "string",
                                                                             "pattern": "^[0-9]{16}$"}}},
                                            "key_passphrase": {"type": "string", "minLength": MIN_KEY_PASSPHRASE,
                                                               "maxLength": 1024}}}}}},
                         "responses": {"201": {"description": "the certificate, with its PEM", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Certificate"}}}}, **errors_}}},
            "/v1/audit": {"get": {"summary": "the audit log, oldest first (cursor pagination)", "parameters": [
                {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                for n in ("actor", "issuer", "serial", "since", "until", "limit", "cursor")],
                "responses": {"200": {"description": "a page of entries and next_cursor", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditPage"}}}}, **errors_}}},
            "/v1/revocations:batch": {"post": {
                "summary": "revoke up to 10,000 certificates (operator); 207 with a result per item if any failed",
                "parameters": [idem],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False, "required": ["items"],
                    "properties": {"reason": {"type": ["string", "integer"]}, "items": {
                        "type": "array", "minItems": 1, "maxItems": 10000, "items": {
                            "type": "object", "additionalProperties": False, "required": ["issuer", "serial"],
                            "properties": {"issuer": {"type": "string"}, "serial": {"type": "string"},
                                           "reason": {"type": ["string", "integer"]},
                                           "invalidity_date": {"type": "string", "format": "date-time"}}}}}}}}},
                "responses": {"200": {"description": "all revoked", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}}},
                              "207": {"description": "some failed: see results", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}}}, **errors_}}},
            "/v1/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "clientCertificate": {"type": "mutualTLS", "description":
                                    "a client certificate from this CA, registered with 'certstatus admin cert create'"}},
            "responses": {"Problem": {"description": "RFC 9457 problem details",
                                      "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}},
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status", "detail"],
                            "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                           "status": {"type": "integer"}, "detail": {"type": "string"}}},
                "Certificate": {"type": "object", "required": ["issuer", "serial", "status"], "properties": {
                    **{k: {"type": "string"} for k in ("issuer", "serial", "profile", "subject")},
                    "status": {"type": "string", "enum": [st.value for st in CertStatus]},
                    "crl_partition": {"type": "integer", "minimum": 0},
                    **{k: {"type": "string", "format": "date-time"} for k in (
                        "not_before", "not_after", "issued_at", "updated_at")},
                    **{k: {"type": ["string", "null"], "format": "date-time"} for k in (
                        "revoked_at", "invalidity_date")},
                    "holder_id": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
                    "certificate_pem": {"type": "string", "description": "issuance only"},
                    "private_key_pem": {"type": "string", "description": "generated keys only: encrypted PKCS#8"}}},
                "CertificatePage": {"type": "object", "required": ["certificates", "next_cursor"], "properties": {
                    "certificates": {"type": "array", "items": {"$ref": "#/components/schemas/Certificate"}},
                    "next_cursor": {"type": ["string", "null"]}}},
                "AuditEntry": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                    "actor": {"type": "string"}, "action": {"type": "string"},
                    "issuer": {"type": ["string", "null"]}, "serial": {"type": ["string", "null"]},
                    "before": {"type": ["object", "null"]}, "after": {"type": ["object", "null"]},
                    "idempotency_key": {"type": ["string", "null"]},
                    "chain_seq": {"type": "integer", "description": "position in the audit hash chain"},
                    "row_hash": {"type": "string", "description": "SHA-256 of the chain at this row, hex"}}},
                "AuditPage": {"type": "object", "required": ["entries", "next_cursor"], "properties": {
                    "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                    "next_cursor": {"type": ["string", "null"]}}},
                "BatchResult": {"type": "object", "required": ["revoked", "failed", "results"], "properties": {
                    "revoked": {"type": "integer"}, "failed": {"type": "integer"},
                    "results": {"type": "array", "items": {"type": "object", "required": ["index", "ok"], "properties": {
                        "index": {"type": "integer"}, "ok": {"type": "boolean"},
                        "certificate": {"$ref": "#/components/schemas/Certificate"},
                        "problem": {"$ref": "#/components/schemas/Problem"}}}}}},
            },
        },
    }  # fmt: skip
