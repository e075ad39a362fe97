"""bench/fastgen.py against a small real HTTP/1.1 responder over TCP: how it reads answers
(split across reads, Connection: close, chunked, unparseable), what it counts when the server
answers wrongly, closes, drops or never answers, and how a stop ends. Whatever happens, every
request sent ends as exactly one outcome and the four output files agree with each other.

The responder (:class:`Responder`) runs in threads of the test process and answers with real
OCSP responses signed by a responder certificate of the test CA, for the serials of a small
ground truth; fastgen runs in-process (:func:`run_fastgen`) or, for the signal, as a
subprocess."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import math
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench import fastgen
from ca_core.groundtruth import OUTCOMES, AnswerChecker, Status, Truth, TruthWriter
from ca_core.ocsp import HashAlgorithm

pytestmark = pytest.mark.slow  # servers of its own, and seconds of traffic each

ROOT = Path(__file__).resolve().parent.parent.parent
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
NEVER_ISSUED = 10**9
REASONS = {1: x509.ReasonFlags.key_compromise, 4: x509.ReasonFlags.superseded}


def _status(serial: int) -> tuple[Status, int | None]:
    if serial % 11 == 0:
        return Status.SUSPENDED, None
    if serial % 7 == 0:
        return Status.REVOKED, 1 if serial % 2 else 4
    return Status.GOOD, None


class PKI:
    """A test CA, a responder certificate it issued, and a ground truth of 60 certificates."""

    def __init__(self, truth_dir: Path) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastgen HTTP test CA")])
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.ca_key.public_key())
                   .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1))
                   .not_valid_after(NOW + dt.timedelta(days=9))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(self.ca_key, hashes.SHA256()))  # fmt: skip
        self.key = ec.generate_private_key(ec.SECP256R1())
        responder = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastgen HTTP test responder")])
        self.responder = (x509.CertificateBuilder().subject_name(responder).issuer_name(name)
                          .public_key(self.key.public_key()).serial_number(2)
                          .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
                          .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
                          .sign(self.ca_key, hashes.SHA256()))  # fmt: skip
        writer = TruthWriter(truth_dir, [("test", self.ca.public_bytes(serialization.Encoding.DER))])
        self.truth: dict[int, tuple[Status, int | None]] = {}
        for serial in range(100, 160):
            self.truth[serial] = _status(serial)
            writer.add(0, serial, *self.truth[serial])
        writer.close(rp_count=50, never_issued=[(0, NEVER_ISSUED)])
        self.truth_dir = truth_dir
        self.hashes = {}
        for algorithm in (hashes.SHA1(), hashes.SHA256()):
            builder = ocsp.OCSPRequestBuilder().add_certificate(self.responder, self.ca, algorithm).build()
            self.hashes[algorithm.name] = (builder.issuer_name_hash, builder.issuer_key_hash)
        self._signed: dict[tuple[int, str, Status], bytes] = {}
        self._lock = threading.Lock()

    def answer(self, der: bytes, *, lie: bool = False) -> tuple[bytes, bytes, str]:
        """(HTTP status, body, what it was) for an OCSP request's DER. ``lie``: a revoked
        certificate is said to be good, in a validly signed answer."""
        try:
            request = ocsp.load_der_ocsp_request(der)
            serial, algorithm = request.serial_number, request.hash_algorithm
            cert_id = (request.issuer_name_hash, request.issuer_key_hash)
        except Exception:  # noqa: BLE001 - whatever it is, it is not a request
            return b"400 Bad Request", b"not an OCSP request\n", "malformed"
        unauthorized = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        if serial not in self.truth or self.hashes.get(algorithm.name) != cert_id:
            return b"200 OK", unauthorized.public_bytes(serialization.Encoding.DER), "unauthorized"
        status, reason = self.truth[serial]
        if lie and status is Status.REVOKED:
            return b"200 OK", self._signed_answer(serial, algorithm, cert_id, Status.GOOD, None), "revoked"
        return b"200 OK", self._signed_answer(serial, algorithm, cert_id, status, reason), status.name.lower()

    def _signed_answer(self, serial: int, algorithm: hashes.HashAlgorithm, cert_id: tuple[bytes, bytes],
                       status: Status, reason: int | None) -> bytes:  # fmt: skip
        key = (serial, algorithm.name, status)
        with self._lock:
            body = self._signed.get(key)
        if body is None:
            revoked = status is not Status.GOOD
            flag = x509.ReasonFlags.certificate_hold if status is Status.SUSPENDED else REASONS.get(reason or 0)
            builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
                issuer_name_hash=cert_id[0], issuer_key_hash=cert_id[1], serial_number=serial, algorithm=algorithm,
                cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                this_update=NOW - dt.timedelta(minutes=1), next_update=NOW + dt.timedelta(hours=4),
                revocation_time=NOW - dt.timedelta(days=1) if revoked else None,
                revocation_reason=flag if revoked else None,
            )  # fmt: skip
            response = (builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.responder)
                        .certificates([self.responder]).sign(self.key, hashes.SHA256()))  # fmt: skip
            body = response.public_bytes(serialization.Encoding.DER)
            with self._lock:
                self._signed[key] = body
        return body


class Responder:
    """A threaded HTTP/1.1 OCSP responder on 127.0.0.1, one thread per connection, misbehaving
    as ``mode`` says:

    - ``normal``: each request answered with Content-Length on a keep-alive connection; a
      request that is not OCSP gets a 400 with a body and ``Connection: close``, as the real
      responder does;
    - ``split``: the same, each answer written in pieces (cut inside the status line, the
      blank line and the body), with pauses between them;
    - ``close``: every answer says ``Connection: close``; the server lingers a little (as a
      network would), then closes; a request read after that is counted in ``after_close``;
    - ``chunked``: answers in ``Transfer-Encoding: chunked``;
    - ``400body``: a 400 with a body and ``Connection: close`` for everything;
    - ``unparseable``: a status line that is no status;
    - ``twice``: every answer written twice in one write (an answer nobody asked for), after
      a pause of 10 ms;
    - ``stall``: requests read, never answered;
    - ``drop``: every ``every``-th request read is not answered: the connection is closed;
    - ``lie``: as ``normal``, but a revoked certificate is answered good, validly signed.
    """

    def __init__(self, pki: PKI, mode: str, every: int = 7) -> None:
        self.pki, self.mode, self.every = pki, mode, every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}  # what the requests were: good, revoked, malformed, ...
        self.requests = self.connections = self.dropped = self.pieces = self.after_close = 0
        self.max_per_connection = 0
        self.socks: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        with self.lock:
            socks, self.socks = self.socks, []
        for s in [self.listener, *socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            with self.lock:
                self.socks.append(sock)
                self.threads.append(thread)
                self.connections += 1
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        buf = bytearray()
        served = 0
        try:
            while True:
                request = _read_request(sock, buf)
                if request is None:
                    return
                served += 1
                with self.lock:
                    self.requests += 1
                    number = self.requests
                    self.max_per_connection = max(self.max_per_connection, served)
                if not self._respond(sock, number, *request):
                    return
        except OSError:
            return
        finally:
            sock.close()

    def _respond(self, sock: socket.socket, number: int, method: bytes, target: bytes, body: bytes) -> bool:
        """Answer one request; False: the connection is done."""
        if self.mode == "stall":
            return True
        if self.mode == "drop" and number % self.every == 0:
            with self.lock:
                self.dropped += 1
            return False
        der = body
        if method == b"GET":
            try:
                der = base64.b64decode(urllib.parse.unquote_to_bytes(target.removeprefix(b"/ocsp/")), validate=True)
            except ValueError:
                der = b""
        status, answer, what = self.pki.answer(der, lie=self.mode == "lie")
        with self.lock:
            self.seen[what] = self.seen.get(what, 0) + 1
        close = status.startswith(b"400") or self.mode in ("close", "400body")
        if self.mode == "400body":
            status, answer = b"400 Bad Request", b"no: this responder refuses everything\n"
        if self.mode == "unparseable" and status == b"200 OK":
            status = b"2x0 OK"
        head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/ocsp-response\r\n"
        if self.mode == "chunked":
            head += b"Transfer-Encoding: chunked\r\n"
            answer = b"%x\r\n%s\r\n0\r\n\r\n" % (len(answer), answer)
        else:
            head += b"Content-Length: %d\r\n" % len(answer)
        if close:
            head += b"Connection: close\r\n"
        raw = head + b"\r\n" + answer
        if self.mode == "split":
            self._send_in_pieces(sock, raw, len(head))
        elif self.mode == "twice":
            time.sleep(0.01)  # slower than the rate: fastgen has a request waiting whenever an answer comes
            sock.sendall(raw + raw)
        else:
            sock.sendall(raw)
        if close:
            time.sleep(0.05)  # the client must not send on it meanwhile
            try:
                late = sock.recv(1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                late = b""
            if late:
                with self.lock:
                    self.after_close += 1
            return False
        return True

    def _send_in_pieces(self, sock: socket.socket, raw: bytes, blank_line: int) -> None:
        rng = random.Random(len(raw) * 31 + blank_line)
        cuts = {3, 11, blank_line - 5, blank_line + 1, blank_line + 2, blank_line + 3}  # head, digits, CRLFCRLF
        cuts |= set(rng.sample(range(1, len(raw)), 4))
        edges = [0, *sorted(c for c in cuts if 0 < c < len(raw)), len(raw)]
        for a, b in zip(edges, edges[1:], strict=False):
            sock.sendall(raw[a:b])
            time.sleep(0.002)
        with self.lock:
            self.pieces += len(edges) - 1


def _read_request(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes, bytes] | None:
    """(method, target, body) of the next request, or None at the end of the connection."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end])
    method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < end + 4 + length:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    body = bytes(buf[end + 4 : end + 4 + length])
    del buf[: end + 4 + length]
    return method, target, body


