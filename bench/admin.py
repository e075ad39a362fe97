#!/usr/bin/env python
"""Bulk revocation through the admin API: one ``POST /v1/revocations:batch`` next to the same
revocations as single requests and next to ``CertificateAuthority.revoke`` in process, in ONE
run, each checked in PostgreSQL and over OCSP.

Goal (issue 5): bulk revocation of 10,000 certificates completes in under 10 s, and the
revoked certificates answer ``revoked`` over OCSP within the propagation bound (1 s: design
invariant 3, the goal bench/ocsp.py measures) of the batch's acknowledgement.

1. **Fill**: a fresh embedded PostgreSQL + Valkey, a CA as in bench/ocsp.py (root, ``moica``
   and ``gca`` with ECDSA P-256 keys and OCSP signers, 16 CRL partitions), and three sets of
   ``--count`` good certificates (plus a few for warm-ups) COPY-loaded with
   bench/population.py; ``certstatus signer --once --processes 2`` signs their OCSP
   responses. A PostgreSQL commit reference (1 and 8 connections) is measured.
2. **Servers**: ``certstatus admin serve``, ``certstatus serve`` and ``certstatus signer``
   as separate processes; an operator token from ``certstatus admin token create``.
3. **Variants**, each on its own fresh set of certificates, after a small warm-up through
   the same path and with the signer idle:

   a. one ``POST /v1/revocations:batch`` with all N items (aiohttp client; wall time from
      sending the request to reading the whole response);
   b. N ``POST /v1/certificates/{issuer}/{serial}/revoke`` from ``--concurrency`` clients,
      each on its own keep-alive connection (closed loop; per-request latency);
   c. ``CertificateAuthority.revoke`` in this process from ``--concurrency`` tasks over a
      pool as large as the admin server's: the floor without HTTP.

   After each: PostgreSQL must show exactly N certificates changed to revoked (and the
   total of revoked certificates grown by N), N outbox events and N audit rows for them;
   (a)'s answer must say revoked == N, failed == 0. ``--sample`` of the N, asked over
   OCSP (GET) before the variant (good, so the responder caches them), are polled from
   the acknowledgement until each answers revoked; then every sampled answer is checked
   with cryptography and with ``openssl ocsp``. Also timed: until the signer has handled
   every event of the variant, and until a delta CRL covers them.

Prints a Markdown report and writes it, with the raw figures as JSON, to
``bench/results/<YYYY-MM-DD>-admin.md`` / ``.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "certstatus admin benchmark passphrase (throwaway)"
BASE_URL = "http://admin.bench.invalid"
ISSUERS = ("moica", "gca")
MOICA_SHARE = 0.75
CRL_PARTITIONS = 16
ACTOR = "bench"
TOKEN_NAME = "bench-operator"
WARMUP = 32  # certificates revoked through each variant's path before it is timed
MAX_BATCH = 10_000  # responder.admin.MAX_BATCH

GOALS = {
    "batch_count": 10_000,
    "batch_s": 10.0,  # 10,000 revocations in one batch in under 10 s
    "propagation_s": 1.0,  # every sampled certificate answers revoked within 1 s of the acknowledgement
}

VARIANTS = {
    "a": "one POST /v1/revocations:batch",
    "b": "single POST …/revoke requests",
    "c": "CertificateAuthority.revoke in process",
}


# Small helpers ------------------------------------------------------------------------------------------


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values), "mean": statistics.fmean(values), "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9), "p99": percentile(values, 0.99), "max": max(values),
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uptime_text() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    la = os.getloadavg()
    return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


# CPU accounting --------------------------------------------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds used so far) for every process."""
    out: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        rest = text.rsplit(")", 1)[1].split()
        out[int(name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / _CLK)
    return out


def machine_busy() -> tuple[float, float]:
    """CPU seconds all cores spent since boot (/proc/stat) in processes (user, nice, system)
    and in interrupts (irq, softirq: e.g. loopback TCP, charged to no process) or stolen."""
    with contextlib.suppress(OSError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in fields]
        # user nice system idle iowait irq softirq steal (guest time is within user)
        return (v[0] + v[1] + v[2]) / _CLK, (v[5] + v[6] + v[7]) / _CLK
    return 0.0, 0.0


def cpu_snapshot(roots: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds of each named process and all its live descendants, of this process, and
    of the whole machine."""
    table = _proc_table()
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    out: dict[str, float] = {}
    for name, root in roots.items():
        if root is None or root not in table:
            continue
        total, stack = 0.0, [root]
        while stack:
            p = stack.pop()
            total += table[p][1]
            stack.extend(children.get(p, ()))
        out[name] = total
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["bench client"] = ru.ru_utime + ru.ru_stime
    out["machine"], out["interrupts"] = machine_busy()
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    d = {k: after[k] - before[k] for k in after if k in before}
    ours = sum(v for k, v in d.items() if k not in ("machine", "interrupts"))
    d["other processes"] = max(0.0, d.pop("machine", 0.0) - ours)
    d["irq, softirq, steal"] = d.pop("interrupts", 0.0)
    return d


# Processes we start ----------------------------------------------------------------------------------------


class Processes:
    """Long-running subprocesses this run starts, each in its own session; stopped by their own id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            cwd=code_root(),
        )  # fmt: skip
        log.close()
        self.procs[name] = p
        return p

    def pid(self, name: str) -> int | None:
        p = self.procs.get(name)
        return p.pid if p is not None and p.poll() is None else None

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.log_dir / f"{name}.log").read_text(errors="replace")
        return ""

    def check_alive(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log(name)[-3000:]}")

    async def wait_for(self, name: str, pattern: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log(name)):
                return
            self.check_alive(name)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} did not start in {timeout:.0f} s:\n{self.log(name)[-3000:]}")

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)  # the group of the process we started (its own session)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # whatever it left in its group (spawned workers)
        return p.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


# Machine and code ------------------------------------------------------------------------------------------


def code_root() -> Path:
    """The checkout the project is imported from (``python -m responder`` runs from there)."""
    import ca_core

    return Path(ca_core.__file__).resolve().parent.parent


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def code_commit() -> str:
    """The commit of the code measured, marked when ca_core/ or responder/ differ from it."""
    root = code_root()
    try:
        commit = _git(["rev-parse", "--short", "HEAD"], root)
        dirty = _git(["status", "--porcelain", "--", "ca_core", "responder"], root)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' (with uncommitted changes)' if dirty else ''}"


def bench_commit() -> str:
    try:
        commit = _git(["rev-parse", "--short", "HEAD"], BENCH_DIR)
        dirty = _git(["status", "--porcelain", "--", "admin.py", "population.py"], BENCH_DIR)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, with the script relative to the repository and options that name
    this machine's paths replaced by placeholders."""
    try:
        shown = os.path.relpath(Path(argv[0]).resolve(), REPO_DIR)
    except ValueError:
        shown = Path(argv[0]).name
    hide = {"--data-dir": "DIR", "--results-dir": "DIR", "--openssl": "OPENSSL", "--py-spy": "FILE"}
    masked: list[str] = []
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        name = a.split("=", 1)[0]
        if name in hide and "=" in a:
            masked.append(f"{name}={hide[name]}")
        elif a in hide and i + 1 < len(args):
            masked += [a, hide[a]]
            i += 1
        else:
            masked.append(a)
        i += 1
    return shlex.join(["python", shown, *masked])


