"""Watch sessions: which cameras are watched for which watchlists, why, under which legal basis
and case, until when; and the threshold their alerts use.

A session exists only with a purpose, a case reference, a legal basis and an expiry in the
future, and searches galleries of kind 'watchlist' only (an enrolment gallery holds people who
consented to access control, not people sought). Every start, change and stop, and every camera
added or removed, is one unit of work with its audit entry (`Database.run`): if the entry cannot
be appended, nothing changed. A stopped or expired session records no alert.

The threshold is chosen for the session's target FPIR given the total number of subjects on its
watchlists (`threshold_for_fpir`), read when asked so that it follows the watchlists as they
grow; an explicit threshold replaces it, and the alert says which one it used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from yingyan.audit.log import AuditRecord, append, check_record
from yingyan.privacy.redaction import redact_url
from yingyan.store import Database, GalleryRow, count_subjects, get_gallery
from yingyan.store.database import StoreError
from yingyan.store.repository import KEEP, ConflictError, InvalidValueError, Keep, NotFoundError
from yingyan.store.tables import (
    CameraStatusRow,
    WatchCameraRow,
    WatchSessionGalleryRow,
    WatchSessionRow,
    utcnow,
)
from yingyan.watch.threshold import (
    MAX_FPIR,
    MIN_FPIR,
    WatchThreshold,
    explicit_threshold,
    threshold_for_fpir,
)

DEFAULT_TARGET_FPIR: Final = 1e-3
EXPLICIT_SOURCE: Final = "explicit threshold of the session"


class NotWatchlistError(InvalidValueError):
    """A session may only search galleries of kind 'watchlist'."""

    code = "not_a_watchlist"


class SessionClosedError(StoreError):
    """The session is stopped or past its expiry: it changes no more and records no alert."""

    code = "watch_session_closed"


@dataclass(frozen=True, slots=True)
class WatchSession:
    id: int
    name: str
    purpose: str
    case_ref: str
    legal_basis: str
    expires_at: datetime
    target_fpir: float
    threshold: float | None  # explicit; None: from target_fpir and the watchlists' size
    status: str  # active | stopped (an active session past expires_at is closed too)
    created_by: str
    created_at: datetime
    stopped_at: datetime | None
    galleries: tuple[str, ...]

    def is_open(self, now: datetime | None = None) -> bool:
        return self.status == "active" and (now or utcnow()) < self.expires_at


@dataclass(frozen=True, slots=True)
class WatchCamera:
    id: int
    session: str
    name: str
    url: str  # as configured (may hold credentials): show `redact_url(url)`
    settings: Mapping[str, Any]
    enabled: bool


@dataclass(frozen=True, slots=True)
class CameraStatus:
    camera_id: int
    camera: str
    updated_at: datetime
    stats: Mapping[str, Any]


# -- sessions ------------------------------------------------------------------------------------


def create_session(
    db: Database,
    *,
    name: str,
    purpose: str,
    case_ref: str,
    legal_basis: str,
    expires_at: datetime,
    galleries: Sequence[str],
    actor: str,
    target_fpir: float = DEFAULT_TARGET_FPIR,
    threshold: float | None = None,
    now: datetime | None = None,
) -> WatchSession:
    """Start a session (audited "watch.session.start")."""
    name = _required(name, "session name")
    fields = {
        "purpose": _required(purpose, "purpose"),
        "case_ref": _required(case_ref, "case reference"),
        "legal_basis": _required(legal_basis, "legal basis"),
    }
    when = _future(expires_at, now)
    fpir = _fpir(target_fpir)
    explicit = _threshold(threshold)
    check_record(AuditRecord(actor, "watch.session.start"))

    def work(s: Session) -> WatchSession:
        if s.scalar(select(WatchSessionRow.id).where(WatchSessionRow.name == name)) is not None:
            raise ConflictError(f"a watch session named {name!r} already exists")
        rows = _watchlists(s, galleries)
        _check_threshold_available(rows, explicit)
        row = WatchSessionRow(
            name=name,
            expires_at=when,
            target_fpir=fpir,
            threshold=explicit,
            status="active",
            created_by=actor,
            **fields,
        )
        s.add(row)
        s.flush()
        s.add_all(WatchSessionGalleryRow(session_id=row.id, gallery_id=g.id) for g in rows)
        s.flush()
        view = _view(s, row)
        _audit(s, actor, "watch.session.start", view, _settings(view))
        return view

    return db.run(work)


def change_session(
    db: Database,
    name: str,
    *,
    actor: str,
    purpose: str | None = None,
    case_ref: str | None = None,
    legal_basis: str | None = None,
    expires_at: datetime | None = None,
    galleries: Sequence[str] | None = None,
    target_fpir: float | None = None,
    threshold: float | Keep | None = KEEP,
    now: datetime | None = None,
) -> WatchSession:
    """Change an open session (audited "watch.session.change" with the fields before and
    after); None leaves a field as it is, `threshold=None` returns to the FPIR threshold."""
    changes: dict[str, Any] = {}
    for key, value, what in (
        ("purpose", purpose, "purpose"),
        ("case_ref", case_ref, "case reference"),
        ("legal_basis", legal_basis, "legal basis"),
    ):
        if value is not None:
            changes[key] = _required(value, what)
    if expires_at is not None:
        changes["expires_at"] = _future(expires_at, now)
    if target_fpir is not None:
        changes["target_fpir"] = _fpir(target_fpir)
    if not isinstance(threshold, Keep):
        changes["threshold"] = _threshold(threshold)
    if not changes and galleries is None:
        raise InvalidValueError("nothing to change")
    check_record(AuditRecord(actor, "watch.session.change"))

    def work(s: Session) -> WatchSession:
        row = _open_row(s, name, now)
        before = _view(s, row)
        rows = _watchlists(s, galleries) if galleries is not None else _gallery_rows(s, row.id)
        _check_threshold_available(rows, changes.get("threshold", row.threshold))
        for key, value in changes.items():
            setattr(row, key, value)
        if galleries is not None:
            s.execute(
                delete(WatchSessionGalleryRow).where(WatchSessionGalleryRow.session_id == row.id)
            )
            s.add_all(WatchSessionGalleryRow(session_id=row.id, gallery_id=g.id) for g in rows)
        s.flush()
        after = _view(s, row)
        old, new = _settings(before), _settings(after)
        diff = {k: {"from": old[k], "to": new[k]} for k in new if old[k] != new[k]}
        _audit(s, actor, "watch.session.change", after, {"session": after.name, "changed": diff})
        return after

    return db.run(work)


def stop_session(
    db: Database, name: str, *, actor: str, reason: str | None = None, now: datetime | None = None
) -> WatchSession:
    """Stop a session (audited "watch.session.stop"); its alerts stay for review. An expired
    session can still be stopped (it only records that it ended)."""
    check_record(AuditRecord(actor, "watch.session.stop"))

    def work(s: Session) -> WatchSession:
        row = _row(s, name, lock=True)
        if row.status == "stopped":
            raise SessionClosedError(f"watch session {name!r} is already stopped")
        row.status, row.stopped_at = "stopped", now or utcnow()
        s.flush()
        view = _view(s, row)
        details: dict[str, Any] = {"session": view.name, "reason": reason}
        _audit(s, actor, "watch.session.stop", view, details)
        return view

    return db.run(work)


def get_session(db: Database, name: str) -> WatchSession:
    with db.read() as s:
        return _view(s, _row(s, name))


def list_sessions(db: Database, *, include_stopped: bool = True) -> list[WatchSession]:
    with db.read() as s:
        query = select(WatchSessionRow).order_by(WatchSessionRow.name)
        if not include_stopped:
            query = query.where(WatchSessionRow.status == "active")
        return [_view(s, row) for row in s.scalars(query)]


# -- threshold -----------------------------------------------------------------------------------


def session_threshold(db: Database, session: str | int) -> WatchThreshold:
    """The threshold the session's alerts use now (see `threshold_of`)."""
    with db.read() as s:
        row = _row(s, session) if isinstance(session, str) else _row_by_id(s, session)
        return threshold_of(s, row)


