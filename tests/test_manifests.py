"""Recognizers described by manifests, and fused templates, on the real MobileFaceNet and dlib
models with LFW faces: the fixed-batch graph rewritten on load gives the same rows as single
runs, wrong manifests fail at load naming the disagreement, and a fusion's one inner product is
the weighted sum of the members' scores that its file states."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from yingyan import Engine, EngineConfig, compare
from yingyan.cli.main import app
from yingyan.embedding.fusion import load_fusion
from yingyan.embedding.manifest import built_in_manifest, resolve_manifest
from yingyan.errors import ModelError

from .conftest import shared_path

pytestmark = pytest.mark.shared

MFN_SHA = "b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507"


@pytest.fixture(scope="module")
def mfn() -> Path:
    return shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")


@pytest.fixture(scope="module")
def lfw_people(lfw_root: Path) -> dict[str, list[Path]]:
    """LFW people with at least 4 images, 40 of them, 4 images each."""
    images = lfw_root / "lfw-deepfunneled"
    people: dict[str, list[Path]] = {}
    for folder in sorted(images.iterdir()):
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= 4:
            people[folder.name] = files[:4]
        if len(people) == 40:
            break
    return people


def _mfn_engine(mfn: Path, yunet_model: Path, **kw: object) -> Engine:
    return Engine(
        EngineConfig(detector="yunet", yunet_model=yunet_model, recognizer_model=mfn, **kw)
    )  # type: ignore[arg-type]


def test_mobilefacenet_is_found_by_its_sha256_and_takes_batches(
    mfn: Path, yunet_model: Path, lfw_people: dict[str, list[Path]]
) -> None:
    manifest = resolve_manifest(mfn)
    assert manifest.source == "built-in:mobilefacenet" and manifest.sha256 == MFN_SHA
    e = _mfn_engine(mfn, yunet_model, keep_chips=True)
    assert str(e.model_id) == "mobilefacenet@b7120c095d60"
    assert "Apache-2.0" in e.describe()["licence"]
    chips = []
    for paths in list(lfw_people.values())[:3]:
        image = e.load(paths[0])
        (face,) = e.faces(image, [e.detect(image)[0]], embed=False)
        assert face.chip is not None
        chips.append(face.chip)
    assert e.embedder.batched  # type: ignore[attr-defined]  # the Reshape [1, -1] was rewritten
    batch = e.embedder.embed(chips)
    singles = np.concatenate([e.embedder.embed([c]) for c in chips])
    assert batch.shape == (3, 128)
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    # same person scores above different people (a wrong normalisation breaks this)
    (a, b), (c, _) = [
        [e.templates(e.load(p))[0] for p in ps[:2]] for ps in list(lfw_people.values())[:2]
    ]
    assert compare(a, b).score > compare(a, c).score + 0.2


def test_a_manifest_that_disagrees_with_the_graph_fails_at_load(
    mfn: Path, yunet_model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "renamed.onnx"
    shutil.copyfile(mfn, copy)
    text = (
        Path(__file__).parents[1] / "src/yingyan/embedding/manifests/mobilefacenet.toml"
    ).read_text()
    copy.with_suffix(".toml").write_text(text.replace("dimension = 128", "dimension = 512"))
    e = _mfn_engine(copy, yunet_model)
    with pytest.raises(ModelError, match="dimension 512"):
        e.embedder.embed([np.zeros((112, 112, 3), np.uint8)])
    copy.with_suffix(".toml").write_text(text.replace("size = 112", "size = 128"))
    with pytest.raises(ModelError, match="128x128"):
        _mfn_engine(copy, yunet_model).embedder.embed([np.zeros((128, 128, 3), np.uint8)])
    copy.with_suffix(".toml").write_text(text.replace('colour = "RGB"', 'colour = "YUV"'))
    with pytest.raises(ModelError, match="'colour' must be one of"):
        resolve_manifest(copy)
    copy.with_suffix(".toml").write_text(text + "\n[extra]\nx = 1\n")
    with pytest.raises(ModelError, match="unknown section"):
        resolve_manifest(copy)


def test_pinned_weights_are_checked_and_a_model_without_manifest_is_refused(
    mfn: Path, tmp_path: Path
) -> None:
    other = tmp_path / "MobileFaceNet.onnx"
    other.write_bytes(mfn.read_bytes()[:-1] + b"\0")  # one byte differs
    manifest = built_in_manifest("mobilefacenet")
    with pytest.raises(ModelError, match="not the mobilefacenet weights"):
        manifest.check_file(other)
    with pytest.raises(ModelError, match="no manifest for this recognizer"):
        resolve_manifest(other)
    assert resolve_manifest(other, "arcface").model_name(other) == "arcface:MobileFaceNet"


def _labels_csv(people: dict[str, list[Path]], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "set"])
        for person, files in people.items():
            for p in files:
                w.writerow([str(p), person, "reference"])
    return path


def test_a_fitted_fusion_scores_as_its_file_says(
    mfn: Path, yunet_model: Path, lfw_people: dict[str, list[Path]], tmp_path: Path
) -> None:
    """`yingyan calibrate fusion` on 160 LFW images (40 people x 4): the fused template's inner
    product equals Σ a_i s_i of the members' own templates, and edits are refused."""
    out = tmp_path / "fusion.json"
    labels = _labels_csv(lfw_people, tmp_path / "labels.csv")
    result = CliRunner().invoke(
        app,
        [
            "calibrate", "fusion", "--dataset", "csv", "--root", str(labels), "--out", str(out),
            "--member", "dlib_resnet_v1", "--member", str(mfn), "--detector", "yunet",
            "--yunet-model", str(yunet_model), "--workers", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = load_fusion(out)
    ref = spec.reference
    assert ref["genuine_pairs"] >= 200 and ref["impostor_pairs"] > 12_000
    assert ref["fused"]["d_prime"] >= max(m["d_prime"] for m in ref["members"].values()) * 0.98
    fused = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model, fusion=out))
    dlib = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model))
    mobile = _mfn_engine(mfn, yunet_model)
    paths = [*lfw_people[next(iter(lfw_people))][:2], list(lfw_people.values())[1][0]]
    dets = []
    for p in paths:
        image = fused.load(p)
        dets.append((image, [fused.detect(image)[0]]))
    f, d, m = ([e.faces(im, ds)[0].template for im, ds in dets] for e in (fused, dlib, mobile))
    assert f[0] is not None and f[0].vector.shape == (256,)
    assert str(f[0].model) == str(spec.model_id)
    a = spec.coefficients
    for i, j in ((0, 1), (0, 2)):
        expected = a[0] * compare(d[i], d[j]).score + a[1] * compare(m[i], m[j]).score  # type: ignore[arg-type]
        assert compare(f[i], f[j]).score == pytest.approx(expected, abs=1e-5)  # type: ignore[arg-type]
    # an edited weight changes the model id the file claims: refused
    doc = json.loads(out.read_text())
    doc["members"][0]["weight"] = 0.9
    out.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="edited after fitting"):
        load_fusion(out)
