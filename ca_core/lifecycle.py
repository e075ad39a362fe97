"""The certificate lifecycle: issue, revoke, suspend, resume, look up.

Used alike by the admin API and the CLI. Each write is one PostgreSQL transaction
that holds the new state, its outbox event and its audit row (DESIGN.md invariant
1): the operation is acknowledged only after that transaction commits, and nothing
is half-written when it does not.

The state machine is data (:data:`TRANSITIONS`)::

    good --suspend--> suspended --resume--> good
    good --revoke--> revoked <--revoke-- suspended        (revoked is terminal)

It is checked with the certificate's row locked (``SELECT … FOR UPDATE``), so two
concurrent operations on one certificate are serialised and the second sees the
first one's result; a trigger in the database refuses any change to a revoked row
as a second line of defence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import functools
import hashlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import asyncpg
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .clock import Clock
from .csr import load_csr
from .errors import (
    CAError,
    CertificateExpired,
    IdempotencyConflict,
    IllegalTransition,
    UnknownCertificate,
    UnknownIssuer,
    ValidationError,
)
from .issue import SigningCA, build_end_entity, partition_for, random_serial
from .keystore import (
    KeyVault,
    PrivateKey,
    PublicKey,
    check_public_key,
    generate_private_key,
)
from .model import (
    END_ENTITY_REVOCATION_REASONS,
    AuditEntry,
    CertRecord,
    CertStatus,
    KeyType,
    RevocationReason,
    format_serial,
    parse_serial,
)
from .pki import ensure_issuer_usable, load_signing_ca
from .profiles import (
    ISSUING_CA_PROFILE,
    OCSP_SIGNER_PROFILE,
    HolderSubject,
    PublicURLs,
    get_profile,
    subject_text,
)
from .storage import postgres as db

__all__ = [
    "CertificateAuthority",
    "Operation",
    "StatusChange",
    "TRANSITIONS",
    "plan_transition",
]

_MAX_ACTOR = 200
_MAX_IDEMPOTENCY_KEY = 255
_SERIAL_ATTEMPTS = 3
_MAX_VALIDITY = dt.timedelta(days=20 * 366)


class Operation(enum.StrEnum):
    REVOKE = "revoke"
    SUSPEND = "suspend"
    RESUME = "resume"

    @property
    def past(self) -> str:
        """The past participle, for messages ("cannot be resumed")."""
        return f"{self.value}d" if self.value.endswith("e") else f"{self.value}ed"


#: (current status, operation) -> new status. Anything absent is an illegal transition.
TRANSITIONS: Mapping[tuple[CertStatus, Operation], CertStatus] = MappingProxyType(
    {
        (CertStatus.GOOD, Operation.REVOKE): CertStatus.REVOKED,
        (CertStatus.SUSPENDED, Operation.REVOKE): CertStatus.REVOKED,
        (CertStatus.GOOD, Operation.SUSPEND): CertStatus.SUSPENDED,
        (CertStatus.SUSPENDED, Operation.RESUME): CertStatus.GOOD,
    }
)

#: Certificates the CA issues to itself: revocable, never suspended.
_CA_SIDE_PROFILES = frozenset({ISSUING_CA_PROFILE, OCSP_SIGNER_PROFILE})
#: cACompromise applies to CA certificates only (RFC 5280 5.3.1).
_REASONS_BY_PROFILE: Mapping[str, frozenset[RevocationReason]] = MappingProxyType(
    {ISSUING_CA_PROFILE: END_ENTITY_REVOCATION_REASONS | {RevocationReason.CA_COMPROMISE}}
)

#: The outbox event each operation emits.
_EVENTS = {Operation.REVOKE: "revoked", Operation.SUSPEND: "suspended", Operation.RESUME: "resumed"}


@dataclasses.dataclass(frozen=True, slots=True)
class Revocation:
    """One item of :meth:`CertificateAuthority.revoke_many`."""

    issuer: str
    serial: int | str
    reason: RevocationReason | str | int | None = None
    invalidity_date: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _BulkItem:
    index: int
    issuer: str
    serial: int
    reason: RevocationReason
    invalidity_date: dt.datetime | None
    key: str | None
    request: bytes

    @classmethod
    def parse(cls, index: int, item: Revocation, key: str | None) -> _BulkItem:
        serial = parse_serial(item.serial)
        reason = _revocation_reason(item.reason)
        if not isinstance(item.issuer, str):
            raise ValidationError("issuer must be a name")
        # The same request hash as a single revoke(), so one key means one request either way.
        request = _change_request(Operation.REVOKE, item.issuer, serial, reason, item.invalidity_date)
        return cls(index, item.issuer, serial, reason, item.invalidity_date, _check_key(key), request)


@dataclasses.dataclass(frozen=True, slots=True)
class StatusChange:
    """The status fields a transition writes."""

    status: CertStatus
    revoked_at: dt.datetime | None
    reason: RevocationReason | None
    invalidity_date: dt.datetime | None


def _why_illegal(record: CertRecord, op: Operation) -> str:
    who = f"certificate {record.serial_hex} of issuer {record.issuer}"
    if record.status is CertStatus.REVOKED:
        when = record.revoked_at.isoformat() if record.revoked_at else "?"
        reason = record.reason.rfc_name if record.reason is not None else "?"
        done = "is already revoked" if op is Operation.REVOKE else f"cannot be {op.past}: it is revoked"
        return f"{who} {done} ({reason}, {when}); revocation is final"
    if op is Operation.RESUME:
        return f"{who} is {record.status.value}; only a suspended certificate can be resumed"
    if op is Operation.SUSPEND:
        return f"{who} is already suspended"
    return f"{who} cannot be {op.past} from status {record.status.value}"  # pragma: no cover


def plan_transition(
    record: CertRecord,
    op: Operation,
    *,
    now: dt.datetime,
    reason: RevocationReason | None = None,
    invalidity_date: dt.datetime | None = None,
) -> StatusChange:
    """Decide the new status fields, or raise :class:`IllegalTransition` (sans-IO)."""
    new_status = TRANSITIONS.get((record.status, op))
    if new_status is None:
        raise IllegalTransition(_why_illegal(record, op), current=record.status.value, operation=op.value)
    if record.profile in _CA_SIDE_PROFILES and op is not Operation.REVOKE:
        # Suspension is for holders who lost a card. A CA or OCSP signer that must stop
        # is revoked (and an OCSP signer, carrying ocsp-nocheck, is simply replaced).
        raise IllegalTransition(
            f"certificate {record.serial_hex} is an {record.profile} certificate: it can be revoked, not {op.past}",
            current=record.status.value,
            operation=op.value,
        )
    if op is not Operation.REVOKE and (reason is not None or invalidity_date is not None):
        raise ValidationError(f"{op.value} takes no reason or invalidity date")
    expired = record.not_after <= now
    if expired and op is not Operation.REVOKE:
        raise CertificateExpired(
            f"certificate {record.serial_hex} of issuer {record.issuer} expired at "
            f"{record.not_after.isoformat()}; it can no longer be {op.past}",
            current=record.status.value,
            operation=op.value,
        )
    match op:
        case Operation.SUSPEND:
            return StatusChange(CertStatus.SUSPENDED, now, RevocationReason.CERTIFICATE_HOLD, None)
        case Operation.RESUME:
            return StatusChange(CertStatus.GOOD, None, None, None)
        case Operation.REVOKE:
            reason = RevocationReason.UNSPECIFIED if reason is None else reason
            allowed = _REASONS_BY_PROFILE.get(record.profile, END_ENTITY_REVOCATION_REASONS)
            if reason not in allowed:
                hint = {
                    RevocationReason.CERTIFICATE_HOLD: "; use suspend for certificateHold",
                    RevocationReason.REMOVE_FROM_CRL: "; use resume to lift a suspension",
                }.get(reason, "")
                raise ValidationError(
                    f"{reason.rfc_name} is not a revocation reason for this certificate (allowed: "
                    + ", ".join(r.rfc_name for r in sorted(allowed))
                    + f"){hint}"
                )
            if invalidity_date is not None:
                if invalidity_date.tzinfo is None:
                    raise ValidationError("the invalidity date needs a time zone (use UTC)")
                if invalidity_date > now:
                    raise ValidationError(
                        f"the invalidity date {invalidity_date.isoformat()} is in the future; it must be "
                        "the time the key is known or suspected to have been compromised"
                    )
                if invalidity_date < record.not_before:
                    raise ValidationError(
                        f"the invalidity date {invalidity_date.isoformat()} is before the certificate "
                        f"existed ({record.not_before.isoformat()})"
                    )
            return StatusChange(CertStatus.REVOKED, now, reason, invalidity_date)
    raise AssertionError(op)  # pragma: no cover


def _status_json(record: CertRecord) -> dict[str, Any]:
    return {
        "status": record.status.value,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "reason": record.reason.rfc_name if record.reason is not None else None,
        "invalidity_date": record.invalidity_date.isoformat() if record.invalidity_date else None,
    }


def _check_scope(record: CertRecord, op: Operation, profiles: frozenset[str] | None) -> None:
    if profiles is not None and record.profile not in profiles:
        raise IllegalTransition(
            f"certificate {record.serial_hex} is an {record.profile} certificate, which is not {op.past} here "
            "(CA-side certificates are managed on the CA host: 'certstatus cert revoke', 'certstatus ca ...')",
            current=record.status.value,
            operation=op.value,
        )


def _revocation_reason(reason: RevocationReason | str | int | None) -> RevocationReason:
    """A revocation's reason as given (name or code); unspecified when none is given."""
    if reason is None:
        return RevocationReason.UNSPECIFIED
    return reason if isinstance(reason, RevocationReason) else RevocationReason.parse(reason)


