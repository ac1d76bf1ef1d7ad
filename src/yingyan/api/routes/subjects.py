"""Subjects of a gallery and the faces enrolled for them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from yingyan.access.keys import ApiKey
from yingyan.api.backpressure import ADMITTED
from yingyan.api.errors import ApiError
from yingyan.api.images import image_body, read_images
from yingyan.api.schemas import (
    ERROR_RESPONSES,
    AfterId,
    ConsentOut,
    EnrollOut,
    ErasureOut,
    FaceOut,
    SubjectIn,
    SubjectOut,
    SubjectPage,
    TemplateId,
)
from yingyan.api.security import require_gallery
from yingyan.api.state import AppState, get_state
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.store import (
    ConflictError,
    SubjectRow,
    add_consent,
    count_subjects,
    get_gallery,
    get_or_create_subject,
    get_subject,
    list_consents,
    list_subjects,
    template_counts,
)
from yingyan.types import Face

router = APIRouter(
    prefix="/api/v1/galleries/{gallery}", tags=["subjects"], responses=ERROR_RESPONSES
)
State = Annotated[AppState, Depends(get_state)]
FacePolicy = Literal["single", "largest"]


def subjects_out(session: Session, rows: list[SubjectRow]) -> list[SubjectOut]:
    """The API view of some subjects: template counts in one query for all of them."""
    counts = template_counts(session, subject_ids=[r.id for r in rows])
    return [
        SubjectOut(
            external_id=row.external_id,
            display_name=row.display_name,
            metadata=row.metadata_,
            created_at=row.created_at,
            templates=counts[row.id],
            consents=[
                ConsentOut(
                    purpose=c.purpose,
                    reference=c.reference,
                    granted_at=c.granted_at,
                    expires_at=c.expires_at,
                    withdrawn_at=c.withdrawn_at,
                )
                for c in list_consents(session, subject_id=row.id)
            ],
        )
        for row in rows
    ]


@router.post("/subjects", status_code=201, response_model=SubjectOut)
async def create(
    gallery: str,
    body: SubjectIn,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("subjects:write"))],
) -> SubjectOut:
    """Register a subject (optionally with their consent); faces are enrolled separately."""

    def work(session: Session) -> SubjectOut:
        g = get_gallery(session, name=gallery)
        row, created = get_or_create_subject(
            session,
            gallery_id=g.id,
            external_id=body.external_id,
            display_name=body.display_name,
            metadata=dict(body.metadata),
        )
        if not created:
            raise ConflictError(f"subject {body.external_id!r} already exists in {gallery!r}")
        if body.consent is not None:
            add_consent(session, subject_id=row.id, **body.consent.model_dump())
        session.flush()
        return subjects_out(session, [row])[0]

    details = {"subject": body.external_id, "consent": body.consent is not None}
    purpose = body.consent.purpose if body.consent else None
    audit = state.audit_hook(
        key, "subject.create", gallery=gallery, purpose=purpose, details=details
    )
    return await state.act(work, audit)


@router.get("/subjects", response_model=SubjectPage)
async def list_(
    gallery: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("subjects:read"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: AfterId = None,
) -> SubjectPage:
    """One page of subjects in registration order (keyset pagination: fast at any depth)."""

    def work(galleries: GalleryService) -> SubjectPage:
        with galleries.db.read() as session:
            g = get_gallery(session, name=gallery)
            rows = list_subjects(session, gallery_id=g.id, limit=limit, after_id=after)
            items = subjects_out(session, rows)
            last = rows[-1].id if len(rows) == limit else None
            return SubjectPage(
                items=items,
                total=count_subjects(session, gallery_id=g.id),
                limit=limit,
                next_after=last,
            )

    page = await state.call(work)
    await state.record(key, "subject.list", gallery=gallery, details={"count": len(page.items)})
    return page


@router.get("/subjects/{subject}", response_model=SubjectOut)
async def get(
    gallery: str,
    subject: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("subjects:read"))],
) -> SubjectOut:
    def work(galleries: GalleryService) -> SubjectOut:
        with galleries.db.read() as session:
            g = get_gallery(session, name=gallery)
            row = get_subject(session, gallery_id=g.id, external_id=subject)
            return subjects_out(session, [row])[0]

    out = await state.call(work)
    await state.record(key, "subject.read", gallery=gallery, details={"subject": subject})
    return out


@router.delete("/subjects/{subject}", response_model=ErasureOut)
async def erase(
    gallery: str,
    subject: str,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("subjects:write"))],
) -> ErasureOut:
    """Erase a subject: its templates leave the database and the index (really erased)."""
    audit = state.audit_hook(
        key,
        "subject.erase",
        gallery=gallery,
        details=lambda ids: {"subject": subject, "templates_erased": len(ids)},
    )
    removed = await state.call(lambda g: g.erase_subject(gallery, subject, audit=audit))
    return ErasureOut(external_id=subject, templates_erased=removed)


@router.post(
    "/subjects/{subject}/faces",
    status_code=201,
    response_model=EnrollOut,
    dependencies=ADMITTED,
    openapi_extra=image_body("image", description="the face to enrol"),
)
async def enroll(
    gallery: str,
    subject: str,
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("faces:enroll"))],
    face_policy: Annotated[
        FacePolicy, Query(description="several faces: refuse or take the largest")
    ] = "single",
) -> EnrollOut:
    """Enrol a face image into an existing subject. The image is kept only if the gallery says
    so; a face below the gallery's minimum quality is refused."""
    data = (await read_images(request, "image"))["image"]

    await state.call(lambda g: _check_subject(g, gallery, subject))
    face, template_id, created = await enrol_face(
        state, key, gallery, subject, data, policy=face_policy
    )
    return EnrollOut(
        external_id=subject, template_id=template_id, created=created, face=FaceOut.of(face)
    )


