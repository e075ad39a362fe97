"""The public HTTP application (default port 8080).

It serves liveness and readiness probes, the CA certificates that issued certificates
point at (AIA caIssuers, RFC 5280 4.2.2.1), the published CRLs and their push stream, and
OCSP on connections the fast path (:mod:`responder.fastpath`) handed over. Handlers are
thin; state lives on the app under typed keys.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from ca_core.errors import MalformedRequest
from ca_core.ocsp import UNSUCCESSFUL, ResponseStatus
from ca_core.storage import postgres as db
from ca_core.storage.fastredis import RedisUnavailable

from .crl_source import CRLIssuer, CRLSource, ScopeNotFound, parse_scope
from .crl_stream import BadLastEventID, QueueSubscriber, StreamHub, parse_last_event_id

__all__ = ["CA_CERTS", "CRL_ROUTE", "OCSP_ROUTE", "build_public_app"]

_log = logging.getLogger(__name__)

POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)


class CACertificates:
    """Issuer name -> certificate DER, refreshed from PostgreSQL on a miss (at most every 10 s)."""

    REFRESH_INTERVAL = 10.0

    def __init__(self) -> None:
        self._by_name: dict[str, bytes] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            issuers = await db.list_issuers(conn)
        self._by_name = {i.name: i.certificate for i in issuers}
        self._loaded_at = time.monotonic()

    async def get(self, name: str, pool: asyncpg.Pool) -> bytes | None:
        der = self._by_name.get(name)
        if der is None and time.monotonic() - self._loaded_at > self.REFRESH_INTERVAL:
            async with self._lock:
                if time.monotonic() - self._loaded_at > self.REFRESH_INTERVAL:
                    await self.refresh(pool)
            der = self._by_name.get(name)
        return der


CA_CERTS = web.AppKey("ca_certs", CACertificates)


class OCSPRoute:
    """Where the aiohttp OCSP routes find the worker's fast path (set once it exists).

    OCSP is answered by :mod:`responder.fastpath` before aiohttp sees a request; these
    routes serve only connections that were handed to aiohttp by an earlier request for
    another path (say /ca/moica.crt, then OCSP on the same keep-alive connection)."""

    fastpath: Any = None


OCSP_ROUTE = web.AppKey("ocsp_route", OCSPRoute)
_MALFORMED = UNSUCCESSFUL[ResponseStatus.MALFORMED_REQUEST]


async def ocsp(request: web.Request) -> web.Response:
    fp = request.app[OCSP_ROUTE].fastpath
    if fp is None:
        raise web.HTTPNotFound(text="OCSP is not served here\n")
    if request.method == "POST":
        if request.content_type != "application/ocsp-request":
            raise web.HTTPUnsupportedMediaType(text="POST application/ocsp-request (RFC 6960 A.1)\n")
        raw, from_get = await request.read(), False
    else:
        path = request.raw_path.split("?", 1)[0].lstrip("/")
        raw, from_get = path[len("ocsp") :].lstrip("/").encode("latin-1"), True
    try:
        if not raw:
            raise MalformedRequest("empty request")
        query = fp.query(raw, from_get=from_get)
    except MalformedRequest:
        return web.Response(status=400, body=_MALFORMED, content_type="application/ocsp-response",
                            headers={"Cache-Control": "no-store"})  # fmt: skip
    answer = await fp.source.answer(query)
    conditional = (
        (request.headers.get("If-None-Match", "").encode("latin-1") or None,
         request.headers.get("If-Modified-Since", "").encode("latin-1") or None)
        if from_get else (None, None)
    )  # fmt: skip
    status, headers, body = fp.parts(answer, conditional)
    return web.Response(status=status, body=body or None, headers=headers)


class CRLRoute:
    """Where the CRL routes find the worker's CRL source and stream hub (set once they exist)."""

    source: CRLSource | None = None
    hub: StreamHub | None = None


