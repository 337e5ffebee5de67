"""`hourglass token`: an admin command that speaks to the database directly (it needs
--database-url). Whoever can run it holds the database's credentials, so it needs no API
token. `hourglass quota` lives beside it in quota.py; both share the argument types here."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hourglass import durations, sizes
from hourglass.cli import exit_codes, output

COMMANDS = ("token",)


def positive_duration(text: str) -> timedelta:
    """A duration longer than zero, such as 30s, 12h or 30d (argparse type: a bad one exits 2)."""
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive, e.g. 30s or 30d")
    try:
        value = durations.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r}: too long") from None
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive, e.g. 30s or 30d")
    return value


def byte_size(text: str) -> int:
    """A number of bytes such as 1048576, 500MB or 10GiB (argparse type)."""
    try:
        return sizes.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(commands: Any, *, add_store_options: Callable[..., None]) -> None:
    """Adds `token` to the top-level subparsers."""
    from hourglass.cli.options import command

    token = command(
        commands,
        "token",
        help="manage API tokens (needs --database-url)",
        examples=["hourglass token create --namespace team-a --name ci --ttl 90d"],
    )
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    token_create = command(
        token_commands,
        "create",
        help="make a token; prints it once",
        examples=["hourglass token create --namespace team-a --name ci --ttl 90d"],
    )
    add_store_options(token_create, etcd=False)
    token_create.add_argument(
        "--namespace", required=True, help="the tenant namespace it belongs to"
    )
    token_create.add_argument("--name", default="", help="a note: who or what uses it")
    token_create.add_argument(
        "--ttl",
        type=positive_duration,
        help="the token stops working after this long (12h, 30d; default: never)",
    )
    token_list = command(
        token_commands,
        "list",
        help="list tokens (never their values)",
        examples=["hourglass token list", "hourglass token list -o json"],
    )
    add_store_options(token_list, etcd=False)
    output.add_option(token_list)
    token_revoke = command(
        token_commands,
        "revoke",
        help="revoke a token by its id",
        examples=["hourglass token revoke 5d1c2f0e-8a4b-4e57-9a51-3f0c2b7d9e10"],
    )
    add_store_options(token_revoke, etcd=False)
    token_revoke.add_argument("token_id", metavar="TOKEN_ID")


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not args.database_url:
        parser.error("--database-url is required (or set HOURGLASS_DATABASE_URL)")
    if getattr(args, "namespace", None) is not None and not args.namespace.strip():
        parser.error("--namespace must not be empty")
    return asyncio.run(_token(parser, args))


async def _token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hourglass.cli import tables
    from hourglass.store import db, tokens

    now = datetime.now(UTC)
    expires_at = None
    if args.token_command == "create" and args.ttl is not None:
        try:
            expires_at = now + args.ttl
        except OverflowError:
            parser.error(f"argument --ttl: {durations.format(args.ttl)} is too long")
    token_id: uuid.UUID | None = None
    if args.token_command == "revoke":
        try:
            token_id = uuid.UUID(args.token_id)
        except ValueError:
            parser.error(f"{args.token_id!r} is not a token id (a UUID)")
    pool = await db.open_pool(args.database_url)
    try:
        async with db.transaction(pool) as conn:
            if args.token_command == "create":
                token_id, secret = await tokens.create(
                    conn, namespace=args.namespace, name=args.name, now=now, expires_at=expires_at
                )
                print(secret)
                until = f"until {expires_at.isoformat(timespec='seconds')}" if expires_at else ""
                print(
                    f"token {token_id} for namespace {args.namespace!r}"
                    f"{', valid ' + until if until else ''}: shown once, keep it safe",
                    file=sys.stderr,
                )
            elif args.token_command == "list":
                found = list(await tokens.list_all(conn))
                rows = [
                    [
                        t.id,
                        t.namespace,
                        t.name,
                        t.created_at.isoformat(timespec="seconds"),
                        t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never",
                        _standing(t, now),
                    ]
                    for t in found
                ]
                headers = ["ID", "NAMESPACE", "NAME", "CREATED", "EXPIRES", "STATE"]
                print(
                    output.render(
                        args.output,
                        [
                            dict(zip([h.lower() for h in headers], map(str, r), strict=True))
                            for r in rows
                        ],
                        table=lambda: tables.render(headers, rows) if rows else "(no tokens)",
                    )
                )
            else:
                assert token_id is not None
                if not await tokens.revoke(conn, token_id, now=now):
                    print(f"hourglass: no active token {token_id}", file=sys.stderr)
                    return exit_codes.NOT_FOUND
                print(f"token {token_id} revoked")
    finally:
        await pool.close()
    return 0


def _standing(token: Any, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"
