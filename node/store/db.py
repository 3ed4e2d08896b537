"""Engines, sessions and schema migration for the node's local store."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, ExceptionContext, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30  # how long a SQLite connection waits for another's lock before "database is locked"
CONNECT_TIMEOUT_S = 5  # PostgreSQL: how long opening a connection may take before the store counts as unavailable
FULL_DISK_BYTES = 1 << 20  # free space below which a SQLite store that cannot be opened is said to be on a full disk
POSTGRES_CONNECT_ARGS = {"connect_timeout": CONNECT_TIMEOUT_S,
                         "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


class StoreUnavailable(Exception):
    """The database cannot be reached or opened."""


# What SQLAlchemy raises when the database goes away, or stays saturated, after the store was opened: the database
# is down or unreachable (PostgreSQL restarted, network cut, SQLite locked past its timeout), or every pooled
# connection stayed busy past the pool's timeout. The API answers them 503, the CLI with one line.
STORE_LOST = (OperationalError, InterfaceError, PoolTimeout)


# PostgreSQL's read_only_sql_transaction: the server takes no writes (a standby, which is where the address may lead
# after a failover, or default_transaction_read_only). The driver raises it as an InternalError.
READ_ONLY_SQLSTATE = "25006"


def unavailable_if_read_only(error: StatementError) -> StatementError:
    """`error`, as an OperationalError if the server refused a write because it takes none: a store that cannot take
    the node's writes is unavailable until it can (503 store_unavailable, one CLI line, a worker that retries), not
    an internal error (a plain 500, a traceback)."""
    orig = error.orig
    if (isinstance(error, OperationalError) or not isinstance(orig, Exception)
            or getattr(orig, "sqlstate", None) != READ_ONLY_SQLSTATE):
        return error
    return OperationalError(error.statement, error.params, orig)


def _read_only_as_unavailable(context: ExceptionContext) -> StatementError | None:
    error = context.sqlalchemy_exception
    if error is not None and (unavailable := unavailable_if_read_only(error)) is not error:
        return unavailable
    return None


class StoreNotFound(StoreUnavailable):
    """An initialised node's database URL leads to no store (a wrong `database_url`, a deleted file)."""


class UnknownSchemaRevision(StoreUnavailable):
    """The database was migrated by a newer version of the node (a revision this version does not have)."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # libpq waits for a server that accepts and never answers (a hung host, a dropped route) without end: every
    # command, request and /health hung with it. TCP keepalives end a pooled connection whose host died without a
    # reset (powered off, network partition) in about a minute, where the kernel's default waits two hours. A URL
    # that sets one of these itself keeps its own.
    given = make_url(url).query
    connect_args = {name: value for name, value in POSTGRES_CONNECT_ARGS.items() if name not in given}
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args)
    event.listen(engine, "handle_error", _read_only_as_unavailable)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets API readers proceed while the publisher/indexer writes; synchronous=FULL so that an
    # accepted report survives a power cut, not only a process crash.
    cursor = dbapi_connection.cursor()
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    # Switching a file to WAL takes its exclusive lock, and SQLite answers SQLITE_BUSY at once, without waiting out
    # the busy timeout, when another connection holds or is taking a write lock (waiting could deadlock): two
    # processes opening a new store together, one of them failed. WAL belongs to the file, so once one connection
    # has switched it the others' pragma changes nothing and takes no lock; until then they try again.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def lock_for_migration(connection: Connection) -> None:
    """Take the store's migration lock in `connection`'s transaction, held until it ends.

    PostgreSQL: an advisory lock keyed by the schema (one database may hold several stores, one per schema).
    SQLite: the database's write lock, taken now by BEGIN IMMEDIATE. pysqlite would otherwise begin a transaction
    only before an INSERT, UPDATE or DELETE, so each CREATE TABLE of a migration would commit on its own.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('alliance-migrate/' || current_schema()))"))
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine, revision: str = "head", *, new_store: bool = True) -> None:
    """Bring the schema to `revision` (idempotent). Unless `new_store`, a database without the node's schema is
    refused (StoreNotFound) and left as it was: an initialised node pointed at a mistyped SQLite path or an empty
    schema would otherwise start on a new, empty store, its API keys, queued reports and alliance keys elsewhere."""
    where = engine.url.render_as_string()  # the password masked
    config = alembic_config(engine)
    sqlite_file = sqlite_file_of(engine.url)
    try:
        if sqlite_file is not None and not new_store and not sqlite_file.exists():
            raise StoreNotFound(_no_store_message(where))  # before connecting, which would create the file
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            create_private_file(sqlite_file)
        current = _current_heads(engine)
        if not current and not new_store:
            raise StoreNotFound(_no_store_message(where))
        if revision == "head" and current == set(ScriptDirectory.from_config(config).get_heads()):
            return  # the usual case: no lock to wait for behind a long write of a running node
        command.upgrade(config, revision)
    except OSError as exc:  # the SQLite file's directory cannot be made (a file is in the way, say)
        raise StoreUnavailable(f"cannot create the directory of the database at {where}: {exc}") from exc
    except DBAPIError as exc:
        # Not only a server that cannot be reached (OperationalError): a role without CREATE on the schema
        # (ProgrammingError, PostgreSQL 15's default for public) or a file that is not SQLite (DatabaseError).
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        if sqlite_file is not None and isinstance(exc, OperationalError):  # not a file that is no database
            reason += _why_unwritable(sqlite_file.parent)
        raise StoreUnavailable(f"cannot open the database at {where}: {reason}") from exc


