"""``certstatus admin serve``, ``certstatus admin token create|list|revoke``, and the client
commands over the admin API: ``admin issue|revoke|suspend|resume|show|list|audit|revoke-batch``.

The client commands need no database: they talk HTTP to a running ``certstatus admin serve``
through :class:`responder.admin_client.AdminClient`, print tables (or one certificate as
``name: value`` lines) or, with ``--json``, the API's JSON. An API problem is printed as
``error: <title>: <detail>`` with exit status 1, like any refused operation of the CLI.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import os
import re
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ca_core.clock import SystemClock
from ca_core.errors import ConfigurationError, NotFound, ValidationError
from ca_core.profiles import CITIZEN_PROFILES
from ca_core.storage import postgres as db
from ca_core.tokens import Role, check_name, make_token

from . import server
from .admin_client import AdminAPIError, AdminClient, AdminUnreachable, tls_context
from .config import Config
from .runtime import Storage

__all__ = [
    "CLIENT_EPILOG",
    "add_client_arguments",
    "cmd_admin_audit",
    "cmd_admin_change",
    "cmd_admin_issue",
    "cmd_admin_list",
    "cmd_admin_revoke_batch",
    "cmd_admin_serve",
    "cmd_admin_show",
    "cmd_token_create",
    "cmd_token_list",
    "cmd_token_revoke",
]

EXIT_OK, EXIT_ERROR = 0, 1


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def cmd_admin_serve(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .admin import admin_ssl_context, build_admin_app
    from .cli import _authority

    ssl_context = None
    if (cfg.admin_tls_cert is None) != (cfg.admin_tls_key is None):
        raise ConfigurationError("set both CERTSTATUS_ADMIN_TLS_CERT and CERTSTATUS_ADMIN_TLS_KEY, or neither")
    if cfg.admin_tls_cert is not None and cfg.admin_tls_key is not None:
        async with storage.pool.acquire() as conn:
            trust = [i.certificate for i in await db.list_issuers(conn)]
        if not trust:
            raise ConfigurationError("TLS client certificates need the CA: run 'certstatus ca init' first")
        passphrase = cfg.passphrase()
        ssl_context = admin_ssl_context(str(cfg.admin_tls_cert), str(cfg.admin_tls_key),
                                        passphrase.reveal() if passphrase is not None else None, trust)  # fmt: skip
    if cfg.admin_allow_generated_keys and ssl_context is None and not _loopback(cfg.admin_host):
        raise ConfigurationError(
            "CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS sends private keys and their passphrases: on "
            f"{cfg.admin_host} (not loopback) it needs TLS (CERTSTATUS_ADMIN_TLS_CERT and CERTSTATUS_ADMIN_TLS_KEY)"
        )
    app = build_admin_app(storage.pool, _authority(cfg, storage, keys=cfg.passphrase() is not None), SystemClock(),
                          allow_generated_keys=cfg.admin_allow_generated_keys)  # fmt: skip
    async with server.serving(app, cfg.admin_host, cfg.admin_port, ssl_context=ssl_context):
        scheme = "https" if ssl_context is not None else "http"
        how = "bearer tokens or registered client certificates" if ssl_context is not None else "bearer tokens"
        print(f"admin API on {scheme}://{cfg.admin_host}:{cfg.admin_port}/v1/ ({how}; Ctrl-C stops it)", flush=True)
        await lifetime.wait()
    return EXIT_OK


async def cmd_token_create(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _actor, _print_json

    name = check_name(args.name)
    role = Role.parse(args.role)
    token = make_token()
    now = SystemClock().now()
    async with db.transaction(storage.pool, "create a token") as conn:
        token_id = await db.insert_token(conn, name=name, role=role.value, secret_hash=token.secret_hash, now=now)
        await db.insert_audit(conn, actor=_actor(args), action="credential.token.create", issuer_id=None, serial=None,
                              before=None, after={"name": name, "role": role.value}, idempotency_key=None,
                              now=now)  # fmt: skip
    text = token.text(token_id)
    if args.json:
        _print_json({"name": name, "role": role.value, "token": text})
    else:
        print(f"token {name!r} ({role.value}) created; it is shown only now, so keep it safe:\n{text}")
    return EXIT_OK


async def cmd_token_list(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _print_json, _table, _when

    async with storage.pool.acquire() as conn:
        rows = await db.list_tokens(conn)
    out: list[dict[str, Any]] = [
        {"name": r.name, "role": r.role, "created_at": r.created_at.isoformat(),
         "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
         "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None}
        for r in rows
    ]  # fmt: skip
    if args.json:
        _print_json(out)
    elif not rows:
        print("no tokens yet: 'certstatus admin token create NAME --role operator'")
    else:
        print(_table([[r.name, r.role, _when(r.created_at), _when(r.last_used_at), _when(r.revoked_at)] for r in rows],
                     ["name", "role", "created", "last used", "revoked"]))  # fmt: skip
    return EXIT_OK


async def cmd_token_revoke(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _actor

    now = SystemClock().now()
    async with db.transaction(storage.pool, "revoke a token") as conn:
        row = await db.revoke_token(conn, args.name, now)
        if row is None:
            raise NotFound(f"no token named {args.name!r}")
        if row.revoked_at == now:  # revoked by this call, not before
            await db.insert_audit(conn, actor=_actor(args), action="credential.token.revoke", issuer_id=None,
                                  serial=None, before={"name": row.name, "role": row.role}, after=None,
                                  idempotency_key=None, now=now)  # fmt: skip
    print(f"token {row.name!r} revoked (it no longer opens the admin API)")
    return EXIT_OK


# The admin API's client commands ----------------------------------------------------------

CLIENT_EPILOG = """\
connection:
  The API is at --url, else CERTSTATUS_ADMIN_URL, else at http://CERTSTATUS_ADMIN_HOST:
  CERTSTATUS_ADMIN_PORT from the configuration (http://127.0.0.1:8081), where
  'certstatus admin serve' runs. No database is needed on this machine.
  The bearer token comes from the file named by --token-file (mode 0600, the token on its own)
  or else from the CERTSTATUS_ADMIN_TOKEN variable. There is no --token option: command lines
  are visible to every user through 'ps'. An operator creates tokens with
  'certstatus admin token create NAME --role ROLE'; the role decides what the token may do
  (operator: everything; registration-officer: read, issue, suspend, resume; auditor: read).
  The audit log records the token's name as the actor. The token is never printed.
  For an https URL, --cacert FILE (CERTSTATUS_ADMIN_CACERT) is the CA that signed the
  server's certificate (default: the system's trusted CAs), and --cert FILE with --key FILE
  (CERTSTATUS_ADMIN_CERT, CERTSTATUS_ADMIN_KEY) a TLS client certificate; with a client
  certificate and no token, no Authorization header is sent.

