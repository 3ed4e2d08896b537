"""Searching the mirror's indicators (node.ledger.indicator_search) over mirror rows written directly, on SQLite and
PostgreSQL: each filter, combinations, paging, the state words and invalid filters."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from node.errors import InvalidInput
from node.ledger import indicator_search
from node.ledger.indicator_search import IndicatorSearch, search_filters, search_page
from node.ledger.indicator_state import StatePolicy
from node.ledger.mirror import MirrorStatus, RecordFilter, indicator_history
from node.ledger.vocabulary import Category
from node.runtime import NodeContext
from tests.ledger.mirror_rows import DAY, T0, Row, add_batch, add_reaction

AT = T0 + 5 * DAY
POLICY = StatePolicy()
MIRROR = MirrorStatus(17, T0, datetime.now(UTC), 0.0, False, None)
PHONE, EMAIL, IP = 3, 5, 7


def make_indicator(first: int) -> bytes:
    return bytes([first]) + os.urandom(31)


@pytest.fixture
def mirror(node: NodeContext) -> dict[str, bytes]:
    """Five indicators in known byte order (i1 < ... < i5), one per state, from members 1 and 2:

    i1 money_mule phone by 1 (block 10), and telecom_fraud by 2 later (block 17): active
    i2 telecom_fraud email by 2 (block 11), disputed by 1 (block 12): disputed, still hitting
    i3 money_mule phone by 2 (block 13), revoked by 2 (block 14): revoked
    i4 other ip by 1 (block 10), valid one day: expired; endorsed by 3 (block 16)
    i5 money_mule phone by 2 (block 15), confidence 30: active
    """
    found = {f"i{n}": make_indicator(n * 16) for n in range(1, 6)}
    i1, i2, i3, i4, i5 = found.values()
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=1, block=10, published_at=T0, rows=[
            Row(i1), Row(i4, identifier_type=IP, category=Category.other, valid_until=T0 + DAY)])
        add_batch(session, 2, reporter=2, block=11, published_at=T0 + DAY,
                  rows=[Row(i2, identifier_type=EMAIL, category=Category.telecom_fraud)])
        add_reaction(session, "disputed", i2, 1, block=12, at=T0 + 4 * DAY, value=1)
        add_batch(session, 3, reporter=2, block=13, published_at=T0 + 2 * DAY, rows=[Row(i3)])
        add_reaction(session, "revoked", i3, 2, block=14, at=T0 + 2 * DAY, batch_id=3, value=1)
        add_batch(session, 4, reporter=2, block=15, published_at=T0 + 3 * DAY, rows=[Row(i5, confidence=30)])
        add_reaction(session, "endorsed", i4, 3, block=16, at=T0 + 3 * DAY, value=70)
        add_batch(session, 5, reporter=2, block=17, published_at=T0 + 4 * DAY,
                  rows=[Row(i1, category=Category.telecom_fraud, confidence=60)])
    return found


def found(node: NodeContext, search: IndicatorSearch, *, limit: int = 100) -> list[bytes]:
    with node.store.session() as session:
        page = search_page(session, search, at=AT, policy=POLICY, mirror=MIRROR, limit=limit)
    assert page.next_after is None
    return [state.indicator for state in page.states]


def named(mirror: dict[str, bytes], *names: str) -> list[bytes]:
    return [mirror[name] for name in names]


def test_search_without_filters_lists_every_indicator_with_the_single_views_state(
        node: NodeContext, mirror: dict[str, bytes]) -> None:
    with node.store.session() as session:
        page = search_page(session, IndicatorSearch(), at=AT, policy=POLICY, mirror=MIRROR)
        singles = [indicator_history(session, i, at=AT, policy=POLICY).state for i in mirror.values()]
    assert page.states == singles
    assert page.statuses() == ["active", "disputed", "revoked", "expired", "active"]
    body = page.to_json()
    assert body["as_of_block"] == 17 and body["next_changed_since_block"] == 18 and body["next_after"] is None
    assert body["indicators"][1] == {**singles[1].to_json(), "status": "disputed"}


@pytest.mark.parametrize(("filters", "expected"), [
    ({"category": "money_mule"}, ("i1", "i3", "i5")),
    ({"category": "TELECOM_FRAUD"}, ("i1", "i2")),
    ({"identifier_type": "email"}, ("i2",)),
    ({"identifier_type": "phone"}, ("i1", "i3", "i5")),
    ({"reported_since": T0 + DAY}, ("i1", "i2", "i3", "i5")),  # i1: its record of block 17
    ({"reported_until": T0 + DAY}, ("i1", "i4")),  # exclusive
    ({"reported_since": T0 + 2 * DAY, "reported_until": T0 + 3 * DAY}, ("i3",)),
    ({"state": "active"}, ("i1", "i5")),
    ({"state": "disputed"}, ("i2",)),
    ({"state": "revoked"}, ("i3",)),
    ({"state": "expired"}, ("i4",)),
    ({"min_confidence": 50}, ("i1", "i2")),
    ({"min_confidence": 0}, ("i1", "i2", "i3", "i4", "i5")),
    ({"changed_since_block": 14}, ("i1", "i3", "i4", "i5")),  # revocation, endorsement of an expired one, records
    ({"changed_since_block": 12}, ("i1", "i2", "i3", "i4", "i5")),  # the dispute
    ({"changed_since_block": 18}, ()),
    ({"category": "money_mule", "state": "active"}, ("i1", "i5")),
    ({"identifier_type": "phone", "reported_until": T0 + 3 * DAY, "state": "revoked"}, ("i3",)),
    ({"changed_since_block": 15, "min_confidence": 1}, ("i1", "i5")),
])
def test_search_filters_select_indicators(node: NodeContext, mirror: dict[str, bytes], filters: dict[str, object],
                                          expected: tuple[str, ...]) -> None:
    assert found(node, search_filters(**filters)) == named(mirror, *expected)  # type: ignore[arg-type]


def test_search_record_filters_hold_for_one_record(node: NodeContext, mirror: dict[str, bytes]) -> None:
    # i1 was reported as money_mule by member 1 and as telecom_fraud by member 2: no money_mule record of member 2.
    by_two = RecordFilter(category=int(Category.money_mule), reporter_member_id=2)
    assert found(node, IndicatorSearch(by_two)) == named(mirror, "i3", "i5")
    assert found(node, IndicatorSearch(RecordFilter(reporter_member_id=2))) == named(mirror, "i1", "i2", "i3", "i5")
    assert found(node, IndicatorSearch(RecordFilter(reporter_member_id=1))) == named(mirror, "i1", "i4")
    assert found(node, IndicatorSearch(RecordFilter(reporter_member_id=1, published_since=T0 + DAY))) == []


def test_search_disputed_lapses_and_stays_disputed(node: NodeContext, mirror: dict[str, bytes]) -> None:
    # Past the response window i2 no longer hits, and is still the one awaiting an answer.
    with node.store.session() as session:
        page = search_page(session, search_filters(state="disputed"), at=AT + 31 * DAY, policy=POLICY, mirror=MIRROR)
    assert [s.indicator for s in page.states] == [mirror["i2"]]
    assert not page.states[0].active


@pytest.mark.parametrize("state_filter", [None, "active"])
@pytest.mark.parametrize("budget", [3, 10_000])
def test_search_pages_neither_repeat_nor_skip(node: NodeContext, mirror: dict[str, bytes],
                                             monkeypatch: pytest.MonkeyPatch, state_filter: str | None,
                                             budget: int) -> None:
    extra = sorted(os.urandom(32) for _ in range(23))
    with node.store.transaction() as session:
        add_batch(session, 9, reporter=1, block=20, published_at=T0, rows=[Row(i) for i in extra])
    monkeypatch.setattr(indicator_search, "SCAN_BUDGET", budget)  # a page stops early, short of `limit`
    search = search_filters(state=state_filter)
    everything = found(node, search)
    assert len(everything) == (28 if state_filter is None else 25)
    pages, after = [], None
    with node.store.session() as session:
        while True:
            page = search_page(session, search, at=AT, policy=POLICY, mirror=MIRROR, after=after, limit=4)
            assert len(page.states) <= 4
            pages.append([s.indicator for s in page.states])
            if page.next_after is None:
                break
            after = page.next_after
    assert [i for p in pages for i in p] == everything
    assert len(pages) >= 7


@pytest.mark.parametrize(("filters", "code"), [
    ({"category": "13800138000"}, "unknown_category"),
    ({"identifier_type": "13800138000"}, "unknown_type"),
    ({"state": "13800138000"}, "invalid_state"),
    ({"state": "pending"}, "invalid_state"),
    ({"reported_since": T0, "reported_until": T0}, "invalid_time_range"),
    ({"min_confidence": 101}, "invalid_confidence"),
    ({"min_confidence": -1}, "invalid_confidence"),
    ({"reported_since": -1}, "invalid_range"),
    ({"changed_since_block": 2**63}, "invalid_range"),
])
def test_search_filters_refuse_invalid_values_without_quoting_them(filters: dict[str, object], code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        search_filters(**filters)  # type: ignore[arg-type]
    assert refused.value.code == code
    assert "13800138000" not in str(refused.value) and "-1" not in str(refused.value)

