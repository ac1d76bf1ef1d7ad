"""Templates and comparison on real people: a person matches themselves, not others."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from yingyan import Engine, EngineConfig, compare, decide, default_threshold, load_image
from yingyan.comparison import get_threshold
from yingyan.errors import ConfigError, ModelMismatchError
from yingyan.types import ModelId, RGBImage, Template

Loader = Callable[[str], RGBImage]
# These photos are scored at the LFW-tuned operating point (about 1% FMR over LFW pairs): the
# strict default (FMR 1e-4 for look-alikes, see test_thresholds.py) rejects some of them.
LFW_TUNED = get_threshold("dlib_resnet_v1", "lfw-devtrain")
PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]


def _template(engine: Engine, img: RGBImage) -> Template:
    ts = engine.templates(img)
    assert len(ts) == 1
    return ts[0]


def test_template_carries_model_and_recipe(engine: Engine, load_still: Loader) -> None:
    t = _template(engine, load_still("obama.jpg"))
    assert t.vector.shape == (128,) and t.vector.dtype == np.float32
    assert np.linalg.norm(t.vector) == pytest.approx(1.0, abs=1e-5)
    assert t.model.name == "dlib_resnet_v1" and len(t.model.version) == 12
    assert t.recipe == "flip"


def test_same_person_matches_and_others_do_not(engine: Engine, load_still: Loader) -> None:
    thr = LFW_TUNED
    obama = _template(engine, load_still("obama.jpg"))
    obama2 = _template(engine, load_still("obama2.jpg"))
    biden = _template(engine, load_still("biden.jpg"))
    same = decide(compare(obama, obama2), thr)
    other = decide(compare(obama, biden), thr)
    assert same.match and not other.match
    assert same.score > other.score + 0.05
    assert same.threshold is thr
    strict = default_threshold("dlib_resnet_v1")
    assert strict.score > thr.score and not decide(compare(obama, biden), strict).match


def test_each_known_person_is_recognised_in_a_group_photo(engine: Engine, stills: Path) -> None:
    """Enrol one photo per person from knn/train; the group photo's faces match only the
    people who are in it (Obama and Biden), and every train photo matches its own person."""
    thr = LFW_TUNED
    gallery: dict[str, list[Template]] = {}
    for person in PEOPLE:
        for f in sorted((stills / "knn/train" / person).iterdir()):
            ts = engine.templates(load_image(f))
            if len(ts) == 1:
                gallery.setdefault(person, []).append(ts[0])
    assert set(gallery) == set(PEOPLE)

    def best(t: Template) -> tuple[str, float]:
        scores = {p: max(compare(t, g).score for g in ts) for p, ts in gallery.items()}
        name = max(scores, key=lambda p: scores[p])
        return name, scores[name]

    group = engine.templates(load_image(stills / "knn/test/obama_and_biden.jpg"))
    found = {best(t)[0] for t in group if best(t)[1] >= thr.score}
    assert found == {"obama", "biden"}  # the third face (a child) matches no one
    for test_img, person in [("alex_lacamoire1.jpg", "alex_lacamoire"), ("obama1.jpg", "obama")]:
        name, score = best(_template(engine, load_image(stills / "knn/test" / test_img)))
        assert name == person and score >= thr.score


def test_lfw_same_and_different_people(engine: Engine, lfw_root: Path) -> None:
    img = lfw_root / "lfw-deepfunneled"
    thr = LFW_TUNED

    def t(name: str, n: int) -> Template:
        from yingyan.detection import most_central

        image = load_image(img / name / f"{name}_{n:04d}.jpg")
        det = most_central(engine.detect(image), 250, 250)
        tpl = engine.faces(image, [det] if det else None)[0].template
        assert tpl is not None
        return tpl

    bush = [t("George_W_Bush", k) for k in (1, 2, 3)]
    blair = t("Tony_Blair", 1)
    powell = t("Colin_Powell", 1)
    for a in range(3):
        for b in range(a + 1, 3):
            assert decide(compare(bush[a], bush[b]), thr).match
        assert not decide(compare(bush[a], blair), thr).match
        assert not decide(compare(bush[a], powell), thr).match


def test_flip_and_plain_templates_differ_but_agree(engine: Engine, load_still: Loader) -> None:
    img = load_still("obama.jpg")
    plain = _template(Engine(EngineConfig(flip=False)), img)
    flip = _template(engine, img)
    assert plain.recipe == "plain"
    assert 0.95 < compare(plain, flip).score < 0.9999


def test_templates_of_different_models_do_not_compare(engine: Engine, load_still: Loader) -> None:
    t = _template(engine, load_still("obama.jpg"))
    other = Template(t.vector, ModelId("arcface_r100", "abc123"))
    with pytest.raises(ModelMismatchError):
        compare(t, other)


def test_unknown_threshold_name_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="lfw-devtrain"):
        get_threshold("dlib_resnet_v1", "nonsense")


def test_models_load_lazily_and_once(load_still: Loader) -> None:
    e = Engine(EngineConfig(flip=False))
    assert "_session" not in vars(e.embedder) and "_predictor" not in vars(e.aligner)
    e.templates(load_still("obama.jpg"))
    session = vars(e.embedder)["_session"]
    e.templates(load_still("biden.jpg"))
    assert vars(e.embedder)["_session"] is session


def test_onnx_backend_gives_dlibs_templates(engine: Engine, load_still: Loader) -> None:
    """The default (onnxruntime) backend and dlib's own runtime agree on real faces."""
    img = load_still("two_people.jpg")
    reference = Engine(EngineConfig(backend="dlib"))
    fast, ref = engine.faces(img), reference.faces(img)
    assert engine.describe()["backend"] == "onnxruntime"
    assert engine.describe()["provider"] == "CPUExecutionProvider"
    assert reference.describe()["backend"] == "dlib"
    assert len(fast) == len(ref) == 2
    for a, b in zip(fast, ref, strict=True):
        assert a.template is not None and b.template is not None
        assert a.template.model == b.template.model
        assert float(np.abs(a.template.vector - b.template.vector).max()) < 1e-5


def test_jittered_templates_still_identify(load_still: Loader) -> None:
    thr = LFW_TUNED
    e = Engine(EngineConfig(jitter=4))
    a = _template(e, load_still("obama.jpg"))
    assert a.recipe == "flip+jitter4"
    assert decide(compare(a, _template(e, load_still("obama2.jpg"))), thr).match
    assert not decide(compare(a, _template(e, load_still("biden.jpg"))), thr).match
