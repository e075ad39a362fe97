"""The sans-IO OCSP codec (ca_core.ocsp) and the GET path decoder, held against cryptography.

Requests are built with cryptography's OCSPRequestBuilder or, for what it cannot build, DER
written out by hand here (independently of the module under test). Responses are parsed
back with cryptography's load_der_ocsp_response, their signatures verified, and compared
byte for byte with what cryptography's OCSPResponseBuilder writes for the same content.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import random
import urllib.parse
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp as cocsp
from cryptography.x509.oid import ObjectIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_core.clock import UTC
from ca_core.errors import MalformedRequest
from ca_core.issue import SigningCA, build_issuing_ca, build_ocsp_signer, build_root, ca_name, random_serial
from ca_core.keystore import PrivateKey, generate_private_key
from ca_core.model import KeyType
from ca_core.ocsp import (
    EXTENDED_REVOKE_TIME,
    HASH_ALGORITHMS,
    UNKNOWN_ALGORITHM,
    UNSUCCESSFUL,
    HashAlgorithm,
    OCSPQuery,
    ResponseSigner,
    ResponseStatus,
    SingleStatus,
    issuer_hashes,
    parse_flat,
    parse_request,
)
from ca_core.profiles import DEFAULT_POLICY_OID, PublicURLs
from responder.fastpath import decode_get_path

NOW = dt.datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
URLS = PublicURLs("http://status.example.test")
OID_NONCE = "1.3.6.1.5.5.7.48.1.2"
OID_EXTENDED_REVOKE = "1.3.6.1.5.5.7.48.1.9"

# Hand-written DER, independent of the module under test ---------------------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def T(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return bytes((tag,)) + _len(len(body)) + body


def INT(value: int) -> bytes:
    length = 1
    while True:  # the shortest two's complement encoding that holds the value
        try:
            return T(0x02, value.to_bytes(length, "big", signed=True))
        except OverflowError:
            length += 1


def OID(dotted: str) -> bytes:
    return T(0x06, _oid_body(dotted))


def _oid_body(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        while p > 0x7F:
            p >>= 7
            chunk.append(0x80 | (p & 0x7F))
        out.extend(reversed(chunk))
    return bytes(out)


SHA1_OID = OID("1.3.14.3.2.26")
SHA256_OID = OID("2.16.840.1.101.3.4.2.1")
NULL = b"\x05\x00"
NAME_HASH = bytes(range(1, 21))
KEY_HASH = bytes(range(101, 121))


def cert_id(*, alg: bytes | None = None, name_hash: bytes = NAME_HASH, key_hash: bytes = KEY_HASH,
            serial: bytes | None = None) -> bytes:
    alg = T(0x30, SHA1_OID, NULL) if alg is None else alg
    return T(0x30, alg, T(0x04, name_hash), T(0x04, key_hash), INT(5) if serial is None else serial)


def extension(oid: str, value: bytes, critical: bool = False) -> bytes:
    return T(0x30, OID(oid), b"\x01\x01\xff" if critical else b"", T(0x04, value))


def ocsp_request(*, version: bytes = b"", requestor: bytes = b"", singles: list[bytes] | None = None,
                 request_exts: bytes = b"", signature: bytes = b"") -> bytes:
    """OCSPRequest ::= SEQUENCE { tbsRequest, optionalSignature [0] EXPLICIT OPTIONAL }."""
    singles = [T(0x30, cert_id())] if singles is None else singles
    tbs = T(0x30, version, requestor, T(0x30, *singles), request_exts)
    return T(0x30, tbs, signature)


def built_request(serial: int, algorithm: hashes.HashAlgorithm | None = None, nonce: bytes | None = None,
                  name_hash: bytes | None = None, key_hash: bytes | None = None) -> bytes:
    """A request as cryptography's builder writes it."""
    algorithm = algorithm or hashes.SHA1()
    n = algorithm.digest_size
    builder = cocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash or hashlib.new(algorithm.name, b"name").digest()[:n],
        key_hash or hashlib.new(algorithm.name, b"key").digest()[:n],
        serial,
        algorithm,
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


# parse_request: what it accepts -----------------------------------------------------------

A_SERIAL = 0x5C3A_9E11_04D7_2B68_E0F1_3C5A_7788_9DAB  # 127 bits, like random_serial()'s
SERIALS = [1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, A_SERIAL, (1 << 159) - 1, 1 << 159, (1 << 511) - 1]


@pytest.mark.parametrize("serial", SERIALS, ids=lambda s: hex(s)[:14])
@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [(hashes.SHA1(), HashAlgorithm.SHA1), (hashes.SHA256(), HashAlgorithm.SHA256), (hashes.SHA384(), None)],
    ids=["sha1", "sha256", "sha384"],
)
@pytest.mark.parametrize("nonce", [None, b"\x00", bytes(range(32))], ids=["no-nonce", "nonce1", "nonce32"])
def test_parses_what_cryptography_builds(
    serial: int, algorithm: hashes.HashAlgorithm, expected: HashAlgorithm | None, nonce: bytes | None
) -> None:
    der = built_request(serial, algorithm, nonce)
    reference = cocsp.load_der_ocsp_request(der)
    query = parse_request(der)
    assert isinstance(query, OCSPQuery)
    assert query.cert_id.serial == serial == reference.serial_number
    assert query.cert_id.hash_algorithm is expected
    assert query.cert_id.issuer_name_hash == reference.issuer_name_hash
    assert query.cert_id.issuer_key_hash == reference.issuer_key_hash
    assert len(query.cert_id.issuer_name_hash) == algorithm.digest_size
    if nonce is None:
        assert query.nonce is None
    else:
        # The exact extnValue contents (the DER OCTET STRING around the nonce), to echo unchanged.
        ext = reference.extensions.get_extension_for_class(x509.OCSPNonce)
        assert query.nonce == T(0x04, nonce) == ext.value.public_bytes()
    # The flat form servers keep (an exact tuple the garbage collector stops tracking).
    flat = query.flat
    assert type(flat) is tuple and all(type(v) in (int, bytes, type(None)) for v in flat)
    index = UNKNOWN_ALGORITHM if expected is None else HASH_ALGORITHMS.index(expected)
    assert flat == (index, reference.issuer_name_hash, reference.issuer_key_hash, serial, query.nonce)


