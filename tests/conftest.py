"""Shared fixtures: real PostgreSQL and Valkey, started once per session, reset per test.

By default the suite runs its own embedded servers (the same code path as the CLI)
in a temporary directory. Set TEST_DATABASE_URL and TEST_REDIS_URL to use servers
of your own instead; the suite truncates their tables and flushes the database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
import uvloop

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault, Passphrase
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import KeyType
from ca_core.pki import IssuerSpec, PKISummary, init_pki
from ca_core.profiles import PublicURLs
from ca_core.storage import postgres as db
from ca_core.storage.embedded import EmbeddedServices

TEST_PASSPHRASE = "test passphrase, not a secret"
# Low scrypt cost keeps the suite fast; production uses ca_core.keystore's default.
TEST_SCRYPT_N_LOG2 = 12
BASE_URL = "http://status.example.test"
ISSUERS = ("moica", "gca")

# Every table the application writes, children first.
_TABLES = (
    "api_tokens", "api_client_certs", "crl_publications", "ocsp_sweep", "ocsp_fill", "idempotency_keys", "audit_log", "outbox", "crl_numbers", "ocsp_signers",
    "certificates", "issuers", "sealed_keys",
)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], object]]:
    """Tests run on uvloop, as production does (its transports differ from asyncio's)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(database URL, Redis URL) of the servers the whole session uses."""
    if os.environ.get("TEST_DATABASE_URL") and os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_DATABASE_URL"], os.environ["TEST_REDIS_URL"]
        return
    with EmbeddedServices(tmp_path_factory.mktemp("services")) as embedded:
        yield embedded.database_url, embedded.redis_url


@pytest.fixture(scope="session")
def database_url(services: tuple[str, str]) -> str:
    return services[0]


@pytest.fixture(scope="session")
def redis_url(services: tuple[str, str]) -> str:
    return services[1]


@pytest.fixture(scope="session")
def _migrated(database_url: str) -> None:
    import asyncio

    async def go() -> None:
        conn = await db.connect(database_url)
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(go())


async def reset_database(conn: asyncpg.Connection) -> None:
    """Empty every application table. The append-only triggers are bypassed the only way
    they can be: by the database superuser switching triggers off for this session."""
    await conn.execute("SET session_replication_role = replica")
    try:
        # A lock wait here means a previous test left a transaction open: fail, never hang.
        await conn.execute("SET lock_timeout = '15s'")
        await conn.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE")
        await conn.execute("UPDATE audit_chain_head SET seq = 0, hash = $1", bytes(32))
    finally:
        await conn.execute("RESET lock_timeout")
        await conn.execute("SET session_replication_role = DEFAULT")


@pytest.fixture
async def pool(database_url: str, _migrated: None) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a freshly emptied database."""
    p = await db.create_pool(database_url, min_size=1, max_size=20)
    async with p.acquire() as conn:
        await reset_database(conn)
    yield p
    await p.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vault() -> KeyVault:
    return KeyVault(Passphrase(TEST_PASSPHRASE), scrypt_n_log2=TEST_SCRYPT_N_LOG2)


@pytest.fixture
def urls() -> PublicURLs:
    return PublicURLs(BASE_URL)


@pytest.fixture
async def pki(pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, urls: PublicURLs) -> PKISummary:
    """A root with the moica and gca issuers (EC keys: fast to generate)."""
    return await init_pki(
        pool,
        vault,
        clock=clock,
        urls=urls,
        issuers=[IssuerSpec(n, key_type=KeyType.EC_P256, ocsp_key_type=KeyType.EC_P256, crl_partitions=4) for n in ISSUERS],
        actor="test",
        root_key_type=KeyType.EC_P384,
    )


@pytest.fixture
async def ca(pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, urls: PublicURLs, pki: PKISummary) -> CertificateAuthority:
    return CertificateAuthority(pool, vault, clock=clock, urls=urls)


# Real clients ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openssl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the openssl command line; fails the test with its output if it fails."""
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("the openssl command line tool is needed by the interoperability tests")

    def run(*args: str | Path, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, *map(str, args)], capture_output=True, text=True, input=input, check=False, timeout=60
        )
        if check and result.returncode != 0:
            pytest.fail(f"openssl {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def certstatus_cli() -> list[str]:
    """How to run the installed CLI as a subprocess (the same interpreter as the tests)."""
    return [sys.executable, "-m", "responder"]
