"""bench/ladder.py: each rung judged by fastgen's rules of the day, and the ladder in the report.

The rungs' files are fastgen's, written by test_report's ``write_fastgen`` (whose latencies are
known exactly); the ladder against a real responder runs in test_tax_season."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.ladder import _recorded, _strict, judge_rung

from .test_report import FASTGEN_SHARE, SLOW_MS, STEPS, write_fastgen, write_run

RUNG_S = 40


def rung(tmp_path: Path, rate: float, *, sent_share: float = 1.0, **faults: object) -> dict:
    """Judge fastgen files of a rung at ``rate`` that sent ``sent_share`` of it."""
    rung_dir = tmp_path / f"{rate:g}-{sent_share:g}"
    rung_dir.mkdir()
    write_fastgen(rung_dir, [rate * sent_share / FASTGEN_SHARE] * RUNG_S, **faults)  # type: ignore[arg-type]
    return judge_rung(rung_dir, rate, RUNG_S)


def test_a_fast_clean_rung_is_held(tmp_path: Path) -> None:
    r = rung(tmp_path, 5000)
    assert r["verdict"] == "held" and r["reasons"] == []
    assert r["outcomes"]["checked"] == r["sent"] == 5000 * RUNG_S and r["delivered_rps"] == 5000
    assert r["error_share"] == 0 and r["worst_window_p99_ms"] < 50
    assert r["generator_behind"] == ""


def test_a_rung_that_was_not_all_sent_misses(tmp_path: Path) -> None:
    r = rung(tmp_path, 5000, sent_share=0.9)
    assert r["verdict"] == "missed"
    assert r["reasons"] == ["4,500 verified answers/s, under 95% of the rate"]
    assert rung(tmp_path, 5000, sent_share=0.96)["verdict"] == "held"


def test_a_slow_spell_misses_on_its_10_s_window_even_with_a_fast_whole_rung(tmp_path: Path) -> None:
    # 3 % of the answers slow in 5 seconds: 0.4 % of the rung (the rung's p99 is fast), but
    # every window holding those seconds has its p99 at the slow answers' latency.
    r = rung(tmp_path, 5000, slow={t: 0.03 for t in range(20, 25)})
    assert r["p99_ms"] < 50
    assert r["worst_window_p99_ms"] == SLOW_MS
    assert r["verdict"] == "missed"
    assert r["reasons"] == [f"worst 10 s window p99 {SLOW_MS:g} ms (goal < 50 ms)"]


def test_errors_at_or_over_a_tenth_of_a_percent_miss(tmp_path: Path) -> None:
    r = rung(tmp_path, 5000, errors={t: 0.002 for t in range(RUNG_S)})
    assert r["verdict"] == "missed"
    assert r["error_share"] == pytest.approx(0.002, rel=0.01)
    assert r["reasons"] == ["error share 0.200% (goal < 0.1%)"]
    assert rung(tmp_path, 4000, errors={3: 0.02})["verdict"] == "held"  # 0.05 % of the rung


def test_unanswered_requests_make_the_window_infinite(tmp_path: Path) -> None:
    r = rung(tmp_path, 5000, unanswered={7: 1000})  # 2 % of each 10 s window holding second 7
    assert r["verdict"] == "missed"
    assert r["worst_window_p99_ms"] == float("inf")
    assert r["reasons"] == ["error share 0.500% (goal < 0.1%)", "worst 10 s window p99 inf ms (goal < 50 ms)"]


def test_a_generator_that_fell_behind_is_judged_and_named_in_a_miss(tmp_path: Path) -> None:
    """As on the day: its lag is inside the latencies, so a rung that held despite it held;
    a miss says it may be the generator's, unless answers were wrong (never the generator's)."""
    reason = "send lag p99 over 10 ms in 3 windows (worst 31.5 ms)"
    behind = {"summary_extra": {"saturated": True, "saturation_reason": reason}}
    held = rung(tmp_path, 15000, **behind)
    assert held["verdict"] == "held" and held["generator_behind"] == reason

    missed = rung(tmp_path, 12500, slow={t: 0.03 for t in range(20, 25)}, lag={22: 14.0})
    assert missed["verdict"] == "missed"
    assert missed["generator_behind"] == "send lag p99 over 10 ms in 1 of its seconds"
    assert missed["reasons"][-1] == (
        "fastgen fell behind its schedule (send lag p99 over 10 ms in 1 of its seconds): the miss may be the generator's"
    )


def test_infinite_latencies_are_strict_json_and_commands_name_no_machine_path(tmp_path: Path) -> None:
    assert _strict({"rungs": [{"p99_ms": float("inf"), "x": [1.5, float("-inf")]}]}) == {
        "rungs": [{"p99_ms": "inf", "x": [1.5, "inf"]}]
    }
    truth, run = Path("truth"), Path("run")  # short relative paths must not mangle the flags
    args = ["bench/fastgen.py", "--truth-dir", "truth", "--run-dir", "run/ladder/5000", "--rate", "5000"]
    assert _recorded(args, {truth: "TRUTH_DIR", run: "RUN_DIR", None: "unused"}) == (
        "python bench/fastgen.py --truth-dir TRUTH_DIR --run-dir RUN_DIR/ladder/5000 --rate 5000"
    )


def test_no_results_are_not_judged(tmp_path: Path) -> None:
    assert judge_rung(tmp_path, 5000, RUNG_S) == {
        "rate": 5000,
        "verdict": "not judged",
        "reasons": ["fastgen left no results"],
    }


def test_the_sustained_rate_needs_every_lower_rung_held() -> None:
    def ladder(*verdicts: str) -> dict:
        return {"rungs": [{"rate": r, "verdict": v} for r, v in zip((5000, 7500, 10000), verdicts, strict=False)]}

    assert report.ladder_sustained(ladder("held", "held", "missed")) == 7500
    assert report.ladder_sustained(ladder("held", "not judged")) == 5000
    assert report.ladder_sustained(ladder("missed")) is None
    assert report.ladder_sustained({"error": "wrk missing"}) is None
    assert report.ladder_sustained(None) is None


LADDER = {
    "seconds": 40,
    "connections": 64,
    "rates": [5000.0, 7500.0, 10000.0],
    "rungs": [
        {"rate": 5000.0, "verdict": "held", "reasons": [], "delivered_rps": 4999.0, "error_share": 0.0, "p99_ms": 4.1,
         "worst_window_p99_ms": 9.0, "send_lag_p99_ms": 1.2,
         "cpu": {"responder": 0.61, "services": 0.12, "fastgen": 0.52, "machine": 1.31}},
        {"rate": 7500.0, "verdict": "held", "reasons": [], "delivered_rps": 7497.0, "error_share": 0.0, "p99_ms": 8.0,
         "worst_window_p99_ms": 21.0, "send_lag_p99_ms": 3.5,
         "cpu": {"responder": 0.93, "services": 0.17, "fastgen": 0.77, "machine": 1.92}},
        {"rate": 10000.0, "verdict": "missed", "reasons": ["worst 10 s window p99 180 ms (goal < 50 ms)"],
         "delivered_rps": 9950.0, "error_share": 0.0, "p99_ms": 61.0, "worst_window_p99_ms": 180.0,
         "send_lag_p99_ms": 7.0, "cpu": {"responder": 1.02, "services": 0.2, "fastgen": 0.93, "machine": 2.0}},
    ],
    "sustained_rps": 7500.0,
    "commands": ["python bench/fastgen.py --truth-dir TRUTH_DIR --run-dir RUN_DIR/ladder/5000 --rate 5000"],
}  # fmt: skip


def test_the_report_shows_the_ladder_and_counts_it_in_the_headroom_when_the_day_held(tmp_path: Path) -> None:
    write_run(tmp_path, peak=4000, optional=("shape", "checks"))  # every step of the day held
    (tmp_path / "ladder.json").write_text(json.dumps(LADDER))
    run = report.load_run(tmp_path)
    assert run.sustainable.lower_bound
    summary = report.render_summary(run, {}, [])
    assert "## Rate ladder (constant rates after the replay)" in summary
    assert (
        "With the rate ladder (below), which held **7,500/s** after the replay: headroom **75.0×** the tax-season peak "
        "and **1.50×** the eID bound. Every judged step of the day held, its peak included" in summary
    )
    assert "- The climb stopped at 10,000/s: missed (worst 10 s window p99 180 ms (goal < 50 ms))." in summary
    assert "| 10,000/s | **missed** | 9,950 |" in summary
    assert "worst 10 s window p99 180 ms (goal < 50 ms) |" in summary
    assert "0.93 · 0.17 · 0.77 · 1.92" in summary
    assert "- Sustained by the ladder: **7,500/s** = 75.0× the tax-season peak, 1.50× the eID bound" in summary
    assert f"({STEPS} judged, 0 not judged" in summary


def test_a_day_that_missed_keeps_its_headroom_and_a_failed_ladder_is_not_measured(tmp_path: Path) -> None:
    write_run(tmp_path, peak=4000, optional=("shape", "checks"))
    run = report.load_run(tmp_path)
    run.sustainable = report.Sustainable(2500.0, "2,500/s (the lowest step that did not hold: 3,000/s)")
    run.ladder = LADDER
    summary = report.render_summary(run, {}, [])
    assert (
        "The rate ladder (below) held 7,500/s (relying-party checks alone); it does not raise the headroom, as not "
        "every judged step of the day held." in summary
    )
    assert "Headroom: **25.0×** the tax-season peak" in summary
    assert "With the rate ladder" not in summary

    run.sustainable = report.Sustainable(None, "not measured (no step of the load shape could be judged)")
    assert "it does not raise the headroom, as no step of the day could be judged" in report.render_summary(run, {}, [])

    run.ladder = {**LADDER, "rungs": LADDER["rungs"][:1], "stopped": "interrupted (Ctrl-C)"}
    summary = report.render_summary(run, {}, [])
    assert "**The climb was stopped before it ended: interrupted (Ctrl-C)**" in summary
    assert "- Sustained by the ladder: **5,000/s**" in summary

    run.ladder = {"error": "RuntimeError: fastgen exited with 2"}
    summary = report.render_summary(run, {}, [])
    assert "Rate ladder: not measured: RuntimeError: fastgen exited with 2" in summary
    assert "rate ladder (below) held" not in summary
