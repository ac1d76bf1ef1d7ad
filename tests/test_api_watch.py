"""The watch REST routes end to end through the ASGI app (SQLite): sessions and cameras (roles,
watchlists only, credentials never shown, every act audited), alerts raised by the real
matching library from a real photo (review by two different reviewer keys, one reject
rejects, the crop only for reviewers and its view audited), the alert event stream (live,
resumed with Last-Event-ID; on a real server: it ends when the client leaves and when the
server stops), signed webhooks against a real local HTTP receiver that a restart does not
repeat, and the camera gauges in /metrics."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from yingyan import Engine, load_image
from yingyan.access.keys import create_key
from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.audit.log import entries
from yingyan.settings import Settings
from yingyan.store import Database, open_database
from yingyan.store.tables import SubjectRow
from yingyan.types import RGBImage
from yingyan.watch.alerts import AlertCandidate, record_match_outcome
from yingyan.watch.delivery import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from yingyan.watch.matching import WatchMatcher
from yingyan.watch.sessions import add_camera, get_session, report_camera_status

from ._server import running_server

pytestmark = pytest.mark.shared

LATER = (datetime.now(UTC) + timedelta(days=2)).isoformat()
SESSIONS = "/api/v1/watch/sessions"


@dataclass(frozen=True)
class Sighting:
    """The fields of the pipeline's TrackQuery that an alert reads."""

    track_id: int
    first_pts: float
    last_pts: float
    best_crop: RGBImage
    best_quality: float
    reason: str = "early"


class Api:
    def __init__(self, client: TestClient, data: Path) -> None:
        self.client = client
        self.keys = {"admin": (data / INITIAL_KEY_FILE).read_text().strip()}
        self.gallery("wanted", "watchlist")
        for name, role, scope in (
            ("ada", "reviewer", None),
            ("grace", "reviewer", None),
            ("op", "operator", None),
            ("aud", "auditor", None),
            ("enr", "enroller", None),
            ("scoped", "admin", ["wanted"]),
        ):
            with self.db.session() as s:
                self.keys[name] = create_key(s, name=name, role=role, galleries=scope).token

    @property
    def state(self) -> Any:
        return self.client.app.state.yingyan  # type: ignore[attr-defined]

    @property
    def db(self) -> Database:
        return self.state.db  # type: ignore[no-any-return]

    def h(self, who: str = "admin") -> dict[str, str]:
        return {"x-api-key": self.keys[who]}

    def gallery(self, name: str, kind: str) -> None:
        body = {"name": name, "kind": kind, "purpose": "test", "legal_basis": "test"}
        r = self.client.post("/api/v1/galleries", json=body, headers=self.h())
        assert r.status_code == 201, r.text

    def session(self, name: str, **extra: Any) -> dict[str, Any]:
        body = {
            "name": name,
            "purpose": "find a suspect",
            "case_ref": "CASE-11",
            "legal_basis": "warrant 2026/17",
            "expires_at": LATER,
            "watchlists": ["wanted"],
        } | extra
        r = self.client.post(SESSIONS, json=body, headers=self.h())
        assert r.status_code == 201, r.text
        return dict(r.json())

    def label(self, who: str) -> str:
        prefix = self.keys[who].split("_")[1]
        return f"key:{prefix}({'initial admin' if who == 'admin' else who})"


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, stills: Path) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("watch-api")
    with TestClient(
        create_app(Settings(data_dir=data, workers=0)), raise_server_exceptions=False
    ) as c:
        a = Api(c, data)
        a.gallery("staff", "enrollment")
        r = c.post(
            "/api/v1/galleries/wanted/subjects", json={"external_id": "obama"}, headers=a.h()
        )
        assert r.status_code == 201, r.text
        r = c.post(
            "/api/v1/galleries/wanted/subjects/obama/faces",
            files={"image": ("o.jpg", (stills / "obama.jpg").read_bytes(), "image/jpeg")},
            headers=a.h(),
        )
        assert r.status_code == 201, r.text
        yield a


