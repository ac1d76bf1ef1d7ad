"""Moving a gallery from one recognizer model to another without downtime.

Searches keep using the old model (A) while the new one's (B) templates are computed from the
kept enrolment images and staged in `staged_templates`, which no index query reads: one row
per source template, committed a batch at a time, so a rerun after a crash continues where it
stopped. The switch is one transaction: A's templates deleted, B's moved in (each keeping its
source's sealed image), the change log's removes and adds (every process's index catches up),
`galleries.model` set to B and the audit entry. An index of A is then closed and erased in
every process instead of being replayed into (`GalleryService`), and A's file or collection is
removed here. Templates that cannot be migrated (no kept image, or B finds no face) are listed
by subject: the switch is refused while there are any, unless the caller drops them.

Staged templates are biometric data like the gallery's: sealed for the same owner (gallery and
subject) as the template they replace, re-sealed by key rotation (`privacy.rotation`, which
also refuses to retire a key one of them uses), deleted with their subject, source template or
gallery (the database cascades), vacuumed with the other tables, and deleted by `abandon`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from yingyan.engine import Engine
from yingyan.errors import ConfigError, YingyanError
from yingyan.gallery.service import GalleryService, Hook
from yingyan.store import NotFoundError, get_gallery, subjects_by_id
from yingyan.store.repository import (
    MigrationSource,
    SwitchResult,
    discard_staged,
    lock_gallery,
    migration_sources,
    stage_no_face,
    stage_template,
    staged_templates,
    switch_gallery_model,
    template_image,
)
from yingyan.store.tables import TemplateRow
from yingyan.types import Detection, ModelId

Progress = Callable[[int, int], None]  # (done, total) after each batch


class MigrationRefusedError(YingyanError):
    """The switch would drop templates (no kept image, or no face found by the new model)."""

    code = "conflict"


@dataclass(frozen=True, slots=True)
class Unmigrated:
    """A subject with templates the new model cannot replace: to re-enrol."""

    subject_id: int
    external_id: str
    display_name: str | None
    no_image: int  # templates without a kept image
    no_face: int  # kept images in which the new model found no face

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "external_id": self.external_id,
            "name": self.display_name,
            "no_image": self.no_image,
            "no_face": self.no_face,
        }


@dataclass(slots=True)
class MigrationStatus:
    gallery: str
    source_model: str
    target_model: str
    templates: int = 0
    staged: int = 0  # templates of the target model ready to switch in
    pending: int = 0  # kept images not yet processed
    unmigrated: list[Unmigrated] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.pending == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "gallery": self.gallery,
            "source_model": self.source_model,
            "target_model": self.target_model,
            "templates": self.templates,
            "staged": self.staged,
            "pending": self.pending,
            "unmigrated": [u.as_dict() for u in self.unmigrated],
        }


@dataclass(frozen=True, slots=True)
class SwitchReport:
    gallery: str
    source_model: str
    target_model: str
    removed: int
    added: int
    dropped_subjects: list[Unmigrated]  # lost some or all templates: to re-enrol


def status(service: GalleryService, gallery: str, target_model: str) -> MigrationStatus:
    """Where a migration of `gallery` to `target_model` stands (a dry run: nothing changes)."""
    with service.db.read() as s:
        return _status(s, gallery, target_model)


def _status(s: Session, gallery: str, target_model: str) -> MigrationStatus:
    g = get_gallery(s, name=gallery)
    if g.model == target_model:
        raise ConfigError(f"gallery {gallery!r} already holds templates of {target_model}")
    pending = migration_sources(s, gallery_id=g.id, target_model=target_model)
    staged = staged_templates(s, gallery_id=g.id, target_model=target_model)
    out = MigrationStatus(gallery, g.model, target_model)
    out.templates = len(pending) + len(staged)
    out.staged = sum(1 for r in staged if r.embedding is not None)
    out.pending = sum(1 for p in pending if p.has_image)
    no_image: dict[int, int] = {}
    for p in pending:
        if not p.has_image:
            no_image[p.subject_id] = no_image.get(p.subject_id, 0) + 1
    no_face: dict[int, int] = {}
    for r in staged:
        if r.embedding is None:
            no_face[r.subject_id] = no_face.get(r.subject_id, 0) + 1
    subjects = subjects_by_id(s, subject_ids=set(no_image) | set(no_face))
    out.unmigrated = [
        Unmigrated(
            i,
            subjects[i].external_id,
            subjects[i].display_name,
            no_image.get(i, 0),
            no_face.get(i, 0),
        )
        for i in sorted(subjects)
    ]
    return out


def stage(
    service: GalleryService,
    gallery: str,
    engine: Engine,
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> MigrationStatus:
    """Compute and stage the target model's template of every kept image not staged yet, one
    committed batch at a time (a rerun continues). Searches are untouched."""
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    target = str(engine.model_id)
    with service.db.read() as s:
        g = get_gallery(s, name=gallery)
        gallery_id = g.id
        if g.model == target:
            raise ConfigError(f"gallery {gallery!r} already holds templates of {target}")
        todo = [
            p for p in migration_sources(s, gallery_id=g.id, target_model=target) if p.has_image
        ]
    for start in range(0, len(todo), batch_size):
        _stage_batch(service, gallery_id, engine, todo[start : start + batch_size])
        if progress is not None:
            progress(min(start + batch_size, len(todo)), len(todo))
    return status(service, gallery, target)


def _stage_batch(
    service: GalleryService, gallery_id: int, engine: Engine, batch: Sequence[MigrationSource]
) -> None:
    """Decrypt the batch's images, embed them in one engine batch, commit the staged rows."""
    ids = [p.template_id for p in batch]
    with service.db.read() as s:
        rows = list(s.scalars(select(TemplateRow).where(TemplateRow.id.in_(ids))))
        images = {r.id: template_image(r, service.cipher) for r in rows}
        s.expunge_all()
    found: list[tuple[TemplateRow, Any, Detection]] = []
    missing: list[TemplateRow] = []
    for row in rows:
        data = images.get(row.id)
        image = engine.load(data) if data is not None else None
        chosen = None if image is None else _matching(engine.detect(image), row.box)
        if image is None or chosen is None:
            missing.append(row)
        else:
            found.append((row, image, chosen))
    faces = engine.faces_many([im for _, im, _ in found], [[d] for _, _, d in found])
    target = str(engine.model_id)

    def work(s: Session) -> None:
        for (row, _, d), (face,) in zip(found, faces, strict=True):
            assert face.template is not None
            b = d.box
            stage_template(
                s,
                source=row,
                template=face.template,
                quality=face.quality.score,
                box=(b.x1, b.y1, b.x2, b.y2),
                cipher=service.cipher,
            )
        for row in missing:
            stage_no_face(s, source=row, target_model=target)

    service.write(work)