def machine_info(opts: Options) -> dict[str, Any]:
    import aiohttp
    import asyncpg
    import cryptography
    import uvloop
    from cryptography.hazmat.backends.openssl import backend

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    ossl = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        ossl = subprocess.run([opts.openssl, "version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "event_loop": f"uvloop {uvloop.__version__}",
        "aiohttp": aiohttp.__version__,
        "asyncpg": asyncpg.__version__,
        "cryptography": cryptography.__version__,
        "cryptography_openssl": backend.openssl_version_text(),
        "openssl_cli": ossl,
        "commit": code_commit(),
        "bench_commit": bench_commit(),
    }


# Options ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    count: int
    concurrency: int
    sample: int
    reason: str
    idempotency_keys: bool
    delta_interval: int
    signer_processes: int
    workers: int
    timeout: float
    py_spy: Path | None
    data_dir: Path | None
    keep_data: bool
    results_dir: Path | None
    seed: int
    quick: bool
    openssl: str


def service_env(svc: Any, opts: Options, public_port: int, admin_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=svc.database_url,
        REDIS_URL=svc.redis_url,
        CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
        CERTSTATUS_LOG_LEVEL="WARNING",
        CERTSTATUS_PUBLIC_BASE_URL=BASE_URL,
        CERTSTATUS_PUBLIC_PORT=str(public_port),
        CERTSTATUS_ADMIN_PORT=str(admin_port),
        CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS=str(opts.delta_interval),
    )
    env["PYTHONPATH"] = os.pathsep.join([str(code_root()), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def certstatus(svc: Any, *args: str) -> list[str]:
    return [sys.executable, "-m", "responder", "--data-dir", str(svc.data_dir), *args]


# OCSP over HTTP --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sampled:
    """A certificate whose OCSP answer is checked."""

    issuer_id: int
    issuer: str
    serial: int
    der: bytes
    get_path: str  # /ocsp/<url-encoded base64 request>
    pem_file: Path


class OCSPChecker:
    """Asks the public responder (GET, SHA-1 CertID as openssl sends) and checks answers."""

    def __init__(self, port: int, issuer_certs: dict[int, Any], reason_flag: Any) -> None:
        self.port = port
        self.issuer_certs = issuer_certs
        self.reason_flag = reason_flag
        self.session: Any = None
        self.responders_ok: set[bytes] = set()

    async def __aenter__(self) -> OCSPChecker:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=8), timeout=aiohttp.ClientTimeout(total=30)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    def make(self, issuer_id: int, issuer: str, serial: int, der: bytes, work: Path) -> Sampled:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509 import ocsp

        cert = x509.load_der_x509_certificate(der)
        req = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, self.issuer_certs[issuer_id], hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        path = "/ocsp/" + urllib.parse.quote(base64.b64encode(req).decode(), safe="")
        pem = work / "certs" / f"{issuer}-{serial:X}.pem"
        pem.parent.mkdir(exist_ok=True)
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Sampled(issuer_id, issuer, serial, der, path, pem)

    async def fetch(self, s: Sampled) -> bytes:
        from yarl import URL

        url = URL(f"http://127.0.0.1:{self.port}{s.get_path}", encoded=True)
        async with self.session.get(url) as resp:
            body: bytes = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"OCSP GET answered HTTP {resp.status}")
            return body

    @staticmethod
    def status_of(body: bytes) -> str:
        from cryptography.x509 import ocsp

        resp = ocsp.load_der_ocsp_response(body)
        if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return resp.response_status.name.lower()
        return resp.certificate_status.name.lower()

    async def statuses(self, sample: Sequence[Sampled]) -> collections.Counter[str]:
        answers = await asyncio.gather(*(self.fetch(s) for s in sample))
        return collections.Counter(self.status_of(b) for b in answers)

    async def wait_revoked(self, sample: Sequence[Sampled], t0: float, timeout: float) -> dict[str, Any]:
        """Poll each sampled certificate (2 ms apart) from t0 until it answers revoked; an
        answer other than good or revoked is recorded as wrong (every answer is checked again
        afterwards). A certificate whose first answer is already revoked was signed before the
        polls began: its time is the poll's own latency, an upper bound; the result says how
        many did, and how long the first answers took."""
        started = time.perf_counter() - t0
        seen: dict[int, float] = {}
        first: list[float] = []
        at_first = 0
        wrong: list[str] = []
        polls = 0

        async def poll(s: Sampled) -> None:
            nonlocal polls, at_first
            while time.perf_counter() - t0 < timeout:
                status = self.status_of(await self.fetch(s))
                polls += 1
                now = time.perf_counter() - t0
                if s.serial not in first_seen:
                    first_seen.add(s.serial)
                    first.append(now)
                    at_first += status == "revoked"
                if status == "revoked":
                    seen[s.serial] = now
                    return
                if status != "good":
                    wrong.append(f"{s.issuer} {s.serial:X}: {status} while waiting")
                await asyncio.sleep(0.002)

        first_seen: set[int] = set()
        await asyncio.gather(*(poll(s) for s in sample))
        times = list(seen.values())
        return {"seen": len(times), "missing": len(sample) - len(times), "polls": polls, "wrong": wrong[:10],
                "s": summary(times), "all_s": max(times) if len(times) == len(sample) else None,
                "polls_started_s": started, "revoked_at_first_poll": at_first, "first_answer_s": summary(first)}  # fmt: skip

    def check(self, s: Sampled, body: bytes, revoked_at: dt.datetime) -> str:
        """'ok' or what is wrong with a revoked answer (cryptography; signature verified)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509 import ocsp

        resp = ocsp.load_der_ocsp_response(body)
        if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return f"response status {resp.response_status.name}"
        if resp.serial_number != s.serial:
            return "serial mismatch"
        if resp.certificate_status is not ocsp.OCSPCertStatus.REVOKED:
            return f"status {resp.certificate_status.name}"
        if resp.revocation_reason != self.reason_flag:
            return f"reason {resp.revocation_reason}"
        if resp.revocation_time_utc != revoked_at.replace(microsecond=0):
            return f"revocation time {resp.revocation_time_utc} is not the record's {revoked_at}"
        now = dt.datetime.now(dt.UTC)
        if not (
            resp.this_update_utc <= now + dt.timedelta(seconds=5)
            and resp.next_update_utc
            and resp.next_update_utc > now
        ):
            return "outside its validity"
        responder = resp.certificates[0]
        der = responder.public_bytes(serialization.Encoding.DER)
        if der not in self.responders_ok:
            responder.verify_directly_issued_by(self.issuer_certs[s.issuer_id])
            eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                return "responder certificate is not an OCSP signer"
            self.responders_ok.add(der)
        key = responder.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        try:
            key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm))
        except Exception:  # noqa: BLE001
            return "bad signature"
        return "ok"


async def openssl_check(opts: Options, port: int, sample: Sequence[Sampled], issuer_pems: dict[int, Path],
                        root_pem: Path, reason: str) -> dict[str, Any]:  # fmt: skip
    """``openssl ocsp`` (POST, signature verified against the root) for every sampled certificate."""
    gate = asyncio.Semaphore(4)
    verdicts: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []

    async def one(s: Sampled) -> None:
        # Run from the certificates' directory with relative names: the output names no path of this machine.
        issuer = issuer_pems[s.issuer_id].name
        argv = [opts.openssl, "ocsp", "-issuer", issuer, "-cert", s.pem_file.name, "-url", f"http://127.0.0.1:{port}/ocsp",
                "-no_nonce", "-CAfile", root_pem.name, "-verify_other", issuer]  # fmt: skip
        async with gate:
            p = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=s.pem_file.parent
            )
            out, err = await p.communicate()
        text = out.decode(errors="replace") + err.decode(errors="replace")
        ok = (p.returncode == 0 and "Response verify OK" in text and f"{s.pem_file.name}: revoked" in text
              and f"Reason: {reason}" in text)  # fmt: skip
        verdicts["revoked, verified" if ok else "wrong"] += 1
        if not ok:
            wrong.append(f"{s.issuer} {s.serial:X}: " + " | ".join(text.strip().splitlines()[:4]))

    await asyncio.gather(*(one(s) for s in sample))
    return {"checked": len(sample), **verdicts, "wrong_examples": wrong[:5]}


# PostgreSQL checks -----------------------------------------------------------------------------------------


async def db_marks(conn: Any) -> dict[str, int]:
    return {
        "revoked_total": await conn.fetchval("SELECT count(*) FROM certificates WHERE status = 'revoked'"),
        "outbox_id": await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox"),
        "audit_id": await conn.fetchval("SELECT coalesce(max(id), 0) FROM audit_log"),
        "idempotency_keys": await conn.fetchval("SELECT count(*) FROM idempotency_keys"),
    }


_SET = "s(i, k) AS (SELECT * FROM unnest($1::smallint[], $2::bytea[]))"


async def verify_database(conn: Any, keys: Sequence[tuple[int, bytes]], before: dict[str, int], *, reason: int,
                          actor: str, since: dt.datetime, until: dt.datetime, idempotency: bool) -> dict[str, Any]:  # fmt: skip
    """Count what the variant wrote for its N certificates (and what it wrote besides)."""
    n = len(keys)
    ids = [k[0] for k in keys]
    serials = [k[1] for k in keys]
    c = await conn.fetchrow(
        f"""WITH {_SET}
            SELECT count(*) AS found,
                   count(*) FILTER (WHERE c.status = 'revoked') AS revoked,
                   count(*) FILTER (WHERE c.status = 'revoked' AND c.reason = $3) AS with_reason,
                   count(*) FILTER (WHERE c.revoked_at BETWEEN $4 AND $5 AND c.updated_at = c.revoked_at) AS in_window
            FROM certificates c JOIN s ON c.issuer_id = s.i AND c.serial = s.k""",
        ids, serials, reason, since, until,
    )  # fmt: skip
    o = await conn.fetchrow(
        f"""WITH {_SET}
            SELECT count(*) AS events, count(DISTINCT (o.issuer_id, o.serial)) AS certificates,
                   count(*) FILTER (WHERE o.event = 'revoked' AND o.status = 'revoked') AS revoked_events
            FROM outbox o JOIN s ON o.issuer_id = s.i AND o.serial = s.k WHERE o.id > $3""",
        ids, serials, before["outbox_id"],
    )  # fmt: skip
    a = await conn.fetchrow(
        f"""WITH {_SET}
            SELECT count(*) AS rows, count(DISTINCT (a.issuer_id, a.serial)) AS certificates,
                   count(*) FILTER (WHERE a.action = 'certificate.revoke' AND a.actor = $4
                                    AND a.before->>'status' = 'good' AND a.after->>'status' = 'revoked') AS revocations
            FROM audit_log a JOIN s ON a.issuer_id = s.i AND a.serial = s.k WHERE a.id > $3""",
        ids, serials, before["audit_id"], actor,
    )  # fmt: skip
    after = await db_marks(conn)
    outbox_new = await conn.fetchval("SELECT count(*) FROM outbox WHERE id > $1", before["outbox_id"])
    audit_new = await conn.fetchval("SELECT count(*) FROM audit_log WHERE id > $1", before["audit_id"])
    checks = [
        ("certificates of the set now revoked", n, c["revoked"]),
        (f"… with reason code {reason}", n, c["with_reason"]),
        ("… revoked_at (= updated_at) within the variant's wall-clock window", n, c["in_window"]),
        ("revoked certificates in the whole table: growth", n, after["revoked_total"] - before["revoked_total"]),
        ("outbox events for the set (all 'revoked')", n, o["revoked_events"]),
        ("… certificates they name (one event each)", n, o["certificates"]),
        ("outbox rows written in all", n, outbox_new),
        (f"audit rows for the set (certificate.revoke by {actor}, good → revoked)", n, a["revocations"]),
        ("… certificates they name (one row each)", n, a["certificates"]),
        ("audit rows written in all", n, audit_new),
    ]
    if idempotency:
        checks.append(("idempotency keys stored", n, after["idempotency_keys"] - before["idempotency_keys"]))
    return {
        "checks": [{"what": w, "expected": e, "got": g, "ok": e == g} for w, e, g in checks],
        "ok": all(e == g for _, e, g in checks),
    }


async def wait_outbox_drained(conn: Any, mark: int, t0: float, timeout: float) -> dict[str, Any]:
    """From t0 (the acknowledgement): the signer's backlog then, and when it had handled every
    event written after ``mark``."""
    backlog = None
    while True:
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL AND id > $1", mark)
        if backlog is None:
            backlog = pending
        if pending == 0:
            return {"backlog_at_ack": backlog, "drained_s": time.perf_counter() - t0}
        if time.perf_counter() - t0 > timeout:
            return {"backlog_at_ack": backlog, "drained_s": None, "still_pending": pending}
        await asyncio.sleep(0.02)


async def wait_delta(conn: Any, mark: int, t0: float, timeout: float) -> float | None:
    """Seconds from t0 until every issuer with events after ``mark`` has a CRL publication
    whose cut covers its last one (a delta CRL, normally)."""
    last = {r["issuer_id"]: r["last"] for r in await conn.fetch(
        "SELECT issuer_id, max(id) AS last FROM outbox WHERE id > $1 GROUP BY issuer_id", mark)}  # fmt: skip
    while time.perf_counter() - t0 < timeout:
        covered = 0
        for issuer_id, last_id in last.items():
            m = await conn.fetchval("SELECT max(outbox_mark) FROM crl_publications WHERE issuer_id = $1", issuer_id)
            covered += m is not None and m >= last_id
        if covered == len(last):
            return time.perf_counter() - t0
        await asyncio.sleep(0.05)
    return None


_ACTIVITY = """SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ': ' || wait_event, 'on CPU')
                  ELSE state END AS what, count(*) AS n
               FROM pg_stat_activity
               WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                 AND state IN ('active', 'idle in transaction')
               GROUP BY 1"""
_LOCK_WAITS = """SELECT wait_event || ' in ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 40) AS statement,
                        count(*) AS n
                 FROM pg_stat_activity
                 WHERE backend_type = 'client backend' AND state = 'active' AND wait_event_type = 'Lock'
                 GROUP BY 1"""


async def activity_sampler(conn: Any, mark: int, window: Window) -> None:
    """Every 50 ms, what PostgreSQL's client backends are doing (executing: on CPU or waiting
    for what; or idle in a transaction, i.e. waiting for their client); every 0.25 s the
    signer's backlog (events of this variant not yet handled)."""
    k = 0
    while True:
        if k % 5 == 0:
            n = await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL AND id > $1", mark)
            window.backlog.append((round(time.perf_counter() - window.t_prepared, 3), n))
        for r in await conn.fetch(_ACTIVITY):
            window.activity[r["what"]] += r["n"]
        for r in await conn.fetch(_LOCK_WAITS):
            window.lock_waits[r["statement"]] += r["n"]
        window.activity_samples += 1
        k += 1
        await asyncio.sleep(0.05)


