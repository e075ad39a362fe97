"""``certstatus signer``: run the OCSP signer and the CRL publisher, in one process or several.

With ``--processes N`` the command starts N signer processes that share the work through
PostgreSQL leases (nothing is signed twice) and shows their combined progress; the first
of them also publishes CRLs. ``--once`` signs whatever is due (a first fill, a refill),
publishes the CRLs that are due, and exits: handy after a bulk load and in scripts.
``--refill`` makes every response due now (re-sign everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import multiprocessing
import signal
import time
from typing import Any

from ca_core.clock import SystemClock
from ca_core.crl_publisher import CRLPublisher, CRLSettings
from ca_core.errors import CAError
from ca_core.signer import Signer, SignerSettings
from ca_core.storage import postgres as db

from . import server
from .config import Config, configure_logging
from .progress import Progress
from .public import _die_with_parent
from .runtime import Endpoints, Storage, open_storage, vault

__all__ = ["crl_settings", "make_publisher", "make_signer", "run_signer", "signer_settings"]


def signer_settings(cfg: Config) -> SignerSettings:
    return SignerSettings(validity=dt.timedelta(hours=cfg.ocsp_validity_hours), batch_size=cfg.signer_batch_size)


def crl_settings(cfg: Config) -> CRLSettings:
    return CRLSettings(
        full_interval=dt.timedelta(hours=cfg.crl_interval_hours),
        validity=dt.timedelta(hours=cfg.crl_validity_hours),
        delta_interval=dt.timedelta(seconds=cfg.crl_delta_interval_seconds),
        delta_validity=dt.timedelta(minutes=cfg.crl_delta_validity_minutes),
        expired_grace=dt.timedelta(days=cfg.crl_expired_grace_days),
        stream_history=cfg.crl_stream_history,
    )


def make_publisher(cfg: Config, storage: Storage, on_published: Any = None) -> CRLPublisher:
    return CRLPublisher(storage.pool, storage.redis, vault(cfg), SystemClock(), cfg.urls(), crl_settings(cfg),
                        on_published=on_published)  # fmt: skip


async def run_with_publisher(signer: Signer, publisher: CRLPublisher | None, lifetime: server.Lifetime) -> None:
    """The signer's loops and the CRL publisher's, until the lifetime ends."""
    tasks = [asyncio.create_task(signer.run())]
    if publisher is not None:
        tasks.append(asyncio.create_task(publisher.run()))
    stop = asyncio.ensure_future(lifetime.wait())
    try:
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stop:
                t.result()  # a loop that ended by itself failed: say why
    finally:
        stop.cancel()
        for t in tasks:
            t.cancel()
        for t in tasks:
            await server.stop_task(t)  # re-cancels: redis-py's wait_for can swallow one


async def publish_due(publisher: CRLPublisher) -> None:
    """``--once``: publish the CRLs that are due now."""
    await publisher.load_issuers()
    for _ in range(3):  # a first base is followed at once by its delta
        if not await publisher.tick():
            break


def make_signer(cfg: Config, storage: Storage, on_signed: Any = None) -> Signer:
    return Signer(storage.pool, storage.redis, vault(cfg), SystemClock(), signer_settings(cfg), on_signed=on_signed)


async def sign_due(signer: Signer) -> int:
    """Sign everything due now and every pending event, then return (``--once``)."""
    total = 0
    await signer.check_fills()
    while await signer.process_outbox():
        pass
    while (n := await signer.sweep_chunk()) is not None:
        total += n
    await signer.check_fills()
    while await signer.process_outbox():
        pass
    return total


def _signer_entry(cfg: Config, database_url: str, redis_url: str, counter: Any, once: bool, index: int) -> None:
    _die_with_parent()
    configure_logging(cfg)
    server.install_interrupt_handlers()

    def count(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    async def main(lifetime: server.Lifetime) -> None:
        async with open_storage(Endpoints(database_url, redis_url, None), cfg, migrate=False) as storage:
            signer = make_signer(cfg, storage, count)
            await signer.load_issuers()
            publisher = make_publisher(cfg, storage) if index == 0 else None
            if once:
                await sign_due(signer)
                if publisher is not None:
                    await publish_due(publisher)
                await signer.aclose()
                return
            await run_with_publisher(signer, publisher, lifetime)

    with contextlib.suppress(server.Interrupted, KeyboardInterrupt):
        server.run(main)


async def run_signer(
    cfg: Config,
    ep: Endpoints,
    storage: Storage,
    lifetime: server.Lifetime,
    *,
    processes: int,
    once: bool,
    do_refill: bool,
    quiet: bool = False,
) -> int:
    if do_refill:
        # A new fill for every issuer: everything is due now, and unknown serials are
        # tryLater (not unauthorized) until every chunk has been signed again.
        refiller = make_signer(cfg, storage)
        await refiller.load_issuers()
        await refiller.start_refill()
        await refiller.aclose()
    async with storage.pool.acquire() as conn:
        # Issuing CAs only: the root has no OCSP signer (its certificates are on its CRL).
        ids = [i.id for i in await db.list_issuers(conn) if i.kind == "issuing"]
        total = await db.count_certificates(conn, ids, SystemClock().now() - SignerSettings().expired_grace)
    progress = None if quiet else Progress("signing OCSP responses", total)
    if processes == 1:
        signer = make_signer(cfg, storage, progress.update if progress else None)
        await signer.load_issuers()
        publisher = make_publisher(cfg, storage)
        if once:
            await sign_due(signer)
            await publish_due(publisher)
            await signer.aclose()
        else:
            await run_with_publisher(signer, publisher, lifetime)
        if progress:
            progress.close()
        return 0
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    procs = [
        ctx.Process(
            target=_signer_entry, args=(cfg, ep.database_url, ep.redis_url, counter, once, i), name=f"signer-{i}"
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    stop = asyncio.ensure_future(lifetime.wait())
    try:
        while any(p.is_alive() for p in procs) and not stop.done():
            if progress:
                progress.set(counter.value)
            await asyncio.wait([stop], timeout=0.2)
    finally:
        stop.cancel()
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 10
        for p in procs:
            await asyncio.to_thread(p.join, max(0.1, deadline - time.monotonic()))
    if progress:
        progress.set(counter.value)
        progress.close()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
    if failed and (once or not stop.cancelled()):
        raise CAError(f"{len(failed)} of {processes} signer processes failed (exit status {failed}); see the log above")
    if once:
        # The fills' markers: each child checked them after its own sweep, but the last
        # chunk may have been finished by another; one more check settles it.
        signer = make_signer(cfg, storage)
        await signer.load_issuers()
        await signer.check_fills()
        await signer.aclose()
    return 0