@pytest.fixture(scope="module")
def probe(engine: Engine, stills: Path) -> tuple[Any, RGBImage]:
    """Obama's template and face crop from another photo of him (what a camera would see)."""
    image = load_image(stills / "obama2.jpg")
    (face,) = engine.faces(image)
    b = face.detection.box
    crop = np.ascontiguousarray(image[int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)])
    return face.template, crop


def raise_alert(
    api: Api, session: str, camera: str, probe: tuple[Any, RGBImage], track: int
) -> int:
    """What a camera worker does with a track: search the session's watchlists (the real
    matcher, the real gallery index) and record the match as an alert."""
    template, crop = probe
    match = WatchMatcher(api.state.galleries, session).search(template)
    assert match is not None and match.candidates[0].external_id == "obama"
    out = record_match_outcome(
        api.db,
        get_session(api.db, session).id,
        camera,
        Sighting(track, 1.0, 2.5, crop, 0.7),
        match.candidates,
        match.threshold,
        audit=f"worker:{session}/{camera}",
        cipher=api.state.galleries.cipher,
    )
    assert out.created
    return out.alert_id


def operations(db: Database) -> list[tuple[str, str]]:
    with db.read() as s:
        return [(e.operation, e.actor) for e in entries(s, limit=1000)]


# -- sessions and cameras --------------------------------------------------------------------------


def test_sessions_are_started_changed_and_stopped_by_writers_only(api: Api) -> None:
    c = api.client
    made = api.session("gate")
    assert made["open"] and made["watchlists"] == ["wanted"] and made["threshold"] is None
    auto = made["current_threshold"]
    assert auto["watchlist_size"] == 1 and auto["source"].startswith("FPIR 0.001 over 1 subject")
    assert made["created_by"] == api.label("admin")
    for who in ("op", "ada", "aud", "enr"):  # watch:read, not watch:write (enroller: neither)
        r = c.post(SESSIONS, json={}, headers=api.h(who))
        assert r.status_code == 403 and code(r) == "forbidden", who
        r = c.get(f"{SESSIONS}/gate", headers=api.h(who))
        assert r.status_code == (403 if who == "enr" else 200), who
    r = c.get(SESSIONS, headers=api.h("scoped"))  # a session spans watchlists: unscoped keys only
    assert r.status_code == 403 and code(r) == "forbidden"

    bad = {
        "an enrolment gallery": ({"watchlists": ["staff"]}, 422, "not_a_watchlist"),
        "no such gallery": ({"watchlists": ["nowhere"]}, 404, "not_found"),
        "in the past": ({"expires_at": "2020-01-01T00:00:00Z"}, 400, "invalid_value"),
        "no time zone": ({"expires_at": "2030-01-01T00:00:00"}, 422, "validation_error"),
        "fpir out of range": ({"target_fpir": 0.5}, 422, "validation_error"),
        "taken": ({"name": "gate"}, 409, "conflict"),
    }
    for why, (extra, status, err) in bad.items():
        body = {
            "name": "other",
            "purpose": "p",
            "case_ref": "c",
            "legal_basis": "b",
            "expires_at": LATER,
            "watchlists": ["wanted"],
        } | extra
        r = c.post(SESSIONS, json=body, headers=api.h())
        assert (r.status_code, code(r)) == (status, err), (why, r.text)
    r = c.post(SESSIONS, json={"name": "x", "purpose": "p"}, headers=api.h())
    assert r.status_code == 422 and code(r) == "validation_error"

    r = c.patch(
        f"{SESSIONS}/gate", json={"case_ref": "CASE-12", "threshold": 0.61}, headers=api.h()
    )
    assert r.status_code == 200, r.text
    assert r.json()["case_ref"] == "CASE-12"
    assert r.json()["current_threshold"]["source"] == "explicit threshold of the session"
    r = c.patch(f"{SESSIONS}/gate", json={"threshold": None}, headers=api.h())
    assert r.json()["current_threshold"] == auto  # back to the FPIR threshold
    assert c.patch(f"{SESSIONS}/gate", json={}, headers=api.h()).status_code == 400
    listed = c.get(SESSIONS, headers=api.h("aud")).json()
    assert [s["name"] for s in listed] == ["gate"]

    r = c.post(f"{SESSIONS}/gate/stop", json={"reason": "found"}, headers=api.h())
    assert r.status_code == 200 and r.json()["status"] == "stopped" and not r.json()["open"]
    for method, url, body in (
        ("POST", f"{SESSIONS}/gate/stop", None),
        ("PATCH", f"{SESSIONS}/gate", {"case_ref": "CASE-13"}),
        ("POST", f"{SESSIONS}/gate/cameras", {"name": "late", "url": "rtsp://cam/9"}),
    ):
        r = c.request(method, url, json=body, headers=api.h())
        assert r.status_code == 409 and code(r) == "watch_session_closed", (method, url)
    assert c.get(SESSIONS, params={"include_stopped": False}, headers=api.h()).json() == []
    r = c.get(f"{SESSIONS}/nobody", headers=api.h())
    assert r.status_code == 404 and code(r) == "not_found"

    log = [(op, actor) for op, actor in operations(api.db) if op.startswith("watch.session")]
    assert log == [
        ("watch.session.start", api.label("admin")),
        ("watch.session.change", api.label("admin")),
        ("watch.session.change", api.label("admin")),
        ("watch.session.stop", api.label("admin")),
    ]


