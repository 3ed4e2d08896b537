"""A crashing, hanging or misbehaving extension yields "review" naming the module, never a 500 (real chain)."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.extensions import Application, Signal, hookimpl
from node.extensions.manager import ExtensionManager, use_extensions
from node.modules.credit_platform import submit_application
from node.runtime import NodeContext
from tests.modules.workflow import application


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
    from node.extensions import BookedLoan, Decision, FraudConfirmation
    from node.modules.credit_platform import book_loan, confirm_fraud

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