exit status:
  0  done
  1  the API refused (stderr: 'error: <title>: <detail>', e.g. 401 a wrong or revoked
     token, 403 not allowed for the token's role, 404 no such certificate, 409 not
     possible in the certificate's state), or the API could not be reached
  2  wrong usage or settings (e.g. no token, unreadable --token-file)
  130 interrupted (Ctrl-C)
"""


class _NoToken(argparse.Action):
    """``--token`` is refused without echoing its value (else argparse would read it as an
    abbreviation of --token-file, or print it back as an unrecognized argument)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        parser.error(
            "there is no --token option: a token on the command line is visible to every user through 'ps'; "
            "use --token-file FILE or CERTSTATUS_ADMIN_TOKEN"
        )


def add_client_arguments(p: argparse.ArgumentParser, *, json_help: str) -> None:
    """The connection options every client command takes, and --json."""
    p.add_argument("--token", nargs="?", action=_NoToken, help=argparse.SUPPRESS)
    g = p.add_argument_group("connection (see below)")
    g.add_argument("--url", metavar="URL", help="the admin API (default: CERTSTATUS_ADMIN_URL, else from the config)")
    g.add_argument(
        "--token-file", metavar="FILE", help="file holding the bearer token (default: CERTSTATUS_ADMIN_TOKEN)"
    )
    g.add_argument("--cacert", metavar="FILE", help="https: CA certificate(s) to trust for the server (PEM)")
    g.add_argument("--cert", metavar="FILE", help="https: TLS client certificate (PEM)")
    g.add_argument("--key", metavar="FILE", help="https: the client certificate's private key (PEM)")
    p.add_argument("--json", action="store_true", help=json_help)


def _default_url(cfg: Config) -> str:
    host = cfg.admin_host
    # A server bound to every address is reached on the loopback one.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.admin_port}"


def _setting(args: argparse.Namespace, name: str, env: str) -> str | None:
    value = getattr(args, name, None) or os.environ.get(env, "").strip()
    return str(value) if value else None


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file and os.path.basename(args.token_file).startswith("cst_"):
        raise ConfigurationError("--token-file names a file, not the token itself: put the token in a file")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                text = fh.read(4096).strip()
        except OSError as e:
            raise ConfigurationError(f"cannot read the token file {args.token_file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"the token file {args.token_file} is not text") from None
        if not text:
            raise ConfigurationError(f"the token file {args.token_file} is empty")
        return text
    return os.environ.get("CERTSTATUS_ADMIN_TOKEN", "").strip() or None


def _client(cfg: Config, args: argparse.Namespace) -> AdminClient:
    url = _setting(args, "url", "CERTSTATUS_ADMIN_URL") or _default_url(cfg)
    token = _token(args)
    cacert = _setting(args, "cacert", "CERTSTATUS_ADMIN_CACERT")
    cert = _setting(args, "cert", "CERTSTATUS_ADMIN_CERT")
    key = _setting(args, "key", "CERTSTATUS_ADMIN_KEY")
    context = None
    if url.lower().startswith("https://"):
        context = tls_context(cacert, cert, key)
    elif cacert or cert or key:
        raise ConfigurationError(
            f"--cacert, --cert and --key (CERTSTATUS_ADMIN_CACERT, _CERT, _KEY) are for https URLs; the admin API "
            f"URL is {url}"
        )
    if token is None and cert is None:
        raise ConfigurationError(
            "no credentials for the admin API: put a token in a file and pass --token-file FILE, or set "
            "CERTSTATUS_ADMIN_TOKEN (an operator creates tokens with 'certstatus admin token create NAME --role ROLE')"
        )
    return AdminClient(url, token=token, ssl_context=context)


ClientCommand = Callable[[AdminClient, argparse.Namespace], Awaitable[int]]


def remote(fn: ClientCommand) -> Callable[[Config, argparse.Namespace], int]:
    """A CLI command that calls the admin API: connect, run, print problems as one line."""

    def command(cfg: Config, args: argparse.Namespace) -> int:
        client = _client(cfg, args)

        async def main(lifetime: server.Lifetime) -> int:
            async with client:
                return await fn(client, args)

        try:
            return server.run(main)
        except AdminAPIError as e:
            retry = f" (try again in {e.retry_after} s)" if e.retry_after else ""
            print(f"error: {e.title}: {e.detail}{retry}", file=sys.stderr)
            return EXIT_ERROR
        except AdminUnreachable as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ERROR

    return command


def _time(text: str | None) -> str:
    """An API time (ISO 8601) the way the CLI prints times."""
    if not text:
        return ""
    from .cli import _when

    try:
        return _when(dt.datetime.fromisoformat(text).astimezone(dt.UTC))
    except ValueError:
        return text


def _status(cert: dict[str, Any]) -> str:
    status = str(cert.get("status", ""))
    return f"{status} ({cert['reason']})" if status == "revoked" and cert.get("reason") else status


def _print_certificate(cert: dict[str, Any]) -> None:
    fields = [
        ("issuer", cert.get("issuer")),
        ("serial", cert.get("serial")),
        ("profile", cert.get("profile")),
        ("subject", cert.get("subject")),
        ("holder", cert.get("holder_id")),
        ("status", cert.get("status")),
        ("revoked at", _time(cert.get("revoked_at"))),
        ("reason", cert.get("reason")),
        ("invalidity date", _time(cert.get("invalidity_date"))),
        ("not before", _time(cert.get("not_before"))),
        ("not after", _time(cert.get("not_after"))),
        ("CRL partition", cert.get("crl_partition")),
        ("issued at", _time(cert.get("issued_at"))),
        ("updated at", _time(cert.get("updated_at"))),
    ]
    for name, value in fields:
        if value not in ("", None):
            print(f"{name:>16}: {value}")


def _csr_pem(data: bytes, source: str) -> str:
    """The API takes PEM; a DER CSR is wrapped as PEM (the server checks everything)."""
    if not data.strip():
        raise ValidationError(f"the CSR in {source} is empty")
    if data.lstrip().startswith(b"-----"):
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise ValidationError(f"the CSR in {source} is not PEM text") from None
    body = "\n".join(textwrap.wrap(base64.b64encode(data).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"


async def cmd_admin_issue(client: AdminClient, args: argparse.Namespace) -> int:
    from .cli import _print_json, _read_input

    csr = _csr_pem(_read_input(args.csr), "standard input" if args.csr == "-" else args.csr)
    record = await client.issue(issuer=args.issuer, profile=args.profile, csr=csr, email=args.email,
                                validity_days=args.validity_days, idempotency_key=args.idempotency_key)  # fmt: skip
    pem = str(record.get("certificate_pem", ""))
    status = EXIT_OK
    if args.out:
        try:
            with open(args.out, "w", encoding="ascii") as fh:
                fh.write(pem)
        except OSError as e:
            # The certificate exists now: never lose it because of a bad --out.
            print(f"error: cannot write {args.out}: {e.strerror}; the certificate was issued and is printed instead",
                  file=sys.stderr)  # fmt: skip
            status, args.out = EXIT_ERROR, None
    if args.json:
        _print_json(record)
    else:
        _print_certificate(record)
        if not args.out:
            print(pem, end="")
    return status


async def cmd_admin_change(client: AdminClient, args: argparse.Namespace) -> int:
    from .cli import _print_json

    if args.op == "revoke":
        record = await client.revoke(args.issuer, args.serial, reason=args.reason,
                                     invalidity_date=args.invalidity_date, idempotency_key=args.idempotency_key)  # fmt: skip
    elif args.op == "suspend":
        record = await client.suspend(args.issuer, args.serial, idempotency_key=args.idempotency_key)
    else:
        record = await client.resume(args.issuer, args.serial, idempotency_key=args.idempotency_key)
    if args.json:
        _print_json(record)
    else:
        _print_certificate(record)
    return EXIT_OK


async def cmd_admin_show(client: AdminClient, args: argparse.Namespace) -> int:
    from .cli import _print_json

    record = await client.certificate(args.issuer, args.serial)
    if args.json:
        _print_json(record)
    else:
        _print_certificate(record)
    return EXIT_OK


async def _paged(
    client: AdminClient, fetch: Callable[..., Awaitable[dict[str, Any]]], field: str, args: argparse.Namespace,
    **params: Any,
) -> dict[str, Any]:  # fmt: skip
    """One page, or with --all every page joined into one answer of the same shape."""
    if not args.all:
        return await fetch(**params, limit=args.limit)
    items: list[dict[str, Any]] = []
    async for page in client.pages(fetch, field, **params, limit=args.limit or 1000):
        items.extend(page)
    return {field: items, "next_cursor": None}


def _more(result: dict[str, Any], what: str) -> None:
    if result.get("next_cursor"):
        print(f"more {what} match: --all fetches every page", file=sys.stderr)


async def cmd_admin_list(client: AdminClient, args: argparse.Namespace) -> int:
    from .cli import _print_json, _table

    result = await _paged(client, client.certificates, "certificates", args, holder=args.holder, issuer=args.issuer,
                          status=args.status)  # fmt: skip
    certs = result["certificates"]
    if args.json:
        _print_json(result)
    elif not certs:
        print("no certificates match")
    else:
        rows = [
            (c["issuer"], c["serial"], c["profile"], _status(c), c["subject"], _time(c["not_after"])) for c in certs
        ]
        print(_table(rows, ["issuer", "serial", "profile", "status", "subject", "not after"]))
    _more(result, "certificates")
    return EXIT_OK


async def cmd_admin_audit(client: AdminClient, args: argparse.Namespace) -> int:
    from .cli import _print_json, _table

    if args.serial and not args.issuer:
        raise ConfigurationError("--serial needs --issuer: a serial number names a certificate only with its issuer")
    result = await _paged(client, client.audit, "entries", args, actor=args.actor, issuer=args.issuer,
                          serial=args.serial, since=args.since, until=args.until)  # fmt: skip
    entries = result["entries"]
    if args.json:
        _print_json(result)
    elif not entries:
        print("no audit entries match")
    else:
        rows = [(e["id"], _time(e["at"]), e["actor"], e["action"], e.get("issuer") or "", e.get("serial") or "",
                 (e.get("before") or {}).get("status", ""), (e.get("after") or {}).get("status", ""))
                for e in entries]  # fmt: skip
        print(_table(rows, ["id", "at", "actor", "action", "issuer", "serial", "before", "after"]))
    _more(result, "audit entries")
    return EXIT_OK


MAX_BATCH = 10_000


def _read_batch(path: str) -> tuple[list[dict[str, Any]], list[int] | None, Any]:
    """(items, the line of each item for a text file, the file's batch reason)."""
    source = "standard input" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                raw = fh.read()
        text = raw.decode("utf-8-sig")  # a spreadsheet's CSV export may start with a BOM
    except OSError as e:
        raise ValidationError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{source} is not UTF-8 text") from None
    reason = None
    lines: list[int] | None = None
    items: list[dict[str, Any]] = []
    if text.lstrip()[:1] in ("[", "{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise ValidationError(f"{source} is not valid JSON: {e}") from None
        if isinstance(data, dict) and "items" in data:
            items, reason = data["items"], data.get("reason")
        elif isinstance(data, dict) and isinstance(data.get("certificates"), list):
            # The output of 'admin list --json': revoke the citizens' certificates it found (issuer
            # and serial only). A search by issuer also finds the issuer's OCSP signer and admin
            # client certificates, which a batch of cards must never take down with it.
            found = [c for c in data["certificates"] if isinstance(c, dict)]
            items = [{"issuer": c.get("issuer"), "serial": c.get("serial")} for c in found
                     if c.get("profile") in CITIZEN_PROFILES]  # fmt: skip
            if len(items) < len(found):
                print(f"{source}: left out {len(found) - len(items)} certificate(s) that are not citizens' (OCSP "
                      "signer or admin client); revoke those one by one with 'admin revoke'", file=sys.stderr)  # fmt: skip
        elif isinstance(data, list):
            items = data
        else:
            raise ValidationError(
                f"{source}: expected a JSON list of {{issuer, serial, reason?, invalidity_date?}}, an object with "
                "'items' (the API's batch body), or the output of 'admin list --json'"
            )
        if not isinstance(items, list):
            raise ValidationError(f"{source}: 'items' must be a list")
    else:
        lines = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = re.split(r"[\s,]+", line)
            if len(fields) not in (2, 3):
                raise ValidationError(f"{source} line {number}: expected 'ISSUER SERIAL [REASON]', got {line!r}")
            item = {"issuer": fields[0], "serial": fields[1]}
            if len(fields) == 3:
                item["reason"] = fields[2]
            items.append(item)
            lines.append(number)
    if not items:
        raise ValidationError(f"{source} lists no certificates to revoke")
    if len(items) > MAX_BATCH:
        raise ValidationError(f"{source} lists {len(items)} certificates; the API takes at most {MAX_BATCH} at once")
    return items, lines, reason


async def cmd_admin_revoke_batch(client: AdminClient, args: argparse.Namespace) -> int:
    from .cli import _print_json, _table

    items, lines, file_reason = _read_batch(args.file)
    result = await client.revoke_batch(items, reason=args.reason if args.reason is not None else file_reason,
                                       idempotency_key=args.idempotency_key)  # fmt: skip
    failures = [r for r in result.get("results", []) if not r.get("ok")]
    if args.json:
        _print_json(result)
    else:
        print(f"revoked {result.get('revoked', 0)} of {len(items)} certificates"
              + (f"; {len(failures)} failed:" if failures else ""))  # fmt: skip
        if failures:
            rows = []
            for r in failures:
                i = int(r["index"])
                problem = r.get("problem") or {}
                rows.append((lines[i] if lines is not None else i, items[i].get("issuer", ""),
                             items[i].get("serial", ""), f"{problem.get('title', '')}: {problem.get('detail', '')}"))  # fmt: skip
            print(_table(rows, ["line" if lines is not None else "item", "issuer", "serial", "error"]))
    return EXIT_ERROR if failures else EXIT_OK
