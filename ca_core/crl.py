"""CRL encoding and signing as a stream (sans-IO): RFC 5280 section 5.

A full CRL of a national CA holds hundreds of thousands of entries (MOICA's: ~412,000,
~20 MB), and one of a million entries is ~40 MB. Building it as Python objects first (as
``cryptography``'s builder does) costs gigabytes and tens of seconds. Here each entry is
encoded to DER as it arrives and appended to a spool file, so memory stays flat however
many entries there are:

1. :meth:`CRLEncoder.add` / :meth:`CRLEncoder.add_rows` append encoded entries to the spool;
2. :meth:`CRLEncoder.finish` learns the entries' total length (DER needs it up front),
   hashes the TBSCertList in one pass over the spool (incremental digest), signs the digest
   (a prehashed signature) and returns a :class:`EncodedCRL`;
3. :meth:`EncodedCRL.chunks` yields the complete DER in pieces of any size, reading the
   spool a second time.

The output is byte-for-byte what ``cryptography.x509.CertificateRevocationListBuilder``
produces for the same CRL (tests compare them), so the encoding choices are the usual
ones: UTCTime through 2049 and GeneralizedTime after (RFC 5280 5.1.2.4), seconds without
fractions, the reason code as an ENUMERATED entry extension and omitted when it is
``unspecified`` (RFC 5280 5.3.1 says it SHOULD be), the invalidity date as GeneralizedTime.

What goes into which CRL (scopes, partitions, deltas) is decided by the publisher
(:mod:`ca_core.crl_publisher`); this module only encodes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from .errors import ConfigurationError, ValidationError
from .keystore import PrivateKey, signature_hash_for
from .ocsp import _LENGTHS, _len, _oid, signature_algorithm, tlv

__all__ = [
    "CRLEncoder",
    "CRLParams",
    "CRLSigner",
    "EncodedCRL",
    "crl_time",
    "encode_crl",
    "encode_entries",
    "entry_der",
]

#: Entries are written to the spool in groups this large (one write call per group).
_FLUSH_EVERY: Final = 4096
#: Spool in memory up to this size, on disk beyond: memory stays flat for any CRL size.
_SPOOL_IN_MEMORY: Final = 4 * 1024 * 1024

_OID_REASON: Final = _oid("2.5.29.21")
_OID_INVALIDITY: Final = _oid("2.5.29.24")
_V2: Final = b"\x02\x01\x01"
# 2050-01-01T00:00:00Z and 1950-01-01T00:00:00Z: UTCTime covers exactly this range.
_UTC_END: Final = 2524608000
_UTC_START: Final = -631152000

#: The entry extension carrying each reason code (RFC 5280 5.3.1), precomputed. Reason 0
#: (unspecified) is left out, as RFC 5280 asks; 7 is not a code.
_REASON_EXT: Final = {
    r: b"\x30\x0a" + _OID_REASON + b"\x04\x03\x0a\x01" + bytes((r,)) for r in (1, 2, 3, 4, 5, 6, 8, 9, 10)
}


def crl_time(epoch_seconds: int) -> bytes:
    """A Time (RFC 5280 5.1.2.4): UTCTime ``YYMMDDHHMMSSZ`` for 1950-2049, else GeneralizedTime."""
    t = time.gmtime(epoch_seconds)
    if _UTC_START <= epoch_seconds < _UTC_END:
        return b"\x17\x0d%02d%02d%02d%02d%02d%02dZ" % (
            t.tm_year % 100,
            t.tm_mon,
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
        )
    if not 0 < t.tm_year <= 9999:
        raise ValidationError(f"time {epoch_seconds} cannot be written in a CRL")
    return b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _generalized(epoch_seconds: int) -> bytes:
    t = time.gmtime(epoch_seconds)
    if not 0 < t.tm_year <= 9999:
        raise ValidationError(f"time {epoch_seconds} cannot be written as a GeneralizedTime")
    return b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


#: Day number since the epoch -> b"\x17\x0dYYMMDD" (the start of a UTCTime).
_UTC_DATES: dict[int, bytes] = {}
_TIME_OF_DAY: list[bytes] = []


def _utc_date(day: int) -> bytes:
    t = time.gmtime(day * 86400)
    return b"\x17\x0d%02d%02d%02d" % (t.tm_year % 100, t.tm_mon, t.tm_mday)


def _time_of_day() -> list[bytes]:
    """b"HHMMSSZ" for every second of a day, built once (~3 MB)."""
    if not _TIME_OF_DAY:
        _TIME_OF_DAY.extend(b"%02d%02d%02dZ" % (s // 3600, s // 60 % 60, s % 60) for s in range(86400))
    return _TIME_OF_DAY


def _integer_body(serial: bytes) -> bytes:
    """INTEGER contents for a serial stored as minimal unsigned big-endian octets."""
    if serial[0] & 0x80:
        return b"\x00" + serial
    return serial


def entry_der(serial: bytes, revoked_at: int, reason: int | None, invalidity: int | None) -> bytes:
    """One revokedCertificates entry.

    :param serial: the serial as minimal unsigned big-endian octets (as stored).
    :param revoked_at: revocationDate, seconds since the epoch.
    :param reason: CRLReason code, or ``None``/0 for none.
    :param invalidity: invalidityDate, seconds since the epoch, or ``None``.
    """
    if not serial:
        raise ValidationError("a serial number needs at least one octet")
    body = _integer_body(serial)
    if reason == 7 or (reason is not None and not 0 <= reason <= 10):
        raise ValidationError(f"{reason} is not a CRLReason code")
    exts = _REASON_EXT[reason] if reason else b""
    if invalidity is not None:
        exts += b"\x30\x18" + _OID_INVALIDITY + b"\x04\x11" + _generalized(invalidity)
    inner = b"\x02" + _len(len(body)) + body + crl_time(revoked_at)
    if exts:
        inner += b"\x30" + _len(len(exts)) + exts
    return b"\x30" + _len(len(inner)) + inner


def encode_entries(rows: Iterable[Sequence[Any]]) -> tuple[list[bytes], int]:
    """Encode many revokedCertificates entries; returns them with their total length.

    Each row's first four items are ``(serial, revoked_at, reason, invalidity)`` as for
    :func:`entry_der` (database records work as they are). The same encoding as
    :func:`entry_der`, written out inline: this loop is most of the time it takes to build
    a CRL of a million entries.
    """
    L, reasons, utc_start, utc_end = _LENGTHS, _REASON_EXT, _UTC_START, _UTC_END
    days, tod = _UTC_DATES, _time_of_day()
    out: list[bytes] = []
    append = out.append
    length = 0
    last_t, last_time = None, b""
    for row in rows:
        serial, revoked_at, reason, invalidity = row[0], row[1], row[2], row[3]
        if not serial:
            raise ValidationError("a serial number needs at least one octet")
        if serial[0] & 0x80:
            serial = b"\x00" + serial
        if revoked_at != last_t:
            if utc_start <= revoked_at < utc_end:
                # UTCTime from two look-ups: the date per day (memoised), the time of day
                # from a table of all 86,400 (formatting each time was most of the loop).
                day, second = divmod(revoked_at, 86400)
                date = days.get(day)
                if date is None:
                    date = days[day] = _utc_date(day)
                last_time = date + tod[second]
            else:
                last_time = crl_time(revoked_at)
            last_t = revoked_at
        inner = b"\x02" + L[len(serial)] + serial + last_time
        if reason or invalidity is not None:
            if reason:
                try:
                    exts = reasons[reason]
                except KeyError:
                    raise ValidationError(f"{reason} is not a CRLReason code") from None
            else:
                exts = b""
            if invalidity is not None:
                exts += b"\x30\x18" + _OID_INVALIDITY + b"\x04\x11" + _generalized(invalidity)
            inner += b"\x30" + L[len(exts)] + exts
        der = b"\x30" + L[len(inner)] + inner
        append(der)
        length += len(der)
    return out, length


def _extension(ext: x509.ExtensionType, *, critical: bool) -> bytes:
    # The extension value is encoded by cryptography (once per CRL, not per entry), so
    # its DER is exactly what cryptography's own builder would write.
    value = ext.public_bytes()
    return tlv(0x30, _oid(ext.oid.dotted_string) + (b"\x01\x01\xff" if critical else b"") + tlv(0x04, value))


@dataclasses.dataclass(frozen=True, slots=True)
class CRLParams:
    """Everything about one CRL except its entries.

    :param issuer: the CA certificate (its subject becomes the CRL issuer; its subject key
        identifier the authorityKeyIdentifier).
    :param number: cRLNumber (RFC 5280 5.2.3).
    :param this_update: seconds since the epoch.
    :param next_update: seconds since the epoch.
    :param scope_url: for a partition CRL, the URL its certificates' distribution point
        names: written as a critical issuingDistributionPoint with onlyContainsUserCerts
        (RFC 5280 5.2.5). ``None`` for a CRL covering all the issuer's certificates.
    :param delta_base: for a delta CRL, the number of the base CRL it completes: written as
        a critical deltaCRLIndicator (RFC 5280 5.2.4).
    :param freshest_url: where this base CRL's delta CRL is published (freshestCRL, RFC
        5280 5.2.6; never on a delta CRL).
    """

    issuer: x509.Certificate
    number: int
    this_update: int
    next_update: int
    scope_url: str | None = None
    delta_base: int | None = None
    freshest_url: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.number < 1 << 159:  # RFC 5280 5.2.3: at most 20 octets
            raise ValidationError(f"CRL number {self.number} is out of range")
        if self.next_update <= self.this_update:
            raise ValidationError("a CRL's nextUpdate must come after its thisUpdate")
        if self.delta_base is not None and not 0 <= self.delta_base < self.number:
            raise ValidationError(f"a delta CRL ({self.number}) must complete an earlier base ({self.delta_base})")
        if self.delta_base is not None and self.freshest_url is not None:
            raise ValidationError("a delta CRL carries no freshestCRL (RFC 5280 5.2.6)")

    def extensions(self) -> list[bytes]:
        """The crlExtensions, DER-encoded, in the order they are written."""
        try:
            ski = self.issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            ski = x509.SubjectKeyIdentifier.from_public_key(self.issuer.public_key())
        out = [
            _extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False),
            _extension(x509.CRLNumber(self.number), critical=False),
        ]
        if self.scope_url is not None:
            idp = x509.IssuingDistributionPoint(
                full_name=[x509.UniformResourceIdentifier(self.scope_url)],
                relative_name=None,
                only_contains_user_certs=True,
                only_contains_ca_certs=False,
                only_some_reasons=None,
                indirect_crl=False,
                only_contains_attribute_certs=False,
            )
            out.append(_extension(idp, critical=True))
        if self.delta_base is not None:
            out.append(_extension(x509.DeltaCRLIndicator(self.delta_base), critical=True))
        if self.freshest_url is not None:
            point = x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(self.freshest_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
            out.append(_extension(x509.FreshestCRL([point]), critical=False))
        return out


class CRLSigner:
    """Signs CRL digests with a CA key (prehashed: the TBSCertList is hashed as it streams)."""

    def __init__(self, key: PrivateKey) -> None:
        self.algorithm_der = signature_algorithm(key)
        digest = signature_hash_for(key)
        self._hash_name = digest.name
        prehashed = utils.Prehashed(digest)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = ec.ECDSA(prehashed)
            self._sign: Callable[[bytes], bytes] = lambda d: key.sign(d, algorithm)
        elif isinstance(key, rsa.RSAPrivateKey):
            pad = padding.PKCS1v15()
            self._sign = lambda d: key.sign(d, pad, prehashed)
        else:  # pragma: no cover - signature_algorithm refused it already
            raise ConfigurationError(f"CRLs are signed with RSA or ECDSA keys, not {type(key).__name__}")

    def new_hash(self) -> hashlib._Hash:
        return hashlib.new(self._hash_name)

    def sign_digest(self, digest: bytes) -> bytes:
        return self._sign(digest)

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA384() if self._hash_name == "sha384" else hashes.SHA256()


class CRLEncoder:
    """Accumulates the entries of one CRL in a spool, then signs and emits it.

    Use it once: ``add``/``add_rows`` as often as needed, then ``finish``.
    """

    def __init__(self, params: CRLParams, signer: CRLSigner, *, spool: IO[bytes] | None = None) -> None:
        self.params = params
        self.signer = signer
        self._spool: IO[bytes] = spool if spool is not None else tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY)
        self._pending: list[bytes] = []
        self._length = 0
        self.count = 0
        self._finished = False

    def add(self, serial: bytes, revoked_at: int, reason: int | None = None, invalidity: int | None = None) -> None:
        """Append one entry (see :func:`entry_der` for the arguments)."""
        der = entry_der(serial, revoked_at, reason, invalidity)
        self._pending.append(der)
        self._length += len(der)
        self.count += 1
        if len(self._pending) >= _FLUSH_EVERY:
            self._flush()

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Append many entries: rows whose first four items are ``(serial, revoked_at,
        reason, invalidity)`` as for :func:`entry_der`."""
        it = iter(rows)
        while batch := list(itertools.islice(it, _FLUSH_EVERY)):
            ders, length = encode_entries(batch)
            self.add_encoded(ders, length)

    def add_encoded(self, ders: list[bytes], length: int) -> None:
        """Append entries already encoded by :func:`encode_entries` (``length`` is the sum of
        their lengths): one encoding can feed several CRLs, as the full and the partition
        CRLs share their entries."""
        self._pending.extend(ders)
        self._length += length
        self.count += len(ders)
        if len(self._pending) >= _FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._spool.write(b"".join(self._pending))
            self._pending.clear()

    def finish(self) -> EncodedCRL:
        """Hash the TBSCertList in one pass, sign it, and return the CRL ready to emit."""
        if self._finished:
            raise RuntimeError("a CRLEncoder finishes once")
        self._finished = True
        self._flush()
        p = self.params
        sig_alg = self.signer.algorithm_der
        before = _V2 + sig_alg + p.issuer.subject.public_bytes() + crl_time(p.this_update) + crl_time(p.next_update)
        revoked_head = (b"\x30" + _len(self._length)) if self.count else b""
        exts = b"".join(p.extensions())
        after = tlv(0xA0, tlv(0x30, exts))
        tbs_body = len(before) + len(revoked_head) + self._length + len(after)
        tbs_head = b"\x30" + _len(tbs_body)
        digest = self.signer.new_hash()
        prefix = tbs_head + before + revoked_head
        digest.update(prefix)
        for block in _blocks(self._spool, self._length):
            digest.update(block)
        digest.update(after)
        signature = self.signer.sign_digest(digest.digest())
        sig_bits = b"\x03" + _len(len(signature) + 1) + b"\x00" + signature
        suffix = after + sig_alg + sig_bits
        total_body = len(tbs_head) + tbs_body + len(sig_alg) + len(sig_bits)
        outer = b"\x30" + _len(total_body)
        return EncodedCRL(
            params=p,
            count=self.count,
            length=len(outer) + total_body,
            prefix=outer + prefix,
            spool=self._spool,
            entries_length=self._length,
            suffix=suffix,
        )

    def close(self) -> None:
        self._spool.close()


