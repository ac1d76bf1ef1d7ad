"""Face stations: one kiosk attempt per request (`station.kiosk`), thin over the library.

`POST /api/v1/stations/{station}/attempts`, multipart: `rgb` (one part per frame, camera 1),
`nir` (camera 2 of an rgb+nir station, as many) or `rgb2` (camera 2 of an rgb+rgb station),
optional `nir_off` (camera 2 with the illuminator off), optional `id_photo`; and `subject` (with
`gallery`, the profile's by default) as form fields or query parameters. The analysis and
embedding run as one inference job in a worker; the gallery comparison here, as for
`verify_subject`. Every attempt that reaches a result is audited (PAD scores and decisions,
never images); nothing is stored unless the profile says `store = true`."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from yingyan.access.keys import ApiKey, reaches
from yingyan.access.roles import allows
from yingyan.api.backpressure import ADMITTED
from yingyan.api.errors import ApiError
from yingyan.api.images import decode_base64
from yingyan.api.routes.biometrics import _justified
from yingyan.api.schemas import ERROR_RESPONSES
from yingyan.api.security import require
from yingyan.api.state import AppState, get_state
from yingyan.api.station_schemas import AttemptOut
from yingyan.errors import ConfigError, ModelMismatchError
from yingyan.extras import require as require_extra
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.station.kiosk import (
    AttemptAnalysis,
    AttemptFrames,
    AttemptInputError,
    AttemptResult,
    attempt_job,
    audit_details,
    check_counts,
    check_target,
    conclude,
    station_policy,
    verify_against_subject,
)
from yingyan.station.profile import StationProfile, load_profile, profile_path
from yingyan.store import GalleryRow, get_gallery, get_subject

router = APIRouter(prefix="/api/v1", tags=["stations"], responses=ERROR_RESPONSES)
State = Annotated[AppState, Depends(get_state)]
OPERATION = "station.attempt"
PARTS = {"rgb+nir": "nir", "rgb+rgb": "rgb2", "rgb": None}  # camera 2's part, by cameras
IMAGE_PARTS = ("rgb", "nir", "rgb2", "nir_off", "id_photo")
TEXT_FIELDS = ("subject", "gallery")


def _body_doc() -> dict[str, Any]:
    described = {
        "rgb": "camera 1 (colour), one per frame",
        "nir": "camera 2 of an rgb+nir station, one per rgb frame",
        "rgb2": "camera 2 of an rgb+rgb station, one per rgb frame",
        "nir_off": "camera 2 with the illuminator off (optional), one per rgb frame",
        "id_photo": "an ID-document photo to compare with (optional)",
    }
    text = {
        "subject": {"type": "string", "description": "the enrolled subject to compare with"},
        "gallery": {"type": "string", "description": "the subject's gallery (the profile's)"},
    }

    def image(name: str, fmt: str) -> dict[str, Any]:
        one = {"type": "string", "format": fmt}
        shape = one if name == "id_photo" else {"type": "array", "items": one}
        return shape | {"description": described[name]}

    props = {name: image(name, "binary") for name in described} | text
    encoded = {name: image(name, "byte") for name in described} | text
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": props, "required": ["rgb"]}
                },
                "application/json": {
                    "schema": {"type": "object", "properties": encoded, "required": ["rgb"]}
                },
            },
        }
    }


@router.post(
    "/stations/{station}/attempts",
    response_model=AttemptOut,
    dependencies=ADMITTED,
    openapi_extra=_body_doc(),
)
async def attempt(
    station: str,
    request: Request,
    state: State,
    key: Annotated[ApiKey, Depends(require("verify"))],
    subject: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    gallery: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    purpose: Annotated[str | None, Query(max_length=2000)] = None,
    case_reference: Annotated[str | None, Query(max_length=500)] = None,
) -> AttemptOut:
    """One attempt at a face station: quality gate, liveness over the frames, then 1:1 against
    an enrolled subject or an ID photo sent with it. The answer: accepted, attack, retry,
    no_match or no_face, with reasons."""
    started = time.perf_counter()
    path, profile = await _profile(state, station)
    parts, fields = await _read_body(request, profile)
    frames, id_photo = _frames(parts, profile)
    subject = subject or fields.get("subject")
    gallery = gallery or fields.get("gallery")
    check_counts(profile, frames)
    check_target(profile, subject, id_photo is not None)
    if subject is None:
        analysis = await state.inference.call(
            partial(attempt_job, str(path), frames, id_photo, True)
        )
        result = _total(conclude(analysis), started)
        await _audit(state, key, result, None, purpose, case_reference)
        return AttemptOut.of(result)
    assert profile.gallery is not None
    if gallery is not None and gallery != profile.gallery:
        raise AttemptInputError(
            f"station {profile.name} verifies against gallery {profile.gallery!r}, not {gallery!r}"
        )
    gallery = profile.gallery
    await _reach(state, key, gallery)
    row = await state.call(partial(_gallery_row, gallery))
    await _justified(state, key, OPERATION, row, purpose, case_reference)
    await state.call(partial(_known_subject, row.id, subject))
    store = profile.store and allows(key.role, "faces:enroll")
    result, analysis = await _against_subject(state, path, profile, frames, row, subject)
    result = _total(result, started)
    if store and result.accepted:
        result = await _store(state, key, result, analysis, subject, purpose, case_reference)
    else:
        await _audit(state, key, result, gallery, purpose, case_reference)
    return AttemptOut.of(result)


async def _against_subject(
    state: AppState,
    path: Path,
    profile: StationProfile,
    frames: AttemptFrames,
    row: GalleryRow,
    subject: str,
) -> tuple[AttemptResult, AttemptAnalysis]:
    """The job with the gallery's model, then the subject comparison; once more with the new
    model if a migration switched the gallery in between (never two models compared)."""
    gallery, model = row.name, row.model
    for again in (False, True):
        analysis = await state.inference.call(
            partial(attempt_job, str(path), frames, None, True), model
        )
        if analysis.outcome is not None:
            return conclude(analysis), analysis
        assert analysis.probe is not None
        started = time.perf_counter()
        try:
            verification = await state.call(
                partial(_verify, gallery, subject, analysis, profile.threshold)
            )
        except ModelMismatchError:
            now = await state.call(lambda g: g.gallery_model(gallery))
            if again or now == model:
                raise
            model = now
            continue
        verify_ms = {"verify": round((time.perf_counter() - started) * 1000, 2)}
        return conclude(analysis, verification, verify_ms), analysis
    raise AssertionError("unreachable")


def _verify(
    gallery: str, subject: str, analysis: AttemptAnalysis, threshold: str, g: GalleryService
) -> Any:
    assert analysis.probe is not None
    return verify_against_subject(g, gallery, subject, analysis.probe, threshold)


async def _store(
    state: AppState,
    key: ApiKey,
    result: AttemptResult,
    analysis: AttemptAnalysis,
    subject: str,
    purpose: str | None,
    case_reference: str | None,
) -> AttemptResult:
    """Profile `store = true`: the accepted face's template joins the subject's, in one unit
    of work with the attempt's audit entry (never the image)."""
    probe = analysis.probe
    assert probe is not None and probe.template is not None and result.verification is not None
    gallery = result.verification.gallery
    assert gallery is not None
    item = EnrollItem(
        external_id=subject,
        template=probe.template,
        quality=probe.quality.score,
        source_sha256=analysis.probe_sha256 or "",
        box=probe.detection.box,
    )

    def details(out: list[tuple[int, bool]]) -> dict[str, Any]:
        return audit_details(_with_stored(result, out[0][0]))

    hook = state.audit_hook(
        key,
        OPERATION,
        gallery=gallery,
        purpose=purpose,
        case_reference=case_reference,
        details=details,
    )
    made = await state.call(lambda g: g.enroll(gallery, [item], audit=hook))
    return _with_stored(result, made[0][0])


