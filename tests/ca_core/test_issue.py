"""Certificate construction (sans-IO): every extension of every profile, parsed back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
)

from ca_core.clock import UTC
from ca_core.errors import ValidationError, WeakKey
from ca_core.issue import (
    SigningCA,
    build_end_entity,
    build_issuing_ca,
    build_ocsp_signer,
    build_root,
    ca_name,
    partition_for,
    random_serial,
)
from ca_core.keystore import generate_private_key
from ca_core.model import KeyType
from ca_core.profiles import (
    BACKDATE,
    CITIZEN_ENCRYPTION,
    CITIZEN_SIGNING,
    DEFAULT_POLICY_OID,
    HolderSubject,
    PublicURLs,
)

NOW = dt.datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
URLS = PublicURLs("http://status.example.test")
HOLDER = HolderSubject("王小明", "0000000111729553", "xiaoming@example.tw")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def hierarchy() -> tuple[SigningCA, SigningCA]:
    root_key = generate_private_key(KeyType.EC_P384)
    root_cert = build_root(root_key, subject=ca_name("Test Root CA", "certstatus"), serial=random_serial(), now=NOW)
    root = SigningCA("root", root_cert, root_key)
    key = generate_private_key(KeyType.RSA2048)
    cert = build_issuing_ca(
        root, key.public_key(), subject=ca_name("Test MOICA", "certstatus"), serial=random_serial(),
        now=NOW, urls=URLS, policy_oids=(DEFAULT_POLICY_OID,),
    )
    return root, SigningCA("moica", cert, key)


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


class TestSerials:
    def test_shape(self) -> None:
        serials = {random_serial() for _ in range(2000)}
        assert len(serials) == 2000
        for s in serials:
            assert s.bit_length() == 127, "bit 126 set, bit 127 clear: always 16 octets, positive"
            assert len(format(s, "X")) == 32

    def test_partition_is_fixed_by_serial(self) -> None:
        assert partition_for(0x1234, 16) == 4
        assert {partition_for(random_serial(), 16) for _ in range(500)} == set(range(16))
        with pytest.raises(ValidationError):
            partition_for(5, 0)


class TestRoot:
    def test_root_extensions(self, hierarchy: tuple[SigningCA, SigningCA]) -> None:
        root = hierarchy[0].certificate
        assert root.issuer == root.subject
        bc = ext(root, x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length is None
        ku = ext(root, x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
        root.verify_directly_issued_by(root)
        assert root.not_valid_before_utc == NOW - BACKDATE


class TestIssuingCA:
    def test_extensions(self, hierarchy: tuple[SigningCA, SigningCA]) -> None:
        root, moica = hierarchy
        cert = moica.certificate
        cert.verify_directly_issued_by(root.certificate)
        bc = ext(cert, x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == 0
        assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
            ext(root.certificate, x509.SubjectKeyIdentifier).value.digest
        )
        dps = ext(cert, x509.CRLDistributionPoints).value
        assert [n.value for n in dps[0].full_name] == ["http://status.example.test/crl/root.crl"]
        aia = {d.access_method: d.access_location.value for d in ext(cert, x509.AuthorityInformationAccess).value}
        # caIssuers only: the root publishes its CAs' status by CRL, it signs no OCSP.
        assert aia == {AuthorityInformationAccessOID.CA_ISSUERS: "http://status.example.test/ca/root.crt"}
        assert cert.not_valid_after_utc <= root.not_after

    def test_key_must_match_certificate(self, hierarchy: tuple[SigningCA, SigningCA]) -> None:
        root, _ = hierarchy
        with pytest.raises(ValidationError, match="does not match"):
            SigningCA("root", root.certificate, generate_private_key(KeyType.EC_P384))


class TestOCSPSigner:
    def test_delegated_responder_extensions(self, hierarchy: tuple[SigningCA, SigningCA]) -> None:
        _, moica = hierarchy
        key = generate_private_key(KeyType.EC_P256)
        cert = build_ocsp_signer(moica, key.public_key(), serial=random_serial(), now=NOW)
        cert.verify_directly_issued_by(moica.certificate)
        assert ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING])
        assert isinstance(ext(cert, x509.OCSPNoCheck).value, x509.OCSPNoCheck)
        ku = ext(cert, x509.KeyUsage).value
        assert ku.digital_signature and not ku.key_cert_sign
        assert not ext(cert, x509.BasicConstraints).value.ca
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30)


class TestCitizenCertificates:
    @pytest.mark.parametrize(
        ("profile", "key_type", "usage"),
        [
            (CITIZEN_SIGNING, KeyType.RSA2048, {"digital_signature", "content_commitment"}),
            (CITIZEN_SIGNING, KeyType.EC_P256, {"digital_signature", "content_commitment"}),
            (CITIZEN_ENCRYPTION, KeyType.RSA2048, {"key_encipherment", "data_encipherment"}),
            (CITIZEN_ENCRYPTION, KeyType.EC_P384, {"key_agreement"}),
        ],
    )
    def test_every_extension(self, hierarchy: tuple[SigningCA, SigningCA], profile, key_type, usage) -> None:  # type: ignore[no-untyped-def]
        _, moica = hierarchy
        key = generate_private_key(key_type)
        serial = random_serial()
        cert = build_end_entity(moica, profile, HOLDER, key.public_key(), serial=serial, partition=3, now=NOW, urls=URLS)
        cert.verify_directly_issued_by(moica.certificate)

        assert cert.version is x509.Version.v3
        assert cert.serial_number == serial
        assert cert.not_valid_before_utc == NOW - BACKDATE
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == profile.validity
        # Subject: C=TW, CN (UTF8String), serialNumber, in that order (seed 001).
        attrs = [(a.oid, a.value) for a in cert.subject]
        assert attrs == [
            (NameOID.COUNTRY_NAME, "TW"),
            (NameOID.COMMON_NAME, "王小明"),
            (NameOID.SERIAL_NUMBER, "0000000111729553"),
        ]
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]._type is x509.name._ASN1Type.UTF8String

        assert ext(cert, x509.BasicConstraints).critical
        assert not ext(cert, x509.BasicConstraints).value.ca
        ku = ext(cert, x509.KeyUsage)
        assert ku.critical
        names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "key_cert_sign", "crl_sign")
        assert {n for n in names if getattr(ku.value, n)} == usage

        assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
            ext(moica.certificate, x509.SubjectKeyIdentifier).value.digest
        )
        aia = [(d.access_method, d.access_location.value) for d in ext(cert, x509.AuthorityInformationAccess).value]
        assert aia == [
            (AuthorityInformationAccessOID.OCSP, "http://status.example.test/ocsp"),
            (AuthorityInformationAccessOID.CA_ISSUERS, "http://status.example.test/ca/moica.crt"),
        ]
        dp = ext(cert, x509.CRLDistributionPoints).value
        assert [n.value for n in dp[0].full_name] == ["http://status.example.test/crl/moica/3.crl"]
        fresh = ext(cert, x509.FreshestCRL)
        assert not fresh.critical
        # The delta of the same scope as the CRL distribution point: partition 3 (RFC 5280 5.2.4).
        assert [n.value for n in fresh.value[0].full_name] == ["http://status.example.test/crl/moica/3/delta.crl"]
        policies = ext(cert, x509.CertificatePolicies).value
        assert [p.policy_identifier.dotted_string for p in policies] == [DEFAULT_POLICY_OID]
        assert ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.RFC822Name) == ["xiaoming@example.tw"]
        assert not any(e.critical for e in cert.extensions if not isinstance(e.value, (x509.KeyUsage, x509.BasicConstraints)))

    def test_no_email_no_san(self, hierarchy: tuple[SigningCA, SigningCA]) -> None:
        _, moica = hierarchy
        key = generate_private_key(KeyType.EC_P256)
        cert = build_end_entity(
            moica, CITIZEN_SIGNING, HolderSubject("林志強", "0000000000000003"), key.public_key(),
            serial=random_serial(), partition=0, now=NOW, urls=URLS,
        )
        with pytest.raises(x509.ExtensionNotFound):
            ext(cert, x509.SubjectAlternativeName)

    def test_validity_is_clamped_to_the_issuer(self, hierarchy: tuple[SigningCA, SigningCA]) -> None:
        _, moica = hierarchy
        key = generate_private_key(KeyType.EC_P256)
        cert = build_end_entity(
            moica, CITIZEN_SIGNING, HOLDER, key.public_key(), serial=random_serial(), partition=0,
            now=NOW, urls=URLS, validity=dt.timedelta(days=365 * 40),
        )
        assert cert.not_valid_after_utc == moica.certificate.not_valid_after_utc

    @pytest.mark.parametrize("when", [NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=365 * 11)])
    def test_refuses_outside_issuer_validity(self, hierarchy: tuple[SigningCA, SigningCA], when: dt.datetime) -> None:
        _, moica = hierarchy
        key = generate_private_key(KeyType.EC_P256)
        with pytest.raises(ValidationError, match="is not valid at"):
            build_end_entity(moica, CITIZEN_SIGNING, HOLDER, key.public_key(), serial=1, partition=0, now=when, urls=URLS)

    def test_refuses_weak_key(self, hierarchy: tuple[SigningCA, SigningCA]) -> None:
        _, moica = hierarchy
        weak = rsa.generate_private_key(65537, 1024)
        with pytest.raises(WeakKey, match="1024 bits"):
            build_end_entity(moica, CITIZEN_SIGNING, HOLDER, weak.public_key(), serial=1, partition=0, now=NOW, urls=URLS)
        odd_curve = ec.generate_private_key(ec.SECP256K1())
        with pytest.raises(WeakKey, match="secp256k1"):
            build_end_entity(moica, CITIZEN_SIGNING, HOLDER, odd_curve.public_key(), serial=1, partition=0, now=NOW, urls=URLS)


@pytest.mark.parametrize("key_type", list(KeyType))
def test_openssl_verifies_chain_for_every_key_type(
    tmp_path: Path, key_type: KeyType, openssl: Callable[..., object]
) -> None:
    """`openssl verify` (a real relying party) accepts root -> issuing CA -> citizen certificate."""
    root_key = generate_private_key(key_type)
    root = SigningCA(
        "root", build_root(root_key, subject=ca_name("Root", "certstatus"), serial=random_serial(), now=NOW), root_key
    )
    ca_key = generate_private_key(key_type)
    ca_cert = build_issuing_ca(
        root, ca_key.public_key(), subject=ca_name("Issuing", "certstatus"), serial=random_serial(),
        now=NOW, urls=URLS, policy_oids=(DEFAULT_POLICY_OID,),
    )
    leaf_key = generate_private_key(key_type)
    leaf = build_end_entity(
        SigningCA("moica", ca_cert, ca_key), CITIZEN_SIGNING, HOLDER, leaf_key.public_key(),
        serial=random_serial(), partition=1, now=NOW, urls=URLS,
    )
    (tmp_path / "root.pem").write_bytes(_pem(root.certificate))
    (tmp_path / "ca.pem").write_bytes(_pem(ca_cert))
    (tmp_path / "leaf.pem").write_bytes(_pem(leaf))
    at = str(int((NOW + dt.timedelta(days=1)).timestamp()))
    result = openssl(
        "verify", "-attime", at, "-policy_check", "-policy", DEFAULT_POLICY_OID, "-explicit_policy",
        "-CAfile", tmp_path / "root.pem", "-untrusted", tmp_path / "ca.pem", tmp_path / "leaf.pem",
    )
    assert result.stdout.strip().endswith("leaf.pem: OK")  # type: ignore[attr-defined]
    text = openssl("x509", "-in", tmp_path / "leaf.pem", "-noout", "-text").stdout  # type: ignore[attr-defined]
    assert "Digital Signature, Non Repudiation" in text
    assert "URI:http://status.example.test/crl/moica/1.crl" in text
