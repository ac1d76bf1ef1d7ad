"""The FastAPI application: built by `create_app(settings)`, resources opened in its lifespan.

Layers, outermost first: body-size limit → request id, metrics and access log → routes, each
with its key/role dependency → errors turned into JSON. Inference runs in worker processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from yingyan import __version__
from yingyan.access.keys import count_active_keys, create_key
from yingyan.api import compreface, errors
from yingyan.api.inference import InferencePool
from yingyan.api.observability import (
    BodyLimitMiddleware,
    Metrics,
    ObservabilityMiddleware,
    configure_logging,
)
from yingyan.api.routes import audit, biometrics, galleries, subjects, system
from yingyan.api.state import AppState
from yingyan.audit.log import AuditRecord, append
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import GalleryService
from yingyan.privacy import DEFAULT_KEY_FILE, ENV_KEY, TemplateCipher, key_source, open_cipher
from yingyan.settings import Settings
from yingyan.store import Database, open_database

log = logging.getLogger("yingyan.api")

INITIAL_KEY_FILE = "initial-admin-key"


def bootstrap_admin_key(db: Database, data_dir: Path) -> Path | None:
    """On a service without any key, create one admin key and write it to a file only the
    owner can read (it is not printed, so it does not end up in logs). Returns the file."""
    with db.session() as session:
        if count_active_keys(session) > 0:
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
        path = data_dir / INITIAL_KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(issued.token + "\n")
    return path


def service_cipher(settings: Settings) -> TemplateCipher:
    """Templates are encrypted by default: without a configured key, a keyring is created in
    the data folder (production should keep it elsewhere: YINGYAN_KEY_FILE)."""
    environ = {ENV_KEY: settings.template_key} if settings.template_key else {}
    default = settings.data_dir / DEFAULT_KEY_FILE
    return open_cipher(key_source(settings.key_file, environ, default))


def open_state(settings: Settings, metrics: Metrics) -> AppState:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.database_url, settings.data_dir)
    cipher = service_cipher(settings)
    milvus = None
    if settings.index == "milvus":
        milvus = settings.milvus_uri or str(settings.data_dir / "milvus.db")
    service = GalleryService(
        db, settings.index_dir, IndexSpec(kind=settings.index), milvus, cipher=cipher
    )
    pool = InferencePool(settings.engine_config(), settings.workers, settings.max_faces)
    return AppState(settings, db, service, pool, metrics)


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
        try:
            info = await state.inference.start()
            key_file = await run_in_threadpool(bootstrap_admin_key, state.db, settings.data_dir)
            app.state.yingyan = state
            app.state.initial_key_file = key_file
            log.info("ready", extra={"model": str(info.model), **info.description})
            if announce is not None:
                announce(settings, key_file)
            yield
        finally:
            state.inference.close()
            state.galleries.close()
            state.db.close()

    app = FastAPI(
        title="Yingyan",
        version=__version__,
        summary="Open, accountable face recognition: detect, verify, identify.",
        description=(
            "Every route but /health and /ready needs an API key (`x-api-key` header or "
            "`Authorization: Bearer`). Identification returns candidates for human review, "
            "never decisions. Probe images and templates are never stored."
        ),
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (system, galleries, subjects, biometrics, audit):
        app.include_router(module.router)
    app.include_router(compreface.router)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    return app
