"""What every certificate's status must be, for load generators that check each answer (sans-IO).

``certstatus bench load`` writes it as it fills the system; the Locust suite and the fast
generator read it, pick certificates by Zipf popularity, and hold every OCSP answer against
it: a wrong status, a stale or not-yet-valid answer, or a bad signature is a failure, never
a success. :class:`RequestBuilder` writes the requests they send.

Files in one directory:

- ``truth.bin``: fixed 23-byte records in popularity order (record 0 is Zipf rank 0, the most
  asked-about certificate): issuer index (1 byte), serial (20 bytes, big-endian, left-padded
  with zeros), status (1 byte: 0 good, 1 revoked, 2 suspended), CRL reason (1 byte; 255 none).
  Memory-mapped by readers: 11 M certificates are 253 MB on disk and nothing in RAM until read.
- ``truth.json``: format version, the issuers (name and CA certificate, PEM) in index order,
  the count, ``rp_count`` (relying-party load asks only about records below it; the rest is
  the admin pool, all good, which admin-load users change during a run), never-issued
  serials (the answer to those is ``unauthorized``), the responder URL if known, and when.

Records are written to a temporary file and renamed with the JSON last, so a reader never sees
a half-written truth.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import mmap
import os
import random
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from ca_core.ocsp import HashAlgorithm, der_integer, issuer_hashes, tlv

__all__ = [
    "BIN_NAME",
    "DEFERRED",
    "JSON_NAME",
    "OUTCOMES",
    "AnswerChecker",
    "Entry",
    "RequestBuilder",
    "Status",
    "Truth",
    "TruthWriter",
    "classify_answer",
    "zipf_rank",
]

FORMAT_VERSION: Final = 1
BIN_NAME: Final = "truth.bin"
JSON_NAME: Final = "truth.json"
_RECORD: Final = struct.Struct("!B20sBB")
_NO_REASON: Final = 255


class Status(enum.IntEnum):
    GOOD = 0
    REVOKED = 1
    SUSPENDED = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    issuer_index: int
    serial: int
    status: Status
    reason: int | None


class TruthWriter:
    """Write a truth directory: :meth:`add` each certificate in popularity order, then :meth:`close`."""

    def __init__(self, directory: Path, issuers: Sequence[tuple[str, bytes]]) -> None:
        if not issuers or len(issuers) > 255:
            raise ValueError("a truth needs 1 to 255 issuers")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._issuers = [(name, x509.load_der_x509_certificate(der)) for name, der in issuers]
        self._tmp = self.directory / f".{BIN_NAME}.{os.getpid()}.tmp"
        self._file = open(self._tmp, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self.count = 0

    def add(self, issuer_index: int, serial: int, status: Status, reason: int | None) -> None:
        if not 0 <= issuer_index < len(self._issuers):
            raise ValueError(f"issuer index {issuer_index} is not one of the {len(self._issuers)} issuers")
        if not 0 < serial < 1 << 160:
            raise ValueError("a serial is a positive integer of at most 20 octets")
        self._file.write(_RECORD.pack(issuer_index, serial.to_bytes(20, "big"), int(status),
                                      _NO_REASON if reason is None else reason))  # fmt: skip
        self.count += 1

    def close(
        self, *, rp_count: int, never_issued: Sequence[tuple[int, int]], responder_url: str | None = None
    ) -> None:
        if not 0 < rp_count <= self.count:
            raise ValueError(f"rp_count must be between 1 and the {self.count} certificates written")
        self._file.close()
        os.replace(self._tmp, self.directory / BIN_NAME)
        meta = {
            "version": FORMAT_VERSION,
            "count": self.count,
            "rp_count": rp_count,
            "issuers": [
                {"name": name, "certificate_pem": cert.public_bytes(serialization.Encoding.PEM).decode()}
                for name, cert in self._issuers
            ],
            "never_issued": [[i, format(s, "X")] for i, s in never_issued],
            "responder_url": responder_url,
            "written_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        tmp = self.directory / f".{JSON_NAME}.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self.directory / JSON_NAME)


class Truth:
    """A truth directory, memory-mapped."""

    def __init__(self, meta: dict[str, Any], mapped: mmap.mmap | bytes) -> None:
        self.meta = meta
        self._map = mapped
        self.count: int = meta["count"]
        self.rp_count: int = meta["rp_count"]
        self.issuers: list[tuple[str, x509.Certificate]] = [
            (i["name"], x509.load_pem_x509_certificate(i["certificate_pem"].encode())) for i in meta["issuers"]
        ]
        self.never_issued: list[tuple[int, int]] = [(i, int(s, 16)) for i, s in meta["never_issued"]]

    @classmethod
    def open(cls, directory: Path) -> Truth:
        directory = Path(directory)
        try:
            meta = json.loads((directory / JSON_NAME).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no ground truth in {directory}: run 'certstatus bench load --certs N' first"
            ) from None
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory / JSON_NAME}: truth format {meta.get('version')}, this code reads {FORMAT_VERSION}"
            )
        with open(directory / BIN_NAME, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != meta["count"] * _RECORD.size:
                raise ValueError(f"{directory / BIN_NAME} holds {size} bytes, not {meta['count']} records")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        return cls(meta, mapped)

    def __len__(self) -> int:
        return self.count

    def entry(self, rank: int) -> Entry:
        if not 0 <= rank < self.count:
            raise IndexError(rank)
        issuer, serial, status, reason = _RECORD.unpack_from(self._map, rank * _RECORD.size)
        return Entry(issuer, int.from_bytes(serial, "big"), Status(status), None if reason == _NO_REASON else reason)


def zipf_rank(n: int, rng: random.Random) -> int:
    """A rank in [0, n) with probability close to 1/(rank+1) (Zipf, s = 1): the inverse of the
    continuous CDF ln(k)/ln(n), constant time whatever n is."""
    return min(n - 1, int(n ** rng.random()) - 1)


class RequestBuilder:
    """OCSP requests (DER) about the truth's certificates, as relying parties send them: one
    CertID, SHA-1 or SHA-256, no extensions (RFC 5019 2.1.1). ``issuers`` in the truth's
    index order (:attr:`Truth.issuers`)."""

    def __init__(self, issuers: Sequence[x509.Certificate]) -> None:
        self._hashes = [issuer_hashes(cert) for cert in issuers]

    def der(self, issuer_index: int, serial: int, algorithm: HashAlgorithm) -> bytes:
        h = self._hashes[issuer_index][algorithm]
        cert_id = tlv(0x30, algorithm.algorithm_identifier + tlv(0x04, h.name_hash) + tlv(0x04, h.key_hash)
                      + der_integer(serial))  # fmt: skip
        # OCSPRequest { TBSRequest { requestList { Request { reqCert CertID } } } } (RFC 6960 4.1.1)
        return tlv(0x30, tlv(0x30, tlv(0x30, tlv(0x30, cert_id))))


_ALGORITHM_CODE: Final = {HashAlgorithm.SHA1: 1, HashAlgorithm.SHA256: 2}
_MALFORMED_ANSWER: Final = b"\x30\x03\x0a\x01\x01"
#: Unsuccessful answers that are the responder's failure (an error), not a wrong answer.
_SERVER_FAILURES: Final = {2: "internalError", 3: "tryLater"}

#: What one OCSP request can end as: a right answer (or the right refusal) verified, a
#: wrong answer by kind, or an error of the responder or the network.
OUTCOMES: Final = ("checked", "wrong", "stale", "sig_fail", "errors")
#: Not an outcome: :func:`classify_answer` with ``verify=False`` met bytes its checker has
#: not verified yet. The caller keeps the answer and classifies it again, verifying, later.
DEFERRED: Final = "deferred"


def classify_answer(
    checker: AnswerChecker,
    http_status: int,
    body: bytes,
    expected: Entry | None,
    now: dt.datetime,
    *,
    malformed: bool = False,
    algorithm: HashAlgorithm | None = None,
    verify: bool = True,
) -> tuple[str, str | None]:
    """The outcome (one of :data:`OUTCOMES`) of one answer, and the problem found or the
    error's kind. The generators share it, so that they count alike:

    - a malformed request must be refused: HTTP 400, or malformedRequest in a 200 (RFC 6960
      2.3); an answer to it is wrong;
    - HTTP errors, tryLater and internalError are ``errors`` (the responder failed to answer),
      never ``wrong``;
    - everything else goes to :meth:`AnswerChecker.check`; a checker that raises on a damaged
      answer makes it ``wrong``, with the exception as the problem.

    With ``verify=False`` an answer whose exact bytes the checker has not verified yet is not
    verified now: the outcome is :data:`DEFERRED` and the caller must classify it again later
    (with the same arguments and ``verify=True``). Everything else is judged as usual.
    """
    if malformed:
        if http_status == 400 or (http_status == 200 and body == _MALFORMED_ANSWER):
            return "checked", None
        if http_status >= 500:
            return "errors", f"http_{http_status}"
        return "wrong", f"a malformed request got HTTP {http_status}"
    if http_status != 200:
        return "errors", f"http_{http_status}"
    if len(body) == 5 and body[:4] == b"\x30\x03\x0a\x01" and body[4] in _SERVER_FAILURES:
        return "errors", _SERVER_FAILURES[body[4]]
    try:
        problem = checker.check(body, expected, now, algorithm, verify=verify)
    except Exception as e:  # noqa: BLE001 - whatever the answer does to the checker, it is not right
        return "wrong", f"the checker failed on the answer: {type(e).__name__}: {e}"
    if problem is None:
        return "checked", None
    if problem is DEFERRED:
        return DEFERRED, None
    if problem.startswith("stale"):
        return "stale", problem
    return ("sig_fail" if "signature" in problem else "wrong"), problem


class AnswerChecker:
    """Check OCSP answers against the truth: status (and reason), serial, freshness, and the
    signature by a responder certificate the issuer signed. Identical bytes (pre-signed
    responses are served many times) are checked once; their freshness every time."""

    def __init__(self, issuers: Sequence[tuple[str, x509.Certificate]], *, memo: int = 200_000) -> None:
        self._issuers = list(issuers)
        self._hashes = [issuer_hashes(cert) for _, cert in self._issuers]
        self._memo: dict[bytes, tuple[str | None, dt.datetime, dt.datetime | None]] = {}
        self._memo_limit = memo
        self._responders: dict[bytes, bool] = {}

    def check(
        self,
        der: bytes,
        expected: Entry | None,
        now: dt.datetime,
        algorithm: HashAlgorithm | None = None,
        *,
        verify: bool = True,
    ) -> str | None:
        """``None`` if the answer is right, else what is wrong. ``expected`` None means a
        never-issued serial or unknown issuer: the answer must be ``unauthorized``. With the
        request's CertID ``algorithm``, the answer's CertID must match the request's exactly
        (hash algorithm, issuer name and key hashes), as a client matches it (RFC 6960 4.1.1).
        ``verify=False``: bytes not verified before (for this status and algorithm) are not
        verified now, and the result is :data:`DEFERRED` (the very object: compare with ``is``)."""
        if expected is None:
            try:
                status = ocsp.load_der_ocsp_response(der).response_status
            except ValueError as e:
                return f"unparseable response: {e}"
            return (
                None if status is ocsp.OCSPResponseStatus.UNAUTHORIZED else f"expected unauthorized, got {status.name}"
            )
        key = (
            hashlib.sha1(der).digest()
            + expected.serial.to_bytes(20, "big")
            + bytes((expected.status, expected.reason or 0, _ALGORITHM_CODE[algorithm] if algorithm else 0))
        )
        cached = self._memo.get(key)
        if cached is None:
            if not verify:
                return DEFERRED
            cached = self._verify(der, expected, algorithm)
            if len(self._memo) >= self._memo_limit:
                self._memo.clear()
            self._memo[key] = cached
        problem, this_update, next_update = cached
        if problem is not None:
            return problem
        if this_update > now + dt.timedelta(minutes=5):
            return f"stale: thisUpdate {this_update.isoformat()} is in the future"
        if next_update is None or next_update < now:
            return f"stale: nextUpdate {next_update.isoformat() if next_update else 'absent'} has passed"
        return None

    #: A memo file record: the memo key (43 bytes), thisUpdate and nextUpdate (seconds since
    #: the epoch, big-endian; nextUpdate 0 when absent).
    _MEMO_RECORD: Final = struct.Struct(">43sqq")

    def save_memo(self, path: Path) -> int:
        """Write the answers verified right to ``path`` (replaced atomically), for a later
        checker of the same truth to :meth:`load_memo`; return how many. Only verdicts of
        "right" are kept: anything else is verified again. Freshness is never memoised."""
        tmp = path.with_name(path.name + ".tmp")
        count = 0
        with open(tmp, "wb") as f:
            for key, (problem, this_update, next_update) in self._memo.items():
                if problem is None and len(key) == 43:
                    nu = int(next_update.timestamp()) if next_update is not None else 0
                    f.write(self._MEMO_RECORD.pack(key, int(this_update.timestamp()), nu))
                    count += 1
        os.replace(tmp, path)
        return count

    def load_memo(self, path: Path) -> int:
        """Take over what :meth:`save_memo` wrote (by this process or an earlier one, for the
        same truth: a record names the exact answer bytes and the status it was checked
        against); return how many records were loaded. A missing file loads nothing."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        size = self._MEMO_RECORD.size
        if len(data) % size:
            raise ValueError(f"{path.name}: not a checker memo ({len(data)} bytes)")
        count = 0
        for key, this_update, next_update in self._MEMO_RECORD.iter_unpack(data):
            if len(self._memo) >= self._memo_limit:
                break
            self._memo[key] = (
                None,
                dt.datetime.fromtimestamp(this_update, dt.UTC),
                dt.datetime.fromtimestamp(next_update, dt.UTC) if next_update else None,
            )
            count += 1
        return count

    def _verify(
        self, der: bytes, expected: Entry, algorithm: HashAlgorithm | None
    ) -> tuple[str | None, dt.datetime, dt.datetime | None]:
        epoch = dt.datetime.fromtimestamp(0, dt.UTC)
        try:
            response = ocsp.load_der_ocsp_response(der)
        except ValueError as e:
            return f"unparseable response: {e}", epoch, None
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return f"response status {response.response_status.name}", epoch, None
        try:
            serial = response.serial_number
            got = response.certificate_status
            cert_id = (response.hash_algorithm.name, response.issuer_name_hash, response.issuer_key_hash)
        except (ValueError, UnsupportedAlgorithm) as e:  # several SingleResponses, a damaged CertID
            return f"unreadable single response: {e}", epoch, None
        if serial != expected.serial:
            return f"answer for serial {serial:X}, asked {expected.serial:X}", epoch, None
        if algorithm is not None:
            h = self._hashes[expected.issuer_index][algorithm]
            if cert_id != (algorithm.hashlib_name, h.name_hash, h.key_hash):
                return (
                    f"the answer's CertID ({cert_id[0]}) is not the request's ({algorithm.hashlib_name})",
                    epoch,
                    None,
                )
        want = ocsp.OCSPCertStatus.GOOD if expected.status is Status.GOOD else ocsp.OCSPCertStatus.REVOKED
        if got is not want:
            return f"wrong status: {got.name}, the truth is {expected.status.name}", epoch, None
        if expected.status is not Status.GOOD:
            reason = response.revocation_reason
            code = None if reason is None else _REASON_CODES.get(reason)
            wanted_reason = 6 if expected.status is Status.SUSPENDED else expected.reason
            if (code or 0) != (wanted_reason or 0):
                return f"wrong reason: {reason}, the truth is {wanted_reason}", epoch, None
        try:
            problem = self._signature(response, expected.issuer_index)
        except (UnsupportedAlgorithm, ValueError, TypeError) as e:  # a damaged certificate or signature
            problem = f"bad signature: {e}"
        return problem, response.this_update_utc, response.next_update_utc

    def _signature(self, response: ocsp.OCSPResponse, issuer_index: int) -> str | None:
        _, issuer = self._issuers[issuer_index]
        certs = response.certificates
        if not certs:
            return "no responder certificate in the response"
        responder = certs[0]
        fingerprint = responder.fingerprint(hashes.SHA256()) + bytes((issuer_index,))
        trusted = self._responders.get(fingerprint)
        if trusted is None:
            try:
                responder.verify_directly_issued_by(issuer)  # name chaining and signature
                trusted = True
            except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
                trusted = False
            self._responders[fingerprint] = trusted
        if not trusted:
            return "the responder certificate was not issued by the certificate's issuer"
        try:
            _verify_with(responder.public_key(), response.signature, response.tbs_response_bytes,
                         response.signature_hash_algorithm)  # fmt: skip
        except InvalidSignature:
            return "bad signature"
        return None


#: RFC 5280 CRLReason codes (7 is unused).
_REASON_CODES: Final = {
    x509.ReasonFlags.unspecified: 0, x509.ReasonFlags.key_compromise: 1, x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3, x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5, x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8, x509.ReasonFlags.privilege_withdrawn: 9, x509.ReasonFlags.aa_compromise: 10,
}  # fmt: skip


def _verify_with(key: Any, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> None:
    if algorithm is None:
        raise InvalidSignature("no hash algorithm")
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        raise InvalidSignature(f"unsupported key {type(key).__name__}")
