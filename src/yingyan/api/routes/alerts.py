"""Alerts and their review: thin routes over `watch.alerts`, and the live stream of alert
events (Server-Sent Events over `watch.events`, resumable with `Last-Event-ID`).

Who may do what:
- watch:read (operator, reviewer, auditor, admin): list and read alerts (ids, times,
  candidates' ids and scores, threshold, reviews) and follow the stream;
- alerts:review (reviewer, admin): the best-shot crop, and verdicts. The crop is biometric data
  of someone who may not be the person sought: only those who must judge the match see it, and
  every view is audited ("watch.alert.view", committed before the bytes go out).

A reviewer is the key: two different keys must confirm before an alert is confirmed, and one
reject rejects it. As with sessions, a key scoped to galleries is refused: an alert's candidates
come from every watchlist of its session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from yingyan.access.keys import ApiKey
from yingyan.api.schemas import ERROR_RESPONSES
from yingyan.api.security import require_unscoped
from yingyan.api.state import AppState, get_state
from yingyan.api.watch_schemas import AlertOut, ReviewIn, Time
from yingyan.store.repository import DB_INT_MAX
from yingyan.watch import alerts, events
from yingyan.watch.alerts import MAX_LIMIT
from yingyan.watch.delivery import resume_id, stream_events

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=ERROR_RESPONSES)
State = Annotated[AppState, Depends(get_state)]
Reader = Annotated[ApiKey, Depends(require_unscoped("watch:read"))]
Reviewer = Annotated[ApiKey, Depends(require_unscoped("alerts:review"))]
AlertId = Annotated[int, Path(ge=0, le=DB_INT_MAX, description="an alert's id")]
POLL_S: Final = 1.0  # how often the stream reads the database when nothing is new
HEARTBEAT_S: Final = 15.0
RETRY_MS: Final = 3000
EVENTS_PER_POLL: Final = 100


@router.get("", response_model=list[AlertOut])
async def list_(
    state: State,
    key: Reader,
    session: Annotated[str | None, Query(max_length=200)] = None,
    camera: Annotated[str | None, Query(max_length=200)] = None,
    alert_state: Annotated[
        Literal["pending", "confirmed", "rejected"] | None, Query(alias="state")
    ] = None,
    since: Annotated[Time | None, Query(description="seen at or after (with its offset)")] = None,
    until: Annotated[Time | None, Query(description="seen at or before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> list[AlertOut]:
    """Alerts newest first; `since`/`until` select those whose span overlaps the interval."""

    def work() -> list[AlertOut]:
        found = alerts.list_alerts(
            state.db,
            session=session,
            camera=camera,
            state=alert_state,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
        return [AlertOut.of(a) for a in found]

    return await run_in_threadpool(work)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "alert events"}},
)
async def stream(
    state: State,
    key: Reader,
    last_event_id: Annotated[
        str | None, Header(max_length=40, description="resume after this event id")
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=DB_INT_MAX, description="start after this event id (default: now)"),
    ] = None,
    timeout_s: Annotated[
        float | None,
        Query(gt=0, le=86400, description="end the stream after this long (default: never)"),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events, one `alert` event per alert raised, updated or reviewed: `id:` the
    event id, `data:` JSON (alert id, state, session, camera, time span, candidates' ids and
    scores, threshold; never the crop). A client that reconnects sends `Last-Event-ID` (browsers
    do) and misses nothing. Ends when the client leaves, after `timeout_s`, or when the service
    stops; a `: keep-alive` comment goes out every 15 s when nothing else does."""
    header = last_event_id if last_event_id is not None and last_event_id.isascii() else None
    start = resume_id(header, default=-1)  # (ASCII: "²".isdigit(), but int("²") fails)
    if start < 0:
        start = (
            after if after is not None else await run_in_threadpool(events.last_event_id, state.db)
        )
    start = min(start, DB_INT_MAX)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    scanned = start

    def poll(after_id: int) -> list[tuple[int, dict[str, Any]]]:
        nonlocal scanned
        page = events.alert_event_page(state.db, max(after_id, scanned), EVENTS_PER_POLL)
        scanned = page.scanned
        return page.events

    def over() -> bool:
        return state.stopping.is_set() or (deadline is not None and time.monotonic() >= deadline)

    async def nap(seconds: float) -> None:
        left = seconds if deadline is None else min(seconds, deadline - time.monotonic())
        await asyncio.sleep(max(0.0, left))

    body: AsyncIterator[bytes] = stream_events(
        poll,
        start,
        interval_s=POLL_S,
        heartbeat_s=HEARTBEAT_S,
        is_disconnected=over,
        retry_ms=RETRY_MS,
        sleep=nap,
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/{alert_id}", response_model=AlertOut)
async def get(alert_id: AlertId, state: State, key: Reader) -> AlertOut:
    return await run_in_threadpool(lambda: AlertOut.of(alerts.get_alert(state.db, alert_id)))


@router.get(
    "/{alert_id}/crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the best-shot JPEG"}},
)
async def crop(alert_id: AlertId, state: State, key: Reviewer) -> Response:
    """The alert's best-shot face (JPEG), for reviewers; the view is audited before the bytes
    are sent. 404 once erased at the alert's retention deadline."""
    jpeg = await run_in_threadpool(
        lambda: alerts.alert_crop(
            state.db, alert_id, actor=key.label, cipher=state.galleries.cipher
        )
    )
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.post("/{alert_id}/reviews", status_code=201, response_model=AlertOut)
async def review(alert_id: AlertId, body: ReviewIn, state: State, key: Reviewer) -> AlertOut:
    """One reviewer's verdict with a note (audited). A reject rejects the alert; it is
    confirmed when two different keys have confirmed it. Each key reviews an alert once."""

    def work() -> AlertOut:
        done = alerts.review(state.db, alert_id, key.label, body.verdict, body.note)
        return AlertOut.of(done)

    return await run_in_threadpool(work)
