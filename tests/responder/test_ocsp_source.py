"""responder.ocsp_source: its pure parts, and :meth:`OCSPSource.answer_soon` against a real
Valkey and signer (the rest is exercised over HTTP elsewhere)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as cocsp

from ca_core.clock import FakeClock
from ca_core.keystore import KeyVault
from ca_core.lifecycle import CertificateAuthority
from ca_core.model import CertRecord, KeyType
from ca_core.ocsp import UNSUCCESSFUL, FlatQuery, ResponseStatus, parse_request
from ca_core.pki import IssuerSpec, PKISummary, init_pki
from ca_core.profiles import PublicURLs
from responder.ocsp_source import _UNAUTHORIZED, Answer, OCSPSource, put_bounded

from .ocsp_harness import Responder, now_clock, start_responder

UNAUTHORIZED = UNSUCCESSFUL[ResponseStatus.UNAUTHORIZED]
TRY_LATER = UNSUCCESSFUL[ResponseStatus.TRY_LATER]


def test_put_bounded_keeps_the_most_recent_insertions_in_order() -> None:
    d: OrderedDict[int, str] = OrderedDict()
    for i in range(10):
        put_bounded(d, i, str(i), 4)
    assert list(d.items()) == [(6, "6"), (7, "7"), (8, "8"), (9, "9")]
    put_bounded(d, 8, "again", 4)  # an overwrite keeps its place (and may evict one more)
    assert d[8] == "again" and list(d)[-1] == 9 and len(d) <= 4
    put_bounded(d, 10, "10", 0)  # a zero limit keeps nothing new
    assert 10 not in d


def test_eviction_under_churn_stays_bounded_and_keeps_the_latest() -> None:
    cache: OrderedDict[int, int] = OrderedDict()
    for i in range(50_000):
        put_bounded(cache, i, i, 1000)
    assert len(cache) == 1000
    assert list(cache) == list(range(49_000, 50_000))


def _young() -> set[int]:
    return {id(o) for o in gc.get_objects(generation=0)} | {id(o) for o in gc.get_objects(generation=1)}


def test_the_container_stays_old_when_its_untracked_entries_change() -> None:
    """Why put_bounded takes an OrderedDict: after a full collection a plain dict of untracked
    tuples is untracked too, and the next fresh entry re-tracks it into the youngest
    generation, where each young collection walks every entry; the OrderedDict stays put."""

    def fresh(i: int) -> tuple[bytes, int]:
        return (i.to_bytes(4, "big") * 3, i)  # built at run time: tracked until a collection

    ordered: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
    plain: dict[int, tuple[bytes, int]] = {}
    for i in range(5000):
        put_bounded(ordered, i, fresh(i), 10_000)
        plain[i] = fresh(i)
    gc.collect()
    assert not any(gc.is_tracked(v) for v in ordered.values())
    assert gc.is_tracked(ordered) and not gc.is_tracked(plain)
    put_bounded(ordered, 10**6, fresh(10**6), 10_000)
    plain[10**6] = fresh(10**6)
    young = _young()
    assert id(ordered) not in young
    assert id(plain) in young  # the CPython behaviour this guards against


# answer_soon: a cache miss answered from the Redis reply, without a task ----------------------


serving = contextlib.asynccontextmanager(start_responder)


@pytest.fixture
def clock() -> FakeClock:
    """Redis expires keys by its own clock, so responses are signed near real time."""
    return now_clock()


def status_of(answer: Answer) -> str:
    if answer.der in (UNAUTHORIZED, TRY_LATER):
        return "unauthorized" if answer.der == UNAUTHORIZED else "tryLater"
    resp = cocsp.load_der_ocsp_response(answer.der)
    assert resp.response_status == cocsp.OCSPResponseStatus.SUCCESSFUL
    return f"{resp.certificate_status.name.lower()}/{resp.hash_algorithm.name}/{resp.serial_number:x}"


async def delivered(source: OCSPSource, query: FlatQuery, limit: float = 3.0) -> tuple[Answer, bool]:
    """answer_soon's answer, and whether it needed a task."""
    got: list[Answer] = []
    tasks_before = set(source._tasks)
    now = source.answer_soon(query, got.append)
    if now is not None:
        return now, False
    used_a_task = bool(source._tasks - tasks_before)
    deadline = time.monotonic() + limit
    while not got:
        assert time.monotonic() < deadline, "no answer delivered"
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    assert len(got) == 1, got  # delivered exactly once
    return got[0], used_a_task


@pytest.fixture
async def responder(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    redis_url: str,
    vault: KeyVault,
    clock: FakeClock,
    ca: CertificateAuthority,
) -> AsyncIterator[Responder]:
    """A running responder whose Redis connection is up and checked, as after any first answer."""
    async with serving(pool, redis_client, redis_url, vault, clock, ca) as r:
        assert await r.server.source._server_trusted()
        yield r


def never(answer: Answer) -> None:
    pytest.fail(f"delivered later, not returned at once: {answer!r}")


