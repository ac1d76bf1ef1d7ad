"""Gallery store on SQLite and PostgreSQL: migrations, constraints, vectors, streaming, cascades,
consent and transactions.

Every test runs on both backends. PostgreSQL cases use the server at $YINGYAN_TEST_POSTGRES
(default postgresql://postgres@127.0.0.1:5432/test) only to create a throwaway database for the
session, dropped afterwards; without a reachable server they skip, except under CI=true where
they fail.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from yingyan.errors import ModelMismatchError
from yingyan.store import (
    ConflictError,
    Database,
    GalleryRow,
    InvalidValueError,
    NotFoundError,
    StoreUnavailableError,
    SubjectRow,
    TemplateRow,
    add_consent,
    add_template,
    alembic_config,
    count_subjects,
    count_templates,
    create_gallery,
    delete_gallery,
    delete_subject,
    get_gallery,
    get_or_create_subject,
    head_revision,
    iter_template_batches,
    list_consents,
    list_galleries,
    list_subjects,
    open_database,
    subjects_by_id,
    subjects_due_for_removal,
    subjects_of_templates,
    template_ids,
    template_vector,
    unpack_vector,
    withdraw_consent,
)
from yingyan.store.repository import _insert
from yingyan.store.tables import Base
from yingyan.types import ModelId, Template

from .conftest import Target

MODEL = ModelId("dlib_resnet_v1", "55533b28a958")
DIM = 128
TABLES = {
    "galleries",
    "subjects",
    "templates",
    "staged_templates",
    "consents",
    "calibration_profiles",
    "gallery_changes",
    "api_keys",
    "audit_log",
    "audit_head",
    "watch_sessions",
    "watch_session_galleries",
    "watch_cameras",
    "camera_status",
    "alerts",
    "alert_reviews",
}
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------------


def unit_vector(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def sha(label: object) -> str:
    return hashlib.sha256(str(label).encode()).hexdigest()


def gallery(session: Session, name: str = "staff", **kwargs: object) -> GalleryRow:
    options: dict[str, object] = {
        "kind": "enrollment",
        "purpose": "building access",
        "legal_basis": "employment contract §4",
        "model": MODEL,
        **kwargs,
    }
    return create_gallery(session, name=name, **options)  # type: ignore[arg-type]


def subject(session: Session, g: GalleryRow, external_id: str) -> SubjectRow:
    row, _ = get_or_create_subject(session, gallery_id=g.id, external_id=external_id)
    return row


def enrol(session: Session, s: SubjectRow, label: object, vector: np.ndarray) -> int:
    row, _ = add_template(
        session,
        subject=s,
        template=Template(vector, MODEL),
        quality=0.9,
        source_sha256=sha(label),
        box=(10.0, 20.0, 110.0, 140.0),
    )
    return row.id


def table_count(session: Session, table: str, where: str = "") -> int:
    return int(session.execute(text(f"SELECT count(*) FROM {table} {where}")).scalar_one())


# -- migrations --------------------------------------------------------------------------------


def test_migrations_create_schema_and_reopening_keeps_data(target: Target) -> None:
    with target.open() as db:
        assert db.revision() == head_revision()
        assert set(inspect(db.engine).get_table_names()) == TABLES | {"alembic_version"}
        with db.session() as s:
            gallery(s)
    with target.open() as db:  # second open: upgrade is a no-op, data intact
        assert db.revision() == head_revision()
        with db.session() as s:
            assert [g.name for g in list_galleries(s)] == ["staff"]


def test_migration_matches_the_orm_tables(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_downgrade_removes_every_table(db: Database) -> None:
    with db.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(db.engine).get_table_names()) & TABLES == set()
    assert db.revision() is None


def test_opening_without_migrating_refuses_an_unmigrated_database(target: Target) -> None:
    with pytest.raises(StoreUnavailableError, match="schema is at nothing"):
        target.open(migrate=False)
    target.open().close()
    target.open(migrate=False).close()


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql://nobody:secret@127.0.0.1:9/none"  # port 9 (discard): refused
    with pytest.raises(StoreUnavailableError) as info:
        open_database(url, tmp_path)
    assert info.value.code == "store_unavailable"
    assert "secret" not in info.value.message


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    with open_database(None, tmp_path / "new" / "dir") as db:
        assert (tmp_path / "new" / "dir" / "yingyan.db").is_file()
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


# -- galleries ---------------------------------------------------------------------------------


def test_gallery_names_are_unique(db: Database) -> None:
    with db.session() as s:
        created = gallery(s, threshold=0.93, keep_images=True, min_quality=0.4)
    with db.session() as s, pytest.raises(ConflictError, match="'staff' already exists") as info:
        gallery(s)
    assert info.value.code == "conflict"
    with db.session() as s:
        row = get_gallery(s, name="staff")
        assert (row.id, row.threshold, row.keep_images, row.min_quality) == (
            created.id,
            0.93,
            True,
            0.4,
        )
        assert row.model == "dlib_resnet_v1@55533b28a958"
        assert row.created_at.tzinfo is not None
        with pytest.raises(NotFoundError, match="no gallery named 'visitors'") as missing:
            get_gallery(s, name="visitors")
        assert missing.value.code == "not_found"


def test_gallery_requires_purpose_legal_basis_and_a_known_kind(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(InvalidValueError, match="purpose is required"):
            gallery(s, purpose="  ")
        with pytest.raises(InvalidValueError, match="legal basis is required"):
            gallery(s, legal_basis="")
        with pytest.raises(InvalidValueError, match="kind"):
            gallery(s, kind="suspects")
        with pytest.raises(InvalidValueError, match="time zone"):
            gallery(s, expires_at=datetime(2030, 1, 1))
        assert list_galleries(s) == []


def test_a_unique_violation_rolls_back_only_its_savepoint(db: Database) -> None:
    """The race path of get-or-create: the unit of work survives a duplicate insert."""
    with db.session() as s:
        gallery(s)
        duplicate = GalleryRow(
            name="staff", kind="watchlist", purpose="p", legal_basis="b", model=str(MODEL)
        )
        assert _insert(s, duplicate) is False
        gallery(s, name="visitors")
    with db.session() as s:
        assert [g.name for g in list_galleries(s)] == ["staff", "visitors"]


# -- subjects ----------------------------------------------------------------------------------


def test_external_ids_are_unique_per_gallery_only(db: Database) -> None:
    with db.session() as s:
        staff, visitors = gallery(s), gallery(s, name="visitors")
        first, created = get_or_create_subject(
            s, gallery_id=staff.id, external_id="E-1", display_name="Ada", metadata={"team": 7}
        )
        again, created_again = get_or_create_subject(
            s, gallery_id=staff.id, external_id="E-1", display_name="other"
        )
        elsewhere, created_elsewhere = get_or_create_subject(
            s, gallery_id=visitors.id, external_id="E-1"
        )
    assert (created, created_again, created_elsewhere) == (True, False, True)
    assert again.id == first.id and again.display_name == "Ada"
    assert elsewhere.id != first.id
    with db.session() as s:
        stored = s.get(SubjectRow, first.id)
        assert stored is not None and stored.metadata_ == {"team": 7}
    # The database itself refuses a duplicate, whatever the code above does.
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(SubjectRow(gallery_id=staff.id, external_id="E-1", metadata_={}))
    with db.session() as s, pytest.raises(NotFoundError, match="no gallery with id"):
        get_or_create_subject(s, gallery_id=10_000, external_id="E-1")


def test_subjects_page_by_id(db: Database) -> None:
    with db.session() as s:
        g = gallery(s)
        ids = [subject(s, g, f"E-{i}").id for i in range(7)]
    pages: list[list[int]] = []
    after: int | None = None
    with db.session() as s:
        assert count_subjects(s, gallery_id=g.id) == 7
        while page := list_subjects(s, gallery_id=g.id, limit=3, after_id=after):
            pages.append([row.id for row in page])
            after = page[-1].id
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == sorted(ids)


# -- templates ---------------------------------------------------------------------------------


def test_adding_the_same_image_twice_is_idempotent(db: Database) -> None:
    rng = np.random.default_rng(1)
    with db.session() as s:
        s1 = subject(s, gallery(s), "E-1")
        template = Template(unit_vector(rng), MODEL, recipe="flip")
        first, created = add_template(
            s, subject=s1, template=template, quality=0.8, source_sha256=sha("a.jpg")
        )
        again, created_again = add_template(
            s,
            subject=s1,
            template=Template(unit_vector(rng), MODEL),
            quality=0.1,
            source_sha256=sha("a.jpg").upper(),  # hex case does not make another image
        )
        other, created_other = add_template(
            s, subject=s1, template=template, quality=0.8, source_sha256=sha("b.jpg")
        )
    assert (created, created_again, created_other) == (True, False, True)
    assert again.id == first.id and other.id != first.id
    assert again.recipe == "flip" and again.quality == 0.8  # the first enrolment stands
    with db.session() as s:
        assert count_templates(s, gallery_id=s1.gallery_id) == 2


def test_templates_must_come_from_the_gallerys_model(db: Database) -> None:
    other = ModelId("arcface_r100", "0123456789ab")
    with db.session() as s:
        s1 = subject(s, gallery(s), "E-1")
        with pytest.raises(ModelMismatchError, match="arcface_r100@0123456789ab"):
            add_template(
                s,
                subject=s1,
                template=Template(np.ones(512, np.float32), other),
                quality=0.9,
                source_sha256=sha(1),
            )
        with pytest.raises(InvalidValueError, match="sha256"):
            add_template(
                s,
                subject=s1,
                template=Template(np.ones(DIM, np.float32), MODEL),
                quality=0.9,
                source_sha256="not-a-hash",
            )


def test_images_are_kept_only_by_galleries_that_keep_images(db: Database) -> None:
    photo = b"\xff\xd8\xff\xe0 jpeg bytes"
    kept: dict[bool, int] = {}
    with db.session() as s:
        for keep in (False, True):
            s1 = subject(s, gallery(s, name=f"keep-{keep}", keep_images=keep), "E-1")
            row, _ = add_template(
                s,
                subject=s1,
                template=Template(np.ones(DIM, np.float32), MODEL),
                quality=0.9,
                source_sha256=sha(keep),
                image=photo,
            )
            kept[keep] = row.id
    with db.session() as s:
        stored = {
            keep: s.execute(text(f"SELECT image FROM templates WHERE id = {tid}")).scalar_one()
            for keep, tid in kept.items()
        }
    assert stored[False] is None
    assert bytes(stored[True]) == photo


def test_vectors_round_trip_bit_for_bit(db: Database) -> None:
    rng = np.random.default_rng(7)
    tricky = np.array(
        [0.0, -0.0, 1e-45, -3.4028235e38, 3.4028235e38, 1.1754944e-38, 0.1, 1 / 3], np.float32
    )
    vectors = [unit_vector(rng) for _ in range(5)] + [np.resize(tricky, DIM)]
    with db.session() as s:
        s1 = subject(s, gallery(s), "E-1")
        ids = [enrol(s, s1, i, v) for i, v in enumerate(vectors)]
    with db.session() as s:
        (batch,) = list(iter_template_batches(s, gallery_id=s1.gallery_id))
        rows = [s.get_one(TemplateRow, i) for i in ids]
    assert batch.ids.dtype == np.int64 and batch.vectors.dtype == np.float32
    assert batch.ids.tolist() == ids
    for row, vector, streamed in zip(rows, vectors, batch.vectors, strict=True):
        assert row.dimension == DIM
        assert template_vector(row).tobytes() == vector.tobytes()
        assert streamed.tobytes() == vector.tobytes()
    with pytest.raises(Exception, match="expected 4 float32"):
        unpack_vector(b"\x00" * 12, 4)


def test_template_batches_stream_every_id_once_in_order(db: Database) -> None:
    rng = np.random.default_rng(3)
    with db.session() as s:
        a, b = gallery(s, name="a"), gallery(s, name="b")
        subjects_a = [subject(s, a, f"A-{i}") for i in range(4)]
        s_b = subject(s, b, "B-0")
        expected: dict[int, np.ndarray] = {}
        for i in range(23):  # interleave the two galleries' ids
            v = unit_vector(rng)
            expected[enrol(s, subjects_a[i % 4], i, v)] = v
            enrol(s, s_b, i, unit_vector(rng))
        removed = sorted(expected)[5:8]
        for tid in removed:
            s.execute(text(f"DELETE FROM templates WHERE id = {tid}"))
            del expected[tid]
    with db.session() as s:
        batches = list(iter_template_batches(s, gallery_id=a.id, batch_size=4))
        empty = gallery(s, name="empty")
        assert list(iter_template_batches(s, gallery_id=empty.id)) == []
        with pytest.raises(NotFoundError):
            next(iter_template_batches(s, gallery_id=10_000))
    ids = np.concatenate([batch.ids for batch in batches])
    assert [len(batch.ids) for batch in batches] == [4, 4, 4, 4, 4]
    assert ids.tolist() == sorted(expected)
    for batch in batches:
        assert batch.vectors.shape == (len(batch.ids), DIM)
        for tid, vector in zip(batch.ids.tolist(), batch.vectors, strict=True):
            assert np.array_equal(vector, expected[tid])


def test_template_ids_lists_the_gallerys_templates(db: Database) -> None:
    rng = np.random.default_rng(5)
    with db.session() as s:
        g = gallery(s)
        s1, s2 = subject(s, g, "E-1"), subject(s, g, "E-2")
        ids = [enrol(s, s1 if i % 2 else s2, i, unit_vector(rng)) for i in range(9)]
        empty = gallery(s, name="empty")
    with db.session() as s:
        listed = template_ids(s, gallery_id=g.id, batch_size=4)
        assert listed.tolist() == sorted(ids)
        assert template_ids(s, gallery_id=empty.id).size == 0
        removed = delete_subject(s, gallery_id=g.id, external_id="E-1")
    with db.session() as s:
        assert template_ids(s, gallery_id=g.id).tolist() == sorted(set(ids) - set(removed))
        by_id = subjects_by_id(s, subject_ids=[s2.id, 999_999])
        assert list(by_id) == [s2.id] and by_id[s2.id].external_id == "E-2"


def test_subjects_of_templates_maps_index_hits_to_subjects(db: Database) -> None:
    rng = np.random.default_rng(9)
    with db.session() as s:
        g = gallery(s)
        s1, s2 = subject(s, g, "E-1"), subject(s, g, "E-2")
        t1, t2 = enrol(s, s1, 1, unit_vector(rng)), enrol(s, s2, 2, unit_vector(rng))
        t3 = enrol(s, s1, 3, unit_vector(rng))
    with db.session() as s:
        found = subjects_of_templates(s, template_ids=[t1, t2, t3, t3, 999_999])
    assert found == {t1: s1.id, t2: s2.id, t3: s1.id}


# -- deletion ----------------------------------------------------------------------------------


def test_deleting_a_subject_cascades_and_returns_its_template_ids(db: Database) -> None:
    rng = np.random.default_rng(11)
    with db.session() as s:
        g = gallery(s)
        gone, stays = subject(s, g, "E-1"), subject(s, g, "E-2")
        gone_ids = [enrol(s, gone, i, unit_vector(rng)) for i in range(3)]
        stay_id = enrol(s, stays, 0, unit_vector(rng))
        add_consent(s, subject_id=gone.id, purpose="access", reference="form 12")
    with db.session() as s:
        assert delete_subject(s, gallery_id=g.id, external_id="E-1") == gone_ids
    with db.session() as s:
        assert table_count(s, "templates", f"WHERE subject_id = {gone.id}") == 0
        assert table_count(s, "consents", f"WHERE subject_id = {gone.id}") == 0
        assert table_count(s, "subjects") == 1
        (batch,) = iter_template_batches(s, gallery_id=g.id)
        assert batch.ids.tolist() == [stay_id]
        with pytest.raises(NotFoundError, match="no subject 'E-1'"):
            delete_subject(s, gallery_id=g.id, external_id="E-1")


def test_deleting_a_gallery_cascades_and_ids_are_never_reused(db: Database) -> None:
    rng = np.random.default_rng(13)
    with db.session() as s:
        doomed, kept = gallery(s, name="doomed"), gallery(s, name="kept")
        for n, g in enumerate((kept, doomed)):
            for i in range(3):
                si = subject(s, g, f"E-{i}")
                enrol(s, si, (n, i), unit_vector(rng))
                add_consent(s, subject_id=si.id, purpose="access", reference="form")
        highest = int(s.execute(text("SELECT max(id) FROM templates")).scalar_one())
    with db.session() as s:
        assert delete_gallery(s, name="doomed") == 3
    with db.session() as s:
        assert [g.name for g in list_galleries(s)] == ["kept"]
        assert table_count(s, "subjects", f"WHERE gallery_id = {doomed.id}") == 0
        assert table_count(s, "templates", f"WHERE gallery_id = {doomed.id}") == 0
        assert (table_count(s, "subjects"), table_count(s, "templates")) == (3, 3)
        assert table_count(s, "consents") == 3
        # The freed ids belonged to the newest rows; a new template must not take them.
        new_id = enrol(s, subject(s, kept, "E-new"), "new", unit_vector(rng))
    assert new_id > highest


# -- consent and retention ---------------------------------------------------------------------


def test_retention_finds_ended_consents_and_expired_galleries(db: Database) -> None:
    day = timedelta(days=1)
    with db.session() as s:
        g = gallery(s)
        people = {name: subject(s, g, name) for name in ("active", "expired", "withdrawn")}
        people |= {name: subject(s, g, name) for name in ("renewed", "no-consent", "open")}

        def consent(name: str, **kwargs: datetime) -> int:
            options = {"granted_at": NOW - 30 * day, **kwargs}
            row = add_consent(
                s, subject_id=people[name].id, purpose="access", reference="form", **options
            )
            return row.id

        consent("active", expires_at=NOW + day)
        consent("expired", expires_at=NOW - day)
        withdrawn = consent("withdrawn")
        withdraw_consent(s, consent_id=withdrawn, at=NOW - 2 * day)
        consent("renewed", expires_at=NOW - day)
        consent("renewed", granted_at=NOW - day, expires_at=NOW + 300 * day)
        consent("open")  # no expiry
        old = gallery(s, name="old", expires_at=NOW - day, kind="watchlist")
        ghost = subject(s, old, "ghost")
    with db.session() as s:
        due = subjects_due_for_removal(s, now=NOW)
        later = subjects_due_for_removal(s, now=NOW + 2 * day)
        history = list_consents(s, subject_id=people["renewed"].id)
    assert [(c.subject.external_id, c.reason) for c in due] == [
        ("expired", "consent_ended"),
        ("withdrawn", "consent_ended"),
        ("ghost", "gallery_expired"),
    ]
    assert {c.subject.id for c in later} == {
        people["active"].id,
        people["expired"].id,
        people["withdrawn"].id,
        ghost.id,
    }
    assert [c.expires_at for c in history] == [NOW - day, NOW + 300 * day]
    assert all(c.granted_at.tzinfo == UTC for c in history)


def test_consent_rules(db: Database) -> None:
    with db.session() as s:
        s1 = subject(s, gallery(s), "E-1")
        with pytest.raises(InvalidValueError, match="expire after"):
            add_consent(
                s, subject_id=s1.id, purpose="p", reference="r", granted_at=NOW, expires_at=NOW
            )
        with pytest.raises(NotFoundError, match="no subject with id"):
            add_consent(s, subject_id=10_000, purpose="p", reference="r")
        consent = add_consent(s, subject_id=s1.id, purpose="p", reference="r", granted_at=NOW)
        first = withdraw_consent(s, consent_id=consent.id, at=NOW + timedelta(hours=1))
        second = withdraw_consent(s, consent_id=consent.id)
        assert first.withdrawn_at == second.withdrawn_at == NOW + timedelta(hours=1)


# -- transactions ------------------------------------------------------------------------------


def test_a_failed_unit_of_work_leaves_nothing_behind(db: Database) -> None:
    rng = np.random.default_rng(17)
    with pytest.raises(RuntimeError, match="boom"), db.session() as s:
        g = gallery(s)
        s1 = subject(s, g, "E-1")
        enrol(s, s1, 1, unit_vector(rng))
        add_consent(s, subject_id=s1.id, purpose="access", reference="form")
        raise RuntimeError("boom")
    with db.session() as s:
        assert list_galleries(s) == []
        for table in TABLES:
            assert table_count(s, table) == 0
