"""`GET /v1/fraud/indicators` and `GET /v1/fraud/export?changed_since_block=` over mirror rows written directly, on
SQLite and PostgreSQL, with the registry of a real deployment (member 1 is this node's bank, BANKA)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from node.auth.apikeys import Role
from node.ledger.stix import indicator_id
from node.store.ledger_tables import IndexedBlock
from tests.api.conftest import ApiNode
from tests.ledger.mirror_rows import DAY, Row, add_batch, add_reaction, set_synced
from tests.ledger.test_stix_conformance import conformance_problems

NOW = int(time.time())
RAW = "13800138000"  # a phone number typed where a filter goes


@pytest.fixture
def mirror(api: ApiNode) -> list[bytes]:
    """Three indicators in byte order: by member 1 (money_mule, block 20), by member 2 (telecom_fraud, block 21),
    by member 2 (money_mule, block 22); the mirror synced to block 22 just now."""
    first, second, third = sorted(os.urandom(32) for _ in range(3))
    with api.node.store.transaction() as session:
        add_batch(session, 1, reporter=1, rows=[Row(first, valid_from=NOW - DAY)], block=20, published_at=NOW - DAY)
        add_batch(session, 2, reporter=2, rows=[Row(second, category=7, valid_from=NOW - DAY)], block=21,
                  published_at=NOW - DAY)
        add_batch(session, 3, reporter=2, rows=[Row(third, valid_from=NOW)], block=22, published_at=NOW)
        set_synced(session, last_block=22, synced_at=datetime.now(UTC),
                   contract=api.node.deployment.address("FraudLedger"))
    return [first, second, third]


def listing(api: ApiNode, role: Role = Role.analyst, **params: Any) -> Any:
    return api.client.get("/v1/fraud/indicators", params=params, headers=api.headers(role))


def hexes(body: dict[str, Any]) -> list[str]:
    return [item["indicator"] for item in body["indicators"]]


@pytest.mark.parametrize("role", [Role.analyst, Role.auditor])
def test_list_indicators_answers_analysts_and_auditors(api: ApiNode, mirror: list[bytes], role: Role) -> None:
    response = listing(api, role)
    assert response.status_code == 200, response.text
    body = response.json()
    assert hexes(body) == ["0x" + i.hex() for i in mirror]
    assert body["indicators"][0]["status"] == "active" and body["indicators"][0]["reporters"] == [1]
    assert body["as_of_block"] == 22 and body["stale"] is False and body["next_changed_since_block"] == 23
    assert body["next_after"] is None and isinstance(body["evaluated_at"], int)


@pytest.mark.parametrize("role", [Role.workflow, Role.operator])
def test_list_indicators_refused_for_other_roles(api: ApiNode, mirror: list[bytes], role: Role) -> None:
    response = listing(api, role)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_list_indicators_requires_api_key(api: ApiNode) -> None:
    assert api.client.get("/v1/fraud/indicators").status_code == 401


def test_list_indicators_filters_by_reporter_bank_code_and_id(api: ApiNode, mirror: list[bytes]) -> None:
    assert hexes(listing(api, reporter="BANKA").json()) == ["0x" + mirror[0].hex()]
    assert hexes(listing(api, reporter="1", category="money_mule").json()) == ["0x" + mirror[0].hex()]
    assert hexes(listing(api, category="money_mule", reported_since=NOW - 60).json()) == ["0x" + mirror[2].hex()]


def test_list_indicators_pages_with_next_after_in_the_body(api: ApiNode, mirror: list[bytes]) -> None:
    first = listing(api, limit=2).json()
    assert hexes(first) == ["0x" + i.hex() for i in mirror[:2]] and first["next_after"] == "0x" + mirror[1].hex()
    second = listing(api, limit=2, after=first["next_after"]).json()
    assert hexes(second) == ["0x" + mirror[2].hex()] and second["next_after"] is None


def test_list_indicators_changed_since_block_finds_a_dispute_of_an_old_indicator(api: ApiNode,
                                                                                 mirror: list[bytes]) -> None:
    assert hexes(listing(api, changed_since_block=23).json()) == []
    with api.node.store.transaction() as session:
        add_reaction(session, "disputed", mirror[0], 2, block=23, at=NOW, value=1)
        set_synced(session, last_block=23, synced_at=datetime.now(UTC),
                   contract=api.node.deployment.address("FraudLedger"))
    body = listing(api, changed_since_block=23).json()
    assert hexes(body) == ["0x" + mirror[0].hex()] and body["indicators"][0]["status"] == "disputed"
    assert body["next_changed_since_block"] == 24
    assert hexes(listing(api, state="disputed", reporter="BANKA").json()) == ["0x" + mirror[0].hex()]


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"category": RAW}, 422, "unknown_category"),
    ({"identifier_type": RAW}, 422, "unknown_type"),
    ({"state": RAW}, 422, "invalid_state"),
    ({"reporter": "BANK" + RAW}, 404, "unknown_member"),
    ({"after": RAW}, 422, "invalid_indicator"),
    ({"reported_since": NOW, "reported_until": NOW - 1}, 422, "invalid_time_range"),
    ({"reported_since": "-1"}, 422, "invalid_request"),
    ({"reported_until": RAW + "x"}, 422, "invalid_request"),
    ({"changed_since_block": str(2**63)}, 422, "invalid_request"),
    ({"min_confidence": "101"}, 422, "invalid_request"),
    ({"limit": "50001"}, 422, "invalid_request"),
    ({"limit": "0"}, 422, "invalid_request"),
])
def test_list_indicators_refuses_invalid_filters_without_echoing_them(api: ApiNode, mirror: list[bytes],
                                                                      params: dict[str, Any], status: int,
                                                                      code: str) -> None:
    response = listing(api, **params)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert RAW not in response.text


def test_export_changed_since_block_pulls_only_changes_and_says_where_to_go_on(api: ApiNode,
                                                                             mirror: list[bytes]) -> None:
    full = api.client.get("/v1/fraud/export", headers=api.headers(Role.analyst))
    assert full.headers["X-Next-Changed-Since-Block"] == "23"
    nothing = api.client.get("/v1/fraud/export", params={"changed_since_block": 23}, headers=api.headers(Role.analyst))
    assert "objects" not in nothing.json()
    with api.node.store.transaction() as session:  # member 2 revokes its old report; member 3 endorses member 1's
        add_reaction(session, "revoked", mirror[1], 2, block=23, at=NOW, batch_id=2, value=1)
        add_reaction(session, "endorsed", mirror[0], 3, block=23, at=NOW, value=60, log_index=1)
        set_synced(session, last_block=23, synced_at=datetime.now(UTC),
                   contract=api.node.deployment.address("FraudLedger"))
    pulled = api.client.get("/v1/fraud/export", params={"changed_since_block": 23}, headers=api.headers(Role.analyst))
    assert pulled.headers["X-Next-Changed-Since-Block"] == "24"
    indicators = [o for o in pulled.json()["objects"] if o["type"] == "indicator"]
    # The revoked one comes although include_inactive is false: the platform holds it as active from the full pull.
    assert [(o["id"], o["revoked"], o["x_alliance_endorser_count"]) for o in indicators] == [
        (indicator_id(mirror[0]), False, 1), (indicator_id(mirror[1]), True, 0)]
    assert conformance_problems(pulled.text) == []


def test_export_changed_since_block_sends_the_revoked_incarnation_a_new_report_replaced(
        api: ApiNode, mirror: list[bytes]) -> None:
    # Revoked and reported again since the platform's last pull: it holds incarnation 0 as active, and must learn
    # that it was revoked, beside the new incarnation 1.
    with api.node.store.transaction() as session:
        add_reaction(session, "revoked", mirror[1], 2, block=23, at=NOW, batch_id=2, value=1)
        add_batch(session, 4, reporter=1, rows=[Row(mirror[1], valid_from=NOW)], block=24, published_at=NOW)
    pulled = api.client.get("/v1/fraud/export", params={"changed_since_block": 23}, headers=api.headers(Role.analyst))
    indicators = [o for o in pulled.json()["objects"] if o["type"] == "indicator"]
    assert [(o["id"], o["revoked"]) for o in indicators] == [(indicator_id(mirror[1]), True),
                                                             (indicator_id(mirror[1], 1), False)]
    later = api.client.get("/v1/fraud/export", params={"changed_since_block": 24}, headers=api.headers(Role.analyst))
    assert [o["id"] for o in later.json()["objects"] if o["type"] == "indicator"] == [indicator_id(mirror[1], 1)]
    assert conformance_problems(pulled.text) == []


@pytest.mark.parametrize("value", ["-1", "x", str(2**63)])
def test_export_refuses_a_malformed_changed_since_block(api: ApiNode, value: str) -> None:
    response = api.client.get("/v1/fraud/export", params={"changed_since_block": value},
                              headers=api.headers(Role.analyst))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_export_changed_since_block_sends_changes_of_state_that_no_block_marks(api: ApiNode) -> None:
    """A platform pulled at block 12, two days ago. Since then one record's validity ended and a dispute's 30-day
    response window ran out: each changes what the indicator means (the lapsed one no longer hits), with no record or
    reaction on chain, so the incremental pull sent neither and the platform went on holding them as they were. They
    come now; an indicator unchanged, one whose dispute lapsed before the last pull, or one dated ahead that started
    to apply (its STIX valid_from said when) do not."""
    expired, lapsed, started, unchanged, lapsed_before = sorted(os.urandom(32) for _ in range(5))
    with api.node.store.transaction() as session:
        add_batch(session, 1, reporter=1, block=10, published_at=NOW - 90 * DAY, rows=[
            Row(expired, valid_from=NOW - 90 * DAY, valid_until=NOW - DAY),
            Row(lapsed, valid_from=NOW - 90 * DAY), Row(unchanged, valid_from=NOW - 90 * DAY),
            Row(started, valid_from=NOW - DAY), Row(lapsed_before, valid_from=NOW - 90 * DAY)])
        add_reaction(session, "disputed", lapsed, 2, block=11, at=NOW - 31 * DAY, value=1)
        add_reaction(session, "disputed", lapsed_before, 2, block=11, at=NOW - 60 * DAY, value=1, log_index=1)
        session.add(IndexedBlock(number=12, hash="0x" + "12" * 32, parent_hash="0x" + "11" * 32,
                                 timestamp=NOW - 2 * DAY))
        set_synced(session, last_block=12, synced_at=datetime.now(UTC), block_time=NOW - 2 * DAY,
                   contract=api.node.deployment.address("FraudLedger"))
    pulled = api.client.get("/v1/fraud/export", params={"changed_since_block": 13}, headers=api.headers(Role.analyst))
    assert pulled.status_code == 200, pulled.text
    indicators = {o["id"]: o for o in pulled.json()["objects"] if o["type"] == "indicator"}
    assert set(indicators) == {indicator_id(expired), indicator_id(lapsed)}
    assert [indicators[indicator_id(i)]["x_alliance_active"] for i in (expired, lapsed)] == [False, False]
    assert indicators[indicator_id(lapsed)]["x_alliance_disputed"] is True
    assert conformance_problems(pulled.text) == []
    # The changes of state that blocks mark are the analyst's search's; these are the export's alone.
    assert hexes(listing(api, changed_since_block=13).json()) == []
    # From before any indexed block, every record is in the pull (by its block) anyway.
    everything = api.client.get("/v1/fraud/export", params={"changed_since_block": 5},
                                headers=api.headers(Role.analyst))
    assert len([o for o in everything.json()["objects"] if o["type"] == "indicator"]) == 5