class MoreRefusals(fastgen.Requests):
    """fastgen's requests with more of the ones that must be refused (malformed, 3 %, half of
    them GETs) or answered unauthorized (never issued, 3 %), so that a short run has some."""

    def __init__(self, truth: Truth, host: str, seed: int) -> None:
        super().__init__(truth, host, seed)
        self.extra = random.Random(seed + 1)

    def next(self) -> fastgen.Job:
        roll = self.extra.random()
        if roll < 0.015:
            return fastgen.Job(self._post(self.extra.randbytes(self.extra.randint(1, 64))), None, None, True)
        if roll < 0.03:
            get = b"GET /ocsp/MEUw%2Fnot-base64 HTTP/1.1\r\nHost: " + self.host + b"\r\n\r\n"
            return fastgen.Job(get, None, None, True)
        if roll < 0.06:
            der = self.builder.der(0, NEVER_ISSUED, HashAlgorithm.SHA256)
            return fastgen.Job(self._post(der), None, HashAlgorithm.SHA256, False)
        return super().next()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("truth"))


@pytest.fixture
def responder(request: pytest.FixtureRequest, pki: PKI) -> Iterator[Responder]:
    server = Responder(pki, request.param)
    yield server
    server.close()


def run_fastgen(pki: PKI, server: Responder, run_dir: Path, *, rate: int = 200, seconds: int = 2,
                connections: int = 4, inline: bool = False) -> dict[str, Any]:  # fmt: skip
    """fastgen in this process, as its main() runs it; its files checked for consistency."""
    argv = ["--truth-dir", str(pki.truth_dir), "--run-dir", str(run_dir), "--url", server.url, "--rate", str(rate),
            "--seconds", str(seconds), "--connections", str(connections), "--seed", "7",
            *(["--verify-inline"] if inline else [])]  # fmt: skip
    opts = fastgen.parse_args(argv)
    run_dir.mkdir()
    schedule = fastgen.Schedule([float(rate)] * seconds)
    truth = Truth.open(pki.truth_dir)
    requests = MoreRefusals(truth, f"127.0.0.1:{server.port}", 7)
    checker, deferred = AnswerChecker(truth.issuers), fastgen.Deferred()
    rec, info = uvloop.run(fastgen.generate(opts, schedule, requests, checker, deferred))
    info["checked_after_the_run"] = deferred.settle(checker, rec, progress=False)
    result = fastgen.write_outputs(run_dir, schedule, rec, info, opts, argv)
    check_files(run_dir, result)
    return result


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_files(run_dir: Path, result: dict[str, Any]) -> None:
    """Every request sent is one outcome, second by second, and the files say the same."""
    assert json.loads((run_dir / "fastgen.json").read_text()) == json.loads(json.dumps(result))
    rows = _rows(run_dir / "fastgen.csv")
    assert sum(int(r["sent"]) for r in rows) == result["requests"]
    for r in rows:
        assert int(r["sent"]) == sum(int(r[k]) for k in OUTCOMES), r
    totals = {k: sum(int(r[k]) for r in rows) for k in OUTCOMES}
    assert totals == result["outcomes"] and sum(totals.values()) == result["requests"]
    assert sum(result["error_kinds"].values()) == totals["errors"]
    checks = _rows(run_dir / "checks-fastgen.csv")
    assert {k: sum(int(c[k]) for c in checks) for k in OUTCOMES[:4]} == {k: totals[k] for k in OUTCOMES[:4]}
    histogram = _rows(run_dir / "fastgen-latency.csv")
    assert sum(int(h["count"]) for h in histogram) == result["latency_ms"]["n"] == result["requests"]
    for r in rows:
        in_second = sum(int(h["count"]) for h in histogram if h["t_s"] == r["t_s"])
        assert in_second == int(r["sent"]), r
    assert "accounting" not in result["saturation_reason"]


