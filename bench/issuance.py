#!/usr/bin/env python
"""Issuance and status-change throughput of the embedded CA, next to raw signing speed.

For each issuing-CA key type this measures, in one run and one process:

1. raw signatures: the issuer's private key signing a 1 KiB message with the hash the
   CA uses (``ca_core.keystore.signature_hash_for``), ops/s;
2. ``build_end_entity`` (sans-IO) with a pre-generated subject public key, certs/s;
3. ``CertificateAuthority.issue`` through PostgreSQL with pre-generated subject keys,
   at concurrency 1 and N, certs/s with p50/p99 latency;
4. ``suspend``, ``resume`` and ``revoke`` through PostgreSQL at concurrency 1 and N.

Absolute times drift on a shared machine, so every figure is read against a raw
signing measurement taken right before and right after it (the "reference"), and the
report gives the ratio. Run ``python bench/issuance.py --help`` for the options and
bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import datetime as dt
import io
import math
import os
import platform
import pstats
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import cryptography
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca_core.clock import SystemClock
from ca_core.issue import SigningCA, build_end_entity, partition_for, random_serial
from ca_core.keystore import KeyVault, Passphrase, PrivateKey, PublicKey, generate_private_key, signature_hash_for
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import KeyType, RevocationReason
from ca_core.pki import IssuerSpec, init_pki, load_signing_ca
from ca_core.profiles import END_ENTITY_PROFILES, HolderSubject, PublicURLs, get_profile
from ca_core.storage import postgres as db
from ca_core.storage.embedded import EmbeddedServices

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"

DEFAULT_ISSUER_KEY_TYPES = (KeyType.RSA3072, KeyType.EC_P256)
ACTOR = "bench"
MESSAGE_SIZE = 1024
BASE_URL = "http://status.bench.invalid"
# Generated fresh for every run; it seals the throwaway CA keys of the benchmark database.
PASSPHRASE = "certstatus benchmark passphrase (throwaway)"

#: The tax-season load model the figures are read against.
LOAD_MODEL_ISSUE_PER_S = 1.0
LOAD_MODEL_REVOKE_PER_S = 50.0
LOAD_MODEL_TEXT = (
    "Load model (tax season): ~11,000 issuances a day, about 1/s at the peak, "
    "and bulk revocation bursts of 50/s."
)


# Measurement ---------------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    """One timed phase: ``n`` operations in ``elapsed`` seconds of wall time."""

    issuer_key: str
    kind: str  # sign, build, issue, suspend, resume, revoke
    label: str
    concurrency: int
    n: int
    elapsed: float
    latencies: list[float] = dataclasses.field(repr=False)
    reference: float | None = None  # raw signing rate read against (ops/s)
    reference_brackets: tuple[float, ...] = ()

    @property
    def rate(self) -> float:
        return self.n / self.elapsed

    def percentile_ms(self, q: float) -> float:
        return percentile_ms(self.latencies, q)

    @property
    def ratio(self) -> float | None:
        return self.rate / self.reference if self.reference else None

    @property
    def load_model(self) -> tuple[float, float] | None:
        """(needed rate, headroom factor) where the load model names this operation."""
        needed = {"issue": LOAD_MODEL_ISSUE_PER_S, "revoke": LOAD_MODEL_REVOKE_PER_S}.get(self.kind)
        return (needed, self.rate / needed) if needed else None

    def to_json(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "issuer_key": self.issuer_key,
            "kind": self.kind,
            "label": self.label,
            "concurrency": self.concurrency,
            "n": self.n,
            "elapsed_s": self.elapsed,
            "rate_per_s": self.rate,
            "latency_ms": {
                "mean": statistics.fmean(lat) * 1000.0,
                "p50": self.percentile_ms(0.50),
                "p90": self.percentile_ms(0.90),
                "p99": self.percentile_ms(0.99),
                "max": max(lat) * 1000.0,
            },
            "raw_sign_reference_per_s": self.reference,
            "raw_sign_brackets_per_s": list(self.reference_brackets),
            "ratio_to_raw_sign": self.ratio,
            "load_model": (
                {"needed_per_s": self.load_model[0], "headroom": self.load_model[1]} if self.load_model else None
            ),
        }


class Progress:
    """One status line on stderr: rewritten in place on a terminal, one line per phase otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._label = ""
        self._total = 0
        self._last = 0.0

    def start(self, label: str, total: int) -> None:
        self._label, self._total, self._last = label, total, 0.0
        if self.enabled and self.tty:
            self._write(f"{label}: 0/{total}")

    def tick(self, done: int) -> None:
        if not (self.enabled and self.tty):
            return
        now = time.monotonic()
        if now - self._last >= 0.2 or done == self._total:
            self._last = now
            self._write(f"{self._label}: {done}/{self._total}")

    def done(self, summary: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self._write(f"{self._label}: {summary}\n")
        else:
            print(f"{self._label}: {summary}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            if self.tty:
                sys.stderr.write("\r\033[K")
            print(text, file=sys.stderr, flush=True)

    def _write(self, text: str) -> None:
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()


def _signer(key: PrivateKey) -> Callable[[bytes], bytes]:
    """Sign exactly as CertificateBuilder.sign does for this key (PKCS#1 v1.5 or ECDSA)."""
    algorithm = signature_hash_for(key)
    if isinstance(key, rsa.RSAPrivateKey):
        pkcs1 = padding.PKCS1v15()
        return lambda message: key.sign(message, pkcs1, algorithm)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ecdsa = ec.ECDSA(algorithm)
    return lambda message: key.sign(message, ecdsa)


def _signature_label(key: PrivateKey) -> str:
    algorithm = signature_hash_for(key).name.upper().replace("SHA", "SHA-")
    scheme = "RSA PKCS#1 v1.5" if isinstance(key, rsa.RSAPrivateKey) else "ECDSA"
    return f"raw signature ({scheme}, {algorithm}, 1 KiB)"


def percentile_ms(latencies: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of latencies in seconds, in milliseconds."""
    ordered = sorted(latencies)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] * 1000.0


def _summary(count: int, elapsed: float, latencies: list[float]) -> str:
    return (
        f"{count / elapsed:,.1f}/s, p50 {percentile_ms(latencies, 0.5):.2f} ms, "
        f"p99 {percentile_ms(latencies, 0.99):.2f} ms"
    )


def measure_sync(
    progress: Progress, label: str, count: int, op: Callable[[int], object], *, min_seconds: float = 0.0
) -> tuple[int, float, list[float]]:
    """Run ``op(i)`` one after another: ``count`` times, and on until ``min_seconds`` have passed.

    Returns (operations done, elapsed, latencies).
    """
    latencies: list[float] = []
    clock = time.perf_counter
    progress.start(label, count)
    start = clock()
    i = 0
    while i < count or clock() - start < min_seconds:
        t0 = clock()
        op(i)
        latencies.append(clock() - t0)
        i += 1
        if i & 31 == 0:
            progress.tick(i)
    elapsed = clock() - start
    progress.done(_summary(i, elapsed, latencies))
    return i, elapsed, latencies


async def measure_async(
    progress: Progress, label: str, count: int, concurrency: int, op: Callable[[int], Awaitable[object]]
) -> tuple[float, list[float]]:
    """``concurrency`` workers (asyncio.gather) share ``count`` operations; (elapsed, latencies).

    A closed loop: each worker starts its next operation when the previous one is
    acknowledged, so latency excludes any queueing in front of the pool.
    """
    latencies = [0.0] * count
    todo = iter(range(count))
    done = 0
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal done
        for i in todo:
            t0 = clock()
            await op(i)
            latencies[i] = clock() - t0
            done += 1
            progress.tick(done)

    progress.start(label, count)
    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = clock() - start
    progress.done(_summary(count, elapsed, latencies))
    return elapsed, latencies


# The run ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    count: int
    sign_seconds: float
    concurrency: int
    issuer_key_types: tuple[KeyType, ...]
    subject_key_type: KeyType
    subject_keys: int
    profile: str
    database_url: str | None
    loop: str
    results_dir: Path | None
    cprofile: Path | None
    quiet: bool


class Bench:
    def __init__(self, opts: Options, pool: asyncpg.Pool, vault: KeyVault) -> None:
        self.opts = opts
        self.pool = pool
        self.vault = vault
        self.clock = SystemClock()
        self.urls = PublicURLs(BASE_URL)
        self.profile = get_profile(opts.profile)
        self.ca = CertificateAuthority(pool, vault, clock=self.clock, urls=self.urls)
        self.progress = Progress(not opts.quiet)
        self.results: list[Measurement] = []
        self.brackets: dict[str, list[float]] = {}
        self.cert_der_sizes: dict[str, int] = {}
        self.profiler = cProfile.Profile() if opts.cprofile else None
        self._holder_seq = 0

    @contextlib.contextmanager
    def _profiled(self) -> Iterator[None]:
        if self.profiler is None:
            yield
            return
        self.profiler.enable()
        try:
            yield
        finally:
            self.profiler.disable()

    def holders(self, n: int) -> list[HolderSubject]:
        first = self._holder_seq
        self._holder_seq += n
        return [HolderSubject(name=f"Bench Holder {i}", holder_id=f"{9000000000000000 + i:016d}") for i in range(first, first + n)]

    def _record(self, m: Measurement) -> Measurement:
        self.results.append(m)
        if m.kind != "sign" and m.ratio is not None:
            before, after = m.reference_brackets
            self.progress.note(
                f"  -> {m.kind} c={m.concurrency}: {m.ratio:.3f} of raw signing "
                f"(reference {before:,.0f}/s before, {after:,.0f}/s after)"
            )
        return m

    def raw_sign(self, key_name: str, signing: SigningCA) -> float:
        sign = _signer(signing.key)
        message = os.urandom(MESSAGE_SIZE)
        role = "raw signing" if key_name not in self.brackets else "raw signing (reference bracket)"
        with self._profiled():
            n, elapsed, lat = measure_sync(
                self.progress, f"[{key_name}] {role}", self.opts.count, lambda _i: sign(message),
                min_seconds=self.opts.sign_seconds,
            )
        m = Measurement(key_name, "sign", _signature_label(signing.key), 1, n, elapsed, lat)
        self.brackets.setdefault(key_name, []).append(m.rate)
        if len(self.brackets[key_name]) == 1:
            m.reference = m.rate
            m.reference_brackets = (m.rate,)
            self._record(m)
        return m.rate

    def build(self, key_name: str, signing: SigningCA, subject_keys: Sequence[PublicKey]) -> Measurement:
        count = self.opts.count
        holders = self.holders(count)
        serials = [random_serial() for _ in range(count)]

        def op(i: int) -> object:
            now = self.clock.now()  # as CertificateAuthority.issue reads it per call
            return build_end_entity(
                signing, self.profile, holders[i], subject_keys[i % len(subject_keys)],
                serial=serials[i], partition=partition_for(serials[i], 16), now=now, urls=self.urls,
            )

        sample = op(0)
        assert isinstance(sample, x509.Certificate)
        self.cert_der_sizes[key_name] = len(sample.public_bytes(serialization.Encoding.DER))
        with self._profiled():
            _, elapsed, lat = measure_sync(self.progress, f"[{key_name}] build_end_entity", count, op)
        return Measurement(key_name, "build", "sans-IO build_end_entity", 1, count, elapsed, lat)

    async def issue(
        self, key_name: str, issuer: str, concurrency: int, subject_keys: Sequence[PublicKey]
    ) -> tuple[Measurement, list[int]]:
        count = self.opts.count
        holders = self.holders(count)
        serials = [0] * count

        async def op(i: int) -> None:
            record = await self.ca.issue(
                issuer=issuer, profile=self.profile.name, actor=ACTOR,
                public_key=subject_keys[i % len(subject_keys)], subject=holders[i],
            )
            serials[i] = record.serial

        with self._profiled():
            elapsed, lat = await measure_async(
                self.progress, f"[{key_name}] issue c={concurrency}", count, concurrency, op
            )
        m = Measurement(key_name, "issue", "CertificateAuthority.issue (PostgreSQL)", concurrency, count, elapsed, lat)
        return m, serials

    async def change(
        self, key_name: str, issuer: str, kind: str, concurrency: int, serials: Sequence[int]
    ) -> Measurement:
        call: Callable[[int], Awaitable[object]]
        if kind == "revoke":
            def call(i: int) -> Awaitable[object]:
                return self.ca.revoke(issuer, serials[i], actor=ACTOR, reason=RevocationReason.KEY_COMPROMISE)
        elif kind == "suspend":
            def call(i: int) -> Awaitable[object]:
                return self.ca.suspend(issuer, serials[i], actor=ACTOR)
        else:
            def call(i: int) -> Awaitable[object]:
                return self.ca.resume(issuer, serials[i], actor=ACTOR)
        with self._profiled():
            elapsed, lat = await measure_async(
                self.progress, f"[{key_name}] {kind} c={concurrency}", len(serials), concurrency, call
            )
        return Measurement(
            key_name, kind, f"CertificateAuthority.{kind} (PostgreSQL)", concurrency, len(serials), elapsed, lat
        )

    async def warm_up(self, issuer: str, subject_keys: Sequence[PublicKey]) -> None:
        """Open the issuer key (scrypt) and prepare every statement on every pooled connection."""
        n = self.opts.concurrency
        holders = self.holders(n)
        records = await asyncio.gather(
            *(
                self.ca.issue(issuer=issuer, profile=self.profile.name, actor=ACTOR,
                              public_key=subject_keys[i % len(subject_keys)], subject=holders[i])
                for i in range(n)
            )
        )
        for op in (self.ca.suspend, self.ca.resume, self.ca.revoke):
            await asyncio.gather(*(op(issuer, r.serial, actor=ACTOR) for r in records))

    async def run_issuer(self, key_type: KeyType, issuer: str, subject_keys: Sequence[PublicKey]) -> None:
        key_name = key_type.value
        async with self.pool.acquire() as conn:
            row = await db.get_issuer(conn, issuer)
            assert row is not None
            signing = await load_signing_ca(conn, self.vault, row)
        self.progress.note(f"[{key_name}] warming up (opening the issuer key, preparing statements)")
        await self.warm_up(issuer, subject_keys)

        # Every phase below sits between two raw-signing measurements (the "brackets");
        # its reference is their mean, so drift of the shared machine cancels out.
        pending: list[Measurement] = []

        def close_bracket(rate: float) -> None:
            before = self.brackets[key_name][-2]
            for m in pending:
                m.reference_brackets = (before, rate)
                m.reference = (before + rate) / 2.0
                self._record(m)
            pending.clear()

        self.raw_sign(key_name, signing)
        pending.append(self.build(key_name, signing, subject_keys))
        close_bracket(self.raw_sign(key_name, signing))

        batches: dict[int, list[int]] = {}
        for c in (1, self.opts.concurrency):
            m, batches[c] = await self.issue(key_name, issuer, c, subject_keys)
            pending.append(m)
            close_bracket(self.raw_sign(key_name, signing))
        # Good -> suspended -> good -> revoked: each batch goes through all three changes,
        # at the concurrency it was issued with.
        for kind in ("suspend", "resume", "revoke"):
            for c in (1, self.opts.concurrency):
                pending.append(await self.change(key_name, issuer, kind, c, batches[c]))
                close_bracket(self.raw_sign(key_name, signing))


# Setup and report -------------------------------------------------------------------------


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, relative to the repository, with secrets masked."""
    script = Path(argv[0])
    try:
        shown = os.path.relpath(script.resolve(), REPO_DIR)
    except ValueError:
        shown = script.name
    args = list(argv[1:])
    masked: list[str] = []
    skip = False
    for a in args:
        if skip:
            masked.append("***")
            skip = False
        elif a == "--database-url":
            masked.append(a)
            skip = True
        elif a.startswith("--database-url="):
            masked.append("--database-url=***")
        else:
            masked.append(a)
    return shlex.join(["python", shown, *masked])


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(loop: str) -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl import backend

    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "asyncpg": asyncpg.__version__,
        "event_loop": loop,
        "commit": _git_commit(),
    }
    if loop == "uvloop":
        import uvloop

        info["event_loop"] = f"uvloop {uvloop.__version__}"
    return info


def _git_commit() -> str:
    """The code measured: the commit, marked dirty when the tree has uncommitted changes."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ca_core", "responder"], cwd=here.parent,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' (with uncommitted changes)' if dirty else ''}"


async def server_info(pool: asyncpg.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        return {
            "postgresql": await conn.fetchval("SHOW server_version"),
            "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
            "fsync": await conn.fetchval("SHOW fsync"),
        }


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def render_markdown(report: dict[str, Any], results: Sequence[Measurement]) -> str:
    m = report["machine"]
    lines = [
        "# Issuance benchmark",
        "",
        f"- Date: {report['date']}",
        f"- Command: `{report['command']}` at commit {m.get('commit', 'unknown')}",
        f"- Machine: nproc {m['nproc']} ({m['cpu']}), {m['os']}",
        f"- Python {m['python'].split()[-1]} ({m['event_loop']}), cryptography {m['cryptography']} "
        f"({m['openssl']}), asyncpg {m['asyncpg']}",
        f"- PostgreSQL {m['postgresql']} ({report['database']}; synchronous_commit={m['synchronous_commit']}, "
        f"fsync={m['fsync']})",
        f"- Load average (1 min) before / after: {report['loadavg_before']:.2f} / {report['loadavg_after']:.2f}",
        f"- Workload: {report['count']} operations per measurement (raw signing: and on to at least "
        f"{report['sign_seconds']:g} s); concurrency 1 and {report['concurrency']}; "
        f"profile {report['profile']}; {report['subject_keys']} pre-generated {report['subject_key_type']} "
        "subject keys used in turn (key generation is not measured)",
        f"- Context: {LOAD_MODEL_TEXT}",
    ]
    if report.get("cprofile"):
        lines.append("- **Profiled run** (cProfile on): all rates are inflated by the profiler; do not compare.")
    lines += [
        "",
        "Ratio = the row's rate / the raw signing rate of the same issuer key measured right before and "
        "after the row (the reference column). Status changes sign nothing; their ratio only puts them on "
        "the same scale. Load model = rate / the rate the load model needs.",
        "",
        "| issuer key | measurement | conc. | n | rate (/s) | p50 (ms) | p99 (ms) | raw sign ref (/s) | ratio | load model |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        load = r.load_model
        load_text = f"×{load[1]:,.1f} of {load[0]:g}/s" if load else ""
        lines.append(
            f"| {r.issuer_key} | {r.label} | {r.concurrency} | {r.n} | {_fmt_rate(r.rate)} | "
            f"{r.percentile_ms(0.5):.2f} | {r.percentile_ms(0.99):.2f} | "
            f"{_fmt_rate(r.reference) if r.reference else ''} | {r.ratio:.3f} | {load_text} |"
        )
    lines += ["", "Raw signing drift over the run (all reference brackets, ops/s):", ""]
    for key, rates in report["raw_sign_brackets"].items():
        spread = (max(rates) - min(rates)) / statistics.median(rates) * 100.0
        lines.append(
            f"- {key}: {len(rates)} measurements, median {_fmt_rate(statistics.median(rates))}, "
            f"min {_fmt_rate(min(rates))}, max {_fmt_rate(max(rates))} (spread {spread:.0f}% of the median)"
        )
    sizes = ", ".join(f"{k} {v} bytes" for k, v in report["cert_der_bytes"].items())
    lines += ["", f"Issued certificate size (DER): {sizes}.", ""]
    return "\n".join(lines)


async def run(opts: Options, database_url: str, where: str, argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    progress = Progress(not opts.quiet)
    pool = await db.create_pool(database_url, min_size=opts.concurrency, max_size=opts.concurrency)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn)
            roots = [i for i in await db.list_issuers(conn) if i.kind == "root"]
        if roots:
            raise SystemExit(
                "error: the database already holds a CA; point --database-url at an empty database "
                "(the benchmark writes certificates and append-only audit rows that stay there)"
            )
        vault = KeyVault(Passphrase(PASSPHRASE))
        issuers = {kt: f"bench-{kt.value}" for kt in opts.issuer_key_types}
        progress.note(
            "creating the CA: root, "
            + ", ".join(f"{name} ({kt.value})" for kt, name in issuers.items())
            + ", OCSP signers ec-p256"
        )
        await init_pki(
            pool, vault, clock=SystemClock(), urls=PublicURLs(BASE_URL),
            issuers=[IssuerSpec(name, key_type=kt, ocsp_key_type=KeyType.EC_P256) for kt, name in issuers.items()],
            actor=ACTOR,
        )
        progress.note(f"generating {opts.subject_keys} {opts.subject_key_type.value} subject keys (not measured)")
        subject_keys = [generate_private_key(opts.subject_key_type).public_key() for _ in range(opts.subject_keys)]

        info = machine_info(opts.loop) | await server_info(pool)
        bench = Bench(opts, pool, vault)
        load_before = os.getloadavg()[0]
        started = dt.datetime.now(dt.UTC)
        for kt, name in issuers.items():
            await bench.run_issuer(kt, name, subject_keys)
        load_after = os.getloadavg()[0]
        finished = dt.datetime.now(dt.UTC)
    finally:
        await pool.close()

    report: dict[str, Any] = {
        "benchmark": "issuance",
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "command": command_line(argv),
        "machine": info,
        "database": where,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "count": opts.count,
        "sign_seconds": opts.sign_seconds,
        "concurrency": opts.concurrency,
        "profile": opts.profile,
        "subject_key_type": opts.subject_key_type.value,
        "subject_keys": opts.subject_keys,
        "issuer_key_types": [kt.value for kt in opts.issuer_key_types],
        "load_model": {
            "text": LOAD_MODEL_TEXT,
            "issue_per_s": LOAD_MODEL_ISSUE_PER_S,
            "revoke_burst_per_s": LOAD_MODEL_REVOKE_PER_S,
        },
        "raw_sign_brackets": bench.brackets,
        "cert_der_bytes": bench.cert_der_sizes,
        "cprofile": bool(opts.cprofile),
        "results": [r.to_json() for r in bench.results],
    }
    if bench.profiler is not None and opts.cprofile is not None:
        bench.profiler.dump_stats(opts.cprofile)
        out = io.StringIO()
        pstats.Stats(bench.profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue(), file=sys.stderr)
    return render_markdown(report, bench.results), report


# Command line -----------------------------------------------------------------------------


def _key_type(value: str) -> KeyType:
    try:
        return KeyType.parse(value)
    except Exception:
        raise argparse.ArgumentTypeError(
            f"unknown key type {value!r} (choose from {', '.join(k.value for k in KeyType)})"
        ) from None


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def parse_args(argv: Sequence[str]) -> Options:
    known_types = ", ".join(k.value for k in KeyType)
    parser = argparse.ArgumentParser(
        prog="python bench/issuance.py",
        description=(
            "Measure the embedded CA side by side with raw signing: for each issuing-CA key type, "
            "the issuer key's raw signature rate, the sans-IO certificate build rate "
            "(build_end_entity), issuance through PostgreSQL (CertificateAuthority.issue) and "
            "suspend/resume/revoke through PostgreSQL, at concurrency 1 and N. Every figure is "
            "divided by a raw-signing measurement taken right before and after it, because absolute "
            "times drift on shared machines. Starts a private PostgreSQL in a temporary directory "
            "(stopped and deleted at the end) unless --database-url is given. Prints a Markdown "
            "report to stdout and writes it, with a JSON file of the raw figures, to "
            "bench/results/<YYYY-MM-DD>-issuance.md/.json."
        ),
        epilog=LOAD_MODEL_TEXT + " See bench/README.md for how to read the output.",
    )
    parser.add_argument(
        "--count", type=_positive, default=500, metavar="N",
        help="operations per measurement (signatures, builds, issuances, status changes); default 500",
    )
    parser.add_argument(
        "--sign-seconds", type=float, default=0.25, metavar="S",
        help="every raw signing measurement runs --count signatures and on until at least S seconds have "
        "passed, so that fast keys (ECDSA) give a steady reference; default 0.25",
    )
    parser.add_argument(
        "--concurrency", type=_positive, default=8, metavar="N",
        help="concurrent operations (asyncio.gather of N workers over a pool of N connections) for the "
        "second run of every PostgreSQL measurement; the first run is at concurrency 1; at least 2; default 8",
    )
    parser.add_argument(
        "--issuer-key-type", type=_key_type, action="append", dest="issuer_key_types", metavar="TYPE",
        help=f"key type of an issuing CA to create and measure; repeat for several ({known_types}); "
        "default: rsa3072 and ec-p256. Every issuer gets an ec-p256 OCSP signer",
    )
    parser.add_argument(
        "--subject-key-type", type=_key_type, default=KeyType.RSA2048, metavar="TYPE",
        help="key type of the pre-generated citizen (subject) keys; default rsa2048 (the default of "
        "CertificateAuthority.issue_with_generated_key)",
    )
    parser.add_argument(
        "--subject-keys", type=_positive, default=16, metavar="N",
        help="how many distinct subject keys to pre-generate and use in turn; default 16",
    )
    parser.add_argument(
        "--profile", default="citizen-signing", choices=sorted(END_ENTITY_PROFILES),
        help="certificate profile to issue; default citizen-signing",
    )
    parser.add_argument(
        "--database-url", metavar="URL",
        help="use this PostgreSQL database instead of starting a private one; it must hold no CA yet "
        "(the benchmark creates one, and its rows stay: use a throwaway database). Shown as *** in reports",
    )
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop",
        help="event loop; default uvloop, as the certstatus server runs",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR",
        help="where to write <YYYY-MM-DD>-issuance.md and .json (an existing file of the same day is "
        "replaced); default bench/results",
    )
    parser.add_argument("--no-save", action="store_true", help="print the report only; write no files")
    parser.add_argument(
        "--cprofile", type=Path, metavar="FILE",
        help="profile the measured phases with cProfile, write the stats to FILE (read with python -m pstats) "
        "and print the top functions to stderr; inflates every timing, so nothing is saved to --results-dir",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ns = parser.parse_args(argv)
    if ns.concurrency < 2:
        parser.error("--concurrency must be at least 2 (concurrency 1 is always measured)")
    key_types = tuple(dict.fromkeys(ns.issuer_key_types or DEFAULT_ISSUER_KEY_TYPES))
    return Options(
        count=ns.count,
        sign_seconds=max(0.0, ns.sign_seconds),
        concurrency=ns.concurrency,
        issuer_key_types=key_types,
        subject_key_type=ns.subject_key_type,
        subject_keys=ns.subject_keys,
        profile=ns.profile,
        database_url=ns.database_url,
        loop=ns.loop,
        results_dir=None if ns.no_save or ns.cprofile else ns.results_dir,
        cprofile=ns.cprofile,
        quiet=ns.quiet,
    )


def _run_loop(opts: Options, coro: Awaitable[Any]) -> Any:
    if opts.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


def _terminate(signum: int, _frame: object) -> None:
    # Unwind normally so the finally blocks stop the servers and remove the directory.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    opts = parse_args(argv[1:])
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if opts.database_url:
            markdown, report = _run_loop(opts, run(opts, opts.database_url, "given by --database-url", argv))
        else:
            with tempfile.TemporaryDirectory(prefix="certstatus-bench-") as tmp:
                services = EmbeddedServices(Path(tmp), valkey=False)
                if not opts.quiet:
                    print("starting a private PostgreSQL in a temporary directory", file=sys.stderr, flush=True)
                services.start()
                try:
                    markdown, report = _run_loop(
                        opts, run(opts, services.database_url, "embedded, private to this run", argv)
                    )
                finally:
                    services.stop()
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    print(markdown)
    if opts.results_dir is not None:
        opts.results_dir.mkdir(parents=True, exist_ok=True)
        stem = opts.results_dir / f"{report['started'][:10]}-issuance"
        stem.with_suffix(".md").write_text(markdown)
        stem.with_suffix(".json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        shown = os.path.relpath(stem, Path.cwd()) if stem.is_relative_to(Path.cwd()) else stem.name
        print(f"wrote {shown}.md and {shown}.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
