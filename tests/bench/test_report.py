"""bench/report.py on synthetic runs: the summary's figures, the plots, and what is not measured.

``write_run`` writes a run directory as the Locust suite does: Locust's own CSV files (the
columns of its ``StatsCSVFileWriter`` with ``--csv-full-history``, its percentile algorithm,
the master's history advancing only when a worker reports, every 3 s), plus shape.csv,
checks.csv, propagation.csv and meta.json. The load is the deadline day compressed to 24
steps, against a responder with a known capacity: above it, answers fail and slow down.
``write_fastgen`` adds what the open-loop generator writes for the rest of the load
(fastgen.csv, its per-second latency histogram with fastgen's buckets, fastgen.json), with
slow answers and errors where a test wants them; ``CEILING`` is a ceiling.json. Every figure
the tests expect is computed here, from what was generated, not by the report's code.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import random
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from bench import report

T0 = dt.datetime(2026, 5, 31, 12, 0, tzinfo=dt.UTC)  # the deadline day
PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)  # Locust's default
PERCENTILE_COLUMNS = [f"{int(p * 100) if (p * 100).is_integer() else round(100 * p, 6)}%" for p in PERCENTILES]
REPORT_EVERY_S = 3  # a Locust worker's report interval
Ms = TypeVar("Ms", int, float)  # a latency in ms: whole for Locust, to 0.1 ms for fastgen

# Share of the busiest hour's rate in each hour of the deadline day.
DAY = (0.04, 0.03, 0.02, 0.02, 0.03, 0.05, 0.10, 0.20, 0.35, 0.50, 0.60, 0.65,
       0.60, 0.55, 0.60, 0.65, 0.70, 0.75, 0.85, 0.95, 1.00, 0.90, 0.70, 0.40)  # fmt: skip

STEPS = sum(1 for i, d in enumerate(DAY) if i == 0 or DAY[i - 1] != d)  # the day's steps: equal hours merge

# Latency (ms) as {value: share of requests}: a responder below and above its capacity.
FAST = {3: 0.90, 6: 0.08, 12: 0.015, 30: 0.005}
SLOW = {40: 0.50, 150: 0.45, 900: 0.05}


def locust_percentile(hist: Counter[int], q: float) -> int:
    """Locust's calculate_response_time_percentile."""
    n = sum(hist.values())
    wanted = int(n * q)
    seen = 0
    for ms in sorted(hist, reverse=True):
        seen += hist[ms]
        if n - seen <= wanted:
            return ms
    return 0


def nearest_rank_hist(hist: Counter[Ms], q: float) -> Ms:
    """Textbook nearest-rank percentile: the ceil(q * n)-th smallest."""
    rank = max(1, math.ceil(q * sum(hist.values())))
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= rank:
            return ms
    raise AssertionError("empty histogram")


def spread(n: int, shares: dict[int, float]) -> Counter[int]:
    """n requests over the latencies in ``shares`` (largest remainder, so exactly n)."""
    raw = {ms: n * s for ms, s in shares.items()}
    hist = Counter({ms: int(v) for ms, v in raw.items()})
    for ms in sorted(raw, key=lambda k: raw[k] - int(raw[k]), reverse=True)[: n - sum(hist.values())]:
        hist[ms] += 1
    return +hist


@dataclasses.dataclass
class Second:
    """What one Locust entry did in one second."""

    requests: int
    failures: int
    hist: Counter[int]


# (Type, Name) -> (target rate, overloaded) -> that entry's second
Traffic = Callable[[float, bool], dict[tuple[str, str], Second]]


def tax_day_traffic(locust_share: float = 0.1) -> Traffic:
    """Locust's part of the load (the rest is another generator's): OCSP GET:POST 70:30 on a
    responder that fails what it cannot serve, one admin request a second, a delta CRL
    every few seconds."""

    def traffic(target: float, over: bool) -> dict[tuple[str, str], Second]:
        sent = round(target * locust_share)
        out = {}
        for (method, name), share in ((("GET", "ocsp GET"), 0.7), (("POST", "ocsp POST"), 0.3)):
            n = round(sent * share)
            failed = round(n * (1 - CAPACITY / target)) if over else 0
            out[(method, name)] = Second(n, failed, spread(n, SLOW if over else FAST))
        out[("POST", "admin revoke")] = Second(1, 0, Counter({80: 1}))
        out[("GET", "crl delta")] = Second(1, 0, Counter({9: 1}))
        return out

    return traffic


CAPACITY = 4200.0  # OCSP answers/s the synthetic responder serves


@dataclasses.dataclass
class Truth:
    """What was generated, for the tests to compare with."""

    ocsp_requests: int = 0
    ocsp_failures: int = 0
    checked: int = 0
    wrong: int = 0
    ocsp_hist: Counter[int] = dataclasses.field(default_factory=Counter)
    targets: list[float] = dataclasses.field(default_factory=list)
    per_second: list[float] = dataclasses.field(default_factory=list)  # the target of each second
    files: list[str] = dataclasses.field(default_factory=list)


