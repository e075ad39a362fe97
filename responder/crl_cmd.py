"""``certstatus crl publish|show|fetch``: CRLs for operators.

- ``publish`` issues CRLs now (a new base: full + partition CRLs, or ``--delta``), e.g.
  after a bulk load or before a planned outage; the running signer does it on schedule.
- ``show`` lists what Redis serves per issuer and scope (number, dates, entries, size),
  the publication log from PostgreSQL, and with ``--entries`` the entries themselves.
- ``fetch`` downloads a CRL as a relying party would (HTTP from the public responder),
  checks its signature against the issuer's certificate from ``/ca/<issuer>.crt`` and its
  freshness, and saves it. It needs no database.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import re
import sys
import urllib.error
import urllib.request
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_core.clock import SystemClock
from ca_core.errors import CAError, ConfigurationError, UnknownIssuer
from ca_core.storage import crls as store
from ca_core.storage import postgres as db

from . import server
from .config import Config
from .runtime import Storage

__all__ = ["cmd_crl_fetch", "cmd_crl_publish", "cmd_crl_show"]

EXIT_OK, EXIT_REFUSED = 0, 1


def _iso(t: int | dt.datetime) -> str:
    if isinstance(t, dt.datetime):
        return t.strftime("%Y-%m-%d %H:%M:%SZ")
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def cmd_crl_publish(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _print_json, _table
    from .signer_cmd import make_publisher

    publisher = make_publisher(cfg, storage)
    await publisher.load_issuers()
    names = args.issuer or [i.row.name for i in publisher.issuers.values()]
    results = []
    for name in names:
        result = await (publisher.publish_delta(name) if args.delta else publisher.publish_base(name))
        if result is None:
            print(
                f"{name}: another publisher is publishing this issuer's CRLs right now; nothing done", file=sys.stderr
            )
            continue
        results.append(result)
    if args.json:
        _print_json([dataclasses.asdict(r) for r in results])
    else:
        rows = [[r.issuer, r.kind, r.number, r.base if r.base is not None else "", r.entries, r.length, r.scopes,
                 f"{r.seconds:.2f}"] for r in results]  # fmt: skip
        print(_table(rows, ["issuer", "kind", "number", "base", "entries", "bytes (issuer-wide)", "CRLs", "seconds"]))
    return EXIT_OK if len(results) == len(names) else EXIT_REFUSED


async def cmd_crl_show(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _print_json, _table

    async with storage.pool.acquire() as conn:
        issuers = await db.list_issuers(conn)
        if args.issuer:
            issuers = [i for i in issuers if i.name == args.issuer]
            if not issuers:
                raise UnknownIssuer(f"no issuer named {args.issuer!r}")
        log = {i.id: await db.list_crl_publications(conn, i.id, args.history) for i in issuers}
    out: list[dict[str, Any]] = []
    for issuer in issuers:
        partitions = 0 if issuer.kind == "root" else issuer.crl_partitions
        if args.partition is not None:
            if not 0 <= args.partition < partitions:
                raise CAError(f"issuer {issuer.name} has no partition {args.partition}")
            scopes = [store.scope_name(args.partition, delta=False), store.scope_name(args.partition, delta=True)]
        else:
            scopes = ["full", "delta"] + [
                store.scope_name(p, delta=d) for p in range(partitions) for d in (False, True)
            ]
        if args.delta:
            scopes = [s for s in scopes if s.endswith("delta")]
        raw = await storage.redis.mget([store.manifest_key(issuer.id, s) for s in scopes])
        for scope, value in zip(scopes, raw, strict=True):
            m = store.Manifest.from_json(_raw(value)) if value is not None else None
            entry: dict[str, Any] = {"issuer": issuer.name, "scope": scope, "published": m is not None}
            if m is not None:
                entry.update(number=m.number, base=m.base, this_update=_iso(m.this_update),
                             next_update=_iso(m.next_update), entries=m.entries, bytes=m.length,
                             url=_url(cfg, issuer.name, scope))  # fmt: skip
                if args.entries:
                    chunks = [await storage.redis.get(store.chunk_key(issuer.id, scope, m.number, i))
                              for i in range(m.chunks)]  # fmt: skip
                    der = b"".join(_raw(c) for c in chunks if c is not None)
                    entry["revoked"] = _entries(der, args.limit)
            out.append(entry)
    if args.json:
        _print_json({"served": out, "log": [
            {**dataclasses.asdict(p), "issuer": next(i.name for i in issuers if i.id == p.issuer_id)}
            for ps in log.values() for p in ps
        ]})  # fmt: skip
        return EXIT_OK
    rows = [[e["issuer"], e["scope"], e.get("number", "not published"), e.get("base") or "", e.get("this_update", ""),
             e.get("next_update", ""), e.get("entries", ""), e.get("bytes", "")] for e in out]  # fmt: skip
    print(_table(rows, ["issuer", "scope", "number", "base", "thisUpdate", "nextUpdate", "entries", "bytes"]))
    for e in out:
        for r in e.get("revoked", []):
            print(f"  {e['issuer']}/{e['scope']}  {r['serial']}  {r['revoked_at']}  {r['reason'] or ''}")
    print("\npublication log (newest first):")
    rows = [[next(i.name for i in issuers if i.id == p.issuer_id), p.number, p.kind, p.base_number or "",
             _iso(p.this_update), _iso(p.next_update), p.entries, p.bytes, p.outbox_mark]
            for ps in log.values() for p in ps]  # fmt: skip
    print(_table(rows, ["issuer", "number", "kind", "base", "thisUpdate", "nextUpdate", "entries", "bytes", "outbox"]))
    return EXIT_OK


def _raw(value: bytes | str) -> bytes:
    # The storage client returns bytes (no decode_responses); the type says either.
    return value.encode("latin-1") if isinstance(value, str) else value


def _url(cfg: Config, issuer: str, scope: str) -> str:
    urls = cfg.urls()
    if scope == "full":
        return urls.full_crl(issuer)
    if scope == "delta":
        return urls.delta_crl(issuer)
    p = int(scope[1:].removesuffix("-delta"))
    return urls.delta_crl(issuer, p) if scope.endswith("-delta") else urls.partition_crl(issuer, p)


def _entries(der: bytes, limit: int) -> list[dict[str, Any]]:
    crl = x509.load_der_x509_crl(der)
    out = []
    for i, entry in enumerate(crl):
        if i >= limit:
            break
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except x509.ExtensionNotFound:
            reason = None
        out.append(
            {"serial": f"{entry.serial_number:X}", "revoked_at": _iso(entry.revocation_date_utc), "reason": reason}
        )
    return out


_CRL_PATH = re.compile(r"/crl/([a-z][a-z0-9-]{0,30})(?:\.crl|/)")


def _get(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) checked below
            return response.read()
    except urllib.error.HTTPError as e:
        body = e.read(500).decode("utf-8", "replace").strip()
        raise CAError(f"GET {url}: HTTP {e.code} {body}") from None
    except (urllib.error.URLError, OSError) as e:
        raise CAError(f"GET {url}: {getattr(e, 'reason', e)}") from None


def cmd_crl_fetch(cfg: Config, args: argparse.Namespace) -> int:
    """Download, verify and save a CRL (no database needed)."""
    from .cli import _print_json

    target: str = args.target
    urls = cfg.urls()
    if target.startswith(("http://", "https://")):
        url = target
        match = _CRL_PATH.search(url)
        if match is None:
            raise ConfigurationError(
                f"{url} is not a certstatus CRL URL (/crl/<issuer>...); give the issuer name instead"
            )
        issuer = match.group(1)
        base = url[: match.start()]
    else:
        issuer = target
        if args.partition is not None:
            url = urls.delta_crl(issuer, args.partition) if args.delta else urls.partition_crl(issuer, args.partition)
        else:
            url = urls.delta_crl(issuer) if args.delta else urls.full_crl(issuer)
        base = urls.base
    der = _get(url, args.timeout)
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError:
        raise CAError(f"{url} did not return a DER CRL ({len(der)} bytes)") from None
    if args.issuer_cert:
        # A certificate the operator trusts (e.g. from 'certstatus ca export'): the check
        # then proves the CRL comes from that CA.
        with open(args.issuer_cert, "rb") as f:
            data = f.read()
        try:
            ca = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                  else x509.load_der_x509_certificate(data))  # fmt: skip
        except ValueError:
            raise ConfigurationError(f"{args.issuer_cert} is not a PEM or DER certificate") from None
        source = args.issuer_cert
    else:
        # Fetched from the same server: proves the CRL is intact and matches the CA
        # certificate published next to it, not who published both.
        ca = x509.load_der_x509_certificate(_get(f"{base}/ca/{issuer}.crt", args.timeout))
        source = f"{base}/ca/{issuer}.crt (same server; pass --issuer-cert for a trusted copy)"
    signature_ok = crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    now = SystemClock().now()
    next_update = crl.next_update_utc
    fresh = next_update is not None and now < next_update
    number = _ext(crl, x509.CRLNumber)
    delta_of = _ext(crl, x509.DeltaCRLIndicator)
    info = {
        "url": url,
        "issuer": issuer,
        "number": number.crl_number if number else None,
        "delta_of": delta_of.crl_number if delta_of else None,
        "this_update": _iso(crl.last_update_utc),
        "next_update": _iso(next_update) if next_update else None,
        "entries": len(crl),
        "bytes": len(der),
        "signature": "valid" if signature_ok else "INVALID",
        "checked_with": source,
        "fresh": fresh,
    }
    if args.out:
        data = crl.public_bytes(serialization.Encoding.PEM) if args.pem else der
        with open(args.out, "wb") as f:
            f.write(data)
        info["saved_to"] = args.out
    if args.json:
        _print_json(info)
    else:
        for k, v in info.items():
            print(f"{k + ':':13} {v}")
    if not signature_ok:
        print("the CRL's signature does not verify with the issuer's certificate", file=sys.stderr)
        return EXIT_REFUSED
    if not fresh:
        print("the CRL is past its nextUpdate: do not rely on it", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def _ext(crl: x509.CertificateRevocationList, cls: Any) -> Any:
    try:
        return crl.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
