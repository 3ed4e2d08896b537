"""Helpers of the credit workflow tests: applicants with valid identifiers, applications, bank B's reports."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from stdnum import luhn
from stdnum.cn import ric

from node.chain.deployment import deploy_consortium, save_deployment
from node.consortium import this_bank_as_founder
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import sync_keys
from node.ledger.reports import ReportRequest
from node.modules.credit_platform import ApplicationIn
from node.runtime import NodeContext
from tests.conftest import make_node


def resident_id(i: int, *, region: str = "110105", birth: str = "19850312") -> str:
    body = f"{region}{birth}{i % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")


def phone(i: int) -> str:
    return f"139{i:08d}"


def bank_card(i: int) -> str:
    body = f"622202{i:012d}"
    return body + luhn.calc_check_digit(body)


def applicant(i: int, **overrides: Any) -> dict[str, Any]:
    person = {"cn_resident_id": resident_id(i), "phone": phone(i), "bank_card": bank_card(i),
              "device_id": f"device-{i:08d}", "birth_date": "1985-03-12", "region_code": "110105", "sex": "M"}
    if int(person["cn_resident_id"][16]) % 2 == 0:
        person["sex"] = "F"
    return {**person, **overrides}


def application(i: int, *, amount: str = "30000", bank_inputs: dict[str, float] | None = None,
                scenario: str = "consumer_loan", **applicant_overrides: Any) -> ApplicationIn:
    return ApplicationIn.model_validate({
        "channel": "mobile_app", "scenario": scenario, "applicant": applicant(i, **applicant_overrides),
        "amount": Decimal(amount), "currency": "CNY", "term_months": 12,
        "bank_inputs": bank_inputs if bank_inputs is not None else
        {"monthly_income": 15000, "debt_to_income": 0.2, "months_at_employer": 36}})


def report_and_mirror(reporter: NodeContext, mirror: NodeContext, identifiers: list[tuple[str, str]],
                      *, category: str = "identity_theft", confidence: int = 90) -> str:
    """`reporter` reports and publishes; `mirror`'s indexer syncs. Returns the report id."""
    accepted = reporter.report_intake.accept(ReportRequest(identifiers, category, confidence), submitted_by="test")
    reporter.publisher.drain()
    indexer_for(mirror).sync()
    return accepted.report_id


def lone_bank(rpc_url: str, tmp_path: Path, store_url: str) -> NodeContext:
    """Bank A alone in a consortium, on the store at `store_url`, holding the epoch-1 key, its mirror synced."""
    deployment_file = tmp_path / "deployment.json"
    node = make_node(tmp_path, rpc_url, deployment_file, "Bank A", "BANK-A", database_url=store_url)
    save_deployment(deploy_consortium(node.signing_chain, network="local", founders=[this_bank_as_founder(node)]),
                    deployment_file)
    sync_keys(node)
    indexer_for(node).sync()
    return node
