"""Bad input is a 4xx JSON answer (or a store error a caller can act on), never a 500: integers
beyond the database's 64 bits, NaN and infinity (Python's json accepts the `NaN` literal), lone
surrogates, in every integer and number parameter, and the store's own guard below the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from yingyan.access.keys import create_key
from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.settings import Settings
from yingyan.store import (
    Database,
    InvalidValueError,
    create_gallery,
    delete_template,
    get_or_create_subject,
    list_subjects,
    list_templates,
    subjects_of_templates,
)

pytestmark = pytest.mark.shared

HUGE = 2**70
JSON = {"content-type": "application/json"}


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        db = client.app.state.yingyan.db  # type: ignore[attr-defined]
        with db.session() as s:
            self.scoped = create_key(s, name="bad main", role="admin", galleries=["main"]).token

    def call(self, method: str, url: str, *, scoped: bool = False, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if scoped:
            headers["x-api-key"] = self.scoped
        return self.client.request(method, url, headers=headers, **kw)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("bad")
    app = create_app(Settings(data_dir=data, workers=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["x-api-key"] = (data / INITIAL_KEY_FILE).read_text().strip()
        body = {"name": "main", "purpose": "bad input test", "legal_basis": "test"}
        assert c.post("/api/v1/galleries", json=body).status_code == 201
        assert c.post("/api/v1/galleries/main/subjects", json={"external_id": "a"}).status_code
        yield Api(c)


def _refused(response: Any, status: int = 422) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert "error" in body or "code" in body  # native or CompreFace error shape


def test_huge_template_id_is_refused(api: Api) -> None:
    _refused(api.call("DELETE", "/api/v1/galleries/main/faces/99999999999999999999"))
    _refused(api.call("DELETE", f"/api/v1/galleries/main/faces/{2**63}"))
    # the largest id the database holds is a plain "no such face"
    _refused(api.call("DELETE", f"/api/v1/galleries/main/faces/{2**63 - 1}"), 404)


@pytest.mark.parametrize(
    ("method", "url", "scoped"),
    [
        ("GET", f"/api/v1/galleries/main/subjects?after={HUGE}", False),
        ("GET", f"/api/v1/galleries/main/subjects?limit={HUGE}", False),
        ("GET", f"/api/v1/audit?after={HUGE}", False),
        ("GET", f"/api/v1/audit?limit={HUGE}", False),
        ("POST", f"/api/v1/galleries/main/identify?k={HUGE}", False),
        ("GET", f"/api/v1/recognition/faces?page={HUGE}", True),
        ("GET", f"/api/v1/recognition/faces?size={HUGE}", True),
        ("POST", f"/api/v1/recognition/recognize?prediction_count={HUGE}", True),
        ("POST", f"/api/v1/recognition/recognize?limit={HUGE}", True),
        ("POST", f"/api/v1/detection/detect?limit={HUGE}", True),
    ],
)
def test_huge_integer_parameters_are_refused(api: Api, method: str, url: str, scoped: bool) -> None:
    _refused(api.call(method, url, scoped=scoped))


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
@pytest.mark.parametrize(
    ("url", "scoped"),
    [
        ("/api/v1/detection/detect?det_prob_threshold={}", True),
        ("/api/v1/recognition/recognize?det_prob_threshold={}", True),
        ("/api/v1/verification/verify?det_prob_threshold={}", True),
        ("/api/v1/verify?threshold={}", False),
        ("/api/v1/galleries/main/identify?mode=threshold&threshold={}", False),
    ],
)
def test_non_finite_numbers_are_refused(api: Api, url: str, scoped: bool, value: str) -> None:
    _refused(api.call("POST", url.format(value), scoped=scoped))


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", str(HUGE).encode()])
def test_subject_metadata_must_be_finite_and_64_bit(api: Api, literal: bytes) -> None:
    body = b'{"external_id": "m", "metadata": {"x": ' + literal + b"}}"
    _refused(api.call("POST", "/api/v1/galleries/main/subjects", content=body, headers=JSON))
    assert api.call("GET", "/api/v1/galleries/main/subjects/m").status_code == 404  # not stored


def test_subject_text_must_be_encodable(api: Api) -> None:
    for body in (
        b'{"external_id": "s", "metadata": {"x": "\\ud800"}}',  # was a 500
        b'{"external_id": "s", "metadata": {"\\ud800": 1}}',
        b'{"external_id": "s", "display_name": "\\ud800"}',
    ):
        _refused(api.call("POST", "/api/v1/galleries/main/subjects", content=body, headers=JSON))
    assert api.call("GET", "/api/v1/galleries/main/subjects/s").status_code == 404


def test_times_beyond_the_last_utc_date_are_refused(api: Api) -> None:
    # 9999-12-31T23:59:59-23:59 is year 10000 in UTC, which the store cannot hold (was a 500).
    late = "9999-12-31T23:59:59-23:59"
    gallery = {"name": "late", "purpose": "p", "legal_basis": "l", "expires_at": late}
    _refused(api.call("POST", "/api/v1/galleries", json=gallery))
    assert api.call("GET", "/api/v1/galleries/late").status_code == 404
    subject = {
        "external_id": "late",
        "consent": {"purpose": "p", "reference": "r", "expires_at": late},
    }
    _refused(api.call("POST", "/api/v1/galleries/main/subjects", json=subject))
    assert api.call("GET", "/api/v1/galleries/main/subjects/late").status_code == 404


def test_subject_metadata_is_bounded(api: Api) -> None:
    many = {"external_id": "b", "metadata": {f"k{i}": i for i in range(65)}}
    _refused(api.call("POST", "/api/v1/galleries/main/subjects", json=many))
    long = {"external_id": "b", "metadata": {"k": "x" * 2001}}
    _refused(api.call("POST", "/api/v1/galleries/main/subjects", json=long))
    fine = {"external_id": "b", "metadata": {"k": "x", "n": 2**63 - 1, "f": 0.5, "t": True}}
    response = api.call("POST", "/api/v1/galleries/main/subjects", json=fine)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == fine["metadata"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"format": "yingyan.fair-score/1", "global_threshold": NaN}',
        b'{"format": "yingyan.fair-score/1", "x": [1, 2, Infinity]}',
        b'{"format": "yingyan.fair-score/1", "top_k": ' + str(HUGE).encode() + b"}",
        b'{"format": "yingyan.fair-score/1", "name": "\\ud800"}',
        b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
    ],
)
def test_calibration_profile_json_is_checked(api: Api, body: bytes) -> None:
    response = api.call("PUT", "/api/v1/galleries/main/calibration", content=body, headers=JSON)
    _refused(response)
    assert "body" in response.json()["error"]["message"]  # refused at the boundary
    assert api.call("GET", "/api/v1/galleries/main").json()["calibration"] is None


def test_compreface_image_id_with_unicode_digits(api: Api) -> None:
    # "²".isdigit() is True but int("²") raises: was a 500
    _refused(api.call("DELETE", "/api/v1/recognition/faces/%C2%B2", scoped=True), 404)


# -- the store's own guard (CLI, workers and any other caller), on SQLite and PostgreSQL ------


def test_store_refuses_ids_and_limits_beyond_64_bits(db: Database) -> None:
    with db.session() as s:
        g = create_gallery(
            s, name="g", kind="enrollment", model="m@1", purpose="p", legal_basis="b"
        )
        s.flush()
        get_or_create_subject(s, gallery_id=g.id, external_id="a")
        s.flush()
        gallery_id = g.id
    calls = [
        lambda s: delete_template(s, gallery_id=gallery_id, template_id=99999999999999999999),
        lambda s: list_subjects(s, gallery_id=gallery_id, after_id=HUGE),
        lambda s: list_subjects(s, gallery_id=gallery_id, limit=HUGE),
        lambda s: list_templates(s, gallery_id=gallery_id, offset=HUGE),
        lambda s: subjects_of_templates(s, template_ids=[1, HUGE]),
    ]
    for call in calls:
        with db.session() as s, pytest.raises(InvalidValueError, match="must lie in"):
            call(s)
    with db.session() as s:  # in range, the same queries answer
        assert [r.external_id for r in list_subjects(s, gallery_id=gallery_id, after_id=0)] == ["a"]
        assert subjects_of_templates(s, template_ids=[2**63 - 1]) == {}
