"""`yingyan keys`: create, list, revoke and rotate API keys. Each change is audited in the same
transaction, with the key's prefix, role and scope and never its token."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from yingyan.access import ApiKey
from yingyan.cli.audit import record_cli
from yingyan.cli.gallery import DataDirOpt, DbUrlOpt, open_store
from yingyan.cli.options import JsonOpt, handles_errors, parse_time, stderr

keys_app = typer.Typer(help="API keys: create, list, revoke, rotate.", no_args_is_help=True)
out = Console()

PrefixArg = Annotated[str, typer.Argument(help="the key's public prefix (see `keys list`)")]
ONCE = "This token is shown once and cannot be recovered: store it now."


@keys_app.command("create")
@handles_errors
def create(
    role: Annotated[str, typer.Option(help="admin, enroller, operator, reviewer or auditor")],
    name: Annotated[
        str, typer.Option(help="who or what uses the key (at most 182 printable characters)")
    ],
    gallery: Annotated[
        list[str] | None,
        typer.Option(
            "--gallery",
            "-g",
            help="limit the key to this existing gallery (repeatable); the key holds its id, so "
            "a gallery created later under the same name is not in its scope",
        ),
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="ISO 8601 expiry, e.g. 2026-12-31T00:00Z (no zone: UTC)")
    ] = None,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a key and print its token, once."""
    from yingyan.access import create_key

    expiry = parse_time(expires_at, "--expires-at")
    with open_store(data, url) as db, db.session() as s:
        issued = create_key(s, name=name, role=role, galleries=gallery or None, expires_at=expiry)
        _audit(s, "key.create", issued.key)
    _print_issued(issued.key, issued.token, as_json)


@keys_app.command("list")
@handles_errors
def list_(
    include_all: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Keys with their role, scope and status (never a secret)."""
    from yingyan.access import list_keys

    with open_store(data, url) as db, db.session() as s:
        keys = list_keys(s, include_revoked=include_all)
    if as_json:
        typer.echo(json.dumps([k.as_dict() for k in keys], indent=2))
        return
    table = Table()
    for col in ("prefix", "name", "role", "galleries", "status", "created", "expires"):
        table.add_column(col)
    for k in keys:
        table.add_row(
            k.prefix,
            k.name,
            k.role,
            _scope(k),
            k.status(),
            _short(k.created_at),
            _short(k.expires_at),
        )
    out.print(table, markup=False)


@keys_app.command("revoke")
@handles_errors
def revoke(prefix: PrefixArg, data: DataDirOpt = None, url: DbUrlOpt = None) -> None:
    """Revoke a key now."""
    from yingyan.access import get_key, revoke_key

    with open_store(data, url) as db, db.session() as s:
        was_revoked = get_key(s, prefix=prefix).revoked_at is not None
        key = revoke_key(s, prefix=prefix)
        if not was_revoked:
            _audit(s, "key.revoke", key)
    state = "was already revoked" if was_revoked else "revoked"
    typer.echo(f"key {prefix} ({key.name}) {state} {_short(key.revoked_at)}")


@keys_app.command("rotate")
@handles_errors
def rotate(
    prefix: PrefixArg, data: DataDirOpt = None, url: DbUrlOpt = None, as_json: JsonOpt = False
) -> None:
    """Replace a key's secret: a new key with the same name, role, scope and expiry; the old
    one is revoked at once."""
    from yingyan.access import rotate_key

    with open_store(data, url) as db, db.session() as s:
        issued = rotate_key(s, prefix=prefix)
        _audit(s, "key.rotate", issued.key, rotated_from=prefix)
    _print_issued(issued.key, issued.token, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _audit(session: Session, operation: str, key: ApiKey, **extra: str) -> None:
    shown = key.as_dict()
    fields = ("prefix", "name", "role", "galleries", "gallery_ids", "expires_at")
    details = {k: shown[k] for k in fields} | extra
    record_cli(session, operation, details=details)


def _print_issued(key: ApiKey, token: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"key": key.as_dict(), "token": token, "warning": ONCE}, indent=2))
        return
    scope = "all galleries" if key.scope is None else _scope(key)
    typer.echo(f"key {key.prefix} ({key.name}): role {key.role}, {scope}")
    typer.echo(token)
    stderr.print(f"[yellow]warning[/yellow]: {ONCE}", highlight=False)


def _scope(key: ApiKey) -> str:
    """The scope for reading: each gallery's name and id, or that it has been deleted."""
    if key.scope is None:
        return "all"
    if not key.scope:
        return "none"
    return ", ".join(f"{g.name} (#{g.id})" if g.name else f"#{g.id} (deleted)" for g in key.scope)


def _short(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
