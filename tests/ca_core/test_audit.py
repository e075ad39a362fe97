"""The audit log's hash chain against a real PostgreSQL: built by the database, checked by
ca_core.audit, and every kind of tampering caught."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ca_core.audit import GENESIS, Anchor, ChainLink, ChainReport, ChainVerifier, record_bytes, row_hash, verify_chain
from ca_core.errors import ValidationError
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.profiles import HolderSubject
from ca_core.storage import postgres as db

HOLDER = HolderSubject("王小明", "0000000111729553", "xiaoming@example.tw")


async def issue(ca: CertificateAuthority, actor: str = "officer") -> CertRecord:
    record, _ = await ca.issue_with_generated_key(
        issuer="moica", profile="citizen-signing", subject=HOLDER, actor=actor, key_type=KeyType.EC_P256
    )
    return record


async def verify(pool: asyncpg.Pool, anchors: tuple[Anchor, ...] = ()) -> ChainReport:
    """As 'certstatus audit verify' does: rows, count and head from one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        total = await db.count_audit(conn)
        head = await db.audit_chain_head(conn)
        return await verify_chain(db.iter_audit_chain(conn, batch=7), Anchor(*head) if head else None, anchors, total)


@pytest.fixture
async def history(ca: CertificateAuthority) -> list[CertRecord]:
    """A few certificates, each revoked, suspended or resumed, by different actors: a short,
    realistic audit log (issuance rows carry unicode subjects, status rows jsonb before/after)."""
    records = [await issue(ca, actor=f"officer-{i}") for i in range(4)]
    await ca.revoke("moica", records[0].serial, actor="token:ops", reason="keyCompromise",
                    invalidity_date=dt.datetime(2026, 5, 1, tzinfo=dt.UTC), idempotency_key="k-1")  # fmt: skip
    await ca.suspend("moica", records[1].serial, actor="token:ra")
    await ca.resume("moica", records[1].serial, actor="token:ra", idempotency_key="k-2")
    await ca.suspend("moica", records[2].serial, actor="token:ra")
    return records


async def tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Change the log the way only a database superuser can: with triggers off."""
    async with pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.execute("SET session_replication_role = DEFAULT")


async def test_every_row_is_chained_in_order(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    rows = await pool.fetch("SELECT chain_seq, prev_hash, row_hash FROM audit_log ORDER BY chain_seq")
    assert [r["chain_seq"] for r in rows] == list(range(1, len(rows) + 1))
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log WHERE action LIKE 'certificate.%'")]
    assert sorted(actions).count("certificate.issue") >= 4 and len(actions) >= 8
    assert bytes(rows[0]["prev_hash"]) == GENESIS
    for before, after in zip(rows, rows[1:], strict=False):
        assert bytes(after["prev_hash"]) == bytes(before["row_hash"])
    head = await pool.fetchrow("SELECT seq, hash FROM audit_chain_head")
    assert (head["seq"], bytes(head["hash"])) == (len(rows), bytes(rows[-1]["row_hash"]))
    report = await verify(pool)
    assert report.intact, report.breaks
    assert report.rows == len(rows) and report.head == Anchor(len(rows), bytes(rows[-1]["row_hash"]))
    # The audit listing (API, CLI) shows each entry's place and hash, so a reader can anchor it.
    async with pool.acquire() as conn:
        entries = await db.list_audit(conn, limit=1000)
    assert [(e.chain_seq, e.row_hash) for e in entries] == [(r["chain_seq"], bytes(r["row_hash"])) for r in rows]
    assert entries[-1].to_json()["row_hash"] == bytes(rows[-1]["row_hash"]).hex()


async def test_python_record_equals_the_databases(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    """The two implementations of the canonical record agree byte for byte, for every row
    (NULL and non-NULL fields, unicode, jsonb)."""
    async with pool.acquire() as conn:
        links = [link async for link in db.iter_audit_chain(conn)]
        sql = {
            r["chain_seq"]: bytes(r["record"])
            for r in await conn.fetch(
                """SELECT chain_seq, audit_log_record(id, chain_seq, at, actor, action, issuer_id, serial,
                                                      before, after, idempotency_key) AS record FROM audit_log"""
            )
        }
    assert any(link.idempotency_key is None for link in links) and any(link.idempotency_key for link in links)
    assert any(link.before is None for link in links) and any(link.before for link in links)
    assert any("王小明" in (link.after or "") for link in links)
    for link in links:
        assert record_bytes(link) == sql[link.chain_seq]
        assert link.row_hash == hashlib.sha256(link.prev_hash + sql[link.chain_seq]).digest()  # type: ignore[operator]


async def test_an_edited_row_is_named(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    await tamper(pool, """UPDATE audit_log SET after = jsonb_set(after, '{status}', '"good"') WHERE chain_seq = 5""")
    report = await verify(pool)
    assert not report.intact
    assert [(b.seq, "content was changed" in b.problem) for b in report.breaks] == [(5, True)]


@pytest.mark.parametrize(
    "column, value",
    [("actor", "someone else"), ("action", "certificate.resume"), ("at", dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
     ("serial", b"\x01"), ("issuer_id", None), ("idempotency_key", "k-1x"), ("before", None)],
)  # fmt: skip
async def test_any_field_edit_is_caught(
    pool: asyncpg.Pool, history: list[CertRecord], column: str, value: object
) -> None:
    """Every field of a revocation's row (which has them all set) is covered by its hash."""
    seq = await pool.fetchval("SELECT chain_seq FROM audit_log WHERE action = 'certificate.revoke'")
    await tamper(pool, f"UPDATE audit_log SET {column} = $1 WHERE chain_seq = $2", value, seq)
    report = await verify(pool)
    assert [b.seq for b in report.breaks] == [seq]


