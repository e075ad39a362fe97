"""The tax-season peak against a live certstatus, every answer checked (Locust).

Users (TAX_SEASON.md, "The scenario the bench must replay"):

- ``RelyingParty``: OCSP status checks. Certificates are picked by Zipf popularity from the
  ground truth that ``certstatus bench load`` wrote; 0.5 % ask about a never-issued serial,
  0.1 % send a malformed request; GET:POST 70:30, SHA-1:SHA-256 CertIDs 80:20. Every answer is
  parsed, its signature verified and its status held against the truth
  (:class:`ca_core.groundtruth.AnswerChecker`): a wrong, stale or badly signed answer is a
  *failure* in Locust's statistics, never a success.
- ``CAAdmin``: through the admin API, on the admin pool (certificates relying parties never
  ask about): suspensions, resumptions, revocations, issuance from a CSR, and at the peak a
  burst (a batch of cards revoked at 50/s). For each change, the time until OCSP and the
  delta CRL show it goes to ``propagation.csv``.
- ``CRLConsumer``: full and partition CRL downloads (signature checked against the issuer)
  and delta polling; ``StreamSubscriber``: the delta push stream, every event's CRL checked.
- ``Burst``: at the start of the busiest hour, a batch of compromised cards revoked at 50/s
  through ``POST /v1/revocations:batch`` (one batch a second), propagation recorded as "burst".

The shape (:class:`TaxSeasonShape`) replays the deadline day's 24 hours compressed into
``CERTSTATUS_BENCH_MINUTES`` minutes, its busiest hour at ``100 × CERTSTATUS_BENCH_SCALE``
checks/s (×1 = the MOICA tax-season peak, ×50 = the national eID bound).

Settings (environment): ``CERTSTATUS_BENCH_TRUTH`` (the truth directory, required),
``CERTSTATUS_BENCH_RUN_DIR`` (where checks.csv, propagation.csv, shape.csv and meta.json go;
default ``.``), ``CERTSTATUS_BENCH_SCALE`` (1), ``CERTSTATUS_BENCH_MINUTES`` (10),
``CERTSTATUS_BENCH_PER_USER_RPS`` (checks/s per relying-party user, 5),
``CERTSTATUS_BENCH_LOCUST_SHARE`` (Locust's share of the relying-party checks, 1; below 1,
bench/fastgen.py carries the rest, as bench/tax_season.py arranges),
``CERTSTATUS_BENCH_RESPONDER_URL`` (http://127.0.0.1:8080), ``CERTSTATUS_ADMIN_URL``
(http://127.0.0.1:8081) and ``CERTSTATUS_ADMIN_TOKEN`` (admin users; without a token they do
nothing), ``CERTSTATUS_BENCH_ADMIN_USERS`` (1), ``CERTSTATUS_BENCH_CRL_USERS`` (1),
``CERTSTATUS_BENCH_STREAM_USERS`` (2), ``CERTSTATUS_BENCH_BURST_RATE`` (50 revocations/s) and
``CERTSTATUS_BENCH_BURST_SECONDS`` (10; 0 turns the burst off), ``CERTSTATUS_BENCH_BURST_AT``
(when, as a fraction of the day: 23/24, the busiest hour). Do not pass
``--host``: Locust would point every user, the admin ones too, at it.

Run headless, e.g. (see bench/README.md)::

    CERTSTATUS_BENCH_TRUTH=.certstatus/bench CERTSTATUS_BENCH_RUN_DIR=run \\
      locust -f bench/locustfile.py --headless --csv run/locust --csv-full-history
"""

from __future__ import annotations

import base64
import collections
import csv
import datetime as dt
import gc
import itertools
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

import gevent
import gevent.socket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from locust import FastHttpUser, LoadTestShape, User, constant, constant_throughput, events, task
from locust.env import Environment
from locust.runners import STATE_STOPPED, STATE_STOPPING, MasterRunner

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # bench.dayshape, run by locust -f
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dayshape import PEAK_RPS_X1, locust_users, split, target_rps  # noqa: E402
from ca_core.groundtruth import AnswerChecker, Entry, RequestBuilder, Status, Truth, classify_answer, zipf_rank
from ca_core.ocsp import HashAlgorithm