def test_accepts_bytearray_and_memoryview() -> None:
    der = built_request(1234)
    assert parse_request(bytearray(der)) == parse_request(memoryview(der)) == parse_request(der)  # type: ignore[arg-type]


NONCE_EXT = extension(OID_NONCE, T(0x04, b"0123456789abcdef"))
ACCEPTED = {
    "baseline": (ocsp_request(), None),
    "hash parameters absent": (ocsp_request(singles=[T(0x30, cert_id(alg=T(0x30, SHA1_OID)))]), None),
    "hash parameters NULL, SHA-256": (
        ocsp_request(singles=[T(0x30, cert_id(alg=T(0x30, SHA256_OID, NULL), name_hash=b"\x01" * 32,
                                              key_hash=b"\x02" * 32))]),
        None,
    ),
    "explicit version v1": (ocsp_request(version=T(0xA0, INT(0))), None),
    "requestorName (dNSName)": (ocsp_request(requestor=T(0xA1, T(0x82, b"client.example"))), None),
    "version and requestorName": (ocsp_request(version=T(0xA0, INT(0)), requestor=T(0xA1, T(0x82, b"c"))), None),
    "optionalSignature": (
        ocsp_request(signature=T(0xA0, T(0x30, T(0x30, OID("1.2.840.10045.4.3.2")), T(0x03, b"\x00" + b"\x55" * 70)))),
        None,
    ),
    "optionalSignature with certs": (
        ocsp_request(signature=T(0xA0, T(0x30, T(0x30, OID("1.2.840.10045.4.3.2")), T(0x03, b"\x00\x01"),
                                             T(0xA0, T(0x30))))),
        None,
    ),
    "singleRequestExtensions": (
        ocsp_request(singles=[T(0x30, cert_id(), T(0xA0, T(0x30, extension("1.3.6.1.5.5.7.48.1.7", T(0x30)))))]),
        None,
    ),
    "nonce in singleRequestExtensions is not the request nonce": (
        ocsp_request(singles=[T(0x30, cert_id(), T(0xA0, T(0x30, NONCE_EXT)))]),
        None,
    ),
    "nonce": (ocsp_request(request_exts=T(0xA2, T(0x30, NONCE_EXT))), T(0x04, b"0123456789abcdef")),
    "critical nonce among other extensions": (
        ocsp_request(request_exts=T(0xA2, T(0x30, extension("1.3.6.1.5.5.7.48.1.4", T(0x30, OID("1.3.6.1.5.5.7.48.1.1"))),
                                            extension(OID_NONCE, b"raw, not an OCTET STRING", critical=True)))),
        b"raw, not an OCTET STRING",
    ),
    "everything at once": (
        ocsp_request(version=T(0xA0, INT(0)), requestor=T(0xA1, T(0x82, b"c")),
                     singles=[T(0x30, cert_id(), T(0xA0, T(0x30, extension("1.2.3.4", b""))))],
                     request_exts=T(0xA2, T(0x30, NONCE_EXT)),
                     signature=T(0xA0, T(0x30, T(0x30, OID("1.2.840.10045.4.3.2")), T(0x03, b"\x00\x01")))),
        T(0x04, b"0123456789abcdef"),
    ),
    "negative serial (hostile, but well-formed)": (ocsp_request(singles=[T(0x30, cert_id(serial=INT(-5)))]), None),
    "serial zero": (ocsp_request(singles=[T(0x30, cert_id(serial=INT(0)))]), None),
}


