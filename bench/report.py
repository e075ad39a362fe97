#!/usr/bin/env python
"""Turn one load run (Locust, and fastgen when it ran) into a report: ``summary.md``, four PNG plots, and the raw inputs.

```sh
python bench/report.py RUN_DIR                 # writes bench/results/<YYYY-MM-DD>-<scenario>/
python bench/report.py RUN_DIR --out DIR       # anywhere else
```

``bench.report.build_report(run_dir)`` does the same from Python and returns the directory
written. Needs matplotlib (the ``bench`` extra); plots are drawn with the Agg backend, so no
display is needed.

Input: RUN_DIR holds what the generators wrote during one run. ``t_s`` is whole seconds since
meta.json's ``started``.

| file | required | what |
|---|---|---|
| ``locust_stats.csv``, ``locust_stats_history.csv``, ``locust_failures.csv`` (``locust_exceptions.csv``) | the first two | Locust's ``--csv RUN_DIR/locust --csv-full-history`` output, unchanged |
| ``meta.json`` | yes | ``scenario``, ``scale``, ``peak_rps_target``, ``duration_s``, ``generators`` (a list of ``{name, processes, load}``, optionally ``share`` and ``connections``), ``commands``, ``commit``, ``started`` (ISO time, UTC if no offset: the moment ``t_s`` = 0), ``saturated`` (``{generator name: bool, "<name>_reason": text, …}``); optional ``delta_interval_s`` |
| ``shape.csv`` | no | ``t_s,target_rps,users``: the load shape's planned curve (all generators together); a row's target holds from its ``t_s`` until the next row's (the last until ``duration_s``) |
| ``checks.csv`` | no | ``t_s,checked,wrong,stale,sig_fail``: per second, verified OCSP answers and failed checks by kind, of every generator that checks (Locust and fastgen, summed) |
| ``propagation.csv`` | no | ``kind,change_at,ocsp_seen_s,delta_crl_seen_s``: seconds from the admin API's acknowledgement of a change until OCSP / the delta CRL showed it, empty if never |
| ``fastgen.csv`` | no | ``t_s,target_rps,sent,checked,wrong,stale,sig_fail,errors,p50_ms,p99_ms,max_ms,lag_p99_ms``: the open-loop generator per second of scheduled send time; every request sent ends as exactly one of checked, wrong, stale, sig_fail or errors (any it does not account for are reported and counted as errors); latency from the scheduled send time to the full answer (empty when nothing was answered; ``inf`` when requests were lost in flight or unanswered at the end), ``lag_p99_ms`` the generator's own delay from scheduled to sent |
| ``fastgen-latency.csv`` | no | ``t_s,le_ms,count``: fastgen's latency histogram per second (non-empty buckets; ``le_ms`` a bucket's upper bound, or ``inf``: over 10 s, or unanswered) |
| ``fastgen.json`` | no | fastgen's summary: ``requests``, ``outcomes`` (should sum to ``requests``; the rest count as errors), ``error_kinds``, ``latency_ms`` (exact over the run, from scheduled send time; ``Infinity`` with unanswered requests), ``latency_from_send_ms``, ``send_lag_ms``, ``cpu_fraction``, ``saturated``, ``saturation_reason``; optional ``backlog_max``, ``pool_exhausted_s``, ``checked_after_the_run`` (``answers``, ``distinct``, ``seconds``: the answers verified after the last request) |
| ``ceiling.json`` | no | bench/ceiling.py: the most wrk got from the responder and from nginx in the same run, per target ``req_s`` and optionally ``good_req_s`` (2xx answers only) and ``bytes_per_response``; optional ``warnings`` (or ``{"error": …}``) |
| ``ladder.json`` | no | bench/ladder.py: constant rates after the replay, per rung ``rate``, ``verdict`` (held / missed / not judged), ``reasons``, ``delivered_rps``, ``error_share``, ``p99_ms``, ``worst_window_p99_ms`` ("inf" when unanswered), ``cpu``; or ``{"error": …}``. It raises the headroom only when every judged step of the day held |

A missing optional input is reported as "not measured"; nothing is made up for it. Without
any fastgen file the report is Locust's alone, as before fastgen existed.

Locust's OCSP requests are its entries whose ``"<Type> <Name>"`` matches ``--ocsp-match``
(default: contains "ocsp", any case); admin and CRL requests must not match it. The error
rate and the latency goals are judged on OCSP requests only (admin requests sign and commit,
and are slower by design). Where several Locust entries are OCSP, their combined percentile
is bounded from above from each entry's percentiles and request counts (Locust writes no raw
samples): the smallest latency at which the entries' listed percentiles guarantee the
requested share of requests; it is exact with one entry. Latency over time uses the
history's percentiles, which with ``--csv-full-history`` cover Locust's sliding window of
about the last 10 s.

With fastgen, the OCSP error rate over the run is (Locust's OCSP failures + fastgen's wrong,
stale, sig_fail and errors, and any requests its outcomes do not account for) / (Locust's OCSP
requests + fastgen's requests sent), and the p99 over the run is met only if both Locust's p99
(bound) and fastgen's own (``latency_ms.p99`` of fastgen.json, exact) are under 50 ms. fastgen
measures from each request's scheduled send time, so a responder (or generator) that falls
behind shows as latency rather than as fewer requests; a request never answered is infinitely
late. A quantile of fastgen's histogram is the smallest bucket bound at which the cumulative
count reaches q·n: an upper bound, exact to the bucket's width (``inf`` past its last bound).

The OCSP error-rate and p99 goals are judged over the whole run *and* on every judged step
(below): the busiest hour is only about a tenth of the day's requests, so a whole-run p99 under
50 ms still allows a tenth of the peak hour over it. The goal row shows the whole-run figure and
each generator's worst judged step (for the p99, the worst 10 s window p99 of any judged step;
for the error rate, the worst step's error share); the goal is missed if either is at or over the
goal, met if both are under it and the step at the peak target was judged, and not measured
otherwise (no shape.csv, or no step at the peak target could be judged).

Sustainable rate (the headroom figure): the shape's curve is cut into steps of constant
target. A step is judged if at least 10 s (the latency window) remain after its first
``--settle`` seconds (5 s: spawning, and the up to 3 s a Locust worker's counts take to reach
the master). It *held* if the delivered OCSP rate (verified answers per second from checks.csv
when present, else Locust's OCSP requests plus fastgen's checked answers) was at least 95 % of
the target, Locust's OCSP error rate was under 0.1 %, and every 10 s window's Locust p99 inside
it was under 50 ms, these three over the step's seconds after the settle; and, when fastgen
sent requests in the step, fastgen's error share ((wrong + stale + sig_fail + errors + any
without an outcome) / sent) was under 0.1 % and the p99 of every 10 s window of its whole
seconds (its histogram summed over the window's seconds) was under 50 ms, these two over the
*whole* step [start, end): fastgen is open loop, with nothing to spawn and nothing reported
late, and the step-up (the burst at a step's start) is exactly what it must be judged on. Its
windows are every run of 10 consecutive whole seconds of the step, sliding by one second, so
every second of the step is in at least one full window. A window whose p99 falls in the
``inf`` bucket (or is ``inf`` in fastgen.csv) fails. Without fastgen-latency.csv, fastgen's
window p99 is bounded by the largest per-second p99 of fastgen.csv in the window (at most 1 %
of each second's answers were slower, so at most 1 % of the window's). A step in any second of
which fastgen's own send lag p99 (``lag_p99_ms``) was over 10 ms says that fastgen fell behind
its schedule, so that a shortfall may be the generator's; the generators table then counts
fastgen as saturated, whatever fastgen.json says. The sustainable rate is the highest target of
a held step that is below the lowest target of any step that did not hold: the highest rate
held with every lower rate of the run held too. If no judged step failed, the ceiling was not
reached and the figure is a lower bound (the report says how many steps were not judged). The
headroom figures are based on it, not on the ceiling (ceiling.json), which is the most the
responder answered at full load (its ``good_req_s``, 2xx answers only, when recorded). The
rate ladder (ladder.json) adds a headroom line with its sustained rate only when the day
could show no more: every judged step held, the peak included.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import datetime as dt
import json
import math
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# The load model (../shared/TAX_SEASON.md): the deadline day's busiest hour on MOICA, and
# all residents with the chip ID card in the last 4 hours before the deadline.
TAX_SEASON_PEAK_RPS = 100.0
EID_BOUND_RPS = 5000.0

ERROR_RATE_GOAL = 0.001  # a fraction: 0.1 %
P99_GOAL_MS = 50.0
PROPAGATION_GOAL_S = 1.0
RATE_TOLERANCE = 0.95  # a step is held only if at least this share of its target was delivered
WINDOW_S = 10.0  # Locust's CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW
DEFAULT_SETTLE_S = 5.0
# fastgen fell behind its schedule in a second whose send lag p99 is over this (fastgen.py's own limit).
LAG_LIMIT_MS = 10.0
DEFAULT_OCSP_MATCH = r"(?i)ocsp"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

REQUIRED = ("meta.json", "locust_stats.csv", "locust_stats_history.csv")
PLOT_FILES = {
    "throughput": "throughput.png",
    "latency": "latency.png",
    "propagation": "propagation.png",
    "checks": "checks.png",
}
NOT_MEASURED = "not measured"
FASTGEN_FILES = ("fastgen.csv", "fastgen-latency.csv", "fastgen.json")
FASTGEN_FAILURES = ("wrong", "stale", "sig_fail", "errors")  # the outcomes other than a verified right answer
CEILING_FILE = "ceiling.json"
LADDER_FILE = "ladder.json"  # bench/ladder.py: constant rates past the day's peak

_PERCENTILE_COLUMN = re.compile(r"^(\d+(?:\.\d+)?)%$")


class ReportError(Exception):
    """The run directory cannot be reported on (a required file is missing or unreadable)."""


# Inputs ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LocustEntry:
    """One row of locust_stats.csv: a request type over the whole run."""

    method: str
    name: str
    requests: int
    failures: int
    percentiles: dict[float, float]  # fraction -> ms; empty when Locust wrote N/A
    max_ms: float

    @property
    def label(self) -> str:
        return f"{self.method} {self.name}".strip()


@dataclasses.dataclass(frozen=True)
class HistoryRow:
    """One row of locust_stats_history.csv, time in seconds since the run's start."""

    t: float
    users: int
    method: str
    name: str
    requests_total: int
    failures_total: int
    percentiles: dict[float, float]  # of Locust's last ~10 s (with --csv-full-history)


@dataclasses.dataclass(frozen=True)
class ShapeRow:
    t: float
    target_rps: float
    users: int


@dataclasses.dataclass(frozen=True)
class CheckRow:
    t: float
    checked: int
    wrong: int
    stale: int
    sig_fail: int


@dataclasses.dataclass(frozen=True)
class Change:
    kind: str
    change_at: str
    ocsp_s: float | None  # None: never seen
    delta_crl_s: float | None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _number(text: str | None) -> float | None:
    """A CSV cell as a number; None for empty and Locust's "N/A"."""
    if text is None:
        return None
    text = text.strip()
    if text in ("", "N/A"):
        return None
    return float(text)


def _count(text: str | None) -> int:
    value = _number(text)
    return 0 if value is None else int(value)


def _percentiles(row: dict[str, str]) -> dict[float, float]:
    found: dict[float, float] = {}
    for column, cell in row.items():
        match = _PERCENTILE_COLUMN.match(column or "")
        value = _number(cell) if match else None
        if match and value is not None:
            found[float(match.group(1)) / 100] = value
    return found


def parse_time(text: str) -> dt.datetime:
    """An ISO time as an aware datetime (UTC when it names no offset)."""
    when = dt.datetime.fromisoformat(text.strip())
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def read_stats(path: Path) -> tuple[list[LocustEntry], LocustEntry | None]:
    """(entries, the Aggregated row) of locust_stats.csv."""
    entries: list[LocustEntry] = []
    total = None
    for row in _read_csv(path):
        entry = LocustEntry(
            method=row.get("Type", ""),
            name=row.get("Name", ""),
            requests=_count(row.get("Request Count")),
            failures=_count(row.get("Failure Count")),
            percentiles=_percentiles(row),
            max_ms=_number(row.get("Max Response Time")) or 0.0,
        )
        if entry.name == "Aggregated" and not entry.method:
            total = entry
        else:
            entries.append(entry)
    return entries, total


