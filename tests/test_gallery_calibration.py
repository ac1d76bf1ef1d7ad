"""A gallery configured with a fair-score profile: identify and verify report normalised scores
(checked against the profile's own formula on real LFW templates), the threshold moves to the
normalised scale, and the profile is refused when it is of another model or was edited."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from tests.test_api import Api, error_code, files, jpeg, make_gallery, obama_and_biden
from tests.test_calibration import _claimed
from yingyan.calibration.fair_score import (
    CalibrationError,
    FairScoreProfile,
    fit_cohort_profile,
    normalise_pairs,
    profile_json,
)
from yingyan.config import EngineConfig
from yingyan.engine import Engine
from yingyan.errors import ModelMismatchError
from yingyan.evaluation.lfw import extract_images, image_dir
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.store import Database, InvalidValueError, create_gallery
from yingyan.types import Template

pytestmark = pytest.mark.shared


def _lfw_sample(root: Path) -> dict[str, list[np.ndarray]]:
    """Templates of 40 people with two images (gallery and probes) and of 300 people with one
    (the reference cohort), all different people, extracted with the default engine."""
    folder = image_dir(root)
    people = sorted(p for p in folder.iterdir() if p.is_dir())
    twice = [p for p in people if len(list(p.iterdir())) >= 2][:40]
    once = [p for p in people if len(list(p.iterdir())) == 1][:300]
    names = [f"{p.name}/{f.name}" for p in twice for f in sorted(p.iterdir())[:2]]
    names += [f"{p.name}/{next(p.iterdir()).name}" for p in once]
    found = extract_images(folder, names, EngineConfig(), show_progress=False)
    by_person: dict[str, list[np.ndarray]] = defaultdict(list)
    for name in names:
        if found[name].views is not None:
            by_person[name.split("/")[0]].append(found[name].template_vector(flip=True, jitter=0))
    return by_person


@pytest.fixture(scope="module")
def setup(
    lfw_root: Path, engine: Engine
) -> tuple[FairScoreProfile, dict[str, list[np.ndarray]], list[str]]:
    people = _lfw_sample(lfw_root)
    twice = [p for p, v in people.items() if len(v) == 2]
    others = [p for p, v in people.items() if len(v) == 1]
    reference = np.stack([people[p][0] for p in others])
    profile = fit_cohort_profile(
        reference,
        model=str(engine.model_id),
        name="test",
        top_k=25,
        fitted_on={"lfw people": len(others)},
    )
    return profile, people, twice


def _service(db: Database, tmp_path: Path, engine: Engine, people, names) -> GalleryService:  # type: ignore[no-untyped-def]
    with db.session() as s:
        create_gallery(
            s, name="g", kind="enrollment", purpose="t", legal_basis="t", model=engine.model_id
        )
    service = GalleryService(db, tmp_path / "index")
    items = [
        EnrollItem(p, Template(people[p][0], engine.model_id), 0.9, f"{i:064x}")
        for i, p in enumerate(names)
    ]
    service.enroll("g", items)
    return service


def test_identify_and_verify_use_the_gallerys_profile(
    db: Database, tmp_path: Path, engine: Engine, setup
) -> None:  # type: ignore[no-untyped-def]
    profile, people, names = setup
    service = _service(db, tmp_path, engine, people, names)
    probes = [Template(people[p][1], engine.model_id) for p in names]

    raw = service.identify("g", probes, k=3)
    assert service.decision_threshold("g") is None
    service.set_calibration("g", profile)
    assert service.decision_threshold("g") == (
        profile.global_threshold,
        f"calibration profile test v{profile.version}",
    )
    normalised = service.identify("g", probes, k=3)

    probe_norms = profile.norms(np.stack([p.vector for p in probes]))
    gallery = {p: people[p][0] for p in names}
    changed = 0
    for i, (before, after) in enumerate(zip(raw, normalised, strict=True)):
        for c in after:
            v = gallery[c.external_id]
            cos = np.array([float(np.dot(probes[i].vector, v))])
            expected = normalise_pairs(cos, probe_norms[np.array([i])], profile.norms(v[None, :]))
            assert c.score == pytest.approx(float(expected[0]), abs=1e-4)
        changed += [c.score for c in before] != [c.score for c in after]
        _, score = service.verify_subject("g", names[i], probes[i])  # type: ignore[misc]
        mine = next((c for c in after if c.external_id == names[i]), None)
        if mine is not None:
            assert score == pytest.approx(mine.score, abs=1e-4)
    assert changed == len(probes)
    rank1 = sum(cs[0].external_id == names[i] for i, cs in enumerate(normalised))
    rank1_raw = sum(cs[0].external_id == names[i] for i, cs in enumerate(raw))
    assert rank1 >= rank1_raw - 1  # normalisation must not wreck identification

    service.set_calibration("g", None)
    again = service.identify("g", probes, k=3)
    assert [[c.score for c in cs] for cs in again] == [[c.score for c in cs] for cs in raw]


def test_a_profile_of_another_model_or_an_edited_one_is_refused(
    db: Database, tmp_path: Path, engine: Engine, setup
) -> None:  # type: ignore[no-untyped-def]
    profile, people, names = setup
    service = _service(db, tmp_path, engine, people, names[:5])
    foreign = replace(profile, model="arcface@000000000000")
    with pytest.raises(ModelMismatchError):
        service.set_calibration("g", foreign)
    service.set_calibration("g", profile)
    with db.session() as s:
        edit = "replace(body, '\"top_k\": 25', '\"top_k\": 5')"
        s.execute(text(f"UPDATE calibration_profiles SET body = {edit}"))
    fresh = GalleryService(db, tmp_path / "index")
    probe = Template(people[names[0]][1], engine.model_id)
    with pytest.raises(CalibrationError):
        fresh.identify("g", [probe], k=1)


# -- the threshold's scale ---------------------------------------------------------------------

COSINE = 0.912  # dlib_resnet_v1's default threshold on raw cosine scores (LFW DevTrain)


def test_a_cosine_threshold_is_never_compared_with_normalised_scores(
    db: Database, tmp_path: Path, engine: Engine, setup
) -> None:  # type: ignore[no-untyped-def]
    """A gallery with a cosine threshold is not calibrated unless it is given a threshold on
    the profile's scale (against which impostors would match, see the first assertion), and
    is not set back to raw scores with a normalised one."""
    _, people, names = setup
    others = [p for p, v in people.items() if len(v) == 1]
    cohort, strangers = others[:200], others[200:]
    profile = fit_cohort_profile(
        np.stack([people[p][0] for p in cohort]), model=str(engine.model_id), name="c", top_k=25
    )
    gallery = np.stack([people[p][0] for p in names])
    impostors = np.stack([people[p][0] for p in strangers])
    # what the refusal prevents: against normalised scores the cosine threshold lets 53 of the
    # 100 strangers match someone (measured), against raw scores 22, at the profile's own 9
    bent = int(np.sum(profile.scores(impostors, gallery).max(axis=1) >= COSINE))
    with db.session() as s:
        create_gallery(
            s,
            name="g",
            kind="watchlist",
            purpose="t",
            legal_basis="t",
            model=engine.model_id,
            threshold=COSINE,
        )
    service = GalleryService(db, tmp_path / "index")
    service.enroll(
        "g",
        [
            EnrollItem(p, Template(people[p][0], engine.model_id), 0.9, f"{i:064x}")
            for i, p in enumerate(names)
        ],
    )
    probes = [Template(people[p][0], engine.model_id) for p in strangers]

    def alerts() -> int:
        """Strangers matched at the gallery's decision threshold, as the API applies it."""
        t = service.decision_threshold("g")
        assert t is not None
        found = service.identify("g", probes, k=1, mode="threshold", threshold=t[0])
        return sum(bool(cs) for cs in found)

    raw_alerts = alerts()
    assert bent > 2 * raw_alerts
    with pytest.raises(InvalidValueError, match="on the raw cosine scale"):
        service.set_calibration("g", profile)
    assert service.decision_threshold("g") == (COSINE, "the gallery's threshold")
    assert alerts() == raw_alerts  # nothing changed: the gallery still answers on raw scores

    service.set_calibration("g", profile, threshold=profile.global_threshold)
    assert service.decision_threshold("g") == (
        profile.global_threshold,
        f"calibration profile c v{profile.version} (the gallery's own threshold on its scale)",
    )
    calibrated_alerts = alerts()
    assert calibrated_alerts < raw_alerts
    genuine = [Template(people[p][1], engine.model_id) for p in names]
    found = service.identify("g", genuine, k=1, mode="threshold")
    assert sum(cs[0].external_id == p for cs, p in zip(found, names, strict=True) if cs) >= 35

    with pytest.raises(InvalidValueError, match=f"on the profile {profile.version} scale"):
        service.set_calibration("g", None)
    with pytest.raises(InvalidValueError, match=r"must lie in \[-1, 1\]"):
        service.set_calibration("g", None, threshold=profile.global_threshold)
    with pytest.raises(InvalidValueError, match="finite"):
        service.set_calibration("g", profile, threshold=float("nan"))
    service.set_calibration("g", None, threshold=COSINE)
    assert service.decision_threshold("g") == (COSINE, "the gallery's threshold")
    service.set_calibration("g", profile, threshold=None)  # the profile's own applies
    assert service.decision_threshold("g") == (
        profile.global_threshold,
        f"calibration profile c v{profile.version}",
    )
    assert alerts() == calibrated_alerts