CRL_ROUTE = web.AppKey("crl_route", CRLRoute)
_CRL_TYPE = "application/pkix-crl"  # RFC 2585 4.2


def _http_date(t: int) -> str:
    return email.utils.formatdate(t, usegmt=True)


def _crl_issuer(request: web.Request) -> tuple[CRLSource, CRLIssuer]:
    source = request.app[CRL_ROUTE].source
    if source is None:
        raise web.HTTPNotFound(text="CRLs are not served here\n")
    name = request.match_info["issuer"]
    issuer = source.issuers.get(name)
    if issuer is None:
        raise web.HTTPNotFound(text=f"no CA named {name!r}\n")
    return source, issuer


async def crl(request: web.Request) -> web.StreamResponse:
    """``GET /crl/{issuer}.crl``, ``/crl/{issuer}/delta.crl``, ``/crl/{issuer}/{p}.crl``,
    ``/crl/{issuer}/{p}/delta.crl``: the CRL published for that scope, DER."""
    source, issuer = _crl_issuer(request)
    try:
        scope = parse_scope(issuer, request.match_info.get("partition"), delta=request.path.endswith("/delta.crl"))
    except ScopeNotFound as e:
        raise web.HTTPNotFound(text=f"{e}\n") from None
    try:
        manifest = await source.manifest(issuer.id, scope)
    except (RedisUnavailable, OSError):
        raise web.HTTPServiceUnavailable(text="CRLs cannot be read right now; try again\n",
                                         headers={"Retry-After": "5"}) from None  # fmt: skip
    if manifest is None:
        raise web.HTTPServiceUnavailable(
            text=f"the {scope} CRL of {issuer.name} is not published yet; try again shortly\n",
            headers={"Retry-After": "10"},
        )
    now = int(time.time())
    max_age = max(0, min(manifest.refresh_at, manifest.next_update) - now)
    headers = {
        "ETag": manifest.etag,
        "Last-Modified": _http_date(manifest.this_update),
        "Expires": _http_date(manifest.next_update),
        "Cache-Control": f"public, no-transform, max-age={max_age}" + (", must-revalidate" if max_age == 0 else ""),
        "X-CRL-Number": str(manifest.number),
    }
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        if manifest.etag in (t.strip() for t in inm.split(",")) or inm.strip() == "*":
            return web.Response(status=304, headers=headers)
    elif (ims := request.if_modified_since) is not None and ims.timestamp() >= manifest.this_update:
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(manifest.length)
        headers["Content-Type"] = _CRL_TYPE
        return web.Response(headers=headers)
    try:
        first = await source.chunk(issuer.id, scope, manifest, 0)
    except (RedisUnavailable, OSError):
        first = None
    if first is None:
        raise web.HTTPServiceUnavailable(
            text="CRLs cannot be read right now; try again\n", headers={"Retry-After": "5"}
        )
    if manifest.chunks == 1:
        return web.Response(body=first, content_type=_CRL_TYPE, headers=headers)
    # A large CRL: streamed chunk by chunk (chunked transfer), never whole in memory.
    response = web.StreamResponse(headers=headers)
    response.content_type = _CRL_TYPE
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        await response.write(first)
        for i in range(1, manifest.chunks):
            try:
                piece = await source.chunk(issuer.id, scope, manifest, i)
            except (RedisUnavailable, OSError):
                piece = None
            if piece is None:
                # Mid-body there is no status left to send: cut the connection, so the
                # client sees an incomplete transfer rather than a short CRL.
                _log.warning("CRL %s/%s %d: chunk %d unavailable; aborting the download",
                             issuer.name, scope, manifest.number, i)  # fmt: skip
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write(piece)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away mid-download: nothing to answer, nothing to log
    return response