def read_history(path: Path, t0: float | None) -> tuple[list[HistoryRow], float]:
    """The history's rows with time relative to ``t0`` (the first row's time if None), and t0.

    Locust writes one row per entry per second; when its writer ran twice in a second, the
    later row wins.
    """
    raw = _read_csv(path)
    if not raw:
        return [], t0 or 0.0
    if t0 is None:
        t0 = min(float(r["Timestamp"]) for r in raw)
    latest: dict[tuple[float, str, str], HistoryRow] = {}
    for r in raw:
        row = HistoryRow(
            t=float(r["Timestamp"]) - t0,
            users=_count(r.get("User Count")),
            method=r.get("Type", ""),
            name=r.get("Name", ""),
            requests_total=_count(r.get("Total Request Count")),
            failures_total=_count(r.get("Total Failure Count")),
            percentiles=_percentiles(r),
        )
        latest[(row.t, row.method, row.name)] = row
    return sorted(latest.values(), key=lambda h: h.t), t0


def read_shape(path: Path) -> list[ShapeRow]:
    rows = [
        ShapeRow(float(r["t_s"]), float(r["target_rps"]), _count(r.get("users")))
        for r in _read_csv(path)
        if _number(r.get("t_s")) is not None and _number(r.get("target_rps")) is not None
    ]
    return sorted(rows, key=lambda s: s.t)


def read_checks(path: Path) -> list[CheckRow]:
    rows = [
        CheckRow(
            float(r["t_s"]),
            _count(r.get("checked")),
            _count(r.get("wrong")),
            _count(r.get("stale")),
            _count(r.get("sig_fail")),
        )
        for r in _read_csv(path)
        if _number(r.get("t_s")) is not None
    ]
    return sorted(rows, key=lambda c: c.t)


def read_propagation(path: Path) -> list[Change]:
    return [
        Change(
            kind=(r.get("kind") or "").strip() or "?",
            change_at=(r.get("change_at") or "").strip(),
            ocsp_s=_number(r.get("ocsp_seen_s")),
            delta_crl_s=_number(r.get("delta_crl_seen_s")),
        )
        for r in _read_csv(path)
    ]


@dataclasses.dataclass(frozen=True)
class FastgenSecond:
    """One row of fastgen.csv: the requests fastgen scheduled in one second, and how they ended."""

    t: float
    target_rps: float | None
    sent: int
    checked: int
    wrong: int
    stale: int
    sig_fail: int
    errors: int
    p50_ms: float | None  # None: nothing was answered
    p99_ms: float | None
    max_ms: float | None
    lag_p99_ms: float | None

    @property
    def outcomes(self) -> int:
        return self.checked + self.wrong + self.stale + self.sig_fail + self.errors

    @property
    def missing(self) -> int:
        """Requests sent that ended in no outcome at all (they should not exist): counted as errors."""
        return max(0, self.sent - self.outcomes)

    @property
    def failed(self) -> int:
        return self.wrong + self.stale + self.sig_fail + self.errors + self.missing


Histogram = dict[float, int]  # a bucket's upper bound (ms; math.inf for the last) -> requests in it


def read_fastgen(path: Path) -> list[FastgenSecond]:
    rows = [
        FastgenSecond(
            t=float(r["t_s"]),
            target_rps=_number(r.get("target_rps")),
            sent=_count(r.get("sent")),
            checked=_count(r.get("checked")),
            wrong=_count(r.get("wrong")),
            stale=_count(r.get("stale")),
            sig_fail=_count(r.get("sig_fail")),
            errors=_count(r.get("errors")),
            p50_ms=_number(r.get("p50_ms")),
            p99_ms=_number(r.get("p99_ms")),
            max_ms=_number(r.get("max_ms")),
            lag_p99_ms=_number(r.get("lag_p99_ms")),
        )
        for r in _read_csv(path)
        if _number(r.get("t_s")) is not None
    ]
    return sorted(rows, key=lambda r: r.t)


def read_histograms(path: Path) -> dict[int, Histogram]:
    """fastgen-latency.csv: t_s -> that second's histogram."""
    found: dict[int, Histogram] = {}
    for r in _read_csv(path):
        t, le, n = _number(r.get("t_s")), _number(r.get("le_ms")), _count(r.get("count"))
        if t is None or le is None or n <= 0:
            continue
        hist = found.setdefault(int(t), {})
        hist[le] = hist.get(le, 0) + n
    return found


def read_json(path: Path) -> dict[str, Any]:
    """An optional JSON input; one that cannot be read is reported as such, not skipped."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        return {"error": f"{path.name} is not JSON ({e})"}
    return data if isinstance(data, dict) else {"error": f"{path.name} is not a JSON object"}


# Arithmetic ------------------------------------------------------------------------------------------------


def nearest_rank(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); ``math.inf`` counts as larger than everything."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def percentile_upper_bound(parts: Iterable[tuple[float, dict[float, float]]], q: float) -> float | None:
    """An upper bound of the q-percentile of several request types taken together.

    ``parts`` are (request count, {fraction: ms}) per type, as Locust reports them. At a
    latency x, a type contributes at least its largest listed fraction whose value is <= x;
    the first x where the contributions reach q is returned. With a single type and q among
    its listed fractions this is that type's own percentile; None when nothing was measured.
    Locust rounds ranks down (``int(n * q)``), so a type's share is known to within one request.
    """
    usable = [(w, p) for w, p in parts if w > 0 and p]
    total = sum(w for w, _ in usable)
    if not usable:
        return None
    for x in sorted({v for _, p in usable for v in p.values()}):
        share = sum(w * max((f for f, v in p.items() if v <= x), default=0.0) for w, p in usable) / total
        if share >= q - 1e-12:
            return x
    return max(v for _, p in usable for v in p.values())


def merge_histograms(hists: Iterable[Histogram]) -> Histogram:
    merged: Histogram = {}
    for hist in hists:
        for le, n in hist.items():
            merged[le] = merged.get(le, 0) + n
    return merged


def histogram_quantile(hist: Histogram, q: float) -> float | None:
    """The smallest bucket bound at which the cumulative count reaches q·n: an upper bound of
    the nearest-rank q-quantile (exact when every value sits on a bound); None when empty."""
    n = sum(hist.values())
    if n <= 0:
        return None
    rank = max(1, math.ceil(q * n - 1e-9))
    seen = 0
    for le in sorted(hist):
        seen += hist[le]
        if seen >= rank:
            return le
    return max(hist)


class Counter:
    """A cumulative count read at irregular times, as a function of time.

    Locust's master only learns its workers' counts when they report (every 3 s), so its
    history repeats a total for a few rows and then jumps. Only the readings where the total
    changed are kept, and the count in between is interpolated linearly; a total that stood
    still for longer than ``pause_s`` is taken as a real pause (nothing was sent).
    """

    def __init__(self, readings: Sequence[tuple[float, float]], pause_s: float = 5.0) -> None:
        points: list[tuple[float, float]] = []
        for i, (t, v) in enumerate(readings):
            if i == 0:
                points.append((t, v))
                continue
            previous = readings[i - 1]
            if v != previous[1]:
                if t - points[-1][0] > pause_s and previous[0] > points[-1][0]:
                    points.append(previous)
                points.append((t, v))
        if readings and readings[-1][0] > points[-1][0]:
            points.append(readings[-1])
        self.points = points
        self._times = [t for t, _ in points]

    def at(self, t: float) -> float:
        pts = self.points
        if not pts:
            return 0.0
        if t <= pts[0][0]:
            return pts[0][1]
        if t >= pts[-1][0]:
            return pts[-1][1]
        i = bisect.bisect_left(self._times, t)
        (t1, v1), (t2, v2) = pts[i - 1], pts[i]
        return v1 + (v2 - v1) * (t - t1) / (t2 - t1)

    def between(self, a: float, b: float) -> float:
        return self.at(b) - self.at(a)


@dataclasses.dataclass
class RequestGroup:
    """Locust entries taken together (the OCSP requests), over the run and over time."""

    labels: list[str]
    entries: list[LocustEntry]
    exact: bool  # the run totals are Locust's own (one entry, or the Aggregated row)
    run_requests: int
    run_failures: int
    run_percentiles: dict[float, float | None]
    requests: list[Counter]
    failures: list[Counter]
    history: dict[float, list[tuple[Counter, HistoryRow]]]  # t -> (entry's counter, its row)
    full_history: bool

    def requests_between(self, a: float, b: float) -> float:
        return sum(c.between(a, b) for c in self.requests)

    def failures_between(self, a: float, b: float) -> float:
        return sum(c.between(a, b) for c in self.failures)

    def window_percentile(self, t: float, q: float) -> float | None:
        """The group's q-percentile over Locust's window ending at history time t."""
        parts = []
        for counter, row in self.history.get(t, []):
            weight = counter.between(t - WINDOW_S, t) if self.full_history else float(row.requests_total)
            if q in row.percentiles:
                parts.append((weight, row.percentiles))
        return percentile_upper_bound(parts, q)


def _entry_counters(rows: list[HistoryRow]) -> tuple[Counter, Counter]:
    """Request and failure counters of one entry; it counted nothing before its first row."""
    first = rows[0]
    start = [(first.t - 1.0, 0.0)] if first.requests_total else []
    requests = Counter(start + [(r.t, float(r.requests_total)) for r in rows])
    failures = Counter(start + [(r.t, float(r.failures_total)) for r in rows])
    return requests, failures


def request_group(
    entries: list[LocustEntry], total: LocustEntry | None, history: list[HistoryRow], pattern: re.Pattern[str]
) -> tuple[RequestGroup, str]:
    """The OCSP requests of the run, and a note on how they were picked."""
    chosen = [e for e in entries if pattern.search(e.label)]
    if chosen:
        note = "Locust entries matching `{}`: {}".format(pattern.pattern, ", ".join(f'"{e.label}"' for e in chosen))
    else:
        chosen = [total] if total else []
        note = (
            f"no Locust entry matches `{pattern.pattern}`: every Locust request (the Aggregated row) is counted as OCSP"
        )
    everything = {e.label for e in entries}
    use_total = total is not None and {e.label for e in chosen} in (everything, {total.label})
    if use_total and total is not None:
        run_entries = [total]
    else:
        run_entries = chosen
    by_entry: dict[tuple[str, str], list[HistoryRow]] = {}
    for row in history:
        by_entry.setdefault((row.method, row.name), []).append(row)
    full_history = any(key != ("", "Aggregated") for key in by_entry)
    wanted = {(e.method, e.name) for e in run_entries}
    if not full_history or not any(k in by_entry for k in wanted):
        wanted = {("", "Aggregated")}
        if chosen and not use_total:
            note += "; the history has no per-entry rows (run Locust with --csv-full-history), so rates and latency over time are those of all requests"
    requests, failures = [], []
    timeline: dict[float, list[tuple[Counter, HistoryRow]]] = {}
    for key in sorted(wanted):
        rows = by_entry.get(key, [])
        if not rows:
            continue
        req, fail = _entry_counters(rows)
        requests.append(req)
        failures.append(fail)
        for row in rows:
            timeline.setdefault(row.t, []).append((req, row))
    run_parts = [(float(e.requests), e.percentiles) for e in run_entries]
    group = RequestGroup(
        labels=[e.label for e in chosen],
        entries=run_entries,
        exact=len(run_entries) == 1,
        run_requests=sum(e.requests for e in run_entries),
        run_failures=sum(e.failures for e in run_entries),
        run_percentiles={q: percentile_upper_bound(run_parts, q) for q in (0.5, 0.95, 0.99)},
        requests=requests,
        failures=failures,
        history=timeline,
        full_history=full_history,
    )
    return group, note


@dataclasses.dataclass
class Fastgen:
    """fastgen's files of the run (the open-loop generator); any of them may be missing."""

    seconds: list[FastgenSecond] | None  # fastgen.csv
    histograms: dict[int, Histogram] | None  # fastgen-latency.csv
    summary: dict[str, Any] | None  # fastgen.json

    def rows_between(self, a: float, b: float) -> list[FastgenSecond]:
        return [r for r in self.seconds or [] if a <= r.t < b]

    def totals(self) -> tuple[int, dict[str, int]] | None:
        """(requests sent, outcome -> count) over the run: fastgen.json's, else fastgen.csv's sums.
        ``missing`` counts the requests sent that the outcomes do not account for (as errors)."""
        kinds = ("checked", *FASTGEN_FAILURES)
        summary = self.summary or {}
        outcomes = summary.get("outcomes")
        if isinstance(summary.get("requests"), int | float) and isinstance(outcomes, dict):
            sent = int(summary["requests"])
            counts = {k: int(outcomes.get(k) or 0) for k in kinds}
            return sent, {**counts, "missing": max(0, sent - sum(counts.values()))}
        if self.seconds is not None:
            counts = {k: sum(getattr(r, k) for r in self.seconds) for k in kinds}
            return sum(r.sent for r in self.seconds), {**counts, "missing": sum(r.missing for r in self.seconds)}
        return None

    def outcome_gaps(self) -> list[str]:
        """Where fastgen's outcomes do not add up to the requests it sent (every request should end
        as exactly one outcome): fastgen.json over the run, fastgen.csv per second."""
        gaps = []
        summary = self.summary or {}
        outcomes = summary.get("outcomes")
        if isinstance(summary.get("requests"), int | float) and isinstance(outcomes, dict):
            sent = int(summary["requests"])
            ended = sum(int(v) for v in outcomes.values() if isinstance(v, int | float) and not isinstance(v, bool))
            if ended != sent:
                gaps.append(f"fastgen.json's outcomes sum to {fmt_int(ended)}, not its {fmt_int(sent)} requests")
        odd = [r for r in self.seconds or [] if r.outcomes != r.sent]
        if odd:
            short, over = sum(r.missing for r in odd), sum(max(0, r.outcomes - r.sent) for r in odd)
            gaps.append(
                f"in {fmt_int(len(odd))} of fastgen.csv's seconds (the first t = {odd[0].t:,.0f} s) the outcomes do not sum to "
                f"sent: {fmt_int(short)} requests without an outcome, {fmt_int(over)} outcomes more than sent"
            )
        return gaps

    def window_quantile(self, seconds: Sequence[int], q: float) -> float | None:
        """The q-quantile of the answers scheduled in these seconds, from the histograms summed
        over them; without fastgen-latency.csv, bounded by the largest of fastgen.csv's own
        per-second quantiles (p50 or p99): no second had more than 1 - q of its answers above it."""
        if self.histograms is not None:
            return histogram_quantile(merge_histograms(self.histograms.get(t, {}) for t in seconds), q)
        column = {0.5: "p50_ms", 0.99: "p99_ms", 1.0: "max_ms"}.get(q)
        if column is None or self.seconds is None:
            return None
        wanted = set(seconds)
        values = [getattr(r, column) for r in self.seconds if int(r.t) in wanted and getattr(r, column) is not None]
        return max(values) if values else None

    def run_quantile(self, key: str, q: float) -> tuple[float | None, bool]:
        """(the q-quantile over the run, exact?): fastgen.json's ``latency_ms[key]`` (exact), else
        the whole run's histogram, else the largest per-second figure of fastgen.csv (upper bounds)."""
        latency = (self.summary or {}).get("latency_ms")
        if isinstance(latency, dict) and isinstance(latency.get(key), int | float):
            return float(latency[key]), True
        if self.histograms is not None:
            return histogram_quantile(merge_histograms(self.histograms.values()), q), False
        if self.seconds is not None:
            return self.window_quantile(sorted({int(r.t) for r in self.seconds}), q), False
        return None, False

    @property
    def inf_text(self) -> str:
        """An infinite window quantile: from the histogram (whose last bucket also holds answers over
        10 s), or from fastgen.csv's exact per-second figures (unanswered only)."""
        return INF_WINDOW if self.histograms is not None else INF_EXACT

    def figure(self, section: str, key: str) -> float | None:
        """A number of fastgen.json, e.g. ("send_lag_ms", "p99"); None when not there."""
        value = (self.summary or {}).get(section)
        if isinstance(value, dict):
            value = value.get(key)
        elif key:
            value = None
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def load_fastgen(run_dir: Path) -> Fastgen | None:
    """fastgen's files, or None when it left none (a Locust-only run)."""
    if not any((run_dir / name).is_file() for name in FASTGEN_FILES):
        return None
    return Fastgen(
        seconds=_optional(run_dir, "fastgen.csv", read_fastgen),
        histograms=_optional(run_dir, "fastgen-latency.csv", read_histograms),
        summary=_optional(run_dir, "fastgen.json", read_json),
    )


