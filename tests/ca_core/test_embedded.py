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


def test_interrupted_first_start_leaves_a_usable_directory(tmp_path: Path) -> None:
    """A cluster left half-made (Ctrl-C or docker stop during initdb) is thrown away, not trusted."""
    data = tmp_path / "data"
    (data / "postgres.initialising").mkdir(parents=True)
    (data / "postgres.initialising" / "PG_VERSION").write_text("18\n")  # initdb ran, CREATE DATABASE did not
    with EmbeddedServices(data) as services:
        asyncio.run(_write(services, "fresh"))
    assert not (data / "postgres.initialising").exists()
    assert (data / "postgres" / "PG_VERSION").exists()


def test_owner_waits_for_attached_users_before_stopping(tmp_path: Path) -> None:
    import threading

    owner = EmbeddedServices(tmp_path / "data", stop_grace=20).start()
    user = EmbeddedServices(tmp_path / "data").start()
    assert user.owned == {"postgres": False, "valkey": False}
    stopped = threading.Event()

    def stop_owner() -> None:
        owner.stop()
        stopped.set()

    thread = threading.Thread(target=stop_owner)
    thread.start()
    try:
        time.sleep(1.0)
        assert not stopped.is_set(), "the owner stopped the servers under an attached user"
        asyncio.run(_write(user, "still served"))  # the attached user can still work
    finally:
        user.stop()
    thread.join(timeout=30)
    assert stopped.is_set()
    assert all(p is None for p in owner.pids().values())


def test_owner_stops_anyway_after_the_grace_period(tmp_path: Path) -> None:
    owner = EmbeddedServices(tmp_path / "data", stop_grace=0.5).start()
    user = EmbeddedServices(tmp_path / "data").start()
    began = time.monotonic()
    owner.stop()
    assert 0.4 < time.monotonic() - began < 15
    assert all(p is None for p in owner.pids().values())
    user.stop()


def test_data_directory_with_spaces_and_commas(tmp_path: Path) -> None:
    with EmbeddedServices(tmp_path / "my data, 2026" / "certstatus") as services:
        asyncio.run(_write(services, "odd path"))
        assert asyncio.run(_read(services)) == (["odd path"], b"odd path")
        assert " " not in str(services.run_dir) and "," not in str(services.run_dir)
    assert not services.run_dir.exists(), "the private socket directory is removed on stop"


def test_foreign_socket_directory_is_refused(tmp_path: Path) -> None:
    services = EmbeddedServices(tmp_path / ("d" * 120))
    assert services.run_dir.parent == Path(__import__("tempfile").gettempdir())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    services.run_dir.symlink_to(elsewhere)  # someone else's name, pointing somewhere else
    try:
        with pytest.raises(StorageError, match="not a directory owned by this user"):
            services.start()
    finally:
        services.run_dir.unlink()


def test_a_reused_pid_is_not_a_server() -> None:
    from ca_core.storage.embedded import _pid_alive

    assert not _pid_alive(os.getpid(), "postgres")
    assert _pid_alive(os.getpid(), "python")
    assert not _pid_alive(2**22 + 12345, "postgres")
