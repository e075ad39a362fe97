"""`openssl ocsp`, the reference command-line client, checks our signed answers end to end:
POST and GET, both issuers, every status, SHA-1 and SHA-256 CertIDs, with and without nonces,
the nonce-signing mode and extended-revoked answers for never-issued serials."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp as cocsp
from cryptography.x509.oid import ObjectIdentifier

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord
from ca_core.storage import postgres as db

from .ocsp_harness import Responder, now_clock, start_responder

OpenSSL = Callable[..., subprocess.CompletedProcess[str]]
EXTENDED_REVOKE = ObjectIdentifier("1.3.6.1.5.5.7.48.1.9")
NO_NONCE_WARNING = "WARNING: no nonce in response"
VERIFY_OK = "Response verify OK"


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
def serve(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Responder]]:
    """Start a responder with config overrides: ``async with serve(ocsp_nonce="sign") as r``."""

    def start(**config: object) -> contextlib.AbstractAsyncContextManager[Responder]:
        return contextlib.asynccontextmanager(start_responder)(pool, redis_client, redis_url, vault, clock, ca, **config)

    return start


@dataclasses.dataclass
class Client:
    """openssl ocsp against one running responder, with the PEM files it needs."""

    openssl: OpenSSL
    responder: Responder
    dir: Path
    root: Path
    issuers: dict[str, Path]

    def leaf(self, record: CertRecord, name: str) -> Path:
        path = self.dir / f"{name}.pem"
        path.write_bytes(record.certificate().public_bytes(serialization.Encoding.PEM))
        return path

    def _run(self, *args: Any) -> str:
        result = self.openssl("ocsp", *args)
        return result.stdout + result.stderr

    def _ids(self, issuer: str, leaf: Path | None, serial: int | None, sha256: bool) -> list[Any]:
        # Order matters to openssl: the digest and the issuer apply to the -cert after them.
        ids: list[Any] = ["-sha256"] if sha256 else []
        ids += ["-issuer", self.issuers[issuer]]
        ids += ["-cert", leaf] if leaf is not None else ["-serial", f"0x{serial:X}"]
        return ids

    def _verify(self, issuer: str) -> list[Any]:
        return ["-CAfile", self.root, "-verify_other", self.issuers[issuer]]

    async def post(self, issuer: str, leaf: Path | None = None, *, serial: int | None = None, sha256: bool = False,
                   nonce: bool = True) -> tuple[str, bytes, bytes]:
        """(openssl's output, request DER, response DER) of a POST to /ocsp."""
        req, resp = self.dir / "post-req.der", self.dir / "post-resp.der"
        args = [*self._ids(issuer, leaf, serial, sha256), "-url", self.responder.url + "/ocsp", "-timeout", "10",
                *self._verify(issuer), "-reqout", req, "-respout", resp]
        if not nonce:
            args.append("-no_nonce")
        out = await asyncio.to_thread(self._run, *args)
        return out, req.read_bytes(), resp.read_bytes()

    async def get(self, issuer: str, leaf: Path, *, sha256: bool = False,
                  nonce: bool = True) -> tuple[str, bytes, bytes, dict[str, str]]:
        """The same over GET /ocsp/<url-encoded base64>: openssl 3.0 writes the request,
        we fetch it, openssl verifies the response (-no_nonce there: a new request object
        would carry a new nonce; the nonce is compared with cryptography instead)."""
        req, resp = self.dir / "get-req.der", self.dir / "get-resp.der"
        args = [*self._ids(issuer, leaf, None, sha256), "-reqout", req]
        if not nonce:
            args.append("-no_nonce")
        await asyncio.to_thread(self._run, *args)
        status, headers, body = await self.responder.get(req.read_bytes())
        assert status == 200, (status, body)
        resp.write_bytes(body)
        out = await asyncio.to_thread(
            self._run, *self._ids(issuer, leaf, None, sha256), "-respin", resp, *self._verify(issuer), "-no_nonce"
        )
        return out, req.read_bytes(), body, dict(headers)


@pytest.fixture
def client_for(openssl: OpenSSL, pool: asyncpg.Pool, tmp_path: Path) -> Callable[[Responder], Any]:
    async def make(responder: Responder) -> Client:
        async with pool.acquire() as conn:
            rows = await db.list_issuers(conn)
        paths: dict[str, Path] = {}
        root = None
        for row in rows:
            path = tmp_path / f"ca-{row.name}.pem"
            path.write_bytes(x509.load_der_x509_certificate(row.certificate).public_bytes(serialization.Encoding.PEM))
            if row.parent_id is None:
                root = path
            else:
                paths[row.name] = path
        assert root is not None and set(paths) == {"moica", "gca"}
        return Client(openssl, responder, tmp_path, root, paths)

    return make


def nonce_of(der: bytes, *, request: bool) -> bytes | None:
    obj = cocsp.load_der_ocsp_request(der) if request else cocsp.load_der_ocsp_response(der)
    try:
        return obj.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


async def issue_every_status(r: Responder, issuer: str) -> dict[str, CertRecord]:
    good = await r.issue(issuer)
    revoked = await r.issue(issuer)
    await r.ca.revoke(issuer, revoked.serial, actor="test", reason="keyCompromise")
    suspended = await r.issue(issuer)
    await r.ca.suspend(issuer, suspended.serial, actor="test")
    resumed = await r.issue(issuer)
    await r.ca.suspend(issuer, resumed.serial, actor="test")
    await r.ca.resume(issuer, resumed.serial, actor="test")
    await r.settle()
    return {"good": good, "revoked": revoked, "suspended": suspended, "resumed": resumed}


# What openssl prints for each kind of certificate, and what the response states.
EXPECTED = {
    "good": (": good", None, cocsp.OCSPCertStatus.GOOD),
    "revoked": (": revoked", "Reason: keyCompromise", cocsp.OCSPCertStatus.REVOKED),
    "suspended": (": revoked", "Reason: certificateHold", cocsp.OCSPCertStatus.REVOKED),
    "resumed": (": good", None, cocsp.OCSPCertStatus.GOOD),
}


@pytest.mark.parametrize("transport", ["POST", "GET"])
@pytest.mark.parametrize("issuer", ["moica", "gca"])
async def test_openssl_verifies_every_status(
    serve: Callable[..., Any], client_for: Callable[[Responder], Any], issuer: str, transport: str
) -> None:
    async with serve() as r:
        client: Client = await client_for(r)
        records = await issue_every_status(r, issuer)
        for kind, record in records.items():
            leaf = client.leaf(record, kind)
            line, reason, status = EXPECTED[kind]
            for sha256 in (False, True):
                for nonce in (True, False):
                    label = f"{kind} sha256={sha256} nonce={nonce} over {transport}"
                    if transport == "POST":
                        out, req, resp_der = await client.post(issuer, leaf, sha256=sha256, nonce=nonce)
                    else:
                        out, req, resp_der, headers = await client.get(issuer, leaf, sha256=sha256, nonce=nonce)
                        # The nonce is ignored, so the answer is the shared, cacheable one.
                        assert "public" in headers["Cache-Control"], label
                    assert VERIFY_OK in out, (label, out)
                    assert f"{leaf}{line}" in out, (label, out)
                    if reason is not None:
                        assert reason in out and "Revocation Time:" in out, (label, out)
                    else:
                        assert "Reason:" not in out, (label, out)
                    assert "This Update:" in out and "Next Update:" in out, (label, out)
                    # Nonces are ignored by default (RFC 5019): openssl notices, and says so
                    # when it sent one and checks the answer itself (POST).
                    assert (nonce_of(req, request=True) is not None) == nonce, label
                    assert (NO_NONCE_WARNING in out) == (nonce and transport == "POST"), (label, out)
                    resp = cocsp.load_der_ocsp_response(resp_der)
                    assert nonce_of(resp_der, request=False) is None, label
                    assert resp.certificate_status == status, label
                    assert resp.serial_number == record.serial, label
                    assert resp.hash_algorithm.name == ("sha256" if sha256 else "sha1"), label
                    assert EXTENDED_REVOKE not in [e.oid for e in resp.extensions], label


async def test_nonce_is_echoed_when_configured_to_sign(
    serve: Callable[..., Any], client_for: Callable[[Responder], Any]
) -> None:
    async with serve(ocsp_nonce="sign") as r:
        client: Client = await client_for(r)
        good = await r.issue("moica")
        revoked = await r.issue("gca")
        await r.ca.revoke("gca", revoked.serial, actor="test", reason="keyCompromise")
        await r.settle()
        for issuer, record, line in (("moica", good, ": good"), ("gca", revoked, ": revoked")):
            leaf = client.leaf(record, f"leaf-{issuer}")
            for sha256 in (False, True):
                label = f"{issuer} sha256={sha256}"
                # POST: openssl compares the nonce itself ("Nonce Verify error" if it differs).
                out, req, resp_der = await client.post(issuer, leaf, sha256=sha256)
                assert VERIFY_OK in out and f"{leaf}{line}" in out, (label, out)
                assert NO_NONCE_WARNING not in out and "Nonce Verify error" not in out, (label, out)
                sent = nonce_of(req, request=True)
                assert sent is not None and nonce_of(resp_der, request=False) == sent, label
                # GET: the same, and the answer is for this client only.
                out, req, resp_der, headers = await client.get(issuer, leaf, sha256=sha256)
                assert VERIFY_OK in out and f"{leaf}{line}" in out, (label, out)
                sent = nonce_of(req, request=True)
                assert sent is not None and nonce_of(resp_der, request=False) == sent, label
                assert headers["Cache-Control"] == "no-store", (label, headers)
                assert cocsp.load_der_ocsp_response(resp_der).hash_algorithm.name == ("sha256" if sha256 else "sha1")
                # Without a nonce: the pre-signed (or derived) answer, verified as usual.
                out, _, resp_der = await client.post(issuer, leaf, sha256=sha256, nonce=False)
                assert VERIFY_OK in out and f"{leaf}{line}" in out, (label, out)
                assert nonce_of(resp_der, request=False) is None, label


async def test_never_issued_serial_is_extended_revoked_when_configured(
    serve: Callable[..., Any], client_for: Callable[[Responder], Any]
) -> None:
    async with serve(ocsp_unknown_serial="revoked") as r:
        client: Client = await client_for(r)
        issued = await r.issue("moica")
        never = (1 << 126) | secrets.randbits(120)
        assert never != issued.serial
        for issuer in ("moica", "gca"):
            for sha256 in (False, True):
                label = f"{issuer} sha256={sha256}"
                out, _, resp_der = await client.post(issuer, serial=never, sha256=sha256, nonce=False)
                assert VERIFY_OK in out, (label, out)
                assert f"0x{never:X}: revoked" in out, (label, out)
                assert "Reason: certificateHold" in out and "Revocation Time: Jan  1 00:00:00 1970 GMT" in out, out
                resp = cocsp.load_der_ocsp_response(resp_der)
                assert resp.response_status == cocsp.OCSPResponseStatus.SUCCESSFUL
                assert resp.certificate_status == cocsp.OCSPCertStatus.REVOKED
                assert resp.serial_number == never
                assert resp.hash_algorithm.name == ("sha256" if sha256 else "sha1")
                assert resp.revocation_time_utc == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
                assert resp.revocation_reason == x509.ReasonFlags.certificate_hold
                ext = resp.extensions.get_extension_for_oid(EXTENDED_REVOKE)
                assert not ext.critical
        # An issued certificate is still simply good, without the extension.
        out, _, resp_der = await client.post("moica", client.leaf(issued, "issued"), nonce=False)
        assert VERIFY_OK in out and ": good" in out, out
        assert EXTENDED_REVOKE not in [e.oid for e in cocsp.load_der_ocsp_response(resp_der).extensions]
