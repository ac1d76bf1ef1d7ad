"""What the running service holds: settings, the database, the gallery service, the inference
pool and the metrics. Built in the app's lifespan and reached through `request.app.state`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from yingyan.access.keys import ApiKey
from yingyan.api.inference import InferencePool
from yingyan.api.observability import Metrics
from yingyan.audit.log import AuditRecord, append
from yingyan.gallery.service import GalleryService
from yingyan.settings import Settings
from yingyan.store import Database

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    db: Database
    galleries: GalleryService
    inference: InferencePool
    metrics: Metrics
    # The gallery service keeps open indexes that are not safe for concurrent writes and
    # searches; one lock serialises gallery work (each call is milliseconds, inference is not
    # under it).
    gallery_lock: threading.Lock = field(default_factory=threading.Lock)

    async def gallery_call(self, fn: Callable[[GalleryService], T]) -> T:
        """Run a gallery operation in a thread, under the gallery lock."""

        def locked() -> T:
            with self.gallery_lock:
                return fn(self.galleries)

        return await run_in_threadpool(locked)

    async def audit(self, record: AuditRecord) -> None:
        """Append to the audit log (its own transaction); an operation is answered only once
        its entry is stored."""

        def write() -> None:
            with self.db.session() as session:
                append(session, record)

        await run_in_threadpool(write)
        self.metrics.audit.labels(record.outcome).inc()

    async def record(
        self,
        key: ApiKey,
        operation: str,
        *,
        gallery: str | None = None,
        purpose: str | None = None,
        case_reference: str | None = None,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """`audit` of an operation made with `key`."""
        record = AuditRecord(
            key.label, operation, outcome, gallery, purpose, case_reference, details or {}
        )
        await self.audit(record)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.yingyan
    return state
