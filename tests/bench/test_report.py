"""bench/report.py on synthetic runs: the summary's figures, the plots, and what is not measured.

``write_run`` writes a run directory as the Locust suite does: Locust's own CSV files (the
columns of its ``StatsCSVFileWriter`` with ``--csv-full-history``, its percentile algorithm,
the master's history advancing only when a worker reports, every 3 s), plus shape.csv,
checks.csv, propagation.csv and meta.json. The load is the deadline day compressed to 24
steps, against a responder with a known capacity: above it, answers fail and slow down. Every
figure the tests expect is computed here, from what was generated, not by the report's code.
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

import pytest

from bench import report

T0 = dt.datetime(2026, 5, 31, 12, 0, tzinfo=dt.UTC)  # the deadline day
PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)  # Locust's default
PERCENTILE_COLUMNS = [f"{int(p * 100) if (p * 100).is_integer() else round(100 * p, 6)}%" for p in PERCENTILES]
REPORT_EVERY_S = 3  # a Locust worker's report interval

# Share of the busiest hour's rate in each hour of the deadline day.
DAY = (0.04, 0.03, 0.02, 0.02, 0.03, 0.05, 0.10, 0.20, 0.35, 0.50, 0.60, 0.65,
       0.60, 0.55, 0.60, 0.65, 0.70, 0.75, 0.85, 0.95, 1.00, 0.90, 0.70, 0.40)  # fmt: skip

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


def nearest_rank_hist(hist: Counter[int], q: float) -> int:
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
    files: list[str] = dataclasses.field(default_factory=list)


def write_run(
    run_dir: Path,
    *,
    peak: float = 5000.0,
    step_s: int = 20,
    traffic: Traffic | None = None,
    wrong_at: dict[int, int] | None = None,
    changes: list[tuple[str, float | None, float | None]] | None = None,
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
    assert len(step_rows) == sum(1 for i, d in enumerate(DAY) if i == 0 or DAY[i - 1] != d)  # equal hours merge
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

    truth = write_run(tmp_path, step_s=3, traffic=traffic, optional=())
    assert nearest_rank_hist(truth.ocsp_hist, 0.99) == p99  # the textbook answer, independent of Locust's
    run = report.load_run(tmp_path)
    summary = report.render_summary(run, {}, [])
    row = goal_row(summary, "OCSP p99")
    assert verdict(row) == outcome
    assert f"| {p99} ms (over the run, at the generator) |" in row
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
    assert "Sustainable rate: **at least 4,000/s (every step held: the ceiling was not reached)**" in summary
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
