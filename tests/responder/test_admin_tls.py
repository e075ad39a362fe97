"""TLS client certificates as admin credentials, over real TLS against real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca_core.clock import FakeClock
from ca_core.lifecycle import CertificateAuthority, certificate_pem
from ca_core.model import CertRecord, KeyType
from ca_core.profiles import HolderSubject
from ca_core.storage import postgres as db
from ca_core.tokens import Role, make_token
from responder.admin import admin_ssl_context, build_admin_app

Call = Callable[..., Awaitable[tuple[int, Any]]]


def _self_signed(tmp: Path, cn: str, *, client: bool = False) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                              else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )  # fmt: skip
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = tmp / f"{cn}.crt", tmp / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"server key passphrase")))  # fmt: skip
    return cert_path, key_path


async def _credential(
    ca: CertificateAuthority,
    pool: asyncpg.Pool,
    tmp: Path,
    name: str,
    role: Role | None,
    *,
    profile: str = "admin-client",
) -> tuple[CertRecord, Path, Path]:
    """Issue a certificate with ``profile`` and, if ``role`` is given, register it."""
    record, key = await ca.issue_with_generated_key(issuer="moica", profile=profile, actor="test", key_type=KeyType.EC_P256,
                                                    subject=HolderSubject("陳管理", "0000000222333444"))  # fmt: skip
    if role is not None:
        async with pool.acquire() as conn:
            issuer_id = (await db.get_issuer(conn, "moica")).id  # type: ignore[union-attr]
            await db.insert_client_cert(conn, name=name, role=role.value, issuer_id=issuer_id, serial=record.serial,
                                        now=dt.datetime.now(dt.UTC))  # fmt: skip
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_text(certificate_pem(record))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return record, cert_path, key_path


@pytest.fixture
async def tls_api(
    pool: asyncpg.Pool, ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Callable[..., Call]]:
    server_cert, server_key = _self_signed(tmp_path, "localhost")
    async with pool.acquire() as conn:
        trust = [i.certificate for i in await db.list_issuers(conn)]
    ctx = admin_ssl_context(str(server_cert), str(server_key), b"server key passphrase", trust)
    runner = web.AppRunner(build_admin_app(pool, ca, clock))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]

    def client(cert: tuple[Path, Path] | None = None) -> Call:
        client_ctx = ssl.create_default_context(cafile=str(server_cert))
        if cert is not None:
            client_ctx.load_cert_chain(str(cert[0]), str(cert[1]))

        async def call(method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with (
                aiohttp.ClientSession() as http,
                http.request(
                    method, f"https://localhost:{port}{path}", json=body, ssl=client_ctx, headers=headers
                ) as r,
            ):
                return r.status, await r.json(content_type=None)

        return call

    yield client
    await runner.cleanup()


async def test_a_registered_certificate_opens_the_api_with_its_role(
    tls_api: Callable[..., Call], ca: CertificateAuthority, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    _, cert, key = await _credential(ca, pool, tmp_path, "ops-alice", Role.OPERATOR)
    citizen = await ca.issue_with_generated_key(issuer="moica", profile="citizen-signing", actor="test",
                                                subject=HolderSubject("王小明", "0000000111729553"),
                                                key_type=KeyType.EC_P256)  # fmt: skip
    call = tls_api((cert, key))
    status, body = await call("GET", "/v1/issuers")
    assert status == 200 and {i["name"] for i in body["issuers"]} >= {"moica", "gca"}
    status, body = await call(
        "POST", f"/v1/certificates/moica/{citizen[0].serial:X}/revoke", {"reason": "keyCompromise"}
    )
    assert status == 200 and body["status"] == "revoked"
    entries = await pool.fetch("SELECT actor FROM audit_log WHERE action = 'certificate.revoke'")
    assert [e["actor"] for e in entries] == ["cert:ops-alice"]
    last_used = await pool.fetchval("SELECT last_used_at FROM api_client_certs WHERE name = 'ops-alice'")
    assert last_used is not None


async def test_an_auditor_certificate_may_read_but_not_revoke(
    tls_api: Callable[..., Call], ca: CertificateAuthority, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    record, cert, key = await _credential(ca, pool, tmp_path, "audit-bob", Role.AUDITOR)
    call = tls_api((cert, key))
    assert (await call("GET", "/v1/audit"))[0] == 200
    status, body = await call("POST", f"/v1/certificates/moica/{record.serial:X}/revoke", {})
    assert status == 403 and body["type"] == "urn:certstatus:problem:forbidden"


async def test_certificates_that_are_not_credentials_are_refused(
    tls_api: Callable[..., Call], ca: CertificateAuthority, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # Issued by this CA, but never registered: a citizen's card certificate, or an admin one.
    for name, profile in (("citizen", "citizen-signing"), ("unregistered", "admin-client")):
        _, cert, key = await _credential(ca, pool, tmp_path, name, None, profile=profile)
        status, body = await tls_api((cert, key))("GET", "/v1/issuers")
        assert status == 401 and body["type"] == "urn:certstatus:problem:unauthorized"
        assert "not registered" in body["detail"]
    # No credential at all over TLS.
    status, body = await tls_api()("GET", "/v1/issuers")
    assert status == 401 and "client certificate" in body["detail"]


async def test_a_foreign_certificate_fails_the_handshake(tls_api: Callable[..., Call], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "intruder", client=True)
    key.write_bytes(serialization.load_pem_private_key(key.read_bytes(), b"server key passphrase").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    with pytest.raises(aiohttp.ClientError):
        await tls_api((cert, key))("GET", "/v1/issuers")


async def test_revoking_suspending_or_withdrawing_shuts_the_holder_out_at_once(
    tls_api: Callable[..., Call], ca: CertificateAuthority, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    record, cert, key = await _credential(ca, pool, tmp_path, "ra-carol", Role.REGISTRATION_OFFICER)
    call = tls_api((cert, key))
    assert (await call("GET", "/v1/issuers"))[0] == 200
    await ca.suspend("moica", record.serial, actor="test")
    status, body = await call("GET", "/v1/issuers")
    assert status == 401 and "is suspended" in body["detail"]
    await ca.resume("moica", record.serial, actor="test")
    assert (await call("GET", "/v1/issuers"))[0] == 200
    async with pool.acquire() as conn:
        await db.revoke_client_cert(conn, "ra-carol", dt.datetime.now(dt.UTC))
    status, body = await call("GET", "/v1/issuers")
    assert status == 401 and "withdrawn" in body["detail"]

    record2, cert2, key2 = await _credential(ca, pool, tmp_path, "ra-dave", Role.REGISTRATION_OFFICER)
    await ca.revoke("moica", record2.serial, actor="test", reason="affiliationChanged")
    status, body = await tls_api((cert2, key2))("GET", "/v1/issuers")
    assert status == 401 and "is revoked" in body["detail"]


async def test_an_expired_certificate_is_refused(
    tls_api: Callable[..., Call], ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock, tmp_path: Path
) -> None:
    """The handshake checks validity against the real clock; the API against its own, so
    a credential is refused from the moment it expires even if TLS let it through."""
    record, cert, key = await _credential(ca, pool, tmp_path, "ops-erin", Role.OPERATOR)
    call = tls_api((cert, key))
    assert (await call("GET", "/v1/issuers"))[0] == 200
    clock.advance(record.not_after - clock.now() + dt.timedelta(seconds=1))
    status, body = await call("GET", "/v1/issuers")
    assert status == 401 and "expired" in body["detail"]


async def test_a_token_still_works_over_tls_and_wins_over_a_certificate(
    tls_api: Callable[..., Call], ca: CertificateAuthority, pool: asyncpg.Pool, tmp_path: Path, clock: FakeClock
) -> None:
    _, cert, key = await _credential(ca, pool, tmp_path, "audit-frank", Role.AUDITOR)
    token = make_token()
    async with pool.acquire() as conn:
        token_id = await db.insert_token(conn, name="ops-token", role="operator", secret_hash=token.secret_hash,
                                         now=clock.now())  # fmt: skip
    assert (await tls_api()("GET", "/v1/issuers", token=token.text(token_id)))[0] == 200
    # Both given: the token decides (an operator may issue-check; the auditor could not revoke).
    citizen, _ = await ca.issue_with_generated_key(issuer="moica", profile="citizen-signing", actor="test",
                                                   subject=HolderSubject("王小明", "0000000111729553"),
                                                   key_type=KeyType.EC_P256)  # fmt: skip
    status, _ = await tls_api((cert, key))("POST", f"/v1/certificates/moica/{citizen.serial:X}/revoke", {},
                                           token=token.text(token_id))  # fmt: skip
    assert status == 200
    # A bad token with a good certificate is still a bad token.
    status, _ = await tls_api((cert, key))("GET", "/v1/issuers", token="cst_1_" + "A" * 43)
    assert status == 401


def test_the_admin_client_profile_is_for_client_authentication_only() -> None:
    from ca_core.profiles import ADMIN_CLIENT

    assert ADMIN_CLIENT.extended_key_usage == (ExtendedKeyUsageOID.CLIENT_AUTH,)
    assert ADMIN_CLIENT.key_usage(is_ec=True).digital_signature
    assert not ADMIN_CLIENT.key_usage(is_ec=True).content_commitment


async def test_admin_certificates_are_not_changed_through_the_api(
    tls_api: Callable[..., Call], ca: CertificateAuthority, pool: asyncpg.Pool, tmp_path: Path, clock: FakeClock
) -> None:
    """A registration officer may suspend and resume citizens, not credentials: else one could
    resume an operator's suspended certificate. Credentials are the CA host's business."""
    record, _, _ = await _credential(ca, pool, tmp_path, "ops-gina", Role.OPERATOR)
    await ca.suspend("moica", record.serial, actor="security")
    token = make_token()
    async with pool.acquire() as conn:
        token_id = await db.insert_token(conn, name="ra-1", role="registration-officer", secret_hash=token.secret_hash,
                                         now=clock.now())  # fmt: skip
    for op in ("resume", "suspend", "revoke"):
        status, body = await tls_api()("POST", f"/v1/certificates/moica/{record.serial:X}/{op}", {},
                                       token=token.text(token_id))  # fmt: skip
        assert status in (403, 409) and body["type"] != "urn:certstatus:problem:internal", (op, body)
    assert (await ca.get("moica", record.serial)).status.value == "suspended"
