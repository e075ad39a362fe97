"""Replay the tax-season deadline day against a fresh certstatus, in one command.

    python bench/tax_season.py --scale 1 --minutes 5 --certs 100000

It starts a complete system on this machine, every part its own process, the way an operator
would: the embedded PostgreSQL and Valkey (``certstatus services``, snapshots off for the run),
a CA (``ca init``), the dataset with its ground truth (``certstatus bench load``),
``certstatus signer``, ``certstatus serve`` (``--workers``, one per core) and ``certstatus
admin serve`` with an operator token. Then it replays the compressed day with two relying-party
generators on one curve (bench/dayshape.py): Locust (bench/locustfile.py) carries
``--locust-share`` of the checks and every other user (CA admins, the burst, CRL consumers,
stream subscribers); bench/fastgen.py, an open-loop raw-socket generator, carries the rest.
Both check every answer against the ground truth. After the day, bench/ceiling.py measures the
responder's max throughput with wrk next to nginx serving the same bytes (``--no-ceiling``
skips it). It merges the per-process files into ``checks.csv`` and ``propagation.csv``,
writes ``meta.json`` (commands, commit, generators, their shares and whether they saturated)
and turns the run into a report with ``bench/report.py``. Everything it started is stopped at
the end, also on Ctrl-C.

Locust with checking tops out near 3,000 requests/s on a 2-core machine and its latencies
include its own wait for the CPU: that is why it carries only a sample (2 % by default) and
fastgen the load; ``--locust-share 1`` runs Locust alone.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the project's packages (ca_core, bench) from this tree
    sys.path.insert(0, str(ROOT))

from bench.fastgen import SCHEDULE_DONE  # noqa: E402 - after the path set-up above
from bench.ladder import CHECKING_S, DEFAULT_RATES, climb, parse_rungs, wait_for_text  # noqa: E402

PASSPHRASE = "tax season bench passphrase"
#: fastgen's verified answers, handed from the replay to each rung of the ladder (in the work dir).
CHECKER_MEMO = "checker-memo.bin"


def _certstatus() -> list[str]:
    return [sys.executable, "-m", "responder"]


class System:
    """The processes of one run; every one is stopped by :meth:`stop`."""

    def __init__(self, work: Path, env: dict[str, str], log_dir: Path) -> None:
        self.work, self.env, self.log_dir = work, env, log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: list[str] = []

    def run(self, name: str, args: Sequence[str], *, timeout: float = 3600) -> str:
        argv = [*_certstatus(), *args]
        self.commands.append("certstatus " + shlex.join(args))
        print(f"$ certstatus {shlex.join(args)}", flush=True)
        result = subprocess.run(argv, env=self.env, cwd=self.work, capture_output=True, text=True, timeout=timeout)
        (self.log_dir / f"{name}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"certstatus {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
        return result.stdout

    def start(self, name: str, args: Sequence[str], ready: str, *, env: dict[str, str] | None = None) -> None:
        self.commands.append("certstatus " + shlex.join(args) + " &")
        print(f"$ certstatus {shlex.join(args)} &", flush=True)
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([*_certstatus(), *args], env={**self.env, **(env or {})}, cwd=self.work, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs[name] = p
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}); see {self.log_dir / (name + '.log')}")
            if re.search(ready, (self.log_dir / f"{name}.log").read_text(errors="replace")):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not come up in 180 s")

    def stop(self) -> None:
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            print(f"stopped {name} ({p.returncode})", flush=True)


class CpuSampler(threading.Thread):
    """Where the two cores go: every second, the CPU time of each part of the run (a process
    and all its descendants: ``services`` is PostgreSQL and Valkey, ``responder`` its workers,
    ``locust`` its workers too), and the machine's, into ``cpu.csv`` as cores used per second.
    ``other`` is what the machine spent outside those parts (this script, anything else)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.roots: dict[str, int] = {}
        self.out = out
        self.done = threading.Event()
        self.last: dict[str, float] = {}
        # CPU seconds per part, summed second by second: a part whose process tree is gone by
        # the last sample (Locust exits before the sampler stops) keeps what it spent.
        self.spent: dict[str, float] = {}
        self.wall = (0.0, 0.0)

    @staticmethod
    def _machine() -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]  # user nice system irq softirq
        return busy / CpuSampler.TICK

    def sample(self) -> dict[str, float]:
        """Per part: utime+stime+cutime+cstime over its live process tree, so that a process
        that has exited and been waited for still counts, in its parent's cutime, exactly once."""
        parent: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                pid = int(entry.name)
                parent[pid] = int(fields[1])
                cpu[pid] = sum(int(x) for x in fields[11:15]) / self.TICK
        totals = {name: 0.0 for name in self.roots}
        owner = {pid: name for name, pid in self.roots.items()}
        for pid in cpu:
            p, hops = pid, 0
            while p not in owner and p > 1 and hops < 64:
                p, hops = parent.get(p, 0), hops + 1
            if p in owner:
                totals[owner[p]] += cpu[pid]
        totals["machine"] = self._machine()
        return totals

    def run(self) -> None:
        with open(self.out, "w", newline="") as f:
            writer: Any = None
            start = prev_t = time.monotonic()
            prev = self.sample()
            while not self.done.wait(1.0):
                now_t, now = time.monotonic(), self.sample()
                for name in now:  # a part registered since: its time so far is not this second's
                    prev.setdefault(name, now[name])
                span = max(1e-6, now_t - prev_t)
                for k in now:
                    self.spent[k] = self.spent.get(k, 0.0) + max(0.0, now[k] - prev[k])
                used = {k: max(0.0, now[k] - prev[k]) / span for k in now}
                used["other"] = max(0.0, used["machine"] - sum(v for k, v in used.items() if k != "machine"))
                if writer is None:
                    writer = csv.writer(f)
                    writer.writerow(["t_s", *sorted(used)])
                writer.writerow([round(now_t - start), *(f"{used[k]:.3f}" for k in sorted(used))])
                f.flush()
                prev, prev_t, self.last = now, now_t, now
            self.wall = (start, prev_t)

    def totals(self) -> dict[str, float]:
        """Core-seconds of each part over the sampled time, and the wall time it covers."""
        spent = {k: round(v, 1) for k, v in self.spent.items()}
        spent["other"] = round(spent.get("machine", 0.0) - sum(v for k, v in spent.items() if k != "machine"), 1)
        spent["wall_s"] = round(self.wall[1] - self.wall[0], 1)
        return spent


