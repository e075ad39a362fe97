"""The admin API over real HTTP against real PostgreSQL: authentication, roles, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from ca_core.clock import FakeClock
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.profiles import HolderSubject
from ca_core.storage import postgres as db
from ca_core.tokens import PERMISSIONS, Action, Role, make_token
from responder.admin import FailureLimiter, build_admin_app, openapi_document

HOLDER = HolderSubject("王小明", "0000000111729553")
Call = Callable[..., Awaitable[tuple[int, dict[str, str], Any]]]


async def new_token(pool: asyncpg.Pool, clock: FakeClock, name: str, role: Role) -> str:
    token = make_token()
    async with pool.acquire() as conn:
        token_id = await db.insert_token(
            conn, name=name, role=role.value, secret_hash=token.secret_hash, now=clock.now()
        )
    return token.text(token_id)


@pytest.fixture
def limiter() -> FailureLimiter:
    return FailureLimiter()


@pytest.fixture
async def api(
    pool: asyncpg.Pool, ca: CertificateAuthority, clock: FakeClock, limiter: FailureLimiter
) -> AsyncIterator[Call]:
    server = TestServer(build_admin_app(pool, ca, clock, limiter=limiter))
    await server.start_server()
    async with ClientSession() as http:

        async def call(
            method: str, path: str, token: str | None = None, body: Any = None, raw: bytes | None = None, **headers: str
        ) -> tuple[int, dict[str, str], Any]:
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
            if data is not None:
                headers.setdefault("Content-Type", "application/json")
            async with http.request(method, str(server.make_url(path)), data=data, headers=headers) as r:
                text = await r.read()
                parsed = orjson.loads(text) if text else None
                return r.status, {k.lower(): v for k, v in r.headers.items()}, parsed

        yield call
    await server.close()


async def issue(ca: CertificateAuthority) -> CertRecord:
    record, _ = await ca.issue_with_generated_key(issuer="moica", profile="citizen-signing", subject=HOLDER,
                                                  actor="test", key_type=KeyType.EC_P256)  # fmt: skip
    return record


def is_problem(status: int, headers: dict[str, str], body: Any, expected: int, slug: str) -> None:
    assert status == expected, body
    assert headers["content-type"].startswith("application/problem+json")
    assert body["type"] == f"urn:certstatus:problem:{slug}" and body["status"] == expected and body["detail"]


#: Every operation of the API and the action it needs (None: any authenticated caller).
ROUTES: list[tuple[str, str, Action | None]] = [
    ("GET", "/v1/openapi.json", Action.READ),
    ("GET", "/v1/issuers", Action.READ),
    ("GET", "/v1/certificates", Action.READ),
    ("POST", "/v1/certificates", Action.ISSUE),
    ("GET", "/v1/audit", Action.READ),
    ("POST", "/v1/revocations:batch", Action.REVOKE),
    ("GET", "/v1/certificates/{issuer}/{serial}", Action.READ),
    ("POST", "/v1/certificates/{issuer}/{serial}/revoke", Action.REVOKE),
    ("POST", "/v1/certificates/{issuer}/{serial}/suspend", Action.SUSPEND),
    ("POST", "/v1/certificates/{issuer}/{serial}/resume", Action.RESUME),
]


def routes(serial: str) -> list[tuple[str, str]]:
    return [(m, p.format(issuer="moica", serial=serial)) for m, p, _ in ROUTES] + [("GET", "/v1/no-such-route")]


def test_the_route_table_covers_the_openapi_document() -> None:
    documented = {(m.upper(), p) for p, ops in openapi_document()["paths"].items() for m in ops}
    assert documented == {(m, p) for m, p, _ in ROUTES}


@pytest.mark.parametrize("limiter", [FailureLimiter(limit=1000)])
async def test_no_route_is_reachable_without_valid_credentials(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    record = await issue(ca)
    good = await new_token(pool, clock, "ops", Role.OPERATOR)
    async with pool.acquire() as conn:
        await db.revoke_token(conn, "ops", clock.now())
    for method, path in routes(record.serial_hex):
        for auth in (None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer nonsense", f"Bearer {good}",
                     f"Bearer {good[:-2]}xx"):  # fmt: skip
            headers = {"Authorization": auth} if auth else {}
            status, h, body = await api(method, path, **headers)
            is_problem(status, h, body, 401, "unauthorized")
            assert h["www-authenticate"].startswith("Bearer")
    assert (await ca.get("moica", record.serial)).status.value == "good"  # nothing happened


async def test_roles(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
    tokens = {role: await new_token(pool, clock, role.value, role) for role in Role}
    a, b = await issue(ca), await issue(ca)
    # Auditor: reads only.
    status, _, body = await api("GET", "/v1/issuers", tokens[Role.AUDITOR])
    assert status == 200 and {i["name"] for i in body["issuers"]} >= {"moica", "gca", "root"}
    status, _, body = await api("GET", f"/v1/certificates/moica/{a.serial_hex}", tokens[Role.AUDITOR])
    assert status == 200 and body["status"] == "good"
    for op in ("revoke", "suspend", "resume"):
        status, h, body = await api("POST", f"/v1/certificates/moica/{a.serial_hex}/{op}", tokens[Role.AUDITOR])
        is_problem(status, h, body, 403, "forbidden")
    # Registration officer: suspend and resume, never revoke.
    officer = tokens[Role.REGISTRATION_OFFICER]
    status, h, body = await api("POST", f"/v1/certificates/moica/{a.serial_hex}/revoke", officer)
    is_problem(status, h, body, 403, "forbidden")
    status, _, body = await api("POST", f"/v1/certificates/moica/{a.serial_hex}/suspend", officer)
    assert status == 200 and body["status"] == "suspended" and body["reason"] == "certificateHold"
    status, _, body = await api("POST", f"/v1/certificates/moica/{a.serial_hex}/resume", officer)
    assert status == 200 and body["status"] == "good"
    # Operator: revokes, and the audit log names the token.
    status, _, body = await api("POST", f"/v1/certificates/moica/{b.serial_hex}/revoke", tokens[Role.OPERATOR],
                                body={"reason": "keyCompromise", "invalidity_date": b.issued_at.isoformat()})  # fmt: skip
    assert status == 200 and (body["status"], body["reason"]) == ("revoked", "keyCompromise")
    audit = await ca.audit(issuer="moica", serial=b.serial)
    assert audit[-1].actor == "token:operator" and audit[-1].action == "certificate.revoke"


async def test_bad_input_is_problem_json_and_changes_nothing(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    token = await new_token(pool, clock, "ops", Role.OPERATOR)
    record = await issue(ca)
    path = f"/v1/certificates/moica/{record.serial_hex}/revoke"
    cases = [
        (dict(raw=b"{not json"), 400, "validation"),
        (dict(raw=b"[1, 2]"), 400, "validation"),
        (dict(body={"reason": "keyCompromise", "extra": 1}), 400, "validation"),
        (dict(body={"reason": "lost it"}), 400, "validation"),
        (dict(body={"reason": ["keyCompromise"]}), 400, "validation"),
        (dict(body={"invalidity_date": "yesterday"}), 400, "validation"),
        (dict(body={"invalidity_date": "2026-01-01T00:00:00"}), 400, "validation"),
        (dict(raw=b"{}" + b" " * (70 * 1024)), 413, "validation"),
        (dict(raw=b"reason=x", **{"Content-Type": "application/x-www-form-urlencoded"}), 400, "validation"),
    ]
    for kwargs, expected, slug in cases:
        status, h, body = await api("POST", path, token, **kwargs)
        is_problem(status, h, body, expected, slug)
    assert (await ca.get("moica", record.serial)).status.value == "good"
    status, h, body = await api("GET", "/v1/certificates/moica/ABCDEF", token)
    is_problem(status, h, body, 404, "not-found")
    status, h, body = await api("GET", "/v1/certificates/nosuch/ABCDEF", token)
    is_problem(status, h, body, 404, "not-found")
    status, h, body = await api("DELETE", f"/v1/certificates/moica/{record.serial_hex}", token)
    is_problem(status, h, body, 405, "method-not-allowed")
    assert (await api("POST", path, token, body={"reason": "superseded"}))[0] == 200
    status, h, body = await api("POST", f"/v1/certificates/moica/{record.serial_hex}/resume", token)
    is_problem(status, h, body, 409, "illegal-transition")
    assert "revocation is final" in body["detail"]


async def test_idempotency_key(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
    token = await new_token(pool, clock, "ops", Role.OPERATOR)
    record = await issue(ca)
    path = f"/v1/certificates/moica/{record.serial_hex}"
    first = await api("POST", path + "/suspend", token, **{"Idempotency-Key": "card-lost-1"})
    again = await api("POST", path + "/suspend", token, **{"Idempotency-Key": "card-lost-1"})
    assert first[0] == again[0] == 200 and first[2] == again[2]
    status, h, body = await api("POST", path + "/resume", token, **{"Idempotency-Key": "card-lost-1"})
    is_problem(status, h, body, 409, "conflict")


async def test_failed_authentication_is_rate_limited(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool,
                                                     clock: FakeClock) -> None:  # fmt: skip
    good = await new_token(pool, clock, "ops", Role.OPERATOR)
    for _ in range(10):
        assert (await api("GET", "/v1/issuers", "cst_1_" + "x" * 43))[0] == 401
    status, h, body = await api("GET", "/v1/issuers", good)
    is_problem(status, h, body, 429, "rate-limited")
    assert int(h["retry-after"]) >= 1


async def test_openapi_document_describes_the_routes(api: Call, pool: asyncpg.Pool, clock: FakeClock) -> None:
    token = await new_token(pool, clock, "reader", Role.AUDITOR)
    status, _, body = await api("GET", "/v1/openapi.json", token)
    assert status == 200 and body == orjson.loads(orjson.dumps(openapi_document()))
    assert body["openapi"] == "3.1.0"
    for _, path in routes("{serial}")[:-1]:
        assert path.replace("moica", "{issuer}") in body["paths"]


def csr_pem(name: str = "王大明", holder: str = "0000000000000042") -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"), x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.SERIAL_NUMBER, holder)])  # fmt: skip
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def test_issuance_from_a_csr(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
    officer = await new_token(pool, clock, "ra-1", Role.REGISTRATION_OFFICER)
    auditor = await new_token(pool, clock, "aud", Role.AUDITOR)
    body = {"issuer": "moica", "profile": "citizen-signing", "csr": csr_pem(), "email": "daming@example.tw"}
    status, h, problem_body = await api("POST", "/v1/certificates", auditor, body=body)
    is_problem(status, h, problem_body, 403, "forbidden")
    status, _, created = await api("POST", "/v1/certificates", officer, body=body, **{"Idempotency-Key": "enrol-42"})
    assert status == 201, created
    assert created["status"] == "good" and created["holder_id"] == "0000000000000042"
    assert created["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    again = await api("POST", "/v1/certificates", officer, body=body, **{"Idempotency-Key": "enrol-42"})
    assert again[0] == 201 and again[2]["serial"] == created["serial"]
    for bad, fragment in (
        ({**body, "csr": "not a csr"}, "CSR"),
        ({**body, "profile": "nope"}, "profile"),
        ({k: v for k, v in body.items() if k != "csr"}, "csr is required"),
        ({**body, "validity_days": 0}, "validity_days"),
        ({**body, "validity_days": True}, "validity_days"),
        ({**body, "csr": csr_pem(holder="42")}, "16"),
    ):
        status, h, problem_body = await api("POST", "/v1/certificates", officer, body=bad)
        is_problem(status, h, problem_body, 400 if "profile" not in fragment else 400, "validation")
        assert fragment in problem_body["detail"], problem_body
    status, h, problem_body = await api("POST", "/v1/certificates", officer, body={**body, "issuer": "nosuch"})
    is_problem(status, h, problem_body, 404, "not-found")


async def test_search_and_audit_pages(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    token = await new_token(pool, clock, "ops", Role.OPERATOR)
    issued = sorted([(await issue(ca)).serial for _ in range(5)])
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        path = "/v1/certificates?issuer=moica&holder=0000000111729553&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = await api("GET", path, token)
        assert status == 200, body
        seen += [c["serial"] for c in body["certificates"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [format(s, "X") for s in issued]
    await api("POST", f"/v1/certificates/moica/{format(issued[0], 'X')}/revoke", token)
    status, _, body = await api("GET", "/v1/certificates?status=revoked", token)
    assert [c["serial"] for c in body["certificates"]] == [format(issued[0], "X")]

    status, _, body = await api("GET", "/v1/audit?actor=token:ops", token)
    assert status == 200 and [e["action"] for e in body["entries"]] == ["certificate.revoke"]
    entries: list[int] = []
    cursor = None
    while True:
        status, _, body = await api("GET", "/v1/audit?issuer=moica&limit=3" + (f"&cursor={cursor}" if cursor else ""),
                                    token)  # fmt: skip
        entries += [e["id"] for e in body["entries"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert entries == sorted(entries) and len(entries) == len(set(entries)) >= 7
    for path in ("/v1/certificates?colour=red", "/v1/certificates?status=lost", "/v1/certificates?limit=0",
                 "/v1/certificates?cursor=!!", "/v1/audit?since=yesterday", "/v1/certificates?holder=42"):  # fmt: skip
        status, h, body = await api("GET", path, token)
        is_problem(status, h, body, 400, "validation")


async def test_bulk_revocation_reports_exactly_which_failed(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    token = await new_token(pool, clock, "ops", Role.OPERATOR)
    officer = await new_token(pool, clock, "ra", Role.REGISTRATION_OFFICER)
    records = [await issue(ca) for _ in range(6)]
    await ca.revoke("moica", records[2].serial, actor="t")  # already revoked: that item must fail
    items = [{"issuer": "moica", "serial": r.serial_hex} for r in records]
    items.append({"issuer": "moica", "serial": "ABCDEF"})  # never issued
    items[0]["reason"] = "keyCompromise"
    status, h, body = await api("POST", "/v1/revocations:batch", officer, body={"items": items})
    is_problem(status, h, body, 403, "forbidden")
    status, _, body = await api("POST", "/v1/revocations:batch", token, body={"items": items, "reason": "superseded"},
                                **{"Idempotency-Key": "batch-7"})  # fmt: skip
    assert status == 207 and (body["revoked"], body["failed"]) == (5, 2)
    failed = {r["index"]: r["problem"]["type"] for r in body["results"] if not r["ok"]}
    assert failed == {2: "urn:certstatus:problem:illegal-transition", 6: "urn:certstatus:problem:not-found"}
    for i in (0, 1, 3, 4, 5):
        assert (await ca.get("moica", records[i].serial)).status.value == "revoked"
    assert (await ca.get("moica", records[0].serial)).reason.rfc_name == "keyCompromise"  # type: ignore[union-attr]
    assert (await ca.get("moica", records[1].serial)).reason.rfc_name == "superseded"  # type: ignore[union-attr]
    # The same batch again with the same key: the done items replay, the failed ones fail again.
    again = await api("POST", "/v1/revocations:batch", token, body={"items": items, "reason": "superseded"},
                      **{"Idempotency-Key": "batch-7"})  # fmt: skip
    assert again[0] == 207 and (again[2]["revoked"], again[2]["failed"]) == (5, 2)
    for bad in ({"items": []}, {"items": "all"}, {"items": [{"issuer": "moica"}]},
                {"items": [{"issuer": "moica", "serial": "AB", "colour": 1}]}):  # fmt: skip
        status, h, body = await api("POST", "/v1/revocations:batch", token, body=bad)
        is_problem(status, h, body, 400, "validation")


async def test_every_route_with_every_role(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
    """A role gets 403 exactly where PERMISSIONS says it may not, and never a 401 or a 5xx."""
    tokens = {role: await new_token(pool, clock, f"t-{role.value}", role) for role in Role}
    for role, token in tokens.items():
        record = await issue(ca)
        for method, path, action in ROUTES:
            url = path.format(issuer="moica", serial=record.serial_hex)
            body: Any = None
            if path == "/v1/revocations:batch":
                body = {"items": [{"issuer": "moica", "serial": record.serial_hex}]}
            status, headers, answer = await api(method, url, token, body=body)
            if action in PERMISSIONS[role]:
                assert status < 500 and status not in (401, 403), (role, method, path, status, answer)
            else:
                is_problem(status, headers, answer, 403, "forbidden")
        # What the role could not do left the certificate as it was.
        if Action.REVOKE not in PERMISSIONS[role] and Action.SUSPEND not in PERMISSIONS[role]:
            assert (await ca.get("moica", record.serial)).status.value == "good"


@pytest.fixture
async def keygen_api(pool: asyncpg.Pool, ca: CertificateAuthority, clock: FakeClock) -> AsyncIterator[Call]:
    """The API where CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS is on."""
    server = TestServer(build_admin_app(pool, ca, clock, allow_generated_keys=True))
    await server.start_server()
    async with ClientSession() as http:

        async def call(path: str, token: str, body: Any, **headers: str) -> tuple[int, dict[str, str], Any]:
            headers["Authorization"] = f"Bearer {token}"
            async with http.post(str(server.make_url(path)), json=body, headers=headers) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json(content_type=None)

        yield call
    await server.close()


GENERATED = {"issuer": "moica", "profile": "citizen-signing", "generate_key": {"key_type": "ec-p256"},
             "holder": {"name": "林小美", "id": "0000000333444555"}, "key_passphrase": "correct horse battery"}  # fmt: skip


async def test_generated_keys_only_where_allowed(
    api: Call, keygen_api: Call, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    officer = await new_token(pool, clock, "ra", Role.REGISTRATION_OFFICER)
    status, h, body = await api("POST", "/v1/certificates", officer, body=GENERATED)
    is_problem(status, h, body, 403, "forbidden")
    assert "CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS" in body["detail"]
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE profile = 'citizen-signing'") == 0

    status, h, body = await keygen_api("/v1/certificates", officer, GENERATED)
    assert status == 201, body
    assert h["cache-control"] == "no-store"
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    key = serialization.load_pem_private_key(body["private_key_pem"].encode(), b"correct horse battery")
    assert key.public_key() == cert.public_key()
    with pytest.raises(TypeError):  # the key is never handed out in the clear
        serialization.load_pem_private_key(body["private_key_pem"].encode(), None)
    assert body["holder_id"] == "0000000333444555"

    for change, fragment in [
        ({"key_passphrase": "short"}, "key_passphrase"),
        ({"key_passphrase": None}, "key_passphrase"),
        ({"holder": {"name": "x"}}, "holder"),
        ({"holder": {"name": "x", "id": "123"}}, "16"),
        ({"generate_key": {"key_type": "dsa"}}, "key type"),
        ({"generate_key": {"bits": 1}}, "generate_key"),
        ({"csr": "-----BEGIN CERTIFICATE REQUEST-----"}, "not both"),
        ({"profile": "admin-client"}, "admin cert create"),
    ]:
        status, h, body = await keygen_api("/v1/certificates", officer, {**GENERATED, **change})
        is_problem(status, h, body, 400, "validation")
        assert fragment in body["detail"], (change, body)
    status, h, body = await keygen_api("/v1/certificates", officer, GENERATED, **{"Idempotency-Key": "k"})
    is_problem(status, h, body, 400, "validation")
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE profile = 'citizen-signing'") == 1


async def test_paths_name_what_is_wrong(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
    token = await new_token(pool, clock, "ops", Role.OPERATOR)
    record = await issue(ca)
    status, h, body = await api("GET", "/v1/certificates/moica/not-hex", token)
    is_problem(status, h, body, 400, "validation")
    assert "not-hex" in body["detail"]
    status, h, body = await api("POST", f"/v1/certificates/MOICA/{record.serial_hex}/revoke", token)
    is_problem(status, h, body, 404, "not-found")
    assert "MOICA" in body["detail"]
    # Other spellings of a serial are the same certificate.
    colons = ":".join(record.serial_hex[i : i + 2] for i in range(0, len(record.serial_hex), 2))
    status, _, body = await api("GET", f"/v1/certificates/moica/{colons.lower()}", token)
    assert status == 200 and body["serial"] == record.serial_hex


async def test_ca_side_certificates_are_not_changed_through_the_api(
    api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    """A search by issuer also finds its OCSP signer; revoking that through the API (say, by
    feeding a search into a batch) would take the responder down. Only the CA host may."""
    token = await new_token(pool, clock, "ops", Role.OPERATOR)
    signer = await pool.fetchval(
        """SELECT c.serial FROM certificates c JOIN issuers i ON i.id = c.issuer_id
           WHERE i.name = 'moica' AND c.profile = 'ocsp-signer'"""
    )
    serial = bytes(signer).hex().upper()
    status, h, body = await api("POST", f"/v1/certificates/moica/{serial}/revoke", token, body={"reason": "superseded"})
    is_problem(status, h, body, 409, "illegal-transition")
    assert "ocsp-signer" in body["detail"]
    record = await issue(ca)
    status, _, body = await api("POST", "/v1/revocations:batch", token,
                                body={"items": [{"issuer": "moica", "serial": serial},
                                                {"issuer": "moica", "serial": record.serial_hex}]})  # fmt: skip
    assert status == 207 and [r["ok"] for r in body["results"]] == [False, True]
    assert body["results"][0]["problem"]["type"] == "urn:certstatus:problem:illegal-transition"
    assert (await ca.get("moica", serial)).status.value == "good"


async def test_a_full_last_page_has_no_cursor(api: Call, ca: CertificateAuthority, pool: asyncpg.Pool, clock: FakeClock) -> None:
    token = await new_token(pool, clock, "ops", Role.OPERATOR)
    for _ in range(4):
        await issue(ca)
    status, _, first = await api("GET", "/v1/certificates?holder=0000000111729553&limit=2", token)
    assert status == 200 and len(first["certificates"]) == 2 and first["next_cursor"]
    status, _, second = await api("GET", f"/v1/certificates?holder=0000000111729553&limit=2&cursor={first['next_cursor']}",
                                  token)  # fmt: skip
    assert len(second["certificates"]) == 2 and second["next_cursor"] is None
    status, _, everything = await api("GET", "/v1/certificates?holder=0000000111729553&limit=4", token)
    assert len(everything["certificates"]) == 4 and everything["next_cursor"] is None


async def test_token_ids_beyond_the_column_are_just_unauthorized(api: Call) -> None:
    status, h, body = await api("GET", "/v1/issuers", f"cst_9999999999999999999_{'A' * 43}")
    is_problem(status, h, body, 401, "unauthorized")


async def test_a_database_outage_is_503_everywhere(database_url: str, ca: CertificateAuthority, clock: FakeClock) -> None:
    """Authentication and reads use the pool too: an outage there is 503 problem+json, not 500."""
    broken = await db.create_pool(database_url, min_size=1, max_size=2)
    await broken.close()  # every acquire now fails, as with the server gone
    server = TestServer(build_admin_app(broken, ca, clock, limiter=FailureLimiter(limit=1000)))
    await server.start_server()
    try:
        async with ClientSession() as http:
            for path in ("/v1/issuers", "/v1/audit"):
                async with http.get(str(server.make_url(path)), headers={"Authorization": f"Bearer cst_1_{'A' * 43}"}) as r:
                    body = await r.json(content_type=None)
                    assert r.status == 503 and r.content_type == "application/problem+json", body
                    assert body["type"] == "urn:certstatus:problem:unavailable"
                    assert "closed" not in body["detail"] and "pool" not in body["detail"]  # server text stays in the log
    finally:
        await server.close()