def second_windows(a: float, b: float) -> list[list[int]]:
    """The whole seconds t with a <= t < b, as every run of WINDOW_S consecutive ones (all of
    them as one window when fewer)."""
    seconds = list(range(math.ceil(a), math.ceil(b)))
    width = round(WINDOW_S)
    if len(seconds) < width:
        return [seconds] if seconds else []
    return [seconds[i : i + width] for i in range(len(seconds) - width + 1)]


# The run ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    start: float
    end: float
    target: float
    judged: bool = False
    reason: str = ""  # why it was not judged, or why it did not hold
    delivered_rps: float | None = None
    error_rate: float | None = None
    p99_ms: float | None = None  # Locust's worst 10 s window
    held: bool = False
    fastgen_sent: int | None = None  # None: not known (no fastgen.csv, or the step is too short to judge)
    fastgen_error_rate: float | None = None  # (wrong + stale + sig_fail + errors) / sent
    fastgen_p99_ms: float | None = None  # fastgen's worst 10 s window
    fastgen_lag_ms: float | None = None  # the largest per-second p99 of fastgen's own send lag
    fastgen_behind_s: int = 0  # fastgen's seconds in the step with a send lag p99 over LAG_LIMIT_MS


@dataclasses.dataclass
class Sustainable:
    rate: float | None  # None: not measured
    text: str
    lower_bound: bool = False  # the ceiling was not reached
    below: float | None = None  # every judged step failed; the lowest one


@dataclasses.dataclass
class Run:
    run_dir: Path
    meta: dict[str, Any]
    started: dt.datetime
    duration_s: float
    entries: list[LocustEntry]
    total: LocustEntry | None
    ocsp: RequestGroup
    ocsp_note: str
    history_times: list[float]
    failures: list[dict[str, str]] | None
    shape: list[ShapeRow] | None
    checks: list[CheckRow] | None
    changes: list[Change] | None
    settle_s: float
    fastgen: Fastgen | None = None
    ceiling: dict[str, Any] | None = None
    ladder: dict[str, Any] | None = None
    steps: list[Step] = dataclasses.field(default_factory=list)
    sustainable: Sustainable = dataclasses.field(default_factory=lambda: Sustainable(None, NOT_MEASURED))


def _optional(run_dir: Path, name: str, reader: Any) -> Any:
    path = run_dir / name
    return reader(path) if path.is_file() else None


def load_run(run_dir: Path, *, ocsp_match: str = DEFAULT_OCSP_MATCH, settle_s: float = DEFAULT_SETTLE_S) -> Run:
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise ReportError(f"{run_dir.name}: missing {', '.join(missing)}")
    try:
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise ReportError(f"meta.json is not JSON: {e}") from e
    started = parse_time(meta["started"]) if meta.get("started") else None
    history, t0 = read_history(run_dir / "locust_stats_history.csv", started.timestamp() if started else None)
    if started is None:
        started = dt.datetime.fromtimestamp(t0, dt.UTC)
    entries, total = read_stats(run_dir / "locust_stats.csv")
    ocsp, note = request_group(entries, total, history, re.compile(ocsp_match))
    history_times = sorted({h.t for h in history})
    duration = _number(str(meta.get("duration_s", ""))) or (history_times[-1] if history_times else 0.0)
    run = Run(
        run_dir=run_dir,
        meta=meta,
        started=started,
        duration_s=duration,
        entries=entries,
        total=total,
        ocsp=ocsp,
        ocsp_note=note,
        history_times=history_times,
        failures=_optional(run_dir, "locust_failures.csv", _read_csv),
        shape=_optional(run_dir, "shape.csv", read_shape),
        checks=_optional(run_dir, "checks.csv", read_checks),
        changes=_optional(run_dir, "propagation.csv", read_propagation),
        settle_s=settle_s,
        fastgen=load_fastgen(run_dir),
        ceiling=_optional(run_dir, CEILING_FILE, read_json),
        ladder=_optional(run_dir, LADDER_FILE, read_json),
    )
    run.steps = judge_steps(run)
    run.sustainable = sustainable_rate(run.steps)
    return run


def shape_steps(shape: Sequence[ShapeRow], end: float) -> list[Step]:
    """The curve as steps of constant target (equal neighbours merged)."""
    steps: list[Step] = []
    for i, row in enumerate(shape):
        step_end = shape[i + 1].t if i + 1 < len(shape) else max(end, row.t)
        if steps and steps[-1].target == row.target_rps:
            steps[-1].end = step_end
        else:
            steps.append(Step(row.t, step_end, row.target_rps))
    return [s for s in steps if s.end > s.start]


def checked_between(checks: Sequence[CheckRow], a: float, b: float) -> int:
    return sum(c.checked for c in checks if a <= c.t < b)


def judge_steps(run: Run) -> list[Step]:
    if not run.shape:
        return []
    steps = shape_steps(run.shape, run.duration_s)
    fastgen = run.fastgen
    for step in steps:
        # Locust's figures and the delivered rate from ``a`` (after the settle); fastgen's, open
        # loop, over the whole step: it neither spawns nor reports late, and the step-up is load too.
        a, b = step.start + run.settle_s, step.end
        whole = fastgen.rows_between(step.start, b) if fastgen is not None else []
        step.fastgen_lag_ms = max((r.lag_p99_ms for r in whole if r.lag_p99_ms is not None), default=None)
        step.fastgen_behind_s = sum(1 for r in whole if r.lag_p99_ms is not None and r.lag_p99_ms > LAG_LIMIT_MS)
        _judge_step(run, step, a, b, whole)
        if step.fastgen_behind_s:
            assert step.fastgen_lag_ms is not None
            behind = (
                f"fastgen fell behind its schedule (send lag p99 over {fmt_ms(LAG_LIMIT_MS)} in {step.fastgen_behind_s} s "
                f"of the step, up to {fmt_ms_fine(step.fastgen_lag_ms)})"
            )
            if step.judged and not step.held:
                behind += ": the shortfall may be the generator's, not the responder's"
            step.reason = "; ".join(r for r in (step.reason, behind) if r)
    return steps


def _judge_step(run: Run, step: Step, a: float, b: float, whole: list[FastgenSecond]) -> None:
    """Judge one step: Locust and the delivered rate on [a, b), fastgen on ``whole`` (its seconds
    of the whole step)."""
    fastgen = run.fastgen
    locust = "locust " if fastgen is not None else ""  # name the generator only when there are two
    if step.target <= 0:
        step.reason = "no load planned"
        return
    if b - a < WINDOW_S:
        step.reason = f"too short to judge ({step.end - step.start:.0f} s; needs {run.settle_s + WINDOW_S:.0f})"
        return
    fastgen_rows = fastgen.rows_between(a, b) if fastgen is not None else []
    if run.checks is not None:
        step.delivered_rps = checked_between(run.checks, a, b) / (b - a)
    elif run.ocsp.requests or fastgen_rows:
        delivered = run.ocsp.requests_between(a, b) + sum(r.checked for r in fastgen_rows)
        step.delivered_rps = delivered / (b - a)
    sent = run.ocsp.requests_between(a, b)
    if sent > 0:
        step.error_rate = run.ocsp.failures_between(a, b) / sent
    # Without --csv-full-history the history's percentiles are cumulative: no step's own.
    ends = [t for t in run.history_times if a + WINDOW_S <= t <= b] if run.ocsp.full_history else []
    p99s = [p for p in (run.ocsp.window_percentile(t, 0.99) for t in ends) if p is not None]
    step.p99_ms = max(p99s) if p99s else None
    figures: list[tuple[str, float | None]] = [
        ("delivered rate", step.delivered_rps),
        (f"{locust}error rate", step.error_rate),
        (f"{locust}p99", step.p99_ms),
    ]
    if fastgen is not None:
        if fastgen.seconds is None:
            figures.append(("fastgen error rate and p99 (no fastgen.csv)", None))
        else:
            step.fastgen_sent = sum(r.sent for r in whole)
        if step.fastgen_sent:
            step.fastgen_error_rate = sum(r.failed for r in whole) / step.fastgen_sent
            fastgen_p99s = [fastgen.window_quantile(w, 0.99) for w in second_windows(step.start, b)]
            step.fastgen_p99_ms = max((p for p in fastgen_p99s if p is not None), default=None)
            answered = step.fastgen_sent - sum(r.errors + r.missing for r in whole)
            if answered > 0:  # when nothing was answered there is no latency, and the error share fails
                figures.append(("fastgen p99", step.fastgen_p99_ms))
    unmeasured = [name for name, value in figures if value is None]
    if unmeasured:
        step.reason = f"{' and '.join(unmeasured)} not measured"
        if not run.ocsp.full_history:
            step.reason += " (Locust ran without --csv-full-history)"
        return
    assert step.delivered_rps is not None and step.error_rate is not None and step.p99_ms is not None
    step.judged = True
    misses = []
    if step.delivered_rps < RATE_TOLERANCE * step.target:
        misses.append(f"delivered {step.delivered_rps / step.target:.0%} of the target")
    if step.error_rate >= ERROR_RATE_GOAL:
        misses.append(f"{locust}error rate {fmt_pct(step.error_rate)}")
    if step.p99_ms >= P99_GOAL_MS:
        misses.append(f"{locust}p99 {fmt_ms(step.p99_ms)}")
    if step.fastgen_error_rate is not None and step.fastgen_error_rate >= ERROR_RATE_GOAL:
        misses.append(f"fastgen error rate {fmt_pct(step.fastgen_error_rate)}")
    if step.fastgen_p99_ms is not None and step.fastgen_p99_ms >= P99_GOAL_MS:
        lag = "" if step.fastgen_lag_ms is None else f" (its own send lag p99 up to {fmt_ms_fine(step.fastgen_lag_ms)})"
        assert fastgen is not None
        misses.append(f"fastgen p99 {fmt_ms_fine(step.fastgen_p99_ms, fastgen.inf_text)}{lag}")
    step.held = not misses
    step.reason = "; ".join(misses)


