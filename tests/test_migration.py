"""Migration of a gallery between recognizer models, on real LFW faces and real processes.

A gallery of 20 LFW people enrolled with dlib (images kept) moves to a fusion of dlib and
MobileFaceNet while another process searches it without pause: the migrating CLI is killed
(SIGKILL) after staging began and rerun; the switch is refused while one subject has no kept
image, then made with --drop-unmigrated. No search fails or compares across models, B-probes
find the right people afterwards, and no template or vector of the old model is left in the
database (templates, staging) or the index files.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from yingyan import Engine, EngineConfig
from yingyan.audit import verify
from yingyan.cli.main import app
from yingyan.detection.base import largest
from yingyan.embedding.fusion import FusionMember, FusionSpec, fusion_json
from yingyan.enrollment import enroll_manifest, file_sha256
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.privacy import key_source, open_cipher
from yingyan.store import GalleryRow, TemplateRow, create_gallery
from yingyan.store.tables import AuditEntryRow, StagedTemplateRow

from ._index import stored_faiss
from .conftest import Target, shared_path

pytestmark = pytest.mark.shared

PEOPLE = 20
PROBED = 6  # people searched for by the other process (their third image)

SEARCHER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from yingyan.gallery.index import IndexSpec
    from yingyan.gallery.service import GalleryService
    from yingyan.privacy import key_source, open_cipher
    from yingyan.store import open_database
    from yingyan.types import ModelId, Template
    url, data, probes, stop, out = sys.argv[1] or None, *map(Path, sys.argv[2:])
    cipher = open_cipher(key_source(None, {}, data / "template-keys.json"))
    service = GalleryService(open_database(url, data), data / "index", IndexSpec(), cipher=cipher)
    made = {m: np.load(probes / f"{i}.npy") for i, m in enumerate(
        json.loads((probes / "models.json").read_text()))}
    with out.open("w") as f:
        while not stop.exists():
            used = []
            def probes_for(model):
                used.append(model)
                name, _, version = model.rpartition("@")
                return [Template(v, ModelId(name, version)) for v in made[model]]
            row = {"t": time.time()}
            try:
                found = service.identify_current("lfw", probes_for, k=1)
                row |= {"model": used[-1], "hits": [[c.external_id, c.template_id]
                        for cs in found for c in cs]}
            except Exception as exc:
                row |= {"error": f"{type(exc).__name__}: {exc}"}
            f.write(json.dumps(row) + "\\n")
            f.flush()
            time.sleep(0.05)  # a camera's pace: leaves the two cores to the migration
    """
)


def _people(lfw: Path) -> dict[str, list[Path]]:
    images = lfw / "lfw-deepfunneled"
    people: dict[str, list[Path]] = {}
    for folder in sorted(images.iterdir()):
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= 3:
            people[folder.name] = files[:3]
        if len(people) == PEOPLE:
            return people
    return people


def _fusion(tmp: Path, mfn: Path, dlib: Engine, mobile: Engine) -> Path:
    """A dlib + MobileFaceNet fusion with fixed weights (not fitted: the test needs a second
    model, not the best one)."""
    members = (
        FusionMember("dlib_resnet_v1", str(dlib.model_id), 1.0, 0.0, 0.1),
        FusionMember(str(mfn), str(mobile.model_id), 1.0, 0.0, 0.1),
    )
    spec = FusionSpec("lfw-test", members, fitted_on="fixed weights (test)")
    path = tmp / "fusion.json"
    path.write_text(fusion_json(spec))
    return path


def _cli(target: Target, *args: str) -> list[str]:
    where = ["--data-dir", str(target.data_dir)]
    where += ["--database-url", target.url] if target.url else []
    return [sys.executable, "-m", "yingyan.cli.main", *args, *where]


def _probe(engine: Engine, paths: list[Path]) -> np.ndarray[Any, Any]:
    out = []
    for p in paths:
        image = engine.load(p)
        chosen = largest(engine.detect(image))
        assert chosen is not None
        face = engine.faces(image, [chosen])[0]
        assert face.template is not None
        out.append(face.template.vector)
    return np.stack(out)


