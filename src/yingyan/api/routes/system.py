"""Probes and metrics. /health and /ready answer without a key (orchestrators probe them and
they reveal nothing); /metrics needs a key that may read the audit log (admin, auditor) and is
not scoped to galleries (its figures cover them all)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from yingyan.access.keys import ApiKey
from yingyan.api.errors import ApiError
from yingyan.api.schemas import ERROR_RESPONSES, Health, Readiness
from yingyan.api.security import require_unscoped
from yingyan.api.state import AppState, get_state

router = APIRouter(tags=["system"])
State = Annotated[AppState, Depends(get_state)]


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up and its event loop answers."""
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses={503: ERROR_RESPONSES[503]})
async def ready(state: State) -> Readiness:
    """The database answers and the inference workers have loaded their models (not while a
    dead worker's pool is being replaced)."""

    def ping() -> None:
        with state.db.read() as session:
            session.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:
        raise ApiError("not_ready", f"database unavailable: {type(exc).__name__}") from None
    unready = state.inference.unready_reason()
    info = state.inference.info
    if unready is not None or info is None:
        raise ApiError("not_ready", unready or "the inference workers are starting")
    return Readiness(
        status="ready",
        model=str(info.model),
        models=list(info.models),
        detector=info.description["detector"],
        workers=state.inference.workers,
        database=state.db.backend,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}},
        401: ERROR_RESPONSES[401],
        403: ERROR_RESPONSES[403],
    },
)
async def metrics(
    state: State, key: Annotated[ApiKey, Depends(require_unscoped("audit:read"))]
) -> Response:
    """Prometheus metrics (text format 0.0.4). Their series count the requests, searches and
    audit entries of every gallery together (labelled by route template, never by gallery), so
    they need a key that may read the audit log and is scoped to no gallery."""
    # Rendering reads the cameras' heartbeats from the database: off the event loop.
    body = await run_in_threadpool(state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