def write_run(
    run_dir: Path,
    *,
    peak: float = 5000.0,
    step_s: int = 20,
    traffic: Traffic | None = None,
    wrong_at: dict[int, int] | None = None,
    changes: list[tuple[float | None, float | None]] | None = None,
    optional: tuple[str, ...] = ("shape", "checks", "propagation", "failures"),
    meta: dict | None = None,
) -> Truth:
    """A run directory as the Locust suite writes it; ``optional`` names the optional files to write."""
    run_dir.mkdir(parents=True, exist_ok=True)
    traffic = traffic or tax_day_traffic()
    wrong_at = wrong_at or {}
    duration = step_s * len(DAY)
    truth = Truth(targets=[peak * d for d in DAY])
    target = [peak * DAY[t // step_s] for t in range(duration)]
    truth.per_second = target
    users = [max(1, round(x / 5)) for x in target]

    # Per second and entry: requests, failures, latency histogram.
    seconds: list[dict[tuple[str, str], Second]] = []
    for t in range(duration):
        seconds.append(traffic(target[t], target[t] > CAPACITY))
    keys = sorted({k for s in seconds for k in s}, key=lambda k: k[1])
    for s in seconds:
        for (_, name), sec in s.items():
            if "ocsp" in name:
                truth.ocsp_requests += sec.requests
                truth.ocsp_failures += sec.failures
                truth.ocsp_hist.update(sec.hist)

    # The master's cumulative view: it changes only when a worker report arrives.
    cumulative: list[dict[tuple[str, str], tuple[int, int, Counter[int]]]] = []
    acc = {k: (0, 0, Counter()) for k in keys}
    for s in seconds:
        for k, sec in s.items():
            r, f, h = acc[k]
            acc[k] = (r + sec.requests, f + sec.failures, h + sec.hist)
        cumulative.append(dict(acc))

    def known(t: int) -> dict[tuple[str, str], tuple[int, int, Counter[int]]]:
        last = (t // REPORT_EVERY_S) * REPORT_EVERY_S - 1
        return cumulative[last] if last >= 0 else {k: (0, 0, Counter()) for k in keys}

    start = int(T0.timestamp())
    header = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PERCENTILE_COLUMNS,
              "Total Request Count", "Total Failure Count", "Total Median Response Time",
              "Total Average Response Time", "Total Min Response Time", "Total Max Response Time",
              "Total Average Content Size"]  # fmt: skip
    with (run_dir / "locust_stats_history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for t in range(duration + 1):
            now, before = known(t), known(max(0, t - 10))
            rows = [(k, now[k], before[k]) for k in keys if now[k][0] > 0]
            total_now = (
                sum(v[0] for _, v, _ in rows),
                sum(v[1] for _, v, _ in rows),
                sum((v[2] for _, v, _ in rows), Counter()),
            )
            total_before = (sum(b[0] for _, _, b in rows), 0, sum((b[2] for _, _, b in rows), Counter()))
            for (method, name), (r, fl, h), (rb, _, hb) in [*rows, (("", "Aggregated"), total_now, total_before)]:
                window = h - hb
                if r == 0:
                    pct = ["N/A"] * len(PERCENTILES)
                else:
                    pct = [locust_percentile(window, p) if window else 0 for p in PERCENTILES]
                cells = [start + t, users[min(t, duration - 1)], method, name, f"{(r - rb) / 10:2f}", "0.000000", *pct]
                stats = [r, fl, locust_percentile(h, 0.5) if r else 0, sum(ms * c for ms, c in h.items()) / r if r else 0.0,
                         min(h) if h else 0, max(h) if h else 0, 512.0 if r else 0]  # fmt: skip
                w.writerow(cells + stats)

    final = cumulative[-1]
    with (run_dir / "locust_stats.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
                    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
                    *PERCENTILE_COLUMNS])  # fmt: skip
        everything = (
            sum(v[0] for v in final.values()),
            sum(v[1] for v in final.values()),
            sum((v[2] for v in final.values()), Counter()),
        )
        for (method, name), (r, fl, h) in [*((k, final[k]) for k in keys), (("", "Aggregated"), everything)]:
            w.writerow([method, name, r, fl, locust_percentile(h, 0.5), sum(ms * c for ms, c in h.items()) / r, min(h),
                        max(h), 512.0, r / duration, fl / duration, *(locust_percentile(h, p) for p in PERCENTILES)])  # fmt: skip
    truth.files += ["locust_stats.csv", "locust_stats_history.csv"]

    if "failures" in optional:
        with (run_dir / "locust_failures.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"])
            for method, name in keys:
                failed = [
                    t for t in range(duration) if seconds[t].get((method, name), Second(0, 0, Counter())).failures
                ]
                if failed:
                    n = sum(seconds[t][(method, name)].failures for t in failed)
                    when = [
                        (T0 + dt.timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (failed[0], failed[-1])
                    ]
                    w.writerow([method, name, "HTTPError('503 Server Error: Service Unavailable')", n, *when])
        truth.files.append("locust_failures.csv")

    if "shape" in optional:
        with (run_dir / "shape.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "target_rps", "users"])
            for t in range(duration):  # one row a second, as the suite writes it
                w.writerow([t, f"{target[t]:.1f}", users[t]])
        truth.files.append("shape.csv")

    if "checks" in optional:
        with (run_dir / "checks.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "checked", "wrong", "stale", "sig_fail"])
            for t in range(duration):
                checked = round(min(target[t], CAPACITY))
                truth.checked += checked
                truth.wrong += wrong_at.get(t, 0)
                w.writerow([t, checked, wrong_at.get(t, 0), 0, 0])
        truth.files.append("checks.csv")

    if "propagation" in optional:
        with (run_dir / "propagation.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["kind", "change_at", "ocsp_seen_s", "delta_crl_seen_s"])
            kinds = ("revoke", "suspend", "resume", "batch")
            for i, (ocsp_s, crl_s) in enumerate(changes or []):
                cell = ["" if v is None else f"{v:.3f}" for v in (ocsp_s, crl_s)]
                w.writerow([kinds[i % 4], f"{T0.timestamp() + 10 + i:.3f}", *cell])
        truth.files.append("propagation.csv")

    base = {
        "scenario": "x50",
        "scale": 50,
        "peak_rps_target": peak,
        "duration_s": duration,
        "generators": [
            {"name": "locust", "processes": 2, "load": "relying-party sample + admin + CRL"},
            {"name": "fastgen", "processes": 1, "load": "bulk OCSP GET/POST"},
        ],
        "commands": [
            "python bench/tax_season.py --scale 50",
            "locust -f bench/locustfile.py --headless --csv RUN/locust --csv-full-history --processes 2",
        ],
        "commit": "0123abc",
        "started": T0.isoformat(),
        "saturated": {"locust": True, "fastgen": False, "best_rps": 512.3},
    }
    (run_dir / "meta.json").write_text(json.dumps({**base, **(meta or {})}))
    truth.files.append("meta.json")
    return truth


# Propagation: 200 changes, one never seen in OCSP (infinitely late), one never in a delta CRL.
OCSP_SEEN = [0.020 + 0.004 * i for i in range(198)] + [1.5, None]
CRL_SEEN = [0.5 + 0.025 * i for i in range(199)] + [None]


def goal_row(summary: str, goal_start: str) -> str:
    rows = [line for line in summary.splitlines() if line.startswith(f"| {goal_start}")]
    assert len(rows) == 1, (goal_start, rows)
    return rows[0]


def verdict(row: str) -> str:
    return row.split(" | ")[1].strip("* ")


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or not data.endswith(b"IEND\xaeB`\x82"):
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width > 100 and height > 100


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Truth]:
    run_dir = tmp_path_factory.mktemp("run")
    truth = write_run(run_dir, wrong_at={100: 2, 301: 1}, changes=list(zip(OCSP_SEEN, CRL_SEEN, strict=True)))
    out = report.build_report(run_dir, tmp_path_factory.mktemp("report"))
    return run_dir, out, truth


def test_wrong_answers_miss_the_goal(full: tuple[Path, Path, Truth]) -> None:
    _, out, truth = full
    row = goal_row((out / "summary.md").read_text(), "zero wrong answers")
    assert truth.wrong == 3
    assert verdict(row) == "missed"
    assert f"3 wrong of {truth.checked:,} verified OCSP answers (wrong status 3, stale 0, bad signature 0)" in row


def test_error_rate_and_p99_over_the_run(full: tuple[Path, Path, Truth]) -> None:
    _, out, truth = full
    summary = (out / "summary.md").read_text()
    rate = truth.ocsp_failures / truth.ocsp_requests
    assert truth.ocsp_failures > 0 and rate >= 0.001
    row = goal_row(summary, "OCSP error rate")
    assert verdict(row) == "missed"
    shown = row.split(" | ")[2]
    assert f"({truth.ocsp_failures:,} failed of {truth.ocsp_requests:,} Locust OCSP requests" in shown
    assert float(shown.split(" %")[0]) == pytest.approx(100 * rate, rel=0.05)
    # GET and POST are separate entries: the report gives an upper bound, never below the truth.
    row = goal_row(summary, "OCSP p99")
    true_p99 = nearest_rank_hist(truth.ocsp_hist, 0.99)
    assert true_p99 == 900
    assert "≤ 900 ms" in row and "an upper bound" in row
    assert verdict(row) == "missed"


def test_sustainable_rate_and_headroom(full: tuple[Path, Path, Truth]) -> None:
    _, out, truth = full
    summary = (out / "summary.md").read_text()
    # Every step at or below the capacity held; the lowest one above it failed.
    failing = min(t for t in truth.targets if t > CAPACITY)
    expected = max(t for t in truth.targets if t < failing)
    assert (expected, failing) == (3750, 4250)
    assert f"Sustainable rate: **{expected:,.0f}/s (the lowest step that did not hold: {failing:,.0f}/s)**" in summary
    assert f"**{expected / 100:.1f}×** the tax-season peak" in summary
    assert f"**{expected / 5000:.2f}×** the national eID bound" in summary
    step_rows = [
        line for line in summary.splitlines() if line.startswith("| ") and line.count("|") == 9 and line[2].isdigit()
    ]
    assert len(step_rows) == STEPS
    held = {int(r.split(" | ")[2].replace(",", "")): r.endswith("| yes |") for r in step_rows}
    assert held == {round(t): t <= CAPACITY for t in truth.targets}
    row_4250 = next(r for r in step_rows if r.split(" | ")[2] == "4,250")
    assert "error rate" in row_4250 and "p99 900 ms" in row_4250  # 99% of the target delivered, but failing and slow
    assert "Generator(s) locust saturated" in summary
    assert "| locust | 2 | relying-party sample + admin + CRL | **yes** |" in summary
    assert "| fastgen | 1 | bulk OCSP GET/POST | no |" in summary


def test_propagation(full: tuple[Path, Path, Truth]) -> None:
    _, out, _ = full
    summary = (out / "summary.md").read_text()
    row = goal_row(summary, "revocation propagation to OCSP")
    # 200 changes, one never seen: the 198th smallest is the p99.
    p99 = sorted(v for v in OCSP_SEEN if v is not None)[197]
    assert f"{p99 * 1000:.0f} ms" == "808 ms"
    assert verdict(row) == "met"
    assert "808 ms (p50 416 ms; 200 changes, 1 never seen)" in row
    all_row = next(line for line in summary.splitlines() if line.startswith("| **all** |"))
    assert all_row.split(" | ")[1:6] == ["200", "416 ms", "808 ms", "never", "1"]


def test_plots_are_pngs(full: tuple[Path, Path, Truth]) -> None:
    _, out, _ = full
    for name in ("throughput.png", "latency.png", "propagation.png", "checks.png"):
        assert is_png(out / name), name
        assert f"]({name})" in (out / "summary.md").read_text()


def test_inputs_and_commands_are_copied(full: tuple[Path, Path, Truth]) -> None:
    run_dir, out, truth = full
    for name in truth.files:
        assert (out / name).read_bytes() == (run_dir / name).read_bytes(), name
    commands = json.loads((run_dir / "meta.json").read_text())["commands"]
    assert (out / "commands.txt").read_text().splitlines() == commands
    summary = (out / "summary.md").read_text()
    assert "```sh\n" + "\n".join(commands) + "\n```" in summary
    assert "- Commit: 0123abc" in summary


@pytest.mark.parametrize(
    ("slow", "p99", "outcome"),
    [
        # 1,000 requests a second for a minute: 98.5 % at 4 ms, then the tail.
        ({38: 10, 120: 5}, 38, "met"),
        ({38: 4, 120: 11}, 120, "missed"),
    ],
)
def test_p99_of_a_known_distribution(tmp_path: Path, slow: dict[int, int], p99: int, outcome: str) -> None:
    per_second = Counter({4: 1000 - sum(slow.values()), **slow})

    def traffic(target: float, over: bool) -> dict[tuple[str, str], Second]:
        return {("GET", "ocsp GET"): Second(1000, 0, Counter(per_second))}

    truth = write_run(tmp_path, step_s=20, traffic=traffic, optional=("shape",))
    assert nearest_rank_hist(truth.ocsp_hist, 0.99) == p99  # the textbook answer, independent of Locust's
    run = report.load_run(tmp_path)
    summary = report.render_summary(run, {}, [])
    row = goal_row(summary, "OCSP p99")
    assert verdict(row) == outcome
    # Every second alike: each 10 s window has the run's p99 too.
    assert f"| {p99} ms (over the run, at the generator); worst 10 s window p99 of a judged step: {p99} ms (" in row
    assert row.endswith(f"; {STEPS} of {STEPS} steps judged |")
    assert verdict(goal_row(summary, "OCSP error rate")) == "met"


def test_missing_inputs_are_not_measured(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, step_s=3, optional=())
    out = report.build_report(run_dir, tmp_path / "out")
    summary = (out / "summary.md").read_text()
    assert verdict(goal_row(summary, "zero wrong answers")) == "not measured"
    assert verdict(goal_row(summary, "revocation propagation")) == "not measured"
    assert verdict(goal_row(summary, "OCSP p99")) in ("met", "missed")  # Locust's files are there
    assert "Sustainable rate: **not measured** (no shape.csv" in summary
    assert goal_row(summary, "OCSP p99").endswith("; no step judged (no shape.csv: the load shape is unknown) |")
    assert "Revocation propagation: not measured (no propagation.csv)." in summary
    assert "Answer checks: not measured (no checks.csv)." in summary
    assert "Locust failures: not measured (no locust_failures.csv)." in summary
    assert "- Revocation propagation (CDF): not measured" in summary
    assert not (out / "propagation.png").exists() and not (out / "checks.png").exists()
    assert is_png(out / "throughput.png") and is_png(out / "latency.png")


def test_steps_too_short_are_not_judged(tmp_path: Path) -> None:
    write_run(tmp_path, step_s=12, optional=("shape", "checks"))  # 12 s - 5 s settling < a 10 s window
    run = report.load_run(tmp_path)
    short = [s for s in run.steps if s.end - s.start == 12]
    assert len(short) == len(run.steps) - 1  # two equal hours merge into one 24 s step
    assert all(not s.judged and s.reason == "too short to judge (12 s; needs 15)" for s in short)
    (merged,) = [s for s in run.steps if s.end - s.start == 24]
    assert merged.judged and merged.held and merged.target == 100
    assert run.sustainable.rate == 100
    # Held is said of the judged steps only, and how many were not judged.
    assert (
        run.sustainable.text
        == "at least 100/s (every judged step held (1 judged, 22 not judged): the ceiling was not reached)"
    )
    # The goals cannot be met when the peak step was not judged.
    summary = report.render_summary(run, {}, [])
    for goal in ("OCSP error rate", "OCSP p99"):
        row = goal_row(summary, goal)
        assert (
            "; 1 of 23 steps judged; **the peak step (5,000/s) was not judged**: too short to judge (12 s; needs 15) |"
            in row
        )
        assert verdict(row) in ("missed", "not measured")
    assert (
        verdict(goal_row(summary, "OCSP error rate")) == "missed"
    )  # over the run: the responder failed above its capacity


def test_history_without_entries_judges_no_step(tmp_path: Path) -> None:
    write_run(tmp_path, optional=("shape", "checks"))
    history = tmp_path / "locust_stats_history.csv"
    lines = history.read_text().splitlines()
    history.write_text("\n".join([lines[0], *(line for line in lines[1:] if ",Aggregated," in line)]) + "\n")
    run = report.load_run(tmp_path)  # as Locust writes it without --csv-full-history
    assert "the history has no per-entry rows" in run.ocsp_note
    assert all(s.reason == "p99 not measured (Locust ran without --csv-full-history)" for s in run.steps)
    assert run.sustainable.rate is None


def test_ceiling_not_reached_is_a_lower_bound(tmp_path: Path) -> None:
    write_run(tmp_path, peak=4000, optional=("shape", "checks"))
    run = report.load_run(tmp_path)
    assert run.sustainable.rate == 4000 and run.sustainable.lower_bound
    summary = report.render_summary(run, {}, [])
    assert (
        f"Sustainable rate: **at least 4,000/s (every judged step held ({STEPS} judged, 0 not judged): the ceiling was not reached)**"
        in summary
    )
    assert "at least **40.0×** the tax-season peak" in summary


def test_cli_and_default_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, step_s=3, optional=())
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")
    assert report.main([str(run_dir)]) == 0
    out = tmp_path / "results" / "2026-05-31-x50"
    assert (out / "summary.md").read_text() in capsys.readouterr().out
    (run_dir / "meta.json").unlink()
    assert report.main([str(run_dir), "--out", str(tmp_path / "x")]) == 2
    assert "missing meta.json" in capsys.readouterr().err
    with pytest.raises(report.ReportError):
        report.build_report(run_dir)


def test_percentile_upper_bound() -> None:
    one = {0.5: 3.0, 0.95: 8.0, 0.99: 15.0, 1.0: 40.0}
    assert report.percentile_upper_bound([(1000, one)], 0.99) == 15.0
    assert report.percentile_upper_bound([(0, one)], 0.99) is None
    # A rare slow request type does not drag the bound up to its own p99.
    rare = {0.5: 100.0, 0.99: 300.0, 1.0: 400.0}
    common = {0.5: 3.0, 0.99: 10.0, 0.999: 15.0, 1.0: 20.0}
    assert report.percentile_upper_bound([(99_900, common), (100, rare)], 0.99) == 15.0
    # Never below the true percentile of the mixture (sizes that are multiples of 1,000, so
    # that Locust's percentiles are exact ranks).
    rng = random.Random(6)
    for _ in range(100):
        hists = [
            Counter(rng.choice(range(1, 60)) for _ in range(1000 * rng.randint(1, 3))) for _ in range(rng.randint(1, 3))
        ]
        exact = [p for p in PERCENTILES if p != 0.9999]  # 99.99 % of 1,000 is no whole request
        parts = [(sum(h.values()), {p: float(locust_percentile(h, p)) for p in exact}) for h in hists]
        bound = report.percentile_upper_bound(parts, 0.99)
        assert bound is not None
        assert nearest_rank_hist(sum(hists, Counter()), 0.99) <= bound <= max(max(h) for h in hists)


def test_counter_spreads_lumpy_reports() -> None:
    # Totals that only change every 3 s (worker reports), a 10 s pause, then more.
    readings = [(0, 0), (1, 0), (2, 0), (3, 30), (4, 30), (5, 30), (6, 60), *((t, 60) for t in range(7, 17)), (17, 70)]
    c = report.Counter(readings)
    assert c.at(4.5) == pytest.approx(45)  # between two reports: spread evenly
    assert c.between(3, 6) == pytest.approx(30)
    assert c.at(16) == pytest.approx(60)  # a real pause is not spread over
    assert c.between(16, 17) == pytest.approx(10)
    assert c.at(100) == 70 and c.at(-5) == 0


# fastgen and the ceiling -----------------------------------------------------------------------------------

# fastgen's latency (ms) as {value: share of requests}, every value on a bucket bound so that the
# histogram's quantiles are the exact ones; SLOW_MS is the slow answers' latency.
FASTGEN_FAST = {0.8: 0.90, 2.5: 0.08, 7.0: 0.015, 20.0: 0.005}
SLOW_MS = 80.0
FASTGEN_SHARE = 0.9  # tax_day_traffic leaves 90 % of the load to the other generator


def bucket_le(ms: float) -> float:
    """fastgen's bucket for a latency: 0.1 ms wide up to 10 ms, 1 ms to 100 ms, 10 ms to 1 s, 100 ms to 10 s."""
    for top, width in ((10, 0.1), (100, 1), (1000, 10), (10_000, 100)):
        if ms <= top:
            return round(math.ceil(ms / width - 1e-9) * width, 1)
    return math.inf


def spread_ms(n: int, shares: dict[float, float]) -> Counter[float]:
    """n answers over the latencies in ``shares`` (largest remainder, so exactly n)."""
    raw = {ms: n * s for ms, s in shares.items()}
    hist: Counter[float] = Counter({ms: int(v) for ms, v in raw.items()})
    for ms in sorted(raw, key=lambda k: raw[k] - int(raw[k]), reverse=True)[: n - sum(hist.values())]:
        hist[ms] += 1
    return +hist


@dataclasses.dataclass
class FastgenTruth:
    sent: int = 0
    errors: int = 0
    latency: dict[int, Counter[float]] = dataclasses.field(default_factory=dict)  # t -> answers' latencies

    def quantile(self, seconds: range | list[int], q: float) -> float:
        """The nearest-rank quantile of the answers scheduled in these seconds, from the raw latencies."""
        return nearest_rank_hist(sum((self.latency.get(t, Counter()) for t in seconds), Counter()), q)

    def worst_window_p99(self, a: int, b: int) -> float:
        """The largest p99 of the 10 s windows of whole seconds in [a, b)."""
        return max(self.quantile(range(s, s + 10), 0.99) for s in range(a, b - 9))


def write_fastgen(
    run_dir: Path,
    targets: list[float],
    *,
    slow: dict[int, float] | None = None,
    errors: dict[int, float] | None = None,
    unanswered: dict[int, int] | None = None,
    lag: dict[int, float] | None = None,
    summary_extra: dict | None = None,
    files: tuple[str, ...] = ("fastgen.csv", "fastgen-latency.csv", "fastgen.json"),
) -> FastgenTruth:
    """fastgen's files for its share of ``targets`` (one a second): ``slow`` and ``errors`` give,
    per second, the share of answers at SLOW_MS and the share of requests that fail (HTTP 503);
    ``unanswered`` a number of requests never answered (errors, with an infinite latency, as
    fastgen records them); ``lag`` its own send lag p99 (ms) where not 0.3 ms. ``summary_extra``
    is added to fastgen.json."""
    slow, errors, unanswered, lag = slow or {}, errors or {}, unanswered or {}, lag or {}
    truth = FastgenTruth()
    rows, buckets = [], []
    for t, target in enumerate(targets):
        sent = round(target * FASTGEN_SHARE)
        lost = unanswered.get(t, 0)
        failed = round(sent * errors.get(t, 0.0)) + lost
        answered = sent - failed
        n_slow = round(answered * slow.get(t, 0.0))
        hist = spread_ms(answered - n_slow, FASTGEN_FAST) + Counter({SLOW_MS: n_slow, math.inf: lost})
        truth.sent += sent
        truth.errors += failed
        truth.latency[t] = hist
        cells = [f"{nearest_rank_hist(hist, q):g}" if hist else "" for q in (0.5, 0.99, 1.0)]
        rows.append(
            [t, f"{target * FASTGEN_SHARE:.1f}", sent, answered, 0, 0, 0, failed, *cells, f"{lag.get(t, 0.3):g}"]
        )
        by_bucket: Counter[float] = Counter()
        for ms, count in hist.items():
            by_bucket[bucket_le(ms)] += count
        buckets += [[t, f"{le:g}", count] for le, count in sorted(by_bucket.items())]
    if "fastgen.csv" in files:
        with (run_dir / "fastgen.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "target_rps", "sent", "checked", "wrong", "stale", "sig_fail", "errors", "p50_ms", "p99_ms",
                        "max_ms", "lag_p99_ms"])  # fmt: skip
            w.writerows(rows)
    if "fastgen-latency.csv" in files:
        with (run_dir / "fastgen-latency.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "le_ms", "count"])
            w.writerows(buckets)
    if "fastgen.json" in files:
        everything = sum(truth.latency.values(), Counter())
        summary = {
            "name": "fastgen",
            "processes": 1,
            "connections": 64,
            "planned": truth.sent,
            "requests": truth.sent,
            "outcomes": {"checked": truth.sent - truth.errors, "wrong": 0, "stale": 0, "sig_fail": 0, "errors": truth.errors},
            "error_kinds": {"http_503": truth.errors} if truth.errors else {},
            "latency_ms": {"n": sum(everything.values()),
                           **{k: nearest_rank_hist(everything, q)
                              for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))}},
            "latency_from_send_ms": {"p50": 0.7, "p99": 6.5, "max": SLOW_MS},
            "send_lag_ms": {"p50": 0.1, "p99": 0.3, "max": 2.0},
            "cpu_fraction": 0.4,
            "checked_after_the_run": {"answers": 1234, "distinct": 567, "seconds": 2.5},
            "saturated": False,
            "saturation_reason": "kept its schedule (send lag p99 0.3 ms)",
            **(summary_extra or {}),
        }  # fmt: skip
        (run_dir / "fastgen.json").write_text(json.dumps(summary))  # an infinite latency as Infinity, as fastgen's
    return truth


TWO_GENERATORS = {
    "generators": [
        {"name": "locust", "processes": 2, "load": "relying parties (a share), CA admins, CRL consumers", "share": 0.1},
        {"name": "fastgen", "processes": 1, "connections": 64, "load": "relying parties, open loop", "share": 0.9},
    ],
    "saturated": {"locust": False, "best_ocsp_rps": 412.0, "peak_target_rps": 4000.0, "fastgen": False,
                  "fastgen_reason": "kept its schedule"},
}  # fmt: skip

CEILING = {
    "tool": "wrk 4.2.0 [epoll] Copyright (C) 2012 Will Glozer",
    "duration_s": 15,
    "connections": 64,
    "threads": 1,
    "rounds": 2,
    "requests": {"count": 200_000, "distinct": 61_234, "list": "Zipf over the truth", "method": "GET"},
    "targets": [
        {"name": "responder", "workers": 2, "req_s": 9012.5, "p50_ms": 6.8, "p99_ms": 21.5, "errors": 0,
         "runs_req_s": [8950.1, 9074.9]},
        {"name": "nginx", "workers": 2, "req_s": 27310.0, "p50_ms": 2.2, "p99_ms": 5.9, "errors": 0,
         "runs_req_s": [27100.0, 27520.0]},
    ],
    "ratio_to_nginx": 0.33,
    "answers": {"census": {"successful": 19_900, "unauthorized": 100}, "checked": 2_000, "wrong": 0},
    "commands": ["wrk -t1 -c64 -d15s -s SCRIPT http://127.0.0.1:PORT/", "nginx -c WORK_DIR/ceiling/nginx.conf"],
    "load_average": [0.41, 1.87],
}  # fmt: skip

# The fastgen run (peak 4,000/s, within the responder's capacity, so Locust holds every step):
# fastgen is slow in every second of the 3,000/s hour, slow only in 4 scattered seconds of the
# 1,400/s hour, and fails 0.2 % of its requests (rounded: 4 of 1,800 a second) in the 2,000/s hour.
STEP_S = 20
SLOW_HOUR, SCATTERED_HOUR, ERROR_HOUR = DAY.index(0.75), DAY.index(0.35), DAY.index(0.50)
SCATTERED = [SCATTERED_HOUR * STEP_S + s for s in (6, 9, 12, 15)]


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Truth, FastgenTruth]:
    run_dir = tmp_path_factory.mktemp("run")
    changes = list(zip(OCSP_SEEN, CRL_SEEN, strict=True))
    truth = write_run(run_dir, peak=4000, step_s=STEP_S, meta=TWO_GENERATORS, changes=changes)
    slow = {t: 0.03 for t in range(SLOW_HOUR * STEP_S, (SLOW_HOUR + 1) * STEP_S)} | {t: 0.015 for t in SCATTERED}
    errors = {t: 0.002 for t in range(ERROR_HOUR * STEP_S, (ERROR_HOUR + 1) * STEP_S)}
    fastgen = write_fastgen(run_dir, truth.per_second, slow=slow, errors=errors)
    (run_dir / "ceiling.json").write_text(json.dumps(CEILING))
    out = report.build_report(run_dir, tmp_path_factory.mktemp("report"))
    return run_dir, out, truth, fastgen


