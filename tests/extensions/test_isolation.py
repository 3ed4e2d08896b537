"""A crashing, hanging or misbehaving extension yields "review" naming the module, never a 500 (real chain)."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.extensions import Application, Decision, Reason, RiskScore, Signal, hookimpl
from node.extensions.manager import ExtensionManager, use_extensions
from node.modules.credit_platform import book_loan, submit_application
from node.runtime import NodeContext
from node.store.application_tables import LoanApplication
from tests.modules.workflow import application, phone, resident_id


class CrashingScorer:
    @hookimpl
    def alliance_identity_signals(self, application: Application) -> list[Signal]:
        raise KeyError("13900000077")


class BadSignals:
    @hookimpl
    def alliance_risk_signals(self) -> list[Any]:
        return ["not a signal"]


def _with(node: NodeContext, name: str, plugin: Any, **options: Any) -> None:
    use_extensions(node, ExtensionManager(extra_plugins={name: plugin}, **options))


def test_submit_application_with_crashing_plugin_yields_review(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    _with(a, "crashing_scorer", CrashingScorer())
    with a.store.transaction() as session:
        token = create_api_key(session, Role.workflow, "test").token
    with TestClient(create_app(a)) as client:
        response = client.post("/v1/applications", json=application(1).model_dump(mode="json"),
                               headers={"X-API-Key": token})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["outcome"] == "review" and body["reasons"][0] == "extension_failed:crashing_scorer"
    assert body["trail"]["failures"] == [{"module": "crashing_scorer", "hook": "alliance_identity_signals",
                                          "error": "KeyError"}]
    assert "approve" in body["trail"]["decision"]["detail"]  # what the rest of the pipeline concluded
    assert "13900000077" not in response.text


def test_submit_application_with_hanging_plugin_times_out_to_review(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    release = threading.Event()

    class Hangs:
        @hookimpl
        def alliance_application_received(self) -> None:
            release.wait(30)

    _with(a, "hangs", Hangs(), timeout_s=0.3)
    try:
        view = submit_application(a, application(2), submitted_by="test")
    finally:
        release.set()
    assert view["outcome"] == "review" and view["reasons"][0] == "extension_failed:hangs"
    assert view["trail"]["failures"][0]["error"] == "timeout"


def test_submit_application_with_malformed_answer_yields_review(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    _with(a, "bad_signals", BadSignals())
    view = submit_application(a, application(3), submitted_by="test")
    assert view["outcome"] == "review" and view["reasons"][0] == "extension_failed:bad_signals"


def test_lifecycle_hooks_reach_extensions(keyed_banks: list[NodeContext]) -> None:
    from node.extensions import BookedLoan, FraudConfirmation
    from node.modules.credit_platform import confirm_fraud

    seen: list[tuple[str, str]] = []

    class Recorder:
        @hookimpl
        def alliance_application_decided(self, application: Application, decision: Decision) -> None:
            seen.append(("decided", decision.outcome))

        @hookimpl
        def alliance_loan_booked(self, loan: BookedLoan) -> None:
            seen.append(("booked", loan.loan_reference))

        @hookimpl
        def alliance_fraud_confirmed(self, confirmation: FraudConfirmation) -> None:
            seen.append(("fraud", confirmation.category))

    a = keyed_banks[0]
    _with(a, "recorder", Recorder())
    view = submit_application(a, application(5), submitted_by="test")
    book_loan(a, view["application_id"], loan_reference="L-5")
    confirm_fraud(a, view["application_id"], category="first_party_fraud", confidence=70, confirmed_by="test")
    assert seen == [("decided", "approve"), ("booked", "L-5"), ("fraud", "first_party_fraud")]


class AnswersSignal:
    def __init__(self, signal: Any) -> None:
        self.signal = signal

    @hookimpl
    def alliance_risk_signals(self) -> list[Any]:
        return [self.signal]


class AnswersScore:
    def __init__(self, score: Any) -> None:
        self.score = score

    @hookimpl(tryfirst=True)
    def alliance_risk_score(self) -> Any:
        return self.score


class AnswersDecision:
    def __init__(self, decision: Any) -> None:
        self.decision = decision

    @hookimpl(tryfirst=True)
    def alliance_credit_decision(self) -> Any:
        return self.decision


def _approve(**fields: Any) -> Decision:
    return Decision(**{"outcome": "approve", "reasons": ("bank_rule",), "module": "bank",  # type: ignore[arg-type]
                       "limit": Decimal("1000"), "annual_rate_percent": Decimal("4.35"), **fields})


@pytest.mark.parametrize(("plugin", "error"), [
    # Each was stored as given or failed only when stored or booked: an HTTP 500 with the application undecided,
    # an outcome no rule knows ("maybe"), reasons split into letters, a NaN limit that made booking a 500.
    (AnswersSignal(Signal("seen", "bank", data={"at": datetime(2026, 1, 1)})), "bad_answer:signal_data_not_json"),
    (AnswersSignal(Signal("seen", "bank", data={"ratio": float("nan")})), "bad_answer:signal_data_not_json"),
    (AnswersSignal(Signal(7, "bank")), "bad_answer:signal_field_type"),  # type: ignore[arg-type]
    (AnswersScore(RiskScore("high", (), "bank")), "bad_answer:score_not_an_integer_in_range"),  # type: ignore[arg-type]
    (AnswersScore(RiskScore(2**40, (), "bank")), "bad_answer:score_not_an_integer_in_range"),
    (AnswersScore(RiskScore(700, ("bank_rule",), "bank")), "bad_answer:score_reasons"),  # type: ignore[arg-type]
    (AnswersScore(RiskScore(700, (Reason("r", 1.5),), "bank")), "bad_answer:score_reasons"),  # type: ignore[arg-type]
    (AnswersDecision(_approve(outcome="maybe")), "bad_answer:unknown_outcome"),
    (AnswersDecision(_approve(reasons="bank_rule")), "bad_answer:decision_field_type"),
    (AnswersDecision(_approve(limit=Decimal("NaN"))), "bad_answer:limit_out_of_range"),
    (AnswersDecision(_approve(limit=Decimal("-1"))), "bad_answer:limit_out_of_range"),
    (AnswersDecision(_approve(limit=Decimal("1e13"))), "bad_answer:limit_out_of_range"),
    (AnswersDecision(_approve(limit=Decimal("1000.005"))), "bad_answer:limit_out_of_range"),
    (AnswersDecision(_approve(limit=1000)), "bad_answer:limit_out_of_range"),
    (AnswersDecision(_approve(annual_rate_percent=Decimal("4.35000000000001"))),
     "bad_answer:annual_rate_out_of_range"),
    (AnswersDecision(_approve(annual_rate_percent=Decimal("1e6"))), "bad_answer:annual_rate_out_of_range"),
    # Booked at the requested amount and 0 %: an interest-free loan nobody decided on.
    (AnswersDecision(_approve(annual_rate_percent=None)), "bad_answer:approve_without_terms"),
    (AnswersDecision(_approve(limit=None)), "bad_answer:approve_without_terms"),
    # The applicant's identifiers echoed into an answer were stored in clear in the trail.
    (AnswersSignal(Signal("seen", "bank", data={"phone": phone(1)})), "bad_answer:holds_personal_data"),
    (AnswersSignal(Signal("seen", "bank", detail=f"id {resident_id(1)} seen")), "bad_answer:holds_personal_data"),
    (AnswersScore(RiskScore(700, (Reason("r", 1, detail=f"+86{phone(1)}"),), "bank")),
     "bad_answer:holds_personal_data"),
    (AnswersDecision(_approve(detail=f"applicant {resident_id(1)}")), "bad_answer:holds_personal_data"),
], ids=lambda p: type(p).__name__ if not isinstance(p, str) else p.removeprefix("bad_answer:"))
def test_submit_application_with_malformed_field_in_answer_yields_review_and_stores_it(
        keyed_banks: list[NodeContext], plugin: Any, error: str) -> None:
    a = keyed_banks[0]
    _with(a, "bank", plugin)
    with a.store.transaction() as session:
        token = create_api_key(session, Role.workflow, "test").token
    with TestClient(create_app(a), raise_server_exceptions=False) as client:
        response = client.post("/v1/applications", json=application(1).model_dump(mode="json"),
                               headers={"X-API-Key": token})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["state"] == "decided" and body["outcome"] == "review"
        assert body["reasons"][0] == "extension_failed:bank"
        assert [f["error"] for f in body["trail"]["failures"]] == [error]
        # The built-ins answered in its place: the application was scored and decided by them.
        assert body["score"] is not None and "approve (by credit_decision)" in body["trail"]["decision"]["detail"]
        booked = client.post(f"/v1/applications/{body['application_id']}/book", json={},
                             headers={"X-API-Key": token})
    assert booked.status_code == 409 and booked.json()["error"]["code"] == "not_approved"
    with a.store.session() as session:
        assert session.scalars(select(LoanApplication.state)).all() == ["decided"]


def test_a_refused_signal_list_is_the_failure_of_its_hook_in_its_stage(keyed_banks: list[NodeContext]) -> None:
    """It was recorded under a hook named "signals", which does not exist, and its stage listed the module among
    those that answered, with no failure: the trail said the module's signals had been taken."""
    a = keyed_banks[0]
    _with(a, "bank", AnswersSignal(Signal("seen", "bank", data={"phone": phone(1)})))
    view = submit_application(a, application(1), submitted_by="test")
    failure = {"module": "bank", "hook": "alliance_risk_signals", "error": "bad_answer:holds_personal_data"}
    assert view["trail"]["failures"] == [failure]
    risk = next(stage for stage in view["trail"]["stages"] if stage["stage"] == "risk")
    assert risk["answered"] == [] and risk["failures"] == [failure]
    assert phone(1) not in json.dumps(view)


