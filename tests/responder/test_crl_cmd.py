"""``certstatus crl publish|show|fetch`` as an operator runs them: subprocesses, real servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_core.clock import FakeClock
from ca_core.crl_publisher import CRLPublisher
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import RevocationReason
from ca_core.profiles import PublicURLs

from .ocsp_harness import Responder, now_clock, start_responder

pytestmark = pytest.mark.slow

PASSPHRASE = "cli test passphrase 123"


@pytest.fixture
def cli(
    pool: asyncpg.Pool, database_url: str, redis_url: str, certstatus_cli: list[str], tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
               CERTSTATUS_DATA_DIR=str(tmp_path / "data"), CERTSTATUS_ROOT_KEY_TYPE="ec-p384",
               CERTSTATUS_ISSUER_KEY_TYPE="ec-p256", CERTSTATUS_PUBLIC_BASE_URL="http://status.example.test")  # fmt: skip

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*certstatus_cli, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
        )
        assert result.returncode == expect, (
            f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr + result.stdout
        return result

    return run


def test_publish_and_show(cli: Callable[..., subprocess.CompletedProcess[str]], redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    cli("ca", "init", "--issuer", "moica", "--partitions", "4")
    issued = orjson.loads(cli("cert", "issue", "--issuer", "moica", "--profile", "citizen-signing", "--generate-key",
                              "--key-type", "ec-p256", "--key-out", "k.pem", "--name", "王大明",
                              "--holder-id", "0000000000000042", "--json").stdout)  # fmt: skip
    cli("cert", "revoke", "moica", issued["serial"], "--reason", "keyCompromise")
    base = orjson.loads(cli("crl", "publish", "--issuer", "moica", "--json").stdout)
    assert [(r["issuer"], r["kind"], r["entries"]) for r in base] == [("moica", "base", 1)]
    assert base[0]["scopes"] == 5  # full + 4 partitions
    delta = orjson.loads(cli("crl", "publish", "--issuer", "moica", "--delta", "--json").stdout)
    assert (
        delta[0]["kind"] == "delta" and delta[0]["base"] == base[0]["number"] and delta[0]["number"] > base[0]["number"]
    )

    shown = orjson.loads(cli("crl", "show", "--issuer", "moica", "--entries", "--json").stdout)
    served = {s["scope"]: s for s in shown["served"]}
    assert served["full"]["number"] == base[0]["number"]
    assert served["full"]["url"] == "http://status.example.test/crl/moica.crl"
    assert [e["serial"] for e in served["full"]["revoked"]] == [issued["serial"]]
    assert served["full"]["revoked"][0]["reason"] == "keyCompromise"
    assert served["delta"]["base"] == base[0]["number"]
    assert {p["number"] for p in shown["log"]} == {base[0]["number"], delta[0]["number"]}
    text = cli("crl", "show", "--issuer", "moica", "--partition", "2").stdout
    assert "p2" in text and "p2-delta" in text and "publication log" in text

    assert "no issuer named 'nosuch'" in cli("crl", "show", "--issuer", "nosuch", expect=1).stderr
    assert "no issuer named 'nosuch'" in cli("crl", "publish", "--issuer", "nosuch", expect=1).stderr
    assert "no partition 9" in cli("crl", "show", "--issuer", "moica", "--partition", "9", expect=1).stderr


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def responder(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    redis_url: str,
    vault: KeyVault,
    clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:
    await redis_client.flushdb()
    async for r in start_responder(pool, redis_client, redis_url, vault, clock, ca):
        yield r


async def fetch(*args: str) -> tuple[int, str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CERTSTATUS_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "responder", "crl", "fetch", *args, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = await proc.communicate()
    assert b"Traceback" not in out + err
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_fetch_verifies_like_a_relying_party(
    responder: Responder, vault: KeyVault, clock: FakeClock, urls: PublicURLs, tmp_path: Path
) -> None:
    rec = await responder.issue()
    await responder.ca.revoke("moica", rec.serial, actor="t", reason=RevocationReason.KEY_COMPROMISE)
    publisher = CRLPublisher(responder.pool, responder.redis, vault, clock, urls)
    await publisher.load_issuers()
    base = await publisher.publish_base("moica")
    assert base is not None
    out_file = tmp_path / "p.crl"
    code, out, err = await fetch(f"{responder.url}/crl/moica/{rec.crl_partition}.crl", "--out", str(out_file), "--json")
    assert code == 0, err
    info = orjson.loads(out)
    assert (info["signature"], info["fresh"], info["number"], info["entries"]) == ("valid", True, base.number, 1)
    assert x509.load_der_x509_crl(out_file.read_bytes()).get_revoked_certificate_by_serial_number(rec.serial)

    # With a trusted copy of the issuer certificate; the other issuer's does not verify it.
    pem = tmp_path / "moica.pem"
    pem.write_bytes(responder.issuer_certs["moica"].public_bytes(serialization.Encoding.PEM))
    code, out, err = await fetch(f"{responder.url}/crl/moica.crl", "--issuer-cert", str(pem), "--json")
    assert code == 0 and orjson.loads(out)["checked_with"] == str(pem), err
    other = tmp_path / "gca.pem"
    other.write_bytes(responder.issuer_certs["gca"].public_bytes(serialization.Encoding.PEM))
    code, out, err = await fetch(f"{responder.url}/crl/moica.crl", "--issuer-cert", str(other), "--json")
    assert code == 1 and orjson.loads(out)["signature"] == "INVALID" and "does not verify" in err

    code, _, err = await fetch(f"{responder.url}/crl/moica/77.crl")
    assert code == 1 and "HTTP 404" in err and "partitions 0 to 3" in err
    code, _, err = await fetch("http://127.0.0.1:9/crl/moica.crl", "--timeout", "2")
    assert code == 1 and "GET http://127.0.0.1:9/crl/moica.crl" in err
    code, _, err = await fetch(f"{responder.url}/healthz")
    assert code == 2 and "not a certstatus CRL URL" in err
