"""Alerts and their human review: what a camera track that matched a watchlist leaves behind.

One alert per track. A track searched again (a clearly better sample) updates its alert, and so
does a new track of the same top subject on the same camera within `COOLDOWN` of the alert's last
sighting, while the alert is pending: a reconnect, a restarted worker or a person lost and found
again by the tracker does not raise a second alert. An update keeps the better crop (higher best-
shot quality) and merges candidates (each subject at its best score).

The best-shot crop is JPEG-encoded and, with a template cipher, sealed bound to the alert's id
(`alert_crop_context`); with a cipher a crop in clear is refused on read. It is kept only for
alerts and erased at the alert's retention deadline (`purge_expired`) together with the
candidates and the top subject: a tombstone of camera, times, threshold and review outcome
remains. Audit entries carry ids, scores and the threshold, never the crop.

Review: each reviewer gives one verdict with a note. A reject closes the alert as rejected (one
reviewer's doubt is enough not to act); confirmation needs two different reviewers, each
confirming (two-person verification, EU AI Act Art. 14(5)). Nothing acts on an alert by itself:
no state changes without a reviewer, except erasure at the retention deadline.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np
from PIL import Image
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from yingyan.audit.log import AuditRecord, append, check_record
from yingyan.privacy.cipher import (
    KeyMissingError,
    alert_crop_context,
    blob_key_id,
    plaintext_refused,
)
from yingyan.store import Database
from yingyan.store.database import StoreError
from yingyan.store.repository import ConflictError, InvalidValueError, NotFoundError
from yingyan.store.tables import (
    ALERT_STATES,
    VERDICTS,
    AlertReviewRow,
    AlertRow,
    WatchSessionGalleryRow,
    WatchSessionRow,
    utcnow,
)
from yingyan.types import RGBImage
from yingyan.watch.sessions import audit_session, camera_id_of, open_session_row
from yingyan.watch.threshold import WatchThreshold

if TYPE_CHECKING:
    from yingyan.privacy.cipher import TemplateCipher

COOLDOWN: Final = timedelta(seconds=60)
RETENTION: Final = timedelta(days=30)  # default life of an alert's crop and candidates
CONFIRMATIONS: Final = 2  # different reviewers who must confirm
MAX_CANDIDATES: Final = 10
MAX_NOTE: Final = 2000
JPEG_QUALITY: Final = 90
MAX_LIMIT: Final = 1000
_SEALED_HEAD: Final = 4 + 1 + 64 + 12 + 16  # magic, id length, longest id, nonce, tag
Verdict = Literal["confirm", "reject"]


class AlertClosedError(StoreError):
    """The alert is confirmed, rejected or past its retention deadline: no more reviews."""

    code = "alert_closed"


class AlreadyReviewedError(ConflictError):
    """A reviewer gives one verdict per alert."""

    code = "already_reviewed"


class TrackQueryLike(Protocol):
    """What `record_match` reads of the pipeline's `TrackQuery`."""

    @property
    def track_id(self) -> int: ...
    @property
    def first_pts(self) -> float: ...
    @property
    def last_pts(self) -> float: ...
    @property
    def best_crop(self) -> RGBImage: ...
    @property
    def best_quality(self) -> float: ...
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """A watchlist subject the track matched, at or above the threshold."""

    gallery_id: int
    subject_id: int
    external_id: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "gallery_id": self.gallery_id,
            "subject_id": self.subject_id,
            "external_id": self.external_id,
            "score": round(float(self.score), 6),
        }