def _check_subject(galleries: GalleryService, gallery: str, subject: str) -> None:
    with galleries.db.read() as session:
        g = get_gallery(session, name=gallery)
        get_subject(session, gallery_id=g.id, external_id=subject)


async def enrol_face(
    state: AppState,
    key: ApiKey,
    gallery: str,
    subject: str,
    data: bytes,
    *,
    policy: str,
    via: str | None = None,
    accept: Callable[[Face], None] | None = None,
) -> tuple[Face, int, bool]:
    """Store the image's face (`policy`: "single" or "largest") as a template of the gallery's
    model for a subject (created if new), audited: (face, template id, new). `accept` may
    refuse the face first; so is a face below the gallery's minimum quality. The image goes
    along and the store keeps it only if the gallery keeps images."""

    def enroll(galleries: GalleryService, faces: list[Face]) -> tuple[int, bool]:
        face = faces[0]
        assert face.template is not None
        if accept is not None:
            accept(face)
        with galleries.db.read() as session:
            min_quality = get_gallery(session, name=gallery).min_quality
        if face.quality.score < min_quality:
            raise ApiError(
                "low_quality",
                f"face quality {face.quality.score:.2f} is below the gallery's minimum "
                f"{min_quality}",
            )
        quality = round(face.quality.score, 4)
        audit = state.audit_hook(
            key,
            "face.enroll",
            gallery=gallery,
            details=lambda out: (
                {
                    "subject": subject,
                    "template_id": out[0][0],
                    "created": out[0][1],
                    "quality": quality,
                }
                | _via(via)
            ),
        )
        item = EnrollItem(
            external_id=subject,
            template=face.template,
            quality=face.quality.score,
            source_sha256=hashlib.sha256(data).hexdigest(),
            box=face.detection.box,
            image=data,
        )
        ((template_id, created),) = galleries.enroll(gallery, [item], audit=audit)
        return template_id, created

    faces, (template_id, created) = await state.with_probes(gallery, data, enroll, policy=policy)
    return faces[0], template_id, created


def _via(api: str | None) -> dict[str, str]:
    return {"api": api} if api else {}


@router.delete("/faces/{template_id}", response_model=ErasureOut)
async def erase_face(
    gallery: str,
    template_id: TemplateId,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("subjects:write"))],
) -> ErasureOut:
    """Erase one enrolled face (template) from the database and the index."""
    audit = state.audit_hook(
        key,
        "face.erase",
        gallery=gallery,
        details=lambda subjects: {"subject": subjects[0], "template_id": template_id},
    )
    subject = await state.call(lambda g: g.erase_template(gallery, template_id, audit=audit))
    return ErasureOut(external_id=subject, templates_erased=1)
