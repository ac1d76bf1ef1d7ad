"""Initial schema: galleries, subjects, templates, consents.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand to be read. Every constraint is named as tables.NAMING_CONVENTION would name it,
so later migrations (and SQLite's batch mode) can find it. Ids are BIGINT on PostgreSQL and
INTEGER PRIMARY KEY AUTOINCREMENT on SQLite: 64-bit on both, never reused after a delete.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True)


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "galleries",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("keep_images", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("min_quality", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_galleries"),
        sa.UniqueConstraint("name", name="uq_galleries_name"),
        # op.f: the name is final (the convention would prefix a check constraint's name again).
        sa.CheckConstraint("kind IN ('enrollment', 'watchlist')", name=op.f("ck_galleries_kind")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subjects",
        _id(),
        sa.Column("gallery_id", Id, nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_subjects"),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name="fk_subjects_gallery_id_galleries",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("gallery_id", "external_id", name="uq_subjects_gallery_id_external_id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "templates",
        _id(),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("gallery_id", Id, nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),  # float32 little-endian
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("recipe", sa.String(64), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=True),
        sa.Column("box", sa.JSON(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name="fk_templates_subject_id_subjects",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name="fk_templates_gallery_id_galleries",
            ondelete="CASCADE",
        ),
        # Re-enrolling the same image for the same subject is a no-op.
        sa.UniqueConstraint(
            "subject_id", "source_sha256", name="uq_templates_subject_id_source_sha256"
        ),
        sqlite_autoincrement=True,
    )
    # Index rebuilds scan one gallery in id order.
    op.create_index("ix_templates_gallery_id_id", "templates", ["gallery_id", "id"])
    op.create_table(
        "consents",
        _id(),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("granted_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("withdrawn_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name="fk_consents_subject_id_subjects",
            ondelete="CASCADE",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_consents_subject_id", "consents", ["subject_id"])


def downgrade() -> None:
    op.drop_index("ix_consents_subject_id", table_name="consents")
    op.drop_table("consents")
    op.drop_index("ix_templates_gallery_id_id", table_name="templates")
    op.drop_table("templates")
    op.drop_table("subjects")
    op.drop_table("galleries")