@dataclass(frozen=True, slots=True)
class Review:
    reviewer: str
    verdict: str
    note: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as listed (no crop bytes: `alert_crop` returns them, audited)."""

    id: int
    session: str
    camera: str
    track_id: int
    tracks: int
    first_pts: float
    last_pts: float
    first_seen_at: datetime
    last_seen_at: datetime
    candidates: tuple[dict[str, Any], ...]  # empty once purged
    has_crop: bool
    best_quality: float
    threshold: dict[str, Any]
    state: str
    retention_until: datetime
    purged_at: datetime | None
    created_at: datetime
    updated_at: datetime
    reviews: tuple[Review, ...]


@dataclass(frozen=True, slots=True)
class RecordedAlert:
    alert_id: int
    created: bool  # False: an existing alert was extended


# -- recording -----------------------------------------------------------------------------------


def record_match(
    db: Database,
    session_id: int,
    camera: str,
    query: TrackQueryLike,
    candidates: Sequence[AlertCandidate],
    threshold: WatchThreshold,
    *,
    audit: str,
    cipher: TemplateCipher | None = None,
    cooldown: timedelta = COOLDOWN,
    retention: timedelta = RETENTION,
    now: datetime | None = None,
) -> int:
    """Store (or extend) the alert of a track that matched; returns the alert's id. `audit` is
    the actor the audit entry names (e.g. "worker:gate-1"). See `record_match_outcome`."""
    out = record_match_outcome(
        db,
        session_id,
        camera,
        query,
        candidates,
        threshold,
        audit=audit,
        cipher=cipher,
        cooldown=cooldown,
        retention=retention,
        now=now,
    )
    return out.alert_id


def record_match_outcome(
    db: Database,
    session_id: int,
    camera: str,
    query: TrackQueryLike,
    candidates: Sequence[AlertCandidate],
    threshold: WatchThreshold,
    *,
    audit: str,
    cipher: TemplateCipher | None = None,
    cooldown: timedelta = COOLDOWN,
    retention: timedelta = RETENTION,
    now: datetime | None = None,
) -> RecordedAlert:
    """`record_match`, also saying whether the alert is new ("watch.alert.raise") or was
    extended ("watch.alert.update"): one unit of work with its audit entry, in which the
    session must be open. Refuses candidates none of which reaches the threshold."""
    ranked = _ranked(candidates, threshold)
    jpeg = encode_crop(query.best_crop)
    check_record(AuditRecord(audit, "watch.alert.raise"))

    def work(s: Session) -> RecordedAlert:
        when = now or utcnow()
        session = open_session_row(s, session_id, when)
        _check_watchlists(s, session.id, ranked)
        existing = _same_alert(s, session.id, camera, query, ranked[0], when - cooldown)
        if existing is None:
            row = _new_alert(s, session, camera, query, ranked, threshold, when, retention)
            row.crop = seal_crop(jpeg, cipher, row.id)
            operation, replaced = "watch.alert.raise", True
        else:
            row, replaced = existing, _extend(existing, query, ranked, threshold, when)
            if replaced:
                row.crop = seal_crop(jpeg, cipher, row.id)
            operation = "watch.alert.update"
        s.flush()
        details = _alert_details(session, row, query, threshold)
        details["crop_replaced"] = replaced
        audit_session(s, audit, operation, session, details)
        return RecordedAlert(row.id, existing is None)

    return db.run(work)


def encode_crop(crop: RGBImage) -> bytes:
    """The best shot as JPEG bytes (EXIF-free, quality 90)."""
    array = np.asarray(crop)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or array.size == 0:
        raise InvalidValueError("a best-shot crop is an RGB uint8 image (H, W, 3)")
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def seal_crop(jpeg: bytes, cipher: TemplateCipher | None, alert_id: int) -> bytes:
    """The stored form of a crop: sealed and bound to its alert with a cipher, else as is."""
    return jpeg if cipher is None else cipher.encrypt(jpeg, alert_crop_context(alert_id))


def open_crop(data: bytes, cipher: TemplateCipher | None, alert_id: int) -> bytes:
    """The JPEG bytes of a stored crop; exact inverse of `seal_crop`."""
    if blob_key_id(data) is None:
        if cipher is not None:
            raise plaintext_refused("an alert's crop")
        return data
    if cipher is None:
        raise KeyMissingError(
            "alert crops are encrypted but no key is configured "
            "(set YINGYAN_KEY_FILE or YINGYAN_TEMPLATE_KEY)"
        )
    return cipher.decrypt(data, alert_crop_context(alert_id))


def _ranked(
    candidates: Sequence[AlertCandidate], threshold: WatchThreshold
) -> list[AlertCandidate]:
    ranked = sorted(candidates, key=lambda c: -c.score)[:MAX_CANDIDATES]
    if not ranked:
        raise InvalidValueError("a track without candidates leaves nothing: no alert")
    if not all(math.isfinite(c.score) for c in ranked):
        raise InvalidValueError("candidate scores must be finite")
    if ranked[0].score < threshold.score:
        raise InvalidValueError(
            f"best candidate score {ranked[0].score:.4f} is below the threshold "
            f"{threshold.score:.4f}: no alert"
        )
    return ranked


def _check_watchlists(s: Session, session_id: int, ranked: list[AlertCandidate]) -> None:
    """Candidates come from the session's own watchlists, never from another gallery."""
    query = select(WatchSessionGalleryRow.gallery_id).where(
        WatchSessionGalleryRow.session_id == session_id
    )
    allowed = set(s.scalars(query))
    stray = sorted({c.gallery_id for c in ranked} - allowed)
    if stray:
        raise InvalidValueError(f"candidates from galleries {stray} not watched by the session")


