"""Every failure leaves the service as a 4xx/5xx JSON body with a stable code: never a
traceback, never an HTML page. Errors on the CompreFace-compatible routes use CompreFace's
body shape (`{"message": ..., "code": ...}`) so its clients can read them."""

from __future__ import annotations

import logging
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from yingyan.errors import YingyanError

log = logging.getLogger("yingyan.api")

COMPREFACE_PREFIXES: Final = ("/api/v1/recognition", "/api/v1/verification", "/api/v1/detection")

# Error code → HTTP status. Codes not listed are client errors (400).
STATUS: Final[dict[str, int]] = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "unsupported_format": 415,
    "validation_error": 422,
    "no_face": 422,
    "several_faces": 422,
    "too_many_faces": 422,
    "model_mismatch": 422,
    "purpose_required": 422,
    "camera_exists": 409,
    "camera_not_found": 404,
    "not_a_watchlist": 422,
    "source_error": 422,  # the named camera/file cannot be used: the request's input, not us
    "already_reviewed": 409,
    "alert_closed": 409,
    "watch_session_closed": 409,
    "store_unavailable": 503,
    "plaintext_refused": 503,  # data at rest awaits `yingyan encryption migrate`
    "model_unavailable": 503,
    "not_ready": 503,
    "inference_unavailable": 503,
    "overloaded": 503,  # the inference pool is full (api/backpressure.py): with Retry-After
    "rate_limited": 429,  # the key is over its role's rate limit: with Retry-After
}


class ApiError(YingyanError):
    """An error raised by the API layer itself, with its code chosen per case; `retry_after`
    (seconds) is sent as the `Retry-After` header."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


def status_of(code: str) -> int:
    return STATUS.get(code, 400)


def error_response(
    request: Request, status: int, code: str, message: str, *, retry_after: int | None = None
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if request.url.path.startswith(COMPREFACE_PREFIXES):
        body: dict[str, object] = {"message": message, "code": code}
    else:
        body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(YingyanError)
    async def _yingyan(request: Request, exc: YingyanError) -> JSONResponse:
        retry_after = exc.retry_after if isinstance(exc, ApiError) else None
        return error_response(
            request, status_of(exc.code), exc.code, exc.message, retry_after=retry_after
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        message = "; ".join(parts) or "invalid request"
        return error_response(request, 422, "validation_error", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "bad_request" if exc.status_code < 500 else "server_error"
        )
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        # Every unit of work rolls back whole (its audit entry included): nothing happened.
        log.error("database error", extra={"path": request.url.path, "error": str(exc.orig)})
        message = "the database refused the operation; nothing was changed: retry later"
        return error_response(request, 503, "store_unavailable", message)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug: logged with its traceback for the operator, never shown to the caller.
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(request, 500, "internal_error", "internal error (logged)")