def step_rows(summary: str) -> dict[int, str]:
    """The steps table's rows by target."""
    rows = [
        line for line in summary.splitlines() if line.startswith("| ") and line.count("|") == 9 and line[2].isdigit()
    ]
    return {int(r.split(" | ")[2].replace(",", "")): r for r in rows}


def test_fastgen_window_p99_fails_a_step(two: tuple[Path, Path, Truth, FastgenTruth]) -> None:
    _, out, _, fastgen = two
    rows = step_rows((out / "summary.md").read_text())
    a = SLOW_HOUR * STEP_S + 5  # after the 5 s settling
    worst = fastgen.worst_window_p99(a, a + STEP_S - 5)
    assert worst == SLOW_MS
    slow = rows[3000]
    assert slow.endswith("| **no**: fastgen p99 80 ms (its own send lag p99 up to 0.3 ms) |"), slow
    assert "· fastgen 80 ms |" in slow
    assert "locust p99" not in slow  # Locust held its own conditions there


def test_fastgen_windows_sum_seconds_not_their_p99s(two: tuple[Path, Path, Truth, FastgenTruth]) -> None:
    run_dir, out, _, fastgen = two
    # Four seconds of the 1,400/s hour had p99 80 ms each; no 10 s window of them did.
    assert all(fastgen.quantile([t], 0.99) == SLOW_MS for t in SCATTERED)
    with (run_dir / "fastgen.csv").open(newline="") as f:
        per_second = {int(r["t_s"]): r["p99_ms"] for r in csv.DictReader(f)}
    assert {per_second[t] for t in SCATTERED} == {"80"}
    a = SCATTERED_HOUR * STEP_S + 5
    worst = fastgen.worst_window_p99(a, a + STEP_S - 5)
    assert worst == 20.0
    row = step_rows((out / "summary.md").read_text())[1400]
    assert "· fastgen 20 ms |" in row and row.endswith("| yes |"), row


