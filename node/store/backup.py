"""A consistent copy of the node's SQLite store, taken while the node runs (`alliance store backup`), and put back
in place of the store of a stopped node (`alliance store restore`).

What the chain cannot give back lives only in the store: reports still queued, API keys, the bank's raw
identifiers (encrypted), the query log, applications and their decisions. The mirror and the alliance keys can
be rebuilt from the chain, but a backup has them too.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import make_url

from node.errors import Conflict, InvalidInput
from node.store.db import (
    MIGRATIONS_DIR,
    StoreNotFound,
    StoreUnavailable,
    UnknownSchemaRevision,
    create_private_file,
    sqlite_file_of,
)

# How long a restore waits for the store's other connections to close before it counts the store as in use.
IN_USE_TIMEOUT_S = 2


@dataclass(frozen=True)
class StoreBackup:
    path: Path
    size_bytes: int
    revision: str  # the schema revision of the copy (a node of that version or newer opens it)


def backup_sqlite_store(database_url: str, target: Path) -> StoreBackup:
    """Copy the SQLite store at `database_url` to `target`, a new file, readable by its owner only.

    SQLite's online backup copies one snapshot: writers of a running node go on (WAL) and none of their
    transactions is half in the copy. The copy is checked (`PRAGMA integrity_check`, the schema revision) before it
    takes the name `target`, so a file at `target` is always a whole, checked store; an existing file is never
    replaced.
    """
    source = _sqlite_path(database_url)
    if not source.is_file():
        raise StoreNotFound(f"no store at {source}")
    target = target.expanduser()
    if _stat(target, code="backup_unwritable") is not None:
        raise Conflict(f"{target} exists already; a backup never replaces a file", code="backup_exists")
    if not target.parent.is_dir():
        raise InvalidInput(f"no directory {target.parent} to write the backup in", code="backup_dir_missing")
    try:
        fd, partial_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    except OSError as exc:
        raise InvalidInput(f"cannot write in {target.parent}: {exc.strerror or exc}",
                           code="backup_unwritable") from None
    os.close(fd)
    partial = Path(partial_name)
    try:
        revision = _copy_and_check(source, partial)
        # A hard link, not a rename: it fails if `target` appeared meanwhile instead of replacing it.
        try:
            os.link(partial, target)
        except FileExistsError:
            raise Conflict(f"{target} exists already; a backup never replaces a file", code="backup_exists") from None
        except OSError as exc:  # a file system without hard links
            raise InvalidInput(f"cannot name the backup {target}: {exc.strerror or exc}",
                               code="backup_unwritable") from None
        return StoreBackup(target, target.stat().st_size, revision)
    finally:
        for leftover in (partial, *(partial.with_name(partial.name + end) for end in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


def _sqlite_path(database_url: str, *, restore: bool = False) -> Path:
    path = sqlite_file_of(database_url)
    if path is not None:
        return path
    if make_url(database_url).get_backend_name() != "sqlite":
        how = "restore it with pg_restore or psql" if restore else "back it up with pg_dump"
        raise InvalidInput(f"this node's store is in PostgreSQL: {how} (docs/operations.md); "
                           f"`store {'restore' if restore else 'backup'}` is for a SQLite store",
                           code="backup_needs_sqlite")
    raise InvalidInput(f"the store at {database_url} is not a file to {'restore' if restore else 'copy'}",
                       code="backup_needs_sqlite")


def _copy_and_check(source: Path, copy: Path) -> str:
    try:
        with closing(sqlite3.connect(source, timeout=30)) as reader, closing(sqlite3.connect(copy)) as writer:
            reader.backup(writer)
            # The copy takes the store's WAL mode; one self-contained file is what a backup should be (the node
            # switches a restored store back to WAL when it opens it).
            writer.execute("PRAGMA journal_mode=DELETE")
            revision = _checked_revision(writer, source)
        with copy.open("rb") as written:
            os.fsync(written.fileno())  # whole on disk before it gets its name
        return revision
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"cannot back up the store at {source}: {exc}") from exc


def _checked_revision(connection: sqlite3.Connection, path: Path) -> str:
    """The schema revision of the whole node store open in `connection`; StoreUnavailable if it is none."""
    integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        raise StoreUnavailable(f"the copy of {path} failed its integrity check: {integrity}")
    try:
        revisions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.OperationalError:
        revisions = []
    if len(revisions) != 1:
        raise StoreUnavailable(f"{path} is not a node's store (no schema revision)")
    return str(revisions[0])


@dataclass(frozen=True)
class StoreRestore:
    path: Path  # the store, now holding the backup's content
    revision: str  # the backup's schema revision (an older one is migrated when the node opens the store)


def restore_sqlite_store(database_url: str, backup: Path) -> StoreRestore:
    """Replace the content of the SQLite store at `database_url` with that of `backup`, a file `store backup` wrote.

    The node must be stopped: a store another connection holds open is refused (`store_in_use`). Putting the file
    at the store's path by hand is no restore when the node was killed (the likely reason to restore): its
    `node.db-wal`, left beside the store, belongs to the old store, and SQLite applied it to the restored file at
    the next start (the old store's pages came back, or a mix of both). Here the store's own WAL is settled into it
    first, then every page is replaced through SQLite, in one transaction. The backup is checked whole (integrity,
    a schema revision this version knows) before anything is changed, and is only read.
    """
    store = _sqlite_path(database_url, restore=True)
    backup = backup.expanduser()
    found = _stat(backup, code="backup_missing")
    if found is None or not stat.S_ISREG(found.st_mode):
        raise InvalidInput(f"no backup file at {backup}", code="backup_missing")
    if store.exists() and store.samefile(backup):
        raise InvalidInput(f"{backup} is the store itself, not a backup of it", code="backup_is_the_store")
    revision = _checked_backup(backup)
    if not store.parent.is_dir():
        raise InvalidInput(f"no directory {store.parent} to restore the store in", code="store_dir_missing")
    try:
        create_private_file(store)  # a data dir whose store was lost gets one readable by the node's user only
        with closing(sqlite3.connect(_read_only_uri(backup), uri=True)) as reader, \
                closing(sqlite3.connect(store, timeout=IN_USE_TIMEOUT_S, isolation_level=None)) as writer:
            _settle_wal(writer, store)
            reader.backup(writer)
    except OSError as exc:
        raise InvalidInput(f"cannot write the store at {store}: {exc.strerror or exc}", code="store_unwritable") \
            from None
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"cannot restore the store at {store}: {exc}") from exc
    return StoreRestore(store, revision)


def _stat(path: Path, *, code: str) -> os.stat_result | None:
    """`path`'s status, None if nothing is there. Path.exists() and is_file() say False only of a path that is not
    there: a name too long, or a directory this user may not search, raised its OSError (a traceback)."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InvalidInput(f"{path} cannot be used: {exc.strerror or exc}", code=code) from None


def _checked_backup(backup: Path) -> str:
    # A file that is no backup is the operator's input, refused with a code of its own: as StoreUnavailable its line
    # had no code, and the kind named (`store_unavailable`) said the node's store was down.
    try:
        with closing(sqlite3.connect(_read_only_uri(backup), uri=True)) as reader:
            revision = _checked_revision(reader, backup)
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{backup} is not a node's store: {exc}", code="not_a_backup") from None
    except StoreUnavailable as exc:
        raise InvalidInput(str(exc), code="not_a_backup") from None
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    if revision not in known:
        raise UnknownSchemaRevision(f"the backup {backup} is at schema revision {revision}, which this version of "
                                    "the node does not know (a newer version wrote it): restore it with that version")
    return revision


def _settle_wal(writer: sqlite3.Connection, store: Path) -> None:
    """Write the store's WAL into it and leave WAL mode, which SQLite does only for the one connection holding
    the store open: a running node (or command) is found here, before anything is changed."""
    try:
        mode = writer.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorname != "SQLITE_BUSY":
            raise
        mode = "busy"
    if mode != "delete":
        raise Conflict(f"the store at {store} is in use: stop the node (and any `alliance` command using it) "
                       "before restoring", code="store_in_use")


def _read_only_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"  # percent-encoded: a path may hold '?' or '#'
