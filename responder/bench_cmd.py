"""``certstatus bench load``: fill the system with a large citizen population for load tests.

N certificates of the chosen issuing CAs (all of them by default) are built from templates and
signed with the CAs' own keys by worker processes, and COPY-loaded into PostgreSQL
(:mod:`ca_core.population`); a seeded share is revoked (RFC 5280 reasons in realistic
proportions) or suspended. A COPY writes no outbox events, so the OCSP signer's refill then signs
every response, as ``certstatus signer --once --refill`` does, and the CRLs are brought up to
date. The ground truth the load generators check every answer against is written to
``--truth-dir`` (:mod:`ca_core.groundtruth`: ``truth.bin`` and ``truth.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import math
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ca_core.clock import SystemClock
from ca_core.errors import ConfigurationError, NotFound, UnknownIssuer
from ca_core.pki import ensure_issuer_usable, load_signing_ca
from ca_core.population import (
    PROFILE,
    load_population,
    make_templates,
    plan_population,
    verify_samples,
    write_truth,
)
from ca_core.signer import SignerSettings
from ca_core.storage import postgres as db

from . import server
from .config import Config
from .progress import Progress
from .runtime import Storage, vault

__all__ = ["DESCRIPTION", "add_load_arguments", "cmd_bench_load"]

DESCRIPTION = (
    "Fill the system with N citizen certificates (profile citizen-signing) of the issuing CAs, fast:\n"
    "real certificates, signed with each CA's key by --processes workers and COPY-loaded into\n"
    "PostgreSQL; --revoked-fraction of them revoked and --suspended-fraction suspended. Then the\n"
    "OCSP signer signs every response (a refill, as 'certstatus signer --once --refill' does: a bulk\n"
    "load writes no outbox events) and CRLs are published. The ground truth for the load generators\n"
    "goes to --truth-dir: truth.bin (every certificate in popularity order, most popular first) and\n"
    "truth.json (issuers, counts, never-issued serials). The last 1 % of the order (at most 10,000,\n"
    "all good) is the admin pool, which relying-party load never asks about. Needs 'certstatus ca\n"
    "init' first and the key passphrase. Serials are always random; --seed fixes which certificates\n"
    "are listed, their reasons and the popularity order. Use a throwaway data directory: certificates\n"
    "are never deleted, and bulk-loaded ones have no audit log entries."
)

#: Loaded certificates checked with cryptography afterwards (signature, serial, holder, CRL URL).
_VERIFIED_SAMPLES = 8


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 0 and below 1")
    return value


def _processes(text: str) -> int:
    value = _positive_int(text)
    if value > 64:
        raise argparse.ArgumentTypeError(f"{text}: at most 64")
    return value


def _issuer_list(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError("name at least one issuing CA, e.g. moica,gca")
    return names


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certs", type=_positive_int, required=True, metavar="N", help="certificates to load, e.g. 1000000")
    p.add_argument("--issuers", type=_issuer_list, metavar="NAME,NAME",
                   help="issuing CAs to load (comma-separated; default: every issuing CA), in equal shares")  # fmt: skip
    p.add_argument("--revoked-fraction", type=_fraction, default=0.01, metavar="F", help="revoked share (default 0.01)")
    p.add_argument(
        "--suspended-fraction", type=_fraction, default=0.005, metavar="F", help="suspended share (default 0.005)"
    )
    p.add_argument("--processes", type=_processes, metavar="N",
                   help=f"worker processes for the load and the signer (default: the CPU count, {_cpus()} here)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1, help="seed of statuses, reasons and popularity order (default 1)")
    p.add_argument("--truth-dir", type=Path, metavar="DIR",
                   help="where truth.bin and truth.json go (default <data dir>/bench)")  # fmt: skip
    p.add_argument("--no-sign", action="store_true",
                   help="skip the OCSP signing and CRL publication (run 'certstatus signer --once --refill' later)")  # fmt: skip


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def cmd_bench_load(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .signer_cmd import make_publisher, run_signer

    n: int = args.certs
    if args.revoked_fraction + args.suspended_fraction > 0.9:
        raise ConfigurationError(
            "--revoked-fraction plus --suspended-fraction must be at most 0.9 (the admin pool needs good certificates)"
        )
    processes: int = args.processes or _cpus()
    truth_dir: Path = args.truth_dir if args.truth_dir is not None else cfg.data_dir / "bench"
    the_vault = vault(cfg)  # no passphrase: a clear error before any work
    urls = cfg.urls()
    ep = args.endpoints
    started = time.perf_counter()

    # The issuing CAs, their keys and templates ------------------------------------------------
    async with storage.pool.acquire() as conn:
        issuing = [i for i in await db.list_issuers(conn) if i.kind == "issuing"]
        if not issuing:
            raise NotFound("no CA yet: run 'certstatus ca init' first (bench load creates none)")
        by_name = {i.name: i for i in issuing}
        names = args.issuers or [i.name for i in issuing]
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise UnknownIssuer(
                f"no issuing CA named {', '.join(repr(u) for u in unknown)} (there are: {', '.join(by_name)})"
            )
        rows = [by_name[name] for name in names]
        for row in rows:
            await ensure_issuer_usable(conn, row)
        _say(f"opening the keys of {', '.join(names)} ...")
        cas = [await load_signing_ca(conn, the_vault, row) for row in rows]
        already = await conn.fetchval(
            "SELECT count(*) FROM certificates WHERE issuer_id = ANY($1::smallint[]) AND profile = $2",
            [r.id for r in rows],
            PROFILE,
        )
        had_base = {r.name for r in rows if await db.latest_crl_publication(conn, r.id, "base") is not None}
    if already:
        _say(f"note: these issuers already hold {already:,} {PROFILE} certificates; the ground truth covers only "
             "the ones loaded now")  # fmt: skip
    now = SystemClock().now()
    templates = [make_templates(ca, row.id, row.crl_partitions, urls=urls, now=now) for ca, row in zip(cas, rows, strict=True)]  # fmt: skip

    # Plan and load -------------------------------------------------------------------------
    plan = await asyncio.to_thread(
        functools.partial(
            plan_population, templates, n, weights=[1.0] * len(templates),
            revoked_fraction=args.revoked_fraction, suspended_fraction=args.suspended_fraction,
            batch_size=max(1000, min(50_000, math.ceil(n / (4 * processes)))),
            # Revocations fall within the minute before now: never in the future of a response.
            issued_at=(now - dt.timedelta(seconds=60)).replace(microsecond=0), revoked_until=now, seed=args.seed,
        )
    )  # fmt: skip
    shares = ", ".join(f"{row.name} {plan.shares[row.id]:,}" for row in rows)
    _say(f"loading {n:,} certificates ({shares}) with {processes} process{'es' if processes > 1 else ''}")
    progress = Progress("loading certificates (sign + COPY)", n)
    stop = threading.Event()
    loading = asyncio.get_running_loop().run_in_executor(
        None,
        functools.partial(load_population, ep.database_url, templates, plan, processes=processes, progress=progress,
                          should_stop=stop.is_set),
    )  # fmt: skip
    try:
        load = await asyncio.shield(loading)
    except asyncio.CancelledError:
        stop.set()  # the workers are terminated; rows already copied stay
        with contextlib.suppress(Exception):
            await loading
        raise
    async with storage.pool.acquire() as conn:
        await conn.execute("ANALYZE certificates")
        rng = random.Random(args.seed)
        per_issuer = math.ceil(_VERIFIED_SAMPLES / len(rows))
        keys = [
            (i, s)
            for i, serials in plan.truth.serials.items()
            for s in rng.sample(serials, min(len(serials), per_issuer))
        ]
        samples = []
        for issuer_id, serial in keys:
            row = await conn.fetchrow(
                "SELECT der, holder_id FROM certificates WHERE issuer_id = $1 AND serial = $2",
                issuer_id,
                db.serial_to_bytes(serial),
            )
            samples.append((issuer_id, serial, bytes(row["der"]), row["holder_id"]))
    verified = verify_samples(samples, {t.issuer_id: t for t in templates}, urls)
    revoked = sum(1 for v in plan.truth.listed.values() if v.status == "revoked")
    suspended = len(plan.truth.listed) - revoked
    _say(f"loaded {load['rows']:,} certificates in {load['elapsed_s']:.1f} s ({load['rows'] / load['elapsed_s']:,.0f}/s; "
         f"{revoked:,} revoked, {suspended:,} suspended); {verified} checked with cryptography")  # fmt: skip

    # Ground truth --------------------------------------------------------------------------
    truth = await asyncio.to_thread(write_truth, plan, templates, truth_dir, seed=args.seed, responder_url=urls.ocsp)
    _say(f"ground truth in {truth.directory} ({truth.seconds:.1f} s)")

    # OCSP responses and CRLs ---------------------------------------------------------------
    signer_s = crl_s = None
    signed = 0
    if not args.no_sign:
        async with storage.pool.acquire() as conn:  # what the refill signs: every issuer's certificates
            ids = [i.id for i in await db.list_issuers(conn) if i.kind == "issuing"]
            signed = await db.count_certificates(conn, ids, SystemClock().now() - SignerSettings().expired_grace)
        t0 = time.perf_counter()
        await run_signer(cfg, ep, storage, lifetime, processes=processes, once=True, do_refill=True)
        if lifetime.signals:  # the signer processes were stopped by a signal: not done
            raise server.Interrupted(lifetime.signals[-1])
        signer_s = time.perf_counter() - t0
        if had_base:
            # The signer publishes only what is due; an issuer that had CRLs before gets a new
            # base now, so the CRLs list the certificates loaded as revoked or suspended.
            t0 = time.perf_counter()
            publisher = make_publisher(cfg, storage)
            await publisher.load_issuers()
            for name in sorted(had_base):
                await publisher.publish_base(name)
            crl_s = time.perf_counter() - t0

    total_s = time.perf_counter() - started
    summary: dict[str, Any] = {
        "certificates": load["rows"],
        "by_issuer": {row.name: plan.shares[row.id] for row in rows},
        "revoked": revoked,
        "suspended": suspended,
        "processes": processes,
        "load_seconds": round(load["elapsed_s"], 3),
        "load_per_second": round(load["rows"] / load["elapsed_s"], 1),
        "verified_with_cryptography": verified,
        "signer_seconds": None if signer_s is None else round(signer_s, 3),
        "signed": signed,
        "signed_per_second": None if signer_s is None else round(signed / signer_s, 1),
        "crl_seconds": None if crl_s is None else round(crl_s, 3),
        "truth_dir": str(truth.directory),
        "truth_count": truth.count,
        "rp_count": truth.rp_count,
        "admin_pool": truth.admin_pool,
        "never_issued": truth.never_issued,
        "total_seconds": round(total_s, 3),
    }
    if args.json:
        from .cli import _print_json

        _print_json(summary)
        return 0
    print(f"certificates:   {load['rows']:,} ({shares}; {revoked:,} revoked, {suspended:,} suspended)")
    print(f"load:           {load['elapsed_s']:.1f} s, {load['rows'] / load['elapsed_s']:,.0f} certificates/s "
          f"({processes} process{'es' if processes > 1 else ''}, sign + COPY)")  # fmt: skip
    if signer_s is None:
        print(
            "OCSP signing:   skipped (--no-sign): run 'certstatus signer --once --refill' and 'certstatus crl publish'"
        )
    else:
        print(f"OCSP signing:   {signed:,} responses in {signer_s:.1f} s, {signed / signer_s:,.0f}/s "
              f"(a refill of every issuing CA, {processes} process{'es' if processes > 1 else ''})")  # fmt: skip
    print(f"ground truth:   {truth.directory} ({truth.count:,} in popularity order; relying parties ask about the "
          f"first {truth.rp_count:,}, admin pool {truth.admin_pool:,})")  # fmt: skip
    print(f"total:          {total_s:.1f} s")
    return 0