def test_fastgen_errors_fail_a_step_and_set_the_rate(two: tuple[Path, Path, Truth, FastgenTruth]) -> None:
    _, out, truth, _ = two
    summary = (out / "summary.md").read_text()
    row = step_rows(summary)[2000]
    a = ERROR_HOUR * STEP_S + 5
    share = sum(round(1800 * 0.002) for _ in range(a, a + STEP_S - 5)) / (1800 * (STEP_S - 5))
    assert share == pytest.approx(0.00222, abs=1e-5)  # 4 of 1,800 a second
    assert "| locust 0 % · fastgen 0.22 % |" in row
    assert row.endswith("| **no**: fastgen error rate 0.22 % |"), row
    # The lowest step that did not hold is fastgen's 2,000/s; everything below held.
    expected = max(t for t in truth.targets if t < 2000)
    assert expected == 1600
    assert "Sustainable rate: **1,600/s (the lowest step that did not hold: 2,000/s)**" in summary
    assert "**16.0×** the tax-season peak" in summary  # headroom from the judged rate, not the ceiling


def test_goals_count_both_generators(two: tuple[Path, Path, Truth, FastgenTruth]) -> None:
    _, out, truth, fastgen = two
    summary = (out / "summary.md").read_text()
    row = goal_row(summary, "OCSP error rate")
    requests, failures = truth.ocsp_requests + fastgen.sent, truth.ocsp_failures + fastgen.errors
    assert truth.ocsp_failures == 0 and fastgen.errors == 80
    assert failures / requests < 0.001  # over the whole run, the goal would be met
    assert (
        f"{100 * failures / requests:.2g} % over the run ({failures:,} failed of {requests:,} OCSP requests: "
        f"Locust 0 of {truth.ocsp_requests:,}; fastgen 80 of {fastgen.sent:,}"
    ) in row
    # ... but one step's 0.22 % (fastgen's, at 2,000/s) misses it: the goal holds for every judged step too.
    assert (
        "; worst judged step (Locust after each step's first 5 s, fastgen over the whole step): "
        f"Locust 0 % (in every judged step), fastgen 0.22 % (the 2,000/s step at {ERROR_HOUR * STEP_S} s); "
        f"{STEPS} of {STEPS} steps judged |"
    ) in row
    assert verdict(row) == "missed"
    row = goal_row(summary, "OCSP p99")
    run_p99 = fastgen.quantile(list(fastgen.latency), 0.99)
    assert run_p99 == 7.0
    n = sum(sum(h.values()) for h in fastgen.latency.values())
    assert f"; fastgen 7.0 ms (exact over its {n:,} answers, from each request's scheduled send time)" in row
    assert row.split(" | ")[2].startswith("Locust ≤ 12 ms (over the run, at the generator;")
    # Both generators' p99 over the run are under 50 ms; fastgen's 3,000/s step is not.
    worst = fastgen.worst_window_p99(SLOW_HOUR * STEP_S, (SLOW_HOUR + 1) * STEP_S)
    assert worst == SLOW_MS
    assert (
        "; worst 10 s window p99 of a judged step (Locust after each step's first 5 s, fastgen over the whole step): "
        f"Locust ≤ 30 ms (the 1,400/s step at {SCATTERED_HOUR * STEP_S} s), "
        f"fastgen 80 ms (the 3,000/s step at {SLOW_HOUR * STEP_S} s); {STEPS} of {STEPS} steps judged |"
    ) in row
    assert verdict(row) == "missed"
    assert "met only if both the whole run and every judged step of the load shape meet them" in summary
    # checks.csv already holds both generators' checks: the goal reads it alone, and says so.
    assert "OCSP answers verified by both generators" in summary
    assert "checks.csv sums Locust's and fastgen's per-second checks" in summary


