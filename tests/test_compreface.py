"""Exadel's own CompreFace Python SDK against a running `yingyan serve` (a real server process
with an inference worker process): add faces for two subjects, recognize, verify, detect,
list and delete, all through the SDK, unchanged.

The SDK pins requests-toolbelt 0.9.1 and with it the end-of-life urllib3 1.x, so it lives in an
environment of its own (`.venv-compreface`, made by `make test`, or YINGYAN_COMPREFACE_PYTHON):
tests/_compreface_sdk.py makes the SDK calls there and prints the answers, checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from yingyan.api.compreface import model_scale
from yingyan.comparison.similarity import GAIN, scale_for, threshold_score_at
from yingyan.comparison.thresholds import get_threshold

from ._server import Server, running_server
from .conftest import PROJECT_ROOT, _unavailable

LFW_TUNED = get_threshold("dlib_resnet_v1", "lfw-devtrain").score  # about 1% FMR on LFW
SDK_SCRIPT = Path(__file__).with_name("_compreface_sdk.py")

pytestmark = pytest.mark.shared


def sdk_python() -> Path:
    """The Python of the SDK's environment; skip (fail under CI=true) when there is none."""
    given = os.environ.get("YINGYAN_COMPREFACE_PYTHON")
    python = Path(given) if given else PROJECT_ROOT / ".venv-compreface" / "bin" / "python"
    if not python.exists():
        _unavailable(f"no CompreFace SDK environment at {python}: `make install-compreface`")
    return python


def run_sdk(scenario: str, server: Server, key: str, stills: Path) -> dict[str, Any]:
    """The answers of `scenario` in tests/_compreface_sdk.py, run by the SDK's environment."""
    host, port = server.url.rsplit(":", 1)
    plan = {"scenario": scenario, "host": host, "port": port, "key": key, "stills": str(stills)}
    done = subprocess.run(
        [str(sdk_python()), str(SDK_SCRIPT)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"PYTHONNOUSERSITE": "1"},
    )
    assert done.returncode == 0, f"the CompreFace SDK failed:\n{done.stderr}"
    answers: dict[str, Any] = json.loads(done.stdout)
    return answers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("serve") / "data") as running:
        yield running


def test_serve_announces_where_it_listens_and_the_first_admin_key(server: Server) -> None:
    assert server.admin.startswith("yy_")
    r = httpx.get(f"{server.url}/api/v1/galleries", headers={"x-api-key": server.admin})
    assert r.status_code == 200 and r.json() == []


def test_the_sdk_environment_is_its_own() -> None:
    """The SDK runs with its own urllib3 1.x; this environment has neither (issue 14)."""
    probe = "import compreface, urllib3; print(urllib3.__version__)"
    sdk = subprocess.run(
        [str(sdk_python()), "-c", probe], capture_output=True, text=True, check=True
    )
    assert sdk.stdout.startswith("1."), sdk.stdout
    import urllib3

    assert int(urllib3.__version__.split(".")[0]) >= 2, urllib3.__version__


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
    sdk = run_sdk("unchanged", server, key, stills)

    assert sdk["subject_added"] == {"subject": "biden"}
    added = sdk["added"]
    assert {a["subject"] for a in added.values()} == {"obama", "biden"}
    assert sorted(sdk["subjects"]["subjects"]) == ["biden", "obama"]
    listed = sdk["faces"]
    assert listed["total_elements"] == 2
    assert {f["image_id"] for f in listed["faces"]} == {a["image_id"] for a in added.values()}

    recognized = sdk["recognized"]
    (face,) = recognized["result"]
    assert face["subjects"][0]["subject"] == "obama"
    assert face["subjects"][0]["similarity"] > face["subjects"][1]["similarity"]
    assert set(face["box"]) == {"probability", "x_max", "y_max", "x_min", "y_min"}
    assert "plugins_versions" in recognized

    assert len(sdk["recognized_two"]["result"]) == 2

    s_same = sdk["verify_same"]["result"][0]["face_matches"][0]["similarity"]
    s_other = sdk["verify_other"]["result"][0]["face_matches"][0]["similarity"]
    # 0.5 is the strict default (FMR 1e-4 for look-alikes), which this pair does not reach
    assert s_same > s_other and s_other < 0.01

    assert sdk["verify_by_id"]["result"][0]["similarity"] > s_other

    detected = sdk["detected"]
    assert len(detected.get("result", [])) == 2, detected
    assert all(len(f["landmarks"]) == 5 for f in detected["result"])

    assert sdk["renamed"] == {"updated": True}
    assert sdk["deleted_face"] == {"image_id": added["obama"]["image_id"], "subject": "obama"}
    assert sdk["deleted_all_faces"] == {"deleted": 1}
    assert sdk["faces_after"]["total_elements"] == 0
    assert sdk["recognized_after"]["result"][0]["subjects"] == []
    assert sdk["deleted_subject"] == {"subject": "obama"}
    assert sdk["deleted_all_subjects"] == {"deleted": 1}  # joe_biden, without faces
    assert sdk["subjects_after"] == {"subjects": []}


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
    sdk = run_sdk("scale", server, key, stills)
    other_obama = stills / "knn" / "test" / "obama1.jpg"

    impostor = _verify_similarity(server, key, stills / "obama.jpg", stills / "biden.jpg")
    genuine = _verify_similarity(server, key, other_obama, stills / "obama.jpg")
    assert impostor < 0.2, impostor  # well below a client's usual 0.8-0.9
    assert genuine > impostor, genuine  # not above 0.5: the strict default rejects this pair

    (found,) = sdk["recognized"]["result"]
    by_subject = {s["subject"]: s["similarity"] for s in found["subjects"]}
    by_id = {
        name: answer["result"][0]["similarity"] for name, answer in sdk["verify_by_id"].items()
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
