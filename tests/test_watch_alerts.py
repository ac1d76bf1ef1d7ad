"""Watch sessions and alerts on SQLite and PostgreSQL: session validation, watchlists only, the
FPIR threshold, one alert per track (extended, not duplicated), two-person review, the sealed
crop and its erasure at the retention deadline, closed sessions, and no alert without its audit
entry. Crops are real faces cut from LFW images."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from yingyan import load_image
from yingyan.audit.log import entries, verify
from yingyan.privacy.cipher import (
    DecryptionError,
    KeyMissingError,
    Keyring,
    PlaintextRefusedError,
    TemplateCipher,
)
from yingyan.store import Database, create_gallery, get_or_create_subject
from yingyan.store.repository import ConflictError, InvalidValueError, NotFoundError
from yingyan.store.tables import AlertRow, SubjectRow, WatchSessionRow
from yingyan.types import RGBImage
from yingyan.watch.alerts import (
    AlertCandidate,
    AlertClosedError,
    AlreadyReviewedError,
    alert_crop,
    crop_key_usage,
    encode_crop,
    get_alert,
    list_alerts,
    purge_expired,
    record_match,
    record_match_outcome,
    reseal_crops,
    review,
)
from yingyan.watch.sessions import (
    EXPLICIT_SOURCE,
    NotWatchlistError,
    SessionClosedError,
    add_camera,
    camera_statuses,
    change_session,
    create_session,
    list_cameras,
    remove_camera,
    report_camera_status,
    session_threshold,
    stop_session,
)
from yingyan.watch.threshold import threshold_for_fpir

from .conftest import shared_path

MODEL = "dlib_resnet_v1@55533b28a958"
NOW = datetime.now(UTC)
LATER = NOW + timedelta(days=7)
ACTOR = "tester"


@dataclass(frozen=True)
class Query:
    """The fields of the pipeline's TrackQuery that the store reads."""

    track_id: int
    first_pts: float
    last_pts: float
    best_crop: RGBImage
    best_quality: float
    reason: str = "early"


@pytest.fixture(scope="module")
def faces() -> list[RGBImage]:
    """Three real face crops: the centre of LFW's deep-funnelled 250x250 images (the face)."""
    root = shared_path("datasets", "lfw", "lfw-deepfunneled")
    files = ["George_W_Bush/George_W_Bush_0001.jpg", "Colin_Powell/Colin_Powell_0001.jpg"]
    files.append("George_W_Bush/George_W_Bush_0002.jpg")
    return [np.ascontiguousarray(load_image(root / f)[65:185, 75:175]) for f in files]


def _cipher() -> TemplateCipher:
    return TemplateCipher(Keyring("k1", {"k1": np.random.default_rng().bytes(32)}))


def _watchlist(db: Database, name: str, people: int, kind: str = "watchlist") -> list[int]:
    with db.session() as s:
        g = create_gallery(
            s,
            name=name,
            kind=kind,  # type: ignore[arg-type]
            purpose="warrant",
            legal_basis="court order",
            model=MODEL,
        )
        return [
            get_or_create_subject(s, gallery_id=g.id, external_id=f"{name}-{i}")[0].id
            for i in range(people)
        ]


def _session(db: Database, name: str = "gate", galleries: tuple[str, ...] = ("sought",)) -> int:
    session = create_session(
        db,
        name=name,
        purpose="find a suspect",
        case_ref="CASE-11",
        legal_basis="warrant 2026/17",
        expires_at=LATER,
        galleries=galleries,
        actor=ACTOR,
    )
    return session.id


def _candidate(db: Database, subject_id: int, score: float) -> AlertCandidate:
    with db.read() as s:
        subject = s.get_one(SubjectRow, subject_id)
        return AlertCandidate(subject.gallery_id, subject.id, subject.external_id, score)


def _break_audit(db: Database) -> None:
    """Every audit append fails inside the database (as tests/test_concurrency.py does)."""
    with db.session() as s:
        if db.backend == "sqlite":
            s.connection().exec_driver_sql(
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END"
            )
            return
        s.connection().exec_driver_sql(
            "CREATE FUNCTION audit_down() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit log unavailable'; END $$ LANGUAGE plpgsql"
        )
        s.connection().exec_driver_sql(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_down()"
        )


