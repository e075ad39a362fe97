"""The CA hierarchy: one root, issuing CAs side by side, a delegated OCSP signer each.

The national PKI runs several issuing CAs under one root (MOICA for citizens, GCA
for government agencies, MOEACA for companies, XCA for organisations; seed 004).
:func:`init_pki` creates the whole hierarchy in one transaction; :func:`add_issuer`
adds an issuing CA later; :func:`renew_ocsp_signer` replaces an issuer's OCSP
signing certificate (short-lived by design, since relying parties never check it).

Every certificate a CA signs, its own subordinates included, is recorded in the
``certificates`` table like any other, so its status can be published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Sequence

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .clock import Clock
from .errors import CAError, IssuerUnavailable, KeyStoreError, UnknownIssuer, ValidationError
from .issue import (
    SigningCA,
    build_issuing_ca,
    build_ocsp_signer,
    build_root,
    ca_name,
    random_serial,
)
from .keystore import KeyVault, PrivateKey, generate_private_key
from .model import CertStatus, KeyType
from .profiles import (
    CA_VALIDITY,
    DEFAULT_POLICY_OID,
    ISSUING_CA_PROFILE,
    OCSP_SIGNER_PROFILE,
    OCSP_SIGNER_VALIDITY,
    ROOT_VALIDITY,
    PublicURLs,
    subject_text,
    validate_issuer_slug,
)
from .storage import postgres as db

__all__ = [
    "AlreadyInitialised",
    "IssuerSpec",
    "PKISummary",
    "add_issuer",
    "init_pki",
    "load_ocsp_signer",
    "ensure_issuer_usable",
    "load_signing_ca",
    "renew_ocsp_signer",
]

DEFAULT_CRL_PARTITIONS = 16


class AlreadyInitialised(CAError):
    """``ca init`` was run on a database that already has a root."""

    code = "conflict"


@dataclasses.dataclass(frozen=True, slots=True)
class IssuerSpec:
    """An issuing CA to create.

    :param name: short name used in URLs and commands (``moica``).
    :param common_name: the CA's CN; derived from the name when not given.
    :param key_type: the CA's own key.
    :param ocsp_key_type: the key of its delegated OCSP signer.
    :param crl_partitions: how many partition CRLs its certificates are spread over.
    """

    name: str
    common_name: str | None = None
    key_type: KeyType = KeyType.RSA3072
    ocsp_key_type: KeyType = KeyType.EC_P256
    crl_partitions: int = DEFAULT_CRL_PARTITIONS

    def __post_init__(self) -> None:
        validate_issuer_slug(self.name)
        if not 1 <= self.crl_partitions <= 4096:
            raise ValidationError(f"issuer {self.name}: crl_partitions must be 1..4096, not {self.crl_partitions}")


@dataclasses.dataclass(frozen=True, slots=True)
class PKISummary:
    root: x509.Certificate
    issuers: dict[str, x509.Certificate]
    ocsp_signers: dict[str, x509.Certificate]


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def _store_key(
    conn: asyncpg.Connection, vault: KeyVault, key: PrivateKey, key_type: KeyType, label: str, now: dt.datetime
) -> int:
    return await db.insert_sealed_key(
        conn, label=label, key_type=key_type.value, public_key=_spki(key), sealed=vault.seal(key, label=label), now=now
    )


async def _record_ca_certificate(
    conn: asyncpg.Connection,
    *,
    issuer_id: int,
    issuer_name: str,
    cert: x509.Certificate,
    profile: str,
    now: dt.datetime,
) -> None:
    record = await db.insert_certificate(
        conn,
        issuer_id=issuer_id,
        issuer_name=issuer_name,
        serial=cert.serial_number,
        profile=profile,
        subject=subject_text(cert.subject),
        holder_id=None,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        crl_partition=0,
        der=cert.public_bytes(serialization.Encoding.DER),
        now=now,
    )
    if record is None:  # pragma: no cover - 126 random bits
        raise CAError("serial number collision while recording a CA certificate; run the command again")
    # Like any issuance, so the signer publishes its status too.
    await db.insert_outbox(
        conn, issuer_id=issuer_id, serial=cert.serial_number, event="issued", status=CertStatus.GOOD, now=now
    )


async def _audit(
    conn: asyncpg.Connection, actor: str, action: str, issuer_id: int, cert: x509.Certificate, now: dt.datetime
) -> None:
    await db.insert_audit(
        conn,
        actor=actor,
        action=action,
        issuer_id=issuer_id,
        serial=cert.serial_number,
        before=None,
        after={
            "subject": subject_text(cert.subject),
            "not_after": cert.not_valid_after_utc.isoformat(),
        },
        idempotency_key=None,
        now=now,
    )


async def load_signing_ca(conn: asyncpg.Connection, vault: KeyVault, issuer: db.IssuerRow) -> SigningCA:
    """An issuer's certificate with its key opened from the vault.

    Opening runs scrypt (about 0.3 s, 128 MiB) the first time, in a worker thread so the
    event loop keeps serving meanwhile.
    """
    label, sealed = await db.load_sealed_key(conn, issuer.key_id)
    key = await asyncio.to_thread(vault.open, sealed, label=label)
    return SigningCA(issuer.name, x509.load_der_x509_certificate(issuer.certificate), key)


async def ensure_issuer_usable(
    conn: asyncpg.Connection, issuer: db.IssuerRow, certificate: x509.Certificate | None = None
) -> None:
    """Refuse to sign with an issuing CA whose own certificate is revoked or suspended.

    Pass the already-parsed ``certificate`` when there is one (the issuance path does), to
    save parsing the DER on every call.
    """
    if issuer.parent_id is None:
        return
    cert = certificate if certificate is not None else x509.load_der_x509_certificate(issuer.certificate)
    serial = cert.serial_number
    status = await db.certificate_status(conn, issuer.parent_id, serial)
    if status is not CertStatus.GOOD:
        raise IssuerUnavailable(
            f"issuer {issuer.name!r} cannot sign: its own certificate ({serial:X}) is "
            f"{status.value if status else 'not on record'}"
        )


async def load_ocsp_signer(
    conn: asyncpg.Connection, vault: KeyVault, issuer: db.IssuerRow, now: dt.datetime
) -> tuple[x509.Certificate, PrivateKey]:
    """The issuer's current delegated OCSP signing certificate and key."""
    row = await db.current_ocsp_signer(conn, issuer.id, now)
    if row is None:
        raise CAError(
            f"issuer {issuer.name!r} has no valid OCSP signing certificate; run 'certstatus ca renew-ocsp --issuer {issuer.name}'"
        )
    label, sealed = await db.load_sealed_key(conn, row.key_id)
    cert = x509.load_der_x509_certificate(row.certificate)
    key = await asyncio.to_thread(vault.open, sealed, label=label)
    if cert.public_key() != key.public_key():
        raise KeyStoreError(f"the OCSP signing key of issuer {issuer.name!r} does not match its certificate")
    return cert, key


