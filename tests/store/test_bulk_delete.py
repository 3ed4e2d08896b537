"""`delete_in_slices`, the retention path of the query log and the velocity fingerprints: every matching row goes,
a slice per transaction, and a pass reads the rows it keeps once, not once per slice."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, func, select

from node.store.bulk import delete_in_slices, insert_rows
from node.store.db import Store
from node.store.ledger_tables import CheckLogEntry

ASKED_AT = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = ("key_id", "asked_at", "kind", "indicators", "hits", "as_of_block", "stale")


def fill(store: Store, kinds: list[str]) -> None:
    with store.transaction() as session:
        insert_rows(session, CheckLogEntry, COLUMNS, [("key", ASKED_AT, kind, "[]", "[]", 1, False)
                                                       for kind in kinds])


def kinds_left(store: Store) -> dict[str, int]:
    with store.session() as session:
        return dict(session.execute(select(CheckLogEntry.kind, func.count()).group_by(CheckLogEntry.kind)).all())


class Steps:
    """SQLite virtual-machine steps run on the store's connections: the work its statements did."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        event.listen(store.engine, "checkout", self._count_on)
        store.engine.dispose()  # connections opened before are checked out again uncounted otherwise

    def _count_on(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.set_progress_handler(self._step, 10)

    def _step(self) -> int:
        self.count += 1
        return 0


def test_delete_in_slices_deletes_every_matching_row_a_slice_per_transaction(store: Store) -> None:
    fill(store, ["kept", "gone"] * 120 + ["gone"] * 5)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _connection: commits.append(1))
    assert delete_in_slices(store, CheckLogEntry.id, CheckLogEntry.kind == "gone", slice_rows=50) == 125
    assert kinds_left(store) == {"kept": 120}
    assert len(commits) == 3  # 50 + 50 + 25


def test_delete_in_slices_reads_the_rows_it_keeps_once(sqlite_store: Store) -> None:
    store = sqlite_store
    # Kept rows ahead of the deleted ones, as the fingerprints of loans still held are ahead of an erased applicant's.
    fill(store, ["kept"] * 4_000 + ["gone"] * 1_000)
    steps = Steps(store)
    with store.session() as session:  # one read of the whole table, the measure
        assert session.scalar(select(func.count()).where(CheckLogEntry.kind == "gone")) == 1_000
    one_scan, steps.count = steps.count, 0
    assert delete_in_slices(store, CheckLogEntry.id, CheckLogEntry.kind == "gone", slice_rows=50) == 1_000
    assert kinds_left(store) == {"kept": 4_000}
    # Reading the table once and deleting a fifth of it: about 6 scans' work; about 20 when each of the 20 slices
    # read the 4,000 kept rows again.
    assert steps.count < 10 * one_scan
