"""Idempotency and concurrency races on the admin API, through real HTTP and PostgreSQL.

Many identical or conflicting requests are sent at once (``asyncio.gather`` over one client
session, so they overlap on the server), and the database is then held to what the answers
said: one audit row and one outbox event per acknowledged change, none for a refusal, the
same answer for every replay, and only the winner's data when requests conflict. The bulk
revocation is checked the same way on 10,000 certificates.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import asyncpg
import orjson
import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca_core.clock import FakeClock
from ca_core.issue import random_serial
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType, serial_to_bytes
from ca_core.pki import PKISummary, load_signing_ca
from ca_core.population import assemble, make_templates
from ca_core.profiles import HolderSubject, PublicURLs
from ca_core.storage import postgres as db
from ca_core.tokens import Role, make_token
from responder.admin import FailureLimiter, build_admin_app

HOLDER = HolderSubject("王小明", "0000000111729553")
ACTOR = "token:ops"
PROBLEM = "urn:certstatus:problem:"


class Answer(NamedTuple):
    status: int
    content_type: str
    raw: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)


Call = Callable[..., Awaitable[Answer]]


@pytest.fixture
async def token(pool: asyncpg.Pool, clock: FakeClock) -> str:
    made = make_token()
    async with pool.acquire() as conn:
        token_id = await db.insert_token(conn, name="ops", role=Role.OPERATOR.value, secret_hash=made.secret_hash,
                                         now=clock.now())  # fmt: skip
    return made.text(token_id)


Serve = Callable[[asyncpg.Pool, CertificateAuthority], Awaitable[Call]]


@pytest.fixture
async def serve(clock: FakeClock, token: str) -> AsyncIterator[Serve]:
    """Start an admin server on a pool and a CA; returns a client call for it."""
    servers: list[TestServer] = []
    async with ClientSession(connector=TCPConnector(limit=0)) as http:

        async def start(pool: asyncpg.Pool, ca: CertificateAuthority) -> Call:
            server = TestServer(build_admin_app(pool, ca, clock, limiter=FailureLimiter(limit=10**6)))
            await server.start_server()
            servers.append(server)

            async def call(method: str, path: str, body: Any = None, key: str | None = None) -> Answer:
                headers = {"Authorization": f"Bearer {token}"}
                if key is not None:
                    headers["Idempotency-Key"] = key
                if body is not None:
                    headers["Content-Type"] = "application/json"
                data = orjson.dumps(body) if body is not None else None
                async with http.request(method, str(server.make_url(path)), data=data, headers=headers) as r:
                    return Answer(r.status, r.headers.get("Content-Type", ""), await r.read())

            return call

        yield start
        for server in servers:
            await server.close()


@pytest.fixture
async def api(serve: Serve, pool: asyncpg.Pool, ca: CertificateAuthority) -> Call:
    return await serve(pool, ca)


async def issue(ca: CertificateAuthority) -> CertRecord:
    record, _ = await ca.issue_with_generated_key(issuer="moica", profile="citizen-signing", subject=HOLDER,
                                                  actor="test", key_type=KeyType.EC_P256)  # fmt: skip
    return record


def csr_pem(holder: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"), x509.NameAttribute(NameOID.COMMON_NAME,
                         "王大明"), x509.NameAttribute(NameOID.SERIAL_NUMBER, holder)])  # fmt: skip
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def assert_problem(answer: Answer, status: int, slug: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.content_type.startswith("application/problem+json"), answer
    problem = answer.json
    assert problem["type"] == PROBLEM + slug and problem["status"] == status and problem["title"] and problem["detail"]
    return problem


async def history(pool: asyncpg.Pool, serial: int) -> tuple[list[asyncpg.Record], list[str]]:
    """The API's audit rows for one certificate and its outbox events after issuance, oldest first."""
    raw = serial_to_bytes(serial)
    audit = await pool.fetch("SELECT action, before, after, idempotency_key FROM audit_log "
                             "WHERE serial = $1 AND actor = $2 ORDER BY id", raw, ACTOR)  # fmt: skip
    events = await pool.fetch("SELECT event FROM outbox WHERE serial = $1 AND event <> 'issued' ORDER BY id", raw)
    return audit, [e["event"] for e in events]


N = 20


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


