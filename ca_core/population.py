"""A large, honest certificate population, loaded fast: ``certstatus bench load`` and the
benchmarks under ``bench/`` fill the system with it.

Building a million certificates with ``cryptography``'s ``CertificateBuilder`` would take
minutes of Python per core. Instead, for each (issuer, CRL partition) one *template*
certificate is built with :func:`ca_core.issue.build_end_entity` (so its extensions, URLs
and partition are exactly what the CA writes), and every row is derived from it by
patching two fixed-length fields of its TBSCertificate:

- the serial number: always 16 octets in this CA (:func:`ca_core.issue.random_serial`,
  bit 126 set, bit 127 clear), so it sits at a fixed offset;
- the holder number (subject serialNumber, 16 digits);

and re-signing the patched TBS with the issuing CA's key (ECDSA or RSA, as the CA signs), assembling
``Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, BIT STRING signature }``.
Every certificate is therefore a real, distinct, correctly signed certificate of its
issuer, in the partition its serial maps to; they share the subject public key, the name
and the validity period of their template. :func:`verify_samples` checks a few with
``cryptography`` (signature against the issuer, serial, partition URL, holder number).

Rows are written with :func:`ca_core.storage.postgres.copy_certificates` (COPY) by worker
processes, each with its own connection, in batches. A COPY writes no outbox events and no
audit rows: the OCSP signer's fill (``certstatus signer --once --refill``) signs them after.

:func:`write_truth` records what was loaded for the load generators
(:mod:`ca_core.groundtruth`): every certificate in a seeded popularity order, with an admin
pool of good certificates at the end that relying-party load never asks about.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import dataclasses
import datetime as dt
import multiprocessing
import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca_core.errors import ValidationError
from ca_core.issue import SigningCA, build_end_entity, partition_for, random_serial
from ca_core.keystore import generate_private_key, signature_hash_for
from ca_core.model import KeyType
from ca_core.profiles import HolderSubject, PublicURLs, get_profile, subject_text

__all__ = [
    "GroundTruth",
    "IssuerTemplates",
    "LoadStopped",
    "PopulationPlan",
    "TruthSummary",
    "admin_pool_size",
    "assemble",
    "load_population",
    "make_templates",
    "plan_population",
    "verify_samples",
    "write_truth",
]

#: Placeholder holder number in the templates; replaced per row.
_HOLDER_PLACEHOLDER = "9" * 16
_SERIAL_OFFSET = 11  # 30 82 LL LL | a0 03 02 01 02 | 02 10 <16 octets>
_SERIAL_LEN = 16
PROFILE = "citizen-signing"
#: Revocation reasons an operator gives end-entity certificates (RFC 5280), with weights.
REVOCATION_REASONS = ((0, 30), (1, 15), (3, 10), (4, 25), (5, 15), (9, 5))


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


@dataclasses.dataclass(frozen=True)
class Template:
    """One template certificate, cut around its serial and holder number."""

    partition: int
    head: bytes  # TBS up to the serial's contents
    middle: bytes  # between the serial and the holder digits
    tail: bytes  # after the holder digits
    sig_alg: bytes  # the Certificate's signatureAlgorithm element
    subject_prefix: str
    subject_suffix: str
    not_before: dt.datetime
    not_after: dt.datetime


@dataclasses.dataclass(frozen=True)
class IssuerTemplates:
    issuer_id: int
    name: str
    partitions: int
    key_der: bytes  # unencrypted PKCS#8 of the issuing CA key, for the worker processes (never written to disk)
    certificate_der: bytes
    templates: tuple[Template, ...]  # indexed by partition


def make_templates(
    ca: SigningCA, issuer_id: int, partitions: int, *, urls: PublicURLs, now: dt.datetime
) -> IssuerTemplates:
    """One template per CRL partition of the issuer (citizen-signing, an RSA-2048 subject key
    like most citizen cards)."""
    subject_key = generate_private_key(KeyType.RSA2048).public_key()
    profile = get_profile(PROFILE)
    out = []
    for p in range(partitions):
        # A serial of this partition, so the template's CRL URLs name it.
        serial = random_serial()
        while partition_for(serial, partitions) != p:
            serial = random_serial()
        holder = HolderSubject("測試持卡人", _HOLDER_PLACEHOLDER)
        cert = build_end_entity(ca, profile, holder, subject_key, serial=serial, partition=p, now=now, urls=urls)
        der = cert.public_bytes(serialization.Encoding.DER)
        tbs = cert.tbs_certificate_bytes
        assert tbs[_SERIAL_OFFSET - 2 : _SERIAL_OFFSET] == b"\x02\x10", "serial is not 16 octets at the usual place"
        assert tbs[_SERIAL_OFFSET : _SERIAL_OFFSET + _SERIAL_LEN] == serial.to_bytes(16, "big")
        h = tbs.index(_HOLDER_PLACEHOLDER.encode())
        assert tbs.count(_HOLDER_PLACEHOLDER.encode()) == 1
        assert der[:2] == b"\x30\x82" and der[4 : 4 + len(tbs)] == tbs
        rest = der[4 + len(tbs) :]
        sig_alg = rest[: 2 + rest[1]]
        assert rest[len(sig_alg)] == 0x03
        text = subject_text(cert.subject)
        prefix, _, suffix = text.partition(_HOLDER_PLACEHOLDER)
        out.append(
            Template(
                p, tbs[:_SERIAL_OFFSET], tbs[_SERIAL_OFFSET + _SERIAL_LEN : h], tbs[h + 16 :], sig_alg,
                prefix, suffix, cert.not_valid_before_utc, cert.not_valid_after_utc,
            )
        )  # fmt: skip
    key_der = ca.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuerTemplates(
        issuer_id, ca.slug, partitions, key_der, ca.certificate.public_bytes(serialization.Encoding.DER), tuple(out)
    )


def tbs_signer(key: Any) -> Callable[[bytes], bytes]:
    """Sign a TBSCertificate as ``CertificateBuilder.sign`` does with this CA key (ECDSA, or
    RSA PKCS#1 v1.5; the digest of :func:`ca_core.keystore.signature_hash_for`)."""
    digest = signature_hash_for(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = ec.ECDSA(digest)
        return lambda data: key.sign(data, algorithm)
    if isinstance(key, rsa.RSAPrivateKey):
        pad = padding.PKCS1v15()
        return lambda data: key.sign(data, pad, digest)
    raise ValidationError(f"cannot sign certificates with a {type(key).__name__}")


def assemble(t: Template, serial: int, holder: str, sign: Callable[[bytes], bytes]) -> bytes:
    """The DER of the template's certificate with another serial and holder number."""
    tbs = b"".join((t.head, serial.to_bytes(16, "big"), t.middle, holder.encode(), t.tail))
    sig = sign(tbs)
    bits = b"\x03" + _der_len(len(sig) + 1) + b"\x00" + sig
    body_len = len(tbs) + len(t.sig_alg) + len(bits)
    return b"".join((b"\x30\x82", body_len.to_bytes(2, "big"), tbs, t.sig_alg, bits))


# The plan --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Listed:
    """A certificate that is not good: (status, revoked_at, reason, invalidity_date)."""

    status: str  # 'revoked' or 'suspended'
    revoked_at: dt.datetime
    reason: int
    invalidity_date: dt.datetime | None


@dataclasses.dataclass
class GroundTruth:
    """What the responder must say, by issuer id: every serial and the listed ones."""

    serials: dict[int, list[int]]
    listed: dict[tuple[int, int], Listed]
    never_issued: list[tuple[int, int]]  # (issuer_id, serial) pairs no certificate has

    def status(self, issuer_id: int, serial: int) -> Listed | None:
        return self.listed.get((issuer_id, serial))


@dataclasses.dataclass
class PopulationPlan:
    total: int
    shares: dict[int, int]  # issuer id -> number of certificates
    truth: GroundTruth
    batches: list[tuple[int, int, int]]  # (issuer id, first index, count)
    issued_at: dt.datetime


def plan_population(
    templates: Sequence[IssuerTemplates],
    total: int,
    *,
    weights: Sequence[float],
    revoked_fraction: float,
    suspended_fraction: float,
    batch_size: int,
    issued_at: dt.datetime,
    revoked_until: dt.datetime,
    seed: int,
) -> PopulationPlan:
    """Serials, statuses and batches. Serials come from the CA's own generator."""
    rng = random.Random(seed)
    shares: dict[int, int] = {}
    left = total
    for i, (t, w) in enumerate(zip(templates, weights, strict=True)):
        n = left if i == len(templates) - 1 else round(total * w / sum(weights))
        shares[t.issuer_id] = n
        left -= n
    serials: dict[int, list[int]] = {}
    known: dict[int, set[int]] = {}
    listed: dict[tuple[int, int], Listed] = {}
    reasons = [r for r, _ in REVOCATION_REASONS]
    reason_weights = [w for _, w in REVOCATION_REASONS]
    span = (revoked_until - issued_at).total_seconds()
    for issuer_id, n in shares.items():
        seen: set[int] = set()
        out: list[int] = []
        while len(out) < n:
            s = random_serial()
            if s not in seen:
                seen.add(s)
                out.append(s)
        serials[issuer_id] = out
        known[issuer_id] = seen
        n_rev, n_susp = round(n * revoked_fraction), round(n * suspended_fraction)
        picks = rng.sample(range(n), n_rev + n_susp)
        for k, idx in enumerate(picks):
            when = issued_at + dt.timedelta(seconds=int(rng.uniform(1, max(2.0, span - 1))))
            if k < n_rev:
                reason = rng.choices(reasons, reason_weights)[0]
                invalidity = (
                    max(issued_at, when - dt.timedelta(seconds=rng.randint(60, 3600)))
                    if reason == 1 and k % 2
                    else None
                )
                listed[(issuer_id, out[idx])] = Listed("revoked", when, reason, invalidity)
            else:
                listed[(issuer_id, out[idx])] = Listed("suspended", when, 6, None)
    never: list[tuple[int, int]] = []
    ids = list(shares)
    while len(never) < 2000:
        issuer_id = ids[len(never) % len(ids)]
        s = random_serial()
        if s not in known[issuer_id]:  # 126 random bits: a collision is all but impossible
            never.append((issuer_id, s))
    batches = []
    for issuer_id, n in shares.items():
        for first in range(0, n, batch_size):
            batches.append((issuer_id, first, min(batch_size, n - first)))
    return PopulationPlan(total, shares, GroundTruth(serials, listed, never), batches, issued_at)


# Loading (worker processes) ----------------------------------------------------------

_W: dict[str, Any] = {}


def _worker_init(database_url: str, templates: Sequence[IssuerTemplates], counter: Any) -> None:
    import uvloop

    from ca_core.storage import postgres as db

    # Ctrl-C reaches the whole process group: the parent decides, and terminates the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        _W["loop"] = loop
        _W["conn"] = loop.run_until_complete(db.connect(database_url))
        _W["counter"] = counter
        _W["signers"] = {
            it.issuer_id: tbs_signer(serialization.load_der_private_key(it.key_der, None)) for it in templates
        }
        _W["templates"] = {it.issuer_id: it for it in templates}
    except Exception as e:
        # An initializer that raises makes the pool start workers forever: fail the batches instead.
        _W["error"] = e


def _load_batch(job: tuple[int, int, bytes, dict[int, Listed], dt.datetime]) -> tuple[int, float, float]:
    """Build, sign and COPY one batch; returns (rows, seconds building, seconds copying)."""
    from ca_core.storage import postgres as db

    if "error" in _W:
        raise _W["error"]
    issuer_id, first, serial_blob, listed, issued_at = job
    it: IssuerTemplates = _W["templates"][issuer_id]
    sign = _W["signers"][issuer_id]
    counter = _W["counter"]
    t0 = time.perf_counter()
    records = []
    n = len(serial_blob) // 16
    for i in range(n):
        raw = serial_blob[16 * i : 16 * i + 16]
        serial = int.from_bytes(raw, "big")
        t = it.templates[serial % it.partitions]
        holder = f"{issuer_id * 10**13 + first + i:016d}"
        der = assemble(t, serial, holder, sign)
        special = listed.get(i)
        if special is None:
            status, revoked_at, reason, invalidity, updated_at = "good", None, None, None, issued_at
        else:
            status, revoked_at, reason = special.status, special.revoked_at, special.reason
            invalidity, updated_at = special.invalidity_date, special.revoked_at
        records.append((
            issuer_id, raw, PROFILE, t.subject_prefix + holder + t.subject_suffix, holder, t.not_before, t.not_after,
            status, revoked_at, reason, invalidity, t.partition, der, issued_at, updated_at,
        ))  # fmt: skip
        if i % 2000 == 1999:
            with counter.get_lock():
                counter.value += 2000
    with counter.get_lock():
        counter.value += n % 2000
    t1 = time.perf_counter()
    _W["loop"].run_until_complete(db.copy_certificates(_W["conn"], records))
    return n, t1 - t0, time.perf_counter() - t1


class LoadStopped(Exception):
    """:func:`load_population` was told to stop; rows already copied stay."""


def load_population(
    database_url: str,
    templates: Sequence[IssuerTemplates],
    plan: PopulationPlan,
    *,
    processes: int,
    progress: Any,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Sign and COPY every planned row with ``processes`` workers; returns timings.

    ``should_stop`` is polled a few times a second: when it returns true the workers are
    terminated and :class:`LoadStopped` is raised (call this from a thread to keep an event
    loop responsive)."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    truth = plan.truth

    def jobs() -> Any:
        for issuer_id, first, count in plan.batches:
            serials = truth.serials[issuer_id][first : first + count]
            blob = b"".join(s.to_bytes(16, "big") for s in serials)
            listed = {}
            for i, s in enumerate(serials):
                entry = truth.listed.get((issuer_id, s))
                if entry is not None:
                    listed[i] = entry
            yield (issuer_id, first, blob, listed, plan.issued_at)

    build_s = copy_s = 0.0
    rows = 0
    started = time.perf_counter()
    with ctx.Pool(processes, initializer=_worker_init, initargs=(database_url, templates, counter)) as pool:
        results = pool.imap_unordered(_load_batch, jobs())
        pending = len(plan.batches)
        while pending:
            if should_stop is not None and should_stop():
                raise LoadStopped(f"stopped after {counter.value:,} of {plan.total:,} certificates")
            try:
                n, b, c = results.next(timeout=0.2)
            except multiprocessing.TimeoutError:
                progress.set(counter.value)
                continue
            pending -= 1
            rows += n
            build_s += b
            copy_s += c
            progress.set(counter.value)
    elapsed = time.perf_counter() - started
    progress.set(counter.value)
    progress.close()
    return {"rows": rows, "elapsed_s": elapsed, "build_sign_cpu_s": build_s, "copy_wait_s": copy_s}


# Verification -----------------------------------------------------------------------


def verify_samples(
    ders: Sequence[tuple[int, int, bytes, str | None]], issuers: dict[int, IssuerTemplates], urls: PublicURLs
) -> int:
    """Check sampled rows with cryptography: (issuer id, serial, DER, holder id) each.

    The signature must verify with the issuer's public key, the serial and holder number
    must be the row's, and the CRL distribution point must name the serial's partition.
    Returns how many were checked; raises AssertionError on the first bad one.
    """
    for issuer_id, serial, der, holder in ders:
        it = issuers[issuer_id]
        issuer = x509.load_der_x509_certificate(it.certificate_der)
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(issuer)  # signature (ECDSA or RSA), issuer name, algorithm
        assert cert.serial_number == serial, "serial mismatch"
        sn = cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value
        assert holder is None or sn == holder, "holder number mismatch"
        dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
        expected = urls.partition_crl(it.name, partition_for(serial, it.partitions))
        assert dp == expected, f"CRL distribution point {dp} is not {expected}"
    return len(ders)


# Ground truth -----------------------------------------------------------------------------

#: The admin pool: at most this many certificates, and at most 1 % of them.
ADMIN_POOL_MAX = 10_000


def admin_pool_size(total: int) -> int:
    """How many certificates are kept out of relying-party load for admin-load users to
    revoke and suspend during a run: 1 % of them, at most :data:`ADMIN_POOL_MAX`."""
    return min(total // 100, ADMIN_POOL_MAX)


@dataclasses.dataclass(frozen=True, slots=True)
class TruthSummary:
    directory: Path
    count: int
    rp_count: int
    admin_pool: int
    good: int
    revoked: int
    suspended: int
    never_issued: int
    seconds: float


def write_truth(
    plan: PopulationPlan,
    templates: Sequence[IssuerTemplates],
    directory: Path,
    *,
    seed: int,
    admin_pool: int | None = None,
    responder_url: str | None = None,
) -> TruthSummary:
    """Write the ground truth of a loaded plan with :class:`ca_core.groundtruth.TruthWriter`.

    The certificates are shuffled (seeded) into popularity order, so the listed ones are
    spread over the ranks; the last ``admin_pool`` places (default :func:`admin_pool_size`)
    go to good certificates, taken from the end of the shuffle. Issuer indexes are the
    positions in ``templates``. Memory beyond the plan: 8 bytes per certificate.
    """
    from ca_core.groundtruth import Status, TruthWriter

    started = time.perf_counter()
    ids = [t.issuer_id for t in templates]
    if set(ids) != set(plan.shares):
        raise ValueError("the templates are not those of the plan")
    serials = [plan.truth.serials[i] for i in ids]
    starts = [0]
    for block in serials:
        starts.append(starts[-1] + len(block))
    total = starts[-1]
    listed = plan.truth.listed
    wanted = admin_pool_size(total) if admin_pool is None else admin_pool
    if not 0 <= wanted < total:
        raise ValueError(f"an admin pool of {wanted} leaves no certificate for relying-party load")

    def locate(g: int) -> tuple[int, int]:
        k = bisect.bisect_right(starts, g) - 1
        return k, serials[k][g - starts[k]]

    order = array.array("q", range(total))
    random.Random(f"{seed}:popularity").shuffle(order)
    # The admin pool: the last good certificates of the shuffle, in their shuffled order.
    admin_positions: list[int] = []
    pos = total - 1
    while len(admin_positions) < wanted and pos >= 0:
        k, serial = locate(order[pos])
        if (ids[k], serial) not in listed:
            admin_positions.append(pos)
        pos -= 1
    admin_positions.reverse()
    skip = set(admin_positions)

    counts = {Status.GOOD: 0, Status.REVOKED: 0, Status.SUSPENDED: 0}
    kinds = {"revoked": Status.REVOKED, "suspended": Status.SUSPENDED}
    writer = TruthWriter(directory, [(t.name, t.certificate_der) for t in templates])
    add = writer.add
    for pos, g in enumerate(order):
        if pos in skip:
            continue
        k, serial = locate(g)
        entry = listed.get((ids[k], serial))
        if entry is None:
            add(k, serial, Status.GOOD, None)
            counts[Status.GOOD] += 1
        else:
            status = kinds[entry.status]
            add(k, serial, status, entry.reason)
            counts[status] += 1
    for pos in admin_positions:
        k, serial = locate(order[pos])
        add(k, serial, Status.GOOD, None)
        counts[Status.GOOD] += 1
    index = {issuer_id: k for k, issuer_id in enumerate(ids)}
    never = [(index[i], s) for i, s in plan.truth.never_issued if i in index]
    rp_count = total - len(admin_positions)
    writer.close(rp_count=rp_count, never_issued=never, responder_url=responder_url)
    return TruthSummary(
        Path(directory), total, rp_count, len(admin_positions), counts[Status.GOOD], counts[Status.REVOKED],
        counts[Status.SUSPENDED], len(never), time.perf_counter() - started,
    )  # fmt: skip
