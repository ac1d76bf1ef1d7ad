"""CompreFace-compatible routes: the paths, parameters and JSON shapes of Exadel CompreFace's
recognition, verification and detection services (API v1), so its SDKs and integrations work
against Yingyan unchanged.

Mapping: a CompreFace "face collection" is one gallery, the one the `x-api-key` is scoped to
(create such a key with `yingyan keys create --gallery NAME`); `image_id` is the template id;
`similarity` is CompreFace's scale: two different people score low, 0.5 is the operating
threshold (the gallery's, else the model's default: its strict one, FMR 1e-4 for the worst
group's look-alikes, see `comparison/thresholds.py`) and each higher value is a documented false
match rate (`yingyan.comparison.similarity`), the same in verify, recognize and faces/{id}/verify;
`probability` maps the detector's score to [0, 1]. Plugins: `landmarks` (5 points) and
`calculator` (the probe's embedding) are served; age, gender and mask classifiers do not exist
here by design and are ignored. Searches of a watchlist collection (recognize,
faces/{id}/verify) need `purpose` and `case_reference` query parameters, as on the native API;
a search refused for want of them is audited.
"""

from __future__ import annotations

import math
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from yingyan.access.keys import ApiKey
from yingyan.api.backpressure import ADMITTED
from yingyan.api.errors import ApiError
from yingyan.api.images import image_body, read_images
from yingyan.api.routes.biometrics import candidates_detail
from yingyan.api.routes.subjects import enrol_face
from yingyan.api.security import current_key, require, require_collection
from yingyan.api.state import AppState, get_state
from yingyan.calibration.fair_score import FairScoreProfile
from yingyan.comparison.similarity import SimilarityScale, scale_for
from yingyan.comparison.thresholds import get_threshold
from yingyan.errors import ConfigError
from yingyan.gallery.service import GalleryService, SubjectCandidate
from yingyan.store import (
    NotFoundError,
    get_gallery,
    get_or_create_subject,
    get_subject,
    list_subjects,
)
from yingyan.types import Face

State = Annotated[AppState, Depends(get_state)]
Key = Annotated[ApiKey, Depends(current_key)]
DetProb = Annotated[float | None, Query(ge=0.0, le=1.0, description="minimum face probability")]
Limit = Annotated[int, Query(ge=0, le=1000, description="faces per image, 0: all")]
Status = Annotated[bool, Query(description="add plugins_versions and execution_time")]
Plugins = Annotated[str, Query(max_length=200, description="landmarks,calculator")]
Purpose = Annotated[str | None, Query(max_length=2000)]
CaseRef = Annotated[str | None, Query(max_length=500)]
SubjectName = Annotated[str, Query(min_length=1, max_length=255)]


class CompreFaceError(BaseModel):
    message: str
    code: str


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": CompreFaceError} for s in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}
router = APIRouter(tags=["compreface"], responses=ERRORS)
RECOGNITION = "/api/v1/recognition"


class SubjectBody(BaseModel):
    model_config = ConfigDict(strict=True)  # CompreFace's SDK adds other fields: ignored

    subject: str


def probability(face: Face) -> float:
    """The detector's score on [0, 1]: YuNet's is one already; dlib's HOG/MMOD scores are
    margins (0 at the decision boundary, ~1-3 for clear faces), mapped by 1 - exp(-2 s)."""
    s = face.detection.score
    if face.detection.detector.startswith("yunet"):
        return round(min(1.0, max(0.0, s)), 5)
    return round(1.0 - math.exp(-2.0 * max(0.0, s)), 5)


def box(face: Face) -> dict[str, float | int]:
    b = face.detection.box
    return {
        "probability": probability(face),
        "x_max": round(b.x2),
        "y_max": round(b.y2),
        "x_min": round(b.x1),
        "y_min": round(b.y1),
    }


def model_scale(model: str) -> SimilarityScale:
    """The scale of plain cosine scores of `model` (a model id): 0.5 at its default threshold,
    so a similarity of 0.5 or more is the native verify's match."""
    try:
        threshold: float | None = get_threshold(model).score
    except ConfigError:
        threshold = None
    return scale_for(model, threshold)