async def test_identical_revocations_with_one_key_act_once(api: Call, ca: CertificateAuthority,
                                                           pool: asyncpg.Pool) -> None:  # fmt: skip
    record = await issue(ca)
    path = f"/v1/certificates/moica/{record.serial_hex}/revoke"
    body = {"reason": "keyCompromise", "invalidity_date": record.not_before.isoformat()}
    answers = await asyncio.gather(*(api("POST", path, body, key="card-lost-7") for _ in range(N)))
    assert [a.status for a in answers] == [200] * N, answers
    assert len({a.raw for a in answers}) == 1, "every replay must give the first answer, byte for byte"
    first = answers[0].json
    assert (first["status"], first["reason"]) == ("revoked", "keyCompromise")
    audit, events = await history(pool, record.serial)
    assert [(a["action"], a["idempotency_key"]) for a in audit] == [("certificate.revoke", "card-lost-7")]
    assert events == ["revoked"]
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE actor = $1", ACTOR) == 1
    stored = await ca.get("moica", record.serial)
    assert stored.status.value == "revoked" and stored.reason is not None and stored.reason.rfc_name == "keyCompromise"
    assert stored.revoked_at is not None and stored.revoked_at.isoformat() == first["revoked_at"]


async def test_one_key_with_different_bodies_one_wins_the_others_conflict(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool
) -> None:
    record = await issue(ca)
    path = f"/v1/certificates/moica/{record.serial_hex}/revoke"
    reasons = ["keyCompromise", "superseded", "affiliationChanged", "cessationOfOperation"] * (N // 4)
    random.shuffle(reasons)
    answers = await asyncio.gather(*(api("POST", path, {"reason": r}, key="k-1") for r in reasons))
    won = [(r, a) for r, a in zip(reasons, answers, strict=True) if a.status == 200]
    assert won, answers
    winner = won[0][1].json["reason"]
    assert {r for r, _ in won} == {winner}, "only requests identical to the winner may succeed (as replays)"
    assert len({a.raw for _, a in won}) == 1
    for r, a in zip(reasons, answers, strict=True):
        if r == winner:
            assert a.status == 200, (r, a)
        else:
            assert_problem(a, 409, "conflict")
    stored = await ca.get("moica", record.serial)
    assert stored.status.value == "revoked" and stored.reason is not None and stored.reason.rfc_name == winner
    audit, events = await history(pool, record.serial)
    assert [a["action"] for a in audit] == ["certificate.revoke"] and audit[0]["after"]["reason"] == winner
    assert events == ["revoked"]


async def test_racing_revoke_suspend_resume_without_keys(api: Call, ca: CertificateAuthority,
                                                         pool: asyncpg.Pool) -> None:  # fmt: skip
    """Every 2xx is one audit row (and outbox event), every refusal none; the rows chain up."""
    for _ in range(3):
        record = await issue(ca)
        base = f"/v1/certificates/moica/{record.serial_hex}"
        ops = ["suspend"] * 12 + ["resume"] * 12 + ["revoke"] * 3
        random.shuffle(ops)
        answers = await asyncio.gather(*(api("POST", f"{base}/{op}") for op in ops))
        done = collections.Counter()
        acknowledged = []
        for op, a in zip(ops, answers, strict=True):
            if a.status == 200:
                done[f"certificate.{op}"] += 1
                acknowledged.append((f"certificate.{op}", {k: a.json[k] for k in
                                     ("status", "revoked_at", "reason", "invalidity_date")}))  # fmt: skip
            else:
                assert_problem(a, 409, "illegal-transition")
        audit, events = await history(pool, record.serial)
        assert collections.Counter(a["action"] for a in audit) == done, (ops, answers)
        assert sorted(map(canonical, acknowledged)) == sorted(canonical((a["action"], a["after"])) for a in audit)
        assert events == [{"revoke": "revoked", "suspend": "suspended", "resume": "resumed"}[a["action"].split(".")[1]]
                          for a in audit]  # fmt: skip
        assert done["certificate.revoke"] == 1  # the first revoke to get the row lock always can go
        # The rows form one history, from good to the final state, each starting where the last ended.
        state = {"status": "good", "revoked_at": None, "reason": None, "invalidity_date": None}
        for a in audit:
            assert a["before"] == state, audit
            state = a["after"]
        final = (await api("GET", base)).json
        assert {k: final[k] for k in state} == state and state["status"] == "revoked"


async def test_identical_issuance_with_one_key_issues_once(api: Call, pool: asyncpg.Pool) -> None:
    body = {"issuer": "moica", "profile": "citizen-signing", "csr": csr_pem("0000000000004242")}
    answers = await asyncio.gather(*(api("POST", "/v1/certificates", body, key="enrol-4242") for _ in range(N)))
    assert [a.status for a in answers] == [201] * N, answers
    assert len({a.raw for a in answers}) == 1
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE holder_id = '0000000000004242'") == 1
    serial = serial_to_bytes(int(answers[0].json["serial"], 16))
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE actor = $1", ACTOR) == 1
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE serial = $1", serial) == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE serial = $1", serial) == 1
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE actor = $1", ACTOR) == 1
    # Another CSR under the same key is a different request: refused, nothing issued.
    other = {**body, "csr": csr_pem("0000000000004343")}
    answers = await asyncio.gather(*(api("POST", "/v1/certificates", other, key="enrol-4242") for _ in range(5)))
    for a in answers:
        assert_problem(a, 409, "conflict")
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE holder_id = '0000000000004242'") == 1
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE actor = $1", ACTOR) == 1
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE holder_id = '0000000000004343'") == 0