def _same_alert(
    s: Session,
    session_id: int,
    camera: str,
    query: TrackQueryLike,
    top: AlertCandidate,
    since: datetime,
) -> AlertRow | None:
    """The pending alert this match belongs to: the same track (its id and first pts), or the
    same top subject seen on this camera since `since`."""
    same_track = (AlertRow.track_id == query.track_id) & (
        AlertRow.track_first_pts == float(query.first_pts)
    )
    same_subject = (AlertRow.top_gallery_id == top.gallery_id) & (
        AlertRow.top_subject_id == top.subject_id
    )
    found = select(AlertRow).where(
        AlertRow.session_id == session_id,
        AlertRow.camera == camera,
        AlertRow.state == "pending",
        AlertRow.purged_at.is_(None),
        AlertRow.last_seen_at >= since,
        or_(same_track, same_subject),
    )
    return s.scalar(found.order_by(AlertRow.last_seen_at.desc()).limit(1).with_for_update())


def _new_alert(
    s: Session,
    session: WatchSessionRow,
    camera: str,
    query: TrackQueryLike,
    ranked: list[AlertCandidate],
    threshold: WatchThreshold,
    when: datetime,
    retention: timedelta,
) -> AlertRow:
    if retention <= timedelta(0):
        raise InvalidValueError("an alert's retention must be positive")
    row = AlertRow(
        session_id=session.id,
        camera=camera,
        camera_id=camera_id_of(s, session.id, camera),
        track_id=int(query.track_id),
        track_first_pts=float(query.first_pts),
        tracks=1,
        first_pts=float(query.first_pts),
        last_pts=float(query.last_pts),
        first_seen_at=when,
        last_seen_at=when,
        top_gallery_id=ranked[0].gallery_id,
        top_subject_id=ranked[0].subject_id,
        candidates=[c.as_dict() for c in ranked],
        best_quality=float(query.best_quality),
        state="pending",
        retention_until=when + retention,
        created_at=when,
        updated_at=when,
    )
    _set_threshold(row, threshold)
    s.add(row)
    s.flush()  # its id binds the sealed crop
    return row


def _extend(
    row: AlertRow,
    query: TrackQueryLike,
    ranked: list[AlertCandidate],
    threshold: WatchThreshold,
    when: datetime,
) -> bool:
    """Extend `row` with a later search; True when its crop is to be replaced (better shot).

    Times: `first_pts` stays the alert's first (a new track after a reconnect may restart the
    stream clock); `last_pts` is the latest track's; wall times give the span."""
    new_track = row.track_id != query.track_id or row.track_first_pts != float(query.first_pts)
    if new_track:
        row.tracks += 1
        row.track_id, row.track_first_pts = int(query.track_id), float(query.first_pts)
    row.last_pts = float(query.last_pts)
    row.last_seen_at = when
    row.updated_at = when
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    for entry in [*(row.candidates or []), *(c.as_dict() for c in ranked)]:
        key = (int(entry["gallery_id"]), int(entry["subject_id"]))
        if key not in merged or entry["score"] > merged[key]["score"]:
            merged[key] = dict(entry)
    best = sorted(merged.values(), key=lambda e: -float(e["score"]))[:MAX_CANDIDATES]
    row.candidates = best
    row.top_gallery_id, row.top_subject_id = best[0]["gallery_id"], best[0]["subject_id"]
    _set_threshold(row, threshold)
    better = float(query.best_quality) > row.best_quality
    if better:
        row.best_quality = float(query.best_quality)
    return better


