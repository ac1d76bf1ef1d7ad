"""What the running service holds: settings, the database, the gallery service, the inference
pool and the metrics. Built in the app's lifespan and reached through `request.app.state`.

Every state-changing route is one unit of work: `act` (or a gallery service write given the
`hook` of `audit_hook`) does the act and appends its audit entry in one transaction, so an act
is never left without its entry. The entry's fixed fields are checked before the act. Searches
and refusals change nothing but the log: `record` commits their entry before the answer goes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from yingyan.access.keys import ApiKey
from yingyan.api.inference import InferencePool
from yingyan.api.observability import Metrics
from yingyan.audit.log import AuditRecord, append, check_record
from yingyan.errors import ModelMismatchError
from yingyan.gallery.service import GalleryService, Hook
from yingyan.settings import Settings
from yingyan.store import Database
from yingyan.types import Face

if TYPE_CHECKING:
    from yingyan.watch.events import EventOutbox
    from yingyan.watch.runtime import WatchRuntime

T = TypeVar("T")
Details = Mapping[str, Any] | Callable[[Any], Mapping[str, Any]] | None


@dataclass
class AppState:
    settings: Settings
    db: Database
    galleries: GalleryService
    inference: InferencePool
    metrics: Metrics
    # Camera workers, when this service runs them (settings.watch_cameras and workers > 0).
    watch: WatchRuntime | None = None
    outbox: EventOutbox | None = None  # webhook delivery of alert events, when configured
    # Set when the service shuts down: long-lived responses (the alert stream) end on it.
    stopping: threading.Event = field(default_factory=threading.Event)

    async def call(self, fn: Callable[[GalleryService], T]) -> T:
        """Run gallery work in a thread. No lock here: the gallery service lets searches run
        in parallel and locks only the gallery an index update concerns."""
        return await run_in_threadpool(fn, self.galleries)

    async def with_probes(
        self,
        gallery: str,
        data: bytes,
        work: Callable[[GalleryService, list[Face]], T],
        *,
        policy: str = "all",
        model: str | None = None,
    ) -> tuple[list[Face], T]:
        """The faces of `data` embedded for the gallery's model (`model` if the caller just
        read it), then `work` on them (a search, a verification, an enrolment). A migration
        that switches the gallery in between makes `work` refuse the probes
        (ModelMismatchError); they are then made once more for the new model: a request is
        served across a switch and never compares two models."""
        for attempt in (0, 1):
            if model is None:
                model = await self.call(lambda g: g.gallery_model(gallery))
            faces = await self.inference.faces(data, policy=policy, model=model)
            try:
                return faces, await self.call(partial(_on_faces, work, faces))
            except ModelMismatchError:
                now = await self.call(lambda g: g.gallery_model(gallery))
                if attempt or now == model:
                    raise
                model = now
        raise AssertionError("unreachable")

    def audit_hook(
        self,
        key: ApiKey,
        operation: str,
        *,
        gallery: str | None = None,
        purpose: str | None = None,
        case_reference: str | None = None,
        details: Details = None,
    ) -> Hook:
        """The hook that appends an act's entry in the act's own transaction; `details` may be
        a function of the act's result. The record is checked now, before the act."""
        base = AuditRecord(key.label, operation, "ok", gallery, purpose, case_reference, {})
        check_record(base if callable(details) else replace(base, details=details or {}))

        def hook(session: Session, result: Any) -> None:
            found = details(result) if callable(details) else details
            append(session, replace(base, details=found or {}))
            self.metrics.audit.labels("ok").inc()

        return hook

    async def act(self, work: Callable[[Session], T], audit: Hook) -> T:
        """A database act (one that touches no index) and its entry, in one unit of work."""
        return await run_in_threadpool(lambda: self.galleries.write(work, audit=audit))

    async def audit(self, record: AuditRecord) -> None:
        """Append an entry in its own unit of work (searches, refusals): the caller answers
        only once it is committed."""
        await run_in_threadpool(lambda: self.db.run(lambda s: append(s, record)))
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


def _on_faces(
    work: Callable[[GalleryService, list[Face]], T], faces: list[Face], g: GalleryService
) -> T:
    return work(g, faces)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.yingyan
    return state
