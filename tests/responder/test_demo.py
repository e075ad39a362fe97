"""`certstatus demo` end to end, as the README tells a newcomer to run it.

It runs with its own embedded servers (no DATABASE_URL/REDIS_URL), so this also
covers start-up from nothing, persistence across runs, attaching from a second
process, the cheat sheet's commands, and clean shutdown on SIGINT and SIGTERM.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from cryptography import x509

pytestmark = pytest.mark.slow

READY = "Ctrl-C stops everything."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _server_pids(data_dir: Path) -> list[int]:
    pids = []
    postmaster = data_dir / "postgres" / "postmaster.pid"
    if postmaster.exists():
        pids.append(int(postmaster.read_text().splitlines()[0]))
    valkey = data_dir / "valkey" / "valkey.pid"
    if valkey.exists():
        pids.append(int(valkey.read_text().strip()))
    return pids


class Demo:
    def __init__(self, cwd: Path, env: dict[str, str], cli: list[str]) -> None:
        self.cwd, self.env, self.cli = cwd, env, cli
        self.port = int(env["CERTSTATUS_PUBLIC_PORT"])
        self.data_dir = cwd / ".certstatus"
        self.procs: list[subprocess.Popen[str]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._output: list[str] = []

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def start(self) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [*self.cli, "demo"], cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.procs.append(proc)
        self._lines = queue.Queue()
        self._output = []
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self._output.append(line)
            if READY in line:
                return proc, "".join(self._output)
        pytest.fail("the demo did not become ready:\n" + "".join(self._output))

    def _rest(self) -> str:
        rest = []
        while (line := self._lines.get(timeout=30)) is not None:
            rest.append(line)
        return "".join(rest)

    def stop(self, proc: subprocess.Popen[str], sig: int) -> str:
        pids = _server_pids(self.data_dir)
        assert pids and all(_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        rest = self._rest()
        assert proc.stdout is not None
        proc.stdout.close()
        assert proc.returncode == 0, rest
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "the demo left its servers running"
        return rest

    def run(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.cli, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120)
        assert result.returncode == expect, result.stderr
        return result

    def get(self, path: str) -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")


@pytest.fixture
def demo(tmp_path: Path, certstatus_cli: list[str]) -> Iterator[Demo]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["CERTSTATUS_PUBLIC_PORT"] = str(_free_port())
    env["CERTSTATUS_ADMIN_PORT"] = str(_free_port())
    # The cheat sheet calls `certstatus`: make the one under test the one on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    d = Demo(tmp_path, env, certstatus_cli)
    yield d
    # Never leave a demo or its servers behind, even when the test failed.
    for proc in d.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    for pid in _server_pids(d.data_dir):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_demo_end_to_end(demo: Demo, openssl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc, banner = demo.start()
    try:
        assert "certstatus demo is ready" in banner
        status, body, _ = demo.get("/healthz")
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        status, body, _ = demo.get("/readyz")
        assert status == 200 and orjson.loads(body)["postgres"] == "ok"

        demo_dir = demo.data_dir / "demo"
        manifest = orjson.loads((demo_dir / "manifest.json").read_bytes())
        assert {(m["issuer"], m["status"]) for m in manifest} == {
            (i, s) for i in ("moica", "gca") for s in ("good", "revoked", "suspended")
        }
        for m in manifest:
            cert = demo_dir / m["certificate"]
            text = openssl("x509", "-in", cert, "-noout", "-text").stdout
            assert "Subject: C = TW" in text and "CRL Distribution Points" in text
            verify = openssl("verify", "-CAfile", demo_dir / "root.pem", "-untrusted", demo_dir / f"{m['issuer']}.pem", cert)
            assert verify.stdout.strip().endswith(": OK")
            assert oct((demo_dir / m["key"]).stat().st_mode & 0o777) == "0o600"
            # The caIssuers URL in the certificate is served by the demo's responder.
            aia = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
                x509.AuthorityInformationAccess
            ).value
            ca_url = next(d.access_location.value for d in aia if d.access_method._name == "caIssuers")
            status, der, ctype = demo.get(ca_url.split(f":{demo.port}", 1)[1])
            assert (status, ctype) == (200, "application/pkix-cert")
            assert x509.load_der_x509_certificate(der).subject == x509.load_pem_x509_certificate(
                (demo_dir / f"{m['issuer']}.pem").read_bytes()
            ).subject

        # Another process attaches to the running servers and sees the same state.
        listed = {c["serial"]: c["status"] for c in orjson.loads(demo.run("cert", "list", "--json").stdout)}
        assert all(listed[m["serial"]] == m["status"] for m in manifest)

        # Every command in the cheat sheet works as written (and the one marked "refused" is refused).
        _run_cheat_sheet(demo)
    finally:
        if proc.poll() is None:
            demo.stop(proc, signal.SIGINT)

    # Run again: the same CA and samples come back from the data directory.
    proc, _ = demo.start()
    again = orjson.loads((demo.data_dir / "demo" / "manifest.json").read_bytes())
    assert [m["serial"] for m in again] == [m["serial"] for m in manifest]
    out = demo.stop(proc, signal.SIGTERM)
    assert "stopping" in out


def _run_cheat_sheet(demo: Demo) -> None:
    sheet = (demo.data_dir / "CHEATSHEET.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", sheet, flags=re.S)
    assert len(blocks) == 5
    commands = [c for c in "\n".join(blocks).replace("\\\n", " ").splitlines() if c.strip()]
    env_line = next(c for c in commands if c.startswith("export "))
    have_curl = shutil.which("curl") is not None
    ran = 0
    for command in commands:
        if command.startswith("export ") or (command.startswith("curl") and not have_curl):
            continue
        refused = "refused" in command
        result = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {env_line}; {command}"], cwd=demo.cwd, env=demo.env,
            capture_output=True, text=True, timeout=120,
        )
        assert (result.returncode != 0) == refused, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        ran += 1
    assert ran >= 27
