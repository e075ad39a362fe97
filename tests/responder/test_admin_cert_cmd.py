"""Admin client certificates end to end, as operators run them: ``admin cert create``,
``admin serve`` over TLS, the admin CLI authenticating with the certificate, ``admin cert
revoke`` shutting it out, and the audit trail of it all."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .test_admin_cmd import PASSPHRASE, free_port

pytestmark = pytest.mark.slow

CLIENT_KEY_PASSPHRASE = "client key passphrase 42"
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(pool: asyncpg.Pool, database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    e.update(DATABASE_URL=database_url, REDIS_URL=redis_url, CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
             CERTSTATUS_DATA_DIR=str(tmp_path / "data"), CERTSTATUS_ROOT_KEY_TYPE="ec-p384",
             CERTSTATUS_ISSUER_KEY_TYPE="ec-p256")  # fmt: skip
    return e


@pytest.fixture
def cli(env: dict[str, str], certstatus_cli: list[str], tmp_path: Path) -> Run:
    def run(*args: str, expect: int = 0, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*certstatus_cli, *args], capture_output=True, text=True, env={**env, **(extra or {})},
                                timeout=120, cwd=tmp_path)  # fmt: skip
        assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr + result.stdout
        return result

    return run


def server_certificate(tmp: Path) -> tuple[Path, Path]:
    """The admin server's own TLS certificate (operators bring theirs), its key encrypted
    under the CA key passphrase, as the server expects."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.BestAvailableEncryption(PASSPHRASE.encode())))  # fmt: skip
    return tmp / "server.crt", tmp / "server.key"


def test_client_certificate_lifecycle(cli: Run, env: dict[str, str], certstatus_cli: list[str], tmp_path: Path) -> None:
    cli("ca", "init", "--issuer", "moica")
    creds = tmp_path / "creds"
    creds.mkdir()
    with_key = {"CERTSTATUS_ADMIN_KEY_PASSPHRASE": CLIENT_KEY_PASSPHRASE}
    # Without the passphrase (and no terminal), no key is written.
    out = cli("admin", "cert", "create", "ops-alice", "--role", "operator", "--holder-name", "陳管理",
              "--holder-id", "0000000222333444", "--out-dir", str(creds), expect=2)  # fmt: skip
    assert "CERTSTATUS_ADMIN_KEY_PASSPHRASE" in out.stderr and not list(creds.iterdir())
    created = orjson.loads(cli("admin", "cert", "create", "ops-alice", "--role", "operator", "--holder-name", "陳管理",
                               "--holder-id", "0000000222333444", "--out-dir", str(creds), "--json",
                               extra=with_key).stdout)  # fmt: skip
    assert created["role"] == "operator" and created["issuer"] == "moica"
    crt, key = creds / "ops-alice.crt", creds / "ops-alice.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(TypeError):  # encrypted at rest
        serialization.load_pem_private_key(key.read_bytes(), None)
    chain = x509.load_pem_x509_certificates(crt.read_bytes())
    assert len(chain) == 2 and chain[0].issuer == chain[1].subject
    eku = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # The same name again: refused, nothing overwritten.
    before = crt.read_bytes()
    cli("admin", "cert", "create", "ops-alice", "--role", "auditor", "--holder-name", "x", "--holder-id",
        "0000000222333444", "--out-dir", str(creds), expect=1, extra=with_key)  # fmt: skip
    assert crt.read_bytes() == before

    server_crt, server_key = server_certificate(tmp_path)
    port = free_port()
    serve_env = {**env, "CERTSTATUS_ADMIN_PORT": str(port), "CERTSTATUS_ADMIN_TLS_CERT": str(server_crt),
                 "CERTSTATUS_ADMIN_TLS_KEY": str(server_key)}  # fmt: skip
    proc = subprocess.Popen([*certstatus_cli, "admin", "serve"], env=serve_env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"admin API on https://127.0.0.1:{port}/v1/" in line, line
        client = ["--url", f"https://localhost:{port}", "--cacert", str(server_crt), "--cert", str(crt), "--key", str(key)]
        # The CLI client authenticates with the certificate alone (no token anywhere).
        listed = orjson.loads(cli("admin", "list", "--issuer", "moica", "--json", *client, extra=with_key).stdout)
        assert any(c["serial"] == created["serial"] for c in listed["certificates"]), listed
        # The wrong key passphrase is a clear local error, not a prompt or a hang.
        bad = cli("admin", "list", "--json", *client, expect=2,
                  extra={"CERTSTATUS_ADMIN_KEY_PASSPHRASE": "wrong passphrase!!"})  # fmt: skip
        assert "client certificate" in bad.stderr
        # Plain HTTP is not served at all.
        refused = cli("admin", "list", "--url", f"http://127.0.0.1:{port}", expect=1,
                      extra={"CERTSTATUS_ADMIN_TOKEN": "cst_1_" + "A" * 43})  # fmt: skip
        assert "Traceback" not in refused.stderr

        shown = orjson.loads(cli("admin", "cert", "list", "--json").stdout)
        assert [(c["name"], c["role"], c["status"]) for c in shown] == [("ops-alice", "operator", "good")]
        assert shown[0]["last_used_at"] is not None

        cli("admin", "cert", "revoke", "ops-alice", "--actor", "cli:security-officer")
        shut = cli("admin", "list", "--json", *client, expect=1, extra=with_key)
        assert "withdrawn" in shut.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
    shown = orjson.loads(cli("admin", "cert", "list", "--json").stdout)
    assert shown[0]["status"] == "revoked" and shown[0]["withdrawn_at"] is not None

    # Every step is in the audit log, and the chain holds.
    cli("admin", "token", "create", "ops-bob", "--role", "operator", "--actor", "cli:ca-admin")
    cli("admin", "token", "revoke", "ops-bob", "--actor", "cli:ca-admin")
    cli("admin", "token", "revoke", "ops-bob", "--actor", "cli:ca-admin")  # already revoked: not audited twice
    entries = orjson.loads(cli("audit", "list", "--json", "--limit", "1000").stdout)
    actions = [(e["actor"], e["action"]) for e in entries if e["action"].startswith("credential.")
               or e["action"] == "certificate.revoke"]  # fmt: skip
    assert actions[-5:] == [
        (actions[-5][0], "credential.certificate.create"),
        ("cli:security-officer", "credential.certificate.withdraw"),
        ("cli:security-officer", "certificate.revoke"),
        ("cli:ca-admin", "credential.token.create"),
        ("cli:ca-admin", "credential.token.revoke"),
    ]
    assert "audit chain intact" in cli("audit", "verify").stdout


def test_serve_refuses_half_a_tls_configuration(cli: Run, tmp_path: Path) -> None:
    cli("ca", "init", "--issuer", "moica")
    out = cli("admin", "serve", expect=2, extra={"CERTSTATUS_ADMIN_TLS_CERT": str(tmp_path / "x.crt")})
    assert "CERTSTATUS_ADMIN_TLS_KEY" in out.stderr
    server_crt, _ = server_certificate(tmp_path)
    out = cli("admin", "serve", expect=2, extra={"CERTSTATUS_ADMIN_TLS_CERT": str(server_crt),
                                                  "CERTSTATUS_ADMIN_TLS_KEY": str(tmp_path / "missing.key")})  # fmt: skip
    assert "cannot load the admin TLS certificate" in out.stderr
    # Generated keys travel with their passphrases: never in clear beyond this host.
    out = cli("admin", "serve", expect=2, extra={"CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS": "on",
                                                  "CERTSTATUS_ADMIN_HOST": "0.0.0.0"})  # fmt: skip
    assert "needs TLS" in out.stderr
