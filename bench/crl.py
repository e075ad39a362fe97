#!/usr/bin/env python
"""CRL benchmark: a million-entry CRL built and signed by certstatus next to cryptography's
builder and ``openssl ca -gencrl``; delta-CRL publication latency; push-stream fan-out.

One run, every figure next to its references (see bench/README.md):

1. **The same entries for everyone.** ``--entries`` revoked certificates of one RSA-3072
   issuing CA (the default issuing key type): 16-octet serials from
   ``ca_core.issue.random_serial``, revocation times spread over the past year, reasons in
   the proportions of bench/population.py plus a third suspended (certificateHold), an
   invalidity date on half of the keyCompromise ones. Written once to a binary file, to an
   ``openssl ca`` index.txt, and COPY-loaded into the project's embedded PostgreSQL.
2. **Building and signing the CRL**, each variant in its own process (its peak RSS is the
   process's own, from ``wait4``):

   a. ours, encoder only: the entries from a generator over the file -> ``CRLEncoder`` ->
      DER file;
   b. ours, end to end: ``CRLPublisher.publish_base`` over the PostgreSQL rows (the
      issuer-wide CRL, 16 partition CRLs, all chunks into Valkey), and separately the
      issuer-wide CRL alone from the same rows with the same building blocks;
   c. cryptography's ``CertificateRevocationListBuilder`` (RevokedCertificate objects,
      sign, DER file);
   d. ``openssl ca -gencrl`` over the index.txt.

   Every CRL is checked with ``openssl crl -CAfile`` (signature), its entries are counted
   and compared (the sorted entry encodings must be the same set everywhere; (a) and (c)
   must be byte-identical).
3. **Delta latency**: ``CRLPublisher.run()`` in its own process (``--delta-interval``);
   certificates revoked at random moments with ``CertificateAuthority.revoke``; time from
   its return until the delta manifest in Valkey names a delta CRL listing it, until the
   delta is announced on the Valkey stream, and until a subscriber of the responder's
   ``GET /crl/{issuer}/stream`` receives it.
4. **Fan-out**: N idle subscribers of the stream (``--subscribers``), a delta published,
   time until every one has it, and the responder's RSS per subscriber.

Prints a Markdown report and writes it, with the raw figures as JSON, to
``bench/results/<YYYY-MM-DD>-crl.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import datetime as dt
import hashlib
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
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "certstatus CRL benchmark passphrase (throwaway)"
BASE_URL = "http://crl.bench.invalid"
ISSUER = "moica"
ACTOR = "bench"
PROFILE = "citizen-signing"

GOALS = {
    "build_s": 10.0,  # a 1M-entry CRL built and signed in under 10 s
    "peak_rss_mb": 200.0,  # with under 200 MB peak RSS
    "delta_margin_s": 1.0,  # a revocation on the delta and the stream within delta_interval + 1 s
}

#: One entry in the shared entries file: serial (16 octets), revocationDate (epoch s),
#: reason code (0 = none written), invalidityDate (epoch s, -1 = none).
RECORD = struct.Struct("<16sqbq")
#: Revocation reasons of end-entity certificates (RFC 5280 codes) with weights, as in
#: bench/population.py less privilegeWithdrawn (9), which ``openssl ca`` cannot write ("invalid
#: reason code"); certificateHold (6) is drawn separately (SUSPENDED_SHARE).
REASONS = ((0, 30), (1, 15), (3, 10), (4, 25), (5, 15))
SUSPENDED_SHARE = 1 / 3
OPENSSL_REASON = {1: "keyCompromise", 3: "affiliationChanged", 4: "superseded", 5: "cessationOfOperation",
                  6: "certificateHold"}  # fmt: skip
CRL_NUMBER = 1
VALIDITY_S = 2 * 86400


# Small helpers ------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 0.5), "p90": percentile(values, 0.9),
            "p99": percentile(values, 0.99), "max": max(values), "min": min(values),
            "mean": statistics.fmean(values)}  # fmt: skip


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int | str = "self", field: str = "VmRSS") -> int:
    """VmRSS (or VmHWM) of a process in KiB, from /proc."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def read_entries(path: str | Path, block: int = 8192) -> Iterator[tuple[bytes, int, int, int | None]]:
    """The shared entries as (serial, revoked_at, reason, invalidity) tuples, streamed."""
    size = RECORD.size * block
    with open(path, "rb") as f:
        while data := f.read(size):
            for serial, when, reason, inv in RECORD.iter_unpack(data):
                yield serial, when, reason, (None if inv < 0 else inv)


def der_tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``."""
    n = buf[pos + 1]
    if n < 0x80:
        return buf[pos], pos + 2, pos + 2 + n
    k = n & 0x7F
    length = int.from_bytes(buf[pos + 2 : pos + 2 + k], "big")
    return buf[pos], pos + 2 + k, pos + 2 + k + length


def crl_entry_ders(der: bytes) -> list[bytes]:
    """The revokedCertificates entries of a CRL, each as its DER (a small reader of our own:
    cryptography would build a Python object per entry)."""
    _, start, _ = der_tlv(der, 0)
    _, p, tbs_end = der_tlv(der, start)
    tag, _, end = der_tlv(der, p)
    if tag == 0x02:  # version
        p = end
    for _ in range(3):  # signature, issuer, thisUpdate
        p = der_tlv(der, p)[2]
    if p < tbs_end and der[p] in (0x17, 0x18):  # nextUpdate
        p = der_tlv(der, p)[2]
    out: list[bytes] = []
    if p < tbs_end and der[p] == 0x30:
        _, q, rev_end = der_tlv(der, p)
        while q < rev_end:
            end = der_tlv(der, q)[2]
            out.append(der[q:end])
            q = end
    return out


def entries_digest(entries: list[bytes]) -> str:
    h = hashlib.sha256()
    for e in sorted(entries):
        h.update(e)
    return h.hexdigest()


# Child processes (python bench/crl.py --child SPEC) --------------------------------------------------------------


def _load_pem_ca(spec: dict[str, Any]) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(spec["key"]).read_bytes(), None)
    cert = x509.load_pem_x509_certificate(Path(spec["cert"]).read_bytes())
    return key, cert


def child_encoder(spec: dict[str, Any]) -> dict[str, Any]:
    """(a) entries from a generator over the file -> CRLEncoder -> DER file."""
    from ca_core.crl import CRLEncoder, CRLParams, CRLSigner

    key, cert = _load_pem_ca(spec)
    signer = CRLSigner(key)
    params = CRLParams(cert, CRL_NUMBER, spec["this_update"], spec["this_update"] + VALIDITY_S)
    rss0 = rss_kb()
    t0 = time.perf_counter()
    enc = CRLEncoder(params, signer)
    enc.add_rows(read_entries(spec["entries"]))
    t1 = time.perf_counter()
    crl = enc.finish()
    t2 = time.perf_counter()
    with open(spec["out"], "wb") as f:
        for chunk in crl.chunks():
            f.write(chunk)
    enc.close()
    t3 = time.perf_counter()
    # The input alone, for scale: what reading the entries file costs inside the figure above.
    n = 0
    r0 = time.perf_counter()
    for _ in read_entries(spec["entries"]):
        n += 1
    r1 = time.perf_counter()
    return {"work_s": t3 - t0, "rss_start_kb": rss0, "entries": crl.count, "length": crl.length,
            "phases_s": {"encode entries to the spool (add_rows)": t1 - t0, "hash + sign (finish)": t2 - t1,
                         "write the DER file (chunks)": t3 - t2},
            "reading_entries_alone_s": r1 - r0}  # fmt: skip


def child_cryptography(spec: dict[str, Any]) -> dict[str, Any]:
    """(c) cryptography's CertificateRevocationListBuilder with the same entries, in the order
    of the file; the RevokedCertificate list is handed to the builder's constructor (its
    add_revoked_certificate copies the list each time: quadratic)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key, cert = _load_pem_ca(spec)
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    flags = {code: x509.ReasonFlags(name) for code, name in (
        (1, "keyCompromise"), (3, "affiliationChanged"), (4, "superseded"), (5, "cessationOfOperation"),
        (6, "certificateHold"))}  # fmt: skip
    utc = dt.UTC
    from_ts = dt.datetime.fromtimestamp
    rss0 = rss_kb()
    t0 = time.perf_counter()
    revoked = []
    for serial, when, reason, inv in read_entries(spec["entries"]):
        b = x509.RevokedCertificateBuilder().serial_number(int.from_bytes(serial, "big")).revocation_date(
            from_ts(when, utc))
        if reason:
            b = b.add_extension(x509.CRLReason(flags[reason]), critical=False)
        if inv is not None:
            b = b.add_extension(x509.InvalidityDate(from_ts(inv, utc)), critical=False)
        revoked.append(b.build())
    t1 = time.perf_counter()
    this = from_ts(spec["this_update"], utc)
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked)
        .issuer_name(cert.subject)
        .last_update(this)
        .next_update(this + dt.timedelta(seconds=VALIDITY_S))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.CRLNumber(CRL_NUMBER), critical=False)
    )
    crl = builder.sign(key, hashes.SHA256())
    t2 = time.perf_counter()
    der = crl.public_bytes(serialization.Encoding.DER)
    Path(spec["out"]).write_bytes(der)
    t3 = time.perf_counter()
    return {"work_s": t3 - t0, "rss_start_kb": rss0, "entries": len(revoked), "length": len(der),
            "phases_s": {"RevokedCertificate objects": t1 - t0, "build + sign": t2 - t1, "DER + write": t3 - t2}}  # fmt: skip


