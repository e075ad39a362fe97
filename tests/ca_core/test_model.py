"""Domain values: revocation reasons, serial numbers, key types and the record's JSON form."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509

from ca_core.errors import ValidationError
from ca_core.model import (
    END_ENTITY_REVOCATION_REASONS,
    CertRecord,
    CertStatus,
    KeyType,
    RevocationReason,
    format_serial,
    parse_serial,
    serial_from_bytes,
    serial_to_bytes,
)

R = RevocationReason

#: Every member with its RFC 5280 wire code, camelCase name and cryptography flag.
REASONS = [
    (R.UNSPECIFIED, 0, "unspecified", x509.ReasonFlags.unspecified),
    (R.KEY_COMPROMISE, 1, "keyCompromise", x509.ReasonFlags.key_compromise),
    (R.CA_COMPROMISE, 2, "cACompromise", x509.ReasonFlags.ca_compromise),
    (R.AFFILIATION_CHANGED, 3, "affiliationChanged", x509.ReasonFlags.affiliation_changed),
    (R.SUPERSEDED, 4, "superseded", x509.ReasonFlags.superseded),
    (R.CESSATION_OF_OPERATION, 5, "cessationOfOperation", x509.ReasonFlags.cessation_of_operation),
    (R.CERTIFICATE_HOLD, 6, "certificateHold", x509.ReasonFlags.certificate_hold),
    (R.REMOVE_FROM_CRL, 8, "removeFromCRL", x509.ReasonFlags.remove_from_crl),
    (R.PRIVILEGE_WITHDRAWN, 9, "privilegeWithdrawn", x509.ReasonFlags.privilege_withdrawn),
    (R.AA_COMPROMISE, 10, "aACompromise", x509.ReasonFlags.aa_compromise),
]
REASON_IDS = [r.name for r, *_ in REASONS]


class TestRevocationReason:
    def test_table_covers_every_member(self) -> None:
        assert [r for r, *_ in REASONS] == list(RevocationReason)

    @pytest.mark.parametrize(("reason", "code", "rfc_name", "flag"), REASONS, ids=REASON_IDS)
    def test_wire_code_name_and_flag(
        self, reason: RevocationReason, code: int, rfc_name: str, flag: x509.ReasonFlags
    ) -> None:
        assert int(reason) == code
        assert reason.rfc_name == rfc_name
        assert reason.flag is flag

    @pytest.mark.parametrize(("reason", "code", "rfc_name", "flag"), REASONS, ids=REASON_IDS)
    def test_parse_every_spelling(
        self, reason: RevocationReason, code: int, rfc_name: str, flag: x509.ReasonFlags
    ) -> None:
        snake = reason.name.lower()
        kebab = snake.replace("_", "-")
        spellings = [code, str(code), f" {code} ", rfc_name, f"  {rfc_name}\n", snake, kebab, reason.name,
                     kebab.upper(), rfc_name.lower()]
        for spelling in spellings:
            parsed = RevocationReason.parse(spelling)
            assert parsed is reason, spelling

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("keyCompromise", R.KEY_COMPROMISE),
            ("cACompromise", R.CA_COMPROMISE),
            ("aACompromise", R.AA_COMPROMISE),
            ("removeFromCRL", R.REMOVE_FROM_CRL),
            ("remove_from_crl", R.REMOVE_FROM_CRL),
            ("remove-from-crl", R.REMOVE_FROM_CRL),
            ("ca-compromise", R.CA_COMPROMISE),
            ("certificate_hold", R.CERTIFICATE_HOLD),
            ("Key Compromise", R.KEY_COMPROMISE),
            ("08", R.REMOVE_FROM_CRL),
        ],
    )
    def test_parse_names(self, text: str, expected: RevocationReason) -> None:
        assert RevocationReason.parse(text) is expected

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            (7, "revocation reason 7 is not an RFC 5280 CRLReason code"),
            ("7", "revocation reason 7 is not an RFC 5280 CRLReason code"),
            (11, "revocation reason 11 is not an RFC 5280 CRLReason code"),
            (-1, "revocation reason -1 is not an RFC 5280 CRLReason code"),
            ("bogus", "revocation reason 'bogus' is not an RFC 5280 CRLReason"),
            ("", "revocation reason '' is not an RFC 5280 CRLReason"),
            ("keyCompromised", "'keyCompromised' is not an RFC 5280 CRLReason"),
            ("1.0", "'1.0' is not an RFC 5280 CRLReason"),
            (True, "revocation reason True is not a reason"),
            (False, "revocation reason False is not a reason"),
        ],
    )
    def test_parse_refuses(self, value: object, fragment: str) -> None:
        with pytest.raises(ValidationError) as info:
            RevocationReason.parse(value)  # type: ignore[arg-type]
        assert fragment in str(info.value)
        assert info.value.code == "validation"

    def test_refusal_lists_the_valid_values(self) -> None:
        with pytest.raises(ValidationError, match=r"valid: 0, 1, 2, 3, 4, 5, 6, 8, 9, 10\)"):
            RevocationReason.parse(7)
        with pytest.raises(ValidationError) as info:
            RevocationReason.parse("bogus")
        assert "keyCompromise" in str(info.value) and "removeFromCRL" in str(info.value)

    @pytest.mark.parametrize(
        "value",
        [
            "²",  # str.isdigit() is True, int() refuses it
            "9" * 5000,  # beyond Python's int-from-decimal-string limit
        ],
        ids=["superscript-two", "5000-digit-code"],
    )
    def test_parse_refuses_odd_digit_strings_with_validation_error(self, value: str) -> None:
        # parse() takes operator/API input: anything that is not a reason must be a
        # ValidationError (which the edges map to a 4xx), never a bare ValueError.
        with pytest.raises(ValidationError, match="revocation reason"):
            RevocationReason.parse(value)

    def test_end_entity_reasons(self) -> None:
        assert END_ENTITY_REVOCATION_REASONS == {
            R.UNSPECIFIED, R.KEY_COMPROMISE, R.AFFILIATION_CHANGED, R.SUPERSEDED,
            R.CESSATION_OF_OPERATION, R.PRIVILEGE_WITHDRAWN,
        }
        for excluded in (R.CERTIFICATE_HOLD, R.REMOVE_FROM_CRL, R.CA_COMPROMISE, R.AA_COMPROMISE):
            assert excluded not in END_ENTITY_REVOCATION_REASONS


class TestSerials:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("50CDEC", 0x50CDEC),
            ("50cdec", 0x50CDEC),
            ("50:cd:ec", 0x50CDEC),
            ("50:CD:EC", 0x50CDEC),
            ("0x50cdec", 0x50CDEC),
            ("0X50CDEC", 0x50CDEC),
            ("  50 cd ec \n", 0x50CDEC),
            ("0x00:01", 1),
            ("1", 1),
            ("10", 16),  # text is always hex, never decimal
            (1, 1),
            (0x50CDEC, 0x50CDEC),
            ("7f" + "ff" * 19, 2**159 - 1),  # the largest serial of 20 DER octets
            (2**159 - 1, 2**159 - 1),
        ],
    )
    def test_parse(self, text: str | int, expected: int) -> None:
        assert parse_serial(text) == expected

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ("", "serial '' is not a hexadecimal number"),
            ("   ", "is not a hexadecimal number"),
            ("0x", "serial '0x' is not a hexadecimal number"),
            ("xyz", "serial 'xyz' is not a hexadecimal number"),
            ("50cg", "serial '50cg' is not a hexadecimal number"),
            ("-5", "serial '-5' is not a hexadecimal number"),
            ("5_0", "is not a hexadecimal number"),
            ("５０", "is not a hexadecimal number"),  # full-width digits
            (True, "serial 'True' is not a hexadecimal number"),
            (0, "serial 0 is out of range"),
            ("0", "serial '0' is out of range"),
            ("00:00", "is out of range"),
            (-1, "serial -1 is out of range"),
            (2**159, "out of range: RFC 5280 4.1.2.2 wants a positive integer of at most 20 octets"),
            ("80" + "00" * 19, "out of range"),
            ("01" + "00" * 20, "out of range"),  # 21 octets
        ],
    )
    def test_parse_refuses(self, value: str | int, fragment: str) -> None:
        with pytest.raises(ValidationError) as info:
            parse_serial(value)
        assert fragment in str(info.value)

    @pytest.mark.parametrize(
        ("serial", "text"),
        [(1, "1"), (0xAB, "AB"), (0x50CDEC, "50CDEC"), (0x0102, "102"), (2**159 - 1, "7F" + "FF" * 19)],
    )
    def test_format(self, serial: int, text: str) -> None:
        assert format_serial(serial) == text
        assert parse_serial(format_serial(serial)) == serial

    @pytest.mark.parametrize(
        ("serial", "raw"),
        [
            (1, b"\x01"),
            (0x7F, b"\x7f"),
            (0x80, b"\x80"),
            (0xFF, b"\xff"),
            (0x100, b"\x01\x00"),
            (0x50CDEC, b"\x50\xcd\xec"),
            (2**159 - 1, b"\x7f" + b"\xff" * 19),
        ],
    )
    def test_bytes_round_trip(self, serial: int, raw: bytes) -> None:
        assert serial_to_bytes(serial) == raw
        assert serial_from_bytes(raw) == serial
        assert serial_from_bytes(serial_to_bytes(serial)) == serial

    def test_bytes_are_minimal(self) -> None:
        for bits in range(1, 160):
            serial = (1 << (bits - 1)) | 1
            raw = serial_to_bytes(serial)
            assert len(raw) == (bits + 7) // 8
            assert raw[0] != 0
            assert serial_from_bytes(raw) == serial


class TestKeyType:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("rsa2048", KeyType.RSA2048),
            ("RSA3072", KeyType.RSA3072),
            (" rsa4096 \n", KeyType.RSA4096),
            ("ec-p256", KeyType.EC_P256),
            ("EC-P384", KeyType.EC_P384),
        ],
    )
    def test_parse(self, text: str, expected: KeyType) -> None:
        assert KeyType.parse(text) is expected

    @pytest.mark.parametrize("text", ["", "rsa1024", "ec_p256", "p256", "ec-p521", "ed25519", "rsa 2048"])
    def test_parse_refuses(self, text: str) -> None:
        with pytest.raises(ValidationError) as info:
            KeyType.parse(text)
        message = str(info.value)
        assert f"key type {text!r} is not supported" in message
        assert "valid: rsa2048, rsa3072, rsa4096, ec-p256, ec-p384" in message


T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


def _record(**changes: object) -> CertRecord:
    fields: dict[str, object] = dict(
        issuer="moica",
        serial=0x50CDEC,
        profile="citizen-signing",
        subject="C=TW,CN=王小明,serialNumber=0000000111729553",
        holder_id="0000000111729553",
        not_before=T0,
        not_after=T0 + dt.timedelta(days=1826),
        status=CertStatus.GOOD,
        revoked_at=None,
        reason=None,
        invalidity_date=None,
        crl_partition=3,
        issued_at=T0,
        updated_at=T0 + dt.timedelta(hours=1),
        der=b"\x30\x03\x02\x01\x01",
    )
    fields.update(changes)
    return CertRecord(**fields)  # type: ignore[arg-type]


class TestCertRecordJSON:
    def test_good_record(self) -> None:
        assert _record().to_json() == {
            "issuer": "moica",
            "serial": "50CDEC",
            "profile": "citizen-signing",
            "subject": "C=TW,CN=王小明,serialNumber=0000000111729553",
            "holder_id": "0000000111729553",
            "not_before": "2026-05-01T08:00:00+00:00",
            "not_after": "2031-05-01T08:00:00+00:00",
            "status": "good",
            "revoked_at": None,
            "reason": None,
            "invalidity_date": None,
            "crl_partition": 3,
            "issued_at": "2026-05-01T08:00:00+00:00",
            "updated_at": "2026-05-01T09:00:00+00:00",
        }

    def test_revoked_record(self) -> None:
        out = _record(
            status=CertStatus.REVOKED,
            revoked_at=T0 + dt.timedelta(days=2),
            reason=R.KEY_COMPROMISE,
            invalidity_date=T0 + dt.timedelta(days=1),
        ).to_json()
        assert out["status"] == "revoked"
        assert out["revoked_at"] == "2026-05-03T08:00:00+00:00"
        assert out["reason"] == "keyCompromise"
        assert out["invalidity_date"] == "2026-05-02T08:00:00+00:00"

    def test_unspecified_reason_is_not_dropped(self) -> None:
        # UNSPECIFIED is 0, falsy as an int: it must still be written out.
        out = _record(status=CertStatus.SUSPENDED, revoked_at=T0, reason=R.UNSPECIFIED).to_json()
        assert out["reason"] == "unspecified"
        assert out["status"] == "suspended"

    def test_der_only_on_request(self) -> None:
        record = _record()
        assert "der_base64" not in record.to_json()
        with_der = record.to_json(with_der=True)
        assert base64.b64decode(with_der["der_base64"]) == record.der
        assert set(with_der) - set(record.to_json()) == {"der_base64"}

    def test_repr_leaves_out_the_der_and_serial_hex(self) -> None:
        record = _record(serial=0xABCDEF)
        assert "der=" not in repr(record)
        assert record.serial_hex == "ABCDEF"