@dataclass(frozen=True, slots=True)
class CollectionScale:
    """What the CompreFace routes need of a collection to search it and shape its scores."""

    kind: str
    scale: SimilarityScale
    profile: FairScoreProfile | None


def collection_scale(galleries: GalleryService, gallery: str) -> CollectionScale:
    """The collection's kind, its calibration profile and its similarity scale: 0.5 at its
    operating threshold (its own, its profile's, else the model's default)."""
    with galleries.db.read() as session:
        row = get_gallery(session, name=gallery)
        session.expunge(row)
    profile = galleries.profile(row)
    own = galleries.decision_threshold(gallery)
    if own is None:
        return CollectionScale(row.kind, model_scale(row.model), profile)
    # A cohort profile's scores are z-like; a clusters profile only shifts cosine scores.
    normalised = profile is not None and profile.method == "cohort"
    scale = scale_for(row.model, own[0], normalised=normalised)
    return CollectionScale(row.kind, scale, profile)


async def refuse_unjustified_search(
    state: AppState,
    key: ApiKey,
    gallery: str,
    kind: str,
    operation: str,
    purpose: str | None,
    case_reference: str | None,
) -> None:
    """A watchlist search must say why and for which case; a refusal is audited."""
    if kind != "watchlist" or (purpose and case_reference):
        return
    await state.record(
        key,
        operation,
        outcome="refused",
        gallery=gallery,
        details={"reason": "purpose_required", "api": "compreface"},
    )
    raise ApiError(
        "purpose_required",
        "a watchlist search needs purpose and case_reference query parameters",
    )


def _filtered(faces: list[Face], det_prob: float | None, limit: int) -> list[Face]:
    kept = [f for f in faces if det_prob is None or probability(f) >= det_prob]
    kept.sort(key=lambda f: -f.detection.box.area)
    return kept[:limit] if limit else kept


def _face_json(face: Face, plugins: str, started: float, status: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"box": box(face)}
    wanted = {p.strip() for p in plugins.split(",") if p.strip()}
    if "landmarks" in wanted:
        # dlib's 5-point model has no mouth corners: those points are null, not invented.
        out["landmarks"] = [
            [round(x), round(y)] if math.isfinite(x + y) else None
            for x, y in face.landmarks.points.tolist()
        ]
    if "calculator" in wanted and face.template is not None:
        out["embedding"] = [round(float(v), 6) for v in face.template.vector]
    if status:
        out["execution_time"] = {"detector": round((time.perf_counter() - started) * 1000, 1)}
    return out


def _versions(state: AppState) -> dict[str, str]:
    info = state.inference.info
    if info is None:
        return {}
    return {"detector": info.description["detector"], "calculator": str(info.model)}


# -- recognition: faces ------------------------------------------------------------------------


@router.post(f"{RECOGNITION}/faces", dependencies=ADMITTED, openapi_extra=image_body("file"))
async def add_face(
    request: Request,
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("faces:enroll"))],
    subject: SubjectName,
    det_prob_threshold: DetProb = None,
) -> dict[str, str]:
    """Add an example (face image) of a subject; the subject is created if new."""
    data = (await read_images(request, "file"))["file"]

    def accept(face: Face) -> None:
        if det_prob_threshold is not None and probability(face) < det_prob_threshold:
            raise ApiError("no_face", "no face above det_prob_threshold")

    _, template_id, _ = await enrol_face(
        state, key, gallery, subject, data, policy="largest", via="compreface", accept=accept
    )
    return {"image_id": str(template_id), "subject": subject}


@router.get(f"{RECOGNITION}/faces")
async def list_faces(
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("subjects:read"))],
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    size: Annotated[int, Query(ge=1, le=1000)] = 20,
    subject: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    rows, total = await state.call(
        lambda g: g.list_templates(
            gallery, external_id=subject or None, offset=page * size, limit=size
        )
    )
    await state.record(key, "subject.list", gallery=gallery, details={"count": len(rows)})
    return {
        "faces": [{"image_id": str(tid), "subject": name} for tid, name in rows],
        "page_number": page,
        "page_size": size,
        "total_pages": (total + size - 1) // size,
        "total_elements": total,
    }