def test_a_profile_of_another_dimension_is_refused(
    db: Database, tmp_path: Path, engine: Engine, setup
) -> None:  # type: ignore[no-untyped-def]
    _, people, names = setup
    service = _service(db, tmp_path, engine, people, names[:5])
    x = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
    short = fit_cohort_profile(x, model=str(engine.model_id), name="short", top_k=5)
    with pytest.raises(ModelMismatchError, match="64-d templates"):
        service.set_calibration("g", short)
    probe = Template(people[names[0]][1], engine.model_id)
    assert service.identify("g", [probe], k=1)[0][0].external_id == names[0]


def test_gallery_calibrate_cli_keeps_the_threshold_on_the_scores_scale(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from yingyan.cli.main import app
    from yingyan.embedding import OnnxDlibResNet

    x = np.random.default_rng(1).standard_normal((40, 128)).astype(np.float32)
    model = str(OnnxDlibResNet().model_id)
    fit_cohort_profile(x, model=model, name="cli", top_k=5).save(tmp_path / "p.json")
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path / "data")]

    def run(*args: str) -> tuple[int, str]:
        r = runner.invoke(app, [*args, *where])
        return r.exit_code, r.output

    create = ("gallery", "create", "g", "--purpose", "t", "--legal-basis", "t")
    assert run(*create, "--threshold", "0.912")[0] == 0
    calibrate = ("gallery", "calibrate", "g", "--profile", str(tmp_path / "p.json"))
    code, out = run(*calibrate)
    assert code == 2 and "raw cosine scale" in out, out
    code, out = run(*calibrate, "--threshold", "2.5", "--drop-threshold")
    assert code == 2 and "not both" in out, out
    assert run(*calibrate, "--threshold", "2.5")[0] == 0

    def threshold() -> float | None:
        code, out = run("gallery", "list", "--json")
        assert code == 0, out
        return json.loads(out)[0]["threshold"]  # type: ignore[no-any-return]

    assert threshold() == 2.5
    code, out = run("gallery", "calibrate", "g", "--none")
    assert code == 2 and "scale" in out, out
    assert run("gallery", "calibrate", "g", "--none", "--threshold", "0.9")[0] == 0
    assert threshold() == 0.9
    assert run(*calibrate, "--drop-threshold")[0] == 0
    assert threshold() is None


