"""The gallery service with real templates, on SQLite and on PostgreSQL: identification in
both modes, erasure that really erases, index repair after a crash, deduplication; and the
same identification through Milvus Lite."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from yingyan import Engine, load_image
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.store import Database, create_gallery
from yingyan.types import Template

from .conftest import start_milvus_lite

PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
Photos = dict[str, list[tuple[str, Template]]]


@pytest.fixture(scope="module")
def photos(stills: Path, engine: Engine) -> Photos:
    """person → [(sha256, template)] for every training photo of knn/train."""
    out: Photos = {}
    for person in PEOPLE:
        for f in sorted((stills / "knn/train" / person).iterdir()):
            (template,) = engine.templates(load_image(f))
            out.setdefault(person, []).append(
                (hashlib.sha256(f.read_bytes()).hexdigest(), template)
            )
    return out


@pytest.fixture(scope="module")
def probe(stills: Path, engine: Engine) -> Template:
    (t,) = engine.templates(load_image(stills / "knn/test/obama1.jpg"))
    return t


def _service(db: Database, tmp_path: Path, engine: Engine, **kw: object) -> GalleryService:
    """A service over `db` with one gallery, "staff" (threshold 0.912)."""
    with db.session() as s:
        create_gallery(
            s,
            name="staff",
            kind="enrollment",
            purpose="test",
            legal_basis="consent",
            model=engine.model_id,
            threshold=0.912,
        )
    return GalleryService(db, tmp_path / "index", **kw)  # type: ignore[arg-type]


def _enrol_first_photos(service: GalleryService, photos: Photos) -> None:
    items = [EnrollItem(p, photos[p][0][1], 0.9, photos[p][0][0], display_name=p) for p in PEOPLE]
    assert all(created for _, created in service.enroll("staff", items))
    assert not any(created for _, created in service.enroll("staff", items))  # idempotent


def test_identification_in_both_modes(
    db: Database, tmp_path: Path, engine: Engine, photos: Photos, probe: Template
) -> None:
    service = _service(db, tmp_path, engine)
    _enrol_first_photos(service, photos)
    (ranked,) = service.identify("staff", [probe], k=3)
    assert [c.rank for c in ranked] == [1, 2, 3]
    assert ranked[0].external_id == "obama" and ranked[0].score > 0.912 > ranked[1].score
    (alerts,) = service.identify("staff", [probe], k=3, mode="threshold")
    assert [c.external_id for c in alerts] == ["obama"]
    (none,) = service.identify("staff", [probe], k=3, mode="threshold", threshold=0.999)
    assert none == []


def test_erased_subject_can_no_longer_be_found(
    db: Database, tmp_path: Path, engine: Engine, photos: Photos, probe: Template
) -> None:
    service = _service(db, tmp_path, engine)
    _enrol_first_photos(service, photos)
    assert service.erase_subject("staff", "obama") == 1
    (ranked,) = service.identify("staff", [probe], k=5)
    assert "obama" not in [c.external_id for c in ranked] and len(ranked) == 4
    service.close()
    reopened = GalleryService(db, tmp_path / "index")  # the saved index file agrees
    (ranked,) = reopened.identify("staff", [probe], k=5)
    assert "obama" not in [c.external_id for c in ranked]
    db_fp, index_fp = reopened.check("staff")
    assert db_fp == index_fp and db_fp.count == 4


def test_index_is_repaired_against_the_database(
    db: Database, tmp_path: Path, engine: Engine, photos: Photos, probe: Template
) -> None:
    service = _service(db, tmp_path, engine)
    _enrol_first_photos(service, photos)
    # A crash after the database commit and before the index file was written:
    extra = [EnrollItem("obama", photos["obama"][1][1], 0.9, photos["obama"][1][0])]
    service.enroll("staff", extra, save=False)
    service._open.clear()  # the process dies: nothing more is saved
    fresh = GalleryService(db, tmp_path / "index")
    db_fp, index_fp = fresh.check("staff")
    assert db_fp == index_fp and db_fp.count == 6
    # A lost index file is rebuilt from the database.
    fresh.close()
    for f in (tmp_path / "index").iterdir():
        f.unlink()
    rebuilt = GalleryService(db, tmp_path / "index")
    assert rebuilt.identify("staff", [probe], k=1)[0][0].external_id == "obama"
    assert rebuilt.check("staff")[0] == rebuilt.check("staff")[1]


def test_dedup_finds_a_person_registered_under_two_ids(
    db: Database, tmp_path: Path, engine: Engine, photos: Photos
) -> None:
    service = _service(db, tmp_path, engine)
    _enrol_first_photos(service, photos)
    twins = [
        EnrollItem("obama-2nd-registration", photos["obama"][1][1], 0.9, photos["obama"][1][0]),
        EnrollItem("biden-alias", photos["biden"][1][1], 0.9, photos["biden"][1][0]),
    ]
    service.enroll("staff", twins)
    pairs = {(p.external_id_a, p.external_id_b) for p in service.duplicates("staff", 0.93)}
    assert pairs == {("obama", "obama-2nd-registration"), ("biden", "biden-alias")}


def test_identification_through_milvus_lite(
    tmp_path: Path, engine: Engine, photos: Photos, probe: Template
) -> None:
    start_milvus_lite(tmp_path / "milvus.db").close()  # skips, or fails under CI=true
    from yingyan.store import open_database

    with open_database(None, tmp_path / "data") as db:
        service = _service(
            db,
            tmp_path,
            engine,
            spec=IndexSpec(kind="milvus"),
            milvus_uri=str(tmp_path / "milvus.db"),
        )
        _enrol_first_photos(service, photos)
        (ranked,) = service.identify("staff", [probe], k=2)
        assert ranked[0].external_id == "obama"
        assert service.erase_subject("staff", "obama") == 1
        (ranked,) = service.identify("staff", [probe], k=2)
        assert "obama" not in [c.external_id for c in ranked]
        db_fp, index_fp = service.check("staff")
        assert db_fp == index_fp
        service.close()
        assert np.isfinite(ranked[0].score)