async def commit_reference(url: str, seconds: float) -> dict[str, Any]:
    """PostgreSQL's own commit rate here: 1 and 8 connections, each committing one-row
    INSERT transactions in a loop (the fsync floor under every revocation), and 8 whose
    transactions also NOTIFY, as every status change does (``insert_outbox``): PostgreSQL
    serialises the commits of notifying transactions on one lock, held until the commit is
    flushed."""
    from ca_core.storage import postgres as db

    out: dict[str, Any] = {}
    conns = [await db.connect(url) for _ in range(8)]
    try:
        await conns[0].execute("CREATE TABLE IF NOT EXISTS bench_commit_reference (at timestamptz NOT NULL)")
        plain = "INSERT INTO bench_commit_reference VALUES (now())"
        notify = "WITH i AS (INSERT INTO bench_commit_reference VALUES (now())) SELECT pg_notify('bench_commit', 'x')"
        for name, n, sql in (("c1", 1, plain), ("c8", 8, plain), ("c8_notify", 8, notify)):
            stop = time.perf_counter() + seconds
            counts = [0] * n

            async def loop(k: int, stop: float = stop, counts: list[int] = counts, sql: str = sql) -> None:
                c = conns[k]
                while time.perf_counter() < stop:
                    async with c.transaction():
                        await c.execute(sql)
                    counts[k] += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(loop(k) for k in range(n)))
            out[name] = sum(counts) / (time.perf_counter() - t0)
        await conns[0].execute("DROP TABLE bench_commit_reference")
    finally:
        for c in conns:
            await c.close()
    return out


# The three variants ----------------------------------------------------------------------------------------


class Window:
    """What surrounds a variant's timed section: ``prepare()`` right before it (the warm-up's
    events handled, a checkpoint, the OCSP sample asked once and cached as good, the marks
    and CPU counters read, the activity sampler started) and ``acked()`` right after it."""

    def __init__(self, checker: OCSPChecker, sample: list[Sampled], roots: dict[str, int | None], watch: Any,
                 sampler: Any) -> None:  # fmt: skip
        self.checker = checker
        self.sample = sample
        self.roots = roots
        self.watch = watch
        self.sampler_conn = sampler
        self.backlog: list[tuple[float, int]] = []
        self.activity: collections.Counter[str] = collections.Counter()
        self.lock_waits: collections.Counter[str] = collections.Counter()
        self.activity_samples = 0
        self.task: asyncio.Task[None] | None = None
        self.t_prepared = 0.0

    async def prepare(self) -> None:
        await wait_outbox_drained(self.watch, 0, time.perf_counter(), 120.0)
        with contextlib.suppress(Exception):
            await self.watch.execute("CHECKPOINT")
        await asyncio.sleep(1.0)
        self.before_ocsp = dict(await self.checker.statuses(self.sample))
        self.marks = await db_marks(self.watch)
        self.loadavg = os.getloadavg()[0]
        self.t_prepared = time.perf_counter()
        self.task = asyncio.create_task(activity_sampler(self.sampler_conn, self.marks["outbox_id"], self))
        self.cpu0 = cpu_snapshot(self.roots)

    def acked(self) -> None:
        self.cpu1 = cpu_snapshot(self.roots)
        if self.task is not None:
            self.task.cancel()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def _headers(token: str, key: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        h["Idempotency-Key"] = key
    return h


async def variant_batch(opts: Options, base: str, token: str, warm: list[tuple[str, int]], items: list[tuple[str, int]],
                        window: Window, run_id: str, py_spy: Callable[[], Awaitable[Callable[[], Awaitable[None]]]] | None,
                        ) -> dict[str, Any]:  # fmt: skip
    """(a) one POST /v1/revocations:batch with every item."""
    import aiohttp
    import orjson

    def body(lst: list[tuple[str, int]]) -> bytes:
        return orjson.dumps({"items": [{"issuer": i, "serial": f"{s:X}"} for i, s in lst], "reason": opts.reason})

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=opts.timeout)) as session:
        url = f"{base}/v1/revocations:batch"
        async with session.post(
            url, data=body(warm), headers=_headers(token, f"{run_id}-a-warm" if opts.idempotency_keys else None)
        ) as r:
            warm_answer = await r.json()
            if r.status != 200 or warm_answer.get("revoked") != len(warm):
                raise RuntimeError(f"warm-up batch answered {r.status}: {str(warm_answer)[:500]}")
        await window.prepare()
        async with session.get(f"{base}/v1/issuers", headers=_headers(token)) as r:  # the connection is open and warm
            await r.read()
        payload = body(items)
        stop_profile = await py_spy() if py_spy is not None else None
        wall0 = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        async with session.post(
            url, data=payload, headers=_headers(token, f"{run_id}-a" if opts.idempotency_keys else None)
        ) as r:
            t_head = time.perf_counter()
            raw = await r.read()
            status = r.status
        t1 = time.perf_counter()
        window.acked()
        wall1 = dt.datetime.now(dt.UTC)
        if stop_profile is not None:
            await stop_profile()
    return {
        "t0": t0, "t_ack": t1, "wall0": wall0, "wall1": wall1,
        "elapsed_s": t1 - t0, "rate": len(items) / (t1 - t0), "time_to_headers_s": t_head - t0,
        "request_bytes": len(payload), "response_bytes": len(raw), "raw": raw, "status": status,
    }  # fmt: skip


