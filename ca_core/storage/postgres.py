"""PostgreSQL access with asyncpg: pools, versioned migrations, and the SQL of the CA.

This is the only module that writes SQL. Functions take an ``asyncpg`` connection
so the caller decides the transaction (the lifecycle wraps state, outbox and audit
in one); they return domain values from :mod:`ca_core.model`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from importlib import resources
from typing import Any, NamedTuple

import asyncpg
import orjson

from ..audit import ChainLink
from ..errors import ConfigurationError, IdempotencyConflict, MigrationError, StorageError, ValidationError
from ..model import (
    AuditEntry,
    CertRecord,
    CertStatus,
    RevocationReason,
    serial_from_bytes,
    serial_to_bytes,
)

__all__ = [
    "IdempotencyClaim",
    "IssuerRow",
    "Migration",
    "OCSPSignerRow",
    "connect",
    "create_pool",
    "load_migrations",
    "migrate",
    "storage_errors",
]

#: pg_advisory_lock key that serialises concurrent migrators ("certstatus" in ASCII).
_MIGRATION_LOCK = 0x6365727473746174
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
OUTBOX_CHANNEL = "certstatus_outbox"
#: Advisory lock classes (the two-key form: class, issuer id) of the CRL publisher.
_CRL_CUT_LOCK = 0x63726C63  # "crlc": status changes hold it shared, a cut exclusively
_CRL_PUBLISH_LOCK = 0x63726C70  # "crlp": one publisher per issuer at a time


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn connection-level failures into :class:`StorageError` naming what was attempted."""
    try:
        yield
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as e:
        raise StorageError(f"PostgreSQL is unreachable while trying to {what}: {e}") from e
    except asyncpg.DataError as e:
        # A value PostgreSQL cannot hold (a NUL character in text, a number out of range)
        # is bad input that got past the checks in front: the caller's to fix, not an outage.
        raise ValidationError(f"a value given to {what} cannot be stored: {e}") from e
    except asyncpg.PostgresError as e:
        # The CA checks everything it can before writing; what PostgreSQL still refuses
        # (a trigger, a constraint, a privilege) is reported, and the transaction is gone.
        raise StorageError(f"PostgreSQL refused to {what}: {e}") from e


@contextlib.contextmanager
def _url_errors() -> Iterator[None]:
    # asyncpg parses the URL when connecting; its message is not shown, since the URL may
    # hold a password.
    try:
        yield
    except ValueError as e:
        raise ConfigurationError(f"the PostgreSQL URL is not valid ({type(e).__name__}); check DATABASE_URL") from None


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        format="text",
    )


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A connection pool with the codecs the CA needs (jsonb <-> dict via orjson)."""
    with storage_errors("connect"), _url_errors():
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60
        )
    assert pool is not None
    return pool


async def connect(url: str) -> asyncpg.Connection:
    """One connection with the same codecs (for tests and one-off commands)."""
    with storage_errors("connect"), _url_errors():
        conn = await asyncpg.connect(url, command_timeout=60)
    await _init_connection(conn)
    return conn


# Migrations -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped with this code, in version order."""
    found = []
    for entry in resources.files("ca_core.storage").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must run 1..n without gaps, found {versions}")
    return found


async def migrate(conn: asyncpg.Connection, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Bring the schema up to date; returns the versions applied now.

    Concurrent callers serialise on an advisory lock; each migration runs in its own
    transaction with its bookkeeping row, so a failure leaves the previous version
    intact. An applied migration whose text has since changed is refused: history is
    not rewritten silently.
    """
    wanted = list(migrations) if migrations is not None else load_migrations()
    applied_now: list[int] = []
    with storage_errors("apply migrations"):
        encoding = await conn.fetchval("SHOW server_encoding")
        if encoding != "UTF8":
            # Certificate subjects are Unicode, and the audit chain hashes text as UTF-8.
            raise MigrationError(
                f"the database's encoding is {encoding}; certstatus needs UTF8 "
                "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
            )
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    checksum   text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            done = {r["version"]: r for r in rows}
            newest_known = wanted[-1].version if wanted else 0
            if done and max(done) > newest_known:
                raise MigrationError(
                    f"the database schema is at version {max(done)}, newer than this code knows "
                    f"({newest_known}); upgrade certstatus"
                )
            for m in wanted:
                row = done.get(m.version)
                if row is not None:
                    if row["checksum"] != m.checksum:
                        raise MigrationError(
                            f"migration {m.version:04d}_{m.name} was changed after it was applied "
                            "(checksum mismatch); write a new migration instead of editing an old one"
                        )
                    continue
                async with conn.transaction():
                    try:
                        await conn.execute(m.sql)
                    except asyncpg.PostgresError as e:
                        raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {e}") from e
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
                applied_now.append(m.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


# Keys and issuers -----------------------------------------------------------------


async def insert_sealed_key(
    conn: asyncpg.Connection, *, label: str, key_type: str, public_key: bytes, sealed: bytes, now: dt.datetime
) -> int:
    return int(
        await conn.fetchval(
            """INSERT INTO sealed_keys (label, key_type, public_key, sealed, created_at)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            label,
            key_type,
            public_key,
            sealed,
            now,
        )
    )


async def load_sealed_key(conn: asyncpg.Connection, key_id: int) -> tuple[str, bytes]:
    row = await conn.fetchrow("SELECT label, sealed FROM sealed_keys WHERE id = $1", key_id)
    if row is None:
        raise StorageError(f"sealed key {key_id} is missing")
    return row["label"], bytes(row["sealed"])


@dataclasses.dataclass(frozen=True, slots=True)
class IssuerRow:
    id: int
    name: str
    kind: str
    parent_id: int | None
    certificate: bytes = dataclasses.field(repr=False)
    key_id: int
    crl_partitions: int
    created_at: dt.datetime


_ISSUER_COLUMNS = "id, name, kind, parent_id, certificate, key_id, crl_partitions, created_at"


def _issuer(row: asyncpg.Record) -> IssuerRow:
    return IssuerRow(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        parent_id=row["parent_id"],
        certificate=bytes(row["certificate"]),
        key_id=row["key_id"],
        crl_partitions=row["crl_partitions"],
        created_at=row["created_at"],
    )


async def insert_issuer(
    conn: asyncpg.Connection,
    *,
    name: str,
    kind: str,
    parent_id: int | None,
    certificate: bytes,
    key_id: int,
    crl_partitions: int,
    now: dt.datetime,
) -> IssuerRow:
    row = await conn.fetchrow(
        f"""INSERT INTO issuers (name, kind, parent_id, certificate, key_id, crl_partitions, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_ISSUER_COLUMNS}""",
        name,
        kind,
        parent_id,
        certificate,
        key_id,
        crl_partitions,
        now,
    )
    await conn.execute("INSERT INTO crl_numbers (issuer_id) VALUES ($1)", row["id"])
    return _issuer(row)


