"""The ``certstatus`` command line.

Every command reads the one :class:`~responder.config.Config` (defaults, TOML file,
environment, flags), starts the embedded PostgreSQL and Valkey when no URLs are
configured, applies migrations, does its work, and stops what it started. Errors
from the CA core are printed as one clear line, never as a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_core.clock import SystemClock
from ca_core.csr import MAX_CSR_BYTES
from ca_core.errors import CAError, ConfigurationError, StorageError, ValidationError
from ca_core.keystore import key_type_of
from ca_core.lifecycle import CertificateAuthority, certificate_pem
from ca_core.model import CertRecord, CertStatus, KeyType, RevocationReason, parse_time
from ca_core.pki import IssuerSpec, add_issuer, init_pki, renew_ocsp_signer
from ca_core.profiles import END_ENTITY_PROFILES, HolderSubject, subject_text
from ca_core.storage import postgres as db
from ca_core.tokens import Role

from . import server
from .config import SETTINGS, Config, configure_logging
from .runtime import Endpoints, Storage, endpoints, open_storage, vault

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# Output helpers -------------------------------------------------------------------


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else ""


def _record_rows(records: Sequence[CertRecord]) -> str:
    return _table(
        [
            (
                r.issuer,
                r.serial_hex,
                r.profile,
                r.status.value
                + (f" ({r.reason.rfc_name})" if r.reason is not None and r.status is CertStatus.REVOKED else ""),
                r.subject,
                _when(r.not_after),
            )
            for r in records
        ],
        ["issuer", "serial", "profile", "status", "subject", "not after"],
    )


def _show_record(record: CertRecord, *, as_json: bool, pem: bool = False) -> None:
    if as_json:
        out = record.to_json()
        out["pem"] = certificate_pem(record)
        _print_json(out)
        return
    fields = [
        ("issuer", record.issuer),
        ("serial", record.serial_hex),
        ("profile", record.profile),
        ("subject", record.subject),
        ("status", record.status.value),
        ("revoked at", _when(record.revoked_at)),
        ("reason", record.reason.rfc_name if record.reason is not None else ""),
        ("invalidity date", _when(record.invalidity_date)),
        ("not before", _when(record.not_before)),
        ("not after", _when(record.not_after)),
        ("CRL partition", record.crl_partition),
        ("issued at", _when(record.issued_at)),
    ]
    for name, value in fields:
        if value != "":
            print(f"{name:>16}: {value}")
    if pem:
        print(certificate_pem(record), end="")


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (containers run with --user)
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"


def _parse_time(text: str) -> dt.datetime:
    return parse_time(text, "the time")


# Running commands ------------------------------------------------------------------

AsyncCommand = Callable[[Config, argparse.Namespace, Storage, server.Lifetime], Awaitable[int]]


def _with_storage(fn: AsyncCommand) -> Callable[[Config, argparse.Namespace], int]:
    """Start (or find) the storage, open it, run the async command, then stop it all."""

    def command(cfg: Config, args: argparse.Namespace) -> int:
        with endpoints(cfg) as ep:
            args.endpoints = ep

            async def main(lifetime: server.Lifetime) -> int:
                async with open_storage(ep, cfg) as storage:
                    return await fn(cfg, args, storage, lifetime)

            return server.run(main)

    return command


def _authority(cfg: Config, storage: Storage, *, keys: bool) -> CertificateAuthority:
    return CertificateAuthority(storage.pool, vault(cfg) if keys else None, clock=SystemClock(), urls=cfg.urls())


# ca ------------------------------------------------------------------------------


async def cmd_ca_init(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    specs = [
        IssuerSpec(
            name=name,
            key_type=cfg.issuer_key_type,
            ocsp_key_type=cfg.ocsp_key_type,
            crl_partitions=cfg.crl_partitions,
        )
        for name in (args.issuer or ["moica", "gca"])
    ]
    print(f"creating root {args.root_name!r} and issuers {', '.join(s.name for s in specs)} ...", file=sys.stderr)
    summary = await init_pki(
        storage.pool,
        vault(cfg),
        clock=SystemClock(),
        urls=cfg.urls(),
        issuers=specs,
        actor=_actor(args),
        organization=cfg.organization,
        root_name=args.root_name,
        root_key_type=cfg.root_key_type,
        ocsp_validity=dt.timedelta(days=cfg.ocsp_signer_validity_days),
    )
    rows = [("root", args.root_name, subject_text(summary.root.subject), _when(summary.root.not_valid_after_utc))]
    for name, cert in summary.issuers.items():
        rows.append(("issuing", name, subject_text(cert.subject), _when(cert.not_valid_after_utc)))
        signer = summary.ocsp_signers[name]
        rows.append(("ocsp", name, subject_text(signer.subject), _when(signer.not_valid_after_utc)))
    print(_table(rows, ["kind", "issuer", "subject", "not after"]))
    return EXIT_OK


async def cmd_ca_add_issuer(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    spec = IssuerSpec(
        name=args.name,
        common_name=args.common_name,
        key_type=cfg.issuer_key_type,
        ocsp_key_type=cfg.ocsp_key_type,
        crl_partitions=cfg.crl_partitions,
    )
    cert, signer = await add_issuer(
        storage.pool,
        vault(cfg),
        spec,
        clock=SystemClock(),
        urls=cfg.urls(),
        actor=_actor(args),
        organization=cfg.organization,
        ocsp_validity=dt.timedelta(days=cfg.ocsp_signer_validity_days),
    )
    print(
        f"added issuer {args.name}: {subject_text(cert.subject)} (OCSP signer until {_when(signer.not_valid_after_utc)})"
    )
    return EXIT_OK


async def cmd_ca_renew_ocsp(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    async with storage.pool.acquire() as conn:
        issuers = [i.name for i in await db.list_issuers(conn) if i.kind == "issuing"]
    names = args.issuer or issuers
    the_vault = vault(cfg)
    for name in names:
        cert = await renew_ocsp_signer(
            storage.pool,
            the_vault,
            name,
            clock=SystemClock(),
            actor=_actor(args),
            key_type=cfg.ocsp_key_type,
            validity=dt.timedelta(days=cfg.ocsp_signer_validity_days),
        )
        print(f"{name}: new OCSP signer {cert.serial_number:X}, valid until {_when(cert.not_valid_after_utc)}")
    return EXIT_OK


async def cmd_ca_list(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    now = SystemClock().now()
    async with storage.pool.acquire() as conn:
        issuers = await db.list_issuers(conn)
        rows: list[dict[str, Any]] = []
        for issuer in issuers:
            cert = x509.load_der_x509_certificate(issuer.certificate)
            signer = await db.current_ocsp_signer(conn, issuer.id, now)
            rows.append(
                {
                    "name": issuer.name,
                    "kind": issuer.kind,
                    "subject": subject_text(cert.subject),
                    "key_type": key_type_of(cert.public_key()).value,
                    "not_after": cert.not_valid_after_utc.isoformat(),
                    "crl_partitions": issuer.crl_partitions,
                    "ocsp_signer_not_after": signer.not_after.isoformat() if signer else None,
                }
            )
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no CA yet: run 'certstatus ca init'")
    else:
        print(
            _table(
                [
                    (
                        r["name"],
                        r["kind"],
                        r["subject"],
                        r["key_type"],
                        r["not_after"][:10],
                        r["crl_partitions"],
                        (r["ocsp_signer_not_after"] or "-")[:10],
                    )
                    for r in rows
                ],
                ["name", "kind", "subject", "key", "not after", "partitions", "OCSP signer until"],
            )
        )
    return EXIT_OK


async def cmd_ca_export(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .demo import export_ca_files

    written = await export_ca_files(storage.pool, Path(args.directory), now=SystemClock().now())
    for path in written:
        print(path)
    return EXIT_OK


# cert ----------------------------------------------------------------------------


def _read_input(path: str) -> bytes:
    """A CSR from a file or standard input, never more than the CSR size limit (+1 to tell)."""
    limit = MAX_CSR_BYTES + 1
    if path == "-":
        return sys.stdin.buffer.read(limit)
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError as e:
        raise ValidationError(f"cannot read {path}: {e.strerror}") from None


def _create_private_file(path: str) -> int:
    """Open a new 0600 file for a private key before anything is issued for it.

    O_EXCL refuses to overwrite (or to follow a planted symlink), so the key never lands
    in a file others can read, and a bad path fails before a certificate exists.
    """
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise ValidationError(f"{path} already exists; refusing to overwrite it with a private key") from None
    except OSError as e:
        raise ValidationError(f"cannot create {path} for the private key: {e.strerror}") from None


async def cmd_cert_issue(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    subject = None
    if args.name or args.holder_id:
        if not (args.name and args.holder_id):
            raise ValidationError("--name and --holder-id go together")
        subject = HolderSubject(args.name, args.holder_id, args.email)
    days = args.validity_days if args.validity_days is not None else cfg.cert_validity_days
    if not 1 <= days <= 7320:
        raise ValidationError(f"--validity-days {days}: must be between 1 and 7320")
    validity = dt.timedelta(days=days)
    ca = _authority(cfg, storage, keys=True)
    if args.generate_key:
        if subject is None:
            raise ValidationError("--generate-key needs --name and --holder-id")
        if not args.key_out:
            raise ValidationError("--generate-key needs --key-out FILE for the new private key")
        if args.idempotency_key:
            raise ValidationError("--idempotency-key cannot be used with --generate-key: each run makes a new key")
        key_type = KeyType.parse(args.key_type)
        fd = _create_private_file(args.key_out)
        try:
            record, key = await ca.issue_with_generated_key(
                issuer=args.issuer,
                profile=args.profile,
                subject=subject,
                actor=_actor(args),
                key_type=key_type,
                validity=validity,
            )
        except BaseException:
            os.close(fd)
            os.unlink(args.key_out)
            raise
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
    elif args.csr:
        record = await ca.issue(
            issuer=args.issuer,
            profile=args.profile,
            actor=_actor(args),
            csr=_read_input(args.csr),
            subject=subject,
            email=args.email,
            validity=validity,
            idempotency_key=args.idempotency_key,
        )
    else:
        raise ValidationError("give --csr FILE (or -) or --generate-key")
    if args.out:
        Path(args.out).write_text(certificate_pem(record))
    if args.json:
        _show_record(record, as_json=True)
    else:
        _show_record(record, as_json=False, pem=not args.out)
    return EXIT_OK


async def cmd_cert_change(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    ca = _authority(cfg, storage, keys=False)
    if args.op == "revoke":
        record = await ca.revoke(
            args.issuer,
            args.serial,
            actor=_actor(args),
            reason=args.reason,
            invalidity_date=_parse_time(args.invalidity_date) if args.invalidity_date else None,
            idempotency_key=args.idempotency_key,
        )
    elif args.op == "suspend":
        record = await ca.suspend(args.issuer, args.serial, actor=_actor(args), idempotency_key=args.idempotency_key)
    else:
        record = await ca.resume(args.issuer, args.serial, actor=_actor(args), idempotency_key=args.idempotency_key)
    _show_record(record, as_json=args.json)
    return EXIT_OK


async def cmd_cert_show(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    record = await _authority(cfg, storage, keys=False).get(args.issuer, args.serial)
    _show_record(record, as_json=args.json, pem=args.pem)
    return EXIT_OK


async def cmd_cert_list(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    status = CertStatus(args.status) if args.status else None
    records = await _authority(cfg, storage, keys=False).find(
        holder_id=args.holder, issuer=args.issuer, status=status, limit=args.limit
    )
    if args.json:
        _print_json([r.to_json() for r in records])
    else:
        print(_record_rows(records) if records else "no certificates match")
    return EXIT_OK


async def cmd_audit_list(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    entries = await _authority(cfg, storage, keys=False).audit(issuer=args.issuer, serial=args.serial, limit=args.limit)
    if args.json:
        _print_json(
            [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "issuer": e.issuer,
                    "serial": f"{e.serial:X}" if e.serial is not None else None,
                    "before": e.before,
                    "after": e.after,
                    "idempotency_key": e.idempotency_key,
                }
                for e in entries
            ]
        )
    else:
        rows = [
            (
                e.id,
                _when(e.at),
                e.actor,
                e.action,
                e.issuer or "",
                f"{e.serial:X}" if e.serial is not None else "",
                (e.before or {}).get("status", ""),
                (e.after or {}).get("status", ""),
            )
            for e in entries
        ]
        print(
            _table(rows, ["id", "at", "actor", "action", "issuer", "serial", "before", "after"])
            if rows
            else "no audit entries"
        )
    return EXIT_OK


# db, services, serve, demo, config -----------------------------------------------------


def cmd_db_migrate(cfg: Config, args: argparse.Namespace) -> int:
    with endpoints(cfg) as ep:

        async def main(lifetime: server.Lifetime) -> int:
            conn = await db.connect(ep.database_url)
            try:
                applied = await db.migrate(conn)
                version = await db.schema_version(conn)
            finally:
                await conn.close()
            print(f"schema at version {version}" + (f" (applied {applied})" if applied else " (nothing to apply)"))
            return EXIT_OK

        return server.run(main)


def cmd_services(cfg: Config, args: argparse.Namespace) -> int:
    if not cfg.uses_embedded:
        raise ConfigurationError("DATABASE_URL and REDIS_URL are both set: there are no embedded servers to run")
    with endpoints(cfg) as ep:

        async def main(lifetime: server.Lifetime) -> int:
            _print_endpoints(cfg, ep)
            print("Ctrl-C stops them.", flush=True)
            await lifetime.wait()
            return EXIT_OK

        return server.run(main)


def _print_endpoints(cfg: Config, ep: Endpoints) -> None:
    # Only the embedded servers' URLs: a configured URL may carry a password.
    print(f"PostgreSQL: {ep.database_url if cfg.database_url is None else '(DATABASE_URL, not shown)'}")
    print(f"Valkey:     {ep.redis_url if cfg.redis_url is None else '(REDIS_URL, not shown)'}")
    if ep.embedded is not None:
        owned = ", ".join(f"{k}={'started here' if v else 'already running'}" for k, v in ep.embedded.owned.items())
        print(f"embedded servers in {ep.embedded.data_dir} ({owned})", flush=True)


async def cmd_serve(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .public import public_server, serve_workers, tune_gc

    ep = args.endpoints
    if cfg.workers > 1:
        await serve_workers(cfg, ep, lifetime, workers=cfg.workers)
        return EXIT_OK
    async with public_server(cfg, storage, ep.redis_url):
        tune_gc()
        print(f"public responder on http://{cfg.public_host}:{cfg.public_port} (Ctrl-C stops it)", flush=True)
        await lifetime.wait()
    return EXIT_OK


async def cmd_signer(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .signer_cmd import run_signer

    if args.processes < 1 or args.processes > 64:
        raise ConfigurationError("--processes must be between 1 and 64")
    return await run_signer(
        cfg,
        args.endpoints,
        storage,
        lifetime,
        processes=args.processes,
        once=args.once,
        do_refill=args.refill,
        quiet=args.quiet,
    )


def cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(cfg, hold=not args.no_wait)


def cmd_config(cfg: Config, args: argparse.Namespace) -> int:
    shown = cfg.redacted()
    if args.json:
        _print_json(shown)
    else:
        helps = {s.env: s.help for s in SETTINGS}
        for env, value in shown.items():
            print(f"{env} = {value}")
            print(textwrap.indent(textwrap.fill(helps[env], 86), "    # "))
    return EXIT_OK


# The parser ------------------------------------------------------------------------------

_DESCRIPTION = """\
certstatus: OCSP/CRL status service and embedded CA for a national citizen PKI.

