"""ORM tables of the store: galleries, subjects, templates, consents, calibration profiles, API keys
and the audit log.

The store is the source of truth; the vector index is a cache rebuilt from `templates`, whose
integer primary key is the index id. Types are portable (JSON, LargeBinary, timezone-aware
DateTime) so one hand-written migration serves SQLite and PostgreSQL, and constraint names follow
`NAMING_CONVENTION` so later migrations can refer to them on both. Any change here needs a new
migration in `migrations/versions/` (a test compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

GalleryKind = Literal["enrollment", "watchlist"]
GALLERY_KINDS: Final[tuple[GalleryKind, ...]] = ("enrollment", "watchlist")

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL (vector index ids are int64); SQLite only auto-numbers a column
# declared exactly INTEGER PRIMARY KEY, which is 64-bit there anyway.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zone type and would silently drop the offset, so values are converted
    to UTC before storing (stored text then compares correctly) and read back as UTC-aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone (e.g. datetime.UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class GalleryRow(Base):
    """A named set of subjects enrolled for one purpose under one legal basis and one model."""

    __tablename__ = "galleries"
    __table_args__ = (
        CheckConstraint("kind IN ('enrollment', 'watchlist')", name="kind"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    keep_images: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    min_quality: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    # Decision threshold on the similarity score; None means the model's default threshold.
    threshold: Mapped[float | None] = mapped_column(Float)
    # str(ModelId) every template of the gallery must come from, e.g. "dlib_resnet_v1@55533b28a958".
    model: Mapped[str] = mapped_column(String(200))
    # Version of the calibration profile (score normalisation) its comparisons use; None = raw.
    calibration: Mapped[str | None] = mapped_column(String(64))
    # The last change (template added or removed) in `gallery_changes`: one per transaction that
    # changes the gallery's templates, taken under the row's lock so changes commit in seq order.
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Log rows at or below this seq may have been deleted: an index older than it rebuilds.
    compacted_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return f"GalleryRow(id={self.id}, name={self.name!r}, kind={self.kind!r})"


class SubjectRow(Base):
    """A person in one gallery, known to the caller by `external_id`."""

    __tablename__ = "subjects"
    __table_args__ = (
        UniqueConstraint("gallery_id", "external_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    # `metadata` is reserved on declarative classes, hence the trailing underscore.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return f"SubjectRow(id={self.id}, external_id={self.external_id!r})"


class TemplateRow(Base):
    """One embedding of one subject; `id` is its id in the vector index.

    `embedding` is written and read only through `pack_vector`/`unpack_vector` (repository), so
    encryption at rest can be added in one place. AUTOINCREMENT on SQLite keeps ids from being
    reused after deletes, as PostgreSQL sequences do: a stale index entry must never point at a
    new template.
    """

    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("subject_id", "source_sha256"),
        Index("ix_templates_gallery_id_id", "gallery_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    # Denormalised from the subject so index rebuilds scan one gallery without a join.
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    dimension: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    recipe: Mapped[str] = mapped_column(String(64))
    quality: Mapped[float] = mapped_column(Float)
    source_sha256: Mapped[str] = mapped_column(String(64))
    image: Mapped[bytes | None] = mapped_column(LargeBinary)
    box: Mapped[list[float] | None] = mapped_column(JSON)  # [x1, y1, x2, y2] in source pixels
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return f"TemplateRow(id={self.id}, subject_id={self.subject_id}, model={self.model_name})"


class GalleryChangeRow(Base):
    """One template added to or removed from a gallery, at the gallery's change seq: the log an
    index replays to catch up with the database (the database is the truth, an index a cache)."""

    __tablename__ = "gallery_changes"
    __table_args__ = (CheckConstraint("op IN ('add', 'remove')", name="op"),)

    gallery_id: Mapped[int] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    template_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    op: Mapped[str] = mapped_column(String(8))


class ConsentRow(Base):
    """A subject's consent to one purpose: in force from `granted_at` until it expires or is
    withdrawn. Rows are never deleted while the subject exists, so the history stays auditable."""

    __tablename__ = "consents"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reference: Mapped[str] = mapped_column(Text)  # who consented, or the document's reference
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"ConsentRow(id={self.id}, subject_id={self.subject_id}, purpose={self.purpose!r})"


class CalibrationProfileRow(Base):
    """A stored score-normalisation profile, keyed by its content hash (its version)."""

    __tablename__ = "calibration_profiles"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)  # the profile's JSON, exactly as hashed
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


ROLES: Final[tuple[str, ...]] = ("admin", "enroller", "operator", "reviewer", "auditor")


class ApiKeyRow(Base):
    """An API key: only the sha256 of its secret is kept (the key is shown once, at creation).

    `gallery_ids` scopes the key to those galleries by id (their identity: a gallery created
    again under a deleted one's name is not in it); None means every gallery, [] none."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "role IN ('admin', 'enroller', 'operator', 'reviewer', 'auditor')", name="role"
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)  # public, shown in lists and logs
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    gallery_ids: Mapped[list[int] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rotated_from: Mapped[int | None] = mapped_column(Id)

    def __repr__(self) -> str:
        return f"ApiKeyRow(id={self.id}, prefix={self.prefix!r}, role={self.role!r})"


class AuditEntryRow(Base):
    """One entry of the append-only, hash-chained audit log. Never an image or a template:
    who, when, what, on which gallery, for which purpose, and the ids and scores it produced."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    operation: Mapped[str] = mapped_column(String(64))
    gallery: Mapped[str | None] = mapped_column(String(200))
    purpose: Mapped[str | None] = mapped_column(Text)
    case_reference: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    # The alert-event poller reads a few operations after a seq (migration 0007).
    __table_args__ = (Index("ix_audit_log_operation_seq", "operation", "seq"),)


class AuditHeadRow(Base):
    """The chain's last sequence number and hash, updated in the same transaction as each append:
    its row lock serialises appends, and it reveals entries cut from the end of the log."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


# -- watchlist monitoring (migration 0005) -----------------------------------------------------

SESSION_STATUSES: Final[tuple[str, ...]] = ("active", "stopped")
ALERT_STATES: Final[tuple[str, ...]] = ("pending", "confirmed", "rejected")
VERDICTS: Final[tuple[str, ...]] = ("confirm", "reject")


class WatchSessionRow(Base):
    """Cameras watched for the subjects of some watchlists, for one purpose and case, under one
    legal basis, until an expiry. Never deleted: stopped, so its alerts keep their context."""

    __tablename__ = "watch_sessions"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'stopped')", name="status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    purpose: Mapped[str] = mapped_column(Text)
    case_ref: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    target_fpir: Mapped[float] = mapped_column(Float)
    # An explicit cosine threshold; None: chosen for `target_fpir` from the watchlists' size.
    threshold: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WatchSessionGalleryRow(Base):
    """A watchlist (a gallery of kind 'watchlist') a session searches."""

    __tablename__ = "watch_session_galleries"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("watch_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    gallery_id: Mapped[int] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class WatchCameraRow(Base):
    """A camera of a session: its source URL (may hold credentials: shown redacted) and its
    pipeline settings."""

    __tablename__ = "watch_cameras"
    __table_args__ = (
        UniqueConstraint("session_id", "name"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("watch_sessions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class CameraStatusRow(Base):
    """A camera worker's last heartbeat: its source statistics (`SourceStats.as_dict`)."""

    __tablename__ = "camera_status"

    camera_id: Mapped[int] = mapped_column(
        ForeignKey("watch_cameras.id", ondelete="CASCADE"), primary_key=True
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AlertRow(Base):
    """One alert: a track (or tracks of one person on one camera within a cooldown) that matched
    a watchlist subject above the session's threshold, waiting for human review.

    The best-shot crop is a JPEG sealed with the template cipher, bound to the alert id. At
    `retention_until` the crop, the candidates and the top subject are erased (`purged_at` set):
    a tombstone with the camera, times, threshold and review outcome remains."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'confirmed', 'rejected')", name="state"),
        Index("ix_alerts_session_id_camera_state", "session_id", "camera", "state"),
        Index("ix_alerts_retention_until", "retention_until"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("watch_sessions.id"))
    # The camera's name stays when the camera is removed from the session.
    camera: Mapped[str] = mapped_column(String(200))
    camera_id: Mapped[int | None] = mapped_column(
        ForeignKey("watch_cameras.id", ondelete="SET NULL")
    )
    track_id: Mapped[int] = mapped_column(BigInteger)  # the worker's id of the latest track
    track_first_pts: Mapped[float] = mapped_column(Float)  # with track_id: which track it is
    tracks: Mapped[int] = mapped_column(Integer, default=1)  # tracks merged into this alert
    first_pts: Mapped[float] = mapped_column(Float)  # seconds, the stream's clock
    last_pts: Mapped[float] = mapped_column(Float)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Erased at the retention deadline (NULL then): who the alert was about.
    top_gallery_id: Mapped[int | None] = mapped_column(BigInteger)
    top_subject_id: Mapped[int | None] = mapped_column(BigInteger)
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    crop: Mapped[bytes | None] = mapped_column(LargeBinary)
    best_quality: Mapped[float] = mapped_column(Float)
    threshold_score: Mapped[float] = mapped_column(Float)
    threshold_source: Mapped[str] = mapped_column(Text)
    threshold_model: Mapped[str] = mapped_column(String(200))
    target_fpir: Mapped[float | None] = mapped_column(Float)
    watchlist_size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    retention_until: Mapped[datetime] = mapped_column(UTCDateTime)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertReviewRow(Base):
    """One reviewer's verdict on an alert, with the note that justifies it (one per reviewer)."""

    __tablename__ = "alert_reviews"
    __table_args__ = (
        UniqueConstraint("alert_id", "reviewer"),
        CheckConstraint("verdict IN ('confirm', 'reject')", name="verdict"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StagedTemplateRow(Base):
    """A template of a gallery's migration target model, computed from one kept enrolment
    image (one row per source template and target, so a rerun after a crash skips what is
    done). No index query reads this table: the switch moves the rows into `templates` in one
    transaction. `embedding` None: the target model found no face in the image."""

    __tablename__ = "staged_templates"
    __table_args__ = (
        UniqueConstraint("source_template_id", "target_model"),
        Index("ix_staged_templates_gallery_id_target_model", "gallery_id", "target_model"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    # The model-A template it replaces: erased with it (a subject erased mid-migration).
    source_template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    target_model: Mapped[str] = mapped_column(String(200))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed as in `templates`
    dimension: Mapped[int] = mapped_column(Integer)
    recipe: Mapped[str] = mapped_column(String(64))
    quality: Mapped[float] = mapped_column(Float)
    box: Mapped[list[float] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