@router.delete(f"{RECOGNITION}/faces")
async def delete_faces_of_subject(
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("subjects:write"))],
    subject: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, int]:
    """Delete every example of `subject` (of the whole collection if no subject is given)."""

    audit = state.audit_hook(
        key,
        "face.erase",
        gallery=gallery,
        details=lambda erased: {
            "subject": subject,
            "templates_erased": len(erased),
            "api": "compreface",
        },
    )
    erased = await state.call(
        lambda g: g.erase_templates(gallery, external_id=subject or None, audit=audit)
    )
    return {"deleted": len(erased)}


def _subject_exists(galleries: GalleryService, gallery: str, subject: str) -> None:
    with galleries.db.read() as session:
        g = get_gallery(session, name=gallery)
        get_subject(session, gallery_id=g.id, external_id=subject)


def _subject_names(galleries: GalleryService, gallery: str) -> list[str]:
    """Every subject of the gallery, paged through by id."""
    out: list[str] = []
    with galleries.db.read() as session:
        g = get_gallery(session, name=gallery)
        after = None
        while rows := list_subjects(session, gallery_id=g.id, limit=1000, after_id=after):
            out += [r.external_id for r in rows]
            after = rows[-1].id
    return out


def _image_id(image_id: str) -> int:
    if not (image_id.isascii() and image_id.isdigit()) or len(image_id) > 18:  # not '²'
        raise NotFoundError(f"no face with image_id {image_id!r}")
    return int(image_id)


@router.delete(RECOGNITION + "/faces/{image_id}")
async def delete_face(
    image_id: str,
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("subjects:write"))],
) -> dict[str, str]:
    tid = _image_id(image_id)
    audit = state.audit_hook(
        key,
        "face.erase",
        gallery=gallery,
        details=lambda subject: {"subject": subject, "template_id": tid, "api": "compreface"},
    )
    subject = await state.call(lambda g: g.erase_template(gallery, tid, audit=audit))
    return {"image_id": image_id, "subject": subject}


@router.post(f"{RECOGNITION}/faces/delete")
async def delete_faces(
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("subjects:write"))],
    image_ids: Annotated[list[str], Body(max_length=1000)],
) -> list[dict[str, str]]:
    """Delete several examples by id; unknown ids are skipped, as CompreFace does."""

    wanted = []
    for image_id in image_ids:
        with suppress(NotFoundError):  # not an id at all: skipped like an unknown one
            wanted.append(_image_id(image_id))
    audit = state.audit_hook(
        key,
        "face.erase",
        gallery=gallery,
        details=lambda erased: {"template_ids": [t for t, _ in erased], "api": "compreface"},
    )
    erased = await state.call(
        lambda g: g.erase_templates(gallery, wanted, missing_ok=True, audit=audit)
    )
    return [{"image_id": str(t), "subject": subject} for t, subject in erased]