# Batches racing each other ------------------------------------------------------------------


async def test_identical_batches_with_one_key_race_to_one_result(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool
) -> None:
    records = [await issue(ca) for _ in range(60)]
    items = [{"issuer": "moica", "serial": r.serial_hex} for r in records]
    items.append({"issuer": "moica", "serial": "ABCDEF"})  # never issued: fails in every copy
    answers = await asyncio.gather(
        *(api("POST", "/v1/revocations:batch", {"items": items}, key="b-2") for _ in range(4))
    )
    assert [a.status for a in answers] == [207] * 4, answers
    assert all(a.json == answers[0].json for a in answers), "a replayed batch must give the first answer"
    assert (answers[0].json["revoked"], answers[0].json["failed"]) == (60, 1)
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE actor = $1", ACTOR) == 60
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE event = 'revoked'") == 60


async def test_overlapping_batches_without_keys_revoke_each_certificate_once(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool
) -> None:
    """Three batches over the same certificates in different orders: each certificate is
    reported revoked by exactly one of them (the others say illegal-transition), and the
    audit log and outbox hold exactly those acknowledgements."""
    records = [await issue(ca) for _ in range(80)]
    orders = [random.sample(records, len(records)) for _ in range(3)]
    bodies = [{"items": [{"issuer": "moica", "serial": r.serial_hex} for r in order]} for order in orders]
    answers = await asyncio.gather(*(api("POST", "/v1/revocations:batch", b) for b in bodies))
    winners: dict[str, list[int]] = collections.defaultdict(list)
    for b, (body, a) in enumerate(zip(bodies, answers, strict=True)):
        assert a.status in (200, 207), a
        for item, result in zip(body["items"], a.json["results"], strict=True):
            if result["ok"]:
                assert result["certificate"]["serial"] == item["serial"]
                winners[item["serial"]].append(b)
            else:
                assert result["problem"]["type"] == PROBLEM + "illegal-transition", result
    assert sorted(winners) == sorted(r.serial_hex for r in records)
    assert all(len(w) == 1 for w in winners.values()), winners
    assert sum(a.json["revoked"] for a in answers) == len(records)
    audit = await pool.fetch("SELECT serial FROM audit_log WHERE actor = $1", ACTOR)
    events = await pool.fetch("SELECT serial FROM outbox WHERE event = 'revoked'")
    expected = sorted(serial_to_bytes(r.serial) for r in records)
    assert sorted(bytes(a["serial"]) for a in audit) == expected
    assert sorted(bytes(e["serial"]) for e in events) == expected


# Bulk revocation ----------------------------------------------------------------------------

BULK = 10_000