def _why_unwritable(directory: Path) -> str:
    """Why SQLite may have failed in `directory`, said in words, or "". It names neither a read-only data dir nor a
    full disk: it says "unable to open database file" or "disk I/O error" when it cannot make the store's -wal and
    -shm files beside it."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return ""
    if stats.f_flag & os.ST_RDONLY:
        return f" (the file system of {directory} is read-only)"
    if not os.access(directory, os.W_OK):
        return f" (this user may not write in {directory})"
    if stats.f_bavail * stats.f_frsize < FULL_DISK_BYTES:
        return f" (the file system of {directory} is full)"
    return ""


def create_private_file(path: Path) -> None:
    """Create a new SQLite store's file readable by the node's user only, before SQLite creates it with the umask's
    mode (0644 by default). Its -wal and -shm files take the database file's mode. The store holds no raw identifier
    or key in clear, but it holds who checked which indicators, the bank's applications and its pool drafts."""
    with suppress(FileExistsError):  # there already, or another process of this node made it just now
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def sqlite_file_of(url: URL | str) -> Path | None:
    """The file of a SQLite store's URL; None for another database, or a SQLite one in memory or given as a URI."""
    url = make_url(url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _no_store_message(where: str) -> str:
    return (f"no store at {where}, but this node is initialised: check database_url (its store is elsewhere); "
            "`alliance store create` makes a new, empty one on purpose")


def _current_heads(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def once_more_on_conflict(action: Callable[[], T]) -> T:
    """Run `action` (one store transaction) and, if it lost a race to another process inserting a row it meant to
    insert (IntegrityError on a unique key), run it once more: the second run reads that row and acts on it."""
    try:
        return action()
    except IntegrityError:
        return action()


class Store:
    """An engine and its session factory; `transaction()` commits on success, rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self, *, new_store: bool = True) -> None:
        migrate(self.engine, new_store=new_store)

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def ping(self) -> bool:
        """Whether the store answers and takes writes (a PostgreSQL standby, or a SQLite file the node may not
        write, answers every read)."""
        sqlite_file = sqlite_file_of(self.url)
        if sqlite_file is not None and not os.access(sqlite_file, os.W_OK):
            return False
        try:
            with self.engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    return connection.exec_driver_sql("SHOW transaction_read_only").scalar() == "off"
                connection.exec_driver_sql("SELECT 1")
            return True
        except OperationalError:
            return False

    def refuse_if_unwritable(self) -> None:
        """Raise StoreUnavailable, saying why, if this user may not write the SQLite file: a node serving on it would
        refuse every report, application and check-log entry. A PostgreSQL server that takes no writes (a standby,
        mid-failover) is not refused: it may become the primary again, and meanwhile /health says so."""
        sqlite_file = sqlite_file_of(self.url)
        if sqlite_file is not None and sqlite_file.exists() and not os.access(sqlite_file, os.W_OK):
            raise StoreUnavailable(f"cannot write the database at {sqlite_file}: this user may not write the file "
                                   f"(its mode, owner or immutable flag){_why_unwritable(sqlite_file.parent)}")

    def close(self) -> None:
        self.engine.dispose()
