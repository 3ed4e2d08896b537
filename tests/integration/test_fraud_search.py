"""Two banks report, endorse, dispute and withdraw on a real chain; a third bank's node (SQLite or PostgreSQL) finds
the indicators by filter and pulls only what changed, through its API."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.ledger.indexer import indexer_for
from node.ledger.reactions import dispute_indicator, endorse_indicator, withdraw_report
from node.ledger.reports import ReportRequest
from node.ledger.stix import indicator_id
from node.runtime import NodeContext
from tests.conftest import LedgerNodes, moved_to_store
from tests.ledger.test_reactions import indicator_of

PHONE = "13800138000"
EMAIL = "mule@example.com"


def published(node: NodeContext, identifier: tuple[str, str], category: str) -> bytes:
    report_id = node.report_intake.accept(ReportRequest([identifier], category, 70), submitted_by="t").report_id
    node.publisher.drain()
    return indicator_of(node, report_id)


def test_a_third_bank_searches_two_banks_reports_and_pulls_their_changes(
        ledger_nodes: LedgerNodes, keyed_banks: list[NodeContext], store_url: str) -> None:
    a, b, c = keyed_banks
    reader = moved_to_store(c, store_url)
    ledger_nodes.nodes.append(reader)  # closed with the others
    with reader.store.transaction() as session:
        token = create_api_key(session, Role.analyst, "t").token
    client = TestClient(create_app(reader))

    def listing(**params: Any) -> dict[str, Any]:
        indexer_for(reader).sync()
        response = client.get("/v1/fraud/indicators", params=params, headers={"X-API-Key": token})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def found(**params: Any) -> list[tuple[str, str]]:
        return [(item["indicator"], item["status"]) for item in listing(**params)["indicators"]]

    b_report = b.report_intake.accept(ReportRequest([("phone", PHONE)], "money_mule", 70), submitted_by="t")
    b.publisher.drain()
    phone = "0x" + indicator_of(b, b_report.report_id).hex()
    email = "0x" + published(a, ("email", EMAIL), "telecom_fraud").hex()
    assert found(reporter="BANK-B") == [(phone, "active")]
    assert found(reporter="BANK-A", category="telecom_fraud", identifier_type="email") == [(email, "active")]
    assert found(reporter="BANK-A", category="money_mule") == []
    mark = listing()["next_changed_since_block"]
    assert found(changed_since_block=mark) == []

    for node in (a, c):
        indexer_for(node).sync()
    endorse_indicator(c, bytes.fromhex(email[2:]), 80)
    dispute_indicator(a, bytes.fromhex(phone[2:]), "mistaken_identity")
    assert sorted(found(changed_since_block=mark)) == sorted([(phone, "disputed"), (email, "active")])
    assert found(reporter="BANK-B", state="disputed") == [(phone, "disputed")]  # B's report awaiting B's answer
    assert listing(min_confidence=90)["indicators"][0]["endorsers"] == [3]

    mark = listing()["next_changed_since_block"]
    indexer_for(b).sync()
    withdraw_report(b, b_report.report_id, "dispute_upheld")
    assert found(changed_since_block=mark) == [(phone, "revoked")]
    assert found(state="active") == [(email, "active")]
    pulled = client.get("/v1/fraud/export", params={"changed_since_block": mark}, headers={"X-API-Key": token})
    assert [(o["id"], o["revoked"]) for o in pulled.json()["objects"] if o["type"] == "indicator"] == [
        (indicator_id(bytes.fromhex(phone[2:])), True)]
    assert int(pulled.headers["X-Next-Changed-Since-Block"]) > mark
    client.close()