def _mend_audit(db: Database) -> None:
    with db.session() as s:
        s.connection().exec_driver_sql(
            "DROP TRIGGER audit_down" + ("" if db.backend == "sqlite" else " ON audit_log")
        )


def _alerts(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(AlertRow)) or 0)


def _operations(db: Database) -> list[str]:
    with db.read() as s:
        return [e.operation for e in entries(s, limit=1000)]


# -- sessions ------------------------------------------------------------------------------------


def test_session_needs_purpose_case_basis_and_future_expiry(db: Database) -> None:
    _watchlist(db, "sought", 2)
    good = {
        "name": "gate",
        "purpose": "find a suspect",
        "case_ref": "CASE-11",
        "legal_basis": "warrant",
        "expires_at": LATER,
        "galleries": ["sought"],
        "actor": ACTOR,
    }
    for key, bad in (
        ("purpose", " "),
        ("case_ref", ""),
        ("legal_basis", ""),
        ("name", ""),
        ("expires_at", NOW - timedelta(minutes=1)),
        ("expires_at", datetime(2030, 1, 1)),  # naive
        ("galleries", []),
    ):
        with pytest.raises(InvalidValueError):
            create_session(db, **{**good, key: bad})  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="FPIR"):
        create_session(db, **good, target_fpir=0.5)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        create_session(db, **{**good, "galleries": ["nowhere"]})  # type: ignore[arg-type]
    assert _operations(db) == []  # nothing refused was started
    created = create_session(db, **good)  # type: ignore[arg-type]
    assert created.galleries == ("sought",) and created.is_open()
    with pytest.raises(ConflictError):
        create_session(db, **good)  # type: ignore[arg-type]
    assert _operations(db) == ["watch.session.start"]


def test_only_watchlists_and_session_changes_are_audited(db: Database) -> None:
    _watchlist(db, "sought", 1)
    _watchlist(db, "staff", 1, kind="enrollment")
    with pytest.raises(NotWatchlistError, match="kind 'watchlist'"):
        _session(db, galleries=("sought", "staff"))
    _session(db)
    with pytest.raises(NotWatchlistError):
        change_session(db, "gate", actor=ACTOR, galleries=["staff"])
    changed = change_session(db, "gate", actor=ACTOR, case_ref="CASE-12", target_fpir=1e-4)
    assert changed.case_ref == "CASE-12" and changed.target_fpir == 1e-4
    camera = add_camera(db, "gate", name="north", url="rtsp://user:secret@cam/1", actor=ACTOR)
    report_camera_status(db, camera.id, {"state": "connected", "input_fps": 25.0})
    assert [c.stats["state"] for c in camera_statuses(db, "gate")] == ["connected"]
    assert [c.name for c in list_cameras(db, "gate")] == ["north"]
    remove_camera(db, "gate", "north", actor=ACTOR)
    assert list_cameras(db, "gate") == []
    stop_session(db, "gate", actor=ACTOR, reason="suspect found")
    with pytest.raises(SessionClosedError):
        change_session(db, "gate", actor=ACTOR, case_ref="CASE-13")
    with db.read() as s:
        log = entries(s, limit=100)
        assert verify(s).ok
    assert [e.operation for e in log] == [
        "watch.session.start",
        "watch.session.change",
        "watch.camera.add",
        "watch.camera.remove",
        "watch.session.stop",
    ]
    assert all(e.case_reference in ("CASE-11", "CASE-12") for e in log)
    assert log[1].details["changed"]["case_ref"] == {"from": "CASE-11", "to": "CASE-12"}
    assert log[2].details["url"] == "rtsp://user:***@cam/1"  # the password never reaches the log
    assert "secret" not in str([e.details for e in log])


