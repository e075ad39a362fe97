"""The public aiohttp application, served over a real socket with real PostgreSQL and Valkey."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.model import KeyType
from ca_core.pki import IssuerSpec, PKISummary, add_issuer
from ca_core.profiles import PublicURLs
from ca_core.storage import postgres as db
from responder.app import CA_CERTS, CACertificates, build_public_app

UNREACHABLE_REDIS = "unix:///nonexistent/x.sock"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


async def body_of(resp: ClientResponse) -> bytes:
    """The response body, checked never to leak a Python traceback."""
    body = await resp.read()
    assert b"Traceback" not in body
    return body


@pytest.fixture
async def client(pool: asyncpg.Pool, redis_client: aioredis.Redis, pki: PKISummary) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_public_app(pool, redis_client))) as c:
        yield c


async def raw_request(client: TestClient, target: str, method: str = "GET") -> tuple[int, bytes]:
    """Send a request line exactly as written (no client-side path normalisation)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 ")
    assert b"Traceback" not in rest
    return int(status_line.split(b" ")[1]), rest


# Probes ---------------------------------------------------------------------------------


async def test_healthz(client: TestClient) -> None:
    resp = await client.get("/healthz")
    await body_of(resp)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {"status": "ok"}


async def test_readyz_when_everything_answers(client: TestClient) -> None:
    resp = await client.get("/readyz")
    await body_of(resp)
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "postgres": "ok", "redis": "ok"}


async def test_readyz_is_503_when_redis_is_unreachable(pool: asyncpg.Pool) -> None:
    broken = aioredis.Redis.from_url(UNREACHABLE_REDIS)
    try:
        async with TestClient(TestServer(build_public_app(pool, broken))) as client:
            started = time.monotonic()
            resp = await client.get("/readyz")
            await body_of(resp)
            elapsed = time.monotonic() - started
            body = await resp.json()

            # Liveness says nothing about dependencies: still fine.
            live = await client.get("/healthz")
            await body_of(live)
            assert live.status == 200
    finally:
        await broken.aclose()

    assert resp.status == 503
    assert body["status"] == "not ready"
    assert body["postgres"] == "ok"
    assert body["redis"] != "ok"
    assert body["redis"].startswith("unavailable (")
    assert UNREACHABLE_REDIS not in body["redis"]
    assert elapsed < 2.0


