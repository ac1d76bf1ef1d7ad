"""Templates staged by a gallery migration between models (`staged_templates`) are biometric
data like the gallery's own, on real LFW faces: key rotation re-seals them and a key one of them
still uses is not retired (through the `yingyan encryption` commands), and erasing a subject, a
template or the whole gallery takes their staged rows with them, bytes included.

A gallery of 4 LFW people x 2 kept images is enrolled with dlib (YuNet detections) and staged
for MobileFaceNet alone, the migration's first step, with no switch yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from yingyan import Engine, EngineConfig
from yingyan.cli.main import app
from yingyan.detection.base import largest
from yingyan.enrollment import file_sha256
from yingyan.gallery import migration
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.privacy import (
    Keyring,
    TemplateCipher,
    UnknownKeyError,
    key_source,
    open_cipher,
    read_keyring,
)
from yingyan.privacy.rotation import key_usage
from yingyan.store import (
    Database,
    SubjectRow,
    TemplateOwner,
    TemplateRow,
    create_gallery,
    open_database,
    unpack_vector,
)
from yingyan.store.tables import StagedTemplateRow
from yingyan.types import Template

from .conftest import Target, shared_path

pytestmark = pytest.mark.shared

PEOPLE = 4
runner = CliRunner()


@dataclass(frozen=True)
class Lfw:
    """Enrolment items (dlib, images kept) and MobileFaceNet probes of a few LFW people."""

    items: list[EnrollItem]
    probes: dict[str, Template]  # each person's third image, made by MobileFaceNet
    dlib: Engine
    mobile: Engine


@pytest.fixture(scope="module")
def lfw(lfw_root: Path, yunet_model: Path) -> Lfw:
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    dlib = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model))
    mobile = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model, recognizer_model=mfn))
    people: dict[str, list[Path]] = {}
    for folder in sorted((lfw_root / "lfw-deepfunneled").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= 3:
            people[folder.name] = files[:3]
        if len(people) == PEOPLE:
            break
    items, probes = [], {}
    for person, files in people.items():
        for path in files[:2]:
            image = dlib.load(path)
            chosen = largest(dlib.detect(image))
            assert chosen is not None, path
            face = dlib.faces(image, [chosen])[0]
            assert face.template is not None
            items.append(
                EnrollItem(
                    person,
                    face.template,
                    face.quality.score,
                    file_sha256(path),
                    box=chosen.box,
                    image=path.read_bytes(),
                )
            )
        image = mobile.load(files[2])
        chosen = largest(mobile.detect(image))
        assert chosen is not None
        face = mobile.faces(image, [chosen])[0]
        assert face.template is not None
        probes[person] = face.template
    return Lfw(items, probes, dlib, mobile)


def _service(db: Database, data: Path, cipher: TemplateCipher) -> GalleryService:
    return GalleryService(db, data / "index", IndexSpec(), cipher=cipher)


def _enrol(db: Database, service: GalleryService, lfw: Lfw) -> None:
    with db.session() as s:
        create_gallery(
            s, name="lfw", kind="enrollment", purpose="test", legal_basis="test",
            model=lfw.dlib.model_id, keep_images=True,
        )  # fmt: skip
    assert all(new for _, new in service.enroll("lfw", lfw.items))


def _staged(db: Database, where: str = "1 = 1", **params: object) -> list[bytes]:
    """The raw staged blobs (as stored: sealed), read with SQL."""
    with db.engine.connect() as c:
        query = text(f"SELECT embedding FROM staged_templates WHERE {where}")
        return [bytes(b) for b in c.execute(query, params).scalars()]


def _cli(data: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data)])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


# -- key rotation --------------------------------------------------------------------------


def test_rotation_reseals_staged_templates_and_retire_waits_for_them(
    lfw: Lfw, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    key_file = data / "template-keys.json"
    first = open_cipher(key_source(None, {}, key_file))  # created: k1, as the CLI does
    db = open_database(None, data)
    service = _service(db, data, first)
    _enrol(db, service, lfw)
    st = migration.stage(service, "lfw", lfw.mobile)
    assert (st.staged, st.pending, st.unmigrated) == (2 * PEOPLE, 0, [])
    usage = key_usage(db)
    assert usage.staged_by_key == {"k1": 2 * PEOPLE} and usage.plaintext_staged == 0
    assert usage.by_key == {"k1": 2 * PEOPLE} and usage.images_by_key == {"k1": 2 * PEOPLE}

    # `encryption rotate`: a new key, and everything re-sealed under it, staged rows included.
    code, out = _cli(data, "encryption", "rotate", "--no-progress")
    assert code == 0, out
    assert f"{2 * PEOPLE} of {2 * PEOPLE} staged template(s)" in out
    usage = key_usage(db)
    assert usage.staged_by_key == {"k2": 2 * PEOPLE}
    assert usage.by_key == {"k2": 2 * PEOPLE} and usage.images_by_key == {"k2": 2 * PEOPLE}

    # Rows staged under k1 after that pass (by a process whose keyring still had k1 active):
    # k1 is still needed, so `retire` refuses it, and `status` shows why.
    migration.abandon(service, "lfw")
    assert _staged(db) == []
    # A migration still running with the keyring it loaded before the rotation (k1 only) is
    # refused at its next batch: the kept images are under k2 now.
    stale = _service(db, data, first)
    with pytest.raises(UnknownKeyError, match="k2"):
        migration.stage(stale, "lfw", lfw.mobile)
    stale.close()
    assert _staged(db) == []
    keys = read_keyring(key_file).keys
    late = _service(db, data, TemplateCipher(Keyring("k1", keys)))
    migration.stage(late, "lfw", lfw.mobile)
    late.close()
    usage = key_usage(db)
    assert usage.staged_by_key == {"k1": 2 * PEOPLE} and usage.by_key == {"k2": 2 * PEOPLE}
    assert usage.images_by_key == {"k2": 2 * PEOPLE}
    code, out = _cli(data, "encryption", "retire", "k1")
    assert code == 2, out
    assert f"{2 * PEOPLE} stored template(s)" in out and "staged" in out
    assert sorted(read_keyring(key_file).keys) == ["k1", "k2"]
    code, out = _cli(data, "encryption", "status")
    assert code == 0, out
    assert f"by key: k1: {2 * PEOPLE}; in plaintext: 0" in out
    assert "can be retired" not in out  # k1 holds no gallery template, yet is in use

    # A rerun of the rotation (no new key) re-seals them; then k1 retires.
    code, out = _cli(data, "encryption", "rotate", "--no-new-key", "--no-progress")
    assert code == 0, out
    assert f"0 of {2 * PEOPLE} template(s)" in out
    assert f"{2 * PEOPLE} of {2 * PEOPLE} staged template(s)" in out
    assert key_usage(db).staged_by_key == {"k2": 2 * PEOPLE}
    code, out = _cli(data, "encryption", "retire", "k1")
    assert code == 0, out
    assert sorted(read_keyring(key_file).keys) == ["k2"]

    # The re-sealed rows are still bound to their subjects: switched in and searched with k2
    # alone, MobileFaceNet probes find each person at rank 1.
    service.close()
    final = open_cipher(key_source(None, {}, key_file))
    assert final.active_key_id == "k2"
    service = _service(db, data, final)
    target = str(lfw.mobile.model_id)
    report = migration.switch(service, "lfw", target)
    assert (report.removed, report.added) == (2 * PEOPLE, 2 * PEOPLE)
    names = list(lfw.probes)
    found = service.identify("lfw", [lfw.probes[p] for p in names], k=1)
    assert [cs[0].external_id for cs in found] == names
    assert key_usage(db).by_key == {"k2": 2 * PEOPLE}
    service.close()
    db.close()


# -- erasure -------------------------------------------------------------------------------


def test_erasure_takes_the_staged_rows_with_it(lfw: Lfw, target: Target) -> None:
    data = target.data_dir
    data.mkdir(parents=True, exist_ok=True)
    cipher = open_cipher(key_source(None, {}, data / "template-keys.json"))
    db = target.open()
    service = _service(db, data, cipher)
    _enrol(db, service, lfw)
    migration.stage(service, "lfw", lfw.mobile)
    names = list(lfw.probes)
    gone, other = names[0], names[1]
    with db.read() as s:
        ids = {str(e): int(i) for e, i in s.execute(select(SubjectRow.external_id, SubjectRow.id))}
        other_templates = list(
            s.scalars(
                select(TemplateRow.id)
                .where(TemplateRow.subject_id == ids[other])
                .order_by(TemplateRow.id)
            )
        )
    blobs = _staged(db, "subject_id = :i", i=ids[gone])
    assert len(blobs) == 2 and len(_staged(db)) == 2 * PEOPLE
    db_file = data / "yingyan.db"
    sqlite = target.backend == "sqlite"
    if sqlite:
        db.purge_deleted()  # the WAL folded into the file: the blobs are there to be found
        assert all(b in db_file.read_bytes() for b in blobs)

    # A subject erased mid-migration: its staged rows go in the same transaction.
    service.erase_subject("lfw", gone)
    assert _staged(db, "subject_id = :i", i=ids[gone]) == []
    assert len(_staged(db)) == 2 * PEOPLE - 2
    # ... nor is any of its blobs left in any row of the table (it is not merely re-owned).
    assert not set(blobs) & set(_staged(db))
    if sqlite:
        for f in (db_file, db_file.with_name("yingyan.db-wal")):
            assert not f.exists() or not any(b in f.read_bytes() for b in blobs), f
    # The switch cannot bring the erased subject back.
    st = migration.status(service, "lfw", str(lfw.mobile.model_id))
    assert (st.templates, st.staged, st.pending) == (2 * PEOPLE - 2,) * 2 + (0,)

    # One template erased: the row staged from it goes, its subject's other one stays.
    one = _staged(db, "source_template_id = :t", t=other_templates[0])
    assert len(one) == 1
    service.erase_template("lfw", other_templates[0])
    assert _staged(db, "source_template_id = :t", t=other_templates[0]) == []
    assert len(_staged(db, "subject_id = :i", i=ids[other])) == 1

    # The gallery deleted (`yingyan gallery delete`): nothing staged is left at all.
    left = _staged(db)
    assert len(left) == 2 * PEOPLE - 3
    service.close()
    where = ["--data-dir", str(data), *(["--database-url", target.url] if target.url else [])]
    result = runner.invoke(app, ["gallery", "delete", "lfw", "--yes", *where])
    assert result.exit_code == 0, result.output
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(StagedTemplateRow)) == 0
        assert s.scalar(select(func.count()).select_from(TemplateRow)) == 0
    if sqlite:
        for f in (db_file, db_file.with_name("yingyan.db-wal")):
            assert not f.exists() or not any(b in f.read_bytes() for b in left + one), f
    db.close()


def test_staged_vectors_are_sealed_for_their_subject(lfw: Lfw, tmp_path: Path) -> None:
    """No staged vector is in clear in the database file: only its sealed blob."""
    data = tmp_path / "data"
    cipher = open_cipher(key_source(None, {}, data / "template-keys.json"))
    db = open_database(None, data)
    service = _service(db, data, cipher)
    _enrol(db, service, lfw)
    migration.stage(service, "lfw", lfw.mobile)
    db.purge_deleted()
    raw = (data / "yingyan.db").read_bytes()
    with db.read() as s:
        rows = list(s.scalars(select(StagedTemplateRow)))
        s.expunge_all()
    assert len(rows) == 2 * PEOPLE
    for row in rows:
        assert row.embedding is not None and row.embedding in raw
        owner = TemplateOwner(row.gallery_id, row.subject_id)
        vector = unpack_vector(row.embedding, row.dimension, cipher, owner=owner)
        assert vector.shape == (row.dimension,) and np.isclose(np.linalg.norm(vector), 1.0)
        assert vector.astype(np.float32).tobytes()[:32] not in raw  # 8 floats in clear: never
    service.close()
    db.close()