def threshold_of(s: Session, row: WatchSessionRow) -> WatchThreshold:
    """From the target FPIR over the total subjects of the session's watchlists, or the
    session's explicit threshold (its source says so)."""
    galleries = _gallery_rows(s, row.id)
    size = sum(count_subjects(s, gallery_id=g.id) for g in galleries)
    model = galleries[0].model if galleries else ""
    if row.threshold is not None:
        return explicit_threshold(model, row.threshold, size, EXPLICIT_SOURCE, row.target_fpir)
    return threshold_for_fpir(model, size, row.target_fpir)


# -- cameras -------------------------------------------------------------------------------------


def add_camera(
    db: Database,
    session: str,
    *,
    name: str,
    url: str,
    actor: str,
    settings: Mapping[str, Any] | None = None,
    enabled: bool = True,
    now: datetime | None = None,
) -> WatchCamera:
    """Add a camera to an open session (audited "watch.camera.add", URL redacted)."""
    name = _required(name, "camera name")
    url = _required(url, "camera url")
    check_record(AuditRecord(actor, "watch.camera.add", details=dict(settings or {})))

    def work(s: Session) -> WatchCamera:
        row = _open_row(s, session, now)
        taken = select(WatchCameraRow.id).where(
            WatchCameraRow.session_id == row.id, WatchCameraRow.name == name
        )
        if s.scalar(taken) is not None:
            raise ConflictError(f"session {session!r} already has a camera named {name!r}")
        camera = WatchCameraRow(
            session_id=row.id, name=name, url=url, settings=dict(settings or {}), enabled=enabled
        )
        s.add(camera)
        s.flush()
        details = {
            "session": row.name,
            "camera": name,
            "camera_id": camera.id,
            "url": redact_url(url),
            "settings": dict(camera.settings),
            "enabled": enabled,
        }
        _audit(s, actor, "watch.camera.add", _view(s, row), details)
        return _camera(camera, row.name)

    return db.run(work)