def _matching(detections: list[Detection], box: list[float] | None) -> Detection | None:
    """The detection of the enrolled face: the one overlapping its stored box most (none if
    no detection overlaps it), or the first (best) without a stored box."""
    if not detections:
        return None
    if box is None:
        return detections[0]
    x1, y1, x2, y2 = box
    best, best_iou = None, 0.0
    for d in detections:
        b = d.box
        w = max(0.0, min(x2, b.x2) - max(x1, b.x1))
        h = max(0.0, min(y2, b.y2) - max(y1, b.y1))
        inter = w * h
        union = (x2 - x1) * (y2 - y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
        iou = inter / union if union > 0 else 0.0
        if iou > best_iou:
            best, best_iou = d, iou
    return best


def switch(
    service: GalleryService,
    gallery: str,
    target_model: str,
    *,
    drop_unmigrated: bool = False,
    audit: Hook | None = None,
) -> SwitchReport:
    """The atomic switch (one transaction, with `audit` given the report), then erase the old
    model's index here and on disk. Refused while kept images are still pending (stage first)
    or, without `drop_unmigrated`, while any template would be dropped."""

    name, _, version = target_model.rpartition("@")
    target = ModelId(name, version)

    def work(s: Session) -> tuple[SwitchReport, int]:
        lock_gallery(s, gallery_id=get_gallery(s, name=gallery).id)  # enrolments wait
        st = _status(s, gallery, target_model)  # inside the transaction: nothing slips in
        if not st.ready:
            raise MigrationRefusedError(
                f"{st.pending} kept images of gallery {gallery!r} are not staged yet "
                "(enrolled meanwhile, or an interrupted run): stage again"
            )
        if st.unmigrated and not drop_unmigrated:
            raise MigrationRefusedError(
                f"{len(st.unmigrated)} subjects have templates that cannot be migrated "
                "(no kept image, or no face found by the new model): re-enrol them after "
                "the switch, and allow dropping those templates (--drop-unmigrated): "
                + ", ".join(u.external_id for u in st.unmigrated[:20])
            )
        g = get_gallery(s, name=gallery)
        gid = g.id
        done: SwitchResult = switch_gallery_model(s, gallery_id=gid, target=target)
        report = SwitchReport(
            gallery,
            st.source_model,
            target_model,
            len(done.removed),
            len(done.added),
            st.unmigrated,
        )
        return report, gid

    def audited(s: Session, result: tuple[SwitchReport, int]) -> None:
        if audit is not None:
            audit(s, result[0])

    report, gid = service.write(work, audit=audited)
    service.db.purge_deleted()
    service.erase_model_index(gid, report.source_model)
    service.refresh(gallery)
    return report


def abandon(service: GalleryService, gallery: str, *, audit: Hook | None = None) -> int:
    """Delete every staged template of the gallery (a migration given up: they are biometric
    data too); returns how many. The gallery and its searches are untouched. Refused
    (NotFoundError, nothing audited) when the gallery has nothing staged."""

    def work(s: Session) -> int:
        gone = discard_staged(s, gallery_id=get_gallery(s, name=gallery).id)
        if not gone:
            raise NotFoundError(
                f"gallery {gallery!r} has no staged templates: no migration to abandon"
            )
        return gone

    gone = service.write(work, audit=audit)
    service.db.purge_deleted()
    return gone