async def _child_storage(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    import redis.asyncio as aioredis

    from ca_core.keystore import KeyVault, Passphrase
    from ca_core.storage import postgres as db

    pool = await db.create_pool(spec["database_url"], min_size=1, max_size=4)
    redis = aioredis.Redis.from_url(spec["redis_url"])
    vault = KeyVault(Passphrase(PASSPHRASE), scrypt_n_log2=14)
    return pool, redis, vault


class _Timer:
    """Accumulates seconds spent in wrapped functions (monkeypatched in a child only)."""

    def __init__(self) -> None:
        self.s: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s[name] += time.perf_counter() - t
                self.calls[name] += 1

        return wrapper

    def wrap_async(self, name: str, fn: Any) -> Any:
        async def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                self.s[name] += time.perf_counter() - t
                self.calls[name] += 1

        return wrapper

    def wrap_agen(self, name: str, fn: Any) -> Any:
        timer = self

        async def wrapper(*a: Any, **k: Any) -> Any:
            it = fn(*a, **k).__aiter__()
            while True:
                t = time.perf_counter()
                try:
                    item = await it.__anext__()
                except StopAsyncIteration:
                    timer.s[name] += time.perf_counter() - t
                    return
                timer.s[name] += time.perf_counter() - t
                timer.calls[name] += 1
                yield item

        return wrapper


async def child_publish_base(spec: dict[str, Any]) -> dict[str, Any]:
    """(b) CRLPublisher.publish_base over the PostgreSQL rows, with a breakdown of where the
    time goes (wrappers around the publisher's building blocks)."""
    import ca_core.crl_publisher as cp
    from ca_core.clock import SystemClock
    from ca_core.crl import CRLEncoder
    from ca_core.profiles import PublicURLs
    from ca_core.storage import crls as store
    from ca_core.storage import postgres as db

    pool, redis, vault = await _child_storage(spec)
    timer = _Timer()
    try:
        publisher = cp.CRLPublisher(pool, redis, vault, SystemClock(), PublicURLs(BASE_URL), cp.CRLSettings())
        await publisher.load_issuers()  # opens the CA key (scrypt): not timed
        async with pool.acquire() as conn:  # warm the connections and the catalogue
            await conn.fetchval("SELECT count(*) FROM crl_publications")
        # Wrappers around the publisher's building blocks, where they exist in the code measured
        # (a renamed helper only loses its line in the breakdown).
        for owner, attr, label, kind in (
            (db, "listed_certificates", "PostgreSQL: fetch listed rows (cursor)", "agen"),
            (cp, "encode_entries", "encode entries (encode_entries)", "sync"),
            (cp, "_route", "route entries to partitions (_route)", "sync"),
            (CRLEncoder, "add_encoded", "append to spools (add_encoded)", "sync"),
            (CRLEncoder, "finish", "hash + sign, 17 CRLs (finish, in a thread)", "sync"),
            (cp.CRLPublisher, "_store", "chunks into Valkey (_store)", "async"),
            (store, "switch_manifest", "manifest switches", "async"),
        ):  # fmt: skip
            fn = getattr(owner, attr, None)
            if fn is not None:
                wrap = {"agen": timer.wrap_agen, "sync": timer.wrap, "async": timer.wrap_async}[kind]
                setattr(owner, attr, wrap(label, fn))
        rss0 = rss_kb()
        used0 = (await redis.info("memory"))["used_memory"]
        t0 = time.perf_counter()
        result = await publisher.publish_base(spec["issuer"])
        elapsed = time.perf_counter() - t0
        used1 = (await redis.info("memory"))["used_memory"]
        assert result is not None, "another publisher held the issuer"
        phases = {k: v for k, v in timer.s.items()}
        phases["other (numbers, snapshot, record, bridge)"] = max(0.0, elapsed - sum(phases.values()))
        return {"work_s": elapsed, "rss_start_kb": rss0, "entries": result.entries, "length": result.length,
                "scopes": result.scopes, "number": result.number, "switched": result.switched,
                "publisher_seconds": result.seconds, "phases_s": phases, "calls": dict(timer.calls),
                "valkey_used_memory_growth": used1 - used0}  # fmt: skip
    finally:
        await redis.aclose()
        await pool.close()


async def child_full_only(spec: dict[str, Any]) -> dict[str, Any]:
    """(b, issuer-wide CRL alone) the same path as publish_base for the issuer-wide scope only:
    one consistent cut, the listed rows, encode_entries, one CRLEncoder, chunks into Valkey
    (under a scratch scope, no manifest switch)."""
    from ca_core.clock import SystemClock
    from ca_core.crl import CRLEncoder, CRLParams, CRLSigner, encode_entries
    from ca_core.crl_publisher import CRLSettings
    from ca_core.pki import load_signing_ca
    from ca_core.storage import crls as store
    from ca_core.storage import postgres as db

    pool, redis, vault = await _child_storage(spec)
    try:
        s = CRLSettings()
        async with pool.acquire() as conn:
            row = await db.get_issuer(conn, spec["issuer"])
            assert row is not None
            ca = await load_signing_ca(conn, vault, row)
            await conn.fetchval("SELECT count(*) FROM crl_publications")
        signer = CRLSigner(ca.key)
        now = SystemClock().now()
        this_update = int(now.timestamp())
        rss0 = rss_kb()
        t0 = time.perf_counter()
        db_s = 0.0
        enc = CRLEncoder(CRLParams(ca.certificate, spec["number"], this_update, this_update + VALIDITY_S), signer)
        try:
            async with pool.acquire() as snap, db.crl_snapshot(snap, row.id):
                it = db.listed_certificates(snap, row.id, now - s.expired_grace).__aiter__()
                while True:
                    f0 = time.perf_counter()
                    try:
                        batch = await it.__anext__()
                    except StopAsyncIteration:
                        db_s += time.perf_counter() - f0
                        break
                    db_s += time.perf_counter() - f0
                    ders, length = encode_entries(batch)
                    enc.add_encoded(ders, length)
            t1 = time.perf_counter()
            crl = await asyncio.to_thread(enc.finish)
            t2 = time.perf_counter()
            length, chunks, _ = await store.write_chunks(
                redis, row.id, spec["scope"], spec["number"], crl.chunks(s.chunk_size), expire_at=this_update + 3600,
                chunk_size=s.chunk_size,
            )  # fmt: skip
            t3 = time.perf_counter()
        finally:
            enc.close()
        return {"work_s": t3 - t0, "rss_start_kb": rss0, "entries": crl.count, "length": length, "chunks": chunks,
                "phases_s": {"PostgreSQL: fetch listed rows (cursor)": db_s,
                             "encode + append (encode_entries, add_encoded)": t1 - t0 - db_s,
                             "hash + sign (finish)": t2 - t1, "chunks into Valkey": t3 - t2}}  # fmt: skip
    finally:
        await redis.aclose()
        await pool.close()


async def child_publisher_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """CRLPublisher.run() until SIGTERM; one JSON line on stdout per publication."""
    import ca_core.crl_publisher as cp
    from ca_core.clock import SystemClock
    from ca_core.profiles import PublicURLs

    pool, redis, vault = await _child_storage(spec)

    def published(r: Any) -> None:
        print(json.dumps({"kind": r.kind, "number": r.number, "base": r.base, "entries": r.entries,
                          "length": r.length, "seconds": r.seconds, "mono": time.monotonic()}), flush=True)  # fmt: skip

    settings = cp.CRLSettings(delta_interval=dt.timedelta(seconds=spec["delta_interval"]))
    publisher = cp.CRLPublisher(pool, redis, vault, SystemClock(), PublicURLs(BASE_URL), settings, on_published=published)
    task = asyncio.ensure_future(publisher.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"ready": True}), flush=True)
    try:
        await asyncio.wait([task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()
        await pool.close()
    return {"rss_kb": rss_kb()}


# Server-Sent Events client ------------------------------------------------------------------------------------


class SSEClient(asyncio.Protocol):
    """One subscriber of GET /crl/{issuer}/stream: HTTP/1.1, chunked or not, SSE frames.

    ``on_event(client, id, event, data, monotonic time)`` is called for each complete frame
    (comments are counted, not reported)."""

    def __init__(self, path: str, on_event: Any, last_event_id: int | None = None) -> None:
        self.path = path
        self.on_event = on_event
        self.last_event_id = last_event_id
        self.transport: Any = None
        self.head = bytearray()
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunked = False
        self.raw = bytearray()  # undecoded chunked body
        self.text = bytearray()  # SSE text
        self.need = -1  # bytes left in the current chunk; -1: reading a size line
        self.heartbeats = 0
        self.frames = 0
        self.closed = False
        self.headers_seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        extra = b"Last-Event-ID: %d\r\n" % self.last_event_id if self.last_event_id is not None else b""
        transport.write(b"GET %s HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
                        b"Cache-Control: no-cache\r\n%s\r\n" % (self.path.encode(), extra))  # fmt: skip

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.head[:end]).split(b"\r\n")
            self.status = int(lines[0].split(b" ", 2)[1])
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                self.headers[k.strip().lower()] = v.strip()
            self.chunked = self.headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            data = bytes(self.head[end + 4 :])
            self.head.clear()
            if not self.headers_seen.done():
                self.headers_seen.set_result(self.status)
        if self.chunked:
            self.raw += data
            self._dechunk()
        else:
            self.text += data
        self._frames()

    def _dechunk(self) -> None:
        raw = self.raw
        while raw:
            if self.need < 0:
                i = raw.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(raw[:i]).split(b";")[0], 16)
                del raw[: i + 2]
                self.need = size + 2  # the chunk and its CRLF
                if size == 0:
                    self.need = -1
                    return
            take = min(self.need, len(raw))
            piece = raw[:take]
            self.need -= take
            del raw[:take]
            if self.need < 2:  # strip the chunk's CRLF
                piece = piece[: len(piece) - (2 - self.need)]
            self.text += piece
            if self.need == 0:
                self.need = -1

    def _frames(self) -> None:
        text = self.text
        while True:
            i = text.find(b"\n\n")
            if i < 0:
                return
            frame = bytes(text[:i])
            del text[: i + 2]
            now = time.monotonic()
            fid = event = None
            data: list[bytes] = []
            comment = False
            for line in frame.replace(b"\r", b"").split(b"\n"):
                if line.startswith(b":"):
                    comment = True
                    continue
                k, _, v = line.partition(b":")
                v = v[1:] if v.startswith(b" ") else v
                if k == b"id":
                    fid = int(v) if v.isdigit() else None
                elif k == b"event":
                    event = v.decode()
                elif k == b"data":
                    data.append(v)
            if comment and fid is None and event is None and not data:
                self.heartbeats += 1
                continue
            self.frames += 1
            self.on_event(self, fid, event, b"\n".join(data), now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.headers_seen.done():
            self.headers_seen.set_exception(ConnectionError("closed before the response head"))


async def child_subscribers(spec: dict[str, Any]) -> dict[str, Any]:
    """N idle subscribers of the stream. Commands on stdin (one JSON per line):
    {"wait": number, "timeout": s} -> {"arrivals": [monotonic times], "missing": k}; {"quit": true}."""
    loop = asyncio.get_running_loop()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    seen: dict[int, dict[int, float]] = collections.defaultdict(dict)  # number -> client index -> time
    events: collections.Counter[str] = collections.Counter()
    waiters: list[tuple[int, asyncio.Event]] = []
    n = spec["n"]

    def on_event(client: Any, fid: int | None, event: str | None, data: bytes, now: float) -> None:
        events[event or "message"] += 1
        if event == "delta" and fid is not None:
            seen[fid].setdefault(client.index, now)
            if len(seen[fid]) >= n:
                for number, ev in waiters:
                    if number == fid:
                        ev.set()

    clients: list[Any] = []
    failed = 0
    statuses: collections.Counter[int] = collections.Counter()
    t0 = time.monotonic()
    def factory(i: int) -> Any:
        def make() -> SSEClient:
            c = SSEClient(spec["path"], on_event, spec.get("last_event_id"))
            c.index = i  # type: ignore[attr-defined]
            return c

        return make

    for start in range(0, n, 250):  # in batches: the listen backlog is finite
        batch = [loop.create_connection(factory(i), "127.0.0.1", spec["port"]) for i in range(start, min(n, start + 250))]
        made = []
        for res in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(res, BaseException):
                failed += 1
                continue
            made.append(res[1])
        clients += made
        for h in await asyncio.gather(*(c.headers_seen for c in made), return_exceptions=True):
            statuses[h if isinstance(h, int) else 0] += 1
    connect_s = time.monotonic() - t0
    ok = statuses.get(200, 0)
    print(json.dumps({"connected": len(clients), "failed": failed, "statuses": {str(k): v for k, v in statuses.items()},
                      "ok": ok, "connect_s": connect_s, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}),
          flush=True)  # fmt: skip
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        number = int(cmd["wait"])
        ev = asyncio.Event()
        waiters.append((number, ev))
        if len(seen[number]) >= ok:
            ev.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), cmd.get("timeout", 30))
        waiters.remove((number, ev))
        got = seen[number]
        print(json.dumps({"arrivals": list(got.values()), "missing": ok - len(got),
                          "closed": sum(1 for c in clients if c.closed), "events": dict(events)}), flush=True)  # fmt: skip
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return {"heartbeats": sum(c.heartbeats for c in clients)}


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("code_root"):
        sys.path.insert(0, spec["code_root"])
    kind = spec["variant"]
    t_start = time.perf_counter()
    if kind == "encoder":
        result = child_encoder(spec)
    elif kind == "cryptography":
        result = child_cryptography(spec)
    else:
        import uvloop

        fn = {"publish_base": child_publish_base, "full_only": child_full_only,
              "publisher_loop": child_publisher_loop, "subscribers": child_subscribers}[kind]  # fmt: skip
        result = uvloop.run(fn(spec))
    result["child_total_s"] = time.perf_counter() - t_start
    result["vm_hwm_kb"] = rss_kb(field="VmHWM")
    if spec.get("result"):
        Path(spec["result"]).write_text(json.dumps(result))
    return 0