def change_camera(
    db: Database,
    session: str,
    name: str,
    *,
    actor: str,
    url: str | None = None,
    settings: Mapping[str, Any] | None = None,
    enabled: bool | None = None,
    now: datetime | None = None,
) -> WatchCamera:
    """Change a camera of an open session (audited "watch.camera.change", URL redacted); None
    leaves a field as it is. Its worker follows at the runtime's next sync (restarted, or
    stopped when disabled)."""
    if url is not None:
        url = _required(url, "camera url")
    check_record(AuditRecord(actor, "watch.camera.change", details=dict(settings or {})))

    def work(s: Session) -> WatchCamera:
        row = _open_row(s, session, now)
        camera = _camera_row(s, row, name)
        before = {"url": camera.url, "settings": dict(camera.settings), "enabled": camera.enabled}
        if url is not None:
            camera.url = url
        if settings is not None:
            camera.settings = dict(settings)
        if enabled is not None:
            camera.enabled = bool(enabled)
        after = {"url": camera.url, "settings": dict(camera.settings), "enabled": camera.enabled}
        changed = {k: after[k] for k in after if after[k] != before[k]}
        if not changed:
            raise InvalidValueError("nothing to change")
        s.flush()
        if "url" in changed:
            changed["url"] = redact_url(camera.url)
        details = {"session": row.name, "camera": name, "camera_id": camera.id, "changed": changed}
        _audit(s, actor, "watch.camera.change", _view(s, row), details)
        return _camera(camera, row.name)

    return db.run(work)


def remove_camera(db: Database, session: str, name: str, *, actor: str) -> None:
    """Remove a camera (audited "watch.camera.remove"); its alerts keep the camera's name.
    Allowed on a closed session too: taking a camera off never needs a legal basis."""
    check_record(AuditRecord(actor, "watch.camera.remove"))

    def work(s: Session) -> None:
        row = _row(s, session, lock=True)
        camera = _camera_row(s, row, name)
        details = {"session": row.name, "camera": name, "camera_id": camera.id}
        s.delete(camera)
        s.flush()
        _audit(s, actor, "watch.camera.remove", _view(s, row), details)

    db.run(work)


