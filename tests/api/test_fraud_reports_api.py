"""POST/GET /v1/fraud/reports on a deployed node with a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.chain.registry import MemberRole
from node.errors import Conflict
from node.ledger.report_staging import begin_import, complete_import
from node.ledger.reports import ReportRequest
from node.signer_rotation import prepare_new_signer
from node.store.ledger_tables import OutboxRecord
from tests.api.conftest import ApiNode
from tests.conftest import LedgerNodes

REPORT = {"identifiers": [{"type": "phone", "value": "+86 138 0013 8000"},
                          {"type": "cn_resident_id", "value": "11010519491231002X"}],
          "category": "telecom_fraud", "confidence": 85, "case_reference": "CASE-2026-0042"}


def with_key(api: ApiNode) -> ApiNode:
    api.node.keyring.store_key(1, os.urandom(32), source="generated")
    return api


def test_create_report_answers_202_with_a_content_derived_id(api: ApiNode) -> None:
    with_key(api)
    first = api.client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(Role.analyst))
    again = api.client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(Role.analyst))
    assert first.status_code == again.status_code == 202
    assert first.json()["created"] and not again.json()["created"]
    assert first.json()["report_id"] == again.json()["report_id"]
    shown = api.client.get(f"/v1/fraud/reports/{first.json()['report_id']}", headers=api.headers(Role.analyst))
    assert shown.status_code == 200
    body = shown.json()
    assert body["state"] == "queued" and body["category"] == "telecom_fraud"
    assert [i["identifier_type"] for i in body["identifiers"]] == ["phone", "cn_resident_id"]
    assert "13800138000" not in shown.text and "CASE-2026-0042" not in shown.text


def test_create_report_refuses_invalid_identifier_with_reason_code(api: ApiNode) -> None:
    with_key(api)
    bad = {**REPORT, "identifiers": [{"type": "cn_resident_id", "value": "110105194912310021"}]}
    response = api.client.post("/v1/fraud/reports", json=bad, headers=api.headers(Role.analyst))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "checksum_failed"
    assert "110105194912310021" not in response.text
    with api.node.store.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxRecord)) == 0


def test_create_report_refuses_other_roles(api: ApiNode) -> None:
    with_key(api)
    for role in (Role.auditor, Role.workflow, Role.operator):
        response = api.client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(role))
        assert response.status_code == 403, role
        assert response.json()["error"]["code"] == "forbidden"
    assert api.client.post("/v1/fraud/reports", json=REPORT).status_code == 401


def test_create_report_without_alliance_key_is_503(api: ApiNode) -> None:
    response = api.client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(Role.analyst))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_alliance_key"


def test_create_reports_bulk_is_all_or_nothing(api: ApiNode) -> None:
    with_key(api)
    good = {"reports": [{**REPORT, "confidence": c} for c in (10, 20, 30)]}
    response = api.client.post("/v1/fraud/reports/bulk", json=good, headers=api.headers(Role.analyst))
    assert response.status_code == 202
    assert response.json()["accepted"] == response.json()["created"] == 3
    mixed = {"reports": [{**REPORT, "confidence": 40},
                         {**REPORT, "identifiers": [{"type": "email", "value": "nobody"}]}]}
    refused = api.client.post("/v1/fraud/reports/bulk", json=mixed, headers=api.headers(Role.analyst))
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_reports"
    assert refused.json()["error"]["details"] == [{"row": 1, "code": "bad_format",
                                                   "reason": refused.json()["error"]["details"][0]["reason"]}]
    with api.node.store.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxRecord)) == 6


def test_read_report_unknown_is_404(api: ApiNode) -> None:
    response = api.client.get("/v1/fraud/reports/" + "0" * 32, headers=api.headers(Role.analyst))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "report_not_found"


def test_read_report_of_an_import_not_complete_is_404_until_it_completes(api: ApiNode) -> None:
    """A report written by `alliance fraud import` is not accepted until the whole file is: it is not shown before."""
    with_key(api)
    intake = api.node.report_intake
    import_id = begin_import(api.node.store, source="reports.csv", submitted_by="cli")
    prepared = intake.prepare(ReportRequest([("phone", "13800138000")], "telecom_fraud", 90))
    intake.store_prepared([prepared], submitted_by="cli", import_id=import_id)
    url = f"/v1/fraud/reports/{prepared.report_id}"
    staged = api.client.get(url, headers=api.headers(Role.analyst))
    assert staged.status_code == 404 and staged.json()["error"]["code"] == "report_not_found"
    assert "the import writing it has not completed" in staged.json()["error"]["message"]
    complete_import(api.node.store, import_id, reports=1, created=1, sha256=bytes(32))
    shown = api.client.get(url, headers=api.headers(Role.analyst))
    assert shown.status_code == 200 and shown.json()["state"] == "queued"
    # In UTC, saying so: SQLite hands the stored time back naive, and a client read "2026-12-07T12:02:17" as local.
    assert datetime.fromisoformat(shown.json()["created_at"]).utcoffset() == timedelta(0)


def test_create_report_malformed_body_is_422_without_echoing_values(api: ApiNode) -> None:
    with_key(api)
    response = api.client.post("/v1/fraud/reports", json={"identifiers": [{"type": "phone", "value": 13800138000}],
                                                           "category": "other", "confidence": "high"},
                               headers=api.headers(Role.analyst))
    assert response.status_code == 422
    assert "13800138000" not in response.text


def test_node_status_is_for_operators_only(api: ApiNode) -> None:
    with_key(api)
    empty = api.client.get("/v1/node/status", headers=api.headers(Role.operator)).json()
    assert empty["outbox"] == {} and empty["oldest_queued_report_at"] is None
    api.client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(Role.analyst))
    status = api.client.get("/v1/node/status", headers=api.headers(Role.operator))
    assert status.status_code == 200
    body = status.json()
    assert body["outbox"] == {"queued": 2} and body["key_epochs_held"] == [1]
    # As `alliance node status --json` shows it (the API lacked it): when the record queued longest was queued.
    with api.node.store.session() as session:
        queued_at = session.scalar(select(func.min(OutboxRecord.queued_at)))
    assert queued_at is not None and body["oldest_queued_report_at"] == queued_at.isoformat()
    assert body["mirror"]["stale"] is True  # never synced
    assert body["next_signer_prepared"] is None and body["signing_key_unusable"] is None
    prepared = prepare_new_signer(api.node)  # `alliance key new-signer`: the node keeps signing with its key until
    status = api.client.get("/v1/node/status", headers=api.headers(Role.operator))  # the members rotate to it
    assert status.json()["next_signer_prepared"] == prepared.address
    for role in (Role.analyst, Role.auditor, Role.workflow):
        refused = api.client.get("/v1/node/status", headers=api.headers(role))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert api.client.post("/v1/node/republish", headers=api.headers(role)).status_code == 403


def test_republish_route_queues_nothing_without_a_new_epoch(api: ApiNode) -> None:
    with_key(api)
    api.client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(Role.analyst))
    response = api.client.post("/v1/node/republish", headers=api.headers(Role.operator))
    assert response.status_code == 200 and response.json() == {"epoch": 1, "reports": 0, "records": 0}


def test_create_report_of_an_auditor_bank_is_409_and_queues_nothing(ledger_nodes: LedgerNodes,
                                                                     tmp_path: Path) -> None:
    """Accepted (202) and queued for good: the FraudLedger refuses an auditor's batches."""
    bank = ledger_nodes.admit(tmp_path / "admitted", "BANK-D", MemberRole.auditor)
    bank.keyring.store_key(1, os.urandom(32), source="generated")
    with bank.store.transaction() as session:
        token = create_api_key(session, Role.analyst).token
    with TestClient(create_app(bank)) as client:
        single = client.post("/v1/fraud/reports", json=REPORT, headers={"X-API-Key": token})
        bulk = client.post("/v1/fraud/reports/bulk", json={"reports": [REPORT]}, headers={"X-API-Key": token})
    for response in (single, bulk):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "not_a_reporter"
    # Refused by the intake itself, so also the credit workflow's fraud confirmations, which take reports through it.
    with pytest.raises(Conflict) as refused:
        bank.report_intake.accept(ReportRequest([("phone", "13800138000")], "money_mule", 70), submitted_by="t")
    assert refused.value.code == "not_a_reporter"
    with bank.store.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxRecord)) == 0


