"""``certstatus admin serve`` and ``certstatus admin token create|list|revoke``."""

from __future__ import annotations

import argparse
from typing import Any

from ca_core.clock import SystemClock
from ca_core.errors import NotFound
from ca_core.storage import postgres as db
from ca_core.tokens import Role, check_name, make_token

from . import server
from .config import Config
from .runtime import Storage

__all__ = ["cmd_admin_serve", "cmd_token_create", "cmd_token_list", "cmd_token_revoke"]

EXIT_OK = 0


async def cmd_admin_serve(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .admin import build_admin_app
    from .cli import _authority

    app = build_admin_app(storage.pool, _authority(cfg, storage, keys=cfg.passphrase() is not None), SystemClock())
    async with server.serving(app, cfg.admin_host, cfg.admin_port):
        print(f"admin API on http://{cfg.admin_host}:{cfg.admin_port}/v1/ (bearer tokens: 'certstatus admin token "
              "create'; Ctrl-C stops it)", flush=True)  # fmt: skip
        await lifetime.wait()
    return EXIT_OK


async def cmd_token_create(cfg: Config, args: argparse.Namespace, storage: Storage, lifetime: server.Lifetime) -> int:
    from .cli import _print_json

    name = check_name(args.name)
    role = Role.parse(args.role)
    token = make_token()
    async with storage.pool.acquire() as conn:
        token_id = await db.insert_token(conn, name=name, role=role.value, secret_hash=token.secret_hash,
                                         now=SystemClock().now())  # fmt: skip
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
    async with storage.pool.acquire() as conn:
        row = await db.revoke_token(conn, args.name, SystemClock().now())
    if row is None:
        raise NotFound(f"no token named {args.name!r}")
    print(f"token {row.name!r} revoked (it no longer opens the admin API)")
    return EXIT_OK