def list_cameras(db: Database, session: str) -> list[WatchCamera]:
    with db.read() as s:
        row = _row(s, session)
        query = (
            select(WatchCameraRow)
            .where(WatchCameraRow.session_id == row.id)
            .order_by(WatchCameraRow.name)
        )
        return [_camera(c, row.name) for c in s.scalars(query)]


def report_camera_status(
    db: Database, camera_id: int, stats: Mapping[str, Any], *, now: datetime | None = None
) -> None:
    """A worker's heartbeat (`SourceStats.as_dict()`): health, not an act, so not audited."""

    def work(s: Session) -> None:
        if s.get(WatchCameraRow, camera_id) is None:
            raise NotFoundError(f"no camera with id {camera_id}")
        status = s.get(CameraStatusRow, camera_id)
        if status is None:
            s.add(CameraStatusRow(camera_id=camera_id, updated_at=now or utcnow(), stats=stats))
        else:
            status.updated_at, status.stats = now or utcnow(), dict(stats)

    db.run(work)


def camera_statuses(db: Database, session: str) -> list[CameraStatus]:
    with db.read() as s:
        row = _row(s, session)
        query = (
            select(WatchCameraRow.name, CameraStatusRow)
            .join(CameraStatusRow, CameraStatusRow.camera_id == WatchCameraRow.id)
            .where(WatchCameraRow.session_id == row.id)
            .order_by(WatchCameraRow.name)
        )
        return [
            CameraStatus(st.camera_id, cam, st.updated_at, dict(st.stats))
            for cam, st in s.execute(query)
        ]


# -- helpers used by alerts ----------------------------------------------------------------------


def open_session_row(
    s: Session, session_id: int, now: datetime | None = None, *, lock: bool = True
) -> WatchSessionRow:
    """The session, locked (its alerts are written one writer at a time), if it is open."""
    row = _row_by_id(s, session_id, lock=lock)
    _check_open(row, now)
    return row


def camera_id_of(s: Session, session_id: int, camera: str) -> int | None:
    query = select(WatchCameraRow.id).where(
        WatchCameraRow.session_id == session_id, WatchCameraRow.name == camera
    )
    return s.scalar(query)


def audit_session(
    s: Session, actor: str, operation: str, row: WatchSessionRow, details: Mapping[str, Any]
) -> None:
    """An entry naming the session's purpose and case (gallery: its first watchlist)."""
    append(
        s,
        AuditRecord(
            actor,
            operation,
            gallery=_first_gallery(s, row.id),
            purpose=row.purpose,
            case_reference=row.case_ref,
            details=details,
        ),
    )


# -- internals -----------------------------------------------------------------------------------


def _audit(
    s: Session, actor: str, operation: str, view: WatchSession, details: Mapping[str, Any]
) -> None:
    record = AuditRecord(
        actor,
        operation,
        gallery=view.galleries[0] if view.galleries else None,
        purpose=view.purpose,
        case_reference=view.case_ref,
        details=details,
    )
    append(s, record)


def _settings(view: WatchSession) -> dict[str, Any]:
    return {
        "session": view.name,
        "legal_basis": view.legal_basis,
        "expires_at": view.expires_at,
        "target_fpir": view.target_fpir,
        "threshold": view.threshold,
        "galleries": list(view.galleries),
        "purpose": view.purpose,
        "case_ref": view.case_ref,
    }


def _row(s: Session, name: str, *, lock: bool = False) -> WatchSessionRow:
    query = select(WatchSessionRow).where(WatchSessionRow.name == name)
    row = s.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError(f"no watch session named {name!r}")
    return row


def _row_by_id(s: Session, session_id: int, *, lock: bool = False) -> WatchSessionRow:
    query = select(WatchSessionRow).where(WatchSessionRow.id == int(session_id))
    row = s.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError(f"no watch session with id {session_id}")
    return row


def _open_row(s: Session, name: str, now: datetime | None) -> WatchSessionRow:
    row = _row(s, name, lock=True)
    _check_open(row, now)
    return row