def merge(run_dir: Path, pattern: str, out: str, key: str | None) -> None:
    """Per-process CSVs into one: summed by ``key`` (checks) or concatenated (propagation)."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for path in sorted(glob.glob(str(run_dir / pattern))):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows.extend(reader)
        os.unlink(path)
    if header is None:
        return
    if key is not None:
        summed: dict[int, dict[str, int]] = {}
        for row in rows:
            acc = summed.setdefault(int(row[key]), {h: 0 for h in header if h != key})
            for h in acc:
                acc[h] += int(row[h])
        rows = [{key: str(k), **{h: str(v) for h, v in summed[k].items()}} for k in sorted(summed)]
    with open(run_dir / out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def saturation(run_dir: Path, peak_target: float) -> dict[str, Any]:
    """Did Locust deliver its part of the peak? Its best relying-party OCSP rate (all "ocsp
    ..." request types at one history timestamp, summed) against its planned peak (its share,
    shape.csv's ``locust_rps``; the whole target without that column)."""
    with contextlib.suppress(OSError, KeyError, ValueError), open(run_dir / "shape.csv", newline="") as f:
        peak_target = max(float(row["locust_rps"]) for row in csv.DictReader(f))
    history = run_dir / "locust_stats_history.csv"
    by_time: dict[str, float] = {}
    if history.exists():
        with open(history, newline="") as f:
            for row in csv.DictReader(f):
                if "ocsp" in (row.get("Name") or "").lower():
                    with contextlib.suppress(ValueError):
                        by_time[row["Timestamp"]] = by_time.get(row["Timestamp"], 0.0) + float(row["Requests/s"] or 0)
    best = max(by_time.values(), default=0.0)
    return {"locust": best < 0.9 * peak_target, "best_ocsp_rps": round(best, 1), "peak_target_rps": peak_target}


def _without_paths(text: str, work: Path, run_dir: Path) -> str:
    """An error's text for a report that may be committed: no path of this machine."""
    for path, name in ((work, "WORK_DIR"), (run_dir, "RUN_DIR"), (ROOT, "."), (Path(sys.executable), "python")):
        text = text.replace(str(path), name)
    return text


def ceiling(run_dir: Path, port: int, truth_dir: Path, work: Path, workers: int) -> None:
    """The responder's max throughput with wrk, next to nginx serving the same bytes, on the
    system just replayed (bench/ceiling.py); "not measured" with the reason if it cannot run."""
    from bench.ceiling import measure_ceiling

    print("$ ceiling: wrk against the responder and nginx (bench/ceiling.py)", flush=True)
    try:
        result = measure_ceiling(responder_port=port, truth_dir=truth_dir, work_dir=work,
                                 out=run_dir / "ceiling.json", nginx_workers=workers)  # fmt: skip
        targets = {t["name"]: t["req_s"] for t in result["targets"]}
        print(f"ceiling: {targets}", flush=True)
    except Exception as e:  # noqa: BLE001 - the day's results must survive whatever the ceiling does
        text = _without_paths(f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e), work, run_dir)
        (run_dir / "ceiling.json").write_text(json.dumps({"error": text}))
        print(f"ceiling not measured: {text}", flush=True)