async def test_a_deleted_row_is_caught(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    await tamper(pool, "DELETE FROM audit_log WHERE chain_seq = 3")
    report = await verify(pool)
    assert [b.seq for b in report.breaks] == [4]
    assert "seq 3 to 3 were deleted" in report.breaks[0].problem


async def test_deleting_the_newest_rows_is_caught_by_the_head(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    last = await pool.fetchval("SELECT max(chain_seq) FROM audit_log")
    await tamper(pool, "DELETE FROM audit_log WHERE chain_seq > $1", last - 2)
    report = await verify(pool)
    assert [(b.seq, b.problem) for b in report.breaks] == [
        (None, f"the last 2 row(s) were deleted (the head says seq {last})")
    ]


async def test_a_forged_row_is_caught(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    """A row slipped in with the trigger off, even one that copies the chain fields of a real
    row renumbered after it, does not fit."""
    await tamper(pool, "UPDATE audit_log SET chain_seq = chain_seq + 1000 WHERE chain_seq >= 4")
    await tamper(pool, "UPDATE audit_log SET chain_seq = chain_seq - 999 WHERE chain_seq >= 1004")
    await tamper(
        pool,
        """INSERT INTO audit_log (at, actor, action, issuer_id, serial, before, after, chain_seq, prev_hash, row_hash)
           SELECT at, 'token:ghost', 'certificate.resume', issuer_id, serial, after, before, 4, prev_hash, row_hash
           FROM audit_log WHERE chain_seq = 5""",
    )
    report = await verify(pool)
    assert 4 in [b.seq for b in report.breaks]
    assert not report.intact


async def test_a_rewritten_chain_is_caught_only_by_an_anchor(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    """Someone who can write the database can recompute every hash after an edit and move the
    head: the chain is then self-consistent, and only a head recorded earlier shows it."""
    anchor = (await verify(pool)).head
    await tamper(pool, "UPDATE audit_log SET actor = 'token:innocent' WHERE chain_seq = 5")
    async with pool.acquire() as conn:
        links = [link async for link in db.iter_audit_chain(conn)]
    prev = GENESIS
    for link in links:
        fixed = dataclasses.replace(link, prev_hash=prev)
        h = row_hash(prev, fixed)
        await tamper(
            pool, "UPDATE audit_log SET prev_hash = $1, row_hash = $2 WHERE chain_seq = $3", prev, h, link.chain_seq
        )
        prev = h
    await tamper(pool, "UPDATE audit_chain_head SET hash = $1", prev)

    assert (await verify(pool)).intact  # self-consistent again
    report = await verify(pool, anchors=(anchor,))
    assert [b.seq for b in report.breaks] == [anchor.seq]
    assert "rewritten" in report.breaks[0].problem
    # An anchor from before the edit, on a row the rewrite did not touch, still holds.
    untouched = Anchor(4, links[3].row_hash)  # type: ignore[arg-type]
    assert (await verify(pool, anchors=(untouched,))).anchors_checked == 1


async def test_an_anchor_past_the_end_is_reported(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    report = await verify(pool, anchors=(Anchor(99, bytes(32)),))
    assert [(b.seq, b.problem) for b in report.breaks] == [(99, "the anchored row is gone")]


async def test_head_and_rows_cannot_be_removed_through_the_application_role(
    pool: asyncpg.Pool, history: list[CertRecord]
) -> None:
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await pool.execute("UPDATE audit_log SET row_hash = prev_hash")
    with pytest.raises(asyncpg.RestrictViolationError, match="head cannot be removed"):
        await pool.execute("DELETE FROM audit_chain_head")
    with pytest.raises(asyncpg.RestrictViolationError, match="head cannot be removed"):
        await pool.execute("TRUNCATE audit_chain_head")
    with pytest.raises(asyncpg.RestrictViolationError, match="moves only when an audit row is appended"):
        await pool.execute("UPDATE audit_chain_head SET seq = 0")
    # What a caller puts in the chain columns is ignored: the trigger sets them.
    await pool.execute(
        """INSERT INTO audit_log (at, actor, action, chain_seq, prev_hash, row_hash)
           VALUES (now(), 'x', 'test.note', 1, '\\x00', '\\x00')"""
    )
    assert (await verify(pool)).intact


async def test_concurrent_writers_make_one_unbroken_chain(pool: asyncpg.Pool, ca: CertificateAuthority) -> None:
    records = await asyncio.gather(*(issue(ca, actor=f"officer-{i}") for i in range(12)))
    await asyncio.gather(*(ca.revoke("moica", r.serial, actor="token:ops") for r in records))
    report = await verify(pool)
    assert report.intact, report.breaks
    n = await pool.fetchval("SELECT count(*) FROM audit_log")
    assert report.rows == n and report.head.seq == n
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'certificate.revoke'") == 12


async def test_a_rolled_back_write_leaves_the_chain_unbroken(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    before = (await verify(pool)).head
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await db.insert_audit(conn, actor="x", action="test.note", issuer_id=None, serial=None, before=None,
                              after={"n": 1}, idempotency_key=None, now=dt.datetime.now(dt.UTC))  # fmt: skip
        await tx.rollback()
    report = await verify(pool)
    assert report.intact and report.head == before


def test_anchor_parsing() -> None:
    a = Anchor.parse(f" 12:{'Ab' * 32} ")
    assert a == Anchor(12, bytes.fromhex("ab" * 32)) and str(a) == f"12:{'ab' * 32}"
    for bad in ("12", f"x:{'ab' * 32}", f"12:{'ab' * 31}", f"-1:{'ab' * 32}"):
        with pytest.raises(ValidationError, match="SEQ:HASH"):
            Anchor.parse(bad)


def test_verifier_keeps_a_bounded_list_but_counts_every_break() -> None:
    at = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    v = ChainVerifier(keep=3)
    for seq in range(1, 11):
        v.add(ChainLink(seq, seq, at, "a", "b", None, None, None, None, None, GENESIS, bytes(32)))
    report = v.finish(Anchor(10, bytes(32)))
    assert len(report.breaks) == 3 and report.breaks_total > 3 and not report.intact


@pytest.fixture
async def old_database(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A database at schema version 5, before the chain existed."""
    name = f"chain_{uuid.uuid4().hex[:12]}"
    admin = await db.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    from urllib.parse import urlsplit, urlunsplit

    url = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    conn = await db.connect(url)
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_migration_chains_the_rows_already_there(old_database: asyncpg.Connection) -> None:
    migrations = db.load_migrations()
    await db.migrate(old_database, [m for m in migrations if m.version <= 5])
    for i in range(5):
        await old_database.execute(
            "INSERT INTO audit_log (at, actor, action, after) VALUES (now(), $1, 'test.note', $2)", f"a{i}", {"i": i}
        )
    await db.migrate(old_database, migrations)
    head = await db.audit_chain_head(old_database)
    report = await verify_chain(db.iter_audit_chain(old_database), Anchor(*head) if head else None)
    assert report.intact and report.rows == 5 and report.head.seq == 5
    # And new rows continue the same chain.
    await db.insert_audit(old_database, actor="b", action="test.note", issuer_id=None, serial=None, before=None,
                          after=None, idempotency_key=None, now=dt.datetime.now(dt.UTC))  # fmt: skip
    head = await db.audit_chain_head(old_database)
    report = await verify_chain(db.iter_audit_chain(old_database), Anchor(*head) if head else None)
    assert report.intact and report.rows == 6


async def test_a_row_below_the_chain_is_caught_by_the_count(pool: asyncpg.Pool, history: list[CertRecord]) -> None:
    """chain_seq >= 1 is a constraint; whoever drops it to slip a row in below the chain (where
    the walk never goes) is caught by the row count of the same snapshot."""
    with pytest.raises(asyncpg.CheckViolationError):
        await tamper(pool, "INSERT INTO audit_log (at, actor, action, chain_seq, prev_hash, row_hash) "
                           "VALUES (now(), 'x', 'certificate.revoke', 0, '\\x00', '\\x00')")  # fmt: skip
    await pool.execute("ALTER TABLE audit_log DROP CONSTRAINT audit_log_chain_seq_positive")
    try:
        await tamper(pool, "INSERT INTO audit_log (at, actor, action, chain_seq, prev_hash, row_hash) "
                           "VALUES (now(), 'x', 'certificate.revoke', 0, '\\x00', '\\x00')")  # fmt: skip
        report = await verify(pool)
        assert [b.problem for b in report.breaks] == [
            "1 row(s) in audit_log lie outside the chain (a chain_seq the walk never reaches)"
        ]
    finally:
        await tamper(pool, "DELETE FROM audit_log WHERE chain_seq = 0")
        await pool.execute("ALTER TABLE audit_log ADD CONSTRAINT audit_log_chain_seq_positive CHECK (chain_seq >= 1)")


async def test_writes_during_a_verification_are_not_breaks(
    pool: asyncpg.Pool, ca: CertificateAuthority, history: list[CertRecord]
) -> None:
    record = await issue(ca)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        total = await db.count_audit(conn)
        verifier = ChainVerifier()
        async for link in db.iter_audit_chain(conn, batch=3):
            verifier.add(link)
            if verifier.rows == 2:  # the CA keeps working meanwhile
                await ca.revoke("moica", record.serial, actor="token:ops")
        head = await db.audit_chain_head(conn)
    report = verifier.finish(Anchor(*head) if head else None, total)
    assert report.intact, report.breaks
    assert (await verify(pool)).rows == report.rows + 1


async def test_a_database_not_in_utf8_is_refused(database_url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from ca_core.errors import MigrationError

    name = f"latin_{uuid.uuid4().hex[:12]}"
    admin = await db.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        conn = await db.connect(urlunsplit(urlsplit(database_url)._replace(path=f"/{name}")))
        try:
            with pytest.raises(MigrationError, match="encoding is LATIN1; certstatus needs UTF8"):
                await db.migrate(conn)
            assert await db.schema_version(conn) == 0
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
