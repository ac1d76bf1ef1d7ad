"""Schemathesis against the service's own OpenAPI schema: generated requests to every operation
(valid and invalid), with an admin key, must never get a server error and every response must
conform to the schema (status code, content type, body). Bounded: a few examples per route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.settings import Settings

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("schema")
    app = create_app(Settings(data_dir=data, workers=0, max_upload_bytes=1_000_000))
    with TestClient(app) as c:
        c.headers["x-api-key"] = (data / INITIAL_KEY_FILE).read_text().strip()
        body = {"name": "main", "purpose": "schema test", "legal_basis": "test"}
        assert c.post("/api/v1/galleries", json=body).status_code == 201
        yield c


def _operations(client: TestClient) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_server_error_and_no_schema_violation(client: TestClient) -> None:
    # Random bodies rarely hold a face; "positive data acceptance" would demand a 2xx for any
    # schema-valid body, which an image without a face can never get. Auth is checked by
    # tests/test_api.py route by route.
    excluded = [positive_data_acceptance, ignored_auth]
    headers = {"x-api-key": client.headers["x-api-key"]}
    operations = _operations(client)
    assert len(operations) >= 30

    ran = dict.fromkeys(GenerationMode, 0)
    for operation in operations:
        media_types = [body.media_type for body in operation.body] or [None]
        for mode in GenerationMode:
            for media_type in media_types:  # multipart and JSON/base64 alike
                try:
                    _check(operation.as_strategy(mode, media_type=media_type), headers, excluded)
                except Unsatisfiable:  # nothing to make invalid (e.g. GET /health has no input)
                    assert mode is GenerationMode.NEGATIVE, operation.label
                    continue
                ran[mode] += 1
    assert ran[GenerationMode.POSITIVE] >= len(operations)
    assert ran[GenerationMode.NEGATIVE] >= len(operations) - 8


def _check(strategy: Any, headers: dict[str, str], excluded: list[Any]) -> None:
    @given(case=strategy)
    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    check()