def sustainable_rate(steps: Sequence[Step]) -> Sustainable:
    judged = [s for s in steps if s.judged]
    if not judged:
        return Sustainable(None, f"{NOT_MEASURED} (no step of the load shape could be judged)")
    failed = [s.target for s in judged if not s.held]
    lowest_failure = min(failed, default=math.inf)
    held = [s.target for s in judged if s.held and s.target < lowest_failure]
    if not held:
        return Sustainable(
            0.0, f"none: the lowest rate judged, {fmt_rate(lowest_failure)}, did not hold", below=lowest_failure
        )
    rate = max(held)
    if not failed:
        counted = f"{len(judged)} judged, {len(steps) - len(judged)} not judged"
        return Sustainable(
            rate,
            f"at least {fmt_rate(rate)} (every judged step held ({counted}): the ceiling was not reached)",
            lower_bound=True,
        )
    return Sustainable(rate, f"{fmt_rate(rate)} (the lowest step that did not hold: {fmt_rate(lowest_failure)})")


# Formatting ------------------------------------------------------------------------------------------------


def fmt_int(n: float) -> str:
    return f"{round(n):,}"


def fmt_rate(rps: float) -> str:
    return f"{rps:,.0f}/s" if rps >= 10 else f"{rps:,.1f}/s"


def fmt_pct(fraction: float) -> str:
    pct = 100 * fraction
    if pct == 0:
        return "0 %"
    return f"{pct:.2g} %" if pct < 1 else f"{pct:.1f} %"


def fmt_ms(ms: float) -> str:
    return f"{ms:,.0f} ms"


INF_EXACT = "∞ (unanswered)"  # an exact figure (fastgen.json, a second of fastgen.csv) that is infinite
INF_WINDOW = "∞ (unanswered, or over 10 s)"  # a figure of fastgen's histogram: its last bucket holds both


def fmt_ms_fine(ms: float, infinite: str = INF_EXACT) -> str:
    """fastgen's latencies, measured to 0.1 ms: one decimal below 10 ms. fastgen records a request
    lost in flight or unanswered at the end with an infinite latency: ``infinite`` says so."""
    if math.isinf(ms):
        return infinite
    return f"{ms:.1f} ms" if ms < 10 else fmt_ms(ms)