def _check_open(row: WatchSessionRow, now: datetime | None) -> None:
    if row.status != "active":
        raise SessionClosedError(f"watch session {row.name!r} is stopped")
    if (now or utcnow()) >= row.expires_at:
        raise SessionClosedError(
            f"watch session {row.name!r} expired at {row.expires_at.isoformat()}"
        )


def _watchlists(s: Session, names: Sequence[str]) -> list[GalleryRow]:
    """The named galleries: at least one, all watchlists, all of one model."""
    unique = list(dict.fromkeys(_required(n, "gallery name") for n in names))
    if not unique:
        raise InvalidValueError("a watch session needs at least one watchlist")
    rows = [get_gallery(s, name=n) for n in unique]
    for g in rows:
        if g.kind != "watchlist":
            raise NotWatchlistError(
                f"gallery {g.name!r} is an {g.kind} gallery: a watch session searches only "
                "galleries of kind 'watchlist'"
            )
    models = sorted({g.model for g in rows})
    if len(models) > 1:
        raise InvalidValueError(
            f"the session's watchlists use different models ({', '.join(models)}): "
            "one camera template is compared with all of them"
        )
    return rows


def _check_threshold_available(rows: Sequence[GalleryRow], explicit: float | None) -> None:
    if explicit is None and rows:
        threshold_for_fpir(rows[0].model, 1, MAX_FPIR)  # ConfigError when no tail is measured


def _gallery_rows(s: Session, session_id: int) -> list[GalleryRow]:
    query = (
        select(GalleryRow)
        .join(WatchSessionGalleryRow, WatchSessionGalleryRow.gallery_id == GalleryRow.id)
        .where(WatchSessionGalleryRow.session_id == session_id)
        .order_by(GalleryRow.name)
    )
    return list(s.scalars(query))


def _first_gallery(s: Session, session_id: int) -> str | None:
    query = (
        select(func.min(GalleryRow.name))
        .join(WatchSessionGalleryRow, WatchSessionGalleryRow.gallery_id == GalleryRow.id)
        .where(WatchSessionGalleryRow.session_id == session_id)
    )
    return s.scalar(query)


def _view(s: Session, row: WatchSessionRow) -> WatchSession:
    return WatchSession(
        id=row.id,
        name=row.name,
        purpose=row.purpose,
        case_ref=row.case_ref,
        legal_basis=row.legal_basis,
        expires_at=row.expires_at,
        target_fpir=row.target_fpir,
        threshold=row.threshold,
        status=row.status,
        created_by=row.created_by,
        created_at=row.created_at,
        stopped_at=row.stopped_at,
        galleries=tuple(g.name for g in _gallery_rows(s, row.id)),
    )


def _camera_row(s: Session, row: WatchSessionRow, name: str) -> WatchCameraRow:
    query = select(WatchCameraRow).where(
        WatchCameraRow.session_id == row.id, WatchCameraRow.name == name
    )
    camera = s.scalar(query)
    if camera is None:
        raise NotFoundError(f"session {row.name!r} has no camera named {name!r}")
    return camera


def _camera(row: WatchCameraRow, session: str) -> WatchCamera:
    return WatchCamera(row.id, session, row.name, row.url, dict(row.settings), row.enabled)


def _required(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueError(f"{what} is required")
    return value.strip()


def _future(when: datetime, now: datetime | None) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidValueError("expires_at must be a time with a time zone (e.g. datetime.UTC)")
    if when <= (now or utcnow()):
        raise InvalidValueError("a watch session's expiry must lie in the future")
    return when


def _fpir(value: float) -> float:
    if not (isinstance(value, int | float) and MIN_FPIR <= value <= MAX_FPIR):
        raise InvalidValueError(f"target FPIR must lie in [{MIN_FPIR:g}, {MAX_FPIR:g}]")
    return float(value)


def _threshold(value: float | None) -> float | None:
    if value is None:
        return None
    if not (isinstance(value, int | float) and -1.0 <= value <= 1.0):
        raise InvalidValueError("an explicit threshold on the cosine score must lie in [-1, 1]")
    return float(value)
