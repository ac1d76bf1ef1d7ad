"""`yingyan retention run`: erase subjects past their consent or their gallery's expiry."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from yingyan.cli.audit import cli_actor
from yingyan.cli.gallery import DataDirOpt, DbUrlOpt, open_service
from yingyan.cli.options import JsonOpt, handles_errors, parse_time

retention_app = typer.Typer(
    help="Retention: purge what may no longer be kept.", no_args_is_help=True
)
out = Console()


@retention_app.command("run")
@handles_errors
def run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list, erase nothing")] = False,
    now: Annotated[
        str | None, typer.Option(help="evaluate expiry at this ISO time (default: now)")
    ] = None,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase every subject whose consents have all ended (withdrawn or expired) and every
    subject of an expired gallery: templates leave the database and the index; each erasure
    is audited."""
    from yingyan.privacy.retention import due, run_retention
    from yingyan.watch.alerts import purge_expired

    at = parse_time(now, "--now")
    with open_service(data, url) as service:
        todo = due(service, now=at)
        if dry_run:
            done = todo
        else:
            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("purging", total=len(todo))
                done = run_retention(
                    service, actor=cli_actor(), now=at, progress=lambda _: bar.advance(task)
                )
            purge_expired(service.db, actor=cli_actor(), now=at)  # alert crops past retention
    rows = [asdict(p) for p in done]
    if as_json:
        out.print_json(json.dumps({"dry_run": dry_run, "purged": rows}))
        return
    verb = "would erase" if dry_run else "erased"
    out.print(f"{verb} {len(done)} subject(s)")
    for p in done:
        extra = "" if dry_run else f", {p.templates} template(s)"
        out.print(f"  {p.gallery}/{p.external_id}: {p.reason}{extra}")


def register(app: typer.Typer) -> None:
    app.add_typer(retention_app, name="retention")
