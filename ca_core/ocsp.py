"""OCSP on the wire, sans I/O: parse requests, encode and sign responses (RFC 6960, RFC 5019).

Everything here is a pure function over bytes, integers and keys; nothing touches a socket,
Redis or PostgreSQL. Two reasons to hand-roll the DER instead of calling ``cryptography``'s
OCSP API:

- **Speed.** ``OCSPResponseBuilder.sign`` spends most of its time outside the signature
  (one core here: build+sign 10.6 k/s against 28.5 k/s for the bare ECDSA P-256 signature).
  :class:`ResponseSigner` precomputes every constant part of a response for its issuer once
  (responder ID, CertID prefix, algorithm identifiers, the responder certificate) and per
  response only splices the serial, the status and three times around one ``sign()`` call.
- **Control over bad input.** :func:`parse_request` reads exactly the fields the responder
  needs, refuses everything else with :class:`~ca_core.errors.MalformedRequest`, and never
  raises anything else, whatever the bytes (the tests feed it random and mutated input).

``cryptography``'s parser is the reference the tests hold both directions against, and
``openssl ocsp`` verifies the signed answers end to end.

Times are whole seconds since the epoch (UTC): GeneralizedTime in RFC 5280 profiles has no
fractional seconds, and integers keep the hot path free of datetime arithmetic.
"""

from __future__ import annotations

import calendar
import dataclasses
import enum
import hashlib
import time
from typing import Final, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .errors import ConfigurationError, MalformedRequest
from .keystore import PrivateKey, signature_hash_for

__all__ = [
    "EXTENDED_REVOKE_TIME",
    "HASH_ALGORITHMS",
    "UNKNOWN_ALGORITHM",
    "UNSUCCESSFUL",
    "CertID",
    "FlatQuery",
    "HashAlgorithm",
    "IssuerHashes",
    "OCSPQuery",
    "ResponseSigner",
    "ResponseStatus",
    "SingleStatus",
    "issuer_hashes",
    "parse_flat",
    "parse_request",
    "response_status",
    "signature_algorithm",
]


# DER encoding ---------------------------------------------------------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


#: Precomputed length octets for every length a response can have (they stay far below 64 KiB).
_LENGTHS: Final = tuple(_len(n) for n in range(1 << 16))


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length, contents."""
    return bytes((tag,)) + _len(len(body)) + body


def _integer_octets(value: int) -> bytes:
    """Minimal two's complement (X.690 8.3.2): -128 is 80, not ff80; 128 is 0080."""
    magnitude = value if value >= 0 else ~value
    return value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


def der_integer(value: int) -> bytes:
    """An INTEGER in minimal two's complement (requests may carry any serial, even negative)."""
    return tlv(0x02, _integer_octets(value))


def generalized_time(epoch_seconds: int) -> bytes:
    """GeneralizedTime ``YYYYMMDDHHMMSSZ`` (RFC 5280 4.1.2.5.2: UTC, no fractions)."""
    return b"\x18\x0f" + time.strftime("%Y%m%d%H%M%SZ", time.gmtime(epoch_seconds)).encode()


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


_NULL: Final = b"\x05\x00"
_OID_OCSP_BASIC: Final = _oid("1.3.6.1.5.5.7.48.1.1")
_OID_OCSP_NONCE: Final = _oid("1.3.6.1.5.5.7.48.1.2")
_OID_EXTENDED_REVOKE: Final = _oid("1.3.6.1.5.5.7.48.1.9")

#: RFC 6960 2.2: an "extended revoked" answer for a never-issued serial carries this
#: revocationTime (1970-01-01T00:00:00Z) and reason certificateHold.
EXTENDED_REVOKE_TIME: Final = 0


class HashAlgorithm(enum.Enum):
    """CertID hash algorithms we answer. SHA-1 is what most clients still send (RFC 5019
    2.1.1 mandates it); SHA-256 is RFC 9919's and what careful clients send."""

    SHA1 = ("sha1", "1.3.14.3.2.26")
    SHA256 = ("sha256", "2.16.840.1.101.3.4.2.1")

    # Members are singletons: identity hashing is correct, and much cheaper than Enum's
    # Python-level __hash__ on the responder's per-request dictionary look-ups.
    __hash__ = object.__hash__

    def __init__(self, hashlib_name: str, dotted: str) -> None:
        self.hashlib_name = hashlib_name
        self.oid_der = _oid(dotted)
        # With explicit NULL parameters, as OpenSSL writes them.
        self.algorithm_identifier = tlv(0x30, self.oid_der + _NULL)

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()

    @property
    def size(self) -> int:
        return hashlib.new(self.hashlib_name).digest_size


