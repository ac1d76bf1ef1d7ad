"""Galleries: created and deleted by admins; listed to any key, filtered by its scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from yingyan.access.keys import ApiKey
from yingyan.api.schemas import ERROR_RESPONSES, GalleryIn, GalleryOut
from yingyan.api.security import require, require_gallery
from yingyan.api.state import AppState, get_state
from yingyan.audit.log import AuditRecord
from yingyan.gallery.service import GalleryService
from yingyan.store import GalleryRow, count_subjects, create_gallery, get_gallery, list_galleries

router = APIRouter(prefix="/api/v1/galleries", tags=["galleries"], responses=ERROR_RESPONSES)
State = Annotated[AppState, Depends(get_state)]


def gallery_out(session: Session, row: GalleryRow) -> GalleryOut:
    return GalleryOut(
        name=row.name,
        kind=row.kind,
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        expires_at=row.expires_at,
        keep_images=row.keep_images,
        min_quality=row.min_quality,
        threshold=row.threshold,
        model=row.model,
        calibration=row.calibration,
        created_at=row.created_at,
        subjects=count_subjects(session, gallery_id=row.id),
    )


@router.post("", status_code=201, response_model=GalleryOut)
async def create(
    body: GalleryIn,
    state: State,
    key: Annotated[ApiKey, Depends(require("galleries:write"))],
) -> GalleryOut:
    """Create a gallery for the model the service runs. Purpose and legal basis are required."""
    model = str(state.inference.model)

    def work(galleries: GalleryService) -> GalleryOut:
        with galleries.db.session() as session:
            row = create_gallery(session, model=model, **body.model_dump())
            session.flush()
            return gallery_out(session, row)

    out = await state.gallery_call(work)
    details = body.model_dump(mode="json", exclude={"name", "purpose", "keep_images"})
    details["image_retention"] = body.keep_images
    await state.audit(
        AuditRecord(
            key.label, "gallery.create", gallery=body.name, purpose=body.purpose, details=details
        )
    )
    return out


@router.get("", response_model=list[GalleryOut])
async def list_(
    state: State, key: Annotated[ApiKey, Depends(require("galleries:read"))]
) -> list[GalleryOut]:
    """The galleries this key may use."""

    def work(galleries: GalleryService) -> list[GalleryOut]:
        with galleries.db.session() as session:
            rows = [g for g in list_galleries(session) if key.can_access(g.name)]
            return [gallery_out(session, g) for g in rows]

    return await state.gallery_call(work)


@router.get("/{gallery}", response_model=GalleryOut)
async def get(
    gallery: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("galleries:read"))],
) -> GalleryOut:
    def work(galleries: GalleryService) -> GalleryOut:
        with galleries.db.session() as session:
            return gallery_out(session, get_gallery(session, name=gallery))

    return await state.gallery_call(work)


@router.delete("/{gallery}", status_code=204)
async def delete(
    gallery: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("galleries:write"))],
) -> None:
    """Delete a gallery with every subject and template, from the database and the index."""
    await state.gallery_call(lambda galleries: galleries.delete(gallery))
    await state.audit(AuditRecord(key.label, "gallery.delete", gallery=gallery))