def check_batch_answer(raw: bytes, status: int, items: list[tuple[str, int]]) -> dict[str, Any]:
    """(a)'s answer: 200, revoked == N, failed == 0, one ok result per item in order (parsed
    after the OCSP polls, so that parsing 5 MB of JSON does not delay them)."""
    import orjson

    answer = orjson.loads(raw)
    results = answer.get("results", []) if isinstance(answer, dict) else []
    problems: collections.Counter[str] = collections.Counter()
    wrong = 0
    for i, res in enumerate(results):
        issuer, serial = items[i]
        cert = res.get("certificate") or {}
        if not (res.get("index") == i and res.get("ok") is True and cert.get("status") == "revoked"
                and cert.get("issuer") == issuer and int(cert.get("serial", "0"), 16) == serial):  # fmt: skip
            wrong += 1
            problems[(res.get("problem") or {}).get("type", "wrong result")] += 1
    checks = [
        ("HTTP status", 200, status),
        ("revoked", len(items), answer.get("revoked")),
        ("failed", 0, answer.get("failed")),
        ("results, one per item, in order, each ok with the certificate revoked", len(items), len(results) - wrong),
    ]
    return {
        "answer_checks": [{"what": w, "expected": e, "got": g, "ok": e == g} for w, e, g in checks],
        "problems": dict(problems),
    }


async def variant_single(opts: Options, base: str, token: str, warm: list[tuple[str, int]], items: list[tuple[str, int]],
                         window: Window, run_id: str) -> dict[str, Any]:  # fmt: skip
    """(b) one POST …/revoke per certificate from ``concurrency`` clients, each on its own
    keep-alive connection, each sending its next request when the previous is answered."""
    import aiohttp
    import orjson

    payload = orjson.dumps({"reason": opts.reason})
    latencies = [0.0] * len(items)
    statuses: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                              timeout=aiohttp.ClientTimeout(total=None, sock_read=opts.timeout))
        for _ in range(opts.concurrency)
    ]  # fmt: skip
    try:

        async def client(session: Any, todo: Any, prefix: str, record: bool) -> None:
            for i, (issuer, serial) in todo:
                key = f"{run_id}-{prefix}-{i}" if opts.idempotency_keys else None
                t = time.perf_counter()
                async with session.post(f"{base}/v1/certificates/{issuer}/{serial:X}/revoke", data=payload,
                                        headers=_headers(token, key)) as r:  # fmt: skip
                    raw = await r.read()
                    status = r.status
                if not record:
                    continue
                latencies[i] = time.perf_counter() - t
                ok = status == 200 and orjson.loads(raw).get("status") == "revoked"
                statuses["200 revoked" if ok else f"HTTP {status}"] += 1
                if not ok and len(wrong) < 10:
                    wrong.append(f"{issuer} {serial:X}: HTTP {status} {raw[:200]!r}")

        warm_todo = iter(enumerate(warm))
        await asyncio.gather(*(client(s, warm_todo, "b-warm", False) for s in sessions))
        await window.prepare()
        todo = iter(enumerate(items))
        wall0 = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        await asyncio.gather(*(client(s, todo, "b", True) for s in sessions))
        t1 = time.perf_counter()
        window.acked()
        wall1 = dt.datetime.now(dt.UTC)
    finally:
        for s in sessions:
            await s.close()
    return {
        "t0": t0, "t_ack": t1, "wall0": wall0, "wall1": wall1, "elapsed_s": t1 - t0, "rate": len(items) / (t1 - t0),
        "latency_s": summary(latencies), "answers": dict(statuses), "wrong_examples": wrong,
        "answer_checks": [{"what": "answers 200 with the certificate revoked", "expected": len(items),
                           "got": statuses["200 revoked"], "ok": statuses["200 revoked"] == len(items)}],
    }  # fmt: skip


async def variant_inprocess(opts: Options, url: str, warm: list[tuple[str, int]], items: list[tuple[str, int]],
                            window: Window, run_id: str, urls: Any) -> dict[str, Any]:  # fmt: skip
    """(c) CertificateAuthority.revoke from ``concurrency`` tasks, over a pool as large as the
    admin server's (CERTSTATUS_DB_POOL_SIZE, default 10)."""
    from ca_core.clock import SystemClock
    from ca_core.errors import CAError
    from ca_core.lifecycle import CertificateAuthority
    from ca_core.storage import postgres as db

    pool = await db.create_pool(url, max_size=10)
    latencies = [0.0] * len(items)
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        ca = CertificateAuthority(pool, None, clock=SystemClock(), urls=urls)

        async def task(todo: Any, prefix: str, record: bool) -> None:
            for i, (issuer, serial) in todo:
                key = f"{run_id}-{prefix}-{i}" if opts.idempotency_keys else None
                t = time.perf_counter()
                try:
                    rec = await ca.revoke(issuer, serial, actor=ACTOR, reason=opts.reason, idempotency_key=key)
                    outcome = "revoked" if rec.status.value == "revoked" else rec.status.value
                except CAError as e:
                    outcome = e.code
                if record:
                    latencies[i] = time.perf_counter() - t
                    outcomes[outcome] += 1

        warm_todo = iter(enumerate(warm))
        await asyncio.gather(*(task(warm_todo, "c-warm", False) for _ in range(opts.concurrency)))
        await window.prepare()
        todo = iter(enumerate(items))
        wall0 = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        await asyncio.gather(*(task(todo, "c", True) for _ in range(opts.concurrency)))
        t1 = time.perf_counter()
        window.acked()
        wall1 = dt.datetime.now(dt.UTC)
    finally:
        await pool.close()
    return {
        "t0": t0, "t_ack": t1, "wall0": wall0, "wall1": wall1, "elapsed_s": t1 - t0, "rate": len(items) / (t1 - t0),
        "latency_s": summary(latencies), "answers": dict(outcomes),
        "answer_checks": [{"what": "calls returned the certificate revoked", "expected": len(items),
                           "got": outcomes["revoked"], "ok": outcomes["revoked"] == len(items)}],
    }  # fmt: skip


# The run ---------------------------------------------------------------------------------------------------


