"""API keys are scoped to gallery ids, not names: a gallery deleted and created again under the
same name is a new gallery, and no key issued for the old one reaches it. A stored name is
converted to the id of the gallery that has it now; a name no gallery has scopes to nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# SQLite's batch mode recreates the table: keep AUTOINCREMENT (key ids are never reused).
_KEEP_IDS: Final[dict[str, Any]] = {"sqlite_autoincrement": True}
_galleries = sa.table("galleries", sa.column("id", sa.Integer()), sa.column("name", sa.String()))


def _keys(column: str) -> sa.TableClause:
    return sa.table("api_keys", sa.column("id", sa.Integer()), sa.column(column, sa.JSON()))


def upgrade() -> None:
    with op.batch_alter_table("api_keys", table_kwargs=_KEEP_IDS) as batch:
        batch.add_column(sa.Column("gallery_ids", sa.JSON(), nullable=True))
    ids = {name: gid for gid, name in _gallery_rows()}
    _convert("galleries", "gallery_ids", lambda name: ids.get(str(name)))
    with op.batch_alter_table("api_keys", table_kwargs=_KEEP_IDS) as batch:
        batch.drop_column("galleries")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", table_kwargs=_KEEP_IDS) as batch:
        batch.add_column(sa.Column("galleries", sa.JSON(), nullable=True))
    names: Mapping[int, str] = dict(_gallery_rows())
    _convert("gallery_ids", "galleries", lambda gid: names.get(int(gid)))
    with op.batch_alter_table("api_keys", table_kwargs=_KEEP_IDS) as batch:
        batch.drop_column("gallery_ids")


def _gallery_rows() -> list[tuple[int, str]]:
    rows = op.get_bind().execute(sa.select(_galleries.c.id, _galleries.c.name))
    return [(int(gid), str(name)) for gid, name in rows]


def _convert(source: str, target: str, mapped: Callable[[Any], Any]) -> None:
    """Copy each scoped key's scope from `source` to `target`, mapping every entry and leaving
    out those that map to nothing (an unscoped key, NULL, stays unscoped)."""
    bind = op.get_bind()
    old, new = _keys(source), _keys(target)
    for key_id, scope in bind.execute(sa.select(old.c.id, old.c[source])).all():
        if scope is None:
            continue
        kept = [m for m in (mapped(entry) for entry in scope) if m is not None]
        scope_out = list(dict.fromkeys(kept))
        bind.execute(sa.update(new).where(new.c.id == key_id).values({target: scope_out}))
