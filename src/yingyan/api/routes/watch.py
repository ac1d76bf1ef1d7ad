"""Watch sessions and their cameras: thin routes over `watch.sessions`.

Each act is one library call that does the act and appends its audit entry in one transaction
(actor: the key's label); the camera workers follow the database, and after an act that changes
what should run this service's runtime (if it runs one) is synced at once rather than at its
next periodic sync. A session searches several watchlists at once, so these routes need a key
scoped to no gallery (a scoped key is refused, audited)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from starlette.concurrency import run_in_threadpool

from yingyan.access.keys import ApiKey
from yingyan.api.schemas import ERROR_RESPONSES
from yingyan.api.security import require_unscoped
from yingyan.api.state import AppState, get_state
from yingyan.api.watch_schemas import (
    CameraIn,
    CameraOut,
    CameraPatch,
    SessionIn,
    SessionOut,
    SessionPatch,
    StopIn,
    WorkerOut,
)
from yingyan.errors import ConfigError
from yingyan.store.repository import KEEP
from yingyan.watch import sessions
from yingyan.watch.sessions import WatchSession

log = logging.getLogger("yingyan.api")

router = APIRouter(prefix="/api/v1/watch/sessions", tags=["watch"], responses=ERROR_RESPONSES)
State = Annotated[AppState, Depends(get_state)]
Reader = Annotated[ApiKey, Depends(require_unscoped("watch:read"))]
Writer = Annotated[ApiKey, Depends(require_unscoped("watch:write"))]


def _out(state: AppState, session: WatchSession) -> SessionOut:
    try:
        threshold = sessions.session_threshold(state.db, session.id)
    except ConfigError:  # no measured tail for the model and no explicit threshold
        threshold = None
    return SessionOut.of(session, threshold)


async def _synced(state: AppState) -> None:
    """Let this service's camera workers follow the act now. A failure here is logged, not
    answered: the act is committed and the runtime's periodic sync retries."""
    if state.watch is None:
        return
    try:
        await run_in_threadpool(state.watch.sync)
    except Exception:
        log.exception("watch runtime: sync after an act failed")


@router.post("", status_code=201, response_model=SessionOut)
async def create(body: SessionIn, state: State, key: Writer) -> SessionOut:
    """Start a watch session over watchlist galleries: purpose, case reference, legal basis
    and a future expiry are required. Its threshold is chosen for `target_fpir` given the
    watchlists' total size, unless an explicit `threshold` is given."""

    def work() -> SessionOut:
        made = sessions.create_session(
            state.db,
            name=body.name,
            purpose=body.purpose,
            case_ref=body.case_ref,
            legal_basis=body.legal_basis,
            expires_at=body.expires_at,
            galleries=body.watchlists,
            actor=key.label,
            target_fpir=body.target_fpir,
            threshold=body.threshold,
        )
        return _out(state, made)

    out = await run_in_threadpool(work)
    await _synced(state)
    return out


@router.get("", response_model=list[SessionOut])
async def list_(
    state: State,
    key: Reader,
    include_stopped: Annotated[bool, Query(description="list stopped sessions too")] = True,
) -> list[SessionOut]:
    def work() -> list[SessionOut]:
        found = sessions.list_sessions(state.db, include_stopped=include_stopped)
        return [_out(state, s) for s in found]

    return await run_in_threadpool(work)


@router.get("/{session}", response_model=SessionOut)
async def get(session: str, state: State, key: Reader) -> SessionOut:
    """A session with the threshold its alerts use now and where that comes from."""
    return await run_in_threadpool(lambda: _out(state, sessions.get_session(state.db, session)))


@router.patch("/{session}", response_model=SessionOut)
async def change(session: str, body: SessionPatch, state: State, key: Writer) -> SessionOut:
    """Change an open session (audited with each field before and after)."""
    threshold = body.threshold if "threshold" in body.model_fields_set else KEEP

    def work() -> SessionOut:
        changed = sessions.change_session(
            state.db,
            session,
            actor=key.label,
            purpose=body.purpose,
            case_ref=body.case_ref,
            legal_basis=body.legal_basis,
            expires_at=body.expires_at,
            galleries=body.watchlists,
            target_fpir=body.target_fpir,
            threshold=threshold,
        )
        return _out(state, changed)

    out = await run_in_threadpool(work)
    await _synced(state)
    return out


@router.post("/{session}/stop", response_model=SessionOut)
async def stop(
    session: str,
    state: State,
    key: Writer,
    body: Annotated[StopIn | None, Body()] = None,
) -> SessionOut:
    """Stop a session: its cameras' workers end, its alerts stay for review."""
    reason = body.reason if body is not None else None

    def work() -> SessionOut:
        stopped = sessions.stop_session(state.db, session, actor=key.label, reason=reason)
        return _out(state, stopped)

    out = await run_in_threadpool(work)
    await _synced(state)
    return out


# -- cameras -------------------------------------------------------------------------------------


@router.post("/{session}/cameras", status_code=201, response_model=CameraOut)
async def add_camera(session: str, body: CameraIn, state: State, key: Writer) -> CameraOut:
    """Add a camera to an open session (its URL is audited and shown with credentials
    masked). This service's runtime starts its worker at once, if it runs one."""

    def work() -> CameraOut:
        camera = sessions.add_camera(
            state.db,
            session,
            name=body.name,
            url=body.url,
            actor=key.label,
            settings=body.settings,
            enabled=body.enabled,
        )
        return CameraOut.of(camera)

    out = await run_in_threadpool(work)
    await _synced(state)
    return out


@router.get("/{session}/cameras", response_model=list[CameraOut])
async def list_cameras(session: str, state: State, key: Reader) -> list[CameraOut]:
    """The session's cameras, each with its last heartbeat (written by its worker, on any
    host) and, when this service runs the workers, its worker's state."""

    def work() -> list[CameraOut]:
        cameras = sessions.list_cameras(state.db, session)
        status = {s.camera: s for s in sessions.camera_statuses(state.db, session)}
        workers: dict[str, WorkerOut] = {}
        problems: dict[str, str] = {}
        if state.watch is not None:
            for w in state.watch.status():
                if w.session == session:
                    workers[w.camera] = WorkerOut(
                        state=w.state,
                        pid=w.pid,
                        restarts=w.restarts,
                        heartbeat_age_s=w.heartbeat_age_s,
                    )
            prefix = f"{session}/"
            for wid, why in state.watch.invalid().items():
                if wid.startswith(prefix):
                    problems[wid[len(prefix) :]] = why
        return [
            CameraOut.of(c, status.get(c.name), workers.get(c.name), problems.get(c.name))
            for c in cameras
        ]

    return await run_in_threadpool(work)


@router.patch("/{session}/cameras/{camera}", response_model=CameraOut)
async def change_camera(
    session: str, camera: str, body: CameraPatch, state: State, key: Writer
) -> CameraOut:
    """Change a camera's URL, settings or whether it is enabled; its worker restarts with
    them (or stops, when disabled)."""

    def work() -> CameraOut:
        changed = sessions.change_camera(
            state.db,
            session,
            camera,
            actor=key.label,
            url=body.url,
            settings=body.settings,
            enabled=body.enabled,
        )
        return CameraOut.of(changed)

    out = await run_in_threadpool(work)
    await _synced(state)
    return out


@router.delete("/{session}/cameras/{camera}", status_code=204)
async def remove_camera(session: str, camera: str, state: State, key: Writer) -> None:
    """Remove a camera; its worker ends, its alerts keep the camera's name."""
    await run_in_threadpool(
        lambda: sessions.remove_camera(state.db, session, camera, actor=key.label)
    )
    await _synced(state)
