"""A consistent copy of the node's SQLite store, taken while the node runs (`alliance store backup`).

What the chain cannot give back lives only in the store: reports still queued, API keys, the bank's raw
identifiers (encrypted), the query log, applications and their decisions. The mirror and the alliance keys can
be rebuilt from the chain, but a backup has them too.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

from node.errors import Conflict, InvalidInput
from node.store.db import StoreNotFound, StoreUnavailable, sqlite_file_of


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
    if target.exists():
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


def _sqlite_path(database_url: str) -> Path:
    path = sqlite_file_of(database_url)
    if path is not None:
        return path
    if make_url(database_url).get_backend_name() != "sqlite":
        raise InvalidInput("this node's store is in PostgreSQL: back it up with pg_dump (docs/operations.md); "
                           "`store backup` copies a SQLite store", code="backup_needs_sqlite")
    raise InvalidInput(f"the store at {database_url} is not a file to copy", code="backup_needs_sqlite")


def _copy_and_check(source: Path, copy: Path) -> str:
    try:
        with closing(sqlite3.connect(source, timeout=30)) as reader, closing(sqlite3.connect(copy)) as writer:
            reader.backup(writer)
            # The copy takes the store's WAL mode; one self-contained file is what a backup should be (the node
            # switches a restored store back to WAL when it opens it).
            writer.execute("PRAGMA journal_mode=DELETE")
            integrity = writer.execute("PRAGMA integrity_check").fetchone()[0]
            if integrity != "ok":
                raise StoreUnavailable(f"the copy of {source} failed its integrity check: {integrity}")
            try:
                revisions = [row[0] for row in writer.execute("SELECT version_num FROM alembic_version")]
            except sqlite3.OperationalError:
                revisions = []
            if len(revisions) != 1:
                raise StoreUnavailable(f"{source} is not a node's store (no schema revision)")
        with copy.open("rb") as written:
            os.fsync(written.fileno())  # whole on disk before it gets its name
        return str(revisions[0])
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"cannot back up the store at {source}: {exc}") from exc
