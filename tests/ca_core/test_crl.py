"""The streaming CRL encoder (ca_core.crl), held against cryptography's CRL builder.

PKCS#1 v1.5 signatures are deterministic, so for an RSA issuer the whole DER written by
:mod:`ca_core.crl` must equal what ``x509.CertificateRevocationListBuilder`` writes for the
same content. ECDSA signatures are not, so for EC issuers the TBSCertList is compared and
the signature verified. Large CRLs (too slow for the builder) are checked against a
reference assembled here from :func:`ca_core.crl.entry_der` and a DER splice of a small
builder CRL, and signed here.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ca_core.clock import UTC
from ca_core.crl import (
    CRLEncoder,
    CRLParams,
    CRLSigner,
    EncodedCRL,
    crl_time,
    encode_crl,
    encode_entries,
    entry_der,
)
from ca_core.errors import ValidationError
from ca_core.keystore import PrivateKey

Row = tuple[bytes, int, int | None, int | None]

URL = "http://status.example.test/crl/moica/2.crl"
DELTA_URL = "http://status.example.test/crl/moica/2/delta.crl"


def ts(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


THIS = ts(2026, 5, 1, 8, 0, 0)
NEXT = ts(2026, 5, 3, 8, 0, 0)
Y2050 = ts(2050, 1, 1)
Y1950 = ts(1950, 1, 1)
#: The last second a Time can be written (9999-12-31T23:59:59Z).
LAST = ts(9999, 12, 31, 23, 59, 59)

REASONS = {
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}


def octets(serial: int) -> bytes:
    """A serial as the database stores it: minimal unsigned big-endian octets."""
    return serial.to_bytes((serial.bit_length() + 7) // 8, "big")


def when(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, UTC)


# Issuers -----------------------------------------------------------------------------


def make_issuer(key: PrivateKey, *, with_ski: bool = True) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "內政部"),
            x509.NameAttribute(NameOID.COMMON_NAME, "內政部憑證管理中心 test"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x4D01CA)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(dt.datetime(2035, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    if with_ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    digest = (
        hashes.SHA384()
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 384
        else hashes.SHA256()
    )
    return builder.sign(key, digest)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_issuer(rsa_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return make_issuer(rsa_key)


@pytest.fixture(scope="module")
def rsa_signer(rsa_key: rsa.RSAPrivateKey) -> CRLSigner:
    return CRLSigner(rsa_key)


# The reference: cryptography's builder ----------------------------------------------------


def reference(
    params: CRLParams, key: PrivateKey, rows: Sequence[Row], *, digest: hashes.HashAlgorithm | None = None
) -> x509.CertificateRevocationList:
    """The same CRL built by cryptography, extensions in the order CRLParams writes them."""
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(params.issuer.subject)
        .last_update(when(params.this_update))
        .next_update(when(params.next_update))
    )
    for serial, revoked_at, reason, invalidity in rows:
        rb = (
            x509.RevokedCertificateBuilder()
            .serial_number(int.from_bytes(serial, "big"))
            .revocation_date(when(revoked_at))
        )
        if reason:
            rb = rb.add_extension(x509.CRLReason(REASONS[reason]), critical=False)
        if invalidity is not None:
            rb = rb.add_extension(x509.InvalidityDate(when(invalidity)), critical=False)
        b = b.add_revoked_certificate(rb.build())
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(params.issuer.public_key()), critical=False)
    b = b.add_extension(x509.CRLNumber(params.number), critical=False)
    if params.scope_url is not None:
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(params.scope_url)],
            relative_name=None,
            only_contains_user_certs=True,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        b = b.add_extension(idp, critical=True)
    if params.delta_base is not None:
        b = b.add_extension(x509.DeltaCRLIndicator(params.delta_base), critical=True)
    if params.freshest_url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(params.freshest_url)], None, None, None)
        b = b.add_extension(x509.FreshestCRL([point]), critical=False)
    return b.sign(key, digest or hashes.SHA256())


def der_of(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


# A minimal DER reader, independent of the module under test -------------------------------


def read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of element) of the element at ``pos``."""
    tag = data[pos]
    first = data[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    n = first & 0x7F
    length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
    start = pos + 2 + n
    return tag, start, start + length


def children(data: bytes) -> list[tuple[int, bytes]]:
    """The elements inside the single SEQUENCE ``data``, as (tag, whole element)."""
    tag, start, end = read_tlv(data, 0)
    assert tag == 0x30 and end == len(data)
    out = []
    pos = start
    while pos < end:
        t, _, e = read_tlv(data, pos)
        out.append((t, data[pos:e]))
        pos = e
    return out


def der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def seq(body: bytes, tag: int = 0x30) -> bytes:
    return bytes((tag,)) + der_len(len(body)) + body


def spliced_rsa_crl(params: CRLParams, key: rsa.RSAPrivateKey, entries: bytes) -> bytes:
    """A CRL whose entries are ``entries`` (concatenated entry DER): cryptography writes
    the CRL without entries, the revokedCertificates SEQUENCE is spliced in before the
    crlExtensions, and the TBSCertList is signed here."""
    empty = reference(params, key, [])
    parts = children(empty.tbs_certlist_bytes)
    assert [t for t, _ in parts] == [0x02, 0x30, 0x30, 0x17, 0x17, 0xA0]
    body = b"".join(p for _, p in parts[:5]) + seq(entries) + parts[5][1]
    tbs = seq(body)
    outer = children(der_of(empty))
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    return seq(tbs + outer[1][1] + seq(b"\x00" + signature, 0x03))


# Row sets ------------------------------------------------------------------------------------


def every_reason_rows() -> list[Row]:
    rows: list[Row] = []
    for i, reason in enumerate((None, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10)):
        serial = (1 << 126) | (i * 0x1234567 + 1)
        invalidity = THIS - 86400 * (i + 1) if i % 2 else None
        rows.append((octets(serial), THIS - 3600 * i, reason, invalidity))
    return rows


#: Edge cases of serials and times, each a row.
EDGE_ROWS: list[Row] = [
    (b"\x01", THIS, None, None),  # the shortest serial
    (b"\x7f", THIS, 1, None),  # highest one-octet serial without padding
    (b"\x80", THIS, 1, None),  # high bit set: INTEGER 00 80
    (b"\xff" * 16, THIS, 4, THIS - 1),  # 16 octets, high bit set: 17 content octets
    (b"\x7f" + b"\xff" * 19, THIS, 5, None),  # 20 octets: the largest serial RFC 5280 allows
    (octets(0x4000_0000_0000_0000_0000_0000_0000_0001), Y1950, 6, None),  # first UTCTime second
    (octets(12345), Y2050 - 1, 9, Y2050 - 1),  # last UTCTime second
    (octets(12346), Y2050, 10, Y2050),  # first GeneralizedTime second
    (octets(12347), ts(2100, 2, 28, 12, 30, 59), 3, ts(1960, 7, 4)),
    (octets(12348), LAST, 2, ts(2020, 2, 29, 23, 59, 59)),
]


def params_for(issuer: x509.Certificate, **kw: object) -> CRLParams:
    args: dict[str, object] = {"number": 42, "this_update": THIS, "next_update": NEXT}
    args.update(kw)
    return CRLParams(issuer, **args)  # type: ignore[arg-type]


# Byte-identical to cryptography (RSA) -------------------------------------------------------------

SCOPES = {
    "full": {},
    "full+freshest": {"freshest_url": "http://status.example.test/crl/moica/delta.crl"},
    "partition": {"scope_url": URL, "freshest_url": DELTA_URL},
    "partition-delta": {"scope_url": URL, "delta_base": 41},
    "full-delta": {"delta_base": 7},
    "partition-only": {"scope_url": URL},
}

ROW_SETS = {
    "none": [],
    "one": [(octets((1 << 126) | 0xABCDEF), THIS - 60, 1, None)],
    "every-reason": every_reason_rows(),
    "edges": EDGE_ROWS,
}


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("rows", ROW_SETS)
def test_rsa_der_equals_cryptography(
    rsa_key: rsa.RSAPrivateKey, rsa_issuer: x509.Certificate, rsa_signer: CRLSigner, scope: str, rows: str
) -> None:
    params = params_for(rsa_issuer, **SCOPES[scope])
    entries = ROW_SETS[rows]
    ours = encode_crl(params, rsa_signer, entries)
    assert ours == der_of(reference(params, rsa_key, entries))
    crl = x509.load_der_x509_crl(ours)
    assert len(crl) == len(entries)
    assert crl.is_signature_valid(rsa_key.public_key())


def test_empty_crl_has_no_revoked_certificates_field(rsa_issuer: x509.Certificate, rsa_signer: CRLSigner) -> None:
    """RFC 5280 5.1.2.6: with no entries, revokedCertificates is absent (not an empty SEQUENCE)."""
    tbs = x509.load_der_x509_crl(encode_crl(params_for(rsa_issuer), rsa_signer, [])).tbs_certlist_bytes
    assert [t for t, _ in children(tbs)] == [0x02, 0x30, 0x30, 0x17, 0x17, 0xA0]


def test_extension_order_and_criticality(rsa_issuer: x509.Certificate, rsa_signer: CRLSigner) -> None:
    full = x509.load_der_x509_crl(encode_crl(params_for(rsa_issuer, freshest_url=DELTA_URL), rsa_signer, []))
    assert [(e.oid.dotted_string, e.critical) for e in full.extensions] == [
        ("2.5.29.35", False),
        ("2.5.29.20", False),
        ("2.5.29.46", False),
    ]
    delta = x509.load_der_x509_crl(encode_crl(params_for(rsa_issuer, scope_url=URL, delta_base=40), rsa_signer, []))
    assert [(e.oid.dotted_string, e.critical) for e in delta.extensions] == [
        ("2.5.29.35", False),
        ("2.5.29.20", False),
        ("2.5.29.28", True),
        ("2.5.29.27", True),
    ]
    idp = delta.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    assert idp.only_contains_user_certs and idp.full_name == [x509.UniformResourceIdentifier(URL)]
    assert delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number == 40


@pytest.mark.parametrize(
    ("this_update", "next_update"),
    [
        (Y2050 - 2, Y2050 - 1),  # both UTCTime
        (Y2050 - 1, Y2050),  # UTCTime, then GeneralizedTime
        (Y2050, Y2050 + 1),  # both GeneralizedTime
        (Y1950, ts(2200, 1, 1)),
    ],
    ids=["utc-utc", "utc-generalized", "generalized-generalized", "1950-2200"],
)
def test_update_times_either_side_of_2050(
    rsa_key: rsa.RSAPrivateKey, rsa_issuer: x509.Certificate, rsa_signer: CRLSigner, this_update: int, next_update: int
) -> None:
    params = params_for(rsa_issuer, this_update=this_update, next_update=next_update)
    rows = [(b"\x80\x01", this_update, 1, None), (b"\x02", next_update, None, this_update)]
    assert encode_crl(params, rsa_signer, rows) == der_of(reference(params, rsa_key, rows))


def test_issuer_without_subject_key_identifier(rsa_key: rsa.RSAPrivateKey) -> None:
    """The authorityKeyIdentifier falls back to the key's SHA-1 (RFC 5280 4.2.1.2 method 1),
    which is what the builder writes for from_issuer_public_key."""
    issuer = make_issuer(rsa_key, with_ski=False)
    params = params_for(issuer, scope_url=URL)
    rows = every_reason_rows()
    assert encode_crl(params, CRLSigner(rsa_key), rows) == der_of(reference(params, rsa_key, rows))


def test_large_crl_number(rsa_key: rsa.RSAPrivateKey, rsa_issuer: x509.Certificate, rsa_signer: CRLSigner) -> None:
    """cRLNumber may take 20 octets (RFC 5280 5.2.3)."""
    params = params_for(rsa_issuer, number=(1 << 159) - 1, delta_base=(1 << 158) + 5, scope_url=URL)
    assert encode_crl(params, rsa_signer, EDGE_ROWS) == der_of(reference(params, rsa_key, EDGE_ROWS))


def test_crl_time_encodings() -> None:
    assert crl_time(Y2050 - 1) == b"\x17\x0d491231235959Z"
    assert crl_time(Y2050) == b"\x18\x0f20500101000000Z"
    assert crl_time(Y1950) == b"\x17\x0d500101000000Z"
    assert crl_time(Y1950 - 1) == b"\x18\x0f19491231235959Z"
    assert crl_time(LAST) == b"\x18\x0f99991231235959Z"


# Property test against the builder --------------------------------------------------------

_times = st.integers(Y1950, ts(2200, 1, 1))
_rows = st.lists(
    st.tuples(
        st.integers(1, (1 << 159) - 1).map(octets),
        _times,
        st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10]),
        st.none() | _times,
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, database=None)
@given(rows=_rows, scope=st.sampled_from(sorted(SCOPES)), this_update=st.integers(Y1950, ts(2200, 1, 1)))
def test_random_entries_equal_cryptography(
    rsa_key: rsa.RSAPrivateKey,
    rsa_issuer: x509.Certificate,
    rsa_signer: CRLSigner,
    rows: list[Row],
    scope: str,
    this_update: int,
) -> None:
    params = params_for(rsa_issuer, this_update=this_update, next_update=this_update + 3600, **SCOPES[scope])
    expected = der_of(reference(params, rsa_key, rows))
    assert encode_crl(params, rsa_signer, rows) == expected
    enc = CRLEncoder(params, rsa_signer)
    for row in rows:
        enc.add(*row)
    assert enc.finish().der() == expected
    enc.close()
    assert b"".join(entry_der(*r) for r in rows) == b"".join(encode_entries(rows)[0])


