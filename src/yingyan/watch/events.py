"""Alert events: what the SSE stream and webhooks send, read from the audit log.

Every alert act (raised, extended by a later sighting, reviewed) is one unit of work with its
audit entry, so the entries are the event log: an event's id is its entry's seq, which only
grows and commits in order (appends hold the `audit_head` row lock until commit). A resumed SSE
stream (`Last-Event-ID`) or a webhook cursor kept across restarts therefore misses nothing and
repeats nothing. An event names the alert, its state, session, camera, time span, candidates'
ids and scores and the threshold; never the crop (`GET /api/v1/alerts/{id}/crop`, audited).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, select

from yingyan.privacy.files import write_private
from yingyan.store import Database
from yingyan.store.tables import AlertRow, AuditEntryRow
from yingyan.watch.delivery import DeliveryWorker

log = logging.getLogger("yingyan.watch.events")

OPERATIONS: Final = {
    "watch.alert.raise": "alert.raised",
    "watch.alert.update": "alert.updated",
    "watch.alert.review": "alert.reviewed",
}
MAX_EVENTS: Final = 1000


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[tuple[int, dict[str, Any]]]
    scanned: int  # every entry up to this seq was read: the next page starts after it


def alert_events(
    db: Database, after: int = 0, limit: int = 100
) -> list[tuple[int, dict[str, Any]]]:
    """Up to `limit` alert events with ids above `after`, oldest first."""
    return alert_event_page(db, after, limit).events


def alert_event_page(db: Database, after: int = 0, limit: int = 100) -> EventPage:
    """`alert_events`, and how far the log was read: a poller that passes `scanned` next time
    does not re-read the entries of other operations in between (searches, enrolments)."""
    if not 1 <= limit <= MAX_EVENTS or after < 0:
        raise ValueError(f"limit must lie in [1, {MAX_EVENTS}] and after be >= 0")
    with db.read() as s:
        head = int(s.scalar(select(func.max(AuditEntryRow.seq))) or 0)
        query = (
            select(AuditEntryRow)
            .where(
                AuditEntryRow.seq > after,
                AuditEntryRow.seq <= head,
                AuditEntryRow.operation.in_(OPERATIONS),
            )
            .order_by(AuditEntryRow.seq)
            .limit(limit)
        )
        rows = list(s.scalars(query))
        ids = {int(r.details["alert"]) for r in rows if isinstance(r.details.get("alert"), int)}
        alerts = (
            {a.id: a for a in s.scalars(select(AlertRow).where(AlertRow.id.in_(ids)))}
            if ids
            else {}
        )
        events = [(r.seq, _event(r, alerts.get(int(r.details.get("alert", -1))))) for r in rows]
    scanned = rows[-1].seq if len(rows) == limit else max(head, after)
    return EventPage(events, scanned)


def last_event_id(db: Database) -> int:
    """The id after which only events to come lie (a stream that starts "now")."""
    with db.read() as s:
        return int(s.scalar(select(func.max(AuditEntryRow.seq))) or 0)


def _event(entry: AuditEntryRow, alert: AlertRow | None) -> dict[str, Any]:
    """One event from its audit entry. A raise or update entry carries the sighting; what a
    review entry does not carry (times, candidates, threshold) is read from the alert as it
    stands (no candidates once purged)."""
    d: Mapping[str, Any] = entry.details
    event: dict[str, Any] = {
        "type": OPERATIONS[entry.operation],
        "at": entry.at.isoformat(),
        "alert": d.get("alert"),
        "session": d.get("session"),
        "camera": d.get("camera"),
        "state": d.get("state", "pending"),
    }
    if entry.operation == "watch.alert.review":
        event |= {
            "verdict": d.get("verdict"),
            "confirmations": d.get("confirmations"),
            "reviewer": entry.actor,
        }
        sighting = _sighting(alert)
    else:
        sighting = {k: d.get(k) for k in ("first_pts", "last_pts", "tracks", "threshold")}
        sighting["candidates"] = d.get("candidates") or []
        sighting["first_seen_at"] = d.get("first_seen_at") or _iso(alert, "first_seen_at")
        sighting["last_seen_at"] = d.get("last_seen_at") or entry.at.isoformat()
    sighting["candidates"] = [
        {k: c.get(k) for k in ("gallery_id", "subject_id", "score")} for c in sighting["candidates"]
    ]
    return event | sighting


def _sighting(alert: AlertRow | None) -> dict[str, Any]:
    if alert is None:
        return {"candidates": []}
    return {
        "first_pts": alert.first_pts,
        "last_pts": alert.last_pts,
        "tracks": alert.tracks,
        "threshold": {
            "score": alert.threshold_score,
            "source": alert.threshold_source,
            "model": alert.threshold_model,
            "target_fpir": alert.target_fpir,
            "watchlist_size": alert.watchlist_size,
        },
        "candidates": list(alert.candidates or []),
        "first_seen_at": alert.first_seen_at.isoformat(),
        "last_seen_at": alert.last_seen_at.isoformat(),
    }


def _iso(alert: AlertRow | None, field: str) -> str | None:
    return None if alert is None else getattr(alert, field).isoformat()


# -- webhooks: events after a persisted cursor, handed to a DeliveryWorker ------------------------


class EventOutbox:
    """A thread that submits alert events to a `DeliveryWorker` (idempotency key: the event
    id), in order, and keeps a cursor file: the id up to which every event was delivered or
    given up on. A restart resumes after it (no event sent twice by a clean restart); events
    still queued when the service stops are sent again after the restart under the same key,
    which the receiver deduplicates. Without a cursor for this URL, it starts at the newest
    event (configuring a webhook does not replay the past). One process per deployment should
    deliver (each keeps its own cursor)."""

    def __init__(
        self,
        db: Database,
        worker: DeliveryWorker,
        cursor_file: Path,
        receiver: str,
        *,
        webhooks: int = 1,
        capacity: int = 1000,
        poll_s: float = 1.0,
        batch: int = 100,
    ) -> None:
        self.db, self.worker, self.cursor_file = db, worker, cursor_file
        self.receiver = hashlib.sha256(receiver.encode()).hexdigest()[:16]
        self.webhooks, self.capacity, self.poll_s, self.batch = webhooks, capacity, poll_s, batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yingyan-outbox", daemon=True)
        self._pending: deque[int] = deque()
        self._completed = 0
        self.cursor = self._load()
        self._saved = self.cursor
        self._scanned = self.cursor

    def start(self) -> None:
        self.worker.start()
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading events, let the worker finish what it can within `timeout_s`, and save
        the cursor of what was delivered."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.worker.stop(drain=True, timeout=timeout_s)
        self._advance()
        self._save()

    def _load(self) -> int:
        try:
            saved = json.loads(self.cursor_file.read_text())
            if saved.get("receiver") == self.receiver and isinstance(saved.get("after"), int):
                return int(saved["after"])
        except (OSError, ValueError, AttributeError):
            pass
        return last_event_id(self.db)

    def _save(self) -> None:
        if self.cursor != self._saved:
            body = {"receiver": self.receiver, "after": self.cursor}
            write_private(self.cursor_file, json.dumps(body).encode())
            self._saved = self.cursor

    def _advance(self) -> None:
        """Move the cursor over the events the worker has finished (it works in order)."""
        stats = self.worker.stats()
        done = (stats.delivered + stats.failed) // max(1, self.webhooks)
        while self._completed < done and self._pending:
            self.cursor = self._pending.popleft()
            self._completed += 1
        if not self._pending:
            self.cursor = max(self.cursor, self._scanned)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._advance()
                self._save()
                self._submit()
            except Exception:  # a database briefly away must not end the delivery
                log.exception("webhook outbox: reading events failed")
            self._stop.wait(self.poll_s)

    def _submit(self) -> None:
        room = self.capacity - len(self._pending)
        if room <= 0:
            return
        page = alert_event_page(self.db, self._scanned, min(self.batch, room))
        for event_id, event in page.events:
            if not self.worker.submit(event, str(event_id)):
                return  # queue full: this event is read again next time
            self._pending.append(event_id)
            self._scanned = event_id
        self._scanned = max(self._scanned, page.scanned)
