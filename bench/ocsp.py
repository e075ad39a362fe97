#!/usr/bin/env python
"""OCSP benchmark: a million-certificate population, pre-signing, HTTP throughput next to
nginx, latency at a constant rate, and revocation propagation under load, in ONE run.

Phases (every figure is read next to a reference measured in the same run):

1. **Fill**: a fresh embedded PostgreSQL + Valkey, a CA (root, ``moica`` and ``gca`` with
   ECDSA P-256 keys and OCSP signers), and ``--certs`` real certificates loaded with COPY
   (bench/population.py: one template per issuer and CRL partition, serial and holder
   number patched, the TBS re-signed by the issuer; a sample is verified with
   ``cryptography``). 1 % revoked (various reasons), 0.5 % suspended.
2. **Pre-sign**: ``certstatus signer --once --processes 2`` as a subprocess, timed, next to
   the raw ECDSA P-256 signing rate with 2 processes and 1 (measured before and after),
   ``ResponseSigner.sign`` alone and ``cryptography``'s ``OCSPResponseBuilder``; Redis
   memory per certificate.
3. **Throughput**: a Zipf(1.0) request list (with revoked, suspended and never-issued
   serials, 80 % SHA-1 / 20 % SHA-256 CertIDs) as GET and POST; wrk with the same settings
   against the responder (1 and 2 workers) and nginx serving one real response as a static
   file (1 and 2 workers), in rotating order over several rounds (medians). A sample of the
   responder's answers is checked against the ground truth. Then latency at 80 % of the
   responder's best rate with a constant-rate generator (this script, ``--loadgen``), and
   the same rate against nginx to show the generator keeps up.
4. **Propagation**: with the 2-worker responder under constant load and ``certstatus
   signer`` running, good certificates are revoked one by one through
   ``CertificateAuthority.revoke``; from its return (t0) the responder is polled every
   2 ms on 8 keep-alive connections until all say revoked (t1).

Prints a Markdown report and writes it, with the raw figures as JSON, to
``bench/results/<YYYY-MM-DD>-ocsp.md`` / ``.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import collections
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import multiprocessing
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "certstatus OCSP benchmark passphrase (throwaway)"
BASE_URL = "http://ocsp.bench.invalid"
ISSUERS = ("moica", "gca")
CRL_PARTITIONS = 16
ACTOR = "bench"

GOALS = {
    "nginx_ratio": 0.40,  # responder req/s >= 40 % of nginx
    "p99_at_80pct_ms": 10.0,
    "presign_ratio": 0.80,  # pre-sign >= 80 % of raw signing with both cores
    "redis_bytes_per_cert": 1024.0,
    "propagation_p99_s": 1.0,
    "propagation_p50_s": 0.100,
}


# Small helpers -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write_requests(path: Path, requests: Sequence[bytes]) -> None:
    """Length-prefixed raw HTTP requests (6 decimal digits, then the bytes): read by the
    wrk Lua script and by the load generator."""
    with open(path, "wb") as f:
        for r in requests:
            f.write(b"%06d" % len(r))
            f.write(r)


def read_requests(path: str) -> list[bytes]:
    data = Path(path).read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        n = int(data[pos : pos + 6])
        out.append(data[pos + 6 : pos + 6 + n])
        pos += 6 + n
    return out


# The constant-rate load generator (runs as its own process: --loadgen SPEC) -------------------

_OCSP_ERRORS = {1: "malformedRequest", 2: "internalError", 3: "tryLater", 5: "sigRequired", 6: "unauthorized"}


def _classify(status: bytes, body: bytes) -> str:
    if status != b"200":
        return "http_" + status.decode("latin-1")
    if len(body) == 5 and body[:4] == b"\x30\x03\x0a\x01":
        return _OCSP_ERRORS.get(body[4], "unsuccessful")
    return "successful"


async def _loadgen(spec: dict[str, Any], reqs: list[bytes]) -> dict[str, Any]:
    """Open ``connections`` keep-alive connections and either

    - ``rate``: send ``reqs`` in turn at a constant ``rate`` for ``duration`` seconds (an
      open loop: a request whose time has come waits for a free connection, and its
      latency counts from its scheduled time, so a slow server cannot hide its queueing:
      no coordinated omission), or
    - ``pass``: send every request once, as fast as the connections allow (warm-up).
    """
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    mode = spec["mode"]
    n_req = len(reqs)
    counts: collections.Counter[str] = collections.Counter()
    lat_sched = array.array("d")
    lat_sent = array.array("d")
    idle: collections.deque[Any] = collections.deque()
    backlog: collections.deque[tuple[bytes, float]] = collections.deque()
    state = {"measure_from": 0.0, "outstanding": 0, "running": True, "next": 0, "stop": False}
    finished = asyncio.Event()

    def stop() -> None:  # SIGTERM: stop sending, finish what is in flight, report
        state["stop"] = True
        finished.set()

    loop.add_signal_handler(signal.SIGTERM, stop)

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = bytearray()
            self.need = -1
            self.body_at = 0
            self.status = b""
            self.transport: Any = None
            self.intended = 0.0
            self.sent = 0.0
            self.busy = False
            self.ready = loop.create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            if not self.ready.done():
                self.ready.set_result(None)

        def send(self, req: bytes, intended: float) -> None:
            self.intended = intended
            self.sent = clock()
            self.busy = True
            state["outstanding"] += 1
            self.transport.write(req)

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                i = buf.find(b"Content-Length: ", 0, end)
                if i < 0:
                    i = bytes(buf[:end]).lower().find(b"content-length: ")
                cl = int(buf[i + 16 : buf.index(b"\r\n", i)]) if i >= 0 else 0
                self.status = bytes(buf[9:12])
                self.body_at = end + 4
                self.need = end + 4 + cl
            if len(buf) < self.need:
                return
            body = bytes(buf[self.body_at : self.need])
            del buf[: self.need]
            self.need = -1
            now = clock()
            self.busy = False
            state["outstanding"] -= 1
            counts[_classify(self.status, body)] += 1
            if self.intended >= state["measure_from"]:
                lat_sched.append(now - self.intended)
                lat_sent.append(now - self.sent)
            self.next()

        def next(self) -> None:
            if mode == "rate":
                if backlog:
                    req, intended = backlog.popleft()
                    self.send(req, intended)
                else:
                    idle.append(self)
            else:
                k = state["next"]
                if k < n_req:
                    state["next"] = k + 1
                    self.send(reqs[k], clock())
                elif state["outstanding"] == 0:
                    finished.set()

        def connection_lost(self, exc: Exception | None) -> None:
            counts["connection_lost"] += 1
            if self.busy:
                state["outstanding"] -= 1
                counts["lost_in_flight"] += 1
            with contextlib.suppress(ValueError):
                idle.remove(self)
            if state["running"]:
                loop.create_task(reconnect())

    async def connect() -> Conn:
        _, proto = await loop.create_connection(Conn, spec["host"], spec["port"])
        await proto.ready
        return proto

    async def reconnect() -> None:
        with contextlib.suppress(OSError):
            c = await connect()
            c.next()

    conns = [await connect() for _ in range(spec["connections"])]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = clock()
    if mode == "pass":
        for c in conns:
            c.next()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), spec.get("timeout", 600))
        elapsed = clock() - t_start
        result: dict[str, Any] = {"requests": sum(counts.values()), "elapsed_s": elapsed}
    else:
        idle.extend(conns)
        rate = float(spec["rate"])
        duration = float(spec["duration"])
        total = int(rate * duration)
        offset = int(spec.get("offset", 0))
        t0 = clock() + 0.01
        state["measure_from"] = t0 + float(spec.get("warmup", 2.0))
        k = 0
        while k < total and not state["stop"]:
            due = min(total, int((clock() - t0) * rate) + 1)
            while k < due:
                intended = t0 + k / rate
                req = reqs[(k + offset) % n_req]
                if idle:
                    idle.pop().send(req, intended)
                else:
                    backlog.append((req, intended))
                k += 1
            await asyncio.sleep(0.001)
        sent_until = clock()
        deadline = sent_until + 5.0
        while (state["outstanding"] or backlog) and clock() < deadline:
            await asyncio.sleep(0.005)
        elapsed = sent_until - t0
        result = {
            "requests": sum(counts.values()),
            "target_rate": rate,
            "achieved_rate": k / elapsed if elapsed > 0 else 0.0,
            "elapsed_s": elapsed,
            "unfinished": state["outstanding"] + len(backlog),
        }
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    state["running"] = False
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    result["generator_cpu_fraction"] = cpu / max(1e-9, clock() - t_start)
    result["answers"] = dict(counts)
    if lat_sched:
        s, t = sorted(lat_sched), sorted(lat_sent)

        def pct(a: list[float], q: float) -> float:
            return a[max(1, math.ceil(q * len(a))) - 1] * 1000.0

        result["latency_ms"] = {
            "n": len(s),
            "mean": statistics.fmean(s) * 1000.0,
            "p50": pct(s, 0.50), "p90": pct(s, 0.90), "p99": pct(s, 0.99), "p999": pct(s, 0.999), "max": s[-1] * 1000.0,
        }  # fmt: skip
        result["latency_from_send_ms"] = {"p50": pct(t, 0.50), "p99": pct(t, 0.99), "max": t[-1] * 1000.0}
    return result


def loadgen_main(spec_path: str) -> int:
    import uvloop

    spec = json.loads(Path(spec_path).read_text())
    reqs = read_requests(spec["file"])
    if spec.get("cpu") is not None:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, {int(spec["cpu"])})
    result = uvloop.run(_loadgen(spec, reqs))
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# Everything below needs the project (ca_core, responder) -------------------------------------


def _imports() -> None:
    """Import the project lazily, so that ``--loadgen`` processes start fast."""
    global asyncpg, redis_asyncio, x509, ocsp, hashes, serialization, ec
    global CertificateAuthority, KeyVault, Passphrase, KeyType, IssuerSpec, init_pki, load_signing_ca
    global load_ocsp_signer, PublicURLs, db, store, SystemClock, EmbeddedServices, Progress, pop
    global HashAlgorithm, ResponseSigner, SingleStatus, issuer_hashes, parse_request, load_issuer_signers
    global RevocationReason
    import asyncpg  # noqa: F401
    import redis.asyncio as redis_asyncio  # noqa: F401
    from cryptography import x509  # noqa: F401
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: F401
    from cryptography.x509 import ocsp  # noqa: F401

    from ca_core import population as pop  # noqa: F401
    from ca_core.clock import SystemClock  # noqa: F401
    from ca_core.keystore import KeyVault, Passphrase  # noqa: F401
    from ca_core.lifecycle import CertificateAuthority  # noqa: F401
    from ca_core.model import KeyType, RevocationReason  # noqa: F401
    from ca_core.ocsp import HashAlgorithm, ResponseSigner, SingleStatus, issuer_hashes, parse_request  # noqa: F401
    from ca_core.pki import IssuerSpec, init_pki, load_ocsp_signer, load_signing_ca  # noqa: F401
    from ca_core.profiles import PublicURLs  # noqa: F401
    from ca_core.signer import load_issuer_signers  # noqa: F401
    from ca_core.storage import postgres as db  # noqa: F401
    from ca_core.storage import responses as store  # noqa: F401
    from ca_core.storage.embedded import EmbeddedServices  # noqa: F401
    from responder.progress import Progress  # noqa: F401


# Options -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    certs: int
    moica_share: float
    requests: int
    duration: float
    rounds: int
    connections: int
    wrk_threads: int
    revocations: int
    rate_fraction: float
    rate_sweep: list[float]
    signer_batch_size: int | None
    propagation_load: float
    constant_seconds: float
    data_dir: Path | None
    keep_data: bool
    results_dir: Path | None
    seed: int
    quick: bool
    nginx: str
    wrk: str


# Processes we start ------------------------------------------------------------------------------


class Processes:
    """Every subprocess this run starts, each in its own session; stopped by its own id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        # From the root of the code measured, so that ``python -m responder`` runs that code.
        p = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=code_root()
        )
        log.close()
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.log_dir / f"{name}.log").read_text(errors="replace")
        return ""

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)  # the group of the process we started (its own session)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        # Whatever it left in its group (e.g. spawned workers) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        return p.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


