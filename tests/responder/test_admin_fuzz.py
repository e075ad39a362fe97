"""Property-based fuzzing of the admin API through real HTTP, driven by its OpenAPI document.

For every operation :func:`responder.admin.openapi_document` describes, hypothesis generates
(a) arbitrary JSON values as bodies, (b) valid bodies with one field mutated, (c) raw bytes
under assorted content types and (d) random query strings, and each request is sent with an
operator token to a real server (aiohttp, PostgreSQL). Whatever is sent:

- the answer is never a 5xx and never shows a Python traceback;
- a 4xx is ``application/problem+json`` with a ``urn:certstatus:problem:`` type, a title, a
  detail and the HTTP status in ``status``; so is each failed item of a batch;
- a refused request leaves nothing behind: the rows of certificates, outbox, audit_log and
  idempotency_keys are as many as before;
- an accepted one wrote exactly what it acknowledged (one audit row and one outbox event per
  status change, one certificate per issuance, one idempotency row per keyed write).

The server, its database and its PKI are shared by the module (set up once, on an event loop
of the module's own), so an example costs one request and two counting queries.
``CERTSTATUS_FUZZ_EXAMPLES=2000`` runs a longer campaign.

Known bugs that the fuzzing finds are pinned by the ``test_bug_*`` tests at the end (strict
xfails); :func:`known_bugs` recognises their inputs so that the properties keep guarding
everything else until they are fixed. Remove an entry there when its bug is fixed.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime as dt
import json
import os
import re
import string
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import quote

import asyncpg
import orjson
import pytest
import uvloop
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault, Passphrase
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import KeyType
from ca_core.pki import IssuerSpec, init_pki
from ca_core.profiles import HolderSubject, PublicURLs
from ca_core.storage import postgres as db
from ca_core.tokens import Role, make_token
from responder.admin import FailureLimiter, build_admin_app, openapi_document
from tests.conftest import BASE_URL, ISSUERS, TEST_PASSPHRASE, TEST_SCRYPT_N_LOG2, reset_database

DOC = openapi_document()
#: (METHOD, path template, operation object) for every operation of the document.
OPERATIONS = [(m.upper(), path, op) for path, item in DOC["paths"].items() for m, op in item.items()]
WITH_BODY = [o for o in OPERATIONS if "requestBody" in o[2]]
GETS = [o for o in OPERATIONS if o[0] == "GET"]
HOLDER = HolderSubject("王小明", "0000000111729553")
PROBLEM_PREFIX = "urn:certstatus:problem:"
TABLES = ("certificates", "outbox", "audit_log", "idempotency_keys")
BATCH = "/v1/revocations:batch"

FUZZ = settings(
    max_examples=int(os.environ.get("CERTSTATUS_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def op_id(o: tuple[str, str, Any]) -> str:
    return f"{o[0]} {o[1]}"


# Requests and the server -------------------------------------------------------------------

_NO_BODY = object()


@dataclasses.dataclass
class Req:
    """One request as generated: what is sent, and what it meant (for the checks)."""

    method: str
    template: str
    path: str
    query: list[tuple[str, str]] | None = None  # decoded (name, value) pairs, in order
    value: Any = _NO_BODY  # the JSON value the body encodes, if it is JSON
    raw: bytes | None = None
    content_type: str | None = None
    key: str | None = None

    def query_text(self) -> str | None:
        if self.query is None:
            return None
        return "&".join(quote(k, safe="") + ("=" + quote(v, safe="") if v else "") for k, v in self.query)

    def first(self, name: str) -> str | None:
        return next((v for k, v in self.query or () if k == name), None)


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    raw: bytes


@dataclasses.dataclass
class Env:
    """One admin server on a real database, driven from synchronous hypothesis tests."""

    runner: asyncio.Runner
    pool: asyncpg.Pool
    ca: CertificateAuthority
    server: TestServer
    http: ClientSession
    token: str
    serials: dict[str, list[str]]
    csrs: list[str]
    stats: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    async def counts(self) -> tuple[int, ...]:
        row = await self.pool.fetchrow("SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES))
        return tuple(row)

    def send(self, req: Req) -> tuple[Reply, tuple[int, ...], tuple[int, ...]]:
        """Send one request; returns the reply and the table counts before and after it."""
        qs = req.query_text()
        url = URL(str(self.server.make_url(req.path)) + (f"?{qs}" if qs is not None else ""), encoded=True)
        headers = {"Authorization": f"Bearer {self.token}"}
        if req.content_type is not None:
            headers["Content-Type"] = req.content_type
        if req.key is not None:
            headers["Idempotency-Key"] = req.key

        async def go() -> tuple[Reply, tuple[int, ...], tuple[int, ...]]:
            before = await self.counts()
            async with self.http.request(req.method, url, data=req.raw, headers=headers) as r:
                reply = Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read())
            return reply, before, await self.counts()

        return self.run(go())

    def fuzz(self, req: Req) -> None:
        check(self, req, *self.send(req))

    def fresh(self, issuer: str = "gca") -> str:
        """The serial of a new, good certificate."""

        async def go() -> str:
            record, _ = await self.ca.issue_with_generated_key(issuer=issuer, profile="citizen-signing", subject=HOLDER,
                                                               actor="test", key_type=KeyType.EC_P256)  # fmt: skip
            return record.serial_hex

        return self.run(go())


def make_csr(holder: str, name: str = "王大明") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"), x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.SERIAL_NUMBER, holder)])  # fmt: skip
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def _start(database_url: str, runner: asyncio.Runner) -> Env:
    pool = await db.create_pool(database_url, min_size=1, max_size=10)
    async with pool.acquire() as conn:
        await reset_database(conn)
    clock = FakeClock()
    vault = KeyVault(Passphrase(TEST_PASSPHRASE), scrypt_n_log2=TEST_SCRYPT_N_LOG2)
    urls = PublicURLs(BASE_URL)
    await init_pki(pool, vault, clock=clock, urls=urls, actor="test", root_key_type=KeyType.EC_P384,
                   issuers=[IssuerSpec(n, key_type=KeyType.EC_P256, ocsp_key_type=KeyType.EC_P256, crl_partitions=4)
                            for n in ISSUERS])  # fmt: skip
    ca = CertificateAuthority(pool, vault, clock=clock, urls=urls)
    serials: dict[str, list[str]] = {}
    for issuer in ISSUERS:
        serials[issuer] = []
        for _ in range(12):
            record, _ = await ca.issue_with_generated_key(issuer=issuer, profile="citizen-signing", subject=HOLDER,
                                                          actor="test", key_type=KeyType.EC_P256)  # fmt: skip
            serials[issuer].append(record.serial_hex)
    token = make_token()
    async with pool.acquire() as conn:
        token_id = await db.insert_token(conn, name="fuzz", role=Role.OPERATOR.value, secret_hash=token.secret_hash,
                                         now=clock.now())  # fmt: skip
    server = TestServer(build_admin_app(pool, ca, clock, limiter=FailureLimiter(limit=10**9)))
    await server.start_server()
    csrs = [make_csr(f"{4200 + i:016d}") for i in range(4)]
    return Env(runner, pool, ca, server, ClientSession(), token.text(token_id), serials, csrs)


@pytest.fixture(scope="module")
def env(database_url: str, _migrated: None) -> Iterator[Env]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        e = runner.run(_start(database_url, runner))
        try:
            yield e
        finally:

            async def stop() -> None:
                await e.http.close()
                await e.server.close()
                await e.pool.close()

            runner.run(stop())


# Known bugs --------------------------------------------------------------------------------


def known_bugs(req: Req) -> set[str]:
    """The known, still open bugs this request may run into (each pinned by a strict xfail
    test_bug_* below); the properties skip only what is listed here. None is open now: the
    test_bug_* tests below are the regression tests of the ones fixed."""
    return set()


# The properties ----------------------------------------------------------------------------


def check_problem(problem: Any, status: int, note: str) -> None:
    assert isinstance(problem, dict), note
    assert isinstance(problem.get("type"), str) and problem["type"].startswith(PROBLEM_PREFIX), note
    assert isinstance(problem.get("title"), str) and problem["title"], note
    assert problem.get("status") == status and type(problem["status"]) is int, note
    assert isinstance(problem.get("detail"), str) and problem["detail"], note


def check(env: Env, req: Req, reply: Reply, before: tuple[int, ...], after: tuple[int, ...]) -> None:
    """What every answer must satisfy, whatever was sent."""
    status, headers, raw = reply
    note = f"{req} -> {status}: {raw[:600]!r}"
    bugs = known_bugs(req)
    assert b"Traceback (most recent call last)" not in raw and b'File "/' not in raw, note
    # An operator token on an address that is never rate-limited: a 401 or 429 is a broken harness.
    assert status not in (401, 429), note
    env.stats[f"{status // 100}xx"] += 1
    delta = tuple(a - b for a, b in zip(after, before, strict=True))
    if status >= 400:
        if status >= 500:
            assert bugs, f"a 5xx: {note}"
            env.stats["known bug"] += 1
        assert headers.get("content-type", "").split(";")[0] == "application/problem+json", note
        check_problem(orjson.loads(raw), status, note)
        assert delta == (0, 0, 0, 0), (
            f"a refused request left rows behind {dict(zip(TABLES, delta, strict=True))}: {note}"
        )
        return
    assert 200 <= status < 300, note
    assert headers.get("content-type", "").split(";")[0] == "application/json", note
    body = orjson.loads(raw)
    k = 1 if req.key is not None else 0
    if req.method == "GET":
        expected = (0, 0, 0, 0)
    elif req.template == "/v1/certificates":
        assert status == 201 and body["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----"), note
        expected = (1, 1, 1, k)
    elif req.template == BATCH:
        n, failed, results = body["revoked"], body["failed"], body["results"]
        assert n + failed == len(results) == len(req.value["items"]), note
        assert status == (200 if failed == 0 else 207), note
        assert [r["index"] for r in results] == list(range(len(results))), note
        for r in results:
            if r["ok"]:
                assert r["certificate"]["status"] == "revoked", note
                continue
            problem = r["problem"]
            if problem.get("status", 0) >= 500:  # a server failure reported for one item
                assert bugs, f"an item failed with a 5xx: {note}"
                env.stats["known bug"] += 1
            check_problem(problem, problem.get("status"), note)
        expected = (0, n, n, (n + 1) * k)  # a key per revoked item, and one binding the batch
    else:  # revoke, suspend, resume
        assert status == 200, note
        expected = (0, 1, 1, k)
    assert delta == expected, f"rows written {dict(zip(TABLES, delta, strict=True))}, expected {expected}: {note}"


# Strategies --------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r"\{(\w+)\}")


def _params(op: dict[str, Any], where: str) -> list[dict[str, Any]]:
    return [p for p in op.get("parameters", []) if p["in"] == where]


def path_strategy(env: Env, template: str, op: dict[str, Any]) -> st.SearchStrategy[str]:
    """Concrete paths: known issuers and serials mostly, anything the documented pattern allows too."""
    names = _PATH_PARAM.findall(template)
    by_name = {p["name"]: p for p in _params(op, "path")}
    assert set(names) == set(by_name), f"{template}: path parameters and the document disagree"
    known = {"issuer": [*ISSUERS, "root"], "serial": [s for v in env.serials.values() for s in v]}
    parts = {}
    for n in names:
        pattern = st.from_regex(by_name[n]["schema"]["pattern"], fullmatch=True)
        parts[n] = st.sampled_from(known[n]) | pattern if n in known else pattern
    return st.fixed_dictionaries(parts).map(lambda v: _PATH_PARAM.sub(lambda m: v[m.group(1)], template))


def _field_names(schema: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(schema, dict):
        out |= set(schema.get("properties", {}))
        for v in schema.values():
            out |= _field_names(v)
    elif isinstance(schema, list):
        for v in schema:
            out |= _field_names(v)
    return out


FIELD_NAMES = sorted(_field_names(DOC["paths"]) | {"actor", "status", "serial", "der", "idempotency_key"})

# Values that break parsers: extreme times, non-ASCII digits, NUL, huge numbers, wrong types.
NASTY = [
    None, True, False, 0, -1, 1, 6, 8, 11, 2**31, 2**63 - 1, -(2**63), 2**64, 10**30, 1.5, -0.0, 1e308, "", " ",
    "\x00", "a\x00", "\u200b", "keyCompromise", "KEY_COMPROMISE", "certificateHold", "removeFromCRL", "7", "007",
    "１", "²", "2026-04-30T00:00:00Z", "2026-04-30T00:00:00", "2026-05-02T00:00:00+00:00", "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-02-30T00:00:00Z", "now", "moica", "root",
    "ABCDEF", "0", "-1", "0x10", "ff:ff", "F" * 41, "王小明", "\ud7ff", "citizen-signing", [], {}, [[]], {"a": None},
]  # fmt: skip

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=30)
    | st.text(st.characters(categories=["Cs", "Cc", "Nd", "No"]), max_size=4)  # lone surrogates, NUL, digits
    | st.sampled_from(NASTY)
)
_keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
JSON = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(_keys, c, max_size=4), max_leaves=12)


def encode_json(value: Any, ascii_only: bool) -> bytes:
    """Any value as JSON text (huge integers, NaN and lone surrogates included: the server must
    refuse what is not JSON, not fail on it)."""
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


# Keys that are accepted (fresh: hypothesis repeats what it draws, and a repeated key would be a
# replay) or refused (empty, too long, a control character).
IDEMPOTENCY_KEYS = st.none() | st.builds(lambda: str(uuid.uuid4())) | st.sampled_from(["", "a\tb", "k" * 256])


def valid_body(env: Env, template: str) -> dict[str, Any]:
    """A body the operation accepts (the certificate's state aside)."""
    if template.endswith("/revoke"):
        return {"reason": "keyCompromise", "invalidity_date": "2026-05-01T00:00:00Z"}
    if template.endswith(("/suspend", "/resume")):
        return {}
    if template == "/v1/certificates":
        return {"issuer": "moica", "profile": "citizen-signing", "csr": env.csrs[0], "email": "a@example.tw",
                "validity_days": 365}  # fmt: skip
    if template == BATCH:
        return {"items": [{"issuer": "moica", "serial": env.serials["moica"][0], "reason": "superseded",
                           "invalidity_date": "2026-05-01T00:00:00Z"}], "reason": "affiliationChanged"}  # fmt: skip
    raise AssertionError(f"no valid body known for {template}: add one")


@st.composite
def mutated(draw: st.DrawFn, env: Env, template: str) -> dict[str, Any]:
    """A valid body with one field replaced, removed or added (in an item, for a batch)."""
    body = valid_body(env, template)
    target: dict[str, Any] = body
    if "items" in body and draw(st.booleans()):
        target = body["items"][0]
    how = draw(st.sampled_from(["replace", "remove", "add"]) if target else st.just("add"))
    if how == "add":
        target[draw(_keys.filter(lambda k: k not in target))] = draw(JSON)
    else:
        name = draw(st.sampled_from(sorted(target)))
        if how == "remove":
            del target[name]
        else:
            target[name] = draw(st.sampled_from(NASTY) | JSON)
    return body


CONTENT_TYPES = st.sampled_from([
    None, "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
    "APPLICATION/JSON", "application/problem+json", "text/plain", "text/json", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/octet-stream", "", "application/json;;;", "*/*",
]) | st.text(alphabet=string.ascii_letters + string.digits + "/;=+-. ", max_size=40)  # fmt: skip
RAW = st.binary(max_size=300) | st.text(max_size=100).map(lambda s: s.encode()) | st.sampled_from([
    b"{", b"}", b"null", b"[]", b'"x"', b"1", b"\xef\xbb\xbf{}", b"{}\x00", b'{"reason": 1e999}', b"[" * 5000,
    b'{"a":' * 2000, b"\xff\xfe{\x00}\x00", b"reason=keyCompromise", b"{}" + b" " * (70 * 1024),
    b'{"reason": "keyCompromise", "reason": "superseded"}', b'{"items": []}', b'{"items": [{}]}',
])  # fmt: skip


def _datetimes() -> st.SearchStrategy[str]:
    """ISO 8601 texts anywhere datetime can hold, with any offset (or none)."""
    offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
        lambda m: ("+" if m >= 0 else "-") + f"{abs(m) // 60:02d}:{abs(m) % 60:02d}"
    )
    moments = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59))
    return st.builds(lambda d, o: d.isoformat() + o, moments, st.sampled_from(["Z", ""]) | offsets)


def _cursor(value: Any, pad: bool) -> str:
    text = base64.urlsafe_b64encode(encode_json(value, True)).decode()
    return text if pad else text.rstrip("=")


_CURSOR_KEYS = st.sampled_from(["issuer_id", "serial", "id"]) | st.text(max_size=5)
_CURSOR_VALUES = st.integers() | st.integers(0, 2**64) | st.text(max_size=20) | st.sampled_from(NASTY)
CURSORS = st.builds(_cursor, st.dictionaries(_CURSOR_KEYS, _CURSOR_VALUES, max_size=3) | JSON, st.booleans())
_QUERY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
QUERY_SPECIALS = [
    "²", "١٠", "１０", "0", "1", "1000", "1001", "00001", " 5", "good", "revoked", "suspended", "GOOD", "moica", "gca",
    "root", "token:fuzz", "test", "0000000111729553", "٠٠٠٠٠٠٠١١١٧٢٩٥٥٣", "ABCDEF", "0x1", "\x00", "",
]  # fmt: skip
QUERY_VALUES = (
    _QUERY_TEXT
    | st.text(st.characters(categories=["Nd", "No", "Cc"]), min_size=1, max_size=4)
    | st.integers(-(10**30), 10**30).map(str)
    | st.sampled_from(QUERY_SPECIALS)
    | _datetimes()
    | CURSORS
)


def _valid_query_values(env: Env) -> dict[str, st.SearchStrategy[str]]:
    """Values each documented parameter accepts, so that fuzzing also gets past validation."""
    times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
        lambda d: d.isoformat() + "Z"
    )
    return {
        "holder": st.sampled_from([HOLDER.holder_id, "0000000000000000"]),
        "issuer": st.sampled_from([*ISSUERS, "root"]),
        "status": st.sampled_from(["good", "suspended", "revoked"]),
        "limit": st.integers(1, 1000).map(str),
        "actor": st.sampled_from(["token:fuzz", "test"]),
        "serial": st.sampled_from([s for v in env.serials.values() for s in v]),
        "since": times,
        "until": times,
    }


def query_strategy(env: Env, op: dict[str, Any]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Documented parameter names mostly (with valid values half the time), any name too, any values."""
    names = [p["name"] for p in _params(op, "query")]
    valid = _valid_query_values(env)
    pair = st.tuples(_QUERY_TEXT, QUERY_VALUES)
    if names:
        documented = st.sampled_from(names).flatmap(
            lambda n: st.tuples(st.just(n), (valid[n] | QUERY_VALUES) if n in valid else QUERY_VALUES)
        )
        pair = documented | documented | documented | pair
    return st.lists(pair, max_size=5)


# The fuzzing -------------------------------------------------------------------------------


def test_every_route_is_documented_and_fuzzed(env: Env) -> None:
    """The fuzzing is driven by the document: a route missing from it would go unfuzzed."""
    app = build_admin_app(env.pool, env.ca, FakeClock())
    served = {
        (r.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", r.resource.canonical))
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert served == {(m, p) for m, p, _ in OPERATIONS}
    assert {op_id(o) for o in WITH_BODY} == {f"POST {p}" for m, p, _ in OPERATIONS if m == "POST"}


def test_every_documented_operation_accepts_a_valid_request(env: Env) -> None:
    """A valid request succeeds on every operation: the refusals below are not the harness's doing."""
    a, b, c = (env.fresh("moica") for _ in range(3))
    cert = "/v1/certificates/{issuer}/{serial}"
    requests: dict[tuple[str, str], tuple[str, list[tuple[str, str]] | None, dict[str, Any] | None]] = {
        ("GET", "/v1/openapi.json"): ("/v1/openapi.json", None, None),
        ("GET", "/v1/issuers"): ("/v1/issuers", None, None),
        ("GET", cert): (f"/v1/certificates/moica/{a}", None, None),
        ("GET", "/v1/certificates"): ("/v1/certificates", [("issuer", "moica"), ("status", "good"), ("limit", "3")],
                                      None),
        ("GET", "/v1/audit"): ("/v1/audit", [("issuer", "moica"), ("since", "2026-01-01T00:00:00Z"), ("limit", "3")],
                               None),
        ("POST", cert + "/suspend"): (f"/v1/certificates/moica/{a}/suspend", None, {}),
        ("POST", cert + "/resume"): (f"/v1/certificates/moica/{a}/resume", None, {}),
        ("POST", cert + "/revoke"): (f"/v1/certificates/moica/{b}/revoke", None, valid_body(env, cert + "/revoke")),
        ("POST", "/v1/certificates"): ("/v1/certificates", None, valid_body(env, "/v1/certificates")),
        ("POST", BATCH): (BATCH, None, {"items": [{"issuer": "moica", "serial": c}], "reason": "superseded"}),
    }  # fmt: skip
    assert set(requests) == {(m, p) for m, p, _ in OPERATIONS}, "a documented operation has no valid example here"
    env.stats.clear()
    for method, template, _ in OPERATIONS:
        path, query, body = requests[(method, template)]
        req = Req(method, template, path, query=query, key=f"valid {template}" if method == "POST" else None)
        if body is not None:
            req.value, req.raw, req.content_type = body, orjson.dumps(body), "application/json"
        reply, before, after = env.send(req)
        assert 200 <= reply.status < 300, (req, reply)
        check(env, req, reply, before, after)
    assert env.stats["2xx"] == len(OPERATIONS)


@pytest.mark.parametrize("operation", WITH_BODY, ids=op_id)
def test_arbitrary_json_bodies(env: Env, operation: tuple[str, str, Any]) -> None:
    method, template, op = operation
    env.stats.clear()

    @FUZZ
    @given(path=path_strategy(env, template, op), value=JSON | st.dictionaries(_keys, JSON, max_size=6),
           ascii_only=st.booleans(), key=IDEMPOTENCY_KEYS)  # fmt: skip
    def one(path: str, value: Any, ascii_only: bool, key: str | None) -> None:
        env.fuzz(Req(method, template, path, value=value, raw=encode_json(value, ascii_only),
                     content_type="application/json", key=key))  # fmt: skip

    one()
    assert env.stats["4xx"] > 0, env.stats


@pytest.mark.parametrize("operation", WITH_BODY, ids=op_id)
def test_valid_bodies_with_one_field_mutated(env: Env, operation: tuple[str, str, Any]) -> None:
    method, template, op = operation
    env.stats.clear()

    @FUZZ
    @given(path=path_strategy(env, template, op), body=mutated(env, template), ascii_only=st.booleans(),
           key=IDEMPOTENCY_KEYS)  # fmt: skip
    def one(path: str, body: dict[str, Any], ascii_only: bool, key: str | None) -> None:
        env.fuzz(Req(method, template, path, value=body, raw=encode_json(body, ascii_only),
                     content_type="application/json", key=key))  # fmt: skip

    one()
    assert env.stats["4xx"] > 0, env.stats


@pytest.mark.parametrize("operation", WITH_BODY, ids=op_id)
def test_raw_bytes_and_content_types(env: Env, operation: tuple[str, str, Any]) -> None:
    method, template, op = operation
    env.stats.clear()

    @FUZZ
    @given(path=path_strategy(env, template, op), raw=RAW, content_type=CONTENT_TYPES)
    def one(path: str, raw: bytes, content_type: str | None) -> None:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = _NO_BODY
        env.fuzz(Req(method, template, path, value=value, raw=raw, content_type=content_type))

    one()
    assert env.stats["4xx"] > 0, env.stats


@pytest.mark.parametrize("operation", GETS, ids=op_id)
def test_random_query_parameters(env: Env, operation: tuple[str, str, Any]) -> None:
    method, template, op = operation
    env.stats.clear()

    @FUZZ
    @given(path=path_strategy(env, template, op), query=query_strategy(env, op))
    def one(path: str, query: list[tuple[str, str]]) -> None:
        env.fuzz(Req(method, template, path, query=query))

    one()
    assert env.stats["2xx"] > 0, env.stats
    if _params(op, "query"):
        assert env.stats["4xx"] > 0, env.stats


# Bugs the fuzzing found, now fixed: their regression tests -----------------------------------


def _refused(env: Env, req: Req) -> tuple[Reply, dict[str, Any]]:
    """Send; the request must be refused with a 4xx problem and leave nothing behind."""
    reply, before, after = env.send(req)
    assert 400 <= reply.status < 500, reply
    problem = orjson.loads(reply.raw)
    check_problem(problem, reply.status, repr(reply))
    assert before == after
    return reply, problem


def _json_req(method: str, template: str, path: str, body: Any) -> Req:
    return Req(method, template, path, value=body, raw=orjson.dumps(body), content_type="application/json")


@pytest.mark.parametrize("template", ["/v1/certificates", "/v1/audit"])
def test_bug_limit_with_a_non_ascii_digit_is_refused(env: Env, template: str) -> None:
    _, problem = _refused(env, Req("GET", template, template, query=[("limit", "²")]))
    assert problem["type"] == PROBLEM_PREFIX + "validation"


def test_bug_holder_with_non_ascii_digits_is_refused(env: Env) -> None:
    _refused(env, Req("GET", "/v1/certificates", "/v1/certificates", query=[("holder", "٠" * 7 + "١١١٧٢٩٥٥٣")]))


_OVERFLOWING_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize(("where", "when"), [("audit since", _OVERFLOWING_TIMES[0]), ("audit until", _OVERFLOWING_TIMES[1]),
                                           ("revoke", _OVERFLOWING_TIMES[0]), ("batch", _OVERFLOWING_TIMES[1])])  # fmt: skip
def test_bug_times_out_of_range_are_refused(env: Env, where: str, when: str) -> None:
    serial = env.fresh()
    if where.startswith("audit"):
        req = Req("GET", "/v1/audit", "/v1/audit", query=[(where.split()[1], when)])
    elif where == "revoke":
        req = _json_req("POST", "/v1/certificates/{issuer}/{serial}/revoke", f"/v1/certificates/gca/{serial}/revoke",
                        {"invalidity_date": when})  # fmt: skip
    else:
        req = _json_req("POST", BATCH, BATCH, {"items": [{"issuer": "gca", "serial": serial, "invalidity_date": when}]})
    _, problem = _refused(env, req)
    assert problem["type"] == PROBLEM_PREFIX + "validation"


@pytest.mark.parametrize("where", ["certificates issuer", "audit issuer", "audit actor", "issue", "batch"])
def test_bug_nul_characters_are_refused(env: Env, where: str) -> None:
    if where == "issue":
        body = {**valid_body(env, "/v1/certificates"), "issuer": "mo\x00ica", "csr": env.csrs[1]}
        _refused(env, _json_req("POST", "/v1/certificates", "/v1/certificates", body))
    elif where == "batch":
        req = _json_req("POST", BATCH, BATCH, {"items": [{"issuer": "mo\x00ica", "serial": env.fresh()}]})
        reply, before, after = env.send(req)
        assert before == after and reply.status < 500, reply
        if reply.status == 207:
            assert orjson.loads(reply.raw)["results"][0]["problem"]["status"] < 500, reply
    else:
        route, name = where.split()
        _refused(env, Req("GET", f"/v1/{route}", f"/v1/{route}", query=[(name, "mo\x00ica")]))


def _cursor_of(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


@pytest.mark.parametrize(("template", "cursor"), [("/v1/certificates", {"issuer_id": 40000, "serial": "1"}),
                                                  ("/v1/audit", {"id": 2**63})])  # fmt: skip
def test_bug_cursor_numbers_out_of_range_are_refused(env: Env, template: str, cursor: dict[str, Any]) -> None:
    _, problem = _refused(env, Req("GET", template, template, query=[("cursor", _cursor_of(cursor))]))
    assert problem["type"] == PROBLEM_PREFIX + "validation"


@pytest.mark.parametrize("route", ["revoke", "issuers"])
def test_bug_unknown_query_parameters_are_refused_on_every_route(env: Env, route: str) -> None:
    if route == "issuers":
        _refused(env, Req("GET", "/v1/issuers", "/v1/issuers", query=[("colour", "red")]))
        return
    serial = env.fresh()
    _refused(env, Req("POST", "/v1/certificates/{issuer}/{serial}/revoke", f"/v1/certificates/gca/{serial}/revoke",
                      query=[("reason", "keyCompromise")]))  # fmt: skip
    assert env.run(env.ca.get("gca", serial)).status.value == "good"


def test_a_single_revocation_refuses_an_invalidity_date_of_the_wrong_type(env: Env) -> None:
    """The reference for the next test: the single route refuses these."""
    serial = env.fresh()
    for bad in (0, "", False, []):
        _refused(env, _json_req("POST", "/v1/certificates/{issuer}/{serial}/revoke",
                                f"/v1/certificates/gca/{serial}/revoke", {"invalidity_date": bad}))  # fmt: skip


@pytest.mark.parametrize("bad", [0, ""], ids=repr)
def test_bug_batch_refuses_an_invalidity_date_of_the_wrong_type(env: Env, bad: Any) -> None:
    serial = env.fresh()
    _refused(env, _json_req("POST", BATCH, BATCH, {"items": [{"issuer": "gca", "serial": serial,
                                                              "invalidity_date": bad}]}))  # fmt: skip
    assert env.run(env.ca.get("gca", serial)).status.value == "good"