def rate_ladder(system: System, run_dir: Path, truth_dir: Path, work: Path, port: int, rates: Sequence[float],
                opts: argparse.Namespace, sampler: CpuSampler) -> bool:  # fmt: skip
    """The rate ladder (bench/ladder.py) on the system just replayed. Whatever stops it, the
    day's results are kept and so are the rungs it finished (ladder.json gets ``stopped``,
    or ``error`` when no rung finished). False when interrupted (Ctrl-C): skip the rest."""
    try:
        result = climb(truth_dir=truth_dir, url=f"http://127.0.0.1:{port}", run_dir=run_dir, rates=rates,
                       seconds=opts.ladder_seconds, connections=opts.fastgen_connections, cpu=sampler.sample,
                       checker_memo=work / CHECKER_MEMO)  # fmt: skip
        system.commands += [c + "  # the rate ladder" for c in result["commands"]]
        return True
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the day's results must survive the ladder
        text = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
        text = _without_paths(text, work, run_dir)
        path = run_dir / "ladder.json"
        with contextlib.suppress(OSError, ValueError):
            finished = json.loads(path.read_text())
            if finished.get("rungs"):
                path.write_text(json.dumps({**finished, "stopped": text}, indent=1))
                print(f"rate ladder stopped: {text}", flush=True)
                return not isinstance(e, KeyboardInterrupt)
        path.write_text(json.dumps({"error": text}))
        print(f"rate ladder not measured: {text}", flush=True)
        return not isinstance(e, KeyboardInterrupt)


def wait_ready(proc: subprocess.Popen[bytes], log: Path, text: str, name: str, timeout: float = 900) -> None:
    """Until ``text`` shows in ``log`` (fastgen draws its requests before it is ready);
    RuntimeError if the process exits first or ``timeout`` passes."""
    if wait_for_text(proc, log, text, timeout):
        return
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text(errors='replace')[-1000:]}")
    raise RuntimeError(f"{name} was not ready in {timeout:g} s")


