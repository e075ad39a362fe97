"""``certstatus serve --workers N`` and ``certstatus signer``, as an operator runs them:
subprocesses against the session's real servers, checked with real OCSP queries."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.x509 import ocsp as cocsp

from ca_core.clock import FakeClock
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.ocsp import HashAlgorithm, issuer_hashes
from ca_core.storage import postgres as db
from tests.conftest import TEST_PASSPHRASE

from .ocsp_harness import HOLDER, now_clock

pytestmark = pytest.mark.slow


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    e.update(DATABASE_URL=database_url, REDIS_URL=redis_url, CERTSTATUS_KEY_PASSPHRASE=TEST_PASSPHRASE,
             CERTSTATUS_DATA_DIR=str(tmp_path / "data"), CERTSTATUS_PUBLIC_PORT=str(_free_port()))
    return e


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return {int(x) for x in out.split()}


def _is_worker(pid: int) -> bool:
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.fixture
def spawn(env: dict[str, str], certstatus_cli: list[str], tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p.stdout is not None:
            p.stdout.close()


def _start(cli: list[str], env: dict[str, str], procs: list[subprocess.Popen[str]], *args: str, ready: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([*cli, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(p)
    assert p.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line)
        if ready in line:
            return p
    raise AssertionError(f"{args} did not become ready:\n{''.join(seen)}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def _status(http: aiohttp.ClientSession, port: int, issuer_der: bytes, record: CertRecord) -> cocsp.OCSPResponse:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    h = issuer_hashes(x509.load_der_x509_certificate(issuer_der))[HashAlgorithm.SHA1]
    req = cocsp.OCSPRequestBuilder().add_certificate_by_hash(h.name_hash, h.key_hash, record.serial, hashes.SHA1())
    der = req.build().public_bytes(serialization.Encoding.DER)
    async with http.post(f"http://127.0.0.1:{port}/ocsp", data=der,
                         headers={"Content-Type": "application/ocsp-request"}) as r:
        assert r.status == 200
        return cocsp.load_der_ocsp_response(await r.read())


async def test_two_workers_and_a_signer_serve_and_survive_a_killed_worker(
    env: dict[str, str], certstatus_cli: list[str], spawn: list[subprocess.Popen[str]], pool: asyncpg.Pool,
    redis_client: aioredis.Redis, ca: CertificateAuthority, http: aiohttp.ClientSession,
) -> None:
    records = []
    for _ in range(3):
        record, _ = await ca.issue_with_generated_key(
            issuer="moica", profile="citizen-signing", subject=HOLDER, actor="test", key_type=KeyType.EC_P256
        )
        records.append(record)
    async with pool.acquire() as conn:
        moica = await db.get_issuer(conn, "moica")
    assert moica is not None
    port = int(env["CERTSTATUS_PUBLIC_PORT"])

    signer = await asyncio.to_thread(_start, certstatus_cli, env, spawn, "signer", "--quiet", ready="filled")
    serve = await asyncio.to_thread(_start, certstatus_cli, env, spawn, "serve", "--workers", "2", ready="public workers")
    workers = {p for p in _children(serve.pid) if _is_worker(p)}
    assert len(workers) == 2, workers

    # Many short connections: the kernel spreads them over both workers; all are answered.
    answers = await asyncio.gather(*[_status(http, port, moica.certificate, records[i % 3]) for i in range(60)])
    assert all(a.certificate_status == cocsp.OCSPCertStatus.GOOD for a in answers)

    # A revocation acknowledged by the CA reaches every worker through the running signer.
    await ca.revoke("moica", records[0].serial, actor="test", reason="keyCompromise")
    deadline = time.monotonic() + 10
    while True:
        got = await asyncio.gather(*[_status(http, port, moica.certificate, records[0]) for _ in range(20)])
        if all(a.certificate_status == cocsp.OCSPCertStatus.REVOKED for a in got):
            break
        assert time.monotonic() < deadline, "revocation did not reach every worker"
        await asyncio.sleep(0.05)

    # A worker that dies is replaced, and the port keeps answering meanwhile.
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        now_workers = {p for p in _children(serve.pid) if _is_worker(p)}
        if len(now_workers) == 2 and victim not in now_workers:
            break
        assert time.monotonic() < deadline, f"worker not replaced: {now_workers}"
        await asyncio.sleep(0.2)
    answers = await asyncio.gather(*[_status(http, port, moica.certificate, records[1]) for _ in range(20)])
    assert all(a.certificate_status == cocsp.OCSPCertStatus.GOOD for a in answers)

    # SIGTERM stops the supervisor and its workers.
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(20) == 128 + signal.SIGTERM or serve.returncode == 0
    time.sleep(0.5)
    assert not any(_is_worker(p) and Path(f"/proc/{p}").exists() for p in now_workers)
    signer.send_signal(signal.SIGTERM)
    assert signer.wait(20) in (0, 128 + signal.SIGTERM)