# Running a variant in its own process ---------------------------------------------------------------------------


#: Runs one command and reports its wall time and its own peak RSS. A process forked from a
#: large one inherits that one's high-water mark: Linux records the old address space's peak
#: in the child's maxrss at exec (and vfork shares it), so a child of this script would never
#: report less than this script's own peak. This launcher is started with ``python -S`` (a few
#: MB), spawns the command and reads its rusage with ``wait4``: the floor is the launcher's
#: own few MB, reported as ``launcher_hwm_kb``.
LAUNCHER = r"""
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, dict(os.environ))
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
hwm = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1])
json.dump({"wall_s": wall, "maxrss_kb": ru.ru_maxrss, "returncode": os.waitstatus_to_exitcode(status),
           "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "launcher_hwm_kb": hwm}, open(out, "w"))
"""


def run_measured(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
                 log: Path | None = None, timeout: float = 1800) -> dict[str, Any]:  # fmt: skip
    """Run one command to its end through LAUNCHER: wall time from spawn to reaped, and the
    command's own peak RSS (``wait4``)."""
    fd, result = tempfile.mkstemp(prefix="crl-bench-", suffix=".json")
    os.close(fd)
    try:
        with open(log, "ab") if log else open(os.devnull, "wb") as out:
            p = subprocess.Popen([sys.executable, "-S", "-E", "-c", LAUNCHER, result, *argv], cwd=cwd, env=env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # the launcher's session: it and the command
                p.wait()
                raise RuntimeError(f"{argv[:3]} did not finish in {timeout:.0f} s") from None
        if p.returncode != 0:
            raise RuntimeError(f"the launcher failed ({p.returncode}) for {argv[:3]}")
        return dict(json.loads(Path(result).read_text()))
    finally:
        os.unlink(result)


def run_child(work: Path, name: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    spec = dict(spec, result=str(work / f"{name}.result.json"), code_root=str(code_root()))
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    log = work / f"{name}.log"
    m = run_measured([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)], cwd=code_root(),
                     env=env, log=log)  # fmt: skip
    if m["returncode"] != 0:
        raise RuntimeError(f"{name} failed ({m['returncode']}):\n{log.read_text(errors='replace')[-4000:]}")
    result = json.loads(Path(spec["result"]).read_text())
    result.update(m)
    return result


class Processes:
    """Long-running subprocesses this run starts, each in its own session; stopped by id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, *, pipes: bool = False
              ) -> subprocess.Popen[bytes]:  # fmt: skip
        err = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            argv, stdin=subprocess.PIPE if pipes else subprocess.DEVNULL, stdout=subprocess.PIPE if pipes else err,
            stderr=err, env=env, start_new_session=True, cwd=code_root(),
        )  # fmt: skip
        err.close()
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.log_dir / f"{name}.log").read_text(errors="replace")
        return ""

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        for f in (p.stdin, p.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        return p.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def child_argv(work: Path, name: str, spec: dict[str, Any]) -> list[str]:
    spec = dict(spec, code_root=str(code_root()))
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    return [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]


async def read_json_line(p: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert p.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), timeout)
    if not line:
        raise RuntimeError(f"child {p.pid} exited ({p.poll()}) without answering")
    return json.loads(line)


# The shared entries ---------------------------------------------------------------------------------------------


def make_entries(path: Path, n: int, now: int, seed: int) -> dict[str, Any]:
    """Write ``n`` entries; serials from the CA's own generator, the rest from ``seed``."""
    from ca_core.issue import random_serial

    rng = random.Random(seed)
    reasons = [r for r, _ in REASONS]
    weights = [w for _, w in REASONS]
    year = 365 * 86400
    seen: set[int] = set()
    counts: collections.Counter[str] = collections.Counter()
    with open(path, "wb") as f:
        buf = []
        for i in range(n):
            s = random_serial()
            while s in seen:
                s = random_serial()
            seen.add(s)
            when = now - rng.randrange(60, year)
            if rng.random() < SUSPENDED_SHARE:
                reason, inv = 6, -1
            else:
                reason = rng.choices(reasons, weights)[0]
                inv = when - rng.randrange(60, 30 * 86400) if reason == 1 and rng.random() < 0.5 else -1
            counts[str(reason)] += 1
            counts["with_invalidity_date"] += inv >= 0
            buf.append(RECORD.pack(s.to_bytes(16, "big"), when, reason, inv))
            if len(buf) >= 65536 or i == n - 1:
                f.write(b"".join(buf))
                buf.clear()
    return dict(counts)


def _utc(ts: int, fmt: str = "%y%m%d%H%M%SZ") -> str:
    return time.strftime(fmt, time.gmtime(ts))


def write_openssl_files(work: Path, entries: Path, expiry: int) -> Path:
    """index.txt with the same entries (R lines), crlnumber and a minimal openssl.cnf."""
    exp = _utc(expiry)
    with open(work / "index.txt", "w") as f:
        lines = []
        for serial, when, reason, inv in read_entries(entries):
            rev = _utc(when)
            if inv is not None:
                rev += ",keyTime," + _utc(inv, "%Y%m%d%H%M%SZ")  # keyCompromise + invalidityDate
            elif reason:
                rev += "," + OPENSSL_REASON[reason]
            lines.append(f"R\t{exp}\t{rev}\t{serial.hex().upper()}\tunknown\t/CN=x\n")
            if len(lines) >= 65536:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))
    (work / "index.txt.attr").write_text("unique_subject = no\n")
    (work / "crlnumber").write_text(f"{CRL_NUMBER:02X}\n")
    cnf = work / "openssl.cnf"
    cnf.write_text(f"""# bench/crl.py: openssl ca -gencrl over the same entries
[ ca ]
default_ca = bench

[ bench ]
dir = {work}
database = $dir/index.txt
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
default_crl_days = 2
crl_extensions = crl_ext
unique_subject = no
policy = policy_any

[ policy_any ]
commonName = optional

[ crl_ext ]
authorityKeyIdentifier = keyid:always
""")
    return cnf


