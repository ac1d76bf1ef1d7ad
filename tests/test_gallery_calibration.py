"""A gallery configured with a fair-score profile: identify and verify report normalised scores
(checked against the profile's own formula on real LFW templates), the threshold moves to the
normalised scale, and the profile is refused when it is of another model or was edited."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from yingyan.calibration.fair_score import (
    CalibrationError,
    FairScoreProfile,
    fit_cohort_profile,
    normalise_pairs,
)
from yingyan.config import EngineConfig
from yingyan.engine import Engine
from yingyan.errors import ModelMismatchError
from yingyan.evaluation.lfw import extract_images, image_dir
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.store import Database, create_gallery
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