async def run(opts: Options, svc: Any, procs: Processes, work: Path, argv: Sequence[str]) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from ca_core import population as pop
    from ca_core.clock import SystemClock
    from ca_core.keystore import KeyVault, Passphrase
    from ca_core.model import KeyType, RevocationReason
    from ca_core.pki import IssuerSpec, init_pki, load_signing_ca
    from ca_core.profiles import PublicURLs
    from ca_core.storage import postgres as db
    from ca_core.storage import responses as store
    from responder.progress import Progress

    reason = RevocationReason.parse(opts.reason)
    report: dict[str, Any] = {
        "benchmark": "admin",
        "started": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": command_line(argv),
        "machine": machine_info(opts),
        "uptime_before": uptime_text(),
        "loadavg_before": os.getloadavg()[0],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()
                     if k not in ("data_dir", "results_dir", "openssl", "py_spy")},
        "goals": GOALS,
        "notes": [],
    }  # fmt: skip
    pool = await db.create_pool(svc.database_url, min_size=1, max_size=4)
    redis = aioredis.Redis.from_url(svc.redis_url)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn)
            for setting in ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers"):
                report["machine"][f"pg_{setting}"] = await conn.fetchval(f"SHOW {setting}")
            report["machine"]["schema_version"] = await db.schema_version(conn)
        server = dict(await redis.info("server"))
        report["machine"]["valkey"] = server.get("valkey_version") or server.get("redis_version")
        await redis.config_set("save", "")
        report["notes"].append('Valkey RDB snapshots were switched off for the run (CONFIG SET save ""): its contents '
                               "are derived, and a fork in the middle of a measurement would measure the disk.")  # fmt: skip

        # 1. CA and certificates ------------------------------------------------------------------------
        vault = KeyVault(Passphrase(PASSPHRASE), scrypt_n_log2=14)
        urls = PublicURLs(BASE_URL)
        clock = SystemClock()
        note("creating the CA (root, moica, gca: ECDSA P-256 keys and OCSP signers, 16 CRL partitions)")
        await init_pki(
            pool, vault, clock=clock, urls=urls,
            issuers=[IssuerSpec(n, key_type=KeyType.EC_P256, ocsp_key_type=KeyType.EC_P256, crl_partitions=CRL_PARTITIONS)
                     for n in ISSUERS],
            actor=ACTOR, root_key_type=KeyType.EC_P256,
        )  # fmt: skip
        async with pool.acquire() as conn:
            all_issuers = await db.list_issuers(conn)
            rows = {i.name: i for i in all_issuers}
            cas = {n: await load_signing_ca(conn, vault, rows[n]) for n in ISSUERS}
        root_row = next(i for i in all_issuers if i.kind == "root")
        issuer_certs = {rows[n].id: cas[n].certificate for n in ISSUERS}
        issuer_names = {rows[n].id: n for n in ISSUERS}
        now = clock.now()
        templates = [pop.make_templates(cas[n], rows[n].id, CRL_PARTITIONS, urls=urls, now=now) for n in ISSUERS]
        per_set = opts.count + WARMUP
        total = 3 * per_set
        plan = pop.plan_population(
            templates, total, weights=[MOICA_SHARE, 1 - MOICA_SHARE], revoked_fraction=0.0, suspended_fraction=0.0,
            batch_size=max(1000, math.ceil(total / 8)), issued_at=now.replace(microsecond=0),
            revoked_until=now + dt.timedelta(seconds=1), seed=opts.seed,
        )  # fmt: skip
        note(f"loading {total:,} good certificates (3 sets of {opts.count:,} + {WARMUP} for warm-ups)")
        progress = Progress("loading certificates (sign + COPY)", total)
        load = pop.load_population(svc.database_url, templates, plan, processes=2, progress=progress)
        everyone = [(i, s) for i, serials in plan.truth.serials.items() for s in serials]
        rng = random.Random(opts.seed)
        rng.shuffle(everyone)
        sets = {v: everyone[k * per_set : (k + 1) * per_set] for k, v in enumerate(VARIANTS)}
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE")
            counted = await conn.fetchval("SELECT count(*) FROM certificates")
            sample_rows = []
            for issuer_id, serial in rng.sample(everyone, 8):
                row = await conn.fetchrow("SELECT der, holder_id FROM certificates WHERE issuer_id = $1 AND serial = $2",
                                          issuer_id, db.serial_to_bytes(serial))  # fmt: skip
                sample_rows.append((issuer_id, serial, bytes(row["der"]), row["holder_id"]))
        verified = pop.verify_samples(sample_rows, {t.issuer_id: t for t in templates}, urls)
        report["population"] = {
            "certificates": total, "rows_in_table": counted, "per_variant": opts.count, "warmup_per_variant": WARMUP,
            "by_issuer": {issuer_names[i]: n for i, n in plan.shares.items()}, "load_s": load["elapsed_s"],
            "load_rate": load["rows"] / load["elapsed_s"], "verified_with_cryptography": verified,
        }  # fmt: skip
        note(f"loaded {load['rows']:,} in {load['elapsed_s']:.1f} s; {verified} verified with cryptography")

        # 2. OCSP fill, reference, servers ----------------------------------------------------------------
        public_port, admin_port = free_port(), free_port()
        while admin_port == public_port:
            admin_port = free_port()
        env = service_env(svc, opts, public_port, admin_port)
        note("certstatus signer --once --processes 2 (the first fill)")
        t = time.perf_counter()
        proc = subprocess.run(certstatus(svc, "signer", "--once", "--processes", "2", "--quiet"), env=env,
                              capture_output=True, text=True, cwd=code_root())  # fmt: skip
        fill_s = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"certstatus signer --once failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        filled = {issuer_names[i]: bool(await redis.exists(store.filled_key(i))) for i in issuer_names}
        if not all(filled.values()):
            raise RuntimeError(f"the first fill left no filled marker for {filled}:\n{proc.stderr[-3000:]}")
        report["fill"] = {"responses": total + len(ISSUERS), "wall_s": fill_s, "filled_markers": filled}
        note(f"signed {total:,} OCSP responses in {fill_s:.1f} s")

        note("PostgreSQL commit reference (one-row INSERT transactions: 1 and 8 connections, 8 with NOTIFY; 3 s each)")
        report["commit_reference"] = await commit_reference(svc.database_url, 3.0)
        cr = report["commit_reference"]
        note(f"  {cr['c1']:,.0f} commits/s on 1 connection, {cr['c8']:,.0f}/s on 8, {cr['c8_notify']:,.0f}/s on 8 "
             "with NOTIFY")  # fmt: skip

        note(f"certstatus admin token create {TOKEN_NAME} --role operator --json")
        proc = subprocess.run(certstatus(svc, "admin", "token", "create", TOKEN_NAME, "--role", "operator", "--json"),
                              env=env, capture_output=True, text=True, cwd=code_root())  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"admin token create failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        token = json.loads(proc.stdout)["token"]
        procs.start("admin", certstatus(svc, "admin", "serve"), env)
        procs.start(
            "responder",
            certstatus(svc, "serve", "--workers", str(opts.workers), "--public-port", str(public_port)),
            env,
        )
        signer_args = ["signer", "--quiet"] + (
            ["--processes", str(opts.signer_processes)] if opts.signer_processes > 1 else []
        )
        procs.start("signer", certstatus(svc, *signer_args), env)
        await procs.wait_for("admin", r"admin API on http://")
        await procs.wait_for("responder", r"public (responder|workers) on")
        await asyncio.sleep(2.0)
        procs.check_alive("signer")
        base = f"http://127.0.0.1:{admin_port}"
        report["servers"] = {
            "admin": "certstatus admin serve (aiohttp + uvloop, 1 process, CERTSTATUS_DB_POOL_SIZE default 10; the "
                     "batch route revokes in chunks of 1,000, one transaction each)",
            "responder": f"certstatus serve --workers {opts.workers}",
            "signer": "certstatus " + " ".join(signer_args) + f" (CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS={opts.delta_interval})",
        }  # fmt: skip
        roots = {"admin serve": procs.pid("admin"), "signer": procs.pid("signer"),
                 "responder": procs.pid("responder"), **svc.pids()}  # fmt: skip

        # OCSP sample material: certificate PEMs for openssl, requests for the GET polls.
        (work / "certs").mkdir(exist_ok=True)
        issuer_pems = {}
        for issuer_id, cert in issuer_certs.items():
            issuer_pems[issuer_id] = work / "certs" / f"{issuer_names[issuer_id]}.pem"
            issuer_pems[issuer_id].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        root_pem = work / "certs" / "root.pem"
        root_pem.write_bytes(
            x509.load_der_x509_certificate(root_row.certificate).public_bytes(serialization.Encoding.PEM)
        )

        # 3. Variants --------------------------------------------------------------------------------------
        run_id = f"bench-{int(time.time())}"
        results: dict[str, Any] = {}
        async with OCSPChecker(public_port, issuer_certs, reason.flag) as checker:
            for v in VARIANTS:
                keys = sets[v]
                warm = [(issuer_names[i], s) for i, s in keys[:WARMUP]]
                mine = keys[WARMUP:]
                items = [(issuer_names[i], s) for i, s in mine]
                key_bytes = [(i, db.serial_to_bytes(s)) for i, s in mine]
                chosen = rng.sample(mine, min(opts.sample, len(mine)))
                async with pool.acquire() as conn:
                    ders = {(r["issuer_id"], int.from_bytes(r["serial"], "big")): bytes(r["der"]) for r in await conn.fetch(
                        "SELECT issuer_id, serial, der FROM certificates c JOIN unnest($1::smallint[], $2::bytea[]) "
                        "AS s(i, k) ON c.issuer_id = s.i AND c.serial = s.k",
                        [i for i, _ in chosen], [db.serial_to_bytes(s) for _, s in chosen])}  # fmt: skip
                sample = [checker.make(i, issuer_names[i], s, ders[(i, s)], work) for i, s in chosen]
                window = Window(checker, sample, roots, await db.connect(svc.database_url),
                                await db.connect(svc.database_url))  # fmt: skip
                note(f"({v}) {VARIANTS[v]}: {len(items):,} revocations"
                     + (f", {opts.concurrency} at a time" if v != "a" else ""))  # fmt: skip
                try:
                    if v == "a":
                        res = await variant_batch(opts, base, token, warm, items, window, run_id,
                                                  make_py_spy(opts, procs.pid("admin"), work) if opts.py_spy else None)  # fmt: skip
                    elif v == "b":
                        res = await variant_single(opts, base, token, warm, items, window, run_id)
                    else:
                        res = await variant_inprocess(opts, svc.database_url, warm, items, window, run_id, urls)
                    t_ack = res.pop("t_ack")
                    res.pop("t0")
                    await window.close()
                    note(f"    {res['elapsed_s']:.2f} s, {res['rate']:,.0f} revocations/s; waiting for OCSP")
                    prop, drained, delta_s = await asyncio.gather(
                        checker.wait_revoked(sample, t_ack, 60.0),
                        wait_outbox_drained(window.watch, window.marks["outbox_id"], t_ack, 300.0),
                        wait_delta(
                            window.sampler_conn, window.marks["outbox_id"], t_ack, 3 * opts.delta_interval + 60.0
                        ),
                    )
                    wall0, wall1 = res.pop("wall0"), res.pop("wall1")
                    if v == "a":
                        res.update(check_batch_answer(res.pop("raw"), res.pop("status"), items))
                    db_check = await verify_database(
                        window.watch, key_bytes, window.marks, reason=int(reason),
                        actor=f"token:{TOKEN_NAME}" if v in "ab" else ACTOR,
                        since=wall0 - dt.timedelta(seconds=1), until=wall1 + dt.timedelta(seconds=1),
                        idempotency=opts.idempotency_keys,
                    )  # fmt: skip
                    revoked_at = {
                        (r["issuer_id"], int.from_bytes(r["serial"], "big")): r["revoked_at"]
                        for r in await window.watch.fetch(
                            "SELECT issuer_id, serial, revoked_at FROM certificates c JOIN unnest($1::smallint[], "
                            "$2::bytea[]) AS s(i, k) ON c.issuer_id = s.i AND c.serial = s.k",
                            [s.issuer_id for s in sample], [db.serial_to_bytes(s.serial) for s in sample])
                    }  # fmt: skip
                finally:
                    await window.close()
                    await window.sampler_conn.close()
                    await window.watch.close()
                verdicts: collections.Counter[str] = collections.Counter()
                wrong: list[str] = []
                for s in sample:
                    verdict = checker.check(s, await checker.fetch(s), revoked_at[(s.issuer_id, s.serial)])
                    verdicts[verdict if verdict == "ok" else "wrong"] += 1
                    if verdict != "ok":
                        wrong.append(f"{s.issuer} {s.serial:X}: {verdict}")
                ossl = await openssl_check(opts, public_port, sample, issuer_pems, root_pem, reason.rfc_name)
                backlog = window.backlog
                busy = {w: n / max(1, window.activity_samples) for w, n in window.activity.most_common()}
                res.update(
                    n=len(items), loadavg_before=window.loadavg, loadavg_after=os.getloadavg()[0], pg_activity=busy,
                    pg_activity_samples=window.activity_samples,
                    pg_lock_waits={q: n / max(1, window.activity_samples) for q, n in window.lock_waits.most_common(5)},
                    cpu_s=cpu_delta(window.cpu0, window.cpu1), database=db_check, ocsp_before=window.before_ocsp,
                    propagation=prop, outbox=drained, delta_crl_s=delta_s,
                    backlog_max=max((b for _, b in backlog), default=0), backlog_series=backlog,
                    ocsp_checks={"checked": len(sample), **verdicts, "wrong_examples": wrong[:5]}, openssl=ossl,
                )  # fmt: skip
                results[v] = res
                ok = db_check["ok"] and all(c["ok"] for c in res["answer_checks"])
                note(f"    checks {'passed' if ok else 'FAILED'}; OCSP: all {len(sample)} sampled revoked after "
                     + (f"{prop['all_s'] * 1000:,.0f} ms" if prop["all_s"] is not None else f"— ({prop['missing']} missing)")
                     + f"; signer done after {_s(drained.get('drained_s'))}; delta CRL after {_s(delta_s)}; "
                     f"openssl: {ossl.get('revoked, verified', 0)}/{ossl['checked']} revoked and verified")  # fmt: skip
                if not ok:
                    for c in [*db_check["checks"], *res["answer_checks"]]:
                        if not c["ok"]:
                            note(f"    FAILED: {c['what']}: expected {c['expected']}, got {c['got']}")
                # A new base CRL, so the next variant's deltas start empty (as this one's did).
                pub = subprocess.run(certstatus(svc, "crl", "publish"), env=env, capture_output=True, text=True,
                                     cwd=code_root())  # fmt: skip
                if pub.returncode != 0:
                    report["notes"].append(f"'certstatus crl publish' after ({v}) exited {pub.returncode}: "
                                           f"{pub.stderr.strip()[-300:]}")  # fmt: skip
        report["variants"] = results
        report["uptime_after"] = uptime_text()
        report["loadavg_after"] = os.getloadavg()[0]
        report["finished"] = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        for name in ("admin", "responder", "signer"):
            procs.check_alive(name)
            log = procs.log(name)
            errors = [ln for ln in log.splitlines() if re.search(r"ERROR|Traceback|exception", ln)]
            if errors:
                report["notes"].append(f"{name} logged {len(errors)} error line(s), e.g. {errors[0][:200]!r}")
        return report
    finally:
        await redis.aclose()
        await pool.close()


