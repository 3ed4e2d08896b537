"""The credit workflow's queries (velocity counts, borrower matching, eligibility) on SQLite and PostgreSQL, and its
writes racing another process on the same store (two API replicas, the node's workers and the CLI)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.chain.deployment import deploy_consortium, save_deployment
from node.consortium import this_bank_as_founder
from node.errors import Conflict
from node.ledger.checks import ledger_address
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import sync_keys
from node.ledger.mirror import facts_for, mirror_status
from node.modules import credit_platform, risk_operations
from node.modules.abs_factory import _cursor_of_reference, select_loans
from node.modules.credit_platform import (
    book_loan,
    confirm_fraud,
    refresh_borrower_indicators,
    set_loan_status,
    submit_application,
)
from node.modules.risk_operations import list_alerts, raise_alerts, resolve_alert
from node.modules.selection_snapshots import SNAPSHOT_CAPACITY
from node.runtime import NodeContext
from node.store.application_tables import BookedLoanRow, BorrowerIndicator, LoanApplication
from node.store.ledger_tables import FraudReport
from tests.conftest import free_port, interrupted_before_writing, make_node
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


def _book_references(node: NodeContext, references: list[str], first: int) -> None:
    for i, reference in enumerate(references):
        approved = submit_application(node, application(first + i), submitted_by="t")
        book_loan(node, approved["application_id"], loan_reference=reference)


def _without_concentration_limits(node: NodeContext, tmp_path: Path) -> None:
    node.settings.credit_policy_file = tmp_path / "policy.toml"  # a few loans are no pool
    node.settings.credit_policy_file.write_text("[abs]\nmax_borrower_share = 1\nmax_region_share = 1\n")


def _operator(node: NodeContext) -> dict[str, str]:
    with node.store.transaction() as session:
        return {"X-API-Key": create_api_key(session, Role.operator, "t").token}


def test_eligible_loans_page_in_reference_order_through_the_api(two_banks: list[NodeContext], tmp_path: Path) -> None:
    """Every loan the bank ever booked had its verdict in one answer; now a page of loans at a time, a reference
    that is not Latin-1 (which no header takes) travelling as an opaque cursor."""
    a, _ = two_banks
    _without_concentration_limits(a, tmp_path)
    _book_references(a, ["L-b", "L-贷款", "L-a"], 20)
    set_loan_status(a, "L-b", status="dpd30", arrears=Decimal("10.00"))
    operator = _operator(a)
    with TestClient(create_app(a)) as client:
        first = client.get("/v1/abs-factory/eligible", params={"limit": 2}, headers=operator)
        assert first.status_code == 200, first.text
        assert (first.json()["selected"], first.json()["excluded"]) == (["L-a"], {"L-b": "arrears"})
        assert first.json()["total_principal"] == submit_total(a, ["L-a", "L-贷款"])  # the whole selection's
        last = client.get("/v1/abs-factory/eligible", params={"limit": 2, "after": first.headers["X-Next-After"]},
                          headers=operator)
        assert (last.json()["selected"], last.json()["excluded"]) == (["L-贷款"], {})
        assert "X-Next-After" not in last.headers
        whole = client.get("/v1/abs-factory/eligible", headers=operator)  # no parameters: the first 1,000 loans
        assert whole.json()["selected"] == ["L-a", "L-贷款"] and "X-Next-After" not in whole.headers
        not_a_cursor = client.get("/v1/abs-factory/eligible", params={"after": "_w"}, headers=operator)  # "\xff"...
        assert not_a_cursor.status_code == 422 and not_a_cursor.json()["error"]["code"] == "invalid_cursor"
        for params in ({"limit": 0}, {"limit": 10_001}, {"after": ""}):
            refused = client.get("/v1/abs-factory/eligible", params=params, headers=operator)
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request", params
        snapshot_id = first.headers["X-Next-After"].partition(".")[0]
        beyond = client.get("/v1/abs-factory/eligible", params={"after": f"{snapshot_id}.fn8"},  # "~\x7f"
                            headers=operator)
        assert beyond.status_code == 200 and (beyond.json()["selected"], beyond.json()["excluded"]) == ([], {})


def test_eligible_loans_pages_are_those_of_the_first_pages_selection(two_banks: list[NodeContext],
                                                                      tmp_path: Path) -> None:
    """Each page made a new selection: a book changed between pages gave pages of different selections (a loan
    booked meanwhile listed, one repaid listed with its new verdict, `total_principal` changing from page to page)."""
    a, _ = two_banks
    _without_concentration_limits(a, tmp_path)
    _book_references(a, ["L-a", "L-b", "L-c", "L-d"], 30)
    operator = _operator(a)
    with TestClient(create_app(a)) as client:
        first = client.get("/v1/abs-factory/eligible", params={"limit": 2}, headers=operator)
        assert first.status_code == 200, first.text
        with a.store.session() as session:
            mirrored = mirror_status(session, ledger_address(a), stale_after_s=60).as_of_block
        assert (first.json()["selected"], first.json()["as_of_block"]) == (["L-a", "L-b"], mirrored)
        assert first.json()["total_principal"] == submit_total(a, ["L-a", "L-b", "L-c", "L-d"])
        _book_references(a, ["L-e"], 40)
        set_loan_status(a, "L-c", status="repaid", current_principal=Decimal(0))
        second = client.get("/v1/abs-factory/eligible", params={"limit": 2, "after": first.headers["X-Next-After"]},
                            headers=operator)
        assert second.status_code == 200, second.text
        assert (second.json()["selected"], second.json()["excluded"]) == (["L-c", "L-d"], {})
        assert "X-Next-After" not in second.headers  # L-e was booked after the selection
        same = ("snapshot_id", "as_of", "as_of_block", "total_principal")
        assert [first.json()[k] for k in same] == [second.json()[k] for k in same]
        again = client.get("/v1/abs-factory/eligible", params={"limit": 3}, headers=operator)  # a new listing
        assert again.json()["snapshot_id"] not in (None, first.json()["snapshot_id"])
        assert again.json()["as_of"] > first.json()["as_of"]
        assert (again.json()["selected"], again.json()["excluded"]) == (["L-a", "L-b"], {"L-c": "status_repaid"})
        rest = client.get("/v1/abs-factory/eligible", params={"after": again.headers["X-Next-After"]},
                          headers=operator)
        assert rest.json()["selected"] == ["L-d", "L-e"]
        assert rest.json()["total_principal"] == again.json()["total_principal"] == submit_total(
            a, ["L-a", "L-b", "L-d", "L-e"])
        whole = client.get("/v1/abs-factory/eligible", headers=operator)  # one page: nothing kept for a next one
        assert whole.json()["snapshot_id"] is None and "X-Next-After" not in whole.headers


def test_eligible_loans_page_of_a_listing_no_longer_held_is_refused(two_banks: list[NodeContext],
                                                                    replica: NodeContext, tmp_path: Path) -> None:
    """A later page of a listing whose snapshot was pushed out, of another API process's listing, or with a cursor
    from before snapshots was served from a new selection; each is `cursor_expired` now, and a malformed cursor
    stays `invalid_cursor`."""
    a, _ = two_banks
    _without_concentration_limits(a, tmp_path)
    _book_references(a, ["L-a", "L-b"], 50)
    operator = _operator(a)
    with TestClient(create_app(a)) as client, TestClient(create_app(replica)) as other_replica:
        def page(after: str, api: TestClient = client) -> Any:
            return api.get("/v1/abs-factory/eligible", params={"limit": 1, "after": after}, headers=operator)

        cursor = client.get("/v1/abs-factory/eligible", params={"limit": 1}, headers=operator).headers["X-Next-After"]
        held = page(cursor)
        assert held.status_code == 200 and held.json()["selected"] == ["L-b"]
        gone = [page(cursor, other_replica),
                page(_cursor_of_reference("L-a"))]  # a plain reference: the cursor before snapshots
        for _ in range(SNAPSHOT_CAPACITY):  # newer listings push the least recently read one out
            assert client.get("/v1/abs-factory/eligible", params={"limit": 1}, headers=operator).status_code == 200
        gone.append(page(cursor))
        for answer in gone:
            assert answer.status_code == 410 and answer.json()["error"]["code"] == "cursor_expired", answer.text
        snapshot_id = cursor.partition(".")[0]
        for invalid in ("_w", f"{snapshot_id}._w", f"{snapshot_id[1:]}.{_cursor_of_reference('L-a')}",
                        f"{snapshot_id}!.{_cursor_of_reference('L-a')}"):
            refused = page(invalid)
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_cursor", invalid


def submit_total(node: NodeContext, references: list[str]) -> str:
    with node.store.session() as session:
        minor = sum(session.scalars(select(BookedLoanRow.current_principal_minor)
                                    .where(BookedLoanRow.loan_reference.in_(references))))
    return str(Decimal(minor) / 100)


@pytest.fixture
def replica(two_banks: list[NodeContext]) -> Iterator[NodeContext]:
    """Bank A again, as another process on A's database (a second API replica, or the CLI beside the node)."""
    other = NodeContext(two_banks[0].settings)
    yield other
    other.close()


