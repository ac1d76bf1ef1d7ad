"""Detect, verify (1:1) and identify (1:N). Probe images and their templates live only for the
request: nothing of them is stored, and the audit entry holds ids and scores only."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from yingyan.access.keys import ApiKey
from yingyan.api.backpressure import ADMITTED
from yingyan.api.errors import ApiError
from yingyan.api.images import image_body, read_images
from yingyan.api.schemas import (
    ERROR_RESPONSES,
    CandidateOut,
    DetectOut,
    FaceOut,
    IdentifiedFace,
    IdentifyOut,
    VerifyOut,
)
from yingyan.api.security import require, require_gallery
from yingyan.api.state import AppState, get_state
from yingyan.comparison import compare
from yingyan.comparison.thresholds import Threshold, custom_threshold, default_threshold
from yingyan.gallery.service import GalleryService, SubjectCandidate
from yingyan.store import GalleryRow, get_gallery
from yingyan.types import Face, Template

router = APIRouter(prefix="/api/v1", tags=["biometrics"], responses=ERROR_RESPONSES)
State = Annotated[AppState, Depends(get_state)]
Purpose = Annotated[
    str | None, Query(max_length=2000, description="why this search is made (watchlists: required)")
]
CaseReference = Annotated[
    str | None, Query(max_length=500, description="case or file reference (watchlists: required)")
]


@router.post(
    "/detect", response_model=DetectOut, dependencies=ADMITTED, openapi_extra=image_body("image")
)
async def detect(
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require("detect"))],
) -> DetectOut:
    """Faces in an image, with landmarks and quality: no template is computed."""
    data = (await read_images(request, "image"))["image"]
    faces = await state.inference.faces(data, embed=False)
    state.metrics.faces.inc(len(faces))
    await state.record(key, "detect", details={"faces": len(faces)})
    info = state.inference.info
    return DetectOut(
        faces=[FaceOut.of(f) for f in faces], detector=info.description["detector"] if info else ""
    )


def candidates_detail(results: list[list[SubjectCandidate]]) -> list[list[list[object]]]:
    """What the audit keeps of a search's candidates: subject, template id, score."""
    return [[[c.external_id, c.template_id, round(c.score, 4)] for c in cs] for cs in results]


def _threshold(model: str, gallery: tuple[float, str] | None, given: float | None) -> Threshold:
    """The caller's threshold, else the gallery's (its own or its calibration profile's),
    else the model's default."""
    if given is not None and gallery is not None and gallery[1].startswith("calibration"):
        # A caller's threshold is a cosine in [-1, 1]; this gallery scores on another scale.
        raise ApiError(
            "invalid_value",
            f"this gallery's scores are normalised by its {gallery[1]}: a threshold on the "
            f"cosine scale does not apply; leave it out (the gallery's is {gallery[0]:.4f})",
        )
    if given is not None:
        return custom_threshold(model, given)
    if gallery is not None:
        return Threshold("gallery", gallery[0], model, gallery[1])
    return default_threshold(model)


def _verdict(score: float, t: Threshold, model: str, probe: Face, **reference: Any) -> VerifyOut:
    return VerifyOut(
        score=round(score, 6),
        threshold=t.score,
        threshold_source=f"{t.name}: {t.source}",
        match=score >= t.score,
        model=model,
        probe_face=FaceOut.of(probe),
        **reference,
    )


@router.post(
    "/verify",
    response_model=VerifyOut,
    dependencies=ADMITTED,
    openapi_extra=image_body("probe", "reference", description="two images of one face each"),
)
async def verify(
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require("verify"))],
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    purpose: Purpose = None,
    case_reference: CaseReference = None,
) -> VerifyOut:
    """1:1: is the face in `probe` the same person as the face in `reference`? Each image
    must hold exactly one face."""
    images = await read_images(request, "probe", "reference")
    # Both images at once: with two or more workers they are analysed in parallel.
    (probe,), (reference,) = await asyncio.gather(
        state.inference.faces(images["probe"], policy="single"),
        state.inference.faces(images["reference"], policy="single"),
    )
    assert probe.template is not None and reference.template is not None
    model = str(probe.template.model)
    t = _threshold(model, None, threshold)
    score = compare(probe.template, reference.template).score
    out = _verdict(score, t, model, probe, reference_face=FaceOut.of(reference))
    await state.record(
        key,
        "verify",
        purpose=purpose,
        case_reference=case_reference,
        details={"score": out.score, "threshold": t.score, "match": out.match},
    )
    return out