With no DATABASE_URL / REDIS_URL set, every command runs a private PostgreSQL and
Valkey from the data directory (default ./.certstatus) and stops them when it ends;
a command started while another one holds them running (e.g. 'certstatus demo')
simply uses them.
"""

_EPILOG = """\
getting started:
  certstatus demo                      set up a demo CA, issue sample certificates, serve
  certstatus ca init                   create a root, issuing CAs and OCSP signers
  certstatus cert issue --issuer moica --profile citizen-signing --csr req.pem
  certstatus cert revoke moica 5C1D... --reason keyCompromise
  certstatus config                    every setting, its variable and what it does

Keys are encrypted at rest with the passphrase in CERTSTATUS_KEY_PASSPHRASE_FILE
(or CERTSTATUS_KEY_PASSPHRASE). The demo creates one in the data directory.
"""


def _common(p: argparse.ArgumentParser, *, json: bool = True, actor: bool = False) -> None:
    if json:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    if actor:
        p.add_argument("--actor", help="name recorded in the audit log (default cli:<your user name>)")
        p.add_argument(
            "--idempotency-key",
            metavar="KEY",
            help="a client-chosen key: repeating the command with it returns the first answer instead of acting twice",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certstatus",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (also CERTSTATUS_CONFIG)")
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="data directory (also CERTSTATUS_DATA_DIR; default ./.certstatus)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, func: Callable[..., Any], parent: Any = sub, **kw: Any) -> argparse.ArgumentParser:
        p = parent.add_parser(
            name,
            help=help,
            description=kw.pop("description", help),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )
        p.set_defaults(func=func)
        return p

    p = add(
        "demo",
        "run a demo CA and responder with sample certificates",
        cmd_demo,
        description=(
            "Start the embedded servers, create a demo CA (root + MOICA and GCA issuers) if there is none,\n"
            "issue sample citizen certificates (good, revoked, suspended), write the PEM files and a cheat\n"
            "sheet into the data directory, and serve the public responder until Ctrl-C."
        ),
    )
    p.add_argument("--public-port", type=int, help="public responder port (default 8080)")
    p.add_argument("--no-wait", action="store_true", help="set everything up, then exit instead of serving")

    p = add(
        "serve",
        "run the public responder: OCSP, CA certificates, health",
        _with_storage(cmd_serve),
        description=(
            "Serve OCSP (GET /ocsp/<base64>, POST /ocsp), /ca/<issuer>.crt, /healthz and /readyz on the\n"
            "public port. Answers come from the responses the signer keeps in Redis ('certstatus signer'\n"
            "must run somewhere); without it every query is answered tryLater. With --workers N, N\n"
            "processes share the port (one per core is the usual choice). The key passphrase is needed\n"
            "for SHA-256 CertIDs, nonces and extended-revoked answers, which are signed live."
        ),
    )
    p.add_argument("--public-port", type=int, help="port (default 8080, or CERTSTATUS_PUBLIC_PORT)")
    p.add_argument("--public-host", help="bind address (default 127.0.0.1)")
    p.add_argument(
        "--workers", type=int, metavar="N", help="processes sharing the port (default 1, or CERTSTATUS_WORKERS)"
    )

    p = add(
        "signer",
        "keep a signed OCSP response for every certificate in Redis",
        _with_storage(cmd_signer),
        description=(
            "Sign an OCSP response for every certificate of every issuer with its delegated OCSP key\n"
            "and keep them in Redis: status changes are re-signed as soon as they commit (outbox), and\n"
            "everything is re-signed before half its validity (CERTSTATUS_OCSP_VALIDITY_HOURS, default\n"
            "96) has passed. Several signers (--processes, or on several machines) share the work\n"
            "without signing anything twice. The first run fills Redis, with a progress line."
        ),
    )
    p.add_argument(
        "--processes", type=int, default=1, metavar="N", help="signer processes (default 1; 2 uses both cores)"
    )
    p.add_argument("--once", action="store_true", help="sign what is due now (e.g. a first fill), then exit")
    p.add_argument("--refill", action="store_true", help="make every response due now: re-sign everything")
    p.add_argument("--quiet", action="store_true", help="no progress line")

    ca = sub.add_parser("ca", help="create and manage the CA hierarchy").add_subparsers(
        dest="ca_command", metavar="ACTION", required=True
    )
    p = add(
        "init",
        "create the root CA, issuing CAs and their OCSP signers",
        _with_storage(cmd_ca_init),
        parent=ca,
        description=(
            "Create a root CA, one or more issuing CAs under it and a delegated OCSP signing certificate\n"
            "for each, in one transaction. Key types come from CERTSTATUS_ROOT_KEY_TYPE,\n"
            "CERTSTATUS_ISSUER_KEY_TYPE and CERTSTATUS_OCSP_KEY_TYPE (rsa2048, rsa3072, rsa4096,\n"
            "ec-p256, ec-p384). The base URL in CERTSTATUS_PUBLIC_BASE_URL is written into every\n"
            "certificate: set it before you issue."
        ),
    )
    p.add_argument(
        "--issuer", action="append", metavar="NAME", help="an issuing CA to create (repeatable; default: moica and gca)"
    )
    p.add_argument("--root-name", default="root", help="short name of the root (default root)")
    key_types = ", ".join(k.value for k in KeyType)
    p.add_argument("--root-key-type", metavar="TYPE", help=f"root key ({key_types}; default rsa4096)")
    p.add_argument("--issuer-key-type", metavar="TYPE", help="issuing CA keys (default rsa3072)")
    p.add_argument("--ocsp-key-type", metavar="TYPE", help="OCSP signer keys (default ec-p256)")
    p.add_argument("--partitions", type=int, metavar="N", help="CRL partitions per issuer (default 16)")
    p.add_argument("--actor", help="name recorded in the audit log")
    p = add("add-issuer", "add an issuing CA under the existing root", _with_storage(cmd_ca_add_issuer), parent=ca)
    p.add_argument("name", help="short name used in URLs, e.g. moeaca")
    p.add_argument("--common-name", help="CN of the new CA")
    p.add_argument("--issuer-key-type", metavar="TYPE", help=f"the CA's key ({key_types}; default rsa3072)")
    p.add_argument("--ocsp-key-type", metavar="TYPE", help="its OCSP signer's key (default ec-p256)")
    p.add_argument("--partitions", type=int, metavar="N", help="CRL partitions (default 16)")
    p.add_argument("--actor", help="name recorded in the audit log")
    p = add("renew-ocsp", "issue fresh OCSP signing certificates", _with_storage(cmd_ca_renew_ocsp), parent=ca)
    p.add_argument("--issuer", action="append", metavar="NAME", help="only this issuer (repeatable; default: all)")
    p.add_argument("--ocsp-key-type", metavar="TYPE", help=f"key of the new signers ({key_types}; default ec-p256)")
    p.add_argument("--actor", help="name recorded in the audit log")
    p = add("list", "list the CAs and their OCSP signers", _with_storage(cmd_ca_list), parent=ca)
    _common(p)
    p = add("export", "write the CA and OCSP signer certificates as PEM files", _with_storage(cmd_ca_export), parent=ca)
    p.add_argument("directory", help="where to write them (created if missing)")

    cert = sub.add_parser("cert", help="issue, revoke, suspend, resume and look up certificates").add_subparsers(
        dest="cert_command", metavar="ACTION", required=True
    )
    p = add(
        "issue",
        "issue a citizen certificate from a CSR (or a generated key)",
        _with_storage(cmd_cert_issue),
        parent=cert,
        description=(
            "Issue a certificate from a PKCS#10 CSR. The CSR's signature (proof of possession), key\n"
            "(RSA >= 2048 bits, ECDSA P-256/P-384) and subject (C=TW, CN, serialNumber of 16 digits)\n"
            "are checked. --name/--holder-id override the CSR subject. --generate-key makes the key\n"
            "here instead (for demos and tests) and writes it to --key-out."
        ),
    )
    p.add_argument("--issuer", required=True, help="issuing CA, e.g. moica")
    p.add_argument("--profile", required=True, choices=sorted(END_ENTITY_PROFILES), help="certificate profile")
    p.add_argument("--csr", metavar="FILE", help="PEM or DER CSR ('-' reads standard input)")
    p.add_argument("--generate-key", action="store_true", help="generate the key pair here")
    p.add_argument(
        "--key-type",
        default="rsa2048",
        help="with --generate-key: rsa2048 (default), rsa3072, rsa4096, ec-p256, ec-p384",
    )
    p.add_argument("--key-out", metavar="FILE", help="with --generate-key: where to write the private key (mode 0600)")
    p.add_argument("--name", help="holder name (CN)")
    p.add_argument("--holder-id", help="16-digit holder number (subject serialNumber)")
    p.add_argument("--email", help="e-mail address for the rfc822Name SAN")
    p.add_argument("--validity-days", type=int, help="validity (default 1826, i.e. 5 years)")
    p.add_argument("--out", metavar="FILE", help="write the certificate PEM here instead of printing it")
    _common(p, actor=True)

    reasons = ", ".join(r.rfc_name for r in RevocationReason)
    for op, text in (
        ("revoke", "revoke a certificate for good"),
        ("suspend", "suspend a certificate (certificateHold) until resumed"),
        ("resume", "lift a suspension"),
    ):
        p = add(op, text, _with_storage(cmd_cert_change), parent=cert)
        p.set_defaults(op=op)
        p.add_argument("issuer", help="issuing CA, e.g. moica")
        p.add_argument("serial", help="serial number in hex")
        if op == "revoke":
            p.add_argument("--reason", help=f"RFC 5280 reason, name or code (default unspecified); one of {reasons}")
            p.add_argument(
                "--invalidity-date",
                metavar="TIME",
                help="ISO 8601 time the key became unsafe, e.g. 2026-05-01T08:00:00Z",
            )
        _common(p, actor=True)

    p = add("show", "show one certificate", _with_storage(cmd_cert_show), parent=cert)
    p.add_argument("issuer")
    p.add_argument("serial")
    p.add_argument("--pem", action="store_true", help="also print the certificate PEM")
    _common(p)
    p = add("list", "find certificates by holder, issuer or status", _with_storage(cmd_cert_list), parent=cert)
    p.add_argument("--holder", metavar="ID", help="16-digit holder number")
    p.add_argument("--issuer")
    p.add_argument("--status", choices=[s.value for s in CertStatus])
    p.add_argument("--limit", type=int, default=100)
    _common(p)

    from .crl_cmd import cmd_crl_fetch, cmd_crl_publish, cmd_crl_show

    crl = sub.add_parser("crl", help="publish, inspect and fetch CRLs").add_subparsers(
        dest="crl_command", metavar="ACTION", required=True
    )
    p = add(
        "publish",
        "issue CRLs now (the signer also does it on schedule)",
        _with_storage(cmd_crl_publish),
        parent=crl,
        description=(
            "Issue a new base for each issuer: the full CRL and every partition CRL, from one consistent\n"
            "snapshot, with a new CRL number, plus a delta bridging the previous base. With --delta, issue\n"
            "a delta CRL instead (every change since the base). Needs the key passphrase: CRLs are signed\n"
            "with the CA key. 'certstatus signer' publishes on its own every CERTSTATUS_CRL_INTERVAL_HOURS\n"
            "(full) and within CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS of a change (delta); use this after a\n"
            "bulk load, or to publish before a planned outage."
        ),
    )
    p.add_argument("--issuer", action="append", metavar="NAME", help="only this issuer (repeatable; default: all)")
    p.add_argument("--delta", action="store_true", help="a delta CRL instead of a new base")
    _common(p)
    p = add(
        "show",
        "show the CRLs being served and the publication log",
        _with_storage(cmd_crl_show),
        parent=crl,
        description=(
            "For each issuer and scope (full, delta, p<k>, p<k>-delta): the CRL number, its base (deltas),\n"
            "thisUpdate, nextUpdate, entries and size, as the responders serve it from Redis; then the\n"
            "publication log kept in PostgreSQL. --entries lists the revoked serials too."
        ),
    )
    p.add_argument("--issuer", metavar="NAME")
    p.add_argument("--partition", type=int, metavar="P")
    p.add_argument("--delta", action="store_true", help="only delta CRLs")
    p.add_argument("--entries", action="store_true", help="list the entries (up to --limit per CRL)")
    p.add_argument("--limit", type=int, default=50, help="entries shown per CRL with --entries (default 50)")
    p.add_argument("--history", type=int, default=10, metavar="N", help="publication log rows per issuer (default 10)")
    _common(p)
    p = add(
        "fetch",
        "download a CRL over HTTP, verify it and save it",
        cmd_crl_fetch,
        parent=crl,
        description=(
            "Download a CRL the way a relying party does: from a URL (as written in certificates) or by\n"
            "issuer name from CERTSTATUS_PUBLIC_BASE_URL. Its signature is checked against the issuer's\n"
            "certificate (--issuer-cert, or else /ca/<issuer>.crt from the same server, which proves\n"
            "integrity but not origin) and its nextUpdate against the clock; the exit status is 1 if\n"
            "either fails. Needs no database: run it anywhere."
        ),
    )
    p.add_argument("target", help="issuer name (e.g. moica) or a CRL URL")
    p.add_argument("--partition", type=int, metavar="P", help="the partition CRL (with an issuer name)")
    p.add_argument("--delta", action="store_true", help="the delta CRL (with an issuer name)")
    p.add_argument("--out", metavar="FILE", help="save the CRL here (DER, or PEM with --pem)")
    p.add_argument("--pem", action="store_true", help="save as PEM")
    p.add_argument(
        "--issuer-cert",
        metavar="FILE",
        help="the issuing CA's certificate you trust (PEM or DER); default: fetched from the same server",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)")
    _common(p)

    from .admin_cmd import cmd_admin_serve, cmd_token_create, cmd_token_list, cmd_token_revoke

    admin = sub.add_parser("admin", help="the admin API: serve it, manage its tokens, use it").add_subparsers(
        dest="admin_command", metavar="ACTION", required=True
    )
    add(
        "serve",
        "run the admin API on the admin port (never the public port)",
        _with_storage(cmd_admin_serve),
        parent=admin,
        description=(
            "Serve the admin API (JSON, /v1/...) on CERTSTATUS_ADMIN_HOST:CERTSTATUS_ADMIN_PORT (default\n"
            "127.0.0.1:8081). Every request needs a credential: 'Authorization: Bearer <token>' from\n"
            "'certstatus admin token create', or, over TLS, a client certificate from 'certstatus admin cert\n"
            "create'. Roles: operator (everything), registration-officer (read, issue, suspend, resume),\n"
            "auditor (read). With CERTSTATUS_ADMIN_TLS_CERT and CERTSTATUS_ADMIN_TLS_KEY set it serves only\n"
            "HTTPS (the key may be encrypted under the key passphrase). Errors are RFC 9457\n"
            "application/problem+json; the OpenAPI document is at /v1/openapi.json. Keep the port off\n"
            "public networks."
        ),
    )
    tokens = admin.add_parser("token", help="create, list and revoke admin API tokens").add_subparsers(
        dest="token_command", metavar="ACTION", required=True
    )
    p = add("create", "create a token (shown once; only its hash is stored)", _with_storage(cmd_token_create),
            parent=tokens)  # fmt: skip
    p.add_argument("name", help="who or what holds it, e.g. ops-alice or ra-taipei-01")
    p.add_argument("--role", required=True, choices=[r.value for r in Role], help="what it may do")
    p.add_argument("--actor", help="name recorded in the audit log (default cli:<your user name>)")
    _common(p)
    p = add("list", "list tokens (never their secrets)", _with_storage(cmd_token_list), parent=tokens)
    _common(p)
    p = add("revoke", "revoke a token at once", _with_storage(cmd_token_revoke), parent=tokens)
    p.add_argument("name")
    p.add_argument("--actor", help="name recorded in the audit log (default cli:<your user name>)")
    from . import admin_cert_cmd

    certs = admin.add_parser("cert", help="TLS client certificates for the admin API").add_subparsers(
        dest="cert_command", metavar="ACTION", required=True
    )
    p = add(
        "create",
        "issue and register an admin client certificate",
        _with_storage(admin_cert_cmd.cmd_cert_create),
        parent=certs,
        description=(
            "Issue a TLS client certificate (profile admin-client: clientAuth) from an issuing CA of this\n"
            "CA, and register it as an admin API credential with a role. Writes NAME.crt (certificate and\n"
            f"issuing CA) and, unless --csr is given, NAME.key, a new key encrypted under {admin_cert_cmd.KEY_PASSPHRASE_ENV}\n"
            "(asked on a terminal if unset). Files are never overwritten. The certificate opens the API\n"
            "(served with CERTSTATUS_ADMIN_TLS_CERT/KEY) only while it is registered and its status is good:\n"
            "'admin cert revoke', or revoking or suspending it like any certificate, shuts it out at once.\n"
            "Needs the key passphrase (the CA signs). Audited as credential.certificate.create."
        ),
    )
    p.add_argument("name", help="the credential's name, recorded as cert:<name> in the audit log")
    p.add_argument("--role", required=True, choices=[r.value for r in Role], help="what it may do")
    p.add_argument("--holder-name", help="the person's name (CN)")
    p.add_argument("--holder-id", help="the person's 16-digit holder number (serialNumber)")
    p.add_argument("--email", help="optional rfc822Name")
    p.add_argument("--csr", metavar="FILE", help="issue for this PKCS#10 CSR (the key stays where it was made)")
    p.add_argument("--key-type", default="ec-p256", help="key generated without --csr (default ec-p256)")
    p.add_argument("--issuer", help="issuing CA (default: the first one)")
    p.add_argument("--out-dir", default=".", metavar="DIR", help="where NAME.crt and NAME.key go (default .)")
    p.add_argument("--actor", help="name recorded in the audit log (default cli:<your user name>)")
    _common(p)
    p = add("list", "list admin client certificates and their state", _with_storage(admin_cert_cmd.cmd_cert_list),
            parent=certs)  # fmt: skip
    _common(p)
    p = add(
        "revoke",
        "withdraw a client certificate and revoke it",
        _with_storage(admin_cert_cmd.cmd_cert_revoke),
        parent=certs,
        description="Withdraw the registration (audited) and revoke the certificate (so CRLs and OCSP list it).",
    )
    p.add_argument("name")
    p.add_argument("--reason", default="cessationOfOperation", help="revocation reason (default cessationOfOperation)")
    p.add_argument("--actor", help="name recorded in the audit log (default cli:<your user name>)")
    _admin_client_commands(admin, add)

    audit = sub.add_parser("audit", help="read the audit log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True
    )
    p = add("list", "list audit entries, oldest first", _with_storage(cmd_audit_list), parent=audit)
    p.add_argument("--issuer")
    p.add_argument("--serial")
    p.add_argument("--limit", type=int, default=100)
    _common(p)
    from .audit_cmd import anchor_arg, cmd_audit_verify

    p = add(
        "verify",
        "check the audit log's hash chain; exit status 3 if it is broken",
        _with_storage(cmd_audit_verify),
        parent=audit,
        description=(
            "Every audit row carries the SHA-256 of the row before it, set by the database as the row\n"
            "is written. This recomputes the whole chain, independently of the database, and names each\n"
            "row that was edited, deleted or inserted behind the application's back, and rows missing at\n"
            "the end. It prints the chain's head as SEQ:HASH: keep that elsewhere. Someone who can write\n"
            "to the database could recompute every hash after an edit; --anchor with a head recorded\n"
            "earlier catches that too. Exit status: 0 intact, 3 broken, 1 could not check (database), 2 usage."
        ),
    )
    p.add_argument("--anchor", action="append", type=anchor_arg, metavar="SEQ:HASH",
                   help="a head printed by an earlier run; that row must still have that hash (repeatable)")  # fmt: skip
    p.add_argument(
        "--max-breaks", type=int, default=100, metavar="N", help="breaks listed (all are counted; default 100)"
    )
    _common(p)

    from .bench_cmd import DESCRIPTION as BENCH_LOAD_DESCRIPTION
    from .bench_cmd import add_load_arguments, cmd_bench_load

    bench = sub.add_parser("bench", help="fill the system for load tests").add_subparsers(
        dest="bench_command", metavar="ACTION", required=True
    )
    p = add(
        "load",
        "load N certificates, sign their OCSP responses, write the ground truth",
        _with_storage(cmd_bench_load),
        parent=bench,
        description=BENCH_LOAD_DESCRIPTION,
    )
    add_load_arguments(p)
    _common(p)

    dbp = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", metavar="ACTION", required=True
    )
    add("migrate", "apply pending schema migrations (every command also does this)", cmd_db_migrate, parent=dbp)

    add(
        "services",
        "run only the embedded PostgreSQL and Valkey, printing their URLs",
        cmd_services,
        description="Run the embedded servers in the foreground (e.g. to point psql or valkey-cli at them).",
    )
    p = add("config", "show every setting, where it comes from and what it does", cmd_config)
    _common(p)
    return parser


def _admin_client_commands(admin: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """``admin issue|revoke|suspend|resume|show|list|audit|revoke-batch``: the admin API over HTTP."""
    from ca_core.profiles import CITIZEN_PROFILES

    from .admin_cmd import (
        CLIENT_EPILOG,
        add_client_arguments,
        cmd_admin_audit,
        cmd_admin_change,
        cmd_admin_issue,
        cmd_admin_list,
        cmd_admin_revoke_batch,
        cmd_admin_show,
        remote,
    )

    record_json = "print the certificate record the API returns, as JSON"
    idempotency = (
        "a client-chosen key (printable ASCII): repeating the command with it returns the first answer "
        "instead of acting twice"
    )

    def client(name: str, help: str, fn: Any, description: str, json_help: str) -> argparse.ArgumentParser:
        p = add(name, help, remote(fn), parent=admin, description=description, epilog=CLIENT_EPILOG)
        add_client_arguments(p, json_help=json_help)
        return p

    p = client(
        "issue",
        "issue a certificate from a CSR, through the admin API",
        cmd_admin_issue,
        "Issue a certificate through the admin API from a PKCS#10 CSR (PEM or DER). The server checks\n"
        "it as 'certstatus cert issue' does: its signature (proof of possession), its key and its subject\n"
        "(C=TW, CN, serialNumber of 16 digits). Needs an operator or registration-officer token. Prints\n"
        "the certificate as name: value lines, then its PEM unless --out names a file for it.",
        "print the API's answer instead: the certificate record with certificate_pem",
    )
    p.add_argument("--issuer", required=True, help="issuing CA, e.g. moica")
    p.add_argument("--profile", required=True, help=f"certificate profile ({', '.join(sorted(CITIZEN_PROFILES))})")
    p.add_argument("--csr", required=True, metavar="FILE", help="PEM or DER CSR ('-' reads standard input)")
    p.add_argument("--email", help="e-mail address for the rfc822Name SAN")
    p.add_argument("--validity-days", type=int, metavar="N", help="validity (default: the server's, 5 years)")
    p.add_argument("--idempotency-key", metavar="KEY", help=idempotency)
    p.add_argument("--out", metavar="FILE", help="write the certificate PEM here instead of printing it")

    reasons = ", ".join(r.rfc_name for r in RevocationReason)
    for op, text, who in (
        ("revoke", "revoke a certificate for good, through the admin API", "an operator token"),
        ("suspend", "suspend a certificate (certificateHold), through the admin API",
         "an operator or registration-officer token"),
        ("resume", "lift a suspension, through the admin API", "an operator or registration-officer token"),
    ):  # fmt: skip
        p = client(
            op,
            text,
            cmd_admin_change,
            f"{text[0].upper()}{text[1:]}. Needs {who}. Prints the certificate as it is now, as\n"
            "name: value lines. A change the certificate's state does not allow (e.g. resuming a revoked\n"
            "certificate) is refused with 409.",
            record_json,
        )
        p.set_defaults(op=op)
        p.add_argument("issuer", help="issuing CA, e.g. moica")
        p.add_argument("serial", help="serial number in hex (colons and 0x allowed)")
        if op == "revoke":
            p.add_argument("--reason", help=f"RFC 5280 reason, name or code (default unspecified); one of {reasons}")
            p.add_argument(
                "--invalidity-date",
                metavar="ISO",
                help="ISO 8601 time the key became unsafe, e.g. 2026-05-01T08:00:00Z",
            )
        p.add_argument("--idempotency-key", metavar="KEY", help=idempotency)

    p = client(
        "show",
        "show one certificate, through the admin API",
        cmd_admin_show,
        "Show one certificate's record (any token may read) as name: value lines.",
        record_json,
    )
    p.add_argument("issuer", help="issuing CA, e.g. moica")
    p.add_argument("serial", help="serial number in hex")

    p = client(
        "list",
        "find certificates by holder, issuer or status, through the admin API",
        cmd_admin_list,
        "Find certificates by holder, issuer or status, in (issuer, serial) order: one page of --limit\n"
        "certificates, or with --all every page (following the API's cursors). When more match than\n"
        "were printed, a line on standard error says so.",
        'print the API\'s answer: {"certificates": [...], "next_cursor": ...}; with --all every page\'s '
        "certificates in one list and next_cursor null",
    )
    p.add_argument("--holder", metavar="ID", help="16-digit holder number")
    p.add_argument("--issuer", metavar="NAME")
    p.add_argument("--status", choices=[s.value for s in CertStatus])
    p.add_argument(
        "--limit", type=int, metavar="N", help="certificates per page, 1-1000 (default 100; 1000 with --all)"
    )
    p.add_argument("--all", action="store_true", help="fetch every page")

    p = client(
        "audit",
        "read the audit log, through the admin API",
        cmd_admin_audit,
        "List audit log entries, oldest first: who (the token's name) did what to which certificate,\n"
        "with the status before and after. One page of --limit entries, or with --all every page.",
        'print the API\'s answer: {"entries": [...], "next_cursor": ...}, each entry with its before and '
        "after records; with --all every page's entries in one list and next_cursor null",
    )
    p.add_argument("--actor", metavar="A", help="e.g. token:ops-alice")
    p.add_argument("--issuer", metavar="I", help="one issuer's entries")
    p.add_argument("--serial", metavar="S", help="one certificate's entries (with --issuer)")
    p.add_argument("--since", metavar="T", help="entries at or after this ISO 8601 time, e.g. 2026-05-01T00:00:00Z")
    p.add_argument("--until", metavar="T", help="entries before this ISO 8601 time")
    p.add_argument("--limit", type=int, metavar="N", help="entries per page, 1-1000 (default 100; 1000 with --all)")
    p.add_argument("--all", action="store_true", help="fetch every page")

    p = client(
        "revoke-batch",
        "revoke many certificates in one request, through the admin API",
        cmd_admin_revoke_batch,
        "Revoke up to 10,000 certificates in one request (operator tokens only), e.g. every card of a\n"
        "stolen batch. FILE ('-' reads standard input) has one 'ISSUER SERIAL [REASON]' a line (spaces,\n"
        "tabs or commas between; blank lines and lines starting with # are skipped), or is JSON: a list\n"
        'of {"issuer", "serial", "reason"?, "invalidity_date"?}, the API\'s body {"items": [...],\n'
        "\"reason\"?}, or the output of 'admin list --json' (revoking the citizens' certificates it\n"
        "found, never an OCSP signer or admin client certificate). Each certificate is revoked on its\n"
        "own: prints how many were revoked and a table of those that failed, with the file's line (or\n"
        "the item's index for JSON) and why. With --idempotency-key, repeating the command replays\n"
        "what was done and retries what failed. The exit status is 1 if any failed.",
        "print the API's answer: revoked, failed, and a result per item (the certificate or a problem)",
    )
    p.add_argument("file", metavar="FILE", help="the certificates to revoke ('-': standard input)")
    p.add_argument("--reason", help=f"reason for the items that name none (default unspecified); one of {reasons}")
    p.add_argument("--idempotency-key", metavar="KEY", help=idempotency)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags that stand for settings; they win over the file and the environment."""
    out: dict[str, Any] = {}
    if args.data_dir is not None:
        out["data_dir"] = args.data_dir
    if getattr(args, "partitions", None) is not None:
        out["crl_partitions"] = args.partitions
    for name in ("workers", "public_port", "public_host", "root_key_type", "issuer_key_type", "ocsp_key_type"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    server.install_interrupt_handlers()
    try:
        cfg = Config.load(toml_path=args.config, overrides=_overrides(args))
        configure_logging(cfg)
        return int(args.func(cfg, args))
    except ConfigurationError as e:
        print(f"certstatus: configuration error: {e.message}", file=sys.stderr)
        return EXIT_USAGE
    except StorageError as e:
        print(f"certstatus: storage error: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except CAError as e:
        print(f"certstatus: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (e.g. `certstatus config | head`): not an error worth a word.
        sys.stderr.close()
        return EXIT_OK
    except OSError as e:
        print(f"certstatus: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except server.Interrupted as e:
        return 128 + e.signum
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
