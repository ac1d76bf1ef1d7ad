"""Opening the gallery database: one engine per backend, and the schema migrated on open.

`open_database` is all the app needs: it creates the SQLite file (or connects to PostgreSQL),
brings the schema to the latest migration with Alembic configured in code (no alembic.ini at run
time), and returns a `Database` whose `session()` is the unit of work. Nothing here is global:
each `Database` owns its engine, so tests and workers open as many as they like.

Concurrency: on SQLite every unit of work that may write begins IMMEDIATE (it takes the write
lock before its first read, so a concurrent writer makes it wait, up to the busy timeout, instead
of failing with SQLITE_BUSY_SNAPSHOT when it later writes from a stale snapshot); `read()` is
for units that only read and never wait for writers (WAL). `run(work)` retries a whole unit of
work on a busy, deadlock or serialisation error: never half of one.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from yingyan.errors import ConfigError, YingyanError
from yingyan.extras import require
from yingyan.privacy.files import private_dir, private_sqlite

MIGRATIONS: Final = Path(__file__).with_name("migrations")
SQLITE_FILE: Final = "yingyan.db"
# Any constant: serialises concurrent upgrades of one PostgreSQL database (workers starting).
_PG_MIGRATION_LOCK: Final = 0x5949_4E47
BUSY_TIMEOUT_S: Final = 30.0  # how long a SQLite writer waits for another's lock
RETRIES: Final = 5  # attempts of a whole unit of work after a busy/serialisation failure
# PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
_PG_RETRY_STATES: Final = frozenset({"40001", "40P01", "55P03"})
T = TypeVar("T")
log = logging.getLogger(__name__)


class StoreError(YingyanError):
    """Base of the gallery store's errors."""

    code = "store_error"


class StoreUnavailableError(StoreError):
    """The database cannot be reached or opened, or its schema is not the one expected."""

    code = "store_unavailable"


class Database:
    """An open gallery database: its engine and a factory of units of work."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Rows stay readable after commit: callers get them back from `with db.session()`.
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._readers = sessionmaker(reader, expire_on_commit=False)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work that may write: commits when the block ends, rolls everything back
        if it raises. On SQLite it holds the write lock from its start (BEGIN IMMEDIATE)."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A unit of work that only reads: it never waits for writers (nor they for it)."""
        with self._readers.begin() as session:
            yield session

    def run(self, work: Callable[[Session], T], *, retries: int = RETRIES) -> T:
        """`work` in one unit of work (`session()`), committed; the whole unit is run again
        (with a short random back-off) when the database reports a busy lock, a deadlock or
        a serialisation failure, so `work` must do nothing outside the session."""
        for attempt in range(retries + 1):
            try:
                with self.session() as session:
                    return work(session)
            except DBAPIError as exc:
                if attempt == retries or not is_transient(exc):
                    raise
                log.warning("unit of work retried after %s (attempt %d)", exc.orig, attempt + 1)
                time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def revision(self) -> str | None:
        """The schema's current migration, or None for an empty database."""
        with self._engine.connect() as connection:
            connection.execution_options(sqlite_begin="DEFERRED")
            return MigrationContext.configure(connection).get_current_revision()

    def purge_deleted(self) -> None:
        """After an erasure: on SQLite, fold the write-ahead log into the file and truncate it.
        `secure_delete` already zeroed the deleted rows in the database pages, but the WAL
        still holds copies of the pages as they were before; a reader holding an old snapshot
        makes this a no-op until the next call. PostgreSQL keeps dead tuples until VACUUM."""
        if self.backend != "sqlite":
            return
        with self._engine.connect() as connection:
            connection.execution_options(sqlite_begin="DEFERRED")
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def is_transient(exc: DBAPIError) -> bool:
    """A failure that a fresh attempt of the same unit of work may not meet again."""
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text_ = str(orig).lower()
        return "locked" in text_ or "busy" in text_
    return getattr(orig, "sqlstate", None) in _PG_RETRY_STATES


def open_database(url: str | None, data_dir: Path, *, migrate: bool = True) -> Database:
    """Open (creating if needed) the database at `url`, or SQLite at `data_dir/yingyan.db`.

    With `migrate` (the default) the schema is upgraded to the latest migration; without it,
    a schema that is not at the latest migration is refused rather than used half-way.
    """
    engine = create_store_engine(database_url(url, data_dir))
    try:
        if migrate:
            upgrade(engine)
        else:
            _check_at_head(engine)
    except OperationalError as exc:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailableError(f"cannot open database {where}: {exc.orig}") from exc
    except BaseException:
        engine.dispose()
        raise
    return Database(engine)


def database_url(url: str | None, data_dir: Path) -> URL:
    """The SQLAlchemy URL to use: SQLite in `data_dir` by default; `postgresql://` and
    `postgres://` mean psycopg 3 (SQLAlchemy would otherwise pick psycopg2)."""
    if url is None:  # a 0700 folder and a 0600 file (SQLite's -wal/-shm take its mode)
        private_sqlite(private_dir(data_dir) / SQLITE_FILE)
        return URL.create("sqlite+pysqlite", database=str(data_dir / SQLITE_FILE))
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The parser's message repeats the URL, password included: do not pass it on.
        raise ConfigError(
            "not a database URL; expected e.g. postgresql://user@host/dbname or sqlite:///path"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql"
        )
    return parsed


def create_store_engine(url: URL) -> Engine:
    """An engine with the per-backend settings the store relies on (see `_sqlite_connect`)."""
    if url.get_backend_name() != "sqlite":
        if url.drivername == "postgresql+psycopg":  # else SQLAlchemy's ModuleNotFoundError
            require("psycopg", "postgres", "a PostgreSQL database")
        # Fail fast on an unreachable server; drop connections the server closed while idle.
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    in_memory = url.database in (None, "", ":memory:")
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_S},  # sqlite3's busy timeout (seconds)
        # An in-memory database lives as long as its one connection.
        poolclass=StaticPool if in_memory else None,
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Foreign keys (off by default in SQLite: cascades would silently not happen), WAL
    (readers do not block the writer), secure delete (deleted rows are overwritten with zeros
    rather than left in free pages: an erased template must not be recoverable from the file),
    and transactions controlled by SQLAlchemy: the sqlite3 module's own handling never BEGINs
    before DDL or SAVEPOINT, which would break atomic migrations and nested transactions."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA secure_delete = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """BEGIN IMMEDIATE unless the connection was asked for a read-only DEFERRED one."""
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def alembic_config(url: URL | str | None = None) -> Config:
    """Alembic's configuration, built in code. With `url`, the alembic command API works
    without an ini file, e.g. `command.revision(alembic_config(url), "msg", autogenerate=True)`.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {MIGRATIONS}")
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema to `revision` in one transaction. The transaction holds the write lock
    from its start (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL) so that workers
    opening a new database together migrate it once, one after the other."""
    config = alembic_config()
    with engine.connect() as connection:
        connection.execution_options(sqlite_begin="IMMEDIATE")
        with connection.begin():
            if connection.dialect.name == "postgresql":
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                connection.execute(lock, {"key": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def _check_at_head(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execution_options(sqlite_begin="DEFERRED")
        current = MigrationContext.configure(connection).get_current_revision()
    head = head_revision()
    if current != head:
        raise StoreUnavailableError(
            f"database schema is at {current or 'nothing'}, this version needs {head}: "
            "open it with migrate=True or run the migrations first"
        )