# -- over the API ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from fastapi.testclient import TestClient

    from yingyan.api.app import create_app
    from yingyan.settings import Settings

    data = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=data, workers=0, max_faces=1, max_upload_bytes=8_000_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Api(client, settings)


def _put(api: Api, gallery: str, body: dict[str, Any]) -> Any:
    """PUT a profile as raw JSON (NaN and lone surrogates as Python's json writes them)."""
    return api.client.put(
        f"/api/v1/galleries/{gallery}/calibration",
        content=json.dumps(body),
        headers=api.h() | {"content-type": "application/json"},
    )


def _cohort_rows(d: dict[str, Any], rows: list[list[float]]) -> None:
    d["cohort"] = rows


def test_a_malformed_profile_is_refused_over_the_api(api: Api, stills: Path, setup) -> None:  # type: ignore[no-untyped-def]
    """Each malformed profile, with the version its content hashes to, is a 4xx; the gallery
    keeps its raw scores and answers searches as before."""
    profile, _, _ = setup
    gallery = obama_and_biden(api, "people", stills)
    probe = files(probe=jpeg(stills / "obama2.jpg"))
    url = f"/api/v1/galleries/{gallery}/identify?k=2"
    before = api.client.post(url, files=probe, headers=api.h("operator"))
    assert before.status_code == 200, before.text
    good = json.loads(profile_json(profile))
    ragged = [row[:-1] if i == 3 else row for i, row in enumerate(good["cohort"])]
    edits: list[dict[str, Any]] = [
        {"cohort": ragged},
        {"top_k": "5"},
        {"top_k": 10**30},
        {"global_threshold": float("nan")},
        {"cohort": [[float("nan")] * 128, *good["cohort"][1:]]},
        {"name": "n" * 2001},
        {"name": "\ud800"},
        {"cohort": [row[:64] for row in good["cohort"]]},  # 64-d: refused as not unit rows
    ]
    for edit in edits:
        r = _put(api, gallery, _claimed(good | edit))
        # (an integer beyond 64 bits is refused by the body's own validation)
        codes = ("calibration_error", "validation_error")
        assert 400 <= r.status_code < 500 and error_code(r) in codes, r.text
    r = api.client.get(f"/api/v1/galleries/{gallery}", headers=api.h())
    assert r.json()["calibration"] is None
    after = api.client.post(url, files=probe, headers=api.h("operator"))
    assert after.status_code == 200 and after.json() == before.json()


