"""The FastAPI application: built by `create_app(settings)`, resources opened in its lifespan.

Layers, outermost first: request id, metrics and access log → body-size limit → routes, each
with its key/role dependency and its key's rate limit → errors turned into JSON. Inference runs
in worker processes, which admit a bounded number of jobs (api/backpressure.py).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from yingyan import __version__
from yingyan.access.keys import authenticate, count_active_keys, create_key, list_keys
from yingyan.api import backpressure, compreface, errors, schemas
from yingyan.api.inference import InferencePool
from yingyan.api.observability import (
    BodyLimitMiddleware,
    CameraSample,
    Metrics,
    ObservabilityMiddleware,
    configure_logging,
)
from yingyan.api.routes import (
    alerts,
    audit,
    biometrics,
    galleries,
    stations,
    subjects,
    system,
    watch,
)
from yingyan.api.security import current_key
from yingyan.api.state import AppState
from yingyan.audit.log import AuditRecord, append
from yingyan.embedding.fusion import load_fusion
from yingyan.errors import ConfigError
from yingyan.gallery.factory import open_gallery_service
from yingyan.privacy.files import private_file, write_private
from yingyan.settings import Settings
from yingyan.store import Database

log = logging.getLogger("yingyan.api")

INITIAL_KEY_FILE = "initial-admin-key"
WEBHOOK_CURSOR_FILE = "webhook-cursor.json"


def bootstrap_admin_key(db: Database, data_dir: Path) -> Path | None:
    """On a service without any key, create one admin key and write it to a new file only the
    owner can read (it is not printed, so it does not end up in logs). Returns the file.

    The file is a hand-over, not a store: on a later start it is removed once it is no longer
    needed (`retire_initial_key_file`), and kept private meanwhile."""
    path = data_dir / INITIAL_KEY_FILE
    with db.session() as session:
        if count_active_keys(session) > 0:
            retire_initial_key_file(session, path)
            return None
        issued = create_key(session, name="initial admin", role="admin")
        append(
            session,
            AuditRecord(
                "system:bootstrap",
                "key.create",
                details={"prefix": issued.key.prefix, "role": "admin"},
            ),
        )
        # A new inode, mode 0600: a file left there keeps neither its mode nor its links.
        write_private(path, (issued.token + "\n").encode("ascii"))
    return path


def retire_initial_key_file(session: Session, path: Path) -> str | None:
    """Remove the initial admin key file when its key no longer authenticates (revoked,
    rotated, expired) or another active admin key exists (the operator has their own, e.g.
    from `yingyan keys create --role admin`): an admin secret does not stay on disk for good.
    Else make sure it is private. Audited; returns why it was removed, or None."""
    if not path.is_file():
        return None
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        token = ""
    key = authenticate(session, token)
    reason = None
    if key is None:
        reason = "its key is no longer valid"
    elif any(
        k.role == "admin" and k.id != key.id and k.status() == "active" for k in list_keys(session)
    ):
        reason = "another admin key exists"
    if reason is None:
        private_file(path)  # an older version may have left it readable
        return None
    path.unlink(missing_ok=True)
    details = {"reason": reason} | ({"prefix": key.prefix} if key is not None else {})
    append(session, AuditRecord("system:bootstrap", "key.initial_file_removed", details=details))
    log.info("initial admin key file removed", extra={"path": str(path), "reason": reason})
    return reason


def open_state(settings: Settings, metrics: Metrics) -> AppState:
    service = open_gallery_service(settings)
    service.remove_orphans()  # files of galleries deleted by a process that then crashed
    configs = settings.engine_configs()
    for config in configs:
        if config.fusion is not None:
            load_fusion(config.fusion)  # its thresholds, known here too (the workers' are apart)
    jobs = backpressure.job_limit(settings)  # admitted at once: a full pool answers 503
    pool = InferencePool(configs, settings.workers, settings.max_faces, jobs)
    return AppState(settings, service.db, service, pool, metrics)


def start_watch(state: AppState) -> None:
    """Camera workers (when `watch_cameras` and there are worker processes) and webhook
    delivery of alert events (when a webhook URL is set), started with the service."""
    settings = state.settings
    if settings.watch_cameras and settings.workers > 0:
        from yingyan.watch.runtime import WatchRuntime

        runtime = WatchRuntime(settings)
        runtime.start()
        state.watch = runtime
    if settings.webhook_url is not None:
        from yingyan.watch.delivery import DeliveryWorker, Webhook
        from yingyan.watch.events import EventOutbox

        assert settings.webhook_secret_file is not None  # Settings checks they come together
        try:
            secret = settings.webhook_secret_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"webhook secret file: {exc.strerror}") from None
        hook = Webhook(settings.webhook_url, secret)
        cursor = settings.data_dir / WEBHOOK_CURSOR_FILE
        outbox = EventOutbox(state.db, DeliveryWorker([hook]), cursor, settings.webhook_url)
        outbox.start()
        state.outbox = outbox
        log.info("alert webhook", extra={"url": hook.display_url, "after": outbox.cursor})


def stop_watch(state: AppState) -> None:
    """End open alert streams, webhook delivery (saving its cursor) and the camera workers,
    before the database closes."""
    state.stopping.set()
    if state.outbox is not None:
        state.outbox.stop()
    if state.watch is not None:
        state.watch.stop()


def camera_samples(state: AppState) -> list[CameraSample]:
    """Every camera of the open sessions with its last heartbeat from the database (the truth
    across hosts), and this process's worker state when it supervises the camera."""
    from yingyan.watch.sessions import camera_statuses, list_sessions

    now = datetime.now(UTC)
    found: dict[tuple[str, str], CameraSample] = {}
    for session in list_sessions(state.db, include_stopped=False):
        if not session.is_open(now):
            continue
        for status in camera_statuses(state.db, session.name):
            age = max(0.0, (now - status.updated_at).total_seconds())
            found[(session.name, status.camera)] = CameraSample(
                session.name, status.camera, status.stats, round(age, 3)
            )
    for worker in state.watch.status() if state.watch is not None else []:
        where = (worker.session, worker.camera)
        base = found.get(where, CameraSample(*where))
        found[where] = CameraSample(
            base.session,
            base.camera,
            base.stats,
            base.heartbeat_age_s,
            worker.restarts,
            worker.state == "running",
        )
    return [found[k] for k in sorted(found)]


