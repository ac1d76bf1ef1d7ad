"""`yingyan maintenance vacuum`: make erased rows leave the database files (see
`yingyan.store.maintenance`); audited like every command run by hand."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from yingyan.cli.audit import record_cli
from yingyan.cli.gallery import DataDirOpt, DbUrlOpt, open_store
from yingyan.cli.options import JsonOpt, handles_errors

maintenance_app = typer.Typer(
    help="Database maintenance: reclaim what erasures deleted.", no_args_is_help=True
)


@maintenance_app.command("vacuum")
@handles_errors
def vacuum_(
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="PostgreSQL: VACUUM FULL, rewriting each table (locks it while it runs)",
        ),
    ] = False,
    keep_changes: Annotated[
        int,
        typer.Option(
            min=0,
            max=10**12,
            help="changes kept in each gallery's change log (an index further behind rebuilds)",
        ),
    ] = 100_000,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compact the galleries' change logs, then VACUUM the tables holding templates, images,
    subjects, consents, cohorts and the audit log (PostgreSQL: VACUUM (ANALYZE); SQLite: VACUUM
    and a WAL checkpoint). Run it after erasures (retention runs, gallery deletes), e.g.
    nightly."""
    from yingyan.store.changes import compact_all
    from yingyan.store.maintenance import vacuum

    with open_store(data, url) as db:
        compacted = db.run(lambda s: compact_all(s, keep=keep_changes))
        report = vacuum(db, full=full)
        details = report.audit_details() | {"changes_compacted": compacted}
        db.run(lambda s: record_cli(s, "maintenance.vacuum", details=details))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    typer.echo(
        f"vacuumed {len(report.tables)} table(s) on {report.backend} in {report.seconds:.2f}s"
        + (" (full)" if full and report.backend == "postgresql" else "")
    )
    if report.dead_rows_before:
        dead = sum(report.dead_rows_before.values())
        typer.echo(f"dead row versions before: {dead}")
    if report.bytes_before is not None and report.bytes_after is not None:
        typer.echo(f"database file: {report.bytes_before} → {report.bytes_after} bytes")
    if report.wal_truncated is False:
        typer.echo("the WAL is still in use by a reader: run again later to truncate it")


def register(app: typer.Typer) -> None:
    app.add_typer(maintenance_app, name="maintenance")
