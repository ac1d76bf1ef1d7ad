"""The CompreFace similarity scale per model: each shipped recognizer's impostor tail is data in
its manifest, a fusion's in its file (versioned like its thresholds), and `scale_for` reads
the tail of the model id it is given. Real models where templates are made: MobileFaceNet's
tail, measured on LFW view 2, predicts the false-match rate of LFW people outside view 2; the
CompreFace routes of a MobileFaceNet service report similarities on that tail; a fusion's tail
is measured by `yingyan calibrate tail --into` and survives a threshold update."""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from yingyan import Engine, EngineConfig, load_image
from yingyan.access.keys import create_key
from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.api.compreface import model_scale
from yingyan.calibration.fusion_fit import save_fusion, with_threshold
from yingyan.cli.main import app
from yingyan.comparison.similarity import (
    COSINE_WIDTH,
    GAIN,
    SimilarityScale,
    Tail,
    fit_tail,
    measured_tail,
    parse_tail,
    scale_for,
    tail_toml,
    threshold_score_at,
)
from yingyan.comparison.thresholds import default_threshold
from yingyan.embedding.fusion import FusionMember, FusionSpec, fusion_json, load_fusion, with_tail
from yingyan.embedding.manifest import BUILT_IN, built_in_manifest, load_manifest, parse_manifest
from yingyan.errors import ConfigError, ModelError
from yingyan.evaluation.fairness import acquire_all, read_dataset
from yingyan.settings import Settings

from .conftest import shared_path

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
MANIFESTS = Path(__file__).resolve().parents[1] / "src" / "yingyan" / "embedding" / "manifests"
MEASURED = ("dlib_resnet_v1", "mobilefacenet")  # the pinned built-ins: a tail each


def model_id(name: str) -> str:
    sha = built_in_manifest(name).sha256
    assert sha is not None
    return f"{name}@{sha[:12]}"


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# -- tails as manifest data --------------------------------------------------------------------


def test_every_pinned_built_in_recognizer_carries_its_measured_tail() -> None:
    for name in BUILT_IN:
        m = built_in_manifest(name)
        if name in MEASURED:
            assert m.tail is not None and m.tail.model == name
            assert m.tail.dataset is not None and "LFW view 2" in m.tail.dataset
            assert "similarity_scale.py" in m.tail.source and "--fit" in m.tail.source
            assert m.tail.measured is not None and m.tail.decades[0] == 0.0
            assert measured_tail(model_id(name)) == m.tail
        else:  # a family pins no weights: no tail, and its manifest says so
            assert m.sha256 is None and m.tail is None
            assert "No [tail]" in (MANIFESTS / f"{name}.toml").read_text()


@pytest.mark.parametrize("name", MEASURED)
def test_a_manifest_tail_is_half_at_the_default_threshold_and_promises_each_fmr(name: str) -> None:
    strict = default_threshold(name)
    scale = scale_for(model_id(name), strict.score)
    assert scale.kind == "tail" and scale.tail == built_in_manifest(name).tail
    assert scale.similarity(strict.score) == 0.5
    xs = np.linspace(-1, 1, 8001)
    assert np.all(np.diff(scale.logits(xs)) > 0)  # strictly increasing: ranks are kept
    at_half = scale.fmr_at(0.5)
    assert at_half is not None and scale.tail is not None
    assert at_half == pytest.approx(10 ** -float(scale.tail.phi(strict.score)))
    for s in LEVELS:
        assert scale.similarity(threshold_score_at(scale, s)) == pytest.approx(s, abs=1e-5)
        assert scale.fmr_at(s) == pytest.approx(at_half * 10 ** (-logit(s) / GAIN))
    # strict guarantees 1e-4 for the worst group's same-group impostors, the hardest ones: over
    # all pairs of different people (the tail's data) it can only be rarer
    assert 1e-7 < at_half < 1e-4


def test_a_tail_is_only_read_for_the_weights_it_was_measured_on() -> None:
    strict = default_threshold("mobilefacenet").score
    assert measured_tail("mobilefacenet@0123456789ab") is None
    other = scale_for("mobilefacenet@0123456789ab", strict)
    assert other.kind == "logistic" and other.fmr_at(0.9) is None
    assert scale_for("arcface:w600k_r50@0123456789ab", 0.3).kind == "logistic"
    assert scale_for(model_id("mobilefacenet"), 1.8, normalised=True).kind == "logistic"


