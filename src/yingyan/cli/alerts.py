"""`yingyan alerts`: list the alerts of watch sessions and review them, on the host that holds
the data folder (or reaches the database).

A listing names the people the cameras matched, so it is audited ("watch.alert.list", committed
before anything is printed), like a search. A review is one person's verdict with a note; the
reviewer is recorded as the operating-system account running the command and the name given,
`cli:<account>(<name>)`: two confirmations must come from two different reviewers, so give each
person their own account (on one shared account the two-person rule rests on the names)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from yingyan.cli.audit import cli_actor, record_cli
from yingyan.cli.gallery import DataDirOpt, DbUrlOpt, open_store
from yingyan.cli.options import JsonOpt, handles_errors, parse_time
from yingyan.errors import ConfigError

alerts_app = typer.Typer(help="Watch alerts: list, review.", no_args_is_help=True)
# Wide enough for the table when output is piped to a file.
out = Console(width=shutil.get_terminal_size((160, 24)).columns)


@alerts_app.command("list")
@handles_errors
def list_(
    session: Annotated[str | None, typer.Option(help="only this watch session")] = None,
    camera: Annotated[str | None, typer.Option(help="only this camera")] = None,
    state: Annotated[
        str | None, typer.Option(help="pending, confirmed or rejected (default: all)")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="seen at or after this ISO 8601 time (no zone: UTC)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="seen at or before this ISO 8601 time (no zone: UTC)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many")] = 50,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Alerts newest first, with their best candidate, threshold and reviews (never the crop)."""
    from yingyan.watch.alerts import list_alerts

    after, before = parse_time(since, "--since"), parse_time(until, "--until")
    if after is not None and before is not None and after > before:
        raise ConfigError("--since must not be later than --until")
    filters = {"session": session, "camera": camera, "state": state}
    times = {"since": after, "until": before}
    with open_store(data, url) as db:
        alerts = list_alerts(db, **filters, **times, limit=limit)  # type: ignore[arg-type]
        details = filters | {"count": len(alerts), "alerts": [a.id for a in alerts]}

        def work(s: Any) -> None:
            record_cli(s, "watch.alert.list", details=details)

        db.run(work)
    if as_json:
        typer.echo(json.dumps([alert_dict(a) for a in alerts], indent=2))
        return
    table = Table()
    for col in ("id", "session", "camera", "state", "candidate", "score", "threshold", "seen"):
        table.add_column(col)
    table.add_column("reviews", justify="right")
    for a in alerts:
        top = a.candidates[0] if a.candidates else {}
        table.add_row(
            str(a.id),
            a.session,
            a.camera,
            a.state,
            str(top.get("external_id", "(erased)")),
            f"{top['score']:.4f}" if "score" in top else "",
            f"{a.threshold['score']:.4f}",
            _short(a.first_seen_at),
            str(len(a.reviews)),
        )
    out.print(table, markup=False)


@alerts_app.command("review")
@handles_errors
def review_(
    alert_id: Annotated[int, typer.Argument(help="the alert's id (see `alerts list`)")],
    verdict: Annotated[str, typer.Option(help="confirm or reject")],
    note: Annotated[str, typer.Option(help="why: what you compared, what you saw")],
    reviewer: Annotated[str, typer.Option(help="your name, recorded with your account")],
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One reviewer's verdict on a pending alert, with a note (audited). A reject closes it;
    it is confirmed once two different reviewers confirm."""
    from yingyan.watch.alerts import review

    name = reviewer.strip()
    if not name or not name.isprintable() or len(name) > 100:
        raise ConfigError("--reviewer must be a printable name of at most 100 characters")
    with open_store(data, url) as db:
        alert = review(db, alert_id, f"{cli_actor()}({name})", verdict, note)
    if as_json:
        typer.echo(json.dumps(alert_dict(alert), indent=2))
        return
    confirmations = sum(1 for r in alert.reviews if r.verdict == "confirm")
    typer.echo(
        f"alert {alert.id}: {alert.state} ({confirmations} confirmation(s), "
        f"{len(alert.reviews)} review(s))"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


def alert_dict(alert: Any) -> dict[str, Any]:
    """An `Alert` as JSON: times in ISO 8601."""
    return _jsonable(asdict(alert))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _short(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
