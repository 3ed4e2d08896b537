"""Retention of applicants: erased, with their keyed hashes, once no action needs them for
`application_retention_days`; every action that needed one is refused with `applicant_erased` afterwards."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.errors import Conflict
from node.ledger.retention import prune
from node.modules import application_retention
from node.modules.abs_factory import select_loans
from node.modules.credit_platform import (
    book_loan,
    confirm_fraud,
    read_application,
    refresh_borrower_indicators,
    set_loan_status,
    submit_application,
)
from node.modules.risk_operations import resolve_alert
from node.runtime import NodeContext
from node.store.application_tables import (
    ApplicationFingerprint,
    BookedLoanRow,
    BorrowerIndicator,
    LoanApplication,
    RiskAlert,
)
from node.store.ledger_tables import FraudReport
from node.workers import node_workers
from tests.cli.conftest import run_cli
from tests.conftest import TEST_PASSPHRASE, interrupted_before_writing
from tests.modules.workflow import application, lone_bank

DAY = 86_400
INVALID_ID = "110105198503120000"  # fails its check digit: declined as identifier_invalid


@pytest.fixture
def bank(rpc_url: str, tmp_path: Path, store_url: str) -> Iterator[NodeContext]:
    """Bank A alone in a consortium, on the parametrised store, holding the epoch-1 key, its mirror synced."""
    node = lone_bank(rpc_url, tmp_path, store_url)
    yield node
    node.close()


def _submit(node: NodeContext, i: int, **overrides: str) -> str:
    return str(submit_application(node, application(i, **overrides), submitted_by="t")["application_id"])


def _held(node: NodeContext) -> dict[str, bool]:
    """Per application, whether it still holds its applicant (sealed identifiers and fingerprint)."""
    with node.store.session() as session:
        rows = session.execute(select(LoanApplication.application_id, LoanApplication.sealed_applicant,
                                      LoanApplication.applicant_fingerprint)).all()
    for _, sealed, fingerprint in rows:
        assert (sealed is None) == (fingerprint is None)
    return {application_id: sealed is not None for application_id, sealed, _ in rows}


def _count(node: NodeContext, table: type, *where: object) -> int:
    with node.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _alert(node: NodeContext, loan_reference: str, state: str) -> int:
    with node.store.transaction() as session:
        loan = session.scalars(select(BookedLoanRow).where(BookedLoanRow.loan_reference == loan_reference)).one()
        alert = RiskAlert(loan_ref=loan.id, application_id=loan.application_id, identifier_type="phone",
                          indicator=os.urandom(32), batch_id=1, block_number=1, reporter_member_id=2,
                          categories='["money_mule"]', confidence=90, state=state, webhook_state="none")
        session.add(alert)
        session.flush()
        return alert.id


@pytest.fixture
def closed_after() -> Iterator[list[NodeContext]]:
    opened: list[NodeContext] = []
    yield opened
    for node in opened:
        node.close()


def _with_policy(node: NodeContext, policy: Path, opened: list[NodeContext]) -> NodeContext:
    """`node` again with `policy` and a retention period of 30 days (a node reads its policy once)."""
    again = NodeContext(node.settings.model_copy(update={"credit_policy_file": policy,
                                                         "application_retention_days": 30}))
    opened.append(again)
    return again


@pytest.fixture
def applications(bank: NodeContext) -> dict[str, str]:
    """One application of each kind retention tells apart, by name: their ids."""
    ids = {"declined": _submit(bank, 1, cn_resident_id=INVALID_ID), "approved": _submit(bank, 2),
           "current": _submit(bank, 3), "repaid": _submit(bank, 4), "repaid_alerted": _submit(bank, 5),
           "repaid_again": _submit(bank, 6), "claimed": _submit(bank, 7)}
    for name in ("current", "repaid", "repaid_alerted", "repaid_again"):
        book_loan(bank, ids[name], loan_reference=name)
    for name in ("repaid", "repaid_alerted", "repaid_again"):
        set_loan_status(bank, name, status="repaid")
    set_loan_status(bank, "repaid_again", status="current")  # a correction: the loan runs on
    _alert(bank, "repaid_alerted", "open")
    with bank.store.transaction() as session:  # a fraud confirmation stopped before its report was made
        session.get_one(LoanApplication, ids["claimed"]).fraud_report_id = "ab" * 32
    return ids


def test_prune_erases_applicants_no_longer_needed_past_the_period_only(bank: NodeContext,
                                                                      applications: dict[str, str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(application_retention, "APPLICATIONS_PER_TRANSACTION", 1)  # a page per application
    monkeypatch.setattr(application_retention, "FINGERPRINTS_PER_TRANSACTION", 2)
    bank.settings.application_retention_days = 30
    prints = _count(bank, ApplicationFingerprint)
    repaid_loan = select(BookedLoanRow.id).where(BookedLoanRow.loan_reference == "repaid").scalar_subquery()
    assert _count(bank, BorrowerIndicator, BorrowerIndicator.loan_ref == repaid_loan) > 0

    early = prune(bank, now=time.time() + 29 * DAY)
    assert (early.applicants_erased, early.fingerprints_deleted, early.application_retention_days) == (0, 0, 30)
    assert set(_held(bank).values()) == {True}

    result = prune(bank, now=time.time() + 31 * DAY)

    erased = {applications[name] for name in ("declined", "approved", "repaid")}
    assert result.applicants_erased == 3
    assert _held(bank) == {app: app not in erased for app in applications.values()}
    # Their keyed hashes went with them: velocity fingerprints (past the 168 h window), the loan's fingerprint and
    # the borrower's alliance indicators; those of the others stay.
    assert result.fingerprints_deleted == prints - _count(bank, ApplicationFingerprint) > 0
    assert _count(bank, ApplicationFingerprint, ApplicationFingerprint.application_id.in_(erased)) == 0
    assert _count(bank, BorrowerIndicator, BorrowerIndicator.loan_ref == repaid_loan) == 0
    with bank.store.session() as session:
        fingerprints = {ref: fingerprint for ref, fingerprint in session.execute(
            select(BookedLoanRow.loan_reference, BookedLoanRow.applicant_fingerprint))}
    assert {ref for ref, fingerprint in fingerprints.items() if fingerprint is None} == {"repaid"}
    # The decision stays readable.
    with bank.store.session() as session:
        assert read_application(session, applications["declined"])["reasons"][0] == "identifier_invalid"

    again = prune(bank, now=time.time() + 31 * DAY)
    assert (again.applicants_erased, again.fingerprints_deleted) == (0, 0)  # idempotent


def test_prune_keeps_applicants_without_a_retention_setting(bank: NodeContext, applications: dict[str, str]) -> None:
    assert bank.settings.application_retention_days is None
    result = prune(bank, now=time.time() + 10_000 * DAY)
    assert (result.applicants_erased, result.fingerprints_deleted, result.application_retention_days) == (0, 0, None)
    assert set(_held(bank).values()) == {True}


def test_prune_keeps_repaid_borrowers_while_the_abs_policy_takes_repaid_loans(
        bank: NodeContext, tmp_path: Path, applications: dict[str, str], closed_after: list[NodeContext]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[abs]\neligible_statuses = ["current", "repaid"]\n')
    node = _with_policy(bank, policy, closed_after)
    assert prune(node, now=time.time() + 31 * DAY).applicants_erased == 2  # declined and approved: not the loan
    assert _held(bank)[applications["repaid"]]


def test_prune_keeps_velocity_fingerprints_within_the_velocity_window(
        bank: NodeContext, tmp_path: Path, applications: dict[str, str], closed_after: list[NodeContext]) -> None:
    """A retention period shorter than the velocity window: the applicant goes, its fingerprints still count in
    other applicants' velocity until they leave the window."""
    policy = tmp_path / "policy.toml"
    policy.write_text("[velocity]\nwindow_hours = 2400\n")  # 100 days
    node = _with_policy(bank, policy, closed_after)
    prints = _count(bank, ApplicationFingerprint)
    assert prune(node, now=time.time() + 31 * DAY).fingerprints_deleted == 0
    assert _count(bank, ApplicationFingerprint) == prints
    assert prune(node, now=time.time() + 101 * DAY).fingerprints_deleted > 0