@router.post(
    "/galleries/{gallery}/subjects/{subject}/verify",
    response_model=VerifyOut,
    tags=["subjects"],
    dependencies=ADMITTED,
    openapi_extra=image_body("probe", description="one image of one face"),
)
async def verify_subject(
    gallery: str,
    subject: str,
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("verify"))],
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    purpose: Purpose = None,
    case_reference: CaseReference = None,
) -> VerifyOut:
    """1:1 against an enrolled subject: the best score over the subject's templates. On a
    watchlist it must say why and for which case, as identify does."""

    def gallery_row(galleries: GalleryService) -> GalleryRow:
        with galleries.db.read() as session:
            row = get_gallery(session, name=gallery)
            session.expunge(row)
        return row

    row = await state.call(gallery_row)
    await _justified(state, key, "verify.subject", row, purpose, case_reference)
    data = (await read_images(request, "probe"))["probe"]

    def best_match(
        galleries: GalleryService, faces: list[Face]
    ) -> tuple[tuple[int, float] | None, Threshold]:
        template = faces[0].template
        assert template is not None
        best = galleries.verify_subject(gallery, subject, template)
        model = str(template.model)  # the service refuses a probe of another model
        return best, _threshold(model, galleries.decision_threshold(gallery), threshold)

    (probe,), (best, t) = await state.with_probes(
        gallery, data, best_match, policy="single", model=row.model
    )
    if best is None:
        raise ApiError("no_templates", f"subject {subject!r} has no enrolled face")
    template_id, score = best
    assert probe.template is not None
    out = _verdict(score, t, str(probe.template.model), probe, reference_subject=subject)
    await state.record(
        key,
        "verify.subject",
        gallery=gallery,
        purpose=purpose,
        case_reference=case_reference,
        details={
            "subject": subject,
            "template_id": template_id,
            "score": out.score,
            "threshold": t.score,
            "match": out.match,
        },
    )
    return out


async def _justified(
    state: AppState,
    key: ApiKey,
    operation: str,
    gallery: GalleryRow,
    purpose: str | None,
    case_reference: str | None,
) -> None:
    """A search of a watchlist must say why and for which case; a refusal is audited."""
    if gallery.kind != "watchlist" or (purpose and case_reference):
        return
    await state.record(
        key,
        operation,
        outcome="refused",
        gallery=gallery.name,
        details={"reason": "purpose_required"},
    )
    raise ApiError(
        "purpose_required",
        "a watchlist search needs a purpose and a case_reference (query parameters)",
    )


@router.post(
    "/galleries/{gallery}/identify",
    response_model=IdentifyOut,
    tags=["subjects"],
    dependencies=ADMITTED,
    openapi_extra=image_body("probe", description="an image with one or more faces"),
)
async def identify(
    gallery: str,
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require_gallery("identify"))],
    mode: Annotated[
        Literal["investigation", "threshold"],
        Query(description="investigation: the k best; threshold: only those at or above it"),
    ] = "investigation",
    k: Annotated[int, Query(ge=1, le=100)] = 5,
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    faces: Annotated[
        Literal["largest", "all"], Query(description="search the largest face or every face")
    ] = "largest",
    purpose: Purpose = None,
    case_reference: CaseReference = None,
) -> IdentifyOut:
    """1:N: candidates for a human reviewer, never an identification by themselves. Searches
    of a watchlist must say why (purpose) and for which case (case_reference)."""

    def gallery_row(galleries: GalleryService) -> GalleryRow:
        with galleries.db.read() as session:
            row = get_gallery(session, name=gallery)
            session.expunge(row)
        return row

    row = await state.call(gallery_row)
    await _justified(state, key, "identify", row, purpose, case_reference)
    data = (await read_images(request, "probe"))["probe"]

    def search(
        galleries: GalleryService, found: list[Face]
    ) -> tuple[Threshold | None, list[list[SubjectCandidate]]]:
        templates: list[Template] = [f.template for f in found if f.template is not None]
        t = None
        if mode == "threshold":  # the gallery's threshold now, on its current model's scale
            model = templates[0].model if templates else row.model
            t = _threshold(str(model), galleries.decision_threshold(gallery), threshold)
        cut = t.score if t else None
        return t, galleries.identify(gallery, templates, k=k, mode=mode, threshold=cut)

    policy = "all" if faces == "all" else "largest"
    found, (t, results) = await state.with_probes(
        gallery, data, search, policy=policy, model=row.model
    )
    out = IdentifyOut(
        gallery=gallery,
        mode=mode,
        threshold=t.score if t else None,
        faces=[
            IdentifiedFace(
                face=FaceOut.of(f),
                candidates=[
                    CandidateOut(
                        rank=c.rank,
                        external_id=c.external_id,
                        display_name=c.display_name,
                        score=round(c.score, 6),
                        template_id=c.template_id,
                    )
                    for c in cands
                ],
            )
            for f, cands in zip(found, results, strict=True)
        ],
    )
    await state.record(
        key,
        "identify",
        gallery=gallery,
        purpose=purpose,
        case_reference=case_reference,
        details={
            "mode": mode,
            "k": k,
            "threshold": t.score if t else None,
            "faces": len(found),
            "candidates": candidates_detail(results),
        },
    )
    return out