# Measurements: signing ---------------------------------------------------------------------------


def _raw_sign_worker(args: tuple[float, float]) -> tuple[int, float]:
    """Sign ~250-byte messages with a fresh P-256 key from ``start_at`` (time.time) for ``seconds``."""
    from cryptography.hazmat.primitives import hashes as h
    from cryptography.hazmat.primitives.asymmetric import ec as e

    start_at, seconds = args
    key = e.generate_private_key(e.SECP256R1())
    algorithm = e.ECDSA(h.SHA256())
    messages = [os.urandom(250) for _ in range(64)]
    while time.time() < start_at:
        time.sleep(0.001)
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for m in messages:
            key.sign(m, algorithm)
        n += len(messages)
        if time.perf_counter() >= end:
            break
    return n, time.perf_counter() - t0


def raw_sign_rate(processes: int, seconds: float) -> float:
    """ECDSA P-256 signatures per second over ``processes`` processes signing at once."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        start_at = time.time() + 1.0
        results = pool.map(_raw_sign_worker, [(start_at, seconds)] * processes)
    return sum(n / el for n, el in results)


def timed_rate(fn: Any, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(50):
            fn(n)
            n += 1
        if time.perf_counter() >= end:
            break
    return n / (time.perf_counter() - t0)


# Requests ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    """A request list: what each entry asks and the raw GET and POST requests for it."""

    name: str
    entries: list[tuple[str, int, int, Any]]  # (category, issuer id, serial, HashAlgorithm)
    get_file: Path
    post_file: Path | None
    distinct_get_file: Path  # each distinct query once, in order of first appearance (warm-up)
    sample_get_file: Path  # the first requests of the list (answer census)
    categories: dict[str, int]
    distinct: int


class RequestFactory:
    """OCSP requests from a cryptography-built template per (issuer, hash), serial patched in
    (all serials here are 16 octets); checked against cryptography and ca_core's parser."""

    def __init__(self, issuer_certs: dict[int, Any]) -> None:
        self.templates: dict[tuple[int, Any], tuple[bytes, bytes]] = {}
        probe = (1 << 126) | 0x0123456789ABCDEF
        raw = probe.to_bytes(16, "big")
        for issuer_id, cert in issuer_certs.items():
            for alg, ih in issuer_hashes(cert).items():
                algorithm = hashes.SHA1() if alg is HashAlgorithm.SHA1 else hashes.SHA256()
                der = (
                    ocsp.OCSPRequestBuilder()
                    .add_certificate_by_hash(ih.name_hash, ih.key_hash, probe, algorithm)
                    .build()
                    .public_bytes(serialization.Encoding.DER)
                )
                i = der.index(raw)
                assert der.count(raw) == 1 and der[i - 2 : i] == b"\x02\x10"
                self.templates[(issuer_id, alg)] = (der[:i], der[i + 16 :])

    def der(self, issuer_id: int, serial: int, alg: Any) -> bytes:
        head, tail = self.templates[(issuer_id, alg)]
        return head + serial.to_bytes(16, "big") + tail

    @staticmethod
    def get(der: bytes) -> bytes:
        path = urllib.parse.quote(base64.b64encode(der).decode(), safe="")
        return b"GET /ocsp/%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode()

    @staticmethod
    def post(der: bytes) -> bytes:
        return (
            b"POST /ocsp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/ocsp-request\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(der), der)
        )

    def check(self, issuer_id: int, serial: int, alg: Any) -> None:
        der = self.der(issuer_id, serial, alg)
        req = ocsp.load_der_ocsp_request(der)
        assert req.serial_number == serial
        q = parse_request(der)
        assert q.cert_id.serial == serial and q.cert_id.hash_algorithm is alg


def zipf_cum_weights(n: int, s: float = 1.0) -> list[float]:
    return list(itertools.accumulate(1.0 / (k**s) for k in range(1, n + 1)))


