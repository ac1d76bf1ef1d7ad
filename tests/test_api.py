"""The REST service end to end through its ASGI app, on real photos: access control on every
route, the native v1 flow (galleries, subjects, enrol, verify, identify, detect), the audit
trail, erasure, privacy, and bad input that must be a 4xx JSON error, never a 500."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select, text

from yingyan.access.keys import create_key
from yingyan.access.roles import PERMISSIONS
from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.comparison.thresholds import get_threshold
from yingyan.privacy.cipher import MAGIC
from yingyan.settings import Settings
from yingyan.store import Database, TemplateRow, open_database

from ._index import stored_gallery

pytestmark = pytest.mark.shared

# Every route of the API and the permission it needs (None: public). A new route that is not
# listed here fails `test_every_route_is_listed`, so none escapes the access-control tests.
ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/health"): None,
    ("GET", "/ready"): None,
    ("GET", "/metrics"): "audit:read",
    ("POST", "/api/v1/galleries"): "galleries:write",
    ("GET", "/api/v1/galleries"): "galleries:read",
    ("GET", "/api/v1/galleries/{gallery}"): "galleries:read",
    ("DELETE", "/api/v1/galleries/{gallery}"): "galleries:write",
    ("PUT", "/api/v1/galleries/{gallery}/calibration"): "galleries:write",
    ("DELETE", "/api/v1/galleries/{gallery}/calibration"): "galleries:write",
    ("POST", "/api/v1/galleries/{gallery}/subjects"): "subjects:write",
    ("GET", "/api/v1/galleries/{gallery}/subjects"): "subjects:read",
    ("GET", "/api/v1/galleries/{gallery}/subjects/{subject}"): "subjects:read",
    ("DELETE", "/api/v1/galleries/{gallery}/subjects/{subject}"): "subjects:write",
    ("POST", "/api/v1/galleries/{gallery}/subjects/{subject}/faces"): "faces:enroll",
    ("DELETE", "/api/v1/galleries/{gallery}/faces/{template_id}"): "subjects:write",
    ("POST", "/api/v1/galleries/{gallery}/subjects/{subject}/verify"): "verify",
    ("POST", "/api/v1/galleries/{gallery}/identify"): "identify",
    ("POST", "/api/v1/detect"): "detect",
    ("POST", "/api/v1/verify"): "verify",
    ("POST", "/api/v1/stations/{station}/attempts"): "verify",
    ("GET", "/api/v1/audit"): "audit:read",
    ("GET", "/api/v1/audit/verify"): "audit:read",
    ("POST", "/api/v1/recognition/faces"): "faces:enroll",
    ("GET", "/api/v1/recognition/faces"): "subjects:read",
    ("DELETE", "/api/v1/recognition/faces"): "subjects:write",
    ("DELETE", "/api/v1/recognition/faces/{image_id}"): "subjects:write",
    ("POST", "/api/v1/recognition/faces/delete"): "subjects:write",
    ("POST", "/api/v1/recognition/faces/{image_id}/verify"): "verify",
    ("POST", "/api/v1/recognition/recognize"): "identify",
    ("POST", "/api/v1/recognition/subjects"): "subjects:write",
    ("GET", "/api/v1/recognition/subjects"): "subjects:read",
    ("GET", "/api/v1/recognition/subjects/"): "subjects:read",
    ("PUT", "/api/v1/recognition/subjects/{subject}"): "subjects:write",
    ("DELETE", "/api/v1/recognition/subjects/{subject}"): "subjects:write",
    ("DELETE", "/api/v1/recognition/subjects"): "subjects:write",
    ("POST", "/api/v1/verification/verify"): "verify",
    ("POST", "/api/v1/detection/detect"): "detect",
    ("POST", "/api/v1/watch/sessions"): "watch:write",
    ("GET", "/api/v1/watch/sessions"): "watch:read",
    ("GET", "/api/v1/watch/sessions/{session}"): "watch:read",
    ("PATCH", "/api/v1/watch/sessions/{session}"): "watch:write",
    ("POST", "/api/v1/watch/sessions/{session}/stop"): "watch:write",
    ("POST", "/api/v1/watch/sessions/{session}/cameras"): "watch:write",
    ("GET", "/api/v1/watch/sessions/{session}/cameras"): "watch:read",
    ("PATCH", "/api/v1/watch/sessions/{session}/cameras/{camera}"): "watch:write",
    ("DELETE", "/api/v1/watch/sessions/{session}/cameras/{camera}"): "watch:write",
    ("GET", "/api/v1/alerts"): "watch:read",
    ("GET", "/api/v1/alerts/stream"): "watch:read",
    ("GET", "/api/v1/alerts/{alert_id}"): "watch:read",
    # The best-shot crop is a face: only those who judge the match (reviewers) see it.
    ("GET", "/api/v1/alerts/{alert_id}/crop"): "alerts:review",
    ("POST", "/api/v1/alerts/{alert_id}/reviews"): "alerts:review",
}
LFW_TUNED = get_threshold("dlib_resnet_v1", "lfw-devtrain").score  # about 1% FMR on LFW
ROLES = ("admin", "enroller", "operator", "reviewer", "auditor")


class Api:
    """A running app with one key per role, and one per role scoped to gallery `main` (made
    here: a scope holds a gallery's id) for the CompreFace routes."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.admin = (settings.data_dir / INITIAL_KEY_FILE).read_text().strip()
        self.keys: dict[str, str] = {}
        self.scoped: dict[str, str] = {}
        body = {"name": "main", "kind": "enrollment", "purpose": "test", "legal_basis": "test"}
        made = client.post("/api/v1/galleries", json=body, headers={"x-api-key": self.admin})
        assert made.status_code == 201, made.text
        for role in ROLES:
            self.keys[role] = self.key(role)
            self.scoped[role] = self.key(role, "main")

    @property
    def db(self) -> Database:
        return self.client.app.state.yingyan.db  # type: ignore[attr-defined, no-any-return]

    def key(self, role: str, *galleries: str) -> str:
        """A new key for `role` scoped to the galleries now named `galleries` (none: all)."""
        name = f"{role} {' '.join(galleries) or 'all'}"
        with self.db.session() as s:
            return create_key(s, name=name, role=role, galleries=galleries or None).token

    def h(self, role: str = "admin", scoped: bool = False) -> dict[str, str]:
        return {"x-api-key": (self.scoped if scoped else self.keys)[role]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=data, workers=0, max_faces=1, max_upload_bytes=2_000_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Api(client, settings)


@pytest.fixture(scope="module")
def people(api: Api, stills: Path) -> str:
    """A gallery with Obama and Biden enrolled, for the tests that need one."""
    return obama_and_biden(api, "people", stills)


def obama_and_biden(api: Api, gallery: str, stills: Path) -> str:
    """A new gallery with Obama and Biden enrolled from one photo each."""
    make_gallery(api, gallery)
    for person, image in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
        api.client.post(
            f"/api/v1/galleries/{gallery}/subjects", json={"external_id": person}, headers=api.h()
        )
        r = api.client.post(
            f"/api/v1/galleries/{gallery}/subjects/{person}/faces",
            files=files(image=jpeg(stills / image)),
            headers=api.h(),
        )
        assert r.status_code == 201, r.text
    return gallery


def jpeg(path: Path) -> bytes:
    return path.read_bytes()


def files(**images: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {name: (f"{name}.jpg", data, "image/jpeg") for name, data in images.items()}


def error_code(response: Any) -> str:
    body = response.json()
    return str(body["error"]["code"] if "error" in body else body["code"])


def make_gallery(api: Api, name: str, kind: str = "enrollment", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "kind": kind, "purpose": "test access", "legal_basis": "test"} | extra
    r = api.client.post("/api/v1/galleries", json=body, headers=api.h())
    assert r.status_code == 201, r.text
    return dict(r.json())


# -- access control ----------------------------------------------------------------------------


def test_every_route_is_listed(api: Api) -> None:
    paths = api.client.get("/openapi.json", headers=api.h("reviewer")).json()["paths"]
    present = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    hidden = {("GET", "/api/v1/recognition/subjects/")}  # CompreFace SDK's trailing slash
    assert present | hidden == set(ROUTES)


def _concrete(path: str, gallery: str = "main") -> str:
    return (
        path.replace("{gallery}", gallery)
        .replace("{subject}", "nobody")
        .replace("{template_id}", "1")
        .replace("{image_id}", "1")
        .replace("{session}", "nobody")
        .replace("{camera}", "nobody")
        .replace("{alert_id}", "1")
        .replace("{station}", "nobody")
        .replace("/alerts/stream", "/alerts/stream?timeout_s=0.1")  # else it never ends
    )


def test_every_route_is_denied_without_a_valid_key(api: Api) -> None:
    for (method, path), permission in ROUTES.items():
        for headers in ({}, {"x-api-key": "yy_0000_not-a-key"}, {"Authorization": "Bearer x"}):
            r = api.client.request(method, _concrete(path), headers=headers)
            if permission is None:
                assert r.status_code == 200, (method, path)
            else:
                assert r.status_code == 401, (method, path, headers, r.text)
                assert error_code(r) == "unauthenticated"


def test_every_route_is_denied_to_roles_that_do_not_allow_it(api: Api) -> None:
    make_gallery(api, "scratch")  # allowed calls really run: one deletes this gallery
    for (method, path), permission in ROUTES.items():
        if permission is None:
            continue
        for role in ROLES:
            scoped = "/recognition" in path or "/verification" in path or "/detection" in path
            url = _concrete(path, "main" if scoped else "scratch")
            r = api.client.request(method, url, headers=api.h(role, scoped))
            if permission in PERMISSIONS[role]:  # type: ignore[index]
                assert r.status_code not in (401, 403), (method, path, role, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.text)
                assert error_code(r) == "forbidden"


def test_gallery_scope_is_enforced_and_denials_are_audited(api: Api, stills: Path) -> None:
    if api.client.get("/api/v1/galleries/main", headers=api.h()).status_code == 404:
        make_gallery(api, "main")
    make_gallery(api, "other")
    r = api.client.get("/api/v1/galleries/other", headers=api.h("operator", scoped=True))
    assert r.status_code == 403
    listed = api.client.get("/api/v1/galleries", headers=api.h("operator", scoped=True)).json()
    assert [g["name"] for g in listed] == ["main"]
    audit = api.client.get("/api/v1/audit?limit=1000", headers=api.h("auditor")).json()["items"]
    assert any(e["outcome"] == "denied" and e["gallery"] == "other" for e in audit)


def audit_pages(api: Api, token: str, limit: int) -> list[dict[str, Any]]:
    """Every audit entry `token` may read, page by page."""
    items: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        r = api.client.get(
            "/api/v1/audit", params={"after": after, "limit": limit}, headers={"x-api-key": token}
        )
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        after = r.json()["next_after"]
    return items


def test_a_scoped_auditor_reads_only_its_gallerys_entries_and_no_metrics(api: Api) -> None:
    for gallery in ("ledger", "hidden"):
        make_gallery(api, gallery)
        r = api.client.post(
            f"/api/v1/galleries/{gallery}/subjects", json={"external_id": "s1"}, headers=api.h()
        )
        assert r.status_code == 201, r.text
    old_auditor = api.key("auditor", "ledger")
    assert api.client.delete("/api/v1/galleries/ledger", headers=api.h()).status_code == 204
    make_gallery(api, "ledger")  # the same name, another gallery
    api.client.post(
        "/api/v1/galleries/ledger/subjects", json={"external_id": "s2"}, headers=api.h()
    )
    auditor = api.key("auditor", "ledger")

    everything = audit_pages(api, api.keys["auditor"], 1000)
    (deleted,) = [
        e["seq"]
        for e in everything
        if e["operation"] == "gallery.delete" and e["gallery"] == "ledger"
    ]
    expected = [e for e in everything if e["gallery"] == "ledger" and e["seq"] > deleted]
    assert [(e["operation"], e["details"].get("subject")) for e in expected] == [
        ("gallery.create", None),
        ("subject.create", "s2"),
    ]
    assert any(e["gallery"] == "hidden" for e in everything)
    seen = audit_pages(api, auditor, 1000)
    assert [e["seq"] for e in seen] == [e["seq"] for e in expected]
    assert [e["seq"] for e in audit_pages(api, auditor, 1)] == [e["seq"] for e in expected]
    # The old gallery is gone: nothing of the new one (or of any other) reaches its key.
    assert audit_pages(api, old_auditor, 1000) == []

    scoped_metrics = api.client.get("/metrics", headers={"Authorization": f"Bearer {auditor}"})
    assert scoped_metrics.status_code == 403 and error_code(scoped_metrics) == "forbidden"
    assert api.client.get("/metrics", headers=api.h("auditor")).status_code == 200
    assert api.client.get("/api/v1/audit/verify", headers={"x-api-key": auditor}).json()["ok"]


def test_a_gallery_created_again_under_its_name_is_outside_the_old_keys(
    api: Api, stills: Path
) -> None:
    make_gallery(api, "reborn")
    api.client.post("/api/v1/galleries/reborn/subjects", json={"external_id": "a"}, headers=api.h())
    old = {"x-api-key": api.key("admin", "reborn")}
    assert api.client.get("/api/v1/galleries/reborn", headers=old).status_code == 200
    assert api.client.get("/api/v1/recognition/subjects", headers=old).json() == {"subjects": ["a"]}
    assert api.client.delete("/api/v1/galleries/reborn", headers=api.h()).status_code == 204
    make_gallery(api, "reborn")
    api.client.post("/api/v1/galleries/reborn/subjects", json={"external_id": "b"}, headers=api.h())

    for method, path in (
        ("GET", "/api/v1/galleries/reborn"),
        ("GET", "/api/v1/galleries/reborn/subjects"),
        ("POST", "/api/v1/galleries/reborn/subjects"),
        ("DELETE", "/api/v1/galleries/reborn/subjects/b"),
        ("DELETE", "/api/v1/galleries/reborn"),
    ):
        r = api.client.request(method, path, json={"external_id": "c"}, headers=old)
        assert r.status_code == 403 and error_code(r) == "forbidden", (method, path, r.text)
    assert api.client.get("/api/v1/galleries", headers=old).json() == []
    r = api.client.get("/api/v1/recognition/subjects", headers=old)  # CompreFace: key's collection
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = api.client.post(
        "/api/v1/recognition/faces",
        params={"subject": "c"},
        files={"file": ("f.jpg", jpeg(stills / "obama.jpg"), "image/jpeg")},
        headers=old,
    )
    assert r.status_code == 404, r.text
    subjects = api.client.get("/api/v1/galleries/reborn/subjects", headers=api.h()).json()
    assert [s["external_id"] for s in subjects["items"]] == ["b"]  # nothing was done with `old`
    new = {"x-api-key": api.key("admin", "reborn")}
    assert api.client.get("/api/v1/recognition/subjects", headers=new).json() == {"subjects": ["b"]}


# -- the native flow ---------------------------------------------------------------------------


def test_enrol_verify_identify_detect(api: Api, stills: Path) -> None:
    make_gallery(api, "flow", threshold=None)
    empty = api.client.post(
        "/api/v1/galleries/flow/identify",
        files=files(probe=jpeg(stills / "obama2.jpg")),
        headers=api.h("operator"),
    )
    assert empty.status_code == 200 and empty.json()["faces"][0]["candidates"] == []
    for person, image in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
        consent = {"purpose": "test", "reference": "form 1"}
        r = api.client.post(
            "/api/v1/galleries/flow/subjects",
            json={"external_id": person, "display_name": person.title(), "consent": consent},
            headers=api.h("enroller"),
        )
        assert r.status_code == 201, r.text
        r = api.client.post(
            f"/api/v1/galleries/flow/subjects/{person}/faces",
            files=files(image=jpeg(stills / image)),
            headers=api.h("enroller"),
        )
        assert r.status_code == 201, r.text
        assert r.json()["created"] is True
    # The same image again is a no-op, sent as base64 JSON this time.
    again = base64.b64encode(jpeg(stills / "obama.jpg")).decode()
    r = api.client.post(
        "/api/v1/galleries/flow/subjects/obama/faces",
        json={"image": again},
        headers=api.h("enroller"),
    )
    assert r.status_code == 201 and r.json()["created"] is False

    probe = jpeg(stills / "obama2.jpg")
    r = api.client.post(
        "/api/v1/galleries/flow/subjects/obama/verify",
        files=files(probe=probe),
        headers=api.h("operator"),
    )
    assert r.status_code == 200, r.text
    # the default is the strict threshold (FMR 1e-4 for the worst group's look-alikes)
    assert r.json()["threshold_source"].startswith("strict: ")
    assert r.json()["match"] is (r.json()["score"] >= r.json()["threshold"])
    r = api.client.post(
        "/api/v1/galleries/flow/subjects/obama/verify",
        params={"threshold": LFW_TUNED},
        files=files(probe=probe),
        headers=api.h("operator"),
    )
    assert r.json()["match"] is True and r.json()["score"] > r.json()["threshold"] == LFW_TUNED
    r = api.client.post(
        "/api/v1/galleries/flow/subjects/biden/verify",
        files=files(probe=probe),
        headers=api.h("operator"),
    )
    assert r.json()["match"] is False

    r = api.client.post(
        "/api/v1/verify",
        params={"threshold": LFW_TUNED},
        json={
            "probe": base64.b64encode(probe).decode(),
            "reference": base64.b64encode(jpeg(stills / "obama.jpg")).decode(),
        },
        headers=api.h("operator"),
    )
    assert r.status_code == 200 and r.json()["match"] is True, r.text

    r = api.client.post(
        "/api/v1/galleries/flow/identify?k=2",
        files=files(probe=probe),
        headers=api.h("operator"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["review_required"] is True
    candidates = body["faces"][0]["candidates"]
    assert [c["external_id"] for c in candidates] == ["obama", "biden"]
    assert candidates[0]["score"] > candidates[1]["score"]

    r = api.client.post(
        "/api/v1/galleries/flow/identify?mode=threshold",
        files=files(probe=probe),
        headers=api.h("operator"),
    )
    assert r.json()["threshold"] == get_threshold("dlib_resnet_v1").score  # the strict default
    assert all(c["score"] >= r.json()["threshold"] for c in r.json()["faces"][0]["candidates"])
    r = api.client.post(
        "/api/v1/galleries/flow/identify",
        params={"mode": "threshold", "threshold": LFW_TUNED},
        files=files(probe=probe),
        headers=api.h("operator"),
    )
    assert [c["external_id"] for c in r.json()["faces"][0]["candidates"]] == ["obama"]

    r = api.client.post("/api/v1/detect", files=files(image=probe), headers=api.h("operator"))
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    assert len(r.json()["faces"][0]["landmarks"]) == 5

    page = api.client.get(
        "/api/v1/galleries/flow/subjects?limit=1", headers=api.h("reviewer")
    ).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["next_after"] is not None
    rest = api.client.get(
        f"/api/v1/galleries/flow/subjects?limit=1&after={page['next_after']}",
        headers=api.h("reviewer"),
    ).json()
    assert {page["items"][0]["external_id"], rest["items"][0]["external_id"]} == {"obama", "biden"}
    one = api.client.get("/api/v1/galleries/flow/subjects/obama", headers=api.h("reviewer"))
    assert one.json()["templates"] == 1 and one.json()["consents"][0]["reference"] == "form 1"


def test_watchlist_searches_need_a_purpose_and_are_audited_with_it(api: Api, stills: Path) -> None:
    make_gallery(api, "wanted", kind="watchlist")
    api.client.post(
        "/api/v1/galleries/wanted/subjects", json={"external_id": "w1"}, headers=api.h()
    )
    api.client.post(
        "/api/v1/galleries/wanted/subjects/w1/faces",
        files=files(image=jpeg(stills / "biden.jpg")),
        headers=api.h(),
    )
    probe = files(probe=jpeg(stills / "obama2.jpg"))
    r = api.client.post("/api/v1/galleries/wanted/identify", files=probe, headers=api.h("operator"))
    assert r.status_code == 422 and error_code(r) == "purpose_required"
    r = api.client.post(
        "/api/v1/galleries/wanted/identify?purpose=robbery%20inquiry&case_reference=CASE-42",
        files=probe,
        headers=api.h("operator"),
    )
    assert r.status_code == 200, r.text
    entries = api.client.get("/api/v1/audit?limit=1000", headers=api.h("auditor")).json()["items"]
    search = [e for e in entries if e["operation"] == "identify" and e["gallery"] == "wanted"]
    assert search[-1]["purpose"] == "robbery inquiry"
    assert search[-1]["case_reference"] == "CASE-42"
    assert search[-1]["details"]["candidates"][0][0][0] == "w1"
    refused = [e for e in entries if e["outcome"] == "refused" and e["gallery"] == "wanted"]
    assert [e["operation"] for e in refused] == ["identify"]
    # A 1:1 check against a watchlist subject is a search of the watchlist too.
    verify = "/api/v1/galleries/wanted/subjects/w1/verify"
    r = api.client.post(verify, files=probe, headers=api.h("operator"))
    assert r.status_code == 422 and error_code(r) == "purpose_required"
    r = api.client.post(
        f"{verify}?purpose=robbery%20inquiry&case_reference=CASE-42",
        files=probe,
        headers=api.h("operator"),
    )
    assert r.status_code == 200, r.text
    entries = api.client.get("/api/v1/audit?limit=1000", headers=api.h("auditor")).json()["items"]
    refused = [e for e in entries if e["outcome"] == "refused" and e["gallery"] == "wanted"]
    assert [e["operation"] for e in refused] == ["identify", "verify.subject"]


def test_audit_holds_no_image_or_template_and_its_chain_verifies(
    api: Api, people: str, stills: Path
) -> None:
    probe = jpeg(stills / "obama2.jpg")
    h = api.h("operator")
    api.client.post(f"/api/v1/galleries/{people}/identify", files=files(probe=probe), headers=h)
    api.client.post(
        f"/api/v1/galleries/{people}/subjects/obama/verify", files=files(probe=probe), headers=h
    )
    api.client.post("/api/v1/verify", files=files(probe=probe, reference=probe), headers=h)
    entries = api.client.get("/api/v1/audit?limit=1000", headers=api.h("auditor")).json()["items"]
    assert len(entries) >= 8
    ops = {e["operation"] for e in entries}
    assert {"gallery.create", "subject.create", "face.enroll", "verify", "identify"} <= ops
    raw = json.dumps(entries)
    assert "/9j/" not in raw  # no base64 JPEG

    def floats(value: Any) -> int:
        if isinstance(value, list):
            return max([sum(isinstance(v, float) for v in value), *(floats(v) for v in value)])
        if isinstance(value, dict):
            return max([0, *(floats(v) for v in value.values())])
        return 0

    assert max(floats(e["details"]) for e in entries) < 16  # nothing template-sized
    r = api.client.get("/api/v1/audit/verify", headers=api.h("auditor"))
    assert r.json()["ok"] is True and r.json()["problems"] == []


def test_probe_images_and_templates_are_never_stored(api: Api, people: str, stills: Path) -> None:
    db = api.client.app.state.yingyan.db  # type: ignore[attr-defined]
    with db.session() as s:
        before = s.scalar(text("SELECT count(*) FROM templates"))
        images = s.scalar(text("SELECT count(*) FROM templates WHERE image IS NOT NULL"))
    files_before = sorted(p for p in api.settings.data_dir.rglob("*") if p.is_file())
    probe = files(probe=jpeg(stills / "obama-720p.jpg"))
    api.client.post("/api/v1/galleries/people/identify", files=probe, headers=api.h("operator"))
    api.client.post("/api/v1/detect", files={"image": probe["probe"]}, headers=api.h("operator"))
    with db.session() as s:
        assert s.scalar(text("SELECT count(*) FROM templates")) == before
    assert images == 0  # no gallery here keeps enrolment images
    files_after = sorted(p for p in api.settings.data_dir.rglob("*") if p.is_file())
    assert files_after == files_before


def test_erased_subject_can_no_longer_be_found(api: Api, stills: Path) -> None:
    obama_and_biden(api, "erasure", stills)
    probe = files(probe=jpeg(stills / "obama2.jpg"))
    before = api.client.post(
        "/api/v1/galleries/erasure/identify?k=5", files=probe, headers=api.h("operator")
    ).json()
    top = before["faces"][0]["candidates"][0]
    assert top["external_id"] == "obama"
    obama_template = top["template_id"]
    state = api.client.app.state.yingyan  # type: ignore[attr-defined]
    index_dir, cipher = state.galleries.index_dir, state.galleries.cipher
    obama_vector = stored_gallery(state.db, index_dir, "erasure", cipher).vector(obama_template)
    assert obama_vector is not None  # the file holds it: the check below can fail

    r = api.client.delete("/api/v1/galleries/erasure/subjects/obama", headers=api.h("enroller"))
    assert r.status_code == 200 and r.json()["templates_erased"] == 1
    stored = stored_gallery(state.db, index_dir, "erasure", cipher)  # the file, not identify
    assert obama_template not in stored.ids and not stored.holds_bytes(obama_vector)

    after = api.client.post(
        "/api/v1/galleries/erasure/identify?k=5", files=probe, headers=api.h("operator")
    ).json()
    assert [c["external_id"] for c in after["faces"][0]["candidates"]] == ["biden"]
    db = api.client.app.state.yingyan.db  # type: ignore[attr-defined]
    with db.session() as s:
        assert s.get(TemplateRow, obama_template) is None
    with state.db.session() as s:
        from yingyan.store import get_gallery

        g = get_gallery(s, name="erasure")
        s.expunge(g)
    assert obama_template not in set(state.galleries.index(g).ids().tolist())
    r = api.client.get("/api/v1/galleries/erasure/subjects/obama", headers=api.h())
    assert r.status_code == 404


# -- bad input ---------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_bad_input_is_a_clear_4xx_never_a_500(api: Api, people: str, stills: Path) -> None:
    detect = "/api/v1/detect"
    h = api.h("operator")
    good = jpeg(stills / "obama.jpg")
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (
            "not an image",
            {"files": files(image=b"hello, I am text" * 10)},
            400,
            "invalid_image",
        ),
        ("truncated", {"files": files(image=good[: len(good) // 3])}, 400, "invalid_image"),
        ("bomb", {"files": files(image=_png(12_000, 12_000))}, 413, "image_too_large"),
        ("oversized", {"files": files(image=b"\xff" * 2_100_000)}, 413, "payload_too_large"),
        (
            "wrong type",
            {"content": good, "headers": {"content-type": "image/jpeg"}},
            415,
            "unsupported_media_type",
        ),
        (
            "bad json",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
        ),
        ("bad base64", {"json": {"image": "%%%not base64%%%"}}, 400, "malformed_base64"),
        ("missing part", {"files": files(other=good)}, 400, "missing_image"),
        ("no face", {"files": files(image=_png(300, 300))}, 200, ""),
    ]
    for name, kwargs, status, code in cases:
        headers = h | kwargs.pop("headers", {})
        r = api.client.post(detect, headers=headers, **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert "Traceback" not in r.text
        if code:
            assert error_code(r) == code, (name, r.text)
    assert (
        api.client.post(detect, files=files(image=_png(300, 300)), headers=h).json()["faces"] == []
    )

    verify = "/api/v1/verify"
    r = api.client.post(verify, files=files(probe=_png(300, 300), reference=good), headers=h)
    assert r.status_code == 422 and error_code(r) == "no_face"
    two = jpeg(stills / "two_people.jpg")
    r = api.client.post(verify, files=files(probe=two, reference=good), headers=h)
    assert r.status_code == 422 and error_code(r) == "too_many_faces"  # max_faces=1 here
    for path in (
        "/api/v1/galleries/nowhere",
        "/api/v1/galleries/people/subjects/nobody",
        "/api/v1/nothing-here",
    ):
        r = api.client.get(path, headers=api.h())
        assert r.status_code == 404 and error_code(r) == "not_found"
    r = api.client.delete("/api/v1/galleries/people/faces/999999", headers=api.h())
    assert r.status_code == 404
    r = api.client.post("/api/v1/galleries", json={"name": "x"}, headers=api.h())
    assert r.status_code == 422 and error_code(r) == "validation_error"
    make_gallery(api, "twice")
    r = api.client.post(
        "/api/v1/galleries",
        json={"name": "twice", "purpose": "p", "legal_basis": "b"},
        headers=api.h(),
    )
    assert r.status_code == 409 and error_code(r) == "conflict"


def test_metrics_and_readiness(api: Api, stills: Path) -> None:
    image = files(image=jpeg(stills / "obama.jpg"))
    assert api.client.post("/api/v1/detect", files=image, headers=api.h("operator")).is_success
    ready = api.client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model"].startswith("dlib_resnet_v1@")
    r = api.client.get("/metrics", headers={"Authorization": f"Bearer {api.keys['auditor']}"})
    assert r.status_code == 200
    assert 'yingyan_http_requests_total{method="POST",route="/api/v1/detect"' in r.text
    assert "yingyan_audit_entries_total" in r.text
    assert r.headers["x-request-id"]


def test_vectors_in_the_database_are_not_plain_floats(api: Api, stills: Path) -> None:
    make_gallery(api, "sealed")
    api.client.post("/api/v1/galleries/sealed/subjects", json={"external_id": "a"}, headers=api.h())
    r = api.client.post(
        "/api/v1/galleries/sealed/subjects/a/faces",
        files=files(image=jpeg(stills / "biden.jpg")),
        headers=api.h(),
    )
    assert r.status_code == 201
    db = api.client.app.state.yingyan.db  # type: ignore[attr-defined]
    with db.session() as s:
        blobs = s.scalars(select(TemplateRow.embedding)).all()
    assert blobs
    for blob in blobs:
        # The service's templates are sealed (format magic, key id, nonce, ciphertext + tag),
        # never the 512 bytes of a plain 128-d float32 vector.
        assert blob.startswith(MAGIC) and len(blob) > 128 * 4


def test_initial_admin_key_file_is_private(api: Api) -> None:
    mode = (api.settings.data_dir / INITIAL_KEY_FILE).stat().st_mode & 0o777
    assert mode == 0o600
    with open_database(None, api.settings.data_dir) as db, db.session() as s:
        stored = s.scalar(text("SELECT group_concat(secret_sha256) FROM api_keys"))
    assert api.admin not in str(stored)


def test_a_gallery_calibrated_over_the_api(
    api: Api, people: str, stills: Path, utkface_root: Path
) -> None:
    from yingyan import Engine, load_image
    from yingyan.calibration.fair_score import fit_cohort_profile, profile_json

    engine = Engine()
    reference = []
    for path in sorted(utkface_root.iterdir())[:60]:
        reference += [t.vector for t in engine.templates(load_image(path))[:1]]
    profile = fit_cohort_profile(
        np.stack(reference), model=str(engine.model_id), name="utk60", top_k=10
    )
    probe = files(probe=jpeg(stills / "obama2.jpg"))
    url = "/api/v1/galleries/people/identify?k=2"
    raw = api.client.post(url, files=probe, headers=api.h("operator")).json()
    body = json.loads(profile_json(profile))
    r = api.client.put("/api/v1/galleries/people/calibration", json=body, headers=api.h())
    assert r.status_code == 200 and r.json()["calibration"] == profile.version, r.text
    calibrated = api.client.post(url, files=probe, headers=api.h("operator")).json()
    before = raw["faces"][0]["candidates"]
    after = calibrated["faces"][0]["candidates"]
    assert after[0]["external_id"] == "obama"
    assert [c["score"] for c in after] != [c["score"] for c in before]
    r = api.client.post(
        "/api/v1/galleries/people/subjects/obama/verify", files=probe, headers=api.h("operator")
    )
    assert r.json()["threshold"] == pytest.approx(profile.global_threshold)
    assert r.json()["threshold_source"].startswith("gallery: calibration profile utk60")
    edited = body | {"top_k": 3}
    r = api.client.put("/api/v1/galleries/people/calibration", json=edited, headers=api.h())
    assert r.status_code == 400 and error_code(r) == "calibration_error"
    r = api.client.delete("/api/v1/galleries/people/calibration", headers=api.h())
    assert r.status_code == 200 and r.json()["calibration"] is None
    again = api.client.post(url, files=probe, headers=api.h("operator")).json()
    assert again["faces"][0]["candidates"] == before
