"""`yingyan gallery migrate` on enrolled LFW people (images kept), through the CLI only:
`--abandon` gives a migration up (staged templates deleted, gallery untouched, audited),
`--to-model` moves a dlib gallery to MobileFaceNet alone (with YuNet), and bad input is
refused with a message and exit 2. `tests/test_migration.py` covers the fusion target, a crash,
concurrent searches and PostgreSQL; SQLite is enough here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from yingyan import Engine, EngineConfig
from yingyan.audit import verify
from yingyan.cli.main import app
from yingyan.enrollment import file_sha256
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.privacy import key_source, open_cipher
from yingyan.store import GalleryRow, TemplateRow, open_database
from yingyan.store.tables import AuditEntryRow, StagedTemplateRow

from .conftest import shared_path

pytestmark = pytest.mark.shared

PEOPLE = 5
runner = CliRunner()
# The recognizer a command uses comes from the environment unless an option gives it.
_ENV = ("YINGYAN_RECOGNIZER_MODEL", "YINGYAN_RECOGNIZER_MANIFEST", "YINGYAN_FUSION")


@dataclass(frozen=True)
class Setup:
    data: Path
    yunet: Path
    mfn: Path
    people: dict[str, list[Path]]  # 2 enrolled images, then the probe

    @property
    def detector(self) -> list[str]:
        return ["--detector", "yunet", "--yunet-model", str(self.yunet)]


def _cli(data: Path, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """A `yingyan` command on the test's data folder, in this process."""
    environment: dict[str, str | None] = dict.fromkeys(_ENV)
    environment.update(env or {})
    result = runner.invoke(app, [*args, "--data-dir", str(data)], env=environment)
    assert "Traceback" not in result.output, result.output
    if result.exit_code not in (0, 2):  # an unexpected exception, not a refusal
        raise AssertionError(result.output) from result.exception
    return result.exit_code, result.output


def _people(lfw: Path) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for folder in sorted((lfw / "lfw-deepfunneled").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= 3:
            people[folder.name] = files[:3]
        if len(people) == PEOPLE:
            break
    return people


def _gallery(tmp_path: Path, lfw_root: Path, yunet_model: Path) -> Setup:
    """A dlib gallery `lfw` with images kept: PEOPLE x 2 LFW images, enrolled by the CLI."""
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    setup = Setup(tmp_path / "data", yunet_model, mfn, _people(lfw_root))
    assert len(setup.people) == PEOPLE
    code, out = _cli(
        setup.data, "gallery", "create", "lfw", "--purpose", "test", "--legal-basis", "test",
        "--keep-images",
    )  # fmt: skip
    assert code == 0, out
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["external_id", "image"])
        for person, files in setup.people.items():
            for p in files[:2]:
                w.writerow([person, str(p)])
    code, out = _cli(
        setup.data, "enroll", "--gallery", "lfw", "--manifest", str(manifest), "--face",
        "largest", *setup.detector,
    )  # fmt: skip
    assert code == 0 and f"enrolled {2 * PEOPLE}," in out, out
    return setup


def _state(data: Path) -> tuple[str, set[tuple[int, str]], int]:
    """The gallery's model, its templates (id, model) and how many rows are staged."""
    with open_database(None, data) as db, db.read() as s:
        model = s.scalar(select(GalleryRow.model).where(GalleryRow.name == "lfw"))
        rows = s.execute(select(TemplateRow.id, TemplateRow.model_name, TemplateRow.model_version))
        templates = {(int(i), f"{n}@{v}") for i, n, v in rows}
        staged = s.scalar(select(func.count()).select_from(StagedTemplateRow)) or 0
    return str(model), templates, int(staged)


def _audit(data: Path) -> list[tuple[str, dict[str, Any]]]:
    with open_database(None, data) as db, db.read() as s:
        assert verify(s).ok
        return [
            (op, d) for op, d in s.execute(select(AuditEntryRow.operation, AuditEntryRow.details))
        ]


def _identify(setup: Setup, env: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """Each person's top candidate for their third image (not enrolled)."""
    probes = [str(files[2]) for files in setup.people.values()]
    code, out = _cli(
        setup.data, "identify", "--gallery", "lfw", *probes, "--k", "1", *setup.detector,
        "--json", env=env,
    )  # fmt: skip
    if code:
        return code, out
    return code, [r["candidates"][0]["external_id"] for r in json.loads(out)["results"]]


def test_abandon_deletes_the_staged_templates_and_leaves_the_gallery_as_it_was(
    tmp_path: Path, lfw_root: Path, yunet_model: Path
) -> None:
    setup = _gallery(tmp_path, lfw_root, yunet_model)
    # One subject enrolled without its image (as before `--keep-images`): it cannot migrate,
    # so a migration stages everything and then refuses to switch.
    dlib = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model))
    lonely = next(  # someone else's face: each person's third image is their probe
        f
        for folder in sorted((lfw_root / "lfw-deepfunneled").iterdir())
        if folder.name not in setup.people
        for f in sorted(folder.glob("*.jpg"))
    )
    image = dlib.load(lonely)
    face = dlib.faces(image, [dlib.detect(image)[0]])[0]
    assert face.template is not None
    cipher = open_cipher(key_source(None, {}, setup.data / "template-keys.json"))
    with open_database(None, setup.data) as db:
        service = GalleryService(db, setup.data / "index", IndexSpec(), cipher=cipher)
        item = EnrollItem("no-image", face.template, face.quality.score, file_sha256(lonely))
        service.enroll("lfw", [item])
        service.close()
    before = _state(setup.data)
    assert before[2] == 0 and len(before[1]) == 2 * PEOPLE + 1
    index_files = sorted((setup.data / "index").glob("gallery-*.faiss"))

    target = ["--to-model", str(setup.mfn), *setup.detector]
    code, out = _cli(setup.data, "gallery", "migrate", "lfw", *target, "--yes")
    assert code == 2 and "no-image" in out, out
    model, templates, staged = _state(setup.data)
    assert (model, templates, staged) == (before[0], before[1], 2 * PEOPLE)

    code, out = _cli(setup.data, "gallery", "migrate", "lfw", "--abandon")
    assert code == 0, out
    assert f"{2 * PEOPLE} staged templates deleted" in out
    assert _state(setup.data) == before  # same model, same templates, nothing staged
    assert sorted((setup.data / "index").glob("gallery-*.faiss")) == index_files
    code, found = _identify(setup)  # still searched with dlib, as before
    assert code == 0 and found == list(setup.people), found
    ops = _audit(setup.data)
    abandoned = [d for op, d in ops if op == "gallery.migrate.abandon"]
    assert abandoned == [{"staged_deleted": 2 * PEOPLE}]
    assert not [op for op, _ in ops if op == "gallery.migrate"]  # never switched

    # Nothing left to abandon: refused, and not audited again.
    code, out = _cli(setup.data, "gallery", "migrate", "lfw", "--abandon")
    assert code == 2 and "no staged templates" in out, out
    assert sum(op == "gallery.migrate.abandon" for op, _ in _audit(setup.data)) == 1
    code, out = _cli(setup.data, "gallery", "migrate", "lfw", *target, "--dry-run", "--json")
    assert code == 0, out
    status = json.loads(out)
    assert (status["staged"], status["pending"]) == (0, 2 * PEOPLE)


