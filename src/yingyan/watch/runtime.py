"""The camera workers of a deployment, kept in line with the database.

The database is the truth: the runtime keeps one supervised worker (`watch.camera.run_camera`,
one spawned process per camera, see `watch/supervisor.py`) for every enabled camera of every
open watch session, and `sync()` reconciles the two: a camera added starts a worker; a camera
removed or disabled, or a session stopped or expired, ends it; a camera or session whose
settings changed gets a new worker. Whoever changes the database (the API, `yingyan watch`)
calls `sync()` after the act; a background thread also calls it every few seconds, so changes
made by another process and expiries are followed too.

The runtime holds no frame and queues nothing per frame: workers read their sources through the
freshest-frame slot and report small heartbeats, of which the supervisor keeps the newest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from yingyan.config import EngineConfig
from yingyan.errors import ConfigError, YingyanError
from yingyan.privacy.files import private_dir
from yingyan.settings import Settings
from yingyan.store import Database, open_database
from yingyan.store.tables import utcnow
from yingyan.video.crowd import crowd_tiling
from yingyan.video.pipeline import PipelineSettings
from yingyan.video.source import SourceSpec
from yingyan.watch.camera import run_camera, video_engine_config
from yingyan.watch.sessions import WatchCamera, WatchSession, list_cameras, list_sessions
from yingyan.watch.supervisor import (
    RestartPolicy,
    StatusChannel,
    Supervisor,
    UnknownCameraError,
    WorkerSpec,
    WorkerStatus,
)

log = logging.getLogger("yingyan.watch.runtime")

TARGET: Final = "yingyan.watch.runtime:run_session_camera"
# Keys of a worker's config the runtime sets; a camera's settings cannot replace them.
RESERVED: Final = frozenset({"settings", "session", "camera", "camera_row"})
SOURCE_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(SourceSpec)) - {"url"}
ENGINE_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(EngineConfig)) - {"limits"}


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Worker ids started and removed by one `sync()` (a changed camera is in both), and those
    of cameras left without a worker because their settings are invalid (`invalid()`: why)."""

    started: tuple[str, ...]
    removed: tuple[str, ...]
    invalid: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CameraRuntime:
    """One supervised camera as the API and `yingyan watch` show it.

    state: starting (no heartbeat yet: models loading, first connection), running, restarting
    (exited or killed, waiting out its back-off), exited (a file that ended), failed (a source
    that failed for good, e.g. an unreadable file), stopped."""

    session: str
    camera: str
    camera_row: int
    state: str
    pid: int | None
    restarts: int
    heartbeat_age_s: float | None
    stats: Mapping[str, Any]  # the last heartbeat's: connected, input_fps, lag_s, dropped, ...
    last_exit: int | None = None  # negative: killed by that signal (-9: SIGKILL)
    hangs: int = 0  # times killed for not heartbeating


@dataclass(frozen=True, slots=True)
class _Planned:
    session: str
    camera: str
    camera_row: int
    spec: WorkerSpec
    fingerprint: str


def worker_id(session: str, camera: str) -> str:
    return f"{session}/{camera}"


@dataclass(frozen=True, slots=True)
class CameraParts:
    """A camera's settings split into what `run_camera` reads: SourceSpec fields (without the
    url), PipelineSettings fields, EngineConfig overrides, and the keys passed through."""

    source: dict[str, Any]
    pipeline: dict[str, Any]
    engine: dict[str, Any]
    extra: dict[str, Any]
    spec: SourceSpec


def camera_parts(url: str, settings: Mapping[str, Any]) -> CameraParts:
    """Split and check a camera's settings: `source`, `pipeline` and `engine` tables, the
    shorthands `detect_every` (pipeline) and any SourceSpec field (`realtime`, `loop`,
    `read_timeout_s`, ...); every other key (e.g. `crowd`) is passed through as it is.
    ConfigError names what is wrong."""
    extra = dict(settings)
    source = _table(extra.pop("source", None), "source")
    pipeline = _table(extra.pop("pipeline", None), "pipeline")
    engine = _table(extra.pop("engine", None), "engine")
    for key in sorted(SOURCE_FIELDS & extra.keys()):
        source[key] = extra.pop(key)
    if "detect_every" in extra:
        pipeline["detect_every"] = extra.pop("detect_every")
    reserved = sorted(RESERVED & extra.keys())
    if reserved:
        raise _invalid(f"settings may not set {', '.join(reserved)}")
    spec = _built(SourceSpec, {"url": url, **source}, "source")
    _built(PipelineSettings, pipeline, "pipeline")
    crowd_tiling(extra.get("crowd"))  # a typo must not silently turn tiling off
    unknown = sorted(set(engine) - ENGINE_FIELDS)
    if unknown:
        known = ", ".join(sorted(ENGINE_FIELDS))
        raise _invalid(f"unknown engine setting(s) {', '.join(unknown)}; known: {known}")
    return CameraParts(source, pipeline, engine, extra, spec)


