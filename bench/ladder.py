"""The rate ladder: the highest constant rate at which the responder holds the goals.

The replay's sustainable rate can be no higher than the busiest step of the day it replays
(x50: 5,000 checks/s), while issue 6's headroom goal is 100 times the tax-season peak,
10,000/s. So after the replay, on the same loaded and warm system, fastgen sends constant
rates one rung at a time (``--rate R --seconds S``, every answer checked against the ground
truth) and each rung is judged by the day's rules for fastgen (``bench/report.py``):

- **held**: nothing wrong, stale or badly signed; at least 95 % of the rate delivered as
  verified answers; fastgen's error share ((wrong + stale + sig_fail + errors + any without
  an outcome) / sent) under 0.1 %; and the p99 of every 10 s window of whole seconds
  (sliding by 1 s, latency from each request's scheduled send time) under 50 ms;
- **missed** otherwise, with the reasons. As on the day, a rung where fastgen fell behind
  its schedule (its send lag p99 over 10 ms, or its ``saturated``) is judged all the same,
  since its lag is inside the latencies, and a miss there says it may be the generator's;
- **not judged**: fastgen left no results, or did not exit cleanly.

The climb stops at the first rung that is not held. The sustained rate is the highest rung
held with every lower rung held. It is relying-party load alone (no Locust, no admin writes,
no revocation burst), on a 2-core machine that also runs the generator: ``cpu`` records
each part's cores while fastgen sent (``services`` is PostgreSQL and Valkey), so a reader
sees whether the responder or the machine ran out.

Run alone against a running system (``bench/tax_season.py`` calls :func:`climb`)::

    python bench/ladder.py --truth-dir T --url http://127.0.0.1:8080 --run-dir RUN --rates 5000,7500,10000

Output: ``RUN/ladder.json`` (the rungs, their verdicts and figures, the sustained rate) and
each rung's fastgen files in ``RUN/ladder/<rate>/``. The rungs share fastgen's checker memo
(``--checker-memo``, by default ``RUN/checker-memo.bin``), so each distinct answer is verified
once over the climb, and again on a later climb into the same directory.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the project's packages from this tree
    sys.path.insert(0, str(ROOT))

from bench.fastgen import SCHEDULE_DONE  # noqa: E402 - after the path set-up above
from bench.report import (  # noqa: E402 - after the path set-up above
    ERROR_RATE_GOAL,
    FASTGEN_FAILURES,
    LAG_LIMIT_MS,
    P99_GOAL_MS,
    RATE_TOLERANCE,
    ladder_sustained,
    load_fastgen,
    second_windows,
)

__all__ = ["CHECKING_S", "DEFAULT_RATES", "climb", "judge_rung", "parse_rungs", "wait_for_text"]

#: How long fastgen may take, after a rung's last request, to check the answers it kept for
#: after the run (each distinct one verified once: thousands per second).
CHECKING_S = 1800.0

#: Rungs (checks/s): the eID bound (x50), then up to 3x it, past the 100x goal.
DEFAULT_RATES = (5000.0, 7500.0, 10000.0, 12500.0, 15000.0)
LADDER_FILE = "ladder.json"


def parse_rungs(text: str, seconds: float) -> list[float]:
    """The rungs of ``--rates``/``--ladder`` ("5000,7500"); ValueError with the reason."""
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"not a list of numbers: {text!r}") from None
    if not rates or any(not r > 0 for r in rates) or not seconds >= 10:
        raise ValueError("the rates must be positive numbers and a rung at least 10 s long (one latency window)")
    return rates


def judge_rung(rung_dir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """One rung's verdict and figures, from the fastgen files in ``rung_dir``."""
    fastgen = load_fastgen(rung_dir)
    rung: dict[str, Any] = {"rate": rate}
    totals = fastgen.totals() if fastgen is not None else None
    if fastgen is None or totals is None:
        return {**rung, "verdict": "not judged", "reasons": ["fastgen left no results"]}
    sent, counts = totals
    failed = sum(counts[k] for k in (*FASTGEN_FAILURES, "missing"))
    whole = sorted({int(r.t) for r in fastgen.seconds or []})
    windows = second_windows(whole[0], whole[-1] + 1) if whole else []
    worst = max((q for w in windows if (q := fastgen.window_quantile(w, 0.99)) is not None), default=None)
    p99, _ = fastgen.run_quantile("p99", 0.99)
    summary = fastgen.summary or {}
    lag_seconds = [r.t for r in fastgen.seconds or [] if r.lag_p99_ms is not None and r.lag_p99_ms > LAG_LIMIT_MS]
    behind = [str(summary["saturation_reason"])] if summary.get("saturated") else []
    if lag_seconds:
        behind.append(f"send lag p99 over {LAG_LIMIT_MS:g} ms in {len(lag_seconds)} of its seconds")
    rung.update(
        sent=sent,
        delivered_rps=round(counts["checked"] / seconds, 1),
        outcomes=counts,
        error_share=failed / sent if sent else None,
        p99_ms=p99,
        worst_window_p99_ms=worst,
        send_lag_p99_ms=fastgen.figure("send_lag_ms", "p99"),
        generator_behind="; ".join(behind),
        # fastgen.json's own figure: cores while it sent (climb adds the other parts').
        cpu={"fastgen": round(cores, 2)} if (cores := fastgen.figure("cpu_fraction", "")) is not None else {},
    )
    reasons = []
    wrong = counts["wrong"] + counts["stale"] + counts["sig_fail"]
    if wrong:
        reasons.append(f"{wrong:,} wrong, stale or badly signed answers")
    if counts["checked"] < RATE_TOLERANCE * rate * seconds:
        reasons.append(f"{counts['checked'] / seconds:,.0f} verified answers/s, under {RATE_TOLERANCE:.0%} of the rate")
    if sent and failed / sent >= ERROR_RATE_GOAL:
        reasons.append(f"error share {failed / sent:.3%} (goal < {ERROR_RATE_GOAL:.1%})")
    if worst is None or not worst < P99_GOAL_MS:
        shown = "none measured" if worst is None else f"{worst:g} ms"
        reasons.append(f"worst 10 s window p99 {shown} (goal < {P99_GOAL_MS:g} ms)")
    if reasons and behind and not wrong:
        # As for the day's steps: judged all the same (latency counts from the scheduled
        # time, so the generator's lag is inside it), but the miss may be the generator's.
        reasons.append(f"fastgen fell behind its schedule ({'; '.join(behind)}): the miss may be the generator's")
    return {**rung, "verdict": "missed" if reasons else "held", "reasons": reasons}


