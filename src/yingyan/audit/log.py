"""The audit log: an append-only hash chain of who did what, when, on which gallery, for which
purpose, and with what result (ids, scores, counts; never an image or a template).

Entry n stores hash_n = sha256(hash_{n-1} + canonical JSON of its fields), with 64 zeros before
the first entry; the single `audit_head` row holds the last seq and hash. Appending reads and
updates the head in the caller's transaction, under a row lock, so concurrent appenders get
consecutive seqs and the entry commits or rolls back with the act it records. `verify` recomputes
the chain: an edited, deleted, reordered or inserted entry breaks it, and the head reveals
entries cut from the end.

The chain proves the log was not altered by anyone who cannot also rewrite every later hash and
the head. Against someone with full write access to the database, record `VerifyReport.head_hash`
elsewhere from time to time (a ticket, a signed mail, a WORM store): a rewritten chain will no
longer reach a recorded head.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from yingyan.store.database import StoreError
from yingyan.store.repository import InvalidValueError, try_insert
from yingyan.store.tables import AuditEntryRow, AuditHeadRow, utcnow

GENESIS_HASH: Final = "0" * 64
OUTCOMES: Final = ("ok", "denied", "refused", "error")
FLOAT_DECIMALS: Final = 6  # canonical JSON must survive every backend's JSON round trip
MAX_LIMIT: Final = 1000
# A details key whose last word is one of these would hold biometric data.
FORBIDDEN_WORDS: Final = frozenset(
    {
        "image",
        "images",
        "photo",
        "photos",
        "picture",
        "chip",
        "crop",
        "template",
        "templates",
        "embedding",
        "embeddings",
        "vector",
        "vectors",
        "descriptor",
        "descriptors",
        "features",
    }
)
MAX_STRING: Final = 2000  # a longer string in details is likely an encoded image
_WORDS = re.compile(r"[^a-z0-9]+")
_YIELD_PER: Final = 1000
_HEAD_ID: Final = 1


class AuditRecordError(InvalidValueError):
    """The record cannot go into the log as given (e.g. its details hold an image)."""

    code = "invalid_audit_record"


class AuditIntegrityError(StoreError):
    """The log's head is missing while entries exist: the log was tampered with."""

    code = "audit_integrity"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the caller says happened."""

    actor: str
    operation: str
    outcome: str = "ok"  # ok | denied | refused | error
    gallery: str | None = None
    purpose: str | None = None
    case_reference: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # result ids, scores, counts


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A stored entry: the record (details JSON-normalised) with its place in the chain."""

    seq: int
    at: datetime
    actor: str
    operation: str
    outcome: str
    gallery: str | None
    purpose: str | None
    case_reference: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for CLI output and service responses."""
        return {
            "seq": self.seq,
            "at": _iso(self.at),
            "actor": self.actor,
            "operation": self.operation,
            "outcome": self.outcome,
            "gallery": self.gallery,
            "purpose": self.purpose,
            "case_reference": self.case_reference,
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    entries: int
    head_seq: int
    problems: list[str]  # each reads "seq N: what is wrong" (or "head: ..." without entries)
    head_hash: str = GENESIS_HASH  # record it elsewhere to anchor the chain


def append(session: Session, record: AuditRecord, *, at: datetime | None = None) -> AuditEntry:
    """Add `record` to the end of the chain in the caller's transaction (nothing commits here).

    Refuses details holding bytes, arrays or image/template-like keys (AuditRecordError).
    On SQLite, append before the transaction reads anything else, or begin it IMMEDIATE
    (`session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})`): a transaction
    whose read snapshot went stale cannot take the write lock and fails "database is locked"."""
    fields = _validated(record)
    when = _when(at)
    head = _locked_head(session)
    seq = head.seq + 1
    digest = entry_hash(head.hash, seq=seq, at=when, **fields)
    row = AuditEntryRow(seq=seq, at=when, prev_hash=head.hash, hash=digest, **fields)
    session.add(row)
    head.seq, head.hash = seq, digest
    session.flush()
    return entry_of(row)


def entries(session: Session, *, after: int = 0, limit: int = 100) -> list[AuditEntry]:
    """Up to `limit` entries with seq > `after`, oldest first (page on with the last seq)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidValueError(f"limit must lie in [1, {MAX_LIMIT}]")
    query = (
        select(AuditEntryRow)
        .where(AuditEntryRow.seq > after)
        .order_by(AuditEntryRow.seq)
        .limit(limit)
    )
    return [entry_of(row) for row in session.scalars(query)]