def finish_fastgen(proc: subprocess.Popen[bytes], log: Path, *, grace: float = 60.0) -> int:
    """fastgen's exit status once the day is over: ``grace`` seconds for its schedule to end
    (SIGTERM after that: it stops sending and drains), then as long as the checking of the
    answers it kept for after the run takes, up to ladder.CHECKING_S."""
    if not wait_for_text(proc, log, SCHEDULE_DONE, grace) and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=CHECKING_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def cpu_note(spent: dict[str, float]) -> list[str]:
    """One line for the report: core-seconds of each part during the replay."""
    if not spent or not spent.get("wall_s"):
        return []
    wall = spent["wall_s"]
    parts = sorted(((k, v) for k, v in spent.items() if k not in ("machine", "wall_s")), key=lambda kv: -kv[1])
    shown = ", ".join(f"{k} {v / wall:.2f}" for k, v in parts)
    return [f"CPU during the replay, in cores on average over {wall:,.0f} s (cpu.csv per second): {shown}; "
            f"the machine {spent.get('machine', 0.0) / wall:.2f} of {os.cpu_count()}"]  # fmt: skip


@contextlib.contextmanager
def valkey(data_dir: Path) -> Iterator[Any]:
    """A client of the run's embedded Valkey (its socket under ``data_dir``)."""
    import redis

    from ca_core.storage.embedded import EmbeddedServices

    client = redis.Redis.from_url(EmbeddedServices(data_dir).redis_url)
    try:
        yield client
    finally:
        client.close()


#: Valkey commands slower than this (µs) are kept in its slow log during the replay.
SLOWLOG_US = 5000


def valkey_slowlog(data_dir: Path, *, reset: bool = False) -> dict[str, Any]:
    """Valkey's own view of the replay: with ``reset``, clear the slow log and count from now
    (commands over 5 ms); without, what it holds (each entry's time, duration and command
    name with its argument count; never the arguments, which hold keys and responses) and
    the commands' call counts and times. A slow command blocks every client of the
    single-threaded server: the responder's cache misses wait behind it."""
    with valkey(data_dir) as client:
        if reset:
            client.config_set("slowlog-log-slower-than", SLOWLOG_US)
            client.config_set("slowlog-max-len", 1024)
            client.slowlog_reset()
            return {}
        entries = []
        for e in client.slowlog_get(1024):
            command = e["command"]
            words = (command.decode("latin-1") if isinstance(command, bytes) else str(command)).split(" ")
            # the name only, and roughly how many words followed (binary values may hold spaces)
            entries.append({"at": e["start_time"], "duration_us": e["duration"], "command": words[0].upper(),
                            "words_after": len(words) - 1})  # fmt: skip
        stats = client.info("commandstats")
        return {"slower_than_us": SLOWLOG_US, "entries": entries,
                "commandstats": {k: {f: v[f] for f in ("calls", "usec", "usec_per_call") if f in v}
                                 for k, v in stats.items()}}  # fmt: skip


def slowlog_note(slowlog: dict[str, Any]) -> list[str]:
    """One line for the report: Valkey commands over the slow-log threshold during the replay."""
    if "entries" not in slowlog:
        return []
    entries = slowlog["entries"]
    worst = max(entries, key=lambda e: e["duration_us"], default=None)
    tail = f"; the slowest {worst['command']} took {worst['duration_us'] / 1000:.1f} ms" if worst else ""
    return [f"Valkey slow log during the replay (valkey-slowlog.json): {len(entries)} commands over "
            f"{slowlog['slower_than_us'] / 1000:g} ms{tail}"]  # fmt: skip


#: What responder.gcwatch logs for a collection over 20 ms.
_GC_PAUSE = re.compile(
    rb"garbage collection paused this process: generation (\d), ([\d.]+) ms(?: \(([\d.]+) ms of CPU\))?"
)


