"""``certstatus admin issue|revoke|suspend|resume|show|list|audit|revoke-batch`` as an operator
runs them: the CLI as a subprocess, against the real admin API (``build_admin_app`` on a real
port, real PostgreSQL), plus the client class directly."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca_core.clock import FakeClock
from ca_core.lifecycle import CertificateAuthority, certificate_pem
from ca_core.model import CertRecord, CertStatus, KeyType, RevocationReason
from ca_core.profiles import HolderSubject
from ca_core.storage import postgres as db
from ca_core.tokens import Role, make_token
from responder.admin import admin_ssl_context, build_admin_app
from responder.admin_client import AdminAPIError, AdminClient, AdminUnreachable

pytestmark = pytest.mark.slow

HOLDER = HolderSubject("王小明", "0000000111729553")
OTHER = HolderSubject("陳美麗", "0000000222845561")


@dataclasses.dataclass
class Result:
    code: int
    stdout: str
    stderr: str


Run = Callable[..., Awaitable[Result]]


@dataclasses.dataclass
class Seen:
    """What the server saw of one request."""

    method: str
    path_qs: str
    authorization: bool
    idempotency_key: str | None
    peer_cert: bytes | None


@dataclasses.dataclass
class Server:
    url: str
    seen: list[Seen]


def record_requests(app: web.Application) -> list[Seen]:
    seen: list[Seen] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen.append(Seen(request.method, request.path_qs, "Authorization" in request.headers,
                         request.headers.get("Idempotency-Key"), peer))  # fmt: skip

    app.on_response_prepare.append(record)
    return seen


@pytest.fixture
async def admin(pool: asyncpg.Pool, ca: CertificateAuthority, clock: FakeClock) -> AsyncIterator[Server]:
    app = build_admin_app(pool, ca, clock)
    seen = record_requests(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield Server(f"http://127.0.0.1:{server.port}", seen)
    await server.close()


@pytest.fixture
async def tokens(pool: asyncpg.Pool, clock: FakeClock, tmp_path: Path) -> dict[Role, str]:
    """A token per role (named after the role), each also in tmp_path/<role>.token (0600)."""
    out = {}
    for role in Role:
        token = make_token()
        async with pool.acquire() as conn:
            token_id = await db.insert_token(conn, name=role.value, role=role.value, secret_hash=token.secret_hash,
                                             now=clock.now())  # fmt: skip
        out[role] = token.text(token_id)
        path = tmp_path / f"{role.value}.token"
        path.write_text(out[role] + "\n")
        path.chmod(0o600)
    return out


@pytest.fixture
def cli(admin: Server, tokens: dict[Role, str], tmp_path: Path) -> Run:
    """Run ``certstatus ARGS`` without blocking the loop the server runs on. The environment
    names the server (CERTSTATUS_ADMIN_URL) but no database and no token: each call passes
    --token-file or sets CERTSTATUS_ADMIN_TOKEN. No token ever appears in the output."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("CERTSTATUS_") and k not in ("DATABASE_URL", "REDIS_URL")}  # fmt: skip
    base.update(CERTSTATUS_DATA_DIR=str(tmp_path / "data"), CERTSTATUS_ADMIN_URL=admin.url)

    async def run(*args: str, expect: int | None = 0, env: dict[str, str | None] | None = None,
                  stdin: bytes | None = None) -> Result:  # fmt: skip
        e = dict(base)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "responder", *args, env=e, cwd=tmp_path, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(stdin or b""), 60)
        result = Result(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())
        assert expect is None or result.code == expect, (
            f"exit {result.code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert "Traceback" not in result.stdout + result.stderr
        for token in tokens.values():
            assert token.split("_", 2)[2] not in result.stdout + result.stderr
        return result

    return run


def as_(role: Role) -> tuple[str, str]:
    return ("--token-file", f"{role.value}.token")


OPERATOR, OFFICER, AUDITOR = as_(Role.OPERATOR), as_(Role.REGISTRATION_OFFICER), as_(Role.AUDITOR)


def block(stdout: str) -> dict[str, str]:
    """The 'name: value' lines of one certificate."""
    out = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and not line.startswith("-----"):
            out[name.strip()] = value
    return out


def make_csr(holder: HolderSubject) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"), x509.NameAttribute(NameOID.COMMON_NAME, holder.name),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, holder.holder_id)])  # fmt: skip
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


async def issue(ca: CertificateAuthority, holder: HolderSubject = HOLDER, issuer: str = "moica") -> CertRecord:
    record, _ = await ca.issue_with_generated_key(issuer=issuer, profile="citizen-signing", subject=holder,
                                                  actor="test", key_type=KeyType.EC_P256)  # fmt: skip
    return record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Issue, show, suspend, resume, revoke, audit ------------------------------------------------


async def test_a_certificates_life_through_the_cli(
    cli: Run, admin: Server, ca: CertificateAuthority, tmp_path: Path, tokens: dict[Role, str]
) -> None:
    csr = make_csr(HOLDER)
    (tmp_path / "req.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "req.der").write_bytes(csr.public_bytes(serialization.Encoding.DER))

    # Issue (registration officer): name: value lines, then the PEM.
    out = (await cli("admin", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--csr", "req.pem",
                     "--email", "xiaoming@example.tw", "--validity-days", "30", "--idempotency-key", "enrol-1",
                     *OFFICER)).stdout  # fmt: skip
    fields = block(out)
    cert = x509.load_pem_x509_certificate(out[out.index("-----BEGIN CERTIFICATE-----") :].encode())
    serial = fields["serial"]
    assert cert.serial_number == int(serial, 16)
    assert fields["status"] == "good" and fields["issuer"] == "moica" and fields["holder"] == HOLDER.holder_id
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["xiaoming@example.tw"]
    assert admin.seen[-1].idempotency_key == "enrol-1"

    # The same key again: the first certificate, not a second one; --out gets its PEM.
    again = orjson.loads((await cli("admin", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--csr",
                                    "req.pem", "--validity-days", "30", "--email", "xiaoming@example.tw",
                                    "--idempotency-key", "enrol-1", "--out", "me.pem", "--json",
                                    *OFFICER)).stdout)  # fmt: skip
    assert again["serial"] == serial and again["status"] == "good"
    assert x509.load_pem_x509_certificate((tmp_path / "me.pem").read_bytes()) == cert
    assert again["certificate_pem"] == (tmp_path / "me.pem").read_text()
    # A DER CSR is sent as PEM; no key, so a new certificate.
    der = orjson.loads((await cli("admin", "issue", "--issuer", "gca", "--profile", "citizen-signing", "--csr",
                                  "req.der", "--json", *OFFICER)).stdout)  # fmt: skip
    assert der["issuer"] == "gca" and der["serial"] != serial

    # Show, in both forms; the serial may be written with colons; the token may come from the environment.
    colons = ":".join(serial[i : i + 2] for i in range(0, len(serial), 2))
    shown, shown_json = await asyncio.gather(
        cli("admin", "show", "moica", colons, env={"CERTSTATUS_ADMIN_TOKEN": tokens[Role.AUDITOR]}),
        cli("admin", "show", "moica", serial, "--json", *AUDITOR),
    )
    assert [s.path_qs for s in admin.seen[-2:]] == [f"/v1/certificates/moica/{serial}"] * 2
    assert block(shown.stdout)["status"] == "good"
    assert block(shown.stdout)["subject"] == "serialNumber=0000000111729553,CN=王小明,C=TW"
    assert orjson.loads(shown_json.stdout) == (await ca.get("moica", serial)).to_json()

    # Suspend and resume (registration officer).
    suspended = block((await cli("admin", "suspend", "moica", serial, *OFFICER)).stdout)
    assert (suspended["status"], suspended["reason"]) == ("suspended", "certificateHold")
    assert (await ca.get("moica", serial)).status is CertStatus.SUSPENDED
    resumed = orjson.loads((await cli("admin", "resume", "moica", serial, "--json", *OFFICER)).stdout)
    assert resumed["status"] == "good" and resumed["reason"] is None
    assert (await ca.get("moica", serial)).status is CertStatus.GOOD

    # Revoke (operator), with a reason, an invalidity date and a key; a repeat replays it.
    args = ("admin", "revoke", "moica", serial, "--reason", "keyCompromise", "--invalidity-date",
            "2026-04-30T23:58:00Z", "--idempotency-key", "revoke-1", *OPERATOR)  # fmt: skip
    revoked = block((await cli(*args)).stdout)
    assert (revoked["status"], revoked["reason"]) == ("revoked", "keyCompromise")
    assert revoked["invalidity date"] == "2026-04-30 23:58:00Z"
    replay = orjson.loads((await cli(*args, "--json")).stdout)
    record = await ca.get("moica", serial)
    assert replay == record.to_json() and record.reason is RevocationReason.KEY_COMPROMISE
    assert (await cli("admin", "revoke", "moica", serial, *OPERATOR, expect=1)).stderr.startswith(
        "error: Not possible in the certificate's state: "
    )  # without the key, a second revocation is refused

    # The audit log of that certificate: who did what, oldest first.
    audit_table, audit_json = await asyncio.gather(
        cli("admin", "audit", "--issuer", "moica", "--serial", serial, *AUDITOR),
        cli("admin", "audit", "--issuer", "moica", "--serial", serial, "--json", *AUDITOR),
    )
    table = audit_table.stdout.splitlines()
    assert table[0].split() == ["id", "at", "actor", "action", "issuer", "serial", "before", "after"]
    assert [line.split()[3:6] + line.split()[6:] for line in table[2:]] == [
        ["token:registration-officer", "certificate.issue", "moica", serial, "good"],
        ["token:registration-officer", "certificate.suspend", "moica", serial, "good", "suspended"],
        ["token:registration-officer", "certificate.resume", "moica", serial, "suspended", "good"],
        ["token:operator", "certificate.revoke", "moica", serial, "good", "revoked"],
    ]
    entries = orjson.loads(audit_json.stdout)
    assert [e["action"] for e in entries["entries"]] == ["certificate.issue", "certificate.suspend",
                                                         "certificate.resume", "certificate.revoke"]  # fmt: skip
    assert entries["next_cursor"] is None and entries["entries"][-1]["idempotency_key"] == "revoke-1"
    assert all(s.authorization for s in admin.seen)


# Search and audit with cursors ----------------------------------------------------------------


async def test_list_and_audit_follow_cursors_with_all(
    cli: Run, admin: Server, ca: CertificateAuthority, clock: FakeClock, pool: asyncpg.Pool
) -> None:
    early = [await issue(ca) for _ in range(2)]
    clock.advance(dt.timedelta(hours=1))
    late = [await issue(ca) for _ in range(3)]
    other = await issue(ca, OTHER, issuer="gca")
    mine = sorted(early + late, key=lambda r: r.serial)
    await ca.suspend("moica", late[0].serial, actor="test")

    t1 = (clock.now() - dt.timedelta(seconds=1)).isoformat()
    one, table, by_status, by_issuer, none, since, until, nobody, usage = await asyncio.gather(
        cli("admin", "list", "--holder", HOLDER.holder_id, "--limit", "2", *AUDITOR),
        cli("admin", "list", "--holder", HOLDER.holder_id, "--all", *AUDITOR),
        cli("admin", "list", "--status", "suspended", "--json", *AUDITOR),
        cli("admin", "list", "--issuer", "gca", "--json", *AUDITOR),
        cli("admin", "list", "--status", "revoked", *AUDITOR),
        cli("admin", "audit", "--since", t1, "--json", *AUDITOR),
        cli("admin", "audit", "--until", t1, "--issuer", "moica", "--json", *AUDITOR),
        cli("admin", "audit", "--actor", "nobody", *AUDITOR),
        cli("admin", "audit", "--serial", late[0].serial_hex, *AUDITOR, expect=2),
    )

    # One page: two rows, and a word on stderr that more match; --all: every row and no such word.
    rows = one.stdout.splitlines()
    assert rows[0].split() == ["issuer", "serial", "profile", "status", "subject", "not", "after"]
    assert [r.split()[1] for r in rows[2:]] == [r.serial_hex for r in mine[:2]]
    assert "more certificates match: --all" in one.stderr
    assert [r.split()[1] for r in table.stdout.splitlines()[2:]] == [r.serial_hex for r in mine]
    assert table.stderr == ""
    assert re.search(rf"\b{late[0].serial_hex}\s+citizen-signing\s+suspended\s", table.stdout)

    # Filters reach the API.
    assert [c["serial"] for c in orjson.loads(by_status.stdout)["certificates"]] == [late[0].serial_hex]
    gca = orjson.loads(by_issuer.stdout)["certificates"]
    assert other.serial_hex in [c["serial"] for c in gca] and {c["issuer"] for c in gca} == {"gca"}
    assert none.stdout == "no certificates match\n"
    assert [(e["action"], e["serial"]) for e in orjson.loads(since.stdout)["entries"]] == (
        [("certificate.issue", r.serial_hex) for r in late]
        + [("certificate.issue", other.serial_hex), ("certificate.suspend", late[0].serial_hex)]
    )
    issued_before = [e["serial"] for e in orjson.loads(until.stdout)["entries"] if e["action"] == "certificate.issue"]
    assert issued_before == [r.serial_hex for r in early]
    assert nobody.stdout == "no audit entries match\n"
    assert "--serial needs --issuer" in usage.stderr

    # --all follows the cursors: every certificate once, in order, in pages of --limit.
    before = len(admin.seen)
    every = orjson.loads((await cli("admin", "list", "--holder", HOLDER.holder_id, "--limit", "2", "--all", "--json",
                                    *AUDITOR)).stdout)  # fmt: skip
    assert [c["serial"] for c in every["certificates"]] == [r.serial_hex for r in mine]
    assert every["next_cursor"] is None
    pages = admin.seen[before:]
    # No empty page at the end: the API gives a cursor only when there is more.
    assert len(pages) == -(-len(mine) // 2) and all(p.path_qs.startswith("/v1/certificates?") for p in pages)
    assert "cursor=" not in pages[0].path_qs and all("cursor=" in p.path_qs for p in pages[1:])
    # And so for the audit log.
    async with pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM audit_log WHERE actor = 'test' ORDER BY id")]
    assert len(ids) > 5
    before = len(admin.seen)
    all_entries = orjson.loads((await cli("admin", "audit", "--actor", "test", "--limit", "3", "--all", "--json",
                                          *AUDITOR)).stdout)  # fmt: skip
    assert [e["id"] for e in all_entries["entries"]] == ids
    assert len(admin.seen) - before == -(-len(ids) // 3)


# Errors ------------------------------------------------------------------------------------------


async def test_errors_are_one_line_with_the_problem_and_exit_1(
    cli: Run, admin: Server, ca: CertificateAuthority, tmp_path: Path, tokens: dict[Role, str]
) -> None:
    record = await issue(ca)
    serial = record.serial_hex
    # A well-formed token that opens nothing (its secret is not the stored one).
    wrong = tokens[Role.OPERATOR][:-4] + ("AAAA" if not tokens[Role.OPERATOR].endswith("AAAA") else "BBBB")
    (tmp_path / "wrong.token").write_text(wrong)
    (tmp_path / "empty.token").write_text("\n")
    port = free_port()
    (
        unauthorized, garbage, forbidden, not_found, illegal, invalid, json_error, refused, default_url,
    ) = await asyncio.gather(
        cli("admin", "show", "moica", serial, "--token-file", "wrong.token", expect=1),
        cli("admin", "list", env={"CERTSTATUS_ADMIN_TOKEN": "hello"}, expect=1),
        cli("admin", "revoke", "moica", serial, *AUDITOR, expect=1),
        cli("admin", "show", "moica", "ABCDEF0123", *AUDITOR, expect=1),
        cli("admin", "resume", "moica", serial, *OPERATOR, expect=1),
        cli("admin", "revoke", "moica", serial, "--reason", "lost it", *OPERATOR, expect=1),
        cli("admin", "show", "gca", serial, "--json", *AUDITOR, expect=1),
        cli("admin", "show", "moica", serial, "--url", f"http://127.0.0.1:{port}", *AUDITOR, expect=1),
        # No URL anywhere: http://CERTSTATUS_ADMIN_HOST:CERTSTATUS_ADMIN_PORT.
        cli("admin", "show", "moica", serial, *AUDITOR,
            env={"CERTSTATUS_ADMIN_URL": None, "CERTSTATUS_ADMIN_PORT": admin.url.rpartition(":")[2]}),
    )  # fmt: skip
    assert unauthorized.stderr == "error: Authentication required: the token is unknown, revoked or wrong\n"
    assert wrong not in unauthorized.stderr + unauthorized.stdout and unauthorized.stdout == ""
    assert garbage.stderr.startswith("error: Authentication required: ")
    assert forbidden.stderr == "error: Not allowed for this role: the auditor role may not revoke\n"
    assert not_found.stderr.startswith("error: Not found: ") and "ABCDEF0123" in not_found.stderr
    assert illegal.stderr.startswith("error: Not possible in the certificate's state: ")
    assert invalid.stderr.startswith("error: Invalid request: ") and "lost it" in invalid.stderr
    assert json_error.stdout == "" and json_error.stderr.startswith("error: Not found: ")
    assert f"http://127.0.0.1:{port}" in refused.stderr and "certstatus admin serve" in refused.stderr
    assert refused.stderr.startswith("error: cannot connect") and "Connection refused" in refused.stderr
    assert block(default_url.stdout)["serial"] == serial
    assert (await ca.get("moica", serial)).status is CertStatus.GOOD  # nothing was changed

    # Wrong settings are usage errors (2), found before any request.
    before = len(admin.seen)
    no_token, unreadable, empty, tls_on_http = await asyncio.gather(
        cli("admin", "show", "moica", serial, expect=2),
        cli("admin", "show", "moica", serial, "--token-file", "missing.token", expect=2),
        cli("admin", "show", "moica", serial, "--token-file", "empty.token", expect=2),
        cli("admin", "show", "moica", serial, "--cacert", "ca.pem", *AUDITOR, expect=2),
    )
    assert "--token-file FILE" in no_token.stderr and "CERTSTATUS_ADMIN_TOKEN" in no_token.stderr
    assert "cannot read the token file missing.token" in unreadable.stderr
    assert "the token file empty.token is empty" in empty.stderr
    assert "are for https URLs" in tls_on_http.stderr
    assert len(admin.seen) == before


async def test_help_answers_where_the_token_comes_from(cli: Run) -> None:
    commands = ("issue", "revoke", "suspend", "resume", "show", "list", "audit", "revoke-batch")
    tokens_given = (("--token", "cst_1_sEcReT"), ("--token=cst_1_sEcReT",), ("--token-file", "cst_1_sEcReT"))
    results = await asyncio.gather(
        *(cli("admin", command, "--help") for command in commands),
        *(cli("admin", "list", *args, expect=2) for args in tokens_given),
    )
    helps, refused = dict(zip(commands, results[: len(commands)], strict=True)), results[len(commands) :]
    for command, help in helps.items():
        for fragment in ("--token-file", "CERTSTATUS_ADMIN_TOKEN", "certstatus admin token create", "--json",
                         "exit status", "CERTSTATUS_ADMIN_URL", "--cacert", "'certstatus admin serve'"):  # fmt: skip
            assert fragment in help.stdout, (command, fragment)
        assert re.search(r"--token(?![-\w])", help.stdout.replace("no --token option", "")) is None
    assert "The exit status is 1 if any failed" in helps["revoke-batch"].stdout
    assert "--all" in helps["list"].stdout and "--all" in helps["audit"].stdout
    issue_help = re.sub(r"-\s+", "-", helps["issue"].stdout)  # argparse breaks lines at hyphens
    assert "certificate profile (citizen-encryption, citizen-signing)" in issue_help  # what the API issues
    # There is no way to put a token on the command line, and one given there is not echoed
    # (argparse alone would take --token as short for --token-file, or print it back).
    for args, result in zip(tokens_given, refused, strict=True):
        assert "sEcReT" not in result.stdout + result.stderr
        assert ("there is no --token option" if args[0] != "--token-file" else "not the token itself") in result.stderr


# Bulk revocation --------------------------------------------------------------------------------


async def test_revoke_batch_reports_each_failure_and_exits_1(
    cli: Run, admin: Server, ca: CertificateAuthority, tmp_path: Path
) -> None:
    a, b, c, d = [await issue(ca) for _ in range(4)]
    await ca.revoke("moica", d.serial, actor="test")
    (tmp_path / "lost.txt").write_text(  # as a spreadsheet exports it: with a byte order mark
        f"\ufeff# cards lost in the mail, batch 7\nmoica {a.serial_hex}\nmoica\t{b.serial_hex} keyCompromise\n\n"
        f"moica FFFFFFFFFF01\nmoica {d.serial_hex}\nmoica,{c.serial_hex},superseded\n"
    )
    args = ("admin", "revoke-batch", "lost.txt", "--reason", "cessationOfOperation", "--idempotency-key", "batch-7")
    out = (await cli(*args, *OPERATOR, expect=1)).stdout.splitlines()
    assert out[0] == "revoked 3 of 5 certificates; 2 failed:"
    assert out[1].split() == ["line", "issuer", "serial", "error"]
    assert out[3].split()[:5] == ["5", "moica", "FFFFFFFFFF01", "Not", "found:"]
    assert out[4].split()[:3] == ["6", "moica", d.serial_hex] and "Not possible in the certificate's state" in out[4]
    assert len(out) == 5
    reasons = {r.serial: (await ca.get("moica", r.serial)).reason for r in (a, b, c)}
    assert reasons == {a.serial: RevocationReason.CESSATION_OF_OPERATION, b.serial: RevocationReason.KEY_COMPROMISE,
                       c.serial: RevocationReason.SUPERSEDED}  # fmt: skip

    # The same key again: the three done are replayed (not refused as already revoked).
    replay = orjson.loads((await cli(*args, "--json", *OPERATOR, expect=1)).stdout)
    assert (replay["revoked"], replay["failed"]) == (3, 2)
    assert [r["index"] for r in replay["results"]] == [0, 1, 2, 3, 4]
    assert [r["ok"] for r in replay["results"]] == [True, True, False, False, True]
    assert replay["results"][2]["problem"]["type"] == "urn:certstatus:problem:not-found"
    assert admin.seen[-1].idempotency_key == "batch-7"

    # JSON on standard input: the output of 'admin list --json' revokes the citizens' certificates
    # it found, not the issuer's OCSP signer that a search by issuer finds too.
    e, f = await issue(ca, OTHER, issuer="gca"), await issue(ca, OTHER, issuer="gca")
    found = orjson.loads((await cli("admin", "list", "--issuer", "gca", "--json", *AUDITOR)).stdout)
    signer = next(c for c in found["certificates"] if c["profile"] == "ocsp-signer")
    done = await cli("admin", "revoke-batch", "-", *OPERATOR, stdin=orjson.dumps(found))
    assert done.stdout == "revoked 2 of 2 certificates\n"
    assert "standard input: left out 1 certificate(s) that are not citizens'" in done.stderr
    assert {(await ca.get("gca", r.serial)).status for r in (e, f)} == {CertStatus.REVOKED}
    assert (await ca.get("gca", signer["serial"])).status is CertStatus.GOOD
    # A list of items, as JSON; a role that may not revoke has the whole batch refused.
    g = await issue(ca)
    items = orjson.dumps([{"issuer": "moica", "serial": g.serial_hex, "reason": "affiliationChanged"}])
    refused = await cli("admin", "revoke-batch", "-", *OFFICER, stdin=items, expect=1)
    assert refused.stderr == "error: Not allowed for this role: the registration-officer role may not revoke\n"
    ok = orjson.loads((await cli("admin", "revoke-batch", "-", "--json", *OPERATOR, stdin=items)).stdout)
    assert (ok["revoked"], ok["failed"], ok["results"][0]["certificate"]["reason"]) == (1, 0, "affiliationChanged")

    # A bad file is refused before anything is sent.
    (tmp_path / "bad.txt").write_text(f"moica {a.serial_hex}\nmoica {b.serial_hex} keyCompromise extra\n")
    (tmp_path / "none.txt").write_text("# nothing\n\n")
    before = len(admin.seen)
    bad, none, missing = await asyncio.gather(
        cli("admin", "revoke-batch", "bad.txt", *OPERATOR, expect=1),
        cli("admin", "revoke-batch", "none.txt", *OPERATOR, expect=1),
        cli("admin", "revoke-batch", "missing.txt", *OPERATOR, expect=1),
    )
    assert "bad.txt line 2: expected 'ISSUER SERIAL [REASON]'" in bad.stderr
    assert "none.txt lists no certificates to revoke" in none.stderr
    assert "cannot read missing.txt" in missing.stderr
    assert len(admin.seen) == before


# TLS --------------------------------------------------------------------------------------------


def server_tls(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1 and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


async def test_https_with_a_private_ca_and_a_client_certificate(
    cli: Run, pool: asyncpg.Pool, ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    record = await issue(ca)
    # An admin client certificate from this CA, registered as an operator's credential.
    client, key = await ca.issue_with_generated_key(issuer="moica", profile="admin-client", actor="test",
                                                    subject=HolderSubject("陳管理", "0000000222333444"),
                                                    key_type=KeyType.EC_P256)  # fmt: skip
    (tmp_path / "ops.pem").write_text(certificate_pem(client))
    (tmp_path / "ops.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))  # fmt: skip
    async with pool.acquire() as conn:
        moica = await db.get_issuer(conn, "moica")
        assert moica is not None
        await db.insert_client_cert(conn, name="ops-desk", role=Role.OPERATOR.value, issuer_id=moica.id,
                                    serial=client.serial, now=clock.now())  # fmt: skip
        trust = [i.certificate for i in await db.list_issuers(conn)]
    server_cert, server_key = server_tls(tmp_path)
    app = build_admin_app(pool, ca, clock)
    seen = record_requests(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=admin_ssl_context(str(server_cert), str(server_key), None,
                                                                              trust))  # fmt: skip
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        trusted = await cli("admin", "show", "moica", record.serial_hex, "--url", url, *AUDITOR,
                            env={"CERTSTATUS_ADMIN_CACERT": str(server_cert)})  # fmt: skip
        # A client certificate and no token: no Authorization header, the certificate is the credential.
        with_cert = await cli("admin", "suspend", "moica", record.serial_hex, "--url", url, "--cacert",
                              str(server_cert), "--cert", "ops.pem", "--key", "ops.key")  # fmt: skip
        untrusted, key_alone = await asyncio.gather(
            cli("admin", "show", "moica", record.serial_hex, "--url", url, *AUDITOR, expect=1),
            cli("admin", "show", "moica", record.serial_hex, "--url", url, "--key", "ops.key", *AUDITOR, expect=2),
        )
    finally:
        await runner.cleanup()
    assert block(trusted.stdout)["status"] == "good"
    assert "is not trusted" in untrusted.stderr and "--cacert" in untrusted.stderr and url in untrusted.stderr
    assert block(with_cert.stdout)["status"] == "suspended"
    assert "--key (CERTSTATUS_ADMIN_KEY) needs --cert" in key_alone.stderr
    assert [(s.method, s.authorization, s.peer_cert is not None) for s in seen] == [
        ("GET", True, False),
        ("POST", False, True),
    ]
    assert seen[1].peer_cert == client.der
    entries = await ca.audit(issuer="moica", serial=record.serial)
    assert (entries[-1].action, entries[-1].actor) == ("certificate.suspend", "cert:ops-desk")


# The client class -----------------------------------------------------------------------------


async def test_the_client_class(
    admin: Server, tokens: dict[Role, str], ca: CertificateAuthority, pool: asyncpg.Pool
) -> None:
    record = await issue(ca)
    async with pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")]
    async with AdminClient(admin.url + "/", token=tokens[Role.AUDITOR]) as client:
        assert "token=set" in repr(client) and tokens[Role.AUDITOR] not in repr(client)
        assert {i["name"] for i in (await client.issuers())["issuers"]} == {"root", "moica", "gca"}
        assert (await client.openapi())["openapi"].startswith("3.1")
        assert (await client.certificate("moica", f"0x{record.serial_hex.lower()}"))["serial"] == record.serial_hex
        with pytest.raises(AdminAPIError) as caught:
            await client.suspend("moica", record.serial)
        e = caught.value
        assert (e.status, e.slug, e.title) == (403, "forbidden", "Not allowed for this role")
        assert e.type == "urn:certstatus:problem:forbidden" and e.detail == "the auditor role may not suspend"
        with pytest.raises(AdminAPIError) as caught:
            await client.certificate("moica", "ABC")
        assert (caught.value.status, caught.value.slug) == (404, "not-found")
        pages = [page async for page in client.pages(client.audit, "entries", limit=2)]
        assert [e["id"] for page in pages for e in page] == ids and len(pages) == -(-len(ids) // 2)
    async with AdminClient(admin.url) as anonymous:
        with pytest.raises(AdminAPIError) as caught:
            await anonymous.issuers()
        assert (caught.value.status, caught.value.slug) == (401, "unauthorized")
    async with AdminClient(f"http://127.0.0.1:{free_port()}", token=tokens[Role.AUDITOR]) as nowhere:
        with pytest.raises(AdminUnreachable, match="Is 'certstatus admin serve' running there"):
            await nowhere.issuers()


async def test_an_answer_that_is_not_the_admin_api(tokens: dict[Role, str]) -> None:
    """E.g. the public port by mistake: a plain-text 404 is a problem of its own, not a crash."""

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="404: Not Found")

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/v1/issuers", not_found)
    app.router.add_get("/v1/openapi.json", html)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with AdminClient(f"http://127.0.0.1:{server.port}", token=tokens[Role.AUDITOR]) as client:
            with pytest.raises(AdminAPIError) as caught:
                await client.issuers()
            assert (caught.value.status, caught.value.type, caught.value.title) == (404, "about:blank", "HTTP 404")
            assert "not a problem document" in caught.value.detail and "text/plain" in caught.value.detail
            with pytest.raises(AdminAPIError, match="not JSON"):
                await client.openapi()
    finally:
        await server.close()
