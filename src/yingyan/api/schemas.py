"""What crosses the API boundary: request and response models of the native API (v1)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from yingyan.types import Face

Name = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")


class Strict(BaseModel):
    """Request bodies: unknown fields and type coercions (true as 1.0, "1" as 1) are refused;
    times stay ISO 8601 strings (strict=False on those fields only)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class GalleryIn(Strict):
    name: str = Name
    kind: Literal["enrollment", "watchlist"] = "enrollment"
    purpose: str = Field(min_length=1, max_length=2000)
    legal_basis: str = Field(min_length=1, max_length=2000)
    expires_at: datetime | None = Field(default=None, strict=False)
    keep_images: bool = False
    min_quality: float = Field(default=0.0, ge=0.0, le=1.0)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)


class GalleryOut(BaseModel):
    name: str
    kind: str
    purpose: str
    legal_basis: str
    expires_at: datetime | None
    keep_images: bool
    min_quality: float
    threshold: float | None
    model: str
    calibration: str | None
    created_at: datetime
    subjects: int


class ConsentIn(Strict):
    purpose: str = Field(min_length=1, max_length=2000)
    reference: str = Field(min_length=1, max_length=2000)
    expires_at: datetime | None = Field(default=None, strict=False)


class SubjectIn(Strict):
    external_id: str = Field(min_length=1, max_length=255)
    display_name: str | None = Field(None, max_length=255)
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    consent: ConsentIn | None = None


class ConsentOut(BaseModel):
    purpose: str
    reference: str
    granted_at: datetime
    expires_at: datetime | None
    withdrawn_at: datetime | None


class SubjectOut(BaseModel):
    external_id: str
    display_name: str | None
    metadata: dict[str, Any]
    created_at: datetime
    templates: int
    consents: list[ConsentOut] = []


class SubjectPage(BaseModel):
    items: list[SubjectOut]
    total: int
    limit: int
    next_after: int | None = Field(description="pass as `after` for the next page; null: last")


class ErasureOut(BaseModel):
    external_id: str
    templates_erased: int


class QualityOut(BaseModel):
    score: float
    inter_eye_px: float
    sharpness: float
    brightness: float
    yaw_deg: float
    roll_deg: float


class FaceOut(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels")
    detector_score: float
    landmarks: list[list[float] | None] = Field(
        description="5 points: eyes, nose, mouth corners (null where the model has none)"
    )
    quality: QualityOut

    @classmethod
    def of(cls, face: Face) -> FaceOut:
        q = face.quality
        return cls(
            box=face.detection.box.as_list(),
            detector_score=round(face.detection.score, 4),
            landmarks=[
                [round(x, 1), round(y, 1)] if math.isfinite(x + y) else None
                for x, y in face.landmarks.points.tolist()
            ],
            quality=QualityOut(
                score=round(q.score, 4),
                inter_eye_px=round(q.inter_eye_px, 1),
                sharpness=round(q.sharpness, 1),
                brightness=round(q.brightness, 1),
                yaw_deg=round(q.yaw_deg, 1),
                roll_deg=round(q.roll_deg, 1),
            ),
        )


class DetectOut(BaseModel):
    faces: list[FaceOut]
    detector: str


class EnrollOut(BaseModel):
    external_id: str
    template_id: int
    created: bool = Field(description="false: this image was already enrolled for the subject")
    face: FaceOut


class VerifyOut(BaseModel):
    score: float = Field(description="cosine similarity of the two templates, -1..1")
    threshold: float
    threshold_source: str
    match: bool = Field(description="score >= threshold")
    model: str
    probe_face: FaceOut
    reference_face: FaceOut | None = None
    reference_subject: str | None = None


class CandidateOut(BaseModel):
    rank: int
    external_id: str
    display_name: str | None
    score: float
    template_id: int


class IdentifiedFace(BaseModel):
    face: FaceOut
    candidates: list[CandidateOut]


class IdentifyOut(BaseModel):
    gallery: str
    mode: Literal["investigation", "threshold"]
    threshold: float | None
    faces: list[IdentifiedFace]
    review_required: Literal[True] = Field(
        default=True,
        description="candidates are leads for a trained human reviewer, never decisions",
    )


class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    operation: str
    outcome: str
    gallery: str | None
    purpose: str | None
    case_reference: str | None
    details: dict[str, Any]
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_after: int | None


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int
    head_seq: int
    problems: list[str]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    model: str
    detector: str
    workers: int
    database: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


_ERRORS = {
    400: "malformed request (bad JSON or base64, undecodable image)",
    401: "no valid API key",
    403: "the key's role or gallery scope does not allow this",
    404: "no such gallery, subject or face",
    409: "already exists",
    413: "request body or image too large",
    415: "unsupported content type or image format",
    422: "invalid parameters, or no face / too many faces / several faces",
    503: "not ready (database or models unavailable)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERRORS.items()
}
