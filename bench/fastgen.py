#!/usr/bin/env python
"""The fast relying-party generator: open loop, raw keep-alive sockets, every answer checked.

Locust (bench/locustfile.py) tops out near 3,000 checks/s on a 2-core machine, and its
latencies include the time its greenlets wait for a CPU that is also verifying signatures.
This generator carries the relying-party load Locust does not, at a fraction of the CPU:

- **The same requests**: certificates by Zipf popularity from the ground truth that
  ``certstatus bench load`` wrote, 0.5 % never-issued serials (the answer must be
  ``unauthorized``), 0.1 % malformed (must be refused), GET:POST 70:30, SHA-1:SHA-256 CertIDs
  80:20, drawn afresh for every request.
- **Every answer checked** with the same :class:`ca_core.groundtruth.AnswerChecker` as
  Locust: status and reason against the truth, serial, freshness, responder certificate and
  signature. Identical pre-signed bytes are verified once (a dictionary lookup afterwards).
  An answer whose bytes were not verified before is kept and verified *after* the last
  request, not while the responder is measured (``--verify-inline`` does it on arrival):
  signature verification was a third of the generator's CPU, taken from the 2 cores the
  responder needs, as wrk builds its requests before the clock starts. Its freshness is
  judged at the moment it arrived, and every outcome still counts in the second it was due.
- **Open loop**: request *k* is due at its scheduled time whatever happened to the ones
  before it; when every connection is busy it waits for one, and its latency counts from its
  scheduled time, so a stalled responder shows as latency and cannot slow the generator
  down (no coordinated omission). Three delays are kept apart: the *send lag* (scheduled →
  picked up by the generator's loop: the generator's own delay), the *send wait* (scheduled
  → written to a connection: the lag plus any wait for a free connection; ``backlog_max``
  and ``pool_exhausted_s`` say how often there was none), and the latency. If the send lag's
  p99 exceeds 10 ms in any 10 s window the generator fell behind there, and the run says so
  (``saturated``, with the windows).
- **The curve**: with ``--scale/--minutes/--share`` it follows the deadline day of
  bench/dayshape.py, carrying the target minus Locust's share, second by second, from the
  moment Locust's test started (it waits for RUN_DIR/meta-locust.json); with ``--rate R
  --seconds S`` it sends a constant R/s on its own.

Output in RUN_DIR (t_s: whole seconds since the start, by scheduled time):

- ``fastgen.csv``: per second, planned rate, sent, outcomes (checked, wrong, stale,
  sig_fail, errors), p50/p99/max latency and p99 send lag;
- ``fastgen-latency.csv``: per-second latency histogram (``t_s,le_ms,count``), so that
  percentiles over any window can be bounded tightly;
- ``checks-fastgen.csv``: ``t_s,checked,wrong,stale,sig_fail`` like Locust's per-process
  files, which tax_season.py sums into checks.csv;
- ``fastgen.json``: totals, exact latency percentiles, error kinds, other events
  (reconnections, ...), example problems, CPU share and whether the generator saturated.

Every request sent ends as exactly one outcome, by the rules Locust follows too
(:func:`ca_core.groundtruth.classify_answer`): ``checked`` (a right answer, its CertID the
request's; for a malformed or never-issued request, the right refusal), ``wrong``, ``stale``,
``sig_fail``, or ``errors`` (an HTTP error, tryLater/internalError, a connection lost with the
request in flight, or no answer by the end: these count with an infinite latency).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import bisect
import collections
import contextlib
import csv
import datetime as dt
import gc
import json
import math
import random
import resource
import signal
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the project's packages from this tree
    sys.path.insert(0, str(ROOT))

from bench.dayshape import split  # noqa: E402
from ca_core.groundtruth import (  # noqa: E402
    DEFERRED,
    OUTCOMES,
    AnswerChecker,
    Entry,
    RequestBuilder,
    Truth,
    classify_answer,
    zipf_rank,
)
from ca_core.ocsp import HashAlgorithm  # noqa: E402

#: The generator fell behind if, in any 10 s window, its own send lag p99 exceeds this (ms).
LAG_LIMIT_MS = 10.0
LAG_WINDOW_S = 10
#: Requests still unanswered this long after the last one was due count as errors.
DRAIN_S = 5.0
#: At most this many distinct problems are listed in fastgen.json (all are counted).
PROBLEM_KINDS = 20
#: Printed when the last request has been answered (or given up on): what follows is the
#: checking of answers kept for after the run, which the callers leave out of the CPU they
#: sample and allow time for (bench/ladder.py, bench/tax_season.py).
SCHEDULE_DONE = "the schedule is done"


def bucket_bounds() -> list[float]:
    """Histogram bucket upper bounds (ms): 0.1 ms steps to 10 ms, 1 ms to 100 ms, 10 ms to 1 s,
    100 ms to 10 s; anything slower goes to ``inf``."""
    bounds = [round(0.1 * i, 1) for i in range(1, 101)]
    bounds += [float(i) for i in range(11, 101)]
    bounds += [float(i) for i in range(110, 1001, 10)]
    bounds += [float(i) for i in range(1100, 10001, 100)]
    return bounds


BOUNDS = bucket_bounds()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of already sorted values."""
    return sorted_values[max(1, math.ceil(q * len(sorted_values))) - 1]