def _recorded(args: Sequence[str], names: dict[Path | None, str]) -> str:
    """A command line as recorded in ladder.json (which may be committed): each argument that
    is one of ``names``' paths, or under one, shown with the name instead."""
    shown = []
    for arg in args:
        for path, name in names.items():
            if path is not None and (arg == str(path) or arg.startswith(str(path) + "/")):
                arg = name + arg[len(str(path)) :]
                break
        shown.append(arg)
    return "python " + shlex.join(shown)


def wait_for_text(proc: subprocess.Popen[bytes], log: Path, text: str, timeout: float) -> bool:
    """Until ``text`` is in ``log`` (fastgen's "requests planned", its :data:`SCHEDULE_DONE`),
    the process ends or ``timeout`` passes; whether ``text`` showed while the process ran."""
    wanted = text.encode()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if wanted in log.read_bytes():
            return True
        time.sleep(0.1)
    return False


def climb(
    *,
    truth_dir: Path,
    url: str,
    run_dir: Path,
    rates: Sequence[float] = DEFAULT_RATES,
    seconds: float = 40.0,
    connections: int = 64,
    cpu: Callable[[], dict[str, float]] | None = None,
    checker_memo: Path | None = None,
    pause_s: float = 3.0,
) -> dict[str, Any]:
    """Climb the rungs in increasing order; stop at the first one not held. ``cpu``: CPU
    seconds per part so far (``tax_season.CpuSampler.sample``), read around each rung's
    sending (after fastgen has drawn its requests). ``run_dir/ladder.json`` is rewritten
    after every rung, so an interrupted climb keeps the rungs it finished. ``checker_memo``:
    fastgen's ``--checker-memo``, so that each rung starts with the answers already verified
    (by the replay, by the rungs below) instead of verifying them all again in its first
    seconds, which made a fresh generator fall behind."""
    result: dict[str, Any] = {"seconds": seconds, "connections": connections,
                              "rates": [float(r) for r in sorted(rates)], "rungs": [], "sustained_rps": None,
                              "commands": []}  # fmt: skip
    for i, rate in enumerate(sorted(rates)):
        if i:
            time.sleep(pause_s)
        rung_dir = run_dir / "ladder" / f"{rate:g}"
        rung_dir.mkdir(parents=True, exist_ok=True)
        args = ["bench/fastgen.py", "--truth-dir", str(truth_dir), "--url", url, "--run-dir", str(rung_dir),
                "--rate", f"{rate:g}", "--seconds", f"{seconds:g}", "--connections", str(connections),
                "--seed", str(int(rate))]  # fmt: skip
        if checker_memo is not None:
            args += ["--checker-memo", str(checker_memo)]
        result["commands"].append(_recorded(args, {truth_dir: "TRUTH_DIR", run_dir: "RUN_DIR", checker_memo: "MEMO"}))
        print(f"$ python {shlex.join(args)}", flush=True)
        log_path = rung_dir / "fastgen.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for_text(proc, log_path, "requests planned", timeout=600)
                before, started = (cpu() if cpu else {}), time.monotonic()
                wait_for_text(proc, log_path, SCHEDULE_DONE, timeout=seconds + 120)
                wall = time.monotonic() - started
                after = cpu() if cpu else {}
                # Then it checks the answers it kept for after the run: allowed time, not sampled.
                code = proc.wait(timeout=CHECKING_S)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                if proc.poll() is None:  # timed out, or interrupted (Ctrl-C) while it ran
                    proc.kill()
                    proc.wait()
        rung = judge_rung(rung_dir, rate, seconds)
        if code != 0:
            why = "did not finish in time" if code is None else f"exited with {code}"
            rung.update(verdict="not judged", reasons=[f"fastgen {why} (see its fastgen.log)", *rung["reasons"]])
        # Cores per part while fastgen sent (its request draw and its checking after the run
        # left out, as in its own figure).
        sampled = {k: round((after[k] - before.get(k, after[k])) / wall, 2) for k in after}
        rung["cpu"] = {**sampled, **rung.get("cpu", {})}
        result["rungs"].append(rung)
        result["sustained_rps"] = ladder_sustained(result)
        (run_dir / LADDER_FILE).write_text(json.dumps(_strict(result), indent=1, allow_nan=False))
        print(
            f"ladder {rate:g}/s: {rung['verdict']}" + (f" ({'; '.join(rung['reasons'])})" if rung["reasons"] else ""),
            flush=True,
        )
        if rung["verdict"] != "held":
            break
    return result