async def list_issuers(conn: asyncpg.Connection) -> list[IssuerRow]:
    rows = await conn.fetch(f"SELECT {_ISSUER_COLUMNS} FROM issuers ORDER BY id")
    return [_issuer(r) for r in rows]


async def get_issuer(conn: asyncpg.Connection, name: str) -> IssuerRow | None:
    row = await conn.fetchrow(f"SELECT {_ISSUER_COLUMNS} FROM issuers WHERE name = $1", name)
    return _issuer(row) if row else None


@dataclasses.dataclass(frozen=True, slots=True)
class OCSPSignerRow:
    id: int
    issuer_id: int
    certificate: bytes = dataclasses.field(repr=False)
    key_id: int
    not_before: dt.datetime
    not_after: dt.datetime


async def insert_ocsp_signer(
    conn: asyncpg.Connection,
    *,
    issuer_id: int,
    serial: int,
    certificate: bytes,
    key_id: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    now: dt.datetime,
) -> int:
    return int(
        await conn.fetchval(
            """INSERT INTO ocsp_signers (issuer_id, serial, certificate, key_id, not_before, not_after, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            issuer_id,
            serial_to_bytes(serial),
            certificate,
            key_id,
            not_before,
            not_after,
            now,
        )
    )


async def current_ocsp_signer(conn: asyncpg.Connection, issuer_id: int, now: dt.datetime) -> OCSPSignerRow | None:
    """The most recently issued OCSP signer of an issuer that is valid at ``now`` and whose
    own certificate is good: renewal replaces a signer whatever the two lifetimes, and a
    revoked or suspended signer is never used again."""
    row = await conn.fetchrow(
        """SELECT s.id, s.issuer_id, s.certificate, s.key_id, s.not_before, s.not_after
           FROM ocsp_signers s
           LEFT JOIN certificates c ON c.issuer_id = s.issuer_id AND c.serial = s.serial
           WHERE s.issuer_id = $1 AND s.not_before <= $2 AND s.not_after > $2
             AND (s.serial IS NULL OR c.status = 'good')
           ORDER BY s.created_at DESC, s.id DESC LIMIT 1""",
        issuer_id,
        now,
    )
    if row is None:
        return None
    return OCSPSignerRow(
        id=row["id"],
        issuer_id=row["issuer_id"],
        certificate=bytes(row["certificate"]),
        key_id=row["key_id"],
        not_before=row["not_before"],
        not_after=row["not_after"],
    )


# Certificates -----------------------------------------------------------------

_CERT_COLUMNS = """i.name AS issuer, c.serial, c.profile, c.subject, c.holder_id, c.not_before,
    c.not_after, c.status, c.revoked_at, c.reason, c.invalidity_date, c.crl_partition,
    c.issued_at, c.updated_at, c.der"""
# The same columns for RETURNING clauses, where the caller already knows the issuer's name.
_ROW_COLUMNS = """serial, profile, subject, holder_id, not_before, not_after, status, revoked_at, reason,
    invalidity_date, crl_partition, issued_at, updated_at, der"""


def cert_record(row: asyncpg.Record, issuer: str | None = None) -> CertRecord:
    return CertRecord(
        issuer=issuer if issuer is not None else row["issuer"],
        serial=serial_from_bytes(row["serial"]),
        profile=row["profile"],
        subject=row["subject"],
        holder_id=row["holder_id"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        status=CertStatus(row["status"]),
        revoked_at=row["revoked_at"],
        reason=RevocationReason(row["reason"]) if row["reason"] is not None else None,
        invalidity_date=row["invalidity_date"],
        crl_partition=row["crl_partition"],
        issued_at=row["issued_at"],
        updated_at=row["updated_at"],
        der=bytes(row["der"]),
    )


async def insert_certificate(
    conn: asyncpg.Connection,
    *,
    issuer_id: int,
    issuer_name: str,
    serial: int,
    profile: str,
    subject: str,
    holder_id: str | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    crl_partition: int,
    der: bytes,
    now: dt.datetime,
) -> CertRecord | None:
    """Insert a new certificate and return it; ``None`` if (issuer, serial) is already taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO certificates (issuer_id, serial, profile, subject, holder_id, not_before,
               not_after, crl_partition, der, issued_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
           ON CONFLICT (issuer_id, serial) DO NOTHING RETURNING {_ROW_COLUMNS}""",
        issuer_id,
        serial_to_bytes(serial),
        profile,
        subject,
        holder_id,
        not_before,
        not_after,
        crl_partition,
        der,
        now,
    )
    return cert_record(row, issuer_name) if row is not None else None


async def get_certificate(
    conn: asyncpg.Connection, issuer_id: int, serial: int, *, for_update: bool = False
) -> CertRecord | None:
    """One certificate; ``for_update`` locks the row until the transaction ends."""
    sql = f"""SELECT {_CERT_COLUMNS} FROM certificates c JOIN issuers i ON i.id = c.issuer_id
              WHERE c.issuer_id = $1 AND c.serial = $2"""
    if for_update:
        sql += " FOR UPDATE OF c"
    row = await conn.fetchrow(sql, issuer_id, serial_to_bytes(serial))
    return cert_record(row) if row else None


async def certificate_status(conn: asyncpg.Connection, issuer_id: int, serial: int) -> CertStatus | None:
    """Just the status of one certificate (``None`` if it was never recorded)."""
    value = await conn.fetchval(
        "SELECT status::text FROM certificates WHERE issuer_id = $1 AND serial = $2", issuer_id, serial_to_bytes(serial)
    )
    return CertStatus(value) if value is not None else None


async def find_certificates(
    conn: asyncpg.Connection,
    *,
    holder_id: str | None = None,
    issuer_id: int | None = None,
    status: CertStatus | None = None,
    limit: int = 100,
    after: tuple[int, int] | None = None,
) -> list[CertRecord]:
    """Certificates matching all given filters, in primary-key order (an index walk even
    with no filter on 11 M rows); ``after`` = (issuer id, serial) of the last row of the
    previous page continues from there (keyset pagination)."""
    clauses: list[str] = []
    args: list[object] = []
    if after is not None:
        args.extend((after[0], serial_to_bytes(after[1])))
        clauses.append(f"(c.issuer_id, c.serial) > (${len(args) - 1}::smallint, ${len(args)}::bytea)")
    if holder_id is not None:
        args.append(holder_id)
        clauses.append(f"c.holder_id = ${len(args)}")
    if issuer_id is not None:
        args.append(issuer_id)
        clauses.append(f"c.issuer_id = ${len(args)}")
    if status is not None:
        args.append(status.value)
        clauses.append(f"c.status = ${len(args)}")
    where = " AND ".join(clauses) or "true"
    args.append(limit)
    rows = await conn.fetch(
        f"""SELECT {_CERT_COLUMNS} FROM certificates c JOIN issuers i ON i.id = c.issuer_id
            WHERE {where} ORDER BY c.issuer_id, c.serial LIMIT ${len(args)}""",
        *args,
    )
    return [cert_record(r) for r in rows]


async def set_status(
    conn: asyncpg.Connection,
    *,
    issuer_id: int,
    issuer_name: str,
    serial: int,
    status: CertStatus,
    revoked_at: dt.datetime | None,
    reason: RevocationReason | None,
    invalidity_date: dt.datetime | None,
    now: dt.datetime,
) -> CertRecord:
    row = await conn.fetchrow(
        f"""UPDATE certificates SET status = $3, revoked_at = $4, reason = $5, invalidity_date = $6,
               updated_at = $7
           WHERE issuer_id = $1 AND serial = $2 RETURNING {_ROW_COLUMNS}""",
        issuer_id,
        serial_to_bytes(serial),
        status.value,
        revoked_at,
        int(reason) if reason is not None else None,
        invalidity_date,
        now,
    )
    if row is None:
        raise StorageError(f"certificate {serial:X} of issuer {issuer_name} vanished during an update")
    return cert_record(row, issuer_name)


async def insert_outbox(
    conn: asyncpg.Connection, *, issuer_id: int, serial: int, event: str, status: CertStatus, now: dt.datetime
) -> int:
    """Queue a status event for the signer, and wake it once the transaction commits."""
    if event != "issued":
        # A change of what the CRLs list holds the issuer's cut lock (shared) until it
        # commits; the CRL publisher takes it exclusively for an instant to see a
        # consistent cut of the outbox (crl_snapshot).
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", _CRL_CUT_LOCK, issuer_id)
    # One round trip: the insert and its NOTIFY. NOTIFY is transactional: listeners hear
    # it only if this transaction commits.
    event_id = await conn.fetchval(
        """WITH e AS (
               INSERT INTO outbox (issuer_id, serial, event, status, created_at)
               VALUES ($1, $2, $3, $4, $5) RETURNING id)
           SELECT id FROM e, pg_notify($6, e.id::text)""",
        issuer_id,
        serial_to_bytes(serial),
        event,
        status.value,
        now,
        OUTBOX_CHANNEL,
    )
    return int(event_id)


async def insert_audit(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    issuer_id: int | None,
    serial: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    idempotency_key: str | None,
    now: dt.datetime,
) -> int:
    return int(
        await conn.fetchval(
            """INSERT INTO audit_log (at, actor, action, issuer_id, serial, before, after, idempotency_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
            now,
            actor,
            action,
            issuer_id,
            serial_to_bytes(serial) if serial is not None else None,
            before,
            after,
            idempotency_key,
        )
    )


async def audit_chain_head(conn: asyncpg.Connection) -> tuple[int, bytes] | None:
    """The audit chain's recorded head: (last seq, its hash), or None if the record is gone."""
    row = await conn.fetchrow("SELECT seq, hash FROM audit_chain_head")
    return (int(row["seq"]), bytes(row["hash"])) if row is not None else None


async def iter_audit_chain(conn: asyncpg.Connection, *, batch: int = 5000) -> AsyncIterator[ChainLink]:
    """Every audit row in chain order, with the fields the chain hashes (jsonb as its text),
    read in pages so memory stays flat however long the log is."""
    after = 0
    while True:
        rows = await conn.fetch(
            """SELECT id, chain_seq, at, actor, action, issuer_id, serial, before::text AS before,
                      after::text AS after, idempotency_key, prev_hash, row_hash
               FROM audit_log WHERE chain_seq > $1 ORDER BY chain_seq LIMIT $2""",
            after,
            batch,
        )
        for r in rows:
            yield ChainLink(**dict(r.items()))
        if len(rows) < batch:
            return
        after = rows[-1]["chain_seq"]


async def count_audit(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM audit_log"))


async def list_audit(
    conn: asyncpg.Connection,
    *,
    issuer_id: int | None = None,
    serial: int | None = None,
    limit: int = 100,
    actor: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    after_id: int | None = None,
) -> list[AuditEntry]:
    """Audit entries, oldest first; ``after_id`` continues a previous page."""
    clauses: list[str] = []
    args: list[object] = []
    for value, clause in ((actor, "a.actor = $%d"), (since, "a.at >= $%d"), (until, "a.at < $%d"),
                          (after_id, "a.id > $%d")):  # fmt: skip
        if value is not None:
            args.append(value)
            clauses.append(clause % len(args))
    if issuer_id is not None:
        args.append(issuer_id)
        clauses.append(f"a.issuer_id = ${len(args)}")
    if serial is not None:
        args.append(serial_to_bytes(serial))
        clauses.append(f"a.serial = ${len(args)}")
    where = " AND ".join(clauses) or "true"
    args.append(limit)
    rows = await conn.fetch(
        f"""SELECT a.id, a.at, a.actor, a.action, i.name AS issuer, a.serial, a.before, a.after,
                   a.idempotency_key, a.chain_seq, a.row_hash
            FROM audit_log a LEFT JOIN issuers i ON i.id = a.issuer_id
            WHERE {where} ORDER BY a.id LIMIT ${len(args)}""",
        *args,
    )
    return [
        AuditEntry(
            id=r["id"],
            at=r["at"],
            actor=r["actor"],
            action=r["action"],
            issuer=r["issuer"],
            serial=serial_from_bytes(r["serial"]) if r["serial"] is not None else None,
            before=r["before"],
            after=r["after"],
            idempotency_key=r["idempotency_key"],
            chain_seq=r["chain_seq"],
            row_hash=bytes(r["row_hash"]),
        )
        for r in rows
    ]


# Idempotency ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """What a key lookup found: a new key, a replay (with the first answer) or a conflict."""

    new: bool
    conflict: bool = False
    response: dict[str, Any] | None = None


async def claim_idempotency_key(
    conn: asyncpg.Connection, *, actor: str, key: str, operation: str, request_hash: bytes
) -> IdempotencyClaim:
    """Claim a key inside the caller's transaction.

    A new key is reserved (the caller acts, then calls :func:`store_idempotency_response`
    in the same transaction; a rollback releases the key). A concurrent first use of
    the same key blocks here until the other transaction ends, so two racing requests
    under one key can never both act.
    """
    # Take the key's row lock first: a placeholder insert that waits on a racing one.
    inserted = await conn.fetchval(
        """INSERT INTO idempotency_keys (actor, key, operation, request_hash, response, created_at)
           VALUES ($1, $2, $3, $4, 'null'::jsonb, now())
           ON CONFLICT (actor, key) DO NOTHING RETURNING true""",
        actor,
        key,
        operation,
        request_hash,
    )
    if inserted:
        return IdempotencyClaim(new=True)
    row = await conn.fetchrow(
        "SELECT operation, request_hash, response FROM idempotency_keys WHERE actor = $1 AND key = $2",
        actor,
        key,
    )
    assert row is not None
    if row["operation"] != operation or bytes(row["request_hash"]) != request_hash:
        return IdempotencyClaim(new=False, conflict=True)
    return IdempotencyClaim(new=False, response=row["response"])


async def store_idempotency_response(
    conn: asyncpg.Connection, *, actor: str, key: str, response: dict[str, Any]
) -> None:
    await conn.execute("UPDATE idempotency_keys SET response = $3 WHERE actor = $1 AND key = $2", actor, key, response)


# Bulk status changes (one statement per step for a whole chunk) -------------------------


async def claim_idempotency_keys(
    conn: asyncpg.Connection, *, actor: str, keys: Sequence[str], operation: str, request_hashes: Sequence[bytes]
) -> list[IdempotencyClaim]:
    """:func:`claim_idempotency_key` for many keys in two statements; claims in ``keys`` order."""
    inserted = {
        r["key"]
        for r in await conn.fetch(
            """INSERT INTO idempotency_keys (actor, key, operation, request_hash, response, created_at)
               SELECT $1, k, $3, h, 'null'::jsonb, now() FROM unnest($2::text[], $4::bytea[]) AS t(k, h)
               ORDER BY k
               ON CONFLICT (actor, key) DO NOTHING RETURNING key""",
            actor,
            list(keys),
            operation,
            list(request_hashes),
        )
    }
    existing = {
        r["key"]: r
        for r in await conn.fetch(
            """SELECT key, operation, request_hash, response FROM idempotency_keys
               WHERE actor = $1 AND key = ANY($2::text[])""",
            actor,
            [k for k in keys if k not in inserted],
        )
    }
    claims: list[IdempotencyClaim] = []
    for key, request_hash in zip(keys, request_hashes, strict=True):
        if key in inserted:
            claims.append(IdempotencyClaim(new=True))
            continue
        row = existing[key]
        if row["operation"] != operation or bytes(row["request_hash"]) != request_hash:
            claims.append(IdempotencyClaim(new=False, conflict=True))
        else:
            claims.append(IdempotencyClaim(new=False, response=row["response"]))
    return claims


async def store_idempotency_responses(
    conn: asyncpg.Connection, *, actor: str, keys: Sequence[str], responses: Sequence[dict[str, Any]]
) -> None:
    await conn.execute(
        """UPDATE idempotency_keys k SET response = t.r
           FROM unnest($2::text[], $3::jsonb[]) AS t(key, r) WHERE k.actor = $1 AND k.key = t.key""",
        actor,
        list(keys),
        list(responses),
    )


async def release_idempotency_keys(conn: asyncpg.Connection, *, actor: str, keys: Sequence[str]) -> None:
    """Drop keys claimed in this transaction for items that then failed."""
    await conn.execute("DELETE FROM idempotency_keys WHERE actor = $1 AND key = ANY($2::text[])", actor, list(keys))


async def lock_certificates(
    conn: asyncpg.Connection, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], CertRecord]:
    """Lock many certificates (``FOR UPDATE``) in one statement, in key order, so two bulk
    changes overlapping in any way cannot deadlock; the ones that exist, by (issuer id, serial)."""
    ordered = sorted(set(keys))
    rows = await conn.fetch(
        f"""SELECT c.issuer_id, {_CERT_COLUMNS} FROM certificates c JOIN issuers i ON i.id = c.issuer_id
            JOIN unnest($1::smallint[], $2::bytea[]) AS t(issuer_id, serial)
              ON c.issuer_id = t.issuer_id AND c.serial = t.serial
            ORDER BY c.issuer_id, c.serial FOR UPDATE OF c""",
        [k[0] for k in ordered],
        [serial_to_bytes(k[1]) for k in ordered],
    )
    return {(r["issuer_id"], serial_from_bytes(r["serial"])): cert_record(r) for r in rows}


@dataclasses.dataclass(frozen=True, slots=True)
class StatusWrite:
    """One certificate's new status fields, for :func:`set_status_many`."""

    issuer_id: int
    serial: int
    status: CertStatus
    revoked_at: dt.datetime | None
    reason: int | None
    invalidity_date: dt.datetime | None
    now: dt.datetime


async def set_status_many(conn: asyncpg.Connection, writes: Sequence[StatusWrite]) -> list[CertRecord]:
    """Write many status changes in one statement; the new records, in ``writes`` order."""
    rows = await conn.fetch(
        f"""UPDATE certificates c SET status = t.status::cert_status, revoked_at = t.revoked_at, reason = t.reason,
                   invalidity_date = t.invalidity_date, updated_at = t.now
            FROM unnest($1::smallint[], $2::bytea[], $3::text[], $4::timestamptz[], $5::smallint[],
                        $6::timestamptz[], $7::timestamptz[])
                 AS t(issuer_id, serial, status, revoked_at, reason, invalidity_date, now),
                 issuers i
            WHERE c.issuer_id = t.issuer_id AND c.serial = t.serial AND i.id = c.issuer_id
            RETURNING c.issuer_id, {_CERT_COLUMNS}""",
        [w.issuer_id for w in writes],
        [serial_to_bytes(w.serial) for w in writes],
        [w.status.value for w in writes],
        [w.revoked_at for w in writes],
        [w.reason for w in writes],
        [w.invalidity_date for w in writes],
        [w.now for w in writes],
    )
    by_key = {(r["issuer_id"], serial_from_bytes(r["serial"])): cert_record(r) for r in rows}
    missing = [w for w in writes if (w.issuer_id, w.serial) not in by_key]
    if missing:
        raise StorageError(f"{len(missing)} certificate(s) vanished during a bulk update")
    return [by_key[(w.issuer_id, w.serial)] for w in writes]


async def insert_outbox_many(
    conn: asyncpg.Connection, events: Sequence[tuple[int, int, str, CertStatus, dt.datetime]]
) -> None:
    """Queue many status events (issuer id, serial, event, status, time) and wake the signer
    once: one NOTIFY per transaction, not per event (a NOTIFY serialises commits)."""
    for issuer_id in sorted({e[0] for e in events if e[2] != "issued"}):
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", _CRL_CUT_LOCK, issuer_id)
    await conn.execute(
        """WITH e AS (
               INSERT INTO outbox (issuer_id, serial, event, status, created_at)
               SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::text[], $4::cert_status[], $5::timestamptz[])
               RETURNING id)
           SELECT pg_notify($6, max(id)::text) FROM e""",
        [e[0] for e in events],
        [serial_to_bytes(e[1]) for e in events],
        [e[2] for e in events],
        [e[3].value for e in events],
        [e[4] for e in events],
        OUTBOX_CHANNEL,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class AuditWrite:
    actor: str
    action: str
    issuer_id: int | None
    serial: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    idempotency_key: str | None
    now: dt.datetime


async def insert_audit_many(conn: asyncpg.Connection, rows: Sequence[AuditWrite]) -> None:
    """Append many audit rows in one statement (the chain trigger links each, in order)."""
    await conn.execute(
        """INSERT INTO audit_log (at, actor, action, issuer_id, serial, before, after, idempotency_key)
           SELECT at, actor, action, issuer_id, serial, before, after, idempotency_key
           FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::smallint[], $5::bytea[],
                       $6::jsonb[], $7::jsonb[], $8::text[]) WITH ORDINALITY
                AS t(at, actor, action, issuer_id, serial, before, after, idempotency_key, n)
           ORDER BY n""",
        [r.now for r in rows],
        [r.actor for r in rows],
        [r.action for r in rows],
        [r.issuer_id for r in rows],
        [serial_to_bytes(r.serial) if r.serial is not None else None for r in rows],
        [r.before for r in rows],
        [r.after for r in rows],
        [r.idempotency_key for r in rows],
    )


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool, what: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection from the pool inside a READ COMMITTED transaction."""
    with storage_errors(what):
        async with pool.acquire() as conn, conn.transaction():
            yield conn


# OCSP signer work -------------------------------------------------------------

SWEEP_CHUNKS = 256


class StatusRow(NamedTuple):
    """What an OCSP response needs to know about one certificate, as plain integers (the
    signer turns millions of these into responses: no datetime arithmetic per row).

    ``revoked_at`` is seconds since the epoch (None if good); ``version`` is the row's
    ``updated_at`` in microseconds since the epoch, which orders its states.
    """

    issuer_id: int
    serial: int
    status: str
    revoked_at: int | None
    reason: int | None
    version: int


# The SELECT list StatusRow is built from (epoch arithmetic in numeric: exact).
_STATUS_COLUMNS = """issuer_id, serial, status::text AS status,
    extract(epoch FROM date_trunc('second', revoked_at))::bigint AS revoked_at, reason,
    (extract(epoch FROM updated_at) * 1000000)::bigint AS version"""


def _status_row(row: asyncpg.Record) -> StatusRow:
    issuer_id, serial, status, revoked_at, reason, version = row
    return StatusRow(issuer_id, int.from_bytes(serial, "big"), status, revoked_at, reason, version)


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    issuer_id: int
    serial: int
    event: str


async def claim_outbox(conn: asyncpg.Connection, limit: int) -> list[OutboxEvent]:
    """Lock up to ``limit`` pending events, oldest first, skipping those another signer holds.

    Call inside a transaction; the locks last until it ends, and :func:`finish_outbox`
    marks the events done in the same transaction, so a signer that dies before committing
    leaves them pending for the next one (at-least-once).
    """
    rows = await conn.fetch(
        """SELECT id, issuer_id, serial, event FROM outbox WHERE processed_at IS NULL
           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [OutboxEvent(r["id"], r["issuer_id"], serial_from_bytes(r["serial"]), r["event"]) for r in rows]


async def finish_outbox(conn: asyncpg.Connection, ids: Sequence[int], now: dt.datetime) -> None:
    await conn.execute("UPDATE outbox SET processed_at = $2 WHERE id = ANY($1::bigint[])", list(ids), now)


async def pending_outbox(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL"))


async def statuses(conn: asyncpg.Connection, keys: Sequence[tuple[int, int]]) -> list[StatusRow]:
    """The current status rows of the given (issuer_id, serial) pairs (missing ones omitted)."""
    rows = await conn.fetch(
        f"""SELECT {_STATUS_COLUMNS} FROM certificates
           WHERE (issuer_id, serial) IN (SELECT * FROM unnest($1::smallint[], $2::bytea[]))""",
        [k[0] for k in keys],
        [serial_to_bytes(k[1]) for k in keys],
    )
    return [_status_row(r) for r in rows]


#: Serials from ca_core.issue.random_serial are 16 octets whose first octet is 0x40-0x7f
#: (bit 126 set, bit 127 clear). The 256 chunks cut that range evenly by the first two
#: octets (64 prefixes each); the first and last chunks also take every serial below and
#: above it (CA certificates, imports), so together they cover every possible serial.
_CHUNK_BASE = 0x4000
_CHUNK_STEP = 0x40


def chunk_bounds(chunk: int) -> tuple[bytes, bytes | None]:
    """The serial range [low, high) of a sweep chunk, as byte strings (bytea order)."""
    if not 0 <= chunk < SWEEP_CHUNKS:
        raise ValueError(f"no sweep chunk {chunk}")
    low = b"" if chunk == 0 else (_CHUNK_BASE + chunk * _CHUNK_STEP).to_bytes(2, "big")
    high = None if chunk == SWEEP_CHUNKS - 1 else (_CHUNK_BASE + (chunk + 1) * _CHUNK_STEP).to_bytes(2, "big")
    return low, high


async def sweep_batch(
    conn: asyncpg.Connection, issuer_id: int, chunk: int, after: bytes | None, limit: int, expired_before: dt.datetime
) -> list[StatusRow]:
    """The next ``limit`` certificates of a chunk after serial ``after``, in key order,
    leaving out those that expired before ``expired_before``."""
    low, high = chunk_bounds(chunk)
    rows = await conn.fetch(
        f"""SELECT {_STATUS_COLUMNS}
           FROM certificates
           WHERE issuer_id = $1 AND serial >= $2 AND ($3::bytea IS NULL OR serial < $3)
             AND ($4::bytea IS NULL OR serial > $4) AND not_after > $6
           ORDER BY serial LIMIT $5""",
        issuer_id,
        low,
        high,
        after,
        limit,
        expired_before,
    )
    return [_status_row(r) for r in rows]


async def ensure_sweep_chunks(conn: asyncpg.Connection, issuer_ids: Sequence[int], now: dt.datetime) -> None:
    """Create the sweep rows of issuers that have none yet (due at once)."""
    await conn.execute(
        """INSERT INTO ocsp_sweep (issuer_id, chunk, due_at)
           SELECT i, c, $2 FROM unnest($1::smallint[]) AS i, generate_series(0, 255) AS c
           ON CONFLICT DO NOTHING""",
        list(issuer_ids),
        now,
    )
    await conn.execute(
        "INSERT INTO ocsp_fill (issuer_id) SELECT unnest($1::smallint[]) ON CONFLICT DO NOTHING", list(issuer_ids)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SweepLease:
    issuer_id: int
    chunk: int
    cursor: bytes | None
    pass_started_at: dt.datetime


async def lease_sweep_chunk(
    conn: asyncpg.Connection, owner: str, now: dt.datetime, lease: dt.timedelta, issuer_ids: Sequence[int]
) -> SweepLease | None:
    """Take the most overdue chunk nobody holds (or whose holder's lease ran out)."""
    row = await conn.fetchrow(
        """UPDATE ocsp_sweep s SET lease_owner = $1, lease_until = $2::timestamptz + $3::interval,
               pass_started_at = COALESCE(s.pass_started_at, $2),
               pass_epoch = COALESCE(s.pass_epoch, (SELECT f.epoch FROM ocsp_fill f WHERE f.issuer_id = s.issuer_id))
           WHERE (s.issuer_id, s.chunk) = (
               SELECT issuer_id, chunk FROM ocsp_sweep
               WHERE due_at <= $2 AND (lease_until IS NULL OR lease_until < $2) AND issuer_id = ANY($4::smallint[])
               ORDER BY due_at, issuer_id, chunk LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING s.issuer_id, s.chunk, s.cursor, s.pass_started_at""",
        owner,
        now,
        lease,
        list(issuer_ids),
    )
    if row is None:
        return None
    cursor = bytes(row["cursor"]) if row["cursor"] is not None else None
    return SweepLease(row["issuer_id"], row["chunk"], cursor, row["pass_started_at"])


async def advance_sweep(
    conn: asyncpg.Connection, lease: SweepLease, owner: str, cursor: bytes, now: dt.datetime, extend: dt.timedelta
) -> bool:
    """Record progress and extend the lease; False if the lease was lost meanwhile."""
    result = await conn.execute(
        """UPDATE ocsp_sweep SET cursor = $4, lease_until = $5::timestamptz + $6::interval
           WHERE issuer_id = $1 AND chunk = $2 AND lease_owner = $3""",
        lease.issuer_id,
        lease.chunk,
        owner,
        cursor,
        now,
        extend,
    )
    return result.endswith(" 1")


async def finish_sweep_chunk(
    conn: asyncpg.Connection, lease: SweepLease, owner: str, now: dt.datetime, next_due: dt.datetime
) -> bool:
    result = await conn.execute(
        """UPDATE ocsp_sweep SET cursor = NULL, lease_owner = NULL, lease_until = NULL, due_at = $4,
               last_pass_started_at = pass_started_at, pass_started_at = NULL,
               last_pass_epoch = pass_epoch, pass_epoch = NULL, last_done_at = $5
           WHERE issuer_id = $1 AND chunk = $2 AND lease_owner = $3""",
        lease.issuer_id,
        lease.chunk,
        owner,
        next_due,
        now,
    )
    return result.endswith(" 1")


@dataclasses.dataclass(frozen=True, slots=True)
class FillState:
    issuer_id: int
    epoch: int
    fill_started_at: dt.datetime | None
    chunks_pending: int
    oldest_pass_started_at: dt.datetime | None
    redis_run_id: str | None = None


async def fill_state(conn: asyncpg.Connection, issuer_id: int) -> FillState:
    """Whether an issuer's fill is complete: how many chunks have not finished a pass begun
    in the current fill epoch, and when the oldest live pass began."""
    row = await conn.fetchrow(
        """SELECT f.epoch, f.fill_started_at, f.redis_run_id,
               count(*) FILTER (WHERE s.last_pass_epoch IS NULL
                                OR (f.fill_started_at IS NOT NULL AND s.last_pass_epoch < f.epoch))
                   AS pending,
               min(s.last_pass_started_at) AS oldest
           FROM ocsp_fill f JOIN ocsp_sweep s ON s.issuer_id = f.issuer_id
           WHERE f.issuer_id = $1 GROUP BY f.epoch, f.fill_started_at, f.redis_run_id""",
        issuer_id,
    )
    if row is None:
        return FillState(issuer_id, 0, None, SWEEP_CHUNKS, None)
    return FillState(
        issuer_id, row["epoch"], row["fill_started_at"], row["pending"], row["oldest"], row["redis_run_id"]
    )


async def start_fill(
    conn: asyncpg.Connection, issuer_id: int, seen_epoch: int, now: dt.datetime, redis_run_id: str | None = None
) -> int | None:
    """Begin a new full fill of an issuer, unless another signer already began one since
    ``seen_epoch``: every chunk is due now and starts its pass from the beginning.
    Returns the new epoch, or None if someone else won."""
    epoch = await conn.fetchval(
        """UPDATE ocsp_fill SET epoch = epoch + 1, fill_started_at = $3,
               redis_run_id = COALESCE($4, redis_run_id)
           WHERE issuer_id = $1 AND epoch = $2 RETURNING epoch""",
        issuer_id,
        seen_epoch,
        now,
        redis_run_id,
    )
    if epoch is None:
        return None
    await conn.execute(
        """UPDATE ocsp_sweep SET due_at = $2, cursor = NULL, pass_started_at = NULL, pass_epoch = NULL,
               lease_owner = NULL, lease_until = NULL
           WHERE issuer_id = $1""",
        issuer_id,
        now,
    )
    return int(epoch)


async def changed_statuses(conn: asyncpg.Connection, issuer_id: int) -> list[StatusRow]:
    """Every certificate of an issuer whose status ever changed (listed now, or resumed):
    the ones an old Redis snapshot could answer wrongly."""
    rows = await conn.fetch(
        f"""SELECT {_STATUS_COLUMNS}
           FROM certificates WHERE issuer_id = $1 AND (status <> 'good' OR updated_at > issued_at)""",
        issuer_id,
    )
    return [_status_row(r) for r in rows]


async def complete_fill(conn: asyncpg.Connection, issuer_id: int, epoch: int) -> None:
    await conn.execute(
        "UPDATE ocsp_fill SET fill_started_at = NULL WHERE issuer_id = $1 AND epoch = $2", issuer_id, epoch
    )


async def count_certificates(conn: asyncpg.Connection, issuer_ids: Sequence[int], expired_before: dt.datetime) -> int:
    """How many certificates a full fill of these issuers signs (for progress display)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM certificates WHERE issuer_id = ANY($1::smallint[]) AND not_after > $2",
            list(issuer_ids),
            expired_before,
        )
    )


CERTIFICATE_COPY_COLUMNS = (
    "issuer_id", "serial", "profile", "subject", "holder_id", "not_before", "not_after", "status",
    "revoked_at", "reason", "invalidity_date", "crl_partition", "der", "issued_at", "updated_at",
)  # fmt: skip


async def copy_certificates(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> int:
    """Bulk-load certificate rows with COPY (dataset loads and benchmarks, not issuance:
    no outbox events or audit rows are written; run ``certstatus signer --refill`` after).

    Each record has the values of :data:`CERTIFICATE_COPY_COLUMNS`, in that order, with
    serials as bytes (minimal big-endian) and status as text.
    """
    with storage_errors("bulk-loading certificates"):
        await conn.copy_records_to_table("certificates", records=records, columns=list(CERTIFICATE_COPY_COLUMNS))
    return len(records)


# CRLs -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CRLPublication:
    issuer_id: int
    number: int
    kind: str
    base_number: int | None
    outbox_mark: int
    this_update: dt.datetime
    next_update: dt.datetime
    entries: int
    bytes: int
    published_at: dt.datetime


async def try_crl_publish_lock(conn: asyncpg.Connection, issuer_id: int) -> bool:
    """Become the issuer's only CRL publisher for as long as ``conn`` holds the lock
    (session level: release with :func:`crl_publish_unlock`)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _CRL_PUBLISH_LOCK, issuer_id))


async def crl_publish_unlock(conn: asyncpg.Connection, issuer_id: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", _CRL_PUBLISH_LOCK, issuer_id)


async def allocate_crl_number(conn: asyncpg.Connection, issuer_id: int, now: dt.datetime) -> int:
    """The next CRL number of an issuer, committed at once (outside any transaction): a
    number is never handed out twice, even when the publication that took it fails."""
    return int(
        await conn.fetchval(
            """INSERT INTO crl_numbers (issuer_id, last_number, updated_at) VALUES ($1, 1, $2)
               ON CONFLICT (issuer_id) DO UPDATE SET last_number = crl_numbers.last_number + 1, updated_at = $2
               RETURNING last_number""",
            issuer_id,
            now,
        )
    )


@contextlib.asynccontextmanager
async def crl_snapshot(conn: asyncpg.Connection, issuer_id: int, *, lock_timeout: float = 10.0) -> AsyncIterator[int]:
    """A read-only REPEATABLE READ transaction on ``conn`` holding an exact cut of the
    issuer's status changes; yields the outbox id up to which every event is visible.

    Outbox ids are handed out when an event is inserted, not when it commits, so "the
    highest id I can see" alone could skip a change that commits late. Every status change
    holds the issuer's cut lock shared until it commits (:func:`insert_outbox`); taking it
    exclusively waits for those in flight and holds off new ones for the instant it takes
    to start the snapshot. Then every event up to the mark is in the snapshot, and every
    later one gets a higher id.
    """
    # A status change stuck in an open transaction must not stall the publisher (and, queued
    # behind its request, every later change of the issuer) for ever: give up and retry.
    await conn.execute(f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'")
    try:
        await conn.execute("SELECT pg_advisory_lock($1, $2)", _CRL_CUT_LOCK, issuer_id)
    finally:
        await conn.execute("RESET lock_timeout")
    tr = conn.transaction(isolation="repeatable_read", readonly=True)
    try:
        await tr.start()
        mark = await conn.fetchval(
            "SELECT coalesce(max(id), 0) FROM outbox WHERE issuer_id = $1 AND event <> 'issued'", issuer_id
        )
    except BaseException:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", _CRL_CUT_LOCK, issuer_id)
        raise
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", _CRL_CUT_LOCK, issuer_id)
    try:
        yield int(mark)
    except BaseException:
        await tr.rollback()
        raise
    else:
        await tr.commit()


#: What a CRL entry needs, as plain values: serial (minimal octets), revocationDate and
#: invalidityDate in seconds since the epoch, reason code, partition, and whether the
#: certificate belongs in a partition CRL (end-entity certificates with a distribution
#: point: not CA or OCSP-signer certificates).
_CRL_COLUMNS = """serial, floor(extract(epoch FROM revoked_at))::bigint, reason,
       floor(extract(epoch FROM invalidity_date))::bigint, crl_partition,
       profile NOT IN ('issuing-ca', 'ocsp-signer')"""


async def listed_certificates(
    conn: asyncpg.Connection, issuer_id: int, expired_before: dt.datetime, *, batch: int = 20_000
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every revoked or suspended certificate of an issuer not expired before
    ``expired_before``, in (partition, serial) order, in batches. Call inside a transaction."""
    cursor = await conn.cursor(
        f"""SELECT {_CRL_COLUMNS} FROM certificates
            WHERE issuer_id = $1 AND status <> 'good' AND not_after > $2
            ORDER BY crl_partition, serial""",
        issuer_id,
        expired_before,
    )
    while rows := await cursor.fetch(batch):
        yield rows


async def changed_since(
    conn: asyncpg.Connection, issuer_id: int, after: int, upto: int, expired_before: dt.datetime
) -> list[asyncpg.Record]:
    """The current state of every certificate named by a status event in ``(after, upto]``
    and not expired before ``expired_before`` (CRLs leave those out): the contents of a
    delta CRL. Rows as in :func:`listed_certificates` plus the status and, for good
    (resumed) certificates, the resumption time in place of revocationDate."""
    return await conn.fetch(
        """SELECT serial,
                   floor(extract(epoch FROM coalesce(revoked_at, updated_at)))::bigint, reason,
                   floor(extract(epoch FROM invalidity_date))::bigint, crl_partition,
                   profile NOT IN ('issuing-ca', 'ocsp-signer'), status::text
            FROM certificates c
            WHERE c.issuer_id = $1 AND c.not_after > $4 AND c.serial IN (
                SELECT o.serial FROM outbox o
                WHERE o.issuer_id = $1 AND o.id > $2 AND o.id <= $3 AND o.event <> 'issued')
            ORDER BY crl_partition, serial""",
        issuer_id,
        after,
        upto,
        expired_before,
    )


async def expired_out(
    conn: asyncpg.Connection, issuer_id: int, after: dt.datetime, upto: dt.datetime
) -> list[asyncpg.Record]:
    """Listed certificates whose expiry grace ended in ``(after, upto]``: on the previous
    base, no longer on the new one. Rows as in :func:`changed_since` (status 'expired')."""
    return await conn.fetch(
        f"""SELECT {_CRL_COLUMNS}, 'expired'
            FROM certificates
            WHERE issuer_id = $1 AND status <> 'good' AND not_after > $2 AND not_after <= $3
            ORDER BY crl_partition, serial""",
        issuer_id,
        after,
        upto,
    )


async def status_changed_after(conn: asyncpg.Connection, issuer_id: int, mark: int) -> bool:
    """Whether a status event newer than ``mark`` has been committed for the issuer."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE issuer_id = $1 AND id > $2 AND event <> 'issued')",
            issuer_id,
            mark,
        )
    )


async def record_crl_publication(conn: asyncpg.Connection, pub: CRLPublication) -> None:
    await conn.execute(
        """INSERT INTO crl_publications (issuer_id, number, kind, base_number, outbox_mark, this_update,
                                         next_update, entries, bytes, published_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        *dataclasses.astuple(pub),
    )


async def latest_crl_publication(conn: asyncpg.Connection, issuer_id: int, kind: str) -> CRLPublication | None:
    row = await conn.fetchrow(
        """SELECT issuer_id, number, kind, base_number, outbox_mark, this_update, next_update, entries, bytes,
                  published_at
           FROM crl_publications WHERE issuer_id = $1 AND kind = $2 ORDER BY number DESC LIMIT 1""",
        issuer_id,
        kind,
    )
    return CRLPublication(*row) if row is not None else None


async def list_crl_publications(conn: asyncpg.Connection, issuer_id: int, limit: int = 20) -> list[CRLPublication]:
    rows = await conn.fetch(
        """SELECT issuer_id, number, kind, base_number, outbox_mark, this_update, next_update, entries, bytes,
                  published_at
           FROM crl_publications WHERE issuer_id = $1 ORDER BY number DESC, kind LIMIT $2""",
        issuer_id,
        limit,
    )
    return [CRLPublication(*r) for r in rows]


# Admin API tokens ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    name: str
    role: str
    secret_hash: bytes
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


_TOKEN_COLUMNS = "id, name, role, secret_hash, created_at, revoked_at, last_used_at"


async def insert_token(conn: asyncpg.Connection, *, name: str, role: str, secret_hash: bytes, now: dt.datetime) -> int:
    try:
        return int(
            await conn.fetchval(
                "INSERT INTO api_tokens (name, role, secret_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
                name,
                role,
                secret_hash,
                now,
            )
        )
    except asyncpg.UniqueViolationError:
        raise IdempotencyConflict(f"a token named {name!r} exists already") from None


async def get_token(conn: asyncpg.Connection, token_id: int) -> TokenRow | None:
    row = await conn.fetchrow(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id = $1", token_id)
    return TokenRow(*row) if row is not None else None


async def list_tokens(conn: asyncpg.Connection) -> list[TokenRow]:
    return [TokenRow(*r) for r in await conn.fetch(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY id")]


async def revoke_token(conn: asyncpg.Connection, name: str, now: dt.datetime) -> TokenRow | None:
    row = await conn.fetchrow(
        f"""UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE name = $1 RETURNING {_TOKEN_COLUMNS}""",
        name,
        now,
    )
    return TokenRow(*row) if row is not None else None


async def touch_token(conn: asyncpg.Connection, token_id: int, now: dt.datetime) -> None:
    """Record a use, at most once a minute per token (a write per request would be wasteful)."""
    await conn.execute(
        """UPDATE api_tokens SET last_used_at = $2
           WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')""",
        token_id,
        now,
    )


# Admin API client certificates ----------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ClientCertRow:
    """A registered admin client certificate, joined with the certificate's own state."""

    id: int
    name: str
    role: str
    issuer: str
    serial: int
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    status: str
    not_after: dt.datetime
    der: bytes


_CLIENT_CERT_SELECT = """
    SELECT a.id, a.name, a.role, i.name AS issuer, a.serial, a.created_at, a.revoked_at, a.last_used_at,
           c.status::text AS status, c.not_after, c.der
    FROM api_client_certs a
    JOIN certificates c ON c.issuer_id = a.issuer_id AND c.serial = a.serial
    JOIN issuers i ON i.id = a.issuer_id"""


def _client_cert(row: asyncpg.Record) -> ClientCertRow:
    values = dict(row.items())
    values["serial"] = serial_from_bytes(values["serial"])
    values["der"] = bytes(values["der"])
    return ClientCertRow(**values)


async def insert_client_cert(
    conn: asyncpg.Connection, *, name: str, role: str, issuer_id: int, serial: int, now: dt.datetime
) -> int:
    try:
        return int(
            await conn.fetchval(
                """INSERT INTO api_client_certs (name, role, issuer_id, serial, created_at)
                   VALUES ($1, $2, $3, $4, $5) RETURNING id""",
                name,
                role,
                issuer_id,
                serial_to_bytes(serial),
                now,
            )
        )
    except asyncpg.UniqueViolationError:
        raise IdempotencyConflict(f"a client certificate credential named {name!r} exists already") from None


async def find_client_cert(conn: asyncpg.Connection, issuer_id: int, serial: int) -> ClientCertRow | None:
    row = await conn.fetchrow(
        f"{_CLIENT_CERT_SELECT} WHERE a.issuer_id = $1 AND a.serial = $2", issuer_id, serial_to_bytes(serial)
    )
    return _client_cert(row) if row is not None else None


async def get_client_cert(conn: asyncpg.Connection, name: str) -> ClientCertRow | None:
    row = await conn.fetchrow(f"{_CLIENT_CERT_SELECT} WHERE a.name = $1", name)
    return _client_cert(row) if row is not None else None


async def list_client_certs(conn: asyncpg.Connection) -> list[ClientCertRow]:
    return [_client_cert(r) for r in await conn.fetch(f"{_CLIENT_CERT_SELECT} ORDER BY a.id")]


async def revoke_client_cert(conn: asyncpg.Connection, name: str, now: dt.datetime) -> bool:
    """Withdraw a registration (the certificate's own revocation is the CA's business)."""
    done = await conn.fetchval(
        "UPDATE api_client_certs SET revoked_at = coalesce(revoked_at, $2) WHERE name = $1 RETURNING id", name, now
    )
    return done is not None


async def touch_client_cert(conn: asyncpg.Connection, cred_id: int, now: dt.datetime) -> None:
    await conn.execute(
        """UPDATE api_client_certs SET last_used_at = $2
           WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')""",
        cred_id,
        now,
    )


async def issuer_ids_by_subject(conn: asyncpg.Connection) -> dict[bytes, int]:
    """Issuer id per DER-encoded subject name of its current CA certificate."""
    from cryptography import x509

    out: dict[bytes, int] = {}
    for r in await conn.fetch("SELECT id, certificate FROM issuers"):
        out[x509.load_der_x509_certificate(bytes(r["certificate"])).subject.public_bytes()] = int(r["id"])
    return out
