"""Galleries: created and deleted by admins; listed to any key, filtered by its scope."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from sqlalchemy.orm import Session

from yingyan.access.keys import ApiKey
from yingyan.api.errors import ApiError
from yingyan.api.schemas import ERROR_RESPONSES, GalleryIn, GalleryOut, JsonObject
from yingyan.api.security import require, require_gallery
from yingyan.api.state import AppState, get_state
from yingyan.calibration.fair_score import FairScoreProfile, parse_profile
from yingyan.gallery.service import GalleryService
from yingyan.store import GalleryRow, count_subjects, create_gallery, get_gallery, list_galleries
from yingyan.store.repository import KEEP, Keep

router = APIRouter(prefix="/api/v1/galleries", tags=["galleries"], responses=ERROR_RESPONSES)
State = Annotated[AppState, Depends(get_state)]
# A threshold is on the scale of the scores it is compared with: a scale change (calibrating,
# or back to raw) must say what becomes of the gallery's own threshold.
NewThreshold = Annotated[
    float | None,
    Query(ge=-1e6, le=1e6, description="the gallery's threshold on the new score scale"),
]
DropThreshold = Annotated[bool, Query(description="drop the gallery's own threshold")]


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

    def work(session: Session) -> GalleryOut:
        row = create_gallery(session, model=model, **body.model_dump())
        session.flush()
        return gallery_out(session, row)

    details = body.model_dump(mode="json", exclude={"name", "purpose", "keep_images"})
    details["image_retention"] = body.keep_images
    audit = state.audit_hook(
        key, "gallery.create", gallery=body.name, purpose=body.purpose, details=details
    )
    return await state.act(work, audit)


@router.get("", response_model=list[GalleryOut])
async def list_(
    state: State, key: Annotated[ApiKey, Depends(require("galleries:read"))]
) -> list[GalleryOut]:
    """The galleries this key may use."""

    def work(galleries: GalleryService) -> list[GalleryOut]:
        with galleries.db.read() as session:
            rows = [g for g in list_galleries(session) if key.can_access(g.id)]
            return [gallery_out(session, g) for g in rows]

    return await state.call(work)


@router.get("/{gallery}", response_model=GalleryOut)
async def get(
    gallery: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("galleries:read"))],
) -> GalleryOut:
    def work(galleries: GalleryService) -> GalleryOut:
        with galleries.db.read() as session:
            return gallery_out(session, get_gallery(session, name=gallery))

    return await state.call(work)


@router.delete("/{gallery}", status_code=204)
async def delete(
    gallery: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("galleries:write"))],
) -> None:
    """Delete a gallery with every subject and template, from the database and the index."""
    audit = state.audit_hook(
        key, "gallery.delete", gallery=gallery, details=lambda n: {"templates_erased": n}
    )
    await state.call(lambda galleries: galleries.delete(gallery, audit=audit))


@router.put("/{gallery}/calibration", response_model=GalleryOut)
async def calibrate(
    gallery: str,
    profile: Annotated[JsonObject, Body(description="a profile from `yingyan calibrate fit`")],
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("galleries:write"))],
    threshold: NewThreshold = None,
    drop_threshold: DropThreshold = False,
) -> GalleryOut:
    """Make the gallery's verify and identify normalise scores with this fair-score profile
    (label-free; fitted on reference data of the same model). Its version is its content hash."""
    parsed = parse_profile(json.dumps(profile), where="the request's profile")
    return await _set_calibration(
        state, key, gallery, parsed, _threshold_change(threshold, drop_threshold)
    )


@router.delete("/{gallery}/calibration", response_model=GalleryOut)
async def uncalibrate(
    gallery: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("galleries:write"))],
    threshold: NewThreshold = None,
    drop_threshold: DropThreshold = False,
) -> GalleryOut:
    """Back to raw cosine scores (a threshold of the gallery's must then be given on the
    cosine scale, or dropped)."""
    return await _set_calibration(
        state, key, gallery, None, _threshold_change(threshold, drop_threshold)
    )


def _threshold_change(threshold: float | None, drop: bool) -> float | Keep | None:
    """What a scale change does to the gallery's own threshold: a new value on the new
    scale, None (dropped), or KEEP (refused by the store if the gallery has one)."""
    if threshold is not None and drop:
        raise ApiError("invalid_value", "give threshold or drop_threshold, not both")
    if threshold is not None:
        return threshold
    return None if drop else KEEP


async def _set_calibration(
    state: AppState,
    key: ApiKey,
    gallery: str,
    profile: FairScoreProfile | None,
    threshold: float | Keep | None = KEEP,
) -> GalleryOut:
    details: dict[str, Any] = {
        "profile": profile.version if profile else None,
        "threshold": "kept" if isinstance(threshold, Keep) else threshold,
    }
    if profile is not None:
        details |= {"method": profile.method, "name": profile.name}
    audit = state.audit_hook(key, "gallery.calibrate", gallery=gallery, details=details)

    def work(galleries: GalleryService) -> GalleryOut:
        galleries.set_calibration(gallery, profile, audit=audit, threshold=threshold)
        with galleries.db.read() as session:
            return gallery_out(session, get_gallery(session, name=gallery))

    return await state.call(work)