def test_the_logistic_fallback_was_far_off_for_mobilefacenet() -> None:
    """Why MobileFaceNet needs its own tail: dlib's width makes 0.05 of cosine 5 logits."""
    strict = default_threshold("mobilefacenet").score
    tailed = scale_for(model_id("mobilefacenet"), strict)
    fallback = SimilarityScale("logistic", strict, width=COSINE_WIDTH)
    above = strict + 0.05
    assert fallback.similarity(above) > 0.99
    assert 0.5 < tailed.similarity(above) < 0.99


def _manifest_with(text: str, tail: str, tmp_path: Path) -> Path:
    body = re.sub(r"\n\[tail\]\n(?:[a-z]+ = .*\n)+", "\n", text)
    path = tmp_path / "m.toml"
    path.write_text(body + "\n" + tail)
    return path


def test_a_bad_tail_in_a_manifest_is_refused_by_name(tmp_path: Path) -> None:
    text = (MANIFESTS / "mobilefacenet.toml").read_text()
    good = tail_toml(built_in_manifest("mobilefacenet").tail)  # type: ignore[arg-type]
    assert load_manifest(_manifest_with(text, good, tmp_path)).tail == (
        built_in_manifest("mobilefacenet").tail
    )
    bad = {
        "increase strictly": re.sub(r"scores = \[[-0-9.]+,", "scores = [0.99,", good),
        "unknown tail key": good + "fmr = 1e-4\n",
        "needs decades": re.sub(r"decades = .*\n", "", good),
        "list of numbers": re.sub(r"scores = .*\n", 'scores = ["high", "low"]\n', good),
        "must lie in [-1, 1]": good.replace("scores = [", "scores = [-3.0, "),
    }
    for message, tail in bad.items():
        with pytest.raises(ModelError, match=re.escape(message)):
            load_manifest(_manifest_with(text, tail, tmp_path))
    unpinned = re.sub(r'sha256 = ".*"\n', "", text)
    with pytest.raises(ModelError, match="pin its 'sha256'"):
        load_manifest(_manifest_with(unpinned, good, tmp_path))


def test_a_user_manifest_with_a_tail_gives_its_pinned_weights_the_scale(tmp_path: Path) -> None:
    text = (MANIFESTS / "mobilefacenet.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(text.replace('name = "mobilefacenet"', 'name = "my-recognizer"'))
    mine = load_manifest(path)  # as resolve_manifest loads a manifest beside a model
    assert mine.tail is not None and mine.sha256 is not None
    scale = scale_for(f"my-recognizer@{mine.sha256[:12]}", 0.44)
    assert scale.kind == "tail" and scale.tail == mine.tail
    assert measured_tail("my-recognizer@0123456789ab") is None  # other weights


def test_a_printed_tail_table_reads_back_as_the_same_tail() -> None:
    for name in MEASURED:
        tail = built_in_manifest(name).tail
        assert tail is not None
        doc = tomllib.loads(tail_toml(tail))
        assert parse_tail(name, doc["tail"], "test") == tail
        manifest_doc = tomllib.loads((MANIFESTS / f"{name}.toml").read_text())
        assert parse_manifest(manifest_doc, "test").tail == tail


def test_fit_tail_reads_the_survival_function() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0.0, 0.1, 200_000)
    tail = fit_tail(scores, "test", "normal(0, 0.1)")
    assert tail.decades[:3] == (0.0, 0.25, 0.5)
    assert tail.decades[-1] == pytest.approx(3.75)  # 10^-3.75 of 200,000 is 35 >= 30 left
    for d in (1.0, 2.0, 3.0):  # the normal quantiles: 1.2816, 2.3263, 3.0902 sigma
        expected = {1.0: 0.12816, 2.0: 0.23263, 3.0: 0.30902}[d]
        assert tail.score_of(d) == pytest.approx(expected, abs=0.006)
    with pytest.raises(ValueError, match="four"):
        fit_tail(scores[:40], "test", "too few")


# -- real models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mfn_config() -> EngineConfig:
    yunet = shared_path("models", "yunet", "face_detection_yunet_2023mar.onnx")
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    return EngineConfig(detector="yunet", yunet_model=yunet, recognizer_model=mfn)


