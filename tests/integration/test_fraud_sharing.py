"""The fraud ledger across bank nodes, each with its own store, through their HTTP APIs on a real chain.

Bank A's analyst reports; bank B's loan workflow gets the hit; a bank admitted later receives the key
and hits too; with the chain stopped, reports queue and checks answer marked stale, and the queue
drains when the chain is back; no raw identifier ever appears in a transaction or log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.chain.deployment import deploy_consortium, save_deployment
from node.chain.devchain import DevChain
from node.chain.errors import ChainUnavailable
from node.consortium import this_bank_as_founder
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import sync_keys
from node.ledger.publisher import PublishRound
from node.runtime import NodeContext
from tests.conftest import LedgerNodes, chain_texts, free_port, make_node

PHONE_AS_TYPED = "+86 138-0013-8000"
PHONE_DIGITS = "13800138000"
RESIDENT_ID = "11010519491231002X"
RAW_VALUES = (PHONE_AS_TYPED, PHONE_DIGITS, "+8613800138000", RESIDENT_ID, "110105194912310021")


@dataclass
class BankApi:
    node: NodeContext
    client: TestClient
    tokens: dict[Role, str]

    def post(self, path: str, body: dict[str, Any], role: Role) -> Any:
        return self.client.post(path, json=body, headers={"X-API-Key": self.tokens[role]})

    def check(self, *identifiers: tuple[str, str]) -> dict[str, Any]:
        response = self.post("/v1/checks/identity",
                             {"identifiers": [{"type": t, "value": v} for t, v in identifiers]}, Role.workflow)
        assert response.status_code == 200, response.text
        return dict(response.json())


def bank_api(node: NodeContext) -> BankApi:
    with node.store.transaction() as session:
        tokens = {role: create_api_key(session, role, "test").token for role in Role}
    return BankApi(node, TestClient(create_app(node)), tokens)


def report_body(*identifiers: tuple[str, str]) -> dict[str, Any]:
    return {"identifiers": [{"type": t, "value": v} for t, v in identifiers], "category": "telecom_fraud",
            "confidence": 90, "case_reference": "CASE-A-0001"}


@pytest.fixture
def banks(keyed_banks: list[NodeContext]) -> Iterator[list[BankApi]]:
    apis = [bank_api(node) for node in keyed_banks]
    yield apis
    for api in apis:
        api.client.close()


def test_bank_a_reports_and_bank_b_and_a_newcomer_get_hits(banks: list[BankApi], ledger_nodes: LedgerNodes,
                                                           tmp_path: Path) -> None:
    a, b, _ = banks
    accepted = a.post("/v1/fraud/reports", report_body(("phone", PHONE_AS_TYPED), ("cn_resident_id", RESIDENT_ID)),
                      Role.analyst)
    assert accepted.status_code == 202, accepted.text
    a.node.publisher.drain()
    assert indexer_for(b.node).sync().records == 2

    answer = b.check(("phone", PHONE_DIGITS), ("cn_resident_id", RESIDENT_ID.lower()), ("phone", "13900139000"))
    hits = [r["hit"] for r in answer["results"]]
    assert hits == [True, True, False]
    first = answer["results"][0]
    assert (first["categories"], first["reporter_count"], first["disputed"]) == (["telecom_fraud"], 1, False)
    assert first["confidence"] > 80 and not answer["stale"] and answer["as_of_block"] > 0

    newcomer = ledger_nodes.admit(tmp_path, "BANK-D")
    assert sync_keys(a.node).published == [(4, 1)]  # A forwards the epoch-1 key to the new member
    assert sync_keys(newcomer).received == [1]
    indexer_for(newcomer).sync()
    d = bank_api(newcomer)
    try:
        assert [r["hit"] for r in d.check(("phone", PHONE_DIGITS))["results"]] == [True]
    finally:
        d.client.close()

    texts = chain_texts(ledger_nodes.rpc_url)
    assert len(texts) > 10
    encodings = {form for raw in (*RAW_VALUES, "CASE-A-0001")
                 for form in (raw.encode().hex(), raw.lower().encode().hex(), raw.encode("utf-16-be").hex())}
    assert not [form for text in texts for form in encodings if form in text]


def test_chain_outage_queues_reports_marks_checks_stale_then_drains(tmp_path: Path) -> None:
    chain = DevChain(tmp_path / "chain", port=free_port())
    chain.start()
    deployment_file = tmp_path / "deployment.json"
    nodes = [make_node(tmp_path, chain.rpc_url, deployment_file, f"Bank {c}", f"BANK-{c}",
                       mirror_stale_after_s=3600) for c in "AB"]
    apis: list[BankApi] = []
    try:
        save_deployment(deploy_consortium(nodes[0].signing_chain, network="local",
                                          founders=[this_bank_as_founder(n) for n in nodes]), deployment_file)
        for node in nodes:
            sync_keys(node)
        a, b = apis = [bank_api(node) for node in nodes]
        assert a.post("/v1/fraud/reports", report_body(("phone", PHONE_DIGITS)), Role.analyst).status_code == 202
        a.node.publisher.drain()
        indexer_for(b.node).sync()
        assert b.check(("phone", PHONE_DIGITS))["stale"] is False

        chain.stop()
        queued = a.post("/v1/fraud/reports", report_body(("cn_resident_id", RESIDENT_ID)), Role.analyst)
        assert queued.status_code == 202 and queued.json()["state"] == "queued"
        with pytest.raises(ChainUnavailable):
            a.node.publisher.run_once(flush=True)
        with pytest.raises(ChainUnavailable):
            indexer_for(b.node).sync()
        during = b.check(("phone", PHONE_DIGITS), ("cn_resident_id", RESIDENT_ID))
        assert [r["hit"] for r in during["results"]] == [True, False]  # answered from the mirror
        assert during["stale"] is True
        health = b.client.get("/health").json()
        assert health["status"] == "degraded" and health["chain"]["reachable"] is False

        chain.start()  # the same state: the first batch is still there
        # The publisher found the chain down before it signed anything (a round with records to publish first
        # checks the chain still has its newest batch): the queued record is published now, once.
        assert a.node.publisher.drain() == PublishRound(batches=1, records=1, recovered=0)
        state = a.client.get(f"/v1/fraud/reports/{queued.json()['report_id']}",
                             headers={"X-API-Key": a.tokens[Role.analyst]}).json()["state"]
        assert state == "confirmed"
        indexer_for(b.node).sync()
        after = b.check(("phone", PHONE_DIGITS), ("cn_resident_id", RESIDENT_ID))
        assert [r["hit"] for r in after["results"]] == [True, True] and after["stale"] is False
        assert a.node.fraud_ledger().batch_count() == 2
    finally:
        for api in apis:
            api.client.close()
        for node in nodes:
            node.close()
        chain.stop()