def _set_threshold(row: AlertRow, threshold: WatchThreshold) -> None:
    row.threshold_score = float(threshold.score)
    row.threshold_source = threshold.source
    row.threshold_model = threshold.model
    row.target_fpir = threshold.target_fpir
    row.watchlist_size = threshold.watchlist_size


def _threshold_dict(threshold: WatchThreshold) -> dict[str, Any]:
    out = threshold.as_dict()
    if not math.isfinite(threshold.fmr):
        out["fmr"] = None
    return out


def _alert_details(
    session: WatchSessionRow, row: AlertRow, query: TrackQueryLike, threshold: WatchThreshold
) -> dict[str, Any]:
    return {
        "alert": row.id,
        "session": session.name,
        "camera": row.camera,
        "track_id": int(query.track_id),
        "search": query.reason,
        "tracks": row.tracks,
        "first_pts": row.first_pts,
        "last_pts": row.last_pts,
        "first_seen_at": row.first_seen_at,  # the time span, for events (watch/events.py)
        "last_seen_at": row.last_seen_at,
        "candidates": [
            {k: c[k] for k in ("gallery_id", "subject_id", "external_id", "score")}
            for c in row.candidates or []
        ],
        "best_quality": row.best_quality,
        "threshold": _threshold_dict(threshold),
    }


# -- review --------------------------------------------------------------------------------------


def review(
    db: Database,
    alert_id: int,
    reviewer: str,
    verdict: str,
    note: str,
    *,
    now: datetime | None = None,
) -> Alert:
    """One reviewer's verdict on a pending alert, with a note (audited "watch.alert.review").

    A reject makes the alert rejected; it is confirmed when `CONFIRMATIONS` different reviewers
    have confirmed. The API checks the caller holds the reviewer role; here `reviewer` is who
    they are (a key's name), the identity that must differ between the two confirmations."""
    reviewer = _text(reviewer, "reviewer", 200)
    note = _text(note, "review note", MAX_NOTE)
    if verdict not in VERDICTS:
        raise InvalidValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    check_record(AuditRecord(reviewer, "watch.alert.review", details={"note": note}))

    def work(s: Session) -> Alert:
        row = _alert_row(s, alert_id, lock=True)
        if row.state != "pending":
            raise AlertClosedError(f"alert {row.id} is already {row.state}: it takes no review")
        if row.purged_at is not None:
            raise AlertClosedError(f"alert {row.id} passed its retention deadline and was erased")
        done = select(AlertReviewRow.id).where(
            AlertReviewRow.alert_id == row.id, AlertReviewRow.reviewer == reviewer
        )
        if s.scalar(done) is not None:
            raise AlreadyReviewedError(f"{reviewer} has already reviewed alert {row.id}")
        when = now or utcnow()
        s.add(
            AlertReviewRow(alert_id=row.id, reviewer=reviewer, verdict=verdict, note=note, at=when)
        )
        s.flush()
        confirmations = _confirmations(s, row.id)
        if verdict == "reject":
            row.state = "rejected"
        elif confirmations >= CONFIRMATIONS:
            row.state = "confirmed"
        row.updated_at = when
        s.flush()
        session = s.get_one(WatchSessionRow, row.session_id)
        details = {
            "alert": row.id,
            "session": session.name,
            "camera": row.camera,
            "verdict": verdict,
            "note": note,
            "state": row.state,
            "confirmations": confirmations,
            "top_subject_id": row.top_subject_id,
        }
        audit_session(s, reviewer, "watch.alert.review", session, details)
        return _view(s, row, session.name)

    return db.run(work)


