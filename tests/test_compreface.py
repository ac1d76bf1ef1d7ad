"""Exadel's own CompreFace Python SDK against a running `yingyan serve` (a real server process
with an inference worker process): add faces for two subjects, recognize, verify, detect,
list and delete, all through the SDK, unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from compreface import CompreFace  # type: ignore[import-untyped]

from yingyan.api.compreface import model_scale
from yingyan.comparison.similarity import GAIN, scale_for, threshold_score_at
from yingyan.comparison.thresholds import get_threshold

from ._server import Server, running_server

LFW_TUNED = get_threshold("dlib_resnet_v1", "lfw-devtrain").score  # about 1% FMR on LFW

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("serve") / "data") as running:
        yield running


def test_serve_announces_where_it_listens_and_the_first_admin_key(server: Server) -> None:
    assert server.admin.startswith("yy_")
    r = httpx.get(f"{server.url}/api/v1/galleries", headers={"x-api-key": server.admin})
    assert r.status_code == 200 and r.json() == []


def test_compreface_sdk_works_unchanged(server: Server, stills: Path) -> None:
    admin = {"x-api-key": server.admin}
    body = {"name": "demo", "purpose": "CompreFace SDK test", "legal_basis": "test"}
    assert httpx.post(f"{server.url}/api/v1/galleries", json=body, headers=admin).status_code == 201
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "yingyan.cli.main",
            "keys",
            "create",
            "--role",
            "admin",
            "--name",
            "compreface",
            "--gallery",
            "demo",
            "--json",
            "--data-dir",
            str(server.data),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(created.stdout)["token"]

    host, port = server.url.rsplit(":", 1)
    compre_face = CompreFace(
        host, port, {"limit": 0, "det_prob_threshold": 0.5, "prediction_count": 2, "status": True}
    )
    recognition = compre_face.init_face_recognition(key)
    faces = recognition.get_face_collection()
    subjects = recognition.get_subjects()

    assert subjects.add("biden") == {"subject": "biden"}
    added = {
        "obama": faces.add(str(stills / "obama.jpg"), "obama"),
        "biden": faces.add(str(stills / "biden.jpg"), "biden"),
    }
    assert {a["subject"] for a in added.values()} == {"obama", "biden"}
    assert sorted(subjects.list()["subjects"]) == ["biden", "obama"]
    listed = faces.list()
    assert listed["total_elements"] == 2
    assert {f["image_id"] for f in listed["faces"]} == {a["image_id"] for a in added.values()}

    recognized = recognition.recognize(str(stills / "obama2.jpg"))
    (face,) = recognized["result"]
    assert face["subjects"][0]["subject"] == "obama"
    assert face["subjects"][0]["similarity"] > face["subjects"][1]["similarity"]
    assert set(face["box"]) == {"probability", "x_max", "y_max", "x_min", "y_min"}
    assert "plugins_versions" in recognized

    two = recognition.recognize(str(stills / "two_people.jpg"))
    assert len(two["result"]) == 2

    verification = compre_face.init_face_verification(key)
    same = verification.verify(str(stills / "obama.jpg"), str(stills / "obama2.jpg"))
    other = verification.verify(str(stills / "obama.jpg"), str(stills / "biden.jpg"))
    s_same = same["result"][0]["face_matches"][0]["similarity"]
    s_other = other["result"][0]["face_matches"][0]["similarity"]
    # 0.5 is the strict default (FMR 1e-4 for look-alikes), which this pair does not reach
    assert s_same > s_other and s_other < 0.01

    by_id = faces.verify(str(stills / "obama2.jpg"), added["obama"]["image_id"])
    assert by_id["result"][0]["similarity"] > s_other

    detection = compre_face.init_face_detection(key)
    detected = detection.detect(str(stills / "two_people.jpg"), {"face_plugins": "landmarks"})
    assert len(detected.get("result", [])) == 2, detected
    assert all(len(f["landmarks"]) == 5 for f in detected["result"])

    assert subjects.update("biden", "joe_biden") == {"updated": True}
    assert faces.delete(added["obama"]["image_id"]) == {
        "image_id": added["obama"]["image_id"],
        "subject": "obama",
    }
    assert faces.delete_all("joe_biden") == {"deleted": 1}
    assert faces.list()["total_elements"] == 0
    after = recognition.recognize(str(stills / "obama2.jpg"))
    assert after["result"][0]["subjects"] == []
    assert subjects.delete("obama") == {"subject": "obama"}
    assert subjects.delete_all() == {"deleted": 1}  # joe_biden, without faces
    assert subjects.list() == {"subjects": []}


def test_compreface_errors_use_its_body_shape(server: Server, stills: Path) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/recognition/recognize",
        files={"file": ("x.jpg", b"not an image", "image/jpeg")},
        headers={"x-api-key": "wrong"},
    )
    assert r.status_code == 401 and set(r.json()) == {"message", "code"}


# -- CompreFace's similarity scale and watchlist refusals -------------------------------------


def _collection_key(server: Server, name: str, kind: str = "enrollment") -> str:
    """A new gallery and an admin key scoped to it (a CompreFace collection's x-api-key)."""
    body = {"name": name, "purpose": "CompreFace scale test", "legal_basis": "test", "kind": kind}
    admin = {"x-api-key": server.admin}
    r = httpx.post(f"{server.url}/api/v1/galleries", json=body, headers=admin)
    assert r.status_code == 201, r.text
    created = subprocess.run(
        [
            *(sys.executable, "-m", "yingyan.cli.main", "keys", "create", "--role", "admin"),
            *("--name", f"cf-{name}", "--gallery", name, "--json", "--data-dir", str(server.data)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(created.stdout)["token"])


def _verify_similarity(server: Server, key: str, source: Path, target: Path) -> float:
    r = httpx.post(
        f"{server.url}/api/v1/verification/verify",
        files={"source_image": source.read_bytes(), "target_image": target.read_bytes()},
        headers={"x-api-key": key},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return float(r.json()["result"][0]["face_matches"][0]["similarity"])


def test_similarity_is_compreface_scale_and_the_same_in_three_routes(
    server: Server, stills: Path
) -> None:
    """Obama against Biden scored 0.81 (the clipped cosine): a CompreFace client's usual 0.8
    accepted him. On the calibrated scale different people score far below 0.5, the same
    person above it, and verify, recognize and faces/{id}/verify give one pair one value."""
    key = _collection_key(server, "scale")
    host, port = server.url.rsplit(":", 1)
    compre_face = CompreFace(host, port, {"prediction_count": 2})
    recognition = compre_face.init_face_recognition(key)
    faces = recognition.get_face_collection()
    ids = {
        name: faces.add(str(stills / f"{name}.jpg"), name)["image_id"]
        for name in ("obama", "biden")
    }
    other_obama = stills / "knn" / "test" / "obama1.jpg"

    impostor = _verify_similarity(server, key, stills / "obama.jpg", stills / "biden.jpg")
    genuine = _verify_similarity(server, key, other_obama, stills / "obama.jpg")
    assert impostor < 0.2, impostor  # well below a client's usual 0.8-0.9
    assert genuine > impostor, genuine  # not above 0.5: the strict default rejects this pair

    (found,) = recognition.recognize(str(other_obama))["result"]
    by_subject = {s["subject"]: s["similarity"] for s in found["subjects"]}
    by_id = {
        name: faces.verify(str(other_obama), ids[name])["result"][0]["similarity"]
        for name in ("obama", "biden")
    }
    biden_vs_obama = _verify_similarity(server, key, other_obama, stills / "biden.jpg")
    assert by_subject["obama"] == pytest.approx(genuine, abs=1e-4)
    assert by_id["obama"] == pytest.approx(genuine, abs=1e-4)
    assert by_subject["biden"] == pytest.approx(biden_vs_obama, abs=1e-4)
    assert by_id["biden"] == pytest.approx(biden_vs_obama, abs=1e-4)
    assert by_subject["biden"] < 0.2 and by_subject["biden"] < by_subject["obama"]


def _audit_entries(server: Server) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    after: int | None = 0
    while after is not None:
        r = httpx.get(
            f"{server.url}/api/v1/audit",
            params={"after": after, "limit": 1000},
            headers={"x-api-key": server.admin},
        )
        assert r.status_code == 200, r.text
        entries += r.json()["items"]
        after = r.json()["next_after"]
    return entries


def test_watchlist_searches_without_purpose_are_refused_and_audited(
    server: Server, stills: Path
) -> None:
    key = _collection_key(server, "cf-watchlist", kind="watchlist")
    headers = {"x-api-key": key}
    image = {"file": ("obama.jpg", (stills / "obama.jpg").read_bytes(), "image/jpeg")}
    added = httpx.post(
        f"{server.url}/api/v1/recognition/faces",
        params={"subject": "obama"},
        files=image,
        headers=headers,
        timeout=60,
    )
    assert added.status_code == 200, added.text
    image_id = added.json()["image_id"]
    searches = {
        "identify": f"{server.url}/api/v1/recognition/recognize",
        "verify.subject": f"{server.url}/api/v1/recognition/faces/{image_id}/verify",
    }
    for url in searches.values():
        r = httpx.post(url, files=image, headers=headers, timeout=60)
        assert r.status_code == 422 and r.json()["code"] == "purpose_required", r.text
    refused = [
        e["operation"]
        for e in _audit_entries(server)
        if e["gallery"] == "cf-watchlist" and e["outcome"] == "refused"
    ]
    assert sorted(refused) == sorted(searches)

    justified = {"purpose": "fraud investigation", "case_reference": "CASE-17"}
    for url in searches.values():
        r = httpx.post(url, params=justified, files=image, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
    done = [
        e
        for e in _audit_entries(server)
        if e["gallery"] == "cf-watchlist" and e["outcome"] == "ok" and e["operation"] in searches
    ]
    assert {e["operation"] for e in done} == set(searches)
    assert all(e["case_reference"] == "CASE-17" for e in done)


LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)


@pytest.mark.parametrize(
    ("threshold", "normalised", "span"),
    [(0.912, False, 1.0), (0.95, False, 1.0), (2.46, True, 12.0)],
)
def test_similarity_is_monotone_with_half_at_the_threshold(
    threshold: float, normalised: bool, span: float
) -> None:
    scale = scale_for("dlib_resnet_v1", threshold, normalised=normalised)
    assert scale.kind == ("logistic" if normalised else "tail")
    assert scale.similarity(threshold) == 0.5
    xs = np.linspace(-span, span, 8001)
    assert np.all(np.diff(scale.logits(xs)) > 0)  # strictly increasing: ranks are kept
    sims = scale.similarities(xs)
    assert np.all(np.diff(sims) >= 0) and sims.min() >= 0.0 and sims.max() <= 1.0
    assert scale.similarity(threshold - 0.01) < 0.5 < scale.similarity(threshold + 0.01)
    for s in LEVELS:
        assert scale.similarity(threshold_score_at(scale, s)) == pytest.approx(s, abs=1e-5)


def test_each_similarity_level_promises_a_false_match_rate() -> None:
    """On the measured tail, each 1/GAIN of logit(similarity) is one decade of FMR."""
    scale = scale_for("dlib_resnet_v1", 0.912)
    fmrs = [scale.fmr_at(s) for s in LEVELS]
    assert all(f is not None for f in fmrs)
    at_half = fmrs[0]
    assert at_half is not None and 1e-5 < at_half < 1e-1
    for s, fmr in zip(LEVELS, fmrs, strict=True):
        assert fmr == pytest.approx(at_half * 10 ** (-np.log(s / (1 - s)) / GAIN))
    assert scale_for("dlib_resnet_v1", 2.46, normalised=True).fmr_at(0.9) is None


def test_a_collection_without_its_own_threshold_is_anchored_at_the_strict_default() -> None:
    """0.5 is the model's default threshold, the strict one: the same decision as native."""
    strict = get_threshold("dlib_resnet_v1")
    scale = model_scale("dlib_resnet_v1@55533b28a958")
    assert strict.name == "strict" and scale.kind == "tail" and scale.threshold == strict.score
    assert scale.similarity(strict.score) == 0.5 > scale.similarity(LFW_TUNED)


def test_a_model_without_a_threshold_keeps_the_clipped_cosine() -> None:
    scale = scale_for("arcface_r100@abc", None)
    assert scale.kind == "uncalibrated"
    assert [scale.similarity(x) for x in (-0.3, 0.42, 1.2)] == [0.0, 0.42, 1.0]