async def load_database(pool: Any, issuer_id: int, partitions: int, entries: Path, now: dt.datetime,
                        batch: int = 50_000) -> dict[str, Any]:  # fmt: skip
    """COPY the entries into certificates as revoked/suspended rows of one issuer. The der
    column holds a 2-byte placeholder: the CRL path never reads it (its queries select serial,
    times, reason, partition and profile only: ca_core/storage/postgres.py _CRL_COLUMNS and
    changed_since)."""
    from ca_core.storage import postgres as db

    utc = dt.UTC
    not_before = now - dt.timedelta(days=700)
    not_after = now + dt.timedelta(days=1100)
    placeholder = b"\x30\x00"
    subject = "C=TW, CN=crl bench"
    t0 = time.perf_counter()
    rows = 0
    records: list[tuple[Any, ...]] = []

    async def flush() -> None:
        async with pool.acquire() as conn:
            await db.copy_certificates(conn, records)
        records.clear()

    from_ts = dt.datetime.fromtimestamp
    for serial, when, reason, inv in read_entries(entries):
        revoked_at = from_ts(when, utc)
        records.append((
            issuer_id, serial, PROFILE, subject, None, not_before, not_after,
            "suspended" if reason == 6 else "revoked", revoked_at, reason,
            from_ts(inv, utc) if inv is not None else None, int.from_bytes(serial, "big") % partitions,
            placeholder, not_before, revoked_at,
        ))  # fmt: skip
        rows += 1
        if len(records) >= batch:
            await flush()
    if records:
        await flush()
    copy_s = time.perf_counter() - t0
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE certificates")
    return {"rows": rows, "seconds": time.perf_counter() - t0, "copy_s": copy_s}


# Verification ---------------------------------------------------------------------------------------------------


