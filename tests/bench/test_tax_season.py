"""The Locust suite end to end, tiny: a whole system started by bench/tax_season.py, a
compressed day replayed with every answer checked, and a report made. Then the same with the
ground truth tampered, to prove a wrong answer is counted as one."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent.parent


def run(tmp_path: Path, *extra: str) -> Path:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tax_season.py"), "--minutes", "0.4", "--certs", "1500",
         "--run-dir", str(run_dir), "--work-dir", str(tmp_path / "work"), "--no-ceiling", *extra],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    return run_dir


def totals(run_dir: Path) -> dict[str, int]:
    out = {"checked": 0, "wrong": 0, "stale": 0, "sig_fail": 0}
    with open(run_dir / "checks.csv", newline="") as f:
        for row in csv.DictReader(f):
            for k in out:
                out[k] += int(row[k])
    return out


def ocsp_requests(run_dir: Path) -> tuple[int, int]:
    with open(run_dir / "locust_stats.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] in ("ocsp GET", "ocsp POST")]
    return sum(int(r["Request Count"]) for r in rows), sum(int(r["Failure Count"]) for r in rows)


def test_a_clean_run_is_checked_and_reported(tmp_path: Path) -> None:
    # A short day: the burst mid-day, so that it surely falls inside the run. Locust alone
    # carries the relying parties here; the next test splits them with fastgen.
    run_dir = run(tmp_path, "--report-dir", str(tmp_path / "report"), "--burst-at", "0.5", "--locust-share", "1",
                  "--no-ladder")  # fmt: skip
    requests, failures = ocsp_requests(run_dir)
    checks = totals(run_dir)
    assert requests > 100 and failures == 0
    assert checks["checked"] >= requests * 0.9 and checks["wrong"] == checks["stale"] == checks["sig_fail"] == 0
    assert not (run_dir / "fastgen.json").exists()
    with open(run_dir / "propagation.csv", newline="") as f:
        changes = list(csv.DictReader(f))
    assert changes and all(c["ocsp_seen_s"] for c in changes if c["kind"] != "burst"), changes
    kinds = {c["kind"] for c in changes}
    assert {"suspend", "burst"} <= kinds, kinds
    with open(run_dir / "locust_stats.csv", newline="") as f:
        stats = {r["Name"]: r for r in csv.DictReader(f)}
    assert (
        int(stats["crl stream connect"]["Request Count"]) >= 1 and stats["crl stream connect"]["Failure Count"] == "0"
    )
    assert int(stats["admin burst batch"]["Request Count"]) >= 1 and stats["admin burst batch"]["Failure Count"] == "0"
    assert all(r["Failure Count"] == "0" for r in stats.values()), {n: r["Failure Count"] for n, r in stats.items()}
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["commands"][0].startswith("python bench/tax_season.py")
    assert not any(str(tmp_path) in c for c in meta["commands"])  # no machine path in what may be committed
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "| zero wrong answers (wrong status, stale, bad signature) | met |" in text
    for png in ("throughput.png", "latency.png", "propagation.png", "checks.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fastgen_carries_the_rest_and_is_checked_too(tmp_path: Path) -> None:
    run_dir = run(tmp_path, "--scale", "4", "--locust-share", "0.25", "--no-report", "--ladder", "300,150",
                  "--ladder-seconds", "10")  # fmt: skip
    fastgen = json.loads((run_dir / "fastgen.json").read_text())
    requests, failures = ocsp_requests(run_dir)
    # x4 is 400/s at the peak: Locust a quarter (at least one user), fastgen the rest.
    assert fastgen["requests"] > requests > 50 and failures == 0, (fastgen, requests)
    assert fastgen["requests"] == fastgen["planned"] == sum(fastgen["outcomes"].values())
    assert fastgen["outcomes"]["checked"] == fastgen["requests"], fastgen
    assert fastgen["latency_ms"]["n"] == fastgen["requests"] and 0 < fastgen["latency_ms"]["p50"] < 1000
    checks = totals(run_dir)  # checks.csv sums both generators
    assert checks["checked"] >= fastgen["outcomes"]["checked"] + requests * 0.9 and checks["wrong"] == 0
    with open(run_dir / "fastgen.csv", newline="") as f:
        seconds = list(csv.DictReader(f))
    with open(run_dir / "shape.csv", newline="") as f:
        planned = {int(r["t_s"]): float(r["fastgen_rps"]) for r in csv.DictReader(f)}
    assert [float(r["target_rps"]) for r in seconds] == [planned[int(r["t_s"])] for r in seconds]
    assert sum(int(r["sent"]) for r in seconds) == fastgen["requests"]
    with open(run_dir / "fastgen-latency.csv", newline="") as f:
        assert sum(int(r["count"]) for r in csv.DictReader(f)) == fastgen["latency_ms"]["n"]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert [g["name"] for g in meta["generators"]] == ["locust", "fastgen"]
    assert meta["saturated"]["fastgen"] is fastgen["saturated"]
    # Where the cores went: every part of the run sampled, and some CPU seen for the busy ones.
    assert {"services", "responder", "signer", "admin", "locust", "fastgen", "machine"} <= set(meta["cpu_s"])
    assert meta["cpu_s"]["responder"] > 0 and meta["cpu_s"]["fastgen"] > 0 and meta["cpu_s"]["wall_s"] > 5
    assert meta["cpu_s"]["locust"] > 0  # counted although Locust has exited by the last sample
    with open(run_dir / "cpu.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) >= 5
    slowlog = json.loads((run_dir / "valkey-slowlog.json").read_text())
    assert slowlog["commandstats"]["cmdstat_get"]["calls"] > 0  # the responder read from Valkey during the replay
    assert any(n.startswith("Valkey slow log during the replay") for n in meta["notes"])
    # responder.gcwatch's warnings counted over the replay (none expected at this load, but the count is there)
    assert set(meta["responder_gc_pauses"]) >= {"count", "by_generation", "longest_ms", "over_ms"}
    assert any(n.startswith("Responder garbage collections over 20 ms") for n in meta["notes"])
    assert any(c.startswith("python bench/fastgen.py") for c in meta["commands"])
    assert not any(str(tmp_path) in c for c in meta["commands"]) and str(tmp_path) not in fastgen["command"]

    # The rate ladder after the replay: fastgen alone, lowest rung first, every answer checked.
    ladder = json.loads((run_dir / "ladder.json").read_text())
    assert [r["rate"] for r in ladder["rungs"]] == [150, 300] and ladder["seconds"] == 10
    for r in ladder["rungs"]:
        assert r["verdict"] == "held", r  # a few hundred checks/s on a 1,500-certificate system
        assert r["outcomes"]["checked"] == r["sent"] >= r["rate"] * 9
        assert r["cpu"]["responder"] > 0 and r["cpu"]["fastgen"] > 0 and r["cpu"]["machine"] > 0
        rung = json.loads((run_dir / "ladder" / f"{r['rate']:g}" / "fastgen.json").read_text())
        assert rung["requests"] == r["sent"] and rung["outcomes"]["wrong"] == 0
    assert ladder["sustained_rps"] == 300
    assert not any(str(tmp_path) in c for c in ladder["commands"])
    assert sum(1 for c in meta["commands"] if c.endswith("# the rate ladder")) == 2


def test_a_wrong_answer_is_counted_as_one(tmp_path: Path) -> None:
    run_dir = run(tmp_path, "--tamper-truth", "--no-report", "--scale", "2", "--locust-share", "0.5", "--no-ladder")
    requests, failures = ocsp_requests(run_dir)
    checks = totals(run_dir)
    fastgen = json.loads((run_dir / "fastgen.json").read_text())
    # The most popular certificate draws several % of all checks: each one is a failure now,
    # in both generators. (Locust's counts are taken at slightly different moments as it stops.)
    assert failures > 0 and fastgen["outcomes"]["wrong"] > 0, (failures, fastgen)
    assert any(p.startswith("wrong status: GOOD, the truth is REVOKED") for p in fastgen["problems"]), fastgen
    assert fastgen["outcomes"]["checked"] + fastgen["outcomes"]["wrong"] == fastgen["requests"]
    locust_wrong = checks["wrong"] - fastgen["outcomes"]["wrong"]
    assert abs(locust_wrong - failures) <= failures * 0.15 + 5, (checks, failures, fastgen["outcomes"])
    assert checks["checked"] + checks["wrong"] >= requests * 0.9
    with open(run_dir / "locust_failures.csv", newline="") as f:
        messages = {r["Error"] for r in csv.DictReader(f)}
    assert any("wrong status" in m for m in messages), messages


def test_responder_gc_pauses_are_read_from_the_replay_part_of_the_log(tmp_path: Path) -> None:
    """What responder.gcwatch writes, in the product's log format, is what the run counts,
    and only from where the replay started."""
    import logging

    from bench.tax_season import gc_note, responder_gc_pauses
    from responder.config import LOG_FORMAT
    from responder.gcwatch import GCWatch

    log = tmp_path / "responder.log"
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))  # configure_logging's
    logger = logging.getLogger("responder.gcwatch")
    logger.addHandler(handler)
    now = [0.0]
    watch = GCWatch(clock=lambda: now[0], cpu_clock=lambda: now[0] / 2)  # half of each pause on the CPU

    def collection(generation: int, ms: float) -> None:
        watch("start", {"generation": generation, "collected": 0, "uncollectable": 0})
        now[0] += ms / 1000
        watch("stop", {"generation": generation, "collected": 3, "uncollectable": 0})

    try:
        collection(2, 250.0)  # before the replay: not counted
        handler.flush()
        start = log.stat().st_size
        for generation, ms in ((1, 106.5), (0, 0.5), (2, 30.4), (1, 21.0)):
            collection(generation, ms)
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    pauses = responder_gc_pauses(log, start)
    assert pauses["count"] == 3 and pauses["by_generation"] == {0: 0, 1: 2, 2: 1}
    assert pauses["longest_ms"] == 106.5 and pauses["total_ms"] == pytest.approx(157.9)
    assert gc_note(pauses) == [
        "Responder garbage collections over 20 ms during the replay (responder.gcwatch warnings in "
        "logs/responder.log): 3 (gen 1: 2, gen 2: 1), the longest 106 ms, 158 ms in all (79 ms of it on the CPU)"
    ]
    assert responder_gc_pauses(log, log.stat().st_size)["count"] == 0
    assert responder_gc_pauses(log, 0, start)["longest_ms"] == 250.0  # [start, end): only the one before
    assert gc_note({}) == []
    assert gc_note(pauses, "the rate ladder")[0].startswith("Responder garbage collections over 20 ms during the rate ladder")