def test_cameras_are_added_listed_with_their_status_and_removed(api: Api) -> None:
    c = api.client
    api.session("yard")
    url = "rtsp://viewer:s3cret-pass@10.0.0.7:554/stream1"
    r = c.post(f"{SESSIONS}/yard/cameras", json={"name": "north", "url": url}, headers=api.h())
    assert r.status_code == 201, r.text
    assert r.json()["url"] == "rtsp://viewer:***@10.0.0.7:554/stream1"
    r = c.post(f"{SESSIONS}/yard/cameras", json={"name": "north", "url": url}, headers=api.h())
    assert r.status_code == 409
    r = c.post(
        f"{SESSIONS}/yard/cameras",
        json={"name": "south", "url": "rtsp://cam/2", "settings": {"detect_every": 3}},
        headers=api.h(),
    )
    assert r.status_code == 201 and r.json()["settings"] == {"detect_every": 3}
    r = c.post(f"{SESSIONS}/yard/cameras", json={"name": "x", "url": ""}, headers=api.h())
    assert r.status_code == 422
    r = c.post(
        f"{SESSIONS}/yard/cameras", json={"name": "x", "url": "rtsp://c"}, headers=api.h("op")
    )
    assert r.status_code == 403

    (north, _) = sorted((cam for cam in _cameras(api, "yard")), key=lambda cam: cam["name"])
    assert north["stats"] == {} and north["status_at"] is None and north["worker"] is None
    camera_id = _camera_id(api, "yard", "north")
    stats = {"state": "connected", "connected": True, "input_fps": 25.0, "processed_fps": 12.5,
             "lag_s": 0.04, "dropped": 3, "reconnects": 1,
             "last_error": f"timeout reading {url}"}  # fmt: skip
    report_camera_status(api.db, camera_id, stats)
    shown = {cam["name"]: cam for cam in _cameras(api, "yard", "op")}
    assert shown["north"]["stats"]["input_fps"] == 25.0 and shown["north"]["status_at"]
    assert shown["south"]["stats"] == {}
    r = c.patch(f"{SESSIONS}/yard/cameras/south", json={"enabled": False}, headers=api.h())
    assert r.status_code == 200 and r.json()["enabled"] is False

    # Camera gauges, read from the heartbeat in the database at scrape time.
    metrics = c.get("/metrics", headers=api.h("aud")).text
    labels = 'camera="north",session="yard"'
    for line in (
        f"yingyan_camera_connected{{{labels}}} 1.0",
        f"yingyan_camera_input_fps{{{labels}}} 25.0",
        f"yingyan_camera_processed_fps{{{labels}}} 12.5",
        f"yingyan_camera_lag_seconds{{{labels}}} 0.04",
        f"yingyan_camera_dropped_frames{{{labels}}} 3.0",
        f"yingyan_camera_reconnects{{{labels}}} 1.0",
    ):
        assert line in metrics, line
    assert f"yingyan_camera_heartbeat_age_seconds{{{labels}}}" in metrics

    r = c.delete(f"{SESSIONS}/yard/cameras/north", headers=api.h())
    assert r.status_code == 204
    r = c.delete(f"{SESSIONS}/yard/cameras/north", headers=api.h())
    assert r.status_code == 404 and code(r) == "not_found"
    assert [cam["name"] for cam in _cameras(api, "yard")] == ["south"]
    after = c.get("/metrics", headers=api.h("aud")).text
    assert f"yingyan_camera_connected{{{labels}}}" not in after
    everything = json.dumps([_cameras(api, "yard"), metrics]) + str(_audit_details(api))
    assert "s3cret" not in everything  # the password is never shown, logged or audited
    with api.db.read() as s:
        ops = [
            e.operation
            for e in entries(s, limit=1000)
            if e.operation.startswith("watch.camera") and e.details.get("session") == "yard"
        ]
    assert ops == [
        "watch.camera.add",
        "watch.camera.add",
        "watch.camera.change",
        "watch.camera.remove",
    ]


