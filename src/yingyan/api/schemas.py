"""What crosses the API boundary: request and response models of the native API (v1)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from fastapi import FastAPI, Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from yingyan.store.repository import DB_INT_MAX, DB_INT_MIN
from yingyan.types import Face

Name = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")

# -- bounded input types: every integer fits the database's signed 64 bits, every float is
# finite, every text is encodable, every JSON document is bounded: bad input is a 422, not a
# driver's OverflowError (500) deep in a query. The store checks ids again (`_db_int`).

TemplateId = Annotated[
    int, Path(ge=0, le=DB_INT_MAX, description="a template id (`template_id` of an enrolment)")
]
AfterId = Annotated[
    int | None, Query(ge=0, le=DB_INT_MAX, description="next_after of the previous page")
]
MAX_METADATA_KEYS: Final = 64
MAX_JSON_DEPTH: Final = 32


def _encodable(text: str) -> str:
    """Refuse lone surrogates (JSON `"\\ud800"` decodes to one): no database, log or JSON
    response can encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
MAX_METADATA_TEXT: Final = 2000


def _metadata_value(value: str | bool | int | float | None) -> str | bool | int | float | None:
    """One scalar of subject metadata: finite, 64-bit, encodable and at most 2,000 characters."""
    if isinstance(value, str) and len(value) > MAX_METADATA_TEXT:
        raise ValueError(f"text values have at most {MAX_METADATA_TEXT} characters")
    check_json(value)
    return value


MetadataKey = Annotated[Text, StringConstraints(min_length=1, max_length=100)]
# NaN passes the float branch (the model config refuses it there) to meet one clear message.
MetadataValue = Annotated[
    str | bool | int | Annotated[float, Field(allow_inf_nan=True)] | None,
    AfterValidator(_metadata_value),
]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_KEYS)]


def check_json(value: Any, depth: int = 0) -> Any:
    """A JSON document as Python's json module decoded it, refused (ValueError) if it holds
    what JSON cannot carry: NaN or infinity (json accepts the `NaN` literal), integers beyond
    64 bits, lone surrogates, or nesting deeper than MAX_JSON_DEPTH."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or infinity)")
    if isinstance(value, int) and not isinstance(value, bool):
        if not DB_INT_MIN <= value <= DB_INT_MAX:
            raise ValueError("integers must fit in 64 bits")
    elif isinstance(value, str):
        _encodable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _encodable(key)
            check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, depth + 1)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]


class Strict(BaseModel):
    """Request bodies: unknown fields and type coercions (true as 1.0, "1" as 1) are refused;
    times stay ISO 8601 strings (strict=False on those fields only); floats are finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def storable_time(when: datetime) -> datetime:
    """A time the database can hold: one whose UTC form is a date (9999-12-31T23:59-23:00 is
    year 10000 in UTC, which neither Python nor SQL represents)."""
    try:
        when.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range once in UTC") from None
    return when