@router.post(
    RECOGNITION + "/faces/{image_id}/verify",
    dependencies=ADMITTED,
    openapi_extra=image_body("file"),
)
async def verify_with_face(
    image_id: str,
    request: Request,
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("verify"))],
    limit: Limit = 0,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = "",
    status: Status = False,
    purpose: Purpose = None,
    case_reference: CaseRef = None,
) -> dict[str, Any]:
    """Compare the faces of an image with one stored example."""
    tid = _image_id(image_id)
    collection = await state.call(lambda g: collection_scale(g, gallery))
    await refuse_unjustified_search(
        state, key, gallery, collection.kind, "verify.subject", purpose, case_reference
    )
    data = (await read_images(request, "file"))["file"]
    await state.call(lambda g: g.template_vector(gallery, tid))  # 404 before any inference
    started = time.perf_counter()

    def against(
        galleries: GalleryService, found: list[Face]
    ) -> tuple[str, list[float], CollectionScale]:
        kept = _filtered(found, det_prob_threshold, limit)
        probes = [f.template for f in kept if f.template is not None]
        subject, scores = galleries.verify_template(gallery, tid, probes)
        return subject, scores, collection_scale(galleries, gallery)  # the probes' model's

    found, (subject, scores, collection) = await state.with_probes(gallery, data, against)
    faces = _filtered(found, det_prob_threshold, limit)
    result = []
    for f, score in zip(faces, scores, strict=True):
        entry = _face_json(f, face_plugins, started, status)
        entry["similarity"] = collection.scale.similarity(score)
        result.append(entry)
    await state.record(
        key,
        "verify.subject",
        gallery=gallery,
        purpose=purpose,
        case_reference=case_reference,
        details={
            "subject": subject,
            "template_id": tid,
            "scores": [round(s, 4) for s in scores],
            "similarities": [r["similarity"] for r in result],
            "api": "compreface",
        },
    )
    return {"result": result}


# -- recognition: recognize --------------------------------------------------------------------


@router.post(f"{RECOGNITION}/recognize", dependencies=ADMITTED, openapi_extra=image_body("file"))
async def recognize(
    request: Request,
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("identify"))],
    limit: Limit = 0,
    prediction_count: Annotated[int, Query(ge=1, le=100)] = 1,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = "",
    status: Status = False,
    purpose: Purpose = None,
    case_reference: CaseRef = None,
) -> dict[str, Any]:
    """Every face of the image with its `prediction_count` most similar subjects: candidates
    for a human to review."""

    collection = await state.call(lambda g: collection_scale(g, gallery))
    await refuse_unjustified_search(
        state, key, gallery, collection.kind, "identify", purpose, case_reference
    )
    data = (await read_images(request, "file"))["file"]
    started = time.perf_counter()

    def search(
        galleries: GalleryService, faces: list[Face]
    ) -> tuple[list[list[SubjectCandidate]], CollectionScale]:
        kept = _filtered(faces, det_prob_threshold, limit)
        templates = [f.template for f in kept if f.template is not None]
        found = galleries.identify(gallery, templates, k=prediction_count)
        return found, collection_scale(galleries, gallery)  # the probes' model's scale

    detected, (found, collection) = await state.with_probes(gallery, data, search)
    faces = _filtered(detected, det_prob_threshold, limit)
    result = []
    for f, candidates in zip(faces, found, strict=True):
        entry = _face_json(f, face_plugins, started, status)
        entry["subjects"] = [
            {"subject": c.external_id, "similarity": collection.scale.similarity(c.score)}
            for c in candidates
        ]
        result.append(entry)
    await state.record(
        key,
        "identify",
        gallery=gallery,
        purpose=purpose,
        case_reference=case_reference,
        details={
            "faces": len(faces),
            "candidates": candidates_detail(found),
            "api": "compreface",
        },
    )
    out: dict[str, Any] = {"result": result}
    if status:
        out["plugins_versions"] = _versions(state)
    return out


# -- recognition: subjects ---------------------------------------------------------------------


@router.post(f"{RECOGNITION}/subjects", status_code=201)
async def add_subject(
    body: SubjectBody,
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("subjects:write"))],
) -> dict[str, str]:
    name = body.subject.strip()
    if not name or len(name) > 255:
        raise ApiError("invalid_value", "subject must be 1 to 255 characters")

    def create(session: Session) -> None:
        g = get_gallery(session, name=gallery)
        get_or_create_subject(session, gallery_id=g.id, external_id=name)

    audit = state.audit_hook(key, "subject.create", gallery=gallery, details={"subject": name})
    await state.act(create, audit)
    return {"subject": name}


@router.get(f"{RECOGNITION}/subjects")
@router.get(f"{RECOGNITION}/subjects/", include_in_schema=False)
async def list_subject_names(
    state: State, key: Key, gallery: Annotated[str, Depends(require_collection("subjects:read"))]
) -> dict[str, list[str]]:

    subjects = await state.call(lambda g: _subject_names(g, gallery))
    await state.record(key, "subject.list", gallery=gallery, details={"count": len(subjects)})
    return {"subjects": subjects}


