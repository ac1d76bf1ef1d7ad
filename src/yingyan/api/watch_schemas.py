"""What crosses the API boundary for live video watchlists: sessions, cameras, alerts, reviews.

Shapes only; what is allowed (watchlists only, a future expiry, two different reviewers) is the
watch libraries' policy and is checked there."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Field

from yingyan.api.schemas import JsonObject, Name, Strict, Text, iso_time, storable_time
from yingyan.privacy.redaction import redact_url
from yingyan.watch.alerts import MAX_NOTE, Alert
from yingyan.watch.sessions import DEFAULT_TARGET_FPIR, CameraStatus, WatchCamera, WatchSession
from yingyan.watch.threshold import MAX_FPIR, MIN_FPIR, WatchThreshold

MAX_WATCHLISTS = 50


Time = Annotated[AwareDatetime, BeforeValidator(iso_time), AfterValidator(storable_time)]
Reason = Field(min_length=1, max_length=2000)


class SessionIn(Strict):
    name: str = Name
    purpose: Text = Reason
    case_ref: Text = Reason
    legal_basis: Text = Reason
    expires_at: Time = Field(strict=False, description="in the future, with its offset")
    watchlists: list[Text] = Field(
        min_length=1, max_length=MAX_WATCHLISTS, description="galleries of kind 'watchlist'"
    )
    target_fpir: float = Field(
        default=DEFAULT_TARGET_FPIR,
        ge=MIN_FPIR,
        le=MAX_FPIR,
        description="false-positive identification rate per passer the threshold is chosen for",
    )
    threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="an explicit cosine threshold instead"
    )


class SessionPatch(Strict):
    """Fields left out stay as they are; `"threshold": null` returns to the FPIR threshold."""

    purpose: Text | None = Field(default=None, min_length=1, max_length=2000)
    case_ref: Text | None = Field(default=None, min_length=1, max_length=2000)
    legal_basis: Text | None = Field(default=None, min_length=1, max_length=2000)
    expires_at: Time | None = Field(default=None, strict=False)
    watchlists: list[Text] | None = Field(default=None, min_length=1, max_length=MAX_WATCHLISTS)
    target_fpir: float | None = Field(default=None, ge=MIN_FPIR, le=MAX_FPIR)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)


class StopIn(Strict):
    reason: Text | None = Field(default=None, max_length=2000)


class ThresholdOut(BaseModel):
    score: float
    model: str
    target_fpir: float
    watchlist_size: int
    fmr: float | None = Field(description="per-comparison FMR it stands for (null: unmeasured)")
    source: str

    @classmethod
    def of(cls, t: WatchThreshold) -> ThresholdOut:
        fmr = t.fmr if math.isfinite(t.fmr) else None
        return cls(
            score=round(t.score, 6),
            model=t.model,
            target_fpir=t.target_fpir,
            watchlist_size=t.watchlist_size,
            fmr=fmr,
            source=t.source,
        )


class SessionOut(BaseModel):
    name: str
    purpose: str
    case_ref: str
    legal_basis: str
    expires_at: datetime
    target_fpir: float
    threshold: float | None = Field(description="the explicit threshold, if the session has one")
    status: str = Field(description="active or stopped")
    open: bool = Field(description="active and not expired: it records alerts")
    created_by: str
    created_at: datetime
    stopped_at: datetime | None
    watchlists: list[str]
    current_threshold: ThresholdOut | None = Field(
        description="the threshold its alerts use now and where it comes from"
    )

    @classmethod
    def of(cls, s: WatchSession, threshold: WatchThreshold | None) -> SessionOut:
        return cls(
            name=s.name,
            purpose=s.purpose,
            case_ref=s.case_ref,
            legal_basis=s.legal_basis,
            expires_at=s.expires_at,
            target_fpir=s.target_fpir,
            threshold=s.threshold,
            status=s.status,
            open=s.is_open(),
            created_by=s.created_by,
            created_at=s.created_at,
            stopped_at=s.stopped_at,
            watchlists=list(s.galleries),
            current_threshold=None if threshold is None else ThresholdOut.of(threshold),
        )


class CameraIn(Strict):
    name: str = Name
    url: Text = Field(
        min_length=1,
        max_length=2000,
        description="rtsp://, http(s)://, a file or a device; credentials are never shown back",
    )
    settings: JsonObject = Field(
        default_factory=dict,
        description="source, pipeline and engine tables, detect_every, realtime, crowd, ...",
    )
    enabled: bool = True


class CameraPatch(Strict):
    url: Text | None = Field(default=None, min_length=1, max_length=2000)
    settings: JsonObject | None = None
    enabled: bool | None = None


class WorkerOut(BaseModel):
    """The camera's worker in this service (present when it runs camera workers)."""

    state: str = Field(description="starting, running, restarting, exited, failed, stopped")
    pid: int | None
    restarts: int
    heartbeat_age_s: float | None