def test_generators_and_fastgen_sections(two: tuple[Path, Path, Truth, FastgenTruth]) -> None:
    _, out, _, fastgen = two
    summary = (out / "summary.md").read_text()
    assert "| locust | 10 % | 2 | relying parties (a share), CA admins, CRL consumers | no |  |" in summary
    assert (
        "| fastgen | 90 % | 1 | relying parties, open loop | no: kept its schedule | "
        "64 connections; CPU 0.40 of a core; send lag p99 0.3 ms (scheduled → sent) |"
    ) in summary
    assert "Saturation details (meta.json): best_ocsp_rps 412.0, peak_target_rps 4000.0." in summary
    assert "Latency and error rates are Locust's only" not in summary
    assert "count both generators' OCSP requests" in summary
    assert (
        f"{fastgen.sent:,} requests sent of {fastgen.sent:,} planned open-loop on its schedule (fastgen.json)"
        in summary
    )
    assert "Errors by kind: http_503 80." in summary
    assert "| scheduled send → full answer (judged) |" in summary
    assert "1,234 answers whose bytes had not been verified before were kept and checked after the last request " \
           "(567 distinct, 2.5 s)" in summary  # fmt: skip


def test_ceiling_section(two: tuple[Path, Path, Truth, FastgenTruth]) -> None:
    run_dir, out, _, _ = two
    summary = (out / "summary.md").read_text()
    assert "## Ceiling (wrk, at full load)" in summary
    # An older ceiling.json: no good_req_s or bytes_per_response.
    assert "| responder | 2 | 9,012 | – | 8,950 · 9,075 | – | 6.8 ms | 22 ms | 0 |" in summary
    assert "| nginx | 2 | 27,310 | – | 27,100 · 27,520 | – | 2.2 ms | 5.9 ms | 0 |" in summary
    assert "- Responder / nginx: 0.33 (" in summary
    assert "census successful 19,900, unauthorized 100; checked against the ground truth 2,000, wrong 0" in summary
    # 9,012.5 req/s against 100/s and 5,000/s.
    assert (
        "- ceiling: 9,012 req/s = 90.1× the tax-season peak (100/s) and 1.80× the eID bound (5,000/s) — "
        "a ceiling at full load, not the sustainable rate judged above"
    ) in summary
    assert "```sh\nwrk -t1 -c64 -d15s -s SCRIPT http://127.0.0.1:PORT/\nnginx" in summary
    for name in ("ceiling.json", "fastgen.csv", "fastgen-latency.csv", "fastgen.json"):
        assert (out / name).read_bytes() == (run_dir / name).read_bytes(), name
        assert f"`{name}`" in summary.split("## Files")[1]