def _confirmations(s: Session, alert_id: int) -> int:
    query = select(func.count(func.distinct(AlertReviewRow.reviewer))).where(
        AlertReviewRow.alert_id == alert_id, AlertReviewRow.verdict == "confirm"
    )
    return int(s.scalar(query) or 0)


# -- reading -------------------------------------------------------------------------------------


def get_alert(db: Database, alert_id: int) -> Alert:
    with db.read() as s:
        row = _alert_row(s, alert_id)
        return _view(s, row, s.get_one(WatchSessionRow, row.session_id).name)


def list_alerts(
    db: Database,
    *,
    session: str | None = None,
    camera: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Alert]:
    """Alerts newest first; `since`/`until` select alerts whose span [first, last seen]
    overlaps that interval."""
    if state is not None and state not in ALERT_STATES:
        raise InvalidValueError(f"state must be one of {', '.join(ALERT_STATES)}")
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise InvalidValueError(f"limit must lie in [1, {MAX_LIMIT}] and offset be >= 0")
    for when, what in ((since, "since"), (until, "until")):
        if when is not None and when.tzinfo is None:
            raise InvalidValueError(f"{what} must carry a time zone (e.g. datetime.UTC)")
    query = select(AlertRow, WatchSessionRow.name).join(
        WatchSessionRow, WatchSessionRow.id == AlertRow.session_id
    )
    if session is not None:
        query = query.where(WatchSessionRow.name == session)
    if camera is not None:
        query = query.where(AlertRow.camera == camera)
    if state is not None:
        query = query.where(AlertRow.state == state)
    if since is not None:
        query = query.where(AlertRow.last_seen_at >= since)
    if until is not None:
        query = query.where(AlertRow.first_seen_at <= until)
    query = query.order_by(AlertRow.first_seen_at.desc(), AlertRow.id.desc())
    with db.read() as s:
        rows = s.execute(query.limit(limit).offset(offset)).all()
        return [_view(s, row, name) for row, name in rows]


def alert_crop(
    db: Database, alert_id: int, *, actor: str, cipher: TemplateCipher | None = None
) -> bytes:
    """The alert's best-shot JPEG, decrypted; the view is audited ("watch.alert.view") and
    committed before the bytes are returned."""
    check_record(AuditRecord(actor, "watch.alert.view"))

    def work(s: Session) -> bytes:
        row = _alert_row(s, alert_id)
        if row.crop is None:
            raise NotFoundError(f"alert {row.id} has no crop: erased at its retention deadline")
        jpeg = open_crop(row.crop, cipher, row.id)
        session = s.get_one(WatchSessionRow, row.session_id)
        details = {"alert": row.id, "session": session.name, "camera": row.camera}
        audit_session(s, actor, "watch.alert.view", session, details)
        return jpeg

    return db.run(work)


# -- retention -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertPurge:
    alerts: tuple[int, ...]


def alerts_due(db: Database, *, now: datetime | None = None) -> list[int]:
    """Ids of alerts past their retention deadline still holding biometric data."""
    with db.read() as s:
        return list(s.scalars(_due_query(now or utcnow())))


def purge_expired(
    db: Database, *, actor: str, now: datetime | None = None, batch: int = 500
) -> AlertPurge:
    """Erase the crop, candidates and top subject of every alert past its retention deadline
    (one unit of work and one "watch.alert.purge" entry per batch); the rows stay as
    tombstones. On SQLite the WAL is truncated afterwards; PostgreSQL needs VACUUM."""
    check_record(AuditRecord(actor, "watch.alert.purge"))
    when = now or utcnow()
    purged: list[int] = []

    def work(s: Session) -> list[int]:
        rows = list(
            s.scalars(select(AlertRow).where(AlertRow.id.in_(_due_query(when).limit(batch))))
        )
        for row in rows:
            row.crop, row.candidates = None, None
            row.top_gallery_id, row.top_subject_id = None, None
            row.purged_at, row.updated_at = when, when
        if rows:
            s.flush()
            details = {
                "alerts": [r.id for r in rows],
                "reason": "alert_retention",
                "sessions": sorted({r.session_id for r in rows}),
            }
            append(s, AuditRecord(actor, "watch.alert.purge", details=details))
        return [r.id for r in rows]

    while True:
        ids = db.run(work)
        purged += ids
        if len(ids) < batch:
            break
    if purged:
        db.purge_deleted()
    return AlertPurge(tuple(purged))


