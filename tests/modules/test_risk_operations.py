"""Post-loan monitoring on anvil: bank B reports one of bank A's borrowers; A's indexer worker mirrors it, the
risk operations module raises one alert (stored, listed, webhook), and A confirms fraud in one step."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pytest import MonkeyPatch
from sqlalchemy import select, update

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.ledger.checks import check_identity
from node.ledger.indexer import indexer_for
from node.ledger.reports import ReportRequest, report_status
from node.modules import risk_operations
from node.modules.credit_platform import book_loan, submit_application
from node.modules.risk_operations import list_alerts, resend_undelivered_alerts
from node.runtime import NodeContext
from node.store.application_tables import RiskAlert
from node.store.ledger_tables import FraudReport
from node.store.models import utcnow
from node.workers import node_workers
from tests.conftest import free_port
from tests.http_stub import QuietHandler, serving
from tests.modules.workflow import application, phone, resident_id

WEBHOOK_TOKEN = "whk-s3cr3t-token"  # a credential a webhook URL may carry


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    with serving(Handler) as url:
        yield f"{url}/alerts", received


def test_mirrored_indicator_raises_alert_and_fraud_is_confirmed(
        keyed_banks: list[NodeContext], webhook: tuple[str, list[dict[str, Any]]]) -> None:
    a, b, _ = keyed_banks
    url, received = webhook
    a.settings.risk_alert_webhook_url = url
    decided = submit_application(a, application(50), submitted_by="test")
    loan = book_loan(a, decided["application_id"], loan_reference="LOAN-50")
    submit_application(a, application(51), submitted_by="test")  # another customer, never reported
    b.report_intake.accept(ReportRequest([("phone", phone(50))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()

    indexer_loop = next(loop for loop in node_workers(a).loops if loop.name == "indexer")
    indexer_loop.run_step()
    assert indexer_loop.status.last_error is None
    alerts = list_alerts(a)
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["loan_reference"], alert["identifier_type"], alert["categories"]) == (
        loan.loan_reference, "phone", ["money_mule"])
    assert alert["state"] == "open" and alert["webhook_state"] == "sent"
    assert received and received[0]["alert"]["alert_id"] == alert["alert_id"]
    # The same time as the webhook said, UTC and saying so (SQLite hands it back naive: "…T12:33:36.921852").
    assert alert["created_at"] == received[0]["alert"]["created_at"]
    assert datetime.fromisoformat(alert["created_at"]).utcoffset() == timedelta(0)
    assert phone(50) not in json.dumps(received) and resident_id(50) not in json.dumps(received)

    b.report_intake.accept(ReportRequest([("phone", phone(50))], "money_mule", 81), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop.run_step()  # a second report of the same phone is a second match, never a duplicate
    assert len(list_alerts(a)) == 2
    indexer_loop.run_step()
    assert len(list_alerts(a)) == 2

    with a.store.transaction() as session:
        analyst = create_api_key(session, Role.analyst, "test").token
        workflow = create_api_key(session, Role.workflow, "test").token
    with TestClient(create_app(a)) as client:
        listed = client.get("/v1/alerts?state=open", headers={"X-API-Key": workflow}).json()
        refused = client.post(f"/v1/alerts/{alert['alert_id']}", json={"action": "confirm"},
                              headers={"X-API-Key": workflow})
        unknown = client.post(f"/v1/alerts/{alert['alert_id']}", json={"action": "confirm", "category": "nonsense"},
                              headers={"X-API-Key": analyst})  # refused, and the alert stays open
        confirmed = client.post(f"/v1/alerts/{alert['alert_id']}",
                                json={"action": "confirm", "category": "money_mule", "confidence": 85},
                                headers={"X-API-Key": analyst})
        again = client.post(f"/v1/alerts/{alert['alert_id']}", json={"action": "dismiss"},
                            headers={"X-API-Key": analyst})
    assert len(listed) == 2 and refused.status_code == 403 and again.status_code == 409
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_category"
    assert confirmed.status_code == 200, confirmed.text
    report_id = confirmed.json()["fraud_report_id"]
    with a.store.session() as session:
        assert report_status(session, report_id).state == "queued"

    # One step was enough: once published, the borrower's resident ID (which B never reported) hits at B.
    a.publisher.drain()
    indexer_for(b).sync()
    indexer_loop.run_step()  # A mirrors its own report: no alert about a borrower it confirmed itself
    assert len(list_alerts(a)) == 2
    outcome = check_identity(b, [("cn_resident_id", resident_id(50))], "test")
    assert outcome.results[0].hit and outcome.results[0].categories == ("money_mule",)


def test_alerts_whose_webhook_failed_are_posted_again_once_it_answers(
        keyed_banks: list[NodeContext], webhook: tuple[str, list[dict[str, Any]]],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(risk_operations, "WEBHOOK_RETRY_INTERVAL_S", 0.0)
    a, b, _ = keyed_banks
    url, received = webhook
    a.settings.risk_alert_webhook_url = f"http://127.0.0.1:{free_port()}/down"  # nothing listens there
    for i in (60, 61):
        book_loan(a, submit_application(a, application(i), submitted_by="test")["application_id"],
                  loan_reference=f"LOAN-{i}")
        b.report_intake.accept(ReportRequest([("phone", phone(i))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop = next(loop for loop in node_workers(a).loops if loop.name == "indexer")
    indexer_loop.run_step()
    assert [alert["webhook_state"] for alert in list_alerts(a)] == ["failed", "failed"]
    assert resend_undelivered_alerts(a) == 0  # still down: stops at the first failure

    a.settings.risk_alert_webhook_url = f"{url}?token={WEBHOOK_TOKEN}"
    # The next pass of the indexer (new blocks, no new match) posts them.
    b.report_intake.accept(ReportRequest([("phone", phone(62))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    with caplog.at_level(logging.DEBUG):  # as `alliance --debug` logs
        indexer_loop.run_step()
    assert WEBHOOK_TOKEN not in caplog.text  # httpx logged the URL in full, credentials included
    assert [alert["webhook_state"] for alert in list_alerts(a)] == ["sent", "sent"]
    assert sorted(r["alert"]["loan_reference"] for r in received) == ["LOAN-60", "LOAN-61"]
    assert resend_undelivered_alerts(a) == 0 and len(received) == 2  # sent once


def test_an_alert_left_pending_is_posted_again_after_a_grace_period(
        keyed_banks: list[NodeContext], webhook: tuple[str, list[dict[str, Any]]]) -> None:
    a, b, _ = keyed_banks
    url, received = webhook
    book_loan(a, submit_application(a, application(63), submitted_by="test")["application_id"],
              loan_reference="LOAN-63")
    b.report_intake.accept(ReportRequest([("phone", phone(63))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    a.settings.risk_alert_webhook_url = url
    with MonkeyPatch.context() as patch:  # the node stops after storing the alert, before posting it
        patch.setattr(risk_operations, "_notify", lambda node, view: None)
        next(loop for loop in node_workers(a).loops if loop.name == "indexer").run_step()
    assert [alert["webhook_state"] for alert in list_alerts(a)] == ["pending"]
    assert resend_undelivered_alerts(a) == 0  # it may be being posted right now
    with a.store.transaction() as session:
        session.execute(update(RiskAlert).values(created_at=utcnow() - timedelta(minutes=1)))
    assert resend_undelivered_alerts(a) == 1
    assert [alert["webhook_state"] for alert in list_alerts(a)] == ["sent"] and len(received) == 1


def test_alerts_of_blocks_mirrored_before_the_node_stopped_are_raised_by_the_next_pass(
        keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    decided = submit_application(a, application(52), submitted_by="test")
    book_loan(a, decided["application_id"], loan_reference="LOAN-52")
    b.report_intake.accept(ReportRequest([("phone", phone(99))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop = next(loop for loop in node_workers(a).loops if loop.name == "indexer")
    indexer_loop.run_step()  # a pass like any other: nothing to alert
    b.report_intake.accept(ReportRequest([("phone", phone(52))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_for(a).sync()  # the indexer's pass is committed; the node stopped before extensions heard of it
    assert list_alerts(a) == []

    b.report_intake.accept(ReportRequest([("phone", phone(53))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop.run_step()  # the restarted node's first pass mirrors only the later report
    assert [x["loan_reference"] for x in list_alerts(a)] == ["LOAN-52"]
    indexer_loop.run_step()
    assert len(list_alerts(a)) == 1


def test_booking_a_borrower_reported_after_the_decision_raises_an_alert(keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    decided = submit_application(a, application(54), submitted_by="test")
    assert decided["outcome"] == "approve"
    b.report_intake.accept(ReportRequest([("phone", phone(54))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop = next(loop for loop in node_workers(a).loops if loop.name == "indexer")
    indexer_loop.run_step()  # mirrored while the borrower was not booked yet: nothing to match
    assert list_alerts(a) == []

    # Booked on the decision made before the report: no pass would ever match those blocks again.
    book_loan(a, decided["application_id"], loan_reference="LOAN-54")
    [alert] = list_alerts(a)
    assert (alert["loan_reference"], alert["identifier_type"], alert["categories"]) == (
        "LOAN-54", "phone", ["money_mule"])
    indexer_loop.run_step()
    assert len(list_alerts(a)) == 1


def test_application_fraud_confirmed_reports_to_ledger(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    decided = submit_application(a, application(60), submitted_by="test")
    with a.store.transaction() as session:
        analyst = create_api_key(session, Role.analyst, "test").token
    with TestClient(create_app(a)) as client:
        response = client.post(f"/v1/applications/{decided['application_id']}/fraud",
                               json={"category": "application_fraud", "confidence": 95},
                               headers={"X-API-Key": analyst})
        missing = client.post("/v1/applications/app_missing/fraud",
                              json={"category": "application_fraud", "confidence": 95},
                              headers={"X-API-Key": analyst})
        bad_category = client.post(f"/v1/applications/{decided['application_id']}/fraud",
                                   json={"category": "nonsense", "confidence": 95}, headers={"X-API-Key": analyst})
        # Confirmed again otherwise: the borrower was reported a second time (both 202).
        other = client.post(f"/v1/applications/{decided['application_id']}/fraud",
                            json={"category": "identity_theft", "confidence": 80}, headers={"X-API-Key": analyst})
        retried = client.post(f"/v1/applications/{decided['application_id']}/fraud",
                              json={"category": "application_fraud", "confidence": 95}, headers={"X-API-Key": analyst})
    assert response.status_code == 202, response.text
    assert other.status_code == 409 and other.json()["error"]["code"] == "fraud_already_confirmed"
    assert retried.status_code == 202 and retried.json()["report_id"] == response.json()["report_id"]
    with a.store.session() as session:
        assert session.scalars(select(FraudReport.report_id)).all() == [response.json()["report_id"]]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "application_not_found"
    assert bad_category.status_code == 422 and bad_category.json()["error"]["code"] == "unknown_category"
    with a.store.session() as session:
        status = report_status(session, response.json()["report_id"])
    assert {i.identifier_type for i in status.identifiers} == {"cn_resident_id", "phone", "bank_card", "device_id"}


def test_key_rotation_rehashes_booked_borrowers(keyed_banks: list[NodeContext]) -> None:
    import os

    from sqlalchemy import func, select

    from node.modules.credit_platform import refresh_borrower_indicators
    from node.store.application_tables import BorrowerIndicator

    a = keyed_banks[0]
    decided = submit_application(a, application(70), submitted_by="test")
    book_loan(a, decided["application_id"], loan_reference="LOAN-70")
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(BorrowerIndicator)) == 4  # one epoch, four types
    a.keyring.store_key(2, os.urandom(32), source="generated")
    assert refresh_borrower_indicators(a) == 4
    assert refresh_borrower_indicators(a) == 0


def test_refresh_borrower_indicators_unseals_only_borrowers_lacking_an_epoch(
        keyed_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from node.modules import credit_platform
    from node.modules.credit_platform import refresh_borrower_indicators

    a = keyed_banks[0]
    for i in (71, 72):
        book_loan(a, submit_application(a, application(i), submitted_by="test")["application_id"])
    unsealed: list[str] = []
    unseal = credit_platform.unseal_applicant
    monkeypatch.setattr(credit_platform, "unseal_applicant",
                        lambda node, row: unsealed.append(row.application_id) or unseal(node, row))
    # Runs on every indexer pass that mirrors blocks: it unsealed and hashed every borrower of the book each time.
    assert refresh_borrower_indicators(a) == 0 and unsealed == []
    a.keyring.store_key(2, os.urandom(32), source="generated")
    assert refresh_borrower_indicators(a) == 8 and len(unsealed) == 2


def test_refresh_borrower_indicators_after_a_rotation_hashes_a_page_of_loans_per_transaction(
        keyed_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from sqlalchemy import event, func

    from node.modules import credit_platform
    from node.modules.credit_platform import refresh_borrower_indicators
    from node.store.application_tables import BorrowerIndicator

    a = keyed_banks[0]
    for i in (73, 74, 75, 76, 77):
        book_loan(a, submit_application(a, application(i), submitted_by="test")["application_id"])
    a.keyring.store_key(2, os.urandom(32), source="generated")
    monkeypatch.setattr(credit_platform, "LOANS_PER_TRANSACTION", 2)
    unsealed_per_commit: list[int] = []
    unsealed: list[str] = []
    unseal = credit_platform.unseal_applicant
    monkeypatch.setattr(credit_platform, "unseal_applicant",
                        lambda node, row: unsealed.append(row.application_id) or unseal(node, row))
    listener = lambda _connection: unsealed_per_commit.append(len(unsealed))  # noqa: E731
    event.listen(a.store.engine, "commit", listener)
    try:
        # The whole book lacks epoch 2: one transaction for all of it held the write lock, 40 s for 20,000 loans.
        assert refresh_borrower_indicators(a) == 20
    finally:
        event.remove(a.store.engine, "commit", listener)
    assert [n for n in unsealed_per_commit if n] == [2, 4, 5]
    assert sorted(unsealed) == sorted(set(unsealed))  # each borrower unsealed once
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(BorrowerIndicator)) == 40  # 5 loans, 4 types, 2 epochs
    assert refresh_borrower_indicators(a) == 0


def test_records_mirrored_before_the_node_held_their_key_epoch_raise_alerts_once_it_does(
        keyed_banks: list[NodeContext]) -> None:
    from node.ledger.key_distribution import rotate, sync_keys

    a, b, _ = keyed_banks
    book_loan(a, submit_application(a, application(55), submitted_by="test")["application_id"],
              loan_reference="LOAN-55")
    assert rotate(b) == 2  # A's envelope is on chain; A's key worker has not run yet
    b.report_intake.accept(ReportRequest([("phone", phone(55))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop = next(loop for loop in node_workers(a).loops if loop.name == "indexer")
    indexer_loop.run_step()  # mirrored under epoch 2, which A cannot hash its borrowers under yet
    assert list_alerts(a) == []

    assert sync_keys(a).received == [2]
    b.report_intake.accept(ReportRequest([("phone", phone(56))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop.run_step()  # the next pass with new blocks: the borrower is hashed under epoch 2 now
    assert [(x["loan_reference"], x["categories"]) for x in list_alerts(a)] == [("LOAN-55", ["money_mule"])]
    indexer_loop.run_step()
    assert len(list_alerts(a)) == 1


def test_a_booking_whose_hook_failed_is_matched_by_the_next_pass(keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    decided = submit_application(a, application(57), submitted_by="test")
    b.report_intake.accept(ReportRequest([("phone", phone(57))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop = next(loop for loop in node_workers(a).loops if loop.name == "indexer")
    indexer_loop.run_step()  # mirrored before the booking
    with MonkeyPatch.context() as patch:  # the booking's hook fails (or the node stops right after the booking)
        patch.setattr(risk_operations, "raise_booking_alerts", lambda node, reference: 1 / 0)
        book_loan(a, decided["application_id"], loan_reference="LOAN-57")
    assert list_alerts(a) == []

    b.report_intake.accept(ReportRequest([("phone", phone(58))], "money_mule", 80), submitted_by="b-analyst")
    b.publisher.drain()
    indexer_loop.run_step()
    assert [x["loan_reference"] for x in list_alerts(a)] == ["LOAN-57"]
    indexer_loop.run_step()
    assert len(list_alerts(a)) == 1
