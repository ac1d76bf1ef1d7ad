"""Which audit entries a key may read: all of them for a key scoped to no gallery; for a scoped
key, the entries of the galleries its scope holds, by identity.

Entries name their gallery, and a name can be used again after a deletion, so the entries of a
gallery that exists now are those with its name written after the last successful deletion of
a gallery of that name (`gallery.delete` commits in one transaction with its entry, so no
entry of the old gallery follows it). A gallery of the scope that no longer exists has no name
to match: its entries are read with a key scoped to no gallery. Entries about no gallery (key
changes, detection, 1:1 comparisons of two images) are service-wide and never shown to a
scoped key.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import Session

from yingyan.access.keys import ApiKey
from yingyan.audit.log import MAX_LIMIT, AuditEntry, entries, entry_of
from yingyan.store.repository import InvalidValueError
from yingyan.store.tables import AuditEntryRow, GalleryRow

GALLERY_DELETE = "gallery.delete"  # the operation both the API and the CLI audit a deletion as


def visible_entries(
    session: Session, key: ApiKey, *, after: int = 0, limit: int = 100
) -> list[AuditEntry]:
    """Up to `limit` entries with seq > `after` that `key` may read, oldest first (page on
    with the last seq, as with `audit.log.entries`)."""
    if key.scope is None:
        return entries(session, after=after, limit=limit)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidValueError(f"limit must lie in [1, {MAX_LIMIT}]")
    query = (
        select(AuditEntryRow)
        .where(AuditEntryRow.seq > after, _in_scope(session, key))
        .order_by(AuditEntryRow.seq)
        .limit(limit)
    )
    return [entry_of(row) for row in session.scalars(query)]


def _in_scope(session: Session, key: ApiKey) -> ColumnElement[bool]:
    """Entries of the scope's galleries as they exist now (names read in this transaction)."""
    ids = key.gallery_ids or ()
    names = list(session.scalars(select(GalleryRow.name).where(GalleryRow.id.in_(ids))))
    if not names:
        return false()
    return or_(*(_since_last_deletion(name) for name in names))


def _since_last_deletion(name: str) -> ColumnElement[bool]:
    deleted = (
        select(func.coalesce(func.max(AuditEntryRow.seq), 0))
        .where(
            AuditEntryRow.gallery == name,
            AuditEntryRow.operation == GALLERY_DELETE,
            AuditEntryRow.outcome == "ok",
        )
        .scalar_subquery()
    )
    return and_(AuditEntryRow.gallery == name, AuditEntryRow.seq > deleted)