async def test_readyz_is_503_when_postgres_is_gone(database_url: str, redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    own_pool = await db.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with TestClient(TestServer(build_public_app(own_pool, redis_client))) as client:
            await own_pool.close()
            started = time.monotonic()
            resp = await client.get("/readyz")
            await body_of(resp)
            elapsed = time.monotonic() - started
            body = await resp.json()
    finally:
        if not own_pool.is_closing():
            await own_pool.close()

    assert resp.status == 503
    assert body["status"] == "not ready"
    assert body["postgres"].startswith("unavailable (")
    assert body["redis"] == "ok"
    assert elapsed < 2.0


# CA certificates ------------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["moica", "gca"])
async def test_ca_certificate_is_served_as_der(client: TestClient, pki: PKISummary, issuer: str) -> None:
    resp = await client.get(f"/ca/{issuer}.crt")
    body = await body_of(resp)

    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/pkix-cert"
    assert body == der(pki.issuers[issuer])
    assert x509.load_der_x509_certificate(body) == pki.issuers[issuer]
    assert re.fullmatch(r'"[0-9a-f]{32}"', resp.headers["ETag"])
    assert "max-age=" in resp.headers["Cache-Control"]


async def test_issuers_have_distinct_etags(client: TestClient) -> None:
    moica = await client.get("/ca/moica.crt")
    gca = await client.get("/ca/gca.crt")
    await body_of(moica)
    await body_of(gca)
    assert moica.headers["ETag"] != gca.headers["ETag"]


async def test_the_aia_ca_issuers_url_of_an_issuing_ca_serves_the_root(client: TestClient, pki: PKISummary) -> None:
    aia = pki.issuers["moica"].extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    (url,) = [d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS]

    resp = await client.get(urlsplit(url).path)
    body = await body_of(resp)

    assert resp.status == 200
    assert body == der(pki.root)


async def test_if_none_match_gets_304_without_a_body(client: TestClient, pki: PKISummary) -> None:
    first = await client.get("/ca/moica.crt")
    await body_of(first)
    etag = first.headers["ETag"]

    again = await client.get("/ca/moica.crt", headers={"If-None-Match": etag})
    body = await again.read()

    assert again.status == 304
    assert body == b""
    assert again.headers["ETag"] == etag


@pytest.mark.parametrize("etag", ['"0000"', "*-not-it", ""], ids=["other-etag", "garbage", "empty"])
async def test_a_non_matching_if_none_match_gets_the_certificate(client: TestClient, pki: PKISummary, etag: str) -> None:
    resp = await client.get("/ca/moica.crt", headers={"If-None-Match": etag})
    body = await body_of(resp)
    assert resp.status == 200
    assert body == der(pki.issuers["moica"])


async def test_head_of_a_ca_certificate(client: TestClient) -> None:
    resp = await client.head("/ca/moica.crt")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/pkix-cert"
    assert await resp.read() == b""


async def test_unknown_issuer_is_404_with_a_clear_message(client: TestClient) -> None:
    resp = await client.get("/ca/nope.crt")
    body = await body_of(resp)

    assert resp.status == 404
    assert resp.content_type == "text/plain"
    assert body.decode() == "no CA named 'nope'\n"
    assert "ETag" not in resp.headers


@pytest.mark.parametrize(
    "path",
    [
        "/ca/UPPER.crt",
        "/ca/Moica.crt",
        "/ca/moica.der",
        "/ca/moica",
        "/ca/.crt",
        "/ca/1moica.crt",
        "/ca/moica.crt/extra",
        "/ca/" + "a" * 32 + ".crt",
        "/nope",
        "/",
        "/ocspx",
        "/ocsp/",  # OCSP is the fast path's; this bare app has none behind its route
    ],
)
async def test_paths_that_are_not_served_are_404(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    body = await body_of(resp)
    assert resp.status == 404
    assert b"-----BEGIN" not in body
    assert b"\x30\x82" not in body[:2]


@pytest.mark.parametrize(
    "target",
    ["/ca/../x.crt", "/ca/../ca/moica.crt/..", "/ca/%2e%2e/x.crt", "/ca/..%2fx.crt", "/ca/UPPER.crt"],
)
async def test_raw_traversal_paths_are_404(client: TestClient, target: str) -> None:
    status, rest = await raw_request(client, target)
    assert status == 404


async def test_post_to_healthz_is_405(client: TestClient) -> None:
    resp = await client.post("/healthz", data=b"{}")
    await body_of(resp)
    assert resp.status == 405
    assert "GET" in resp.headers["Allow"]


@pytest.mark.parametrize(("method", "path"), [("POST", "/ca/moica.crt"), ("PUT", "/readyz"), ("DELETE", "/ca/moica.crt")])
async def test_other_methods_are_405(client: TestClient, method: str, path: str) -> None:
    resp = await client.request(method, path)
    await body_of(resp)
    assert resp.status == 405


# Refreshing the CA certificates -------------------------------------------------------------


async def test_an_issuer_added_later_is_served_after_the_refresh_interval(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    pki: PKISummary,
    vault: KeyVault,
    clock: FakeClock,
    urls: PublicURLs,
) -> None:
    app = build_public_app(pool, redis_client)
    certs = app[CA_CERTS]
    certs.REFRESH_INTERVAL = 3600.0  # type: ignore[misc]
    async with TestClient(TestServer(app)) as client:
        before = await client.get("/ca/later.crt")
        await body_of(before)
        assert before.status == 404

        later, _ = await add_issuer(
            pool,
            vault,
            IssuerSpec("later", key_type=KeyType.EC_P256, ocsp_key_type=KeyType.EC_P256, crl_partitions=2),
            clock=clock,
            urls=urls,
            actor="test",
        )

        # Within the interval a miss is answered from the cache, without a database query.
        cached = await client.get("/ca/later.crt")
        await body_of(cached)
        assert cached.status == 404

        certs.REFRESH_INTERVAL = 0.2  # type: ignore[misc]
        await asyncio.sleep(0.3)

        after = await client.get("/ca/later.crt")
        body = await body_of(after)
        assert after.status == 200
        assert body == der(later)

        # The issuers known before are still there.
        moica = await client.get("/ca/moica.crt")
        assert await body_of(moica) == der(pki.issuers["moica"])


async def test_ca_certificates_refresh_on_a_miss_only_after_the_interval(
    pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, clock: FakeClock, urls: PublicURLs
) -> None:
    certs = CACertificates()
    certs.REFRESH_INTERVAL = 0.2  # type: ignore[misc]

    # Never loaded: the first lookup loads.
    assert await certs.get("moica", pool) == der(pki.issuers["moica"])
    assert await certs.get("nope", pool) is None

    later, _ = await add_issuer(
        pool,
        vault,
        IssuerSpec("later", key_type=KeyType.EC_P256, ocsp_key_type=KeyType.EC_P256, crl_partitions=2),
        clock=clock,
        urls=urls,
        actor="test",
    )
    await asyncio.sleep(0.3)
    assert await certs.get("later", pool) == der(later)


async def test_concurrent_misses_all_see_the_new_issuer(
    pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, clock: FakeClock, urls: PublicURLs
) -> None:
    certs = CACertificates()
    await certs.refresh(pool)
    later, _ = await add_issuer(
        pool,
        vault,
        IssuerSpec("later", key_type=KeyType.EC_P256, ocsp_key_type=KeyType.EC_P256, crl_partitions=2),
        clock=clock,
        urls=urls,
        actor="test",
    )
    certs.REFRESH_INTERVAL = 0.0  # type: ignore[misc]
    results = await asyncio.gather(*(certs.get("later", pool) for _ in range(20)))
    assert results == [der(later)] * 20


async def test_ca_certificate_is_503_not_404_when_postgres_is_gone(
    database_url: str, redis_client: aioredis.Redis, pool: asyncpg.Pool, pki: PKISummary
) -> None:
    own_pool = await db.create_pool(database_url, min_size=1, max_size=2)
    app = build_public_app(own_pool, redis_client)
    try:
        async with TestClient(TestServer(app)) as client:
            known = await client.get("/ca/moica.crt")
            assert known.status == 200  # loaded at start-up, served from memory
            await own_pool.close()
            app[CA_CERTS].REFRESH_INTERVAL = 0.0  # type: ignore[misc]
            assert (await client.get("/ca/moica.crt")).status == 200  # still served from memory
            resp = await client.get("/ca/unknown.crt")
            text = await resp.text()
    finally:
        if not own_pool.is_closing():
            await own_pool.close()
    assert resp.status == 503
    assert "try again" in text and "Traceback" not in text
