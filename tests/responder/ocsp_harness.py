"""A running OCSP responder for tests: real PostgreSQL, Valkey, signer and HTTP server.

Shared by the responder's OCSP tests. Everything runs in the test's event loop; the
clock is real-time-anchored because Redis expires keys by its own clock.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as cocsp
from multidict import CIMultiDict

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.profiles import HolderSubject
from ca_core.signer import Signer, SignerSettings
from ca_core.storage import postgres as db
from responder.config import Config
from responder.public import PublicServer, public_server
from responder.runtime import Storage

HOLDER = HolderSubject("王小明", "0000000111729553")


def test_config(**overrides: object) -> Config:
    from tests.conftest import TEST_PASSPHRASE

    return Config.load(env={}, overrides={"key_passphrase": TEST_PASSPHRASE, "public_port": 18080, **overrides})


@dataclasses.dataclass
class Responder:
    url: str
    server: PublicServer
    signer: Signer
    ca: CertificateAuthority
    pool: asyncpg.Pool
    redis: aioredis.Redis
    http: aiohttp.ClientSession
    issuer_certs: dict[str, x509.Certificate]

    async def issue(self, issuer: str = "moica") -> CertRecord:
        record, _ = await self.ca.issue_with_generated_key(
            issuer=issuer, profile="citizen-signing", subject=HOLDER, actor="test", key_type=KeyType.EC_P256
        )
        await self.settle()
        return record

    async def settle(self) -> None:
        """Let the signer publish every pending change (what its outbox loop does)."""
        while await self.signer.process_outbox():
            pass

    def request(self, record: CertRecord | int, issuer: str = "moica", algorithm: hashes.HashAlgorithm | None = None,
                nonce: bytes | None = None) -> bytes:
        serial = record if isinstance(record, int) else record.serial
        issuer_cert = self.issuer_certs[issuer]
        from ca_core.ocsp import HashAlgorithm, issuer_hashes

        alg = algorithm or hashes.SHA1()
        h = issuer_hashes(issuer_cert)[HashAlgorithm.SHA1 if alg.name == "sha1" else HashAlgorithm.SHA256]
        builder = cocsp.OCSPRequestBuilder().add_certificate_by_hash(h.name_hash, h.key_hash, serial, alg)
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        return builder.build().public_bytes(serialization.Encoding.DER)

    async def post(self, der: bytes, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        async with self.http.post(self.url + "/ocsp", data=der,
                                  headers={"Content-Type": "application/ocsp-request", **headers}) as r:
            return r.status, r.headers.copy(), await r.read()

    async def get(self, der: bytes | None = None, *, path: str | None = None, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        if path is None:
            assert der is not None
            path = "/ocsp/" + base64.b64encode(der).decode().replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        async with self.http.get(self.url + path, headers=headers) as r:
            return r.status, r.headers.copy(), await r.read()


async def start_responder(
    pool: asyncpg.Pool, redis: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock, ca: CertificateAuthority,
    **config: object,
) -> AsyncIterator[Responder]:
    signer = Signer(pool, redis, vault, clock, SignerSettings(batch_size=50))
    await signer.load_issuers()
    while await signer.process_outbox():
        pass
    await signer.check_fills()
    while await signer.sweep_chunk() is not None:
        pass
    await signer.check_fills()
    async with pool.acquire() as conn:
        certs = {i.name: x509.load_der_x509_certificate(i.certificate) for i in await db.list_issuers(conn)}
    cfg = test_config(**config)
    async with public_server(cfg, Storage(pool, redis), redis_url, port=0) as srv, aiohttp.ClientSession() as http:
        # Wait for the change subscriptions (OCSP and CRL), so caches are in use as in
        # production and a new stream subscriber is not ended by a first subscription.
        for _ in range(200):
            if srv.source._subscribed and srv.crls._subscribed:
                break
            import asyncio

            await asyncio.sleep(0.01)
        try:
            yield Responder(f"http://127.0.0.1:{srv.port}", srv, signer, ca, pool, redis, http, certs)
        finally:
            await signer.aclose()


def now_clock() -> FakeClock:
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
