"""``certstatus admin cert create|list|revoke``: TLS client certificates as admin credentials.

A credential is a certificate of the ``admin-client`` profile (clientAuth), issued by one of
this CA's issuing CAs like any other certificate, plus a registration naming it and its role.
The admin API accepts the certificate only while both hold: revoking the certificate (here,
or through the CA by any means) or withdrawing the registration shuts its holder out at the
next request. Creation and withdrawal are written to the audit log.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_core.clock import SystemClock
from ca_core.errors import ConfigurationError, IllegalTransition, NotFound, ValidationError
from ca_core.lifecycle import certificate_pem
from ca_core.model import CertRecord, CertStatus, KeyType
from ca_core.pkcs8 import encrypt_private_key
from ca_core.profiles import ADMIN_CLIENT, HolderSubject
from ca_core.storage import postgres as db
from ca_core.tokens import Role, check_name

from . import server
from .config import Config
from .runtime import Storage

__all__ = ["KEY_PASSPHRASE_ENV", "cmd_cert_create", "cmd_cert_list", "cmd_cert_revoke"]

EXIT_OK = 0
#: Where ``admin cert create`` reads the passphrase that encrypts a generated client key.
KEY_PASSPHRASE_ENV = "CERTSTATUS_ADMIN_KEY_PASSPHRASE"
MIN_PASSPHRASE = 12


def _key_passphrase() -> bytes:
    value = os.environ.get(KEY_PASSPHRASE_ENV)
    if value is None and sys.stdin.isatty():
        value = getpass.getpass("passphrase for the new client key: ")
        if getpass.getpass("again: ") != value:
            raise ValidationError("the two passphrases differ")
    if value is None:
        raise ConfigurationError(f"set {KEY_PASSPHRASE_ENV}: the generated client key is written encrypted under it")
    if len(value) < MIN_PASSPHRASE:
        raise ConfigurationError(f"{KEY_PASSPHRASE_ENV} must be at least {MIN_PASSPHRASE} characters")
    return value.encode()


def _new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; never overwrite (a credential is not replaced by accident)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


async def cmd_cert_create(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _actor, _authority, _print_json

    name = check_name(args.name)
    role = Role.parse(args.role)
    out_dir = Path(args.out_dir)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    for path in (cert_path, key_path if args.csr is None else None):
        if path is not None and path.exists():
            raise ValidationError(f"{path} exists already; a credential's files are never overwritten")
    if not out_dir.is_dir():
        raise ValidationError(f"--out-dir {out_dir} is not a directory")
    actor = _actor(args)
    async with storage.pool.acquire() as conn:
        if await db.get_client_cert(conn, name) is not None:
            raise ValidationError(f"a client certificate credential named {name!r} exists already")
        issuers = [i for i in await db.list_issuers(conn) if i.kind == "issuing"]
    issuer = args.issuer or (issuers[0].name if issuers else None)
    if issuer is None:
        raise NotFound("there is no issuing CA yet: run 'certstatus ca init' first")
    passphrase = _key_passphrase() if args.csr is None else b""
    ca = _authority(cfg, storage, keys=True)
    key_pem: bytes | None = None
    if args.csr is not None:
        record = await ca.issue(issuer=issuer, profile=ADMIN_CLIENT.name, actor=actor, csr=Path(args.csr).read_bytes(),
                                email=args.email)  # fmt: skip
    else:
        if not args.holder_name or not args.holder_id:
            raise ValidationError("--holder-name and --holder-id are required unless --csr is given")
        subject = HolderSubject(args.holder_name, args.holder_id, args.email)
        record, key = await ca.issue_with_generated_key(issuer=issuer, profile=ADMIN_CLIENT.name, actor=actor,
                                                        subject=subject, key_type=KeyType.parse(args.key_type))  # fmt: skip
        key_pem = encrypt_private_key(key, passphrase)
    written: list[Path] = []
    try:
        # The files first, the registration last: a credential is never registered whose
        # key was not saved, and never left usable if anything here fails.
        async with storage.pool.acquire() as conn:
            issuer_row = await db.get_issuer(conn, issuer)
        assert issuer_row is not None
        chain = certificate_pem(record).encode() + x509.load_der_x509_certificate(
            issuer_row.certificate
        ).public_bytes(serialization.Encoding.PEM)
        _new_file(cert_path, chain, 0o644)
        written.append(cert_path)
        if key_pem is not None:
            _new_file(key_path, key_pem, 0o600)
            written.append(key_path)
        await _register(storage, name=name, role=role, record=record, actor=actor)
    except BaseException:
        # The certificate must not outlive a failed creation as a loose clientAuth credential.
        for path in written:
            path.unlink(missing_ok=True)
        await ca.revoke(issuer, record.serial, actor=actor, reason="cessationOfOperation")
        raise
    out: dict[str, Any] = {"name": name, "role": role.value, "issuer": issuer, "serial": f"{record.serial:X}",
                           "not_after": record.not_after.isoformat(), "certificate": str(cert_path),
                           "key": str(key_path) if key_pem is not None else None}  # fmt: skip
    if args.json:
        _print_json(out)
    else:
        print(f"client certificate {name!r} ({role.value}) issued by {issuer}, serial {record.serial:X}, "
              f"valid until {record.not_after:%Y-%m-%d}")  # fmt: skip
        print(f"  certificate and chain: {cert_path}")
        if key_pem is not None:
            print(f"  private key (encrypted under {KEY_PASSPHRASE_ENV}): {key_path}")
        print("it opens the admin API over TLS (CERTSTATUS_ADMIN_TLS_CERT/KEY set) while it is good and registered")
    return EXIT_OK


async def _register(storage: Storage, *, name: str, role: Role, record: CertRecord, actor: str) -> None:
    async with db.transaction(storage.pool, "register a client certificate") as conn:
        issuer_id = next(i.id for i in await db.list_issuers(conn) if i.name == record.issuer)
        now = SystemClock().now()
        await db.insert_client_cert(conn, name=name, role=role.value, issuer_id=issuer_id, serial=record.serial,
                                    now=now)  # fmt: skip
        await db.insert_audit(conn, actor=actor, action="credential.certificate.create", issuer_id=issuer_id,
                              serial=record.serial, before=None, after={"name": name, "role": role.value},
                              idempotency_key=None, now=now)  # fmt: skip


async def cmd_cert_list(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _print_json, _table, _when

    async with storage.pool.acquire() as conn:
        rows = await db.list_client_certs(conn)
    if args.json:
        _print_json([
            {"name": r.name, "role": r.role, "issuer": r.issuer, "serial": f"{r.serial:X}", "status": r.status,
             "not_after": r.not_after.isoformat(), "created_at": r.created_at.isoformat(),
             "withdrawn_at": r.revoked_at.isoformat() if r.revoked_at else None,
             "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None}
            for r in rows
        ])  # fmt: skip
    elif not rows:
        print("no client certificates yet: 'certstatus admin cert create NAME --role operator ...'")
    else:
        print(_table([[r.name, r.role, r.issuer, f"{r.serial:X}", r.status, _when(r.not_after), _when(r.last_used_at),
                       _when(r.revoked_at)] for r in rows],
                     ["name", "role", "issuer", "serial", "status", "expires", "last used", "withdrawn"]))  # fmt: skip
    return EXIT_OK


async def cmd_cert_revoke(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    """Withdraw the registration and revoke the certificate itself (so CRLs and OCSP say so)."""
    from .cli import _actor, _authority

    actor = _actor(args)
    now = SystemClock().now()
    async with db.transaction(storage.pool, "withdraw a client certificate") as conn:
        row = await db.get_client_cert(conn, args.name)
        if row is None:
            raise NotFound(f"no client certificate credential named {args.name!r}")
        if row.revoked_at is None:
            await db.revoke_client_cert(conn, row.name, now)
            issuer_id = next(i.id for i in await db.list_issuers(conn) if i.name == row.issuer)
            await db.insert_audit(conn, actor=actor, action="credential.certificate.withdraw", issuer_id=issuer_id,
                                  serial=row.serial, before={"name": row.name, "role": row.role}, after=None,
                                  idempotency_key=None, now=now)  # fmt: skip
    if row.status != CertStatus.REVOKED.value:
        try:
            await _authority(cfg, storage, keys=False).revoke(row.issuer, row.serial, actor=actor, reason=args.reason)
        except IllegalTransition:  # revoked meanwhile by someone else: the end state is the same
            pass
    print(f"client certificate {row.name!r} withdrawn and certificate {row.serial:X} revoked "
          "(it no longer opens the admin API)")  # fmt: skip
    return EXIT_OK