@pytest.mark.parametrize("responder", ["normal"], indirect=True)
def test_every_answer_of_a_right_responder_is_checked(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run")
    assert result["requests"] == result["planned"] == 400 == responder.requests
    assert result["outcomes"]["checked"] == 400, result
    assert result["error_kinds"] == {} and result["problems"] == {}
    # Every kind of request was there: the refusals, the unauthorized, each status.
    assert {"good", "revoked", "suspended", "unauthorized", "malformed"} <= set(responder.seen), responder.seen
    # A refusal closes its connection (Connection: close): a new one, and nothing lost.
    # (A connection closed at the very end may not be replaced before fastgen stops.)
    malformed = responder.seen["malformed"]
    assert malformed - 1 <= result["events"].get("reconnected", 0) <= malformed and responder.after_close == 0
    assert 4 + result["events"].get("reconnected", 0) <= responder.connections <= 4 + malformed
    assert math.isfinite(result["latency_ms"]["max"]) and not result["saturated"]


@pytest.mark.parametrize("responder", ["lie"], indirect=True)
@pytest.mark.parametrize("inline", [False, True], ids=["checked-after-the-run", "checked-inline"])
def test_a_validly_signed_wrong_status_is_wrong_however_checked(
    pki: PKI, responder: Responder, tmp_path: Path, inline: bool
) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run", inline=inline)
    revoked = responder.seen["revoked"]
    assert revoked > 0 and result["outcomes"]["wrong"] == revoked, result
    assert result["outcomes"]["checked"] == 400 - revoked and result["error_kinds"] == {}
    assert any("wrong status" in problem for problem in result["problems"]), result["problems"]
    # Deferred: answers first seen in the run (each distinct one kept once) were verified
    # after it; inline, none were left for after. Either way the wrong ones count in their
    # own seconds (check_files: each second's outcomes add up to what it sent).
    after = result["checked_after_the_run"]
    if inline:
        assert after["answers"] == after["distinct"] == 0
    else:
        assert 0 < after["distinct"] < after["answers"] <= 400, after


@pytest.mark.parametrize("responder", ["split"], indirect=True)
def test_answers_split_across_reads_are_put_together(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run", rate=100)
    assert result["outcomes"]["checked"] == result["requests"] == responder.requests == 200, result
    assert responder.pieces >= 6 * 200 and result["error_kinds"] == {}


@pytest.mark.parametrize("responder", ["close"], indirect=True)
def test_connection_close_retires_the_connection(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run")
    assert result["outcomes"]["checked"] == result["requests"] == responder.requests == 400, result
    assert "lost_in_flight" not in result["error_kinds"] and result["error_kinds"] == {}
    # Nothing was sent on a connection the server had said it would close: one request each.
    assert responder.after_close == 0 and responder.max_per_connection == 1
    assert 400 - 4 <= result["events"]["reconnected"] <= 400 and responder.connections >= 400


@pytest.mark.parametrize("responder", ["chunked"], indirect=True)
def test_chunked_answers_are_errors(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run")
    assert result["outcomes"]["errors"] == result["requests"] == responder.requests == 400, result
    assert result["error_kinds"] == {"chunked_answer": 400}
    # An answer fastgen cannot read is none (infinite latency), and its connection is replaced.
    assert result["latency_ms"]["p50"] == math.inf and 400 - 4 <= result["events"]["reconnected"] <= 400


@pytest.mark.parametrize("responder", ["400body"], indirect=True)
def test_a_refusal_with_a_body_is_one_outcome(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run")
    assert result["requests"] == responder.requests == 400
    malformed = responder.seen["malformed"]
    assert malformed > 0 and result["outcomes"]["checked"] == malformed  # refusing those is right
    assert result["error_kinds"] == {"http_400": 400 - malformed}, result
    assert responder.after_close == 0 and responder.max_per_connection == 1


@pytest.mark.parametrize("responder", ["unparseable"], indirect=True)
def test_an_unparseable_answer_is_an_error(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run", rate=100)
    assert result["requests"] == responder.requests == 200
    # The refusals are 400s (parseable) and right; everything else is no answer at all.
    assert result["outcomes"]["checked"] == responder.seen["malformed"]
    assert result["error_kinds"] == {"unparseable_http": 200 - responder.seen["malformed"]}, result


@pytest.mark.parametrize("responder", ["twice"], indirect=True)
def test_an_answer_nobody_asked_for_is_not_taken_for_the_next_one(
    pki: PKI, responder: Responder, tmp_path: Path
) -> None:
    # fastgen never pipelines: bytes after an answer arrived before the next request was
    # written and cannot answer it. Taken for its answer, they would be a wrong answer.
    result = run_fastgen(pki, responder, tmp_path / "run", connections=2)
    assert result["outcomes"]["checked"] == result["requests"] == responder.requests == 400, result
    assert result["backlog_max"] > 10  # a request was waiting whenever an answer came
    assert result["problems"] == {}
    assert result["events"]["unexpected_answer"] == 400 - responder.seen.get("malformed", 0)


@pytest.mark.parametrize("responder", ["stall"], indirect=True)
def test_requests_never_answered_are_errors_of_infinite_latency(
    pki: PKI, responder: Responder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastgen, "DRAIN_S", 1.0)
    started = time.monotonic()
    result = run_fastgen(pki, responder, tmp_path / "run")
    elapsed = time.monotonic() - started
    assert 2 + 1.0 <= elapsed < 2 + 1.0 + 1.5  # the schedule, then the drain, no longer
    # Four written (one per connection), the rest waited for a connection: all sent, none answered.
    assert responder.requests == 4 and result["requests"] == 400 and result["backlog_max"] >= 390
    assert result["error_kinds"] == {"unfinished": 400} and result["outcomes"]["errors"] == 400
    assert result["latency_ms"]["p50"] == math.inf and result["pool_exhausted_s"] == 2
    assert all(r["p99_ms"] == "inf" == r["max_ms"] for r in _rows(tmp_path / "run" / "fastgen.csv"))
    assert {h["le_ms"] for h in _rows(tmp_path / "run" / "fastgen-latency.csv")} == {"inf"}


@pytest.mark.parametrize("responder", ["drop"], indirect=True)
def test_a_dropped_connection_loses_its_request_and_is_replaced(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    result = run_fastgen(pki, responder, tmp_path / "run")
    assert result["requests"] == responder.requests == 400
    assert responder.dropped == 400 // 7 and result["error_kinds"] == {"lost_in_flight": responder.dropped}, result
    assert result["outcomes"]["checked"] == 400 - responder.dropped
    lost = responder.dropped + responder.seen["malformed"]  # connections that ended
    assert lost - 4 <= result["events"]["reconnected"] <= lost
    assert math.isinf(result["latency_ms"]["max"])


def _fastgen_until_sigterm(pki: PKI, server: Responder, run_dir: Path, after: float) -> tuple[int, float, str]:
    """fastgen as tax_season.py runs it, stopped by SIGTERM ``after`` seconds into its run:
    (exit status, seconds from the signal to its exit, its output)."""
    command = [sys.executable, str(ROOT / "bench" / "fastgen.py"), "--truth-dir", str(pki.truth_dir), "--run-dir",
               str(run_dir), "--url", server.url, "--rate", "200", "--seconds", "30", "--connections", "4"]  # fmt: skip
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            assert proc.stdout is not None
            first = b""
            while b"planned" not in first:  # "fastgen: N requests planned ...": it is about to connect
                line = proc.stdout.readline()
                assert line, first
                first += line
            time.sleep(after)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=30)
            return proc.returncode, time.monotonic() - signalled, (first + rest).decode()
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("responder", ["stall"], indirect=True)
def test_sigterm_drains_only_what_was_written(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    code, took, output = _fastgen_until_sigterm(pki, responder, tmp_path / "run", after=1.0)
    assert code == 0, output
    # The four written wait for their answers as long as any request may (DRAIN_S), no longer.
    assert fastgen.DRAIN_S - 0.5 <= took < fastgen.DRAIN_S + 2.0, (took, output)
    result = json.loads((tmp_path / "run" / "fastgen.json").read_text())
    check_files(tmp_path / "run", result)
    assert result["stopped_early"] is True and result["planned"] == 6000
    assert result["requests"] == responder.requests == 4 and result["error_kinds"] == {"unfinished": 4}
    # What waited for a connection was never written: not sent, counted apart.
    assert 150 <= result["events"]["not_sent_at_stop"] + 4 <= 300  # due in the second before the signal
    assert "sent 4 of" not in result["saturation_reason"]


@pytest.mark.parametrize("responder", ["normal"], indirect=True)
def test_sigterm_against_a_live_responder_ends_at_once(pki: PKI, responder: Responder, tmp_path: Path) -> None:
    code, took, output = _fastgen_until_sigterm(pki, responder, tmp_path / "run", after=1.0)
    assert code == 0 and took < 2.0, (took, output)  # what was written is answered at once
    result = json.loads((tmp_path / "run" / "fastgen.json").read_text())
    check_files(tmp_path / "run", result)
    assert result["stopped_early"] is True and 100 <= result["requests"] == responder.requests <= 400
    assert result["outcomes"]["checked"] == result["requests"] and result["error_kinds"] == {}


@pytest.mark.parametrize("responder", ["normal"], indirect=True)
def test_the_standalone_ladder_verifies_each_answer_once_over_its_climbs(
    pki: PKI, responder: Responder, tmp_path: Path
) -> None:
    from bench import ladder

    run_dir = tmp_path / "ladder"
    argv = ["--truth-dir", str(pki.truth_dir), "--url", responder.url, "--run-dir", str(run_dir), "--rates", "20",
            "--seconds", "10", "--connections", "4"]  # fmt: skip
    after = []
    for _ in range(2):  # the same rung twice: the same seed, so the same requests
        assert ladder.main(argv) == 0
        result = json.loads((run_dir / "ladder" / "20" / "fastgen.json").read_text())
        assert result["requests"] == 200 and result["outcomes"]["checked"] == 200, result
        after.append(result["checked_after_the_run"])
    assert (run_dir / "checker-memo.bin").stat().st_size > 0
    # The first climb kept its unseen answers for after the run; the second knew them all.
    assert after[0]["answers"] > 100 and after[1]["answers"] == 0, after  # 200 requests, a few refusals