async def _create_issuing_ca(
    conn: asyncpg.Connection,
    vault: KeyVault,
    root: SigningCA,
    root_id: int,
    spec: IssuerSpec,
    *,
    organization: str,
    urls: PublicURLs,
    now: dt.datetime,
    actor: str,
    ocsp_validity: dt.timedelta,
    policy_oids: tuple[str, ...],
) -> tuple[x509.Certificate, x509.Certificate]:
    if await db.get_issuer(conn, spec.name) is not None:
        raise AlreadyInitialised(f"an issuer named {spec.name!r} already exists")
    key = await asyncio.to_thread(generate_private_key, spec.key_type)
    common_name = spec.common_name or f"{organization} {spec.name.upper()} Issuing CA"
    cert = build_issuing_ca(
        root,
        key.public_key(),
        subject=ca_name(common_name, organization),
        serial=random_serial(),
        now=now,
        urls=urls,
        policy_oids=policy_oids,
        validity=CA_VALIDITY,
    )
    key_id = await _store_key(conn, vault, key, spec.key_type, f"issuer:{spec.name}:ca", now)
    row = await db.insert_issuer(
        conn,
        name=spec.name,
        kind="issuing",
        parent_id=root_id,
        certificate=cert.public_bytes(serialization.Encoding.DER),
        key_id=key_id,
        crl_partitions=spec.crl_partitions,
        now=now,
    )
    await _record_ca_certificate(
        conn, issuer_id=root_id, issuer_name=root.slug, cert=cert, profile=ISSUING_CA_PROFILE, now=now
    )
    signer = await _issue_ocsp_signer(
        conn,
        vault,
        SigningCA(spec.name, cert, key),
        row.id,
        spec.ocsp_key_type,
        now=now,
        actor=actor,
        validity=ocsp_validity,
    )
    # Audit rows after the key generation and sealing: the first one locks the audit chain's
    # head until this transaction commits, and every audited write of the CA waits for it.
    await _audit(conn, actor, "issuer.create", root_id, cert, now)
    return cert, signer


async def _issue_ocsp_signer(
    conn: asyncpg.Connection,
    vault: KeyVault,
    issuer: SigningCA,
    issuer_id: int,
    key_type: KeyType,
    *,
    now: dt.datetime,
    actor: str,
    validity: dt.timedelta,
) -> x509.Certificate:
    key = await asyncio.to_thread(generate_private_key, key_type)
    cert = build_ocsp_signer(issuer, key.public_key(), serial=random_serial(), now=now, validity=validity)
    label = f"issuer:{issuer.slug}:ocsp:{cert.serial_number:x}"
    key_id = await _store_key(conn, vault, key, key_type, label, now)
    await db.insert_ocsp_signer(
        conn,
        issuer_id=issuer_id,
        serial=cert.serial_number,
        certificate=cert.public_bytes(serialization.Encoding.DER),
        key_id=key_id,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        now=now,
    )
    await _record_ca_certificate(
        conn, issuer_id=issuer_id, issuer_name=issuer.slug, cert=cert, profile=OCSP_SIGNER_PROFILE, now=now
    )
    await _audit(conn, actor, "ocsp-signer.issue", issuer_id, cert, now)
    return cert