@pytest.mark.parametrize(("field", "value", "code"), [
    # Each evidence hash was taken as the hash without its whitespace (bytes.fromhex skips it), under a report id of
    # its own: a retry spelt so queued the same report again.
    ("evidence_sha256", "ab ab" + "ab" * 30, "invalid_evidence_hash"),
    ("evidence_sha256", " " + "ab" * 32, "invalid_evidence_hash"),
    ("evidence_sha256", "ab" * 32 + "\n", "invalid_evidence_hash"),
    ("case_reference", "CASE-1\u0000", "invalid_case_reference"),
    ("case_reference", "CASE-1\r\n", "invalid_case_reference"),
    ("case_reference", "CASE\t1", "invalid_case_reference"),
], ids=["evidence_inner_space", "evidence_leading_space", "evidence_trailing_newline", "case_nul", "case_crlf",
        "case_tab"])
def test_create_report_refuses_a_field_spelt_badly(api: ApiNode, field: str, value: str, code: str) -> None:
    with_key(api)
    response = api.client.post("/v1/fraud/reports", json={**REPORT, field: value}, headers=api.headers(Role.analyst))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    with api.node.store.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxRecord)) == 0


def test_create_report_gives_an_evidence_hash_written_with_0x_or_without_one_id(api: ApiNode) -> None:
    with_key(api)
    ids = []
    for evidence in ("0x" + "AB" * 32, "ab" * 32):
        response = api.client.post("/v1/fraud/reports", json={**REPORT, "evidence_sha256": evidence},
                                   headers=api.headers(Role.analyst))
        assert response.status_code == 202, response.text
        ids.append((response.json()["report_id"], response.json()["created"]))
    assert ids[1] == (ids[0][0], False) and ids[0][1] is True