def flat(r: Responder, record: CertRecord | int, algorithm: hashes.HashAlgorithm | None = None) -> FlatQuery:
    return parse_request(r.request(record, "moica", algorithm)).flat


async def test_a_miss_is_answered_in_the_redis_reply_callback_and_then_cached(responder: Responder) -> None:
    r, source = responder, responder.server.source
    first, second = await r.issue(), await r.issue()
    await r.ca.revoke("moica", second.serial, actor="test", reason="keyCompromise")
    await r.settle()
    for record, status in ((first, "good"), (second, "revoked")):
        query = flat(r, record)
        assert source.cached(query) is None
        gets, signed = source.stats["redis_gets"], source.stats["live_signed"]
        answer, used_a_task = await delivered(source, query)
        assert status_of(answer) == f"{status}/sha1/{record.serial:x}"
        assert not used_a_task
        assert source.stats["redis_gets"] == gets + 1 and source.stats["live_signed"] == signed
        assert source.cached(query) == answer  # remembered

        # SHA-256 with the SHA-1 answer cached: signed at once, no Redis read.
        query256 = flat(r, record, hashes.SHA256())
        answer256, _ = await delivered(source, query256)
        assert status_of(answer256) == f"{status}/sha256/{record.serial:x}"
        assert source.stats["redis_gets"] == gets + 1 and source.stats["live_signed"] == signed + 1
        assert source.cached(query256) == answer256

    # SHA-256 with nothing cached: the Redis reply, then signed in its callback.
    source._drop_all()
    query256 = flat(r, first, hashes.SHA256())
    answer, used_a_task = await delivered(source, query256)
    assert status_of(answer) == f"good/sha256/{first.serial:x}" and not used_a_task
    assert cocsp.load_der_ocsp_response(answer.der).signature_hash_algorithm is not None


async def test_what_the_callback_cannot_answer_takes_a_task_with_the_same_rules(responder: Responder) -> None:
    r, source = responder, responder.server.source
    record = await r.issue()
    # A serial never issued: the GET's reply is empty, and a task then asks Redis
    # whether the issuer is filled (else it would be tryLater).
    gets = source.stats["redis_gets"]
    answer, _ = await delivered(source, flat(r, 0x7EEEEEEE))
    assert status_of(answer) == "unauthorized"
    assert source.stats["redis_gets"] == gets + 1
    # An issuer nobody knows: at once.
    unknown = (0, b"\x00" * 20, b"\x00" * 20, record.serial, None)
    assert source.answer_soon(unknown, never) == _UNAUTHORIZED
    # Unsubscribed (the cache is not trusted): a task reading Redis.
    source._subscribed = False
    try:
        answer, used_a_task = await delivered(source, flat(r, record))
    finally:
        source._subscribed = True
    assert status_of(answer) == f"good/sha1/{record.serial:x}" and used_a_task


async def test_a_get_in_flight_when_redis_stops_answering_is_try_later_then_recovers(responder: Responder) -> None:
    r, source = responder, responder.server.source
    record = await r.issue()
    # Valkey stops serving every client for 2 s; the GET's deadline is shorter.
    await r.redis.execute_command("CLIENT", "PAUSE", "2000", "ALL")
    started = time.monotonic()
    answer, used_a_task = await delivered(source, flat(r, record), limit=5.0)
    assert status_of(answer) == "tryLater" and not used_a_task
    assert time.monotonic() - started < 1.9  # within the client's deadline, not the pause's end
    await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
    for _ in range(50):  # reconnected and checked again, through a task, then as before
        answer, _ = await delivered(source, flat(r, record))
        if status_of(answer) != "tryLater":
            break
        await asyncio.sleep(0.1)
    assert status_of(answer) == f"good/sha1/{record.serial:x}"


class TestRSASigner:
    """An OCSP key that signs too slowly for the event loop: SHA-256 answers signed in a thread."""

    @pytest.fixture
    async def pki(self, pool: asyncpg.Pool, vault: KeyVault, clock: FakeClock, urls: PublicURLs) -> PKISummary:
        return await init_pki(
            pool, vault, clock=clock, urls=urls, actor="test", root_key_type=KeyType.EC_P384,
            issuers=[IssuerSpec("moica", key_type=KeyType.EC_P256, ocsp_key_type=KeyType.RSA2048, crl_partitions=1)],
        )  # fmt: skip

    async def test_sha256_answers_take_the_thread_path(self, responder: Responder) -> None:
        r, source = responder, responder.server.source
        record = await r.issue()
        signed = source.stats["live_signed"]
        answer, _ = await delivered(source, flat(r, record, hashes.SHA256()))
        assert status_of(answer) == f"good/sha256/{record.serial:x}"
        assert source.stats["live_signed"] == signed + 1
        resp = cocsp.load_der_ocsp_response(answer.der)
        assert resp.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
        # The SHA-1 one (pre-signed) and, now, the SHA-256 one are cached: at once.
        assert source.answer_soon(flat(r, record), never) is not None
        assert source.answer_soon(flat(r, record, hashes.SHA256()), never) == answer
