"""An index on the audit log's (operation, seq): the alert-event poller (webhooks, the alert
stream) reads the few alert operations after a seq among every search and enrolment entry.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_audit_log_operation_seq", "audit_log", ["operation", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_operation_seq", table_name="audit_log")
