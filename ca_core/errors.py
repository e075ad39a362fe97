"""The small, flat set of errors the CA core raises.

Every error carries a stable ``code`` (a short slug). The edges map codes to their
own vocabulary once: the admin API to RFC 9457 problem types, the CLI to exit
statuses and messages. Nothing in ``ca_core`` knows about HTTP.

Messages are written for the operator who will read them: they name the thing that
is wrong and, where it helps, what would be right.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadCSR",
    "BadSubject",
    "CAError",
    "CertificateExpired",
    "ConfigurationError",
    "IdempotencyConflict",
    "IllegalTransition",
    "IssuerUnavailable",
    "KeyStoreError",
    "MalformedRequest",
    "MigrationError",
    "NotFound",
    "StorageError",
    "UnknownCertificate",
    "UnknownIssuer",
    "ValidationError",
    "WeakKey",
    "WrongPassphrase",
]


class CAError(Exception):
    """Base class of every error raised on purpose by ``ca_core``."""

    code: ClassVar[str] = "ca-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(CAError):
    """A request value is malformed or outside what policy allows."""

    code = "validation"


class BadCSR(ValidationError):
    """The PKCS#10 request cannot be parsed, or its signature (proof of possession) fails."""

    code = "bad-csr"


class WeakKey(ValidationError):
    """The public key is of a type, size, curve or exponent that policy refuses."""

    code = "weak-key"


class BadSubject(ValidationError):
    """The subject name does not fit the certificate profile."""

    code = "bad-subject"


class MalformedRequest(ValidationError):
    """An OCSP request that is not a well-formed, single-certificate OCSPRequest (RFC 6960
    4.1). The responder answers it with ``malformedRequest`` and HTTP 400."""

    code = "malformed-request"


class NotFound(CAError):
    """Something named in the request does not exist."""

    code = "not-found"


class UnknownIssuer(NotFound):
    code = "unknown-issuer"


class UnknownCertificate(NotFound):
    code = "unknown-certificate"


class IllegalTransition(CAError):
    """The lifecycle state machine does not allow this operation from the current state."""

    code = "illegal-transition"

    def __init__(self, message: str, *, current: str, operation: str) -> None:
        super().__init__(message)
        self.current = current
        self.operation = operation


class CertificateExpired(IllegalTransition):
    """The operation makes no sense for a certificate past its notAfter."""

    code = "certificate-expired"


class IssuerUnavailable(CAError):
    """The issuing CA's own certificate is revoked or suspended: it must not sign anything."""

    code = "issuer-unavailable"


class IdempotencyConflict(CAError):
    """An idempotency key was reused for a different request."""

    code = "conflict"


class KeyStoreError(CAError):
    """A private key cannot be stored or loaded."""

    code = "key-store"


class WrongPassphrase(KeyStoreError):
    code = "wrong-passphrase"


class ConfigurationError(CAError):
    """A setting is missing or invalid; the message names the setting."""

    code = "configuration"


class StorageError(CAError):
    """PostgreSQL or Redis/Valkey is unreachable or refused the operation."""

    code = "storage"


class MigrationError(StorageError):
    """The database schema cannot be brought to the version this code needs."""

    code = "migration"