class Schedule:
    """How many requests are due in each second: the planned rate, integrated so that the
    fractional parts are not lost (a rate of 2.5/s sends 2, 3, 2, 3, ...)."""

    def __init__(self, rates: Sequence[float]) -> None:
        self.rates = list(rates)
        self.counts: list[int] = []
        total = 0.0
        for rate in self.rates:
            before = math.floor(total + 1e-9)
            total += rate
            self.counts.append(math.floor(total + 1e-9) - before)

    def due(self, second: int, index: int) -> float:
        """Scheduled time (seconds from the start) of the ``index``-th request of ``second``."""
        return second + index / self.counts[second]


class Job:
    """One request: its bytes, what its answer must be, and when it was due and sent."""

    __slots__ = ("algorithm", "due", "expected", "malformed", "request", "second", "sent")

    def __init__(self, request: bytes, expected: Entry | None, algorithm: HashAlgorithm | None, malformed: bool):
        self.request, self.expected, self.algorithm, self.malformed = request, expected, algorithm, malformed
        self.due = self.sent = 0.0
        self.second = 0


class Requests:
    """Relying-party requests drawn from the truth, each with what its answer must be."""

    def __init__(self, truth: Truth, host: str, seed: int | None = None) -> None:
        self.truth = truth
        self.builder = RequestBuilder([cert for _, cert in truth.issuers])
        self.rng = random.Random(seed)
        self.host = host.encode()
        self._ready: collections.deque[Job] = collections.deque()

    def prepare(self, count: int, progress: bool = True) -> None:
        """Draw ``count`` requests now, before the clock starts, so that building them does
        not compete for the CPU with the system under test (as wrk builds its requests first)."""
        step = max(1, count // 20)
        for i in range(count):
            self._ready.append(self.draw())
            if progress and (i + 1) % step == 0:
                print(f"\rfastgen: drawing requests {i + 1:>12,}/{count:,}", end="", file=sys.stderr, flush=True)
        if progress and count:
            print(file=sys.stderr)

    def next(self) -> Job:
        """The next request: one prepared in advance, or a fresh draw when they run out."""
        return self._ready.popleft() if self._ready else self.draw()

    def draw(self) -> Job:
        """A fresh request; its ``expected`` None: the answer must be unauthorized."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.001:
            garbage = rng.randbytes(rng.randint(1, 64))
            return Job(self._post(garbage), None, None, True)
        if roll < 0.006 and self.truth.never_issued:
            issuer_index, serial = rng.choice(self.truth.never_issued)
            expected: Entry | None = None
        else:
            expected = self.truth.entry(zipf_rank(self.truth.rp_count, rng))
            issuer_index, serial = expected.issuer_index, expected.serial
        algorithm = HashAlgorithm.SHA1 if rng.random() < 0.8 else HashAlgorithm.SHA256
        der = self.builder.der(issuer_index, serial, algorithm)
        if rng.random() < 0.7:
            # base64 in the path, percent-encoded (RFC 6960 A.1): "+", "/" and "=" are the only specials
            path = base64.b64encode(der).replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")
            get = b"GET /ocsp/" + path + b" HTTP/1.1\r\nHost: " + self.host + b"\r\n\r\n"
            return Job(get, expected, algorithm, False)
        return Job(self._post(der), expected, algorithm, False)

    def _post(self, body: bytes) -> bytes:
        return (b"POST /ocsp HTTP/1.1\r\nHost: " + self.host + b"\r\nContent-Type: application/ocsp-request\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip


class Recorder:
    """Outcomes and latencies, by the second each request was scheduled in."""

    def __init__(self, seconds: int) -> None:
        self.outcomes: collections.Counter[tuple[int, str]] = collections.Counter()
        self.kinds: collections.Counter[str] = collections.Counter()  # errors by kind
        self.events: collections.Counter[str] = collections.Counter()  # not outcomes: reconnects, ...
        self.sent = [0] * seconds
        self.second = array.array("I")
        self.latency = array.array("d")  # scheduled → answered (s); inf: never answered
        self.from_send = array.array("d")  # written → answered (s)
        self.lag_second = array.array("I")
        self.lag = array.array("d")  # scheduled → picked up by the loop (s): the generator's own delay
        self.wait = array.array("d")  # scheduled → written to a connection (s): lag + waiting for one
        self.problems: dict[str, int] = {}
        self.backlog_max = 0
        self.pool_exhausted: set[int] = set()  # seconds in which a request waited for a connection

    def outcome(self, job: Job, kind: str, detail: str | None, answered_at: float | None) -> None:
        """Record how ``job`` ended; ``answered_at`` None: it was never answered."""
        self.count(job.second, kind, detail)
        self.answered(job, answered_at)

    def count(self, second: int, kind: str, detail: str | None) -> None:
        """Count one outcome in the second its request was due."""
        self.outcomes[(second, kind)] += 1
        if kind == "errors" and detail is not None:
            self.kinds[detail] += 1
        elif detail is not None and (detail in self.problems or len(self.problems) < PROBLEM_KINDS):
            self.problems[detail] = self.problems.get(detail, 0) + 1

    def answered(self, job: Job, answered_at: float | None) -> None:
        """Record ``job``'s latency; its outcome is counted now or, deferred, later."""
        self.second.append(job.second)
        if answered_at is None:
            self.latency.append(math.inf)
            self.from_send.append(math.inf)
        else:
            self.latency.append(answered_at - job.due)
            self.from_send.append(answered_at - job.sent)


class Deferred:
    """Answers kept for checking after the run: those whose bytes the checker had not verified
    when they arrived. Identical bytes are kept once."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Entry | None, HashAlgorithm | None, bytes, dt.datetime]] = []
        self._bodies: dict[bytes, bytes] = {}

    def keep(self, job: Job, body: bytes, at: dt.datetime) -> None:
        body = self._bodies.setdefault(body, body)
        self.answers.append((job.second, job.expected, job.algorithm, body, at))

    def settle(self, checker: AnswerChecker, rec: Recorder, progress: bool = True) -> dict[str, Any]:
        """Check every kept answer (each distinct one verified once), count its outcome in
        the second its request was due, and say how many there were and how long it took."""
        started = time.monotonic()
        count, step = len(self.answers), max(1, len(self.answers) // 20)
        for i, (second, expected, algorithm, body, at) in enumerate(self.answers):
            kind, detail = classify_answer(checker, 200, body, expected, at, algorithm=algorithm)
            rec.count(second, kind, detail)
            if progress and (i + 1) % step == 0:
                print(f"\rfastgen: checking answers first seen in the run {i + 1:>12,}/{count:,}", end="",
                      file=sys.stderr, flush=True)  # fmt: skip
        if progress and count:
            print(file=sys.stderr)
        result = {"answers": count, "distinct": len(self._bodies), "seconds": round(time.monotonic() - started, 1)}
        self.answers, self._bodies = [], {}
        return result


async def generate(opts: argparse.Namespace, schedule: Schedule, requests: Requests, checker: AnswerChecker,
                   deferred: Deferred) -> tuple[Recorder, dict[str, Any]]:  # fmt: skip
    """Send the schedule; every answer checked (or kept in ``deferred`` to be checked after)
    and recorded. Times are seconds since t0: with ``--rate``, from when the connections are
    up; following the day, from Locust's start, waited for once the connections are up (so
    that connecting does not make the first requests late)."""
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    url = urllib.parse.urlsplit(opts.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    seconds = len(schedule.counts)
    rec = Recorder(seconds)
    idle: collections.deque[Conn] = collections.deque()  # FIFO: every connection stays in use
    backlog: collections.deque[Job] = collections.deque()
    state = {"outstanding": 0, "running": True, "stop": False}
    every: list[Conn] = []  # every connection made, reconnections too
    reconnecting: set[asyncio.Task[None]] = set()  # held: a task nobody references may be collected
    inline = opts.verify_inline
    t0 = 0.0

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = bytearray()
            self.need = -1
            self.body_at = 0
            self.status = 0
            self.close_after = False
            self.transport: Any = None
            self.job: Job | None = None
            self.ready = loop.create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            if not self.ready.done():
                self.ready.set_result(None)

        def send(self, job: Job) -> None:
            job.sent = clock() - t0
            rec.wait.append(job.sent - job.due)
            self.job = job
            state["outstanding"] += 1
            self.transport.write(job.request)

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            while self.transport is not None and not self.transport.is_closing():
                if self.need < 0:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    head = bytes(buf[:end]).lower()
                    if b"\r\ntransfer-encoding:" in head:  # the responder sends Content-Length
                        self.fail("chunked_answer")
                        return
                    try:
                        self.status = int(head[9:12])
                        i = head.find(b"\r\ncontent-length:")
                        j = head.find(b"\r\n", i + 2) if i >= 0 else -1
                        length = int(head[i + 17 : j if j >= 0 else len(head)]) if i >= 0 else 0
                    except ValueError:
                        self.fail("unparseable_http")
                        return
                    self.close_after = b"\r\nconnection: close" in head
                    self.body_at = end + 4
                    self.need = end + 4 + length
                if len(buf) < self.need:
                    return
                body = bytes(buf[self.body_at : self.need])
                del buf[: self.need]
                self.need = -1
                self.answered(body)

        def answered(self, body: bytes) -> None:
            now = clock() - t0
            job, self.job = self.job, None
            if job is None:  # an answer nobody asked for: this connection is out of step
                rec.events["unexpected_answer"] += 1
                self.transport.close()
                return
            state["outstanding"] -= 1
            at = dt.datetime.now(dt.UTC)
            kind, detail = classify_answer(checker, self.status, body, job.expected, at, malformed=job.malformed,
                                           algorithm=job.algorithm, verify=inline)  # fmt: skip
            if kind is DEFERRED:
                deferred.keep(job, body, at)
                rec.answered(job, now)
            else:
                rec.outcome(job, kind, detail, now)
            if self.close_after:  # the server closes it: the next request goes on a new connection
                self.transport.close()
            elif self.buf:  # more came before the next request was written: no answer to it, out of step
                rec.events["unexpected_answer"] += 1
                self.transport.close()
            else:
                self.next()

        def fail(self, kind: str) -> None:
            """The connection is unusable: its request (if any) is an error, never answered."""
            if self.job is not None:
                state["outstanding"] -= 1
                rec.outcome(self.job, "errors", kind, None)
                self.job = None
            self.transport.close()

        def next(self) -> None:
            if backlog and not state["stop"]:
                self.send(backlog.popleft())
            else:
                idle.append(self)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.job is not None:
                state["outstanding"] -= 1
                rec.outcome(self.job, "errors", "lost_in_flight", None)
                self.job = None
            with contextlib.suppress(ValueError):
                idle.remove(self)
            if state["running"]:
                task = loop.create_task(reconnect())
                reconnecting.add(task)
                task.add_done_callback(reconnecting.discard)

    async def connect() -> Conn:
        _, proto = await loop.create_connection(Conn, host, port)
        await proto.ready
        every.append(proto)
        return proto

    async def reconnect() -> None:
        for _ in range(50):
            try:
                c = await connect()
            except OSError:
                rec.events["reconnect_failed"] += 1
                await asyncio.sleep(0.1)
                continue
            rec.events["reconnected"] += 1
            c.next()
            return

    def stop() -> None:
        state["stop"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    idle.extend([await connect() for _ in range(opts.connections)])
    # Locust's start in this clock; alone, now.
    started_wall = None if opts.rate is not None else await wait_for_locust(opts.run_dir, opts.wait)
    t0 = clock() if started_wall is None else clock() - (time.time() - started_wall)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = clock()
    second, index = max(0, int(clock() - t0)), 0  # joining late: the seconds gone are not sent
    for s in range(min(second, seconds)):
        rec.events["skipped_before_start"] += schedule.counts[s]
    while second < seconds and not state["stop"]:
        now = clock() - t0
        while second < seconds:
            if index >= schedule.counts[second]:
                second, index = second + 1, 0
                continue
            due = schedule.due(second, index)
            if due > now:
                break
            job = requests.next()
            job.due, job.second = due, second
            rec.sent[second] += 1
            rec.lag_second.append(second)
            rec.lag.append(now - due)
            if idle:
                idle.popleft().send(job)
            else:
                backlog.append(job)
            index += 1
        if backlog:
            rec.pool_exhausted.add(int(now))
            rec.backlog_max = max(rec.backlog_max, len(backlog))
        await asyncio.sleep(0.001)
    stopped = state["stop"]
    if stopped:  # never written: not sent, not an outcome
        for job in backlog:
            rec.sent[job.second] -= 1
            rec.events["not_sent_at_stop"] += 1
        backlog.clear()
    deadline = clock() + DRAIN_S
    while (state["outstanding"] or backlog) and clock() < deadline:
        await asyncio.sleep(0.005)
    state["running"] = False
    for task in reconnecting:  # none may connect (and send) after the end, nor leave its connection open
        task.cancel()
    await asyncio.gather(*reconnecting, return_exceptions=True)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = clock() - c0
    for job in backlog:
        rec.outcome(job, "errors", "unfinished", None)
    for c in every:
        if c.job is not None:
            rec.outcome(c.job, "errors", "unfinished", None)
            c.job = None
        if c.transport is not None:
            c.transport.close()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return rec, {"cpu_fraction": round(cpu / max(1e-9, wall), 3), "wall_s": round(wall, 1), "stopped_early": stopped}


def _ms(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}"


def lag_windows(lag_p99_by_second: Sequence[float | None], limit: float = LAG_LIMIT_MS) -> list[int]:
    """Starts of the 10 s windows in which the generator's own send lag p99 exceeded ``limit``
    (each window judged on the p99 of its seconds' p99s: a bound from above)."""
    bad = []
    for start in range(0, len(lag_p99_by_second), LAG_WINDOW_S):
        values = [v for v in lag_p99_by_second[start : start + LAG_WINDOW_S] if v is not None]
        if values and max(values) > limit:
            bad.append(start)
    return bad


def write_outputs(run_dir: Path, schedule: Schedule, rec: Recorder, info: dict[str, Any], opts: argparse.Namespace,
                  argv: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """fastgen.csv, fastgen-latency.csv, checks-fastgen.csv and fastgen.json; the summary."""
    seconds = len(schedule.counts)
    per_second: list[list[float]] = [[] for _ in range(seconds)]
    for s, one in zip(rec.second, rec.latency, strict=True):
        per_second[s].append(one * 1000.0)
    lag_by_second: list[list[float]] = [[] for _ in range(seconds)]
    for s, one_lag in zip(rec.lag_second, rec.lag, strict=True):
        lag_by_second[s].append(one_lag * 1000.0)
    lag_p99: list[float | None] = []
    with open(run_dir / "fastgen.csv", "w", newline="") as f, \
            open(run_dir / "fastgen-latency.csv", "w", newline="") as h, \
            open(run_dir / "checks-fastgen.csv", "w", newline="") as c:  # fmt: skip
        w, wh, wc = csv.writer(f), csv.writer(h), csv.writer(c)
        w.writerow(["t_s", "target_rps", "sent", *OUTCOMES, "p50_ms", "p99_ms", "max_ms", "lag_p99_ms"])
        wh.writerow(["t_s", "le_ms", "count"])
        wc.writerow(["t_s", "checked", "wrong", "stale", "sig_fail"])
        for s in range(seconds):
            lats = sorted(per_second[s])
            lags = sorted(lag_by_second[s])
            second_lag = percentile(lags, 0.99) if lags else None
            lag_p99.append(second_lag)
            outcome = [rec.outcomes[(s, k)] for k in OUTCOMES]
            w.writerow([s, f"{schedule.rates[s]:.1f}", rec.sent[s], *outcome,
                        *(_ms(percentile(lats, q)) if lats else "" for q in (0.5, 0.99)),
                        _ms(lats[-1]) if lats else "", "" if second_lag is None else _ms(second_lag)])  # fmt: skip
            if rec.sent[s] or any(outcome):
                wc.writerow([s, *outcome[:4]])
            buckets: collections.Counter[int] = collections.Counter(bisect.bisect_left(BOUNDS, x) for x in lats)
            for b in sorted(buckets):
                wh.writerow([s, f"{BOUNDS[b]:g}" if b < len(BOUNDS) else "inf", buckets[b]])
    lat = sorted(x * 1000.0 for x in rec.latency)
    from_send = sorted(x * 1000.0 for x in rec.from_send)
    lag = sorted(x * 1000.0 for x in rec.lag)
    wait = sorted(x * 1000.0 for x in rec.wait)

    def summary(values: list[float], qs: Sequence[tuple[str, float]]) -> dict[str, float]:
        if not values:
            return {}
        return {**{name: round(percentile(values, q), 2) for name, q in qs}, "max": round(values[-1], 2)}

    totals = {k: sum(v for (_, kind), v in rec.outcomes.items() if kind == k) for k in OUTCOMES}
    planned = sum(schedule.counts)
    sent = sum(rec.sent)
    reasons = []
    behind = lag_windows(lag_p99)
    if behind:
        shown = ", ".join(f"{t}–{t + LAG_WINDOW_S} s" for t in behind[:5]) + (" ..." if len(behind) > 5 else "")
        reasons.append(f"its own send lag p99 exceeded {LAG_LIMIT_MS:g} ms in {len(behind)} of the 10 s windows "
                       f"({shown}): it fell behind its schedule there")  # fmt: skip
    if sent < 0.99 * planned and not info.get("stopped_early"):
        reasons.append(f"sent {sent:,} of {planned:,} planned")
    if sum(totals.values()) != sent:
        reasons.append(f"the outcomes add up to {sum(totals.values()):,}, not the {sent:,} sent (an accounting fault)")
    worst = max((v for v in lag_p99 if v is not None), default=0.0)
    result = {
        "name": "fastgen",
        "processes": 1,
        "connections": opts.connections,
        "command": "python bench/fastgen.py " + " ".join(_masked(a, opts) for a in argv),
        "planned": planned,
        "requests": sent,
        "outcomes": totals,
        "error_kinds": dict(rec.kinds),
        "events": dict(rec.events),
        "problems": rec.problems,
        "latency_ms": {"n": len(lat), **summary(lat, (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)))},
        "latency_from_send_ms": summary(from_send, (("p50", 0.5), ("p99", 0.99))),
        "send_lag_ms": summary(lag, (("p50", 0.5), ("p99", 0.99))),
        "send_wait_ms": summary(wait, (("p50", 0.5), ("p99", 0.99))),
        "backlog_max": rec.backlog_max,
        "pool_exhausted_s": len(rec.pool_exhausted),
        **info,
        "saturated": bool(reasons),
        "saturation_reason": "; ".join(reasons)
        or f"kept its schedule (send lag p99 at most {worst:.1f} ms in any second)",
    }
    (run_dir / "fastgen.json").write_text(json.dumps(result, indent=1))
    return result


def _masked(arg: str, opts: argparse.Namespace) -> str:
    for path, name in ((opts.run_dir, "RUN_DIR"), (opts.truth_dir, "TRUTH_DIR"), (opts.checker_memo, "MEMO")):
        if path is not None:
            arg = arg.replace(str(path), name)
    return arg


async def wait_for_locust(run_dir: Path, timeout: float) -> float:
    """The wall time at which Locust's test started (its meta-locust.json). Looked for every
    2 ms: the requests due before it is seen start late, and that lag is the generator's."""
    path = run_dir / "meta-locust.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            started = json.loads(path.read_text())["started"]
            return dt.datetime.fromisoformat(started).timestamp()
        await asyncio.sleep(0.002)
    raise SystemExit(f"fastgen: Locust did not start within {timeout:g} s (no {path.name} in the run directory)")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/fastgen.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Either follow the day with Locust (what bench/tax_season.py runs):\n"
            "  python bench/fastgen.py --truth-dir T --url URL --run-dir RUN --scale 50 --minutes 12 --share 0.02\n"
            "or send a constant rate on its own:\n"
            "  python bench/fastgen.py --truth-dir T --url URL --run-dir RUN --rate 2000 --seconds 60\n"
            "Outputs in RUN: fastgen.csv, fastgen-latency.csv, checks-fastgen.csv, fastgen.json (see the module\n"
            "docstring). Exit status 0 when it ran (read fastgen.json for the verdict), 2 for bad arguments."
        ),
    )
    parser.add_argument("--truth-dir", type=Path, required=True, help="what 'certstatus bench load' wrote")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the public responder (default %(default)s)")
    parser.add_argument("--run-dir", type=Path, required=True, help="where the output files go")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--scale", type=float, help="follow the day: x1 = 100 checks/s at the peak hour")
    parser.add_argument("--minutes", type=float, default=10.0, help="the day compressed into this (default 10)")
    parser.add_argument("--share", type=float, default=0.02,
                        help="Locust's share of the relying-party load; this generator carries the rest (0.02)")  # fmt: skip
    parser.add_argument("--per-user-rps", type=float, default=5.0, help="checks/s per Locust user (default 5)")
    parser.add_argument("--wait", type=float, default=300.0, help="how long to wait for Locust to start (s)")
    parser.add_argument("--rate", type=float, help="instead of the day: a constant rate (requests/s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="with --rate: for this long (default 30)")
    parser.add_argument("--seed", type=int, help="random seed of the request draw")
    parser.add_argument("--verify-inline", action="store_true",
                        help="verify each answer not seen before as it arrives, during the run (default: after the "
                             "last request, so that verification does not take CPU from the system under test)")  # fmt: skip
    parser.add_argument("--checker-memo", type=Path,
                        help="start with the answers this file says were verified right (each answer's exact bytes "
                             "and the status it was checked against), and write it back at the end: successive runs "
                             "against one system (the rate ladder's rungs) then verify each distinct answer once, "
                             "not once per run")  # fmt: skip
    opts = parser.parse_args(argv)
    if (opts.scale is None) == (opts.rate is None):
        parser.error("give either --scale (follow the day with Locust) or --rate (alone)")
    if opts.connections < 1 or not 0 < opts.share <= 1 or (opts.rate is not None and opts.rate <= 0):
        parser.error("--connections must be at least 1, --share in (0, 1], --rate positive")
    if not (opts.truth_dir / "truth.json").exists():
        parser.error(f"{opts.truth_dir} holds no ground truth (run 'certstatus bench load --truth-dir DIR')")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(argv)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    if opts.rate is not None:
        schedule = Schedule([opts.rate] * max(1, round(opts.seconds)))
    else:
        n = max(1, int(opts.minutes * 60))  # as shape.csv has it
        rates = [split(t, scale=opts.scale, minutes=opts.minutes, share=opts.share, per_user_rps=opts.per_user_rps)[1]
                 for t in range(n)]  # fmt: skip
        schedule = Schedule(rates)
    truth = Truth.open(opts.truth_dir)
    checker = AnswerChecker(truth.issuers, memo=1_000_000)
    if opts.checker_memo is not None:
        try:
            loaded = checker.load_memo(opts.checker_memo)
        except ValueError as e:
            print(f"fastgen: --checker-memo: {e}", file=sys.stderr)
            return 2
        print(f"fastgen: {loaded:,} verified answers taken over from {opts.checker_memo.name}", flush=True)
    requests = Requests(truth, urllib.parse.urlsplit(opts.url).netloc, opts.seed)
    requests.prepare(sum(schedule.counts))
    # Millions of long-lived objects (the prepared requests, the checker's memo): without this a
    # full collection walks them all, a pause of 100+ ms in the middle of the measurement.
    gc.collect()
    gc.freeze()
    gc.disable()
    # bench/tax_season.py starts Locust when it sees this line.
    print(f"fastgen: {sum(schedule.counts):,} requests planned over {len(schedule.counts)} s, "
          f"{opts.connections} connections to {opts.url}", flush=True)  # fmt: skip
    deferred = Deferred()
    try:
        rec, info = uvloop.run(generate(opts, schedule, requests, checker, deferred))
    except OSError as e:  # nothing listening, or refused: say so rather than a traceback
        print(f"fastgen: cannot connect to {opts.url}: {e.strerror or e}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):  # the run is over: let the files be written whole
        signal.signal(sig, signal.SIG_IGN)
    print(f"fastgen: {SCHEDULE_DONE}; checking the {len(deferred.answers):,} answers first seen in it", flush=True)
    info["checked_after_the_run"] = deferred.settle(checker, rec)
    result = write_outputs(opts.run_dir, schedule, rec, info, opts, argv)
    if opts.checker_memo is not None:
        checker.save_memo(opts.checker_memo)
    lat = result["latency_ms"]
    print(f"fastgen: sent {result['requests']:,}; " + ", ".join(f"{k} {v:,}" for k, v in result["outcomes"].items())
          + (f"; latency p50 {lat['p50']} ms p99 {lat['p99']} ms max {lat['max']} ms" if lat.get("n") else "")
          + f"; {result['saturation_reason']}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
