"""bench/fastgen.py's parts that need no system: the schedule, the histogram, how an answer is
classified, the day split, and its refusals. The generator against a live system is in
test_tax_season.py."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from bench.dayshape import DAY_PROFILE, locust_users, split, target_rps
from bench.fastgen import BOUNDS, Schedule, lag_windows, percentile
from ca_core.groundtruth import AnswerChecker, Entry, Status, classify_answer
from ca_core.ocsp import HashAlgorithm

ROOT = Path(__file__).resolve().parent.parent.parent
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_the_schedule_keeps_fractional_rates() -> None:
    s = Schedule([2.5] * 4 + [0.0, 1000.0])
    assert s.counts == [2, 3, 2, 3, 0, 1000]
    assert s.due(1, 0) == 1.0 and s.due(1, 2) == pytest.approx(1 + 2 / 3)
    assert sum(Schedule([0.3] * 10).counts) == 3


def test_histogram_bounds_are_increasing_and_fine() -> None:
    assert BOUNDS == sorted(set(BOUNDS)) and BOUNDS[0] == 0.1 and BOUNDS[-1] == 10000.0
    # Each bucket is at most 10 % wider than its lower edge from 1 ms on: a tight bound.
    assert all((b - a) / a <= 0.1 + 1e-9 for a, b in itertools.pairwise(BOUNDS) if a >= 1.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0


def test_the_day_is_split_between_the_generators() -> None:
    assert target_rps(0, 50, 12) == 5000 * DAY_PROFILE[0] and target_rps(719, 50, 12) == 5000.0
    assert target_rps(10_000, 1, 12) == 100.0  # past the end: the last hour
    locust, fast = split(719, scale=50, minutes=12, share=0.05, per_user_rps=5)
    assert locust == 250 and fast == 4750
    assert split(719, scale=50, minutes=12, share=1.0, per_user_rps=5) == (5000, 0.0)
    # Locust keeps at least one user: at a trickle it may carry it all.
    assert locust_users(2.0, 0.05, 5) == 1 and split(0, scale=0.1, minutes=12, share=0.05, per_user_rps=5)[1] == 0


@pytest.fixture(scope="module")
def pki() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastgen test CA")])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
          .sign(key, hashes.SHA256()))  # fmt: skip
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x1234).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=9))
            .sign(key, hashes.SHA256()))  # fmt: skip
    return ca, key, leaf


def _response(pki: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, x509.Certificate], *, revoked: bool) -> bytes:
    ca, key, leaf = pki
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=ca, algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        this_update=NOW, next_update=NOW + dt.timedelta(hours=4),
        revocation_time=NOW if revoked else None, revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
    )  # fmt: skip
    response = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca).certificates([ca]).sign(key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def test_answers_are_classified(pki: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    checker = AnswerChecker([("test", pki[0])])
    good = Entry(0, 0x1234, Status.GOOD, None)
    now = dt.datetime.now(dt.UTC)
    right = _response(pki, revoked=False)

    def classify(status: int, body: bytes, expected: Entry | None, malformed: bool = False, when: dt.datetime = now,
                 algorithm: HashAlgorithm | None = HashAlgorithm.SHA1) -> tuple[str, str | None]:  # fmt: skip
        return classify_answer(checker, status, body, expected, when, malformed=malformed, algorithm=algorithm)

    assert classify(200, right, good) == ("checked", None)
    kind, problem = classify(200, _response(pki, revoked=True), good)
    assert kind == "wrong" and problem is not None and "wrong status" in problem
    # An answer about the right serial under another CertID does not answer the request.
    kind, problem = classify(200, right, good, algorithm=HashAlgorithm.SHA256)
    assert kind == "wrong" and problem is not None and "CertID" in problem
    signature = ocsp.load_der_ocsp_response(right).signature
    at = right.index(signature) + len(signature) // 2
    damaged = bytearray(right)
    damaged[at] ^= 0x01  # inside the response's signature
    assert classify(200, bytes(damaged), good)[0] == "sig_fail"
    assert classify(200, right, good, when=NOW + dt.timedelta(days=1))[0] == "stale"
    # Garbage that the checker cannot even parse is wrong, not a crash.
    assert classify(200, b"\x30\x03garbage", good)[0] == "wrong"
    # The responder's own failures are errors, not wrong answers.
    assert classify(200, b"\x30\x03\x0a\x01\x03", good) == ("errors", "tryLater")
    assert classify(503, b"", good) == ("errors", "http_503")
    # unauthorized is right for a never-issued serial and wrong for an issued one.
    unauthorized = b"\x30\x03\x0a\x01\x06"
    assert classify(200, unauthorized, None) == ("checked", None)
    assert classify(200, unauthorized, good)[0] == "wrong"
    # A malformed request must be refused: 400 or malformedRequest; an answer is wrong.
    assert classify(400, b"", None, malformed=True) == ("checked", None)
    assert classify(200, b"\x30\x03\x0a\x01\x01", None, malformed=True) == ("checked", None)
    assert classify(200, right, None, malformed=True)[0] == "wrong"


def test_a_generator_behind_its_schedule_is_found_per_window() -> None:
    assert lag_windows([1.0] * 30) == []
    # One slow second in the second window is enough, however fine the rest of the run.
    assert lag_windows([1.0] * 12 + [25.0] + [1.0] * 300) == [10]
    assert lag_windows([None, None, 11.0]) == [0]


def _fastgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "fastgen.py"), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # fmt: skip


def test_bad_arguments_and_no_responder_are_clear_errors(tmp_path: Path) -> None:
    result = _fastgen("--truth-dir", str(tmp_path), "--run-dir", str(tmp_path), "--rate", "10")
    assert result.returncode == 2 and "holds no ground truth" in result.stderr
    result = _fastgen("--truth-dir", str(tmp_path), "--run-dir", str(tmp_path), "--rate", "10", "--scale", "1")
    assert result.returncode == 2 and "either --scale" in result.stderr
    # A real (tiny) truth, and nothing listening on the port.
    from ca_core.groundtruth import TruthWriter

    ca = x509.load_pem_x509_certificate(_ca_pem())
    writer = TruthWriter(tmp_path / "truth", [("test", ca.public_bytes(serialization.Encoding.DER))])
    for serial in range(1, 50):
        writer.add(0, serial, Status.GOOD, None)
    writer.close(rp_count=40, never_issued=[(0, 10**9)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _fastgen("--truth-dir", str(tmp_path / "truth"), "--run-dir", str(tmp_path / "run"), "--rate", "10",
                      "--seconds", "1", "--url", f"http://127.0.0.1:{port}")  # fmt: skip
    assert result.returncode == 1 and "cannot connect" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "fastgen.json").exists()
    assert json.loads((tmp_path / "truth" / "truth.json").read_text())["rp_count"] == 40


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "truth CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)