def test_actions_needing_an_erased_applicant_are_refused(bank: NodeContext, applications: dict[str, str]) -> None:
    dismissed = _alert(bank, "repaid", "dismissed")
    bank.settings.application_retention_days = 30
    assert prune(bank, now=time.time() + 31 * DAY).applicants_erased == 3

    with pytest.raises(Conflict) as booking:
        book_loan(bank, applications["approved"], loan_reference="late")
    with pytest.raises(Conflict) as fraud:
        confirm_fraud(bank, applications["declined"], category="application_fraud", confidence=90, confirmed_by="t")
    with pytest.raises(Conflict) as alert:
        resolve_alert(bank, dismissed, confirm=True, by="t")
    assert booking.value.code == fraud.value.code == alert.value.code == "applicant_erased"
    assert "application_retention_days" in str(booking.value)
    with bank.store.session() as session:  # nothing was claimed or reported
        assert session.get_one(LoanApplication, applications["approved"]).state == "decided"
        assert session.get_one(LoanApplication, applications["declined"]).fraud_report_id is None
        assert session.scalar(select(func.count()).select_from(FraudReport)) == 0
    # Readers of every booked borrower pass over the erased one: monitoring after a key rotation, pool selection
    # (the repaid loan corrected back to current cannot go into a tape).
    bank.keyring.store_key(2, os.urandom(32), source="generated")
    assert refresh_borrower_indicators(bank) > 0
    set_loan_status(bank, "repaid", status="current")
    assert select_loans(bank)[0].excluded["repaid"] == "applicant_erased"


