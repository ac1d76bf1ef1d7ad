"""`yingyan watch --config cameras.toml`: a watch session and its cameras from a file, watched in
the foreground until Ctrl-C or SIGTERM.

The file is applied to the database first (the session started or changed, cameras added,
changed or removed: each an audited act of the account running the command), then a
`WatchRuntime` keeps one camera worker per enabled camera, as `yingyan serve` does. The command
prints each camera's health every few seconds and each alert as it is raised; alerts are
reviewed by people with `yingyan alerts review`, nothing acts on them by itself."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from yingyan.cli.audit import cli_actor
from yingyan.cli.gallery import DataDirOpt, DbUrlOpt
from yingyan.cli.options import handles_errors
from yingyan.privacy.redaction import redact_url
from yingyan.store import Database
from yingyan.store.tables import utcnow

if TYPE_CHECKING:
    from yingyan.watch.runtime import CameraRuntime, WatchRuntime

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="the session and its cameras (TOML; see docs/cameras.example.toml)"
    ),
]
EveryOpt = Annotated[
    float, typer.Option("--status-every", min=0.5, max=3600, help="seconds between status lines")
]
ALERT_POLL_S = 1.0


def register(app: typer.Typer) -> None:
    @app.command()
    @handles_errors
    def watch(
        config: ConfigOpt,
        data_dir: DataDirOpt = None,
        database_url: DbUrlOpt = None,
        status_every: EveryOpt = 5.0,
    ) -> None:
        """Watch the cameras of a config file in the foreground, until Ctrl-C or SIGTERM.

        One worker process per camera, restarted when it dies; a status line per camera every
        few seconds and each alert as it is raised. Ctrl-C or SIGTERM ends every worker and
        exits 0.

        Settings (models, keys, database) come from YINGYAN_* variables as for `yingyan serve`;
        do not also run camera workers for this database there (YINGYAN_WATCH_CAMERAS=false)."""
        from yingyan.settings import load_settings
        from yingyan.watch.config import apply_watch_config, load_watch_config
        from yingyan.watch.runtime import WatchRuntime

        given = {"data_dir": data_dir, "database_url": database_url}
        settings = load_settings(**{k: v for k, v in given.items() if v is not None})
        cfg = load_watch_config(config, settings)
        with _stop_on_signals() as stop:
            runtime = WatchRuntime(settings)
            try:
                session = apply_watch_config(runtime.db, cfg, cli_actor())
                _announce(runtime.db, session.name, session.expires_at)
                started = utcnow()
                runtime.start()
                _watch(runtime, session.name, started, status_every, stop)
            finally:
                ended = len(runtime.status())
                runtime.stop()
        typer.echo(f"stopped: {ended} camera worker(s) ended")


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set an event (the loop ends, workers are stopped in order) instead of
    raising wherever the main thread happens to be; the previous handlers come back after."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _announce(db: Database, name: str, expires_at: datetime) -> None:
    from yingyan.watch.sessions import list_cameras, session_threshold

    threshold = session_threshold(db, name)
    typer.echo(
        f"session {name}: until {expires_at.isoformat(timespec='seconds')}, threshold "
        f"{threshold.score:.4f} ({threshold.source}), {threshold.watchlist_size} subject(s)"
    )
    cameras = list_cameras(db, name)
    for camera in cameras:
        state = "" if camera.enabled else " (disabled)"
        typer.echo(f"  camera {camera.name}: {redact_url(camera.url)}{state}")
    if not any(c.enabled for c in cameras):
        typer.echo("  no enabled camera: nothing to watch until one is added")


def _watch(
    runtime: WatchRuntime, session: str, started: datetime, every: float, stop: threading.Event
) -> None:
    shown: set[int] = set()
    last_status = 0.0
    while not stop.is_set():
        _print_new_alerts(runtime.db, session, started, shown)
        now = time.monotonic()
        if now - last_status >= every:
            last_status = now
            for camera in runtime.status():
                typer.echo(status_line(camera))
            for worker, why in runtime.invalid().items():
                typer.echo(f"{worker}: not started: {why}")
        stop.wait(min(ALERT_POLL_S, every))


def _print_new_alerts(db: Database, session: str, since: datetime, shown: set[int]) -> None:
    from yingyan.watch.alerts import list_alerts

    for alert in reversed(list_alerts(db, session=session, since=since, limit=100)):
        if alert.id in shown:
            continue
        shown.add(alert.id)
        top = alert.candidates[0] if alert.candidates else {}
        again = "" if alert.created_at >= since else " (an earlier alert, seen again)"
        typer.echo(
            f"ALERT {alert.id}{again}: camera {alert.camera}, {top.get('external_id')} score "
            f"{top.get('score', float('nan')):.4f} >= {alert.threshold['score']:.4f} "
            f"({alert.threshold['source']}); {alert.state}, for two reviewers: "
            f"yingyan alerts review {alert.id} --verdict confirm|reject --note ... --reviewer ..."
        )


def status_line(camera: CameraRuntime) -> str:
    """One camera's health on one line (a `CameraRuntime`)."""
    stats = camera.stats
    link = "connected" if stats.get("connected") else str(stats.get("state", "no status yet"))
    parts = [
        time.strftime("%H:%M:%S"),
        f"{camera.session}/{camera.camera}",
        camera.state,
        link,
        f"in {float(stats.get('input_fps', 0.0)):.1f} fps",
        f"processed {float(stats.get('processed_fps', 0.0)):.1f} fps",
        f"lag {float(stats.get('lag_s', 0.0)):.2f} s",
        f"dropped {stats.get('dropped', 0)}",
        f"reconnects {stats.get('reconnects', 0)}",
        f"restarts {camera.restarts}",
        f"searches {stats.get('searches', 0)}",
    ]
    if camera.heartbeat_age_s is not None and camera.heartbeat_age_s > 10:
        parts.append(f"last heartbeat {camera.heartbeat_age_s:.0f} s ago")
    if stats.get("last_error") and not stats.get("connected"):
        parts.append(f"last error: {stats['last_error']}")
    return "  ".join(parts)