def test_threshold_for_a_target_fpir_grows_with_the_watchlists(db: Database) -> None:
    _watchlist(db, "few", 1)
    _watchlist(db, "many", 99)
    one = session_threshold(db, _session(db, "small", ("few",)))
    hundred = session_threshold(db, _session(db, "large", ("few", "many")))
    assert hundred.watchlist_size == 100 and one.watchlist_size == 1
    assert hundred.score > one.score  # more subjects, more chances: a stricter threshold
    assert hundred == threshold_for_fpir(MODEL, 100, 1e-3)
    assert "FPIR 0.001 over 100 subject(s)" in hundred.source
    change_session(db, "large", actor=ACTOR, threshold=0.95)
    explicit = session_threshold(db, "large")
    assert explicit.score == 0.95 and explicit.source == EXPLICIT_SOURCE
    change_session(db, "large", actor=ACTOR, threshold=None)
    assert session_threshold(db, "large") == hundred


# -- alerts --------------------------------------------------------------------------------------


def test_one_alert_per_track_extended_not_duplicated(db: Database, faces: list[RGBImage]) -> None:
    subjects = _watchlist(db, "sought", 3)
    sid = _session(db)
    threshold = session_threshold(db, sid)
    high = threshold.score + 0.02
    alice, bob = _candidate(db, subjects[0], high), _candidate(db, subjects[1], high + 0.01)
    first = record_match_outcome(
        db,
        sid,
        "north",
        Query(7, 1.0, 1.5, faces[0], 0.5),
        [alice],
        threshold,
        audit=ACTOR,
        now=NOW,
    )
    assert first.created
    # The same track searched again with a clearly better sample: the same alert.
    again = record_match_outcome(
        db,
        sid,
        "north",
        Query(7, 1.0, 3.0, faces[2], 0.8, "better"),
        [_candidate(db, subjects[0], high + 0.03), bob],
        threshold,
        audit=ACTOR,
        now=NOW + timedelta(seconds=2),
    )
    assert again == type(first)(first.alert_id, False)
    # The worker restarted (track ids start again, stream clock too): same person, 30 s later.
    restarted = record_match(
        db, sid, "north", Query(1, 0.2, 0.9, faces[0], 0.4), [alice], threshold,
        audit=ACTOR, now=NOW + timedelta(seconds=32),
    )  # fmt: skip
    assert restarted == first.alert_id and _alerts(db) == 1
    alert = get_alert(db, first.alert_id)
    assert alert.tracks == 2 and alert.first_pts == 1.0 and alert.last_pts == 0.9
    assert alert.best_quality == 0.8  # the better crop was kept, not the later worse one
    assert [c["subject_id"] for c in alert.candidates] == [subjects[0], subjects[1]]
    assert alert.candidates[0]["score"] == pytest.approx(high + 0.03)
    assert alert.threshold["score"] == pytest.approx(threshold.score)
    assert alert.threshold["source"] == threshold.source and alert.state == "pending"
    # Another camera, another subject, or after the cooldown: new alerts.
    other_camera = record_match(
        db, sid, "south", Query(7, 1.0, 1.5, faces[0], 0.5), [alice], threshold, audit=ACTOR,
        now=NOW + timedelta(seconds=33),
    )  # fmt: skip
    other_subject = record_match(
        db, sid, "north", Query(9, 5.0, 6.0, faces[1], 0.5), [bob], threshold, audit=ACTOR,
        now=NOW + timedelta(seconds=34),
    )  # fmt: skip
    later = record_match(
        db, sid, "north", Query(12, 99.0, 99.5, faces[0], 0.5), [alice], threshold, audit=ACTOR,
        now=NOW + timedelta(seconds=32 + 61),
    )  # fmt: skip
    assert len({first.alert_id, other_camera, other_subject, later}) == 4 and _alerts(db) == 4
    assert [a.camera for a in list_alerts(db, camera="south")] == ["south"]
    assert len(list_alerts(db, session="gate", since=NOW + timedelta(seconds=60))) == 1
    assert len(list_alerts(db, until=NOW + timedelta(seconds=1))) == 1
    # A track below the threshold leaves nothing.
    with pytest.raises(InvalidValueError, match="below the threshold"):
        record_match(
            db, sid, "north", Query(20, 0, 1, faces[1], 0.9),
            [_candidate(db, subjects[2], threshold.score - 0.01)], threshold, audit=ACTOR,
        )  # fmt: skip
    stranger = _watchlist(db, "elsewhere", 1)  # a watchlist this session does not search
    with pytest.raises(InvalidValueError, match="not watched"):
        record_match(
            db, sid, "north", Query(21, 0, 1, faces[1], 0.9),
            [_candidate(db, stranger[0], high)], threshold, audit=ACTOR,
        )  # fmt: skip
    assert _alerts(db) == 4
    with db.read() as s:
        log = entries(s, limit=100)
        assert verify(s).ok
    raised = [e for e in log if e.operation.startswith("watch.alert.")]
    assert [e.operation for e in raised] == ["watch.alert.raise", "watch.alert.update"] * 1 + [
        "watch.alert.update",
        "watch.alert.raise",
        "watch.alert.raise",
        "watch.alert.raise",
    ]
    assert raised[0].details["candidates"][0]["subject_id"] == subjects[0]
    assert raised[0].details["threshold"]["watchlist_size"] == 3
    assert raised[0].case_reference == "CASE-11" and raised[0].purpose == "find a suspect"


