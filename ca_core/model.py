"""Domain values: frozen dataclasses and enums that carry their own wire values."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import re
from typing import Any

from cryptography import x509

from .errors import ValidationError

__all__ = [
    "AuditEntry",
    "CertRecord",
    "CertStatus",
    "END_ENTITY_REVOCATION_REASONS",
    "KeyType",
    "RevocationReason",
    "format_serial",
    "parse_serial",
    "parse_time",
    "serial_from_bytes",
    "serial_to_bytes",
]


class CertStatus(enum.StrEnum):
    """A certificate's status as PostgreSQL records it (DESIGN.md, certificate lifecycle)."""

    GOOD = "good"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class RevocationReason(enum.IntEnum):
    """RFC 5280 section 5.3.1 CRLReason, with its wire values (7 is unused)."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def rfc_name(self) -> str:
        """The RFC's camelCase name, e.g. ``keyCompromise``."""
        return _RFC_NAMES[self]

    @property
    def flag(self) -> x509.ReasonFlags:
        """The matching ``cryptography`` enum member, for encoding."""
        return _FLAGS[self]

    @classmethod
    def parse(cls, value: str | int) -> RevocationReason:
        """Accept a code (``1``), an RFC name (``keyCompromise``) or a snake/kebab name."""
        if isinstance(value, bool):
            raise ValidationError(f"revocation reason {value!r} is not a reason")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ValidationError(
                    f"revocation reason {value} is not an RFC 5280 CRLReason code "
                    f"(valid: {', '.join(str(int(r)) for r in cls)})"
                ) from None
        text = str(value).strip()
        if text.isascii() and text.isdigit() and len(text) <= 3:
            return cls.parse(int(text))
        key = re.sub(r"[^a-z]", "", text.lower())
        for reason in cls:
            if key == reason.name.lower().replace("_", ""):
                return reason
        raise ValidationError(
            f"revocation reason {text!r} is not an RFC 5280 CRLReason (valid: {', '.join(r.rfc_name for r in cls)})"
        )


_RFC_NAMES = {
    RevocationReason.UNSPECIFIED: "unspecified",
    RevocationReason.KEY_COMPROMISE: "keyCompromise",
    RevocationReason.CA_COMPROMISE: "cACompromise",
    RevocationReason.AFFILIATION_CHANGED: "affiliationChanged",
    RevocationReason.SUPERSEDED: "superseded",
    RevocationReason.CESSATION_OF_OPERATION: "cessationOfOperation",
    RevocationReason.CERTIFICATE_HOLD: "certificateHold",
    RevocationReason.REMOVE_FROM_CRL: "removeFromCRL",
    RevocationReason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    RevocationReason.AA_COMPROMISE: "aACompromise",
}

_FLAGS = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.REMOVE_FROM_CRL: x509.ReasonFlags.remove_from_crl,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    RevocationReason.AA_COMPROMISE: x509.ReasonFlags.aa_compromise,
}

#: Reasons an operator may give when revoking a certificate. certificateHold is
#: what "suspend" records and removeFromCRL what "resume" produces in a delta CRL,
#: so neither is a revocation reason of its own; cACompromise is for CA
#: certificates and aACompromise for attribute authorities (RFC 5280 5.3.1).
END_ENTITY_REVOCATION_REASONS = frozenset(
    {
        RevocationReason.UNSPECIFIED,
        RevocationReason.KEY_COMPROMISE,
        RevocationReason.AFFILIATION_CHANGED,
        RevocationReason.SUPERSEDED,
        RevocationReason.CESSATION_OF_OPERATION,
        RevocationReason.PRIVILEGE_WITHDRAWN,
    }
)


class KeyType(enum.StrEnum):
    """Key types the CA generates and accepts."""

    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"

    @classmethod
    def parse(cls, value: str) -> KeyType:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValidationError(
                f"key type {value!r} is not supported (valid: {', '.join(k.value for k in cls)})"
            ) from None


# Serial numbers ---------------------------------------------------------------

_HEX = re.compile(r"^[0-9a-f]+$")


def format_serial(serial: int) -> str:
    """Upper-case hex, as MOICA's own look-up page prints serials (seed 001)."""
    return format(serial, "X")


def parse_serial(text: str | int) -> int:
    """Parse a serial given as hex (``50CDEC…``, ``50:cd:ec``, ``0x50cd…``) or an int."""
    if isinstance(text, int) and not isinstance(text, bool):
        serial = text
    else:
        cleaned = str(text).strip().lower().replace(":", "").replace(" ", "")
        if cleaned.startswith("0x"):
            cleaned = cleaned[2:]
        if not cleaned or len(cleaned) > 64 or not _HEX.fullmatch(cleaned):
            raise ValidationError(f"serial {str(text)!r} is not a hexadecimal number")
        serial = int(cleaned, 16)
    if serial <= 0 or serial.bit_length() > 159:
        raise ValidationError(
            f"serial {text!r} is out of range: RFC 5280 4.1.2.2 wants a positive integer of at most 20 octets"
        )
    return serial


def serial_to_bytes(serial: int) -> bytes:
    """The minimal big-endian encoding used as the database key."""
    return serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")


def serial_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


# Records ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CertRecord:
    """One certificate as the system of record holds it."""

    issuer: str
    serial: int
    profile: str
    subject: str
    holder_id: str | None
    not_before: dt.datetime
    not_after: dt.datetime
    status: CertStatus
    revoked_at: dt.datetime | None
    reason: RevocationReason | None
    invalidity_date: dt.datetime | None
    crl_partition: int
    issued_at: dt.datetime
    updated_at: dt.datetime
    der: bytes = dataclasses.field(repr=False)

    @property
    def serial_hex(self) -> str:
        return format_serial(self.serial)

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    def to_json(self, *, with_der: bool = False) -> dict[str, Any]:
        """A JSON-ready summary; the DER is left out unless asked for."""
        out: dict[str, Any] = {
            "issuer": self.issuer,
            "serial": self.serial_hex,
            "profile": self.profile,
            "subject": self.subject,
            "holder_id": self.holder_id,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "status": self.status.value,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason.rfc_name if self.reason is not None else None,
            "invalidity_date": self.invalidity_date.isoformat() if self.invalidity_date else None,
            "crl_partition": self.crl_partition,
            "issued_at": self.issued_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
        if with_der:
            out["der_base64"] = base64.b64encode(self.der).decode()
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the append-only audit log."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    issuer: str | None
    serial: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    idempotency_key: str | None
    #: Position in the hash chain and this row's hash (see ca_core.audit).
    chain_seq: int | None = None
    row_hash: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "issuer": self.issuer,
            "serial": format_serial(self.serial) if self.serial is not None else None,
            "before": self.before,
            "after": self.after,
            "idempotency_key": self.idempotency_key,
            "chain_seq": self.chain_seq,
            "row_hash": self.row_hash.hex() if self.row_hash is not None else None,
        }


def parse_time(text: str, what: str = "time") -> dt.datetime:
    """An ISO 8601 date-time with a time zone ('Z' accepted), as UTC; ValidationError otherwise."""
    if not isinstance(text, str):
        raise ValidationError(f"{what} must be an ISO 8601 date-time string")
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{what} {text!r} is not an ISO 8601 date-time (e.g. 2026-05-01T08:00:00Z)") from None
    if value.tzinfo is None:
        raise ValidationError(f"{what} {text!r} has no time zone; add Z for UTC")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 lies before datetime.min in UTC
        raise ValidationError(f"{what} {text!r} is out of range") from None