def responder_gc_pauses(log: Path, start: int, end: int | None = None) -> dict[str, Any]:
    """The responder workers' long garbage collections (responder.gcwatch's warnings) in
    ``log`` from byte ``start`` to ``end`` (the end of the file): how many per generation,
    the longest, and the total wall and CPU time (less CPU than wall: the worker also
    waited for a core)."""
    from responder.gcwatch import WARN_AFTER

    with open(log, "rb") as f:
        f.seek(start)
        text = f.read(None if end is None else end - start)
    found = [(int(m[1]), float(m[2]), float(m[3] or 0)) for m in _GC_PAUSE.finditer(text)]
    return {
        "over_ms": round(WARN_AFTER * 1000),
        "count": len(found),
        "by_generation": {g: sum(1 for x, _, _ in found if x == g) for g in (0, 1, 2)},
        "longest_ms": max((ms for _, ms, _ in found), default=0.0),
        "total_ms": round(sum(ms for _, ms, _ in found), 1),
        "total_cpu_ms": round(sum(cpu for _, _, cpu in found), 1),
    }


def gc_note(pauses: dict[str, Any], during: str = "the replay") -> list[str]:
    """One line for the report: the responder's garbage-collection pauses during ``during``."""
    if "count" not in pauses:
        return []
    by = ", ".join(f"gen {g}: {n}" for g, n in pauses["by_generation"].items() if n)
    detail = (
        f" ({by}), the longest {pauses['longest_ms']:.0f} ms, {pauses['total_ms']:,.0f} ms in all "
        f"({pauses.get('total_cpu_ms', 0):,.0f} ms of it on the CPU)"
        if by
        else ""
    )
    return [f"Responder garbage collections over {pauses['over_ms']} ms during {during} (responder.gcwatch "
            f"warnings in logs/responder.log): {pauses['count']}{detail}"]  # fmt: skip


def snapshots_off(data_dir: Path) -> None:
    """Switch off the embedded Valkey's RDB snapshots for the run: with millions of responses
    a BGSAVE forks a multi-GB process and writes it out in the middle of the measurement (and
    with 11 M certificates the fork's copy-on-write could double Valkey's memory)."""
    with valkey(data_dir) as client:
        client.config_set("save", "")


def tamper_truth(truth_dir: Path) -> int:
    """The most asked-about good certificate recorded as revoked for keyCompromise; its rank."""
    with open(truth_dir / "truth.bin", "r+b") as f:
        rank = 0
        while True:
            record = bytearray(f.read(23))
            if len(record) < 23:
                raise RuntimeError("no good certificate in the truth to tamper with")
            if record[21] == 0:
                break
            rank += 1
        record[21], record[22] = 1, 1
        f.seek(rank * 23)
        f.write(record)
    print(f"ground truth tampered: rank {rank} now says revoked (every answer about it must count as wrong)")
    return rank


