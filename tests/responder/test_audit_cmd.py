"""``certstatus audit verify`` as an auditor runs it: a subprocess over the real database."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson
import pytest

from ca_core.lifecycle import CertificateAuthority
from ca_core.model import KeyType
from ca_core.profiles import HolderSubject

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(database_url: str, redis_url: str, certstatus_cli: list[str], tmp_path: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, CERTSTATUS_DATA_DIR=str(tmp_path / "data"))

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*certstatus_cli, *args], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


@pytest.fixture
async def history(ca: CertificateAuthority) -> None:
    for i in range(3):
        record, _ = await ca.issue_with_generated_key(issuer="moica", profile="citizen-signing", actor=f"ra-{i}",
                                                      subject=HolderSubject("王小明", f"000000011172955{i}"),
                                                      key_type=KeyType.EC_P256)  # fmt: skip
        await ca.revoke("moica", record.serial, actor="token:ops", reason="keyCompromise")


async def test_verify_intact_then_edited_then_rewritten(cli: Run, pool: asyncpg.Pool, history: None) -> None:
    ok = cli("audit", "verify")
    assert "audit chain intact" in ok.stdout
    report = orjson.loads(cli("audit", "verify", "--json").stdout)
    rows = await pool.fetchval("SELECT count(*) FROM audit_log")
    assert report["intact"] is True and report["rows"] == rows and report["breaks"] == []
    head = report["head"]
    assert head.startswith(f"{rows}:") and len(head.split(":")[1]) == 64
    cli("audit", "verify", "--anchor", head)

    seq = await pool.fetchval(
        "SELECT chain_seq FROM audit_log WHERE action = 'certificate.revoke' ORDER BY chain_seq LIMIT 1"
    )
    async with pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE audit_log SET actor = 'token:someone-else' WHERE chain_seq = $1", seq)
        await conn.execute("SET session_replication_role = DEFAULT")
    broken = cli("audit", "verify", expect=3)
    assert "audit chain BROKEN: 1 problem(s)" in broken.stdout
    assert f"seq {seq} " in broken.stdout and "content was changed" in broken.stdout
    data = orjson.loads(cli("audit", "verify", "--json", expect=3).stdout)
    assert data["intact"] is False and [b["seq"] for b in data["breaks"]] == [seq]


def test_bad_anchor_is_a_usage_error(cli: Run, pool: asyncpg.Pool) -> None:
    result = cli("audit", "verify", "--anchor", "12:nothex", expect=2)
    assert "SEQ:HASH" in result.stderr


def test_help_explains_anchors_and_exit_statuses(cli: Run) -> None:
    out = cli("audit", "verify", "--help").stdout
    assert "--anchor" in out and "0 intact, 3 broken" in out