def iso_time(value: object) -> object:
    """Times are ISO 8601 text: pydantic's lax mode would also read a number (a query's
    `since=-449`) as Unix seconds, which the schema does not admit."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("an ISO 8601 date and time, e.g. 2026-12-01T09:30:00+00:00") from None
    if not isinstance(value, datetime):
        raise ValueError("an ISO 8601 date and time, e.g. 2026-12-01T09:30:00+00:00")
    return value


StoredTime = Annotated[datetime, BeforeValidator(iso_time), AfterValidator(storable_time)]


class GalleryIn(Strict):
    name: str = Name
    kind: Literal["enrollment", "watchlist"] = "enrollment"
    purpose: Text = Field(min_length=1, max_length=2000)
    legal_basis: Text = Field(min_length=1, max_length=2000)
    expires_at: StoredTime | None = Field(default=None, strict=False)
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
    purpose: Text = Field(min_length=1, max_length=2000)
    reference: Text = Field(min_length=1, max_length=2000)
    expires_at: StoredTime | None = Field(default=None, strict=False)


class SubjectIn(Strict):
    external_id: Text = Field(min_length=1, max_length=255)
    display_name: Text | None = Field(None, max_length=255)
    metadata: Metadata = Field(default_factory=dict)
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
    model: str  # the main recognizer's: new galleries are of this model
    models: list[str] = []  # every model probes can be made of (main first)
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
    404: "no such gallery, subject, face, watch session, camera or alert",
    409: "already exists; or the watch session is closed, the alert already reviewed or closed",
    413: "request body or image too large",
    415: "unsupported content type or image format",
    422: "invalid parameters, or no face / too many faces / several faces",
    429: "over the key's rate limit: retry after Retry-After seconds",
    503: "not ready (database or models unavailable), or overloaded: retry after Retry-After",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERRORS.items()
}


# -- OpenAPI links: from each create to what reads, changes or deletes the created object -------

_G = "/api/v1/galleries"
_GALLERY = _G + "/{gallery}"
_SUBJECTS = _GALLERY + "/subjects"
_SUBJECT = _SUBJECTS + "/{subject}"
_CF = "/api/v1/recognition"
_IN_GALLERY = {"gallery": "$request.path.gallery"}
_NEW_GALLERY = {"gallery": "$response.body#/name"}
_NEW_SUBJECT = _IN_GALLERY | {"subject": "$response.body#/external_id"}
_CF_SUBJECT = {"subject": "$response.body#/subject"}
_CF_FACE = {"image_id": "$response.body#/image_id"}
_W = "/api/v1/watch/sessions"
_SESSION = _W + "/{session}"
_NEW_SESSION = {"session": "$response.body#/name"}
_NEW_CAMERA = {"session": "$request.path.session", "camera": "$response.body#/name"}

Link = tuple[str, str, dict[str, str]]  # target method, target path, parameter expressions
LINKS: Final[dict[tuple[str, str, str], dict[str, Link]]] = {
    ("post", _G, "201"): {
        "GetGallery": ("get", _GALLERY, _NEW_GALLERY),
        "DeleteGallery": ("delete", _GALLERY, _NEW_GALLERY),
        "Calibrate": ("put", _GALLERY + "/calibration", _NEW_GALLERY),
        "Uncalibrate": ("delete", _GALLERY + "/calibration", _NEW_GALLERY),
        "CreateSubject": ("post", _SUBJECTS, _NEW_GALLERY),
        "ListSubjects": ("get", _SUBJECTS, _NEW_GALLERY),
        "Identify": ("post", _GALLERY + "/identify", _NEW_GALLERY),
    },
    ("post", _SUBJECTS, "201"): {
        "GetSubject": ("get", _SUBJECT, _NEW_SUBJECT),
        "EraseSubject": ("delete", _SUBJECT, _NEW_SUBJECT),
        "EnrollFace": ("post", _SUBJECT + "/faces", _NEW_SUBJECT),
        "VerifySubject": ("post", _SUBJECT + "/verify", _NEW_SUBJECT),
    },
    ("get", _SUBJECTS, "200"): {
        "NextPage": ("get", _SUBJECTS, _IN_GALLERY | {"after": "$response.body#/next_after"}),
    },
    ("post", _SUBJECT + "/faces", "201"): {
        "EraseFace": (
            "delete",
            _GALLERY + "/faces/{template_id}",
            _IN_GALLERY | {"template_id": "$response.body#/template_id"},
        ),
    },
    ("get", "/api/v1/audit", "200"): {
        "NextPage": ("get", "/api/v1/audit", {"after": "$response.body#/next_after"}),
    },
    ("post", _W, "201"): {
        "GetSession": ("get", _SESSION, _NEW_SESSION),
        "ChangeSession": ("patch", _SESSION, _NEW_SESSION),
        "StopSession": ("post", _SESSION + "/stop", _NEW_SESSION),
        "AddCamera": ("post", _SESSION + "/cameras", _NEW_SESSION),
        "ListCameras": ("get", _SESSION + "/cameras", _NEW_SESSION),
    },
    ("post", _SESSION + "/cameras", "201"): {
        "ChangeCamera": ("patch", _SESSION + "/cameras/{camera}", _NEW_CAMERA),
        "RemoveCamera": ("delete", _SESSION + "/cameras/{camera}", _NEW_CAMERA),
    },
    ("post", _CF + "/subjects", "201"): {
        "RenameSubject": ("put", _CF + "/subjects/{subject}", _CF_SUBJECT),
        "DeleteSubject": ("delete", _CF + "/subjects/{subject}", _CF_SUBJECT),
    },
    ("post", _CF + "/faces", "200"): {
        "DeleteFace": ("delete", _CF + "/faces/{image_id}", _CF_FACE),
        "VerifyFace": ("post", _CF + "/faces/{image_id}/verify", _CF_FACE),
    },
}


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """Put LINKS into an OpenAPI document (in place, idempotent): clients, and schemathesis's
    stateful tests, follow them to act on the objects they created instead of random names.
    A link whose source or target is not in the document is a bug: KeyError."""
    paths = schema["paths"]
    for (method, path, status), links in LINKS.items():
        response = paths[path][method]["responses"][status]
        response["links"] = {
            name: {"operationId": paths[target][verb]["operationId"], "parameters": params}
            for name, (verb, target, params) in links.items()
        }
    return schema


def install_links(app: FastAPI) -> None:
    """Serve the app's OpenAPI document with LINKS (FastAPI builds it once and caches it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return add_links(build())

    app.openapi = openapi  # type: ignore[method-assign]