async def load_certificates(pool: asyncpg.Pool, vault: KeyVault, urls: PublicURLs, now: dt.datetime, n: int,
                            revoked: set[int]) -> list[int]:  # fmt: skip
    """``n`` real certificates of moica issued ``now`` (the benchmark's loader: templates
    re-signed with new serials and holder numbers), COPYed in; those at the indices in
    ``revoked`` already revoked (keyCompromise, a day later). Returns the serials in index order."""
    issued = now
    async with pool.acquire() as conn:
        issuer = await db.get_issuer(conn, "moica")
        assert issuer is not None
        signing = await load_signing_ca(conn, vault, issuer)
        templates = make_templates(signing, issuer.id, issuer.crl_partitions, urls=urls, now=issued)
        key = signing.key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        algorithm = ec.ECDSA(hashes.SHA256())
        serials, records = [], []
        for i in range(n):
            serial = random_serial()
            t = templates.templates[serial % templates.partitions]
            holder = f"{7 * 10**14 + i:016d}"
            der = assemble(t, serial, holder, lambda data: key.sign(data, algorithm))
            when = now + dt.timedelta(days=1) if i in revoked else None
            records.append((issuer.id, serial_to_bytes(serial), "citizen-signing", t.subject_prefix + holder +
                            t.subject_suffix, holder, t.not_before, t.not_after, "revoked" if when else "good", when,
                            1 if when else None, None, t.partition, der, issued, when or issued))  # fmt: skip
            serials.append(serial)
        await db.copy_certificates(conn, records)
    return serials


async def all_rows(pool: asyncpg.Pool) -> dict[tuple[str, bytes], tuple[Any, ...]]:
    """Every certificate's state, by (issuer, serial)."""
    rows = await pool.fetch("SELECT i.name, c.serial, c.status::text, c.reason, c.revoked_at, c.invalidity_date, "
                            "c.updated_at FROM certificates c JOIN issuers i ON i.id = c.issuer_id")  # fmt: skip
    return {(r[0], bytes(r[1])): tuple(r[2:]) for r in rows}


async def table_counts(pool: asyncpg.Pool) -> tuple[int, ...]:
    return tuple(await pool.fetchrow("SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM outbox), "
                                     "(SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM certificates)"))  # fmt: skip