def test_a_gallery_with_a_cosine_threshold_is_not_calibrated_over_the_api(
    api: Api, stills: Path, setup
) -> None:  # type: ignore[no-untyped-def]
    profile, _, _ = setup
    make_gallery(api, "strict", threshold=COSINE)
    gallery = "strict"
    for person, image in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
        subject = {"external_id": person}
        api.client.post(f"/api/v1/galleries/{gallery}/subjects", json=subject, headers=api.h())
        r = api.client.post(
            f"/api/v1/galleries/{gallery}/subjects/{person}/faces",
            files=files(image=jpeg(stills / image)),
            headers=api.h(),
        )
        assert r.status_code == 201, r.text
    r = _put(api, gallery, json.loads(profile_json(profile)))
    assert r.status_code == 400 and error_code(r) == "invalid_value", r.text
    assert "raw cosine scale" in r.json()["error"]["message"]
    r = api.client.get(f"/api/v1/galleries/{gallery}", headers=api.h())
    assert (r.json()["calibration"], r.json()["threshold"]) == (None, COSINE)
    probe = files(probe=jpeg(stills / "obama2.jpg"))
    r = api.client.post(
        f"/api/v1/galleries/{gallery}/subjects/biden/verify", files=probe, headers=api.h("operator")
    )
    assert r.status_code == 200, r.text
    assert r.json()["threshold"] == COSINE and r.json()["match"] is False
