"""``certstatus demo``: a working CA and responder on one machine, in one command.

It starts the embedded servers, creates a demo CA if there is none (a root with the
MOICA and GCA issuing CAs under it, each with an OCSP signer), issues sample
citizen certificates for each issuer (good signing and encryption certificates, a
revoked one and a suspended one), writes the PEM files and a cheat sheet into the
data directory, and serves the public responder until Ctrl-C. Run again, it reuses
everything it made before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_core.clock import SystemClock
from ca_core.errors import UnknownCertificate
from ca_core.lifecycle import CertificateAuthority, certificate_pem
from ca_core.model import KeyType, RevocationReason
from ca_core.pki import IssuerSpec, init_pki
from ca_core.profiles import HolderSubject
from ca_core.storage import postgres as db

from . import server
from .config import Config
from .public import public_server
from .runtime import Endpoints, Storage, endpoints, open_storage, vault
from .signer_cmd import make_publisher, make_signer, publish_due, sign_due

__all__ = ["export_ca_files", "run_demo"]

DEMO_ISSUERS = ("moica", "gca")
ACTOR = "demo"


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One sample certificate: who holds it and what happens to it."""

    role: str
    name: str
    holder_id: str
    profile: str
    email: str | None = None
    action: str | None = None  # None, "revoke" or "suspend"


# Holder numbers are 16 digits (seed 001); the second digit group tells the issuers apart.
SAMPLES = (
    Sample("good-signing", "王小明", "00000001{n}0000001", "citizen-signing", "xiaoming.wang@example.tw"),
    Sample("good-encryption", "王小明", "00000001{n}0000001", "citizen-encryption", "xiaoming.wang@example.tw"),
    Sample("revoked", "陳美玲", "00000001{n}0000002", "citizen-signing", action="revoke"),
    Sample("suspended", "林志強", "00000001{n}0000003", "citizen-signing", action="suspend"),
)