def test_to_model_moves_a_dlib_gallery_to_mobilefacenet(
    tmp_path: Path, lfw_root: Path, yunet_model: Path
) -> None:
    setup = _gallery(tmp_path, lfw_root, yunet_model)
    dlib_model, dlib_templates, _ = _state(setup.data)
    assert {m for _, m in dlib_templates} == {dlib_model} and "dlib" in dlib_model
    code, found = _identify(setup)
    assert code == 0 and found == list(setup.people), found

    target = ["--to-model", str(setup.mfn), *setup.detector]
    code, out = _cli(setup.data, "gallery", "migrate", "lfw", *target, "--dry-run", "--json")
    assert code == 0, out
    status = json.loads(out)
    assert (status["pending"], status["staged"], status["unmigrated"]) == (2 * PEOPLE, 0, [])
    assert _state(setup.data) == (dlib_model, dlib_templates, 0)  # a dry run changes nothing

    code, out = _cli(setup.data, "gallery", "migrate", "lfw", *target, "--yes", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert (report["removed"], report["added"], report["re_enrol"]) == (2 * PEOPLE, 2 * PEOPLE, [])
    mfn_model = report["target_model"]
    assert report["source_model"] == dlib_model and "mobilefacenet" in mfn_model.lower()

    model, templates, staged = _state(setup.data)
    assert model == mfn_model and staged == 0 and len(templates) == 2 * PEOPLE
    assert {m for _, m in templates} == {mfn_model}  # no dlib template left
    assert not {i for i, _ in templates} & {i for i, _ in dlib_templates}
    saved = sorted(p.name for p in (setup.data / "index").glob("gallery-*.faiss"))
    assert len(saved) == 1 and "dlib" not in saved[0], saved

    # MobileFaceNet probes find each person at rank 1; dlib probes are refused, never compared.
    code, found = _identify(setup, env={"YINGYAN_RECOGNIZER_MODEL": str(setup.mfn)})
    assert code == 0 and found == list(setup.people), found
    code, out = _identify(setup)
    assert code == 2 and "model" in out, out

    ops = _audit(setup.data)
    (switch,) = [d for op, d in ops if op == "gallery.migrate"]
    assert (switch["templates_removed"], switch["templates_added"]) == (2 * PEOPLE, 2 * PEOPLE)
    assert switch["target_model"] == mfn_model and switch["subjects_dropped"] == []
    assert sum(op == "gallery.migrate.stage" for op, _ in ops) == 1


def test_bad_migrate_input_is_refused_with_a_message(tmp_path: Path) -> None:
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    data = tmp_path / "data"
    code, out = _cli(
        data, "gallery", "create", "lfw", "--purpose", "test", "--legal-basis", "test",
        "--keep-images",
    )  # fmt: skip
    assert code == 0, out
    not_a_model = tmp_path / "notes.onnx"
    not_a_model.write_bytes(b"not an ONNX model\n" * 64)
    cases = [
        (["nope", "--to-model", str(mfn), "--dry-run"], "no gallery named 'nope'"),
        (["nope", "--to-model", str(mfn), "--yes"], "no gallery named 'nope'"),
        (["nope", "--abandon"], "no gallery named 'nope'"),
        (["lfw", "--to-model", str(tmp_path / "missing.onnx"), "--dry-run"], "not found"),
        (["lfw", "--to-fusion", str(tmp_path / "missing.json"), "--yes"], "not found"),
        (["lfw", "--to-model", str(not_a_model), "--dry-run"], "notes.onnx"),
        (["lfw", "--abandon"], "no staged templates"),
        (["lfw", "--abandon", "--to-model", str(mfn)], "without --to-model"),
        (["lfw", "--abandon", "--dry-run"], "without --dry-run"),
    ]
    for args, message in cases:
        code, out = _cli(data, "gallery", "migrate", *args)
        assert code == 2, (args, out)
        assert message in out and "error" in out, (args, out)
    model, templates, staged = _state(data)
    assert "dlib" in model and templates == set() and staged == 0
    assert not [op for op, _ in _audit(data) if op.startswith("gallery.migrate")]