def _strict(value: Any) -> Any:
    """``value`` with infinite latencies (an unanswered request) as the string "inf": strict JSON."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/ladder.py",
        description=__doc__.split("\n\n")[0],
        epilog="Rules and output: see the module docstring (bench/ladder.py) and bench/README.md.",
    )
    parser.add_argument("--truth-dir", type=Path, required=True, help="what 'certstatus bench load' wrote")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the public responder (default %(default)s)")
    parser.add_argument("--run-dir", type=Path, required=True, help="where ladder.json and the rungs' files go")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in DEFAULT_RATES),
                        help="the rungs, checks/s, comma-separated (default %(default)s)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=40.0, help="each rung's length (default 40)")
    parser.add_argument("--connections", type=int, default=64, help="fastgen's connections (default 64)")
    parser.add_argument("--checker-memo", type=Path,
                        help="fastgen's --checker-memo, shared by the rungs so that each distinct answer is verified "
                             "once over the climb (default RUN_DIR/checker-memo.bin)")  # fmt: skip
    opts = parser.parse_args(argv)
    try:
        rates = parse_rungs(opts.rates, opts.seconds)
    except ValueError as e:
        parser.error(f"--rates/--seconds: {e}")
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    memo = opts.checker_memo or opts.run_dir / "checker-memo.bin"
    result = climb(truth_dir=opts.truth_dir, url=opts.url, run_dir=opts.run_dir, rates=rates, seconds=opts.seconds,
                   connections=opts.connections, checker_memo=memo)  # fmt: skip
    print(f"sustained: {result['sustained_rps'] or 'none'}; {opts.run_dir / LADDER_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