def test_fastgen_plots_are_pngs(two: tuple[Path, Path, Truth, FastgenTruth]) -> None:
    _, out, _, _ = two
    summary = (out / "summary.md").read_text()
    for name in ("throughput.png", "latency.png", "propagation.png", "checks.png"):
        assert is_png(out / name), name
    assert "![OCSP latency over time, Locust and fastgen](latency.png)" in summary


@pytest.mark.parametrize(("slow_share", "fastgen_p99", "outcome"), [(0.0, 7.0, "met"), (0.02, SLOW_MS, "missed")])
def test_p99_goal_needs_both_generators(tmp_path: Path, slow_share: float, fastgen_p99: float, outcome: str) -> None:
    truth = write_run(tmp_path, peak=1000, step_s=20, optional=("shape",), meta=TWO_GENERATORS)
    fastgen = write_fastgen(tmp_path, truth.per_second, slow=dict.fromkeys(range(len(truth.per_second)), slow_share))
    assert fastgen.quantile(list(fastgen.latency), 0.99) == fastgen_p99
    run = report.load_run(tmp_path)
    locust_p99 = run.ocsp.run_percentiles[0.99]
    assert locust_p99 is not None and locust_p99 < 50  # only fastgen's can miss
    row = goal_row(report.render_summary(run, {}, []), "OCSP p99")
    assert verdict(row) == outcome
    assert f"Locust ≤ {locust_p99:.0f} ms" in row and f"fastgen {report.fmt_ms_fine(fastgen_p99)} (exact" in row


def test_error_rate_adds_fastgen_to_locust(tmp_path: Path) -> None:
    truth = write_run(tmp_path, peak=1000, step_s=3, optional=("shape",), meta=TWO_GENERATORS)
    fastgen = write_fastgen(tmp_path, truth.per_second, errors=dict.fromkeys(range(len(truth.per_second)), 0.0015))
    requests, failures = truth.ocsp_requests + fastgen.sent, truth.ocsp_failures + fastgen.errors
    assert truth.ocsp_failures == 0 and failures / requests >= 0.001  # Locust alone would meet the goal
    row = goal_row(report.render_summary(report.load_run(tmp_path), {}, []), "OCSP error rate")
    assert verdict(row) == "missed"
    shown = row.split(" | ")[2]
    assert float(shown.split(" %")[0]) == pytest.approx(100 * failures / requests, rel=0.05)
    assert f"({failures:,} failed of {requests:,} OCSP requests: Locust 0 of {truth.ocsp_requests:,}; " in shown
    assert (
        f"fastgen {fastgen.errors:,} of {fastgen.sent:,}: wrong status 0, stale 0, bad signature 0, errors {fastgen.errors:,}"
        in shown
    )


def test_without_histogram_window_p99_is_bounded_by_seconds(
    two: tuple[Path, Path, Truth, FastgenTruth], tmp_path: Path
) -> None:
    run_dir, _, _, _ = two
    for src in run_dir.iterdir():
        if src.name != "fastgen-latency.csv":
            (tmp_path / src.name).write_bytes(src.read_bytes())
    run = report.load_run(tmp_path)
    steps = {s.target: s for s in run.steps}
    # The four slow seconds now bound their windows from above: the step no longer holds.
    assert steps[1400].fastgen_p99_ms == SLOW_MS and not steps[1400].held
    assert run.sustainable.rate == max(t for t in steps if t < 1400) == 800
    assert "bounded by the window's largest per-second p99 of fastgen.csv" in report.render_summary(run, {}, [])


