"""PKCS#10 requests: parsing, proof of possession, signature algorithm, key policy, subject."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ca_core.csr import MAX_CSR_BYTES, CheckedCSR, load_csr
from ca_core.errors import BadCSR, BadSubject, ValidationError, WeakKey
from ca_core.keystore import PrivateKey, generate_private_key
from ca_core.model import KeyType
from ca_core.profiles import HolderSubject

OpenSSL = Callable[..., subprocess.CompletedProcess[str]]

HOLDER_ID = "0000000111729553"


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


GOOD_NAME = _name(
    (NameOID.COUNTRY_NAME, "TW"), (NameOID.COMMON_NAME, "王小明"), (NameOID.SERIAL_NUMBER, HOLDER_ID)
)


def make_csr(
    key: PrivateKey | ed25519.Ed25519PrivateKey,
    name: x509.Name = GOOD_NAME,
    algorithm: hashes.HashAlgorithm | None = None,
) -> x509.CertificateSigningRequest:
    if algorithm is None and not isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = hashes.SHA256()
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)  # type: ignore[arg-type]


def der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def rsa_key() -> PrivateKey:
    return generate_private_key(KeyType.RSA2048)


@pytest.fixture(scope="module")
def ec_key() -> PrivateKey:
    return generate_private_key(KeyType.EC_P256)


@pytest.fixture(scope="module")
def p384_key() -> PrivateKey:
    return generate_private_key(KeyType.EC_P384)


@pytest.fixture(scope="module")
def good_rsa_der(rsa_key: PrivateKey) -> bytes:
    return der(make_csr(rsa_key))


class TestLoadAccepts:
    @pytest.mark.parametrize(
        ("key_fixture", "key_type"),
        [("rsa_key", KeyType.RSA2048), ("ec_key", KeyType.EC_P256), ("p384_key", KeyType.EC_P384)],
    )
    @pytest.mark.parametrize("form", ["pem-bytes", "pem-str", "der", "pem-with-whitespace"])
    def test_cryptography_csr(
        self, request: pytest.FixtureRequest, key_fixture: str, key_type: KeyType, form: str
    ) -> None:
        key: PrivateKey = request.getfixturevalue(key_fixture)
        csr = make_csr(key)
        data: bytes | str = {
            "pem-bytes": pem(csr),
            "pem-str": pem(csr).decode(),
            "der": der(csr),
            "pem-with-whitespace": b"\n  " + pem(csr) + b"\n\n",
        }[form]
        checked = load_csr(data)
        assert isinstance(checked, CheckedCSR)
        assert checked.key_type is key_type
        assert checked.public_key == key.public_key()
        assert der(checked.csr) == der(csr)
        assert checked.subject() == HolderSubject("王小明", HOLDER_ID)

    @pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()], ids=lambda a: a.name)
    def test_accepted_hashes(self, ec_key: PrivateKey, algorithm: hashes.HashAlgorithm) -> None:
        checked = load_csr(der(make_csr(ec_key, algorithm=algorithm)))
        assert isinstance(checked.csr.signature_hash_algorithm, type(algorithm))

    def test_exactly_max_bytes_is_accepted(self, ec_key: PrivateKey) -> None:
        data = pem(make_csr(ec_key))
        data += b"\n" * (MAX_CSR_BYTES - len(data))
        assert len(data) == MAX_CSR_BYTES
        assert load_csr(data).key_type is KeyType.EC_P256

    @pytest.mark.parametrize("outform", ["PEM", "DER"])
    def test_openssl_csr_with_chinese_name(self, openssl: OpenSSL, tmp_path: Path, outform: str) -> None:
        out = tmp_path / "req.csr"
        openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", tmp_path / "key.pem", "-out", out, "-outform", outform,
            "-utf8", "-subj", f"/C=TW/CN=王小明/serialNumber={HOLDER_ID}",
        )
        checked = load_csr(out.read_bytes())
        assert checked.key_type is KeyType.EC_P256
        subject = checked.subject()
        assert subject == HolderSubject(name="王小明", holder_id=HOLDER_ID, email=None)
        assert subject.name == "王小明"
        assert subject.holder_id == HOLDER_ID
        assert subject.x509_name() == checked.csr.subject
        with_email = checked.subject(email="xiaoming@example.tw")
        assert with_email.email == "xiaoming@example.tw"
        assert with_email.name == "王小明"

    def test_openssl_rsa_csr(self, openssl: OpenSSL, tmp_path: Path, rsa_key: PrivateKey) -> None:
        key_path = tmp_path / "key.pem"
        key_path.write_bytes(
            rsa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out = tmp_path / "req.csr"
        openssl("req", "-new", "-key", key_path, "-out", out, "-sha384", "-utf8",
                "-subj", f"/C=TW/CN=王小明/serialNumber={HOLDER_ID}")
        checked = load_csr(out.read_bytes())
        assert checked.key_type is KeyType.RSA2048
        assert checked.subject() == HolderSubject("王小明", HOLDER_ID)


class TestLoadRefuses:
    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (b"", "the CSR is empty"),
            ("", "the CSR is empty"),
            (b"  \n\t\r\n", "the CSR is empty"),
            (
                b"-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n",
                "the CSR cannot be parsed as PEM or DER PKCS#10",
            ),
            (b"-----BEGIN CERTIFICATE REQUEST-----\n", "the CSR cannot be parsed as PEM or DER PKCS#10"),
            (b"-----garbage-----", "the CSR cannot be parsed"),
            (b"\x30\x03\x02\x01\x01", "the CSR cannot be parsed as PEM or DER PKCS#10"),
            (b"\x00\x01\x02\x03garbage", "the CSR cannot be parsed"),
            (b"\x30\x82\xff\xff", "the CSR cannot be parsed"),
            ("王小明", "the CSR cannot be parsed"),
        ],
        ids=["empty-bytes", "empty-str", "whitespace", "garbage-pem", "pem-header-only", "dashes",
             "der-integer", "garbage-der", "der-truncated", "non-ascii-str"],
    )
    def test_unparseable(self, data: bytes | str, fragment: str) -> None:
        with pytest.raises(BadCSR) as info:
            load_csr(data)
        assert fragment in str(info.value)
        assert info.value.code == "bad-csr"

    def test_a_certificate_is_not_a_csr(self, ec_key: PrivateKey) -> None:
        import datetime as dt

        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(GOOD_NAME).issuer_name(GOOD_NAME).public_key(ec_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(ec_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        for data in (cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.DER)):
            with pytest.raises(BadCSR, match="cannot be parsed"):
                load_csr(data)

    def test_too_large(self, ec_key: PrivateKey) -> None:
        data = pem(make_csr(ec_key))
        data += b"\n" * (MAX_CSR_BYTES + 1 - len(data))
        with pytest.raises(BadCSR, match=f"the CSR is {MAX_CSR_BYTES + 1} bytes; at most {MAX_CSR_BYTES} are accepted"):
            load_csr(data)
        with pytest.raises(BadCSR, match="at most 65536 are accepted"):
            load_csr(b"\x30" * (10 * MAX_CSR_BYTES))

    @pytest.mark.parametrize("key_fixture", ["rsa_key", "ec_key"])
    @pytest.mark.parametrize("offset", [-1, -5, -20])
    def test_tampered_signature(self, request: pytest.FixtureRequest, key_fixture: str, offset: int) -> None:
        key: PrivateKey = request.getfixturevalue(key_fixture)
        raw = bytearray(der(make_csr(key)))
        raw[offset] ^= 0x01  # inside the signature BIT STRING, the last field of the DER
        tampered = bytes(raw)
        # Still a well-formed request: only the signature is wrong.
        assert x509.load_der_x509_csr(tampered).subject == GOOD_NAME
        with pytest.raises(BadCSR, match="the CSR's signature does not verify: it does not prove possession"):
            load_csr(tampered)
        pem_form = x509.load_der_x509_csr(tampered).public_bytes(serialization.Encoding.PEM)
        with pytest.raises(BadCSR, match="signature does not verify"):
            load_csr(pem_form)

    def test_tampered_subject(self, rsa_key: PrivateKey) -> None:
        raw = der(make_csr(rsa_key))
        assert raw.count("王小明".encode()) == 1
        tampered = raw.replace("王小明".encode(), "王大明".encode())
        assert x509.load_der_x509_csr(tampered).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "王大明"
        with pytest.raises(BadCSR, match="signature does not verify"):
            load_csr(tampered)

    def test_signed_by_another_key(self, ec_key: PrivateKey) -> None:
        # Swap in the public key of another request: the signature no longer matches it.
        mine = make_csr(ec_key)
        theirs = make_csr(generate_private_key(KeyType.EC_P256))
        spki_mine = ec_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        spki_theirs = theirs.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        forged = der(mine).replace(spki_mine, spki_theirs)
        assert forged != der(mine)
        with pytest.raises(BadCSR, match="signature does not verify"):
            load_csr(forged)

    def test_rsa_1024(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        for data in (der(make_csr(key)), pem(make_csr(key))):
            with pytest.raises(WeakKey) as info:
                load_csr(data)
            assert "RSA key of 1024 bits is too small" in str(info.value)
            assert info.value.code == "weak-key"

    def test_unsupported_curve(self) -> None:
        key = ec.generate_private_key(ec.SECP256K1())
        with pytest.raises(WeakKey, match="elliptic curve secp256k1 is not accepted"):
            load_csr(der(make_csr(key)))  # type: ignore[arg-type]

    def test_sha1_from_openssl(self, openssl: OpenSSL, tmp_path: Path, rsa_key: PrivateKey) -> None:
        key_path = tmp_path / "key.pem"
        key_path.write_bytes(
            rsa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out = tmp_path / "req.csr"
        openssl("req", "-new", "-key", key_path, "-out", out, "-sha1",
                "-subj", f"/C=TW/CN=Wang/serialNumber={HOLDER_ID}")
        assert "sha1WithRSAEncryption" in openssl("req", "-in", out, "-noout", "-text").stdout
        with pytest.raises(BadCSR) as info:
            load_csr(out.read_bytes())
        assert "the CSR is signed with sha1; use SHA-256, SHA-384 or SHA-512" in str(info.value)

    def test_sha224(self, ec_key: PrivateKey) -> None:
        with pytest.raises(BadCSR, match="the CSR is signed with sha224; use SHA-256"):
            load_csr(der(make_csr(ec_key, algorithm=hashes.SHA224())))

    def test_ed25519_is_refused(self) -> None:
        # Refused either as an unsupported signature algorithm or an unsupported key.
        with pytest.raises(ValidationError) as info:
            load_csr(pem(make_csr(ed25519.Ed25519PrivateKey.generate())))
        assert isinstance(info.value, (BadCSR, WeakKey))


C_TW = (NameOID.COUNTRY_NAME, "TW")
CN = (NameOID.COMMON_NAME, "王小明")
SN = (NameOID.SERIAL_NUMBER, HOLDER_ID)


class TestSubject:
    @pytest.mark.parametrize(
        ("attrs", "fragment"),
        [
            ((), "the subject is empty: it needs C=TW, CN=<name> and serialNumber=<16 digits>"),
            ((C_TW, (NameOID.ORGANIZATION_NAME, "MOI"), CN, SN),
             "subject attribute organizationName is not allowed; a citizen certificate subject has only C, CN and serialNumber"),
            ((C_TW, CN, SN, (NameOID.EMAIL_ADDRESS, "a@example.tw")), "subject attribute emailAddress is not allowed"),
            (((NameOID.COUNTRY_NAME, "US"), CN, SN), "the subject country is 'US'; this CA issues only C=TW"),
            (((NameOID.COUNTRY_NAME, "tw"), CN, SN), "the subject country is 'tw'"),
            ((C_TW, CN), "the subject lacks serialNumber"),
            ((C_TW, SN), "the subject lacks commonName"),
            ((CN, SN), "the subject lacks countryName"),
            ((SN,), "the subject lacks countryName, commonName"),
            ((C_TW, CN, (NameOID.SERIAL_NUMBER, "000000011172955")),
             "holder number '000000011172955' must be exactly 16 ASCII digits"),
            ((C_TW, CN, (NameOID.SERIAL_NUMBER, "00000001117295530")), "must be exactly 16 ASCII digits"),
            ((C_TW, CN, (NameOID.SERIAL_NUMBER, "A123456789012345")), "must be exactly 16 ASCII digits"),
            ((C_TW, CN, SN, (NameOID.COMMON_NAME, "王大明")), "subject attribute commonName appears more than once"),
            ((C_TW, C_TW, CN, SN), "subject attribute countryName appears more than once"),
            ((C_TW, CN, SN, SN), "subject attribute serialNumber appears more than once"),
            ((C_TW, (NameOID.COMMON_NAME, "   "), SN), "the holder name (CN) is empty"),
        ],
        ids=["empty", "extra-O", "extra-email", "C=US", "C=tw", "no-serialNumber", "no-CN", "no-C", "only-serial",
             "serial-15", "serial-17", "serial-letters", "duplicate-CN", "duplicate-C", "duplicate-serial",
             "blank-CN"],
    )
    def test_refused(self, ec_key: PrivateKey, attrs: tuple[tuple[x509.ObjectIdentifier, str], ...], fragment: str) -> None:
        checked = load_csr(der(make_csr(ec_key, _name(*attrs))))  # the CSR itself is fine
        with pytest.raises(BadSubject) as info:
            checked.subject()
        assert fragment in str(info.value)
        assert info.value.code == "bad-subject"

    def test_order_of_attributes_does_not_matter(self, ec_key: PrivateKey) -> None:
        checked = load_csr(der(make_csr(ec_key, _name(SN, CN, C_TW))))
        assert checked.subject() == HolderSubject("王小明", HOLDER_ID)

    @pytest.mark.parametrize(
        ("email", "expected"), [(None, None), ("", None), ("  xiaoming@example.tw ", "xiaoming@example.tw")]
    )
    def test_email(self, ec_key: PrivateKey, email: str | None, expected: str | None) -> None:
        checked = load_csr(der(make_csr(ec_key)))
        assert checked.subject(email=email).email == expected

    def test_bad_email(self, ec_key: PrivateKey) -> None:
        checked = load_csr(der(make_csr(ec_key)))
        with pytest.raises(BadSubject, match="e-mail address '王@example.tw' is not a plain ASCII address"):
            checked.subject(email="王@example.tw")
