"""The per-gallery change log: how an index in any process learns what changed in the database.

Every template insert or delete writes rows here in the same transaction as the template row,
at a new value of `galleries.change_seq`. The increment is an UPDATE of the gallery's row, so it
holds that row's lock until commit: writers of one gallery take turns (others do not wait) and a
gallery's seqs become visible in order. A reader that reads `change_seq` first and the log or the
templates after can therefore never miss a committed change: whatever it reads after is at or
below a seq it will replay again, and replays are idempotent (add replaces, remove ignores absent
ids; a template id never names another vector).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from yingyan.store.tables import GalleryChangeRow, GalleryRow

Op = Literal["add", "remove"]
_INSERT_CHUNK: Final = 1000


@dataclass(frozen=True, slots=True)
class ChangeState:
    """Where a gallery's log stands: its last seq, and below which rows may be gone."""

    seq: int
    compacted: int
    model: str = ""  # the gallery's model at that seq (a migration changes it)


@dataclass(slots=True)
class NetChanges:
    """The net effect of a run of the log: what to add and what to remove, by template id."""

    upto: int
    added: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)


def log_change(session: Session, *, gallery_id: int, op: Op, template_ids: Iterable[int]) -> int:
    """Record that these templates were added to or removed from the gallery, at a new seq
    (returned); nothing is recorded for no ids. Call it in the transaction of the change."""
    ids = sorted({int(i) for i in template_ids})
    if not ids:
        return -1
    seq = session.execute(
        update(GalleryRow)
        .where(GalleryRow.id == gallery_id)
        .values(change_seq=GalleryRow.change_seq + 1)
        .returning(GalleryRow.change_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    rows = [{"gallery_id": gallery_id, "seq": seq, "template_id": t, "op": op} for t in ids]
    for start in range(0, len(rows), _INSERT_CHUNK):
        session.execute(insert(GalleryChangeRow), rows[start : start + _INSERT_CHUNK])
    return int(seq)


def change_state(session: Session, *, gallery_id: int) -> ChangeState | None:
    """The gallery's current seq and model (one indexed read), or None if it is gone."""
    row = session.execute(
        select(GalleryRow.change_seq, GalleryRow.compacted_seq, GalleryRow.model).where(
            GalleryRow.id == gallery_id
        )
    ).one_or_none()
    return None if row is None else ChangeState(int(row[0]), int(row[1]), str(row[2]))


def changes_since(session: Session, *, gallery_id: int, after: int, upto: int) -> NetChanges:
    """The net changes with seq in (after, upto]: the last op on a template wins."""
    query = (
        select(GalleryChangeRow.template_id, GalleryChangeRow.op)
        .where(
            GalleryChangeRow.gallery_id == gallery_id,
            GalleryChangeRow.seq > after,
            GalleryChangeRow.seq <= upto,
        )
        .order_by(GalleryChangeRow.seq)
    )
    net = NetChanges(upto)
    for template_id, op in session.execute(query):
        if op == "add":
            net.added.add(int(template_id))
            net.removed.discard(int(template_id))
        else:
            net.removed.add(int(template_id))
            net.added.discard(int(template_id))
    return net


def compact_changes(session: Session, *, gallery_id: int, upto: int) -> int:
    """Delete the log's rows at or below `upto` (an index older than that rebuilds from the
    templates when it next opens); returns how many went."""
    state = change_state(session, gallery_id=gallery_id)
    if state is None:
        return 0
    upto = min(upto, state.seq)
    result = session.execute(
        delete(GalleryChangeRow).where(
            GalleryChangeRow.gallery_id == gallery_id, GalleryChangeRow.seq <= upto
        )
    )
    gone = getattr(result, "rowcount", 0)
    if upto > state.compacted:
        session.execute(
            update(GalleryRow)
            .where(GalleryRow.id == gallery_id)
            .values(compacted_seq=upto)
            .execution_options(synchronize_session=False)
        )
    return int(gone or 0)


def log_size(session: Session, *, gallery_id: int) -> int:
    query = select(func.count()).where(GalleryChangeRow.gallery_id == gallery_id)
    return int(session.scalar(query) or 0)


def compact_all(session: Session, *, keep: int) -> int:
    """Keep only the last `keep` seqs of every gallery's log (an index further behind rebuilds
    from the templates: correct, only slower); returns how many rows went."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    gone = 0
    for gallery_id, seq in session.execute(select(GalleryRow.id, GalleryRow.change_seq)).all():
        if seq > keep:
            gone += compact_changes(session, gallery_id=int(gallery_id), upto=int(seq) - keep)
    return gone