def test_the_schema_links_lead_from_a_new_session_to_what_acts_on_it(api: Api) -> None:
    """What a client (and schemathesis's stateful pass) does with the OpenAPI links."""
    c = api.client
    paths = c.get("/openapi.json", headers=api.h()).json()["paths"]
    operations = {
        op["operationId"]: (m.upper(), p) for p, ops in paths.items() for m, op in ops.items()
    }
    bodies = {
        ("PATCH", f"{SESSIONS}/{{session}}"): {"case_ref": "CASE-99"},
        ("POST", f"{SESSIONS}/{{session}}/cameras"): {"name": "linked-cam", "url": "rtsp://cam/l"},
        ("PATCH", f"{SESSIONS}/{{session}}/cameras/{{camera}}"): {"enabled": False},
    }

    def follow(
        links: dict[str, Any], response: dict[str, Any], request: dict[str, str]
    ) -> list[str]:
        done = []
        order = sorted(links.items(), key=lambda item: item[0] in ("StopSession", "RemoveCamera"))
        for name, link in order:
            method, template = operations[link["operationId"]]
            url = template
            for param, expression in link["parameters"].items():
                source, _, field = expression.partition("#/")
                value = response[field] if source == "$response.body" else request[param]
                url = url.replace(f"{{{param}}}", value)
            r = c.request(method, url, json=bodies.get((method, template)), headers=api.h())
            assert r.status_code < 300, (name, method, url, r.text)
            done.append(name)
        return done

    made = api.session("linked")
    camera = c.post(f"{SESSIONS}/linked/cameras", json={"name": "first", "url": "rtsp://c/1"},
                    headers=api.h())  # fmt: skip
    assert camera.status_code == 201
    camera_links = paths[f"{SESSIONS}/{{session}}/cameras"]["post"]["responses"]["201"]["links"]
    followed = follow(camera_links, camera.json(), {"session": "linked"})
    assert followed == ["ChangeCamera", "RemoveCamera"]
    session_links = paths[SESSIONS]["post"]["responses"]["201"]["links"]
    followed = follow(session_links, made, {})
    assert set(followed) == {
        "GetSession",
        "ChangeSession",
        "StopSession",
        "AddCamera",
        "ListCameras",
    }
    after = c.get(f"{SESSIONS}/linked", headers=api.h()).json()
    assert after["case_ref"] == "CASE-99" and after["status"] == "stopped"
    assert [cam["name"] for cam in _cameras(api, "linked")] == ["linked-cam"]


def _cameras(api: Api, session: str, who: str = "admin") -> list[dict[str, Any]]:
    r = api.client.get(f"{SESSIONS}/{session}/cameras", headers=api.h(who))
    assert r.status_code == 200, r.text
    return list(r.json())


def _camera_id(api: Api, session: str, camera: str) -> int:
    from yingyan.watch.sessions import list_cameras

    (found,) = [cam.id for cam in list_cameras(api.db, session) if cam.name == camera]
    return found


