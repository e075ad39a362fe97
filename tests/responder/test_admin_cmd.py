"""``certstatus admin token ...`` and ``certstatus admin serve`` as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson
import pytest

pytestmark = pytest.mark.slow

PASSPHRASE = "cli test passphrase 123"


@pytest.fixture
def env(pool: asyncpg.Pool, database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
    e.update(DATABASE_URL=database_url, REDIS_URL=redis_url, CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
             CERTSTATUS_DATA_DIR=str(tmp_path / "data"), CERTSTATUS_ROOT_KEY_TYPE="ec-p384",
             CERTSTATUS_ISSUER_KEY_TYPE="ec-p256")  # fmt: skip
    return e


@pytest.fixture
def cli(
    env: dict[str, str], certstatus_cli: list[str], tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*certstatus_cli, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
        )
        assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr + result.stdout
        return result

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str | None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 - a local test server
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"].startswith("application/problem+json")
        return e.code, json.loads(e.read())


def test_tokens_and_the_admin_server(
    cli: Callable[..., subprocess.CompletedProcess[str]], env: dict[str, str], certstatus_cli: list[str], tmp_path: Path
) -> None:
    cli("ca", "init", "--issuer", "moica")
    created = orjson.loads(cli("admin", "token", "create", "ops-alice", "--role", "operator", "--json").stdout)
    token = created["token"]
    assert created["role"] == "operator" and token.startswith("cst_")
    assert "exists already" in cli("admin", "token", "create", "ops-alice", "--role", "auditor", expect=1).stderr
    assert "invalid choice" in cli("admin", "token", "create", "x", "--role", "root", expect=2).stderr
    listed = orjson.loads(cli("admin", "token", "list", "--json").stdout)
    assert [(t["name"], t["role"], t["revoked_at"]) for t in listed] == [("ops-alice", "operator", None)]
    assert token not in cli("admin", "token", "list").stdout  # secrets are never shown again

    port = free_port()
    proc = subprocess.Popen([*certstatus_cli, "admin", "serve"], env={**env, "CERTSTATUS_ADMIN_PORT": str(port)},
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"admin API on http://127.0.0.1:{port}/v1/" in line, line
        url = f"http://127.0.0.1:{port}/v1/issuers"
        status, body = get(url, token)
        assert status == 200 and {i["name"] for i in body["issuers"]} == {"root", "moica"}  # type: ignore[union-attr]
        assert get(url, None)[0] == 401
        cli("admin", "token", "revoke", "ops-alice")
        status, body = get(url, token)
        assert status == 401 and body["type"] == "urn:certstatus:problem:unauthorized"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
    assert "no token named 'nobody'" in cli("admin", "token", "revoke", "nobody", expect=1).stderr
