"""Admin API credentials and roles (sans-IO).

A token reads ``cst_<id>_<secret>``: the id finds the row, the secret (32 random bytes,
base64url) is checked against the stored SHA-256 in constant time. Tokens are created with
the CLI, shown once and stored only as hashes.

Roles (issue 5): an *operator* may do everything; a *registration officer* may issue,
suspend and resume (the counter work of 戶政事務所 staff) but not revoke; an *auditor* may
only read. :data:`PERMISSIONS` is the table the admin API enforces.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from .errors import CAError, ValidationError

__all__ = [
    "PERMISSIONS",
    "Action",
    "NewToken",
    "Role",
    "TokenParts",
    "Unauthorized",
    "hash_secret",
    "make_token",
    "parse_token",
    "verify_secret",
]

_TOKEN: Final = re.compile(r"^cst_([1-9][0-9]{0,18})_([A-Za-z0-9_-]{43})$")
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Unauthorized(CAError):
    """No credentials, or credentials that do not open anything."""

    code = "unauthorized"


class Role(enum.StrEnum):
    OPERATOR = "operator"
    REGISTRATION_OFFICER = "registration-officer"
    AUDITOR = "auditor"

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text)
        except ValueError:
            raise ValidationError(f"unknown role {text!r} (valid: {', '.join(r.value for r in cls)})") from None


class Action(enum.StrEnum):
    READ = "read"
    ISSUE = "issue"
    REVOKE = "revoke"
    SUSPEND = "suspend"
    RESUME = "resume"


PERMISSIONS: Final[Mapping[Role, frozenset[Action]]] = MappingProxyType({
    Role.OPERATOR: frozenset(Action),
    Role.REGISTRATION_OFFICER: frozenset({Action.READ, Action.ISSUE, Action.SUSPEND, Action.RESUME}),
    Role.AUDITOR: frozenset({Action.READ}),
})  # fmt: skip


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"token name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def verify_secret(secret: str, stored: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenParts:
    token_id: int
    secret: str


def parse_token(text: str) -> TokenParts:
    """Split a presented token; :class:`Unauthorized` if it cannot be one of ours."""
    match = _TOKEN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) >= 2**63:  # ids are bigint
        raise Unauthorized("the bearer token is not a certstatus token (cst_<id>_<secret>)")
    return TokenParts(int(match.group(1)), match.group(2))


@dataclasses.dataclass(frozen=True, slots=True)
class NewToken:
    """A secret made for a token row: ``text(id)`` is what the user gets, once."""

    secret: str

    @property
    def secret_hash(self) -> bytes:
        return hash_secret(self.secret)

    def text(self, token_id: int) -> str:
        return f"cst_{token_id}_{self.secret}"


def make_token() -> NewToken:
    return NewToken(base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode())
