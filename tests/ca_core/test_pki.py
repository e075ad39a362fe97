"""The CA hierarchy in PostgreSQL: init, add an issuer, renew OCSP signers, keys at rest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca_core.clock import FakeClock
from ca_core.errors import UnknownIssuer, ValidationError, WrongPassphrase
from ca_core.keystore import KeyVault, Passphrase
from ca_core.model import KeyType
from ca_core.pki import (
    AlreadyInitialised,
    IssuerSpec,
    PKISummary,
    add_issuer,
    init_pki,
    load_ocsp_signer,
    load_signing_ca,
    renew_ocsp_signer,
)
from ca_core.profiles import PublicURLs
from ca_core.storage import postgres as db


async def _count(pool: asyncpg.Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def test_init_creates_the_hierarchy(pool: asyncpg.Pool, pki: PKISummary) -> None:
    async with pool.acquire() as conn:
        issuers = await db.list_issuers(conn)
    assert [(i.name, i.kind) for i in issuers] == [("root", "root"), ("moica", "issuing"), ("gca", "issuing")]
    root_id = issuers[0].id
    assert all(i.parent_id == root_id for i in issuers[1:])
    assert [i.crl_partitions for i in issuers[1:]] == [4, 4]
    for name in ("moica", "gca"):
        pki.issuers[name].verify_directly_issued_by(pki.root)
        signer = pki.ocsp_signers[name]
        signer.verify_directly_issued_by(pki.issuers[name])
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.OCSP_SIGNING in eku
    # Every certificate the CAs signed is on record: 2 issuing CAs under the root, 2 OCSP signers.
    rows = await pool.fetch("SELECT profile, count(*) AS n FROM certificates GROUP BY profile ORDER BY profile")
    assert [(r["profile"], r["n"]) for r in rows] == [("issuing-ca", 2), ("ocsp-signer", 2)]
    assert await _count(pool, "crl_numbers") == 3
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log ORDER BY id")]
    # Each issuer's OCSP signer is audited before the issuer: audit rows come after the key work.
    assert actions == ["root.create", "ocsp-signer.issue", "issuer.create", "ocsp-signer.issue", "issuer.create"]


async def test_keys_are_sealed_at_rest(pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault) -> None:
    rows = await pool.fetch("SELECT id, label, sealed, public_key FROM sealed_keys ORDER BY id")
    assert len(rows) == 5  # root, 2 issuing CAs, 2 OCSP signers
    async with pool.acquire() as conn:
        moica = await db.get_issuer(conn, "moica")
        assert moica is not None
        ca = await load_signing_ca(conn, vault, moica)
        plain = ca.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for row in rows:
            assert plain not in bytes(row["sealed"])
            assert bytes(row["sealed"]).startswith(b"CSK1")
        wrong = KeyVault(Passphrase("another passphrase entirely"), scrypt_n_log2=12)
        with pytest.raises(WrongPassphrase, match="issuer:moica:ca"):
            await load_signing_ca(conn, wrong, moica)


async def test_second_init_is_refused_and_writes_nothing(
    pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, clock: FakeClock, urls: PublicURLs
) -> None:
    before = {t: await _count(pool, t) for t in ("issuers", "sealed_keys", "certificates", "audit_log")}
    with pytest.raises(AlreadyInitialised, match="already initialised"):
        await init_pki(pool, vault, clock=clock, urls=urls, issuers=[IssuerSpec("xca", key_type=KeyType.EC_P256)], actor="t")
    assert {t: await _count(pool, t) for t in before} == before


@pytest.mark.parametrize(
    ("issuers", "root", "message"),
    [
        ([], "root", "at least one"),
        ([IssuerSpec("moica"), IssuerSpec("moica")], "root", "distinct"),
        ([IssuerSpec("root")], "root", "distinct"),
        ([IssuerSpec("moica")], "Bad Name", "is not valid"),
    ],
)
async def test_init_validates(
    pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, urls: PublicURLs, issuers: list[IssuerSpec], root: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await init_pki(pool, vault, clock=clock, urls=urls, issuers=issuers, actor="t", root_name=root)
    assert await _count(pool, "issuers") == 0


def test_issuer_spec_validates() -> None:
    with pytest.raises(ValidationError, match="1..4096"):
        IssuerSpec("moica", crl_partitions=0)
    with pytest.raises(ValidationError, match="is not valid"):
        IssuerSpec("MOICA")


async def test_add_issuer(pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, clock: FakeClock, urls: PublicURLs) -> None:
    cert, signer = await add_issuer(
        pool, vault, IssuerSpec("moeaca", common_name="MOEACA Test", key_type=KeyType.EC_P256), clock=clock, urls=urls, actor="t"
    )
    cert.verify_directly_issued_by(pki.root)
    signer.verify_directly_issued_by(cert)
    assert "MOEACA Test" in cert.subject.rfc4514_string()
    with pytest.raises(AlreadyInitialised, match="already exists"):
        await add_issuer(pool, vault, IssuerSpec("moeaca", key_type=KeyType.EC_P256), clock=clock, urls=urls, actor="t")


async def test_add_issuer_needs_a_root(pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, urls: PublicURLs) -> None:
    with pytest.raises(UnknownIssuer, match="ca init"):
        await add_issuer(pool, vault, IssuerSpec("moeaca"), clock=clock, urls=urls, actor="t")


async def test_renew_ocsp_signer(pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, clock: FakeClock) -> None:
    async with pool.acquire() as conn:
        moica = await db.get_issuer(conn, "moica")
        assert moica is not None
        old_cert, _ = await load_ocsp_signer(conn, vault, moica, clock.now())
    clock.advance(dt.timedelta(days=20))
    new = await renew_ocsp_signer(pool, vault, "moica", clock=clock, actor="t", key_type=KeyType.EC_P384)
    async with pool.acquire() as conn:
        current, key = await load_ocsp_signer(conn, vault, moica, clock.now())
        assert current == new != old_cert
        assert current.public_key() == key.public_key()
        # Past the old one's end and before the new one's, only the new one is current.
        clock.advance(dt.timedelta(days=15))
        current, _ = await load_ocsp_signer(conn, vault, moica, clock.now())
        assert current == new
    with pytest.raises(UnknownIssuer):
        await renew_ocsp_signer(pool, vault, "root", clock=clock, actor="t")


async def test_expired_ocsp_signer_is_reported(pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, clock: FakeClock) -> None:
    async with pool.acquire() as conn:
        moica = await db.get_issuer(conn, "moica")
        assert moica is not None
        clock.advance(dt.timedelta(days=31))
        with pytest.raises(Exception, match="renew-ocsp"):
            await load_ocsp_signer(conn, vault, moica, clock.now())


async def test_openssl_verifies_the_stored_chain(
    pool: asyncpg.Pool, pki: PKISummary, tmp_path: Path, openssl: Callable[..., object], clock: FakeClock
) -> None:
    from responder.demo import export_ca_files

    written = await export_ca_files(pool, tmp_path, now=clock.now())
    assert {p.name for p in written} >= {"root.pem", "moica.pem", "moica-chain.pem", "moica-ocsp.pem", "gca.pem"}
    at = str(int(clock.now().timestamp()) + 3600)
    for name in ("moica", "gca"):
        result = openssl(
            "verify", "-attime", at, "-CAfile", tmp_path / "root.pem", "-untrusted", tmp_path / f"{name}.pem",
            tmp_path / f"{name}-ocsp.pem",
        )
        assert result.stdout.strip().endswith("OK")  # type: ignore[attr-defined]


async def test_ca_names_that_do_not_fit_are_refused(
    pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, clock: FakeClock, urls: PublicURLs
) -> None:
    with pytest.raises(ValidationError, match="at most 64 fit"):
        await add_issuer(pool, vault, IssuerSpec("xca", common_name="X" * 65, key_type=KeyType.EC_P256), clock=clock, urls=urls, actor="t")
    with pytest.raises(ValidationError, match="CERTSTATUS_ORGANIZATION"):
        await add_issuer(pool, vault, IssuerSpec("xca", key_type=KeyType.EC_P256), clock=clock, urls=urls, actor="t",
                         organization="機構" * 11)
    async with pool.acquire() as conn:
        assert await db.get_issuer(conn, "xca") is None


async def test_ca_certificates_are_queued_for_the_signer(pool: asyncpg.Pool, pki: PKISummary) -> None:
    rows = await pool.fetch(
        "SELECT c.profile, o.event FROM outbox o JOIN certificates c USING (issuer_id, serial) ORDER BY o.id"
    )
    assert sorted((r["profile"], r["event"]) for r in rows) == sorted(
        [("issuing-ca", "issued"), ("ocsp-signer", "issued")] * 2
    )
