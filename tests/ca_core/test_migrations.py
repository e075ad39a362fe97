"""Versioned migrations: from an empty database, repeatable, tamper-evident, race-safe."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from ca_core.errors import MigrationError
from ca_core.storage import postgres as db


@pytest.fixture
async def empty_db(database_url: str) -> AsyncIterator[str]:
    """A brand-new database on the session's server; dropped afterwards."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = await db.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    url = database_url.replace("/certstatus?", f"/{name}?") if "/certstatus?" in database_url else None
    if url is None:  # an external TEST_DATABASE_URL: swap the path component
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(database_url)
        url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        yield url
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_from_empty(empty_db: str) -> None:
    conn = await db.connect(empty_db)
    try:
        assert await db.schema_version(conn) == 0
        applied = await db.migrate(conn)
        assert applied == [m.version for m in db.load_migrations()]
        assert await db.schema_version(conn) == applied[-1]
        tables = {
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables >= {
            "schema_migrations", "sealed_keys", "issuers", "ocsp_signers", "certificates", "outbox",
            "audit_log", "idempotency_keys", "crl_numbers",
        }
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'certificates'")}
        assert {"certificates_pkey", "certificates_crl", "certificates_holder"} <= indexes
        # A second run applies nothing.
        assert await db.migrate(conn) == []
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_once(empty_db: str) -> None:
    conns = [await db.connect(empty_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(db.load_migrations())]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(db.load_migrations())
    finally:
        for c in conns:
            await c.close()


async def test_edited_migration_is_refused(empty_db: str) -> None:
    conn = await db.connect(empty_db)
    try:
        await db.migrate(conn)
        edited = [db.Migration(m.version, m.name, m.sql + "\n-- edited\n") for m in db.load_migrations()]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await db.migrate(conn, edited)
    finally:
        await conn.close()


async def test_newer_schema_is_refused(empty_db: str) -> None:
    conn = await db.connect(empty_db)
    try:
        await db.migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')")
        with pytest.raises(MigrationError, match="newer than this code"):
            await db.migrate(conn)
    finally:
        await conn.close()


async def test_failing_migration_leaves_previous_version(empty_db: str) -> None:
    conn = await db.connect(empty_db)
    try:
        good = db.load_migrations()
        broken = [*good, db.Migration(len(good) + 1, "broken", "CREATE TABLE half_done (x int); SELECT 1/0;")]
        with pytest.raises(MigrationError, match="broken failed"):
            await db.migrate(conn, broken)
        assert await db.schema_version(conn) == len(good)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()


def test_shipped_migrations_are_numbered_without_gaps() -> None:
    migrations = db.load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.sql.strip() for m in migrations)


async def test_unreachable_database_is_a_storage_error() -> None:
    from ca_core.errors import StorageError

    with pytest.raises(StorageError, match="unreachable"):
        await db.connect("postgresql://x@/y?host=/nonexistent-socket-dir&port=1")
    assert issubclass(MigrationError, StorageError)
