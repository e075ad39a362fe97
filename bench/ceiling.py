#!/usr/bin/env python
"""The responder's ceiling: its most requests per second under wrk, next to nginx serving the
same bytes, measured in the same run on a system that is already running.

    python bench/ceiling.py --responder-port 8080 --truth-dir DATA/bench --workers 2

Locust checks every answer and tops out near 2,900 requests/s on 2 cores, well below what the
responder serves; this measures the responder with wrk (C, one thread by default), and nginx
with wrk in the same way, so the figure that matters is the ratio of the two, not either rate
(bench/README.md, "Side by side, never absolute"). Steps:

1. **Requests**: ``--requests`` (200,000) OCSP GETs drawn from the ground truth that
   ``certstatus bench load`` wrote: certificates by Zipf popularity from the relying-party
   ranks, 20 % SHA-256 CertIDs, 0.5 % never-issued serials (``ca_core.groundtruth``).
2. **Warm-up**: one closed-loop pass over the distinct requests (bench/ocsp.py's load
   generator, 8 connections per responder worker), so that SHA-256 answers, which the
   responder signs live once and then caches, are not measured cold.
3. **nginx**: one real answer of the responder (the most popular good certificate, checked
   against the truth) as a static file, with as many worker processes as the responder.
4. **Rounds**: wrk against the responder and nginx in turn, the order rotating each round,
   with the same connections, duration and request file (bench/ocsp.py's Lua script);
   medians over the rounds.
5. **Answers**: wrk cannot tell a ``tryLater`` from an answer, so a closed-loop pass of the
   generator counts the kinds of answers (the census), and a sample of answers is checked
   against the truth with ``AnswerChecker`` (status, reason, serial, freshness, signature).

nginx is stopped in every case. The figures go to ``ceiling.json`` (``--out``) with every path
of this machine masked; ``bench/tax_season.py`` calls :func:`measure_ceiling` after its replay.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make bench/ and ca_core importable
    sys.path.insert(0, str(ROOT))

from bench.ocsp import (  # noqa: E402
    WRK_LUA,
    HTTPConn,
    Processes,
    RequestFactory,
    free_port,
    note,
    run_loadgen,
    run_wrk,
    start_nginx,
    write_requests,
    wrk_argv,
)
from ca_core.groundtruth import AnswerChecker, Entry, RequestBuilder, Status, Truth, zipf_rank  # noqa: E402
from ca_core.ocsp import HashAlgorithm  # noqa: E402

INSTALL_HINT = "apt-get install wrk nginx (or give the binaries' paths)"
SHA256_SHARE = 0.20
NEVER_ISSUED_SHARE = 0.005


# The request list ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RequestList:
    """Raw HTTP GETs in the order wrk cycles through them, with what each one's answer must say
    (``None``: a never-issued serial, answered ``unauthorized``)."""

    requests: list[bytes]
    expected: list[Entry | None]
    distinct: list[bytes]  # each distinct request once, in order of first appearance
    sha256: int
    never_issued: int

    def describe(self) -> str:
        return (
            f"Zipf popularity from the ground truth, {_percent(SHA256_SHARE)} SHA-256 CertIDs, "
            f"{_percent(NEVER_ISSUED_SHARE)} never-issued"
        )


def _percent(share: float) -> str:
    return f"{share * 100:g} %"


def build_requests(truth: Truth, count: int, rng: random.Random) -> RequestList:
    """``count`` GETs: certificates of the relying-party ranks by Zipf popularity (ranks below
    ``rp_count``: the admin pool, which changes during a replay, is never asked about), about
    0.5 % never-issued serials, and SHA-1:SHA-256 CertIDs 80:20, as relying parties send them."""
    if count < 1:
        raise ValueError("the request list needs at least one request")
    builder = RequestBuilder([cert for _, cert in truth.issuers])
    made: dict[tuple[int, int, HashAlgorithm], bytes] = {}
    requests: list[bytes] = []
    expected: list[Entry | None] = []
    distinct: list[bytes] = []
    sha256 = never = 0
    for _ in range(count):
        entry: Entry | None
        if truth.never_issued and rng.random() < NEVER_ISSUED_SHARE:
            issuer_index, serial = rng.choice(truth.never_issued)
            entry = None
            never += 1
        else:
            entry = truth.entry(zipf_rank(truth.rp_count, rng))
            issuer_index, serial = entry.issuer_index, entry.serial
        algorithm = HashAlgorithm.SHA256 if rng.random() < SHA256_SHARE else HashAlgorithm.SHA1
        sha256 += algorithm is HashAlgorithm.SHA256
        key = (issuer_index, serial, algorithm)
        raw = made.get(key)
        if raw is None:
            raw = made[key] = RequestFactory.get(builder.der(issuer_index, serial, algorithm))
            distinct.append(raw)
        requests.append(raw)
        expected.append(entry)
    return RequestList(requests, expected, distinct, sha256, never)


# Small helpers -----------------------------------------------------------------------------------


def fetch(port: int, raws: Sequence[bytes], connections: int = 4) -> list[tuple[int, bytes]]:
    """(HTTP status, body) of each raw request, over a few keep-alive connections."""
    timeout = 30.0 + len(raws) / 100

    async def go() -> list[tuple[int, bytes]]:
        results: list[tuple[int, bytes]] = [(0, b"")] * len(raws)
        todo = iter(enumerate(raws))

        async def worker() -> None:
            conn = HTTPConn(port)
            try:
                for i, raw in todo:
                    status, _, body = await conn.request(raw)
                    results[i] = (status, body)
            finally:
                await conn.close()

        workers = asyncio.gather(*(worker() for _ in range(max(1, min(connections, len(raws))))))
        try:
            await asyncio.wait_for(workers, timeout)
        except TimeoutError:
            raise RuntimeError(f"127.0.0.1:{port} did not answer {len(raws):,} requests in {timeout:.0f} s") from None
        return results

    return asyncio.run(go())


def find_tools(wrk: str | None = None, nginx: str | None = None) -> tuple[str, str]:
    """The wrk and nginx binaries; a RuntimeError saying what to install if one is missing."""
    found_wrk = shutil.which(wrk or "wrk")
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    found_nginx = shutil.which(nginx or "nginx") or (None if nginx else shutil.which("/usr/sbin/nginx"))
    missing = [name for name, path in (("wrk", found_wrk), ("nginx", found_nginx)) if path is None]
    if missing:
        raise RuntimeError(
            f"the ceiling measurement needs wrk and nginx; not installed: {', '.join(missing)} ({INSTALL_HINT})"
        )
    assert found_wrk is not None and found_nginx is not None
    return found_wrk, found_nginx


def tool_version(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        lines = (out.stdout + out.stderr).strip().splitlines()
        if lines:
            return lines[0].split(" Copyright")[0].strip()
    return "?"


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _wait_started(procs: Processes, name: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        p = procs.procs.get(name)
        if p is not None and p.poll() is not None:
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{procs.log(name)[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{name} does not listen on port {port} after {timeout:.0f} s:\n{procs.log(name)[-2000:]}")


def masker(paths: Sequence[tuple[str | Path, str]]) -> Callable[[Any], Any]:
    """Replaces each path (the longest first) by its placeholder in every string of a value."""
    pairs = sorted(((str(p), name) for p, name in paths if str(p) not in ("", ".", "/")), key=lambda x: -len(x[0]))

    def mask(value: Any) -> Any:
        if isinstance(value, str):
            for path, name in pairs:
                value = value.replace(path, name)
            return value
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mask(v) for v in value]
        return value

    return mask


# The measurement ----------------------------------------------------------------------------------


def measure_ceiling(
    *,
    responder_port: int,
    truth_dir: Path,
    work_dir: Path,
    out: Path | None = None,
    seconds: float = 15.0,
    rounds: int = 2,
    connections: int = 64,
    nginx_workers: int = 1,
    responder_workers: int | None = None,
    requests: int = 200_000,
    threads: int = 1,
    sample: int = 2000,
    census: int = 20_000,
    seed: int = 6,
    wrk: str | None = None,
    nginx: str | None = None,
) -> dict[str, Any]:
    """Measure the ceiling of the responder on ``responder_port`` (127.0.0.1) next to nginx, and
    return the figures (written to ``out`` as JSON too, paths masked).

    :param truth_dir: what ``certstatus bench load --truth-dir`` wrote for this system.
    :param work_dir: request files, the wrk script, nginx's directory and logs go to
        ``work_dir/ceiling``.
    :param seconds: length of each wrk run; :param rounds: runs per target, order rotating.
    :param connections: wrk's connections (and the census pass's); :param threads: wrk's threads.
    :param nginx_workers: nginx's worker processes: the responder's worker count, so that both
        have the same cores; ``responder_workers`` (recorded only) defaults to it.
    :param requests: length of the request list; :param sample: answers checked against the
        truth; :param census: requests of the census pass.
    :raises RuntimeError: wrk or nginx missing (what to install), nothing on the port, or a
        step failing; nginx is stopped in every case.

    Synchronous (it runs event loops of its own): call it outside a running event loop.
    """
    wrk_bin, nginx_bin = find_tools(wrk, nginx)
    if seconds <= 0 or rounds < 1 or connections < 1 or nginx_workers < 1 or threads < 1:
        raise ValueError("seconds, rounds, connections, workers and threads must be positive")
    if not port_open(responder_port):
        raise RuntimeError(f"nothing listens on 127.0.0.1:{responder_port}: start 'certstatus serve' first")
    workers = responder_workers or nginx_workers
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    rng = random.Random(seed)
    d = Path(work_dir) / "ceiling"
    d.mkdir(parents=True, exist_ok=True)
    script = d / "wrk-requests.lua"
    script.write_text(WRK_LUA)
    request_file, distinct_file, census_file = d / "requests.req", d / "distinct.req", d / "census.req"

    truth = Truth.open(Path(truth_dir))
    t0 = time.monotonic()
    rl = build_requests(truth, requests, rng)
    write_requests(request_file, rl.requests)
    write_requests(distinct_file, rl.distinct)
    census_start = rng.randrange(len(rl.requests))
    census_raws = (rl.requests[census_start:] + rl.requests[:census_start])[: min(census, len(rl.requests))]
    write_requests(census_file, census_raws)
    note(
        f"ceiling: {len(rl.requests):,} requests ({len(rl.distinct):,} distinct) built in {time.monotonic() - t0:.1f} s"
    )

    procs = Processes(d)
    try:
        # 2. Warm-up: few connections, so that live signing is not shed as tryLater.
        warm_conns = 8 * workers
        note(f"ceiling: warming the responder, one GET for each distinct request ({warm_conns} connections)")
        warm = run_loadgen(procs, d, "warm", {"mode": "pass", "host": "127.0.0.1", "port": responder_port,
                                              "file": str(distinct_file), "connections": warm_conns})  # fmt: skip
        note(f"ceiling: warm-up {warm['requests']:,} in {warm['elapsed_s']:.1f} s: {warm['answers']}")

        # 3. nginx serves one real answer: the most popular good certificate's (SHA-1 CertID).
        checker = AnswerChecker(truth.issuers)
        rank = next((r for r in range(truth.rp_count) if truth.entry(r).status is Status.GOOD), None)
        if rank is None:
            raise RuntimeError("no good certificate among the relying-party ranks of the truth")
        top = truth.entry(rank)
        builder = RequestBuilder([cert for _, cert in truth.issuers])
        top_raw = RequestFactory.get(builder.der(top.issuer_index, top.serial, HashAlgorithm.SHA1))
        status, body = fetch(responder_port, [top_raw], 1)[0]
        problem = f"HTTP {status}" if status != 200 else checker.check(body, top, dt.datetime.now(dt.UTC))
        if problem is not None:
            raise RuntimeError(f"the responder's answer for the most popular good certificate is wrong: {problem}")
        nginx_port = free_port()
        start_nginx(None, procs, d, "nginx", nginx_workers, nginx_port, body, nginx=nginx_bin)
        args = procs.procs["nginx"].args
        nginx_command = [str(a) for a in args] if isinstance(args, list) else [str(args)]
        _wait_started(procs, "nginx", nginx_port)
        if fetch(nginx_port, [top_raw, rl.requests[0]], 1) != [(200, body), (200, body)]:
            raise RuntimeError("nginx does not serve the responder's answer for /ocsp/... requests")

        # 4. wrk, alternately.
        ports = {"responder": responder_port, "nginx": nginx_port}
        runs: list[dict[str, Any]] = []
        commands: list[str] = []
        for rnd in range(rounds):
            order = ["responder", "nginx"] if rnd % 2 == 0 else ["nginx", "responder"]
            for target in order:
                offset = rng.randrange(len(rl.requests))
                argv = wrk_argv(wrk_bin, threads, connections, script, ports[target], request_file, seconds, offset)
                commands.append(shlex.join(argv))
                res = run_wrk(None, script, ports[target], request_file, seconds, offset, wrk=wrk_bin, threads=threads,
                              connections=connections)  # fmt: skip
                res.update(target=target, round=rnd + 1, load_average=os.getloadavg()[0])
                runs.append(res)
                note(f"ceiling: round {rnd + 1}/{rounds} {target:9} {res['rps']:>9,.0f} req/s  "
                     f"p50 {res['p50_us'] / 1000:.2f} ms  p99 {res['p99_us'] / 1000:.2f} ms  errors {res['errors']}")  # fmt: skip

        # 5. What the answers were after the load.
        note(f"ceiling: answer census, {len(census_raws):,} requests on {connections} connections")
        counted = run_loadgen(procs, d, "census", {"mode": "pass", "host": "127.0.0.1", "port": responder_port,
                                                   "file": str(census_file), "connections": connections})  # fmt: skip
        picks = rng.sample(range(len(rl.requests)), min(sample, len(rl.requests)))
        answers = fetch(responder_port, [rl.requests[i] for i in picks])
        now = dt.datetime.now(dt.UTC)
        problems: collections.Counter[str] = collections.Counter()
        for i, (status, body) in zip(picks, answers, strict=True):
            verdict = f"HTTP {status}" if status != 200 else checker.check(body, rl.expected[i], now)
            if verdict is not None:
                problems[verdict] += 1
        note(f"ceiling: census {counted['answers']}; {len(picks):,} answers checked, {sum(problems.values())} wrong")
    finally:
        procs.stop_all()

    targets = []
    for name, count in (("responder", workers), ("nginx", nginx_workers)):
        mine = [r for r in runs if r["target"] == name]
        targets.append({
            "name": name,
            "workers": count,
            "req_s": round(statistics.median(r["rps"] for r in mine), 1),
            # Without non-2xx answers (wrk cannot see a tryLater in a 200: see the warnings).
            "good_req_s": round(statistics.median((r["requests"] - r["status"]) / (r["duration_us"] / 1e6)
                                                  for r in mine), 1),
            "p50_ms": round(statistics.median(r["p50_us"] for r in mine) / 1000, 3),
            "p99_ms": round(statistics.median(r["p99_us"] for r in mine) / 1000, 3),
            "errors": sum(r["errors"] for r in mine),
            "runs_req_s": [round(r["rps"], 1) for r in mine],
            "runs_p99_ms": [round(r["p99_us"] / 1000, 3) for r in mine],
            "requests": sum(r["requests"] for r in mine),
            "bytes_per_response": round(statistics.median(r["bytes_per_response"] for r in mine), 1),
            "port": ports[name],
        })  # fmt: skip
    nginx_rate = targets[1]["req_s"]
    warnings = []
    full = targets[1]["bytes_per_response"]  # nginx: one full answer, with the same headers but its own
    if full and targets[0]["bytes_per_response"] < 0.8 * full:
        warnings.append(f"the responder's answers averaged {targets[0]['bytes_per_response']:,.0f} bytes against "
                        f"{full:,.0f} for a full one: some may have been 5-byte tryLater answers")  # fmt: skip
    census = counted["answers"]
    shed = sum(v for k, v in census.items() if k not in ("successful", "unauthorized"))
    if shed:
        warnings.append(f"{shed:,} of the {sum(census.values()):,} census answers were neither successful nor "
                        f"unauthorized: {census}")  # fmt: skip
    if any(t["errors"] for t in targets):
        warnings.append("wrk counted errors: req/s includes them, good_req_s does not")
    result: dict[str, Any] = {
        "tool": tool_version([wrk_bin, "-v"]),
        "duration_s": seconds,
        "connections": connections,
        "threads": threads,
        "rounds": rounds,
        "requests": {
            "count": len(rl.requests),
            "distinct": len(rl.distinct),
            "list": rl.describe(),
            "method": "GET",
            "sha256": rl.sha256,
            "never_issued": rl.never_issued,
            "seed": seed,
        },
        "targets": targets,
        "ratio_to_nginx": round(targets[0]["req_s"] / nginx_rate, 3) if nginx_rate else None,
        "answers": {
            "census": counted["answers"],
            "checked": len(picks),
            "wrong": sum(problems.values()),
            "problems": dict(problems.most_common(5)),
        },
        "warnings": warnings,
        "commands": commands,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "nginx": {
            "version": tool_version([nginx_bin, "-v"]),
            "serves": f"one answer of the responder, {len(body)} bytes",
            "command": shlex.join(nginx_command),
        },
        "warmup": {
            "requests": warm["requests"],
            "elapsed_s": round(warm["elapsed_s"], 2),
            "answers": warm["answers"],
            "connections": warm_conns,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    mask = masker([(script, "SCRIPT"), (request_file, "REQUESTS"), (d, "WORK_DIR/ceiling"), (work_dir, "WORK_DIR"),
                   (truth_dir, "TRUTH_DIR"), (wrk_bin, "wrk"), (nginx_bin, "nginx"), (ROOT, ".")])  # fmt: skip
    result = mask(result)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return result


# Command line ----------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['tool']}, {result['threads']} thread(s), {result['connections']} connections, "
        f"{result['duration_s']:g} s per run, {result['rounds']} round(s); {result['requests']['count']:,} GETs "
        f"({result['requests']['distinct']:,} distinct): {result['requests']['list']}",
        "",
        f"{'target':10} {'workers':>7} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  runs (req/s)",
    ]
    for t in result["targets"]:
        lines.append(f"{t['name']:10} {t['workers']:>7} {t['req_s']:>10,.0f} {t['p50_ms']:>8.2f} {t['p99_ms']:>8.2f} "
                     f"{t['errors']:>7}  {', '.join(f'{x:,.0f}' for x in t['runs_req_s'])}")  # fmt: skip
    a = result["answers"]
    ratio = result["ratio_to_nginx"]
    lines += [
        "",
        f"responder / nginx: {ratio:.2f}" if ratio is not None else "responder / nginx: nginx answered nothing",
        f"answers: census {a['census']}; {a['checked']:,} checked against the truth, {a['wrong']} wrong"
        + (f" ({a['problems']})" if a["wrong"] else ""),
        f"load average before and after: {result['load_average'][0]}, {result['load_average'][1]}",
        "",
        *(f"$ {c}" for c in result["commands"]),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/ceiling.py",
        description=(
            "The ceiling of a running certstatus responder: its requests per second under wrk, next to nginx "
            "serving one of the responder's own answers as a static file (as many workers), in alternating "
            "rounds with the same connections, duration and requests. The requests are OCSP GETs drawn from the "
            "ground truth of 'certstatus bench load' (Zipf popularity, 20 % SHA-256 CertIDs, 0.5 % never-issued "
            "serials); the responder is warmed with one pass over them first, and afterwards a census counts "
            "the kinds of its answers and a sample is checked against the truth."
        ),
        epilog=(
            "Needs: a responder already serving that system (certstatus serve) with its Redis filled, the truth "
            "directory, and wrk and nginx (apt-get install wrk nginx). With the defaults it takes about 2 minutes. "
            "Read the ratio to nginx, not the rates: both share this machine's cores with the load generator. "
            "See bench/README.md."
        ),
    )
    parser.add_argument("--responder-port", type=int, required=True, help="the responder's public port on 127.0.0.1")
    parser.add_argument("--truth-dir", type=Path, required=True, help="what 'certstatus bench load --truth-dir' wrote")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per wrk run (default 15)")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per target, order rotating (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="the responder's worker processes; nginx gets as many (default 1)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=200_000, help="length of the request list (default 200,000)")
    parser.add_argument("--sample", type=int, default=2000, help="answers checked against the truth (default 2,000)")
    parser.add_argument("--seed", type=int, default=6, help="seed of the request list (default 6)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON (e.g. RUN_DIR/ceiling.json)")
    parser.add_argument(
        "--work-dir", type=Path, help="keep request files and logs here (default: a temporary directory)"
    )
    parser.add_argument("--wrk", help="wrk binary (default: wrk on the PATH)")
    parser.add_argument("--nginx", help="nginx binary (default: nginx on the PATH or /usr/sbin/nginx)")
    opts = parser.parse_args(argv)

    def measure(work_dir: Path) -> dict[str, Any]:
        return measure_ceiling(
            responder_port=opts.responder_port, truth_dir=opts.truth_dir, work_dir=work_dir, out=opts.out,
            seconds=opts.seconds, rounds=opts.rounds, connections=opts.connections, threads=opts.threads,
            nginx_workers=opts.workers, requests=opts.requests, sample=opts.sample, seed=opts.seed, wrk=opts.wrk,
            nginx=opts.nginx,
        )  # fmt: skip

    try:
        if opts.work_dir is not None:
            result = measure(opts.work_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="certstatus-ceiling-") as tmp:
                result = measure(Path(tmp))
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"ceiling: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; nginx stopped", file=sys.stderr)
        return 130
    print(render(result))
    if opts.out is not None:
        print(f"\nwrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
