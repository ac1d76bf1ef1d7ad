"""Database maintenance: make erased rows leave the database files (`yingyan maintenance vacuum`).

An erasure deletes rows, but neither backend forgets them at once. PostgreSQL keeps each deleted
row version ("dead tuple", bytes included) in the table's pages until VACUUM marks the space
free; only VACUUM FULL rewrites a table into a new file, so that the old pages, and the bytes
left in them, are released. SQLite (`secure_delete`) zeroes deleted rows in its pages, but the
write-ahead log may still hold the pages as they were, and free pages stay in the file until
VACUUM rebuilds it. `vacuum` runs the backend's step on every table that holds biometric or
personal data and on the audit log, outside any transaction (VACUUM refuses to run in one).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from yingyan.store.database import Database, StoreError

# Templates and kept images, templates staged by a migration between models, subjects and
# their metadata, consents, calibration cohorts (reference templates), the change log of
# template ids, galleries, keys, the audit log, and the watch sessions, cameras and alerts.
TABLES: Final[tuple[str, ...]] = (
    "templates",
    "staged_templates",  # sealed templates of a migration's target model, until the switch
    "subjects",
    "consents",
    "calibration_profiles",
    "gallery_changes",
    "galleries",
    "api_keys",
    "audit_log",
    "audit_head",
    "alerts",  # sealed best-shot crops and candidates until their retention deadline
    "alert_reviews",
    "watch_cameras",  # camera URLs may hold credentials
    "watch_sessions",
)


@dataclass(frozen=True)
class MaintenanceReport:
    """What a vacuum did: for the operator and for its audit entry (numbers and names only)."""

    backend: str
    full: bool
    tables: list[str]
    seconds: float
    # PostgreSQL: dead row versions per table before the vacuum (statistics, an estimate).
    dead_rows_before: dict[str, int] = field(default_factory=dict)
    # SQLite: bytes of the database file plus its WAL, before and after.
    bytes_before: int | None = None
    bytes_after: int | None = None
    # SQLite: False when a reader kept the WAL from being fully folded in (run again later).
    wal_truncated: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def audit_details(self) -> dict[str, Any]:
        """`as_dict` with the dead rows summed: the audit log refuses keys named after
        templates or images (such as the table `templates`)."""
        details = self.as_dict()
        details["dead_rows_before"] = sum(self.dead_rows_before.values())
        return details


def vacuum(db: Database, *, full: bool = False) -> MaintenanceReport:
    """VACUUM (ANALYZE) the store's data and audit tables on PostgreSQL (`full`: VACUUM FULL,
    which rewrites each table under an exclusive lock that blocks its readers and writers while
    it runs); on SQLite, VACUUM (always a full rebuild) then a TRUNCATE checkpoint of the WAL."""
    started = time.monotonic()
    present = set(inspect(db.engine).get_table_names())
    tables = [t for t in TABLES if t in present]
    try:
        if db.backend == "postgresql":
            return _vacuum_postgresql(db, tables, full, started)
        if db.backend == "sqlite":
            return _vacuum_sqlite(db, tables, started)
    except DBAPIError as exc:
        raise StoreError(f"vacuum failed: {exc.orig}") from exc
    raise StoreError(f"no maintenance step for database backend {db.backend!r}")


def _vacuum_postgresql(
    db: Database, tables: list[str], full: bool, started: float
) -> MaintenanceReport:
    options = "FULL, ANALYZE" if full else "ANALYZE"
    quote = db.engine.dialect.identifier_preparer.quote
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        dead = connection.execute(
            text(
                "SELECT relname, n_dead_tup FROM pg_stat_user_tables "
                "WHERE schemaname = current_schema()"
            )
        )
        before = {str(name): int(n) for name, n in dead if name in tables}
        for table in tables:
            connection.exec_driver_sql(f"VACUUM ({options}) {quote(table)}")
    return MaintenanceReport(
        "postgresql", full, tables, round(time.monotonic() - started, 3), before
    )


def _vacuum_sqlite(db: Database, tables: list[str], started: float) -> MaintenanceReport:
    path = db.engine.url.database
    file = Path(path) if path and path != ":memory:" else None
    size_before = _sqlite_bytes(file)
    raw = db.engine.raw_connection()
    try:
        sqlite = raw.driver_connection
        assert sqlite is not None
        sqlite.execute("VACUUM")  # the store runs sqlite3 in autocommit mode: no open BEGIN
        busy, _, _ = sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        raw.close()
    return MaintenanceReport(
        "sqlite",
        True,
        tables,
        round(time.monotonic() - started, 3),
        bytes_before=size_before,
        bytes_after=_sqlite_bytes(file),
        wal_truncated=not busy,
    )


def _sqlite_bytes(file: Path | None) -> int | None:
    """Size of the database file and its write-ahead log, or None in memory."""
    if file is None:
        return None
    parts = (file, file.with_name(file.name + "-wal"))
    return sum(p.stat().st_size for p in parts if p.exists())
