"""`backup_sqlite_store`: a whole, consistent copy of a store that is being written, or a refusal that writes
nothing."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.auth.apikeys import Role, authenticate, create_api_key, list_api_keys
from node.errors import Conflict, InvalidInput
from node.store.backup import backup_sqlite_store
from node.store.db import Store, StoreNotFound, StoreUnavailable


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'node.db'}")
    store.migrate()
    yield store
    store.close()


def test_a_backup_taken_while_the_store_is_written_is_a_consistent_store(sqlite_store: Store,
                                                                         tmp_path: Path) -> None:
    with sqlite_store.transaction() as session:
        token = create_api_key(session, Role.analyst, "before").token
    stop = threading.Event()

    def write_keys() -> None:  # one transaction a key, as fast as the store takes them
        while not stop.is_set():
            with sqlite_store.transaction() as session:
                create_api_key(session, Role.auditor, "during")

    writer = threading.Thread(target=write_keys)
    writer.start()
    try:
        backup = backup_sqlite_store(sqlite_store.url, tmp_path / "copy.db")
    finally:
        stop.set()
        writer.join()

    assert backup.path == tmp_path / "copy.db" and backup.revision == "0008"
    assert backup.size_bytes == backup.path.stat().st_size > 0
    assert backup.path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.db")] == []  # no partial file left
    with sqlite3.connect(backup.path) as raw:  # one self-contained file, no WAL beside it
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    restored = Store(f"sqlite:///{backup.path}")
    try:
        restored.migrate(new_store=False)  # what an initialised node does: a backup is a store
        with restored.session() as session:
            assert authenticate(session, token).label == "before"
            copied = list_api_keys(session)
        with sqlite_store.session() as session:
            assert len(copied) <= len(list_api_keys(session))  # a snapshot of the store, not more
    finally:
        restored.close()


def test_a_backup_never_replaces_a_file(sqlite_store: Store, tmp_path: Path) -> None:
    taken = tmp_path / "taken.db"
    taken.write_text("an earlier backup")
    with pytest.raises(Conflict, match="exists already") as refused:
        backup_sqlite_store(sqlite_store.url, taken)
    assert refused.value.code == "backup_exists"
    assert taken.read_text() == "an earlier backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.db", "node.db-shm", "node.db-wal", "taken.db"]


def test_a_backup_into_a_missing_directory_is_refused(sqlite_store: Store, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no directory") as refused:
        backup_sqlite_store(sqlite_store.url, tmp_path / "nowhere" / "copy.db")
    assert refused.value.code == "backup_dir_missing"
    assert not (tmp_path / "nowhere").exists()


def test_a_missing_store_is_not_created_by_a_backup(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        backup_sqlite_store(f"sqlite:///{tmp_path / 'absent.db'}", tmp_path / "copy.db")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_node_store_leaves_no_backup(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreUnavailable, match="not a node's store"):
        backup_sqlite_store(f"sqlite:///{other}", tmp_path / "copy.db")
    not_sqlite = tmp_path / "text.db"
    not_sqlite.write_text("not a database at all, just some text that is long enough" * 20)
    with pytest.raises(StoreUnavailable, match="cannot back up"):
        backup_sqlite_store(f"sqlite:///{not_sqlite}", tmp_path / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db", "text.db"]


def test_a_postgresql_store_is_referred_to_pg_dump(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="pg_dump") as refused:
        backup_sqlite_store("postgresql+psycopg://node:secret@db/alliance", tmp_path / "copy.db")
    assert refused.value.code == "backup_needs_sqlite"
    assert list(tmp_path.iterdir()) == []
