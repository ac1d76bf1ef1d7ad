"""The gallery service with real templates, on SQLite and on PostgreSQL: identification in
both modes, erasure that really erases, index repair after a real crash, deduplication; and the
same identification through Milvus Lite. The index is checked AS STORED (the file, or the Milvus
collection, read without the service), since opening it through the service repairs it."""

from __future__ import annotations

import hashlib
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from yingyan import Engine, load_image
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.store import Database, create_gallery
from yingyan.types import Template

from ._index import db_ids, gallery_id, stored_gallery, stored_milvus
from .conftest import Target, start_milvus_lite

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


def _enrol_first_photos(service: GalleryService, photos: Photos) -> dict[str, int]:
    """Enrol each person's first photo; person → template id."""
    items = [EnrollItem(p, photos[p][0][1], 0.9, photos[p][0][0], display_name=p) for p in PEOPLE]
    out = service.enroll("staff", items)
    assert all(created for _, created in out)
    assert not any(created for _, created in service.enroll("staff", items))  # idempotent
    return {p: t for p, (t, _) in zip(PEOPLE, out, strict=True)}


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
    ids = _enrol_first_photos(service, photos)
    obama_id, obama = ids["obama"], photos["obama"][0][1].vector
    stored = stored_gallery(db, tmp_path / "index", "staff")
    assert stored.ids == db_ids(db, "staff") and stored.holds_bytes(obama)  # the check can fail
    assert stored.search(probe.vector, 1) == [obama_id]

    assert service.erase_subject("staff", "obama") == 1
    (ranked,) = service.identify("staff", [probe], k=5)
    assert "obama" not in [c.external_id for c in ranked] and len(ranked) == 4
    # identify drops ids the database no longer has: ask the index itself, in memory ...
    with db.session() as s:
        g = service.gallery(s, "staff")
        s.expunge(g)
    hits = service.index(g).search(obama[None, :], 5)
    assert obama_id not in hits.ids.tolist()[0] and (hits.ids >= 0).sum() == 4
    # ... and as the erasure left its file, before anything reopens (and repairs) it.
    stored = stored_gallery(db, tmp_path / "index", "staff")
    assert stored.ids == db_ids(db, "staff") and len(stored.ids) == 4
    assert obama_id not in stored.ids and not stored.holds_bytes(obama)
    assert obama_id not in stored.search(obama, 5)
    service.close()
    reopened = GalleryService(db, tmp_path / "index")
    (ranked,) = reopened.identify("staff", [probe], k=5)
    assert "obama" not in [c.external_id for c in ranked]
    reopened.close()


# A process that commits one template, with its index open in memory, and dies by SIGKILL
# before it writes the index file (argv: database URL or "", data dir, index dir, item pickle).
CRASH = """
import os, pickle, signal, sys
from pathlib import Path
from yingyan.gallery.service import GalleryService
from yingyan.store import open_database

url, data_dir, index_dir, item = sys.argv[1:]
db = open_database(url or None, Path(data_dir))
service = GalleryService(db, Path(index_dir))
probe = pickle.loads(Path(item).read_bytes())
service.identify("staff", [probe.template], k=1)  # the index is open in this process
service.enroll("staff", [probe], save=False)  # committed; the file is written later
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_index_is_repaired_against_the_database_after_a_real_crash(
    db: Database, target: Target, tmp_path: Path, engine: Engine, photos: Photos, probe: Template
) -> None:
    index_dir = tmp_path / "index"
    service = _service(db, tmp_path, engine)
    enrolled = set(_enrol_first_photos(service, photos).values())
    service.close()
    extra = tmp_path / "extra.pickle"
    extra.write_bytes(
        pickle.dumps(EnrollItem("obama", photos["obama"][1][1], 0.9, photos["obama"][1][0]))
    )
    args = [target.url or "", str(target.data_dir), str(index_dir), str(extra)]
    crash = subprocess.run(
        [sys.executable, "-c", CRASH, *args], capture_output=True, text=True, timeout=300
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    (added,) = db_ids(db, "staff") - enrolled  # the database has it ...
    assert stored_gallery(db, index_dir, "staff").ids == enrolled  # ... the file does not

    fresh = GalleryService(db, index_dir)
    (ranked,) = fresh.identify("staff", [photos["obama"][1][1]], k=1)
    assert ranked[0].template_id == added
    stored = stored_gallery(db, index_dir, "staff")  # repaired, and the repair was saved
    assert stored.ids == db_ids(db, "staff") == enrolled | {added}
    assert np.array_equal(stored.vector(added), photos["obama"][1][1].vector)
    # A lost index file is rebuilt from the database.
    fresh.close()
    for f in index_dir.iterdir():
        f.unlink()
    rebuilt = GalleryService(db, index_dir)
    assert rebuilt.identify("staff", [probe], k=1)[0][0].external_id == "obama"
    assert stored_gallery(db, index_dir, "staff").ids == db_ids(db, "staff")
    rebuilt.close()


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
        ids = _enrol_first_photos(service, photos)
        (ranked,) = service.identify("staff", [probe], k=2)
        assert ranked[0].external_id == "obama"
        collection = f"g{gallery_id(db, 'staff')}_"
        stored = stored_milvus(str(tmp_path / "milvus.db"), collection)
        assert stored.ids == db_ids(db, "staff") and stored.vector(ids["obama"]) is not None
        assert service.erase_subject("staff", "obama") == 1
        (ranked,) = service.identify("staff", [probe], k=2)
        assert "obama" not in [c.external_id for c in ranked]
        # The collection itself, queried by another client: the vector cannot be fetched.
        stored = stored_milvus(str(tmp_path / "milvus.db"), collection)
        assert stored.ids == db_ids(db, "staff") and len(stored.ids) == 4
        assert stored.vector(ids["obama"]) is None
        assert ids["obama"] not in stored.search(photos["obama"][0][1].vector, 4)
        service.close()
        assert np.isfinite(ranked[0].score)