def _change_request(
    op: Operation,
    issuer: str,
    serial: int,
    reason: RevocationReason | None,
    invalidity_date: dt.datetime | None,
) -> bytes:
    """The request hash of a status change, as idempotency keys compare it (single or batch)."""
    return _request_hash(op.value, {
        "issuer": issuer,
        "serial": format_serial(serial),
        "reason": int(reason) if reason is not None else None,
        "invalidity_date": invalidity_date.isoformat() if invalidity_date else None,
    })  # fmt: skip


def _item_key(batch_key: str, index: int) -> str:
    """Item ``index``'s idempotency key in a batch under ``batch_key``: ``<key>/<index>``, or,
    for a key too long to extend within the 255-character limit, its SHA-256 in place of it."""
    if len(batch_key) <= 240:
        return f"{batch_key}/{index}"
    return f"sha256:{hashlib.sha256(batch_key.encode()).hexdigest()}/{index}"


def _request_hash(operation: str, params: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(orjson.dumps({"op": operation, **params}, option=orjson.OPT_SORT_KEYS)).digest()


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > _MAX_ACTOR:
        raise ValidationError(f"the actor must be a non-empty name of at most {_MAX_ACTOR} characters")
    return actor.strip()


def _check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= _MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(f"the idempotency key must be 1-{_MAX_IDEMPOTENCY_KEY} printable characters")
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class _Issuer:
    row: db.IssuerRow
    ca: SigningCA

    @property
    def id(self) -> int:
        return self.row.id


class CertificateAuthority:
    """The lifecycle operations over one PostgreSQL database.

    :param pool: asyncpg pool (see :func:`ca_core.storage.postgres.create_pool`).
    :param vault: opens the issuers' private keys; needed only for issuance.
    :param clock: the source of "now" for every timestamp written.
    :param urls: public URLs written into issued certificates.
    """

    def __init__(self, pool: asyncpg.Pool, vault: KeyVault | None, *, clock: Clock, urls: PublicURLs) -> None:
        self._pool = pool
        self._vault = vault
        self._clock = clock
        self._urls = urls
        self._issuer_ids: dict[str, int] = {}
        self._signing: dict[str, _Issuer] = {}

    # Look-ups ---------------------------------------------------------------

    async def _issuer_row(self, conn: asyncpg.Connection, name: str) -> db.IssuerRow:
        row = await db.get_issuer(conn, name)
        if row is None:
            raise UnknownIssuer(f"there is no issuer named {name!r}")
        return row

    async def _issuer_id(self, conn: asyncpg.Connection, name: str) -> int:
        issuer_id = self._issuer_ids.get(name)
        if issuer_id is None:
            issuer_id = self._issuer_ids[name] = (await self._issuer_row(conn, name)).id
        return issuer_id

    async def _signing_issuer(self, conn: asyncpg.Connection, name: str) -> _Issuer:
        cached = self._signing.get(name)
        if cached is not None:
            # The key stays cached; the issuer's own status is read on every use.
            await ensure_issuer_usable(conn, cached.row, cached.ca.certificate)
            return cached
        row = await self._issuer_row(conn, name)
        if row.kind != "issuing":
            raise ValidationError(f"{name!r} is the root CA; citizen certificates come from an issuing CA")
        if self._vault is None:
            raise CAError("this process has no key passphrase, so it cannot issue certificates")
        ca = await load_signing_ca(conn, self._vault, row)
        await ensure_issuer_usable(conn, row, ca.certificate)
        issuer = _Issuer(row, ca)
        self._signing[name] = issuer
        return issuer

    async def get(self, issuer: str, serial: int | str) -> CertRecord:
        """A certificate by issuer name and serial (int or hex)."""
        number = parse_serial(serial)
        with db.storage_errors("look up a certificate"):
            async with self._pool.acquire() as conn:
                issuer_id = await self._issuer_id(conn, issuer)
                record = await db.get_certificate(conn, issuer_id, number)
        if record is None:
            raise UnknownCertificate(f"issuer {issuer} never issued a certificate with serial {format_serial(number)}")
        return record

    async def find(
        self,
        *,
        holder_id: str | None = None,
        issuer: str | None = None,
        status: CertStatus | None = None,
        limit: int = 100,
    ) -> list[CertRecord]:
        if not 1 <= limit <= 1000:
            raise ValidationError("limit must be between 1 and 1000")
        with db.storage_errors("search certificates"):
            async with self._pool.acquire() as conn:
                issuer_id = await self._issuer_id(conn, issuer) if issuer is not None else None
                return await db.find_certificates(
                    conn, holder_id=holder_id, issuer_id=issuer_id, status=status, limit=limit
                )

    async def audit(
        self, *, issuer: str | None = None, serial: int | str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        with db.storage_errors("read the audit log"):
            async with self._pool.acquire() as conn:
                issuer_id = await self._issuer_id(conn, issuer) if issuer is not None else None
                number = parse_serial(serial) if serial is not None else None
                return await db.list_audit(conn, issuer_id=issuer_id, serial=number, limit=limit)

    # Issuance ---------------------------------------------------------------

    async def issue(
        self,
        *,
        issuer: str,
        profile: str,
        actor: str,
        csr: bytes | str | None = None,
        public_key: PublicKey | None = None,
        subject: HolderSubject | None = None,
        email: str | None = None,
        validity: dt.timedelta | None = None,
        idempotency_key: str | None = None,
    ) -> CertRecord:
        """Issue a certificate from a PKCS#10 CSR (or, for trusted callers, a bare public key).

        The subject comes from ``subject`` when given, otherwise from the CSR, and is
        checked against the citizen profile. ``email`` adds an rfc822Name.
        """
        actor = _check_actor(actor)
        idempotency_key = _check_key(idempotency_key)
        chosen = get_profile(profile)
        if (csr is None) == (public_key is None):
            raise ValidationError("give exactly one of a CSR or a public key")
        if csr is not None:
            checked = load_csr(csr)
            key = checked.public_key
            holder = subject if subject is not None else checked.subject(email=email)
        else:
            assert public_key is not None
            check_public_key(public_key)
            key = public_key
            if subject is None:
                raise ValidationError("a subject is needed when issuing for a bare public key")
            holder = subject
        if email is not None and subject is not None and subject.email is None:
            holder = dataclasses.replace(holder, email=email)
        if validity is not None and not dt.timedelta(0) < validity <= _MAX_VALIDITY:
            raise ValidationError(f"validity must be positive and at most {_MAX_VALIDITY.days} days")
        # The key, not the CSR bytes: a re-signed (ECDSA) CSR for the same key is the same request.
        key_material = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

        request = _request_hash(
            "issue",
            {
                "issuer": issuer,
                "profile": chosen.name,
                "key": hashlib.sha256(key_material).hexdigest(),
                "subject": [holder.name, holder.holder_id, holder.email],
                "validity": validity.total_seconds() if validity is not None else None,
            },
        )
        async with db.transaction(self._pool, "issue a certificate") as conn:
            replay = await self._claim(conn, actor, idempotency_key, "issue", request)
            if replay is not None:
                return await self._replay_record(conn, replay)
            signer = await self._signing_issuer(conn, issuer)
            now = self._clock.now()
            for _ in range(_SERIAL_ATTEMPTS):
                serial = random_serial()
                partition = partition_for(serial, signer.row.crl_partitions)
                build = functools.partial(
                    build_end_entity,
                    signer.ca,
                    chosen,
                    holder,
                    key,
                    serial=serial,
                    partition=partition,
                    now=now,
                    urls=self._urls,
                    validity=validity,
                )
                # An RSA signature takes milliseconds: a worker thread keeps the event loop
                # free, and cryptography releases the GIL, so signings use every core.
                cert = await asyncio.to_thread(build) if signer.ca.slow_to_sign else build()
                record = await db.insert_certificate(
                    conn,
                    issuer_id=signer.id,
                    issuer_name=issuer,
                    serial=serial,
                    profile=chosen.name,
                    subject=subject_text(cert.subject),
                    holder_id=holder.holder_id,
                    not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                    crl_partition=partition,
                    der=cert.public_bytes(serialization.Encoding.DER),
                    now=now,
                )
                if record is not None:
                    break
            else:  # pragma: no cover - three 126-bit collisions in a row
                raise CAError("could not find a free serial number; the random source is suspect")
            await db.insert_outbox(
                conn, issuer_id=signer.id, serial=serial, event="issued", status=CertStatus.GOOD, now=now
            )
            await db.insert_audit(
                conn,
                actor=actor,
                action="certificate.issue",
                issuer_id=signer.id,
                serial=serial,
                before=None,
                after={
                    "profile": chosen.name,
                    "subject": record.subject,
                    "not_after": record.not_after.isoformat(),
                    **_status_json(record),
                },
                idempotency_key=idempotency_key,
                now=now,
            )
            await self._remember(conn, actor, idempotency_key, record)
        return record

    async def issue_with_generated_key(
        self,
        *,
        issuer: str,
        profile: str,
        subject: HolderSubject,
        actor: str,
        key_type: KeyType = KeyType.RSA2048,
        validity: dt.timedelta | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[CertRecord, PrivateKey]:
        """For demos and bulk loads: generate the subject's key here and issue for it.

        The caller receives the private key and is responsible for it; the CA keeps no copy.
        Idempotency keys are refused here: every call makes a new key, so a repeat could
        never be the same request.
        """
        if idempotency_key is not None:
            raise ValidationError(
                "an idempotency key cannot be used with a generated key: each call generates a new key"
            )
        key = await asyncio.to_thread(generate_private_key, key_type)
        record = await self.issue(
            issuer=issuer,
            profile=profile,
            actor=actor,
            public_key=key.public_key(),
            subject=subject,
            validity=validity,
            idempotency_key=idempotency_key,
        )
        return record, key

    # Status changes ---------------------------------------------------------

    async def revoke(
        self,
        issuer: str,
        serial: int | str,
        *,
        actor: str,
        reason: RevocationReason | str | int | None = None,
        invalidity_date: dt.datetime | None = None,
        idempotency_key: str | None = None,
        profiles: frozenset[str] | None = None,
    ) -> CertRecord:
        """Revoke for good (RFC 5280 reason; unspecified when none is given). With
        ``profiles``, only certificates of those profiles may be changed (the admin API
        passes the citizen and admin profiles: CA-side certificates are the CA host's)."""
        parsed = _revocation_reason(reason)
        return await self._change(
            Operation.REVOKE,
            issuer,
            serial,
            actor=actor,
            reason=parsed,
            invalidity_date=invalidity_date,
            idempotency_key=idempotency_key,
            profiles=profiles,
        )

    async def revoke_many(
        self,
        items: Sequence[Revocation],
        *,
        actor: str,
        idempotency_key: str | None = None,
        chunk_size: int = 1000,
        profiles: frozenset[str] | None = None,
    ) -> list[CertRecord | CAError]:
        """Revoke a batch (a box of lost cards): each item succeeds or fails on its own.

        Returns, in item order, the new record or the typed error that refused the item (the
        same checks and errors as :meth:`revoke`). Items are written in chunks of
        ``chunk_size``, each chunk one transaction of a few statements whatever its size
        (state, outbox, idempotency keys and audit rows together, one signer wake-up), rows
        locked in key order so overlapping batches cannot deadlock. Everything an item
        reports as done is committed; if a chunk fails as a whole (the database went away),
        each of its items reports that error and none of it was written.

        With ``idempotency_key``, the key is first bound to this exact batch (a different
        batch under it raises :class:`IdempotencyConflict` before anything is written); item
        ``i`` then uses ``<key>/<i>`` (hashed for keys over 240 characters), so a repeat of
        the batch replays the items that were done and retries the ones that failed.
        """
        actor = _check_actor(actor)
        idempotency_key = _check_key(idempotency_key)
        if idempotency_key is not None:
            await self._claim_batch(actor, idempotency_key, items)
        results: list[CertRecord | CAError | None] = [None] * len(items)
        parsed: list[_BulkItem] = []
        for i, item in enumerate(items):
            try:
                parsed.append(_BulkItem.parse(i, item, None if idempotency_key is None else _item_key(idempotency_key, i)))
            except CAError as e:
                results[i] = e
        for start in range(0, len(parsed), chunk_size):
            chunk = parsed[start : start + chunk_size]
            try:
                done = await self._revoke_chunk(chunk, actor, profiles)
            except CAError as e:
                done = {item.index: e for item in chunk}
            for index, outcome in done.items():
                results[index] = outcome
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _claim_batch(self, actor: str, key: str, items: Sequence[Revocation]) -> None:
        """Bind the batch's key to this exact batch, in a transaction of its own (committed
        before any item is written): a different batch under a used key is refused whole,
        the same batch again goes on to replay or retry its items."""
        request = _request_hash("revoke-batch", {"items": [
            [i.issuer, str(i.serial), None if i.reason is None else str(i.reason),
             i.invalidity_date.isoformat() if isinstance(i.invalidity_date, dt.datetime) else None]
            for i in items]})  # fmt: skip
        async with db.transaction(self._pool, "claim a batch's idempotency key") as conn:
            claim = await db.claim_idempotency_key(conn, actor=actor, key=key, operation="revoke-batch",
                                                   request_hash=request)  # fmt: skip
            if claim.conflict:
                raise IdempotencyConflict(f"idempotency key {key!r} was already used by {actor} for a different request")
            if claim.new:
                await db.store_idempotency_response(conn, actor=actor, key=key, response={"items": len(items)})

    async def _revoke_chunk(
        self, chunk: list[_BulkItem], actor: str, profiles: frozenset[str] | None
    ) -> dict[int, CertRecord | CAError]:
        out: dict[int, CertRecord | CAError] = {}
        async with db.transaction(self._pool, "revoke a batch of certificates") as conn:
            todo = chunk
            keyed = [item for item in chunk if item.key is not None]
            if keyed:
                claims = await db.claim_idempotency_keys(conn, actor=actor, keys=[i.key for i in keyed],  # type: ignore[misc]
                                                         operation=Operation.REVOKE.value,
                                                         request_hashes=[i.request for i in keyed])  # fmt: skip
                fresh = set()
                for item, claim in zip(keyed, claims, strict=True):
                    if claim.conflict:
                        out[item.index] = IdempotencyConflict(
                            f"idempotency key {item.key!r} was already used by {actor} for a different request"
                        )
                    elif not claim.new and claim.response is not None:
                        out[item.index] = await self._replay_record(conn, claim.response)
                    else:
                        fresh.add(item.index)
                todo = [item for item in chunk if item.key is None or item.index in fresh]
            ids = {row.name: row.id for row in await db.list_issuers(conn)}
            wanted: list[tuple[int, int]] = []
            for item in todo:
                if item.issuer in ids:
                    wanted.append((ids[item.issuer], item.serial))
                else:
                    out[item.index] = UnknownIssuer(f"no issuer named {item.issuer!r}")
            current = await db.lock_certificates(conn, wanted)
            writes: list[tuple[_BulkItem, db.StatusWrite]] = []
            befores: dict[int, CertRecord] = {}
            for item in todo:
                if item.index in out:
                    continue
                key = (ids[item.issuer], item.serial)
                before = current.get(key)
                if before is None:
                    out[item.index] = UnknownCertificate(
                        f"issuer {item.issuer} never issued a certificate with serial {format_serial(item.serial)}"
                    )
                    continue
                now = max(self._clock.now(), before.updated_at)
                try:
                    _check_scope(before, Operation.REVOKE, profiles)
                    change = plan_transition(before, Operation.REVOKE, now=now, reason=item.reason,
                                             invalidity_date=item.invalidity_date)  # fmt: skip
                except CAError as e:
                    out[item.index] = e
                    continue
                # A serial twice in one batch: the second sees the first's revocation.
                current[key] = dataclasses.replace(before, status=change.status, revoked_at=change.revoked_at,
                                                   reason=change.reason, invalidity_date=change.invalidity_date,
                                                   updated_at=now)  # fmt: skip
                befores[item.index] = before
                writes.append((item, db.StatusWrite(key[0], item.serial, change.status, change.revoked_at,
                                                    int(change.reason) if change.reason is not None else None,
                                                    change.invalidity_date, now)))  # fmt: skip
            failed_keys = [i.key for i in todo if i.key is not None and i.index in out]
            if failed_keys:  # a failed item's key is free again: a repeat retries it
                await db.release_idempotency_keys(conn, actor=actor, keys=failed_keys)
            if not writes:
                return out
            afters = await db.set_status_many(conn, [w for _, w in writes])
            await db.insert_outbox_many(conn, [(w.issuer_id, w.serial, _EVENTS[Operation.REVOKE], a.status, w.now)
                                               for (_, w), a in zip(writes, afters, strict=True)])  # fmt: skip
            remembered = [(item.key, after) for (item, _), after in zip(writes, afters, strict=True) if item.key]
            if remembered:
                await db.store_idempotency_responses(conn, actor=actor, keys=[k for k, _ in remembered],
                                                     responses=[a.to_json() for _, a in remembered])  # fmt: skip
            # The audit rows last: the chain's head stays locked from here to the commit.
            await db.insert_audit_many(conn, [
                db.AuditWrite(actor, "certificate.revoke", w.issuer_id, w.serial, _status_json(befores[item.index]),
                              _status_json(after), item.key, w.now)
                for (item, w), after in zip(writes, afters, strict=True)
            ])  # fmt: skip
            for (item, _), after in zip(writes, afters, strict=True):
                out[item.index] = after
        return out

    async def suspend(
        self,
        issuer: str,
        serial: int | str,
        *,
        actor: str,
        idempotency_key: str | None = None,
        profiles: frozenset[str] | None = None,
    ) -> CertRecord:
        """Suspend (停用): the certificate is listed as certificateHold until resumed."""
        return await self._change(Operation.SUSPEND, issuer, serial, actor=actor, idempotency_key=idempotency_key,
                                  profiles=profiles)  # fmt: skip

    async def resume(
        self,
        issuer: str,
        serial: int | str,
        *,
        actor: str,
        idempotency_key: str | None = None,
        profiles: frozenset[str] | None = None,
    ) -> CertRecord:
        """Resume (復用) a suspended certificate: it is good again."""
        return await self._change(Operation.RESUME, issuer, serial, actor=actor, idempotency_key=idempotency_key,
                                  profiles=profiles)  # fmt: skip

    async def _change(
        self,
        op: Operation,
        issuer: str,
        serial: int | str,
        *,
        actor: str,
        reason: RevocationReason | None = None,
        invalidity_date: dt.datetime | None = None,
        idempotency_key: str | None = None,
        profiles: frozenset[str] | None = None,
    ) -> CertRecord:
        actor = _check_actor(actor)
        idempotency_key = _check_key(idempotency_key)
        number = parse_serial(serial)
        request = _change_request(op, issuer, number, reason, invalidity_date)
        async with db.transaction(self._pool, f"{op.value} a certificate") as conn:
            replay = await self._claim(conn, actor, idempotency_key, op.value, request)
            if replay is not None:
                return await self._replay_record(conn, replay)
            issuer_id = await self._issuer_id(conn, issuer)
            before = await db.get_certificate(conn, issuer_id, number, for_update=True)
            if before is None:
                raise UnknownCertificate(
                    f"issuer {issuer} never issued a certificate with serial {format_serial(number)}"
                )
            _check_scope(before, op, profiles)
            # "Now" is read with the row locked, and never before the row's last change: a
            # request that waited for a connection or a lock must not write a time earlier
            # than the change it queued behind (a revocation is never backdated by a race).
            now = max(self._clock.now(), before.updated_at)
            change = plan_transition(before, op, now=now, reason=reason, invalidity_date=invalidity_date)
            after = await db.set_status(
                conn,
                issuer_id=issuer_id,
                issuer_name=issuer,
                serial=number,
                status=change.status,
                revoked_at=change.revoked_at,
                reason=change.reason,
                invalidity_date=change.invalidity_date,
                now=now,
            )
            await db.insert_outbox(
                conn, issuer_id=issuer_id, serial=number, event=_EVENTS[op], status=after.status, now=now
            )
            await db.insert_audit(
                conn,
                actor=actor,
                action=f"certificate.{op.value}",
                issuer_id=issuer_id,
                serial=number,
                before=_status_json(before),
                after=_status_json(after),
                idempotency_key=idempotency_key,
                now=now,
            )
            await self._remember(conn, actor, idempotency_key, after)
        return after

    # Idempotency ------------------------------------------------------------

    async def _claim(
        self, conn: asyncpg.Connection, actor: str, key: str | None, operation: str, request: bytes
    ) -> dict[str, Any] | None:
        if key is None:
            return None
        claim = await db.claim_idempotency_key(conn, actor=actor, key=key, operation=operation, request_hash=request)
        if claim.conflict:
            raise IdempotencyConflict(f"idempotency key {key!r} was already used by {actor} for a different request")
        return claim.response if not claim.new else None

    async def _remember(self, conn: asyncpg.Connection, actor: str, key: str | None, record: CertRecord) -> None:
        if key is not None:
            await db.store_idempotency_response(conn, actor=actor, key=key, response=record.to_json())

    async def _replay_record(self, conn: asyncpg.Connection, stored: dict[str, Any]) -> CertRecord:
        """Rebuild the first answer: the record as it was then, with its (immutable) DER."""
        issuer_id = await self._issuer_id(conn, stored["issuer"])
        current = await db.get_certificate(conn, issuer_id, parse_serial(stored["serial"]))
        if current is None:  # pragma: no cover - certificates are never deleted
            raise UnknownCertificate(f"certificate {stored['serial']} vanished")

        def when(value: str | None) -> dt.datetime | None:
            return dt.datetime.fromisoformat(value) if value else None

        return dataclasses.replace(
            current,
            status=CertStatus(stored["status"]),
            revoked_at=when(stored["revoked_at"]),
            reason=RevocationReason.parse(stored["reason"]) if stored["reason"] else None,
            invalidity_date=when(stored["invalidity_date"]),
            updated_at=when(stored["updated_at"]) or current.updated_at,
        )


def certificate_pem(record: CertRecord) -> str:
    return x509.load_der_x509_certificate(record.der).public_bytes(serialization.Encoding.PEM).decode()