@pytest.mark.shared
def test_mobilefacenets_view2_tail_predicts_the_fmr_of_other_lfw_people(
    mfn_config: EngineConfig,
) -> None:
    """Out of sample: 400 images of LFW people in no view-2 pair (the tail was measured on
    view 2), every pair of different people; at the similarities promising FMR 1e-2 and 1e-3
    the observed rate is within a factor of three of the promise."""
    lfw = shared_path("datasets", "lfw")
    images = read_dataset("lfw-unpaired", lfw)[:400]
    acquired = acquire_all(images, mfn_config, show_progress=False)
    kept = [(im, a.vector) for im, a in zip(images, acquired, strict=True) if a.vector is not None]
    assert len(kept) >= 390
    vectors = np.stack([v for _, v in kept])
    people = np.array([im.identity for im, _ in kept])
    upper = np.triu(np.ones((len(kept), len(kept)), dtype=bool), 1)
    impostor = (vectors @ vectors.T)[upper & (people[:, None] != people[None, :])]
    assert impostor.size > 70_000
    model = str(Engine(mfn_config).model_id)
    scale = model_scale(model)
    assert scale.kind == "tail" and scale.threshold == default_threshold(model).score
    base = scale.fmr_at(0.5)
    assert base is not None
    for promised in (1e-2, 1e-3):
        # fmr_at(s) = base * 10^(-logit(s) / GAIN)  =>  logit(s) = GAIN * log10(base / promised)
        s = 1 / (1 + math.exp(-GAIN * math.log10(base / promised)))
        assert scale.fmr_at(s) == pytest.approx(promised)
        observed = float(np.mean(impostor >= threshold_score_at(scale, s)))
        assert promised / 3 < observed < promised * 3, (promised, observed)


