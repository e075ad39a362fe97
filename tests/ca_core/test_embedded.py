"""The embedded PostgreSQL and Valkey: persistence, attaching, and no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ca_core.errors import StorageError
from ca_core.storage import postgres as db
from ca_core.storage.embedded import EmbeddedServices

pytestmark = pytest.mark.slow


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pids: list[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


async def _write(services: EmbeddedServices, value: str) -> None:
    conn = await db.connect(services.database_url)
    await conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
    await conn.execute("INSERT INTO kept VALUES ($1)", value)
    await conn.close()
    client = aioredis.Redis.from_url(services.redis_url)
    await client.set("kept", value)
    await client.aclose()


async def _read(services: EmbeddedServices) -> tuple[list[str], bytes | None]:
    conn = await db.connect(services.database_url)
    rows = [r["v"] for r in await conn.fetch("SELECT v FROM kept ORDER BY v")]
    await conn.close()
    client = aioredis.Redis.from_url(services.redis_url)
    value = await client.get("kept")
    await client.aclose()
    return rows, value


def test_data_survives_a_restart(tmp_path: Path) -> None:
    services = EmbeddedServices(tmp_path / "data").start()
    pids = [p for p in services.pids().values() if p]
    assert len(pids) == 2 and services.owned == {"postgres": True, "valkey": True}
    asyncio.run(_write(services, "before restart"))
    services.stop()
    assert _wait_dead(pids), "servers still running after stop()"
    assert all(p is None for p in services.pids().values())

    with EmbeddedServices(tmp_path / "data") as again:
        assert asyncio.run(_read(again)) == (["before restart"], b"before restart")
        new_pids = [p for p in again.pids().values() if p]
    assert _wait_dead(new_pids)


def test_second_user_attaches_and_leaves_servers_running(tmp_path: Path) -> None:
    with EmbeddedServices(tmp_path / "data") as owner:
        pids = owner.pids()
        attached = EmbeddedServices(tmp_path / "data").start()
        assert attached.owned == {"postgres": False, "valkey": False}
        assert attached.database_url == owner.database_url
        asyncio.run(_write(attached, "via the attached handle"))
        attached.stop()
        assert all(_alive(p) for p in pids.values()), "an attached user must not stop the owner's servers"
        assert asyncio.run(_read(owner))[0] == ["via the attached handle"]
    assert _wait_dead([p for p in pids.values() if p])


def test_killed_owner_leaves_no_orphan(tmp_path: Path) -> None:
    """Even SIGKILL of the owning process takes the servers down (parent-death signal)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from ca_core.storage.embedded import EmbeddedServices
        s = EmbeddedServices(Path({str(tmp_path / "data")!r})).start()
        print(" ".join(str(p) for p in s.pids().values()), flush=True)
        time.sleep(120)
        """
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            pids = [int(p) for p in proc.stdout.readline().split()]
            assert len(pids) == 2 and all(_alive(p) for p in pids)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert _wait_dead(pids), "embedded servers outlived their killed owner"
    # And the data directory is usable again straight away.
    with EmbeddedServices(tmp_path / "data") as again:
        assert again.owned == {"postgres": True, "valkey": True}


def test_deep_data_directory_uses_a_short_socket_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with EmbeddedServices(deep) as services:
        assert len(str(services.run_dir)) < 80
        assert not str(services.run_dir).startswith(str(deep))
        asyncio.run(_write(services, "deep"))
        assert oct(services.run_dir.stat().st_mode & 0o777) == "0o700"


def test_foreign_files_in_pgdata_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data" / "postgres").mkdir(parents=True)
    (tmp_path / "data" / "postgres" / "notes.txt").write_text("not a cluster")
    with pytest.raises(StorageError, match="holds no PostgreSQL cluster"):
        EmbeddedServices(tmp_path / "data").start()
