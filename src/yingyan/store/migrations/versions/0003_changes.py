"""A per-gallery change log: every template insert and delete writes one row in the same
transaction, so that an index in any process can catch up with the database before it answers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A plain-string default lets SQLite add the columns in place (ALTER TABLE ADD COLUMN): an
    # expression default makes batch mode recreate the table, and dropping the old one with
    # foreign keys on cascades to every subject and template (and loses AUTOINCREMENT).
    with op.batch_alter_table("galleries", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(
            sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("compacted_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "gallery_changes",
        sa.Column(
            "gallery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("template_id", sa.BigInteger(), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("gallery_id", "seq", "template_id", name="pk_gallery_changes"),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name="fk_gallery_changes_gallery_id_galleries",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("op IN ('add', 'remove')", name=op.f("ck_gallery_changes_op")),
    )


def downgrade() -> None:
    op.drop_table("gallery_changes")
    with op.batch_alter_table("galleries") as batch:
        batch.drop_column("compacted_seq")
        batch.drop_column("change_seq")