@pytest.fixture
async def unflushed_pool(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the same (emptied) database whose commits do not wait for the WAL to reach the
    disk (synchronous_commit off): 10,000 commits in a row cost seconds of fsync otherwise.
    Visibility, locks and constraints are those of any other session."""
    url = database_url + ("&" if "?" in database_url else "?") + "synchronous_commit=off"
    fast = await db.create_pool(url, min_size=1, max_size=20)
    assert await fast.fetchval("SHOW synchronous_commit") == "off"
    yield fast
    await fast.close()


@pytest.mark.timeout(180)
async def test_bulk_revocation_of_10000_reports_each_failure_and_replays(
    serve: Serve, unflushed_pool: asyncpg.Pool, pki: PKISummary, vault: KeyVault, urls: PublicURLs, clock: FakeClock
) -> None:
    pool = unflushed_pool
    api = await serve(pool, CertificateAuthority(pool, vault, clock=clock, urls=urls))
    rng = random.Random(5)
    indices = rng.sample(range(BULK), 140)
    already, unknown_serial, unknown_issuer, bad_serial = (set(indices[:50]), set(indices[50:90]),
                                                           set(indices[90:120]), set(indices[120:]))  # fmt: skip
    serials = await load_certificates(pool, vault, urls, clock.now(), BULK, already)
    clock.advance(dt.timedelta(days=2))
    items: list[dict[str, Any]] = []
    expected_failures: dict[int, str] = {}
    for i, serial in enumerate(serials):
        item: dict[str, Any] = {"issuer": "moica", "serial": format(serial, "X")}
        if i in unknown_serial:
            item["serial"] = format(random_serial(), "X")
            expected_failures[i] = "not-found"
        elif i in unknown_issuer:
            item["issuer"] = "nosuch"
            expected_failures[i] = "not-found"
        elif i in bad_serial:
            item["serial"] = "XYZ-" + item["serial"]
            expected_failures[i] = "validation"
        elif i in already:
            expected_failures[i] = "illegal-transition"
        if i % 7 == 0:
            item["reason"] = "keyCompromise"
        items.append(item)
    ok = [i for i in range(BULK) if i not in expected_failures]
    before_rows, before_counts = await all_rows(pool), await table_counts(pool)

    started = time.monotonic()
    answer = await api("POST", "/v1/revocations:batch", {"items": items, "reason": "superseded"}, key="bulk-1")
    first_s = time.monotonic() - started
    assert answer.status == 207, answer.raw[:500]
    body = answer.json
    assert (body["revoked"], body["failed"]) == (len(ok), len(expected_failures))
    results = body["results"]
    assert [r["index"] for r in results] == list(range(BULK))
    failed = {r["index"]: r["problem"] for r in results if not r["ok"]}
    assert {i: p["type"] for i, p in failed.items()} == {i: PROBLEM + s for i, s in expected_failures.items()}
    for i, p in failed.items():
        assert p["status"] == {"not-found": 404, "validation": 400, "illegal-transition": 409}[expected_failures[i]]
        assert p["title"] and p["detail"], p
        hint = "nosuch" if i in unknown_issuer else items[i]["serial"].removeprefix("XYZ-")
        assert hint.lower() in p["detail"].lower(), (i, p)
    for i in ok:
        cert = results[i]["certificate"]
        assert (cert["serial"], cert["status"]) == (items[i]["serial"], "revoked")
        assert cert["reason"] == ("keyCompromise" if i % 7 == 0 else "superseded")

    # PostgreSQL: exactly the acknowledged items changed, each with one outbox event and one audit row.
    after_rows = await all_rows(pool)
    assert after_rows.keys() == before_rows.keys()
    changed = {k for k in after_rows if after_rows[k] != before_rows[k]}
    assert changed == {("moica", serial_to_bytes(serials[i])) for i in ok}
    for i in ok:
        status, reason, *_ = after_rows[("moica", serial_to_bytes(serials[i]))]
        assert (status, reason) == ("revoked", 1 if i % 7 == 0 else 4)
    events = await pool.fetch("SELECT serial, event FROM outbox WHERE event <> 'issued'")
    assert sorted((bytes(e["serial"]), e["event"]) for e in events) == sorted(
        (serial_to_bytes(serials[i]), "revoked") for i in ok)  # fmt: skip
    audit = await pool.fetch("SELECT serial, action, idempotency_key FROM audit_log WHERE actor = $1", ACTOR)
    assert sorted((bytes(a["serial"]), a["action"]) for a in audit) == sorted(
        (serial_to_bytes(serials[i]), "certificate.revoke") for i in ok)  # fmt: skip
    assert all(a["idempotency_key"].startswith("bulk-1") for a in audit)  # the key is on record
    counts = await table_counts(pool)
    assert (counts[0], counts[1], counts[3]) == (before_counts[0] + len(ok), before_counts[1] + len(ok),
                                                 before_counts[3])  # fmt: skip
    assert counts[2] > before_counts[2]  # the key was kept, so that a repeat can replay

    # The same batch under the same key: the same answer, item by item, and nothing written.
    started = time.monotonic()
    again = await api("POST", "/v1/revocations:batch", {"items": items, "reason": "superseded"}, key="bulk-1")
    replay_s = time.monotonic() - started
    assert again.status == 207
    assert again.json["results"] == results
    assert (again.json["revoked"], again.json["failed"]) == (body["revoked"], body["failed"])
    assert await table_counts(pool) == counts
    assert await all_rows(pool) == after_rows
    print(f"10,000-item batch: {first_s:.1f} s, replay {replay_s:.1f} s")


# Known bugs, pinned (strict xfails) -----------------------------------------------------------


async def test_bug_batch_with_a_long_idempotency_key(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool) -> None:
    records = [await issue(ca) for _ in range(2)]
    single = await api("POST", f"/v1/certificates/moica/{records[0].serial_hex}/suspend", key="s" * 255)
    assert single.status == 200  # such a key is fine elsewhere
    items = [{"issuer": "moica", "serial": r.serial_hex} for r in records]
    answer = await api("POST", "/v1/revocations:batch", {"items": items}, key="b" * 255)
    if answer.status == 400:  # refused as a whole would do, too
        assert_problem(answer, 400, "validation")
        return
    assert answer.status == 200, answer.raw[:400]
    assert [(await ca.get("moica", r.serial)).status.value for r in records] == ["revoked", "revoked"]


async def test_bug_a_different_batch_under_a_used_key_is_refused(api: Call, ca: CertificateAuthority) -> None:
    a, b, c = [await issue(ca) for _ in range(3)]
    first = await api("POST", "/v1/revocations:batch", {"items": [{"issuer": "moica", "serial": a.serial_hex}]},
                      key="batch-9")  # fmt: skip
    assert first.status == 200
    other = {"items": [{"issuer": "moica", "serial": s.serial_hex} for s in (a, b, c)]}
    answer = await api("POST", "/v1/revocations:batch", other, key="batch-9")
    statuses = [(await ca.get("moica", s.serial)).status.value for s in (b, c)]
    assert statuses == ["good", "good"], f"a reused key revoked certificates: {answer.raw[:300]!r}"
    assert_problem(answer, 409, "conflict")
