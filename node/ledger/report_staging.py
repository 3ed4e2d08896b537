"""The rows of a report import that is not complete yet: written in many short transactions, accepted in one.

A file of millions of reports cannot be written in one transaction (on SQLite it would hold the store's write lock
for minutes, and every API write behind it would fail past the busy timeout). So an import (a `report_imports` row,
state `staging`) writes its reports and outbox records chunk by chunk, each row naming the import
(`import_id`); such rows are not accepted (`node.store.ledger_tables.accepted`): the publisher, republish, report
lookups and the outbox counts pass them by. One short transaction then marks the import `complete`, which accepts
all its rows at once. An import that fails, or whose process dies, is discarded: its rows are deleted, a slice per
transaction, and were never published.

One import stages at a time per store (`import_lock`): a second waits for the first. Holding the lock, an import
knows that every other import still staging belongs to a process that is gone, and discards it first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from node.errors import Conflict
from node.store.bulk import in_list_slices
from node.store.db import Store, sqlite_file_of
from node.store.ledger_tables import FraudReport, OutboxRecord, ReportImport
from node.store.models import utcnow

logger = logging.getLogger(__name__)

DISCARD_SLICE_ROWS = 5_000  # rows one transaction deletes when an import is discarded (as CHUNK_ROWS writes)
# Keyed by the schema, as the migration lock is: one database may hold several stores, one per schema.
_LOCK_KEY = "hashtext('alliance-report-import/' || current_schema())"
_IN_PROCESS_LOCK = threading.Lock()  # a store without a file of its own (SQLite in memory) lives in one process


class ImportDiscarded(Conflict):
    """The import is no longer staging: it was discarded (taken for abandoned) while it wrote."""

    code = "import_discarded"


@contextmanager
def import_lock(store: Store, *, wait: bool = True, on_wait: Callable[[], object] | None = None) -> Iterator[bool]:
    """Hold the store's import lock for the block (yields True); with `wait` False, yields False at once if another
    process holds it. `on_wait` is called before waiting for another holder.

    PostgreSQL: a session advisory lock on a connection of its own, in autocommit (no transaction stays open for
    the import's minutes). SQLite: `flock` on a file beside the database. Either is released by the operating system
    or the server when the process dies, however it dies, so an abandoned import never blocks the next one.
    """
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            held = bool(connection.scalar(text(f"SELECT pg_try_advisory_lock({_LOCK_KEY})")))
            if not held and wait:
                if on_wait is not None:
                    on_wait()
                connection.execute(text(f"SELECT pg_advisory_lock({_LOCK_KEY})"))
                held = True
            try:
                yield held
            finally:
                if held:
                    connection.execute(text(f"SELECT pg_advisory_unlock({_LOCK_KEY})"))
        return
    database = sqlite_file_of(store.url)
    if database is None:
        held = _IN_PROCESS_LOCK.acquire(blocking=False)
        if not held and wait:
            if on_wait is not None:
                on_wait()
            held = _IN_PROCESS_LOCK.acquire()
        try:
            yield held
        finally:
            if held:
                _IN_PROCESS_LOCK.release()
        return
    with _file_lock(Path(f"{database}.import-lock"), wait=wait, on_wait=on_wait) as held:
        yield held


@contextmanager
def _file_lock(path: Path, *, wait: bool, on_wait: Callable[[], object] | None) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        if not held and wait:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = True
        yield held
    finally:
        os.close(fd)  # releases the lock


def begin_import(store: Store, *, source: str, submitted_by: str) -> int:
    """A new import, staging; its id. Call with the import lock held."""
    with store.transaction() as session:
        row = ReportImport(state="staging", source=source[:255], submitted_by=submitted_by, rows=0)
        session.add(row)
        session.flush()
        return row.id


def count_staged_rows(session: Session, import_id: int, rows: int) -> None:
    """Count `rows` more rows written by the import, in the transaction writing them; ImportDiscarded unless it is
    still staging. Run first in that transaction: on SQLite it takes the write lock, on PostgreSQL the import's row
    lock, so a discard (which marks the import first) cannot pass between the check and the rows."""
    counted = session.execute(update(ReportImport).where(ReportImport.id == import_id,
                                                         ReportImport.state == "staging")
                              .values(rows=ReportImport.rows + rows))
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        raise ImportDiscarded(f"import {import_id} was discarded while it wrote; nothing of it was accepted")


def complete_import(store: Store, import_id: int, *, reports: int, created: int, sha256: bytes) -> None:
    """Accept every row of the import, in one short transaction; ImportDiscarded unless it is still staging."""
    with store.transaction() as session:
        done = session.execute(update(ReportImport).where(ReportImport.id == import_id,
                                                          ReportImport.state == "staging")
                               .values(state="complete", reports=reports, created=created, sha256=sha256,
                                       completed_at=utcnow()))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise ImportDiscarded(f"import {import_id} was discarded before it completed; nothing of it was accepted")


def take_over_staged(session: Session, held: Sequence[tuple[str, int]]) -> set[str]:
    """Delete the copies of reports (id, import) that imports not complete wrote, so that the caller writes them
    as its own; the ids deleted. A copy whose import completed meanwhile stays (it is accepted).

    The imports' rows are written first: that takes SQLite's write lock, or those rows' locks on PostgreSQL, so no
    import completes between the look at its state and the deletion (a completed import's records may be claimed by
    a publisher at once, and deleting them then would publish the report twice).
    """
    owners = sorted({owner for _, owner in held})
    session.execute(update(ReportImport).where(ReportImport.id.in_(owners)).values(rows=ReportImport.rows))
    complete = set(session.scalars(select(ReportImport.id).where(ReportImport.id.in_(owners),
                                                                 ReportImport.state == "complete")))
    stale = sorted({report_id for report_id, owner in held if owner not in complete})
    for chunk in in_list_slices(stale):
        session.execute(delete(OutboxRecord).where(OutboxRecord.report_id.in_(chunk)))
        session.execute(delete(FraudReport).where(FraudReport.report_id.in_(chunk)))
    return set(stale)


def discard_import(store: Store, import_id: int) -> int:
    """Delete the import's rows, a slice per transaction, then the import; the outbox records deleted.

    The import is marked `discarding` first, so a process still writing it (taken for dead) finds it so at its next
    chunk and stops, and its rows stay unaccepted whatever happens to this discard: a crash in the middle leaves an
    import that the next discard finishes.
    """
    with store.transaction() as session:
        session.execute(update(ReportImport).where(ReportImport.id == import_id, ReportImport.state != "complete")
                        .values(state="discarding"))
        if session.scalar(select(ReportImport.state).where(ReportImport.id == import_id)) == "complete":
            raise Conflict(f"import {import_id} is complete; its reports are accepted", code="import_complete")
    records = _delete_slices(store, OutboxRecord, OutboxRecord.id, import_id)
    _delete_slices(store, FraudReport, FraudReport.report_id, import_id)
    with store.transaction() as session:
        session.execute(delete(ReportImport).where(ReportImport.id == import_id))
    return records


def _delete_slices(store: Store, table: type[OutboxRecord] | type[FraudReport], key: object, import_id: int) -> int:
    deleted = 0
    while True:
        with store.transaction() as session:
            keys = list(session.scalars(select(key).where(table.import_id == import_id)  # type: ignore[call-overload]
                                        .limit(DISCARD_SLICE_ROWS)))
            if keys:
                session.execute(delete(table).where(key.in_(keys)))  # type: ignore[attr-defined]
        deleted += len(keys)
        if len(keys) < DISCARD_SLICE_ROWS:
            return deleted


def discard_abandoned_imports(store: Store) -> int:
    """Discard every import left staging (or half discarded) by a process that is gone; how many.

    Does nothing while an import holds the lock: its own staging rows are not abandoned."""
    with import_lock(store, wait=False) as held:
        if not held:
            return 0
        return discard_abandoned_holding_lock(store)


def discard_abandoned_holding_lock(store: Store) -> int:
    """`discard_abandoned_imports` for a caller that holds the import lock."""
    with store.session() as session:
        abandoned = list(session.scalars(select(ReportImport.id).where(ReportImport.state != "complete")))
    for import_id in abandoned:
        records = discard_import(store, import_id)
        logger.warning("discarded import %s, left unfinished by a process that is gone (%s records, never "
                       "published)", import_id, records)
    return len(abandoned)