def on_exit_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` when the server is told to stop (SIGINT/SIGTERM), then its own handler.

    Uvicorn waits for open responses before the lifespan's shutdown, so a stream that waited
    for that would hold the shutdown forever: streams end on this instead. Only where the
    server installed a handler in the main thread (not under a test client); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: dict[int, tuple[Callable[..., object], Callable[..., object]]] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def chained(
            signum: int, frame: FrameType | None, previous: Callable[..., object] = previous
        ) -> None:
            callback()
            previous(signum, frame)

        signal.signal(sig, chained)
        installed[sig] = (chained, previous)

    def undo() -> None:
        for sig, (chained, previous) in installed.items():
            if signal.getsignal(sig) is chained:
                signal.signal(sig, previous)

    return undo


def install_docs(app: FastAPI, *, public: bool) -> None:
    """/openapi.json, /docs (Swagger UI) and /redoc. They need a valid key of any role unless
    `public`, so that "every route but /health and /ready needs a key" holds by default; a
    browser then needs a proxy that adds the key header (or `public_docs` on a trusted host)."""
    guard = [] if public else [Depends(current_key)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API")


Announce = Callable[[Settings, Path | None], None]


def create_app(settings: Settings | None = None, announce: Announce | None = None) -> FastAPI:
    """The application. `announce(settings, initial_key_file)` is called once it is ready
    (the CLI prints where it listens and how to get the first admin key)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_json)
        state = await run_in_threadpool(open_state, settings, metrics)
        undo_signals = on_exit_signal(state.stopping.set)
        try:
            info = await state.inference.start()
            key_file = await run_in_threadpool(bootstrap_admin_key, state.db, settings.data_dir)
            await run_in_threadpool(start_watch, state)
            metrics.camera_source = lambda: camera_samples(state)
            app.state.yingyan = state
            app.state.initial_key_file = key_file
            log.info("ready", extra={"model": str(info.model), **info.description})
            if announce is not None:
                announce(settings, key_file)
            yield
        finally:
            undo_signals()
            metrics.camera_source = None
            await run_in_threadpool(stop_watch, state)
            state.inference.close()
            state.galleries.close()
            state.db.close()

    public = "/health, /ready and these docs" if settings.public_docs else "/health and /ready"
    app = FastAPI(
        title="Yingyan",
        version=__version__,
        summary="Open, accountable face recognition: detect, verify, identify.",
        description=(
            f"Every route but {public} needs an API key (`x-api-key` header or "
            "`Authorization: Bearer`). Identification returns candidates for human review, "
            "never decisions. Probe images and templates are never stored."
        ),
        lifespan=lifespan,
        openapi_url=None,  # served by install_docs, behind a key unless settings.public_docs
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app, public=settings.public_docs)
    errors.install(app)
    backpressure.install(app, settings, metrics)
    app.include_router(system.router)  # /health, /ready: no key; /metrics: not rate-limited
    modules = (galleries, subjects, biometrics, stations, audit, watch, alerts, compreface)
    for module in modules:
        app.include_router(module.router, dependencies=backpressure.PER_KEY)  # keys' rate limits
    schemas.install_links(app)  # OpenAPI links: create → read, change, delete
    # The last added runs first: the access log and metrics see the body limit's 413s too.
    routes = [route for module in modules for route in module.router.routes]  # no prefixes
    app.add_middleware(backpressure.AdmissionMiddleware, routes=routes)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return app