def test_book_loan_booked_meanwhile_by_another_process_is_refused(two_banks: list[NodeContext],
                                                                    replica: NodeContext) -> None:
    a = two_banks[0]
    approved = submit_application(a, application(3), submitted_by="t")["application_id"]

    with (interrupted_before_writing(a.store, {"applications", "booked_loans"},
                                     lambda: book_loan(replica, approved, loan_reference="L3-replica")),
          pytest.raises(Conflict) as late):
        book_loan(a, approved, loan_reference="L3")

    assert late.value.code == "already_booked"
    with a.store.session() as session:
        assert session.scalars(select(BookedLoanRow.loan_reference)).all() == ["L3-replica"]
        assert session.get_one(LoanApplication, approved).state == "booked"


def test_book_loan_of_an_application_confirmed_as_fraud_is_refused(two_banks: list[NodeContext]) -> None:
    a = two_banks[0]
    approved = submit_application(a, application(5), submitted_by="t")["application_id"]
    confirm_fraud(a, approved, category="application_fraud", confidence=90, confirmed_by="t")

    with pytest.raises(Conflict) as refused:
        book_loan(a, approved, loan_reference="L5")

    assert refused.value.code == "fraud_confirmed"
    with a.store.session() as session:
        assert session.scalars(select(BookedLoanRow)).all() == []


