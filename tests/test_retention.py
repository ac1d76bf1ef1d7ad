"""`yingyan retention run` on a real data folder: subjects whose consent ended and subjects of
an expired gallery are erased (database and index) and audited; others stay."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yingyan import Engine, load_image
from yingyan.audit.log import entries, verify
from yingyan.cli.gallery import open_service
from yingyan.cli.main import app
from yingyan.gallery.service import EnrollItem
from yingyan.privacy import load_cipher
from yingyan.store import add_consent, create_gallery, get_gallery, get_subject, open_database

from ._index import db_ids, stored_gallery

pytestmark = pytest.mark.shared
runner = CliRunner()
NOW = datetime.now(UTC)


def test_retention_purges_ended_consents_and_expired_galleries(
    tmp_path: Path, stills: Path, engine: Engine
) -> None:
    people = {"obama": "obama.jpg", "biden": "biden.jpg", "obama2": "obama2.jpg"}
    templates = {
        p: (
            hashlib.sha256((stills / f).read_bytes()).hexdigest(),
            engine.templates(load_image(stills / f))[0],
        )
        for p, f in people.items()
    }
    with open_service(tmp_path, None) as service:
        with service.db.session() as s:
            for name, expires in (("staff", None), ("event", NOW - timedelta(days=1))):
                create_gallery(
                    s,
                    name=name,
                    kind="enrollment",
                    purpose="test",
                    legal_basis="consent",
                    model=engine.model_id,
                    expires_at=expires,
                )
        for gallery in ("staff", "event"):
            items = [EnrollItem(p, t, 0.9, sha) for p, (sha, t) in templates.items()]
            service.enroll(gallery, items)
        with service.db.session() as s:
            staff = get_gallery(s, name="staff").id
            ids = {p: get_subject(s, gallery_id=staff, external_id=p).id for p in people}
            # obama: consent in force; biden: consent expired; obama2: no consent rows at all
            # (kept on the gallery's legal basis).
            add_consent(s, subject_id=ids["obama"], purpose="access", reference="form A")
            add_consent(
                s,
                subject_id=ids["biden"],
                purpose="access",
                reference="form B",
                granted_at=NOW - timedelta(days=30),
                expires_at=NOW - timedelta(days=1),
            )

    dry = runner.invoke(
        app, ["retention", "run", "--dry-run", "--json", "--data-dir", str(tmp_path)]
    )
    assert dry.exit_code == 0, dry.output
    planned = {
        (p["gallery"], p["external_id"], p["reason"]) for p in json.loads(dry.output)["purged"]
    }
    expected = {("staff", "biden", "consent_ended")} | {
        ("event", p, "gallery_expired") for p in people
    }
    assert planned == expected

    result = runner.invoke(app, ["retention", "run", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    purged = json.loads(result.output)["purged"]
    assert {(p["gallery"], p["external_id"]) for p in purged} == {(g, e) for g, e, _ in expected}
    assert all(p["templates"] == 1 for p in purged)

    # The index files as the CLI left them (read without a service, which would repair them):
    # biden's vector is gone from staff's, every vector from the expired gallery's.
    cipher = load_cipher(tmp_path / "template-keys.json", None)
    with open_database(None, tmp_path) as db:
        staff_index = stored_gallery(db, tmp_path / "index", "staff", cipher)
        assert staff_index.ids == db_ids(db, "staff") and len(staff_index.ids) == 2
        assert not staff_index.holds_bytes(templates["biden"][1].vector)
        assert staff_index.holds_bytes(templates["obama"][1].vector)  # the check can fail
        event_index = stored_gallery(db, tmp_path / "index", "event", cipher)
        assert event_index.ids == db_ids(db, "event") == frozenset()
        assert not any(event_index.holds_bytes(t.vector) for _, t in templates.values())

    with open_service(tmp_path, None) as service:
        (found,) = service.identify("staff", [templates["biden"][1]], k=5)
        assert "biden" not in [c.external_id for c in found]
        assert {c.external_id for c in found} == {"obama", "obama2"}
        with service.db.session() as s:
            log = entries(s, limit=1000)
            assert verify(s).ok
        purges = [e for e in log if e.operation == "retention.purge"]
        assert len(purges) == 4 and all(e.actor.startswith("cli:") for e in purges)
    again = runner.invoke(app, ["retention", "run", "--json", "--data-dir", str(tmp_path)])
    assert json.loads(again.output)["purged"] == []
