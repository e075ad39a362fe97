"""Certificate profiles and the values they are checked against (sans-IO).

The end-entity profiles follow the citizen certificate shown in seed 001: every
card carries a *signing* certificate (digitalSignature + nonRepudiation) and an
*encryption* certificate (keyEncipherment + dataEncipherment), with the subject
``C=TW, CN=<name>, serialNumber=<16-digit holder number>``, an rfc822Name when
the holder gave an e-mail address, AIA, a CRL distribution point and a
certificate policy. Validity defaults to five years, as on the real cards.

CA-side profiles (root, issuing CA, delegated OCSP signer) live here too, so that
every extension this CA ever writes is decided in one module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import quote, urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from .errors import BadSubject, ConfigurationError, ValidationError

__all__ = [
    "ADMIN_CLIENT",
    "CA_VALIDITY",
    "CITIZEN_PROFILES",
    "CITIZEN_ENCRYPTION",
    "CITIZEN_SIGNING",
    "DEFAULT_POLICY_OID",
    "END_ENTITY_PROFILES",
    "EndEntityProfile",
    "HolderSubject",
    "OCSP_SIGNER_VALIDITY",
    "PublicURLs",
    "ROOT_VALIDITY",
    "get_profile",
    "subject_text",
    "validate_issuer_slug",
]

#: id-tw-gpki-certpolicy-class3Assurance: Taiwan's GPKI certificate policy arc
#: (2.16.886.101.0.3) at assurance level 3, the level MOICA's look-up page shows
#: for citizen certificates ("憑證等級 第3級", seed 001).
DEFAULT_POLICY_OID = "2.16.886.101.0.3.3"

ROOT_VALIDITY = dt.timedelta(days=20 * 365 + 5)
CA_VALIDITY = dt.timedelta(days=10 * 365 + 2)
OCSP_SIGNER_VALIDITY = dt.timedelta(days=30)
#: Citizen certificates are valid for five years (seed 001: 2011-06-07 to 2016-06-07).
DEFAULT_EE_VALIDITY = dt.timedelta(days=5 * 365 + 1)
#: notBefore is set this far in the past to absorb relying parties' clock skew.
BACKDATE = dt.timedelta(minutes=5)

_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_HOLDER_ID = re.compile(r"^[0-9]{16}$")
# A deliberately plain check: rfc822Name is an IA5String, so ASCII only, and we
# want a visible mistake refused rather than every RFC 5322 oddity accepted.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
#: ub-common-name (RFC 5280 Appendix A).
_MAX_CN = 64


def subject_text(name: x509.Name) -> str:
    """RFC 4514 text of a name, spelling serialNumber out (cryptography prints its OID)."""
    return name.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"})


def validate_issuer_slug(slug: str) -> str:
    """Issuer names appear in URLs (``/crl/moica/3.crl``), so keep them URL-plain."""
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise ValidationError(
            f"issuer name {slug!r} is not valid: use 1-31 lower-case letters, digits or '-', "
            "starting with a letter (it becomes part of every CRL and CA URL)"
        )
    return slug


@dataclasses.dataclass(frozen=True, slots=True)
class PublicURLs:
    """Where the public responder can be reached; written into every certificate.

    Certificates carry these URLs for life, so the base should be the name relying
    parties will always reach (a load balancer or CDN), not a machine's address.
    """

    base: str

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or any(c.isspace() or not c.isprintable() for c in self.base):
            raise ConfigurationError(f"public base URL {self.base!r} must not contain spaces or control characters")
        if not self.base.isascii():
            raise ConfigurationError(
                f"public base URL {self.base!r} must be ASCII: write an international domain name in its xn-- form"
            )
        if "?" in self.base or "#" in self.base:
            raise ConfigurationError(f"public base URL {self.base!r} must not have a query or fragment")
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"public base URL {self.base!r} must be an absolute http:// or https:// URL")
        object.__setattr__(self, "base", self.base.rstrip("/"))

    @property
    def ocsp(self) -> str:
        return f"{self.base}/ocsp"

    def ca_certificate(self, issuer: str) -> str:
        return f"{self.base}/ca/{quote(issuer)}.crt"

    def full_crl(self, issuer: str) -> str:
        return f"{self.base}/crl/{quote(issuer)}.crl"

    def partition_crl(self, issuer: str, partition: int) -> str:
        return f"{self.base}/crl/{quote(issuer)}/{partition}.crl"

    def delta_crl(self, issuer: str, partition: int | None = None) -> str:
        """The delta CRL next to a base CRL: the issuer-wide one, or a partition's.

        RFC 5280 5.2.4: a delta CRL completes only a base CRL of the same scope, and a
        partition CRL's scope is its issuingDistributionPoint; so a certificate whose CRL
        distribution point names a partition must name that partition's delta too.
        """
        if partition is None:
            return f"{self.base}/crl/{quote(issuer)}/delta.crl"
        return f"{self.base}/crl/{quote(issuer)}/{partition}/delta.crl"


@dataclasses.dataclass(frozen=True, slots=True)
class HolderSubject:
    """The identity of a card holder, as it appears in the subject name.

    :param name: the holder's name (CN), in any script; encoded as UTF8String.
    :param holder_id: the 16-digit holder number (subject serialNumber attribute).
    :param email: optional address, written as an rfc822Name SAN.
    """

    name: str
    holder_id: str
    email: str | None = None

    def __post_init__(self) -> None:
        name = unicodedata.normalize("NFC", self.name.strip()) if isinstance(self.name, str) else ""
        if not name:
            raise BadSubject("the holder name (CN) is empty")
        if len(name) > _MAX_CN or len(name.encode()) > _MAX_CN:
            # RFC 5280 counts characters, but cryptography (and other encoders) count the
            # UTF-8 bytes; staying within both keeps every certificate encodable: up to
            # 64 Latin letters or 21 CJK characters, room for any real name on a card.
            raise BadSubject(
                f"the holder name is {len(name)} characters ({len(name.encode())} bytes of UTF-8); "
                f"CN allows at most {_MAX_CN} bytes"
            )
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
            raise BadSubject("the holder name contains control or format characters")
        object.__setattr__(self, "name", name)
        holder_id = self.holder_id.strip() if isinstance(self.holder_id, str) else ""
        if not _HOLDER_ID.fullmatch(holder_id):
            raise BadSubject(
                f"holder number {self.holder_id!r} must be exactly 16 ASCII digits "
                "(seed 001 shows e.g. 0000000111729553)"
            )
        object.__setattr__(self, "holder_id", holder_id)
        if self.email is not None:
            email = self.email.strip()
            if not email:
                object.__setattr__(self, "email", None)
            elif len(email) > 254 or not _EMAIL.fullmatch(email):
                raise BadSubject(f"e-mail address {self.email!r} is not a plain ASCII address")
            else:
                object.__setattr__(self, "email", email)

    def x509_name(self) -> x509.Name:
        """``C=TW, CN=<name>, serialNumber=<holder id>`` in that RDN order (seed 001)."""
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"),
                x509.NameAttribute(NameOID.COMMON_NAME, self.name),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, self.holder_id),
            ]
        )

    @classmethod
    def from_x509_name(cls, name: x509.Name, *, email: str | None = None) -> HolderSubject:
        """Read and check a subject taken from a CSR."""
        if len(name) == 0:
            raise BadSubject("the subject is empty: it needs C=TW, CN=<name> and serialNumber=<16 digits>")
        allowed = {NameOID.COUNTRY_NAME, NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER}
        seen: dict[ObjectIdentifier, str] = {}
        for rdn in name.rdns:
            for attr in rdn:
                if attr.oid not in allowed:
                    raise BadSubject(
                        f"subject attribute {attr.oid._name or attr.oid.dotted_string} is not allowed; "
                        "a citizen certificate subject has only C, CN and serialNumber"
                    )
                if attr.oid in seen:
                    raise BadSubject(f"subject attribute {attr.oid._name} appears more than once")
                value = attr.value
                if not isinstance(value, str):
                    raise BadSubject(f"subject attribute {attr.oid._name} is not a string")
                seen[attr.oid] = value
        missing = [
            oid._name for oid in (NameOID.COUNTRY_NAME, NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER) if oid not in seen
        ]
        if missing:
            raise BadSubject(f"the subject lacks {', '.join(missing)}: it needs C=TW, CN and serialNumber")
        if seen[NameOID.COUNTRY_NAME] != "TW":
            raise BadSubject(f"the subject country is {seen[NameOID.COUNTRY_NAME]!r}; this CA issues only C=TW")
        return cls(name=seen[NameOID.COMMON_NAME], holder_id=seen[NameOID.SERIAL_NUMBER], email=email)


@dataclasses.dataclass(frozen=True, slots=True)
class EndEntityProfile:
    """What a kind of end-entity certificate looks like.

    :param name: the profile's identifier, stored with every certificate.
    :param rsa_key_usage: keyUsage bits set for an RSA subject key.
    :param ec_key_usage: keyUsage bits set for an EC subject key; ``None`` refuses EC keys.
    :param validity: default lifetime.
    :param policy_oids: certificatePolicies written into the certificate.
    :param extended_key_usage: extendedKeyUsage purposes; none (no extension) for citizen
        certificates, whose uses the keyUsage bits already say.
    """

    name: str
    description: str
    rsa_key_usage: frozenset[str]
    ec_key_usage: frozenset[str] | None
    validity: dt.timedelta = DEFAULT_EE_VALIDITY
    policy_oids: tuple[str, ...] = (DEFAULT_POLICY_OID,)
    extended_key_usage: tuple[ObjectIdentifier, ...] = ()

    def key_usage(self, *, is_ec: bool) -> x509.KeyUsage:
        bits = self.ec_key_usage if is_ec else self.rsa_key_usage
        if bits is None:  # pragma: no cover - guarded by the caller
            raise ValidationError(f"profile {self.name} does not accept EC keys")
        return key_usage(bits)


def key_usage(bits: frozenset[str] | set[str]) -> x509.KeyUsage:
    """Build a KeyUsage from the names of the bits that are set."""
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    )
    unknown = set(bits) - set(names)
    if unknown:  # pragma: no cover - profiles are module constants
        raise ValueError(f"unknown keyUsage bits {sorted(unknown)}")
    return x509.KeyUsage(
        **{n: n in bits for n in names},
        encipher_only=False,
        decipher_only=False,
    )


#: 簽章用: signing certificate. nonRepudiation is spelled content_commitment in X.509 (2008).
CITIZEN_SIGNING = EndEntityProfile(
    name="citizen-signing",
    description="citizen signing certificate (簽章用): digitalSignature, nonRepudiation",
    rsa_key_usage=frozenset({"digital_signature", "content_commitment"}),
    ec_key_usage=frozenset({"digital_signature", "content_commitment"}),
)

#: 加密用: encryption certificate. keyEncipherment has no meaning for an EC key, which
#: is used for key agreement (ECDH) instead (RFC 5480 section 3), so an EC subject key
#: gets keyAgreement in place of keyEncipherment/dataEncipherment.
CITIZEN_ENCRYPTION = EndEntityProfile(
    name="citizen-encryption",
    description="citizen encryption certificate (加密用): keyEncipherment, dataEncipherment",
    rsa_key_usage=frozenset({"key_encipherment", "data_encipherment"}),
    ec_key_usage=frozenset({"key_agreement"}),
)

#: An admin's TLS client certificate for the admin API (clientAuth only). Its holder is a
#: person (CA staff are citizens too), named like any holder. It opens the admin API only
#: while it is registered to a credential ('certstatus admin cert create') and its status
#: here is good; valid one year, as staff credentials are reviewed yearly.
ADMIN_CLIENT = EndEntityProfile(
    name="admin-client",
    description="CA staff TLS client certificate for the admin API: digitalSignature, clientAuth",
    rsa_key_usage=frozenset({"digital_signature"}),
    ec_key_usage=frozenset({"digital_signature"}),
    validity=dt.timedelta(days=366),
    extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
)

END_ENTITY_PROFILES: Mapping[str, EndEntityProfile] = MappingProxyType(
    {p.name: p for p in (CITIZEN_SIGNING, CITIZEN_ENCRYPTION, ADMIN_CLIENT)}
)
#: The profiles of the citizen cards: what registration officers issue through the API.
CITIZEN_PROFILES: frozenset[str] = frozenset({CITIZEN_SIGNING.name, CITIZEN_ENCRYPTION.name})

#: Profiles of certificates the CA issues to itself; they are recorded like any other.
ISSUING_CA_PROFILE = "issuing-ca"
OCSP_SIGNER_PROFILE = "ocsp-signer"


def get_profile(name: str) -> EndEntityProfile:
    try:
        return END_ENTITY_PROFILES[name]
    except KeyError:
        raise ValidationError(
            f"unknown certificate profile {name!r} (valid: {', '.join(END_ENTITY_PROFILES)})"
        ) from None
