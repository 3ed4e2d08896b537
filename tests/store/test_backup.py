"""`backup_sqlite_store`: a whole, consistent copy of a store that is being written, or a refusal that writes
nothing."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from node.auth.apikeys import Role, authenticate, create_api_key, list_api_keys
from node.errors import Conflict, InvalidInput
from node.store.backup import backup_sqlite_store, restore_sqlite_store
from node.store.db import Store, StoreNotFound, StoreUnavailable, UnknownSchemaRevision, migrate


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

    assert backup.path == tmp_path / "copy.db" and backup.revision == "0011"
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


def _labels(store: Store) -> list[str]:
    with store.session() as session:
        return [key.label for key in list_api_keys(session)]


@pytest.fixture
def backup_and_later_store(sqlite_store: Store, tmp_path: Path) -> tuple[Path, Store]:
    """A backup holding the key "before", and the store it was taken of, which holds "after" too since."""
    with sqlite_store.transaction() as session:
        create_api_key(session, Role.analyst, "before")
    backup = backup_sqlite_store(sqlite_store.url, tmp_path / "backup.db").path
    with sqlite_store.transaction() as session:
        create_api_key(session, Role.analyst, "after")
    sqlite_store.close()  # the node is stopped
    return backup, sqlite_store


def test_restore_replaces_the_store_with_the_backup_and_leaves_the_backup_as_it_was(
        backup_and_later_store: tuple[Path, Store]) -> None:
    backup, store = backup_and_later_store
    before = backup.read_bytes()
    restored = restore_sqlite_store(store.url, backup)
    assert restored.revision == "0011" and restored.path == Path(store.url.removeprefix("sqlite:///"))
    assert backup.read_bytes() == before
    store.migrate(new_store=False)
    assert _labels(store) == ["before"]


def test_restore_into_a_data_dir_that_lost_its_store_makes_it_private(backup_and_later_store: tuple[Path, Store],
                                                                      tmp_path: Path) -> None:
    backup, _ = backup_and_later_store
    lost = tmp_path / "new-disk" / "node.db"
    lost.parent.mkdir()
    restore_sqlite_store(f"sqlite:///{lost}", backup)
    assert lost.stat().st_mode & 0o777 == 0o600
    store = Store(f"sqlite:///{lost}")
    try:
        store.migrate(new_store=False)
        assert _labels(store) == ["before"]
    finally:
        store.close()


def test_restore_of_an_older_schema_is_migrated_when_the_node_opens_the_store(tmp_path: Path) -> None:
    older = Store(f"sqlite:///{tmp_path / 'older.db'}")
    migrate(older.engine, "0006")
    backup = backup_sqlite_store(older.url, tmp_path / "backup.db")
    older.close()
    assert backup.revision == "0006"
    store = Store(f"sqlite:///{tmp_path / 'node.db'}")
    store.migrate()
    store.close()
    assert restore_sqlite_store(store.url, backup.path).revision == "0006"
    store.migrate(new_store=False)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0011"
    finally:
        store.close()


def test_restore_of_a_newer_schema_is_refused_and_changes_nothing(backup_and_later_store: tuple[Path, Store]) -> None:
    backup, store = backup_and_later_store
    with sqlite3.connect(backup) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0099_newer'")
    with pytest.raises(UnknownSchemaRevision, match="schema revision 0099_newer, which this version"):
        restore_sqlite_store(store.url, backup)
    assert _labels(store) == ["before", "after"]


def test_restore_while_the_store_is_in_use_is_refused_and_changes_nothing(
        backup_and_later_store: tuple[Path, Store]) -> None:
    backup, store = backup_and_later_store
    assert store.ping()  # a running node's pool holds a connection open
    with pytest.raises(Conflict, match="in use: stop the node") as refused:
        restore_sqlite_store(store.url, backup)
    assert refused.value.code == "store_in_use"
    assert _labels(store) == ["before", "after"]


def test_restore_of_a_file_that_is_no_backup_is_refused_and_changes_nothing(
        backup_and_later_store: tuple[Path, Store], tmp_path: Path) -> None:
    _, store = backup_and_later_store
    text = tmp_path / "notes.db"
    text.write_text("not a database at all, just some text that is long enough" * 20)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE t (x)")
    for not_a_backup in (text, other):
        with pytest.raises(InvalidInput, match="is not a node's store") as refused:
            restore_sqlite_store(store.url, not_a_backup)
        assert refused.value.code == "not_a_backup"
    with pytest.raises(InvalidInput, match="no backup file") as missing:
        restore_sqlite_store(store.url, tmp_path / "absent.db")
    assert missing.value.code == "backup_missing"
    with pytest.raises(InvalidInput, match="is the store itself"):
        restore_sqlite_store(store.url, Path(store.url.removeprefix("sqlite:///")))
    with pytest.raises(InvalidInput, match="restore it with pg_restore") as postgres:
        restore_sqlite_store("postgresql+psycopg://node:secret@db/alliance", text)
    assert postgres.value.code == "backup_needs_sqlite"
    assert _labels(store) == ["before", "after"]