_HASH_BY_OID: Final = {h.oid_der: h for h in HashAlgorithm}

#: The most encoded times a ResponseSigner keeps (each memo; about 100 bytes an entry).
_TIME_MEMO: Final = 8192

#: Every HashAlgorithm in a fixed order: a :data:`FlatQuery` names its algorithm by its
#: index here, or by :data:`UNKNOWN_ALGORITHM`.
HASH_ALGORITHMS: Final = tuple(HashAlgorithm)
UNKNOWN_ALGORITHM: Final = -1
_HASH_INDEX: Final = {h: i for i, h in enumerate(HASH_ALGORITHMS)}


class ResponseStatus(enum.IntEnum):
    """OCSPResponseStatus (RFC 6960 4.2.1); 4 is unused."""

    SUCCESSFUL = 0
    MALFORMED_REQUEST = 1
    INTERNAL_ERROR = 2
    TRY_LATER = 3
    SIG_REQUIRED = 5
    UNAUTHORIZED = 6


#: The complete DER of each unsuccessful response: just the status, no responseBytes.
UNSUCCESSFUL: Final = {s: tlv(0x30, b"\x0a\x01" + bytes((s,))) for s in ResponseStatus if s != 0}


# Requests -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CertID:
    """RFC 6960 4.1.1 CertID. ``serial`` is the integer as encoded (it may be negative or
    zero in a hostile request; no issued certificate has such a serial)."""

    hash_algorithm: HashAlgorithm | None  # None: an algorithm we do not answer
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int


@dataclasses.dataclass(frozen=True, slots=True)
class OCSPQuery:
    """What a request asks: one CertID, and the nonce extension's value if it sent one
    (the exact extnValue contents, to echo back unchanged)."""

    cert_id: CertID
    nonce: bytes | None = None

    @property
    def flat(self) -> FlatQuery:
        """This query as a :data:`FlatQuery`."""
        cid = self.cert_id
        algorithm = UNKNOWN_ALGORITHM if cid.hash_algorithm is None else _HASH_INDEX[cid.hash_algorithm]
        return (algorithm, cid.issuer_name_hash, cid.issuer_key_hash, cid.serial, self.nonce)


#: An :class:`OCSPQuery` as one plain tuple: (index in :data:`HASH_ALGORITHMS` or
#: :data:`UNKNOWN_ALGORITHM`, issuer name hash, issuer key hash, serial, nonce).
#:
#: For what a server keeps by the hundred thousand (parsed-request memos, cache keys):
#: CPython's garbage collector stops tracking an exact tuple of ints, bytes and None once
#: it survives a collection, so such entries add nothing to later collections. A
#: dataclass, an enum member or a NamedTuple inside keeps it tracked, and every
#: collection of a generation holding them walks them all (measured: ~100 ms per
#: 150,000 entries on this project's 2-core machines; bench/README.md, "Garbage-collection pauses").
FlatQuery: TypeAlias = tuple[int, bytes, bytes, int, bytes | None]