def fmt_s(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# Goals -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Goal:
    goal: str
    verdict: str  # "met", "missed" or "not measured"
    figure: str


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


@dataclasses.dataclass(frozen=True)
class StepScope:
    """Which steps of the load shape the goals' step figures come from."""

    judged: list[Step]
    text: str  # how many were judged, and whether the peak was
    peak_judged: bool


def step_scope(run: Run) -> StepScope:
    judged = [s for s in run.steps if s.judged]
    if run.shape is None:
        return StepScope([], "no step judged (no shape.csv: the load shape is unknown)", False)
    if not judged:
        return StepScope([], f"no step judged ({len(run.steps)} steps, none could be: see Headroom)", False)
    text = f"{len(judged)} of {len(run.steps)} steps judged"
    peak = max(s.target for s in run.steps)
    peak_judged = any(s.target == peak for s in judged)
    if not peak_judged:
        why = next(s.reason for s in run.steps if s.target == peak)
        text += f"; **the peak step ({fmt_rate(peak)}) was not judged**: {why}"
    return StepScope(judged, text, peak_judged)


def _worst(steps: Sequence[Step], attr: str) -> tuple[float, Step] | None:
    """The largest figure ``attr`` of these steps, and its step (the first of equals)."""
    found = [(getattr(s, attr), s) for s in steps if getattr(s, attr) is not None]
    return max(found, key=lambda vs: vs[0]) if found else None


Figure = tuple[str, str, Callable[[float], str]]  # (generator, Step attribute, its format)


def _with_steps(
    run: Run, name: str, whole_ok: bool | None, figure: str, label: str, per_generator: list[Figure], goal: float
) -> Goal:
    """A goal judged over the whole run (``whole_ok``, None: not measured) and on every judged step:
    ``per_generator`` names the Step figures whose worst judged step is shown. Missed if either
    misses; met only if both meet and the peak step was judged; else not measured."""
    scope = step_scope(run)
    worst = [(who, fmt, _worst(scope.judged, attr)) for who, attr, fmt in per_generator]
    parts = []
    for who, fmt, found in worst:
        prefix = f"{who} " if who else ""
        if found is None:
            parts.append(f"{prefix}{NOT_MEASURED}")
        elif found[0] == 0:
            parts.append(f"{prefix}{fmt(0.0)} (in every judged step)")
        else:
            value, step = found
            parts.append(f"{prefix}{fmt(value)} (the {fmt_rate(step.target)} step at {step.start:,.0f} s)")
    if scope.judged:
        figure += f"; {label}: {', '.join(parts)}; {scope.text}"
    else:
        figure += f"; {scope.text}"
    if whole_ok is False or any(found is not None and found[0] >= goal for _, _, found in worst):
        return Goal(name, "missed", figure)
    return Goal(name, "met" if whole_ok and scope.peak_judged else NOT_MEASURED, figure)


def _step_spans(run: Run) -> str:
    """Which seconds of a step each generator's step figures cover, when there are two."""
    if run.fastgen is None:
        return ""
    return f" (Locust after each step's first {run.settle_s:g} s, fastgen over the whole step)"


def _error_rate_goal(run: Run) -> Goal:
    g = run.ocsp
    name = f"OCSP error rate < {fmt_pct(ERROR_RATE_GOAL)}"
    worst_label = "worst judged step" + _step_spans(run)
    all_locust = ""
    if run.total and run.total.requests and run.total.label not in {e.label for e in g.entries}:
        all_locust = f"; all Locust requests: {fmt_pct(run.total.failures / run.total.requests)}"
    if run.fastgen is None:
        if g.run_requests == 0:
            figure, ok = "Locust sent no OCSP requests", None
        else:
            rate = g.run_failures / g.run_requests
            figure = f"{fmt_pct(rate)} over the run ({fmt_int(g.run_failures)} failed of {fmt_int(g.run_requests)} Locust OCSP requests{all_locust})"
            ok = rate < ERROR_RATE_GOAL
        return _with_steps(run, name, ok, figure, "worst judged step", [("", "error_rate", fmt_pct)], ERROR_RATE_GOAL)
    totals = run.fastgen.totals()
    gaps = run.fastgen.outcome_gaps()
    if totals is None:
        sent, failed, split = 0, 0, "fastgen's outcomes not measured (neither fastgen.json nor fastgen.csv)"
    else:
        sent, outcomes = totals
        failed = sum(outcomes[k] for k in FASTGEN_FAILURES) + outcomes["missing"]
        split = (
            f"fastgen {fmt_int(failed)} of {fmt_int(sent)}: wrong status {fmt_int(outcomes['wrong'])}, stale {fmt_int(outcomes['stale'])}, "
            f"bad signature {fmt_int(outcomes['sig_fail'])}, errors {fmt_int(outcomes['errors'])}"
        )
        if outcomes["missing"]:
            split += f", **without an outcome {fmt_int(outcomes['missing'])} (counted as errors)**"
    if gaps:
        split += f"; **fastgen's outcomes do not add up: {'; '.join(gaps)}**"
    requests, failures = g.run_requests + sent, g.run_failures + failed
    per_generator: list[Figure] = [("Locust", "error_rate", fmt_pct), ("fastgen", "fastgen_error_rate", fmt_pct)]
    if requests == 0:
        figure = f"no OCSP requests were sent (Locust none; {split})"
        return _with_steps(run, name, None, figure, worst_label, per_generator, ERROR_RATE_GOAL)
    rate = failures / requests
    figure = (
        f"{fmt_pct(rate)} over the run ({fmt_int(failures)} failed of {fmt_int(requests)} OCSP requests: "
        f"Locust {fmt_int(g.run_failures)} of {fmt_int(g.run_requests)}; {split}{all_locust})"
    )
    return _with_steps(run, name, rate < ERROR_RATE_GOAL, figure, worst_label, per_generator, ERROR_RATE_GOAL)


def _p99_goal(run: Run) -> Goal:
    g = run.ocsp
    name = f"OCSP p99 < {fmt_ms(P99_GOAL_MS)}"
    p99 = g.run_percentiles.get(0.99)
    if p99 is None:
        locust = "no OCSP latency in locust_stats.csv"
    elif g.exact:
        locust = f"{fmt_ms(p99)} (over the run, at the generator)"
    else:
        each = ", ".join(f"{e.label} {fmt_ms(e.percentiles[0.99])}" for e in g.entries if 0.99 in e.percentiles)
        locust = f"≤ {fmt_ms(p99)} (over the run, at the generator; an upper bound from the request types' own: {each})"
    # Several OCSP entries in the history: a window's p99 is an upper bound from theirs.
    bound = "≤ " if len(g.requests) > 1 else ""

    def locust_window(ms: float) -> str:
        return bound + fmt_ms(ms)

    label = "worst 10 s window p99 of a judged step" + _step_spans(run)
    if run.fastgen is None:
        ok = None if p99 is None else p99 < P99_GOAL_MS
        return _with_steps(run, name, ok, locust, label, [("", "p99_ms", locust_window)], P99_GOAL_MS)
    fastgen_p99, exact = run.fastgen.run_quantile("p99", 0.99)
    if fastgen_p99 is None:
        fastgen = f"{NOT_MEASURED} (no latency in fastgen.json, fastgen-latency.csv or fastgen.csv)"
    elif exact:
        n = run.fastgen.figure("latency_ms", "n")
        answers = f"its {fmt_int(n)} answers" if n is not None else "its answers"
        fastgen = f"{fmt_ms_fine(fastgen_p99)} (exact over {answers}, from each request's scheduled send time)"
    else:
        source = (
            "its latency histogram"
            if run.fastgen.histograms is not None
            else "the largest per-second p99 of fastgen.csv"
        )
        fastgen = f"≤ {fmt_ms_fine(fastgen_p99, run.fastgen.inf_text)} (from scheduled send time; an upper bound from {source}, no fastgen.json)"
    figure = f"Locust {locust}; fastgen {fastgen}"
    measured = [v for v in (p99, fastgen_p99) if v is not None]
    ok = None if len(measured) < 2 else all(v < P99_GOAL_MS for v in measured)
    if any(v >= P99_GOAL_MS for v in measured):
        ok = False
    inf_text = run.fastgen.inf_text

    def fastgen_window(ms: float) -> str:
        return fmt_ms_fine(ms, inf_text)

    per_generator: list[Figure] = [("Locust", "p99_ms", locust_window), ("fastgen", "fastgen_p99_ms", fastgen_window)]
    return _with_steps(run, name, ok, figure, label, per_generator, P99_GOAL_MS)


def goals(run: Run) -> list[Goal]:
    found: list[Goal] = []
    name = "zero wrong answers (wrong status, stale, bad signature)"
    if run.checks is None:
        found.append(Goal(name, NOT_MEASURED, "no checks.csv"))
    else:
        checked = sum(c.checked for c in run.checks)
        wrong, stale, sig = (sum(getattr(c, k) for c in run.checks) for k in ("wrong", "stale", "sig_fail"))
        bad = wrong + stale + sig
        if checked == 0 and bad == 0:
            found.append(Goal(name, NOT_MEASURED, "checks.csv counts no verified answers"))
        else:
            both = " of both generators" if run.fastgen is not None else ""  # checks.csv sums their checks
            figure = f"{fmt_int(bad)} wrong of {fmt_int(checked)} verified OCSP answers{both} (wrong status {fmt_int(wrong)}, stale {fmt_int(stale)}, bad signature {fmt_int(sig)})"
            found.append(Goal(name, _verdict(bad == 0), figure))

    found += [_error_rate_goal(run), _p99_goal(run)]

    name = f"revocation propagation to OCSP p99 < {fmt_s(PROPAGATION_GOAL_S)}"
    if run.changes is None:
        found.append(Goal(name, NOT_MEASURED, "no propagation.csv"))
    elif not run.changes:
        found.append(Goal(name, NOT_MEASURED, "propagation.csv has no rows"))
    else:
        seen = [c.ocsp_s if c.ocsp_s is not None else math.inf for c in run.changes]
        p99s = nearest_rank(seen, 0.99)
        never = sum(1 for s in seen if math.isinf(s))
        figure = f"{fmt_s(p99s)} (p50 {fmt_s(nearest_rank(seen, 0.5))}; {fmt_int(len(seen))} changes, {fmt_int(never)} never seen)"
        found.append(Goal(name, _verdict(p99s < PROPAGATION_GOAL_S), figure))
    return found


# Plots -----------------------------------------------------------------------------------------------------


def _figure(rows: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = 4.5 if rows == 1 else 6.5
    fig = Figure(figsize=(10, height))
    FigureCanvasAgg(fig)
    # Fixed margins (room for a second y axis on the right): a layout engine would draw twice.
    fig.subplots_adjust(left=0.08, right=0.91, bottom=0.5 / height, top=1 - 0.4 / height, hspace=0.15)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _legend(*axes: Any) -> None:
    handles, labels = [], []
    for ax in axes:
        h, la = ax.get_legend_handles_labels()
        handles += h
        labels += la
    if handles:
        axes[0].legend(handles, labels, loc="upper left", fontsize="small", ncol=2 if len(handles) > 7 else 1)


def _seconds(run: Run) -> list[float]:
    end = max([run.duration_s, *run.history_times[-1:]])
    return [float(t) for t in range(int(math.ceil(end)) + 1)]


def plot_throughput(run: Run, path: Path) -> None:
    fig, (ax,) = _figure()
    seconds = _seconds(run)
    for step in run.steps:
        if step.judged:
            ax.axvspan(step.start, step.end, color="tab:green" if step.held else "tab:red", alpha=0.08, lw=0)
    if run.shape:
        ts = [s.t for s in run.shape] + [max(run.duration_s, run.shape[-1].t)]
        ax.step(
            ts,
            [s.target_rps for s in run.shape] + [run.shape[-1].target_rps],
            where="post",
            color="black",
            ls="--",
            label="target (shape.csv)",
        )
    fastgen_rows = run.fastgen.seconds if run.fastgen is not None and run.fastgen.seconds else []
    if run.checks is not None:
        ax.plot(
            [c.t for c in run.checks],
            [c.checked for c in run.checks],
            color="tab:blue",
            lw=1,
            label="verified OCSP answers/s, both generators (checks.csv)"
            if fastgen_rows
            else "verified OCSP answers/s (checks.csv)",
        )
    elif fastgen_rows and run.ocsp.requests:
        checked = {round(r.t): r.checked for r in fastgen_rows}
        ax.plot(
            seconds,
            [run.ocsp.requests_between(t - 2.5, t + 2.5) / 5 + checked.get(round(t), 0) for t in seconds],
            color="tab:blue",
            lw=1,
            label="total: Locust OCSP requests/s + fastgen verified answers/s",
        )
    if fastgen_rows:
        ax.plot(
            [r.t for r in fastgen_rows],
            [r.checked for r in fastgen_rows],
            color="tab:purple",
            lw=1,
            # fastgen.csv counts a request in the second it was scheduled, not when its answer came
            label="fastgen verified answers/s, by scheduled second (fastgen.csv)",
        )
        planned = [(r.t, r.target_rps) for r in fastgen_rows if r.target_rps is not None]
        if planned:
            ax.plot(
                [t for t, _ in planned],
                [v for _, v in planned],
                color="tab:purple",
                lw=0.8,
                ls=":",
                label="fastgen's planned rate",
            )
    if run.ocsp.requests:
        # Locust's master hears from its workers every 3 s: a 5 s average hides the lumps.
        ax.plot(
            seconds,
            [run.ocsp.requests_between(t - 2.5, t + 2.5) / 5 for t in seconds],
            color="tab:orange",
            lw=1,
            label="Locust OCSP requests/s (5 s average)",
        )
    if run.sustainable.rate:
        ax.axhline(
            run.sustainable.rate,
            color="tab:green",
            lw=1,
            ls=":",
            label=f"sustainable rate {fmt_rate(run.sustainable.rate)}",
        )
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    if fastgen_rows:  # room above the lines for the longer legend
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
    err = ax.twinx()
    rates = []
    fastgen_by_t = {round(r.t): r for r in fastgen_rows}
    for t in seconds:
        sent = run.ocsp.requests_between(t - WINDOW_S, t)
        failed = run.ocsp.failures_between(t - WINDOW_S, t)
        for sec in range(round(t - WINDOW_S), round(t)):  # fastgen's whole seconds in [t - 10, t)
            row = fastgen_by_t.get(sec)
            if row is not None:
                sent, failed = sent + row.sent, failed + row.failed
        rates.append(100 * failed / sent if sent > 0 else math.nan)
    if run.ocsp.requests or fastgen_rows:
        label = (
            "OCSP error rate, Locust and fastgen, last 10 s (%)" if fastgen_rows else "OCSP error rate, last 10 s (%)"
        )
        err.plot(seconds, rates, color="tab:red", lw=1, label=label)
    err.axhline(
        100 * ERROR_RATE_GOAL, color="tab:red", lw=0.8, ls=":", label=f"error-rate goal {fmt_pct(ERROR_RATE_GOAL)}"
    )
    err.set_yscale("symlog", linthresh=0.01)
    err.set_ylim(0, 100)
    err.set_ylabel("error rate (%)")
    _legend(ax, err)
    ax.set_title(
        f"{run.meta.get('scenario', '?')}: throughput and errors against the target (green: step held, red: did not)"
    )
    fig.savefig(path, dpi=100)


def plot_latency(run: Run, path: Path) -> None:
    fig, (ax,) = _figure()
    times = sorted(run.ocsp.history)
    fastgen = run.fastgen if run.fastgen is not None and run.fastgen.seconds else None
    who = "Locust " if fastgen is not None else ""
    any_positive = False
    for q, color in ((0.5, "tab:blue"), (0.95, "tab:orange"), (0.99, "tab:red")):
        values = [run.ocsp.window_percentile(t, q) for t in times]
        points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None and v > 0]
        any_positive = any_positive or bool(points)
        ax.plot([t for t, _ in points], [v for _, v in points], color=color, lw=1, label=f"{who}p{round(q * 100)}")
    if fastgen is not None:
        rows = fastgen.seconds or []
        lines: list[tuple[str, list[tuple[float, float | None]], dict[str, Any]]] = [
            ("fastgen p50, per scheduled second", [(r.t, r.p50_ms) for r in rows], {"color": "tab:cyan", "lw": 0.8}),
            ("fastgen p99, per scheduled second", [(r.t, r.p99_ms) for r in rows], {"color": "tab:pink", "lw": 0.8}),
        ]
        if fastgen.histograms is not None:
            ends = sorted(int(r.t) for r in rows)
            width = round(WINDOW_S)
            window_p99 = [(t + 1.0, fastgen.window_quantile(range(t - width + 1, t + 1), 0.99)) for t in ends]
            lines.append(("fastgen p99, last 10 s (judged)", window_p99, {"color": "tab:purple", "lw": 1.2}))
        lines.append(
            (
                "fastgen send lag p99 (its own delay)",
                [(r.t, r.lag_p99_ms) for r in rows],
                {"color": "grey", "lw": 0.8, "ls": "--"},
            )
        )
        for label, series, style in lines:
            points = [(t, v) for t, v in series if v is not None and 0 < v < math.inf]
            any_positive = any_positive or bool(points)
            if points:
                ax.plot([t for t, _ in points], [v for _, v in points], label=label, **style)
        # Unanswered requests have an infinite latency: a mark at the top where a p99 is infinite.
        unanswered = sorted(
            {t for label, series, _ in lines if label.startswith("fastgen p99") for t, v in series if v == math.inf}
        )
        if unanswered:
            ax.plot(
                unanswered,
                [0.97] * len(unanswered),
                transform=ax.get_xaxis_transform(),
                ls="",
                marker="v",
                color="tab:red",
                label=f"fastgen p99 {INF_WINDOW}",
            )
    ax.axhline(P99_GOAL_MS, color="black", ls="--", lw=0.8, label=f"p99 goal {fmt_ms(P99_GOAL_MS)}")
    if any_positive:
        ax.set_yscale("log")
        if fastgen is not None:  # room above the lines for the longer legend
            bottom, top = ax.get_ylim()
            ax.set_ylim(bottom, top * 30)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("OCSP latency at the generator (ms)")
    window = "Locust's last ~10 s" if run.ocsp.full_history else "cumulative (history without --csv-full-history)"
    if fastgen is not None:
        window = "its last ~10 s" if run.ocsp.full_history else "cumulative"
        ax.set_title(
            f"{run.meta.get('scenario', '?')}: OCSP latency (Locust: {window}; fastgen: from scheduled send time)"
        )
    else:
        ax.set_title(f"{run.meta.get('scenario', '?')}: OCSP latency percentiles ({window})")
    _legend(ax)
    fig.savefig(path, dpi=100)


def plot_propagation(changes: Sequence[Change], path: Path, title: str) -> None:
    fig, (ax,) = _figure()
    n = len(changes)
    for label, values, color in (
        ("OCSP", [c.ocsp_s for c in changes], "tab:blue"),
        ("delta CRL", [c.delta_crl_s for c in changes], "tab:orange"),
    ):
        seen = sorted(max(v, 1e-3) for v in values if v is not None)
        if seen:
            never = n - len(seen)
            suffix = f", {never} never seen" if never else ""
            ax.step(
                seen,
                [(i + 1) / n for i in range(len(seen))],
                where="post",
                color=color,
                label=f"{label} ({len(seen)} of {n}{suffix})",
            )
    ax.axvline(PROPAGATION_GOAL_S, color="black", ls="--", lw=0.8, label=f"goal {fmt_s(PROPAGATION_GOAL_S)}")
    ax.axhline(0.99, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("seconds from the admin API's acknowledgement until the change was seen")
    ax.set_ylabel("share of changes")
    ax.set_title(title)
    _legend(ax)
    fig.savefig(path, dpi=100)


def plot_checks(checks: Sequence[CheckRow], path: Path, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    fig, (top, bottom) = _figure(rows=2)
    ts = [c.t for c in checks]
    top.plot(ts, [c.checked for c in checks], color="tab:blue", lw=1, label="verified OCSP answers/s")
    top.set_ylabel("answers per second")
    top.set_ylim(bottom=0)
    _legend(top)
    for key, label, color in (
        ("wrong", "wrong status", "tab:red"),
        ("stale", "stale", "tab:orange"),
        ("sig_fail", "bad signature", "tab:purple"),
    ):
        values = [getattr(c, key) for c in checks]
        bottom.step(ts, values, where="post", color=color, lw=1, label=f"{label} (total {fmt_int(sum(values))})")
    bottom.set_ylabel("failed checks per second")
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("time since start (s)")
    _legend(bottom)
    top.set_title(title)
    fig.savefig(path, dpi=100)


# The summary -----------------------------------------------------------------------------------------------


def saturation_flags(meta: dict[str, Any]) -> tuple[dict[str, bool], dict[str, Any]]:
    """meta.json's ``saturated``: (generator name -> saturated, its other entries as details)."""
    saturated = meta.get("saturated")
    if not isinstance(saturated, dict):
        return {}, {}
    flags = {k: v for k, v in saturated.items() if isinstance(v, bool)}
    return flags, {k: v for k, v in saturated.items() if k not in flags}


def _saturation(run: Run) -> tuple[dict[str, bool], dict[str, str], dict[str, Any]]:
    """(generator -> saturated, generator -> why, other details) from meta.json's ``saturated``;
    fastgen saturated if meta.json or fastgen.json says so, or if its send lag p99 was over
    LAG_LIMIT_MS in any second of fastgen.csv (fastgen.json judges the run, not each second)."""
    flags, details = saturation_flags(run.meta)
    names = {str(g.get("name")) for g in run.meta.get("generators") or [] if isinstance(g, dict)} | set(flags)
    reasons = {}
    for name in sorted(names):
        reason = details.get(f"{name}_reason")
        if isinstance(reason, str):
            reasons[name] = reason
            del details[f"{name}_reason"]
    summary = run.fastgen.summary if run.fastgen is not None else None
    if summary:
        if isinstance(summary.get("saturated"), bool):
            flags["fastgen"] = flags.get("fastgen", False) or summary["saturated"]
        if "fastgen" not in reasons and isinstance(summary.get("saturation_reason"), str):
            reasons["fastgen"] = summary["saturation_reason"]
    behind = (
        [r for r in (run.fastgen.seconds or []) if r.lag_p99_ms is not None and r.lag_p99_ms > LAG_LIMIT_MS]
        if run.fastgen
        else []
    )
    if behind:
        flags["fastgen"] = True
        worst = max(r.lag_p99_ms or 0.0 for r in behind)
        lag = (
            f"send lag p99 over {fmt_ms(LAG_LIMIT_MS)} in {fmt_int(len(behind))} s of fastgen.csv "
            f"(the first at t = {behind[0].t:,.0f} s, up to {fmt_ms_fine(worst)}): it fell behind its schedule"
        )
        reasons["fastgen"] = f"{lag}; fastgen.json: {reasons['fastgen']}" if "fastgen" in reasons else lag
    return flags, reasons, details


def _generators(run: Run) -> list[str]:
    generators = [g for g in run.meta.get("generators") or [] if isinstance(g, dict)]
    if run.fastgen is None and not any("share" in g for g in generators):
        return _generators_locust_only(run)
    flags, reasons, details = _saturation(run)
    fastgen = run.fastgen
    if fastgen is not None and not any(g.get("name") == "fastgen" for g in generators):
        summary = fastgen.summary or {}
        generators.append(
            {"name": "fastgen", "processes": summary.get("processes", "–"), "load": "not recorded in meta.json"}
        )
    lines = [
        "| generator | share of the load | processes | load | saturated | its own figures |",
        "|---|--:|--:|---|---|---|",
    ]
    for g in generators:
        name = str(g.get("name", "?"))
        share = g.get("share")
        share_text = _num(share, lambda x: f"{100 * x:g} %")
        sat = flags.get(name)
        sat_text = "not recorded" if sat is None else ("**yes**" if sat else "no")
        if name in reasons:
            sat_text += f": {reasons[name]}"
        own = _fastgen_own(g, fastgen) if name == "fastgen" and fastgen is not None else ""
        lines.append(
            f"| {_cell(name)} | {share_text} | {_cell(g.get('processes', '–'))} | {_cell(g.get('load', '–'))} | {_cell(sat_text)} | {_cell(own)} |"
        )
    if len(lines) == 2:
        lines.append("| not recorded | | | | | |")
    if details:
        lines += ["", "Saturation details (meta.json): " + ", ".join(f"{k} {v}" for k, v in details.items()) + "."]
    return lines


def _fastgen_own(entry: dict[str, Any], fastgen: Fastgen) -> str:
    """fastgen's connections, CPU and send lag: what says whether it kept its schedule."""
    parts = []
    connections = entry.get("connections", (fastgen.summary or {}).get("connections"))
    if connections is not None:
        parts.append(f"{connections} connections")
    backlog = fastgen.figure("backlog_max", "")
    if backlog is not None:
        parts.append(f"at most {fmt_int(backlog)} requests waiting for a free connection at once")
    exhausted = fastgen.figure("pool_exhausted_s", "")
    if exhausted is not None:
        parts.append(f"connections all busy with requests waiting for {exhausted:,.1f} s")
    cpu = fastgen.figure("cpu_fraction", "")
    # fastgen.json's cpu_fraction is its process's CPU time over wall time: a share of one core.
    parts.append(f"CPU {cpu:.2f} of a core" if cpu is not None else "CPU not recorded")
    lag = fastgen.figure("send_lag_ms", "p99")
    lags = [r.lag_p99_ms for r in fastgen.seconds or [] if r.lag_p99_ms is not None]
    if lag is not None:
        parts.append(f"send lag p99 {fmt_ms_fine(lag)} (scheduled → sent)")
        if lags and max(lags) > lag:
            parts[-1] += f", in its worst second {fmt_ms_fine(max(lags))}"
    elif lags:
        parts.append(f"send lag p99 ≤ {fmt_ms_fine(max(lags))} (the largest per-second p99; no fastgen.json)")
    else:
        parts.append(f"send lag {NOT_MEASURED}")
    return "; ".join(parts)


def _generators_locust_only(run: Run) -> list[str]:
    """The table of a run without fastgen, as it always was."""
    flags, details = saturation_flags(run.meta)
    lines = ["| generator | processes | load | saturated |", "|---|--:|---|---|"]
    for g in run.meta.get("generators") or []:
        name = g.get("name", "?")
        sat = flags.get(name)
        sat_text = "not recorded" if sat is None else ("**yes**" if sat else "no")
        lines.append(f"| {_cell(name)} | {_cell(g.get('processes', '–'))} | {_cell(g.get('load', '–'))} | {sat_text} |")
    if len(lines) == 2:
        lines.append("| not recorded | | | |")
    if details:
        lines += ["", "Saturation details (meta.json): " + ", ".join(f"{k} {v}" for k, v in details.items()) + "."]
    return lines


def _step_table(run: Run) -> list[str]:
    lines = [
        "| from (s) | to (s) | target (/s) | delivered (/s) | delivered / target | OCSP error rate | worst 10 s p99 | held |",
        "|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for s in run.steps:
        delivered = "–" if s.delivered_rps is None else f"{s.delivered_rps:,.0f}"
        ratio = "–" if s.delivered_rps is None or s.target <= 0 else f"{s.delivered_rps / s.target:.0%}"
        err = "–" if s.error_rate is None else fmt_pct(s.error_rate)
        p99 = "–" if s.p99_ms is None else fmt_ms(s.p99_ms)
        if run.fastgen is not None:
            if not s.fastgen_sent:
                fastgen_err = fastgen_p99 = "–" if s.fastgen_sent is None else "sent nothing"
            else:  # a missing figure: the reason column says why
                fastgen_err = "–" if s.fastgen_error_rate is None else fmt_pct(s.fastgen_error_rate)
                fastgen_p99 = "–" if s.fastgen_p99_ms is None else fmt_ms_fine(s.fastgen_p99_ms, run.fastgen.inf_text)
            err = f"locust {err} · fastgen {fastgen_err}"
            p99 = f"locust {p99} · fastgen {fastgen_p99}"
        if s.judged:
            held = ("yes" + (f"; {s.reason}" if s.reason else "")) if s.held else f"**no**: {s.reason}"
        else:
            held = f"not judged: {s.reason}"
        lines.append(
            f"| {s.start:,.0f} | {s.end:,.0f} | {s.target:,.0f} | {delivered} | {ratio} | {err} | {p99} | {held} |"
        )
    return lines


def _headroom(run: Run) -> list[str]:
    lines = ["## Headroom", ""]
    sus = run.sustainable
    if run.shape is None:
        lines.append(f"Sustainable rate: **{NOT_MEASURED}** (no shape.csv: the target curve is unknown).")
        return lines
    lines.append(f"Sustainable rate: **{sus.text}**.")
    lines.append("")
    if sus.rate is not None:
        if sus.below is not None:
            lines.append(
                f"Headroom: below {fmt_ratio(sus.below / TAX_SEASON_PEAK_RPS)} the tax-season peak ({fmt_rate(TAX_SEASON_PEAK_RPS)}) "
                f"and below {fmt_ratio(sus.below / EID_BOUND_RPS)} the national eID bound ({fmt_rate(EID_BOUND_RPS)})."
            )
        else:
            at_least = "at least " if sus.lower_bound else ""
            lines.append(
                f"Headroom: {at_least}**{fmt_ratio(sus.rate / TAX_SEASON_PEAK_RPS)}** the tax-season peak ({fmt_rate(TAX_SEASON_PEAK_RPS)}, ×1) "
                f"and {at_least}**{fmt_ratio(sus.rate / EID_BOUND_RPS)}** the national eID bound ({fmt_rate(EID_BOUND_RPS)}, ×50)."
            )
    else:
        lines.append(f"Headroom: {NOT_MEASURED}.")
    lines.append("")
    lines += _ladder_headroom(run)
    if run.fastgen is None:
        source = (
            "verified answers per second from checks.csv"
            if run.checks is not None
            else "Locust's OCSP requests per second (no checks.csv)"
        )
        lines.append(
            f"Definition: the load shape is cut into steps of constant target. A step is judged on its seconds after the first "
            f"{run.settle_s:g} s (spawning, and worker reports reaching Locust's master), if at least {WINDOW_S:g} s remain. It held if the "
            f"delivered OCSP rate ({source}) was at least {RATE_TOLERANCE:.0%} of the target, Locust's OCSP error rate was under "
            f"{fmt_pct(ERROR_RATE_GOAL)}, and the p99 of every {WINDOW_S:g} s window inside it was under {fmt_ms(P99_GOAL_MS)}. The sustainable "
            f"rate is the highest target held below the lowest target that did not hold (every lower rate of the run held too)."
        )
    else:
        source = (
            "verified answers per second of both generators, from checks.csv"
            if run.checks is not None
            else "Locust's OCSP requests plus fastgen's verified answers per second; no checks.csv"
        )
        fastgen_latency = (
            "its latency histogram summed over the window's seconds"
            if run.fastgen.histograms is not None
            else "bounded by the window's largest per-second p99 of fastgen.csv, as there is no fastgen-latency.csv"
        )
        lines.append(
            f"Definition: the load shape is cut into steps of constant target. A step is judged if at least {WINDOW_S:g} s remain after "
            f"its first {run.settle_s:g} s. It held if the delivered OCSP rate ({source}) was at least {RATE_TOLERANCE:.0%} of the target, "
            f"and for each generator the OCSP error rate was under {fmt_pct(ERROR_RATE_GOAL)} and the p99 of every {WINDOW_S:g} s window "
            f"inside the step was under {fmt_ms(P99_GOAL_MS)}. Locust's figures and the delivered rate are taken after the first "
            f"{run.settle_s:g} s (spawning, and worker reports reaching Locust's master), Locust's from its history's percentiles and "
            f"failures. fastgen's (when it sent in the step) are taken over the whole step, its first seconds included: it is open-loop, "
            f"with nothing to spawn or report late, and a step-up is load it must carry. They count requests by their scheduled send "
            f"second: the error share is (wrong + stale + bad signature + errors + any without an outcome) / sent, and the p99 is that of "
            f"every run of {WINDOW_S:g} consecutive whole seconds in the step (sliding by 1 s, so every second is in a window), from "
            f"{fastgen_latency}, measured from each request's scheduled send time; an unanswered request counts as infinitely late. "
            f"A step where fastgen's own send lag p99 was over {fmt_ms(LAG_LIMIT_MS)} in any second says that fastgen fell behind. The "
            f"sustainable rate is the highest target held below the lowest target that did not hold (every lower rate of the run held too)."
        )
    flags, _, _ = _saturation(run)
    if any(flags.values()):
        names = ", ".join(k for k, v in flags.items() if v)
        lines += [
            "",
            f"Generator(s) {names} saturated: where a step fell short of its rate, the shortfall may be the generator's, not the responder's.",
        ]
    lines += ["", *_step_table(run)]
    return lines


def _request_types(run: Run) -> list[str]:
    lines = [
        "| request | OCSP | requests | failures | error rate | p50 | p95 | p99 | max |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    ocsp_labels = set(run.ocsp.labels)
    for e in [*run.entries, *([run.total] if run.total else [])]:
        p = e.percentiles
        cols = ["–" if q not in p else fmt_ms(p[q]) for q in (0.5, 0.95, 0.99)]
        err = fmt_pct(e.failures / e.requests) if e.requests else "–"
        is_ocsp = "yes" if e.label in ocsp_labels and e is not run.total else ""
        lines.append(
            f"| {_cell(e.label)} | {is_ocsp} | {fmt_int(e.requests)} | {fmt_int(e.failures)} | {err} | {' | '.join(cols)} | {fmt_ms(e.max_ms)} |"
        )
    return lines


def _failures(run: Run) -> list[str]:
    if run.failures is None:
        return [f"Locust failures: {NOT_MEASURED} (no locust_failures.csv)."]
    if not run.failures:
        return ["Locust recorded no failures."]
    ordered = sorted(run.failures, key=lambda r: -_count(r.get("Occurrences")))
    lines = ["| request | error | occurrences | first seen | last seen |", "|---|---|--:|---|---|"]
    for r in ordered[:10]:
        label = f"{r.get('Method', '')} {r.get('Name', '')}".strip()
        lines.append(
            f"| {_cell(label)} | {_cell(r.get('Error', ''))} | {fmt_int(_count(r.get('Occurrences')))} | {r.get('First Seen', '')} | {r.get('Last Seen', '')} |"
        )
    if len(ordered) > 10:
        lines.append(f"\n{len(ordered) - 10} more kinds in locust_failures.csv.")
    return lines


def _propagation(run: Run) -> list[str]:
    if run.changes is None:
        return [f"Revocation propagation: {NOT_MEASURED} (no propagation.csv)."]
    if not run.changes:
        return [f"Revocation propagation: {NOT_MEASURED} (propagation.csv has no rows)."]
    lines = [
        "Seconds from the admin API's acknowledgement until the change showed; a change never seen counts as infinitely late.",
        "",
        "| kind | changes | OCSP p50 | OCSP p99 | OCSP max | never in OCSP | delta CRL p50 | delta CRL p99 | delta CRL max | never in a delta CRL |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    kinds = sorted({c.kind for c in run.changes})
    for kind in [*kinds, "all"]:
        rows = [c for c in run.changes if kind in ("all", c.kind)]
        cells = [f"**{kind}**" if kind == "all" else kind, fmt_int(len(rows))]
        for attr in ("ocsp_s", "delta_crl_s"):
            values = [getattr(c, attr) if getattr(c, attr) is not None else math.inf for c in rows]
            cells += [
                fmt_s(nearest_rank(values, 0.5)),
                fmt_s(nearest_rank(values, 0.99)),
                fmt_s(max(values)),
                fmt_int(sum(math.isinf(v) for v in values)),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    interval = _number(str(run.meta.get("delta_interval_s", "")))
    crl = [c.delta_crl_s if c.delta_crl_s is not None else math.inf for c in run.changes]
    if interval:
        bound = interval + PROPAGATION_GOAL_S
        p99 = nearest_rank(crl, 0.99)
        lines += [
            "",
            f"Delta CRL p99 {fmt_s(p99)} against its bound, the delta interval + 1 s = {fmt_s(bound)}: {_verdict(p99 < bound)}.",
        ]
    else:
        lines += [
            "",
            "The delta CRL has no 1 s goal: it is bounded by the delta interval + 1 s (meta.json names no delta_interval_s, so it is not judged here).",
        ]
    return lines


def _checks(run: Run) -> list[str]:
    if run.checks is None:
        return [f"Answer checks: {NOT_MEASURED} (no checks.csv)."]
    checked = sum(c.checked for c in run.checks)
    peak = max((c.checked for c in run.checks), default=0)
    totals = {k: sum(getattr(c, k) for c in run.checks) for k in ("wrong", "stale", "sig_fail")}
    first_bad = next((c.t for c in run.checks if c.wrong or c.stale or c.sig_fail), None)
    both = " by both generators" if run.fastgen is not None else ""
    text = (
        f"{fmt_int(checked)} OCSP answers verified{both} (peak {fmt_int(peak)} in one second); wrong status {fmt_int(totals['wrong'])}, "
        f"stale {fmt_int(totals['stale'])}, bad signature {fmt_int(totals['sig_fail'])}"
    )
    if first_bad is not None:
        text += f"; the first failed check at t = {first_bad:,.0f} s"
    lines = [text + "."]
    fastgen_totals = run.fastgen.totals() if run.fastgen is not None else None
    if run.fastgen is not None:
        lines.append("")
        own = (
            f"{NOT_MEASURED} (neither fastgen.json nor fastgen.csv)"
            if fastgen_totals is None
            else f"{fmt_int(fastgen_totals[1]['checked'])} verified, wrong status {fmt_int(fastgen_totals[1]['wrong'])}, "
            f"stale {fmt_int(fastgen_totals[1]['stale'])}, bad signature {fmt_int(fastgen_totals[1]['sig_fail'])}"
        )
        lines.append(
            "checks.csv sums Locust's and fastgen's per-second checks (each checks every answer against the ground truth); "
            f"fastgen's own count: {own}."
        )
    return lines


def _fastgen_section(run: Run) -> list[str]:
    fastgen = run.fastgen
    assert fastgen is not None
    summary = fastgen.summary or {}
    lines: list[str] = []
    if "error" in summary:
        lines += [f"fastgen.json: {NOT_MEASURED}: {summary['error']}.", ""]
    gaps = fastgen.outcome_gaps()
    if gaps:
        lines += [
            f"**fastgen's outcomes do not add up**: every request sent should end as exactly one outcome, but {'; '.join(gaps)}. "
            "The requests without an outcome count as errors in the OCSP error rate (over the run and in each step).",
            "",
        ]
    totals = fastgen.totals()
    if totals is None:
        lines.append(f"Requests: {NOT_MEASURED} (neither fastgen.json nor fastgen.csv).")
    else:
        sent, o = totals
        where = "fastgen.json" if fastgen.summary and "requests" in fastgen.summary else "fastgen.csv, summed"
        planned = _num(summary.get("planned"), lambda n: f" of {fmt_int(n)} planned", "")
        lines.append(
            f"{fmt_int(sent)} requests sent{planned} open-loop on its schedule ({where}): {fmt_int(o['checked'])} right answers verified, "
            f"wrong status {fmt_int(o['wrong'])}, stale {fmt_int(o['stale'])}, bad signature {fmt_int(o['sig_fail'])}, "
            f"errors {fmt_int(o['errors'])} (HTTP errors, tryLater, connections lost, unanswered at the end)"
            + (f", without an outcome {fmt_int(o['missing'])}." if o["missing"] else ".")
        )
        if fastgen.seconds is not None and where == "fastgen.json":
            per_second = sum(r.sent for r in fastgen.seconds)
            if per_second != sent:
                lines.append(
                    f"fastgen.csv's seconds add up to {fmt_int(per_second)} requests sent, not {fmt_int(sent)}."
                )
    kinds = summary.get("error_kinds")
    if isinstance(kinds, dict) and kinds:
        lines.append("")
        ordered = sorted(kinds.items(), key=lambda kv: (-(kv[1] if isinstance(kv[1], int | float) else 0), kv[0]))
        lines.append(
            "Errors by kind: "
            + ", ".join(f"{_cell(k)} {fmt_int(v) if isinstance(v, int | float) else v}" for k, v in ordered)
            + "."
        )
    problems = summary.get("problems")
    if isinstance(problems, dict) and problems:
        lines.append("")
        lines.append(
            "Problems found in answers (first kinds, with counts): "
            + "; ".join(f"{_cell(str(k))} ({v})" for k, v in list(problems.items())[:10])
            + "."
        )
    after = summary.get("checked_after_the_run")
    if isinstance(after, dict) and isinstance(after.get("answers"), int):
        lines.append("")
        if after["answers"]:
            lines.append(
                f"{fmt_int(after['answers'])} answers whose bytes had not been verified before were kept and checked after "
                f"the last request ({fmt_int(after.get('distinct', 0))} distinct, "
                f"{_num(after.get('seconds'), lambda v: f'{v:,.1f} s')}), each counted in the second it was due and "
                "judged fresh or stale at the moment it arrived: verifying them took no CPU while the responder was "
                "measured. The rest were checked as they arrived, against answers already verified."
            )
        else:
            lines.append("Every answer was checked as it arrived (none was left for after the run).")
    if summary.get("stopped_early"):
        lines += ["", "fastgen was stopped before the end of its schedule (SIGTERM or Ctrl-C)."]
    lines += [
        "",
        "| latency | answers | p50 | p90 | p99 | p99.9 | max |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]

    def row(label: str, section: str, count: bool) -> str:
        cells = [label, fmt_int(n) if count and (n := fastgen.figure(section, "n")) is not None else "–"]
        for key in ("p50", "p90", "p99", "p999", "max"):
            value = fastgen.figure(section, key)
            cells.append("–" if value is None else fmt_ms_fine(value))
        return "| " + " | ".join(cells) + " |"

    if isinstance(summary.get("latency_ms"), dict):
        lines += [
            row("scheduled send → full answer (judged)", "latency_ms", True),
            row("actual send → full answer", "latency_from_send_ms", False),
            row("scheduled → actually sent (fastgen's own lag)", "send_lag_ms", False),
        ]
    else:
        cells = ["scheduled send → full answer, upper bounds (no fastgen.json)", "–"]
        for q in (0.5, 0.9, 0.99, 0.999, 1.0):
            value, _ = fastgen.run_quantile("", q)
            cells.append("–" if value is None else f"≤ {fmt_ms_fine(value)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Latency counts from each request's scheduled send time, so a request that waited for a stalled responder (or generator) "
        "is counted late rather than not sent (no coordinated omission); a large send lag means fastgen itself fell behind.",
    ]
    return lines


def _num(value: Any, fmt: Callable[[float], str], missing: str = "–") -> str:
    """A number of a JSON input, formatted; ``missing`` when it is absent or not a number."""
    return fmt(value) if isinstance(value, int | float) and not isinstance(value, bool) else missing


def _ceiling(run: Run) -> list[str]:
    ceiling = run.ceiling
    assert ceiling is not None
    if "error" in ceiling:
        return [f"Ceiling: {NOT_MEASURED}: {ceiling['error']}"]
    req = ceiling.get("requests")
    req = req if isinstance(req, dict) else {}
    lines = [
        f"Measured with {ceiling.get('tool', 'not recorded')}: {ceiling.get('rounds', '?')} round(s) of {ceiling.get('duration_s', '?')} s "
        f"per target, {ceiling.get('connections', '?')} connections, {ceiling.get('threads', '?')} thread(s); requests: "
        f"{_num(req.get('count'), fmt_int, '?')} ({_num(req.get('distinct'), fmt_int, '?')} distinct, {req.get('method', '?')}) "
        f"from {req.get('list', 'not recorded')}.",
        "",
    ]
    warnings = ceiling.get("warnings")
    if isinstance(warnings, list) and warnings:
        lines += ["**Warnings (ceiling.json):**", "", *[f"- **{_cell(w)}**" for w in warnings], ""]
    lines += [
        "| target | workers | req/s (median) | good req/s (2xx) | each round (req/s) | bytes per answer | p50 | p99 | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    targets = [t for t in ceiling.get("targets") or [] if isinstance(t, dict)]
    for t in targets:
        runs = " · ".join(_num(r, fmt_int) for r in t.get("runs_req_s") or []) or "–"
        lines.append(
            f"| {_cell(t.get('name', '?'))} | {_cell(t.get('workers', '–'))} | {_num(t.get('req_s'), fmt_int)} | "
            f"{_num(t.get('good_req_s'), fmt_int)} | {runs} | {_num(t.get('bytes_per_response'), lambda b: f'{b:,.0f} B')} | "
            f"{_num(t.get('p50_ms'), fmt_ms_fine)} | {_num(t.get('p99_ms'), fmt_ms_fine)} | {_num(t.get('errors'), fmt_int)} |"
        )
    if not targets:
        lines.append("| not recorded | | | | | | | | |")
    lines.append("")
    responder = next((t for t in targets if t.get("name") == "responder"), None) or {}
    rate, good = responder.get("req_s"), responder.get("good_req_s")
    if isinstance(good, int | float) and not isinstance(good, bool):
        rate, what = (
            good,
            f"good req/s (non-2xx answers left out; {_num(responder.get('req_s'), fmt_int, '?')} req/s in all)",
        )
    else:
        what = "req/s"
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        lines.append(
            f"- ceiling: {fmt_int(rate)} {what} = {fmt_ratio(rate / TAX_SEASON_PEAK_RPS)} the tax-season peak ({fmt_rate(TAX_SEASON_PEAK_RPS)}) "
            f"and {fmt_ratio(rate / EID_BOUND_RPS)} the eID bound ({fmt_rate(EID_BOUND_RPS)}) — a ceiling at full load, "
            "not the sustainable rate judged above"
            + ("" if what != "req/s" else " (ceiling.json has no good_req_s: any non-2xx answers are counted in it)")
        )
    else:
        lines.append(f"- ceiling: {NOT_MEASURED} (ceiling.json has no req/s for the responder)")
    nginx = ceiling.get("nginx")
    serves = nginx.get("serves") if isinstance(nginx, dict) else None
    serves = f"; nginx serves {serves}" if isinstance(serves, str) else ""
    lines.append(
        f"- Responder / nginx: {_num(ceiling.get('ratio_to_nginx'), lambda r: f'{r:.2f}', NOT_MEASURED)} "
        f"(req/s with the same wrk requests, in the same run{_cell(serves)})"
    )
    answers = ceiling.get("answers")
    if isinstance(answers, dict):
        census = answers.get("census")
        census_text = (
            ", ".join(f"{_cell(k)} {_num(v, fmt_int)}" for k, v in census.items())
            if isinstance(census, dict)
            else "not recorded"
        )
        wrong = answers.get("wrong")
        wrong_text = _num(wrong, fmt_int)
        problems = answers.get("problems")
        if isinstance(wrong, int | float) and wrong:
            wrong_text = f"**{wrong_text}**"
            if isinstance(problems, dict) and problems:
                wrong_text += " (" + ", ".join(f"{_cell(k)} {_num(v, fmt_int)}" for k, v in problems.items()) + ")"
        lines.append(
            f"- Answers (wrk cannot tell them apart): census {census_text}; checked against the ground truth "
            f"{_num(answers.get('checked'), fmt_int)}, wrong {wrong_text}"
        )
    else:
        lines.append(f"- Answers: {NOT_MEASURED}")
    load = ceiling.get("load_average")
    if isinstance(load, list) and load:
        lines.append(f"- Load average (1 min) before and after: {', '.join(str(v) for v in load)}")
    commands = ceiling.get("commands") or []
    if commands:
        lines += ["", "```sh", *[str(c) for c in commands], "```"]
    return lines


def _ladder_headroom(run: Run) -> list[str]:
    """What the rate ladder adds to the headroom: it raises it only when every judged step of
    the day held, the peak included (it is relying-party load alone)."""
    held, sus = ladder_sustained(run.ladder), run.sustainable
    if held is None:
        return []
    if sus.lower_bound and sus.rate is not None and held > sus.rate:
        line = (
            f"With the rate ladder (below), which held **{fmt_rate(held)}** after the replay: headroom **{fmt_ratio(held / TAX_SEASON_PEAK_RPS)}** "
            f"the tax-season peak and **{fmt_ratio(held / EID_BOUND_RPS)}** the eID bound. Every judged step of the day held, its peak "
            "included, so the ladder's constant rates take the figure past the day's peak; they are relying-party checks alone, "
            "without the day's admin writes and burst."
        )
    elif sus.lower_bound:
        line = f"The rate ladder (below) held {fmt_rate(held)}, no more than the day did."
    else:
        reason = (
            "no step of the day could be judged"
            if sus.rate is None and sus.below is None
            else "not every judged step of the day held"
        )
        line = f"The rate ladder (below) held {fmt_rate(held)} (relying-party checks alone); it does not raise the headroom, as {reason}."
    return [line, ""]


def ladder_sustained(ladder: dict[str, Any] | None) -> float | None:
    """The ladder's sustained rate: the highest rung held with every lower rung held."""
    if not ladder or "error" in ladder:
        return None
    best = None
    for rung in sorted(
        (r for r in ladder.get("rungs") or [] if isinstance(r, dict)), key=lambda r: float(r.get("rate", 0))
    ):
        if rung.get("verdict") != "held":
            break
        best = float(rung["rate"])
    return best


def _ladder(run: Run) -> list[str]:
    ladder = run.ladder
    assert ladder is not None
    if "error" in ladder:
        return [f"Rate ladder: {NOT_MEASURED}: {_cell(ladder['error'])}"]
    rungs = [r for r in ladder.get("rungs") or [] if isinstance(r, dict)]
    lines = [
        f"After the replay, on the same system, fastgen alone at constant rates ({_num(ladder.get('seconds'), lambda v: f'{v:g}', '?')} s "
        f"per rung, {_num(ladder.get('connections'), fmt_int, '?')} connections, every answer checked), up to the first rung not held. "
        f"A rung is held with nothing wrong, at least {RATE_TOLERANCE:.0%} of its rate delivered as verified answers, an error share "
        f"under {fmt_pct(ERROR_RATE_GOAL)} and every {WINDOW_S:g} s window's p99 under {fmt_ms(P99_GOAL_MS)} (fastgen's rules of the "
        "day: latency from each request's scheduled time, the whole rung judged; where fastgen fell behind its schedule a miss says "
        "it may be the generator's). Relying-party checks only: no Locust, admin writes or burst. CPU in cores on average while "
        "fastgen sent (fastgen's from its own figure; services = PostgreSQL and Valkey).",
        "",
        "| rate | verdict | verified/s | error share | p99 | worst 10 s p99 | fastgen send lag p99 | CPU: responder · services · fastgen · machine | why |",
        "|--:|---|--:|--:|--:|--:|--:|---|---|",
    ]

    def ms(value: Any, infinite: str = INF_EXACT) -> str:
        return infinite if value == "inf" else _num(value, fmt_ms_fine)

    for r in rungs:
        cpu = r["cpu"] if isinstance(r.get("cpu"), dict) else {}
        cores = " · ".join(
            _num(cpu.get(k), lambda v: f"{v:.2f}") for k in ("responder", "services", "fastgen", "machine")
        )
        verdict = str(r.get("verdict", "?"))
        lines.append(
            f"| {_num(r.get('rate'), fmt_rate)} | {'**' + verdict + '**' if verdict != 'held' else verdict} | "
            f"{_num(r.get('delivered_rps'), fmt_int)} | {_num(r.get('error_share'), fmt_pct)} | {ms(r.get('p99_ms'))} | "
            f"{ms(r.get('worst_window_p99_ms'), INF_WINDOW)} | {ms(r.get('send_lag_p99_ms'))} | {cores} | "
            f"{_cell('; '.join(str(x) for x in r.get('reasons') or [])) or '–'} |"
        )
    if not rungs:
        lines.append("| not recorded | | | | | | | | |")
    held = ladder_sustained(ladder)
    lines += [
        "",
        f"- Sustained by the ladder: **{fmt_rate(held)}** = {fmt_ratio(held / TAX_SEASON_PEAK_RPS)} the tax-season peak, "
        f"{fmt_ratio(held / EID_BOUND_RPS)} the eID bound"
        if held is not None
        else "- Sustained by the ladder: no rung held",
    ]
    top = max((float(r.get("rate", 0)) for r in rungs), default=0.0)
    last = rungs[-1] if rungs else None
    if rungs and all(r.get("verdict") == "held" for r in rungs) and top >= max(ladder.get("rates") or [top]):
        lines.append("- Every rung held: the ladder's top is a lower bound, not the limit.")
    elif last is not None and last.get("verdict") != "held":
        why = "; ".join(str(x) for x in last.get("reasons") or []) or "no reason recorded"
        lines.append(
            f"- The climb stopped at {_num(last.get('rate'), fmt_rate)}: {_cell(last.get('verdict', '?'))} ({_cell(why)})."
        )
    if ladder.get("stopped"):
        lines.append(
            f"- **The climb was stopped before it ended: {_cell(ladder['stopped'])}** (the rungs above are those it finished)."
        )
    commands = ladder.get("commands") or []
    if commands:
        lines += ["", "```sh", *[str(c) for c in commands], "```"]
    return lines


_META_USED = {
    "scenario",
    "scale",
    "peak_rps_target",
    "duration_s",
    "generators",
    "commands",
    "commit",
    "started",
    "saturated",
}


def _other_meta(meta: dict[str, Any]) -> list[str]:
    """meta.json's other scalar entries, as recorded."""
    other = [f"{k} {v}" for k, v in meta.items() if k not in _META_USED and isinstance(v, str | int | float | bool)]
    notes = [f"- Note: {n}" for n in meta.get("notes", []) if isinstance(n, str)]
    return ([f"- Also recorded: {', '.join(other)}"] if other else []) + notes


def render_summary(run: Run, plots: dict[str, str | None], copied: Sequence[str]) -> str:
    meta = run.meta
    scenario = meta.get("scenario", "?")
    lines = [f"# Load run: {scenario}", ""]
    peak = _number(str(meta.get("peak_rps_target", "")))
    lines += [
        f"- Scenario: {scenario}, scale ×{meta.get('scale', '?')}, peak target {fmt_rate(peak) if peak else 'not recorded'} OCSP checks",
        f"- Started: {run.started.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC; duration {run.duration_s:,.0f} s",
        f"- Commit: {meta.get('commit') or 'not recorded'}",
        *_other_meta(meta),
        f"- OCSP requests: {run.ocsp_note}",
        "- Made by `python bench/report.py RUN_DIR` from the files listed at the end.",
        "",
        "## Goals",
        "",
        "| goal | verdict | figure |",
        "|---|---|---|",
    ]
    for g in goals(run):
        verdict = f"**{g.verdict}**" if g.verdict == "missed" else g.verdict
        lines.append(f"| {_cell(g.goal)} | {verdict} | {_cell(g.figure)} |")
    lines += [
        "",
        "The OCSP error-rate and p99 goals are met only if both the whole run and every judged step of the load shape meet them "
        "(each generator's worst step is shown; the steps are defined under Headroom), and the peak step was judged: the busiest "
        "hour is only a small share of the day's requests, so a figure over the whole run alone could hide a peak that misses.",
    ]
    lines += ["", *_headroom(run), ""]
    if run.ladder is not None:
        lines += ["## Rate ladder (constant rates after the replay)", "", *_ladder(run), ""]
    if run.ceiling is not None:
        lines += ["## Ceiling (wrk, at full load)", "", *_ceiling(run), ""]
    lines += ["## Generators", "", *_generators(run), ""]
    coverage = (
        "Latency and error rates are Locust's only: another generator's requests count in the delivered rate (checks.csv) and nowhere else."
        if run.fastgen is None
        else "The OCSP error rate, the p99 goal and each step's judgement count both generators' OCSP requests: Locust's (latency "
        "at the generator, from when it sent, on the same cores) and fastgen's (latency from each request's scheduled send time); "
        "checks.csv sums both generators' verified answers and failed checks."
    )
    if run.shape:
        lines.append(
            f"Planned peak: {fmt_rate(max(s.target_rps for s in run.shape))} with {fmt_int(max(s.users for s in run.shape))} Locust users (shape.csv). "
            + coverage
        )
        lines.append("")
    elif run.fastgen is not None:
        lines += [coverage, ""]
    lines += ["## Locust requests by type", "", *_request_types(run), "", "### Failures", "", *_failures(run), ""]
    if run.fastgen is not None:
        lines += ["## fastgen requests", "", *_fastgen_section(run), ""]
    lines += [
        "## Revocation propagation",
        "",
        *_propagation(run),
        "",
        "## Answer checks",
        "",
        *_checks(run),
        "",
        "## Plots",
        "",
    ]
    two = run.fastgen is not None
    captions = {
        "throughput": "Throughput per generator and error rate against the target load curve"
        if two
        else "Throughput and error rate against the target load curve",
        "latency": "OCSP latency over time, Locust and fastgen" if two else "OCSP latency percentiles over time",
        "propagation": "Revocation propagation (CDF)",
        "checks": "Verified answers and failed checks over time",
    }
    for key, caption in captions.items():
        file = plots.get(key)
        lines.append(f"![{caption}]({file})" if file else f"- {caption}: {NOT_MEASURED}")
        lines.append("")
    commands = meta.get("commands") or []
    lines += ["## Command lines", ""]
    if commands:
        lines += ["```sh", *[str(c) for c in commands], "```"]
    else:
        lines.append("not recorded")
    lines += ["", "## Files", "", ", ".join(f"`{name}`" for name in copied), ""]
    return "\n".join(lines)


# Putting it together ---------------------------------------------------------------------------------------


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def default_out_dir(run: Run) -> Path:
    return RESULTS_DIR / f"{run.started.astimezone(dt.UTC):%Y-%m-%d}-{_safe(str(run.meta.get('scenario', 'run')))}"


def build_report(
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    ocsp_match: str = DEFAULT_OCSP_MATCH,
    settle_s: float = DEFAULT_SETTLE_S,
) -> Path:
    """Write the report of the run in ``run_dir`` and return the directory written.

    ``out_dir`` defaults to ``bench/results/<YYYY-MM-DD>-<scenario>/`` (the run's start
    date, UTC); a report already there is replaced.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, ocsp_match=ocsp_match, settle_s=settle_s)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ["summary.md", "commands.txt", *PLOT_FILES.values()]:
        (out / stale).unlink(missing_ok=True)

    copied: list[str] = []
    extra = [
        run_dir / name
        for name in ("fastgen.json", CEILING_FILE, LADDER_FILE, "valkey-slowlog.json")
        if (run_dir / name).is_file()
    ]
    for src in sorted([*run_dir.glob("*.csv"), run_dir / "meta.json", *extra]):
        dst = out / src.name
        if not dst.exists() or not dst.samefile(src):
            shutil.copyfile(src, dst)
        copied.append(src.name)
    commands = [str(c) for c in run.meta.get("commands") or []]
    (out / "commands.txt").write_text("".join(c + "\n" for c in commands), encoding="utf-8")
    copied.append("commands.txt")

    scenario = run.meta.get("scenario", "?")
    plots: dict[str, str | None] = {key: None for key in PLOT_FILES}
    plot_throughput(run, out / PLOT_FILES["throughput"])
    plots["throughput"] = PLOT_FILES["throughput"]
    if run.ocsp.history or (run.fastgen is not None and run.fastgen.seconds):
        plot_latency(run, out / PLOT_FILES["latency"])
        plots["latency"] = PLOT_FILES["latency"]
    if run.changes:
        plot_propagation(run.changes, out / PLOT_FILES["propagation"], f"{scenario}: revocation propagation")
        plots["propagation"] = PLOT_FILES["propagation"]
    if run.checks:
        both = " (Locust and fastgen)" if run.fastgen is not None else ""
        plot_checks(
            run.checks, out / PLOT_FILES["checks"], f"{scenario}: verified OCSP answers and failed checks{both}"
        )
        plots["checks"] = PLOT_FILES["checks"]

    (out / "summary.md").write_text(render_summary(run, plots, copied), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dir", type=Path, help="the directory the Locust suite wrote (locust_*.csv, meta.json, ...)"
    )
    parser.add_argument("--out", type=Path, help="write here instead of bench/results/<YYYY-MM-DD>-<scenario>/")
    parser.add_argument(
        "--ocsp-match",
        default=DEFAULT_OCSP_MATCH,
        help="regular expression on '<Type> <Name>' of Locust's OCSP requests (default %(default)s)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_S,
        help="seconds at the start of each step not judged (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        out = build_report(args.run_dir, args.out, ocsp_match=args.ocsp_match, settle_s=args.settle)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    print((out / "summary.md").read_text(encoding="utf-8"))
    print(f"report written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