@pytest.mark.parametrize(("der", "nonce"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepts_hand_built_variants(der: bytes, nonce: bytes | None) -> None:
    query = parse_request(der)
    serial_der = _serial_element(der)
    assert query.cert_id.serial == int.from_bytes(serial_der[2:], "big", signed=True)
    assert query.cert_id.issuer_name_hash in (NAME_HASH, b"\x01" * 32)
    assert query.cert_id.issuer_key_hash in (KEY_HASH, b"\x02" * 32)
    expected_alg = HashAlgorithm.SHA256 if SHA256_OID in der else HashAlgorithm.SHA1
    assert query.cert_id.hash_algorithm is expected_alg
    assert query.nonce == nonce


def _serial_element(der: bytes) -> bytes:
    """The serialNumber INTEGER of the hand-built requests above (after the key hash)."""
    for key_hash in (T(0x04, KEY_HASH), T(0x04, b"\x02" * 32)):
        at = der.find(key_hash)
        if at >= 0:
            start = at + len(key_hash)
            return der[start : start + 2 + der[start + 1]]
    raise AssertionError("no key hash in the request")


def test_cryptography_agrees_on_the_variants_it_accepts() -> None:
    """cryptography refuses an explicitly encoded DEFAULT version (strict DER); every other
    hand-built variant it reads the same way we do."""
    for name, (der, _) in ACCEPTED.items():
        try:
            reference = cocsp.load_der_ocsp_request(der)
        except ValueError as e:
            assert "EncodedDefault" in str(e) and "TBSRequest::version" in str(e), (name, e)
            continue
        query = parse_request(der)
        assert query.cert_id.serial == reference.serial_number, name
        assert query.cert_id.issuer_name_hash == reference.issuer_name_hash, name
        assert query.cert_id.issuer_key_hash == reference.issuer_key_hash, name


# parse_request: what it refuses -----------------------------------------------------------

VALID = built_request(0x1234_5678_9ABC_DEF0, nonce=b"n" * 16)
TWO_SINGLES = ocsp_request(singles=[T(0x30, cert_id()), T(0x30, cert_id(serial=INT(6)))])


def _indefinite(der: bytes) -> bytes:
    """The outer SEQUENCE re-encoded with BER indefinite length."""
    assert der[0] == 0x30 and der[1] < 0x80
    return b"\x30\x80" + der[2:] + b"\x00\x00"


def _long_form(der: bytes, octets: int) -> bytes:
    """The outer SEQUENCE with its (short) length written in non-minimal long form."""
    assert der[0] == 0x30 and der[1] < 0x80
    return b"\x30" + bytes((0x80 | octets,)) + der[1].to_bytes(octets, "big") + der[2:]


REFUSED = {
    "empty": b"",
    "one byte": b"\x30",
    "empty SEQUENCE": b"\x30\x00",
    "trailing zero byte": VALID + b"\x00",
    "trailing element": VALID + b"\x30\x00",
    "two requests in requestList": TWO_SINGLES,
    "empty requestList": ocsp_request(singles=[]),
    "indefinite length": _indefinite(ocsp_request()),
    "long-form length for a short length": _long_form(ocsp_request(), 1),
    "two-octet length for a short length": _long_form(ocsp_request(), 2),
    "long-form length with leading zero": b"\x30\x82\x00\x85" + b"\x00" * 0x85,
    "five length octets": b"\x30\x85\x00\x00\x00\x00\x05" + b"\x00" * 5,
    "length runs past the end": b"\x30\x7f" + ocsp_request()[2:],
    "outer SET instead of SEQUENCE": b"\x31" + ocsp_request()[1:],
    "tbsRequest as SET": ocsp_request()[:2] + b"\x31" + ocsp_request()[3:],
    "CertID as OCTET STRING": ocsp_request(singles=[T(0x30, b"\x04" + cert_id()[1:])]),
    "serial as OCTET STRING": ocsp_request(singles=[T(0x30, cert_id(serial=T(0x04, b"\x05")))]),
    "name hash as BIT STRING": ocsp_request(singles=[T(0x30, T(0x30, T(0x30, SHA1_OID, NULL), T(0x03, NAME_HASH),
                                                               T(0x04, KEY_HASH), INT(5)))]),
    "serial of length 0": ocsp_request(singles=[T(0x30, cert_id(serial=b"\x02\x00"))]),
    "serial of 65 octets": ocsp_request(singles=[T(0x30, cert_id(serial=T(0x02, b"\x01" * 65)))]),
    "hash parameters not NULL": ocsp_request(singles=[T(0x30, cert_id(alg=T(0x30, SHA1_OID, T(0x04, b""))))]),
    "hash parameters NULL with contents": ocsp_request(singles=[T(0x30, cert_id(alg=T(0x30, SHA1_OID, b"\x05\x01\x00")))]),
    "hash parameters after NULL": ocsp_request(singles=[T(0x30, cert_id(alg=T(0x30, SHA1_OID, NULL, NULL)))]),
    "hash OID missing": ocsp_request(singles=[T(0x30, cert_id(alg=T(0x30, NULL)))]),
    "data after serial": ocsp_request(singles=[T(0x30, T(0x30, T(0x30, SHA1_OID, NULL), T(0x04, NAME_HASH),
                                                         T(0x04, KEY_HASH), INT(5), NULL))]),
    "version v2": ocsp_request(version=T(0xA0, INT(1))),
    "version as OCTET STRING": ocsp_request(version=T(0xA0, T(0x04, b"\x00"))),
    "version with trailing data": ocsp_request(version=T(0xA0, INT(0), NULL)),
    "duplicate request extension": ocsp_request(request_exts=T(0xA2, T(0x30, NONCE_EXT, NONCE_EXT))),
    "duplicate single extension": ocsp_request(singles=[T(0x30, cert_id(), T(0xA0, T(0x30, NONCE_EXT, NONCE_EXT)))]),
    "extension without extnValue": ocsp_request(request_exts=T(0xA2, T(0x30, T(0x30, OID(OID_NONCE))))),
    "extension with trailing data": ocsp_request(request_exts=T(0xA2, T(0x30, T(0x30, OID(OID_NONCE), T(0x04, b""), NULL)))),
    "extensions not a SEQUENCE": ocsp_request(request_exts=T(0xA2, T(0x31, NONCE_EXT))),
    "unknown tbsRequest field [3]": ocsp_request(request_exts=T(0xA3, T(0x30))),
    "data in Request after CertID": ocsp_request(singles=[T(0x30, cert_id(), NULL)]),
    "data after the signature": T(0x30, ocsp_request()[2:], T(0xA0, T(0x30)), NULL),
    "[1] instead of optionalSignature": T(0x30, ocsp_request()[2:], T(0xA1, T(0x30))),
    "requestorName after requestList": T(0x30, T(0x30, T(0x30, T(0x30, cert_id())), T(0xA1, T(0x82, b"c")))),
}


@pytest.mark.parametrize("der", REFUSED.values(), ids=REFUSED.keys())
def test_refuses_malformed_requests(der: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_request(der)


def test_refused_inputs_are_also_refused_by_cryptography_or_ask_for_several_certificates() -> None:
    """The refusals above are not over-strict: cryptography refuses them too, except duplicate
    extensions (noticed only when the request extensions are read, never in singleRequestExtensions,
    which cryptography does not expose) and an absurdly long serial."""
    for name, der in REFUSED.items():
        try:
            reference = cocsp.load_der_ocsp_request(der)
        except ValueError:
            continue
        except NotImplementedError as e:  # how cryptography says "not exactly one certificate"
            assert name in ("two requests in requestList", "empty requestList") and "more than one" in str(e)
            continue
        if name == "duplicate request extension":
            with pytest.raises(x509.DuplicateExtension):
                _ = reference.extensions
            continue
        if name == "duplicate single extension":
            continue  # cryptography does not look inside singleRequestExtensions at all
        if name == "serial of 65 octets":
            assert reference.serial_number.bit_length() > 512  # a serial no CA issues (RFC 5280: 20 octets)
            continue
        pytest.fail(f"cryptography accepts {name!r} that we refuse")


@pytest.mark.parametrize("der", [ocsp_request(), VALID, built_request(7, hashes.SHA256()), ACCEPTED["everything at once"][0]],
                         ids=["hand-built", "with-nonce", "sha256", "everything"])
def test_every_truncation_is_refused(der: bytes) -> None:
    for cut in range(len(der)):
        with pytest.raises(MalformedRequest):
            parse_request(der[:cut])


# parse_flat: the shortcut for minimal requests agrees with parse_request ---------------------


def flat_or_refused(parse: Callable[[bytes], object], der: bytes) -> object:
    try:
        return parse(der)
    except MalformedRequest:
        return "refused"


MINIMAL = {
    **{
        f"{a.name}-{hex(s)[:6]}-{s.bit_length()}": built_request(s, a)
        for a in (hashes.SHA1(), hashes.SHA256())
        for s in SERIALS
    },
    "sha1-no-null": ocsp_request(singles=[T(0x30, cert_id(alg=T(0x30, OID("1.3.14.3.2.26"))))]),
    "serial-0": built_request(0),
    "serial-negative": ocsp_request(singles=[T(0x30, cert_id(serial=T(0x02, b"\xff\x01")))]),
    "serial-64-bytes": ocsp_request(singles=[T(0x30, cert_id(serial=T(0x02, b"\x01" * 64)))]),
}


@pytest.mark.parametrize("der", MINIMAL.values(), ids=MINIMAL.keys())
def test_parse_flat_reads_minimal_requests_without_the_general_parser(
    der: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ca_core.ocsp

    expected = parse_request(der).flat
    if len(der) > 129:  # a length needs two bytes: not the minimal form, the general parser's
        assert parse_flat(der) == expected
        return

    def unused(der: bytes) -> OCSPQuery:
        raise AssertionError("the general parser was used")

    monkeypatch.setattr(ca_core.ocsp, "parse_request", unused)
    assert parse_flat(der) == expected


OTHER_FORMS = {
    "nonce": VALID,
    "sha384": built_request(7, hashes.SHA384()),
    **{name: der for name, (der, _) in ACCEPTED.items()},
    **{name: der for name, der in REFUSED.items()},
}


@pytest.mark.parametrize("der", [*MINIMAL.values(), *OTHER_FORMS.values()], ids=[*MINIMAL, *OTHER_FORMS])
def test_parse_flat_agrees_with_parse_request_on_every_mutation(der: bytes) -> None:
    """Each byte changed to five other values, every truncation, a byte appended: the same
    query from both, or both refuse."""
    variants = [der, der + b"\x00", *(der[:cut] for cut in range(len(der)))]
    for i in range(len(der)):
        for value in {0x00, 0x01, 0x7F, 0x80, 0xFF, (der[i] + 1) % 256} - {der[i]}:
            variants.append(der[:i] + bytes((value,)) + der[i + 1 :])
    for variant in variants:
        expected = flat_or_refused(lambda d: parse_request(d).flat, variant)
        assert flat_or_refused(parse_flat, variant) == expected, variant.hex()


# Random and mutated input: MalformedRequest or an answer, and cryptography agrees -----------

SEEDS = [
    VALID,
    built_request(5),
    built_request(A_SERIAL, hashes.SHA256(), b"\x01" * 32),
    built_request(300, hashes.SHA384()),
    ACCEPTED["everything at once"][0],
    ACCEPTED["hash parameters absent"][0],
    ACCEPTED["requestorName (dNSName)"][0],
    ACCEPTED["optionalSignature"][0],
    TWO_SINGLES,
]
_OUR_HASHES = {HashAlgorithm.SHA1: "sha1", HashAlgorithm.SHA256: "sha256"}


@dataclasses.dataclass
class Disagreements:
    """What a campaign found where cryptography accepts a request for one certificate."""

    checked: int = 0
    unknown_hash_with_parameters: int = 0


def check_against_cryptography(der: bytes, found: Disagreements | None = None) -> None:
    """parse_request returns an OCSPQuery or raises MalformedRequest (anything else escapes and
    fails the test); when cryptography reads one certificate from the bytes, we agree with it."""
    try:
        ours: OCSPQuery | None = parse_request(der)
        error = None
    except MalformedRequest as e:
        ours, error = None, e
    else:
        assert isinstance(ours, OCSPQuery)
    try:
        theirs = cocsp.load_der_ocsp_request(der)
    except (ValueError, NotImplementedError):
        return  # NotImplementedError: a request for several certificates
    if found is not None:
        found.checked += 1
    if ours is None:
        assert error is not None
        if "singleRequestExtensions: duplicate extension" in str(error):
            return  # cryptography never reads singleRequestExtensions; RFC 5280 4.2 forbids duplicates
        # The other legitimate disagreement: an unknown hash algorithm whose parameters are not
        # NULL. cryptography stores them; we refuse (we could not answer for it anyway).
        assert "hashAlgorithm parameters" in str(error), (der.hex(), error)
        with pytest.raises(UnsupportedAlgorithm):
            _ = theirs.hash_algorithm
        if found is not None:
            found.unknown_hash_with_parameters += 1
        return
    cid = ours.cert_id
    assert cid.serial == theirs.serial_number, der.hex()
    assert cid.issuer_name_hash == theirs.issuer_name_hash, der.hex()
    assert cid.issuer_key_hash == theirs.issuer_key_hash, der.hex()
    try:
        their_alg: str | None = theirs.hash_algorithm.name
    except UnsupportedAlgorithm:
        their_alg = None
    assert _OUR_HASHES.get(cid.hash_algorithm) == (their_alg if their_alg in ("sha1", "sha256") else None), der.hex()  # type: ignore[arg-type]
    try:
        their_nonce = theirs.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        assert ours.nonce is None, der.hex()
    except ValueError:
        pass  # another extension cryptography knows but cannot read (we read only the nonce)
    else:
        # We keep the extnValue contents as sent. cryptography unwraps the OCTET STRING inside
        # it, or, when they are not one OCTET STRING, takes them whole as the nonce.
        assert ours.nonce in (their_nonce.public_bytes(), their_nonce.nonce), der.hex()


def mutate(der: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: 0 flips a bit, 1 inserts a byte, 2 deletes one."""
    buf = bytearray(der)
    for kind, pos, value in edits:
        if kind == 1:
            buf.insert(pos % (len(buf) + 1), value)
        elif buf:
            at = pos % len(buf)
            if kind == 0:
                buf[at] ^= 1 << (value % 8)
            else:
                del buf[at]
    return bytes(buf)


FUZZ_SETTINGS = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ_SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    check_against_cryptography(data)


@FUZZ_SETTINGS
@given(st.binary(max_size=300).map(lambda b: b"\x30" + _len(len(b)) + b))
def test_random_sequences_never_raise_anything_else(data: bytes) -> None:
    check_against_cryptography(data)


@FUZZ_SETTINGS
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_requests_never_raise_anything_else_and_agree_with_cryptography(
    der: bytes, edits: list[tuple[int, int, int]]
) -> None:
    check_against_cryptography(mutate(der, edits))


def test_seeded_mutation_campaign_agrees_with_cryptography() -> None:
    """A larger, reproducible campaign than hypothesis' run: 40 000 mutants."""
    rng = random.Random(6960)
    found = Disagreements()
    for _ in range(40_000):
        edits = [(rng.randrange(3), rng.randrange(1 << 16), rng.randrange(256)) for _ in range(rng.randint(1, 3))]
        check_against_cryptography(mutate(rng.choice(SEEDS), edits), found)
    # Enough mutants survive cryptography's strict parser for the comparison to mean something.
    assert found.checked > 2_000
    assert found.unknown_hash_with_parameters < found.checked // 50


def test_non_minimal_integers_are_tolerated_unlike_cryptography() -> None:
    """Documented leniency: a serial with a redundant leading octet reads as its value
    (cryptography refuses it as non-DER). Harmless: it names the same certificate."""
    der = ocsp_request(singles=[T(0x30, cert_id(serial=T(0x02, b"\x00\x05")))])
    assert parse_request(der).cert_id.serial == 5
    with pytest.raises(ValueError):
        cocsp.load_der_ocsp_request(der)


# Responses -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    issuer: x509.Certificate
    responder: x509.Certificate
    key: PrivateKey
    leaf: x509.Certificate  # a certificate of the issuer, for cryptography's own CertID hashes
    key_type: KeyType

    @property
    def signer(self) -> ResponseSigner:
        return ResponseSigner(self.issuer, self.responder, self.key)


KEY_TYPES = [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA2048]


@pytest.fixture(scope="module", params=KEY_TYPES, ids=[k.value for k in KEY_TYPES])
def hierarchy(request: pytest.FixtureRequest) -> Hierarchy:
    """Root (P-384) > issuing CA > delegated OCSP responder; the issuing CA and the responder
    both have keys of the parametrised type."""
    key_type: KeyType = request.param
    root_key = generate_private_key(KeyType.EC_P384)
    root_cert = build_root(root_key, subject=ca_name("Test Root CA", "certstatus"), serial=random_serial(), now=NOW)
    root = SigningCA("root", root_cert, root_key)
    ca_key = generate_private_key(key_type)
    ca_cert = build_issuing_ca(
        root, ca_key.public_key(), subject=ca_name("Test MOICA", "certstatus"), serial=random_serial(), now=NOW,
        urls=URLS, policy_oids=(DEFAULT_POLICY_OID,),
    )
    moica = SigningCA("moica", ca_cert, ca_key)
    responder_key = generate_private_key(key_type)
    responder = build_ocsp_signer(moica, responder_key.public_key(), serial=random_serial(), now=NOW)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(random_serial())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    return Hierarchy(ca_cert, responder, responder_key, leaf, key_type)


REASONS = {
    0: x509.ReasonFlags.unspecified,
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}
THIS_UPDATE = int(NOW.timestamp())
NEXT_UPDATE = THIS_UPDATE + 4 * 86400
REVOKED_AT = THIS_UPDATE - 86400 * 3 - 17
STATUSES = {
    "good": SingleStatus.good(),
    "revoked-no-reason": SingleStatus(True, REVOKED_AT),
    **{f"revoked-{REASONS[code].name}": SingleStatus(True, REVOKED_AT, code) for code in REASONS},
}
CERT_ID_HASHES = {"sha1": (HashAlgorithm.SHA1, hashes.SHA1()), "sha256": (HashAlgorithm.SHA256, hashes.SHA256())}
SIGNATURE_OIDS = {
    KeyType.EC_P256: ("1.2.840.10045.4.3.2", "sha256"),
    KeyType.EC_P384: ("1.2.840.10045.4.3.3", "sha384"),
    KeyType.RSA2048: ("1.2.840.113549.1.1.11", "sha256"),
}


def utc(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, UTC)


def their_cert_id(h: Hierarchy, algorithm: hashes.HashAlgorithm) -> cocsp.OCSPRequest:
    """The CertID hashes cryptography computes for a certificate of the issuer."""
    return cocsp.OCSPRequestBuilder().add_certificate(h.leaf, h.issuer, algorithm).build()


def verify_signature(resp: cocsp.OCSPResponse, responder: x509.Certificate) -> None:
    public = responder.public_key()
    algorithm = resp.signature_hash_algorithm
    assert algorithm is not None
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(algorithm))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), algorithm)


def check_response(der: bytes, h: Hierarchy, *, serial: int, status: SingleStatus, algorithm: hashes.HashAlgorithm,
                   this_update: int = THIS_UPDATE, next_update: int = NEXT_UPDATE) -> cocsp.OCSPResponse:
    """Everything a relying party checks in a signed response, read by cryptography."""
    resp = cocsp.load_der_ocsp_response(der)
    assert resp.response_status is cocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.serial_number == serial
    assert resp.hash_algorithm.name == algorithm.name
    reference = their_cert_id(h, algorithm)
    assert resp.issuer_name_hash == reference.issuer_name_hash
    assert resp.issuer_key_hash == reference.issuer_key_hash
    assert resp.responder_name is None
    assert resp.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(h.responder.public_key()).digest
    assert resp.certificates == [h.responder]
    assert resp.this_update_utc == utc(this_update)
    assert resp.produced_at_utc == utc(this_update)
    assert resp.next_update_utc == utc(next_update)
    if status.revoked:
        assert resp.certificate_status is cocsp.OCSPCertStatus.REVOKED
        assert resp.revocation_time_utc == utc(status.revoked_at)
        assert resp.revocation_reason == (None if status.reason is None else REASONS[status.reason])
    else:
        assert resp.certificate_status is cocsp.OCSPCertStatus.GOOD
        assert resp.revocation_time_utc is None and resp.revocation_reason is None
    assert len(resp.single_extensions) == 0
    verify_signature(resp, h.responder)
    return resp


def cryptography_response(h: Hierarchy, *, serial: int, status: SingleStatus, algorithm: hashes.HashAlgorithm,
                          extensions: tuple[x509.ExtensionType, ...] = ()) -> cocsp.OCSPResponse:
    """The same response as cryptography's OCSPResponseBuilder writes it."""
    ref = their_cert_id(h, algorithm)
    builder = cocsp.OCSPResponseBuilder().add_response_by_hash(
        ref.issuer_name_hash, ref.issuer_key_hash, serial, algorithm,
        cocsp.OCSPCertStatus.REVOKED if status.revoked else cocsp.OCSPCertStatus.GOOD,
        utc(THIS_UPDATE), utc(NEXT_UPDATE),
        utc(status.revoked_at) if status.revoked else None,
        REASONS[status.reason] if status.reason is not None else None,
    ).responder_id(cocsp.OCSPResponderEncoding.HASH, h.responder).certificates([h.responder])
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    digest = hashes.SHA384() if SIGNATURE_OIDS[h.key_type][1] == "sha384" else hashes.SHA256()
    return builder.sign(h.key, digest)


def same_tbs(ours: cocsp.OCSPResponse, theirs: cocsp.OCSPResponse) -> None:
    """Byte-identical ResponseData, once cryptography's producedAt (always "now") is set to ours."""
    produced = b"\x18\x0f" + theirs.produced_at_utc.strftime("%Y%m%d%H%M%SZ").encode()
    assert theirs.tbs_response_bytes.count(produced) == 1
    ours_produced = b"\x18\x0f" + ours.produced_at_utc.strftime("%Y%m%d%H%M%SZ").encode()
    at = theirs.tbs_response_bytes.index(produced)
    expected = theirs.tbs_response_bytes[:at] + ours_produced + theirs.tbs_response_bytes[at + len(produced) :]
    assert ours.tbs_response_bytes == expected


@pytest.mark.parametrize("cert_id_hash", CERT_ID_HASHES, ids=CERT_ID_HASHES.keys())
@pytest.mark.parametrize("status", STATUSES.values(), ids=STATUSES.keys())
def test_signed_responses_read_back_with_cryptography(
    hierarchy: Hierarchy, status: SingleStatus, cert_id_hash: str
) -> None:
    ours_alg, algorithm = CERT_ID_HASHES[cert_id_hash]
    serial = random_serial()
    der = hierarchy.signer.sign(serial, status, this_update=THIS_UPDATE, next_update=NEXT_UPDATE,
                                hash_algorithm=ours_alg)
    resp = check_response(der, hierarchy, serial=serial, status=status, algorithm=algorithm)
    assert len(resp.extensions) == 0
    oid, digest = SIGNATURE_OIDS[hierarchy.key_type]
    assert resp.signature_algorithm_oid.dotted_string == oid
    assert resp.signature_hash_algorithm is not None and resp.signature_hash_algorithm.name == digest
    same_tbs(resp, cryptography_response(hierarchy, serial=serial, status=status, algorithm=algorithm))


def test_the_time_memos_stay_bounded_and_right(hierarchy: Hierarchy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signer meets the times of many batches (live signing in the responder): its memos of
    encoded times are bounded, and every response still carries its own times."""
    import ca_core.ocsp

    monkeypatch.setattr(ca_core.ocsp, "_TIME_MEMO", 3)
    signer = hierarchy.signer
    good = STATUSES["good"]
    for k in range(8):
        this_update = THIS_UPDATE + 60 * k
        der = signer.sign(7, good, this_update=this_update, next_update=this_update + 3600)
        resp = cocsp.load_der_ocsp_response(der)
        assert int(resp.this_update_utc.timestamp()) == this_update
        assert resp.next_update_utc is not None and int(resp.next_update_utc.timestamp()) == this_update + 3600
        assert len(signer._time_memo) <= 3 and len(signer._next_memo) <= 3


@pytest.mark.parametrize("serial", [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, (1 << 159) - 1, (1 << 159)],
                         ids=lambda s: hex(s)[:12])
def test_serials_of_every_length(hierarchy: Hierarchy, serial: int) -> None:
    der = hierarchy.signer.sign(serial, SingleStatus.good(), this_update=THIS_UPDATE, next_update=NEXT_UPDATE)
    resp = check_response(der, hierarchy, serial=serial, status=SingleStatus.good(), algorithm=hashes.SHA1())
    same_tbs(resp, cryptography_response(hierarchy, serial=serial, status=SingleStatus.good(), algorithm=hashes.SHA1()))


@pytest.mark.parametrize("serial", [-1, -127, -128, -129, -255, -256, -32768, -32769, -(1 << 159)])
def test_negative_serials_encode_minimally(hierarchy: Hierarchy, serial: int) -> None:
    """A hostile request may carry a negative serial, and the responder can answer it (extended
    revoked). -2**(8k-1) is the edge: -128 is 80, not ff80, which strict DER parsers refuse."""
    der = hierarchy.signer.sign(serial, SingleStatus.good(), this_update=THIS_UPDATE, next_update=NEXT_UPDATE)
    assert INT(serial) in der
    assert cocsp.load_der_ocsp_response(der).serial_number == serial
    assert hierarchy.signer.cert_id(HashAlgorithm.SHA1, serial).endswith(INT(serial))


@pytest.mark.parametrize("cert_id_hash", CERT_ID_HASHES, ids=CERT_ID_HASHES.keys())
def test_nonce_is_echoed(hierarchy: Hierarchy, cert_id_hash: str) -> None:
    ours_alg, algorithm = CERT_ID_HASHES[cert_id_hash]
    nonce = bytes(range(32))
    request = parse_request(built_request(99, algorithm, nonce))
    assert request.nonce is not None
    status = SingleStatus(True, REVOKED_AT, 1)
    der = hierarchy.signer.sign(99, status, this_update=THIS_UPDATE, next_update=NEXT_UPDATE,
                                hash_algorithm=ours_alg, nonce=request.nonce)
    resp = check_response(der, hierarchy, serial=99, status=status, algorithm=algorithm)
    assert [e.oid.dotted_string for e in resp.extensions] == [OID_NONCE]
    ext = resp.extensions.get_extension_for_class(x509.OCSPNonce)
    assert ext.value.nonce == nonce and not ext.critical
    same_tbs(resp, cryptography_response(hierarchy, serial=99, status=status, algorithm=algorithm,
                                         extensions=(x509.OCSPNonce(nonce),)))


def test_nonce_bytes_are_echoed_unchanged(hierarchy: Hierarchy) -> None:
    """Whatever the client put in extnValue comes back as is (even when it is not an OCTET STRING)."""
    raw = b"not DER at all"
    der = hierarchy.signer.sign(5, SingleStatus.good(), this_update=THIS_UPDATE, next_update=NEXT_UPDATE, nonce=raw)
    assert T(0x30, OID(OID_NONCE), T(0x04, raw)) in der
    verify_signature(cocsp.load_der_ocsp_response(der), hierarchy.responder)


@pytest.mark.parametrize("nonce", [None, T(0x04, b"\x42" * 16)], ids=["no-nonce", "nonce"])
@pytest.mark.parametrize("cert_id_hash", CERT_ID_HASHES, ids=CERT_ID_HASHES.keys())
def test_extended_revoked(hierarchy: Hierarchy, cert_id_hash: str, nonce: bytes | None) -> None:
    """RFC 6960 2.2: revoked, certificateHold, at 1970-01-01, with the extended revoke extension."""
    ours_alg, algorithm = CERT_ID_HASHES[cert_id_hash]
    status = SingleStatus(True, EXTENDED_REVOKE_TIME, 6)
    serial = random_serial()
    der = hierarchy.signer.sign(serial, status, this_update=THIS_UPDATE, next_update=NEXT_UPDATE,
                                hash_algorithm=ours_alg, nonce=nonce, extended_revoked=True)
    resp = check_response(der, hierarchy, serial=serial, status=status, algorithm=algorithm)
    assert resp.revocation_time_utc == dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert resp.revocation_reason is x509.ReasonFlags.certificate_hold
    oids = [e.oid.dotted_string for e in resp.extensions]
    assert oids == ([OID_NONCE] if nonce else []) + [OID_EXTENDED_REVOKE]
    ext = resp.extensions.get_extension_for_oid(ObjectIdentifier(OID_EXTENDED_REVOKE))
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension) and ext.value.value == NULL
    expected_exts: list[x509.ExtensionType] = [x509.OCSPNonce(b"\x42" * 16)] if nonce else []
    expected_exts.append(x509.UnrecognizedExtension(ObjectIdentifier(OID_EXTENDED_REVOKE), NULL))
    same_tbs(resp, cryptography_response(hierarchy, serial=serial, status=status, algorithm=algorithm,
                                         extensions=tuple(expected_exts)))


def test_times_across_years_and_memo_reuse(hierarchy: Hierarchy) -> None:
    """More than the memo's 16 distinct times, in several years, each encoded right."""
    signer = hierarchy.signer
    base = int(dt.datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
    for i in range(40):
        this = base + i * 3600 * 97
        der = signer.sign(i + 1, SingleStatus(True, this - 5, 4), this_update=this, next_update=this + 86400)
        resp = cocsp.load_der_ocsp_response(der)
        assert resp.this_update_utc == resp.produced_at_utc == utc(this)
        assert resp.next_update_utc == utc(this + 86400)
        assert resp.revocation_time_utc == utc(this - 5)


def test_issuer_hashes_match_cryptography(hierarchy: Hierarchy) -> None:
    ours = issuer_hashes(hierarchy.issuer)
    for ours_alg, algorithm in CERT_ID_HASHES.values():
        reference = their_cert_id(hierarchy, algorithm)
        assert ours[ours_alg].name_hash == reference.issuer_name_hash
        assert ours[ours_alg].key_hash == reference.issuer_key_hash
        assert hierarchy.signer.cert_id(ours_alg, 77) == T(
            0x30, T(0x30, OID(dict(sha1="1.3.14.3.2.26", sha256="2.16.840.1.101.3.4.2.1")[algorithm.name]), NULL),
            T(0x04, reference.issuer_name_hash), T(0x04, reference.issuer_key_hash), INT(77),
        )


def test_signer_refuses_a_key_that_does_not_match_the_responder(hierarchy: Hierarchy) -> None:
    from ca_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        ResponseSigner(hierarchy.issuer, hierarchy.responder, generate_private_key(KeyType.EC_P256))


# Unsuccessful responses ----------------------------------------------------------------------

PINNED = {
    ResponseStatus.MALFORMED_REQUEST: (b"0\x03\n\x01\x01", cocsp.OCSPResponseStatus.MALFORMED_REQUEST),
    ResponseStatus.INTERNAL_ERROR: (b"0\x03\n\x01\x02", cocsp.OCSPResponseStatus.INTERNAL_ERROR),
    ResponseStatus.TRY_LATER: (b"0\x03\n\x01\x03", cocsp.OCSPResponseStatus.TRY_LATER),
    ResponseStatus.SIG_REQUIRED: (b"0\x03\n\x01\x05", cocsp.OCSPResponseStatus.SIG_REQUIRED),
    ResponseStatus.UNAUTHORIZED: (b"0\x03\n\x01\x06", cocsp.OCSPResponseStatus.UNAUTHORIZED),
}


@pytest.mark.parametrize("status", PINNED, ids=[s.name for s in PINNED])
def test_unsuccessful_bytes_are_pinned(status: ResponseStatus) -> None:
    expected, theirs = PINNED[status]
    assert UNSUCCESSFUL[status] == expected
    assert cocsp.load_der_ocsp_response(expected).response_status is theirs
    assert cocsp.OCSPResponseBuilder.build_unsuccessful(theirs).public_bytes(serialization.Encoding.DER) == expected


def test_unsuccessful_has_exactly_the_unsuccessful_statuses() -> None:
    assert set(UNSUCCESSFUL) == set(PINNED)
    assert ResponseStatus.SUCCESSFUL not in UNSUCCESSFUL


# decode_get_path (responder.fastpath) ------------------------------------------------------


def _der_with_every_base64_special() -> bytes:
    """A request whose base64 has '+', '/' and '=' padding, so every quirk changes something."""
    for i in range(10_000):
        der = built_request(0x1234, nonce=i.to_bytes(4, "big"))
        text = base64.b64encode(der)
        if b"+" in text and b"/" in text and text.endswith(b"="):
            return der
    raise AssertionError("no such request")


GET_DER = _der_with_every_base64_special()
B64 = base64.b64encode(GET_DER).decode()
URLSAFE = base64.urlsafe_b64encode(GET_DER).decode()
GET_QUIRKS = {
    "RFC 6960 A.1: percent-encoded base64": urllib.parse.quote(B64, safe=""),
    "lower-case percent escapes": B64.replace("+", "%2b").replace("/", "%2f").replace("=", "%3d"),
    "raw base64": B64,
    "'+' turned into ' ' by a form decoder": B64.replace("+", " "),
    "'+' turned into ' ' and percent-encoded": B64.replace("+", "%20"),
    "'+' turned into '+' escaped as %2B, rest raw": B64.replace("+", "%2B"),
    "padding left off": B64.rstrip("="),
    "padding percent-encoded": B64.replace("=", "%3D"),
    "base64url": URLSAFE,
    "base64url without padding": URLSAFE.rstrip("="),
    "leading slash doubled": "/" + B64,
    "leading slashes tripled": "//" + urllib.parse.quote(B64, safe=""),
    "leading percent-encoded slash": "%2F" + B64,
    "everything at once": "//" + URLSAFE.rstrip("=").replace("-", "%2D"),
}


@pytest.mark.parametrize("encoded", GET_QUIRKS.values(), ids=GET_QUIRKS.keys())
def test_decode_get_path_accepts_quirks(encoded: str) -> None:
    assert decode_get_path(encoded.encode()) == GET_DER
    assert parse_request(decode_get_path(encoded.encode())) == parse_request(GET_DER)


GET_GARBAGE = {
    "empty": b"",
    "only slashes": b"///",
    "only padding": b"====",
    "bad character": B64[:8].encode() + b"!" + B64[8:].encode(),
    "percent-encoded NUL": b"%00" + B64.encode(),
    "non-ASCII": b"\xff\xfe\xfd\xfc",
    "percent-encoded non-ASCII": b"%C3%A9" + B64.encode(),
    "length 1 mod 4": B64.rstrip("=").encode() + b"A" * ((1 - len(B64.rstrip("="))) % 4),
    "padding in the middle": b"MA==MA==",
    "newline": B64[:4].encode() + b"%0A" + B64[4:].encode(),
    "dot": b"MEMw.QTA",
    "bare percent": b"%",
}


@pytest.mark.parametrize("encoded", GET_GARBAGE.values(), ids=GET_GARBAGE.keys())
def test_decode_get_path_refuses_garbage(encoded: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_get_path(encoded)


@settings(max_examples=1000, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_decode_get_path_raises_only_malformed_request(data: bytes) -> None:
    try:
        decoded = decode_get_path(data)
    except MalformedRequest:
        return
    assert isinstance(decoded, bytes) and decoded


@pytest.mark.parametrize("reason", [None, 0, 1, 6, 10])
@pytest.mark.parametrize("revoked", [False, True])
def test_response_status_reads_back_what_sign_wrote(hierarchy: Hierarchy, revoked: bool, reason: int | None) -> None:
    from ca_core.ocsp import response_status

    t0 = int(NOW.timestamp())
    status = SingleStatus(True, t0 - 86_400, reason) if revoked else SingleStatus.good()
    der = hierarchy.signer.sign(0x4ABC, status, this_update=t0, next_update=t0 + 3600)
    assert response_status(der) == status
    with pytest.raises(MalformedRequest):
        response_status(der[:-40])