def _counts(service: GalleryService) -> tuple[str, int, int]:
    with service.db.read() as s:
        model = s.scalar(select(GalleryRow.model).where(GalleryRow.name == "lfw"))
        staged = s.scalar(select(func.count()).select_from(StagedTemplateRow)) or 0
        templates = s.scalar(select(func.count()).select_from(TemplateRow)) or 0
    return str(model), int(staged), int(templates)


def test_a_gallery_moves_to_the_fused_model_while_another_process_searches(
    target: Target, lfw_root: Path, yunet_model: Path, tmp_path: Path
) -> None:
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    people = _people(lfw_root)
    assert len(people) == PEOPLE
    dlib = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model))
    mobile = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model, recognizer_model=mfn))
    fusion = _fusion(tmp_path, mfn, dlib, mobile)
    fused = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model, fusion=fusion))
    a_model, b_model = str(dlib.model_id), str(fused.model_id)

    # The gallery: 20 people x 2 images kept, and one subject enrolled without its image.
    target.data_dir.mkdir(parents=True, exist_ok=True)
    data = target.data_dir
    cipher = open_cipher(key_source(None, {}, data / "template-keys.json"))
    db = target.open()
    service = GalleryService(db, data / "index", IndexSpec(), cipher=cipher)
    with db.session() as s:
        create_gallery(
            s, name="lfw", kind="enrollment", purpose="test", legal_basis="test",
            model=dlib.model_id, keep_images=True,
        )  # fmt: skip
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["external_id", "image", "name"])
        for person, files in people.items():
            for p in files[:2]:
                w.writerow([person, str(p), person.replace("_", " ")])
    config = EngineConfig(detector="yunet", yunet_model=yunet_model)
    report = enroll_manifest(
        service, "lfw", manifest, config, policy="largest", show_progress=False
    )
    assert report.count("enrolled") == 2 * PEOPLE, report.reasons()
    lonely = next(iter(people.values()))[2]
    image = dlib.load(lonely)
    face = dlib.faces(image, [dlib.detect(image)[0]])[0]
    assert face.template is not None
    item = EnrollItem("no-image", face.template, face.quality.score, file_sha256(lonely))
    service.enroll("lfw", [item])  # no image: this subject cannot migrate
    with db.read() as s:
        a_ids = set(s.scalars(select(TemplateRow.id)))
    a_vectors = [v for _, v in service.subject_vectors("lfw", next(iter(people)))]

    # Probes of both models for the searching process (the third image of 6 people).
    probed = list(people)[:PROBED]
    probes = tmp_path / "probes"
    probes.mkdir()
    paths = [people[p][2] for p in probed]
    for i, engine in enumerate((dlib, fused)):
        np.save(probes / f"{i}.npy", _probe(engine, paths))
    (probes / "models.json").write_text(json.dumps([a_model, b_model]))

    stop, log = tmp_path / "stop", tmp_path / "searches.jsonl"
    args = [target.url or "", str(data), str(probes), str(stop), str(log)]
    searcher = subprocess.Popen(
        [sys.executable, "-c", SEARCHER, *args], stderr=subprocess.PIPE, text=True
    )
    try:
        while not log.exists() or log.read_text().count("\n") < 3:
            assert searcher.poll() is None, searcher.stderr and searcher.stderr.read()
            time.sleep(0.2)
        target_opts = ["--to-fusion", str(fusion), "--detector", "yunet"]
        target_opts += ["--yunet-model", str(yunet_model)]

        # A dry run lists the subject without a kept image, and changes nothing.
        dry = subprocess.run(
            _cli(target, "gallery", "migrate", "lfw", *target_opts, "--dry-run", "--json"),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        status = json.loads(dry.stdout)
        assert [u["external_id"] for u in status["unmigrated"]] == ["no-image"]
        assert status["pending"] == 2 * PEOPLE and status["staged"] == 0

        # A real fault: the migrating process is killed once staging has begun.
        run = subprocess.Popen(
            _cli(target, "gallery", "migrate", "lfw", *target_opts, "--yes", "--batch-size", "1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while _counts(service)[1] == 0:
            assert run.poll() is None, "the migration ended before it could be killed"
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=60) == -signal.SIGKILL
        model, staged, templates = _counts(service)
        assert model == a_model and 0 < staged < 2 * PEOPLE and templates == 2 * PEOPLE + 1

        # Rerun: staging completes, but the switch is refused while "no-image" would be lost.
        refused = subprocess.run(
            _cli(target, "gallery", "migrate", "lfw", *target_opts, "--yes"),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "no-image" in refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr
        assert _counts(service) == (a_model, 2 * PEOPLE, 2 * PEOPLE + 1)

        done = subprocess.run(
            _cli(target, "gallery", "migrate", "lfw", *target_opts, "--yes", "--drop-unmigrated"),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "re-enrol no-image" in done.stdout
        switched = time.time()
        while not any(
            json.loads(line)["t"] > switched + 0.5 for line in log.read_text().splitlines()
        ):
            assert searcher.poll() is None, searcher.stderr and searcher.stderr.read()
            time.sleep(0.2)
    finally:
        stop.touch()
        _, err = searcher.communicate(timeout=120)
    assert searcher.returncode == 0, err

    with db.read() as s:
        b_ids = set(s.scalars(select(TemplateRow.id)))
        models = set(s.execute(select(TemplateRow.model_name, TemplateRow.model_version)))
        staged_left = s.scalar(select(func.count()).select_from(StagedTemplateRow))
    assert len(b_ids) == 2 * PEOPLE and not b_ids & a_ids and staged_left == 0
    assert {f"{n}@{v}" for n, v in models} == {b_model}

    # No search failed; each compared one model's probes with that model's templates only.
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [r for r in rows if "error" in r]
    before = [r for r in rows if r["model"] == a_model]
    after = [r for r in rows if r["model"] == b_model]
    assert before and after
    for r, own in [(r, a_ids) for r in before] + [(r, b_ids) for r in after]:
        assert {t for _, t in r["hits"]} <= own, r
    assert rows.index(after[0]) > rows.index(before[-1])  # one switch, never back
    # After the switch, B-probes find the right people (rank 1).
    assert [name for name, _ in after[-1]["hits"]] == probed

    # No vector of the old model on disk: one index file, of B, holding exactly B's ids.
    saved = sorted(p.name for p in (data / "index").glob("gallery-*.faiss"))
    assert len(saved) == 1 and "fusion" in saved[0], saved
    stored = stored_faiss(data / "index" / saved[0], cipher)
    assert set(stored.ids) == b_ids
    assert not any(stored.holds_bytes(v) for v in a_vectors)

    # Audited: the staging runs and the one switch, with its counts; the chain holds.
    with db.read() as s:
        ops = list(s.execute(select(AuditEntryRow.operation, AuditEntryRow.details)))
        assert verify(s).ok
    switches = [d for op, d in ops if op == "gallery.migrate"]
    assert len(switches) == 1 and switches[0]["templates_added"] == 2 * PEOPLE
    assert switches[0]["templates_removed"] == 2 * PEOPLE + 1
    assert sum(op == "gallery.migrate.stage" for op, _ in ops) == 2  # the killed run had none

    # The subject listed for re-enrolment is enrolled again from a manifest with the new model.
    again = tmp_path / "again.csv"
    again.write_text(f"external_id,image\nno-image,{lonely}\n")
    fused_config = EngineConfig(detector="yunet", yunet_model=yunet_model, fusion=fusion)
    redone = enroll_manifest(service, "lfw", again, fused_config, show_progress=False)
    assert redone.count("enrolled") == 1
    service.close()
    db.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of"),
        (["--to-fusion", "a.json", "--to-model", "b.onnx"], "exactly one of"),
        (["--to-fusion", "missing.json", "--dry-run"], "not found"),
        (["--to-model", "m.onnx", "--manifest", "x"], "add --yes"),
        (["--to-fusion", "missing.json"], "add --yes"),
    ],
)
def test_bad_migration_input_is_refused_with_a_message(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, ["gallery", "migrate", "lfw", *args, "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