def _blocks(spool: IO[bytes], length: int, size: int = 1 << 20) -> Iterator[bytes]:
    spool.seek(0)
    remaining = length
    while remaining:
        block = spool.read(min(size, remaining))
        if not block:
            raise RuntimeError("the CRL spool is shorter than the entries written to it")
        remaining -= len(block)
        yield block


@dataclasses.dataclass(slots=True)
class EncodedCRL:
    """A signed CRL whose entries still live in the spool: emit it with :meth:`chunks`."""

    params: CRLParams
    count: int
    length: int
    prefix: bytes
    spool: IO[bytes]
    entries_length: int
    suffix: bytes

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The complete DER, in pieces of exactly ``size`` bytes (the last may be shorter)."""
        if size < 1:
            raise ValueError("chunk size must be at least 1 byte")
        buf = bytearray()
        for piece in self._pieces():
            buf += piece
            while len(buf) >= size:
                yield bytes(buf[:size])
                del buf[:size]
        if buf:
            yield bytes(buf)

    def _pieces(self) -> Iterator[bytes]:
        yield self.prefix
        yield from _blocks(self.spool, self.entries_length)
        yield self.suffix

    def der(self) -> bytes:
        """The whole CRL in memory: for small CRLs and tests."""
        return b"".join(self._pieces())

    def close(self) -> None:
        self.spool.close()


def encode_crl(params: CRLParams, signer: CRLSigner, rows: Iterable[Sequence[Any]]) -> bytes:
    """A whole CRL in memory, for small ones (deltas, tests)."""
    enc = CRLEncoder(params, signer)
    try:
        enc.add_rows(rows)
        return enc.finish().der()
    finally:
        enc.close()
