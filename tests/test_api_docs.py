"""The API's own documentation (/openapi.json, /docs, /redoc) needs a key like every other route
but /health and /ready, unless the operator sets `public_docs`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from yingyan.access.keys import create_key
from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.settings import Settings

DOCS = ("/openapi.json", "/docs", "/redoc")


def _client(data: Path, **settings: object) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=data, workers=0, **settings))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    yield from _client(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    yield from _client(tmp_path_factory.mktemp("public-docs"), public_docs=True)


def test_docs_need_a_valid_key_by_default(guarded: TestClient) -> None:
    for path in DOCS:
        for headers in ({}, {"x-api-key": "yy_0000_not-a-key"}, {"Authorization": "Bearer x"}):
            r = guarded.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["error"]["code"] == "unauthenticated"
            assert "/api/v1/galleries" not in r.text  # the schema does not leak in the error
    assert guarded.get("/health").status_code == 200  # the probes stay public
    assert Settings().public_docs is False


def test_docs_answer_any_valid_key(guarded: TestClient) -> None:
    state = guarded.app.state.yingyan  # type: ignore[attr-defined]
    with state.db.session() as s:  # the least privileged role reads them too
        reviewer = create_key(s, name="docs reader", role="reviewer").token
    admin = (state.settings.data_dir / INITIAL_KEY_FILE).read_text().strip()
    for headers in ({"x-api-key": reviewer}, {"Authorization": f"Bearer {admin}"}):
        schema = guarded.get("/openapi.json", headers=headers)
        assert schema.status_code == 200, schema.text
        assert "/api/v1/galleries/{gallery}/identify" in schema.json()["paths"]
        assert "and /ready needs an API key" in schema.json()["info"]["description"]
        for page, marker in (("/docs", "swagger-ui"), ("/redoc", "redoc")):
            r = guarded.get(page, headers=headers)
            assert r.status_code == 200 and marker in r.text and "/openapi.json" in r.text


def test_public_docs_setting_opens_them_without_a_key(public: TestClient) -> None:
    for path in DOCS:
        assert public.get(path).status_code == 200, path
    info = public.get("/openapi.json").json()["info"]
    assert "these docs" in info["description"]
    assert public.get("/api/v1/galleries").status_code == 401  # nothing else opens