def test_ceiling_not_measured(tmp_path: Path) -> None:
    write_run(tmp_path, step_s=3, optional=())
    (tmp_path / "ceiling.json").write_text(json.dumps({"error": "wrk is not installed (apt-get install wrk)"}))
    summary = report.render_summary(report.load_run(tmp_path), {}, [])
    assert "Ceiling: not measured: wrk is not installed (apt-get install wrk)" in summary
    assert "fastgen" not in summary.split("## Generators")[0]  # no fastgen files: Locust's report as before


def test_old_meta_without_fastgen_renders_as_before(tmp_path: Path) -> None:
    old = {
        "generators": [{"name": "locust", "processes": 2, "load": "relying parties, CA admins, CRL consumers"}],
        "saturated": {"locust": True, "best_ocsp_rps": 4209.2, "peak_target_rps": 5000.0},
    }
    write_run(tmp_path / "run", optional=("shape", "checks"), meta=old)
    out = report.build_report(tmp_path / "run", tmp_path / "out")
    summary = (out / "summary.md").read_text()
    assert "fastgen" not in summary and "Ceiling" not in summary
    assert (
        "| generator | processes | load | saturated |\n|---|--:|---|---|\n| locust | 2 | relying parties, CA admins, CRL consumers | **yes** |"
        in summary
    )
    assert "Saturation details (meta.json): best_ocsp_rps 4209.2, peak_target_rps 5000.0." in summary
    assert (
        "Latency and error rates are Locust's only: another generator's requests count in the delivered rate (checks.csv) and nowhere else."
        in summary
    )
    rows = step_rows(summary)
    assert rows[4250].endswith("p99 900 ms |") and "locust" not in rows[4250]
    assert " ms | yes |" in rows[100]
    assert verdict(goal_row(summary, "OCSP p99")).startswith("missed")
    assert goal_row(summary, "OCSP p99").split(" | ")[2].startswith("≤ 900 ms (over the run")
    assert is_png(out / "throughput.png") and is_png(out / "latency.png")


def test_histogram_quantile() -> None:
    hist = {0.8: 90, 2.5: 8, 7.0: 1, 20.0: 1}
    assert report.histogram_quantile(hist, 0.5) == 0.8
    assert report.histogram_quantile(hist, 0.98) == 2.5
    assert report.histogram_quantile(hist, 0.99) == 7.0  # the 99th of 100 answers
    assert report.histogram_quantile(hist, 0.991) == 20.0
    assert report.histogram_quantile({**hist, math.inf: 2}, 1.0) == math.inf
    assert report.histogram_quantile({}, 0.99) is None
    assert report.merge_histograms([{1.0: 2}, {1.0: 3, 2.0: 1}]) == {1.0: 5, 2.0: 1}


# The goals over the day and at its peak; fastgen judged from a step's start; what fastgen's new files may hold ----


def test_a_peak_that_misses_misses_the_goals(tmp_path: Path) -> None:
    # Only the busiest hour fails 0.5 % of its requests and answers 5 % of them in 900 ms: it is
    # about a twelfth of the day's requests, so over the whole run both goals would be met.
    def traffic(target: float, over: bool) -> dict[tuple[str, str], Second]:
        n = round(target * 0.1)
        peak = target == 4000
        return {("GET", "ocsp GET"): Second(n, round(n * 0.005) if peak else 0, spread(n, SLOW_PEAK if peak else FAST))}

    truth = write_run(tmp_path, peak=4000, traffic=traffic, optional=("shape", "checks"))
    assert truth.ocsp_failures / truth.ocsp_requests < 0.001
    assert nearest_rank_hist(truth.ocsp_hist, 0.99) == 12
    run = report.load_run(tmp_path)
    (peak,) = [s for s in run.steps if s.target == 4000]
    assert peak.judged and peak.error_rate is not None and peak.error_rate == pytest.approx(0.005, rel=0.05)
    assert peak.p99_ms == 900
    summary = report.render_summary(run, {}, [])
    row = goal_row(summary, "OCSP error rate")
    shown = row.split(" | ")[2]
    assert float(shown.split(" %")[0]) == pytest.approx(100 * truth.ocsp_failures / truth.ocsp_requests, rel=0.05)
    assert f"; worst judged step: {report.fmt_pct(peak.error_rate)} (the 4,000/s step at {peak.start:,.0f} s); " in row
    assert verdict(row) == "missed"
    row = goal_row(summary, "OCSP p99")
    assert row.split(" | ")[2].startswith("12 ms (over the run, at the generator)")
    assert f"; worst 10 s window p99 of a judged step: 900 ms (the 4,000/s step at {peak.start:,.0f} s); " in row
    assert verdict(row) == "missed"


SLOW_PEAK = {3: 0.95, 900: 0.05}


def test_fastgen_is_judged_from_the_start_of_a_step(tmp_path: Path) -> None:
    # A burst at the start of two steps: slow answers in the first 3 s of the 3,400/s step,
    # errors in the first 4 s of the 3,800/s step. The 5 s settle (Locust's) would hide both.
    truth = write_run(tmp_path, peak=4000, step_s=STEP_S, optional=("shape", "checks"), meta=TWO_GENERATORS)
    slow_at, errors_at = DAY.index(0.85) * STEP_S, DAY.index(0.95) * STEP_S
    fastgen = write_fastgen(
        tmp_path,
        truth.per_second,
        slow={t: 0.05 for t in range(slow_at, slow_at + 3)},
        errors={t: 0.01 for t in range(errors_at, errors_at + 4)},
    )
    assert fastgen.worst_window_p99(slow_at, slow_at + STEP_S) == SLOW_MS
    assert fastgen.worst_window_p99(slow_at + 5, slow_at + STEP_S) == 7.0  # what the settle would have judged
    sent = round(3800 * FASTGEN_SHARE)
    share = 4 * round(sent * 0.01) / (STEP_S * sent)
    assert share >= 0.001
    run = report.load_run(tmp_path)
    steps = {s.target: s for s in run.steps}
    assert steps[3400].fastgen_p99_ms == SLOW_MS and not steps[3400].held
    assert steps[3400].reason == "fastgen p99 80 ms (its own send lag p99 up to 0.3 ms)"
    assert steps[3800].fastgen_sent == STEP_S * sent
    assert steps[3800].fastgen_error_rate == pytest.approx(share)
    assert steps[3800].reason == f"fastgen error rate {report.fmt_pct(share)}" and not steps[3800].held
    assert run.sustainable.rate == 3000
    summary = report.render_summary(run, {}, [])
    assert "fastgen's (when it sent in the step) are taken over the whole step, its first seconds included" in summary