@router.put(RECOGNITION + "/subjects/{subject}")
async def rename_subject(
    subject: str,
    body: SubjectBody,
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("subjects:write"))],
) -> dict[str, bool]:
    new = body.subject.strip()
    if not new or len(new) > 255:
        raise ApiError("invalid_value", "subject must be 1 to 255 characters")
    audit = state.audit_hook(
        key, "subject.rename", gallery=gallery, details={"subject": subject, "to": new}
    )
    await state.call(lambda g: g.rename_subject(gallery, subject, new, audit=audit))
    return {"updated": True}


@router.delete(RECOGNITION + "/subjects/{subject}")
async def delete_subject(
    subject: str,
    state: State,
    key: Key,
    gallery: Annotated[str, Depends(require_collection("subjects:write"))],
) -> dict[str, str]:
    audit = state.audit_hook(
        key,
        "subject.erase",
        gallery=gallery,
        details=lambda ids: {"subject": subject, "templates_erased": len(ids), "api": "compreface"},
    )
    await state.call(lambda g: g.erase_subject(gallery, subject, audit=audit))
    return {"subject": subject}


@router.delete(f"{RECOGNITION}/subjects")
async def delete_all_subjects(
    state: State, key: Key, gallery: Annotated[str, Depends(require_collection("subjects:write"))]
) -> dict[str, int]:

    audit = state.audit_hook(
        key, "subject.erase", gallery=gallery, details=lambda n: {"subjects": n, "all": True}
    )
    deleted = await state.call(lambda g: g.erase_all_subjects(gallery, audit=audit))
    return {"deleted": deleted}


# -- verification and detection services -------------------------------------------------------


@router.post(
    "/api/v1/verification/verify",
    dependencies=ADMITTED,
    openapi_extra=image_body("source_image", "target_image"),
)
async def verify(
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require("verify"))],
    limit: Limit = 0,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = "",
    status: Status = False,
) -> dict[str, Any]:
    """The largest face of the source image against every face of the target image."""
    images = await read_images(request, "source_image", "target_image")
    started = time.perf_counter()
    source = (await state.inference.faces(images["source_image"], policy="largest"))[0]
    targets = _filtered(
        await state.inference.faces(images["target_image"]), det_prob_threshold, limit
    )
    assert source.template is not None
    scale = model_scale(str(source.template.model))
    matches = []
    for t in targets:
        assert t.template is not None
        entry = _face_json(t, face_plugins, started, status)
        score = float(np.dot(source.template.vector, t.template.vector))
        entry["similarity"] = scale.similarity(score)
        matches.append((score, entry))
    matches.sort(key=lambda m: -m[0])
    result: dict[str, Any] = {
        "source_image_face": _face_json(source, face_plugins, started, status),
        "face_matches": [entry for _, entry in matches],
    }
    if status:
        result["plugins_versions"] = _versions(state)
    await state.record(
        key,
        "verify",
        details={
            "scores": [round(score, 4) for score, _ in matches],
            "similarities": [entry["similarity"] for _, entry in matches],
            "api": "compreface",
        },
    )
    return {"result": [result]}


@router.post("/api/v1/detection/detect", dependencies=ADMITTED, openapi_extra=image_body("file"))
async def detect(
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require("detect"))],
    limit: Limit = 0,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = "",
    status: Status = False,
) -> dict[str, Any]:
    data = (await read_images(request, "file"))["file"]
    started = time.perf_counter()
    embed = "calculator" in face_plugins
    faces = _filtered(await state.inference.faces(data, embed=embed), det_prob_threshold, limit)
    state.metrics.faces.inc(len(faces))
    await state.record(key, "detect", details={"faces": len(faces), "api": "compreface"})
    out: dict[str, Any] = {"result": [_face_json(f, face_plugins, started, status) for f in faces]}
    if status:
        out["plugins_versions"] = _versions(state)
    return out
