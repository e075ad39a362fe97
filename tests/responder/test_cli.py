"""The certstatus CLI as a user runs it: a subprocess, real servers, real openssl."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson
import pytest

from ca_core.storage import postgres as db

pytestmark = pytest.mark.slow

PASSPHRASE = "cli test passphrase 123"


@pytest.fixture
def cli(
    pool: asyncpg.Pool, database_url: str, redis_url: str, certstatus_cli: list[str], tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run certstatus against the session's servers (the `pool` fixture emptied the database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
        CERTSTATUS_DATA_DIR=str(tmp_path / "data"),
        CERTSTATUS_ROOT_KEY_TYPE="ec-p384",
        CERTSTATUS_ISSUER_KEY_TYPE="ec-p256",
        CERTSTATUS_PUBLIC_BASE_URL="http://status.example.test",
    )

    def run(*args: str, expect: int = 0, extra_env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        e = {**env, **(extra_env or {})}
        for k in drop:
            e.pop(k, None)
        result = subprocess.run([*certstatus_cli, *args], capture_output=True, text=True, env=e, timeout=120, cwd=tmp_path)
        assert result.returncode == expect, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        assert "Traceback" not in result.stderr + result.stdout
        return result

    return run


def test_help_answers_the_first_questions(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    out = cli("--help").stdout
    for fragment in ("certstatus demo", "ca init", "cert issue", "CERTSTATUS_KEY_PASSPHRASE_FILE", "DATABASE_URL"):
        assert fragment in out
    issue_help = cli("cert", "issue", "--help").stdout
    assert "proof of possession" in issue_help and "--generate-key" in issue_help


def test_full_lifecycle_through_the_cli(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, openssl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    init = cli("ca", "init", "--issuer", "moica", "--issuer", "gca").stdout
    assert "moica" in init and "gca" in init and "OCSP Responder" in init
    again = cli("ca", "init", expect=1)
    assert "already initialised" in again.stderr

    # A citizen's CSR made by a real client, issued, and verified by a real relying party.
    openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp_path / "me-key.pem", "-utf8",
        "-subj", "/C=TW/CN=王大明/serialNumber=0000000000000042", "-out", tmp_path / "me.csr",
    )
    issued = orjson.loads(
        cli("cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--csr", "me.csr",
            "--email", "daming@example.tw", "--out", "me.pem", "--json", "--idempotency-key", "enrol-42").stdout
    )
    assert issued["status"] == "good" and issued["subject"] == "serialNumber=0000000000000042,CN=王大明,C=TW"
    cli("ca", "export", "pki")
    verify = openssl("verify", "-CAfile", tmp_path / "pki/root.pem", "-untrusted", tmp_path / "pki/moica.pem", tmp_path / "me.pem")
    assert verify.stdout.strip().endswith("me.pem: OK")
    text = openssl("x509", "-in", tmp_path / "me.pem", "-noout", "-text").stdout
    assert "email:daming@example.tw" in text and "URI:http://status.example.test/ocsp" in text
    # The same idempotency key returns the same certificate rather than a second one.
    repeat = orjson.loads(
        cli("cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--csr", "me.csr",
            "--email", "daming@example.tw", "--json", "--idempotency-key", "enrol-42").stdout
    )
    assert repeat["serial"] == issued["serial"]

    gen = orjson.loads(
        cli("cert", "issue", "--issuer", "gca", "--profile", "citizen-encryption", "--generate-key", "--key-type", "ec-p256",
            "--key-out", "gen-key.pem", "--name", "陳美玲", "--holder-id", "0000000000000002", "--json").stdout
    )
    assert stat.S_IMODE((tmp_path / "gen-key.pem").stat().st_mode) == 0o600
    assert "BEGIN PRIVATE KEY" in (tmp_path / "gen-key.pem").read_text()

    serial = issued["serial"]
    assert orjson.loads(cli("cert", "suspend", "moica", serial, "--json").stdout)["status"] == "suspended"
    assert orjson.loads(cli("cert", "resume", "moica", serial, "--json").stdout)["status"] == "good"
    revoked = orjson.loads(
        cli("cert", "revoke", "moica", serial, "--reason", "keyCompromise", "--invalidity-date", issued["issued_at"], "--json").stdout
    )
    assert (revoked["status"], revoked["reason"]) == ("revoked", "keyCompromise")
    # Illegal transitions and bad input: one clear line, exit status 1, nothing changed.
    assert "revocation is final" in cli("cert", "resume", "moica", serial, expect=1).stderr
    assert "not an RFC 5280 CRLReason" in cli("cert", "revoke", "gca", gen["serial"], "--reason", "lost", expect=1).stderr
    assert "ISO 8601" in cli("cert", "revoke", "gca", gen["serial"], "--invalidity-date", "yesterday", expect=1).stderr
    assert "never issued" in cli("cert", "show", "moica", "ABCDEF0123", expect=1).stderr
    assert "no issuer named" in cli("cert", "show", "xca", serial, expect=1).stderr
    assert orjson.loads(cli("cert", "show", "gca", gen["serial"], "--json").stdout)["status"] == "good"

    listed = orjson.loads(cli("cert", "list", "--holder", "0000000000000042", "--json").stdout)
    assert [c["serial"] for c in listed] == [serial]
    audit = orjson.loads(cli("audit", "list", "--serial", serial, "--json").stdout)
    assert [a["action"] for a in audit] == [
        "certificate.issue", "certificate.suspend", "certificate.resume", "certificate.revoke",
    ]
    assert audit[0]["actor"].startswith("cli:")
    assert "issuing" in cli("ca", "list").stdout
    renewed = cli("ca", "renew-ocsp", "--issuer", "gca").stdout
    assert "gca: new OCSP signer" in renewed


def test_bad_csr_is_a_clear_error(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    cli("ca", "init", "--issuer", "moica")
    (tmp_path / "junk.csr").write_text("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n")
    err = cli("cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--csr", "junk.csr", expect=1).stderr
    assert err.startswith("certstatus: bad-csr:")
    err = cli("cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--csr", "missing.csr", expect=1).stderr
    assert "cannot read missing.csr" in err


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CERTSTATUS_PUBLIC_PORT": "eighty"}, "CERTSTATUS_PUBLIC_PORT='eighty': must be an integer"),
        ({"CERTSTATUS_ADMIN_PORT": "8080"}, "must never share the public port"),
        ({"CERTSTATUS_KEY_PASSPHRASE": "short"}, "too short"),
        ({"DATABASE_URL": "mysql://u:hunter2@db/x"}, "DATABASE_URL must start with postgresql://"),
    ],
)
def test_configuration_errors_exit_2(
    cli: Callable[..., subprocess.CompletedProcess[str]], env: dict[str, str], fragment: str
) -> None:
    err = cli("ca", "list", expect=2, extra_env=env).stderr
    assert fragment in err
    assert "hunter2" not in err


def test_issuing_without_a_passphrase_says_how_to_set_one(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    cli("ca", "init", "--issuer", "moica")
    err = cli(
        "cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--generate-key", "--key-out", "k.pem",
        "--name", "x", "--holder-id", "0000000000000001", expect=2, drop=("CERTSTATUS_KEY_PASSPHRASE",),
    ).stderr
    assert "CERTSTATUS_KEY_PASSPHRASE_FILE" in err


def test_wrong_passphrase_is_reported(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    cli("ca", "init", "--issuer", "moica")
    err = cli(
        "cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--generate-key", "--key-out", "k.pem",
        "--name", "x", "--holder-id", "0000000000000001", expect=1,
        extra_env={"CERTSTATUS_KEY_PASSPHRASE": "the wrong passphrase"},
    ).stderr
    assert "passphrase is wrong" in err
    assert PASSPHRASE not in err and "the wrong passphrase" not in err


def test_unreachable_database(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    err = cli("ca", "list", expect=1, extra_env={"DATABASE_URL": "postgresql://x:secret@/db?host=/nonexistent&port=1"}).stderr
    assert "storage error" in err and "unreachable" in err
    assert "secret" not in err


def test_config_shows_settings_without_secrets(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    shown = orjson.loads(cli("config", "--json").stdout)
    assert shown["CERTSTATUS_PUBLIC_PORT"] == "8080"
    assert shown["CERTSTATUS_KEY_PASSPHRASE"] == "(set, hidden)"
    assert shown["DATABASE_URL"] == "(set, hidden)"
    assert PASSPHRASE not in cli("config").stdout


async def test_db_migrate(cli: Callable[..., subprocess.CompletedProcess[str]], database_url: str) -> None:
    out = cli("db", "migrate").stdout
    conn = await db.connect(database_url)
    try:
        assert f"schema at version {await db.schema_version(conn)}" in out
    finally:
        await conn.close()


def test_key_types_and_partitions_from_flags(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    cli("ca", "init", "--issuer", "moica", "--root-key-type", "ec-p256", "--issuer-key-type", "rsa2048",
        "--ocsp-key-type", "ec-p384", "--partitions", "8")
    rows = {r["name"]: r for r in orjson.loads(cli("ca", "list", "--json").stdout)}
    assert (rows["root"]["key_type"], rows["moica"]["key_type"], rows["moica"]["crl_partitions"]) == ("ec-p256", "rsa2048", 8)
    err = cli("ca", "add-issuer", "xca", "--issuer-key-type", "dsa1024", expect=2).stderr
    assert "must be one of rsa2048, rsa3072, rsa4096, ec-p256, ec-p384" in err
    assert "CERTSTATUS_CRL_PARTITIONS=0: must be between 1 and 4096" in cli("ca", "add-issuer", "xca", "--partitions", "0", expect=2).stderr


def test_key_out_is_never_overwritten_and_nothing_is_issued(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    cli("ca", "init", "--issuer", "moica")
    (tmp_path / "taken.pem").write_text("someone's file\n")
    args = ("cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--generate-key",
            "--name", "x", "--holder-id", "0000000000000001")
    err = cli(*args, "--key-out", "taken.pem", expect=1).stderr
    assert "refusing to overwrite" in err
    assert (tmp_path / "taken.pem").read_text() == "someone's file\n"
    assert "cannot create" in cli(*args, "--key-out", "no/such/dir/k.pem", expect=1).stderr
    assert "each run makes a new key" in cli(*args, "--key-out", "k.pem", "--idempotency-key", "i", expect=1).stderr
    assert not (tmp_path / "k.pem").exists()
    assert orjson.loads(cli("cert", "list", "--holder", "0000000000000001", "--json").stdout) == []
    assert "between 1 and 7320" in cli(*args, "--key-out", "k.pem", "--validity-days", "0", expect=1).stderr


def test_bad_urls_are_configuration_errors_without_secrets(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    err = cli("ca", "list", expect=2, extra_env={"DATABASE_URL": "postgresql://u:hunter2@db:notaport/x"}).stderr
    assert "DATABASE_URL" in err and "hunter2" not in err
    err = cli("ca", "list", expect=2, extra_env={"REDIS_URL": "redis://:hunter2@cache:notaport/0"}).stderr
    assert "REDIS_URL" in err and "hunter2" not in err
    err = cli("ca", "list", expect=2, extra_env={"CERTSTATUS_PUBLIC_BASE_URL": "http://憑證.example.tw"}).stderr
    assert "xn--" in err


def test_services_never_prints_a_configured_url(
    database_url: str, certstatus_cli: list[str], tmp_path: Path, pool: asyncpg.Pool
) -> None:
    """With DATABASE_URL set (with a password) and REDIS_URL unset, only the embedded URL is shown."""
    import signal
    import time

    secret_url = database_url.replace("postgresql://certstatus@", "postgresql://certstatus:S3cretPW@")
    assert "S3cretPW" in secret_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_") and k != "REDIS_URL"}
    env.update(DATABASE_URL=secret_url, CERTSTATUS_DATA_DIR=str(tmp_path / "data"))
    with subprocess.Popen([*certstatus_cli, "services"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops them" in line or not line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "S3cretPW" not in out
    assert "(DATABASE_URL, not shown)" in out and "valkey.sock" in out


def test_sigterm_during_first_start_unwinds_cleanly(certstatus_cli: list[str], tmp_path: Path) -> None:
    """`docker stop` while the first start is still running initdb: exit 143, no server left,
    and the next start works (the half-made cluster is thrown away)."""
    import signal

    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["CERTSTATUS_DATA_DIR"] = str(tmp_path / "data")
    with subprocess.Popen([*certstatus_cli, "db", "migrate"], env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "initialising a PostgreSQL cluster" in line:
                proc.send_signal(signal.SIGTERM)
                break
        _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(seen) + rest
    assert "Traceback" not in rest
    assert not (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    again = subprocess.run([*certstatus_cli, "db", "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "schema at version" in again.stdout
