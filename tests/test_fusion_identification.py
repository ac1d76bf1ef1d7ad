"""LFW closed-set identification with fused templates (`yingyan eval lfw-identification` under
YINGYAN_FUSION), on a small LFW folder: the fused gallery goes through the gallery service,
the members' rates come from the same extraction, and the service's search agrees with an
exact one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from yingyan import Engine, EngineConfig
from yingyan.cli.main import app
from yingyan.embedding.fusion import FusionMember, FusionSpec, fusion_json
from yingyan.evaluation.lfw import extract_images

from .conftest import shared_path

pytestmark = pytest.mark.shared

PEOPLE, SINGLES, PER_PERSON = 20, 10, 3


@pytest.fixture(scope="module")
def small_lfw(lfw_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 people with 3 images (gallery + 2 probes each) and 10 people of one image (gallery
    distractors), linked into an LFW-shaped folder."""
    root = tmp_path_factory.mktemp("small-lfw")
    many: list[list[Path]] = []
    one: list[list[Path]] = []
    for folder in sorted((lfw_root / "lfw-deepfunneled").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= PER_PERSON and len(many) < PEOPLE:
            many.append(files[:PER_PERSON])
        elif len(files) == 1 and len(one) < SINGLES:
            one.append(files)
        if len(many) == PEOPLE and len(one) == SINGLES:
            break
    for files in many + one:
        person = root / "lfw-deepfunneled" / files[0].parent.name
        person.mkdir(parents=True)
        for f in files:
            (person / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def fusion_file(yunet_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dlib + MobileFaceNet fusion with the shipped fit's parameters (written, not fitted)."""
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    ids = [
        str(Engine(EngineConfig(detector="yunet", yunet_model=yunet_model, **kw)).model_id)  # type: ignore[arg-type]
        for kw in ({}, {"recognizer_model": mfn})
    ]
    spec = FusionSpec(
        name="test-dlib+mobilefacenet",
        members=(
            FusionMember("dlib_resnet_v1", ids[0], 0.55, 0.837048, 0.035214),
            FusionMember(str(mfn), ids[1], 0.45, 0.012871, 0.101471),
        ),
        fitted_on="written by the test",
    )
    path = tmp_path_factory.mktemp("fusion") / "fusion.json"
    path.write_text(fusion_json(spec))
    return path


def test_fused_identification_reports_fused_and_member_rates(
    small_lfw: Path,
    fusion_file: Path,
    yunet_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YINGYAN_FUSION", str(fusion_file))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "eval", "lfw-identification", "--root", str(small_lfw), "--data-dir",
            str(tmp_path / "data"), "--detector", "yunet", "--yunet-model", str(yunet_model),
            "--workers", "1", "--json-out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["enrolled"], report["probes"]) == (PEOPLE + SINGLES, PEOPLE * 2)
    members = report["members"]
    fused = next(k for k in members if k.startswith("fusion:test-dlib+mobilefacenet@"))
    assert sorted(members) == sorted(
        [fused, "dlib_resnet_v1@55533b28a958", "mobilefacenet@b7120c095d60"]
    )
    # the gallery service (SQLite + FAISS) ranks as an exact search of the same templates
    for k in ("rank1", "rank5", "rank10"):
        assert members[fused][k] == pytest.approx(report[k])
    for rates in members.values():
        assert 0.5 <= rates["rank1"] <= rates["rank5"] <= rates["rank10"] <= 1
    assert "mobilefacenet@b7120c095d60, same extraction" in result.output


def test_member_templates_of_the_fused_extraction_are_each_models_own(
    small_lfw: Path, fusion_file: Path, yunet_model: Path
) -> None:
    """The members' rates are only a same-run comparison if a member's part of the fused
    extraction is the template that model alone gives the same face."""
    images = small_lfw / "lfw-deepfunneled"
    names = [p.relative_to(images).as_posix() for p in sorted(images.glob("*/*.jpg"))[:2]]
    yunet = EngineConfig(detector="yunet", yunet_model=yunet_model)
    fused = extract_images(
        images, names, yunet.with_(fusion=fusion_file), show_progress=False, workers=1
    )
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    for member, config in enumerate((yunet, yunet.with_(recognizer_model=mfn))):
        alone = extract_images(images, names, config, show_progress=False, workers=1)
        for n in names:
            a = fused[n].from_rows(slice(None), member=member)
            b = alone[n].template_vector(flip=True, jitter=0)
            assert float(np.dot(a, b)) == pytest.approx(1.0, abs=1e-4)
