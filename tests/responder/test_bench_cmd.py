"""``certstatus bench load`` as a user runs it: a subprocess against the session's servers, then
the ground truth held to PostgreSQL and Valkey, row by row."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from ca_core.groundtruth import Status, Truth
from ca_core.model import serial_from_bytes
from ca_core.storage import postgres as db
from ca_core.storage import responses as store

pytestmark = pytest.mark.slow

PASSPHRASE = "bench load test passphrase"
CERTS = 3000
STATUS_OF_TEXT = {"good": Status.GOOD, "revoked": Status.REVOKED, "suspended": Status.SUSPENDED}

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(pool: asyncpg.Pool, database_url: str, redis_url: str, certstatus_cli: list[str], tmp_path: Path) -> Run:
    """Run certstatus against the session's servers (the `pool` fixture emptied the database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
        CERTSTATUS_DATA_DIR=str(tmp_path / "data"),
        CERTSTATUS_ROOT_KEY_TYPE="ec-p256",
        CERTSTATUS_ISSUER_KEY_TYPE="ec-p256",
        CERTSTATUS_PUBLIC_BASE_URL="http://status.example.test",
    )

    def run(*args: str, expect: int = 0, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        e = {k: v for k, v in env.items() if k not in drop}
        result = subprocess.run(
            [*certstatus_cli, *args], capture_output=True, text=True, env=e, timeout=120, cwd=tmp_path
        )
        assert result.returncode == expect, (
            f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr + result.stdout
        return result

    return run


async def test_load_writes_a_truth_that_matches_the_database_and_valkey(
    cli: Run, pool: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    cli("ca", "init", "--issuer", "moica", "--issuer", "gca")
    summary = orjson.loads(cli("bench", "load", "--certs", f"{CERTS:,}", "--processes", "2", "--json").stdout)
    assert summary["certificates"] == CERTS and summary["by_issuer"] == {"moica": CERTS // 2, "gca": CERTS // 2}
    assert summary["revoked"] == 30 and summary["suspended"] == 16  # 1 % and 0.5 % of each issuer's 1,500
    assert summary["verified_with_cryptography"] == 8 and summary["signed"] >= CERTS

    # The files, under their documented names, in <data dir>/bench; no temporary file left.
    truth_dir = tmp_path / "data" / "bench"
    assert sorted(p.name for p in truth_dir.iterdir()) == ["truth.bin", "truth.json"]
    meta = json.loads((truth_dir / "truth.json").read_text())
    truth = Truth.open(truth_dir)
    assert len(truth) == CERTS == meta["count"] == summary["truth_count"]

    async with pool.acquire() as conn:
        issuers = {i.name: i for i in await db.list_issuers(conn)}
        rows = await conn.fetch(
            "SELECT issuer_id, serial, status::text AS status, reason FROM certificates WHERE profile = 'citizen-signing'"
        )
    # The issuers: names and CA certificates as the database has them, in index order.
    assert [name for name, _ in truth.issuers] == ["moica", "gca"]
    for name, cert in truth.issuers:
        assert cert.public_bytes(serialization.Encoding.DER) == issuers[name].certificate
    ids = [issuers[name].id for name, _ in truth.issuers]

    # Every certificate exactly once, with the database's status and reason.
    in_db = {(r["issuer_id"], serial_from_bytes(r["serial"])): (STATUS_OF_TEXT[r["status"]], r["reason"]) for r in rows}
    entries = [truth.entry(rank) for rank in range(len(truth))]
    in_truth = {(ids[e.issuer_index], e.serial): (e.status, e.reason) for e in entries}
    assert len(in_truth) == len(entries) == len(in_db)
    assert in_truth == in_db
    assert sum(e.status is Status.REVOKED for e in entries) == summary["revoked"]
    assert sum(e.status is Status.SUSPENDED for e in entries) == summary["suspended"]
    assert all(e.reason == 6 for e in entries if e.status is Status.SUSPENDED)

    # The admin pool: the last 1 % of the order, all good; listed ones spread over the ranks.
    rp = meta["rp_count"]
    assert rp == CERTS - CERTS // 100 == summary["rp_count"]
    assert all(e.status is Status.GOOD for e in entries[rp:])
    listed = [rank for rank, e in enumerate(entries) if e.status is not Status.GOOD]
    assert min(listed) < rp // 4 and max(listed) > rp * 3 // 4
    assert {e.issuer_index for e in entries[: rp // 10]} == {0, 1}  # both issuers among the popular
    assert meta["never_issued"] and not {(ids[i], int(s, 16)) for i, s in meta["never_issued"]} & in_db.keys()
    assert meta["responder_url"] == "http://status.example.test/ocsp"

    # A signed OCSP response in Valkey for every certificate, saying what the truth says.
    keys = [store.response_key(ids[e.issuer_index], e.serial) for e in entries]
    values = await redis_client.mget(keys)
    assert sum(v is None for v in values) == 0
    for e, value in zip(entries, values, strict=True):
        assert isinstance(value, bytes)
        response = ocsp.load_der_ocsp_response(store.unpack(value).der)
        assert response.serial_number == e.serial
        want = ocsp.OCSPCertStatus.GOOD if e.status is Status.GOOD else ocsp.OCSPCertStatus.REVOKED
        assert response.certificate_status is want, (e, response.certificate_status)
    # ...so a signer run finds nothing left: the fill is complete.
    for issuer_id in ids:
        assert await redis_client.exists(store.filled_key(issuer_id))


def test_bad_input_is_one_clear_line(cli: Run) -> None:
    # Before anything starts: argument errors (exit status 2, argparse's usage line).
    assert "--certs: 0: must be at least 1" in cli("bench", "load", "--certs", "0", expect=2).stderr
    assert "--certs" in cli("bench", "load", expect=2).stderr
    assert (
        "must be at least 0 and below 1"
        in cli("bench", "load", "--certs", "10", "--revoked-fraction", "1.5", expect=2).stderr
    )
    # No CA yet: bench load creates none.
    assert "run 'certstatus ca init' first" in cli("bench", "load", "--certs", "10", expect=1).stderr
    cli("ca", "init", "--issuer", "moica", "--issuer", "gca")
    unknown = cli("bench", "load", "--certs", "10", "--issuers", "moica,xca", expect=1).stderr
    assert "no issuing CA named 'xca' (there are: moica, gca)" in unknown
    too_many = cli(
        "bench", "load", "--certs", "10", "--revoked-fraction", "0.6", "--suspended-fraction", "0.6", expect=2
    )
    assert "at most 0.9" in too_many.stderr
    assert (
        "no key passphrase"
        in cli("bench", "load", "--certs", "10", drop=("CERTSTATUS_KEY_PASSPHRASE",), expect=2).stderr
    )