@pytest.mark.parametrize(("limit", "refused"), [("1000000", False), ("2100000", False), ("100000", True)])
def test_a_short_numeric_identifier_is_found_as_a_whole_number_only(keyed_banks: list[NodeContext], limit: str,
                                                                    refused: bool) -> None:
    """The check on answers looked for the applicant's identifiers anywhere in their text: a numeric device id of
    six digits was found inside a limit of 1,000,000, and the bank's approval was refused as holding personal data
    (the application went to review). A number equal to the identifier is still refused."""
    a = keyed_banks[0]
    _with(a, "bank", AnswersDecision(_approve(limit=Decimal(limit))))
    view = submit_application(a, application(1, device_id="100000"), submitted_by="test")
    failures = [f["error"] for f in view["trail"]["failures"]]
    assert failures == (["bad_answer:holds_personal_data"] if refused else []), failures
    assert (view["outcome"], view["reasons"][0]) == (("review", "extension_failed:bank") if refused else
                                                      ("approve", "bank_rule"))


def test_submit_application_with_well_formed_bank_decision_books_at_its_limit(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    _with(a, "bank", AnswersDecision(_approve(limit=Decimal("1234.500"), annual_rate_percent=Decimal("4.3525"))))
    view = submit_application(a, application(1), submitted_by="test")
    assert (view["outcome"], view["reasons"], view["trail"]["failures"]) == ("approve", ["bank_rule"], [])
    loan = book_loan(a, view["application_id"])
    assert (loan.principal_minor, loan.annual_rate_micros) == (123450, 43525)


def test_submit_application_with_an_interest_free_bank_decision_shows_its_rate(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    _with(a, "bank", AnswersDecision(_approve(annual_rate_percent=Decimal("0"))))
    view = submit_application(a, application(1), submitted_by="test")
    # The rate was stored as none (null in the answer, "at None %" in `alliance apply`) while the trail said 0.
    assert (view["outcome"], view["annual_rate_percent"], view["trail"]["decision"]["annual_rate_percent"]) == (
        "approve", "0", "0")
    assert book_loan(a, view["application_id"]).annual_rate_micros == 0
