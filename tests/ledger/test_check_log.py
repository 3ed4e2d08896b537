"""The query log read back: filters, paging, identifier search across key epochs, and refusals."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from node.errors import InvalidInput
from node.ledger.check_log import CheckLogQuery, identifier_indicators, read_check_log
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