def test_book_loan_of_an_application_whose_fraud_confirmation_was_interrupted_after_reporting_is_refused(
        two_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    a = two_banks[0]
    approved = submit_application(a, application(14), submitted_by="t")["application_id"]
    accept = a.report_intake.accept

    def accept_then_crash(*args: Any, **kwargs: Any) -> Any:
        accept(*args, **kwargs)
        raise KeyboardInterrupt  # the process stops with the report queued, before the state is set

    monkeypatch.setattr(a.report_intake, "accept", accept_then_crash)
    with pytest.raises(KeyboardInterrupt):
        confirm_fraud(a, approved, category="application_fraud", confidence=90, confirmed_by="t")
    monkeypatch.undo()

    # The applicant is reported to the alliance as a fraudster, and the loan was booked all the same (and, its
    # application holding a report, never monitored).
    with pytest.raises(Conflict) as refused:
        book_loan(a, approved, loan_reference="L14")
    assert refused.value.code == "fraud_confirmed"
    with a.store.session() as session:
        assert session.scalars(select(BookedLoanRow)).all() == []
        [report] = session.scalars(select(FraudReport.report_id)).all()
    finished = confirm_fraud(a, approved, category="application_fraud", confidence=90, confirmed_by="t")
    assert finished.report_id == report
    with a.store.session() as session:
        assert session.get_one(LoanApplication, approved).state == "fraud"


def test_book_loan_confirmed_as_fraud_meanwhile_by_another_process_is_refused(two_banks: list[NodeContext],
                                                                               replica: NodeContext) -> None:
    a = two_banks[0]
    approved = submit_application(a, application(6), submitted_by="t")["application_id"]

    with (interrupted_before_writing(a.store, {"applications", "booked_loans"},
                                     lambda: confirm_fraud(replica, approved, category="application_fraud",
                                                           confidence=90, confirmed_by="t")),
          pytest.raises(Conflict) as late):
        book_loan(a, approved, loan_reference="L6")

    assert late.value.code == "fraud_confirmed"
    with a.store.session() as session:
        assert session.scalars(select(BookedLoanRow)).all() == []
        assert session.get_one(LoanApplication, approved).state == "fraud"


def test_book_loan_under_a_reference_another_loan_has_is_refused_and_stays_unbooked(
        two_banks: list[NodeContext]) -> None:
    a = two_banks[0]
    first, second = (submit_application(a, application(n), submitted_by="t")["application_id"] for n in (7, 8))
    book_loan(a, first, loan_reference="L7")

    with pytest.raises(Conflict) as taken:
        book_loan(a, second, loan_reference="L7")

    assert taken.value.code == "loan_reference_taken"
    with a.store.session() as session:
        assert session.scalars(select(BookedLoanRow.application_id)).all() == [first]
        assert session.get_one(LoanApplication, second).state != "booked"
    assert book_loan(a, second, loan_reference="L8").loan_reference == "L8"


def test_applications_assessed_at_the_same_time_count_each_other_for_velocity(
        two_banks: list[NodeContext], replica: NodeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    a = two_banks[0]
    card = bank_card(777)
    submit_application(a, application(20, bank_card=card), submitted_by="t")  # a first applicant on the card
    real_pipeline = credit_platform.run_pipeline
    interruptions = [lambda: submit_application(replica, application(22, bank_card=card), submitted_by="t")]
    later: list[dict[str, Any]] = []

    def another_replica_assesses_meanwhile(node: NodeContext, *args: Any) -> Any:
        result = real_pipeline(node, *args)
        if interruptions:  # a third applicant on the card, assessed by another replica before this one is stored
            later.append(interruptions.pop()())
        return result

    monkeypatch.setattr(credit_platform, "run_pipeline", another_replica_assesses_meanwhile)
    second = submit_application(a, application(21, bank_card=card), submitted_by="t")
    monkeypatch.undo()

    assert "velocity_bank_card" not in second["reasons"]  # two applicants on the card when it was assessed
    assert later[0]["outcome"] == "review" and "velocity_bank_card" in later[0]["reasons"]  # three


def test_an_application_interrupted_before_its_decision_stays_received_and_counts(
        two_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    a = two_banks[0]
    card = bank_card(778)

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt  # the process stops mid-pipeline

    monkeypatch.setattr(credit_platform, "run_pipeline", crash)
    with pytest.raises(KeyboardInterrupt):
        submit_application(a, application(30, bank_card=card), submitted_by="t")
    monkeypatch.undo()

    with a.store.session() as session:
        [row] = session.scalars(select(LoanApplication).where(LoanApplication.state == "received")).all()
        assert (row.outcome, row.trail) == (None, None)
    with pytest.raises(Conflict, match="not approved"):
        book_loan(a, row.application_id)
    ring = [submit_application(a, application(31 + i, bank_card=card), submitted_by="t") for i in range(2)]
    assert "velocity_bank_card" in ring[-1]["reasons"]  # the interrupted applicant is the third


def test_confirm_fraud_keeps_a_booking_made_meanwhile(two_banks: list[NodeContext], replica: NodeContext) -> None:
    a = two_banks[0]
    approved = submit_application(a, application(4), submitted_by="t")["application_id"]

    with interrupted_before_writing(a.store, {"applications"},
                                    lambda: book_loan(replica, approved, loan_reference="L4")):
        confirmation = confirm_fraud(a, approved, category="application_fraud", confidence=90, confirmed_by="t")

    with a.store.session() as session:
        row = session.get_one(LoanApplication, approved)
        assert (row.state, row.fraud_report_id) == ("booked", confirmation.report_id)
    with pytest.raises(Conflict, match="already booked"):
        book_loan(a, approved, loan_reference="L4-again")


def test_refresh_borrower_indicators_with_another_process_adds_each_once(two_banks: list[NodeContext],
                                                                         replica: NodeContext) -> None:
    a = two_banks[0]
    book_loan(a, submit_application(a, application(5), submitted_by="t")["application_id"], loan_reference="L5")
    a.keyring.store_key(2, os.urandom(32), source="generated")  # a rotation: borrowers are hashed under epoch 2

    with interrupted_before_writing(a.store, {"borrower_indicators"}, lambda: refresh_borrower_indicators(replica)):
        assert refresh_borrower_indicators(a) == 0  # the replica added them

    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(BorrowerIndicator)) == 8  # two epochs, four types


def test_raise_alerts_over_a_range_another_process_is_alerting_raises_the_rest(two_banks: list[NodeContext],
                                                                              replica: NodeContext) -> None:
    a, b = two_banks
    for i in (6, 7):
        book_loan(a, submit_application(a, application(i), submitted_by="t")["application_id"], loan_reference=f"L{i}")
    head = a.chain.block_number()
    report_and_mirror(b, a, [("phone", phone(6))])
    first = a.chain.block_number()
    report_and_mirror(b, a, [("phone", phone(7))])

    # Another replica's indexer mirrored the first report and alerts for it, while this one alerts for both (its
    # first write moves the mark of the blocks matched, then the alerts).
    with interrupted_before_writing(a.store, {"sync_state", "risk_alerts"},
                                    lambda: raise_alerts(replica, head, first)):
        raised = raise_alerts(a, head, a.chain.block_number())

    assert [x["loan_reference"] for x in raised] == ["L7"]
    assert sorted(x["loan_reference"] for x in list_alerts(a)) == ["L6", "L7"]


def alert_on_a_booked_loan(two_banks: list[NodeContext], i: int) -> tuple[str, dict[str, Any]]:
    """Bank A books applicant i's loan, bank B reports the applicant's phone; A's alert for it (application id,
    alert)."""
    a, b = two_banks
    booked = submit_application(a, application(i), submitted_by="t")["application_id"]
    book_loan(a, booked, loan_reference=f"L{i}")
    head = a.chain.block_number()
    report_and_mirror(b, a, [("phone", phone(i))])
    [alert] = raise_alerts(a, head, a.chain.block_number())
    return booked, alert


def test_confirming_an_alert_on_an_application_already_confirmed_as_fraud_records_that_report(
        two_banks: list[NodeContext]) -> None:
    a = two_banks[0]
    booked, alert = alert_on_a_booked_loan(two_banks, 12)
    earlier = confirm_fraud(a, booked, category="application_fraud", confidence=95, confirmed_by="analyst-1")

    # It was refused (fraud_already_confirmed) and the alert went back to open, for an analyst to dismiss.
    confirmed = resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-2", category="identity_theft")
    assert (confirmed["state"], confirmed["fraud_report_id"]) == ("confirmed", earlier.report_id)
    with a.store.session() as session:
        assert session.scalars(select(FraudReport.report_id)).all() == [earlier.report_id]
    with pytest.raises(Conflict) as again:
        resolve_alert(a, alert["alert_id"], confirm=False, by="analyst-3")
    assert again.value.code == "alert_resolved"


def test_resolve_alert_resolved_meanwhile_by_another_process_is_refused(two_banks: list[NodeContext],
                                                                        replica: NodeContext) -> None:
    a = two_banks[0]
    booked, alert = alert_on_a_booked_loan(two_banks, 8)

    with (interrupted_before_writing(a.store, {"risk_alerts"},
                                     lambda: resolve_alert(replica, alert["alert_id"], confirm=False, by="analyst-2")),
          pytest.raises(Conflict) as late):
        resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-1")

    assert late.value.code == "alert_resolved"
    [stored] = list_alerts(a)
    assert (stored["state"], stored["resolved_by"], stored["fraud_report_id"]) == ("dismissed", "analyst-2", None)
    with a.store.session() as session:
        assert session.get_one(LoanApplication, booked).fraud_report_id is None  # nothing was reported


def _confirmation_cut_short(node: NodeContext, alert_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """analyst-1 confirms the alert and the process stops after claiming it, before reporting."""
    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(risk_operations, "confirm_fraud", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_alert(node, alert_id, confirm=True, by="analyst-1")
    monkeypatch.undo()


def test_an_alert_confirmation_interrupted_before_its_report_is_finished_by_confirming_again(
        two_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    a = two_banks[0]
    booked, alert = alert_on_a_booked_loan(two_banks, 9)
    _confirmation_cut_short(a, alert["alert_id"], monkeypatch)

    [stored] = list_alerts(a)
    assert stored["state"] == "confirming" and stored["fraud_report_id"]  # the report it is making
    with pytest.raises(Conflict, match="being confirmed"):
        resolve_alert(a, alert["alert_id"], confirm=False, by="analyst-2")
    with pytest.raises(Conflict, match="being confirmed"):  # another report than the one being made
        resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-2", confidence=50)
    finished = resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-1")
    with pytest.raises(Conflict, match="already confirmed"):  # finished: nothing is reported twice
        resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-1")

    assert finished["state"] == "confirmed" and finished["fraud_report_id"]
    with a.store.session() as session:
        assert session.get_one(LoanApplication, booked).fraud_report_id == finished["fraud_report_id"]


def test_an_interrupted_alert_confirmation_is_finished_after_the_application_was_confirmed_as_fraud_meanwhile(
        two_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    a = two_banks[0]
    booked, alert = alert_on_a_booked_loan(two_banks, 13)
    _confirmation_cut_short(a, alert["alert_id"], monkeypatch)
    earlier = confirm_fraud(a, booked, category="application_fraud", confidence=95, confirmed_by="analyst-2")

    # Confirming again was refused as "being confirmed", and so was a dismissal: the alert stayed confirming for good.
    finished = resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-1")
    assert (finished["state"], finished["fraud_report_id"]) == ("confirmed", earlier.report_id)
    with a.store.session() as session:
        assert session.scalars(select(FraudReport.report_id)).all() == [earlier.report_id]
    with pytest.raises(Conflict, match="already confirmed"):
        resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-1")


@pytest.mark.parametrize("other", [{"category": "identity_theft", "confidence": 70}, {"confidence": 90}],
                         ids=["another_report", "the_same_report"])
def test_resolve_alert_confirmed_meanwhile_by_another_process_reports_the_borrower_once(
        two_banks: list[NodeContext], replica: NodeContext, other: dict[str, Any]) -> None:
    a = two_banks[0]
    booked, alert = alert_on_a_booked_loan(two_banks, 10)

    # The other confirmation comes while this one is reporting: it was let through as if finishing a crashed one,
    # and reported the borrower a second time under its own category.
    def confirm_too() -> None:
        try:
            resolve_alert(replica, alert["alert_id"], confirm=True, by="analyst-2", **other)
        except Conflict as refused:
            assert other.get("category") and refused.code == "alert_resolved"

    with interrupted_before_writing(a.store, {"fraud_reports"}, confirm_too):
        confirmed = resolve_alert(a, alert["alert_id"], confirm=True, by="analyst-1", confidence=90)

    with a.store.session() as session:
        reports = session.scalars(select(FraudReport.report_id)).all()
        assert session.get_one(LoanApplication, booked).fraud_report_id == confirmed["fraud_report_id"]
    assert reports == [confirmed["fraud_report_id"]] and confirmed["state"] == "confirmed"


def test_confirm_fraud_confirmed_meanwhile_otherwise_by_another_process_is_refused(two_banks: list[NodeContext],
                                                                                   replica: NodeContext) -> None:
    a = two_banks[0]
    booked = submit_application(a, application(11), submitted_by="t")["application_id"]

    # The other analyst's confirmation is made while this one is under way (both read no confirmation).
    with (interrupted_before_writing(a.store, {"applications"}, lambda: confirm_fraud(
            replica, booked, category="application_fraud", confidence=95, confirmed_by="analyst-2")),
          pytest.raises(Conflict) as late):
        confirm_fraud(a, booked, category="identity_theft", confidence=80, confirmed_by="analyst-1")

    assert late.value.code == "fraud_already_confirmed"
    with a.store.session() as session:
        [report] = session.scalars(select(FraudReport)).all()
        assert session.get_one(LoanApplication, booked).fraud_report_id == report.report_id


def _selection_as_before(node: NodeContext, pool_name: str | None = None) -> tuple[list[str], dict[str, str], int]:
    """`select_loans` as it was written before it read plain rows (ORM entities of every loan and borrower indicator,
    every borrower indicator looked up in the mirror): the oracle of its verdicts. The loan-by-loan reasons other than
    the blacklist did not change and are shared (`_book_facts`, `_exclusion`)."""
    from collections import defaultdict

    from node.ledger.checks import state_policy
    from node.ledger.indicator_state import derive_state
    from node.modules.abs_factory import PoolSelection, _book_facts, _exclusion, _within_concentration
    from node.modules.policy import policy_for

    rules = policy_for(node).abs
    refresh_borrower_indicators(node)
    selection = PoolSelection()
    with node.store.session() as session:
        loans = list(session.scalars(select(BookedLoanRow).order_by(BookedLoanRow.loan_reference)))
        book = _book_facts(session, node.settings.bank_code, pool_name)
        indicators: dict[int, list[bytes]] = defaultdict(list)
        for row in session.scalars(select(BorrowerIndicator)):
            indicators[row.loan_ref].append(bytes(row.indicator))
        facts = facts_for(session, [i for values in indicators.values() for i in values])
    now, policy = int(time.time()), state_policy(node)

    def blacklisted(loan: BookedLoanRow) -> bool:
        return any(derive_state(i, *facts[i], at=now, policy=policy).active for i in indicators[loan.id] if i in facts)

    eligible = []
    for loan in loans:  # the verdicts other than the blacklist's are one function, _exclusion
        if reason := _exclusion(loan, rules, book, blacklisted=blacklisted):
            selection.excluded[loan.loan_reference] = reason
        else:
            eligible.append(loan)
    chosen = _within_concentration(eligible, float(rules["max_borrower_share"]), float(rules["max_region_share"]),
                                   selection.excluded)
    return ([x.loan_reference for x in chosen], selection.excluded,
            sum(x.current_principal_minor for x in chosen))


def _verdicts(node: NodeContext, pool_name: str | None = None) -> tuple[list[str], dict[str, str], int]:
    selection, chosen = select_loans(node, pool_name)
    assert [x.loan_reference for x in chosen] == selection.selected
    return selection.selected, selection.excluded, selection.total_principal_minor


def _react(node: NodeContext, kind: str, indicator: bytes, member_id: int, batch_id: int | None, at: int) -> None:
    """A mirrored reaction (dispute, endorsement, confirmation, revocation) of `indicator`, after every other."""
    from node.store.ledger_tables import MirrorReaction

    with node.store.transaction() as session:
        block = (session.scalar(select(func.max(MirrorReaction.block_number))) or 0) + 1
        session.add(MirrorReaction(kind=kind, indicator=indicator, member_id=member_id, batch_id=batch_id, value=1,
                                   block_number=block, log_index=0, tx_hash=f"0x{block:064x}", at=at))


def test_select_loans_gives_the_verdicts_the_orm_selection_gave_on_a_random_book(
        two_banks: list[NodeContext], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.abs_selection import BORROWER_SHARE_LOANS, POLICY, fill_book
    from node.modules import abs_factory
    from node.modules.abs_factory import build_pool
    from node.store.ledger_tables import MirrorRecord

    a, count = two_banks[0], 600
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(borrower_share=BORROWER_SHARE_LOANS / count))
    a.settings.credit_policy_file = policy
    book = fill_book(a, count, seed=3)
    assert book["reported_borrowers"] >= 2 and book["dpd30"] and book["erased"]
    draw, now = random.Random(3), int(time.time())
    with a.store.session() as session:
        references = list(session.scalars(select(BookedLoanRow.loan_reference)))
        current = list(session.scalars(select(BookedLoanRow.application_id).where(BookedLoanRow.status == "current")))
        reported = [(bytes(r.indicator), r.batch_id, r.reporter_member_id) for r in session.scalars(
            select(MirrorRecord).where(MirrorRecord.indicator.in_(select(BorrowerIndicator.indicator))))]
        borrowers = [bytes(i) for i in session.scalars(select(BorrowerIndicator.indicator))]
    assert len(reported) >= 2
    confirm_fraud(a, draw.choice(current), category="first_party_fraud", confidence=90, confirmed_by="analyst")

    looked_up: list[int] = []

    def counted_facts_for(session: Any, indicators: list[bytes], **options: Any) -> Any:
        looked_up.append(len(indicators))
        return facts_for(session, indicators, **options)

    monkeypatch.setattr(abs_factory, "facts_for", counted_facts_for)
    verdicts = _verdicts(a)
    # Only the borrower indicators the mirror holds are looked up in it: every one of the book's was, 8 s of a
    # selection of 100,000 loans (bench/abs_selection.py).
    assert looked_up == [len({i for i, _, _ in reported})]
    assert verdicts == _selection_as_before(a)
    assert {"blacklisted_borrower", "concentration_region", "concentration_borrower", "arrears", "fraud_confirmed",
            "status_repaid"} <= set(verdicts[1].values()) and verdicts[0]
    for _ in range(3):
        for reference in draw.sample(references, 20):  # servicing changes
            status = draw.choice(["current", "current", "dpd30", "repaid"])
            set_loan_status(a, reference, status=status, arrears=Decimal(draw.choice([0, 0, 50])))
        indicator, batch, reporter = draw.choice(reported)  # the ledger's reactions: disputes, answers, endorsements
        _react(a, draw.choice(["disputed", "endorsed"]), indicator, 9, None, now - draw.choice([86_400, 40 * 86_400]))
        _react(a, draw.choice(["confirmed", "revoked"]), indicator, reporter, batch, now)
        _react(a, "endorsed", draw.choice(borrowers), 9, None, now)  # a reaction alone, no record
        assert _verdicts(a) == _selection_as_before(a)

    pool = build_pool(a, "p1", anchor=True)
    assert pool.anchored is not None
    assert _verdicts(a) == _selection_as_before(a) and _verdicts(a, "p1") == _selection_as_before(a, "p1")
    assert "in_another_pool" in _verdicts(a)[1].values()
