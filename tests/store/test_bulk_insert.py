"""`insert_rows`, the bulk write path of mirror records and report intake: executemany on SQLite, COPY on
PostgreSQL. Both must store exactly the given values and, on a bad row, raise SQLAlchemy's error and leave nothing
of the transaction."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from node.ledger.indexer import MIRROR_RECORD_COLUMNS
from node.store.bulk import insert_rows
from node.store.db import Store
from node.store.ledger_tables import FraudReport, MirrorRecord


def mirror_rows(count: int, *, batch_id: int = 7, seed: int = 1) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [(batch_id, position, rng.randbytes(32), rng.randint(1, 7), rng.randint(1, 9), rng.randint(0, 100),
             1_700_000_000 + position, 2**62 + position,  # a BIGINT column well past 32 bits
             rng.randbytes(32), b"\x00" * 32, 2**40 + 3, 2, 12_345_678_901, 1_700_000_123)
            for position in range(count)]


def stored_rows(store: Store) -> list[tuple[Any, ...]]:
    with store.session() as session:
        rows = session.execute(select(*(getattr(MirrorRecord, column) for column in MIRROR_RECORD_COLUMNS))
                               .order_by(MirrorRecord.batch_id, MirrorRecord.position))
        return [tuple(bytes(value) if isinstance(value, memoryview) else value for value in row) for row in rows]


@pytest.fixture
def store(store_url: str) -> Store:
    store = Store(store_url)
    store.migrate()
    return store


def test_rows_are_stored_exactly(store: Store) -> None:
    rows = mirror_rows(1_200) + mirror_rows(3, batch_id=8, seed=2)

    with store.transaction() as session:
        insert_rows(session, MirrorRecord, MIRROR_RECORD_COLUMNS, rows[:700])
        insert_rows(session, MirrorRecord, MIRROR_RECORD_COLUMNS, rows[700:])

    assert stored_rows(store) == rows


def test_a_duplicate_row_raises_integrity_error_and_writes_nothing(store: Store) -> None:
    kept = mirror_rows(5, batch_id=1)
    with store.transaction() as session:
        insert_rows(session, MirrorRecord, MIRROR_RECORD_COLUMNS, kept)
    fresh = mirror_rows(50, batch_id=2)
    duplicate = mirror_rows(1, batch_id=1, seed=9)  # (batch_id, position) = (1, 0) is already stored

    with pytest.raises(IntegrityError), store.transaction() as session:
        insert_rows(session, MirrorRecord, MIRROR_RECORD_COLUMNS, fresh)
        insert_rows(session, MirrorRecord, MIRROR_RECORD_COLUMNS, fresh[:10] + duplicate)

    assert stored_rows(store) == kept
    with store.session() as session:  # the store still works after the failed COPY
        assert session.scalar(select(func.count()).select_from(MirrorRecord)) == 5


def test_a_datetime_column_reads_back_as_the_orm_writes_it(store: Store) -> None:
    created = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)
    columns = ("report_id", "category", "confidence", "valid_from", "valid_until", "evidence_hash", "case_ref_hash",
               "submitted_by", "created_at")
    with store.transaction() as session:
        insert_rows(session, FraudReport, columns, [("bulk", 1, 50, 1, 2, bytes(32), bytes(32), "t", created)])
        session.add(FraudReport(report_id="orm", category=1, confidence=50, valid_from=1, valid_until=2,
                                evidence_hash=bytes(32), case_ref_hash=bytes(32), submitted_by="t", created_at=created))

    with store.session() as session:
        bulk, orm = session.get_one(FraudReport, "bulk"), session.get_one(FraudReport, "orm")
        assert bulk.created_at == orm.created_at
        assert bulk.created_at.replace(tzinfo=UTC) == created  # SQLite gives it back naive, PostgreSQL in UTC
        # Ordered and compared in SQL as the ORM's own rows are (the publisher's batching age).
        assert session.scalar(select(func.count()).select_from(FraudReport)
                              .where(FraudReport.created_at == orm.created_at)) == 2


def test_rows_sharing_a_timestamp_and_rows_with_their_own_each_store_theirs(store: Store) -> None:
    """The conversion for SQLite is reused for the value it was last given: runs of one timestamp object, equal but
    distinct objects and different times in turn must each store their own."""
    shared, other = datetime(2026, 12, 7, 21, 0, 0, 1, tzinfo=UTC), datetime(2026, 12, 7, 22, 0, 0, 2, tzinfo=UTC)
    times = [shared, shared, other, datetime(2026, 12, 7, 21, 0, 0, 1, tzinfo=UTC), shared, other, other]
    columns = ("report_id", "category", "confidence", "valid_from", "valid_until", "evidence_hash", "case_ref_hash",
               "submitted_by", "created_at")
    with store.transaction() as session:
        insert_rows(session, FraudReport, columns, [(f"r{i}", 1, 50, 1, 2, bytes(32), bytes(32), "t", at)
                                                    for i, at in enumerate(times)])
    with store.session() as session:
        stored = dict(session.execute(select(FraudReport.report_id, FraudReport.created_at)).all())
    assert [stored[f"r{i}"].replace(tzinfo=UTC) for i in range(len(times))] == times