async def init_pki(
    pool: asyncpg.Pool,
    vault: KeyVault,
    *,
    clock: Clock,
    urls: PublicURLs,
    issuers: Sequence[IssuerSpec],
    actor: str,
    organization: str = "certstatus",
    root_name: str = "root",
    root_key_type: KeyType = KeyType.RSA4096,
    ocsp_validity: dt.timedelta = OCSP_SIGNER_VALIDITY,
    policy_oids: tuple[str, ...] = (DEFAULT_POLICY_OID,),
) -> PKISummary:
    """Create the root, the issuing CAs and their OCSP signers, all or nothing."""
    validate_issuer_slug(root_name)
    if not issuers:
        raise ValidationError("at least one issuing CA is needed")
    names = [s.name for s in issuers]
    if len(set(names)) != len(names) or root_name in names:
        raise ValidationError(f"issuer names must be distinct from each other and from the root: {names}")
    now = clock.now()
    # RSA-4096 generation can take seconds: off the event loop, so Ctrl-C is heard.
    root_key = await asyncio.to_thread(generate_private_key, root_key_type)
    root_cert = build_root(
        root_key,
        subject=ca_name(f"{organization} Root CA", organization),
        serial=random_serial(),
        now=now,
        validity=ROOT_VALIDITY,
    )
    async with db.transaction(pool, "initialise the CA") as conn:
        # Serialise concurrent 'ca init' runs; the second sees the first one's root.
        await conn.execute("LOCK TABLE issuers IN SHARE ROW EXCLUSIVE MODE")
        existing = [i for i in await db.list_issuers(conn) if i.kind == "root"]
        if existing:
            raise AlreadyInitialised(
                f"the CA is already initialised (root {existing[0].name!r}); use 'certstatus ca add-issuer' to add an issuing CA"
            )
        key_id = await _store_key(conn, vault, root_key, root_key_type, f"issuer:{root_name}:ca", now)
        root_row = await db.insert_issuer(
            conn,
            name=root_name,
            kind="root",
            parent_id=None,
            certificate=root_cert.public_bytes(serialization.Encoding.DER),
            key_id=key_id,
            crl_partitions=1,
            now=now,
        )
        await _audit(conn, actor, "root.create", root_row.id, root_cert, now)
        root = SigningCA(root_name, root_cert, root_key)
        made: dict[str, x509.Certificate] = {}
        signers: dict[str, x509.Certificate] = {}
        for spec in issuers:
            made[spec.name], signers[spec.name] = await _create_issuing_ca(
                conn,
                vault,
                root,
                root_row.id,
                spec,
                organization=organization,
                urls=urls,
                now=now,
                actor=actor,
                ocsp_validity=ocsp_validity,
                policy_oids=policy_oids,
            )
    return PKISummary(root=root_cert, issuers=made, ocsp_signers=signers)


async def add_issuer(
    pool: asyncpg.Pool,
    vault: KeyVault,
    spec: IssuerSpec,
    *,
    clock: Clock,
    urls: PublicURLs,
    actor: str,
    organization: str = "certstatus",
    ocsp_validity: dt.timedelta = OCSP_SIGNER_VALIDITY,
    policy_oids: tuple[str, ...] = (DEFAULT_POLICY_OID,),
) -> tuple[x509.Certificate, x509.Certificate]:
    """Add an issuing CA (and its OCSP signer) under the existing root."""
    now = clock.now()
    async with db.transaction(pool, "add an issuer") as conn:
        await conn.execute("LOCK TABLE issuers IN SHARE ROW EXCLUSIVE MODE")
        roots = [i for i in await db.list_issuers(conn) if i.kind == "root"]
        if not roots:
            raise UnknownIssuer("the CA is not initialised yet; run 'certstatus ca init' first")
        root = await load_signing_ca(conn, vault, roots[0])
        return await _create_issuing_ca(
            conn,
            vault,
            root,
            roots[0].id,
            spec,
            organization=organization,
            urls=urls,
            now=now,
            actor=actor,
            ocsp_validity=ocsp_validity,
            policy_oids=policy_oids,
        )


async def renew_ocsp_signer(
    pool: asyncpg.Pool,
    vault: KeyVault,
    issuer_name: str,
    *,
    clock: Clock,
    actor: str,
    key_type: KeyType = KeyType.EC_P256,
    validity: dt.timedelta = OCSP_SIGNER_VALIDITY,
) -> x509.Certificate:
    """Issue a fresh OCSP signing certificate and key; the newest valid one is used from now on."""
    now = clock.now()
    async with db.transaction(pool, "renew an OCSP signer") as conn:
        row = await db.get_issuer(conn, issuer_name)
        if row is None or row.kind != "issuing":
            raise UnknownIssuer(f"no issuing CA named {issuer_name!r}")
        await ensure_issuer_usable(conn, row)
        ca = await load_signing_ca(conn, vault, row)
        return await _issue_ocsp_signer(conn, vault, ca, row.id, key_type, now=now, actor=actor, validity=validity)