# EC issuers: the TBSCertList is the builder's, the signature verifies ---------------------


@pytest.mark.parametrize(
    ("curve", "digest", "sig_oid"),
    [
        (ec.SECP256R1(), hashes.SHA256(), "1.2.840.10045.4.3.2"),
        (ec.SECP384R1(), hashes.SHA384(), "1.2.840.10045.4.3.3"),
    ],
    ids=["P-256", "P-384"],
)
@pytest.mark.parametrize("scope", ["full+freshest", "partition", "partition-delta"])
def test_ec_tbs_equals_cryptography_and_signature_verifies(
    curve: ec.EllipticCurve, digest: hashes.HashAlgorithm, sig_oid: str, scope: str
) -> None:
    key = ec.generate_private_key(curve)
    issuer = make_issuer(key)
    params = params_for(issuer, **SCOPES[scope])
    rows = every_reason_rows() + EDGE_ROWS
    ours = x509.load_der_x509_crl(encode_crl(params, CRLSigner(key), rows))
    theirs = reference(params, key, rows, digest=digest)
    assert ours.tbs_certlist_bytes == theirs.tbs_certlist_bytes
    assert ours.signature_algorithm_oid.dotted_string == sig_oid
    assert ours.is_signature_valid(key.public_key())
    other = ec.generate_private_key(curve)
    assert not ours.is_signature_valid(other.public_key())