async def crl_stream(request: web.Request) -> web.StreamResponse:
    """``GET /crl/{issuer}/stream`` on a connection aiohttp owns (the fast path takes the
    others): the same stream, through a queue."""
    source, issuer = _crl_issuer(request)
    if request.method != "GET":  # HEAD: an event stream has no headers-only form
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    hub = request.app[CRL_ROUTE].hub
    if hub is None:
        raise web.HTTPNotFound(text="the CRL stream is not served here\n")
    try:
        last = parse_last_event_id(request.headers.get("Last-Event-ID"))
    except BadLastEventID as e:
        raise web.HTTPBadRequest(text=f"{e}\n") from None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-store",
                                           "X-Accel-Buffering": "no"})  # fmt: skip
    await response.prepare(request)
    sub = QueueSubscriber(issuer.id, request.transport, hub.max_buffer)
    try:
        await hub.join(sub, issuer, last)
        while (data := await sub.queue.get()) is not None:
            sub.size -= len(data)
            await response.write(data)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client left: nothing to answer, nothing to log
    finally:
        hub.remove(sub)
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Says nothing about its dependencies."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: PostgreSQL and Redis both answer within a second."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(1.0):
            async with request.app[POOL].acquire() as conn:
                await conn.fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure means "not ready"
        checks["postgres"] = f"unavailable ({type(e).__name__})"
    try:
        async with asyncio.timeout(1.0):
            await request.app[REDIS].ping()
        checks["redis"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["redis"] = f"unavailable ({type(e).__name__})"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", **checks}, status=200 if ready else 503)


async def ca_certificate(request: web.Request) -> web.Response:
    """``GET /ca/{issuer}.crt``: the DER certificate of a CA (application/pkix-cert, RFC 2585)."""
    name = request.match_info["issuer"]
    try:
        der = await request.app[CA_CERTS].get(name, request.app[POOL])
    except Exception:  # noqa: BLE001 - PostgreSQL unreachable: say so, don't claim "no such CA"
        _log.warning("cannot refresh the CA certificates", exc_info=True)
        raise web.HTTPServiceUnavailable(text="the CA certificates cannot be read right now; try again\n") from None
    if der is None:
        raise web.HTTPNotFound(text=f"no CA named {name!r}\n")
    etag = f'"{hashlib.sha256(der).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "max-age=86400, public"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=der, content_type="application/pkix-cert", headers=headers)


@web.middleware
async def _no_tracebacks(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unexpected errors are logged here and answered with a terse 500, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("unhandled error serving %s %s", request.method, request.path)
        return web.Response(status=500, text="internal error\n")


def build_public_app(pool: asyncpg.Pool, redis: aioredis.Redis) -> web.Application:
    """The public application over already-open storage (the caller owns and closes it)."""
    app = web.Application(middlewares=[_no_tracebacks], client_max_size=64 * 1024)
    app[POOL] = pool
    app[REDIS] = redis
    app[CA_CERTS] = CACertificates()

    async def load_ca_certs(app: web.Application) -> AsyncIterator[None]:
        await app[CA_CERTS].refresh(app[POOL])
        yield

    app.cleanup_ctx.append(load_ca_certs)
    app[OCSP_ROUTE] = OCSPRoute()
    app.router.add_post("/ocsp", ocsp)
    app.router.add_get(r"/ocsp/{request:.*}", ocsp)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(r"/ca/{issuer:[a-z][a-z0-9-]{0,30}}.crt", ca_certificate)
    app[CRL_ROUTE] = CRLRoute()
    issuer = r"{issuer:[a-z][a-z0-9-]{0,30}}"
    app.router.add_get(rf"/crl/{issuer}.crl", crl)
    app.router.add_get(rf"/crl/{issuer}/delta.crl", crl)
    app.router.add_get(rf"/crl/{issuer}/stream", crl_stream)
    # Any segment: parse_scope answers a bad partition with a 404 that names the valid range.
    app.router.add_get(rf"/crl/{issuer}/{{partition:[^/]+}}.crl", crl)
    app.router.add_get(rf"/crl/{issuer}/{{partition:[^/]+}}/delta.crl", crl)
    return app
