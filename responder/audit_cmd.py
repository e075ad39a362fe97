"""``certstatus audit verify``: walk the audit log's hash chain and name every break."""

from __future__ import annotations

import argparse

from ca_core.audit import Anchor, ChainVerifier
from ca_core.errors import ValidationError
from ca_core.storage import postgres as db

from . import server
from .config import Config
from .progress import Progress
from .runtime import Storage

__all__ = ["anchor_arg", "cmd_audit_verify"]

EXIT_INTACT, EXIT_BROKEN = 0, 3  # 1 and 2 are the CLI's "could not check" and usage errors


def anchor_arg(text: str) -> Anchor:
    """argparse type for --anchor: a malformed anchor is a usage error (exit 2)."""
    try:
        return Anchor.parse(text)
    except ValidationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


async def cmd_audit_verify(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _print_json

    anchors: tuple[Anchor, ...] = tuple(args.anchor or ())
    verifier = ChainVerifier(anchors, keep=args.max_breaks)
    # One snapshot for the rows, their count and the head: writes committing meanwhile (the
    # CA keeps working) are simply not in it, instead of looking like rows gone missing.
    async with storage.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        total = await db.count_audit(conn)
        progress = Progress("audit rows checked", total, unit="rows")
        async for link in db.iter_audit_chain(conn):
            verifier.add(link)
            progress.update()
        progress.close()
        head = await db.audit_chain_head(conn)
    report = verifier.finish(Anchor(*head) if head is not None else None, total)
    if args.json:
        _print_json({
            "intact": report.intact,
            "rows": report.rows,
            "head": str(report.head),
            "anchors_checked": report.anchors_checked,
            "breaks_total": report.breaks_total,
            "breaks": [{"seq": b.seq, "id": b.id, "problem": b.problem} for b in report.breaks],
        })  # fmt: skip
    elif report.intact:
        print(f"audit chain intact: {report.rows} rows, head {report.head}"
              + (f", {report.anchors_checked} anchor(s) matched" if anchors else ""))  # fmt: skip
        print("record the head elsewhere (a ticket, a mail); 'certstatus audit verify --anchor <head>' later shows "
              "whether the log was rewritten since")  # fmt: skip
    else:
        print(f"audit chain BROKEN: {report.breaks_total} problem(s) in {report.rows} rows")
        for b in report.breaks:
            print(f"  {b}")
        if report.breaks_total > len(report.breaks):
            print(f"  ... and {report.breaks_total - len(report.breaks)} more (--max-breaks)")
    return EXIT_INTACT if report.intact else EXIT_BROKEN
