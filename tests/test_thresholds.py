"""Shipped thresholds are data with provenance: every built-in manifest's load, the default is
the strict one for each model id, and a fusion's thresholds travel in its own file (versioned
apart from its model id, refused when edited by hand). No model is run: this is fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from yingyan.calibration.fusion_fit import save_fusion, with_threshold
from yingyan.cli.main import app
from yingyan.comparison.thresholds import (
    default_threshold,
    get_threshold,
    known_thresholds,
    parse_thresholds,
)
from yingyan.embedding.fusion import FusionMember, FusionSpec, load_fusion
from yingyan.embedding.manifest import BUILT_IN, built_in_manifest, parse_manifest
from yingyan.errors import ConfigError, ModelError

PINNED = {"dlib_resnet_v1": "55533b28a958", "mobilefacenet": "b7120c095d60"}


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_manifest_loads_with_its_thresholds(name: str) -> None:
    manifest = built_in_manifest(name)
    if manifest.sha256 is None:  # a family (arcface): no weights, so nothing measured
        assert manifest.thresholds is None
        with pytest.raises(ConfigError, match="no thresholds"):
            get_threshold(name)
        return
    assert manifest.thresholds is not None
    for t in manifest.thresholds.entries.values():
        assert t.model == name and -1 <= t.score <= 1 and t.source and t.dataset


@pytest.mark.parametrize("model", sorted(PINNED))
def test_the_default_is_the_strict_threshold_for_each_model_id(model: str) -> None:
    version = PINNED[model]
    strict = get_threshold(f"{model}@{version}")
    assert strict is default_threshold(model) and strict.name == "strict"
    assert strict.fmr == 1e-4 and strict.worst_group and "calibrate threshold" in strict.source
    standard = get_threshold(model, "standard")
    assert standard.fmr == 1e-3 and standard.score < strict.score
    assert known_thresholds(model)[0] is strict
    # measured on identity-labelled pairs; UTKFace's bound (its same-person pairs count as
    # impostors) is kept by name and is stricter still
    assert "lfw-unpaired-gender" in strict.source
    assert get_threshold(model, "utkface-strict").score > strict.score
    with pytest.raises(ConfigError, match="measured on weights"):
        get_threshold(f"{model}@000000000000")  # other weights: not these thresholds


def test_dlib_keeps_its_legacy_threshold_by_name() -> None:
    legacy = get_threshold("dlib_resnet_v1", "lfw-devtrain")
    assert legacy.score == 0.912 and legacy.fmr is None
    known = "known: lfw-devtrain, standard, strict, utkface-standard, utkface-strict"
    with pytest.raises(ConfigError, match=known):
        get_threshold("dlib_resnet_v1", "nonsense")


def _manifest_doc(rows: list[dict[str, object]], sha: str | None = "a" * 64) -> dict[str, Any]:
    model = {"name": "toy", "format": "onnx", "licence": "x", "training_data": "y"}
    if sha:
        model["sha256"] = sha
    return {
        "model": model,
        "input": {
            "size": 112,
            "colour": "RGB",
            "layout": "NCHW",
            "dtype": "float32",
            "batch": "dynamic",
        },
        "alignment": {"template": "arcface-112"},
        "output": {"dimension": 128},
        "threshold": rows,
    }


@pytest.mark.parametrize(
    ("rows", "sha", "message"),
    [
        ([{"name": "strict", "score": 0.5, "source": "s"}], None, "pin its 'sha256'"),
        ([{"name": "strict", "score": 1.5, "source": "s"}], "a" * 64, r"\[-1, 1\]"),
        ([{"name": "loose", "score": 0.5, "source": "s"}], "a" * 64, "no threshold named"),
        ([{"name": "strict", "score": 0.5}], "a" * 64, "needs name, score and source"),
        ([{"name": "strict", "score": 0.5, "source": "s", "fmr": 2}], "a" * 64, "fmr"),
    ],
)
def test_bad_manifest_thresholds_fail_at_load(
    rows: list[dict[str, object]], sha: str | None, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        parse_manifest(_manifest_doc(rows, sha), "test")


def _fusion(name: str) -> FusionSpec:
    members = (
        FusionMember("dlib_resnet_v1", "dlib_resnet_v1@55533b28a958", 0.55, 0.837, 0.035),
        FusionMember("m.onnx", "mobilefacenet@b7120c095d60", 0.45, 0.0129, 0.1015),
    )
    return FusionSpec(name, members, fitted_on="test")


ROW = {"name": "strict", "score": 0.9425, "fmr": 1e-4, "worst_group": "g", "source": "test"}


def test_a_fusions_thresholds_travel_with_its_file(tmp_path: Path) -> None:
    bare = _fusion("travel")
    with pytest.raises(ConfigError, match="no thresholds are known"):
        get_threshold(str(bare.model_id))
    spec = with_threshold(bare, ROW)
    spec = with_threshold(spec, ROW | {"name": "standard", "score": 0.9057, "fmr": 1e-3})
    assert spec.model_id == bare.model_id and spec.thresholds_version == 2
    path = tmp_path / "travel.json"
    save_fusion(spec, path)
    loaded = load_fusion(path)
    assert loaded.thresholds_version == 2
    strict = get_threshold(str(loaded.model_id))
    assert (strict.name, strict.score, strict.model) == ("strict", 0.9425, "fusion:travel")
    assert get_threshold(loaded.model_id.name, "standard").score == 0.9057
    # measured again: a new thresholds version, the same model id (templates stay valid)
    save_fusion(with_threshold(loaded, ROW | {"score": 0.95}), path)
    again = load_fusion(path)
    assert again.model_id == bare.model_id and again.thresholds_version == 3
    assert get_threshold(str(again.model_id)).score == 0.95


def test_a_changed_fusion_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edited.json"
    save_fusion(with_threshold(_fusion("edited"), ROW), path)
    doc = json.loads(path.read_text())
    doc["thresholds"]["entries"][0]["score"] = 0.5  # a looser threshold typed in by hand
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="thresholds edited by hand"):
        load_fusion(path)
    doc = json.loads(path.read_text())
    doc["members"][0]["weight"] = 0.9
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="model id differs"):
        load_fusion(path)


def test_a_fusion_threshold_must_be_well_formed() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_thresholds("m", None, [ROW, ROW], "test")
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        with_threshold(_fusion("bad"), ROW | {"score": 3})


def test_calibrate_threshold_into_refuses_bad_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["calibrate", "threshold", "--dataset", "utkface", "--root", str(tmp_path)]
    r = runner.invoke(app, [*base, "--into", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "no such fusion file" in r.output
