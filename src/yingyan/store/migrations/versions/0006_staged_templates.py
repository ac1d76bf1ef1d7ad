"""Gallery migration between recognizer models: templates of the target model wait in
`staged_templates`, where no index query sees them, until the switch moves them in.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "staged_templates",
        sa.Column("id", Id, primary_key=True),
        sa.Column("gallery_id", Id, nullable=False),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("source_template_id", Id, nullable=False),
        sa.Column("target_model", sa.String(200), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("recipe", sa.String(64), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_staged_templates"),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name="fk_staged_templates_gallery_id_galleries",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name="fk_staged_templates_subject_id_subjects",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_template_id"],
            ["templates.id"],
            name="fk_staged_templates_source_template_id_templates",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "source_template_id",
            "target_model",
            name="uq_staged_templates_source_template_id_target_model",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_staged_templates_gallery_id_target_model",
        "staged_templates",
        ["gallery_id", "target_model"],
    )


def downgrade() -> None:
    op.drop_index("ix_staged_templates_gallery_id_target_model", table_name="staged_templates")
    op.drop_table("staged_templates")