# Settings ------------------------------------------------------------------------------


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


TRUTH_DIR: Final = _env("CERTSTATUS_BENCH_TRUTH", "")
RUN_DIR: Final = Path(_env("CERTSTATUS_BENCH_RUN_DIR", "."))
SCALE: Final = float(_env("CERTSTATUS_BENCH_SCALE", "1"))
MINUTES: Final = float(_env("CERTSTATUS_BENCH_MINUTES", "10"))
PER_USER_RPS: Final = float(_env("CERTSTATUS_BENCH_PER_USER_RPS", "5"))
RESPONDER_URL: Final = _env("CERTSTATUS_BENCH_RESPONDER_URL", "http://127.0.0.1:8080")
ADMIN_URL: Final = _env("CERTSTATUS_ADMIN_URL", "http://127.0.0.1:8081")
ADMIN_TOKEN: Final = os.environ.get("CERTSTATUS_ADMIN_TOKEN")
ADMIN_USERS: Final = int(_env("CERTSTATUS_BENCH_ADMIN_USERS", "1"))
CRL_USERS: Final = int(_env("CERTSTATUS_BENCH_CRL_USERS", "1"))
STREAM_USERS: Final = int(_env("CERTSTATUS_BENCH_STREAM_USERS", "2"))
#: The burst: a batch of compromised cards revoked at this rate for BURST_SECONDS at the peak.
BURST_RATE: Final = int(_env("CERTSTATUS_BENCH_BURST_RATE", "50"))
BURST_SECONDS: Final = int(_env("CERTSTATUS_BENCH_BURST_SECONDS", "10"))
#: When the burst starts, as a fraction of the day (23/24: the busiest hour, 23:00).
BURST_AT: Final = float(_env("CERTSTATUS_BENCH_BURST_AT", str(23 / 24)))
#: Locust's share of the relying-party load; bench/fastgen.py carries the rest (1: all of it).
LOCUST_SHARE: Final = float(_env("CERTSTATUS_BENCH_LOCUST_SHARE", "1"))

# The truth, shared by every user of this process ----------------------------------------

_lock = threading.Lock()
_state: dict[str, Any] = {}


def truth() -> Truth:
    with _lock:
        if "truth" not in _state:
            if not TRUTH_DIR:
                raise RuntimeError("set CERTSTATUS_BENCH_TRUTH to the directory 'certstatus bench load' wrote")
            t = Truth.open(Path(TRUTH_DIR))
            _state["truth"] = t
            _state["checker"] = AnswerChecker(t.issuers)
            _state["requests"] = RequestBuilder([cert for _, cert in t.issuers])
        return _state["truth"]  # type: ignore[no-any-return]


# Counters written once a second -----------------------------------------------------------

_checks: collections.Counter[tuple[int, str]] = collections.Counter()
_propagation: list[tuple[str, float, float | None, float | None]] = []
#: Changes still being watched, so a run that ends first still reports what was seen.
_watching: dict[int, list[Any]] = {}
#: Seconds count from the test's start (test_start), as shape.csv and meta["started"] do.
_clock = {"started": time.monotonic()}


def _second() -> int:
    return int(time.monotonic() - _clock["started"])


def _record(kind: str) -> None:
    _checks[(_second(), kind)] += 1


# Relying parties ----------------------------------------------------------------------------