# Chunks ---------------------------------------------------------------------------------------


def many_rows(n: int, *, start: int = 1 << 126) -> list[Row]:
    """n distinct rows cycling through every reason, some with invalidity dates, the
    revocation times spread over a few days (so the time cache in encode_entries is
    exercised both ways)."""
    reasons = (None, 1, 2, 3, 4, 5, 6, 8, 9, 10, 0)
    return [
        (
            octets(start + i * 7919),
            THIS - (i // 3) * 17,
            reasons[i % len(reasons)],
            THIS - 86400 - i if i % 5 == 0 else None,
        )
        for i in range(n)
    ]


def finished(params: CRLParams, signer: CRLSigner, rows: Sequence[Row]) -> EncodedCRL:
    enc = CRLEncoder(params, signer)
    enc.add_rows(rows)
    return enc.finish()


@pytest.mark.parametrize(("size", "n"), [(1, 30), (7, 500), (1000, 3000), (1 << 20, 60_000)])
def test_chunks_reassemble_the_der(rsa_issuer: x509.Certificate, rsa_signer: CRLSigner, size: int, n: int) -> None:
    crl = finished(params_for(rsa_issuer, scope_url=URL), rsa_signer, many_rows(n))
    try:
        der = crl.der()
        assert len(der) == crl.length
        pieces = list(crl.chunks(size))
        assert b"".join(pieces) == der
        assert all(len(p) == size for p in pieces[:-1])
        assert 0 < len(pieces[-1]) <= size
        assert len(pieces) == -(-len(der) // size)
        # The spool can be read again: a second pass yields the same bytes.
        assert b"".join(crl.chunks(size)) == der
    finally:
        crl.close()


def test_chunk_size_equal_to_length_and_beyond(rsa_issuer: x509.Certificate, rsa_signer: CRLSigner) -> None:
    crl = finished(params_for(rsa_issuer), rsa_signer, many_rows(10))
    der = crl.der()
    assert list(crl.chunks(len(der))) == [der]
    assert list(crl.chunks(len(der) + 1)) == [der]
    assert list(crl.chunks(len(der) - 1)) == [der[:-1], der[-1:]]
    crl.close()


@pytest.mark.parametrize("size", [0, -1])
def test_chunks_refuses_a_size_below_one(rsa_issuer: x509.Certificate, rsa_signer: CRLSigner, size: int) -> None:
    crl = finished(params_for(rsa_issuer), rsa_signer, many_rows(3))
    try:
        with pytest.raises((ValueError, ValidationError)):
            list(itertools.islice(crl.chunks(size), 5))  # islice: the bug would loop forever
    finally:
        crl.close()


# Flush boundary and spool rollover -----------------------------------------------------------


def test_add_rows_across_flush_boundary_matches_every_other_path(
    rsa_key: rsa.RSAPrivateKey, rsa_issuer: x509.Certificate, rsa_signer: CRLSigner
) -> None:
    params = params_for(rsa_issuer, scope_url=URL, freshest_url=DELTA_URL)
    rows = many_rows(10_000)
    expected = der_of(reference(params, rsa_key, rows))
    assert encode_crl(params, rsa_signer, rows) == expected

    # add_rows in uneven slices around the 4096-entry flush.
    enc = CRLEncoder(params, rsa_signer)
    for a, b in [(0, 1), (1, 4096), (4096, 4097), (4097, 8193), (8193, 10_000)]:
        enc.add_rows(iter(rows[a:b]))
    crl = enc.finish()
    assert crl.count == 10_000 and crl.der() == expected
    crl.close()

    # One entry at a time, then add_encoded for the rest, mixed.
    enc = CRLEncoder(params, rsa_signer)
    for row in rows[:5000]:
        enc.add(*row)
    ders, length = encode_entries(rows[5000:])
    enc.add_encoded(ders, length)
    crl = enc.finish()
    assert crl.count == 10_000 and crl.der() == expected
    crl.close()


def test_spool_rolls_to_disk_and_still_matches(rsa_key: rsa.RSAPrivateKey, rsa_issuer: x509.Certificate) -> None:
    signer = CRLSigner(rsa_key)
    params = params_for(rsa_issuer, number=123456, scope_url=URL, freshest_url=DELTA_URL)
    rows = many_rows(100_000)
    enc = CRLEncoder(params, signer)
    enc.add_rows(rows)
    crl = enc.finish()
    try:
        assert crl.entries_length > 4 * 1024 * 1024
        assert crl.spool._rolled  # type: ignore[attr-defined]  # on disk, not in memory
        expected = spliced_rsa_crl(params, rsa_key, b"".join(entry_der(*r) for r in rows))
        der = b"".join(crl.chunks(1 << 20))
        assert der == expected
        parsed = x509.load_der_x509_crl(der)
        assert len(parsed) == 100_000
        assert parsed.is_signature_valid(rsa_key.public_key())
    finally:
        crl.close()


def test_caller_spool_is_used(rsa_key: rsa.RSAPrivateKey, rsa_issuer: x509.Certificate, rsa_signer: CRLSigner) -> None:
    params = params_for(rsa_issuer)
    rows = many_rows(5000)
    spool = io.BytesIO()
    enc = CRLEncoder(params, rsa_signer, spool=spool)
    enc.add_rows(rows)
    crl = enc.finish()
    assert spool.getvalue() == b"".join(entry_der(*r) for r in rows)
    assert crl.der() == der_of(reference(params, rsa_key, rows))


def test_encoder_finishes_once(rsa_issuer: x509.Certificate, rsa_signer: CRLSigner) -> None:
    enc = CRLEncoder(params_for(rsa_issuer), rsa_signer)
    enc.finish()
    with pytest.raises(RuntimeError):
        enc.finish()
    enc.close()


# Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [7, 11, -1, 255])
def test_bad_reason_codes_are_refused_on_every_path(
    rsa_issuer: x509.Certificate, rsa_signer: CRLSigner, reason: int
) -> None:
    row = (b"\x01", THIS, reason, None)
    with pytest.raises(ValidationError):
        entry_der(*row)
    with pytest.raises(ValidationError):
        encode_entries([row])
    with pytest.raises(ValidationError):
        encode_crl(params_for(rsa_issuer), rsa_signer, [row])
    enc = CRLEncoder(params_for(rsa_issuer), rsa_signer)
    with pytest.raises(ValidationError):
        enc.add(*row)
    enc.close()


@pytest.mark.parametrize(
    "kw",
    [
        {"next_update": THIS},
        {"next_update": THIS - 1},
        {"number": 5, "delta_base": 5},
        {"number": 5, "delta_base": 6},
        {"number": 5, "delta_base": -1},
        {"delta_base": 1, "freshest_url": DELTA_URL},
        {"number": -1},
        {"number": 1 << 159},
    ],
    ids=[
        "next-equals-this",
        "next-before-this",
        "delta-base-equals-number",
        "delta-base-above-number",
        "negative-delta-base",
        "freshest-on-delta",
        "negative-number",
        "number-over-20-octets",
    ],
)
def test_bad_params_are_refused(rsa_issuer: x509.Certificate, kw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        params_for(rsa_issuer, **kw)


def test_times_beyond_9999_are_refused() -> None:
    with pytest.raises(ValidationError):
        crl_time(LAST + 1)
    with pytest.raises(ValidationError):
        entry_der(b"\x01", LAST + 1, None, None)
    with pytest.raises(ValidationError):
        encode_entries([(b"\x01", LAST + 1, None, None)])


def test_invalidity_date_beyond_9999_is_refused() -> None:
    with pytest.raises(ValidationError):
        entry_der(b"\x01", THIS, None, LAST + 1)