def test_confirmation_needs_two_different_reviewers(db: Database, faces: list[RGBImage]) -> None:
    subjects = _watchlist(db, "sought", 1)
    sid = _session(db)
    threshold = session_threshold(db, sid)
    match = [_candidate(db, subjects[0], threshold.score + 0.05)]
    alert = record_match(
        db, sid, "north", Query(1, 0, 1, faces[0], 0.6), match, threshold, audit=ACTOR
    )
    with pytest.raises(InvalidValueError, match="note"):
        review(db, alert, "ada", "confirm", "  ")
    with pytest.raises(InvalidValueError, match="verdict"):
        review(db, alert, "ada", "maybe", "looks like him")
    assert review(db, alert, "ada", "confirm", "same scar over the eye").state == "pending"
    with pytest.raises(AlreadyReviewedError):
        review(db, alert, "ada", "confirm", "really sure")
    assert get_alert(db, alert).state == "pending"  # one reviewer, however sure, is not enough
    done = review(db, alert, "grace", "confirm", "matches the warrant photo")
    assert done.state == "confirmed"
    assert [(r.reviewer, r.verdict) for r in done.reviews] == [
        ("ada", "confirm"),
        ("grace", "confirm"),
    ]
    with pytest.raises(AlertClosedError):
        review(db, alert, "linus", "reject", "too late")
    with db.read() as s:
        log = [e for e in entries(s, limit=100) if e.operation == "watch.alert.review"]
        assert verify(s).ok
    assert [(e.actor, e.details["state"], e.details["confirmations"]) for e in log] == [
        ("ada", "pending", 1),
        ("grace", "confirmed", 2),
    ]
    assert log[0].details["note"] == "same scar over the eye"


def test_one_reject_rejects(db: Database, faces: list[RGBImage]) -> None:
    subjects = _watchlist(db, "sought", 1)
    sid = _session(db)
    threshold = session_threshold(db, sid)
    match = [_candidate(db, subjects[0], threshold.score + 0.05)]
    alert = record_match(
        db, sid, "north", Query(1, 0, 1, faces[1], 0.6), match, threshold, audit=ACTOR
    )
    review(db, alert, "ada", "confirm", "could be him")
    assert review(db, alert, "grace", "reject", "different ears").state == "rejected"
    with pytest.raises(AlertClosedError):
        review(db, alert, "linus", "confirm", "him")
    assert [a.id for a in list_alerts(db, state="rejected")] == [alert]
    assert list_alerts(db, state="pending") == []


