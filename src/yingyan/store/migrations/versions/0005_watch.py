"""Watchlist monitoring: watch sessions with their watchlists and cameras, camera heartbeats,
alerts (sealed best-shot crop, candidates, threshold) and their two-person review.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def _created() -> sa.Column[object]:
    return sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "watch_sessions",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("case_ref", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("target_fpir", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _created(),
        sa.Column("stopped_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_watch_sessions"),
        sa.UniqueConstraint("name", name="uq_watch_sessions_name"),
        sa.CheckConstraint(
            "status IN ('active', 'stopped')", name=op.f("ck_watch_sessions_status")
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "watch_session_galleries",
        sa.Column("session_id", Id, nullable=False),
        sa.Column("gallery_id", Id, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "gallery_id", name="pk_watch_session_galleries"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["watch_sessions.id"],
            name="fk_watch_session_galleries_session_id_watch_sessions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name="fk_watch_session_galleries_gallery_id_galleries",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_watch_session_galleries_gallery_id", "watch_session_galleries", ["gallery_id"]
    )
    op.create_table(
        "watch_cameras",
        sa.Column("id", Id, primary_key=True),
        sa.Column("session_id", Id, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name="pk_watch_cameras"),
        sa.UniqueConstraint("session_id", "name", name="uq_watch_cameras_session_id_name"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["watch_sessions.id"],
            name="fk_watch_cameras_session_id_watch_sessions",
            ondelete="CASCADE",
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "camera_status",
        sa.Column("camera_id", Id, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("camera_id", name="pk_camera_status"),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["watch_cameras.id"],
            name="fk_camera_status_camera_id_watch_cameras",
            ondelete="CASCADE",
        ),
    )
    _create_alerts()
    op.create_table(
        "alert_reviews",
        sa.Column("id", Id, primary_key=True),
        sa.Column("alert_id", Id, nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_reviews"),
        sa.UniqueConstraint("alert_id", "reviewer", name="uq_alert_reviews_alert_id_reviewer"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_reviews_alert_id_alerts", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "verdict IN ('confirm', 'reject')", name=op.f("ck_alert_reviews_verdict")
        ),
        sqlite_autoincrement=True,
    )


def _create_alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", Id, primary_key=True),
        sa.Column("session_id", Id, nullable=False),
        sa.Column("camera", sa.String(200), nullable=False),
        sa.Column("camera_id", Id, nullable=True),
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("track_first_pts", sa.Float(), nullable=False),
        sa.Column("tracks", sa.Integer(), nullable=False),
        sa.Column("first_pts", sa.Float(), nullable=False),
        sa.Column("last_pts", sa.Float(), nullable=False),
        sa.Column("first_seen_at", Timestamp, nullable=False),
        sa.Column("last_seen_at", Timestamp, nullable=False),
        sa.Column("top_gallery_id", sa.BigInteger(), nullable=True),
        sa.Column("top_subject_id", sa.BigInteger(), nullable=True),
        sa.Column("candidates", sa.JSON(), nullable=True),
        sa.Column("crop", sa.LargeBinary(), nullable=True),
        sa.Column("best_quality", sa.Float(), nullable=False),
        sa.Column("threshold_score", sa.Float(), nullable=False),
        sa.Column("threshold_source", sa.Text(), nullable=False),
        sa.Column("threshold_model", sa.String(200), nullable=False),
        sa.Column("target_fpir", sa.Float(), nullable=True),
        sa.Column("watchlist_size", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("retention_until", Timestamp, nullable=False),
        sa.Column("purged_at", Timestamp, nullable=True),
        _created(),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["watch_sessions.id"], name="fk_alerts_session_id_watch_sessions"
        ),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["watch_cameras.id"],
            name="fk_alerts_camera_id_watch_cameras",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'confirmed', 'rejected')", name=op.f("ck_alerts_state")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_alerts_session_id_camera_state", "alerts", ["session_id", "camera", "state"]
    )
    op.create_index("ix_alerts_retention_until", "alerts", ["retention_until"])


def downgrade() -> None:
    op.drop_table("alert_reviews")
    op.drop_index("ix_alerts_retention_until", table_name="alerts")
    op.drop_index("ix_alerts_session_id_camera_state", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("camera_status")
    op.drop_table("watch_cameras")
    op.drop_index("ix_watch_session_galleries_gallery_id", table_name="watch_session_galleries")
    op.drop_table("watch_session_galleries")
    op.drop_table("watch_sessions")
