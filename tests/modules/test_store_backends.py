"""The credit workflow's queries (velocity counts, borrower matching, eligibility) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.chain.deployment import deploy_consortium, save_deployment
from node.consortium import this_bank_as_founder
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import sync_keys
from node.modules.abs_factory import select_loans
from node.modules.credit_platform import book_loan, submit_application
from node.modules.risk_operations import list_alerts, raise_alerts
from node.runtime import NodeContext
from tests.conftest import free_port, make_node
from tests.modules.workflow import application, bank_card, phone, report_and_mirror


@pytest.fixture
def two_banks(rpc_url: str, tmp_path: Path, store_url: str) -> Iterator[list[NodeContext]]:
    """Bank A on the parametrised store, bank B on SQLite, both holding the epoch-1 key."""
    deployment_file = tmp_path / "deployment.json"
    nodes = [make_node(tmp_path, rpc_url, deployment_file, "Bank A", "BANK-A", database_url=store_url),
             make_node(tmp_path, rpc_url, deployment_file, "Bank B", "BANK-B")]
    save_deployment(deploy_consortium(nodes[0].signing_chain, network="local",
                                      founders=[this_bank_as_founder(n) for n in nodes]), deployment_file)
    for node in nodes:
        sync_keys(node)
    indexer_for(nodes[0]).sync()
    yield nodes
    for node in nodes:
        node.close()


def test_workflow_on_store_decides_books_and_alerts(two_banks: list[NodeContext]) -> None:
    a, b = two_banks
    report_and_mirror(b, a, [("phone", phone(1))])
    assert submit_application(a, application(1), submitted_by="t")["reasons"][0] == "alliance_hit"
    ring = [submit_application(a, application(10 + i, bank_card=bank_card(999)), submitted_by="t")
            for i in range(3)]
    assert ring[-1]["outcome"] == "review" and ring[-1]["reasons"][0] == "velocity_bank_card"
    approved = submit_application(a, application(2), submitted_by="t")
    book_loan(a, approved["application_id"], loan_reference="L2")
    head = a.chain.block_number()
    report_and_mirror(b, a, [("phone", phone(2))], category="money_mule")
    a.settings.risk_alert_webhook_url = f"http://127.0.0.1:{free_port()}/down"  # nobody listens
    alerts = raise_alerts(a, head, a.chain.block_number())
    assert [x["webhook_state"] for x in alerts] == ["failed"]  # stored all the same
    assert [x["loan_reference"] for x in list_alerts(a)] == ["L2"]
    assert select_loans(a)[0].excluded == {"L2": "blacklisted_borrower"}