def test_api_refuses_booking_and_fraud_of_an_erased_applicant(bank: NodeContext,
                                                               applications: dict[str, str]) -> None:
    bank.settings.application_retention_days = 30
    prune(bank, now=time.time() + 31 * DAY)
    with bank.store.transaction() as session:
        tokens = {role: create_api_key(session, role, "test").token for role in (Role.workflow, Role.analyst)}
    with TestClient(create_app(bank)) as client:
        booked = client.post(f"/v1/applications/{applications['approved']}/book", json={},
                             headers={"X-API-Key": tokens[Role.workflow]})
        reported = client.post(f"/v1/applications/{applications['declined']}/fraud",
                               json={"category": "application_fraud", "confidence": 90},
                               headers={"X-API-Key": tokens[Role.analyst]})
        shown = client.get(f"/v1/applications/{applications['declined']}",
                           headers={"X-API-Key": tokens[Role.analyst]})
    assert (booked.status_code, booked.json()["error"]["code"]) == (409, "applicant_erased")
    assert (reported.status_code, reported.json()["error"]["code"]) == (409, "applicant_erased")
    assert shown.status_code == 200 and shown.json()["outcome"] == "decline"


def test_book_loan_of_an_application_erased_meanwhile_is_refused(bank: NodeContext, applications: dict[str, str],
                                                                 store_url: str) -> None:
    """Another process's retention pass erases the applicant between the booking's read and its claim: the loan
    is not booked (it would have no identifiers for its tape nor for monitoring after a key rotation)."""
    bank.settings.application_retention_days = 30
    retention = NodeContext(bank.settings)
    try:
        with (interrupted_before_writing(bank.store, {"applications"},
                                         lambda: prune(retention, now=time.time() + 31 * DAY)),
              pytest.raises(Conflict) as late):
            book_loan(bank, applications["approved"], loan_reference="raced")
    finally:
        retention.close()
    assert late.value.code == "applicant_erased"
    assert _count(bank, BookedLoanRow, BookedLoanRow.loan_reference == "raced") == 0


def test_the_node_erases_applicants_in_the_background(bank: NodeContext, applications: dict[str, str]) -> None:
    bank.settings.application_retention_days = 30
    with bank.store.transaction() as session:
        declined = session.get_one(LoanApplication, applications["declined"])
        declined.received_at = declined.decided_at = datetime.now(UTC) - timedelta(days=31)
    [loop] = [loop for loop in node_workers(bank).loops if loop.name == "retention"]

    loop.run_step()

    assert loop.status.last_error is None
    assert _held(bank) == {app: name != "declined" for name, app in applications.items()}


def test_cli_refuses_confirming_an_alert_of_an_erased_borrower_in_one_line(
        bank: NodeContext, applications: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    dismissed = _alert(bank, "repaid", "dismissed")
    bank.settings.application_retention_days = 30
    assert prune(bank, now=time.time() + 31 * DAY).applicants_erased == 3
    monkeypatch.setenv("ALLIANCE_DATA_DIR", str(bank.settings.data_dir))
    monkeypatch.setenv("ALLIANCE_DEPLOYMENT_FILE", str(bank.settings.effective_deployment_file))
    monkeypatch.setenv("ALLIANCE_KEY_PASSPHRASE", TEST_PASSPHRASE)

    code, _, err = run_cli(capsys, "alerts", "confirm", str(dismissed))

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "was erased at the end of its retention period" in lines[0]