def make_py_spy(opts: Options, pid: int | None, work: Path) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    """``py-spy record`` on the admin server for the duration of variant (a)."""

    async def start() -> Callable[[], Awaitable[None]]:
        assert opts.py_spy is not None and pid is not None
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = opts.py_spy.resolve()
        fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
        with open(work / "py-spy.log", "ab") as log:
            p = await asyncio.create_subprocess_exec(
                exe, "record", "--pid", str(pid), "--rate", "200", "--format", fmt, "--output", str(out),
                "--nonblocking", stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        await asyncio.sleep(1.0)

        async def stop() -> None:
            p.send_signal(signal.SIGINT)
            await p.wait()
            note(f"py-spy profile of the admin server during (a): {out} (log: {work / 'py-spy.log'})")

        return stop

    return start


# Report ----------------------------------------------------------------------------------------------------


def _s(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} s"


def _ms(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 1000:,.0f}"


def _r(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def evaluate_goals(rep: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    out: list[tuple[str, bool | None, str]] = []
    a = rep["variants"]["a"]
    n = a["n"]
    goal_n, goal_s = GOALS["batch_count"], GOALS["batch_s"]
    if n == goal_n:
        out.append((f"{goal_n:,} revocations in one batch in under {goal_s:.0f} s", a["elapsed_s"] < goal_s,
                    f"{a['elapsed_s']:.2f} s ({a['rate']:,.0f}/s; {a['elapsed_s'] / goal_s:.2f}× the bound)"))  # fmt: skip
    else:
        projected = goal_n / a["rate"]
        out.append((f"{goal_n:,} revocations in one batch in under {goal_s:.0f} s", None,
                    f"not measured (N = {n:,}): {a['elapsed_s']:.2f} s at {a['rate']:,.0f}/s, so {goal_n:,} would take "
                    f"about {projected:.1f} s if the rate held"))  # fmt: skip
    p = a["propagation"]
    all_s = p["all_s"]
    out.append((f"every sampled certificate answers revoked over OCSP within {GOALS['propagation_s']:.0f} s of the "
                "batch's acknowledgement", all_s is not None and all_s < GOALS["propagation_s"] and not p["wrong"],
                (f"all {p['seen']} after {all_s * 1000:,.0f} ms at most (p50 {_ms(p['s'].get('p50'))} ms; "
                 f"{p.get('revoked_at_first_poll', '?')} already revoked at their first poll)" if all_s is not None
                 else f"{p['missing']} of {p['seen'] + p['missing']} not revoked within 60 s")
                + (f"; {len(p['wrong'])} wrong answers" if p["wrong"] else "")))  # fmt: skip
    checks_ok = all(
        v["database"]["ok"] and all(c["ok"] for c in v["answer_checks"])
        and v["ocsp_checks"].get("ok", 0) == v["ocsp_checks"]["checked"]
        and v["openssl"].get("revoked, verified", 0) == v["openssl"]["checked"]
        for v in rep["variants"].values()
    )  # fmt: skip
    out.append(("verified in every variant: N revoked, N outbox events, N audit rows, the answers; sampled OCSP "
                "answers revoked (cryptography and openssl)", checks_ok,
                "all checks passed" if checks_ok else "see the failed checks below"))  # fmt: skip
    return out


def render_markdown(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    s = rep["settings"]
    v = rep["variants"]
    pop_ = rep["population"]
    floor = v["c"]["rate"]
    lines = [
        "# Admin API benchmark: bulk revocation",
        "",
        f"- Date: {rep['started'].replace('T', ' ')[:16]} UTC (finished {rep['finished'][11:16]})",
        f"- Command: `{rep['command']}`",
        f"- Code measured: commit {m['commit']} (schema version {m['schema_version']}; benchmark script at "
        f"{m['bench_commit']})",
        f"- Machine: nproc {m['nproc']} ({m['cpu']}), {m['memory']}, {m['os']}",
        f"- {m['python']} ({m['event_loop']}), aiohttp {m['aiohttp']}, asyncpg {m['asyncpg']}, cryptography "
        f"{m['cryptography']} ({m['cryptography_openssl']}), {m['openssl_cli']} (CLI), PostgreSQL "
        f"{m['pg_server_version']} (embedded; synchronous_commit={m['pg_synchronous_commit']}, fsync={m['pg_fsync']}, "
        f"wal_sync_method={m['pg_wal_sync_method']}), Valkey {m['valkey']} (embedded)",
        f"- Load before: `{rep['uptime_before']}`",
        f"- Load after: `{rep['uptime_after']}`",
        *[f"- Note: {n}" for n in rep.get("notes", [])],
        "",
        "## Goals",
        "",
        "| goal | result |",
        "|---|---|",
    ]
    for name, met, text in evaluate_goals(rep):
        verdict = "not evaluated" if met is None else ("met" if met else "**missed**")
        lines.append(f"| {name} | {verdict}: {text} |")
    cr = rep["commit_reference"]
    lines += [
        "",
        "## Setup",
        "",
        f"{pop_['certificates']:,} good certificates ({', '.join(f'{k} {n:,}' for k, n in pop_['by_issuer'].items())}; "
        f"ECDSA P-256 issuers, 16 CRL partitions) loaded with COPY in {pop_['load_s']:.1f} s "
        f"(bench/population.py; {pop_['verified_with_cryptography']} sampled rows verified with cryptography), shuffled "
        f"into three sets of {pop_['per_variant']:,}, one per variant, each with {pop_['warmup_per_variant']} more "
        "revoked first through the same path as a warm-up (connections opened, statements prepared). "
        f"`certstatus signer --once --processes 2` signed their OCSP responses in {rep['fill']['wall_s']:.1f} s.",
        "",
        f"Servers, each its own process: `{rep['servers']['admin']}`; `{rep['servers']['responder']}`; "
        f"`{rep['servers']['signer']}`. The token is an operator's, from `certstatus admin token create "
        f"{TOKEN_NAME} --role operator --json`. Reason of every revocation: {s['reason']}; Idempotency-Key: "
        f"{'sent (the batch one key, each single request and in-process call its own)' if s['idempotency_keys'] else 'none'}.",
        "",
        f"PostgreSQL commit reference (one-row INSERT transactions in a loop, same server, measured before the "
        f"variants): **{cr['c1']:,.0f} commits/s on 1 connection, {cr['c8']:,.0f}/s on 8, {cr['c8_notify']:,.0f}/s on 8 "
        "when each transaction also NOTIFYs** (PostgreSQL serialises notifying transactions' commits on one lock, "
        "held until the commit is flushed). A single revocation, in (b) and (c), is one transaction: the row "
        "locked, status, outbox event + NOTIFY, audit row (the hash chain's head row locked until the commit, from "
        "schema version 6), commit. The batch (a) is CertificateAuthority.revoke_many: chunks of 1,000 items, each "
        "one transaction of a few statements (rows locked in key order, one UPDATE, one outbox INSERT and NOTIFY, "
        "one audit INSERT), so it pays those two serialisations once per chunk.",
        "",
        "Before each variant the signer had handled every earlier event, a CHECKPOINT was taken, and the "
        f"{s['sample']} sampled certificates were asked over OCSP once (all good, so the responder had them cached). "
        "After each, a new base CRL was published, so each variant's delta CRLs start empty.",
        "",
        "## Results",
        "",
        "| variant | N | total (s) | revocations/s | ratio to (c) | p50 (ms) | p99 (ms) | max (ms) | load avg before → after |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for k, label in VARIANTS.items():
        x = v[k]
        lat = x.get("latency_s")
        extra = f" ({s['concurrency']} {'clients' if k == 'b' else 'tasks'})" if k != "a" else ""
        lines.append(
            f"| ({k}) {label}{extra} | {x['n']:,} | **{x['elapsed_s']:.2f}** | **{_r(x['rate'])}** | "
            f"{x['rate'] / floor:.2f} | {_ms(lat['p50']) if lat else '–'} | {_ms(lat['p99']) if lat else '–'} | "
            f"{_ms(lat['max']) if lat else '–'} | {x['loadavg_before']:.2f} → {x['loadavg_after']:.2f} |"
        )
    a = v["a"]
    lines += [
        "",
        f"(a) is one request: send to the last byte of the answer, whose headers came after {a['time_to_headers_s']:.2f} s "
        f"(the route answers when the last item is done); request {a['request_bytes'] / 1024:,.0f} KiB, answer "
        f"{a['response_bytes'] / 1024:,.0f} KiB. Latency columns: (b) per request from send to the whole answer, over "
        f"the client's keep-alive connection; (c) per `revoke` call. Ratio: rate / (c)'s rate, measured minutes apart "
        "in the same run.",
        "",
        "### Where the CPU went during each variant (CPU seconds; 2 cores give 2 per second of wall time)",
        "",
    ]
    names: list[str] = []
    for x in v.values():
        for name in x["cpu_s"]:
            if name not in names:
                names.append(name)
    lines += ["| variant | wall (s) | " + " | ".join(names) + " | all |", "|---|--:|" + "--:|" * (len(names) + 1)]
    for k in VARIANTS:
        c = v[k]["cpu_s"]
        lines.append(f"| ({k}) | {v[k]['elapsed_s']:.2f} | " + " | ".join(f"{c.get(n, 0.0):.2f}" for n in names)
                     + f" | {sum(c.values()):.2f} |")  # fmt: skip
    lines += [
        "",
        "Per process and its children, from /proc (PostgreSQL: the postmaster and every backend; the responder and "
        "signer include their workers); 'bench client' is this script (the HTTP clients of (a) and (b), and all of "
        "(c)); 'other processes' is the machine's user and system time minus ours (other users of the machine); "
        "'irq, softirq, steal' is charged to no process (loopback TCP is mostly softirq).",
        "",
        "### What PostgreSQL's client backends were doing",
        "",
        "Average number of client backends in each state over the variant (pg_stat_activity sampled every 50 ms; "
        "executing a statement, on CPU or waiting for what; or idle in a transaction, i.e. waiting for their client). "
        "The signer's and the responder's connections are among them.",
        "",
    ]
    totals: collections.Counter[str] = collections.Counter()
    for x in v.values():
        totals.update(x["pg_activity"])
    states = [w for w, _ in totals.most_common(8)]
    lines += ["| variant | samples | " + " | ".join(states) + " |", "|---|--:|" + "--:|" * len(states)]
    for k in VARIANTS:
        act = v[k]["pg_activity"]
        lines.append(
            f"| ({k}) | {v[k]['pg_activity_samples']} | " + " | ".join(f"{act.get(w, 0.0):.2f}" for w in states) + " |"
        )
    lines += ["", "Statements of the backends waiting for a lock (average number at a time):", ""]
    for k in VARIANTS:
        waits = v[k].get("pg_lock_waits") or {}
        lines.append(f"- ({k}) " + ("; ".join(f"`{q.strip()}…` {n:.2f}" for q, n in waits.items()) or "none seen"))
    lines += [
        "",
        "### After the acknowledgement: OCSP, signer, delta CRL",
        "",
        f"{s['sample']} certificates of each set, drawn at random, polled over OCSP GET (2 ms apart each, 8 "
        "connections) from the acknowledgement (the batch's answer; the last single answer; the last `revoke` return) "
        "until each answers revoked. A certificate already revoked at its first poll was signed before the polls "
        "began: its time is the poll's own latency (the first answers' p50 is given), so the 'all revoked' figure is "
        "an upper bound of the propagation.",
        "",
        "| variant | sampled: all revoked after (ms) | p50 (ms) | revoked at the first poll | polls began after (ms) | "
        "first answers p50 (ms) | wrong answers | signer backlog at the ack (events) | largest backlog during "
        "(events) | signer done with all N after | on a delta CRL after |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for k in VARIANTS:
        x = v[k]
        p = x["propagation"]
        seen = _ms(p["all_s"]) if p["all_s"] is not None else f"{p['missing']} missing"
        lines.append(
            f"| ({k}) | {seen} | {_ms(p['s'].get('p50'))} | {p.get('revoked_at_first_poll', '–')} of "
            f"{p['seen'] + p['missing']} | {_ms(p.get('polls_started_s'))} | "
            f"{_ms((p.get('first_answer_s') or {}).get('p50'))} | {len(p['wrong'])} | "
            f"{x['outbox']['backlog_at_ack']:,} | {x['backlog_max']:,} | {_s(x['outbox'].get('drained_s'))} | "
            f"{_s(x['delta_crl_s'])} |"
        )
    lines += [
        "",
        f"The signer runs all along (CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS={s['delta_interval']}: delta CRLs are "
        f"published during the variants too); the backlog is sampled every 0.25 s.",
        "",
        "## Checks",
        "",
        "| variant | check | expected | got | |",
        "|---|---|--:|--:|---|",
    ]
    for k in VARIANTS:
        x = v[k]
        for c in [*x["answer_checks"], *x["database"]["checks"]]:
            lines.append(f"| ({k}) | {c['what']} | {c['expected']:,} | {c['got'] if c['got'] is not None else '–'} | "
                         f"{'ok' if c['ok'] else '**FAILED**'} |")  # fmt: skip
        o, ossl = x["ocsp_checks"], x["openssl"]
        lines.append(f"| ({k}) | OCSP before: sampled answers | {s['sample']} good | "
                     f"{', '.join(f'{n} {c}' for c, n in x['ocsp_before'].items())} | "
                     f"{'ok' if x['ocsp_before'].get('good') == o['checked'] else '**FAILED**'} |")  # fmt: skip
        lines.append(f"| ({k}) | OCSP after (cryptography): revoked, {s['reason']}, revocation time = the record's, "
                     f"signed by the issuer's OCSP signer | {o['checked']} | {o.get('ok', 0)} | "
                     f"{'ok' if o.get('ok', 0) == o['checked'] else '**FAILED**'} |")  # fmt: skip
        lines.append(f"| ({k}) | `openssl ocsp -CAfile root.pem` (POST): Response verify OK, revoked, {s['reason']} | "
                     f"{ossl['checked']} | {ossl.get('revoked, verified', 0)} | "
                     f"{'ok' if ossl.get('revoked, verified', 0) == ossl['checked'] else '**FAILED**'} |")  # fmt: skip
    wrong = [w for x in v.values() for w in (x["ocsp_checks"]["wrong_examples"] + x["openssl"]["wrong_examples"]
                                              + x.get("wrong_examples", []))]  # fmt: skip
    if wrong:
        lines += ["", "Examples of wrong answers:", "", *[f"- {w}" for w in wrong[:10]]]
    if v["a"].get("problems"):
        lines += ["", f"Problems in the batch's answer: {v['a']['problems']}"]
    lines.append("")
    return "\n".join(lines)


# Command line ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python bench/admin.py",
        description=(
            "Bulk revocation through the admin API, in one run on a fresh embedded PostgreSQL + Valkey: a CA "
            "(moica, gca) and three sets of --count good certificates (COPY-loaded, OCSP responses pre-signed); "
            "'certstatus admin serve', 'certstatus serve' and 'certstatus signer' as separate processes; then, each "
            "on its own set: (a) one POST /v1/revocations:batch with all N items; (b) N single POST "
            ".../revoke requests from --concurrency clients; (c) CertificateAuthority.revoke in this process from "
            "--concurrency tasks (the floor without HTTP). Reports time and revocations/s of each, p50/p99 of (b) and "
            "(c), CPU per process; checks in PostgreSQL that exactly N certificates were revoked with N outbox events "
            "and N audit rows, and that (a)'s answer says revoked == N, failed == 0; polls --sample of them over OCSP "
            "from the acknowledgement until each answers revoked and checks those answers with cryptography and "
            "'openssl ocsp'. Prints a Markdown report and writes it with the raw figures to "
            "bench/results/<YYYY-MM-DD>-admin.md and .json."
        ),
        epilog="Goals: 10,000 revocations in one batch in under 10 s; every sampled certificate revoked over OCSP "
        "within 1 s of the batch's answer. A full run (10,000) takes about 3-5 minutes on 2 cores; --quick about one. "
        "Set PYTHONPATH to a clean checkout to measure a commit while the working tree is being edited. "
        "See bench/README.md.",
    )
    parser.add_argument("--count", type=int, default=None, metavar="N", help=f"revocations per variant, 1 to {MAX_BATCH:,} (one batch; default 10000; --quick: 500)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a smoke run: --count 500 (not saved unless --save)")
    parser.add_argument("--save", action="store_true", help="with --quick: save the report anyway")
    parser.add_argument("--concurrency", type=int, default=8, metavar="N", help="clients of (b) and tasks of (c) (default 8)")  # fmt: skip
    parser.add_argument("--sample", type=int, default=100, metavar="N", help="certificates per variant checked over OCSP and with openssl (default 100)")  # fmt: skip
    parser.add_argument("--reason", default="keyCompromise", help="revocation reason of every revocation (default keyCompromise)")  # fmt: skip
    parser.add_argument("--idempotency-keys", action="store_true", help="send an Idempotency-Key with the batch, each single request and each in-process call (default: none)")  # fmt: skip
    parser.add_argument("--delta-interval", type=int, default=5, metavar="S", help="CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS of the signer (default 5, as bench/crl.py; the product's is 60)")  # fmt: skip
    parser.add_argument("--signer-processes", type=int, default=1, metavar="N", help="'certstatus signer --processes N' (default 1)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="'certstatus serve --workers N' (default 1)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds to wait for an answer of the admin API (default 600)")  # fmt: skip
    parser.add_argument("--py-spy", type=Path, metavar="FILE", help="record the admin server with py-spy during (a) into FILE (.svg flame graph, .json speedscope, else raw); such a run is not saved")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="fresh (empty or missing) directory for the embedded servers and work files; default: a new temporary directory")  # fmt: skip
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the data directory afterwards (default: removed)"
    )
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR", help="where to write <date>-admin.md/.json (default bench/results)")  # fmt: skip
    parser.add_argument("--no-save", action="store_true", help="print the report only")
    parser.add_argument("--seed", type=int, default=20261123, help="seed of the sets and samples (serials are always random)")  # fmt: skip
    parser.add_argument("--openssl", default=shutil.which("openssl") or "/usr/bin/openssl", help="openssl binary")
    ns = parser.parse_args(argv)
    count = ns.count if ns.count is not None else (500 if ns.quick else 10_000)
    if not 1 <= count <= MAX_BATCH:
        parser.error(f"--count must be 1 to {MAX_BATCH:,} (the batch route's limit)")
    if ns.concurrency < 1 or ns.sample < 1 or ns.delta_interval < 1:
        parser.error("--concurrency, --sample and --delta-interval must be positive")
    save = not ns.no_save and (not ns.quick or ns.save) and ns.py_spy is None
    return Options(
        count=count,
        concurrency=ns.concurrency,
        sample=min(ns.sample, count),
        reason=ns.reason,
        idempotency_keys=ns.idempotency_keys,
        delta_interval=ns.delta_interval,
        signer_processes=ns.signer_processes,
        workers=ns.workers,
        timeout=ns.timeout,
        py_spy=ns.py_spy,
        data_dir=ns.data_dir,
        keep_data=ns.keep_data,
        results_dir=ns.results_dir if save else None,
        seed=ns.seed,
        quick=ns.quick,
        openssl=ns.openssl,
    )


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    opts = parse_args(argv[1:])
    from ca_core.model import RevocationReason
    from ca_core.storage.embedded import EmbeddedServices

    RevocationReason.parse(opts.reason)  # a wrong reason fails now, not after the fill
    signal.signal(signal.SIGTERM, _terminate)
    if opts.data_dir is not None:
        data_dir = opts.data_dir.resolve()
        if data_dir.exists() and any(data_dir.iterdir()):
            print(
                f"{data_dir} is not empty: give a fresh directory (the benchmark starts from nothing)", file=sys.stderr
            )
            return 2
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="certstatus-admin-bench-"))
    work = data_dir / "bench"
    work.mkdir()
    procs = Processes(work)
    report = None
    try:
        note("starting the embedded PostgreSQL and Valkey")
        with EmbeddedServices(data_dir) as svc:
            try:
                import uvloop

                report = uvloop.run(run(opts, svc, procs, work, argv))
            finally:
                procs.stop_all()
    except KeyboardInterrupt:
        procs.stop_all()
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if not opts.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            note(f"kept {data_dir}")
    assert report is not None
    markdown = render_markdown(report)
    print(markdown)
    if opts.results_dir is not None:
        opts.results_dir.mkdir(parents=True, exist_ok=True)
        stem = opts.results_dir / f"{report['started'][:10]}-admin"
        stem.with_suffix(".md").write_text(markdown)
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        note(f"wrote {os.path.relpath(stem, Path.cwd())}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