def _due_query(when: datetime) -> Any:
    return (
        select(AlertRow.id)
        .where(AlertRow.retention_until <= when, AlertRow.purged_at.is_(None))
        .order_by(AlertRow.id)
    )


# -- key rotation --------------------------------------------------------------------------------


def crop_key_usage(db: Database) -> dict[str | None, int]:
    """Stored crops per key id (None: in clear), for `privacy.rotation.key_usage`: a key that
    still seals a crop must not be retired."""
    usage: dict[str | None, int] = {}
    with db.read() as s:
        head = func.substr(AlertRow.crop, 1, _SEALED_HEAD)
        for (data,) in s.execute(select(head).where(AlertRow.crop.is_not(None))):
            key_id = blob_key_id(bytes(data))
            usage[key_id] = usage.get(key_id, 0) + 1
    return usage


def reseal_crops(
    db: Database,
    cipher: TemplateCipher,
    *,
    actor: str,
    only_plaintext: bool = False,
    batch: int = 200,
) -> int:
    """Re-encrypt every crop not under the active key (`only_plaintext`: those in clear), one
    unit of work and one "watch.alert.reseal" entry per batch; returns how many."""
    check_record(AuditRecord(actor, "watch.alert.reseal"))

    def work(s: Session, after: int) -> tuple[int, int | None]:
        query = (
            select(AlertRow)
            .where(AlertRow.id > after, AlertRow.crop.is_not(None))
            .order_by(AlertRow.id)
            .limit(batch)
        )
        rows, done = list(s.scalars(query)), 0
        for row in rows:
            assert row.crop is not None
            key_id = blob_key_id(row.crop)
            if key_id == cipher.active_key_id or (only_plaintext and key_id is not None):
                continue
            plain = row.crop if key_id is None else cipher.decrypt(row.crop, _context(row))
            row.crop = seal_crop(plain, cipher, row.id)
            done += 1
        if done:
            s.flush()
            details = {"resealed": done, "key_id": cipher.active_key_id}
            append(s, AuditRecord(actor, "watch.alert.reseal", details=details))
        return done, rows[-1].id if len(rows) == batch else None

    total, after = 0, 0
    while True:
        done, last = db.run(partial(work, after=after))
        total += done
        if last is None:
            return total
        after = last


def _context(row: AlertRow) -> bytes:
    return alert_crop_context(row.id)


# -- internals -----------------------------------------------------------------------------------


def _alert_row(s: Session, alert_id: int, *, lock: bool = False) -> AlertRow:
    query = select(AlertRow).where(AlertRow.id == int(alert_id))
    row = s.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError(f"no alert with id {alert_id}")
    return row


def _view(s: Session, row: AlertRow, session: str) -> Alert:
    reviews = s.scalars(
        select(AlertReviewRow).where(AlertReviewRow.alert_id == row.id).order_by(AlertReviewRow.id)
    )
    threshold = {
        "score": row.threshold_score,
        "source": row.threshold_source,
        "model": row.threshold_model,
        "target_fpir": row.target_fpir,
        "watchlist_size": row.watchlist_size,
    }
    return Alert(
        id=row.id,
        session=session,
        camera=row.camera,
        track_id=row.track_id,
        tracks=row.tracks,
        first_pts=row.first_pts,
        last_pts=row.last_pts,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        candidates=tuple(dict(c) for c in row.candidates or []),
        has_crop=row.crop is not None,
        best_quality=row.best_quality,
        threshold=threshold,
        state=row.state,
        retention_until=row.retention_until,
        purged_at=row.purged_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reviews=tuple(Review(r.reviewer, r.verdict, r.note, r.at) for r in reviews),
    )


def _text(value: str, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueError(f"{what} is required")
    if len(value) > limit:
        raise InvalidValueError(f"{what} has at most {limit} characters")
    return value.strip()
