"""The hash-chained audit log on SQLite and PostgreSQL: the chain verifies after a round trip
through each backend; an edited (each field), deleted (middle or end), reordered or inserted
entry is found at the right seq; concurrent appenders get a gapless chain; images and templates
are refused; `yingyan audit verify` exits 1 on a tampered log."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, event, insert, select, text, update
from typer.testing import CliRunner

from yingyan.audit import (
    GENESIS_HASH,
    AuditIntegrityError,
    AuditRecord,
    AuditRecordError,
    append,
    entries,
    entry_hash,
    verify,
)
from yingyan.cli.main import app
from yingyan.store import Database, InvalidValueError
from yingyan.store.tables import AuditEntryRow, AuditHeadRow

from .conftest import Target

runner = CliRunner()
NOW = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
LOG = AuditEntryRow.__table__
HEAD = AuditHeadRow.__table__


def record(i: int) -> AuditRecord:
    return AuditRecord(
        actor=f"key:abc{i}(desk)",
        operation="identify",
        outcome="ok",
        gallery="watchlist",
        purpose="investigation of theft",
        case_reference=f"CASE-{i}",
        details={
            "candidates": [{"subject": 10 + i, "score": 0.1 + 0.2}, {"subject": 3, "score": 0.5}],
            "float32": np.float32(0.7),
            "count": np.int64(i),
            "nested": {"zeta": "ω", "alpha": None, "flag": True, "negative_zero": -0.0},
        },
    )


def record_fields(source: Any) -> dict[str, Any]:
    """The fields of an AuditRecord, read from a record or a stored row."""
    return {f.name: getattr(source, f.name) for f in dataclasses.fields(AuditRecord)}


def fill(db: Database, n: int = 5) -> None:
    with db.session() as s:
        for i in range(1, n + 1):
            append(s, record(i), at=NOW + timedelta(minutes=i))


def problems(db: Database) -> list[str]:
    with db.session() as s:
        report = verify(s)
    assert report.ok == (not report.problems)
    return report.problems


def names(problem_list: list[str], seq: int) -> bool:
    return any(p.startswith(f"seq {seq}:") or p.startswith(f"seq {seq}-") for p in problem_list)


# -- the chain ---------------------------------------------------------------------------------


def test_chain_links_and_verifies_after_reading_back(target: Target) -> None:
    with target.open() as db:
        fill(db)
    with target.open() as db, db.session() as s:  # a new engine: values come from the database
        log = entries(s)
        report = verify(s)
        head = s.scalars(select(AuditHeadRow)).one()
    assert report.ok and report.problems == []
    assert (report.entries, report.head_seq, report.head_hash) == (5, 5, log[-1].hash)
    assert [e.seq for e in log] == [1, 2, 3, 4, 5]
    assert log[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in pairwise(log))
    assert (head.seq, head.hash) == (5, log[-1].hash)
    first = log[0]
    assert first.at == NOW + timedelta(minutes=1)
    assert first.details == {
        "candidates": [{"subject": 11, "score": 0.3}, {"subject": 3, "score": 0.5}],
        "float32": 0.7,
        "count": 1,
        "nested": {"zeta": "ω", "alpha": None, "flag": True, "negative_zero": 0.0},
    }
    assert first.case_reference == "CASE-1"
    fields = first.as_dict()
    del fields["prev_hash"], fields["hash"], fields["seq"]
    fields["at"] = datetime.fromisoformat(fields["at"])
    assert entry_hash(first.prev_hash, seq=1, **fields) == first.hash
    json.dumps(first.as_dict())  # JSON-ready


def test_append_returns_what_is_stored_and_pages(db: Database) -> None:
    with db.session() as s:
        appended = [append(s, record(i)) for i in range(1, 8)]
    with db.session() as s:
        assert entries(s) == appended
        assert [e.seq for e in entries(s, after=2, limit=3)] == [3, 4, 5]
        assert entries(s, after=7) == []
        with pytest.raises(InvalidValueError):
            entries(s, limit=0)
    assert appended[0].at.tzinfo is not None


def test_append_rolls_back_with_the_callers_transaction(db: Database) -> None:
    fill(db, 2)
    with pytest.raises(RuntimeError), db.session() as s:
        append(s, record(3))
        raise RuntimeError("the audited act failed")
    fill(db, 1)  # appends seq 3, not 4
    with db.session() as s:
        assert [e.seq for e in entries(s)] == [1, 2, 3]
    assert problems(db) == []


def test_empty_log_verifies(db: Database) -> None:
    with db.session() as s:
        report = verify(s)
    assert report.ok and (report.entries, report.head_seq) == (0, 0)


# -- tampering ---------------------------------------------------------------------------------

EDITS: dict[str, Any] = {
    "at": NOW + timedelta(hours=1),
    "actor": "key:someone(else)",
    "operation": "verify",
    "gallery": "staff",
    "purpose": "curiosity",
    "case_reference": "CASE-99",
    "outcome": "denied",
    "details": {"candidates": [], "count": 0},
    "prev_hash": "f" * 64,
    "hash": "e" * 64,
}


@pytest.mark.parametrize("column", sorted(EDITS))
def test_an_edit_of_any_field_is_found_at_its_seq(db: Database, column: str) -> None:
    fill(db)
    with db.session() as s:
        s.execute(update(LOG).where(LOG.c.seq == 3).values({column: EDITS[column]}))
    found = problems(db)
    assert names(found, 3), found
    assert not any(names(found, seq) for seq in (1, 2, 5)), found


def test_a_null_field_set_is_found(db: Database) -> None:
    fill(db)
    with db.session() as s:
        s.execute(update(LOG).where(LOG.c.seq == 2).values(gallery=None, purpose=None))
    assert names(problems(db), 2)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(db: Database) -> None:
    fill(db)
    with db.session() as s:
        row = s.get_one(AuditEntryRow, 3)
        row.actor = "key:innocent(x)"
        row.hash = entry_hash(row.prev_hash, seq=3, at=row.at, **record_fields(row))
    found = problems(db)
    assert names(found, 4) and not names(found, 3), found


def test_a_changed_seq_is_found(db: Database) -> None:
    fill(db)
    with db.session() as s:
        s.execute(update(LOG).where(LOG.c.seq == 3).values(seq=99))
    found = problems(db)
    assert names(found, 3) and names(found, 99), found


def test_deleting_a_middle_entry_is_found(db: Database) -> None:
    fill(db)
    with db.session() as s:
        s.execute(delete(LOG).where(LOG.c.seq == 3))
    found = problems(db)
    assert any(p.startswith("seq 3: missing") for p in found), found


def test_deleting_the_tail_is_found_through_the_head(db: Database) -> None:
    fill(db)
    with db.session() as s:
        s.execute(delete(LOG).where(LOG.c.seq >= 4))
    found = problems(db)
    assert found == ["seq 4-5: missing from the end (head is at seq 5)"]


def test_swapping_two_entries_contents_is_found(db: Database) -> None:
    fill(db)
    columns = [c for c in LOG.c if c.name != "seq"]
    with db.session() as s:
        two = s.execute(select(*columns).where(LOG.c.seq == 2)).one()._asdict()
        four = s.execute(select(*columns).where(LOG.c.seq == 4)).one()._asdict()
        s.execute(update(LOG).where(LOG.c.seq == 2).values(four))
        s.execute(update(LOG).where(LOG.c.seq == 4).values(two))
    found = problems(db)
    assert names(found, 2) and names(found, 4), found


def test_an_inserted_entry_is_found_even_with_a_valid_hash(db: Database) -> None:
    fill(db)
    with db.session() as s:
        last = entries(s)[-1]
        # entry 1's record again, later and without details
        forged = {**record_fields(record(1)), "at": NOW + timedelta(hours=2), "details": {}}
        digest = entry_hash(last.hash, seq=6, **forged)
        s.execute(insert(LOG).values(seq=6, prev_hash=last.hash, hash=digest, **forged))
        s.execute(insert(LOG).values(seq=0, prev_hash=GENESIS_HASH, hash=digest, **forged))
    found = problems(db)
    assert names(found, 6) and names(found, 0), found
    assert not any(names(found, seq) for seq in range(1, 6)), found


def test_a_deleted_head_is_found_and_stops_appends(db: Database) -> None:
    fill(db, 2)
    with db.session() as s:
        s.execute(delete(HEAD))
    assert problems(db) == ["seq 2: entries exist but the head row is missing"]
    with pytest.raises(AuditIntegrityError), db.session() as s:
        append(s, record(3))


# -- what may be logged ------------------------------------------------------------------------

FORBIDDEN: list[dict[str, Any]] = [
    {"image": "abc"},
    {"probe_template": [0.1, 0.2]},
    {"Embedding": 1},
    {"faces": [{"query-vector": [1.0]}]},
    {"crop": None},
    {"raw": b"\xff\xd8\xff"},
    {"raw": bytearray(b"x")},
    {"scores": np.zeros(128, dtype=np.float32)},
    {"score": float("nan")},
    {"score": float("inf")},
    {"blob": "A" * 5000},
    {1: "non-string key"},
    {"when": object()},
    {"ids": {3, 4}},
    {"when": datetime(2025, 1, 1)},  # naive: its meaning depends on the machine
]


@pytest.mark.parametrize("details", FORBIDDEN, ids=lambda d: repr(d)[:30])
def test_images_templates_and_unstable_values_are_refused(
    db: Database, details: dict[str, Any]
) -> None:
    with pytest.raises(AuditRecordError) as error, db.session() as s:
        append(s, AuditRecord(actor="a", operation="op", details=details))
    assert error.value.code == "invalid_audit_record"
    with db.session() as s:
        assert entries(s) == []


def test_ids_and_hashes_of_images_and_templates_may_be_logged(db: Database) -> None:
    details = {"template_ids": [1, 2], "image_sha256": "ab" * 32, "at": NOW, "hit": np.True_}
    with db.session() as s:
        entry = append(s, AuditRecord(actor="a", operation="enroll", details=details))
    assert entry.details == {**details, "at": "2025-06-01T12:00:00.123456+00:00", "hit": True}
    assert type(entry.details["hit"]) is bool


@pytest.mark.parametrize(
    "bad",
    [
        {"actor": ""},
        {"operation": " "},
        {"outcome": "maybe"},
        {"actor": "x" * 201},
        {"gallery": ""},
    ],
)
def test_invalid_records_are_refused(db: Database, bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"actor": "a", "operation": "op", **bad}
    with pytest.raises(AuditRecordError), db.session() as s:
        append(s, AuditRecord(**fields))
    with pytest.raises(AuditRecordError), db.session() as s:
        append(s, AuditRecord("a", "op"), at=datetime(2025, 1, 1))  # naive


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_appends_give_a_gapless_verified_chain(db: Database) -> None:
    threads, each = 4, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(each):
                with db.session() as s:
                    append(s, AuditRecord(actor=f"thread-{t}", operation="op", details={"i": i}))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    with db.session() as s:
        report = verify(s)
        log = entries(s, limit=1000)
    assert report.ok, report.problems
    assert [e.seq for e in log] == list(range(1, threads * each + 1))
    for t in range(threads):
        mine = [e.details["i"] for e in log if e.actor == f"thread-{t}"]
        assert mine == list(range(each))  # each thread's appends in its own order


def test_a_first_append_committed_between_two_reads_is_not_tampering(db: Database) -> None:
    """The interleaving that once failed CI: one transaction reads no head, then another
    transaction's first append commits, then the first counts entries (READ COMMITTED shows
    it a newer snapshot). Made real with two connections: the other append runs and commits
    just before the first one's count reaches the server."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's first append holds the write lock: no such interleaving")
    fired: list[bool] = []

    def before_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not fired and "count(" in statement.lower() and "audit_log" in statement:
            fired.append(True)
            other = threading.Thread(target=lambda: fill(db, 1))
            other.start()
            other.join()

    with db.session() as s:
        connection = s.connection()
        event.listen(connection, "before_cursor_execute", before_execute)
        try:
            append(s, record(2), at=NOW + timedelta(minutes=2))
        finally:
            event.remove(connection, "before_cursor_execute", before_execute)
    assert fired == [True]  # the other append did commit between the two reads
    assert problems(db) == []
    with db.read() as s:
        assert [e.seq for e in entries(s, limit=10)] == [1, 2]


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_audit_verify_and_list(target: Target) -> None:
    with target.open() as db:
        fill(db, 3)
    r = runner.invoke(app, ["audit", "verify", *target.cli_args])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ok, 3 entries")
    r = runner.invoke(
        app, ["audit", "list", "--after", "1", "--limit", "1", "--json", *target.cli_args]
    )
    assert r.exit_code == 0, r.output
    (listed,) = json.loads(r.stdout)
    assert (listed["seq"], listed["case_reference"]) == (2, "CASE-2")
    r = runner.invoke(app, ["audit", "list", *target.cli_args])
    assert r.exit_code == 0 and "identify" in r.stdout

    with target.open() as db, db.session() as s:
        s.execute(text("UPDATE audit_log SET outcome = 'denied' WHERE seq = 2"))
    r = runner.invoke(app, ["audit", "verify", *target.cli_args])
    assert r.exit_code == 1
    assert "seq 2: hash does not match" in r.stdout and "TAMPERED" in r.stdout
    r = runner.invoke(app, ["audit", "verify", "--json", *target.cli_args])
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False
    r = runner.invoke(app, ["audit", "list", "--limit", "0", *target.cli_args])
    assert r.exit_code == 2