def _write(path: Path, data: bytes | str, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def _pem(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


async def export_ca_files(pool: asyncpg.Pool, directory: Path, *, now: dt.datetime) -> list[Path]:
    """Write root.pem, <issuer>.pem, <issuer>-chain.pem and <issuer>-ocsp.pem (the signer valid
    at ``now``); return the paths."""
    written: list[Path] = []
    async with pool.acquire() as conn:
        issuers = await db.list_issuers(conn)
        by_id = {i.id: i for i in issuers}
        for issuer in issuers:
            path = directory / ("root.pem" if issuer.kind == "root" else f"{issuer.name}.pem")
            _write(path, _pem(issuer.certificate))
            written.append(path)
            if issuer.kind == "issuing":
                chain = directory / f"{issuer.name}-chain.pem"
                parent = by_id[issuer.parent_id] if issuer.parent_id is not None else None
                _write(chain, _pem(issuer.certificate) + (_pem(parent.certificate) if parent else ""))
                written.append(chain)
                signer = await db.current_ocsp_signer(conn, issuer.id, now)
                if signer is not None:
                    ocsp = directory / f"{issuer.name}-ocsp.pem"
                    _write(ocsp, _pem(signer.certificate))
                    written.append(ocsp)
    return written


async def _ensure_samples(ca: CertificateAuthority, demo_dir: Path, issuers: list[str]) -> list[dict[str, Any]]:
    """Issue the sample certificates once; later runs read the manifest back."""
    manifest_path = demo_dir / "manifest.json"
    if manifest_path.exists():
        manifest: list[dict[str, Any]] = orjson.loads(manifest_path.read_bytes())
        try:
            for entry in manifest:
                await ca.get(entry["issuer"], entry["serial"])
            return manifest
        except (UnknownCertificate, KeyError):
            pass  # the database was reset underneath the files: issue afresh
    manifest = []
    for n, issuer in enumerate(issuers, start=1):
        for sample in SAMPLES:
            subject = HolderSubject(sample.name, sample.holder_id.format(n=n), sample.email)
            record, key = await ca.issue_with_generated_key(
                issuer=issuer, profile=sample.profile, subject=subject, actor=ACTOR, key_type=KeyType.RSA2048
            )
            if sample.action == "revoke":
                record = await ca.revoke(issuer, record.serial, actor=ACTOR, reason=RevocationReason.KEY_COMPROMISE)
            elif sample.action == "suspend":
                record = await ca.suspend(issuer, record.serial, actor=ACTOR)
            stem = f"{issuer}-{sample.role}"
            _write(demo_dir / f"{stem}.pem", certificate_pem(record))
            _write(
                demo_dir / f"{stem}-key.pem",
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
                private=True,
            )
            manifest.append(
                {
                    "issuer": issuer,
                    "role": sample.role,
                    "serial": record.serial_hex,
                    "status": record.status.value,
                    "certificate": f"{stem}.pem",
                    "key": f"{stem}-key.pem",
                }
            )
    _write(manifest_path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def _cheat_sheet(cfg: Config, demo_dir: Path, manifest: list[dict[str, Any]], passphrase_file: Path) -> str:
    q = shlex.quote
    d = str(demo_dir)
    base = f"http://{cfg.public_host}:{cfg.public_port}"
    first = manifest[0]
    revoked = next(m for m in manifest if m["role"] == "revoked")
    suspended = next(m for m in manifest if m["role"] == "suspended")
    issuer = first["issuer"]

    def ocsp_args(m: dict[str, Any]) -> str:
        i = m["issuer"]
        return (
            f"-issuer {q(d + '/' + i + '.pem')} -cert {q(d + '/' + m['certificate'])} -url {base}/ocsp -no_nonce "
            f"-CAfile {q(d + '/root.pem')} -verify_other {q(d + '/' + i + '.pem')}"
        )

    def partition_of(m: dict[str, Any]) -> str:
        # From the certificate's own CRL distribution point: /crl/<issuer>/<p>.crl
        cert = x509.load_pem_x509_certificate((demo_dir / m["certificate"]).read_bytes())
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        return str(cdp[0].full_name[0].value).rsplit("/", 1)[1].removesuffix(".crl")

    p = partition_of(revoked)
    pem = {name: q(d + "/" + name + ".pem") for name in ("root", issuer)}
    verify = f"openssl verify -crl_check_all -CAfile {pem['root']} -untrusted {pem[issuer]} -CRLfile root-crl.pem"
    env = f"export CERTSTATUS_DATA_DIR={q(str(cfg.data_dir))} CERTSTATUS_KEY_PASSPHRASE_FILE={q(str(passphrase_file))}"
    lines = [
        "# certstatus demo: commands that work against this demo",
        "",
        f"Generated {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}. Paths are relative to the",
        "directory the demo was started from.",
        "",
        "## Certificates",
        "",
        "```sh",
        f"openssl x509 -in {q(d + '/' + first['certificate'])} -noout -text",
        f"openssl verify -CAfile {q(d + '/root.pem')} -untrusted {q(d + '/' + issuer + '.pem')} {q(d + '/' + first['certificate'])}",
        f"cat {q(d + '/manifest.json')}        # every sample: issuer, serial, status, files",
        "```",
        "",
        "## The public responder",
        "",
        "```sh",
        f"curl -s {base}/healthz",
        f"curl -s {base}/readyz",
        f"curl -s {base}/ca/{issuer}.crt | openssl x509 -inform DER -noout -subject   # the AIA caIssuers URL",
        "```",
        "",
        "## OCSP (the signer re-signs a status change within milliseconds)",
        "",
        "```sh",
        f"openssl ocsp {ocsp_args(first)} -resp_text | grep -E 'Cert Status|Response verify'",
        f"openssl ocsp {ocsp_args(revoked)} | grep ': revoked'",
        f"openssl ocsp {ocsp_args(suspended)} | grep -A5 ': revoked' | grep 'Reason: certificateHold'",
        f"openssl ocsp -issuer {q(d + '/' + issuer + '.pem')} -cert {q(d + '/' + first['certificate'])} -no_nonce -reqout req.der",
        f"curl -s -o resp.der {base}/ocsp/$(base64 -w0 req.der | sed 's/+/%2B/g; s,/,%2F,g; s/=/%3D/g')   # RFC 6960 A.1 GET",
        f"openssl ocsp -respin resp.der -issuer {q(d + '/' + issuer + '.pem')} -cert {q(d + '/' + first['certificate'])} "
        f"-CAfile {q(d + '/root.pem')} -verify_other {q(d + '/' + issuer + '.pem')} | grep ': good'",
        "```",
        "",
        "## CRLs: full, partitioned, delta, and the push stream",
        "",
        "```sh",
        f"curl -sf -D crl-headers.txt -o full.crl {base}/crl/{issuer}.crl && grep -iE '^(etag|expires|cache-control):' crl-headers.txt",
        f"openssl crl -inform DER -in full.crl -CAfile {pem[issuer]} -noout 2>&1 | grep 'verify OK'",
        f"openssl crl -inform DER -in full.crl -noout -text | grep -i -A3 'Serial Number: {revoked['serial']}'",
        f"curl -sf {base}/crl/root.crl | openssl crl -inform DER -out root-crl.pem && openssl crl -inform DER -in full.crl -out full.pem",
        f"{verify} -CRLfile full.pem {q(d + '/' + first['certificate'])}",
        f"curl -sf {base}/crl/{issuer}/{p}.crl | openssl crl -inform DER -out part.pem   # the partition its CRL distribution point names",
        f"curl -sf {base}/crl/{issuer}/{p}/delta.crl | openssl crl -inform DER -out delta.pem   # and that partition's delta (freshestCRL)",
        f"{verify} -use_deltas -extended_crl -CRLfile part.pem -CRLfile delta.pem {q(d + '/' + revoked['certificate'])} 2>&1 "
        "| grep 'certificate revoked'   # refused: revoked",
        f"(curl -sN --max-time 2 -H 'Last-Event-ID: 1' {base}/crl/{issuer}/stream || true) | grep -m1 -E '^(event|retry):'",
        "```",
        "",
        "## The CA, from another terminal while the demo runs",
        "",
        "```sh",
        env,
        "certstatus ca list",
        "certstatus cert list",
        f"certstatus cert show {issuer} {first['serial']}",
        f"certstatus cert resume {suspended['issuer']} {suspended['serial']}",
        f"certstatus cert suspend {issuer} {first['serial']}",
        f"certstatus cert resume {issuer} {first['serial']}",
        f"certstatus cert revoke {issuer} {revoked['serial']}        # refused: revocation is final",
        "openssl req -new -newkey rsa:2048 -nodes -keyout me-key.pem -utf8 \\",
        "    -subj '/C=TW/CN=王大明/serialNumber=0000000000000042' -out me.csr",
        f"certstatus cert issue --issuer {issuer} --profile citizen-signing --csr me.csr --out me.pem",
        "certstatus audit list",
        f"certstatus crl publish --issuer {issuer} --delta",
        f"certstatus crl show --issuer {issuer} --delta",
        f"certstatus crl fetch {base}/crl/{issuer}/delta.crl --out delta-now.crl",
        "```",
        "",
    ]
    return "\n".join(lines)


def run_demo(cfg: Config, *, hold: bool = True) -> int:
    """Set up the demo; serve until Ctrl-C unless ``hold`` is false."""
    data_dir = cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    passphrase_file = cfg.key_passphrase_file
    if cfg.passphrase() is None:
        passphrase_file = data_dir / "demo-key-passphrase"
        if not passphrase_file.exists():
            _write(passphrase_file, secrets.token_urlsafe(32) + "\n", private=True)
        cfg = dataclasses.replace(cfg, key_passphrase_file=passphrase_file)
    demo_dir = data_dir / "demo"

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with endpoints(cfg) as ep:

        async def main(lifetime: server.Lifetime) -> int:
            async with open_storage(ep, cfg) as storage:
                return await _demo(cfg, ep, storage, lifetime, demo_dir, passphrase_file, say, hold)

        return server.run(main)


async def _demo(
    cfg: Config,
    ep: Endpoints,
    storage: Storage,
    lifetime: server.Lifetime,
    demo_dir: Path,
    passphrase_file: Path | None,
    say: Any,
    hold: bool,
) -> int:
    the_vault = vault(cfg)
    async with storage.pool.acquire() as conn:
        issuers = await db.list_issuers(conn)
    if not issuers:
        say(f"creating the demo CA: root + {', '.join(DEMO_ISSUERS)} (RSA key generation takes a few seconds) ...")
        await init_pki(
            storage.pool,
            the_vault,
            clock=SystemClock(),
            urls=cfg.urls(),
            issuers=[
                IssuerSpec(
                    n, key_type=cfg.issuer_key_type, ocsp_key_type=cfg.ocsp_key_type, crl_partitions=cfg.crl_partitions
                )
                for n in DEMO_ISSUERS
            ],
            actor=ACTOR,
            organization=cfg.organization,
            root_key_type=cfg.root_key_type,
            ocsp_validity=dt.timedelta(days=cfg.ocsp_signer_validity_days),
        )
        async with storage.pool.acquire() as conn:
            issuers = await db.list_issuers(conn)
    issuing = [i.name for i in issuers if i.kind == "issuing"][:2]
    ca = CertificateAuthority(storage.pool, the_vault, clock=SystemClock(), urls=cfg.urls())
    manifest = await _ensure_samples(ca, demo_dir, issuing)
    await export_ca_files(storage.pool, demo_dir, now=SystemClock().now())
    assert passphrase_file is not None or cfg.key_passphrase is not None
    sheet = cfg.data_dir / "CHEATSHEET.md"
    _write(sheet, _cheat_sheet(cfg, demo_dir, manifest, passphrase_file or Path("<your passphrase file>")))

    rows = "\n".join(f"    {m['issuer']:<6} {m['role']:<16} {m['status']:<10} {m['serial']}" for m in manifest)
    summary = f"""
certstatus demo is ready.

  data directory   {cfg.data_dir}
  PostgreSQL       {ep.database_url if cfg.database_url is None else "(DATABASE_URL)"}
  Valkey           {ep.redis_url if cfg.redis_url is None else "(REDIS_URL)"}
  PEM files        {demo_dir}/  (root.pem, <issuer>.pem, <issuer>-chain.pem, samples + keys)
  key passphrase   {passphrase_file or "from CERTSTATUS_KEY_PASSPHRASE"}
  cheat sheet      {sheet}
  public responder http://{cfg.public_host}:{cfg.public_port}/ocsp  (and /ca/<issuer>.crt, /healthz, /readyz)
  OCSP signer      running in this process
  CRL publisher    running in this process: {cfg.urls().base}/crl/<issuer>.crl, .../<p>.crl, .../delta.crl, .../stream

  sample certificates:
{rows}
"""
    if not hold:
        print(summary, flush=True)
        return 0
    signer = make_signer(cfg, storage)
    await signer.load_issuers()
    # The first fill (a few hundred responses) before serving, so the first query is answered.
    await sign_due(signer)
    signing = asyncio.create_task(signer.run(), name="ocsp-signer")
    publisher = make_publisher(cfg, storage)
    await publish_due(publisher)  # the first CRLs before serving, like the first OCSP fill
    publishing = asyncio.create_task(publisher.run(), name="crl-publisher")
    try:
        async with public_server(cfg, storage, ep.redis_url):
            print(summary + "\nCtrl-C stops everything.", flush=True)
            await lifetime.wait()
    finally:
        for task in (signing, publishing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    say("stopping ...")
    return 0
