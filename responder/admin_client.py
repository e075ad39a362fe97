"""A client for the admin HTTP API (:mod:`responder.admin`), one method per route.

:class:`AdminClient` speaks JSON over aiohttp to a running ``certstatus admin serve``. A
refusal by the API (any ``application/problem+json`` answer, RFC 9457) is raised as
:class:`AdminAPIError`, which carries the problem's fields; a server that cannot be reached
(refused connection, failed TLS handshake, no answer in time) as :class:`AdminUnreachable`.
The client never puts its credentials into a message: the bearer token goes only into the
``Authorization`` header of requests to the configured URL (redirects are not followed).

Credentials are a bearer token, a TLS client certificate (https only; see
:func:`tls_context`), or both. Without a token no ``Authorization`` header is sent.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from ca_core.errors import ConfigurationError, ValidationError
from ca_core.model import format_serial, parse_serial

__all__ = ["AdminAPIError", "AdminClient", "AdminUnreachable", "tls_context"]

PROBLEM: Final = "application/problem+json"
#: Seconds to wait for a TCP (and TLS) connection.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds to wait for an answer; a batch of 10,000 revocations gets longer.
READ_TIMEOUT: Final = 60.0
BATCH_READ_TIMEOUT: Final = 600.0


class AdminAPIError(Exception):
    """The admin API refused a request: the fields of its RFC 9457 problem document.

    ``slug`` is the last part of ``type`` (``urn:certstatus:problem:<slug>``), e.g.
    ``not-found`` or ``illegal-transition``; ``retry_after`` is set for 429 answers. An error
    answer that is not problem+json (a proxy's page, the public port by mistake) becomes a
    problem of type ``about:blank`` whose detail says so.
    """

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(f"{title}: {detail}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.extra = dict(extra or {})
        self.retry_after = retry_after

    @property
    def slug(self) -> str:
        return self.type.rpartition(":")[2] if self.type.startswith("urn:certstatus:problem:") else self.type

    @classmethod
    def from_problem(cls, status: int, body: Mapping[str, Any], retry_after: str | None = None) -> AdminAPIError:
        known = {"type", "title", "status", "detail"}
        return cls(
            int(body["status"]) if isinstance(body.get("status"), int) else status,
            str(body.get("type") or "about:blank"),
            str(body.get("title") or f"HTTP {status}"),
            str(body.get("detail") or ""),
            extra={k: v for k, v in body.items() if k not in known},
            retry_after=retry_after,
        )


class AdminUnreachable(Exception):
    """No answer from the admin API: refused or failed connection, TLS failure, timeout."""


#: The passphrase of an encrypted client key (as 'certstatus admin cert create' writes them).
KEY_PASSPHRASE_ENV = "CERTSTATUS_ADMIN_KEY_PASSPHRASE"


def tls_context(cacert: str | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client TLS context: server certificates checked against ``cacert`` (PEM file) or,
    without it, the system's trusted CAs; ``cert``/``key`` a client certificate and its
    private key (PEM; the key may be in the certificate file). Host names are checked."""
    if key is not None and cert is None:
        raise ConfigurationError("--key (CERTSTATUS_ADMIN_KEY) needs --cert (CERTSTATUS_ADMIN_CERT)")
    try:
        context = ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as e:
        raise ConfigurationError(f"cannot load the CA certificates in {cacert}: {_reason(e)}") from None
    if cert is not None:
        try:
            # An encrypted key is opened with CERTSTATUS_ADMIN_KEY_PASSPHRASE (the passphrase
            # 'admin cert create' wrote it under), never by a prompt OpenSSL would open itself.
            context.load_cert_chain(cert, key, password=_key_passphrase)
        except (OSError, ssl.SSLError) as e:
            names = f"{cert} and {key}" if key else cert
            raise ConfigurationError(f"cannot load the client certificate and key from {names}: {_reason(e)}") from None
    return context


def _key_passphrase() -> bytes:
    value = os.environ.get(KEY_PASSPHRASE_ENV)
    if value is None:
        raise ConfigurationError(f"the client key is encrypted: set {KEY_PASSPHRASE_ENV} to its passphrase")
    return value.encode()


def _reason(e: OSError | ssl.SSLError) -> str:
    if isinstance(e, ssl.SSLError):
        return str(e.reason or e)
    return e.strerror or str(e)


def _segment(text: str) -> str:
    # Every character that could change the path is escaped, dots included, and the URL
    # is sent as built (encoded=True), so '..' cannot climb to another route.
    return quote(text, safe="").replace(".", "%2E")


def _serial(serial: str | int) -> str:
    # The API's routes take plain hex; accept what the CA core does (colons, 0x, ints).
    return format_serial(parse_serial(serial))


class AdminClient:
    """The admin API at ``url`` (e.g. ``http://127.0.0.1:8081``; a path prefix is kept).

    Use as an async context manager; methods return the API's JSON (dicts, as documented in
    ``/v1/openapi.json``) and raise :class:`AdminAPIError` or :class:`AdminUnreachable`.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        base = URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigurationError(f"the admin API URL {url!r} must be http://HOST[:PORT] or https://HOST[:PORT]")
        if ssl_context is not None and base.scheme != "https":
            raise ConfigurationError(
                f"TLS settings (--cacert, --cert, --key) need an https URL; the admin API URL is {url}"
            )
        if token is not None and not (token.isascii() and token.isprintable() and " " not in token and token):
            raise ConfigurationError("the admin token has spaces or unprintable characters; it reads cst_<id>_<secret>")
        self.url = str(base.with_query(None).with_fragment(None)).rstrip("/")
        self._token = token
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        # Never the token.
        return f"AdminClient({self.url!r}, token={'set' if self._token else 'unset'}, tls={self._ssl is not None})"

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            headers={"Accept": f"application/json, {PROBLEM}"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Routes -----------------------------------------------------------------------------

    async def issuers(self) -> dict[str, Any]:
        """``GET /v1/issuers``: ``{"issuers": [{name, kind, subject, not_after, crl_partitions}]}``."""
        return await self._call("GET", "/v1/issuers")

    async def openapi(self) -> dict[str, Any]:
        """``GET /v1/openapi.json``: the OpenAPI 3.1 document."""
        return await self._call("GET", "/v1/openapi.json")

    async def certificate(self, issuer: str, serial: str | int) -> dict[str, Any]:
        """``GET /v1/certificates/{issuer}/{serial}``: one certificate record."""
        return await self._call("GET", self._cert_path(issuer, serial))

    async def issue(
        self,
        *,
        issuer: str,
        profile: str,
        csr: str,
        email: str | None = None,
        validity_days: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/certificates``: issue from a PEM CSR; the record plus ``certificate_pem``."""
        body: dict[str, Any] = {"issuer": issuer, "profile": profile, "csr": csr}
        if email is not None:
            body["email"] = email
        if validity_days is not None:
            body["validity_days"] = validity_days
        return await self._call("POST", "/v1/certificates", body=body, key=idempotency_key, ok=(201,))

    async def revoke(
        self,
        issuer: str,
        serial: str | int,
        *,
        reason: str | int | None = None,
        invalidity_date: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST …/revoke`` (operator): the revoked record."""
        body: dict[str, Any] = {}
        if reason is not None:
            body["reason"] = reason
        if invalidity_date is not None:
            body["invalidity_date"] = invalidity_date
        return await self._call("POST", self._cert_path(issuer, serial) + "/revoke", body=body, key=idempotency_key)

    async def suspend(self, issuer: str, serial: str | int, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST …/suspend``: certificateHold until resumed."""
        return await self._call("POST", self._cert_path(issuer, serial) + "/suspend", body={}, key=idempotency_key)

    async def resume(self, issuer: str, serial: str | int, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST …/resume``: lift a suspension."""
        return await self._call("POST", self._cert_path(issuer, serial) + "/resume", body={}, key=idempotency_key)

    async def certificates(
        self,
        *,
        holder: str | None = None,
        issuer: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/certificates``: one page, ``{"certificates": [...], "next_cursor"}``."""
        query = {"holder": holder, "issuer": issuer, "status": status, "limit": limit, "cursor": cursor}
        return await self._call("GET", "/v1/certificates", query=query)

    async def audit(
        self,
        *,
        actor: str | None = None,
        issuer: str | None = None,
        serial: str | int | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/audit``: one page of entries, oldest first, ``{"entries": [...], "next_cursor"}``."""
        query = {"actor": actor, "issuer": issuer, "serial": _serial(serial) if serial is not None else None,
                 "since": since, "until": until, "limit": limit, "cursor": cursor}  # fmt: skip
        return await self._call("GET", "/v1/audit", query=query)

    async def revoke_batch(
        self, items: list[dict[str, Any]], *, reason: str | int | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/revocations:batch`` (operator): ``{"revoked", "failed", "results"}``.

        A batch in which some items failed (HTTP 207) is returned, not raised: each result
        has ``ok`` and either ``certificate`` or ``problem``."""
        body: dict[str, Any] = {"items": items}
        if reason is not None:
            body["reason"] = reason
        return await self._call("POST", "/v1/revocations:batch", body=body, key=idempotency_key, ok=(200, 207),
                                read_timeout=max(self._read_timeout, BATCH_READ_TIMEOUT))  # fmt: skip

    async def pages(
        self, fetch: Callable[..., Awaitable[dict[str, Any]]], field: str, **params: Any
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of a cursor-paged route (``self.certificates`` or ``self.audit``), following
        ``next_cursor`` until there is none: ``async for page in client.pages(client.audit,
        "entries", actor=...)``."""
        cursor = None
        while True:
            page = await fetch(**params, cursor=cursor)
            yield page[field]
            next_cursor = page.get("next_cursor")
            if not next_cursor:
                return
            if next_cursor == cursor:
                raise AdminAPIError(200, "about:blank", "Paging failed", "the API handed out the same cursor twice")
            cursor = next_cursor

    # Plumbing ---------------------------------------------------------------------------

    def _cert_path(self, issuer: str, serial: str | int) -> str:
        if not isinstance(issuer, str) or not issuer:
            raise ValidationError("the issuer name is empty")
        return f"/v1/certificates/{_segment(issuer)}/{_segment(_serial(serial))}"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        key: str | None = None,
        ok: tuple[int, ...] = (200,),
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("use AdminClient as 'async with AdminClient(...) as client'")
        url = URL(self.url + path, encoded=True)
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url = url.with_query(params)
        headers = {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        if key is not None:
            if not (key.isascii() and key.isprintable() and 1 <= len(key) <= 255):
                raise ValidationError("the idempotency key must be 1-255 printable ASCII characters")
            headers["Idempotency-Key"] = key
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout,
                                        sock_read=read_timeout or self._read_timeout)  # fmt: skip
        where = f"{method} {self.url}{path}"
        try:
            async with self._session.request(method, url, data=data, headers=headers, allow_redirects=False,
                                             ssl=self._ssl if self._ssl is not None else True,
                                             timeout=timeout) as response:  # fmt: skip
                raw = await response.read()
                status = response.status
                content_type = response.content_type
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorCertificateError as e:
            raise AdminUnreachable(
                f"the TLS certificate of {self.url} is not trusted ({e.certificate_error}); "
                "pass the CA that signed it with --cacert FILE (or CERTSTATUS_ADMIN_CACERT)"
            ) from None
        except aiohttp.ClientSSLError as e:
            raise AdminUnreachable(f"the TLS handshake with {self.url} failed: {_os_reason(e.os_error)}") from None
        except aiohttp.ClientConnectorError as e:
            raise AdminUnreachable(
                f"cannot connect to the admin API at {self.url}: {_os_reason(e.os_error)}. Is 'certstatus admin "
                "serve' running there? (--url or CERTSTATUS_ADMIN_URL chooses another address)"
            ) from None
        except TimeoutError:
            raise AdminUnreachable(f"{where}: no answer in time") from None
        except aiohttp.ClientError as e:
            raise AdminUnreachable(f"{where}: the connection failed ({type(e).__name__}: {e})") from None
        if status in ok:
            if content_type != "application/json":
                raise AdminAPIError(status, "about:blank", "Not the admin API",
                                    f"{where} answered {status} with {content_type}, not JSON")  # fmt: skip
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise AdminAPIError(status, "about:blank", "Bad answer", f"{where} answered invalid JSON") from None
            if not isinstance(parsed, dict):
                raise AdminAPIError(status, "about:blank", "Bad answer", f"{where} answered JSON that is not an object")
            return parsed
        problem = None
        if content_type in (PROBLEM, "application/json"):
            try:
                problem = orjson.loads(raw)
            except orjson.JSONDecodeError:
                problem = None
        if isinstance(problem, dict) and "title" in problem:
            raise AdminAPIError.from_problem(status, problem, retry_after)
        raise AdminAPIError(status, "about:blank", f"HTTP {status}",
                            f"{where} answered {status} with {content_type or 'no body'}, not a problem document "
                            "(is this the admin API's URL?)")  # fmt: skip


def _os_reason(error: OSError) -> str:
    if error.errno:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__
