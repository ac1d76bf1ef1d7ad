"""`yingyan maintenance vacuum`: after an erasure, PostgreSQL's dead row versions of templates are
gone (and with --full the erased bytes leave the table's pages); SQLite's file gives its freed
pages back; the command is audited and refuses bad input with exit 2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from yingyan.cli.main import app
from yingyan.store import Database, create_gallery, delete_subject, get_or_create_subject
from yingyan.store.maintenance import vacuum
from yingyan.store.repository import add_template, stage_template
from yingyan.store.tables import StagedTemplateRow, TemplateRow
from yingyan.types import ModelId, Template

from .conftest import Target

MODEL = ModelId("dlib_resnet_v1", "55533b28a958")
DIM = 128
runner = CliRunner()
POSTGRESQL = pytest.mark.parametrize("target", ["postgresql"], indirect=True)


def _enrol_and_erase(db: Database, n: int, *, image_bytes: int = 0) -> list[bytes]:
    """`n` templates each of two subjects, inserted in turn so that their rows share pages
    (with an image each when asked), then one subject erased; returns the erased embedding
    blobs (the bytes an erasure must make unrecoverable)."""
    rng = np.random.default_rng(5)
    with db.session() as s:
        g = create_gallery(
            s,
            name="staff",
            kind="enrollment",
            purpose="access",
            legal_basis="contract",
            model=MODEL,
            keep_images=image_bytes > 0,
        )
        gid = g.id
        subjects = [
            get_or_create_subject(s, gallery_id=gid, external_id=e)[0] for e in ("alice", "bob")
        ]
        for i in range(2 * n):
            v = rng.standard_normal(DIM).astype(np.float32)
            add_template(
                s,
                subject=subjects[i % 2],
                template=Template(v / np.linalg.norm(v), MODEL),
                quality=0.9,
                source_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
                image=rng.bytes(image_bytes) if image_bytes else None,
            )
        alice = subjects[0].id
    with db.session() as s:
        blobs = list(
            s.scalars(select(TemplateRow.embedding).where(TemplateRow.subject_id == alice))
        )
        if db.backend == "postgresql":  # the fixture's database must not clean up by itself
            s.execute(text("ALTER TABLE templates SET (autovacuum_enabled = false)"))
    with db.session() as s:
        assert len(delete_subject(s, gallery_id=gid, external_id="alice")) == n
    return blobs


def _dead_templates(db: Database) -> int:
    """Dead row versions in the templates relation, counted by scanning it (pgstattuple)."""
    with db.engine.connect() as c:
        return int(
            c.execute(text("SELECT dead_tuple_count FROM pgstattuple('templates')")).one()[0]
        )


def _pages(db: Database, table: str = "templates") -> bytes:
    """Every page of a relation (the templates by default) as stored (pageinspect)."""
    with db.engine.connect() as c:
        pages = c.execute(
            text(
                "SELECT get_raw_page(CAST(:t AS text), n::int) FROM generate_series(0, "
                "pg_relation_size(CAST(:t AS regclass)) / current_setting('block_size')::int - 1) n"
            ),
            {"t": table},
        ).scalars()
        return b"".join(bytes(p) for p in pages)


def _stage_and_erase(db: Database, n: int) -> list[bytes]:
    """`n` templates each of two subjects, each staged for another model (a migration in
    progress), then one subject erased: its staged rows go by the database's cascade. Returns
    the erased staged blobs."""
    rng = np.random.default_rng(7)
    target = ModelId("mobilefacenet", "0123456789ab")
    with db.session() as s:
        g = create_gallery(
            s, name="staff", kind="enrollment", purpose="access", legal_basis="contract",
            model=MODEL,
        )  # fmt: skip
        gid = g.id
        subjects = [
            get_or_create_subject(s, gallery_id=gid, external_id=e)[0] for e in ("alice", "bob")
        ]
        for i in range(2 * n):
            v = rng.standard_normal(DIM).astype(np.float32)
            row, _ = add_template(
                s,
                subject=subjects[i % 2],
                template=Template(v / np.linalg.norm(v), MODEL),
                quality=0.9,
                source_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
            )
            w = rng.standard_normal(DIM).astype(np.float32)
            stage_template(
                s, source=row, template=Template(w / np.linalg.norm(w), target), quality=0.9
            )
        alice = subjects[0].id
    with db.session() as s:
        blobs = [
            b
            for b in s.scalars(
                select(StagedTemplateRow.embedding).where(StagedTemplateRow.subject_id == alice)
            )
            if b is not None
        ]
        s.execute(text("ALTER TABLE staged_templates SET (autovacuum_enabled = false)"))
    with db.session() as s:
        assert len(delete_subject(s, gallery_id=gid, external_id="alice")) == n
        left = select(func.count()).where(StagedTemplateRow.subject_id == alice)
        assert s.scalar(left) == 0
    return blobs


def _extensions(target: Target) -> None:
    with target.open() as db, db.engine.begin() as c:
        c.execute(text("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
        c.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))


@POSTGRESQL
def test_vacuum_removes_dead_template_rows_on_postgresql(target: Target) -> None:
    _extensions(target)
    with target.open() as db:
        blobs = _enrol_and_erase(db, 40)
        assert _dead_templates(db) == 40  # deleted, yet still in the table's pages
        assert all(b in _pages(db) for b in blobs)
        report = vacuum(db)
        assert _dead_templates(db) == 0
        assert report.backend == "postgresql" and "templates" in report.tables
        assert {"audit_log", "subjects", "calibration_profiles"} <= set(report.tables)


@POSTGRESQL
def test_vacuum_full_takes_erased_bytes_out_of_the_pages(target: Target) -> None:
    _extensions(target)
    with target.open() as db:
        blobs = _enrol_and_erase(db, 40)
        vacuum(db, full=True)
        pages = _pages(db)
        assert not any(b in pages for b in blobs)
        assert _dead_templates(db) == 0


@POSTGRESQL
def test_vacuum_full_takes_erased_staged_templates_out_of_the_pages(target: Target) -> None:
    """A migration's staged templates are erased with their subject, and VACUUM FULL takes
    their dead row versions (bytes included) out of `staged_templates` too."""
    _extensions(target)
    with target.open() as db:
        blobs = _stage_and_erase(db, 40)
        assert len(blobs) == 40 and all(b in _pages(db, "staged_templates") for b in blobs)
        report = vacuum(db, full=True)
        assert "staged_templates" in report.tables
        pages = _pages(db, "staged_templates")
        assert not any(b in pages for b in blobs)


def test_cli_vacuum_is_audited_on_both_backends(target: Target) -> None:
    with target.open() as db:
        _enrol_and_erase(db, 200, image_bytes=4096)
        db.purge_deleted()  # the WAL folded in: the freed pages are now in the main file
    sqlite_file = target.data_dir / "yingyan.db"
    size_before = sqlite_file.stat().st_size if target.backend == "sqlite" else 0

    result = runner.invoke(app, ["maintenance", "vacuum", "--json", *target.cli_args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backend"] == target.backend
    assert {"templates", "staged_templates", "audit_log"} <= set(report["tables"])
    if target.backend == "sqlite":
        assert sqlite_file.stat().st_size < size_before * 0.6  # 800 kB of images given back
        assert report["wal_truncated"] is True
        wal = Path(f"{sqlite_file}-wal")
        assert not wal.exists() or wal.stat().st_size == 0
    else:
        assert report["dead_rows_before"].keys() <= set(report["tables"])

    listed = runner.invoke(app, ["audit", "list", "--json", *target.cli_args])
    assert listed.exit_code == 0, listed.output
    (entry,) = [e for e in json.loads(listed.output) if e["operation"] == "maintenance.vacuum"]
    assert entry["actor"].startswith("cli:") and entry["details"]["tables"] == report["tables"]
    verified = runner.invoke(app, ["audit", "verify", *target.cli_args])
    assert verified.exit_code == 0, verified.output


def test_cli_vacuum_refuses_a_bad_database_url(tmp_path: Path) -> None:
    result = runner.invoke(app, ["maintenance", "vacuum", "--database-url", "nonsense"])
    assert result.exit_code == 2
    assert "not a database URL" in result.output and "Traceback" not in result.output
