"""`yingyan audit`: verify the hash chain of the audit log, list its entries. Also the store,
actor and record helpers the other commands share (no gallery service or index needed)."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from yingyan.cli.gallery import DataDirOpt, DbUrlOpt, open_store
from yingyan.cli.options import JsonOpt, handles_errors

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

audit_app = typer.Typer(help="The tamper-evident audit log: verify, list.", no_args_is_help=True)
out = Console()


def cli_actor() -> str:
    """The audit actor of a command run by hand: the operating-system account the process runs
    as (its effective uid), never $USER, $LOGNAME or the like, which anyone can set."""
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # no name for this uid (e.g. some containers)
        user = f"uid{uid}"
    return f"cli:{user}"


def record_cli(
    session: Session,
    operation: str,
    *,
    gallery: str | None = None,
    purpose: str | None = None,
    case_reference: str | None = None,
    details: Mapping[str, object] | None = None,
) -> None:
    """Append the audit entry of a command run by hand (actor `cli:<user>`), in the caller's
    transaction so the entry and the change it records commit together."""
    from yingyan.audit import AuditRecord, append

    record = AuditRecord(
        cli_actor(),
        operation,
        gallery=gallery,
        purpose=purpose,
        case_reference=case_reference,
        details=details or {},
    )
    append(session, record)


@audit_app.command("verify")
@handles_errors
def verify_(data: DataDirOpt = None, url: DbUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Recompute the hash chain: exit 0 if intact, 1 listing each problem if not."""
    from yingyan.audit import verify

    with open_store(data, url) as db, db.session() as s:
        report = verify(s)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
    elif report.ok:
        typer.echo(
            f"ok, {report.entries} entries (head seq {report.head_seq}, hash {report.head_hash})"
        )
    else:
        for problem in report.problems:
            typer.echo(problem)
        typer.echo(f"TAMPERED: {len(report.problems)} problem(s) in {report.entries} entries")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("list")
@handles_errors
def list_(
    after: Annotated[int, typer.Option(help="only entries with a larger seq")] = 0,
    limit: Annotated[int, typer.Option(help="at most this many entries (1-1000)")] = 100,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Entries oldest first; page on with --after set to the last seq shown."""
    from yingyan.audit import entries

    with open_store(data, url) as db, db.session() as s:
        rows = [e.as_dict() for e in entries(s, after=after, limit=limit)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("seq", "at (UTC)", "actor", "operation", "outcome", "gallery", "case", "details")
    for r in rows:
        table.add_row(
            str(r["seq"]),
            r["at"][:19].replace("T", " "),  # to the second: the table is for reading
            *(r[c] or "" for c in ("actor", "operation", "outcome", "gallery", "case_reference")),
            json.dumps(r["details"], ensure_ascii=False, sort_keys=True),
        )
    out.print(table, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