def code_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ca_core", "responder", "bench"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def workdir(given: str | None) -> Iterator[Path]:
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="certstatus-tax-season-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/tax_season.py",
        description=__doc__.split("\n\n")[0] + " A whole system is started, loaded, replayed and reported on.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Output: RUN_DIR (--run-dir, default bench/results/runs/<UTC time>-x<scale>/) holds Locust's CSVs,\n"
            "checks.csv, propagation.csv, shape.csv, meta.json and the logs; bench/report.py makes the\n"
            "report from it (run again by hand with 'python bench/report.py RUN_DIR').\n"
            "Goals (issue 6): zero wrong answers, error rate < 0.1 %, p99 < 50 ms, propagation p99 < 1 s."
        ),
    )
    parser.add_argument("--scale", type=float, default=1.0, help="x1 = 100 checks/s at the peak hour (default 1)")
    parser.add_argument("--minutes", type=float, default=10.0, help="the 24-hour day compressed into this (default 10)")
    parser.add_argument("--certs", type=int, default=100_000, help="certificates loaded (default 100,000)")
    parser.add_argument("--per-user-rps", type=float, default=5.0, help="checks/s per Locust user (default 5)")
    parser.add_argument("--locust-share", type=float, default=0.02,
                        help="Locust's share of the relying-party checks; bench/fastgen.py carries the rest "
                             "(default 0.02, 100/s at the x50 peak; 1 = Locust alone)")  # fmt: skip
    parser.add_argument("--fastgen-connections", type=int, default=64, help="fastgen's connections (default 64)")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip the max-throughput measurement after the replay (bench/ceiling.py: wrk, "
                             "the responder and nginx serving the same bytes)")  # fmt: skip
    parser.add_argument("--ladder", default=",".join(f"{r:g}" for r in DEFAULT_RATES),
                        help="after the replay, the rate ladder's rungs in checks/s (bench/ladder.py: fastgen alone at "
                             "each constant rate, judged by the day's rules, up to the first rung not held; "
                             "default %(default)s)")  # fmt: skip
    parser.add_argument("--ladder-seconds", type=float, default=40.0, help="each rung's length (default 40)")
    parser.add_argument("--no-ladder", action="store_true", help="skip the rate ladder")
    parser.add_argument("--locust-processes", type=int, default=1, help="Locust --processes (default 1)")
    parser.add_argument("--admin-users", type=int, default=1, help="CA-admin users (default 1)")
    parser.add_argument("--crl-users", type=int, default=1, help="CRL consumers (default 1)")
    parser.add_argument("--burst-at", type=float, default=23 / 24,
                        help="when the 50/s revocation burst starts, as a fraction of the day (default 23/24)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4),
                        help="public responder processes (CERTSTATUS_WORKERS; default: one per core, at most 4)")  # fmt: skip
    parser.add_argument("--work-dir", help="keep the system's data here (default: a temporary directory)")
    parser.add_argument("--run-dir", help="where the run's files go")
    parser.add_argument("--no-report", action="store_true", help="skip bench/report.py")
    parser.add_argument(
        "--report-dir", help="where the report goes (default: bench/report.py's, bench/results/<date>-<scenario>/)"
    )
    parser.add_argument("--tamper-truth", action="store_true",
                        help="self-test of the checks: mark the most popular certificate revoked in the ground truth, "
                             "so every answer about it must be counted wrong")  # fmt: skip
    opts = parser.parse_args(argv)
    ladder_rates: list[float] = []
    if not opts.no_ladder:
        try:
            ladder_rates = parse_rungs(opts.ladder, opts.ladder_seconds)
        except ValueError as e:
            parser.error(f"--ladder/--ladder-seconds: {e}")
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    run_dir = Path(opts.run_dir) if opts.run_dir else ROOT / "bench" / "results" / "runs" / f"{stamp}-x{opts.scale:g}"
    run_dir.mkdir(parents=True, exist_ok=True)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    from bench.ocsp import free_port

    public_port, admin_port = free_port(), free_port()
    with workdir(opts.work_dir) as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSTATUS_")}
        env.update(CERTSTATUS_DATA_DIR=str(work / "data"), CERTSTATUS_KEY_PASSPHRASE=PASSPHRASE,
                   CERTSTATUS_ROOT_KEY_TYPE="ec-p384", CERTSTATUS_ISSUER_KEY_TYPE="ec-p256",
                   CERTSTATUS_PUBLIC_PORT=str(public_port), CERTSTATUS_ADMIN_PORT=str(admin_port),
                   CERTSTATUS_PUBLIC_BASE_URL=f"http://127.0.0.1:{public_port}",
                   CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS="5", CERTSTATUS_WORKERS=str(opts.workers),
                   PYTHONPATH=str(ROOT))  # fmt: skip
        system = System(work, env, logs)
        fastgen: subprocess.Popen[bytes] | None = None
        sampler = CpuSampler(run_dir / "cpu.csv")
        slowlog: dict[str, Any] = {}
        gc_pauses: dict[str, Any] = {}
        ladder_gc: dict[str, Any] = {}
        try:
            system.start("services", ["services"], r"Ctrl-C stops them")
            snapshots_off(work / "data")
            system.run("ca-init", ["ca", "init", "--issuer", "moica", "--issuer", "gca"])
            truth_dir = work / "truth"
            system.run("bench-load", ["bench", "load", "--certs", str(opts.certs), "--truth-dir", str(truth_dir)])
            if opts.tamper_truth:
                tamper_truth(truth_dir)
            system.start("signer", ["signer"], r"")  # prints nothing when there is nothing to fill
            system.start("responder", ["serve"], r"public (responder|workers) on")
            token = json.loads(system.run("token", ["admin", "token", "create", "bench-ops", "--role", "operator",
                                                    "--json"]))["token"]  # fmt: skip
            system.commands[-1] += "  # the token is not recorded"
            system.start("admin", ["admin", "serve"], r"admin API on")
            locust_env = {**env, "CERTSTATUS_BENCH_TRUTH": str(truth_dir), "CERTSTATUS_BENCH_RUN_DIR": str(run_dir),
                          "CERTSTATUS_BENCH_SCALE": str(opts.scale), "CERTSTATUS_BENCH_MINUTES": str(opts.minutes),
                          "CERTSTATUS_BENCH_PER_USER_RPS": str(opts.per_user_rps),
                          "CERTSTATUS_BENCH_RESPONDER_URL": f"http://127.0.0.1:{public_port}",
                          "CERTSTATUS_ADMIN_URL": f"http://127.0.0.1:{admin_port}", "CERTSTATUS_ADMIN_TOKEN": token,
                          "CERTSTATUS_BENCH_ADMIN_USERS": str(opts.admin_users),
                          "CERTSTATUS_BENCH_CRL_USERS": str(opts.crl_users),
                          "CERTSTATUS_BENCH_BURST_AT": str(opts.burst_at),
                          "CERTSTATUS_BENCH_LOCUST_SHARE": str(opts.locust_share)}  # fmt: skip
            (run_dir / "meta-locust.json").unlink(missing_ok=True)  # fastgen starts on Locust's, not an old one
            if opts.locust_share < 1:
                fastgen_args = ["bench/fastgen.py", "--truth-dir", str(truth_dir), "--url",
                                f"http://127.0.0.1:{public_port}", "--run-dir", str(run_dir), "--scale", str(opts.scale),
                                "--minutes", str(opts.minutes), "--share", str(opts.locust_share),
                                "--per-user-rps", str(opts.per_user_rps),
                                "--connections", str(opts.fastgen_connections),
                                "--checker-memo", str(work / CHECKER_MEMO)]  # fmt: skip
                system.commands.append("python " + shlex.join(fastgen_args) + " &")
                print(f"$ python {shlex.join(fastgen_args)} &", flush=True)
                fastgen_log = open(logs / "fastgen.log", "wb")  # noqa: SIM115 - closed below
                fastgen = subprocess.Popen([sys.executable, *fastgen_args], env=locust_env, cwd=ROOT,
                                           stdout=fastgen_log, stderr=subprocess.STDOUT)  # fmt: skip
                wait_ready(fastgen, logs / "fastgen.log", "requests planned", "fastgen")
            locust = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
                      "--csv", str(run_dir / "locust"), "--csv-full-history", "--only-summary",
                      "--processes", str(opts.locust_processes), "--stop-timeout", "10"]  # fmt: skip
            system.commands.append("locust " + shlex.join(locust[3:]))
            print(f"$ locust {shlex.join(locust[3:])}", flush=True)
            valkey_slowlog(work / "data", reset=True)
            gc_from = (logs / "responder.log").stat().st_size
            sampler.roots.update({name: p.pid for name, p in system.procs.items()})
            if fastgen is not None:
                sampler.roots["fastgen"] = fastgen.pid
            with open(logs / "locust.log", "wb") as log:
                locust_proc = subprocess.Popen(locust, env=locust_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                sampler.roots["locust"] = locust_proc.pid
                if not sampler.is_alive():
                    sampler.start()
                code = locust_proc.wait()
            sampler.done.set()
            sampler.join()
            slowlog = valkey_slowlog(work / "data")
            (run_dir / "valkey-slowlog.json").write_text(json.dumps(slowlog, indent=1))
            print(f"locust exited with {code} (1 means some requests failed: see the report)", flush=True)
            if fastgen is not None:
                fastgen_code = finish_fastgen(fastgen, logs / "fastgen.log")
                fastgen_log.close()
                print(f"fastgen exited with {fastgen_code}: {(logs / 'fastgen.log').read_text()[-400:].strip()}")
            gc_to = (logs / "responder.log").stat().st_size  # the replay's part of the log ends with fastgen
            gc_pauses = responder_gc_pauses(logs / "responder.log", gc_from, gc_to)
            go_on = True
            if not opts.no_ladder:
                go_on = rate_ladder(system, run_dir, truth_dir, work, public_port, ladder_rates, opts, sampler)
                ladder_gc = responder_gc_pauses(logs / "responder.log", gc_to)
            if not opts.no_ceiling and go_on:
                ceiling(run_dir, public_port, truth_dir, work, opts.workers)
        finally:
            if fastgen is not None and fastgen.poll() is None:  # the run failed before fastgen finished
                fastgen.send_signal(signal.SIGTERM)
                try:
                    fastgen.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    fastgen.kill()
            system.stop()
    merge(run_dir, "checks-*.csv", "checks.csv", key="t_s")
    merge(run_dir, "propagation-*.csv", "propagation.csv", key=None)
    meta_path = run_dir / "meta-locust.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta_path.unlink(missing_ok=True)

    def masked(line: str) -> str:  # no path of this machine in a report that may be committed
        paths = [(run_dir, "RUN_DIR"), (work, "WORK_DIR"), (ROOT, "."), (Path(sys.executable), "python")]
        if opts.report_dir:
            paths.insert(0, (Path(opts.report_dir), "REPORT_DIR"))
        for path, name in paths:
            line = line.replace(str(path), name)
        return line

    cpu_s = sampler.totals() if sampler.last else {}
    meta.update(commands=[masked(c) for c in ["python bench/tax_season.py "
                          + shlex.join(list(argv if argv is not None else sys.argv[1:])), *system.commands]],
                delta_interval_s=5, responder_workers=opts.workers,
                notes=["Valkey RDB snapshots were switched off for the run (CONFIG SET save \"\")."]
                      + cpu_note(cpu_s) + slowlog_note(slowlog) + gc_note(gc_pauses)
                      + gc_note(ladder_gc, "the rate ladder"),
                cpu_s=cpu_s, responder_gc_pauses=gc_pauses, ladder_gc_pauses=ladder_gc,
                commit=code_commit(), certs=opts.certs, locust_processes=opts.locust_processes,
                saturated=saturation(run_dir, 100.0 * opts.scale))  # fmt: skip
    meta["generators"] = [{"name": "locust", "processes": opts.locust_processes, "share": opts.locust_share,
                           "load": f"{opts.locust_share:.0%} of the relying-party checks (at least one user; every "
                                   "answer checked), CA admins, the burst, CRL consumers, stream subscribers"}]  # fmt: skip
    fastgen_path = run_dir / "fastgen.json"
    if opts.locust_share < 1:
        meta["generators"].append({"name": "fastgen", "processes": 1, "connections": opts.fastgen_connections,
                                   "share": round(1 - opts.locust_share, 4),
                                   "load": "the rest of the relying-party checks (open loop, every answer checked)"})  # fmt: skip
        if fastgen_path.exists():
            fg = json.loads(fastgen_path.read_text())
            meta["saturated"].update(fastgen=fg["saturated"], fastgen_reason=fg["saturation_reason"])
        else:
            meta["saturated"].update(fastgen=True, fastgen_reason="fastgen wrote no results: see logs/fastgen.log")
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"run files in {run_dir}")
    if not opts.no_report:
        from bench.report import build_report

        print(f"report: {build_report(run_dir, Path(opts.report_dir) if opts.report_dir else None)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
