"""The request-body limit (`YINGYAN_MAX_UPLOAD_BYTES`): a 413 in the route's own error shape
(native `{"error": {...}}`, CompreFace `{"message", "code"}`) whether the body announces its
length or arrives chunked without one, and nothing done for a refused request.

Part one drives a real `yingyan serve` (uvicorn) over a socket, chunked bodies included. Part
two is why the limit is Yingyan's own middleware rather than the framework's
(`FastAPI(max_body_size=...)`, Starlette's `RequestBodyLimitMiddleware`): the same app with
that limit answers any announced length over it in plain text, and only after the route has
run as far as reading its body, or to its end when it reads none (a gallery deleted, the
caller told 413). If a FastAPI upgrade changes that, these tests say so."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest
from fastapi.testclient import TestClient

from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.api.observability import BodyLimitMiddleware
from yingyan.settings import Settings

from ._server import Server, running_server

LIMIT = 50_000
NATIVE = "/api/v1/detect"
COMPREFACE = "/api/v1/detection/detect"


def _multipart(field: str, size: int) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + b"\xff" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _raw(
    url: str, method: str, path: str, headers: dict[str, str], body: bytes, *, chunked: bool
) -> tuple[int, dict[str, str], bytes]:
    """One request over a fresh socket: with `Content-Length`, or chunked (64 kB chunks)
    without it. The server may answer and close before the body is all sent."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        pieces = [body[i : i + 65_536] for i in range(0, len(body), 65_536)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):  # answered already: read it
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("limit") / "data"
    with running_server(data, workers=0, env={"YINGYAN_MAX_UPLOAD_BYTES": str(LIMIT)}) as s:
        yield s


def _expect_413(status: int, headers: dict[str, str], body: bytes, path: str) -> dict[str, Any]:
    assert status == 413, body
    assert headers.get("content-type") == "application/json", headers
    content: dict[str, Any] = json.loads(body)
    message = f"request body over the {LIMIT} byte limit"
    if path.startswith("/api/v1/detection"):
        assert content == {"message": message, "code": "payload_too_large"}
    else:
        assert set(content) == {"error"}
        assert content["error"]["code"] == "payload_too_large"
        assert content["error"]["message"] == message
        if "x-request-id" in headers:  # once the request-id middleware wraps this one
            assert content["error"]["request_id"] == headers["x-request-id"]
    return content


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", [NATIVE, COMPREFACE])
def test_an_oversized_body_gets_the_routes_413(server: Server, path: str, chunked: bool) -> None:
    field = "file" if path == COMPREFACE else "image"
    body, content_type = _multipart(field, 3 * LIMIT)
    headers = server.headers | {"Content-Type": content_type}
    _expect_413(*_raw(server.url, "POST", path, headers, body, chunked=chunked), path)
    # Just under the limit the same request is read and answered (not an image: 400).
    small, content_type = _multipart(field, LIMIT // 2)
    headers["Content-Type"] = content_type
    status, _, answer = _raw(server.url, "POST", path, headers, small, chunked=chunked)
    assert status == 400, answer


def test_without_a_key_the_limit_still_answers_first(server: Server) -> None:
    body, content_type = _multipart("image", 3 * LIMIT)
    headers = {"Content-Type": content_type}
    _expect_413(*_raw(server.url, "POST", NATIVE, headers, body, chunked=False), NATIVE)


def test_a_refused_request_does_nothing(server: Server) -> None:
    """A body over the limit sent to a route that reads none (deleting a gallery): refused
    before the route runs, the gallery still there."""
    h = server.headers
    body = {"name": "kept", "purpose": "body limit test", "legal_basis": "test"}
    created = _raw(
        server.url,
        "POST",
        "/api/v1/galleries",
        h | {"Content-Type": "application/json"},
        json.dumps(body).encode(),
        chunked=False,
    )
    assert created[0] == 201, created
    path = "/api/v1/galleries/kept"
    _expect_413(*_raw(server.url, "DELETE", path, h, b"x" * (2 * LIMIT), chunked=False), path)
    assert _raw(server.url, "GET", path, h, b"", chunked=False)[0] == 200


# -- the framework's own limit, on the same app ---------------------------------------------


@pytest.fixture(scope="module")
def with_framework_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with FastAPI's `max_body_size` in place of BodyLimitMiddleware."""
    data = tmp_path_factory.mktemp("framework") / "data"
    app = create_app(Settings(data_dir=data, workers=0, max_upload_bytes=LIMIT))
    app.user_middleware = [m for m in app.user_middleware if m.cls is not BodyLimitMiddleware]
    app.max_body_size = LIMIT
    with TestClient(app) as client:
        client.headers["x-api-key"] = (data / INITIAL_KEY_FILE).read_text().strip()
        yield client


def test_the_framework_limit_runs_a_route_then_answers_plain_text(
    with_framework_limit: TestClient,
) -> None:
    client = with_framework_limit
    body = {"name": "doomed", "purpose": "body limit test", "legal_basis": "test"}
    assert client.post("/api/v1/galleries", json=body).status_code == 201
    r = client.request("DELETE", "/api/v1/galleries/doomed", content=b"x" * (2 * LIMIT))
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/plain") and r.text == "Content Too Large"
    # ... and yet the deletion ran and was committed: the caller was told otherwise.
    assert client.get("/api/v1/galleries/doomed").status_code == 404


@pytest.mark.parametrize("path", [NATIVE, COMPREFACE])
def test_the_framework_limit_on_a_route_that_reads_its_body(
    with_framework_limit: TestClient, path: str
) -> None:
    """An announced length over the limit: plain text, whatever the app answered (its JSON
    413 is replaced at the response's start). A chunked body: the app's own handler answers,
    in the route's shape, "Content Too Large" (not the limit)."""
    client = with_framework_limit
    body, content_type = _multipart("file" if path == COMPREFACE else "image", 3 * LIMIT)
    headers = {"content-type": content_type}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/plain") and r.text == "Content Too Large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield from (body[i : i + 65_536] for i in range(0, len(body), 65_536))

    r = client.post(path, content=chunks(), headers=headers)
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    content = r.json()
    detail = content if path == COMPREFACE else content["error"]
    assert detail["code"] == "payload_too_large" and detail["message"] == "Content Too Large"