def _total(result: AttemptResult, started: float) -> AttemptResult:
    """The request's time so far (profile, body, job, comparison) as `total`."""
    total = round((time.perf_counter() - started) * 1000, 2)
    return replace(result, timings_ms=dict(result.timings_ms) | {"total": total})


def _with_stored(result: AttemptResult, template_id: int) -> AttemptResult:
    return replace(result, stored_template_id=template_id)


async def _audit(
    state: AppState,
    key: ApiKey,
    result: AttemptResult,
    gallery: str | None,
    purpose: str | None,
    case_reference: str | None,
) -> None:
    await state.record(
        key,
        OPERATION,
        gallery=gallery,
        purpose=purpose,
        case_reference=case_reference,
        details=audit_details(result),
    )


async def _profile(state: AppState, station: str) -> tuple[Path, StationProfile]:
    where = state.settings.stations
    if where is None:
        raise ApiError("not_found", "this service has no face stations (setting `stations`)")
    try:
        path = profile_path(where, station)
    except ConfigError:
        raise ApiError("not_found", f"no station {station!r}") from None
    if not path.is_file():
        raise ApiError("not_found", f"no station {station!r}")

    def load() -> StationProfile:
        require_extra("scipy", "station", "a face station (stereo relief)")
        profile = load_profile(path, state.settings.model_dir)
        station_policy(profile)  # the policy loads and fits the station (else: not ready)
        return profile

    try:
        profile = await run_in_threadpool(load)
    except ConfigError as e:
        raise ApiError("not_ready", f"station {station!r} is misconfigured: {e.message}") from None
    if profile.name != station:
        raise ApiError("not_found", f"no station {station!r}")
    return path, profile


