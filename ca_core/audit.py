"""The audit log's hash chain, recomputed independently of the database (sans-IO).

PostgreSQL appends every audit row to a chain (migration 0006): the row carries the hash of
the row before it (``prev_hash``) and its own, ``row_hash = SHA-256(prev_hash || record)``,
where ``record`` is a canonical byte string of the row's fields. This module rebuilds that
record from the row's values in Python and walks the chain, so a database whose rows were
edited, deleted, inserted or reordered behind the application's back is caught, and the
first break is named.

A chain on its own proves that nobody changed the past *without rewriting everything after
it*. Whoever can write to the database can rewrite the rest of the chain too; that is
caught by comparing with a head recorded elsewhere earlier (an :class:`Anchor`: the
``seq:hash`` that ``certstatus audit verify`` prints, kept in a ticket, a mail or on paper).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterable
from typing import Final

from .errors import ValidationError

__all__ = [
    "GENESIS",
    "Anchor",
    "Break",
    "ChainLink",
    "ChainReport",
    "ChainVerifier",
    "record_bytes",
    "row_hash",
    "verify_chain",
]

GENESIS: Final = bytes(32)
"""The ``prev_hash`` of the first row."""

_TAG: Final = b"certstatus-audit-v1"
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)


@dataclasses.dataclass(frozen=True, slots=True)
class ChainLink:
    """One audit row as the chain sees it. ``before`` and ``after`` are the jsonb values'
    text as PostgreSQL prints them (``before::text``), which is canonical for a jsonb value."""

    id: int
    chain_seq: int | None
    at: dt.datetime
    actor: str
    action: str
    issuer_id: int | None
    serial: bytes | None
    before: str | None
    after: str | None
    idempotency_key: str | None
    prev_hash: bytes | None
    row_hash: bytes | None


def _field(value: str | None) -> bytes:
    if value is None:
        return b"~,"
    raw = value.encode()
    return b"%d:%s," % (len(raw), raw)


def record_bytes(link: ChainLink) -> bytes:
    """The canonical record of one row (the same bytes as SQL's ``audit_log_record``)."""
    at_us = (link.at - _EPOCH) // _MICROSECOND
    parts = (
        str(link.id),
        None if link.chain_seq is None else str(link.chain_seq),
        str(at_us),
        link.actor,
        link.action,
        None if link.issuer_id is None else str(link.issuer_id),
        None if link.serial is None else link.serial.hex(),
        link.before,
        link.after,
        link.idempotency_key,
    )
    return _TAG + b"".join(_field(p) for p in parts)


def row_hash(prev_hash: bytes, link: ChainLink) -> bytes:
    return hashlib.sha256(prev_hash + record_bytes(link)).digest()


@dataclasses.dataclass(frozen=True, slots=True)
class Anchor:
    """A chain position recorded earlier: row ``seq`` had hash ``hash``."""

    seq: int
    hash: bytes

    @classmethod
    def parse(cls, text: str) -> Anchor:
        m = re.fullmatch(r"\s*(\d{1,19}):([0-9a-fA-F]{64})\s*", text)
        if m is None:
            raise ValidationError(f"an anchor is SEQ:HASH (a row number, a colon, 64 hex digits), not {text!r}")
        return cls(int(m[1]), bytes.fromhex(m[2]))

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash.hex()}"


@dataclasses.dataclass(frozen=True, slots=True)
class Break:
    """One place where the chain does not hold."""

    seq: int | None
    id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "end of chain"
        if self.id is not None:
            where += f" (audit id {self.id})"
        return f"{where}: {self.problem}"


@dataclasses.dataclass(frozen=True, slots=True)
class ChainReport:
    rows: int
    head: Anchor
    breaks: tuple[Break, ...]
    breaks_total: int
    anchors_checked: int

    @property
    def intact(self) -> bool:
        return self.breaks_total == 0


class ChainVerifier:
    """Feed it the rows in ``chain_seq`` order (:meth:`add`), then :meth:`finish` with the
    database's recorded head. Memory stays constant; at most ``keep`` breaks are kept
    (all are counted)."""

    def __init__(self, anchors: tuple[Anchor, ...] = (), *, keep: int = 100) -> None:
        self._anchors = {a.seq: a.hash for a in anchors}
        self._seen_anchors: set[int] = set()
        self._keep = keep
        self._breaks: list[Break] = []
        self._count_breaks = 0
        self._prev = GENESIS
        self._seq = 0
        self.rows = 0

    def _break(self, seq: int | None, row_id: int | None, problem: str) -> None:
        self._count_breaks += 1
        if len(self._breaks) < self._keep:
            self._breaks.append(Break(seq, row_id, problem))

    def add(self, link: ChainLink) -> None:
        self.rows += 1
        if link.chain_seq is None or link.row_hash is None or link.prev_hash is None:
            self._break(link.chain_seq, link.id, "row is not chained (written with the chain trigger off)")
            return
        expected_seq = self._seq + 1
        if link.chain_seq != expected_seq:
            missing = link.chain_seq - expected_seq
            self._break(link.chain_seq, link.id, f"{missing} row(s) missing before it (seq {expected_seq} "
                        f"to {link.chain_seq - 1} were deleted)" if missing > 0 else "out of order")  # fmt: skip
        elif link.prev_hash != self._prev:
            self._break(link.chain_seq, link.id, "does not follow the row before it (prev_hash differs): "
                        "a row before it was changed, deleted or inserted")  # fmt: skip
        computed = row_hash(link.prev_hash, link)
        if computed != link.row_hash:
            self._break(link.chain_seq, link.id, "its content was changed after it was written (row_hash differs)")
        anchored = self._anchors.get(link.chain_seq)
        if anchored is not None:
            self._seen_anchors.add(link.chain_seq)
            if anchored != link.row_hash:
                self._break(link.chain_seq, link.id, "differs from the anchor recorded earlier: the chain "
                            "from here on was rewritten")  # fmt: skip
        # Continue from the stored hash, so one edited row is reported once, not at every
        # row after it.
        self._prev = link.row_hash
        self._seq = link.chain_seq

    def finish(self, head: Anchor | None, total_rows: int | None = None) -> ChainReport:
        """``head`` as the database records it and ``total_rows`` (count of audit_log), both
        read in the same snapshot as the rows."""
        if total_rows is not None and total_rows != self.rows:
            self._break(None, None, f"{total_rows - self.rows} row(s) in audit_log lie outside the chain "
                        "(a chain_seq the walk never reaches)")  # fmt: skip
        if head is None:
            self._break(None, None, "the chain head record is missing")
        elif head.seq != self._seq or head.hash != self._prev:
            if head.seq > self._seq:
                problem = f"the last {head.seq - self._seq} row(s) were deleted (the head says seq {head.seq})"
            else:
                problem = f"the head (seq {head.seq}) does not match the last row (seq {self._seq})"
            self._break(None, None, problem)
        for seq in sorted(set(self._anchors) - self._seen_anchors):
            self._break(seq, None, "the anchored row is gone")
        return ChainReport(
            rows=self.rows,
            head=Anchor(self._seq, self._prev),
            breaks=tuple(self._breaks),
            breaks_total=self._count_breaks,
            anchors_checked=len(self._seen_anchors),
        )


async def verify_chain(
    links: AsyncIterable[ChainLink],
    head: Anchor | None,
    anchors: tuple[Anchor, ...] = (),
    total_rows: int | None = None,
) -> ChainReport:
    verifier = ChainVerifier(anchors)
    async for link in links:
        verifier.add(link)
    return verifier.finish(head, total_rows)