def verify_crl(opts: Options, der_path: Path, ca_pem: Path) -> dict[str, Any]:
    """openssl's verdict on the signature; our count and digest of the entries."""
    out = subprocess.run([opts.openssl, "crl", "-inform", "DER", "-in", str(der_path), "-noout", "-CAfile", str(ca_pem)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    text = (out.stdout + out.stderr).strip()
    der = der_path.read_bytes()
    entries = crl_entry_ders(der)
    return {"openssl": text.splitlines()[-1] if text else "", "signature_ok": out.returncode == 0 and "verify OK" in text,
            "entries": len(entries), "digest": entries_digest(entries), "bytes": len(der),
            "sha256": hashlib.sha256(der).hexdigest()}  # fmt: skip


async def fetch_scope(redis: Any, issuer_id: int, scope: str, number: int | None = None) -> tuple[bytes, Any]:
    """The DER served for a scope (from its manifest) or stored under a number."""
    from ca_core.storage import crls as store

    manifest = None
    if number is None:
        raw = await redis.get(store.manifest_key(issuer_id, scope))
        if raw is None:
            return b"", None
        manifest = store.Manifest.from_json(raw)
        number, count = manifest.number, manifest.chunks
    else:
        count = 0
        while await redis.exists(store.chunk_key(issuer_id, scope, number, count)):
            count += 1
    pieces = [await redis.get(store.chunk_key(issuer_id, scope, number, i)) for i in range(count)]
    return b"".join(pieces), manifest


# Machine and code ------------------------------------------------------------------------------------------------


def code_root() -> Path:
    import ca_core

    return Path(ca_core.__file__).resolve().parent.parent


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def code_commit() -> str:
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
        dirty = _git(["status", "--porcelain", "--", "crl.py"], BENCH_DIR)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def command_line(argv: Sequence[str]) -> str:
    try:
        shown = os.path.relpath(Path(argv[0]).resolve(), REPO_DIR)
    except ValueError:
        shown = Path(argv[0]).name
    hide = {"--data-dir": "DIR", "--results-dir": "DIR", "--openssl": "OPENSSL"}
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
    import cryptography
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
    ossl = subprocess.run([opts.openssl, "version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cryptography": cryptography.__version__,
        "cryptography_openssl": backend.openssl_version_text(),
        "openssl_cli": ossl,
        "commit": code_commit(),
        "bench_commit": bench_commit(),
    }


# Options --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    entries: int
    revocations: int
    delta_interval: int
    subscribers: list[int]
    fanout_deltas: int
    skip: set[str]
    data_dir: Path | None
    keep_data: bool
    results_dir: Path | None
    seed: int
    quick: bool
    openssl: str


PHASES = ("encoder", "cryptography", "openssl", "database", "delta", "stream")


def service_env(svc: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=svc.database_url, REDIS_URL=svc.redis_url, CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
               CERTSTATUS_LOG_LEVEL="WARNING", CERTSTATUS_PUBLIC_BASE_URL=BASE_URL)  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(code_root()), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


# The run --------------------------------------------------------------------------------------------------------


async def run(opts: Options, svc: Any, procs: Processes, work: Path, argv: Sequence[str]) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from cryptography.hazmat.primitives import serialization

    from ca_core.clock import SystemClock
    from ca_core.keystore import KeyVault, Passphrase
    from ca_core.lifecycle import CertificateAuthority
    from ca_core.model import KeyType
    from ca_core.pki import IssuerSpec, init_pki, load_signing_ca
    from ca_core.profiles import HolderSubject, PublicURLs
    from ca_core.storage import postgres as db

    report: dict[str, Any] = {
        "benchmark": "crl",
        "started": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": command_line(argv),
        "machine": machine_info(opts),
        "loadavg_before": os.getloadavg()[0],
        "settings": {k: (sorted(v) if isinstance(v, set) else v) for k, v in dataclasses.asdict(opts).items()
                     if k not in ("data_dir", "results_dir", "openssl")},
        "goals": GOALS,
        "notes": [],
    }  # fmt: skip
    env = service_env(svc)
    pool = await db.create_pool(svc.database_url, min_size=1, max_size=4)
    redis = aioredis.Redis.from_url(svc.redis_url)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn)
            report["machine"]["postgresql"] = await conn.fetchval("SHOW server_version")
            report["machine"]["pg_work_mem"] = await conn.fetchval("SHOW work_mem")
        server = dict(await redis.info("server"))
        report["machine"]["valkey"] = server.get("valkey_version") or server.get("redis_version")
        await redis.config_set("save", "")
        report["notes"].append('Valkey RDB snapshots were switched off for the run (CONFIG SET save ""): its contents '
                               "are derived, and a fork in the middle of a measurement would measure the disk.")

        # 1. CA, entries, index.txt, database -------------------------------------------------------------
        vault = KeyVault(Passphrase(PASSPHRASE), scrypt_n_log2=14)
        urls = PublicURLs(BASE_URL)
        clock = SystemClock()
        note(f"creating the CA: root, issuing CA {ISSUER!r} with an RSA-3072 key (the default), 16 CRL partitions")
        await init_pki(pool, vault, clock=clock, urls=urls, issuers=[IssuerSpec(ISSUER, key_type=KeyType.RSA3072)],
                       actor=ACTOR, root_key_type=KeyType.EC_P256)  # fmt: skip
        async with pool.acquire() as conn:
            row = await db.get_issuer(conn, ISSUER)
            assert row is not None
            ca = await load_signing_ca(conn, vault, row)
        issuer_id, partitions = row.id, row.crl_partitions
        key_pem, ca_pem = work / "ca.key", work / "ca.pem"
        key_pem.write_bytes(ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))  # fmt: skip
        ca_pem.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
        now = clock.now().replace(microsecond=0)
        this_update = int(now.timestamp())
        entries_path = work / "entries.bin"
        note(f"generating {opts.entries:,} entries")
        t0 = time.perf_counter()
        mix = make_entries(entries_path, opts.entries, this_update, opts.seed)
        report["entries"] = {"count": opts.entries, "mix": mix, "generate_s": time.perf_counter() - t0,
                             "file_bytes": entries_path.stat().st_size}  # fmt: skip
        cnf = None
        if "openssl" not in opts.skip:
            note("writing the openssl ca index.txt")
            cnf = write_openssl_files(work, entries_path, this_update + 1100 * 86400)
        if "database" not in opts.skip or "delta" not in opts.skip or "stream" not in opts.skip:
            note(f"COPY-loading {opts.entries:,} listed certificates into PostgreSQL")
            report["database_load"] = await load_database(pool, issuer_id, partitions, entries_path, now)
            note(f"  {report['database_load']['rows']:,} rows in {report['database_load']['seconds']:.1f} s")

        # 2. Building and signing, each in its own process -------------------------------------------------
        common = {"key": str(key_pem), "cert": str(ca_pem), "entries": str(entries_path), "this_update": this_update,
                  "database_url": svc.database_url, "redis_url": svc.redis_url, "issuer": ISSUER}  # fmt: skip
        runs: dict[str, Any] = {}
        outputs: dict[str, Path] = {}

        def variant(name: str, spec: dict[str, Any]) -> None:
            note(f"measuring {name}")
            r = run_child(work, name, {**common, **spec}, env)
            runs[name] = r
            note(f"  {r['work_s']:.2f} s work, {r['wall_s']:.2f} s process, peak RSS {r['maxrss_kb'] / 1024:.0f} MB")

        order = []
        if "encoder" not in opts.skip:
            order.append(("ours_encoder", {"variant": "encoder", "out": str(work / "ours-encoder.der")}))
        if "cryptography" not in opts.skip:
            order.append(("cryptography", {"variant": "cryptography", "out": str(work / "cryptography.der")}))
        if "openssl" not in opts.skip:
            order.append(("openssl", None))
        if "database" not in opts.skip:
            order.append(("ours_full_only", {"variant": "full_only", "scope": "bench-full", "number": 1_000_000}))
            order.append(("ours_publish_base", {"variant": "publish_base"}))
        if "encoder" not in opts.skip:
            order.append(("ours_encoder_again", {"variant": "encoder", "out": str(work / "ours-encoder-2.der")}))
        for name, spec in order:
            if name == "openssl":
                assert cnf is not None
                note("measuring openssl ca -gencrl")
                argv_ossl = [opts.openssl, "ca", "-config", str(cnf), "-gencrl", "-crldays", "2", "-batch",
                             "-out", str(work / "openssl.pem")]  # fmt: skip
                m = run_measured(argv_ossl, cwd=work, log=work / "openssl.log")
                if m["returncode"] != 0:
                    raise RuntimeError(f"openssl ca failed:\n{(work / 'openssl.log').read_text(errors='replace')[-3000:]}")
                m["work_s"] = m["wall_s"]
                m["command"] = "openssl ca -config openssl.cnf -gencrl -crldays 2 -batch -out openssl.pem"
                runs[name] = m
                note(f"  {m['wall_s']:.2f} s process, peak RSS {m['maxrss_kb'] / 1024:.0f} MB")
                subprocess.run([opts.openssl, "crl", "-in", str(work / "openssl.pem"), "-outform", "DER", "-out",
                                str(work / "openssl.der")], check=True, capture_output=True)  # fmt: skip
                outputs[name] = work / "openssl.der"
            else:
                assert spec is not None
                variant(name, spec)
                if "out" in spec:
                    outputs[name] = Path(spec["out"])
        report["builds"] = runs

        # Verification: signatures, counts, the same entries everywhere.
        checks: dict[str, Any] = {}
        if "database" not in opts.skip:
            der, _ = await fetch_scope(redis, issuer_id, "bench-full", 1_000_000)
            (work / "ours-full-only.der").write_bytes(der)
            outputs["ours_full_only"] = work / "ours-full-only.der"
            der, manifest = await fetch_scope(redis, issuer_id, "full")
            (work / "ours-publish-base-full.der").write_bytes(der)
            outputs["ours_publish_base"] = work / "ours-publish-base-full.der"
            parts = []
            for p in range(partitions):
                der_p, man_p = await fetch_scope(redis, issuer_id, f"p{p}")
                path = work / f"ours-publish-base-p{p}.der"
                path.write_bytes(der_p)
                parts.append((p, path, man_p))
            async for k in redis.scan_iter(match=b"crl:{%d}:bench-full:*" % issuer_id):
                await redis.delete(k)
        for name, path in outputs.items():
            note(f"verifying {name} ({path.name}) with openssl crl -CAfile, counting its entries")
            checks[name] = verify_crl(opts, path, ca_pem)
        if "database" not in opts.skip:
            part_entries: list[bytes] = []
            part_ok = True
            part_counts = []
            for _p, path, _man in parts:
                c = verify_crl(opts, path, ca_pem)
                part_ok &= c["signature_ok"]
                part_counts.append(c["entries"])
                part_entries += crl_entry_ders(path.read_bytes())
            checks["ours_publish_base_partitions"] = {
                "scopes": len(parts), "signature_ok": part_ok, "entries": sum(part_counts), "per_partition": part_counts,
                "digest": entries_digest(part_entries), "bytes": sum(path.stat().st_size for _, path, _ in parts),
            }  # fmt: skip
            del part_entries
        report["checks"] = checks
        digests = {c["digest"] for c in checks.values()}
        counts = {c["entries"] for c in checks.values()}
        report["agreement"] = {} if not checks else {
            "same_entries_everywhere": len(digests) == 1,
            "counts": sorted(counts),
            "all_signatures_ok": all(c["signature_ok"] for c in checks.values()),
            "encoder_equals_cryptography_bytes": (
                checks["ours_encoder"]["sha256"] == checks["cryptography"]["sha256"]
                if "ours_encoder" in checks and "cryptography" in checks else None),
        }  # fmt: skip
        if checks:
            note(f"agreement: {report['agreement']}")

        # 3-4. Delta latency and fan-out --------------------------------------------------------------------
        if "delta" not in opts.skip or "stream" not in opts.skip:
            authority = CertificateAuthority(pool, vault, clock=clock, urls=urls)
            needed = opts.revocations + opts.fanout_deltas * len(opts.subscribers) + 2
            note(f"issuing {needed} good certificates to revoke later (CertificateAuthority.issue_with_generated_key)")
            good = []
            for i in range(needed):
                record, _ = await authority.issue_with_generated_key(
                    issuer=ISSUER, profile=PROFILE, subject=HolderSubject("測試持卡人", f"{9_000_000_000_000_000 + i:016d}"),
                    actor=ACTOR, key_type=KeyType.EC_P256,
                )  # fmt: skip
                good.append(record.serial)
            port = free_port()
            stream_served = await start_stream_responder(procs, svc, env, port, report)
            if "delta" not in opts.skip:
                report["delta"] = await measure_delta(opts, procs, work, common, authority, redis, issuer_id, good,
                                                      port if stream_served else None)  # fmt: skip
            if "stream" not in opts.skip:
                if stream_served:
                    report["fanout"] = await measure_fanout(opts, procs, work, pool, authority, redis, vault, urls,
                                                            clock, good, port)  # fmt: skip
                else:
                    report["notes"].append("Fan-out not measured: the responder does not serve GET /crl/{issuer}/stream "
                                           "in the code measured.")  # fmt: skip
            procs.stop("responder")
        report["finished"] = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        report["loadavg_after"] = os.getloadavg()[0]
        return report
    finally:
        await redis.aclose()
        await pool.close()


async def start_stream_responder(procs: Processes, svc: Any, env: dict[str, str], port: int,
                                 report: dict[str, Any]) -> bool:  # fmt: skip
    """``certstatus serve`` (1 worker) and whether it serves the CRL stream."""
    e = dict(env, CERTSTATUS_ADMIN_PORT=str(port + 1 if port < 65535 else port - 1))
    procs.start("responder", [sys.executable, "-m", "responder", "--data-dir", str(svc.data_dir), "serve",
                              "--workers", "1", "--public-port", str(port)], env=e)  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if re.search(r"public responder on", procs.log("responder")):
            break
        p = procs.procs["responder"]
        if p.poll() is not None:
            raise RuntimeError(f"the responder exited ({p.returncode}):\n{procs.log('responder')[-3000:]}")
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError(f"the responder did not start:\n{procs.log('responder')[-3000:]}")
    report["responder_pid_note"] = "certstatus serve --workers 1: the worker is the serve process itself"
    loop = asyncio.get_running_loop()
    got: list[Any] = []
    try:
        _, client = await loop.create_connection(lambda: SSEClient(f"/crl/{ISSUER}/stream", lambda *a: got.append(a)),
                                                 "127.0.0.1", port)  # fmt: skip
        status = await asyncio.wait_for(client.headers_seen, 10)
        ctype = client.headers.get(b"content-type", b"")
        client.transport.close()
    except (OSError, TimeoutError, ConnectionError) as e:
        report["notes"].append(f"GET /crl/{ISSUER}/stream could not be opened: {e}")
        return False
    served = status == 200 and ctype.startswith(b"text/event-stream")
    report["stream_probe"] = {"status": status, "content_type": ctype.decode("latin-1")}
    return served


async def measure_delta(opts: Options, procs: Processes, work: Path, common: dict[str, Any], authority: Any,
                        redis: Any, issuer_id: int, good: list[int], stream_port: int | None) -> dict[str, Any]:  # fmt: skip
    """Revocations at random moments with CRLPublisher.run() going; time from revoke()'s
    return until (1) the delta manifest names a CRL listing it, (2) the delta is announced
    on the Valkey stream, (3) a stream subscriber of the responder receives it."""
    from ca_core.storage import crls as store

    rng = random.Random(opts.seed + 1)
    interval = opts.delta_interval
    p = procs.start("publisher", child_argv(work, "publisher", {**common, "variant": "publisher_loop",
                                                                "delta_interval": interval}),
                    env=service_env_from(common), pipes=True)  # fmt: skip
    publications: list[dict[str, Any]] = []

    async def follow() -> None:
        while True:
            msg = await read_json_line(p, 3600)
            publications.append(msg)

    assert (await read_json_line(p, 120)).get("ready")
    follower = asyncio.create_task(follow())
    # The publisher's first tick issues a delta of the base (no delta yet): wait for it.
    deadline = time.monotonic() + 60
    while not any(x.get("kind") == "delta" for x in publications) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stream_events: list[tuple[int | None, str | None, bytes, float]] = []
    client = None
    if stream_port is not None:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: SSEClient(f"/crl/{ISSUER}/stream", lambda c, fid, ev, data, t: stream_events.append((fid, ev, data, t))),
            "127.0.0.1", stream_port,
        )  # fmt: skip
        await asyncio.wait_for(client.headers_seen, 10)
    pubsub = redis.pubsub()
    await pubsub.subscribe(store.CHANNEL)
    announced: list[tuple[int, float]] = []

    async def listen() -> None:
        prefix = b"%d:stream:" % issuer_id
        async for msg in pubsub.listen():
            if msg["type"] == "message" and msg["data"].startswith(prefix):
                announced.append((int(msg["data"][len(prefix) :]), time.monotonic()))

    listener = asyncio.create_task(listen())
    records = []
    delta_key = store.manifest_key(issuer_id, "delta")
    try:
        for k in range(opts.revocations):
            await asyncio.sleep(rng.uniform(0, interval))
            serial = good[k]
            needle = b"\x02\x10" + serial.to_bytes(16, "big")
            mark_stream = len(stream_events)
            mark_announce = len(announced)
            await authority.revoke(ISSUER, serial, actor=ACTOR, reason="keyCompromise")
            t0 = time.monotonic()
            checked: set[int] = set()
            checked_stream: set[int] = set()
            t_manifest = t_announce = t_stream = None
            number = None
            while time.monotonic() - t0 < 3 * interval + 10:
                if t_manifest is None:
                    raw = await redis.get(delta_key)
                    if raw is not None:
                        m = store.Manifest.from_json(raw)
                        if m.number not in checked:
                            checked.add(m.number)
                            der, _ = await fetch_scope(redis, issuer_id, "delta")
                            if needle in der:
                                t_manifest, number = time.monotonic(), m.number
                if t_announce is None:
                    for n_, t in announced[mark_announce:]:
                        if n_ in checked_stream:
                            continue
                        checked_stream.add(n_)
                        der = await redis.get(store.stream_der_key(issuer_id, n_))
                        if der is not None and needle in der:
                            t_announce = t
                            break
                if t_stream is None and client is not None:
                    for _fid, ev, data, t in stream_events[mark_stream:]:
                        if ev == "delta" and needle in base64.b64decode(data):
                            t_stream = t
                            break
                if t_manifest is not None and t_announce is not None and (client is None or t_stream is not None):
                    break
                await asyncio.sleep(0.005)
            records.append({
                "serial": f"{serial:X}", "number": number,
                "manifest_s": None if t_manifest is None else t_manifest - t0,
                "announce_s": None if t_announce is None else t_announce - t0,
                "stream_s": None if t_stream is None else t_stream - t0,
            })  # fmt: skip
            r = records[-1]
            note(f"  revocation {k + 1}/{opts.revocations}: delta manifest {_ms(r['manifest_s'])}, "
                 f"Valkey stream {_ms(r['announce_s'])}, HTTP stream "
                 f"{_ms(r['stream_s']) if client is not None else 'not served'}")  # fmt: skip
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await pubsub.aclose()
        if client is not None:
            client.transport.close()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follower
        procs.stop("publisher")
    deltas = [x for x in publications if x.get("kind") == "delta"]
    out: dict[str, Any] = {
        "delta_interval_s": interval,
        "bound_s": interval + GOALS["delta_margin_s"],
        "revocations": records,
        "manifest_s": summary([r["manifest_s"] for r in records if r["manifest_s"] is not None]),
        "announce_s": summary([r["announce_s"] for r in records if r["announce_s"] is not None]),
        "stream_s": summary([r["stream_s"] for r in records if r["stream_s"] is not None]),
        "missed": {k: sum(1 for r in records if r[k] is None) for k in ("manifest_s", "announce_s", "stream_s")},
        "stream_measured": stream_port is not None,
        "deltas_published": len(deltas),
        "delta_publish_seconds": summary([x["seconds"] for x in deltas]),
        "delta_entries_max": max((x["entries"] for x in deltas), default=0),
    }
    return out