def verify(session: Session) -> VerifyReport:
    """Recompute the whole chain and compare it with the head.

    The head is read with a share lock (PostgreSQL) so that appends committing meanwhile wait
    instead of looking like inserted entries; SQLite reads one snapshot anyway."""
    head = session.scalars(
        select(AuditHeadRow).where(AuditHeadRow.id == _HEAD_ID).with_for_update(read=True)
    ).one_or_none()
    head_seq = 0 if head is None else head.seq
    head_hash = GENESIS_HASH if head is None else head.hash
    problems: list[str] = []
    count, expected, prev_hash, last = 0, 1, GENESIS_HASH, 0
    for row in _all_rows(session):
        count += 1
        problems += _check(row, expected, prev_hash, None if head is None else head_seq)
        if row.seq >= expected:
            expected, prev_hash, last = row.seq + 1, row.hash, row.seq
    problems += _check_head(head, last, prev_hash, count)
    return VerifyReport(not problems, count, head_seq, problems, head_hash)


def entry_hash(
    prev_hash: str,
    *,
    seq: int,
    at: datetime,
    actor: str,
    operation: str,
    gallery: str | None,
    purpose: str | None,
    case_reference: str | None,
    outcome: str,
    details: Mapping[str, Any],
) -> str:
    """sha256 of the previous hash followed by the entry's canonical JSON (sorted keys, no
    spaces, UTF-8): the same bytes whatever backend stored and returned the entry."""
    body = [seq, _iso(at), actor, operation, gallery, purpose, case_reference, outcome, details]
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


# -- appending ---------------------------------------------------------------------------------


def check_record(record: AuditRecord) -> None:
    """Refuse (AuditRecordError) a record that `append` would refuse: call it before the act,
    so that an act is never done and then found unloggable."""
    _validated(record)


def _validated(record: AuditRecord) -> dict[str, Any]:
    if record.outcome not in OUTCOMES:
        raise AuditRecordError(f"outcome must be one of {', '.join(OUTCOMES)}")
    return {
        "actor": _text(record.actor, "actor", 200),
        "operation": _text(record.operation, "operation", 64),
        "outcome": record.outcome,
        "gallery": _optional(record.gallery, "gallery", 200),
        "purpose": _optional(record.purpose, "purpose", None),
        "case_reference": _optional(record.case_reference, "case_reference", None),
        "details": _details(record.details),
    }


def _details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details as plain JSON (str keys, rounded floats, lists), or AuditRecordError when they
    hold something that must not be logged or cannot be hashed stably."""
    if not isinstance(details, Mapping):
        raise AuditRecordError("audit details must be a mapping")
    normal = _normal(details, "details")
    assert isinstance(normal, dict)
    return normal


def _text(value: str, what: str, limit: int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AuditRecordError(f"an audit record needs a non-empty {what}")
    if limit is not None and len(value) > limit:
        raise AuditRecordError(f"audit {what} has at most {limit} characters")
    return _encodable(value, what)


def _encodable(value: str, what: str) -> str:
    """Text every backend stores and the hash reads back: UTF-8 without NUL (a lone surrogate
    such as U+D800, which JSON can carry, cannot be encoded; PostgreSQL refuses NUL in text)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditRecordError(f"audit {what} is not valid Unicode text (lone surrogate)") from None
    if "\x00" in value:
        raise AuditRecordError(f"audit {what} holds a NUL character")
    return value


def _optional(value: str | None, what: str, limit: int | None) -> str | None:
    return None if value is None else _text(value, what, limit)


def _when(at: datetime | None) -> datetime:
    if at is None:
        return utcnow()
    if at.tzinfo is None:
        raise AuditRecordError("an audit time must carry a time zone (e.g. datetime.UTC)")
    return at.astimezone(UTC)


