"""Retention: subjects whose consent has ended (withdrawn or expired, none still in force) and
every subject of an expired gallery are erased, templates from the database and the index,
each with an audit entry. Run by `yingyan retention run` (e.g. daily from cron)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.orm import Session

from yingyan.audit.log import AuditRecord, append
from yingyan.gallery.service import GalleryService
from yingyan.store import get_gallery_by_id, subjects_due_for_removal


@dataclass(frozen=True, slots=True)
class Purge:
    gallery: str
    external_id: str
    reason: str  # gallery_expired | consent_ended
    templates: int


def due(service: GalleryService, *, now: datetime | None = None) -> list[Purge]:
    """What a run would erase now (templates not yet counted: 0)."""
    with service.db.read() as session:
        out = []
        for subject, reason in subjects_due_for_removal(session, now=now):
            gallery = get_gallery_by_id(session, gallery_id=subject.gallery_id).name
            out.append(Purge(gallery, subject.external_id, reason, 0))
        return out


def _record(actor: str, item: Purge, session: Session, removed: list[int]) -> None:
    """The purge's audit entry, in the erasure's own transaction."""
    details = {"subject": item.external_id, "reason": item.reason, "templates_erased": len(removed)}
    append(session, AuditRecord(actor, "retention.purge", gallery=item.gallery, details=details))


def run_retention(
    service: GalleryService,
    *,
    actor: str,
    now: datetime | None = None,
    progress: Callable[[Purge], None] | None = None,
) -> list[Purge]:
    """Erase every subject due for removal; returns what was erased."""
    done = []
    for item in due(service, now=now):
        erased = service.erase_subject(
            item.gallery, item.external_id, audit=partial(_record, actor, item)
        )
        purge = Purge(item.gallery, item.external_id, item.reason, erased)
        done.append(purge)
        if progress is not None:
            progress(purge)
    return done
