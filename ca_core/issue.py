"""Certificate construction: root, issuing CA, OCSP signer and citizen certificates (sans-IO).

These are pure functions: keys, names, times and serials come in, a signed
``x509.Certificate`` comes out. Nothing here reads the clock, touches storage or
chooses a serial on its own; :mod:`ca_core.lifecycle` does that around them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
)

from .errors import ValidationError, WeakKey
from .keystore import PrivateKey, PublicKey, check_public_key, signature_hash_for
from .profiles import (
    BACKDATE,
    CA_VALIDITY,
    OCSP_SIGNER_VALIDITY,
    ROOT_VALIDITY,
    EndEntityProfile,
    HolderSubject,
    PublicURLs,
    key_usage,
)

__all__ = [
    "SigningCA",
    "build_end_entity",
    "build_issuing_ca",
    "build_ocsp_signer",
    "build_root",
    "ca_name",
    "partition_for",
    "random_serial",
]


def random_serial() -> int:
    """A 16-octet positive serial with 126 random bits.

    Bit 127 is clear so the DER INTEGER needs no leading zero, and bit 126 is set so
    every serial has the same length (32 hex digits, like MOICA's), leaving 126 bits
    of CSPRNG output: well above the 64 bits CA/B Forum asks for.
    """
    return secrets.randbits(126) | (1 << 126)


def partition_for(serial: int, partitions: int) -> int:
    """The CRL partition of a serial: fixed at issuance from its low bits (Boulder does the same)."""
    if partitions < 1:
        raise ValidationError("an issuer needs at least one CRL partition")
    return serial % partitions


def ca_name(common_name: str, organization: str) -> x509.Name:
    """``C=TW, O=<organization>, CN=<common name>``; each at most 64 bytes (RFC 5280 upper bounds)."""
    for what, value in (("common name", common_name), ("organization", organization)):
        if not value.strip():
            raise ValidationError(f"the CA {what} is empty")
        if len(value.encode()) > 64:
            raise ValidationError(
                f"the CA {what} {value!r} is {len(value.encode())} bytes; at most 64 fit "
                "(choose a shorter CERTSTATUS_ORGANIZATION or --common-name)"
            )
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SigningCA:
    """A CA certificate with its private key, ready to sign.

    :param slug: the issuer's short name, as used in URLs.
    """

    slug: str
    certificate: x509.Certificate
    key: PrivateKey = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.key.public_key():
            raise ValidationError(f"the key of issuer {self.slug!r} does not match its certificate")

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def slow_to_sign(self) -> bool:
        """RSA signatures cost milliseconds, ECDSA tens of microseconds (bench/issuance.py).

        Callers on an event loop hand slow signatures to a worker thread and do quick ones
        inline, where a thread hand-off would cost more than it saves.
        """
        return isinstance(self.key, rsa.RSAPrivateKey)

    def _clamp(self, not_after: dt.datetime) -> dt.datetime:
        # RFC 5280 does not forbid outliving the issuer, but such a certificate
        # cannot be validated past the issuer's end; we never write one.
        return min(not_after, self.not_after)

    def _check_usable(self, now: dt.datetime) -> None:
        if not (self.certificate.not_valid_before_utc <= now < self.not_after):
            raise ValidationError(
                f"issuer {self.slug!r} is not valid at {now.isoformat()} "
                f"(valid {self.certificate.not_valid_before_utc.isoformat()} to {self.not_after.isoformat()})"
            )


def _ski(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _aia(urls: PublicURLs, issuer_slug: str, *, ocsp: bool = True) -> x509.AuthorityInformationAccess:
    descriptions = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(urls.ca_certificate(issuer_slug))
        )
    ]
    if ocsp:
        descriptions.insert(
            0, x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp))
        )
    return x509.AuthorityInformationAccess(descriptions)


def _distribution_point(url: str) -> x509.DistributionPoint:
    return x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None, crl_issuer=None
    )


def _policies(oids: tuple[str, ...]) -> x509.CertificatePolicies:
    return x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier(oid), policy_qualifiers=None) for oid in oids]
    )


def build_root(
    key: PrivateKey, *, subject: x509.Name, serial: int, now: dt.datetime, validity: dt.timedelta = ROOT_VALIDITY
) -> x509.Certificate:
    """A self-signed root: CA:TRUE, keyCertSign + cRLSign, no path length limit."""
    check_public_key(key.public_key())
    not_before = now - BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage({"key_cert_sign", "crl_sign"}), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
    )
    return builder.sign(key, signature_hash_for(key))


def build_issuing_ca(
    parent: SigningCA,
    public_key: PublicKey,
    *,
    subject: x509.Name,
    serial: int,
    now: dt.datetime,
    urls: PublicURLs,
    policy_oids: tuple[str, ...],
    validity: dt.timedelta = CA_VALIDITY,
) -> x509.Certificate:
    """An issuing CA under ``parent``: CA:TRUE with pathLen 0, so it issues only end entities.

    Its revocation status is published by the parent (the parent's full CRL and OCSP).
    """
    parent._check_usable(now)
    check_public_key(public_key)
    not_before = now - BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(parent._clamp(not_before + validity))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage({"key_cert_sign", "crl_sign"}), critical=True)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(parent.certificate), critical=False)
        # caIssuers only: the root keeps its key offline and has no delegated OCSP signer,
        # so an issuing CA's status is published by the root's CRL (the distribution
        # point below), never by OCSP.
        .add_extension(_aia(urls, parent.slug, ocsp=False), critical=False)
        .add_extension(x509.CRLDistributionPoints([_distribution_point(urls.full_crl(parent.slug))]), critical=False)
        .add_extension(_policies(policy_oids), critical=False)
    )
    return builder.sign(parent.key, signature_hash_for(parent.key))


def build_ocsp_signer(
    issuer: SigningCA,
    public_key: PublicKey,
    *,
    serial: int,
    now: dt.datetime,
    validity: dt.timedelta = OCSP_SIGNER_VALIDITY,
) -> x509.Certificate:
    """A delegated OCSP responder certificate (RFC 6960 section 4.2.2.2).

    It carries id-kp-OCSPSigning and id-pkix-ocsp-nocheck (4.2.2.2.1): relying parties
    do not check its own status, which is why its lifetime is kept short and it is
    renewed rather than revoked.
    """
    issuer._check_usable(now)
    check_public_key(public_key)
    not_before = now - BACKDATE
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"),
            *issuer.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
            x509.NameAttribute(
                NameOID.COMMON_NAME,
                f"{issuer.slug.upper()} OCSP Responder {now.strftime('%Y%m%d%H%M%S')}",
            ),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(issuer._clamp(not_before + validity))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage({"digital_signature"}), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(issuer.certificate), critical=False)
    )
    return builder.sign(issuer.key, signature_hash_for(issuer.key))


def build_end_entity(
    issuer: SigningCA,
    profile: EndEntityProfile,
    subject: HolderSubject,
    public_key: PublicKey,
    *,
    serial: int,
    partition: int,
    now: dt.datetime,
    urls: PublicURLs,
    validity: dt.timedelta | None = None,
) -> x509.Certificate:
    """A citizen certificate per ``profile``, pointing at its CRL partition and the delta CRL."""
    issuer._check_usable(now)
    check_public_key(public_key)
    is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
    if is_ec and profile.ec_key_usage is None:
        raise WeakKey(f"profile {profile.name} does not accept EC keys")
    lifetime = validity if validity is not None else profile.validity
    if lifetime <= dt.timedelta(0):
        raise ValidationError("certificate validity must be positive")
    not_before = now - BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject.x509_name())
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(issuer._clamp(not_before + lifetime))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(profile.key_usage(is_ec=is_ec), critical=True)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(issuer.certificate), critical=False)
        .add_extension(_aia(urls, issuer.slug), critical=False)
        .add_extension(
            x509.CRLDistributionPoints([_distribution_point(urls.partition_crl(issuer.slug, partition))]),
            critical=False,
        )
        # RFC 5280 4.2.1.15: freshestCRL must be non-critical. Its delta has the scope of
        # the partition named just above (5.2.4), not the issuer-wide one.
        .add_extension(x509.FreshestCRL([_distribution_point(urls.delta_crl(issuer.slug, partition))]), critical=False)
        .add_extension(_policies(profile.policy_oids), critical=False)
    )
    if profile.extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(profile.extended_key_usage)), critical=False)
    if subject.email:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(subject.email)]), critical=False)
    return builder.sign(issuer.key, signature_hash_for(issuer.key))
