"""The ground truth the load generators check answers against, held against a real responder:
right answers pass, and a wrong status, reason, serial, stale answer or bad signature is caught."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import random
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.x509 import ocsp

from ca_core.clock import FakeClock
from ca_core.groundtruth import (
    DEFERRED,
    AnswerChecker,
    Entry,
    Status,
    Truth,
    TruthWriter,
    classify_answer,
    zipf_rank,
)
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.storage import postgres as db

from .ocsp_harness import Responder, now_clock, start_responder


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def responder(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_url: str, vault: KeyVault, clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:  # fmt: skip
    async for r in start_responder(pool, redis_client, redis_url, vault, clock, ca):
        yield r


async def test_right_answers_pass_and_wrong_ones_are_named(
    responder: Responder, pool: asyncpg.Pool, tmp_path: Path, clock: FakeClock
) -> None:
    good, revoked, suspended, other = [await responder.issue() for _ in range(4)]
    await responder.ca.revoke("moica", revoked.serial, actor="t", reason="keyCompromise")
    await responder.ca.suspend("moica", suspended.serial, actor="t")
    await responder.settle()
    async with pool.acquire() as conn:
        issuer = await db.get_issuer(conn, "moica")
    assert issuer is not None
    writer = TruthWriter(tmp_path, [("moica", issuer.certificate)])
    writer.add(0, good.serial, Status.GOOD, None)
    writer.add(0, revoked.serial, Status.REVOKED, 1)
    writer.add(0, suspended.serial, Status.SUSPENDED, 6)
    writer.add(0, other.serial, Status.GOOD, None)
    writer.close(rp_count=3, never_issued=[(0, 0xABCDEF)])
    truth = Truth.open(tmp_path)
    assert (len(truth), truth.rp_count, truth.never_issued) == (4, 3, [(0, 0xABCDEF)])
    assert [truth.entry(i).status for i in range(4)] == [Status.GOOD, Status.REVOKED, Status.SUSPENDED, Status.GOOD]
    assert truth.entry(1) == Entry(0, revoked.serial, Status.REVOKED, 1)

    checker = AnswerChecker(truth.issuers)
    now = dt.datetime.now(dt.UTC)
    answers = {}
    for rank in range(4):
        entry = truth.entry(rank)
        status, _, body = await responder.post(responder.request(entry.serial))
        assert status == 200
        answers[rank] = body
        assert checker.check(body, entry, now) is None, (rank, checker.check(body, entry, now))
    _, _, never = await responder.post(responder.request(0xABCDEF))
    assert checker.check(never, None, now) is None
    assert "expected unauthorized" in (checker.check(answers[0], None, now) or "")

    # Every way an answer can be wrong is a failure with its reason.
    e_good, e_rev = truth.entry(0), truth.entry(1)
    assert "wrong status" in (checker.check(answers[0], dataclasses.replace(e_good, status=Status.REVOKED), now) or "")
    assert "wrong status" in (checker.check(answers[1], dataclasses.replace(e_rev, status=Status.GOOD), now) or "")
    assert "wrong reason" in (checker.check(answers[1], dataclasses.replace(e_rev, reason=4), now) or "")
    assert "wrong reason" in (checker.check(answers[2], dataclasses.replace(e_rev, serial=suspended.serial), now) or "")
    assert "asked" in (checker.check(answers[0], truth.entry(3), now) or "")
    assert "stale" in (checker.check(answers[0], e_good, now + dt.timedelta(days=30)) or "")
    assert "stale" in (checker.check(answers[0], e_good, now - dt.timedelta(days=1)) or "")
    # A bit flipped in anything signed (the response data, its signature, the responder
    # certificate or its signature) is caught. (The BIT STRING's unused-bits octet is not
    # signed, and cryptography reads the same signature with it changed: not a wrong answer.)
    parsed = ocsp.load_der_ocsp_response(answers[0])
    responder_cert = parsed.certificates[0]
    der = answers[0]
    regions = [parsed.tbs_response_bytes, parsed.signature, responder_cert.tbs_certificate_bytes,
               responder_cert.signature]  # fmt: skip
    flipped = 0
    for region in regions:
        start = der.index(region)
        for offset in range(start, start + len(region), 7):
            forged = bytearray(der)
            forged[offset] ^= 0x01
            assert checker.check(bytes(forged), e_good, now) is not None, offset
            flipped += 1
    assert flipped > 100
    assert "unparseable" in (checker.check(b"\x30\x03\x0a\x01\x00", e_good, now) or "")

    # Handed to a later checker (fastgen's --checker-memo): right verdicts only; what it takes
    # over is used as is (no entry added: nothing verified again), freshness still checked.
    memo = tmp_path / "memo.bin"
    assert checker.save_memo(memo) == 4  # ranks 0-3; the wrong, damaged and forged verdicts are not kept
    later = AnswerChecker(truth.issuers)
    assert later.load_memo(memo) == 4
    for rank in range(4):
        assert later.check(answers[rank], truth.entry(rank), now) is None
    assert len(later._memo) == 4
    assert "stale" in (later.check(answers[0], e_good, now + dt.timedelta(days=30)) or "")
    assert "wrong status" in (later.check(answers[0], dataclasses.replace(e_good, status=Status.REVOKED), now) or "")
    assert AnswerChecker(truth.issuers).load_memo(tmp_path / "absent.bin") == 0
    memo.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a checker memo"):
        later.load_memo(memo)

    # verify=False (fastgen's default during a run): bytes not verified before are deferred,
    # not passed; everything that needs no signature is judged at once; once verified, the
    # same bytes are judged from the memo, and a wrong status is still wrong.
    fresh = AnswerChecker(truth.issuers)
    assert fresh.check(answers[0], e_good, now, verify=False) is DEFERRED
    assert classify_answer(fresh, 200, answers[1], e_rev, now, verify=False) == (DEFERRED, None)
    forged = bytearray(answers[0])
    forged[der.index(parsed.signature) + 3] ^= 0x01
    assert classify_answer(fresh, 200, bytes(forged), e_good, now, verify=False) == (DEFERRED, None)
    assert classify_answer(fresh, 200, never, None, now, verify=False) == ("checked", None)
    assert classify_answer(fresh, 200, answers[0], None, now, verify=False)[0] == "wrong"
    assert classify_answer(fresh, 503, b"", e_good, now, verify=False) == ("errors", "http_503")
    assert len(fresh._memo) == 0  # nothing was verified
    assert classify_answer(fresh, 200, answers[0], e_good, now) == ("checked", None)
    assert classify_answer(fresh, 200, bytes(forged), e_good, now)[0] == "sig_fail"
    assert fresh.check(answers[0], e_good, now, verify=False) is None
    assert "stale" in (fresh.check(answers[0], e_good, now + dt.timedelta(days=30), verify=False) or "")
    wrong = dataclasses.replace(e_good, status=Status.REVOKED)
    assert fresh.check(answers[0], wrong, now, verify=False) is DEFERRED  # another verdict: not memoised yet
    assert classify_answer(fresh, 200, answers[0], wrong, now)[0] == "wrong"


def test_bad_truth_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bench load"):
        Truth.open(tmp_path)


def test_zipf_ranks_favour_the_head_and_stay_in_range() -> None:
    rng = random.Random(7)
    n = 1_000_000
    counts = collections.Counter(zipf_rank(n, rng) for _ in range(200_000))
    assert min(counts) >= 0 and max(counts) < n
    assert counts[0] > counts[9] > counts[999] >= 0
    # About 1/H(n) of draws (~7 %) land on rank 0 with s = 1.
    assert 0.03 < counts[0] / 200_000 < 0.12