def test_crop_is_sealed_opened_and_purged_at_the_deadline(
    db: Database, faces: list[RGBImage]
) -> None:
    subjects = _watchlist(db, "sought", 1)
    sid = _session(db)
    threshold = session_threshold(db, sid)
    match = [_candidate(db, subjects[0], threshold.score + 0.05)]
    cipher = _cipher()
    jpeg = encode_crop(faces[0])
    alert = record_match(
        db, sid, "north", Query(1, 0, 1, faces[0], 0.6), match, threshold, audit=ACTOR,
        cipher=cipher, retention=timedelta(hours=1), now=NOW,
    )  # fmt: skip
    with db.read() as s:
        raw = s.get_one(AlertRow, alert).crop
    assert raw is not None and raw.startswith(b"YYC\x01")
    assert jpeg[:2] == b"\xff\xd8" and not any(
        jpeg[i : i + 32] in raw for i in range(0, len(jpeg) - 32, 16)
    )
    opened = alert_crop(db, alert, actor="ada", cipher=cipher)
    assert opened == jpeg
    assert np.asarray(Image.open(io.BytesIO(opened))).shape == faces[0].shape
    with pytest.raises(KeyMissingError):
        alert_crop(db, alert, actor="ada")
    with pytest.raises(DecryptionError):
        alert_crop(db, alert, actor="ada", cipher=_cipher())  # another key under the same id
    # A crop in clear (written without a key) is refused once a key is configured.
    plain = record_match(
        db, sid, "south", Query(2, 0, 1, faces[1], 0.6), match, threshold, audit=ACTOR,
        retention=timedelta(hours=3), now=NOW,
    )  # fmt: skip
    with pytest.raises(PlaintextRefusedError):
        alert_crop(db, plain, actor="ada", cipher=cipher)
    plain_jpeg = alert_crop(db, plain, actor="ada")
    assert plain_jpeg == encode_crop(faces[1])

    assert purge_expired(db, actor=ACTOR, now=NOW + timedelta(minutes=30)).alerts == ()
    purged = purge_expired(db, actor=ACTOR, now=NOW + timedelta(hours=2))
    assert purged.alerts == (alert,)
    tomb = get_alert(db, alert)
    assert not tomb.has_crop and tomb.candidates == () and tomb.purged_at is not None
    assert tomb.camera == "north" and tomb.threshold["score"] == pytest.approx(threshold.score)
    with db.read() as s:
        row = s.get_one(AlertRow, alert)
        assert row.crop is None and row.top_subject_id is None and row.candidates is None
        assert verify(s).ok
    with pytest.raises(NotFoundError, match="erased"):
        alert_crop(db, alert, actor="ada", cipher=cipher)
    with pytest.raises(AlertClosedError, match="retention"):
        review(db, alert, "ada", "confirm", "too late")
    assert get_alert(db, plain).has_crop  # not yet due
    purge_expired(db, actor=ACTOR, now=NOW + timedelta(hours=4))
    if db.backend == "sqlite":  # the erased bytes left the file (secure_delete, WAL truncated)
        files = b"".join(
            p.read_bytes() for p in Path(db.engine.url.database or "").parent.iterdir()
        )
        middle = len(plain_jpeg) // 2  # entropy-coded data, not a table every JPEG shares
        assert plain_jpeg[middle : middle + 64] not in files and raw[-64:] not in files
    ops = _operations(db)
    assert ops.count("watch.alert.view") == 2 and ops.count("watch.alert.purge") == 2


def test_closed_sessions_record_no_alert(db: Database, faces: list[RGBImage]) -> None:
    subjects = _watchlist(db, "sought", 1)
    sid = _session(db)
    threshold = session_threshold(db, sid)
    match = [_candidate(db, subjects[0], threshold.score + 0.05)]
    query = Query(1, 0, 1, faces[0], 0.6)
    with pytest.raises(SessionClosedError, match="expired"):
        record_match(db, sid, "north", query, match, threshold, audit=ACTOR, now=LATER)
    stop_session(db, "gate", actor=ACTOR)
    with pytest.raises(SessionClosedError, match="stopped"):
        record_match(db, sid, "north", query, match, threshold, audit=ACTOR)
    with pytest.raises(SessionClosedError):
        stop_session(db, "gate", actor=ACTOR)
    assert _alerts(db) == 0