class RelyingParty(FastHttpUser):
    """A relying party checking one certificate per request, every answer verified."""

    wait_time = constant_throughput(PER_USER_RPS)
    weight = 100
    host = RESPONDER_URL

    def on_start(self) -> None:
        self.truth = truth()
        self.checker: AnswerChecker = _state["checker"]
        self.builder: RequestBuilder = _state["requests"]
        self.rng = random.Random()

    @task
    def check_status(self) -> None:
        roll = self.rng.random()
        if roll < 0.001:
            self._malformed()
            return
        if roll < 0.006 and self.truth.never_issued:
            issuer_index, serial = self.rng.choice(self.truth.never_issued)
            expected: Entry | None = None
        else:
            expected = self.truth.entry(zipf_rank(self.truth.rp_count, self.rng))
            issuer_index, serial = expected.issuer_index, expected.serial
        algorithm = HashAlgorithm.SHA1 if self.rng.random() < 0.8 else HashAlgorithm.SHA256
        der = self.builder.der(issuer_index, serial, algorithm)
        if self.rng.random() < 0.7:
            path = "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")
            ctx = self.client.get(path, name="ocsp GET", catch_response=True)
        else:
            ctx = self.client.post("/ocsp", data=der, headers={"Content-Type": "application/ocsp-request"},
                                   name="ocsp POST", catch_response=True)  # fmt: skip
        with ctx as response:
            self._judge(response, expected, algorithm, malformed=False)

    def _judge(
        self, response: Any, expected: Entry | None, algorithm: HashAlgorithm | None, *, malformed: bool
    ) -> None:
        """Locust's verdict and checks.csv's count, by the rules fastgen follows too
        (:func:`ca_core.groundtruth.classify_answer`): an HTTP error or tryLater is a failure
        but not a wrong answer."""
        kind, problem = classify_answer(self.checker, response.status_code, response.content or b"", expected,
                                        dt.datetime.now(dt.UTC), malformed=malformed, algorithm=algorithm)  # fmt: skip
        if kind == "checked":
            response.success()
        else:
            response.failure(problem or kind)
        if not malformed and kind != "errors":
            _record(kind)

    def _malformed(self) -> None:
        garbage = bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(1, 64)))
        with self.client.post("/ocsp", data=garbage, headers={"Content-Type": "application/ocsp-request"},
                              name="ocsp malformed", catch_response=True) as response:  # fmt: skip
            self._judge(response, None, None, malformed=True)


# CA administrators -----------------------------------------------------------------------------

_admin_slot = itertools.count()


