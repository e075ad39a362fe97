"""Serving the public port: one worker's server, and N workers sharing the port.

``public_server`` runs one worker: the fast OCSP protocol on a listening socket, aiohttp
behind it for every other path, the OCSP answer source and its change subscription.
``serve_workers`` starts N such workers as separate processes (spawned, not forked: each
gets its own event loop, connections and keys), all binding the same port with
SO_REUSEPORT so the kernel spreads connections across them, and restarts one that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from ca_core.clock import SystemClock

from . import server
from .app import CRL_ROUTE, OCSP_ROUTE, build_public_app
from .config import Config, configure_logging
from .crl_source import CRLSource
from .crl_stream import StreamHub
from .fastpath import FastPath, PublicProtocol
from .fastredis import FastRedis
from .gcwatch import GCWatch, collect_young_every
from .ocsp_source import OCSPSource, UnknownSerialPolicy
from .runtime import Endpoints, Storage, open_storage, vault

__all__ = ["PublicServer", "listening_socket", "public_server", "serve_workers"]

_log = logging.getLogger(__name__)


class _BadRequestFilter(logging.Filter):
    """aiohttp logs every malformed request at ERROR with a traceback, so any client could
    flood the log; such a request is the client's mistake (it got its 400). Drop them."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, BadHttpMessage)


_BAD_REQUESTS = _BadRequestFilter()


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket; with ``reuse_port`` several processes can share it."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


class PublicServer:
    """What a running worker exposes (for tests and the demo)."""

    def __init__(self, fastpath: FastPath, source: OCSPSource, port: int, crls: CRLSource, streams: StreamHub) -> None:
        self.fastpath = fastpath
        self.source = source
        self.port = port
        self.crls = crls
        self.streams = streams


@contextlib.asynccontextmanager
async def public_server(
    cfg: Config, storage: Storage, redis_url: str, *, port: int | None = None, reuse_port: bool = False
) -> AsyncIterator[PublicServer]:
    """Serve the public port (OCSP fast path + aiohttp) for the duration of the block.

    ``port`` overrides the configured one (0 picks a free port, for tests).
    """
    passphrase = cfg.passphrase()
    key_vault = vault(cfg) if passphrase is not None else None
    if key_vault is None:
        _log.warning("no key passphrase: SHA-256 CertIDs, nonces and extended-revoked answers are unavailable")
    issuers = await OCSPSource.load_issuers(storage.pool, key_vault, SystemClock().now())
    source = OCSPSource(
        FastRedis(redis_url),
        storage.redis,
        issuers,
        cache_entries=cfg.ocsp_cache_entries,
        live_signing_limit=cfg.ocsp_live_signing_limit,
        honour_nonce=cfg.ocsp_nonce == "sign",
        unknown_serial=UnknownSerialPolicy(cfg.ocsp_unknown_serial),
    )
    crls = CRLSource(FastRedis(redis_url), storage.redis, cache_bytes=cfg.crl_cache_mb << 20)
    crls.issuers = await CRLSource.load_issuers(storage.pool)
    streams = StreamHub(FastRedis(redis_url), crls, cfg.urls())
    crls.on_delta = streams.published
    crls.on_subscribed = streams.resubscribed
    app = build_public_app(storage.pool, storage.redis)
    app[CRL_ROUTE].source = crls
    app[CRL_ROUTE].hub = streams
    logging.getLogger("aiohttp.server").addFilter(_BAD_REQUESTS)  # idempotent
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        async with source.running(), crls.running(), streams.running():
            assert runner.server is not None
            fastpath = FastPath(source, runner.server)
            fastpath.streams = streams
            app[OCSP_ROUTE].fastpath = fastpath
            sock = listening_socket(cfg.public_host, cfg.public_port if port is None else port, reuse_port=reuse_port)
            loop = asyncio.get_running_loop()
            srv = await loop.create_server(lambda: PublicProtocol(fastpath), sock=sock)
            fastpath.start()
            refresher = asyncio.create_task(_refresh_issuers(source, storage, key_vault, crls))
            try:
                yield PublicServer(fastpath, source, sock.getsockname()[1], crls, streams)
            finally:
                refresher.cancel()
                srv.close()
                fastpath.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
    finally:
        await runner.cleanup()


async def _refresh_issuers(
    source: OCSPSource, storage: Storage, key_vault: Any, crls: CRLSource, interval: float = 60.0
) -> None:
    """Pick up new issuers and renewed OCSP signers without a restart."""
    while True:
        await asyncio.sleep(interval)
        try:
            source.issuers = await OCSPSource.load_issuers(storage.pool, key_vault, SystemClock().now())
            crls.issuers = await CRLSource.load_issuers(storage.pool)
        except Exception as e:  # noqa: BLE001 - keep serving with the table we have
            _log.warning("could not refresh the issuer table: %s", e)


# Several processes ----------------------------------------------------------------------


def tune_gc() -> GCWatch:
    """For a serving process: what exists after start-up (modules, keys, the app) is
    frozen out of the collector's view, and young generations are collected less often.
    What the worker accumulates while serving (request memos, cached answers) is made of
    exact tuples of bytes and ints, which the collector stops tracking
    (``ca_core.ocsp.FlatQuery``), so collections stay short; generation 0 is also collected
    on a timer, since evictions keep its count from growing (:func:`collect_young_every`);
    the returned watch logs any long collection (:mod:`responder.gcwatch`). Call it on the
    serving event loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    collect_young_every()
    return GCWatch().install()


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies, so no worker outlives the supervisor."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_entry(cfg: Config, database_url: str, redis_url: str, index: int, ready: Any) -> None:
    _die_with_parent()
    configure_logging(cfg)
    server.install_interrupt_handlers()

    async def main(lifetime: server.Lifetime) -> None:
        ep = Endpoints(database_url, redis_url, None)
        async with open_storage(ep, cfg, migrate=False) as storage:
            async with public_server(cfg, storage, redis_url, reuse_port=True):
                tune_gc()
                ready.set()
                await lifetime.wait()

    with contextlib.suppress(server.Interrupted, KeyboardInterrupt):
        server.run(main)


async def serve_workers(cfg: Config, ep: Endpoints, lifetime: server.Lifetime, *, workers: int) -> None:
    """Run ``workers`` public responder processes until the lifetime ends; restart any
    that dies (at most once a second each)."""
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    started: dict[int, float] = {}

    def start(i: int) -> Any:
        ready = ctx.Event()
        p = ctx.Process(
            target=_worker_entry, args=(cfg, ep.database_url, ep.redis_url, i, ready), name=f"certstatus-worker-{i}"
        )
        p.start()
        procs[i] = p
        started[i] = time.monotonic()
        return ready

    readies = [start(i) for i in range(workers)]
    deadline = time.monotonic() + 60
    for r in readies:
        while not r.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    print(f"{workers} public workers on http://{cfg.public_host}:{cfg.public_port} (Ctrl-C stops them)", flush=True)

    async def supervise() -> None:
        while True:
            await asyncio.sleep(0.5)
            for i, p in list(procs.items()):
                if not p.is_alive() and time.monotonic() - started[i] > 1.0:
                    _log.warning("worker %d exited with %s; restarting it", i, p.exitcode)
                    start(i)

    task = asyncio.create_task(supervise())
    try:
        await lifetime.wait()
    finally:
        task.cancel()
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        end = time.monotonic() + 10
        for p in procs.values():
            await asyncio.to_thread(p.join, max(0.1, end - time.monotonic()))
            if p.is_alive():
                p.kill()
                await asyncio.to_thread(p.join, 1)