class CameraOut(BaseModel):
    name: str
    url: str = Field(description="credentials masked")
    settings: dict[str, Any]
    enabled: bool
    status_at: datetime | None = Field(description="time of the worker's last heartbeat")
    stats: dict[str, Any] = Field(
        description="connected, input_fps, processed_fps, lag_s, dropped, reconnects, ..."
    )
    worker: WorkerOut | None = None
    problem: str | None = Field(default=None, description="why it has no worker, if it has none")

    @classmethod
    def of(
        cls,
        camera: WatchCamera,
        status: CameraStatus | None = None,
        worker: WorkerOut | None = None,
        problem: str | None = None,
    ) -> CameraOut:
        url = redact_url(camera.url) or ""
        return cls(
            name=camera.name,
            url=url,
            settings=dict(camera.settings),
            enabled=camera.enabled,
            status_at=None if status is None else status.updated_at,
            stats={} if status is None else _redacted(status.stats, camera.url),
            worker=worker,
            problem=None if problem is None else problem.replace(camera.url, url),
        )


def _redacted(stats: Mapping[str, Any], url: str) -> dict[str, Any]:
    """Heartbeat stats with the camera's URL masked wherever a message quotes it."""
    shown = redact_url(url) or ""
    return {k: v.replace(url, shown) if isinstance(v, str) else v for k, v in stats.items()}


class CandidateOut(BaseModel):
    gallery_id: int
    subject_id: int
    external_id: str
    score: float


class ReviewOut(BaseModel):
    reviewer: str
    verdict: str
    note: str
    at: datetime


class AlertOut(BaseModel):
    id: int
    session: str
    camera: str
    track_id: int
    tracks: int = Field(description="tracks merged into this alert")
    first_pts: float
    last_pts: float
    first_seen_at: datetime
    last_seen_at: datetime
    candidates: list[CandidateOut] = Field(description="best first; empty once purged")
    has_crop: bool
    best_quality: float
    threshold: dict[str, Any]
    state: Literal["pending", "confirmed", "rejected"]
    retention_until: datetime
    purged_at: datetime | None
    created_at: datetime
    updated_at: datetime
    reviews: list[ReviewOut]
    review_required: Literal[True] = Field(
        default=True, description="an alert is a lead for two human reviewers, never a decision"
    )

    @classmethod
    def of(cls, a: Alert) -> AlertOut:
        return cls(
            id=a.id,
            session=a.session,
            camera=a.camera,
            track_id=a.track_id,
            tracks=a.tracks,
            first_pts=a.first_pts,
            last_pts=a.last_pts,
            first_seen_at=a.first_seen_at,
            last_seen_at=a.last_seen_at,
            candidates=[CandidateOut.model_validate(c) for c in a.candidates],
            has_crop=a.has_crop,
            best_quality=a.best_quality,
            threshold=dict(a.threshold),
            state=a.state,  # type: ignore[arg-type]  # the table's check constraint
            retention_until=a.retention_until,
            purged_at=a.purged_at,
            created_at=a.created_at,
            updated_at=a.updated_at,
            reviews=[
                ReviewOut(reviewer=r.reviewer, verdict=r.verdict, note=r.note, at=r.at)
                for r in a.reviews
            ],
        )


class ReviewIn(Strict):
    verdict: Literal["confirm", "reject"]
    note: Text = Field(min_length=1, max_length=MAX_NOTE, description="why: required")