@pytest.fixture(scope="module")
def mfn_api(
    mfn_config: EngineConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("mfn-service")
    settings = Settings(
        data_dir=data,
        workers=0,
        max_faces=2,
        detector="yunet",
        yunet_model=mfn_config.yunet_model,
        recognizer_model=mfn_config.recognizer_model,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.shared
def test_compreface_routes_of_a_mobilefacenet_gallery_report_its_tails_similarity(
    mfn_api: TestClient, mfn_config: EngineConfig, stills: Path
) -> None:
    state = mfn_api.app.state.yingyan  # type: ignore[attr-defined]
    admin = {"x-api-key": (state.settings.data_dir / INITIAL_KEY_FILE).read_text().strip()}
    body = {"name": "mfn", "purpose": "similarity test", "legal_basis": "test"}
    made = mfn_api.post("/api/v1/galleries", json=body, headers=admin)
    assert made.status_code == 201, made.text
    engine = Engine(mfn_config)
    assert made.json()["model"] == str(engine.model_id)
    with state.db.session() as s:
        key = {"x-api-key": create_key(s, name="cf", role="admin", galleries=("mfn",)).token}

    def image(name: str) -> dict[str, tuple[str, bytes, str]]:
        return {"file": (name, (stills / name).read_bytes(), "image/jpeg")}

    for who in ("obama", "biden"):
        r = mfn_api.post(
            "/api/v1/recognition/faces",
            params={"subject": who},
            files=image(f"{who}.jpg"),
            headers=key,
        )
        assert r.status_code == 200, r.text
    r = mfn_api.post(
        "/api/v1/recognition/recognize",
        params={"prediction_count": 2},
        files=image("obama2.jpg"),
        headers=key,
    )
    assert r.status_code == 200, r.text
    got = {c["subject"]: c["similarity"] for c in r.json()["result"][0]["subjects"]}

    def template(name: str) -> np.ndarray:
        faces = engine.faces(load_image(stills / name))
        face = max(faces, key=lambda f: f.detection.box.area)
        assert face.template is not None
        return face.template.vector

    probe = template("obama2.jpg")
    raw = {who: float(probe @ template(f"{who}.jpg")) for who in ("obama", "biden")}
    scale = scale_for(str(engine.model_id), default_threshold("mobilefacenet").score)
    assert scale.kind == "tail"
    for who in raw:
        assert got[who] == pytest.approx(scale.similarity(raw[who]), abs=2e-5)
    assert got["obama"] > 0.9 and got["biden"] < 0.05
    # the same scale on the verification service (no collection: the model's default)
    files = {
        "source_image": ("a.jpg", (stills / "obama.jpg").read_bytes(), "image/jpeg"),
        "target_image": ("b.jpg", (stills / "obama2.jpg").read_bytes(), "image/jpeg"),
    }
    r = mfn_api.post("/api/v1/verification/verify", files=files, headers=key)
    assert r.status_code == 200, r.text
    (match,) = r.json()["result"][0]["face_matches"]
    assert match["similarity"] == pytest.approx(got["obama"], abs=2e-5)


# -- a fusion's tail ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fusion_file(mfn_config: EngineConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dlib + MobileFaceNet fusion with the shipped fit's parameters and a strict threshold."""
    ids = [
        str(Engine(mfn_config.with_(recognizer_model=None)).model_id),
        str(Engine(mfn_config).model_id),
    ]
    spec = FusionSpec(
        name="test-tail",
        members=(
            FusionMember("dlib_resnet_v1", ids[0], 0.55, 0.837048, 0.035214),
            FusionMember(str(mfn_config.recognizer_model), ids[1], 0.45, 0.012871, 0.101471),
        ),
        fitted_on="written by the test",
    )
    spec = with_threshold(
        spec, {"name": "strict", "score": 0.8268, "fmr": 1e-4, "source": "the shipped fusion's"}
    )
    path = tmp_path_factory.mktemp("fusion") / "fusion.json"
    save_fusion(spec, path)
    return path


def _a_tail(model: str) -> Tail:
    scores = (0.2, 0.6, 0.7, 0.75, 0.78, 0.8, 0.82, 0.84)
    return Tail(model, scores, tuple(0.5 * k for k in range(8)), "made by the test")


def test_a_fusion_file_with_a_tail_round_trips_outside_the_model_id(tmp_path: Path) -> None:
    members = (
        FusionMember("dlib_resnet_v1", "dlib_resnet_v1@55533b28a958", 0.5, 0.84, 0.035),
        FusionMember("m.onnx", "mobilefacenet@b7120c095d60", 0.5, 0.01, 0.1),
    )
    spec = with_threshold(
        FusionSpec("round-trip", members, "test"),
        {"name": "strict", "score": 0.81, "fmr": 1e-4, "source": "test"},
    )
    tailed = with_tail(spec, _a_tail("fusion:round-trip"))
    assert tailed.model_id == spec.model_id and tailed.tail_version == 1  # no re-enrolment
    path = tmp_path / "f.json"
    path.write_text(fusion_json(tailed))
    doc = json.loads(path.read_text())
    assert doc["tail"]["version"] == 1 and doc["tail"]["digest"] == tailed.tail_digest
    loaded = load_fusion(path)
    assert loaded == tailed
    scale = model_scale(str(loaded.model_id))  # registered on load, with its thresholds
    assert scale.kind == "tail" and scale.tail == tailed.tail and scale.threshold == 0.81
    assert scale.similarity(0.81) == 0.5
    at_half = scale.fmr_at(0.5)
    assert at_half is not None
    for s in LEVELS:
        assert scale.fmr_at(s) == pytest.approx(at_half * 10 ** (-logit(s) / GAIN))
    # measured again: the next version, still the same model id; a threshold update keeps it
    again = with_tail(loaded, replace(_a_tail("fusion:round-trip"), source="again"))
    assert again.tail_version == 2 and again.model_id == spec.model_id
    both = with_threshold(again, {"name": "standard", "score": 0.79, "fmr": 1e-3, "source": "t"})
    assert both.tail == again.tail and both.tail_version == 2
    with pytest.raises(ModelError, match="not one of fusion"):
        with_tail(spec, _a_tail("fusion:another"))


def test_an_edited_tail_in_a_fusion_file_is_refused(tmp_path: Path) -> None:
    members = (
        FusionMember("dlib_resnet_v1", "dlib_resnet_v1@55533b28a958", 0.5, 0.84, 0.035),
        FusionMember("m.onnx", "mobilefacenet@b7120c095d60", 0.5, 0.01, 0.1),
    )
    spec = with_tail(FusionSpec("edited", members, "test"), _a_tail("fusion:edited"))
    good = json.loads(fusion_json(spec))
    path = tmp_path / "f.json"

    def write(doc: dict[str, object]) -> Path:
        path.write_text(json.dumps(doc))
        return path

    edits: list[tuple[str, object]] = [
        ("scores", [0.2, 0.6, 0.7, 0.74, 0.78, 0.8, 0.82, 0.84]),  # one knot moved
        ("version", 5),
        ("source", "someone else"),
        ("digest", None),
    ]
    for key, value in edits:
        doc = json.loads(json.dumps(good))
        doc["tail"][key] = value
        if value is None:
            del doc["tail"][key]
        with pytest.raises(ModelError, match="tail edited by hand"):
            load_fusion(write(doc))
    malformed = json.loads(json.dumps(good))
    malformed["tail"]["scores"] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    with pytest.raises(ModelError, match="increase strictly"):
        load_fusion(write(malformed))
    malformed["tail"] = [1, 2]
    with pytest.raises(ModelError, match="malformed tail"):
        load_fusion(write(malformed))
    # an edited tail cannot slip past the CLI either: a clear error, exit 2
    doc = json.loads(json.dumps(good))
    doc["tail"]["scores"][3] = 0.74
    result = CliRunner().invoke(
        app, ["calibrate", "tail", "--root", str(tmp_path), "--into", str(write(doc))]
    )
    assert result.exit_code == 2 and "tail edited by hand" in result.output
    assert "Traceback" not in result.output


@pytest.mark.shared
def test_calibrate_tail_measures_a_fusion_and_stores_it_in_its_file(
    fusion_file: Path, mfn_config: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    lfw = shared_path("datasets", "lfw")
    monkeypatch.setenv("YINGYAN_YUNET_MODEL", str(mfn_config.yunet_model))
    before = load_fusion(fusion_file)
    args = ["calibrate", "tail", "--root", str(lfw), "--detector", "yunet", "--max-images", "150"]
    result = CliRunner().invoke(app, [*args, "--into", str(fusion_file)])
    assert result.exit_code == 0, result.output
    after = load_fusion(fusion_file)
    assert after.model_id == before.model_id and after.thresholds == before.thresholds
    assert after.tail is not None and after.tail_version == before.tail_version + 1
    assert after.tail.model == "fusion:test-tail" and "calibrate tail" in after.tail.source
    assert "150 of 150 images" in (after.tail.dataset or "")
    # the fused cosine of different people: mostly low, the tail rising through the threshold
    assert after.tail.scores[0] < 0.6 and after.tail.scores[-1] < 0.95
    scale = model_scale(str(after.model_id))
    assert scale.kind == "tail" and scale.similarity(0.8268) == 0.5
    assert "tail stored, tail version 1" in result.output
    # a threshold measured afterwards keeps the tail (a new thresholds version only)
    kept = with_threshold(after, {"name": "standard", "score": 0.8009, "source": "test"})
    save_fusion(kept, fusion_file)
    assert load_fusion(fusion_file).tail == after.tail


@pytest.mark.shared
def test_calibrate_tail_prints_a_manifest_table_for_a_recognizer(
    mfn_config: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    lfw = shared_path("datasets", "lfw")
    monkeypatch.setenv("YINGYAN_RECOGNIZER_MODEL", str(mfn_config.recognizer_model))
    args = ["calibrate", "tail", "--root", str(lfw), "--detector", "yunet", "--max-images", "150"]
    result = CliRunner().invoke(app, [*args, "--yunet-model", str(mfn_config.yunet_model)])
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("\n[tail]\n") :]
    tail = parse_tail("mobilefacenet", tomllib.loads(table)["tail"], "printed")
    shipped = measured_tail(str(Engine(mfn_config).model_id))
    assert shipped is not None and "YINGYAN_RECOGNIZER_MODEL=" in tail.source
    # 150 images are a sample of the 7,701 the shipped tail was measured on: the same curve
    # where both observe it (within 0.05 of cosine up to FMR 1e-2)
    for d in (0.5, 1.0, 1.5, 2.0):
        assert tail.score_of(d) == pytest.approx(shipped.score_of(d), abs=0.05)


def test_calibrate_tail_refuses_bad_input_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "tail", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "pairs.txt" in result.output
    result = runner.invoke(
        app, ["calibrate", "tail", "--root", str(tmp_path), "--into", str(tmp_path / "no.json")]
    )
    assert result.exit_code == 2 and "no such fusion file" in result.output
    with pytest.raises(ConfigError):
        parse_tail("x", {"scores": [0.1, 0.2, 0.3, 0.4]}, "test")
