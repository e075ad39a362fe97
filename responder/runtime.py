"""Wiring shared by the CLI commands: where the storage is, and opening it.

``endpoints(cfg)`` yields the PostgreSQL and Redis URLs to use, starting the embedded
servers when no URLs are configured (and stopping them on the way out).
``open_storage`` connects, applies migrations, and closes everything afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ca_core.errors import ConfigurationError, StorageError
from ca_core.keystore import KeyVault
from ca_core.storage import postgres as db
from ca_core.storage.embedded import EmbeddedServices

from .config import Config

__all__ = ["Endpoints", "Storage", "endpoints", "open_storage", "vault"]


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoints:
    database_url: str
    redis_url: str
    embedded: EmbeddedServices | None


@contextlib.contextmanager
def endpoints(cfg: Config) -> Iterator[Endpoints]:
    """The servers to use; embedded ones are started here and stopped on exit."""
    if not cfg.uses_embedded:
        assert cfg.database_url is not None and cfg.redis_url is not None
        yield Endpoints(cfg.database_url, cfg.redis_url, None)
        return
    services = EmbeddedServices(cfg.data_dir, postgres=cfg.database_url is None, valkey=cfg.redis_url is None)
    with services:
        yield Endpoints(
            cfg.database_url or services.database_url,
            cfg.redis_url or services.redis_url,
            services,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Storage:
    pool: asyncpg.Pool
    redis: aioredis.Redis


def redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5, health_check_interval=30)


@contextlib.asynccontextmanager
async def open_storage(ep: Endpoints, cfg: Config, *, migrate: bool = True) -> AsyncIterator[Storage]:
    """Connect to PostgreSQL (applying migrations) and Redis; close both on exit."""
    pool = await db.create_pool(ep.database_url, max_size=cfg.db_pool_size)
    try:
        if migrate:
            async with pool.acquire() as conn:
                await db.migrate(conn)
        try:
            client = redis_client(ep.redis_url)
        except ValueError:
            # The message may quote the URL, and the URL may hold a password.
            raise ConfigurationError("REDIS_URL is not a valid Redis URL") from None
        try:
            try:
                await client.ping()
            except (RedisError, OSError) as e:
                raise StorageError(f"Redis/Valkey is unreachable: {e}") from e
            yield Storage(pool, client)
        finally:
            await client.aclose()
    finally:
        await pool.close()


def vault(cfg: Config) -> KeyVault:
    """The key vault, or a clear error naming the settings when no passphrase is configured."""
    passphrase = cfg.passphrase()
    if passphrase is None:
        raise ConfigurationError(
            "no key passphrase: set CERTSTATUS_KEY_PASSPHRASE_FILE (a file holding it) or "
            "CERTSTATUS_KEY_PASSPHRASE; it encrypts the CA keys at rest"
        )
    return KeyVault(passphrase)