def test_fastgen_falling_behind_is_said(tmp_path: Path) -> None:
    truth = write_run(tmp_path, peak=4000, step_s=STEP_S, optional=("shape", "checks"), meta=TWO_GENERATORS)
    held_at, slow_at = DAY.index(0.35) * STEP_S, SLOW_HOUR * STEP_S
    # Its own send lag over 10 ms in two seconds of a step that holds (one of them in the first
    # 5 s) and one of a step that does not: fastgen.json still says it kept its schedule.
    lag = {held_at + 2: 25.0, held_at + 12: 11.0, slow_at + 7: 40.0}
    write_fastgen(
        tmp_path,
        truth.per_second,
        slow={t: 0.03 for t in range(slow_at, slow_at + STEP_S)},
        lag=lag,
        summary_extra={"backlog_max": 1234, "pool_exhausted_s": 3.5},
    )
    run = report.load_run(tmp_path)
    summary = report.render_summary(run, {}, [])
    rows = step_rows(summary)
    assert rows[1400].endswith(
        "| yes; fastgen fell behind its schedule (send lag p99 over 10 ms in 2 s of the step, up to 25 ms) |"
    ), rows[1400]
    assert rows[3000].endswith(
        "| **no**: fastgen p99 80 ms (its own send lag p99 up to 40 ms); fastgen fell behind its schedule (send lag p99 "
        "over 10 ms in 1 s of the step, up to 40 ms): the shortfall may be the generator's, not the responder's |"
    ), rows[3000]
    assert rows[2000].endswith("| yes |")
    # The generators table: saturated, whatever fastgen.json and meta.json say, with its new figures.
    assert (
        "| fastgen | 90 % | 1 | relying parties, open loop | **yes**: send lag p99 over 10 ms in 3 s of fastgen.csv "
        f"(the first at t = {held_at + 2} s, up to 40 ms): it fell behind its schedule; fastgen.json: kept its schedule | "
        "64 connections; at most 1,234 requests waiting for a free connection at once; connections all busy with requests "
        "waiting for 3.5 s; CPU 0.40 of a core; send lag p99 0.3 ms (scheduled → sent), in its worst second 40 ms |"
    ) in summary
    assert "Generator(s) fastgen saturated: where a step fell short of its rate" in summary


def test_fastgen_outcomes_that_do_not_add_up(tmp_path: Path) -> None:
    truth = write_run(tmp_path, peak=4000, step_s=STEP_S, optional=("shape", "checks"), meta=TWO_GENERATORS)
    fastgen = write_fastgen(tmp_path, truth.per_second)
    assert fastgen.errors == 0
    # fastgen.json accounts for 1,000 requests fewer than it sent; fastgen.csv for 7 fewer in its 5th second.
    summary_path = tmp_path / "fastgen.json"
    data = json.loads(summary_path.read_text())
    data["outcomes"]["checked"] -= 1000
    summary_path.write_text(json.dumps(data))
    with (tmp_path / "fastgen.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][3] == "checked" and rows[6][0] == "5"
    rows[6][3] = str(int(rows[6][3]) - 7)
    with (tmp_path / "fastgen.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    run = report.load_run(tmp_path)
    summary = report.render_summary(run, {}, [])
    gaps = (
        f"fastgen.json's outcomes sum to {fastgen.sent - 1000:,}, not its {fastgen.sent:,} requests; in 1 of fastgen.csv's "
        "seconds (the first t = 5 s) the outcomes do not sum to sent: 7 requests without an outcome, 0 outcomes more than sent"
    )
    assert (
        f"**fastgen's outcomes do not add up**: every request sent should end as exactly one outcome, but {gaps}."
        in summary
    )
    # The missing ones are errors: 1,000 of the run's requests push the error rate over the goal.
    requests = truth.ocsp_requests + fastgen.sent
    assert 1000 / requests >= 0.001
    row = goal_row(summary, "OCSP error rate")
    assert row.split(" | ")[2].startswith(
        f"{report.fmt_pct(1000 / requests)} over the run (1,000 failed of {requests:,}"
    )
    assert f", **without an outcome 1,000 (counted as errors)**; **fastgen's outcomes do not add up: {gaps}**" in row
    assert verdict(row) == "missed"
    # And per second: the first step's share counts fastgen.csv's 7.
    first = run.steps[0]
    sent = round(160 * FASTGEN_SHARE) * STEP_S
    assert first.fastgen_error_rate == pytest.approx(7 / sent) and not first.held
    assert first.reason == f"fastgen error rate {report.fmt_pct(7 / sent)}"


def test_unanswered_requests_are_infinitely_late(tmp_path: Path) -> None:
    truth = write_run(tmp_path, peak=4000, step_s=STEP_S, optional=("shape", "checks"), meta=TWO_GENERATORS)
    peak_at = DAY.index(1.0) * STEP_S
    # 400 of one second's 3,600 requests never answered: over 1 % of any 10 s window with it.
    fastgen = write_fastgen(tmp_path, truth.per_second, unanswered={peak_at + 2: 400})
    assert fastgen.worst_window_p99(peak_at, peak_at + STEP_S) == math.inf
    assert "Infinity" in (tmp_path / "fastgen.json").read_text()  # Python's json writes math.inf so
    with (tmp_path / "fastgen.csv").open(newline="") as f:
        second = next(r for r in csv.DictReader(f) if r["t_s"] == str(peak_at + 2))
    assert (second["p99_ms"], second["max_ms"]) == ("inf", "inf")
    out = report.build_report(tmp_path, tmp_path / "out")  # the plots too
    summary = (out / "summary.md").read_text()
    assert step_rows(summary)[4000].endswith(
        "| **no**: fastgen error rate 0.56 %; fastgen p99 ∞ (unanswered, or over 10 s) (its own send lag p99 up to 0.3 ms) |"
    )
    assert (
        f"| scheduled send → full answer (judged) | {fastgen.sent:,} | 0.8 ms | 2.5 ms | 7.0 ms | 20 ms | ∞ (unanswered) |"
        in summary
    )
    row = goal_row(summary, "OCSP p99")
    assert f"fastgen ∞ (unanswered, or over 10 s) (the 4,000/s step at {peak_at} s)" in row
    assert verdict(row) == "missed"
    # Without the histogram, fastgen.csv's exact per-second p99 bounds the window: unanswered.
    (tmp_path / "fastgen-latency.csv").unlink()
    run = report.load_run(tmp_path)
    (peak,) = [s for s in run.steps if s.target == 4000]
    assert peak.fastgen_p99_ms == math.inf and not peak.held
    assert "fastgen p99 ∞ (unanswered) (its own" in peak.reason


def test_throughput_plot_says_fastgen_counts_by_scheduled_second(
    two: tuple[Path, Path, Truth, FastgenTruth], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, _, _, _ = two
    labels: list[str] = []

    def legend(*axes: object) -> None:
        for ax in axes:
            labels.extend(ax.get_legend_handles_labels()[1])  # type: ignore[attr-defined]

    monkeypatch.setattr(report, "_legend", legend)
    report.plot_throughput(report.load_run(run_dir), tmp_path / "throughput.png")
    assert "fastgen verified answers/s, by scheduled second (fastgen.csv)" in labels


def test_ceiling_good_rate_bytes_and_warnings(tmp_path: Path) -> None:
    write_run(tmp_path, step_s=3, optional=())
    warning = "the responder's answers average 60 bytes, a full answer is about 1,500: tryLater answers?"
    targets = [
        {**CEILING["targets"][0], "good_req_s": 8101.2, "bytes_per_response": 812.4},
        {**CEILING["targets"][1], "good_req_s": 27310.0, "bytes_per_response": 1520.0},
    ]
    (tmp_path / "ceiling.json").write_text(json.dumps({**CEILING, "targets": targets, "warnings": [warning]}))
    summary = report.render_summary(report.load_run(tmp_path), {}, [])
    assert f"**Warnings (ceiling.json):**\n\n- **{warning}**\n" in summary
    assert "| responder | 2 | 9,012 | 8,101 | 8,950 · 9,075 | 812 B | 6.8 ms | 22 ms | 0 |" in summary
    assert "| nginx | 2 | 27,310 | 27,310 | 27,100 · 27,520 | 1,520 B | 2.2 ms | 5.9 ms | 0 |" in summary
    assert (
        "- ceiling: 8,101 good req/s (non-2xx answers left out; 9,012 req/s in all) = 81.0× the tax-season peak (100/s) "
        "and 1.62× the eID bound (5,000/s) — a ceiling at full load, not the sustainable rate judged above\n"
    ) in summary