def test_no_alert_or_session_without_its_audit_entry(db: Database, faces: list[RGBImage]) -> None:
    subjects = _watchlist(db, "sought", 1)
    sid = _session(db)
    threshold = session_threshold(db, sid)
    match = [_candidate(db, subjects[0], threshold.score + 0.05)]
    _break_audit(db)
    try:
        with pytest.raises(DBAPIError, match="audit log unavailable"):
            record_match(
                db, sid, "north", Query(1, 0, 1, faces[0], 0.6), match, threshold, audit=ACTOR
            )
        with pytest.raises(DBAPIError, match="audit log unavailable"):
            _session(db, "other")
        with pytest.raises(DBAPIError, match="audit log unavailable"):
            stop_session(db, "gate", actor=ACTOR)
    finally:
        _mend_audit(db)
    assert _alerts(db) == 0
    with db.read() as s:
        names = list(s.scalars(select(WatchSessionRow.name)))
        status = s.scalar(select(WatchSessionRow.status))
    assert names == ["gate"] and status == "active"
    assert record_match(
        db, sid, "north", Query(1, 0, 1, faces[0], 0.6), match, threshold, audit=ACTOR
    )


def test_crops_follow_key_rotation(db: Database, faces: list[RGBImage]) -> None:
    subjects = _watchlist(db, "sought", 1)
    sid = _session(db)
    threshold = session_threshold(db, sid)
    match = [_candidate(db, subjects[0], threshold.score + 0.05)]
    old = _cipher()
    kept = [
        record_match(
            db,
            sid,
            cam,
            Query(1, 0, 1, faces[i], 0.6),
            match,
            threshold,
            audit=ACTOR,
            cipher=old if cam == "north" else None,
        )
        for i, cam in enumerate(("north", "south"))
    ]
    assert crop_key_usage(db) == {"k1": 1, None: 1}
    new_keys, new_id = old.keyring.with_new_key()
    new = TemplateCipher(new_keys)
    assert reseal_crops(db, new, actor=ACTOR, only_plaintext=True) == 1
    assert crop_key_usage(db) == {"k1": 1, new_id: 1}  # the crop in clear, sealed
    assert reseal_crops(db, new, actor=ACTOR) == 1
    assert crop_key_usage(db) == {new_id: 2}
    only_new = TemplateCipher(new_keys.without("k1"))
    assert alert_crop(db, kept[0], actor="ada", cipher=only_new) == encode_crop(faces[0])
    assert alert_crop(db, kept[1], actor="ada", cipher=only_new) == encode_crop(faces[1])


def test_encryption_rotate_reseals_alert_crops_so_the_old_key_retires(
    tmp_path: Path, faces: list[RGBImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`yingyan encryption rotate` re-seals the alerts' best shots too: without that, an old
    key could never be retired while an alert kept a crop under it."""
    from typer.testing import CliRunner

    from yingyan.cli.gallery import open_service
    from yingyan.cli.main import app
    from yingyan.privacy import read_keyring

    for var in ("YINGYAN_KEY_FILE", "YINGYAN_TEMPLATE_KEY", "YINGYAN_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    runner = CliRunner()
    init = runner.invoke(app, ["encryption", "init", "--data-dir", str(data)])
    assert init.exit_code == 0, init.output
    with open_service(data, None) as service:
        db, cipher = service.db, service.cipher
        subjects = _watchlist(db, "sought", 1)
        sid = _session(db)
        threshold = session_threshold(db, sid)
        match = [_candidate(db, subjects[0], threshold.score + 0.05)]
        query = Query(1, 0, 1, faces[0], 0.6)
        alert = record_match(db, sid, "north", query, match, threshold, audit=ACTOR, cipher=cipher)
        assert crop_key_usage(db) == {"k1": 1}
    args = ["--data-dir", str(data)]
    rotated = runner.invoke(app, ["encryption", "rotate", *args, "--no-progress"])
    assert rotated.exit_code == 0 and "1 alert crop(s)" in rotated.output, rotated.output
    retired = runner.invoke(app, ["encryption", "retire", "k1", *args])
    assert retired.exit_code == 0, retired.output
    assert sorted(read_keyring(data / "template-keys.json").keys) == ["k2"]
    with open_service(data, None) as service:
        assert crop_key_usage(service.db) == {"k2": 1}
        crop = alert_crop(service.db, alert, actor="ada", cipher=service.cipher)
        assert crop == encode_crop(faces[0])