async def _read_body(
    request: Request, profile: StationProfile
) -> tuple[dict[str, list[bytes]], dict[str, str]]:
    """The image parts (each a list, in order) and the text fields of a multipart body, or of
    a JSON object whose image fields are base64 strings (a list of them for the frames)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=3 * profile.max_frames + 1, max_fields=8)
        try:
            parts = {name: await _parts(form, name) for name in IMAGE_PARTS}
            fields = {name: v for name in TEXT_FIELDS if (v := _field(form.get(name), name))}
        finally:
            await form.close()
        return parts, fields
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError("malformed_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError("malformed_json", "the body must be a JSON object")
        parts = {name: _encoded(body.get(name), name) for name in IMAGE_PARTS}
        fields = {name: v for name in TEXT_FIELDS if (v := _field(body.get(name), name))}
        return parts, fields
    raise ApiError(
        "unsupported_media_type",
        "send the frames as multipart/form-data (or base64 in application/json), not "
        f"{content_type or 'no content type'}",
    )


def _frames(
    parts: dict[str, list[bytes]], profile: StationProfile
) -> tuple[AttemptFrames, bytes | None]:
    second = PARTS[profile.cameras]
    for name in ("nir", "rgb2", "nir_off"):
        if name != second and parts[name] and not (name == "nir_off" and second == "nir"):
            raise AttemptInputError(
                f"station {profile.name} ({profile.cameras}) takes no {name!r} part"
            )
    if not parts["rgb"]:
        raise ApiError("missing_image", "the part 'rgb' (camera 1's frames) is required")
    if second and not parts[second]:
        raise ApiError("missing_image", f"the part {second!r} (camera 2's frames) is required")
    if len(parts["id_photo"]) > 1:
        raise AttemptInputError("send one id_photo")
    pair = parts[second] if second else []
    frames = AttemptFrames(tuple(parts["rgb"]), tuple(pair), tuple(parts["nir_off"]))
    return frames, (parts["id_photo"][0] if parts["id_photo"] else None)


async def _parts(form: FormData, name: str) -> list[bytes]:
    out = []
    for part in form.getlist(name):
        if not isinstance(part, UploadFile):
            raise ApiError("missing_image", f"the part {name!r} must be a file")
        data = await part.read()
        if not data:
            raise ApiError("invalid_image", f"a {name!r} part is empty")
        out.append(data)
    return out


def _encoded(value: object, name: str) -> list[bytes]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise ApiError("missing_image", f"{name!r} must be a base64 string or a list of them")
    return [decode_base64(v, name) for v in items]  # type: ignore[arg-type]


def _field(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ApiError("invalid_value", f"{name} must be a text field of 1 to 200 characters")
    return value


async def _reach(state: AppState, key: ApiKey, gallery: str) -> None:
    """A key scoped to galleries must reach the station's (a refusal is audited)."""
    if key.scope is None:
        return

    def check() -> bool:
        with state.db.read() as session:
            return reaches(session, key, gallery)

    if not await run_in_threadpool(check):
        why = f"this key is not allowed to use gallery {gallery!r}"
        details = {"reason": why, "role": key.role}
        await state.record(key, OPERATION, outcome="denied", gallery=gallery, details=details)
        raise ApiError("forbidden", why)


def _gallery_row(gallery: str, galleries: GalleryService) -> GalleryRow:
    with galleries.db.read() as session:
        row = get_gallery(session, name=gallery)
        session.expunge(row)
    return row


def _known_subject(gallery_id: int, subject: str, galleries: GalleryService) -> None:
    """NotFoundError (404) for an unknown subject, before any inference is spent on it."""
    with galleries.db.read() as session:
        get_subject(session, gallery_id=gallery_id, external_id=subject)
