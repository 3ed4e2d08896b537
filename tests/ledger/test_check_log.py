"""The query log read back: filters, paging, identifier search across key epochs, and refusals."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from node.errors import InvalidInput
from node.ledger import check_log
from node.ledger.check_log import CheckLogQuery, identifier_indicators, read_check_log, read_check_log_page
from node.ledger.checks import check_batch, check_identity
from node.runtime import NodeContext
from node.store.ledger_tables import CheckLogEntry
from tests.ledger.mirror_rows import DAY, Row, add_batch
from tests.ledger.test_checks import indicator

PHONE, OTHER_PHONE, EMAIL = "13800138000", "13900139000", "someone@example.com"


@pytest.fixture
def reported_key(node: NodeContext, key: bytes) -> bytes:
    """Epoch 1's key, with PHONE reported under it by member 2."""
    with node.store.transaction() as session:
        reported = Row(indicator(key, "phone", PHONE), valid_from=int(time.time()) - DAY)
        add_batch(session, 1, reporter=2, rows=[reported])
    return key


def read(node: NodeContext, **filters: object) -> list[dict[str, object]]:
    with node.store.session() as session:
        return [e.to_json() for e in read_check_log(session, CheckLogQuery(**filters))]  # type: ignore[arg-type]


def test_log_filters_by_key_hits_and_indicator(node: NodeContext, reported_key: bytes) -> None:
    check_identity(node, [("phone", PHONE), ("email", EMAIL)], "k1")
    check_identity(node, [("phone", OTHER_PHONE)], "k2")
    check_batch(node, [("phone", OTHER_PHONE), ("phone", "not a phone")], "k1")
    everything = read(node)
    assert [e["key_id"] for e in everything] == ["k1", "k2", "k1"]  # newest first
    assert [e["checked"] for e in everything] == [1, 1, 2]  # an invalid batch item is not checked
    assert [e["kind"] for e in everything] == ["batch", "identity", "identity"]
    assert [e["id"] for e in read(node, key_id="k1")] == [everything[0]["id"], everything[2]["id"]]
    (hit,) = read(node, hits_only=True)
    assert hit["hits"] == ["0x" + indicator(reported_key, "phone", PHONE).hex()] and "indicators" not in hit
    other = indicator(reported_key, "phone", OTHER_PHONE)
    assert [e["id"] for e in read(node, indicators=[other])] == [everything[0]["id"], everything[1]["id"]]
    (full,) = read(node, key_id="k2", include_indicators=True)
    assert full["indicators"] == ["0x" + other.hex()]
    assert read(node, indicators=[os.urandom(32)]) == []


def test_log_finds_an_identifier_checked_under_an_older_epoch(node: NodeContext, reported_key: bytes) -> None:
    check_identity(node, [("phone", "+86 138 0013 8000")], "before-rotation")
    node.keyring.store_key(2, os.urandom(32), source="envelope")
    check_identity(node, [("phone", PHONE)], "after-rotation")
    with node.store.session() as session:
        found = identifier_indicators(node, session, "phone", "138-0013-8000")
        entries = read_check_log(session, CheckLogQuery(indicators=found))
    assert len(found) == 2 and [e.key_id for e in entries] == ["after-rotation", "before-rotation"]


def test_log_pages_and_bounds_by_time(node: NodeContext, reported_key: bytes) -> None:
    for n in range(5):
        check_identity(node, [("phone", PHONE)], f"k{n}")
    with node.store.transaction() as session:  # spread the entries over five days
        for n, entry in enumerate(session.query(CheckLogEntry).order_by(CheckLogEntry.id)):
            session.execute(update(CheckLogEntry).where(CheckLogEntry.id == entry.id).values(
                asked_at=datetime(2026, 12, 1 + n, 12, tzinfo=UTC)))
    first = read(node, limit=2)
    second = read(node, limit=2, before_id=first[-1]["id"])
    last = read(node, limit=2, before_id=second[-1]["id"])
    assert [e["key_id"] for e in first + second + last] == ["k4", "k3", "k2", "k1", "k0"]
    window = read(node, since=datetime(2026, 12, 2, tzinfo=UTC), until=datetime(2026, 12, 4, 12, tzinfo=UTC))
    assert [e["key_id"] for e in window] == ["k2", "k1"]  # `until` is exclusive
    shanghai = timezone(timedelta(hours=8))  # 20:00 in Shanghai is 12:00 UTC, when k4 asked
    assert [e["key_id"] for e in read(node, since=datetime(2026, 12, 5, 20, tzinfo=shanghai))] == ["k4"]
    assert read(node, since=datetime(2026, 12, 5, 20, 1, tzinfo=shanghai)) == []
    naive_is_utc = read(node, since=datetime(2026, 12, 5, 12), until=datetime(2026, 12, 5, 12, 1))
    assert [e["key_id"] for e in naive_is_utc] == ["k4"]


def test_log_refuses_bad_limits_ranges_and_identifiers(node: NodeContext, reported_key: bytes) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        read(node, limit=0)
    with pytest.raises(InvalidInput, match="limit"):
        read(node, limit=1001)
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput) as caught:
        read(node, since=moment, until=moment)
    assert caught.value.code == "invalid_time_range"
    with node.store.session() as session, pytest.raises(InvalidInput) as caught:
        identifier_indicators(node, session, "phone", "12")
    assert caught.value.code == "bad_length" and "12" not in str(caught.value).replace("phone", "")


def add_entries(node: NodeContext, sizes: list[int]) -> list[int]:
    """Log entries (oldest first) that checked `sizes` random indicators each; their ids, newest first."""
    with node.store.transaction() as session:
        entries = [CheckLogEntry(key_id="k", kind="batch", indicators=json.dumps([os.urandom(32).hex()] * size),
                                 hits="[]", as_of_block=1, stale=False) for size in sizes]
        session.add_all(entries)
        session.flush()
        return [entry.id for entry in reversed(entries)]


def test_log_counts_the_indicators_checked_without_reading_them(node: NodeContext) -> None:
    add_entries(node, [10_000] * 10 + [0])  # a full batch holds 10,000: 670 kB of JSON each
    tracemalloc.start()
    try:
        entries = read(node, limit=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [e["checked"] for e in entries] == [0] + [10_000] * 10
    # Reading each list to count it took 8 MB for these ten, 650 MB for a page of 1,000 batch checks.
    assert peak < 2_000_000


def test_log_with_indicators_ends_a_page_before_max_page_indicators(node: NodeContext,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check_log, "MAX_PAGE_INDICATORS", 25)
    ids = add_entries(node, [10, 30, 10, 10, 10, 10])  # newest first: 10, 10, 10, 10, 30, 10

    def page(before_id: int | None) -> tuple[list[int], int | None]:
        with node.store.session() as session:
            found = read_check_log_page(session, CheckLogQuery(include_indicators=True, before_id=before_id))
        assert all(e.indicators is not None and len(e.indicators) == e.checked for e in found.entries)
        return [e.id for e in found.entries], found.next_before_id

    # A page of 1,000 batch checks with their indicators was a 700 MB body.
    assert page(None) == (ids[:2], ids[1])
    assert page(ids[1]) == (ids[2:4], ids[3])
    assert page(ids[3]) == (ids[4:5], ids[4])  # one entry over the budget comes alone
    assert page(ids[4]) == (ids[5:], None)
    with node.store.session() as session:  # without them, `limit` alone ends a page
        assert len(read_check_log_page(session, CheckLogQuery()).entries) == 6