def build_workloads(
    opts: Options, truth: Any, factory: RequestFactory, work_dir: Path, rng: random.Random
) -> tuple[Workload, Workload, list[tuple[int, int]]]:
    """The Zipf workload (GET and POST files) and a uniform one (GET), plus the good
    certificates in popularity order (for the propagation phase)."""
    good = [(i, s) for i, serials in truth.serials.items() for s in serials if (i, s) not in truth.listed]
    revoked = [k for k, v in truth.listed.items() if v.status == "revoked"]
    suspended = [k for k, v in truth.listed.items() if v.status == "suspended"]
    rng.shuffle(good)
    rng.shuffle(revoked)
    rng.shuffle(suspended)
    cum = {name: zipf_cum_weights(len(lst)) for name, lst in (("good", good), ("revoked", revoked), ("suspended", suspended))}
    lists = {"good": good, "revoked": revoked, "suspended": suspended, "never-issued": truth.never_issued}
    m = opts.requests
    # Category of each request: 1 % revoked, 0.5 % suspended, 0.5 % never issued, the rest good.
    cats = rng.choices(["good", "revoked", "suspended", "never-issued"], weights=[98.0, 1.0, 0.5, 0.5], k=m)
    by_cat = collections.Counter(cats)
    picks: dict[str, list[int]] = {}
    for name, count in by_cat.items():
        if name == "never-issued":
            picks[name] = [rng.randrange(len(lists[name])) for _ in range(count)]
        else:
            picks[name] = rng.choices(range(len(lists[name])), cum_weights=cum[name], k=count)
    algs = rng.choices([HashAlgorithm.SHA1, HashAlgorithm.SHA256], weights=[80, 20], k=m)
    cursor = collections.Counter[str]()
    entries = []
    for c, alg in zip(cats, algs, strict=True):
        issuer_id, serial = lists[c][picks[c][cursor[c]]]
        cursor[c] += 1
        entries.append((c, issuer_id, serial, alg))
    zipf = _workload("zipf", entries, factory, work_dir, post=True)
    # Uniform over the whole population (every answer a different certificate: cache misses).
    everyone = [(i, s) for i, serials in truth.serials.items() for s in serials]
    uni = []
    for _ in range(max(1000, m // 2)):
        issuer_id, serial = everyone[rng.randrange(len(everyone))]
        entry = truth.listed.get((issuer_id, serial))
        uni.append((entry.status if entry else "good", issuer_id, serial, rng.choices(list(HashAlgorithm), [80, 20])[0]))
    uniform = _workload("uniform", uni, factory, work_dir, post=False)
    return zipf, uniform, good


def _workload(name: str, entries: list[Any], factory: RequestFactory, work_dir: Path, *, post: bool) -> Workload:
    ders: dict[tuple[int, int, Any], bytes] = {}
    gets, posts, distinct = [], [], []
    for _, issuer_id, serial, alg in entries:
        key = (issuer_id, serial, alg)
        der = ders.get(key)
        fresh = der is None
        if der is None:
            der = ders[key] = factory.der(issuer_id, serial, alg)
        get = factory.get(der)
        gets.append(get)
        if fresh:
            distinct.append(get)
        if post:
            posts.append(factory.post(der))
    get_file = work_dir / f"{name}-get.req"
    write_requests(get_file, gets)
    distinct_file = work_dir / f"{name}-get-distinct.req"
    write_requests(distinct_file, distinct)
    sample_file = work_dir / f"{name}-get-sample.req"
    write_requests(sample_file, gets[: min(len(gets), 60_000)])
    post_file = None
    if post:
        post_file = work_dir / f"{name}-post.req"
        write_requests(post_file, posts)
    return Workload(
        name, entries, get_file, post_file, distinct_file, sample_file,
        dict(collections.Counter(e[0] for e in entries)), len(ders),
    )  # fmt: skip


# HTTP client for checks and polls ------------------------------------------------------------------


class HTTPConn:
    """One keep-alive HTTP/1.1 client connection (asyncio streams)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


_REASON_FLAGS: dict[int, Any] = {}


def _reason_flag(code: int) -> Any:
    if not _REASON_FLAGS:
        for r in RevocationReason:
            _REASON_FLAGS[int(r)] = r.flag
    return _REASON_FLAGS[code]


class AnswerChecker:
    """Parses an OCSP answer with cryptography and compares it with the ground truth."""

    def __init__(self, issuer_certs: dict[int, Any]) -> None:
        self.issuer_certs = issuer_certs
        self.hashes = {i: issuer_hashes(c) for i, c in issuer_certs.items()}
        self.responders_ok: set[bytes] = set()

    def check(self, body: bytes, issuer_id: int, serial: int, alg: Any, expected: Any, *, verify_signature: bool) -> str:
        """'ok', 'tryLater', or a description of what is wrong. ``expected`` is None (good),
        'never-issued', or a population Listed."""
        try:
            resp = ocsp.load_der_ocsp_response(body)
        except ValueError as e:
            return f"unparseable: {e}"
        if resp.response_status is ocsp.OCSPResponseStatus.TRY_LATER:
            return "tryLater"
        if expected == "never-issued":
            return "ok" if resp.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED else f"never-issued answered {resp.response_status}"
        if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return f"status {resp.response_status}"
        ih = self.hashes[issuer_id][alg]
        if resp.serial_number != serial:
            return "serial mismatch"
        if resp.hash_algorithm.name != alg.hashlib_name:
            return f"hash algorithm {resp.hash_algorithm.name}, asked {alg.hashlib_name}"
        if resp.issuer_key_hash != ih.key_hash or resp.issuer_name_hash != ih.name_hash:
            return "issuer hashes mismatch"
        now = dt.datetime.now(dt.UTC)
        if not (resp.this_update_utc <= now + dt.timedelta(seconds=5) and resp.next_update_utc and resp.next_update_utc > now):
            return "outside its validity"
        status = resp.certificate_status
        if expected is None:
            if status is not ocsp.OCSPCertStatus.GOOD:
                return f"expected good, got {status}"
        else:
            if status is not ocsp.OCSPCertStatus.REVOKED:
                return f"expected {expected.status}, got {status}"
            if resp.revocation_time_utc != expected.revoked_at.replace(microsecond=0):
                return f"revocation time {resp.revocation_time_utc} != {expected.revoked_at}"
            if resp.revocation_reason != _reason_flag(expected.reason):
                return f"reason {resp.revocation_reason} != {expected.reason}"
        if verify_signature:
            responder = resp.certificates[0]
            der = responder.public_bytes(serialization.Encoding.DER)
            if der not in self.responders_ok:
                responder.verify_directly_issued_by(self.issuer_certs[issuer_id])
                eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                assert x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in eku
                self.responders_ok.add(der)
            try:
                responder.public_key().verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
            except Exception:  # noqa: BLE001
                return "bad signature"
        return "ok"


async def check_answers(
    port: int, sample: Sequence[tuple[str, int, int, Any]], factory: RequestFactory, checker: AnswerChecker,
    truth: Any, *, method: str, connections: int = 4,
) -> dict[str, Any]:
    """Ask the responder every sampled query and check each answer."""
    results: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    todo = iter(enumerate(sample))

    async def worker() -> None:
        conn = HTTPConn(port)
        try:
            for k, (cat, issuer_id, serial, alg) in todo:
                der = factory.der(issuer_id, serial, alg)
                raw = factory.get(der) if method == "GET" else factory.post(der)
                status, headers, body = await conn.request(raw)
                if status != 200:
                    results["http_error"] += 1
                    wrong.append(f"HTTP {status} for {cat} {serial:X}")
                    continue
                expected = "never-issued" if cat == "never-issued" else truth.listed.get((issuer_id, serial))
                verdict = checker.check(body, issuer_id, serial, alg, expected, verify_signature=k % 5 == 0)
                results[verdict if verdict in ("ok", "tryLater") else "wrong"] += 1
                if verdict not in ("ok", "tryLater"):
                    wrong.append(f"{cat} {serial:X} {alg.name}: {verdict}")
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"checked": len(sample), **results, "examples_of_wrong": wrong[:10], "method": method}


# wrk --------------------------------------------------------------------------------------------

WRK_LUA = r"""-- certstatus bench/ocsp.py: cycle through precomputed raw HTTP requests.
local reqs = {}
local n = 0
local i = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local pos, len = 1, #data
  while pos <= len do
    local l = tonumber(data:sub(pos, pos + 5))
    n = n + 1
    reqs[n] = data:sub(pos + 6, pos + 5 + l)
    pos = pos + 6 + l
  end
  i = (tonumber(args[2]) or 0) % n
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


def wrk_argv(
    wrk: str, threads: int, connections: int, script: Path, port: int, request_file: Path, duration: float, offset: int
) -> list[str]:
    """The wrk command of one run: the Lua script cycles through ``request_file`` from ``offset``."""
    return [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "2s",
        "-s", str(script), f"http://127.0.0.1:{port}/", "--", str(request_file), str(offset),
    ]  # fmt: skip


def run_wrk(
    opts: Options | None, script: Path, port: int, request_file: Path, duration: float, offset: int, *,
    wrk: str | None = None, threads: int | None = None, connections: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One wrk run and its figures. The binary, threads and connections are ``opts``' unless
    given as keywords (bench/ceiling.py has no Options; without either: wrk, 1, 64)."""
    argv = wrk_argv(
        wrk or (opts.wrk if opts else "wrk"),
        threads or (opts.wrk_threads if opts else 1),
        connections or (opts.connections if opts else 64),
        script, port, request_file, duration, offset,
    )  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["bytes_per_response"] = r["bytes"] / max(1, r["requests"])
            r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
            return r
    raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")


# nginx ------------------------------------------------------------------------------------------


def start_nginx(
    opts: Options | None, procs: Processes, work_dir: Path, name: str, workers: int, port: int, response: bytes, *,
    nginx: str | None = None,
) -> None:  # fmt: skip
    """nginx serving ``response`` for every /ocsp... request, from ``work_dir/name``. The binary
    is ``opts``' unless given (without either: nginx on the PATH)."""
    d = work_dir / name
    (d / "www").mkdir(parents=True, exist_ok=True)
    (d / "tmp").mkdir(exist_ok=True)
    (d / "www" / "response.der").write_bytes(response)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = f"""# bench/ocsp.py: one real OCSP response as a static file, for every GET (and POST) /ocsp...
{user}worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    open_file_cache max=16 inactive=3600s;
    open_file_cache_valid 3600s;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ }}
    default_type application/ocsp-response;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location /ocsp {{
            try_files /response.der =404;
            # The static module answers POST with 405: serve the same bytes instead.
            error_page 405 =200 $uri;
        }}
        location = /response.der {{ internal; }}
    }}
}}
"""
    (d / "nginx.conf").write_text(conf)
    binary = nginx or (opts.nginx if opts else "nginx")
    procs.start(name, [binary, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")])


# Responder ----------------------------------------------------------------------------------------


def service_env(svc: Any, opts: Options) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=svc.database_url,
        REDIS_URL=svc.redis_url,
        CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
        CERTSTATUS_LOG_LEVEL="WARNING",
        CERTSTATUS_PUBLIC_BASE_URL=BASE_URL,
    )
    if opts.signer_batch_size is not None:
        env["CERTSTATUS_SIGNER_BATCH_SIZE"] = str(opts.signer_batch_size)
    return env


def start_responder(procs: Processes, svc: Any, opts: Options, name: str, workers: int, port: int) -> None:
    env = service_env(svc, opts)
    env["CERTSTATUS_ADMIN_PORT"] = str(port + 1 if port < 65535 else port - 1)
    procs.start(
        name,
        [sys.executable, "-m", "responder", "--data-dir", str(svc.data_dir), "serve", "--workers", str(workers),
         "--public-port", str(port)],
        env=env,
    )  # fmt: skip


def wait_for(procs: Processes, name: str, pattern: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, procs.log(name)):
            return
        p = procs.procs.get(name)
        if p is not None and p.poll() is not None:
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{procs.log(name)[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not start in {timeout:.0f} s:\n{procs.log(name)[-3000:]}")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def run_loadgen(procs: Processes, work_dir: Path, name: str, spec: dict[str, Any], *, background: bool = False) -> Any:
    spec = dict(spec)
    spec["out"] = str(work_dir / f"{name}.json")
    spec_path = work_dir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    procs.start(name, [sys.executable, str(Path(__file__).resolve()), "--loadgen", str(spec_path)])
    if background:
        return None
    return finish_loadgen(procs, work_dir, name, timeout=float(spec.get("duration", 0)) + 900)


def finish_loadgen(
    procs: Processes, work_dir: Path, name: str, timeout: float = 120.0, *, interrupt: bool = False
) -> dict[str, Any]:
    p = procs.procs[name]
    if interrupt and p.poll() is None:
        p.send_signal(signal.SIGTERM)  # the generator stops sending and writes its figures
    try:
        p.wait(timeout)
    finally:
        procs.stop(name)
    out = work_dir / f"{name}.json"
    if not out.exists():
        raise RuntimeError(f"load generator {name} failed:\n{procs.log(name)[-3000:]}")
    return json.loads(out.read_text())


# Machine -------------------------------------------------------------------------------------------


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, with the script relative to the repository and the values of
    options that name this machine's paths replaced by placeholders."""
    script = Path(argv[0])
    try:
        shown = os.path.relpath(script.resolve(), REPO_DIR)
    except ValueError:
        shown = script.name
    masked: list[str] = []
    hide = {"--data-dir": "DIR", "--results-dir": "DIR", "--nginx": "NGINX", "--wrk": "WRK"}
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


def _cpu_model() -> str:
    from issuance import _cpu_model as cpu_model  # bench/ is on sys.path when run as a script

    return cpu_model()


def code_root() -> Path:
    """The checkout the project is imported from (``python -m responder`` runs from there)."""
    import ca_core

    return Path(ca_core.__file__).resolve().parent.parent


def code_commit() -> str:
    """The commit of the code measured: the checkout ca_core is imported from (which may
    not be this script's), marked when ca_core/ or responder/ differ from it."""
    import ca_core

    root = Path(ca_core.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "ca_core", "responder"], cwd=root, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' (with uncommitted changes)' if dirty else ''}"


def bench_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "ocsp.py", "population.py"], cwd=BENCH_DIR, capture_output=True,
            text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def machine_info(opts: Options) -> dict[str, Any]:
    import cryptography
    import uvloop
    from cryptography.hazmat.backends.openssl import backend

    def version(argv: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip().splitlines()
            return text[0] if text else "?"
        return "?"

    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "event_loop": f"uvloop {uvloop.__version__}",
        "nginx": version([opts.nginx, "-v"]),
        "wrk": version([opts.wrk, "-v"]).split(" Copyright")[0],
        "commit": code_commit(),
        "bench_commit": bench_commit(),
    }


# The run --------------------------------------------------------------------------------------------


async def redis_info(r: Any, section: str) -> dict[str, Any]:
    return dict(await r.info(section))


async def run(opts: Options, svc: Any, procs: Processes, work_dir: Path, argv: Sequence[str]) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    report: dict[str, Any] = {
        "benchmark": "ocsp",
        "started": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": command_line(argv),
        "machine": machine_info(opts),
        "loadavg_before": os.getloadavg()[0],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()
                     if k not in ("data_dir", "results_dir", "nginx", "wrk")},
        "goals": GOALS,
    }  # fmt: skip
    pool = await db.create_pool(svc.database_url, min_size=1, max_size=8)
    r = redis_asyncio.Redis.from_url(svc.redis_url)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn)
            report["machine"]["postgresql"] = await conn.fetchval("SHOW server_version")
            report["machine"]["pg_synchronous_commit"] = await conn.fetchval("SHOW synchronous_commit")
        server = await redis_info(r, "server")
        report["machine"]["valkey"] = server.get("valkey_version") or server.get("redis_version")
        # The embedded Valkey snapshots (save 60 100000 ...): a 1 GB BGSAVE fork in the middle
        # of a measurement would measure the disk, not the responder. Its contents are derived.
        await r.config_set("save", "")
        report["notes"] = ["Valkey RDB snapshots were switched off for the run (CONFIG SET save \"\")."]

        # 1. PKI and population -----------------------------------------------------------------
        vault = KeyVault(Passphrase(PASSPHRASE), scrypt_n_log2=14)
        urls = PublicURLs(BASE_URL)
        clock = SystemClock()
        note("creating the CA (root, moica, gca: ECDSA P-256 keys and OCSP signers)")
        await init_pki(
            pool, vault, clock=clock, urls=urls,
            issuers=[IssuerSpec(n, key_type=KeyType.EC_P256, ocsp_key_type=KeyType.EC_P256, crl_partitions=CRL_PARTITIONS)
                     for n in ISSUERS],
            actor=ACTOR, root_key_type=KeyType.EC_P256,
        )  # fmt: skip
        async with pool.acquire() as conn:
            rows = {i.name: i for i in await db.list_issuers(conn)}
            cas = {n: await load_signing_ca(conn, vault, rows[n]) for n in ISSUERS}
        now = clock.now()
        templates = [pop.make_templates(cas[n], rows[n].id, CRL_PARTITIONS, urls=urls, now=now) for n in ISSUERS]
        issuer_certs = {rows[n].id: cas[n].certificate for n in ISSUERS}
        issuer_names = {rows[n].id: n for n in ISSUERS}
        plan = pop.plan_population(
            templates, opts.certs, weights=[opts.moica_share, 1 - opts.moica_share], revoked_fraction=0.01,
            suspended_fraction=0.005, batch_size=50_000, issued_at=now.replace(microsecond=0),
            revoked_until=now + dt.timedelta(seconds=1), seed=opts.seed,
        )  # fmt: skip
        truth = plan.truth
        mem_before = (await redis_info(r, "memory"))["used_memory"]
        note(f"loading {opts.certs:,} certificates ({', '.join(f'{issuer_names[i]} {n:,}' for i, n in plan.shares.items())})")
        progress = Progress("loading certificates (sign + COPY)", opts.certs)
        load = pop.load_population(svc.database_url, templates, plan, processes=2, progress=progress)
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE certificates")
            counted = await conn.fetchval("SELECT count(*) FROM certificates")
            # How the signer's sweep chunks (ca_core.storage.postgres.chunk_bounds) share the serials.
            chunk_rows = []
            for issuer_id in issuer_names:
                for chunk in range(getattr(db, "SWEEP_CHUNKS", 256)):
                    low, high = db.chunk_bounds(chunk)
                    n = await conn.fetchval(
                        "SELECT count(*) FROM certificates WHERE issuer_id = $1 AND serial >= $2 "
                        "AND ($3::bytea IS NULL OR serial < $3)",
                        issuer_id, low, high,
                    )  # fmt: skip
                    chunk_rows.append({"issuer_id": issuer_id, "chunk": chunk, "n": n})
            sample_keys = [(i, s) for i, serials in truth.serials.items() for s in rng.sample(serials, 4)]
            sample_keys += rng.sample(sorted(truth.listed), 4)
            ders = []
            for issuer_id, serial in sample_keys:
                row = await conn.fetchrow(
                    "SELECT der, holder_id, status::text AS status, reason FROM certificates WHERE issuer_id=$1 AND serial=$2",
                    issuer_id, serial.to_bytes(16, "big"),
                )  # fmt: skip
                entry = truth.listed.get((issuer_id, serial))
                assert row["status"] == (entry.status if entry else "good"), "status in the database differs from the plan"
                ders.append((issuer_id, serial, bytes(row["der"]), row["holder_id"]))
        verified = pop.verify_samples(ders, {t.issuer_id: t for t in templates}, urls)
        report["population"] = {
            "certificates": opts.certs,
            "rows_in_table": counted,
            "by_issuer": {issuer_names[i]: n for i, n in plan.shares.items()},
            "revoked": sum(1 for v in truth.listed.values() if v.status == "revoked"),
            "suspended": sum(1 for v in truth.listed.values() if v.status == "suspended"),
            "revocation_reasons": dict(collections.Counter(str(v.reason) for v in truth.listed.values() if v.status == "revoked")),
            "load_s": load["elapsed_s"],
            "load_rate": load["rows"] / load["elapsed_s"],
            "build_sign_cpu_s": load["build_sign_cpu_s"],
            "copy_wait_s": load["copy_wait_s"],
            "verified_with_cryptography": verified,
            "sweep_chunks": {
                issuer_names[i]: {
                    "chunks": sum(1 for x in chunk_rows if x["issuer_id"] == i),
                    "non_empty": sum(1 for x in chunk_rows if x["issuer_id"] == i and x["n"]),
                    "largest": max(x["n"] for x in chunk_rows if x["issuer_id"] == i),
                }
                for i in issuer_names
            },
            "cert_der_bytes": statistics.fmean(len(d[2]) for d in ders),
        }
        note(f"loaded {load['rows']:,} certificates in {load['elapsed_s']:.1f} s ({load['rows'] / load['elapsed_s']:,.0f}/s); "
             f"{verified} verified with cryptography")  # fmt: skip

        # 2. Pre-sign ---------------------------------------------------------------------------------
        sign_seconds = 2.0 if opts.quick else 3.0
        note("raw ECDSA P-256 signing, 2 processes and 1 (before the signer)")
        raw2_before = raw_sign_rate(2, sign_seconds)
        raw1_before = raw_sign_rate(1, sign_seconds)
        env = service_env(svc, opts)
        if opts.signer_batch_size is not None:
            report["notes"].append(
                f"The signer ran with CERTSTATUS_SIGNER_BATCH_SIZE={opts.signer_batch_size} (--signer-batch-size; "
                "the product default is 500)."
            )
        note("certstatus signer --once --processes 2")
        t0 = time.perf_counter()
        signer_cmd = [sys.executable, "-m", "responder", "--data-dir", str(svc.data_dir), "signer", "--once", "--processes", "2"]
        proc = subprocess.run(
            signer_cmd, env=env, capture_output=True, text=True, cwd=code_root()
        )
        presign_wall = time.perf_counter() - t0
        sys.stderr.write(proc.stderr[-2000:])
        if proc.returncode != 0:
            raise RuntimeError(f"certstatus signer --once failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        own = re.findall(r"in ([0-9.]+)s", proc.stderr)
        signer_own_s = float(own[-1]) if own else None
        note("raw ECDSA P-256 signing, 2 processes and 1 (after the signer)")
        raw2_after = raw_sign_rate(2, sign_seconds)
        raw1_after = raw_sign_rate(1, sign_seconds)
        dbsize = await r.dbsize()
        response_key = re.compile(rb"ocsp:[0-9]+:[0-9A-F]+")
        responses = 0
        async for k in r.scan_iter(match="ocsp:*", count=20_000):
            if response_key.fullmatch(k):
                responses += 1
        filled = {issuer_names[i]: bool(await r.exists(store.filled_key(i))) for i in issuer_names}
        expected = opts.certs + len(ISSUERS)  # and each issuer's OCSP signer certificate
        if responses != expected or not all(filled.values()):
            raise RuntimeError(
                f"the signer exited {proc.returncode} but Redis holds {responses:,} responses of {expected:,} "
                f"(filled markers {filled}); its output:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        mem_after = (await redis_info(r, "memory"))["used_memory"]
        # Average stored value (16-octet header + DER) and Valkey's own per-key accounting.
        sample = rng.sample([(i, s) for i, serials in truth.serials.items() for s in serials[:20000]], 2000)
        pipe = r.pipeline(transaction=False)
        for issuer_id, serial in sample:
            pipe.strlen(store.response_key(issuer_id, serial))
        lengths = await pipe.execute()
        pipe = r.pipeline(transaction=False)
        for issuer_id, serial in sample[:500]:
            pipe.memory_usage(store.response_key(issuer_id, serial))
        usages = [u for u in await pipe.execute() if u]
        # In-process references, one process.
        async with pool.acquire() as conn:
            signings = await load_issuer_signers(conn, vault, clock.now())
            moica_id = rows["moica"].id
            responder_cert, responder_key = await load_ocsp_signer(conn, vault, rows["moica"], clock.now())
        rs = signings[moica_id].signer
        t_now = int(time.time())
        serials = truth.serials[moica_id][:1000]
        good = SingleStatus.good()
        rs_rate = timed_rate(lambda i: rs.sign(serials[i % 1000], good, this_update=t_now, next_update=t_now + 345600), sign_seconds)
        ih = issuer_hashes(issuer_certs[moica_id])[HashAlgorithm.SHA1]
        this_dt = dt.datetime.fromtimestamp(t_now, dt.UTC)

        def crypto_build(i: int) -> bytes:
            return (
                ocsp.OCSPResponseBuilder()
                .add_response_by_hash(
                    ih.name_hash, ih.key_hash, serials[i % 1000], hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
                    this_dt, this_dt + dt.timedelta(days=4), None, None,
                )
                .responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert)
                .certificates([responder_cert])
                .sign(responder_key, hashes.SHA256())
                .public_bytes(serialization.Encoding.DER)
            )

        crypto_rate = timed_rate(crypto_build, sign_seconds)
        raw2 = (raw2_before + raw2_after) / 2
        report["presign"] = {
            "command": "certstatus signer --once --processes 2"
            + (f" (CERTSTATUS_SIGNER_BATCH_SIZE={opts.signer_batch_size})" if opts.signer_batch_size else ""),
            "responses": responses,
            "other_keys": dbsize - responses,
            "filled_markers": filled,
            "wall_s": presign_wall,
            "rate": responses / presign_wall,
            "signer_progress_s": signer_own_s,
            "rate_excluding_startup": responses / signer_own_s if signer_own_s else None,
            "raw_sign_2proc": raw2,
            "raw_sign_2proc_brackets": [raw2_before, raw2_after],
            "raw_sign_1proc": (raw1_before + raw1_after) / 2,
            "raw_sign_1proc_brackets": [raw1_before, raw1_after],
            "response_signer_1proc": rs_rate,
            "cryptography_builder_1proc": crypto_rate,
            "ratio_to_raw_2proc": responses / presign_wall / raw2,
            "redis_used_memory_before": mem_before,
            "redis_used_memory_after": mem_after,
            "redis_bytes_per_cert": (mem_after - mem_before) / max(1, responses),
            "stored_value_bytes_mean": statistics.fmean(lengths),
            "memory_usage_per_key_mean": statistics.fmean(usages) if usages else None,
            "response_der_bytes_mean": statistics.fmean(lengths) - store.HEADER.size,
        }
        p = report["presign"]
        note(f"pre-signed {responses:,} responses in {presign_wall:.1f} s ({p['rate']:,.0f}/s; raw 2 procs {raw2:,.0f}/s, "
             f"ratio {p['ratio_to_raw_2proc']:.2f}); Redis {p['redis_bytes_per_cert']:.0f} B/cert")  # fmt: skip

        # 3. Throughput ---------------------------------------------------------------------------------
        factory = RequestFactory(issuer_certs)
        for c in ("good", "revoked", "never"):
            issuer_id, serial = (
                next(iter(truth.listed)) if c == "revoked" else truth.never_issued[0] if c == "never"
                else (moica_id, truth.serials[moica_id][0])
            )  # fmt: skip
            for alg in HashAlgorithm:
                factory.check(issuer_id, serial, alg)
        note(f"building {opts.requests:,} requests (Zipf s=1.0; GET and POST) and a uniform list")
        zipf, uniform, good_by_popularity = build_workloads(opts, truth, factory, work_dir, rng)
        script = work_dir / "ocsp.lua"
        script.write_text(WRK_LUA)
        report["workload"] = {
            "requests_in_list": opts.requests,
            "zipf_categories": zipf.categories,
            "zipf_distinct_queries": zipf.distinct,
            "uniform_distinct_queries": uniform.distinct,
            "sha256_share": sum(1 for e in zipf.entries if e[3] is HashAlgorithm.SHA256) / len(zipf.entries),
            "get_request_bytes_mean": zipf.get_file.stat().st_size / len(zipf.entries) - 6,
        }
        ports = {name: free_port() for name in ("resp1", "resp2", "nginx1", "nginx2")}
        start_responder(procs, svc, opts, "resp1", 1, ports["resp1"])
        start_responder(procs, svc, opts, "resp2", 2, ports["resp2"])
        # nginx serves the bytes of one real response: a popular good certificate's.
        top_issuer, top_serial = good_by_popularity[0]
        value = await r.get(store.response_key(top_issuer, top_serial))
        nginx_body = store.unpack(value).der
        start_nginx(opts, procs, work_dir, "nginx1", 1, ports["nginx1"], nginx_body)
        start_nginx(opts, procs, work_dir, "nginx2", 2, ports["nginx2"], nginx_body)
        wait_for(procs, "resp1", r"public responder on")
        wait_for(procs, "resp2", r"public workers on")
        for name in ("nginx1", "nginx2"):
            wait_port(ports[name])
        # nginx answers what we think it answers, for GET and POST.
        nginx_check = {}
        for method in ("GET", "POST"):
            conn = HTTPConn(ports["nginx1"])
            der = factory.der(top_issuer, top_serial, HashAlgorithm.SHA1)
            status, headers, body = await conn.request(factory.get(der) if method == "GET" else factory.post(der))
            status2, _, body2 = await conn.request(factory.get(der) if method == "GET" else factory.post(der))
            await conn.close()
            nginx_check[method] = status == 200 and body == nginx_body and status2 == 200 and body2 == nginx_body
        report["nginx_check"] = nginx_check
        note(f"nginx serves the response for GET: {nginx_check['GET']}, POST: {nginx_check['POST']}")
        methods = ["GET", "POST"] if nginx_check["POST"] else ["GET"]

        # Warm the responders (one pass over each list), then check a sample of answers.
        # Few connections, so that live signing (SHA-256 CertIDs, 8 at a time per worker by
        # default) is not shed as tryLater, which would leave those answers uncached; the
        # 2-worker responder gets two passes, since each pass reaches each worker with only
        # the connections the kernel gives it.
        warm = {}
        for name, passes, conns in (("resp1", 1, 8), ("resp2", 2, 16)):
            for k in range(passes):
                note(f"warming {name}: one GET for each of the {zipf.distinct:,} distinct queries of the list "
                     f"({conns} connections, pass {k + 1}/{passes})")  # fmt: skip
                res = warm[f"{name} pass {k + 1}"] = run_loadgen(
                    procs, work_dir, f"warm-{name}-{k}",
                    {"mode": "pass", "host": "127.0.0.1", "port": ports[name], "file": str(zipf.distinct_get_file),
                     "connections": conns},
                )  # fmt: skip
                note(f"  {res['requests']:,} in {res['elapsed_s']:.1f} s; answers {res['answers']}")
        report["warmup"] = warm
        checker = AnswerChecker(issuer_certs)
        sample = rng.sample(zipf.entries, min(1500, len(zipf.entries)))
        sample += [("revoked", *k, rng.choice(list(HashAlgorithm))) for k, v in rng.sample(sorted(truth.listed.items()), 100) if v.status == "revoked"]
        sample += [("suspended", *k, rng.choice(list(HashAlgorithm))) for k, v in truth.listed.items() if v.status == "suspended"][:50]
        sample += [("never-issued", *k, rng.choice(list(HashAlgorithm))) for k in truth.never_issued[:50]]
        checks = {}
        for name in ("resp1", "resp2"):
            for method in ("GET", "POST"):
                checks[f"{name} {method}"] = await check_answers(ports[name], sample, factory, checker, truth, method=method)
        report["answer_checks"] = checks
        note("answer checks: " + "; ".join(f"{k}: {v.get('ok', 0)} ok, {v.get('tryLater', 0)} tryLater, {v.get('wrong', 0)} wrong"
                                          for k, v in checks.items()))  # fmt: skip

        runs: list[dict[str, Any]] = []
        targets = ["resp1", "resp2", "nginx1", "nginx2"]
        for rnd in range(opts.rounds):
            order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
            if rnd % 2:
                order.reverse()
            for target in order:
                for method in methods:
                    f = zipf.get_file if method == "GET" else zipf.post_file
                    assert f is not None
                    stats0 = await redis_info(r, "stats")
                    res = run_wrk(opts, script, ports[target], f, opts.duration, rng.randrange(opts.requests))
                    stats1 = await redis_info(r, "stats")
                    res.update(round=rnd, target=target, method=method, workload="zipf", loadavg=os.getloadavg()[0])
                    res["redis_gets_per_request"] = (
                        (stats1["keyspace_hits"] + stats1["keyspace_misses"]) - (stats0["keyspace_hits"] + stats0["keyspace_misses"])
                    ) / max(1, res["requests"])  # fmt: skip
                    runs.append(res)
                    note(f"round {rnd + 1}/{opts.rounds} {target:6} {method:4} zipf: {res['rps']:>9,.0f} req/s  "
                         f"p50 {res['p50_us'] / 1000:.2f} ms  p99 {res['p99_us'] / 1000:.2f} ms  errors {res['errors']}  "
                         f"redis GETs/req {res['redis_gets_per_request']:.3f}")  # fmt: skip
            for target in ("resp1", "resp2"):
                stats0 = await redis_info(r, "stats")
                res = run_wrk(opts, script, ports[target], uniform.get_file, opts.duration, rng.randrange(opts.requests))
                stats1 = await redis_info(r, "stats")
                res.update(round=rnd, target=target, method="GET", workload="uniform", loadavg=os.getloadavg()[0])
                res["redis_gets_per_request"] = (
                    (stats1["keyspace_hits"] + stats1["keyspace_misses"]) - (stats0["keyspace_hits"] + stats0["keyspace_misses"])
                ) / max(1, res["requests"])  # fmt: skip
                runs.append(res)
                note(f"round {rnd + 1}/{opts.rounds} {target:6} GET  uniform: {res['rps']:>9,.0f} req/s  "
                     f"p50 {res['p50_us'] / 1000:.2f} ms  p99 {res['p99_us'] / 1000:.2f} ms  errors {res['errors']}  "
                     f"redis GETs/req {res['redis_gets_per_request']:.3f}")  # fmt: skip
        report["wrk_runs"] = runs
        medians: dict[str, dict[str, float]] = {}
        for key in sorted({(x["target"], x["method"], x["workload"]) for x in runs}):
            sel = [x for x in runs if (x["target"], x["method"], x["workload"]) == key]
            medians[" ".join(key)] = {
                "rps": statistics.median(x["rps"] for x in sel),
                "p50_ms": statistics.median(x["p50_us"] for x in sel) / 1000,
                "p99_ms": statistics.median(x["p99_us"] for x in sel) / 1000,
                "errors": sum(x["errors"] for x in sel),
                "bytes_per_response": statistics.median(x["bytes_per_response"] for x in sel),
                "redis_gets_per_request": statistics.median(x["redis_gets_per_request"] for x in sel),
                "runs": len(sel),
                "rps_all": [x["rps"] for x in sel],
            }
        report["throughput"] = medians

        # A second check after the load: the caches answer right too.
        report["answer_checks_after_load"] = {
            name: await check_answers(ports[name], sample, factory, checker, truth, method="GET") for name in ("resp1", "resp2")
        }

        # What the answers were (wrk cannot tell a tryLater from a response): closed-loop
        # passes of the generator over the first requests of each list, counting answer kinds.
        census = {}
        for name in ("resp1", "resp2"):
            for wl in (zipf, uniform):
                census[f"{name} {wl.name}"] = run_loadgen(
                    procs, work_dir, f"census-{name}-{wl.name}",
                    {"mode": "pass", "host": "127.0.0.1", "port": ports[name], "file": str(wl.sample_get_file),
                     "connections": opts.connections},
                )  # fmt: skip
                c = census[f"{name} {wl.name}"]
                note(f"answer census {name} {wl.name}: {c['requests']:,} at {c['requests'] / c['elapsed_s']:,.0f}/s: {c['answers']}")
        report["answer_census"] = census

        # Constant rate at 80 % of the responder's best GET rate (and a few lower rates),
        # and the same 80 % rate against nginx: what the generator itself adds.
        best_resp = max(("resp1", "resp2"), key=lambda t: medians[f"{t} GET zipf"]["rps"])
        best_nginx = max(("nginx1", "nginx2"), key=lambda t: medians[f"{t} GET zipf"]["rps"])
        best_rate = medians[f"{best_resp} GET zipf"]["rps"]
        target_rate = opts.rate_fraction * best_rate
        constant = []
        plan = [(best_resp, opts.rate_fraction), (best_nginx, opts.rate_fraction)]
        plan += [(best_resp, f) for f in opts.rate_sweep if abs(f - opts.rate_fraction) > 1e-9]
        for name, fraction in plan:
            rate = fraction * best_rate
            note(f"constant rate {rate:,.0f} req/s ({fraction:.0%}) against {name} for {opts.constant_seconds:.0f} s")
            res = run_loadgen(
                procs, work_dir, f"rate-{name}-{fraction:.2f}",
                {"mode": "rate", "host": "127.0.0.1", "port": ports[name], "file": str(zipf.get_file),
                 "connections": opts.connections, "rate": rate, "duration": opts.constant_seconds,
                 "warmup": 2.0, "offset": rng.randrange(opts.requests)},
            )  # fmt: skip
            res.update(target=name, fraction=fraction, loadavg=os.getloadavg()[0])
            constant.append(res)
            lat = res.get("latency_ms", {})
            note(f"  achieved {res['achieved_rate']:,.0f}/s, p50 {lat.get('p50', float('nan')):.2f} ms, "
                 f"p99 {lat.get('p99', float('nan')):.2f} ms, generator CPU {res['generator_cpu_fraction']:.0%}")  # fmt: skip
        report["constant_rate"] = {"target": best_resp, "reference": best_nginx, "rate": target_rate,
                                   "best_median": best_rate, "fraction": opts.rate_fraction, "runs": constant}  # fmt: skip

        # 4. Propagation -------------------------------------------------------------------------------
        for name in ("resp1", "nginx1", "nginx2"):
            procs.stop(name)
        procs.start("signer", [sys.executable, "-m", "responder", "--data-dir", str(svc.data_dir), "signer", "--quiet"], env=env)
        await asyncio.sleep(3.0)
        load_rate = opts.propagation_load * medians["resp2 GET zipf"]["rps"]
        # The load runs for longer than the revocations can take; stopped when they are done.
        bg_seconds = 600.0
        run_loadgen(
            procs, work_dir, "propagation-load",
            {"mode": "rate", "host": "127.0.0.1", "port": ports["resp2"], "file": str(zipf.get_file),
             "connections": opts.connections, "rate": load_rate, "duration": bg_seconds, "warmup": 1.0,
             "offset": rng.randrange(opts.requests)},
            background=True,
        )  # fmt: skip
        await asyncio.sleep(2.0)
        authority = CertificateAuthority(pool, vault, clock=SystemClock(), urls=urls)
        prop = await measure_propagation(
            opts, authority, ports["resp2"], factory, checker, good_by_popularity, issuer_names, rng
        )
        prop["load"] = finish_loadgen(procs, work_dir, "propagation-load", 30.0, interrupt=True)
        procs.stop("signer")
        report["propagation"] = prop
        report["propagation"]["load_rate"] = load_rate
        report["loadavg_after"] = os.getloadavg()[0]
        report["finished"] = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        return report
    finally:
        await r.aclose()
        await pool.close()


async def measure_propagation(
    opts: Options, authority: Any, port: int, factory: RequestFactory, checker: AnswerChecker,
    good_by_popularity: list[tuple[int, int]], issuer_names: dict[int, str], rng: random.Random,
) -> dict[str, Any]:
    """Revoke good certificates one by one; time from revoke()'s return until every one of 8
    keep-alive connections (spread over the workers by SO_REUSEPORT) answers revoked."""
    n = opts.revocations
    popular = good_by_popularity[: max(2000, n)]
    chosen = [(k, True) for k in rng.sample(popular, n // 2)]
    rest = good_by_popularity[len(popular) :]
    chosen += [(k, False) for k in rng.sample(rest, n - n // 2)]
    rng.shuffle(chosen)
    conns = [HTTPConn(port) for _ in range(8)]
    reasons = ["keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "unspecified"]
    records = []
    timeouts = 0
    wrong: list[str] = []
    progress = Progress("revocations", n)
    try:
        for (issuer_id, serial), is_popular in chosen:
            req = factory.get(factory.der(issuer_id, serial, HashAlgorithm.SHA1))
            # Every connection asks once first: the workers cache the good answer.
            before = await asyncio.gather(*(c.request(req) for c in conns))
            for _, _, body in before:
                if ocsp.load_der_ocsp_response(body).certificate_status is not ocsp.OCSPCertStatus.GOOD:
                    wrong.append(f"{serial:X} was not good before its revocation")
            record = await authority.revoke(issuer_names[issuer_id], serial, actor=ACTOR, reason=rng.choice(reasons))
            t0 = time.perf_counter()
            first = None
            done = None
            seen = [False] * len(conns)
            polls = 0
            while time.perf_counter() - t0 < 10.0:
                tick = time.perf_counter()
                answers = await asyncio.gather(*(c.request(req) for c in conns))
                polls += 1
                t = time.perf_counter()
                for k, (_, _, body) in enumerate(answers):
                    resp = ocsp.load_der_ocsp_response(body)
                    if resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and resp.certificate_status is ocsp.OCSPCertStatus.REVOKED:
                        if seen[k] is False:
                            seen[k] = True
                    elif seen[k]:
                        wrong.append(f"{serial:X}: a connection answered good again after revoked")
                if any(seen) and first is None:
                    first = t - t0
                if all(seen):
                    done = t - t0
                    verdict = checker.check(answers[0][2], issuer_id, serial, HashAlgorithm.SHA1,
                                            _listed_from(record), verify_signature=True)  # fmt: skip
                    if verdict != "ok":
                        wrong.append(f"{serial:X}: {verdict}")
                    break
                await asyncio.sleep(max(0.0, 0.002 - (time.perf_counter() - tick)))
            if done is None:
                timeouts += 1
            records.append({"popular": is_popular, "first_s": first, "all_s": done, "polls": polls})
            progress.update()
        progress.close()
    finally:
        for c in conns:
            await c.close()
    all_s = [x["all_s"] for x in records if x["all_s"] is not None]
    first_s = [x["first_s"] for x in records if x["first_s"] is not None]

    def stats(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "p50": percentile(values, 0.5), "p90": percentile(values, 0.9),
                "p99": percentile(values, 0.99), "max": max(values) if values else float("nan")}  # fmt: skip

    return {
        "revocations": n,
        "timeouts_10s": timeouts,
        "wrong": wrong[:20],
        "wrong_count": len(wrong),
        "all_connections_s": stats(all_s),
        "first_connection_s": stats(first_s),
        "popular_all_s": stats([x["all_s"] for x in records if x["popular"] and x["all_s"] is not None]),
        "unpopular_all_s": stats([x["all_s"] for x in records if not x["popular"] and x["all_s"] is not None]),
        "records": records,
    }


def _listed_from(record: Any) -> Any:
    return pop.Listed("revoked", record.revoked_at, int(record.reason), record.invalidity_date)


# Report -------------------------------------------------------------------------------------------


def _r(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def _goal(met: bool, text: str) -> str:
    return f"{'met' if met else '**missed**'}: {text}"


def evaluate_goals(rep: dict[str, Any]) -> list[tuple[str, bool, str]]:
    t = rep["throughput"]
    out = []
    best_resp = max(t[f"{x} GET zipf"]["rps"] for x in ("resp1", "resp2"))
    best_nginx = max(t[f"{x} GET zipf"]["rps"] for x in ("nginx1", "nginx2"))
    ratio = best_resp / best_nginx
    out.append(("responder ≥ 40 % of nginx req/s (GET, best worker count of each)", ratio >= GOALS["nginx_ratio"],
                f"{ratio:.0%} ({best_resp:,.0f} vs {best_nginx:,.0f} req/s; {ratio / GOALS['nginx_ratio']:.2f}× the goal)"))
    if "resp1 POST zipf" in t and "nginx1 POST zipf" in t:
        best_resp_p = max(t[f"{x} POST zipf"]["rps"] for x in ("resp1", "resp2"))
        best_nginx_p = max(t[f"{x} POST zipf"]["rps"] for x in ("nginx1", "nginx2"))
        rp = best_resp_p / best_nginx_p
        out.append(("responder ≥ 40 % of nginx req/s (POST)", rp >= GOALS["nginx_ratio"],
                    f"{rp:.0%} ({best_resp_p:,.0f} vs {best_nginx_p:,.0f} req/s)"))
    c = rep["constant_rate"]
    run = next(x for x in c["runs"] if x["target"] == c["target"] and x["fraction"] == c["fraction"])
    p99 = run.get("latency_ms", {}).get("p99", float("inf"))
    achieved = run["achieved_rate"] >= 0.97 * c["rate"] and run.get("unfinished", 0) == 0
    out.append(("p99 < 10 ms at 80 % of the responder's max rate", p99 < GOALS["p99_at_80pct_ms"] and achieved,
                f"p99 {p99:.2f} ms at {c['rate']:,.0f} req/s ({c['target']}; achieved {run['achieved_rate']:,.0f}/s)"
                + ("" if p99 < GOALS["p99_at_80pct_ms"] else f"; {p99 / GOALS['p99_at_80pct_ms']:.1f}× the bound")))
    p = rep["presign"]
    out.append(("pre-sign ≥ 80 % of raw signing with both cores", p["ratio_to_raw_2proc"] >= GOALS["presign_ratio"],
                f"{p['ratio_to_raw_2proc']:.0%} ({p['rate']:,.0f} vs {p['raw_sign_2proc']:,.0f}/s; "
                f"{p['ratio_to_raw_2proc'] / GOALS['presign_ratio']:.2f}× the goal)"))
    out.append(("Redis < 1 KB per certificate", p["redis_bytes_per_cert"] < GOALS["redis_bytes_per_cert"],
                f"{p['redis_bytes_per_cert']:,.0f} B per certificate ({p['redis_bytes_per_cert'] / 1024:.2f} KiB)"))
    pr = rep["propagation"]["all_connections_s"]
    to = rep["propagation"]["timeouts_10s"]
    out.append(("propagation p99 < 1 s", pr["p99"] < GOALS["propagation_p99_s"] and to == 0,
                f"p99 {pr['p99'] * 1000:,.0f} ms" + (f", {to} not seen in 10 s" if to else "")))
    out.append(("propagation p50 < 100 ms", pr["p50"] < GOALS["propagation_p50_s"],
                f"p50 {pr['p50'] * 1000:,.0f} ms"))
    return out


def render_markdown(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    pop_ = rep["population"]
    p = rep["presign"]
    t = rep["throughput"]
    lines = [
        "# OCSP benchmark",
        "",
        f"- Date: {rep['started'].replace('T', ' ')[:16]} UTC (finished {rep['finished'][11:16]})",
        f"- Command: `{rep['command']}`",
        f"- Code measured: commit {m['commit']} (benchmark script at {m['bench_commit']})",
        f"- Machine: nproc {m['nproc']} ({m['cpu']}), {m['memory']}, {m['os']}",
        f"- {m['python']} ({m['event_loop']}), cryptography {m['cryptography']} ({m['openssl']}), "
        f"PostgreSQL {m['postgresql']} (embedded, synchronous_commit={m['pg_synchronous_commit']}), "
        f"Valkey {m['valkey']} (embedded), {m['nginx']}, {m['wrk']}",
        f"- Load average (1 min) before / after: {rep['loadavg_before']:.2f} / {rep['loadavg_after']:.2f}",
        *[f"- Note: {n}" for n in rep.get("notes", [])],
        "",
        "## Goals",
        "",
        "| goal | result |",
        "|---|---|",
    ]
    for name, met, text in evaluate_goals(rep):
        lines.append(f"| {name} | {_goal(met, text)} |")
    lines += [
        "",
        "## 1. Population",
        "",
        f"{pop_['certificates']:,} certificates ({', '.join(f'{k} {v:,}' for k, v in pop_['by_issuer'].items())}; "
        f"{pop_['revoked']:,} revoked, {pop_['suspended']:,} suspended), ECDSA P-256 issuers, "
        f"{pop_['cert_der_bytes']:.0f}-byte certificates (RSA-2048 subject keys), loaded in {pop_['load_s']:.1f} s: "
        f"**{pop_['load_rate']:,.0f} certificates/s** (build + sign + COPY, 2 processes; in the workers "
        f"{pop_['build_sign_cpu_s']:.0f} s building and signing, {pop_['copy_wait_s']:.0f} s waiting for COPY). "
        f"{pop_['verified_with_cryptography']} sampled rows verified with cryptography (issuer signature, serial, "
        "holder number, CRL partition URL). The signer's sweep chunks (`chunk_bounds`) that hold certificates: "
        + "; ".join(f"{k} {v['non_empty']} of {v.get('chunks', 256)}, the largest {v['largest']:,} certificates"
                    for k, v in pop_["sweep_chunks"].items())
        + ".",
        "",
        "## 2. Pre-signing",
        "",
        "| measurement | rate (/s) | ratio to raw ECDSA P-256, 2 processes |",
        "|---|--:|--:|",
        f"| raw ECDSA P-256 sign, 250 B, 2 processes (before / after: {_r(p['raw_sign_2proc_brackets'][0])} / "
        f"{_r(p['raw_sign_2proc_brackets'][1])}) | {_r(p['raw_sign_2proc'])} | 1.00 |",
        f"| raw ECDSA P-256 sign, 1 process | {_r(p['raw_sign_1proc'])} | {p['raw_sign_1proc'] / p['raw_sign_2proc']:.2f} |",
        f"| `ResponseSigner.sign` (build + sign), 1 process | {_r(p['response_signer_1proc'])} | "
        f"{p['response_signer_1proc'] / p['raw_sign_2proc']:.2f} |",
        f"| cryptography `OCSPResponseBuilder` (build + sign), 1 process | {_r(p['cryptography_builder_1proc'])} | "
        f"{p['cryptography_builder_1proc'] / p['raw_sign_2proc']:.2f} |",
        f"| **`{p['command']}`**: {p['responses']:,} responses in {p['wall_s']:.1f} s wall (process start to exit) | "
        f"**{_r(p['rate'])}** | **{p['ratio_to_raw_2proc']:.2f}** |",
    ]
    if p.get("rate_excluding_startup"):
        lines.append(f"| the same, by its own progress line ({p['signer_progress_s']:.1f} s, without start-up) | "
                     f"{_r(p['rate_excluding_startup'])} | {p['rate_excluding_startup'] / p['raw_sign_2proc']:.2f} |")
    lines += [
        "",
        f"Redis: used_memory grew by {(p['redis_used_memory_after'] - p['redis_used_memory_before']) / 2**20:,.0f} MiB "
        f"for {p['responses']:,} responses: **{p['redis_bytes_per_cert']:,.0f} bytes per certificate**; stored value "
        f"{p['stored_value_bytes_mean']:.0f} bytes on average (16-byte header + {p['response_der_bytes_mean']:.0f}-byte "
        f"response), `MEMORY USAGE` {_r(p['memory_usage_per_key_mean'])} bytes per key. Filled markers: "
        f"{', '.join(f'{k} {v}' for k, v in p['filled_markers'].items())}.",
        "",
        "## 3. Throughput (wrk)",
        "",
    ]
    w = rep["workload"]
    s = rep["settings"]
    lines += [
        f"wrk -t{s['wrk_threads']} -c{s['connections']} -d{s['duration']:.0f}s, a Lua script cycling through "
        f"{w['requests_in_list']:,} precomputed requests from a random offset; {s['rounds']} rounds in rotating order; "
        f"medians. Zipf (s = 1.0) list: {', '.join(f'{k} {v:,}' for k, v in w['zipf_categories'].items())} "
        f"({w['zipf_distinct_queries']:,} distinct queries, {w['sha256_share']:.0%} SHA-256 CertIDs). Uniform list: "
        f"serials drawn uniformly from all {pop_['certificates']:,} certificates ({w['uniform_distinct_queries']:,} "
        "distinct). nginx serves one real pre-signed response as a static file for every /ocsp request "
        f"(POST via `error_page 405 =200`; checked: GET {rep['nginx_check']['GET']}, POST {rep['nginx_check']['POST']}).",
        "",
        "| target | method | list | req/s | p50 (ms) | p99 (ms) | ratio to nginx (same method, same workers) | "
        "Redis GETs / request | bytes / response | errors | req/s of each run |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for key, v in t.items():
        target, method, workload = key.split()
        ref = t.get(f"nginx{target[-1]} {method} zipf")
        ratio = v["rps"] / ref["rps"] if ref and target.startswith("resp") else None
        label = {"resp1": "responder, 1 worker", "resp2": "responder, 2 workers", "nginx1": "nginx, 1 worker",
                 "nginx2": "nginx, 2 workers"}[target]  # fmt: skip
        lines.append(
            f"| {label} | {method} | {workload} | {_r(v['rps'])} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {v['redis_gets_per_request']:.3f} | "
            f"{v['bytes_per_response']:.0f} | {v['errors']} | {', '.join(_r(x) for x in v['rps_all'])} |"
        )
    loads = [x["loadavg"] for x in rep["wrk_runs"]]
    lines += [
        "",
        f"1-minute load average during the wrk runs: {min(loads):.2f} to {max(loads):.2f} (this script's processes "
        "and anything else on the machine).",
        "",
        "Warm-up (one GET per distinct query of the Zipf list, closed loop, 8 connections for 1 worker, 16 for 2): "
        + "; ".join(f"{k} {v['requests']:,} in {v['elapsed_s']:.1f} s ({', '.join(f'{a} {n:,}' for a, n in sorted(v['answers'].items()))})"
                    for k, v in rep["warmup"].items()) + ".",
        "",
        "Answer census: wrk cannot tell a tryLater (a 5-byte OCSP answer with HTTP 200) from a response, so the "
        "generator makes one closed-loop pass (64 connections) over the first requests of each list and counts "
        "what came back:",
        "",
        "| target | list | requests | req/s (closed loop) | answers |",
        "|---|---|--:|--:|---|",
    ]
    for k, v in rep["answer_census"].items():
        target, wl = k.split()
        lines.append(f"| {target} | {wl} | {v['requests']:,} | {_r(v['requests'] / v['elapsed_s'])} | "
                     f"{', '.join(f'{a} {n:,}' for a, n in sorted(v['answers'].items()))} |")
    lines += ["", "Answer checks (parsed with cryptography, compared with the ground truth; every 5th signature verified):", ""]
    for phase, checks in (("after warm-up", rep["answer_checks"]), ("after the load", rep["answer_checks_after_load"])):
        for k, v in checks.items():
            lines.append(f"- {phase}, {k} {v['method'] if k.count(' ') == 0 else ''}: {v['checked']} checked, "
                         f"{v.get('ok', 0)} right, {v.get('tryLater', 0)} tryLater, {v.get('wrong', 0)} wrong, "
                         f"{v.get('http_error', 0)} HTTP errors"
                         + (f" (e.g. {'; '.join(v['examples_of_wrong'][:3])})" if v.get("examples_of_wrong") else ""))
    c = rep["constant_rate"]
    lines += [
        "",
        f"### Latency at a constant {c['rate']:,.0f} req/s ({c['fraction']:.0%} of the responder's best median, "
        f"{c['target']}), GET, Zipf list",
        "",
        "Open-loop generator (this script, `--loadgen`, uvloop): requests are sent at their scheduled times over "
        f"{s['connections']} keep-alive connections, and latency counts from the scheduled time (no coordinated omission; "
        "it includes up to 1 ms of the generator's own timer granularity). The same rate against nginx shows what the "
        "generator itself adds.",
        "",
        "| target | share of best | target req/s | achieved req/s | p50 (ms) | p90 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | "
        "p99 from send (ms) | answers | generator CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for run in c["runs"]:
        lat = run.get("latency_ms", {})
        ls = run.get("latency_from_send_ms", {})
        lines.append(
            f"| {run['target']} | {run['fraction']:.0%} | {_r(run['target_rate'])} | {_r(run['achieved_rate'])} | "
            f"{lat.get('p50', float('nan')):.2f} | {lat.get('p90', float('nan')):.2f} | "
            f"{lat.get('p99', float('nan')):.2f} | {lat.get('p999', float('nan')):.2f} | {lat.get('max', float('nan')):.1f} | "
            f"{ls.get('p99', float('nan')):.2f} | {', '.join(f'{k} {v:,}' for k, v in sorted(run['answers'].items()))} | "
            f"{run['generator_cpu_fraction']:.0%} |"
        )
    pr = rep["propagation"]
    a, f1 = pr["all_connections_s"], pr["first_connection_s"]
    load = pr.get("load", {})
    lines += [
        "",
        "## 4. Revocation propagation under load",
        "",
        f"Responder with 2 workers under a constant {pr['load_rate']:,.0f} req/s (Zipf GET), `certstatus signer` running. "
        f"{pr['revocations']} good certificates (half among the 2,000 most popular, half from the rest) revoked one by one "
        "with `CertificateAuthority.revoke`; t0 = its return, then every 2 ms the same GET on 8 keep-alive connections "
        "(spread over both workers by SO_REUSEPORT) until all 8 answer revoked.",
        "",
        "| measure | n | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for label, v in (("until all 8 connections say revoked", a), ("until the first says revoked", f1),
                     ("all 8, popular certificates", pr["popular_all_s"]), ("all 8, other certificates", pr["unpopular_all_s"])):
        lines.append(f"| {label} | {v['n']} | {v['p50'] * 1000:.1f} | {v['p90'] * 1000:.1f} | {v['p99'] * 1000:.1f} | "
                     f"{v['max'] * 1000:.1f} |")  # fmt: skip
    lines += [
        "",
        f"Not seen within 10 s: {pr['timeouts_10s']}. Wrong answers (good before revocation not good, good again after "
        f"revoked, or a revoked answer that does not match the record): {pr['wrong_count']}"
        + (f" (e.g. {'; '.join(pr['wrong'][:3])})" if pr["wrong"] else "") + ".",
    ]
    if load:
        lat = load.get("latency_ms", {})
        lines.append(
            f"Background load during the revocations: achieved {load.get('achieved_rate', 0):,.0f} req/s, p50 "
            f"{lat.get('p50', float('nan')):.2f} ms, p99 {lat.get('p99', float('nan')):.2f} ms; answers "
            f"{', '.join(f'{k} {v:,}' for k, v in sorted(load.get('answers', {}).items()))}."
        )
    lines.append("")
    return "\n".join(lines)


# Command line ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python bench/ocsp.py",
        description=(
            "OCSP benchmark, in one run on a fresh embedded PostgreSQL + Valkey: (1) load --certs real "
            "certificates over two issuers (moica, gca) with COPY; (2) time 'certstatus signer --once "
            "--processes 2' next to raw ECDSA P-256 signing with 2 processes and 1, and measure Redis memory per "
            "certificate; (3) wrk against the responder (1 and 2 workers) and nginx serving one real response as "
            "a static file (1 and 2 workers), GET and POST, Zipf-popular serials with revoked, suspended and "
            "never-issued ones, 80 % SHA-1 / 20 % SHA-256 CertIDs, medians of rotating rounds, a sample of "
            "answers checked against the ground truth; then latency at 80 % of the responder's best rate with a "
            "constant-rate generator; (4) with 'certstatus signer' running and the responder under load, revoke "
            "certificates one by one and time until the responder says revoked. Prints a Markdown report and "
            "writes it with the raw figures to bench/results/<YYYY-MM-DD>-ocsp.md and .json."
        ),
        epilog="Goals: responder >= 40% of nginx req/s; p99 < 10 ms at 80% of that rate; pre-sign >= 80% of raw "
        "signing on both cores; Redis < 1 KB per certificate; propagation p99 < 1 s, p50 < 100 ms. "
        "A full run takes about 15-20 minutes on 2 cores; --quick about 3. See bench/README.md.",
    )
    parser.add_argument("--certs", type=int, default=None, metavar="N", help="certificates to load (default 1000000; --quick: 50000)")
    parser.add_argument("--moica-share", type=float, default=0.75, metavar="F", help="share of the certificates issued by moica; the rest by gca (default 0.75)")
    parser.add_argument("--requests", type=int, default=None, metavar="N", help="length of the precomputed Zipf request list (default 1000000; --quick: 50000); the uniform list is half as long")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="seconds per wrk run (default 15; --quick: 5)")
    parser.add_argument("--rounds", type=int, default=None, metavar="N", help="rounds over all targets, in rotating order; medians reported (default 3; --quick: 1)")
    parser.add_argument("--connections", type=int, default=64, metavar="N", help="wrk / generator connections (default 64)")
    parser.add_argument("--wrk-threads", type=int, default=1, metavar="N", help="wrk threads (default 1)")
    parser.add_argument("--revocations", type=int, default=None, metavar="N", help="certificates revoked in the propagation phase (default 200; --quick: 40)")
    parser.add_argument("--rate-fraction", type=float, default=0.8, metavar="F", help="constant rate as a fraction of the responder's best median (default 0.8)")
    parser.add_argument("--rate-sweep", default="0.5,0.65", metavar="F,F", help="further constant-rate runs against the responder, as fractions of its best median (default 0.5,0.65; '' for none)")
    parser.add_argument("--signer-batch-size", type=int, default=0, metavar="N", help="CERTSTATUS_SIGNER_BATCH_SIZE for the signer subprocesses (default: the product's own). Before commit 6880777 a sweep chunk larger than one batch made the signer fail (advance_sweep), and only 64 of 256 chunks held certificates: run such code with 10000 and --moica-share 0.5, as the 2026-11-22 report did")
    parser.add_argument("--propagation-load", type=float, default=0.5, metavar="F", help="background load during the propagation phase, as a fraction of the 2-worker responder's median (default 0.5)")
    parser.add_argument("--constant-seconds", type=float, default=None, metavar="S", help="length of each constant-rate run (default 20; --quick: 6)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50k certificates, 5 s runs, 1 round (not saved unless --save)")
    parser.add_argument("--save", action="store_true", help="with --quick: save the report anyway")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="fresh (empty or missing) directory for the embedded servers and work files; default: a new temporary directory")
    parser.add_argument("--keep-data", action="store_true", help="keep the data directory afterwards (default: removed)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR", help="where to write <date>-ocsp.md/.json (default bench/results)")
    parser.add_argument("--no-save", action="store_true", help="print the report only")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the request lists and statuses (serials are always random)")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="nginx binary")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help="wrk binary")
    ns = parser.parse_args(argv)
    q = ns.quick

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if q else full)

    save = not ns.no_save and (not q or ns.save)
    return Options(
        certs=pick(ns.certs, 1_000_000, 50_000),
        moica_share=ns.moica_share,
        requests=pick(ns.requests, 1_000_000, 50_000),
        duration=pick(ns.duration, 15.0, 5.0),
        rounds=pick(ns.rounds, 3, 1),
        connections=ns.connections,
        wrk_threads=ns.wrk_threads,
        revocations=pick(ns.revocations, 200, 40),
        rate_fraction=ns.rate_fraction,
        rate_sweep=[float(x) for x in ns.rate_sweep.split(",") if x.strip()],
        signer_batch_size=ns.signer_batch_size or None,
        propagation_load=ns.propagation_load,
        constant_seconds=pick(ns.constant_seconds, 20.0, 6.0),
        data_dir=ns.data_dir,
        keep_data=ns.keep_data,
        results_dir=ns.results_dir if save else None,
        seed=ns.seed,
        quick=q,
        nginx=ns.nginx,
        wrk=ns.wrk,
    )


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) == 3 and argv[1] == "--loadgen":
        return loadgen_main(argv[2])
    opts = parse_args(argv[1:])
    _imports()
    signal.signal(signal.SIGTERM, _terminate)
    if opts.data_dir is not None:
        data_dir = opts.data_dir.resolve()
        if data_dir.exists() and any(data_dir.iterdir()):
            print(f"{data_dir} is not empty: give a fresh directory (the benchmark starts from nothing)", file=sys.stderr)
            return 2
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="certstatus-ocsp-bench-"))
    work_dir = data_dir / "bench"
    work_dir.mkdir()
    procs = Processes(work_dir)
    report = None
    try:
        note("starting the embedded PostgreSQL and Valkey")
        with EmbeddedServices(data_dir) as svc:
            try:
                import uvloop

                report = uvloop.run(run(opts, svc, procs, work_dir, argv))
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
        stem = opts.results_dir / f"{report['started'][:10]}-ocsp"
        stem.with_suffix(".md").write_text(markdown)
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        note(f"wrote {os.path.relpath(stem, Path.cwd())}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