def check_engine(settings: Settings, engine: Mapping[str, Any]) -> None:
    """The camera's engine overrides on top of the service's video engine: ConfigError for a
    bad detector, path or value."""
    try:
        video_engine_config(settings, engine)
    except TypeError as error:
        raise _invalid(f"engine: {error}") from None


def worker_config(
    settings: Settings, session: WatchSession, camera: WatchCamera
) -> tuple[dict[str, Any], RestartPolicy]:
    """The config `run_camera` gets for `camera` (see `camera_parts`), and its restart policy.
    Raises ConfigError when the camera's settings are invalid, so that such a camera gets no
    worker rather than a crash loop. Streams, devices and looping files are restarted whatever
    their exit; a file is done when its worker exits cleanly at its end."""
    parts = camera_parts(camera.url, camera.settings)
    check_engine(settings, parts.engine)
    config = parts.extra | {
        "settings": settings.model_dump(mode="json"),
        "session": session.name,
        "camera": camera.name,
        "camera_row": camera.id,
        "source": {"url": camera.url, **parts.source},
        "pipeline": parts.pipeline,
        "engine": parts.engine,
    }
    spec = parts.spec
    restart: RestartPolicy = "always" if spec.reconnects or spec.loop else "on_failure"
    return config, restart


def run_session_camera(worker: str, config: dict[str, Any], status: StatusChannel) -> None:
    """The supervisor's target: `run_camera` under the camera's own name (alerts and the
    pipeline name the camera, not the worker id `session/camera`). SIGINT is ignored: Ctrl-C
    in a terminal reaches the whole process group, and it is the parent that ends workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_camera(str(config["camera"]), config, status)


class WatchRuntime:
    """Keeps one supervised camera worker (watch.camera:run_camera) per enabled camera of every
    open watch session in the database; the DB is the truth, workers follow it.

    Thread-safe: `sync()` may be called from request threads while the background thread runs.
    `stop()` ends the supervisor too (also one passed in)."""

    def __init__(
        self,
        settings: Settings,
        *,
        supervisor: Supervisor | None = None,
        sync_every_s: float = 2.0,
    ) -> None:
        if not sync_every_s > 0:
            raise _invalid(f"sync_every_s must be positive, not {sync_every_s}")
        self.settings = settings
        self.sync_every_s = sync_every_s
        self.supervisor = supervisor or Supervisor(
            max_restarts_per_window=5, backoff_max_s=30.0, heartbeat_timeout_s=30.0
        )
        private_dir(settings.data_dir)
        self.db: Database = open_database(settings.database_url, settings.data_dir)
        self._running: dict[str, _Planned] = {}  # changed under _lock, briefly
        self._lock = threading.Lock()
        self._invalid: dict[str, str] = {}  # worker id -> why, logged once per change
        self._sync_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def __enter__(self) -> WatchRuntime:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the supervisor and sync now, then every `sync_every_s` in a background thread."""
        if self._stopped:
            raise _invalid("the watch runtime has stopped")
        if self._thread is not None:
            return
        self.supervisor.start()
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="yingyan-watch-sync", daemon=True)
        self._thread.start()

    def sync(self) -> SyncResult:
        """Reconcile now: start workers for new cameras; remove workers of removed or disabled
        cameras, of stopped or expired sessions, and of cameras whose settings changed (they
        start again with the new ones)."""
        with self._sync_lock:
            if self._stopped:
                return SyncResult((), ())
            wanted, invalid = self._plan()
            with self._lock:
                removed = [
                    wid
                    for wid, planned in self._running.items()
                    if wid not in wanted or wanted[wid].fingerprint != planned.fingerprint
                ]
                for wid in removed:
                    del self._running[wid]
            for wid in removed:
                with contextlib.suppress(UnknownCameraError):  # stopped meanwhile
                    self.supervisor.remove(wid)
                log.info("camera %s: worker removed", wid)
            started = []
            for wid, planned in wanted.items():
                if wid in self._running:
                    continue
                try:
                    self.supervisor.add(planned.spec)
                except OSError as error:  # out of processes or memory: the next sync retries
                    log.error("camera %s: cannot start its worker: %s", wid, error)
                    continue
                with self._lock:
                    self._running[wid] = planned
                started.append(wid)
                log.info("camera %s: worker started", wid)
            for wid, why in invalid.items():
                if self._invalid.get(wid) != why:
                    log.error("camera %s: no worker: %s", wid, why)
            self._invalid = invalid
            return SyncResult(tuple(started), tuple(removed), tuple(sorted(invalid)))

    def status(self) -> list[CameraRuntime]:
        """One per supervised camera, in worker id order."""
        with self._lock:
            running = sorted(self._running.items())
        workers = self.supervisor.status()
        now = time.time()
        out = []
        for wid, planned in running:
            worker = workers.get(wid)
            if worker is not None:
                out.append(_runtime(planned, worker, now))
        return out

    def invalid(self) -> dict[str, str]:
        """Cameras left without a worker at the last sync, and why."""
        return dict(self._invalid)

    def stop(self, timeout_s: float = 5.0) -> None:
        """End every worker (SIGTERM, SIGKILL after `timeout_s`) and the background sync. Final."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._sync_lock:
            if self._stopped:
                return
            self._stopped = True
            with self._lock:
                self._running.clear()
        self.supervisor.stop(timeout_s)
        self.db.close()

    def _loop(self) -> None:
        while not self._stopping.wait(self.sync_every_s):
            try:
                self.sync()
            except Exception:  # a database briefly away must not end the runtime
                log.exception("watch runtime: sync failed")

    def _plan(self) -> tuple[dict[str, _Planned], dict[str, str]]:
        """What the database asks for: a worker per enabled camera of each open session."""
        now = utcnow()
        wanted: dict[str, _Planned] = {}
        invalid: dict[str, str] = {}
        for session in list_sessions(self.db, include_stopped=False):
            if not session.is_open(now):
                continue
            for camera in list_cameras(self.db, session.name):
                if not camera.enabled:
                    continue
                wid = worker_id(session.name, camera.name)
                try:
                    config, restart = worker_config(self.settings, session, camera)
                    spec = WorkerSpec(wid, TARGET, config, restart=restart)
                except YingyanError as error:
                    invalid[wid] = error.message
                    continue
                mark = _fingerprint(spec, session)
                wanted[wid] = _Planned(session.name, camera.name, camera.id, spec, mark)
        return wanted, invalid


def _runtime(planned: _Planned, worker: WorkerStatus, now: float) -> CameraRuntime:
    return CameraRuntime(
        session=planned.session,
        camera=planned.camera,
        camera_row=planned.camera_row,
        state=_state(worker),
        pid=worker.pid if worker.alive else None,
        restarts=worker.restarts,
        heartbeat_age_s=None
        if worker.last_heartbeat is None
        else round(max(0.0, now - worker.last_heartbeat), 3),
        stats=dict(worker.stats),
        last_exit=worker.last_exit,
        hangs=worker.hangs,
    )


def _state(worker: WorkerStatus) -> str:
    if worker.state == "running":
        return "running" if worker.last_heartbeat is not None else "starting"
    if worker.state == "backoff":
        return "restarting"
    if worker.state == "finished":
        return "failed" if worker.stats.get("state") == "failed" else "exited"
    return worker.state


def _fingerprint(spec: WorkerSpec, session: WatchSession) -> str:
    """What a worker depends on: its config, and the session's watchlists and threshold (a
    worker reads them when it starts)."""
    depends = {
        "config": spec.config,
        "restart": spec.restart,
        "galleries": sorted(session.galleries),
        "threshold": session.threshold,
        "target_fpir": session.target_fpir,
    }
    data = json.dumps(depends, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


def _table(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _invalid(f"{what} must be a table of settings, not {type(value).__name__}")
    return dict(value)


def _built(kind: type, fields: Mapping[str, Any], what: str) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise _invalid(
            f"unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return kind(**fields)
    except TypeError as error:
        raise _invalid(f"{what}: {error}") from None


def _invalid(message: str) -> ConfigError:
    return ConfigError(message)