def service_env_from(common: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(code_root()), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def _ms(v: float | None) -> str:
    return "not seen" if v is None else f"{v * 1000:.0f} ms"


async def measure_fanout(opts: Options, procs: Processes, work: Path, pool: Any, authority: Any, redis: Any,
                         vault: Any, urls: Any, clock: Any, good: list[int], port: int) -> dict[str, Any]:  # fmt: skip
    """N idle subscribers; publish a delta (revoke, then CRLPublisher.publish_delta here);
    time from the moment the publisher hands the delta to Valkey (its add_to_stream call:
    the script that stores the delta and PUBLISHes it) until each subscriber has the frame."""
    import ca_core.crl_publisher as cp

    publisher = cp.CRLPublisher(pool, redis, vault, clock, urls, cp.CRLSettings())
    await publisher.load_issuers()
    handed: dict[int, float] = {}
    original = cp.store.add_to_stream

    async def add_to_stream(r: Any, issuer_id: int, number: int, *a: Any, **k: Any) -> bool:
        handed[number] = time.monotonic()  # this process only (the bench's own publisher)
        return bool(await original(r, issuer_id, number, *a, **k))

    cp.store.add_to_stream = add_to_stream
    try:
        return await _fanout(opts, procs, work, authority, publisher, handed, good, port)
    finally:
        cp.store.add_to_stream = original


async def _fanout(opts: Options, procs: Processes, work: Path, authority: Any, publisher: Any,
                  handed: dict[int, float], good: list[int], port: int) -> dict[str, Any]:  # fmt: skip
    responder_pid = procs.procs["responder"].pid
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    results = []
    k = opts.revocations
    for n in opts.subscribers:
        if n + 200 > hard:
            results.append({"subscribers": n, "skipped": f"the open-file limit is {hard}"})
            continue
        await asyncio.sleep(1.0)
        rss0 = rss_kb(responder_pid)
        name = f"subscribers-{n}"
        p = procs.start(name, child_argv(work, name, {"variant": "subscribers", "n": n, "port": port,
                                                      "path": f"/crl/{ISSUER}/stream"}),
                        env=service_env_from({}), pipes=True)  # fmt: skip
        hello = await read_json_line(p, 300)
        await asyncio.sleep(1.0)
        rss1 = rss_kb(responder_pid)
        note(f"fan-out: {hello['ok']:,} of {n:,} subscribers connected in {hello['connect_s']:.1f} s; responder RSS "
             f"{rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MB")  # fmt: skip
        deliveries = []
        for _ in range(opts.fanout_deltas):
            serial = good[k]
            k += 1
            await authority.revoke(ISSUER, serial, actor=ACTOR, reason="superseded")
            t_call = time.monotonic()
            result = await publisher.publish_delta(ISSUER)
            t_return = time.monotonic()
            assert result is not None
            t0 = handed[result.number]
            assert p.stdin is not None
            p.stdin.write(json.dumps({"wait": result.number, "timeout": 30}).encode() + b"\n")
            p.stdin.flush()
            ans = await read_json_line(p, 60)
            arrivals = [t - t0 for t in ans["arrivals"]]
            deliveries.append({"number": result.number, "publish_delta_s": t_return - t_call,
                               "handed_after_s": t0 - t_call, "delta_bytes": result.length,
                               "received": len(arrivals), "missing": ans["missing"], "closed": ans["closed"],
                               "latency_s": summary(arrivals)})  # fmt: skip
            d = deliveries[-1]["latency_s"]
            note(f"  delta {result.number}: {len(arrivals):,} received (missing {ans['missing']}), p50 "
                 f"{d.get('p50', float('nan')) * 1000:.1f} ms, p99 {d.get('p99', float('nan')) * 1000:.1f} ms, "
                 f"max {d.get('max', float('nan')) * 1000:.1f} ms")  # fmt: skip
            await asyncio.sleep(0.5)
        rss2 = rss_kb(responder_pid)
        assert p.stdin is not None
        p.stdin.write(b'{"quit": true}\n')
        p.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(p.wait, 30)
        procs.stop(name)
        all_lat = [x for dlv in deliveries for x in [dlv["latency_s"]]]
        results.append({"subscribers": n, "connected": hello["ok"], "connect_failed": hello["failed"],
                        "connect_s": hello["connect_s"], "rss_before_kb": rss0, "rss_connected_kb": rss1,
                        "rss_after_deltas_kb": rss2, "rss_per_subscriber_bytes": (rss1 - rss0) * 1024 / max(1, hello["ok"]),
                        "deliveries": deliveries,
                        "p50_ms_worst": max(x.get("p50", 0) for x in all_lat) * 1000,
                        "p99_ms_worst": max(x.get("p99", 0) for x in all_lat) * 1000,
                        "max_ms": max(x.get("max", 0) for x in all_lat) * 1000})  # fmt: skip
    return {"runs": results, "t0": "the publisher's call of add_to_stream (the Valkey script that stores the delta "
                                   "and PUBLISHes its number; publish_delta returns right after it)"}


# Report ---------------------------------------------------------------------------------------------------------

LABELS = {
    "ours_encoder": ("a", "ours: CRLEncoder, entries from a generator over the file, DER to a file"),
    "ours_encoder_again": ("a'", "ours: the same, measured again at the end (drift)"),
    "ours_full_only": ("b1", "ours: issuer-wide CRL alone from PostgreSQL (snapshot, cursor, encode, sign, chunks "
                             "into Valkey)"),
    "ours_publish_base": ("b", "ours: CRLPublisher.publish_base (issuer-wide + 16 partition CRLs, chunks into "
                               "Valkey, manifests)"),
    "cryptography": ("c", "cryptography CertificateRevocationListBuilder (RevokedCertificate objects, sign, DER "
                          "to a file)"),
    "openssl": ("d", "openssl ca -gencrl (index.txt, PEM out)"),
}


def _goal(met: bool | None, text: str) -> str:
    return f"{'**met**' if met else '**missed**' if met is not None else 'not measured'}: {text}"


def evaluate_goals(rep: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    b = rep.get("builds", {})
    out: list[tuple[str, bool | None, str]] = []
    n = rep["entries"]["count"]
    refs = {k: b[k]["wall_s"] for k in ("cryptography", "openssl") if k in b}
    for key in ("ours_encoder", "ours_full_only", "ours_publish_base"):
        if key not in b:
            continue
        r = b[key]
        tag = LABELS[key][0]
        t, w, mb = r["work_s"], r["wall_s"], r["maxrss_kb"] / 1024
        out.append((f"({tag}) {n:,} entries built and signed in < {GOALS['build_s']:.0f} s", w < GOALS["build_s"],
                    f"{w:.2f} s process wall ({t:.2f} s of work)"))  # fmt: skip
        out.append((f"({tag}) peak RSS < {GOALS['peak_rss_mb']:.0f} MB", mb < GOALS["peak_rss_mb"],
                    f"{mb:.0f} MB (the process at the start of the work: {r['rss_start_kb'] / 1024:.0f} MB)"))  # fmt: skip
        if refs:
            fastest = min(refs, key=lambda k: refs[k])
            out.append((f"({tag}) faster than both references", all(w < v for v in refs.values()),
                        f"{w:.2f} s vs {', '.join(f'{k} {v:.2f} s' for k, v in refs.items())} "
                        f"({refs[fastest] / w:.1f}x the fastest reference's speed)"))  # fmt: skip
    d = rep.get("delta")
    if d:
        bound = d["bound_s"]
        for key, label in (("manifest_s", "delta manifest"), ("stream_s", "HTTP stream subscriber")):
            s = d[key]
            if key == "stream_s" and not d["stream_measured"]:
                out.append((f"revocation on the {label} within delta_interval + 1 s ({bound:.0f} s)", None,
                            "the responder does not serve the stream"))
                continue
            met = s.get("n", 0) == len(d["revocations"]) and s.get("max", 1e9) <= bound
            out.append((f"revocation on the {label} within delta_interval + 1 s ({bound:.0f} s)", met,
                        f"max {s.get('max', float('nan')):.2f} s, p99 {s.get('p99', float('nan')):.2f} s over "
                        f"{s.get('n', 0)} revocations ({d['missed'][key]} not seen)"))  # fmt: skip
    return out


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def _render_builds(rep: dict[str, Any]) -> list[str]:
    e = rep["entries"]
    mix = e["mix"]
    names = {"0": "no reason (unspecified)", "1": "keyCompromise", "3": "affiliationChanged", "4": "superseded",
             "5": "cessationOfOperation", "6": "certificateHold (suspended)", "9": "privilegeWithdrawn"}  # fmt: skip
    lines = [
        "",
        f"## 1. Building and signing a CRL of {e['count']:,} entries",
        "",
        f"The same {e['count']:,} entries for every variant: 16-octet serials from `random_serial`, revocation times "
        "spread over the past year, "
        + ", ".join(f"{names[k]} {v:,}" for k, v in sorted(mix.items()) if k in names)
        + f"; {mix.get('with_invalidity_date', 0):,} with an invalidity date (keyCompromise). The issuing CA's key is "
        "RSA-3072 (PKCS#1 v1.5, SHA-256). Each variant runs in its own process: **process** is spawn to exit (what the "
        "goals use), **work** is the timed section inside the process (after imports and opening the key), **peak "
        "RSS** is that process's own maximum resident set (`wait4`), and **RSS at start** what it held before the "
        "work began (interpreter and libraries).",
        "",
        "| | variant | process (s) | work (s) | ratio to (a) | peak RSS (MB) | RSS at start (MB) | CPU user+sys (s) | "
        "CRL (bytes) | entries | signature |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    b = rep.get("builds", {})
    checks = rep.get("checks", {})
    ref = b.get("ours_encoder", {}).get("wall_s")
    for key in ("ours_encoder", "ours_full_only", "ours_publish_base", "cryptography", "openssl", "ours_encoder_again"):
        if key not in b:
            continue
        r = b[key]
        tag, label = LABELS[key]
        c = checks.get(key, {})
        size = f"{c['bytes']:,}" if c else ""
        if key == "ours_publish_base" and "ours_publish_base_partitions" in checks:
            pc = checks["ours_publish_base_partitions"]
            size = f"{c['bytes']:,} + {pc['bytes']:,} in {pc['scopes']} partitions"
        start = _mb(r["rss_start_kb"]) if "rss_start_kb" in r else "–"
        ratio = f"{r['wall_s'] / ref:.2f}" if ref else ""
        lines.append(
            f"| {tag} | {label} | **{r['wall_s']:.2f}** | {r['work_s']:.2f} | {ratio} | **{_mb(r['maxrss_kb'])}** | "
            f"{start} | {r['user_s'] + r['sys_s']:.1f} | {size} | {c.get('entries', 0):,} | {c.get('openssl', '')} |"
        )
    ag = rep.get("agreement", {})
    lines += [
        "",
        f"Agreement: every CRL verified with `openssl crl -CAfile`: **{ag.get('all_signatures_ok')}**; entry counts "
        f"{', '.join(f'{x:,}' for x in ag.get('counts', []))}; the same set of entry encodings in every CRL (sorted, "
        f"hashed): **{ag.get('same_entries_everywhere')}**; (a) byte-identical to (c): "
        f"**{ag.get('encoder_equals_cryptography_bytes')}**.",
    ]
    if "ours_publish_base_partitions" in checks:
        pc = checks["ours_publish_base_partitions"]
        lines.append(f"The {pc['scopes']} partition CRLs of (b): signatures {'all OK' if pc['signature_ok'] else 'NOT all OK'}, "
                     f"{pc['entries']:,} entries together ({min(pc['per_partition']):,} to "
                     f"{max(pc['per_partition']):,} each), the same entries as the issuer-wide CRL.")  # fmt: skip
    lines += ["", "Where the time goes (seconds inside the work section):", ""]
    for key in ("ours_encoder", "ours_full_only", "ours_publish_base", "cryptography"):
        if key in b and b[key].get("phases_s"):
            ph = b[key]["phases_s"]
            lines.append(f"- ({LABELS[key][0]}) " + "; ".join(f"{k} {v:.2f}" for k, v in ph.items()))
    if "ours_encoder" in b:
        lines.append(f"- reading the entries file alone (the generator feeding (a)): "
                     f"{b['ours_encoder']['reading_entries_alone_s']:.2f} s")  # fmt: skip
    if "ours_publish_base" in b:
        pb = b["ours_publish_base"]
        lines.append(f"- (b) Valkey used_memory grew by {pb['valkey_used_memory_growth'] / 2**20:,.0f} MiB "
                     f"({pb['scopes']} scopes); PostgreSQL's own memory is not in (b)'s RSS (another process).")  # fmt: skip
    if "database_load" in rep:
        dl = rep["database_load"]
        lines.append(f"- Set-up, not timed above: {dl['rows']:,} rows COPY-loaded in {dl['seconds']:.1f} s; entries "
                     f"generated in {e['generate_s']:.1f} s.")  # fmt: skip
    return lines


def render_markdown(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    lines = [
        "# CRL benchmark",
        "",
        f"- Date: {rep['started'].replace('T', ' ')[:16]} UTC (finished {rep['finished'][11:16]})",
        f"- Command: `{rep['command']}`",
        f"- Code measured: commit {m['commit']} (benchmark script at {m['bench_commit']})",
        f"- Machine: nproc {m['nproc']} ({m['cpu']}), {m['memory']}, {m['os']}",
        f"- {m['python']}, cryptography {m['cryptography']} ({m['cryptography_openssl']}), {m['openssl_cli']} (CLI), "
        f"PostgreSQL {m.get('postgresql', '?')} (embedded, work_mem {m.get('pg_work_mem', '?')}), "
        f"Valkey {m.get('valkey', '?')} (embedded)",
        f"- Load average (1 min) before / after: {rep['loadavg_before']:.2f} / {rep['loadavg_after']:.2f}",
        *[f"- Note: {x}" for x in rep.get("notes", [])],
        "",
        "## Goals",
        "",
        "| goal | result |",
        "|---|---|",
    ]
    for name, met, text in evaluate_goals(rep):
        lines.append(f"| {name} | {_goal(met, text)} |")
    if rep.get("builds"):
        lines += _render_builds(rep)
    d = rep.get("delta")
    if d:
        lines += [
            "",
            "## 2. Delta CRL publication latency",
            "",
            f"`CRLPublisher.run()` in its own process with `CRLSettings(delta_interval={d['delta_interval_s']} s)` "
            f"(other settings default; it polls every 0.25 s). {len(d['revocations'])} certificates revoked one by one "
            "with `CertificateAuthority.revoke` after a random pause of 0 to delta_interval; t0 = its return. Bound: "
            f"delta_interval + 1 s = **{d['bound_s']:.0f} s**.",
            "",
            "| until | n | p50 (s) | p90 (s) | p99 (s) | max (s) | within the bound |",
            "|---|--:|--:|--:|--:|--:|---|",
        ]
        for key, label in (("manifest_s", "the delta manifest in Valkey names a delta CRL listing it"),
                           ("announce_s", "that delta is announced on the Valkey stream (pub/sub)"),
                           ("stream_s", "a subscriber of `GET /crl/{issuer}/stream` receives it")):  # fmt: skip
            s = d[key]
            if not s.get("n"):
                lines.append(f"| {label} | 0 | | | | | {'not measured' if key == 'stream_s' and not d['stream_measured'] else 'none seen'} |")
                continue
            within = sum(1 for r in d["revocations"] if r[key] is not None and r[key] <= d["bound_s"])
            lines.append(f"| {label} | {s['n']} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | {s['max']:.2f} | "
                         f"{within} of {len(d['revocations'])} |")  # fmt: skip
        dp = d["delta_publish_seconds"]
        if dp.get("n"):
            lines += ["", f"{d['deltas_published']} deltas published during the phase; `publish_delta` took p50 "
                          f"{dp['p50'] * 1000:.0f} ms, max {dp['max'] * 1000:.0f} ms (at most {d['delta_entries_max']} "
                          "entries)."]  # fmt: skip
    f = rep.get("fanout")
    if f:
        lines += [
            "",
            "## 3. Push-stream fan-out",
            "",
            "N idle subscribers of `GET /crl/{issuer}/stream` on `certstatus serve --workers 1` (one process, this script's "
            "subscriber process on the same 2 cores); a certificate revoked and `CRLPublisher.publish_delta` called; "
            f"t0 = {f['t0']}; each subscriber's time is when its `id: <number>` delta frame was complete. RSS is the "
            "responder's (VmRSS) before connecting and with everyone connected.",
            "",
            "| subscribers | connected | connecting all (s) | p50 (ms) | p99 (ms) | max (ms) | responder RSS before → "
            "connected (MB) | RSS per subscriber (bytes) | deltas | missing |",
            "|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
        ]
        for r in f["runs"]:
            if "skipped" in r:
                lines.append(f"| {r['subscribers']:,} | skipped: {r['skipped']} | | | | | | | | |")
                continue
            dl = r["deliveries"]
            p50 = statistics.median(x["latency_s"].get("p50", float("nan")) for x in dl) * 1000
            p99 = max(x["latency_s"].get("p99", float("nan")) for x in dl) * 1000
            mx = max(x["latency_s"].get("max", float("nan")) for x in dl) * 1000
            lines.append(f"| {r['subscribers']:,} | {r['connected']:,} | {r['connect_s']:.1f} | {p50:.1f} | {p99:.1f} | "
                         f"{mx:.1f} | "
                         f"{_mb(r['rss_before_kb'])} → {_mb(r['rss_connected_kb'])} | {r['rss_per_subscriber_bytes']:,.0f} | "
                         f"{len(dl)} | {sum(x['missing'] for x in dl)} |")  # fmt: skip
        lines += ["", "p50 is the median over the deltas of each delta's p50; p99 and max the worst over the deltas."]
    lines.append("")
    return "\n".join(lines)


# Command line ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python bench/crl.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "CRL benchmark, one run on a fresh embedded PostgreSQL + Valkey.\n\n"
            "How long does building and signing a CRL of a million entries take, and how much memory? Each of these\n"
            "runs in its own process over the SAME entries and RSA-3072 CA key, and reports process time, peak RSS\n"
            "and CRL size:\n"
            "  (a)  ours: CRLEncoder fed by a generator, DER to a file\n"
            "  (b1) ours: the issuer-wide CRL alone from PostgreSQL (cursor, encode, sign, chunks into Valkey)\n"
            "  (b)  ours: CRLPublisher.publish_base (issuer-wide + 16 partition CRLs into Valkey)\n"
            "  (c)  cryptography's CertificateRevocationListBuilder\n"
            "  (d)  openssl ca -gencrl over an index.txt\n"
            "Every CRL is verified with 'openssl crl -CAfile' and all must hold the same entries.\n\n"
            "How soon is a revocation on the delta CRL and on the push stream? CRLPublisher.run() goes with\n"
            "--delta-interval; certificates are revoked at random moments; time until the delta manifest lists it,\n"
            "the Valkey stream announces it, and a GET /crl/{issuer}/stream subscriber receives it.\n\n"
            "How does the stream fan out? --subscribers idle subscribers on 'certstatus serve', a delta published,\n"
            "time until every one has it, and the responder's RSS per subscriber.\n\n"
            "Writes bench/results/<YYYY-MM-DD>-crl.md and .json (UTC date)."
        ),
        epilog=(
            "Goals: 1M entries built and signed in < 10 s with < 200 MB peak RSS, faster than both references;\n"
            "a revocation on the delta CRL and the stream within delta_interval + 1 s.\n"
            "A full run takes about 5 minutes on 2 cores (1M rows COPY-loaded, six 1M-entry CRLs, 20 revocations at\n"
            "random moments, up to 5,000 subscribers); --quick about 1. See bench/README.md."
        ),
    )
    parser.add_argument("--entries", type=int, default=None, metavar="N", help="CRL entries (default 1000000; --quick: 100000)")
    parser.add_argument("--revocations", type=int, default=None, metavar="N", help="revocations timed in the delta phase (default 20; --quick: 6)")
    parser.add_argument("--delta-interval", type=int, default=5, metavar="S", help="the publisher's delta_interval in seconds (default 5; the product default is 60)")
    parser.add_argument("--subscribers", default=None, metavar="N,N", help="fan-out sizes (default 100,1000,5000; --quick: 100,1000)")
    parser.add_argument("--fanout-deltas", type=int, default=3, metavar="N", help="deltas published per fan-out size (default 3)")
    parser.add_argument("--skip", default="", metavar="PHASE,...", help=f"leave out phases: {', '.join(PHASES)} ('database' is (b) and (b1))")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100k entries, 6 revocations, 100 and 1000 subscribers (not saved unless --save)")
    parser.add_argument("--save", action="store_true", help="with --quick: save the report anyway")
    parser.add_argument("--no-save", action="store_true", help="print the report only")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="fresh (empty or missing) directory for the servers and work files (default: a new temporary directory)")
    parser.add_argument("--keep-data", action="store_true", help="keep the data directory afterwards")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR", help="where to write <date>-crl.md/.json (default bench/results)")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of revocation times, reasons and pauses (serials are always random)")
    parser.add_argument("--openssl", default=shutil.which("openssl") or "/usr/bin/openssl", help="openssl binary")
    ns = parser.parse_args(argv)
    q = ns.quick
    skip = {s.strip() for s in ns.skip.split(",") if s.strip()}
    unknown = skip - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) in --skip: {', '.join(sorted(unknown))}")
    subs = ns.subscribers if ns.subscribers is not None else ("100,1000" if q else "100,1000,5000")
    save = not ns.no_save and (not q or ns.save)
    return Options(
        entries=ns.entries if ns.entries is not None else (100_000 if q else 1_000_000),
        revocations=ns.revocations if ns.revocations is not None else (6 if q else 20),
        delta_interval=ns.delta_interval,
        subscribers=[int(x) for x in subs.split(",") if x.strip()],
        fanout_deltas=ns.fanout_deltas,
        skip=skip,
        data_dir=ns.data_dir,
        keep_data=ns.keep_data,
        results_dir=ns.results_dir if save else None,
        seed=ns.seed,
        quick=q,
        openssl=ns.openssl,
    )


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) == 3 and argv[1] == "--child":
        return child_main(argv[2])
    opts = parse_args(argv[1:])
    from ca_core.storage.embedded import EmbeddedServices

    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if opts.data_dir is not None:
        data_dir = opts.data_dir.resolve()
        if data_dir.exists() and any(data_dir.iterdir()):
            print(f"{data_dir} is not empty: give a fresh directory", file=sys.stderr)
            return 2
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="certstatus-crl-bench-"))
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
        stem = opts.results_dir / f"{report['started'][:10]}-crl"
        stem.with_suffix(".md").write_text(markdown)
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        note(f"wrote {os.path.relpath(stem, Path.cwd())}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
