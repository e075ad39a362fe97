"""bench/ceiling.py: the request list it draws from a ground truth, and the whole measurement,
tiny, against a real small system (PostgreSQL, Valkey, a CA, ``certstatus bench load`` and
``certstatus serve`` as subprocesses) with real wrk and nginx."""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from bench.ceiling import build_requests, find_tools, measure_ceiling, port_open
from bench.ocsp import free_port
from ca_core.groundtruth import Status, Truth, TruthWriter

PASSPHRASE = "ceiling test passphrase"
TOOLS_MISSING = shutil.which("wrk") is None or (shutil.which("nginx") or shutil.which("/usr/sbin/nginx")) is None
needs_tools = pytest.mark.skipif(TOOLS_MISSING, reason="needs wrk and nginx (apt-get install wrk nginx)")


def _issuer_and_leaf(serial: int) -> tuple[x509.Certificate, x509.Certificate]:
    """A throwaway issuing CA and one certificate it issued with ``serial``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)

    def cert(cn: str, number: int) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuing CA")])
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(number).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )  # fmt: skip

    return cert("test issuing CA", 1), cert("a citizen", serial)


def _ocsp_request(raw: bytes) -> ocsp.OCSPRequest:
    head, _, _ = raw.partition(b"\r\n")
    method, path, _ = head.split(b" ")
    assert method == b"GET" and path.startswith(b"/ocsp/")
    return ocsp.load_der_ocsp_request(base64.b64decode(urllib.parse.unquote(path[6:].decode())))


def test_the_request_list_follows_the_truth(tmp_path: Path) -> None:
    rng = random.Random(3)
    serials = list({rng.getrandbits(127) | 1 << 126 for _ in range(1000)})
    issuer, leaf = _issuer_and_leaf(serials[0])
    writer = TruthWriter(tmp_path, [("moica", issuer.public_bytes(serialization.Encoding.DER))])
    for rank, serial in enumerate(serials):
        writer.add(0, serial, Status.REVOKED if rank % 50 == 7 else Status.GOOD, 1 if rank % 50 == 7 else None)
    never = [(0, rng.getrandbits(127) | 1 << 127) for _ in range(5)]  # never among the serials
    writer.close(rp_count=900, never_issued=never)
    truth = Truth.open(tmp_path)
    # The CertIDs cryptography builds for the issuer's certificates, by hash algorithm.
    cert_ids = {}
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        built = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm).build()
        cert_ids[algorithm.name] = (built.issuer_name_hash, built.issuer_key_hash)

    rl = build_requests(truth, 20_000, random.Random(1))
    assert len(rl.requests) == len(rl.expected) == 20_000
    assert len(rl.distinct) == len(set(rl.requests)) < 20_000
    assert 0.17 < rl.sha256 / 20_000 < 0.23 and 0.002 < rl.never_issued / 20_000 < 0.01
    ranks = {serial: rank for rank, serial in enumerate(serials)}
    seen_ranks: collections.Counter[int] = collections.Counter()
    algorithms: collections.Counter[str] = collections.Counter()
    for raw, entry in zip(rl.requests, rl.expected, strict=True):
        request = _ocsp_request(raw)
        algorithms[request.hash_algorithm.name] += 1
        assert (request.issuer_name_hash, request.issuer_key_hash) == cert_ids[request.hash_algorithm.name]
        if entry is None:  # one of the truth's never-issued serials
            assert (0, request.serial_number) in never
            continue
        assert request.serial_number == entry.serial
        seen_ranks[ranks[entry.serial]] += 1
    # Relying-party ranks only, the most popular most often.
    assert max(seen_ranks) < truth.rp_count
    assert seen_ranks[0] == max(seen_ranks.values()) and seen_ranks[0] > 5 * seen_ranks.get(100, 0)
    assert set(algorithms) == {"sha1", "sha256"} and sum(algorithms.values()) == 20_000


def test_missing_tools_say_what_to_install() -> None:
    with pytest.raises(RuntimeError, match=r"not installed: wrk \(apt-get install wrk nginx"):
        find_tools(wrk="/nonexistent/wrk", nginx=sys.executable)  # any binary that exists
    with pytest.raises(RuntimeError, match=r"not installed: wrk, nginx \(apt-get install wrk nginx"):
        find_tools(wrk="/nonexistent/wrk", nginx="/nonexistent/nginx")


@pytest.fixture
def system(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, database_url: str, redis_url: str, certstatus_cli: list[str],
    tmp_path: Path,
) -> Iterator[tuple[int, Path]]:  # fmt: skip
    """A small loaded system on the session's servers (emptied by ``pool`` and ``redis_client``)
    with ``certstatus serve`` running: (its port, the truth directory)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    port = free_port()
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
        CERTSTATUS_DATA_DIR=str(tmp_path / "data"), CERTSTATUS_ROOT_KEY_TYPE="ec-p256",
        CERTSTATUS_ISSUER_KEY_TYPE="ec-p256", CERTSTATUS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        CERTSTATUS_PUBLIC_PORT=str(port), CERTSTATUS_ADMIN_PORT=str(free_port()),
    )  # fmt: skip
    truth_dir = tmp_path / "truth"
    for args in (["ca", "init", "--issuer", "moica", "--issuer", "gca"],
                 ["bench", "load", "--certs", "2000", "--processes", "2", "--truth-dir", str(truth_dir)]):  # fmt: skip
        result = subprocess.run([*certstatus_cli, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([*certstatus_cli, "serve"], env=env, cwd=tmp_path, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not re.search("public responder on", log_path.read_text(errors="replace")):
            assert serve.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        yield port, truth_dir
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()


@pytest.mark.slow
@needs_tools
def test_the_ceiling_of_a_small_system_next_to_nginx(system: tuple[int, Path], tmp_path: Path) -> None:
    port, truth_dir = system
    out = tmp_path / "run" / "ceiling.json"
    result = measure_ceiling(responder_port=port, truth_dir=truth_dir, work_dir=tmp_path / "work", out=out,
                             seconds=2, rounds=1, connections=16, nginx_workers=1, requests=3000, sample=300,
                             census=1000)  # fmt: skip

    # The shape the report reads.
    written = json.loads(out.read_text())
    assert written == result
    assert {"tool", "duration_s", "connections", "threads", "rounds", "requests", "targets", "ratio_to_nginx",
            "answers", "commands", "load_average"} <= set(written)  # fmt: skip
    assert written["tool"].startswith("wrk ") and written["duration_s"] == 2 and written["rounds"] == 1
    assert written["requests"]["count"] == 3000 and 0 < written["requests"]["distinct"] < 3000
    assert written["requests"]["method"] == "GET" and "Zipf" in written["requests"]["list"]
    targets = {t["name"]: t for t in written["targets"]}
    assert [t["name"] for t in written["targets"]] == ["responder", "nginx"]
    for t in targets.values():
        assert {"workers", "req_s", "p50_ms", "p99_ms", "errors", "runs_req_s"} <= set(t)
        assert t["req_s"] > 0 and t["errors"] == 0 and len(t["runs_req_s"]) == 1 and t["workers"] == 1
    assert written["ratio_to_nginx"] == pytest.approx(targets["responder"]["req_s"] / targets["nginx"]["req_s"],
                                                      abs=0.001)  # fmt: skip
    answers = written["answers"]
    assert answers["checked"] == 300 and answers["wrong"] == 0, answers
    assert sum(answers["census"].values()) == 1000 and answers["census"].get("successful", 0) > 900, answers
    assert len(written["commands"]) == 2 and all(c.startswith("wrk -t1 -c16 -d2s") for c in written["commands"])
    assert all(" -s SCRIPT " in c and " -- REQUESTS " in c for c in written["commands"])
    assert len(written["load_average"]) == 2

    # No path of this machine in what may be committed; nginx is gone.
    text = out.read_text()
    assert str(tmp_path) not in text and "/tmp" not in text and "/usr/" not in text, text
    assert not port_open(targets["nginx"]["port"])
    print(f"ceiling (tiny): responder {targets['responder']['req_s']:,.0f} req/s, nginx "
          f"{targets['nginx']['req_s']:,.0f} req/s, ratio {written['ratio_to_nginx']}")  # fmt: skip
