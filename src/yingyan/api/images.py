"""Images in requests: multipart file parts or base64 strings in a JSON object, with the same
field names either way. The body is read by hand (not by a FastAPI body parameter) so one route
accepts both; `image_body` documents both forms in the OpenAPI schema."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from yingyan.api.errors import ApiError


def image_body(*names: str, description: str = "") -> dict[str, Any]:
    """`openapi_extra` declaring a request body of image fields, multipart or JSON/base64."""
    files = {n: {"type": "string", "format": "binary"} for n in names}
    encoded = {n: {"type": "string", "format": "byte"} for n in names}
    return {
        "requestBody": {
            "required": True,
            "description": description or "images as multipart parts or base64 JSON strings",
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": files, "required": list(names)}
                },
                "application/json": {
                    "schema": {"type": "object", "properties": encoded, "required": list(names)}
                },
            },
        }
    }


async def read_images(request: Request, *names: str) -> dict[str, bytes]:
    """The named images of the request body, as bytes (not yet decoded as images)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _from_multipart(request, names)
    if content_type == "application/json" or content_type.endswith("+json"):
        return await _from_json(request, names)
    raise ApiError(
        "unsupported_media_type",
        f"send the image(s) {', '.join(names)} as multipart/form-data or as base64 in "
        f"application/json, not {content_type or 'no content type'}",
    )


async def _from_multipart(request: Request, names: tuple[str, ...]) -> dict[str, bytes]:
    form = await request.form(max_files=len(names) + 2, max_fields=len(names) + 8)
    try:
        out = {}
        for name in names:
            part = form.get(name)
            if isinstance(part, UploadFile):
                out[name] = await part.read()
            elif isinstance(part, str):  # a base64 string in a plain form field
                out[name] = decode_base64(part, name)
            else:
                raise ApiError("missing_image", f"the multipart part {name!r} is required")
        return out
    finally:
        await form.close()


async def _from_json(request: Request, names: tuple[str, ...]) -> dict[str, bytes]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError("malformed_json", "the body must be a JSON object")
    out = {}
    for name in names:
        value = body.get(name)
        if not isinstance(value, str):
            raise ApiError("missing_image", f"the JSON field {name!r} (base64 image) is required")
        out[name] = decode_base64(value, name)
    return out


def decode_base64(value: str, name: str) -> bytes:
    """Standard or URL-safe base64, optionally as a data URL; anything else is refused."""
    text = value.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    text = "".join(text.split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("malformed_base64", f"{name!r} is not valid base64") from None
    if not data:
        raise ApiError("invalid_image", f"{name!r} is empty")
    return data