def _audit_details(api: Api) -> list[Any]:
    with api.db.read() as s:
        return [e.details for e in entries(s, limit=1000)]


# -- alerts and review -----------------------------------------------------------------------------


def test_alerts_are_reviewed_by_two_different_keys_and_the_crop_only_by_reviewers(
    api: Api, probe: tuple[Any, RGBImage]
) -> None:
    c = api.client
    api.session("hall", threshold=0.6)  # dlib's one-photo score stays under the auto threshold
    add_camera(api.db, "hall", name="door", url="rtsp://cam/door", actor="test")
    first = raise_alert(api, "hall", "door", probe, track=1)

    listed = c.get("/api/v1/alerts", params={"session": "hall"}, headers=api.h("op")).json()
    assert first in [a["id"] for a in listed]
    alert = c.get(f"/api/v1/alerts/{first}", headers=api.h("aud")).json()
    assert alert["state"] == "pending" and alert["review_required"] is True
    assert alert["candidates"][0]["external_id"] == "obama"
    assert alert["candidates"][0]["score"] >= alert["threshold"]["score"] == 0.6
    assert alert["threshold"]["source"] == "explicit threshold of the session"
    assert alert["has_crop"] and alert["camera"] == "door"
    for params, expected in (
        ({"state": "pending", "camera": "door"}, True),
        ({"state": "confirmed"}, False),
        ({"camera": "elsewhere"}, False),
        ({"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, False),
        ({"until": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}, False),
    ):
        found = c.get("/api/v1/alerts", params=params, headers=api.h()).json()
        assert (first in [a["id"] for a in found]) is expected, params
    r = c.get("/api/v1/alerts", params={"since": "2026-01-01T00:00:00"}, headers=api.h())
    assert r.status_code == 422  # a time without its offset is ambiguous
    for number in ("-449", "1700000000"):  # not read as Unix seconds: the schema says ISO 8601
        r = c.get("/api/v1/alerts", params={"since": number}, headers=api.h())
        assert r.status_code == 422, (number, r.text)
    r = c.get("/api/v1/alerts/999999", headers=api.h())
    assert r.status_code == 404 and code(r) == "not_found"

    crop_url = f"/api/v1/alerts/{first}/crop"
    for who in ("op", "aud"):  # they see the alert's ids and scores, never the face
        r = c.get(crop_url, headers=api.h(who))
        assert r.status_code == 403 and code(r) == "forbidden", who
    r = c.get(crop_url, headers=api.h("ada"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8" and r.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(r.content)).size == probe[1].shape[1::-1]
    assert ("watch.alert.view", api.label("ada")) in operations(api.db)

    reviews = f"/api/v1/alerts/{first}/reviews"
    r = c.post(reviews, json={"verdict": "confirm", "note": "x"}, headers=api.h("op"))
    assert r.status_code == 403
    r = c.post(reviews, json={"verdict": "maybe", "note": "x"}, headers=api.h("ada"))
    assert r.status_code == 422
    r = c.post(reviews, json={"verdict": "confirm", "note": ""}, headers=api.h("ada"))
    assert r.status_code == 422
    r = c.post(reviews, json={"verdict": "confirm", "note": "same ears"}, headers=api.h("ada"))
    assert r.status_code == 201 and r.json()["state"] == "pending"  # one key is not enough
    r = c.post(reviews, json={"verdict": "confirm", "note": "sure"}, headers=api.h("ada"))
    assert r.status_code == 409 and code(r) == "already_reviewed"
    r = c.post(
        reviews, json={"verdict": "confirm", "note": "the warrant photo"}, headers=api.h("grace")
    )
    assert r.status_code == 201 and r.json()["state"] == "confirmed"
    assert [(x["reviewer"], x["verdict"]) for x in r.json()["reviews"]] == [
        (api.label("ada"), "confirm"),
        (api.label("grace"), "confirm"),
    ]
    r = c.post(reviews, json={"verdict": "reject", "note": "late"}, headers=api.h())
    assert r.status_code == 409 and code(r) == "alert_closed"

    other = raise_alert(api, "hall", "side", probe, track=7)  # another camera: its own alert
    r = c.post(f"/api/v1/alerts/{other}/reviews", json={"verdict": "confirm", "note": "him"},
               headers=api.h("ada"))  # fmt: skip
    assert r.json()["state"] == "pending"
    r = c.post(f"/api/v1/alerts/{other}/reviews", json={"verdict": "reject", "note": "not him"},
               headers=api.h("grace"))  # fmt: skip
    assert r.status_code == 201 and r.json()["state"] == "rejected"  # one doubt is enough
    states = {a["id"]: a["state"] for a in c.get("/api/v1/alerts", headers=api.h()).json()}
    assert states[first] == "confirmed" and states[other] == "rejected"
    review_log = [a for op, a in operations(api.db) if op == "watch.alert.review"]
    assert review_log == [api.label(w) for w in ("ada", "grace", "ada", "grace")]


# -- the event stream ------------------------------------------------------------------------------


def parse_sse(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "data" in fields:
            out.append(
                {"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])}
            )
    return out


def test_the_stream_sends_alerts_as_they_come_and_resumes_after_last_event_id(
    api: Api, probe: tuple[Any, RGBImage]
) -> None:
    c = api.client
    api.session("stream", threshold=0.6)
    stream = "/api/v1/alerts/stream"
    # Live: connected before the alert is raised, without Last-Event-ID (starts now).
    raised: list[int] = []
    timer = threading.Timer(1.0, lambda: raised.append(raise_alert(api, "stream", "a", probe, 1)))
    timer.start()
    started = time.monotonic()
    with c.stream("GET", stream, params={"timeout_s": 4}, headers=api.h("op")) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    timer.join()
    assert time.monotonic() - started < 8
    live = parse_sse(text)
    assert text.startswith("retry: 3000")
    assert [(e["event"], e["type"], e["alert"]) for e in live] == [
        ("alert", "alert.raised", raised[0])
    ]
    event = live[0]
    assert event["session"] == "stream" and event["camera"] == "a" and event["state"] == "pending"
    assert event["first_pts"] == 1.0 and event["last_pts"] == 2.5
    assert event["first_seen_at"] and event["last_seen_at"]
    assert set(event["candidates"][0]) == {"gallery_id", "subject_id", "score"}
    assert event["threshold"]["score"] == 0.6 and "crop" not in json.dumps(event)

    # Two more events while nobody listens; a client resuming after the first gets exactly them.
    later = raise_alert(api, "stream", "b", probe, 2)
    r = c.post(f"/api/v1/alerts/{later}/reviews", json={"verdict": "reject", "note": "no"},
               headers=api.h("ada"))  # fmt: skip
    assert r.status_code == 201
    headers = api.h("aud") | {"Last-Event-ID": str(event["id"])}
    r = c.get(stream, params={"timeout_s": 1.5}, headers=headers)
    resumed = parse_sse(r.text)
    assert [(e["type"], e["alert"]) for e in resumed] == [
        ("alert.raised", later),
        ("alert.reviewed", later),
    ]
    assert resumed[1]["state"] == "rejected" and resumed[1]["verdict"] == "reject"
    assert resumed[1]["reviewer"] == api.label("ada") and resumed[0]["id"] > event["id"]
    # `after` replays from an id (a new client's catch-up); Last-Event-ID wins over it.
    r = c.get(stream, params={"timeout_s": 1, "after": event["id"] - 1}, headers=api.h())
    assert [e["id"] for e in parse_sse(r.text)] == [event["id"], *(e["id"] for e in resumed)]
    assert c.get(stream, params={"timeout_s": 0.2}, headers=api.h("enr")).status_code == 403


def test_on_a_real_server_the_stream_ends_when_the_client_leaves_and_when_it_stops(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {"YINGYAN_LOG_JSON": "true"}
    with running_server(data, workers=0, env=env) as server:
        h = server.headers
        body = {"name": "wanted", "kind": "watchlist", "purpose": "p", "legal_basis": "b"}
        assert httpx.post(f"{server.url}/api/v1/galleries", json=body, headers=h).status_code == 201
        r = httpx.post(f"{server.url}/api/v1/galleries/wanted/subjects", json={"external_id": "w1"},
                       headers=h)  # fmt: skip
        assert r.status_code == 201
        session = {"name": "s", "purpose": "p", "case_ref": "c", "legal_basis": "b",
                   "expires_at": LATER, "watchlists": ["wanted"], "threshold": 0.5}  # fmt: skip
        assert httpx.post(f"{server.url}{SESSIONS}", json=session, headers=h).status_code == 201
        # Another process (here: the test, as a camera worker would) writes the alert.
        with open_database(None, data) as db:
            with db.read() as s:
                subject = s.query(SubjectRow).one()
                candidate = AlertCandidate(subject.gallery_id, subject.id, "w1", 0.8)
            crop = np.full((60, 50, 3), 128, np.uint8)
            threshold = _explicit(db, "s")
            alert = record_match_outcome(
                db, get_session(db, "s").id, "cam", Sighting(1, 0, 1, crop, 0.5), [candidate],
                threshold, audit="worker:s/cam",
            ).alert_id  # fmt: skip
        url = f"{server.url}/api/v1/alerts/stream?after=0"
        with httpx.stream("GET", url, headers=h, timeout=30) as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    break
        assert json.loads(lines[-1][6:])["alert"] == alert
        # The client left: the server's stream ends (its request is logged once it has).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and '"/api/v1/alerts/stream"' not in server.output():
            time.sleep(0.2)
        assert '"route": "/api/v1/alerts/stream"' in server.output()
        # A stream still open when the server is told to stop does not hold the shutdown.
        # (A read timeout under the 15 s heartbeat: a stream the server keeps fails the test.)
        with httpx.stream("GET", url, headers=h, timeout=10) as r:
            stream = r.iter_lines()
            rest = [next(stream)]
            stopped = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            rest += list(stream)  # ends once the server has ended the stream
        server.process.wait(timeout=20)  # and the server then exits
        assert time.monotonic() - stopped < 10, server.output()
        assert any(line.startswith("data:") for line in rest)  # it had sent the alert


def _explicit(db: Database, session: str) -> Any:
    from yingyan.watch.sessions import session_threshold

    return session_threshold(db, session)


# -- webhooks ----------------------------------------------------------------------------------


class Receiver:
    """A real local HTTP server that records each POST it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        received = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/yingyan"

    def wait(self, n: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.calls) >= n, self.calls

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_are_signed_and_a_restart_does_not_send_them_again(tmp_path: Path) -> None:
    receiver = Receiver()
    secret = b"a-shared-secret-of-32-bytes-here"
    (tmp_path / "secret").write_bytes(secret + b"\n")
    settings = Settings(
        data_dir=tmp_path / "data",
        workers=0,
        webhook_url=receiver.url,
        webhook_secret_file=tmp_path / "secret",
    )
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            h = {"x-api-key": (settings.data_dir / INITIAL_KEY_FILE).read_text().strip()}
            body = {"name": "wanted", "kind": "watchlist", "purpose": "p", "legal_basis": "b"}
            assert c.post("/api/v1/galleries", json=body, headers=h).status_code == 201
            r = c.post("/api/v1/galleries/wanted/subjects", json={"external_id": "w1"}, headers=h)
            assert r.status_code == 201
            session = {"name": "s", "purpose": "p", "case_ref": "c", "legal_basis": "b",
                       "expires_at": LATER, "watchlists": ["wanted"], "threshold": 0.5}  # fmt: skip
            assert c.post(SESSIONS, json=session, headers=h).status_code == 201
            db = c.app.state.yingyan.db  # type: ignore[attr-defined]
            first = _webhook_alert(db, track=1)
            receiver.wait(1)
            r = c.post(f"/api/v1/alerts/{first}/reviews", json={"verdict": "reject", "note": "no"},
                       headers=h)  # fmt: skip
            assert r.status_code == 201
            receiver.wait(2)
        assert len(receiver.calls) == 2
        events = []
        for headers, raw in receiver.calls:
            assert verify(secret, headers[TIMESTAMP_HEADER], raw, headers[SIGNATURE_HEADER])
            assert not verify(b"another-secret-of-enough-bytes", headers[TIMESTAMP_HEADER], raw,
                              headers[SIGNATURE_HEADER])  # fmt: skip
            events.append((headers[IDEMPOTENCY_HEADER], json.loads(raw)))
        assert [(e["type"], e["alert"], e["state"]) for _, e in events] == [
            ("alert.raised", first, "pending"),
            ("alert.reviewed", first, "rejected"),
        ]
        assert int(events[0][0]) < int(events[1][0])  # idempotency key: the event id
        assert "crop" not in json.dumps([e for _, e in events])

        # An alert raised while the service is down (by a camera worker elsewhere) is sent
        # after the restart, which resumes after what was delivered: nothing is sent twice.
        with open_database(None, settings.data_dir) as db:
            while_down = _webhook_alert(db, track=2)
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            receiver.wait(3)
            time.sleep(2.5)  # more than one outbox poll: nothing else comes
            assert len(receiver.calls) == 3
            live = _webhook_alert(c.app.state.yingyan.db, track=3)  # type: ignore[attr-defined]
            receiver.wait(4)
        assert len(receiver.calls) == 4
        later = [(h[IDEMPOTENCY_HEADER], json.loads(raw)) for h, raw in receiver.calls[2:]]
        assert [e["alert"] for _, e in later] == [while_down, live]
        assert int(events[1][0]) < int(later[0][0]) < int(later[1][0])
    finally:
        receiver.close()


def _webhook_alert(db: Database, track: int) -> int:
    with db.read() as s:
        subject = s.query(SubjectRow).one()
        candidate = AlertCandidate(subject.gallery_id, subject.id, "w1", 0.8)
    crop = np.full((60, 50, 3), 100 + track, np.uint8)
    out = record_match_outcome(
        db, get_session(db, "s").id, f"cam{track}", Sighting(track, 0, 1, crop, 0.5),
        [candidate], _explicit(db, "s"), audit="worker:s/cam",
    )  # fmt: skip
    return out.alert_id


def test_webhook_url_without_a_secret_is_a_configuration_error(tmp_path: Path) -> None:
    from yingyan.errors import ConfigError
    from yingyan.settings import load_settings

    with pytest.raises(ConfigError, match="webhook_secret_file"):
        load_settings(data_dir=tmp_path, webhook_url="http://127.0.0.1:9/hook")


def test_the_services_runtime_follows_a_camera_act_at_once(tmp_path: Path) -> None:
    """After an act the route syncs the service's camera runtime itself (here with its own
    periodic sync an hour away): a camera whose settings cannot run is listed with why."""
    from yingyan.watch.runtime import WatchRuntime

    settings = Settings(data_dir=tmp_path / "data", workers=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        h = {"x-api-key": (settings.data_dir / INITIAL_KEY_FILE).read_text().strip()}
        body = {"name": "wanted", "kind": "watchlist", "purpose": "p", "legal_basis": "b"}
        assert c.post("/api/v1/galleries", json=body, headers=h).status_code == 201
        session = {"name": "lab", "purpose": "p", "case_ref": "c", "legal_basis": "b",
                   "expires_at": LATER, "watchlists": ["wanted"], "threshold": 0.5}  # fmt: skip
        assert c.post(SESSIONS, json=session, headers=h).status_code == 201
        state = c.app.state.yingyan  # type: ignore[attr-defined]
        runtime = WatchRuntime(settings, sync_every_s=3600)
        runtime.start()
        state.watch = runtime
        try:
            camera = {"name": "bad", "url": "rtsp://cam/x", "settings": {"pipeline": {"bogus": 1}}}
            r = c.post(f"{SESSIONS}/lab/cameras", json=camera, headers=h)
            assert r.status_code == 201, r.text
            (listed,) = c.get(f"{SESSIONS}/lab/cameras", headers=h).json()
            assert listed["worker"] is None and "bogus" in listed["problem"]
            assert runtime.status() == []
            r = c.delete(f"{SESSIONS}/lab/cameras/bad", headers=h)
            assert r.status_code == 204 and runtime.invalid() == {}
        finally:
            state.watch = None
            runtime.stop()
