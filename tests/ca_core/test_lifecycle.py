"""The certificate lifecycle against a real PostgreSQL: state machine, atomicity, races, idempotency."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ca_core.clock import FakeClock
from ca_core.errors import (
    BadCSR,
    BadSubject,
    CertificateExpired,
    IdempotencyConflict,
    IllegalTransition,
    StorageError,
    UnknownCertificate,
    UnknownIssuer,
    ValidationError,
    WeakKey,
)
from ca_core.keystore import generate_private_key
from ca_core.lifecycle import (
    TRANSITIONS,
    CertificateAuthority,
    Operation,
    plan_transition,
)
from ca_core.model import CertRecord, CertStatus, KeyType, RevocationReason
from ca_core.pki import PKISummary
from ca_core.profiles import HolderSubject
from ca_core.storage import postgres as db

HOLDER = HolderSubject("王小明", "0000000111729553", "xiaoming@example.tw")


def make_csr(name: str = "王小明", holder_id: str = "0000000111729553", key_type: KeyType = KeyType.EC_P256) -> bytes:
    key = generate_private_key(key_type)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, holder_id),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM
    )


async def issue(ca: CertificateAuthority, issuer: str = "moica", profile: str = "citizen-signing") -> CertRecord:
    record, _ = await ca.issue_with_generated_key(
        issuer=issuer, profile=profile, subject=HOLDER, actor="officer", key_type=KeyType.EC_P256
    )
    return record


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    return {
        t: int(await pool.fetchval(f"SELECT count(*) FROM {t}"))
        for t in ("certificates", "outbox", "audit_log", "idempotency_keys")
    }


async def row(pool: asyncpg.Pool, record: CertRecord) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT status::text, reason, revoked_at, invalidity_date FROM certificates c JOIN issuers i ON i.id = c.issuer_id "
        "WHERE i.name = $1 AND c.serial = $2",
        record.issuer,
        record.serial.to_bytes(16, "big"),
    )


class TestIssue:
    async def test_from_csr_writes_certificate_outbox_and_audit_together(
        self, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock
    ) -> None:
        before = await counts(pool)
        record = await ca.issue(issuer="moica", profile="citizen-signing", csr=make_csr(), actor="officer-7", email="a@example.tw")
        after = await counts(pool)
        assert {k: after[k] - before[k] for k in after} == {"certificates": 1, "outbox": 1, "audit_log": 1, "idempotency_keys": 0}
        assert record.status is CertStatus.GOOD
        assert record.holder_id == "0000000111729553"
        assert record.subject == "serialNumber=0000000111729553,CN=王小明,C=TW"
        assert record.issued_at == clock.now()
        cert = record.certificate()
        assert cert.serial_number == record.serial
        assert 0 <= record.crl_partition < 4
        assert cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value.endswith(
            f"/crl/moica/{record.crl_partition}.crl"
        )
        outbox = await pool.fetchrow("SELECT event, status::text, processed_at FROM outbox ORDER BY id DESC LIMIT 1")
        assert (outbox["event"], outbox["status"], outbox["processed_at"]) == ("issued", "good", None)
        audit = (await ca.audit(issuer="moica", serial=record.serial))[0]
        assert (audit.actor, audit.action, audit.before) == ("officer-7", "certificate.issue", None)
        assert audit.after is not None and audit.after["status"] == "good"
        assert (await ca.get("moica", record.serial_hex)).der == record.der

    async def test_subject_override_and_ec_encryption(self, ca: CertificateAuthority) -> None:
        record = await ca.issue(
            issuer="gca", profile="citizen-encryption", csr=make_csr("someone else", "0000000000000009"),
            subject=HolderSubject("陳美玲", "0000000000000002"), actor="officer",
        )
        assert record.subject == "serialNumber=0000000000000002,CN=陳美玲,C=TW"
        ku = record.certificate().extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_agreement and not ku.digital_signature

    @pytest.mark.parametrize(
        ("kwargs", "error", "fragment"),
        [
            ({"issuer": "nope"}, UnknownIssuer, "no issuer named 'nope'"),
            ({"issuer": "root"}, ValidationError, "root CA"),
            ({"profile": "server"}, ValidationError, "unknown certificate profile"),
            ({"csr": b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n"}, BadCSR, "cannot be parsed"),
            ({"csr": b""}, BadCSR, "empty"),
            ({"csr": "rsa1024"}, WeakKey, "1024 bits"),
            ({"csr": "no-serial"}, BadSubject, "serialNumber"),
            ({"csr": "bad-holder"}, BadSubject, "16 ASCII digits"),
            ({"actor": " "}, ValidationError, "actor"),
            ({"idempotency_key": ""}, ValidationError, "idempotency key"),
            ({"validity": dt.timedelta(days=-1)}, ValidationError, "positive"),
        ],
    )
    async def test_bad_input_is_refused_and_writes_nothing(
        self, ca: CertificateAuthority, pool: asyncpg.Pool, kwargs: dict[str, object], error: type[Exception], fragment: str
    ) -> None:
        args: dict[str, object] = {"issuer": "moica", "profile": "citizen-signing", "csr": make_csr(), "actor": "officer"}
        args.update(kwargs)
        if args["csr"] == "rsa1024":
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = rsa.generate_private_key(65537, 1024)
            args["csr"] = x509.CertificateSigningRequestBuilder().subject_name(HOLDER.x509_name()).sign(
                key, hashes.SHA256()
            ).public_bytes(serialization.Encoding.PEM)
        elif args["csr"] == "no-serial":
            key = generate_private_key(KeyType.EC_P256)
            name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"), x509.NameAttribute(NameOID.COMMON_NAME, "x")])
            args["csr"] = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()).public_bytes(
                serialization.Encoding.PEM
            )
        elif args["csr"] == "bad-holder":
            args["csr"] = make_csr(holder_id="A123456789")
        before = await counts(pool)
        with pytest.raises(error, match=fragment):
            await ca.issue(**args)  # type: ignore[arg-type]
        assert await counts(pool) == before

    async def test_csr_with_wrong_signature(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        der = bytearray(x509.load_pem_x509_csr(make_csr()).public_bytes(serialization.Encoding.DER))
        der[-5] ^= 0x01  # inside the signature value
        with pytest.raises(BadCSR, match="does not verify"):
            await ca.issue(issuer="moica", profile="citizen-signing", csr=bytes(der), actor="officer")
        assert (await counts(pool))["certificates"] == 4  # only the CA's own certificates

    async def test_openssl_csr_and_openssl_verify(
        self, ca: CertificateAuthority, pki: PKISummary, tmp_path: Path, openssl: Callable[..., object], clock: FakeClock
    ) -> None:
        """A real client makes the CSR; a real relying party checks the result."""
        openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp_path / "key.pem", "-utf8",
            "-subj", "/C=TW/CN=林志強/serialNumber=0000000000000003", "-out", tmp_path / "req.csr",
        )
        record = await ca.issue(
            issuer="moica", profile="citizen-signing", csr=(tmp_path / "req.csr").read_bytes(), actor="officer"
        )
        assert record.subject == "serialNumber=0000000000000003,CN=林志強,C=TW"
        (tmp_path / "leaf.pem").write_bytes(record.certificate().public_bytes(serialization.Encoding.PEM))
        (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "moica.pem").write_bytes(pki.issuers["moica"].public_bytes(serialization.Encoding.PEM))
        at = str(int(clock.now().timestamp()) + 60)
        result = openssl(
            "verify", "-attime", at, "-CAfile", tmp_path / "root.pem", "-untrusted", tmp_path / "moica.pem", tmp_path / "leaf.pem"
        )
        assert result.stdout.strip().endswith("leaf.pem: OK")  # type: ignore[attr-defined]
        # The certificate carries the CSR's key.
        modulus = openssl("x509", "-in", tmp_path / "leaf.pem", "-noout", "-modulus").stdout  # type: ignore[attr-defined]
        assert modulus == openssl("rsa", "-in", tmp_path / "key.pem", "-noout", "-modulus").stdout  # type: ignore[attr-defined]


class TestStateMachine:
    @pytest.mark.parametrize(("start", "op"), list(itertools.product(list(CertStatus), list(Operation))))
    async def test_every_transition(
        self, ca: CertificateAuthority, pool: asyncpg.Pool, start: CertStatus, op: Operation
    ) -> None:
        record = await issue(ca)
        if start is CertStatus.SUSPENDED:
            await ca.suspend("moica", record.serial, actor="officer")
        elif start is CertStatus.REVOKED:
            await ca.revoke("moica", record.serial, actor="officer", reason="keyCompromise")
        before = await counts(pool)
        state_before = await row(pool, record)
        expected = TRANSITIONS.get((start, op))
        method = getattr(ca, op.value)
        if expected is None:
            with pytest.raises(IllegalTransition) as info:
                await method("moica", record.serial, actor="officer")
            assert info.value.current == start.value and info.value.operation == op.value
            assert await counts(pool) == before
            assert await row(pool, record) == state_before
        else:
            after = await method("moica", record.serial, actor="officer")
            assert after.status is expected
            got = await counts(pool)
            assert (got["outbox"] - before["outbox"], got["audit_log"] - before["audit_log"]) == (1, 1)
            event = await pool.fetchval("SELECT event FROM outbox ORDER BY id DESC LIMIT 1")
            assert event == {"revoke": "revoked", "suspend": "suspended", "resume": "resumed"}[op.value]

    async def test_suspend_records_certificate_hold(self, ca: CertificateAuthority, clock: FakeClock) -> None:
        record = await issue(ca)
        clock.advance(dt.timedelta(hours=1))
        suspended = await ca.suspend("moica", record.serial, actor="officer")
        assert (suspended.status, suspended.reason, suspended.revoked_at) == (
            CertStatus.SUSPENDED, RevocationReason.CERTIFICATE_HOLD, clock.now()
        )
        resumed = await ca.resume("moica", record.serial, actor="officer")
        assert (resumed.status, resumed.reason, resumed.revoked_at) == (CertStatus.GOOD, None, None)
        audit = await ca.audit(issuer="moica", serial=record.serial)
        assert [(a.action, (a.before or {}).get("status"), (a.after or {}).get("status")) for a in audit] == [
            ("certificate.issue", None, "good"),
            ("certificate.suspend", "good", "suspended"),
            ("certificate.resume", "suspended", "good"),
        ]

    @pytest.mark.parametrize(
        "reason",
        ["unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation", "privilegeWithdrawn", 1, "4"],
    )
    async def test_revoke_with_each_reason(self, ca: CertificateAuthority, reason: str | int) -> None:
        record = await issue(ca)
        revoked = await ca.revoke("moica", record.serial_hex, actor="officer", reason=reason)
        assert revoked.status is CertStatus.REVOKED
        assert revoked.reason is RevocationReason.parse(reason)

    @pytest.mark.parametrize(
        ("reason", "fragment"),
        [
            ("certificateHold", "use suspend"),
            ("removeFromCRL", "use resume"),
            ("cACompromise", "not a revocation reason"),
            ("aACompromise", "not a revocation reason"),
            ("lost my card", "not an RFC 5280 CRLReason"),
            (7, "not an RFC 5280 CRLReason code"),
        ],
    )
    async def test_invalid_reasons(self, ca: CertificateAuthority, pool: asyncpg.Pool, reason: str | int, fragment: str) -> None:
        record = await issue(ca)
        before = await counts(pool)
        with pytest.raises(ValidationError, match=fragment):
            await ca.revoke("moica", record.serial, actor="officer", reason=reason)
        assert await counts(pool) == before
        assert (await row(pool, record))["status"] == "good"

    async def test_invalidity_date(self, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
        record = await issue(ca)
        clock.advance(dt.timedelta(days=3))
        with pytest.raises(ValidationError, match="in the future"):
            await ca.revoke("moica", record.serial, actor="o", reason="keyCompromise", invalidity_date=clock.now() + dt.timedelta(seconds=1))
        with pytest.raises(ValidationError, match="before the certificate existed"):
            await ca.revoke("moica", record.serial, actor="o", reason="keyCompromise", invalidity_date=record.not_before - dt.timedelta(days=1))
        with pytest.raises(ValidationError, match="time zone"):
            await ca.revoke("moica", record.serial, actor="o", reason="keyCompromise", invalidity_date=dt.datetime(2026, 5, 2))
        assert (await row(pool, record))["status"] == "good"
        when = clock.now() - dt.timedelta(days=1)
        revoked = await ca.revoke("moica", record.serial, actor="o", reason="keyCompromise", invalidity_date=when)
        assert revoked.invalidity_date == when

    async def test_expired_certificates_can_only_be_revoked(self, ca: CertificateAuthority, clock: FakeClock) -> None:
        record = await issue(ca)
        suspended_one = await issue(ca)
        await ca.suspend("moica", suspended_one.serial, actor="o")
        clock.set(record.not_after + dt.timedelta(seconds=1))
        with pytest.raises(CertificateExpired, match="expired"):
            await ca.suspend("moica", record.serial, actor="o")
        with pytest.raises(CertificateExpired, match="expired"):
            await ca.resume("moica", suspended_one.serial, actor="o")
        assert (await ca.revoke("moica", record.serial, actor="o")).status is CertStatus.REVOKED

    @pytest.mark.parametrize(
        ("issuer", "serial", "error", "fragment"),
        [
            ("nope", "01", UnknownIssuer, "no issuer named"),
            ("moica", "0123456789ABCDEF", UnknownCertificate, "never issued"),
            ("moica", "xyz", ValidationError, "not a hexadecimal number"),
            ("moica", "00", ValidationError, "out of range"),
        ],
    )
    async def test_unknown_targets(
        self, ca: CertificateAuthority, pool: asyncpg.Pool, issuer: str, serial: str, error: type[Exception], fragment: str
    ) -> None:
        before = await counts(pool)
        for op in (ca.suspend, ca.resume, ca.revoke):
            with pytest.raises(error, match=fragment):
                await op(issuer, serial, actor="officer")
        with pytest.raises(error, match=fragment):
            await ca.get(issuer, serial)
        assert await counts(pool) == before

    async def test_gca_serial_is_not_found_under_moica(self, ca: CertificateAuthority) -> None:
        record = await issue(ca, issuer="gca")
        with pytest.raises(UnknownCertificate):
            await ca.get("moica", record.serial)

    def test_plan_transition_is_pure(self, clock: FakeClock) -> None:
        now = clock.now()
        record = CertRecord(
            issuer="moica", serial=1, profile="citizen-signing", subject="CN=x", holder_id=None,
            not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=1), status=CertStatus.GOOD,
            revoked_at=None, reason=None, invalidity_date=None, crl_partition=0, issued_at=now, updated_at=now, der=b"",
        )
        change = plan_transition(record, Operation.REVOKE, now=now, reason=RevocationReason.SUPERSEDED)
        assert (change.status, change.reason, change.revoked_at) == (CertStatus.REVOKED, RevocationReason.SUPERSEDED, now)
        with pytest.raises(ValidationError, match="takes no reason"):
            plan_transition(record, Operation.SUSPEND, now=now, reason=RevocationReason.SUPERSEDED)


class TestDatabaseGuards:
    """Even hand-written SQL cannot break the lifecycle rules."""

    async def test_revoked_row_cannot_be_changed_back(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        record = await ca.revoke("moica", (await issue(ca)).serial, actor="o", reason="keyCompromise")
        serial = record.serial.to_bytes(16, "big")
        with pytest.raises(asyncpg.RestrictViolationError, match="revocation is final"):
            await pool.execute(
                "UPDATE certificates SET status='good', revoked_at=NULL, reason=NULL WHERE serial=$1", serial
            )
        with pytest.raises(asyncpg.RestrictViolationError, match="never deleted"):
            await pool.execute("DELETE FROM certificates WHERE serial=$1", serial)

    async def test_status_fields_must_agree(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        record = await issue(ca)
        with pytest.raises(asyncpg.CheckViolationError):
            await pool.execute(
                "UPDATE certificates SET status='revoked' WHERE serial=$1", record.serial.to_bytes(16, "big")
            )

    async def test_audit_log_is_append_only(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        await issue(ca)
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await pool.execute("UPDATE audit_log SET actor='someone else'")
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await pool.execute("DELETE FROM audit_log")
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await pool.execute("TRUNCATE audit_log")

    async def test_failure_inside_the_transaction_leaves_nothing(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        """Invariant 1: state, outbox and audit commit together or not at all."""
        record = await issue(ca)
        await pool.execute("ALTER TABLE audit_log ADD CONSTRAINT test_refuse CHECK (actor <> 'saboteur')")
        try:
            before = await counts(pool)
            with pytest.raises(StorageError, match="test_refuse"):
                await ca.revoke("moica", record.serial, actor="saboteur", reason="keyCompromise")
            assert await counts(pool) == before
            assert (await row(pool, record))["status"] == "good"
        finally:
            await pool.execute("ALTER TABLE audit_log DROP CONSTRAINT test_refuse")


class TestConcurrency:
    async def test_many_concurrent_revocations_one_winner(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        record = await issue(ca)
        results = await asyncio.gather(
            *(ca.revoke("moica", record.serial, actor=f"officer-{i}", reason="keyCompromise") for i in range(12)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, CertRecord)]
        losers = [r for r in results if isinstance(r, IllegalTransition)]
        assert len(winners) == 1 and len(losers) == 11, results
        assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action='certificate.revoke'") == 1
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE event='revoked'") == 1

    async def test_revoke_resume_race_never_resurrects(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        """Suspend, resume and revoke race on one certificate; whatever the interleaving, the
        audit trail is a legal path through the state machine and revoked is final."""
        for _ in range(5):
            record = await issue(ca)
            ops = [("suspend", {}), ("resume", {}), ("revoke", {"reason": "keyCompromise"})] * 4
            results = await asyncio.gather(
                *(getattr(ca, op)("moica", record.serial, actor="racer", **kw) for op, kw in ops), return_exceptions=True
            )
            assert all(isinstance(r, (CertRecord, IllegalTransition)) for r in results), results
            audit = [a for a in await ca.audit(issuer="moica", serial=record.serial) if a.action != "certificate.issue"]
            state = CertStatus.GOOD
            for entry in audit:
                assert entry.before is not None and entry.after is not None
                assert entry.before["status"] == state.value
                op = Operation(entry.action.split(".")[1])
                state = TRANSITIONS[(state, op)]
                assert entry.after["status"] == state.value
            assert sum(1 for a in audit if a.action == "certificate.revoke") == 1
            final = await ca.get("moica", record.serial)
            assert final.status is CertStatus.REVOKED is state
            outbox = await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE serial=$1 AND event <> 'issued'", record.serial.to_bytes(16, "big")
            )
            assert outbox == len(audit)


class TestIdempotency:
    async def test_repeat_returns_the_first_answer(self, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
        record = await issue(ca)
        first = await ca.suspend("moica", record.serial, actor="ra-1", idempotency_key="lost-card-42")
        clock.advance(dt.timedelta(minutes=5))
        await ca.resume("moica", record.serial, actor="ra-1")
        again = await ca.suspend("moica", record.serial, actor="ra-1", idempotency_key="lost-card-42")
        assert again == first  # the first answer, not the current state
        assert (await ca.get("moica", record.serial)).status is CertStatus.GOOD
        assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action='certificate.suspend'") == 1

    async def test_same_key_different_request_is_a_conflict(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        a, b = await issue(ca), await issue(ca)
        await ca.revoke("moica", a.serial, actor="ra-1", reason="superseded", idempotency_key="k1")
        before = await counts(pool)
        with pytest.raises(IdempotencyConflict, match="k1"):
            await ca.revoke("moica", b.serial, actor="ra-1", reason="superseded", idempotency_key="k1")
        with pytest.raises(IdempotencyConflict):
            await ca.revoke("moica", a.serial, actor="ra-1", reason="keyCompromise", idempotency_key="k1")
        with pytest.raises(IdempotencyConflict):
            await ca.suspend("moica", a.serial, actor="ra-1", idempotency_key="k1")
        assert await counts(pool) == before
        # Keys are scoped by actor: another officer may use the same key.
        assert (await ca.revoke("moica", b.serial, actor="ra-2", reason="superseded", idempotency_key="k1")).status is CertStatus.REVOKED

    async def test_concurrent_repeats_act_once(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        csr = make_csr()
        results = await asyncio.gather(
            *(ca.issue(issuer="moica", profile="citizen-signing", csr=csr, actor="ra-1", idempotency_key="req-1") for _ in range(8))
        )
        assert len({r.serial for r in results}) == 1
        assert len({r.der for r in results}) == 1
        assert await pool.fetchval("SELECT count(*) FROM certificates WHERE profile='citizen-signing'") == 1
        assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action='certificate.issue'") == 1

    async def test_failed_operation_does_not_consume_the_key(self, ca: CertificateAuthority) -> None:
        record = await issue(ca)
        with pytest.raises(IllegalTransition):
            await ca.resume("moica", record.serial, actor="ra-1", idempotency_key="k2")
        await ca.suspend("moica", record.serial, actor="ra-1")
        resumed = await ca.resume("moica", record.serial, actor="ra-1", idempotency_key="k2")
        assert resumed.status is CertStatus.GOOD


class TestLookups:
    async def test_find_by_holder_and_status(self, ca: CertificateAuthority) -> None:
        a = await issue(ca)
        b = await issue(ca, profile="citizen-encryption")
        other, _ = await ca.issue_with_generated_key(
            issuer="gca", profile="citizen-signing", subject=HolderSubject("陳美玲", "0000000000000002"), actor="o",
            key_type=KeyType.EC_P256,
        )
        await ca.suspend("moica", b.serial, actor="o")
        mine = await ca.find(holder_id="0000000111729553")
        assert {r.serial for r in mine} == {a.serial, b.serial}
        assert [r.serial for r in await ca.find(status=CertStatus.SUSPENDED)] == [b.serial]
        assert [r.serial for r in await ca.find(issuer="gca", holder_id="0000000000000002")] == [other.serial]
        with pytest.raises(ValidationError):
            await ca.find(limit=0)

    async def test_storage_errors_are_typed(self, vault, clock, urls) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(StorageError, match="unreachable"):
            await db.create_pool("postgresql://nobody@/nothing?host=/nonexistent-dir&port=5432", min_size=1)


class TestCASideCertificates:
    """Issuing-CA and OCSP-signer certificates live in the same table, under their own rules."""

    async def _ca_cert(self, pool: asyncpg.Pool, profile: str, issuer: str) -> str:
        """The serial of moica's CA certificate (issued by the root) or of an OCSP signer
        certificate of ``issuer`` (the root issued two CA certificates: pick by contents,
        not by whichever row a scan returns first)."""
        raw = await pool.fetchval(
            """SELECT c.serial FROM certificates c JOIN issuers i ON i.id = c.issuer_id
               WHERE i.name = $1 AND c.profile = $2
                 AND (c.profile <> 'issuing-ca' OR c.der = (SELECT certificate FROM issuers WHERE name = 'moica'))""",
            issuer, profile,
        )
        return bytes(raw).hex().upper()

    async def test_ca_certificates_are_never_suspended(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        moica = await self._ca_cert(pool, "issuing-ca", "root")
        signer = await self._ca_cert(pool, "ocsp-signer", "moica")
        before = await counts(pool)
        with pytest.raises(IllegalTransition, match="issuing-ca certificate: it can be revoked, not suspended"):
            await ca.suspend("root", moica, actor="o")
        with pytest.raises(IllegalTransition, match="ocsp-signer certificate: it can be revoked, not suspended"):
            await ca.suspend("moica", signer, actor="o")
        assert await counts(pool) == before

    async def test_revoked_issuer_stops_issuing(self, ca: CertificateAuthority, pool: asyncpg.Pool, vault, clock) -> None:  # type: ignore[no-untyped-def]
        from ca_core.errors import IssuerUnavailable
        from ca_core.pki import renew_ocsp_signer

        await issue(ca)  # moica works, and its key is now cached in `ca`
        moica = await self._ca_cert(pool, "issuing-ca", "root")
        with pytest.raises(ValidationError, match="cACompromise is not a revocation reason"):
            await ca.revoke("moica", (await issue(ca)).serial, actor="o", reason="cACompromise")
        revoked = await ca.revoke("root", moica, actor="o", reason="cACompromise")
        assert revoked.reason is RevocationReason.CA_COMPROMISE
        before = await counts(pool)
        with pytest.raises(IssuerUnavailable, match="moica.*revoked"):
            await issue(ca)
        with pytest.raises(IssuerUnavailable):
            await renew_ocsp_signer(pool, vault, "moica", clock=clock, actor="o")
        assert await counts(pool) == before
        assert (await issue(ca, issuer="gca")).status is CertStatus.GOOD  # the other issuer is unaffected

    async def test_revoked_ocsp_signer_is_never_used(self, ca: CertificateAuthority, pool: asyncpg.Pool, vault, clock) -> None:  # type: ignore[no-untyped-def]
        from ca_core.pki import load_ocsp_signer, renew_ocsp_signer

        old = await self._ca_cert(pool, "ocsp-signer", "moica")
        await ca.revoke("moica", old, actor="o", reason="keyCompromise")
        async with pool.acquire() as conn:
            moica = await db.get_issuer(conn, "moica")
            assert moica is not None
            with pytest.raises(Exception, match="no valid OCSP signing certificate"):
                await load_ocsp_signer(conn, vault, moica, clock.now())
        # A renewal with a *shorter* life than the revoked one still takes over.
        new = await renew_ocsp_signer(pool, vault, "moica", clock=clock, actor="o", validity=dt.timedelta(days=7))
        async with pool.acquire() as conn:
            current, _ = await load_ocsp_signer(conn, vault, moica, clock.now())
        assert current == new and f"{current.serial_number:X}" != old


class TestTimeNeverRunsBackwards:
    async def test_queued_revocation_is_not_backdated(self, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
        """A revocation that waited on the row lock is dated no earlier than the change it waited for."""
        record = await issue(ca)
        serial = record.serial.to_bytes(16, "big")
        later = clock.now() + dt.timedelta(seconds=10)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM certificates WHERE serial = $1 FOR UPDATE", serial)
            revocation = asyncio.create_task(ca.revoke("moica", record.serial, actor="o", reason="keyCompromise"))
            await asyncio.sleep(0.3)
            assert not revocation.done(), "the revocation should be waiting on the row lock"
            # Another officer's suspension commits first, stamped by a clock ahead of ours.
            await conn.execute(
                "UPDATE certificates SET status='suspended', revoked_at=$2, reason=6, updated_at=$2 WHERE serial=$1",
                serial, later,
            )
        revoked = await revocation
        assert revoked.revoked_at is not None and revoked.revoked_at >= later
        assert revoked.updated_at >= later


class TestGuardsHaveNoNullHoles:
    async def test_revoked_reason_cannot_be_nulled(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        record = await ca.revoke("moica", (await issue(ca)).serial, actor="o", reason="keyCompromise")
        serial = record.serial.to_bytes(16, "big")
        with pytest.raises(asyncpg.RestrictViolationError, match="revocation is final"):
            await pool.execute("UPDATE certificates SET reason = NULL WHERE serial = $1", serial)
        with pytest.raises(asyncpg.RestrictViolationError, match="revocation is final"):
            await pool.execute("UPDATE certificates SET invalidity_date = now() WHERE serial = $1", serial)

    async def test_suspension_needs_its_reason(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        record = await issue(ca)
        with pytest.raises(asyncpg.CheckViolationError):
            await pool.execute(
                "UPDATE certificates SET status='suspended', revoked_at=now(), reason=NULL WHERE serial=$1",
                record.serial.to_bytes(16, "big"),
            )


class TestIssueEdges:
    async def test_generated_keys_take_no_idempotency_key(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        before = await counts(pool)
        with pytest.raises(ValidationError, match="idempotency key cannot be used with a generated key"):
            await ca.issue_with_generated_key(
                issuer="moica", profile="citizen-signing", subject=HOLDER, actor="o", key_type=KeyType.EC_P256,
                idempotency_key="k",
            )
        assert await counts(pool) == before

    async def test_validity_bounds(self, ca: CertificateAuthority) -> None:
        with pytest.raises(ValidationError, match="at most 7320 days"):
            await ca.issue(issuer="moica", profile="citizen-signing", csr=make_csr(), actor="o", validity=dt.timedelta(days=3_000_000))

    async def test_resigned_csr_for_the_same_key_is_the_same_request(self, ca: CertificateAuthority) -> None:
        key = generate_private_key(KeyType.EC_P256)
        csrs = [
            x509.CertificateSigningRequestBuilder().subject_name(HOLDER.x509_name()).sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            for _ in range(2)
        ]
        assert csrs[0] != csrs[1]  # ECDSA signatures are randomised
        first = await ca.issue(issuer="moica", profile="citizen-signing", csr=csrs[0], actor="o", idempotency_key="k")
        again = await ca.issue(issuer="moica", profile="citizen-signing", csr=csrs[1], actor="o", idempotency_key="k")
        assert again.serial == first.serial

    async def test_default_reason_and_explicit_unspecified_are_the_same_request(self, ca: CertificateAuthority) -> None:
        record = await issue(ca)
        first = await ca.revoke("moica", record.serial, actor="o", idempotency_key="k")
        again = await ca.revoke("moica", record.serial, actor="o", reason="unspecified", idempotency_key="k")
        assert again == first


async def test_a_value_postgresql_cannot_hold_is_a_validation_error(ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
    """A NUL character in text reaches the database only if nothing in front refused it; then it
    is still bad input (ValidationError), not an outage, and nothing is written."""
    record = await issue(ca)
    before = await counts(pool)
    with pytest.raises(ValidationError, match="cannot be stored"):
        await ca.revoke("moica", record.serial, actor="ops\x00", reason="keyCompromise")
    assert await counts(pool) == before
    assert (await ca.get("moica", record.serial)).status == CertStatus.GOOD


class TestRevokeMany:
    """Bulk revocation: chunks of one transaction each, every item answered on its own."""

    async def test_each_item_succeeds_or_fails_on_its_own(self, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
        from ca_core.audit import Anchor, verify_chain
        from ca_core.lifecycle import Revocation

        records = [await issue(ca) for _ in range(7)]
        await ca.revoke("moica", records[5].serial, actor="o")
        await ca.suspend("moica", records[6].serial, actor="o")
        before = await counts(pool)
        items = [
            Revocation("moica", records[0].serial, "keyCompromise", dt.datetime(2026, 5, 1, tzinfo=dt.UTC)),
            Revocation("moica", records[1].serial_hex),
            Revocation("moica", "ABCDEF"),  # never issued
            Revocation("nowhere", records[2].serial),  # no such issuer
            Revocation("moica", records[2].serial, "no-such-reason"),
            Revocation("moica", records[3].serial, "certificateHold"),  # suspension is not a revocation
            Revocation("moica", records[4].serial, "superseded"),
            Revocation("moica", records[4].serial),  # twice in one batch: the second finds it revoked
            Revocation("moica", records[5].serial),  # revoked before
            Revocation("moica", records[6].serial, "cessationOfOperation"),  # suspended: may be revoked
        ]
        out = await ca.revoke_many(items, actor="token:ops", chunk_size=3)
        kinds = [type(o).__name__ if not isinstance(o, CertRecord) else o.status.value for o in out]
        assert kinds == ["revoked", "revoked", "UnknownCertificate", "UnknownIssuer", "ValidationError",
                         "ValidationError", "revoked", "IllegalTransition", "IllegalTransition", "revoked"]  # fmt: skip
        first = out[0]
        assert isinstance(first, CertRecord) and first.reason == RevocationReason.KEY_COMPROMISE
        assert first.invalidity_date == dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
        after = await counts(pool)
        assert after["outbox"] - before["outbox"] == 4 and after["audit_log"] - before["audit_log"] == 4
        for record in (records[2], records[3]):
            assert (await ca.get("moica", record.serial)).status == CertStatus.GOOD
        async with pool.acquire() as conn:
            head = await db.audit_chain_head(conn)
            assert head is not None
            report = await verify_chain(db.iter_audit_chain(conn), Anchor(*head))
        assert report.intact

    async def test_a_repeat_replays_and_a_different_batch_is_refused(
        self, ca: CertificateAuthority, pool: asyncpg.Pool
    ) -> None:
        from ca_core.lifecycle import Revocation

        a, b, c = [await issue(ca) for _ in range(3)]
        batch = [Revocation("moica", a.serial), Revocation("moica", "ABCDEF"), Revocation("moica", b.serial)]
        key = "k" * 255  # the longest key any route accepts
        first = await ca.revoke_many(batch, actor="token:ops", idempotency_key=key)
        middle = await counts(pool)
        again = await ca.revoke_many(batch, actor="token:ops", idempotency_key=key)
        assert [type(o) for o in again] == [type(o) for o in first]
        assert again[0] == first[0] and again[2] == first[2]
        assert await counts(pool) == middle  # replayed: nothing new written
        with pytest.raises(IdempotencyConflict):
            await ca.revoke_many([*batch, Revocation("moica", c.serial)], actor="token:ops", idempotency_key=key)
        assert (await ca.get("moica", c.serial)).status == CertStatus.GOOD
        assert await counts(pool) == middle
        # The failed item's key was released, the done ones' kept (with their answers).
        keys = {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys WHERE actor = 'token:ops'")}
        assert len(keys) == 3 and key in keys and not any(k.endswith("/1") for k in keys)

    async def test_overlapping_batches_never_deadlock_and_revoke_once(
        self, ca: CertificateAuthority, pool: asyncpg.Pool
    ) -> None:
        from ca_core.lifecycle import Revocation

        records = [await issue(ca) for _ in range(30)]
        forward = [Revocation("moica", r.serial) for r in records]
        outcomes = await asyncio.gather(
            ca.revoke_many(forward, actor="a", chunk_size=7), ca.revoke_many(forward[::-1], actor="b", chunk_size=5)
        )
        done = [isinstance(o, CertRecord) for o in outcomes[0]], [isinstance(o, CertRecord) for o in outcomes[1][::-1]]
        assert all(x != y for x, y in zip(*done, strict=True))  # each certificate revoked by exactly one of them
        assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'certificate.revoke'") == 30