class CAAdmin(FastHttpUser):
    """A CA administrator on the admin pool; measures how long each change takes to show."""

    wait_time = constant(1.0)
    fixed_count = ADMIN_USERS
    host = ADMIN_URL

    def on_start(self) -> None:
        self.truth = truth()
        pool = range(self.truth.rp_count, self.truth.count - burst_share(self.truth))
        slot, slots = next(_admin_slot), max(1, ADMIN_USERS)
        self.mine = [self.truth.entry(r) for r in pool[slot::slots]]
        self.suspended: list[Entry] = []
        self.rng = random.Random()
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if ADMIN_TOKEN else {}
        self.builder: RequestBuilder = _state["requests"]
        self.responder = RESPONDER_URL

    def _change(self, op: str, entry: Entry, body: dict[str, Any]) -> bool:
        issuer = self.truth.issuers[entry.issuer_index][0]
        with self.client.post(f"/v1/certificates/{issuer}/{entry.serial:X}/{op}", json=body, headers=self.headers,
                              name=f"admin {op}", catch_response=True) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return False
        want = Status.GOOD if op == "resume" else Status.SUSPENDED if op == "suspend" else Status.REVOKED
        gevent.spawn(self._watch, op, entry, want, time.monotonic())
        return True

    @task(3)
    def suspend_or_resume(self) -> None:
        if not ADMIN_TOKEN:
            return
        if self.suspended and self.rng.random() < 0.5:
            entry = self.suspended.pop()
            if self._change("resume", entry, {}):
                self.mine.append(entry)
        elif self.mine:
            entry = self.mine.pop()
            if self._change("suspend", entry, {}):
                self.suspended.append(entry)

    @task(1)
    def revoke(self) -> None:
        if ADMIN_TOKEN and self.mine:
            self._change("revoke", self.mine.pop(), {"reason": "keyCompromise"})

    @task(1)
    def issue(self) -> None:
        if not ADMIN_TOKEN:
            return
        key = ec.generate_private_key(ec.SECP256R1())
        holder = f"{self.rng.randrange(10**15, 10**16):016d}"
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"), x509.NameAttribute(NameOID.COMMON_NAME, "林測試"),
                          x509.NameAttribute(NameOID.SERIAL_NUMBER, holder)])  # fmt: skip
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        body = {"issuer": self.truth.issuers[0][0], "profile": "citizen-signing",
                "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}  # fmt: skip
        with self.client.post("/v1/certificates", json=body, headers=self.headers, name="admin issue",
                              catch_response=True) as response:  # fmt: skip
            if response.status_code != 201:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")

    def _watch(self, kind: str, entry: Entry, want: Status, since: float) -> None:
        """Poll OCSP until the answer says ``want`` (30 s at most); the delta CRL likewise."""
        ocsp_s = crl_s = None
        der = self.builder.der(entry.issuer_index, entry.serial, HashAlgorithm.SHA1)
        expected = Entry(entry.issuer_index, entry.serial, want, 6 if want is Status.SUSPENDED else 1)
        checker: AnswerChecker = _state["checker"]
        issuer = self.truth.issuers[entry.issuer_index][0]
        listed_wanted = want is not Status.GOOD
        deadline = since + 30
        next_crl = since
        record: list[Any] = [kind, time.time(), None, None]
        _watching[id(record)] = record
        while time.monotonic() < deadline and (ocsp_s is None or crl_s is None):
            if ocsp_s is None:
                response = self.client.post(self.responder + "/ocsp", data=der, name="propagation status poll",
                                            headers={"Content-Type": "application/ocsp-request"})  # fmt: skip
                if (
                    response.status_code == 200
                    and checker.check(response.content, expected, dt.datetime.now(dt.UTC), HashAlgorithm.SHA1) is None
                ):
                    ocsp_s = record[2] = time.monotonic() - since
            if crl_s is None and time.monotonic() >= next_crl:  # a delta CRL is larger: every 0.25 s
                next_crl = time.monotonic() + 0.25
                response = self.client.get(
                    f"{self.responder}/crl/{issuer}/delta.crl", name="propagation delta CRL poll"
                )
                if response.status_code == 200:
                    try:
                        crl = x509.load_der_x509_crl(response.content)
                        revoked = crl.get_revoked_certificate_by_serial_number(entry.serial)
                        listed = revoked is not None and not _removed(revoked)
                        if listed == listed_wanted and (listed or revoked is not None):
                            crl_s = record[3] = time.monotonic() - since
                    except ValueError:
                        pass
            gevent.sleep(0.05)
        _watching.pop(id(record), None)
        _propagation.append((kind, record[1], ocsp_s, crl_s))


def _removed(revoked: x509.RevokedCertificate) -> bool:
    try:
        reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return False
    return reason is x509.ReasonFlags.remove_from_crl


# CRL consumers ----------------------------------------------------------------------------------


class CRLConsumer(FastHttpUser):
    """Relying parties that use CRLs: a full or partition CRL now and then, the delta often."""

    wait_time = constant(2.0)
    fixed_count = CRL_USERS
    host = RESPONDER_URL

    def on_start(self) -> None:
        self.truth = truth()
        self.rng = random.Random()

    def _fetch(self, issuer_index: int, path: str, name: str) -> None:
        _, issuer = self.truth.issuers[issuer_index]
        with self.client.get(path, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                crl = x509.load_der_x509_crl(response.content)
            except ValueError as e:
                response.failure(f"not a CRL: {e}")
                return
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                response.failure("CRL signature does not verify with the issuer's key")
            elif crl.next_update_utc is None or crl.next_update_utc < dt.datetime.now(dt.UTC):
                response.failure("stale CRL")
            else:
                response.success()

    @task(1)
    def full_or_partition(self) -> None:
        index = self.rng.randrange(len(self.truth.issuers))
        name = self.truth.issuers[index][0]
        if self.rng.random() < 0.3:
            self._fetch(index, f"/crl/{name}.crl", "crl full")
        else:
            self._fetch(index, f"/crl/{name}/{self.rng.randrange(4)}.crl", "crl partition")

    @task(5)
    def delta(self) -> None:
        index = self.rng.randrange(len(self.truth.issuers))
        self._fetch(index, f"/crl/{self.truth.issuers[index][0]}/delta.crl", "crl delta")


def burst_share(t: Truth) -> int:
    """The end of the admin pool kept for the burst (at most half of it); the admin users
    take the rest, so the two never change the same certificate."""
    if not ADMIN_TOKEN or BURST_SECONDS <= 0:
        return 0
    return min(BURST_RATE * BURST_SECONDS, (t.count - t.rp_count) // 2)


class Burst(FastHttpUser):
    """The compromised-cards burst: BURST_RATE revocations a second for BURST_SECONDS, once,
    at the start of the busiest hour, taken from the end of the admin pool."""

    wait_time = constant(0.2)
    fixed_count = 1 if ADMIN_TOKEN and BURST_SECONDS > 0 else 0
    host = ADMIN_URL

    def on_start(self) -> None:
        self.truth = truth()
        self.cards = [self.truth.entry(r) for r in range(self.truth.count - burst_share(self.truth), self.truth.count)]
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.builder: RequestBuilder = _state["requests"]
        self.responder = RESPONDER_URL
        self.start_at = MINUTES * 60 * BURST_AT
        self.next_batch = 0.0

    @task
    def burst(self) -> None:
        elapsed = time.monotonic() - _clock["started"]
        if not self.cards or elapsed < self.start_at or time.monotonic() < self.next_batch:
            return
        self.next_batch = time.monotonic() + 1.0
        batch, self.cards = self.cards[:BURST_RATE], self.cards[BURST_RATE:]
        items = [{"issuer": self.truth.issuers[e.issuer_index][0], "serial": format(e.serial, "X")} for e in batch]
        with self.client.post("/v1/revocations:batch", json={"items": items, "reason": "keyCompromise"},
                              headers=self.headers, name="admin burst batch", catch_response=True) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
        # Watch a few of each batch (all would poll the responder harder than the load itself).
        for entry in batch[:: max(1, len(batch) // 5)]:
            gevent.spawn(CAAdmin._watch, self, "burst", entry, Status.REVOKED, time.monotonic())  # type: ignore[arg-type]


class StreamSubscriber(User):
    """A subscriber of the delta push stream (Server-Sent Events): every event's CRL must parse
    and verify with the issuer's key; each event is a Locust request named "crl stream event"."""

    wait_time = constant(1.0)
    fixed_count = STREAM_USERS

    def on_start(self) -> None:
        self.truth = truth()

    @task
    def subscribe(self) -> None:
        index = random.randrange(len(self.truth.issuers))
        name, issuer = self.truth.issuers[index]
        url = urllib.parse.urlsplit(RESPONDER_URL)
        started = time.perf_counter()
        try:
            sock = gevent.socket.create_connection((url.hostname, url.port or 80), timeout=2)
        except OSError as e:
            self._fire("crl stream connect", started, 0, e)
            return
        try:
            sock.sendall(
                f"GET /crl/{name}/stream HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            reader = _Lines(sock)
            status = reader.readline()
            if b" 200 " not in status:
                self._fire("crl stream connect", started, 0, RuntimeError(status.decode(errors="replace").strip()))
                return
            self._fire("crl stream connect", started, 0, None)
            self._events(reader, issuer)
        except (OSError, ValueError) as e:
            self._fire("crl stream", started, 0, e)
        finally:
            sock.close()

    def _events(self, reader: Any, issuer: x509.Certificate) -> None:
        """Read events until the stream ends (the run ends, or the server asks for a retry)."""
        data: list[bytes] = []
        chunked = False
        while True:
            try:
                line = reader.readline()
            except TimeoutError:  # quiet between deltas: carry on unless the run is ending
                if self.environment.runner is None or self.environment.runner.state in (STATE_STOPPING, STATE_STOPPED):
                    return
                continue
            if not line:
                return
            if line.lower().startswith(b"transfer-encoding: chunked"):
                chunked = True
            if chunked and _is_chunk_size(line):
                continue
            line = line.rstrip(b"\r\n")
            if line.startswith(b"data:"):
                data.append(line[5:].strip())
            elif not line and data:
                started = time.perf_counter()
                try:
                    crl = x509.load_der_x509_crl(base64.b64decode(b"".join(data)))
                    ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
                    self._fire("crl stream event", started, len(data[0]),
                               None if ok else RuntimeError("stream CRL signature does not verify"))  # fmt: skip
                except ValueError as e:
                    self._fire("crl stream event", started, 0, e)
                data = []

    def _fire(self, name: str, started: float, size: int, error: BaseException | None) -> None:
        self.environment.events.request.fire(request_type="SSE", name=name, response_time=(time.perf_counter() - started) * 1000,
                                             response_length=size, exception=error, context={})  # fmt: skip


class _Lines:
    """Lines from a socket with a timeout (a file from makefile() is undefined after one)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""

    def readline(self) -> bytes:
        while b"\n" not in self._buf:
            more = self._sock.recv(65536)  # TimeoutError leaves the buffer as it was
            if not more:
                line, self._buf = self._buf, b""
                return line
            self._buf += more
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"


def _is_chunk_size(line: bytes) -> bool:
    text = line.strip()
    return bool(text) and all(c in b"0123456789abcdefABCDEF" for c in text)


# The shape -------------------------------------------------------------------------------------


class TaxSeasonShape(LoadTestShape):
    """The deadline day, compressed; relying-party users = target rate / per-user rate."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= MINUTES * 60:
            return None
        users = locust_users(target_rps(t, SCALE, MINUTES), LOCUST_SHARE, PER_USER_RPS)
        users += ADMIN_USERS + CRL_USERS + STREAM_USERS + 1
        return users, max(10.0, users)


# Files of the run -------------------------------------------------------------------------------


def _write_shape() -> None:
    with open(RUN_DIR / "shape.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "target_rps", "users", "locust_rps", "fastgen_rps"])
        for t in range(int(MINUTES * 60)):
            rate = target_rps(t, SCALE, MINUTES)
            mine, fast = split(t, scale=SCALE, minutes=MINUTES, share=LOCUST_SHARE, per_user_rps=PER_USER_RPS)
            w.writerow([t, f"{rate:.1f}", locust_users(rate, LOCUST_SHARE, PER_USER_RPS), f"{mine:.1f}", f"{fast:.1f}"])


def _flush() -> None:
    seconds = sorted({s for s, _ in _checks})
    with open(RUN_DIR / f"checks-{os.getpid()}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "checked", "wrong", "stale", "sig_fail"])
        for s in seconds:
            w.writerow([s] + [_checks[(s, k)] for k in ("checked", "wrong", "stale", "sig_fail")])
    with open(RUN_DIR / f"propagation-{os.getpid()}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "change_at", "ocsp_seen_s", "delta_crl_seen_s"])
        for kind, at, o, c in [*_propagation, *(tuple(r) for r in _watching.values())]:
            w.writerow([kind, f"{at:.3f}", "" if o is None else f"{o:.3f}", "" if c is None else f"{c:.3f}"])


def _keep_old_objects_out_of_gc() -> None:
    """Every few seconds, move what has survived so far (the truth's entries, the checker's
    memo, Locust's own statistics) out of the collector's sight: otherwise each full
    collection walks all of it, a pause of tens of ms in which every user's request waits,
    counted as the responder's latency. Young objects are still collected as usual."""
    while True:
        gc.freeze()
        gevent.sleep(5.0)


@events.init.add_listener
def _load_before_the_clock(environment: Environment, **_: Any) -> None:
    """Load the truth in every process that runs users before the test (and its clock)
    starts: loaded by the first user instead, it took a core for about a second at t = 0,
    while bench/fastgen.py, on the same machine, began the day's schedule."""
    if TRUTH_DIR and not isinstance(environment.runner, MasterRunner):
        truth()
        gc.collect()
        gc.freeze()


@events.test_start.add_listener
def _on_start(environment: Environment, **_: Any) -> None:
    _clock["started"] = time.monotonic()
    gevent.spawn(_keep_old_objects_out_of_gc)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    _write_shape()
    meta = {
        "scenario": f"x{SCALE:g}",
        "scale": SCALE,
        "peak_rps_target": PEAK_RPS_X1 * SCALE,
        "duration_s": MINUTES * 60,
        "per_user_rps": PER_USER_RPS,
        "locust_share": LOCUST_SHARE,
        "started": dt.datetime.now(dt.UTC).isoformat(),
        "generators": [{"name": "locust", "load": "relying parties (every answer checked), CA admins, CRL consumers"}],
        "admin": bool(ADMIN_TOKEN),
    }
    (RUN_DIR / "meta-locust.json").write_text(json.dumps(meta, indent=1))


@events.quitting.add_listener
def _on_quit(environment: Environment, **_: Any) -> None:
    _flush()