class _Reader:
    """A strict DER cursor over ``buf[pos:end]``. Every failure is MalformedRequest."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def peek_tag(self) -> int | None:
        return self.buf[self.pos] if self.pos < self.end else None

    def read(self, expected_tag: int, what: str) -> tuple[int, int]:
        """Read one element with ``expected_tag``; return its contents' (start, end)."""
        buf, pos, end = self.buf, self.pos, self.end
        if pos + 2 > end:
            raise MalformedRequest(f"truncated: {what} is missing")
        if buf[pos] != expected_tag:
            raise MalformedRequest(f"{what}: expected tag 0x{expected_tag:02x}, found 0x{buf[pos]:02x}")
        first = buf[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0:
                raise MalformedRequest(f"{what}: indefinite length is not DER")
            if count > 4 or pos + count > end:
                raise MalformedRequest(f"{what}: bad length")
            length = int.from_bytes(buf[pos : pos + count], "big")
            if length < 0x80 or buf[pos] == 0:
                raise MalformedRequest(f"{what}: length not minimally encoded")
            pos += count
        if pos + length > end:
            raise MalformedRequest(f"truncated: {what} runs past its container")
        self.pos = pos + length
        return pos, pos + length

    def element(self, expected_tag: int, what: str) -> bytes:
        """The whole element (tag, length and contents) as bytes."""
        begin = self.pos
        self.read(expected_tag, what)
        return self.buf[begin : self.pos]

    def enter(self, expected_tag: int, what: str) -> _Reader:
        start, stop = self.read(expected_tag, what)
        return _Reader(self.buf, start, stop)

    def bytes_of(self, expected_tag: int, what: str) -> bytes:
        start, stop = self.read(expected_tag, what)
        return self.buf[start:stop]


def _extensions(reader: _Reader, what: str) -> dict[bytes, bytes]:
    """Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension, as {OID DER: extnValue contents}."""
    exts = reader.enter(0x30, what)
    found: dict[bytes, bytes] = {}
    while not exts.at_end():
        ext = exts.enter(0x30, f"{what} entry")
        oid = ext.element(0x06, "extnID")
        if ext.peek_tag() == 0x01:
            ext.read(0x01, "critical")
        value = ext.bytes_of(0x04, "extnValue")
        if not ext.at_end():
            raise MalformedRequest(f"{what}: trailing data in an extension")
        if oid in found:
            raise MalformedRequest(f"{what}: duplicate extension")
        found[oid] = value
    return found


def parse_request(der: bytes) -> OCSPQuery:
    """Parse an OCSPRequest (RFC 6960 4.1.1) asking about exactly one certificate.

    Raises :class:`MalformedRequest` for anything else, including a request for several
    certificates (RFC 5019 2.1.1 clients send one; answering some and not others would be
    ambiguous). A request signature, if present, is ignored (RFC 5019 2.1.2).
    """
    if not isinstance(der, bytes):
        der = bytes(der)
    top = _Reader(der)
    request = top.enter(0x30, "OCSPRequest")
    if not top.at_end():
        raise MalformedRequest("trailing data after the OCSPRequest")
    tbs = request.enter(0x30, "tbsRequest")
    if request.peek_tag() == 0xA0:
        request.read(0xA0, "optionalSignature")
    if not request.at_end():
        raise MalformedRequest("unexpected data after tbsRequest")
    if tbs.peek_tag() == 0xA0:
        version = tbs.enter(0xA0, "version")
        if version.bytes_of(0x02, "version") != b"\x00" or not version.at_end():
            raise MalformedRequest("only OCSP version 1 requests are defined")
    if tbs.peek_tag() == 0xA1:
        tbs.read(0xA1, "requestorName")
    request_list = tbs.enter(0x30, "requestList")
    single = request_list.enter(0x30, "Request")
    if not request_list.at_end():
        raise MalformedRequest("requests for more than one certificate are not supported")
    cert_id = single.enter(0x30, "CertID")
    if single.peek_tag() == 0xA0:
        _extensions(single.enter(0xA0, "singleRequestExtensions"), "singleRequestExtensions")
    if not single.at_end():
        raise MalformedRequest("unexpected data in Request")
    nonce = None
    if tbs.peek_tag() == 0xA2:
        exts = _extensions(tbs.enter(0xA2, "requestExtensions"), "requestExtensions")
        nonce = exts.get(_OID_OCSP_NONCE)
    if not tbs.at_end():
        raise MalformedRequest("unexpected data in tbsRequest")

    alg = cert_id.enter(0x30, "hashAlgorithm")
    oid = alg.element(0x06, "hashAlgorithm OID")
    if not alg.at_end():
        if alg.bytes_of(0x05, "hashAlgorithm parameters") != b"" or not alg.at_end():
            raise MalformedRequest("hashAlgorithm parameters must be absent or NULL")
    name_hash = cert_id.bytes_of(0x04, "issuerNameHash")
    key_hash = cert_id.bytes_of(0x04, "issuerKeyHash")
    s_start, s_stop = cert_id.read(0x02, "serialNumber")
    if s_stop == s_start or s_stop - s_start > 64:
        raise MalformedRequest("serialNumber has a bad length")
    if not cert_id.at_end():
        raise MalformedRequest("unexpected data in CertID")
    serial = int.from_bytes(der[s_start:s_stop], "big", signed=True)
    # An algorithm we do not answer (SHA-384, MD5...) is well-formed: None, which matches
    # no issuer, so the answer is unauthorized rather than malformedRequest.
    return OCSPQuery(CertID(_HASH_BY_OID.get(oid), name_hash, key_hash, serial), nonce)


def _minimal_forms() -> list[tuple[bytes, int, int]]:
    forms = []
    for index, h in enumerate(HASH_ALGORITHMS):
        for alg_id in (h.algorithm_identifier, tlv(0x30, h.oid_der)):  # NULL parameters or none
            forms.append((alg_id + bytes((0x04, h.size)), h.size, index))
    return forms


#: (AlgorithmIdentifier and the issuerNameHash's tag and length, hash length, algorithm
#: index) of the CertIDs :func:`parse_flat` reads without the general parser.
_MINIMAL_FORMS: Final = _minimal_forms()


def parse_flat(der: bytes) -> FlatQuery:
    """``parse_request(der).flat``, with a shortcut for the request nearly every client sends.

    That request is RFC 5019's minimal one: one CertID of a hash we answer, and nothing else
    (no version, requestor, nonce, extension or signature), so short that every length is one
    byte. Its bytes are then fixed but for the two hashes and the serial, and are matched in
    place, about ten times faster than the general parser (which the responder runs for each
    request bytes it has not seen, a third of requests at a million certificates). Anything
    else, including every malformed request, goes to :func:`parse_request`; both always
    agree (tests/ca_core/test_ocsp.py compares them on mutated requests)."""
    if not isinstance(der, bytes):
        der = bytes(der)
    n = len(der)
    c = n - 10  # the CertID's content length, under five SEQUENCE headers of two bytes each
    if 0 < c <= 119 and der[:10] == bytes((0x30, c + 8, 0x30, c + 6, 0x30, c + 4, 0x30, c + 2, 0x30, c)):
        for head, size, index in _MINIMAL_FORMS:
            if der.startswith(head, 10):
                p = 10 + len(head)  # the issuerNameHash
                q = p + size  # the issuerKeyHash's tag
                s = n - (q + 2 + size + 2)  # the serial's length
                if (
                    0 < s <= 64
                    and der[q] == 0x04
                    and der[q + 1] == size
                    and der[q + 2 + size] == 0x02
                    and der[q + 3 + size] == s
                ):
                    serial = int.from_bytes(der[q + 4 + size :], "big", signed=True)
                    return (index, der[p:q], der[q + 2 : q + 2 + size], serial, None)
                break
    return parse_request(der).flat


# Issuers --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class IssuerHashes:
    """An issuer's CertID hashes under one algorithm (RFC 6960 4.1.1)."""

    hash_algorithm: HashAlgorithm
    name_hash: bytes
    key_hash: bytes


def _subject_public_key_bits(cert: x509.Certificate) -> bytes:
    """The contents of the subjectPublicKey BIT STRING, without its unused-bits octet."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    outer = _Reader(spki).enter(0x30, "SubjectPublicKeyInfo")
    outer.read(0x30, "algorithm")
    bits = outer.bytes_of(0x03, "subjectPublicKey")
    return bits[1:]


def issuer_hashes(issuer: x509.Certificate) -> dict[HashAlgorithm, IssuerHashes]:
    """The (name hash, key hash) pair a CertID carries for certificates of ``issuer``,
    under each algorithm we answer."""
    name = issuer.subject.public_bytes()
    key = _subject_public_key_bits(issuer)
    return {h: IssuerHashes(h, h.digest(name), h.digest(key)) for h in HashAlgorithm}


# Responses ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SingleStatus:
    """The status a response states: good, or revoked at a time with an optional reason
    (suspension is revoked with certificateHold, RFC 5280 5.3.1)."""

    revoked: bool
    revoked_at: int = 0
    reason: int | None = None

    @classmethod
    def good(cls) -> SingleStatus:
        return _GOOD


_GOOD: Final = SingleStatus(False)
_CERT_STATUS_GOOD: Final = b"\x80\x00"


def signature_algorithm(key: PrivateKey) -> bytes:
    """The DER AlgorithmIdentifier this key signs with (also used by the CRL encoder)."""
    digest = signature_hash_for(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        dotted = "1.2.840.10045.4.3.3" if isinstance(digest, hashes.SHA384) else "1.2.840.10045.4.3.2"
        return tlv(0x30, _oid(dotted))  # ECDSA: parameters absent (RFC 5758 3.2)
    if isinstance(key, rsa.RSAPrivateKey):
        dotted = "1.2.840.113549.1.1.12" if isinstance(digest, hashes.SHA384) else "1.2.840.113549.1.1.11"
        return tlv(0x30, _oid(dotted) + _NULL)  # RSA: NULL parameters (RFC 4055 5)
    raise ConfigurationError(f"signing keys must be RSA or ECDSA, not {type(key).__name__}")


def response_status(der: bytes) -> SingleStatus:
    """The certificate status stated by a single-response OCSPResponse (as this module
    writes them): what a responder needs to re-sign the same answer for another CertID.
    Raises MalformedRequest (a ValueError) if the bytes are not such a response."""
    top = _Reader(der).enter(0x30, "OCSPResponse")
    top.read(0x0A, "responseStatus")
    rb = top.enter(0xA0, "responseBytes").enter(0x30, "ResponseBytes")
    rb.read(0x06, "responseType")
    basic = _Reader(rb.bytes_of(0x04, "response")).enter(0x30, "BasicOCSPResponse")
    tbs = basic.enter(0x30, "tbsResponseData")
    if tbs.peek_tag() == 0xA0:
        tbs.read(0xA0, "version")
    tag = tbs.peek_tag()
    if tag not in (0xA1, 0xA2):
        raise MalformedRequest("responderID")
    tbs.read(tag, "responderID")
    tbs.read(0x18, "producedAt")
    single = tbs.enter(0x30, "responses").enter(0x30, "SingleResponse")
    single.read(0x30, "certID")
    if single.peek_tag() == 0x80:
        return _GOOD
    info = single.enter(0xA1, "revoked")
    when = info.bytes_of(0x18, "revocationTime").decode("ascii")
    revoked_at = calendar.timegm(time.strptime(when, "%Y%m%d%H%M%SZ"))
    reason = None
    if info.peek_tag() == 0xA0:
        reason = info.enter(0xA0, "revocationReason").bytes_of(0x0A, "CRLReason")[0]
    return SingleStatus(True, revoked_at, reason)


class ResponseSigner:
    """Signs OCSP responses for one issuer with its delegated responder key.

    :param issuer: the CA certificate whose certificates the responses are about.
    :param responder: the delegated OCSP signing certificate (id-kp-OCSPSigning), included
        in every response so relying parties can verify it (RFC 6960 4.2.2.2).
    :param key: the responder certificate's private key.

    The responder is identified by key hash (RFC 6960 4.2.2.3: SHA-1 of the responder's
    subjectPublicKey), which is shorter than by name.
    """

    def __init__(self, issuer: x509.Certificate, responder: x509.Certificate, key: PrivateKey) -> None:
        if responder.public_key() != key.public_key():
            raise ConfigurationError("the OCSP signing key does not match the responder certificate")
        self.issuer = issuer
        self.responder = responder
        self._key = key
        self.hashes = issuer_hashes(issuer)
        responder_key_hash = hashlib.sha1(_subject_public_key_bits(responder)).digest()  # noqa: S324 - RFC 6960
        self._responder_id = tlv(0xA2, tlv(0x04, responder_key_hash))
        self._sig_alg = signature_algorithm(key)
        self._certs = tlv(0xA0, tlv(0x30, responder.public_bytes(serialization.Encoding.DER)))
        self._cert_id_prefix = {
            h: h.algorithm_identifier + tlv(0x04, ih.name_hash) + tlv(0x04, ih.key_hash)
            for h, ih in self.hashes.items()
        }
        digest = signature_hash_for(key)
        #: ECDSA signs in tens of microseconds: cheaper in line than a thread hop. RSA does not.
        self.signs_fast = isinstance(key, ec.EllipticCurvePrivateKey)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = ec.ECDSA(digest)
            self._sign = lambda data: key.sign(data, algorithm)
        else:
            assert isinstance(key, rsa.RSAPrivateKey)
            pad = padding.PKCS1v15()
            self._sign = lambda data: key.sign(data, pad, digest)
        # Memos of encoded times: a pre-signing batch shares its three times, and a responder
        # signing live (SHA-256 CertIDs) meets the times of a few thousand batches again and
        # again (16 entries missed there, 1.6 % of a busy worker at 1 M certificates).
        self._time_memo: dict[int, bytes] = {}
        self._next_memo: dict[int, bytes] = {}

    def _time(self, t: int) -> bytes:
        memo = self._time_memo
        encoded = memo.get(t)
        if encoded is None:
            if len(memo) >= _TIME_MEMO:
                memo.clear()
            encoded = memo[t] = generalized_time(t)
        return encoded

    def _next_update(self, t: int) -> bytes:
        memo = self._next_memo
        encoded = memo.get(t)
        if encoded is None:
            if len(memo) >= _TIME_MEMO:
                memo.clear()
            encoded = memo[t] = b"\xa0\x11" + generalized_time(t)
        return encoded

    def cert_id(self, hash_algorithm: HashAlgorithm, serial: int) -> bytes:
        return tlv(0x30, self._cert_id_prefix[hash_algorithm] + der_integer(serial))

    def sign(
        self,
        serial: int,
        status: SingleStatus,
        *,
        this_update: int,
        next_update: int,
        hash_algorithm: HashAlgorithm = HashAlgorithm.SHA1,
        nonce: bytes | None = None,
        extended_revoked: bool = False,
    ) -> bytes:
        """A complete, signed, successful OCSPResponse (DER) for one certificate.

        ``producedAt`` is ``this_update``. ``nonce`` is an extnValue to echo (RFC 8954);
        ``extended_revoked`` adds the RFC 6960 2.2 extension that marks a revoked answer
        for a serial that was never issued.
        """
        # Written out with a length table rather than nested tlv() calls: this is the
        # pre-signing hot loop, and the signature itself should dominate it.
        L = _LENGTHS
        if status.revoked:
            info = self._time(status.revoked_at)
            if status.reason is not None:
                info += b"\xa0\x03\x0a\x01" + bytes((status.reason,))
            cert_status = b"\xa1" + L[len(info)] + info
        else:
            cert_status = _CERT_STATUS_GOOD
        this = self._time(this_update)
        serial_der = _integer_octets(serial)
        cid = self._cert_id_prefix[hash_algorithm] + b"\x02" + L[len(serial_der)] + serial_der
        single = b"\x30" + L[len(cid)] + cid + cert_status + this + self._next_update(next_update)
        single = b"\x30" + L[len(single)] + single
        data = self._responder_id + this + b"\x30" + L[len(single)] + single
        if nonce is not None or extended_revoked:
            exts = b""
            if nonce is not None:
                exts += tlv(0x30, _OID_OCSP_NONCE + tlv(0x04, nonce))
            if extended_revoked:
                exts += tlv(0x30, _OID_EXTENDED_REVOKE + tlv(0x04, _NULL))
            data += tlv(0xA1, tlv(0x30, exts))
        tbs = b"\x30" + L[len(data)] + data
        signature = self._sign(tbs)
        bits_len = len(signature) + 1
        basic_len = len(tbs) + len(self._sig_alg) + 1 + len(L[bits_len]) + bits_len + len(self._certs)
        octet_len = 1 + len(L[basic_len]) + basic_len
        bytes_len = len(_OID_OCSP_BASIC) + 1 + len(L[octet_len]) + octet_len
        tagged_len = 1 + len(L[bytes_len]) + bytes_len
        return b"".join((
            b"\x30", L[3 + 1 + len(L[tagged_len]) + tagged_len], b"\x0a\x01\x00",
            b"\xa0", L[tagged_len], b"\x30", L[bytes_len], _OID_OCSP_BASIC, b"\x04", L[octet_len],
            b"\x30", L[basic_len], tbs, self._sig_alg, b"\x03", L[bits_len], b"\x00", signature, self._certs,
        ))  # fmt: skip