def _normal(value: Any, path: str) -> Any:
    """One JSON value, normalised; `path` names it in errors."""
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise AuditRecordError(f"{path}: strings in audit details are at most {MAX_STRING}")
        return _encodable(value, path) if isinstance(value, str) else value
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray):
        raise AuditRecordError(f"{path}: bytes and arrays (images, templates) are never logged")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            raise AuditRecordError(f"{path}: NaN and infinity cannot be logged")
        return round(number, FLOAT_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise AuditRecordError(f"{path}: a time must carry a time zone (e.g. datetime.UTC)")
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {_key(k, path): _normal(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise AuditRecordError(f"{path}: {type(value).__name__} cannot be logged (use JSON values)")


def _key(key: Any, path: str) -> str:
    if not isinstance(key, str):
        raise AuditRecordError(f"{path}: keys of audit details are strings, not {key!r}")
    _encodable(key, path)
    words = [w for w in _WORDS.split(key.lower()) if w]
    if words and words[-1] in FORBIDDEN_WORDS:
        raise AuditRecordError(
            f"{path}.{key}: images and templates are never logged (log their ids or hashes)"
        )
    return key


def _locked_head(session: Session) -> AuditHeadRow:
    """The head row, locked until the transaction ends; created on the very first append.

    On SQLite a no-op UPDATE first takes the database's write lock (waiting for other
    writers), so the head read next is the latest one rather than a stale snapshot."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(AuditHeadRow)
            .where(AuditHeadRow.id == _HEAD_ID)
            .values(seq=AuditHeadRow.seq)
            .execution_options(synchronize_session=False)
        )
    head = _select_head(session)
    if head is not None:
        return head
    # Under READ COMMITTED each statement sees a newer snapshot: a first append committed after
    # the head was read shows its entry to the count. Read the head again, after the count:
    # only a head still missing then (entries without one) is tampering.
    if session.scalar(select(func.count()).select_from(AuditEntryRow)):
        head = _select_head(session)
        if head is not None:
            return head
        raise AuditIntegrityError(
            "the audit log has entries but no head row: it was tampered with; "
            "run `yingyan audit verify`"
        )
    # Concurrent first appends: the loser's insert fails in its savepoint, then it waits on
    # (and reads) the winner's committed head.
    try_insert(session, AuditHeadRow(id=_HEAD_ID, seq=0, hash=GENESIS_HASH))
    head = _select_head(session)
    assert head is not None
    return head


def _select_head(session: Session) -> AuditHeadRow | None:
    query = (
        select(AuditHeadRow)
        .where(AuditHeadRow.id == _HEAD_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one_or_none()


# -- verifying ---------------------------------------------------------------------------------


def _all_rows(session: Session) -> Iterator[AuditEntryRow]:
    query = (
        select(AuditEntryRow).order_by(AuditEntryRow.seq).execution_options(yield_per=_YIELD_PER)
    )
    yield from session.scalars(query)


def _check(row: AuditEntryRow, expected: int, prev_hash: str, head_seq: int | None) -> list[str]:
    """What is wrong with one entry, given the hash of the entry before it (and the head's seq,
    None when the head itself is gone: that is reported once, in `_check_head`)."""
    seq = row.seq
    if seq < expected:  # only seq <= 0 can come before the first expected one
        return [f"seq {seq}: not a sequence number the log hands out (inserted)"]
    problems = []
    if seq > expected:
        problems.append(f"{_seqs(expected, seq - 1)}: missing (deleted)")
    if head_seq is not None and seq > head_seq:
        problems.append(f"seq {seq}: after the head (seq {head_seq}): not appended by the log")
    if row.prev_hash != prev_hash:
        problems.append(f"seq {seq}: prev_hash does not match the hash of the entry before it")
    if row.hash != _row_hash(row):
        problems.append(f"seq {seq}: hash does not match the entry's contents (edited)")
    return problems


def _check_head(head: AuditHeadRow | None, last: int, last_hash: str, n: int) -> list[str]:
    if head is None:
        return [f"seq {last}: entries exist but the head row is missing"] if n else []
    if head.seq > last:
        return [f"{_seqs(last + 1, head.seq)}: missing from the end (head is at seq {head.seq})"]
    if head.seq == last and head.hash != last_hash:
        return [f"seq {last}: the head's hash does not match this last entry"]
    return []


def _seqs(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}-{last}"


def _row_hash(row: AuditEntryRow) -> str:
    try:
        return entry_hash(
            row.prev_hash,
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            operation=row.operation,
            gallery=row.gallery,
            purpose=row.purpose,
            case_reference=row.case_reference,
            outcome=row.outcome,
            details=row.details,
        )
    except (TypeError, ValueError):  # details no longer hashable JSON: certainly edited
        return ""


def entry_of(row: AuditEntryRow) -> AuditEntry:
    """The stored row as an `AuditEntry` (for readers of the log, e.g. a scoped listing)."""
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        operation=row.operation,
        outcome=row.outcome,
        gallery=row.gallery,
        purpose=row.purpose,
        case_reference=row.case_reference,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")
