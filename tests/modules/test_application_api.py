"""Refusals of the applications API: schema errors, unknown ids, booking rules, roles (error envelope, no 500)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select, update

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.modules.credit_platform import book_loan, submit_application
from node.runtime import NodeContext
from node.store.application_tables import BookedLoanRow, LoanApplication, RiskAlert
from node.store.asset_tables import AssetPool
from tests.modules.workflow import application, lone_bank, report_and_mirror, resident_id


def test_applications_api_refusals(keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    report_and_mirror(b, a, [("cn_resident_id", resident_id(2))])
    with a.store.transaction() as session:
        tokens = {role: create_api_key(session, role, "test").token for role in Role}
    with TestClient(create_app(a)) as client:
        def post(path: str, body: object, role: Role = Role.workflow) -> Response:
            return client.post(path, json=body, headers={"X-API-Key": tokens[role]})

        bad = post("/v1/applications", {**application(1).model_dump(mode="json"), "channel": "Mobile App!"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        unknown = client.get("/v1/applications/app_nope", headers={"X-API-Key": tokens[Role.analyst]})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "application_not_found"

        approved = post("/v1/applications", application(1, amount="80000").model_dump(mode="json")).json()
        declined = post("/v1/applications", application(2).model_dump(mode="json")).json()
        assert approved["outcome"] == "approve" and approved["limit"] == "80000"

        over = post(f"/v1/applications/{approved['application_id']}/book", {"amount": "90000"})
        assert over.status_code == 422 and over.json()["error"]["code"] == "amount_over_limit"
        refused = post(f"/v1/applications/{declined['application_id']}/book", {})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_approved"
        booked = post(f"/v1/applications/{approved['application_id']}/book", {"loan_reference": "L-1"})
        assert booked.status_code == 201 and booked.json()["principal"] == "80000"
        twice = post(f"/v1/applications/{approved['application_id']}/book", {})
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_booked"
        status = post("/v1/loans/L-1/status", {"status": "dpd30", "arrears": "100.00"})
        assert status.status_code == 200 and status.json()["status"] == "dpd30"
        assert post("/v1/loans/L-1/status", {"status": "late"}).json()["error"]["code"] == "invalid_status"
        assert post("/v1/loans/L-9/status", {"status": "current"}).status_code == 404

        eligible = client.get("/v1/abs-factory/eligible", headers={"X-API-Key": tokens[Role.operator]})
        assert eligible.status_code == 200 and eligible.json()["excluded"] == {"L-1": "arrears"}
        assert client.get("/v1/abs-factory/eligible", headers={"X-API-Key": tokens[Role.workflow]}).status_code == 403
        empty = post("/v1/abs-factory/pools", {"pool_name": "p1"}, Role.operator)
        assert empty.status_code == 422 and empty.json()["error"]["code"] == "no_eligible_loans"

        listed = client.get("/v1/applications?outcome=decline", headers={"X-API-Key": tokens[Role.analyst]}).json()
        assert [x["application_id"] for x in listed] == [declined["application_id"]] and "trail" not in listed[0]
        # A typo listed nothing, as if there were no such applications.
        typo = client.get("/v1/applications?outcome=declined", headers={"X-API-Key": tokens[Role.analyst]})
        assert typo.status_code == 422 and typo.json()["error"]["code"] == "invalid_outcome"


@contextmanager
def api_as(node: NodeContext, role: Role) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The node's API and the headers of a new key with `role`."""
    with node.store.transaction() as session:
        token = create_api_key(session, role, "test").token
    with TestClient(create_app(node)) as client:
        yield client, {"X-API-Key": token}


def approved_application(client: TestClient, headers: dict[str, str]) -> str:
    response = client.post("/v1/applications", json=application(1, amount="80000").model_dump(mode="json"),
                           headers=headers)
    assert response.json()["outcome"] == "approve", response.text
    return str(response.json()["application_id"])


@pytest.mark.parametrize(("body", "code"), [
    ({"origination_date": "9999-12-01"}, "invalid_origination_date"),  # matures after year 9999
    ({"loan_reference": "L\u0000"}, "invalid_loan_reference"),
    ({"loan_reference": "L-1\n"}, "invalid_loan_reference"),
    # A pool's tape reads its cells stripped: " " was a row it refused (and every pool with it), "L-1 " another loan.
    ({"loan_reference": " "}, "invalid_loan_reference"),
    ({"loan_reference": "L-1 "}, "invalid_loan_reference"),
])
def test_book_application_refuses_bad_input_and_books_nothing(keyed_banks: list[NodeContext], body: dict[str, Any],
                                                               code: str) -> None:
    a = keyed_banks[0]
    with api_as(a, Role.workflow) as (client, headers):
        refused = client.post(f"/v1/applications/{approved_application(client, headers)}/book", json=body,
                              headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == code
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(BookedLoanRow)) == 0


def test_a_birth_date_in_the_future_is_refused_and_nothing_stored(keyed_banks: list[NodeContext]) -> None:
    """A future birth date went through to the pipeline and came back declined (an identity mismatch), recorded as
    an application: a typing error is bad input, refused before anything is written."""
    a = keyed_banks[0]
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    body = application(1).model_dump(mode="json")
    with api_as(a, Role.workflow) as (client, headers):
        refused = client.post("/v1/applications", json={**body, "applicant": {**body["applicant"],
                                                                               "birth_date": tomorrow}},
                              headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert "birth_date is in the future" in refused.text
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(LoanApplication)) == 0


@pytest.mark.parametrize("change", [{"arrears": "1e17"}, {"current_principal": "1e30"}])
def test_update_loan_status_refuses_amounts_out_of_range(keyed_banks: list[NodeContext],
                                                         change: dict[str, str]) -> None:
    a = keyed_banks[0]
    with api_as(a, Role.workflow) as (client, headers):
        booked = client.post(f"/v1/applications/{approved_application(client, headers)}/book",
                             json={"loan_reference": "L-1"}, headers=headers)
        assert booked.status_code == 201
        refused = client.post("/v1/loans/L-1/status", json={"status": "dpd30", **change}, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    with a.store.session() as session:
        assert session.scalar(select(BookedLoanRow.status)) == "current"


def test_update_loan_status_refuses_a_current_principal_over_the_booked_one(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    with api_as(a, Role.workflow) as (client, headers):
        booked = client.post(f"/v1/applications/{approved_application(client, headers)}/book",
                             json={"loan_reference": "L-1", "amount": "50000"}, headers=headers)
        assert booked.status_code == 201
        # Accepted, it left the loan eligible while every pool's loan tape refused it (current over original).
        refused = client.post("/v1/loans/L-1/status", json={"status": "dpd30", "current_principal": "50000.01"},
                              headers=headers)
        with a.store.session() as session:
            assert session.execute(select(BookedLoanRow.status, BookedLoanRow.current_principal_minor)).one() == (
                "current", 5_000_000)
        paid_down = client.post("/v1/loans/L-1/status", json={"status": "current", "current_principal": "49000"},
                                headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "current_principal_over_principal"
    assert paid_down.status_code == 200 and paid_down.json()["current_principal"] == "49000"


def test_update_loan_status_reaches_a_loan_whose_reference_holds_a_slash(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    with api_as(a, Role.workflow) as (client, headers):
        booked = client.post(f"/v1/applications/{approved_application(client, headers)}/book",
                             json={"loan_reference": "2026/000123"}, headers=headers)
        assert booked.status_code == 201
        # Both were 404 not_found (the router's): the loan could never leave `current`, so stayed pool-eligible.
        defaulted = client.post("/v1/loans/2026/000123/status", json={"status": "defaulted"}, headers=headers)
        repaid = client.post("/v1/loans/2026%2F000123/status", json={"status": "repaid"}, headers=headers)
        unknown = client.post("/v1/loans/2026/000124/status", json={"status": "repaid"}, headers=headers)
    assert defaulted.status_code == 200 and defaulted.json()["status"] == "defaulted"
    assert repaid.status_code == 200 and repaid.json()["loan_reference"] == "2026/000123"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "loan_not_found"
    with a.store.session() as session:
        assert session.scalar(select(BookedLoanRow.status)) == "repaid"


@pytest.mark.parametrize(("where", "field"), [("applicant", "bankcard"), ("applicant", "device"),
                                              (None, "bank_input")])
def test_create_application_refuses_an_unknown_field_and_stores_nothing(keyed_banks: list[NodeContext],
                                                                       where: str | None, field: str) -> None:
    """A misspelt field was dropped: an identifier never checked against the blacklist nor counted for velocity,
    the bank's inputs never scored, and the application decided as if they had not been given."""
    a = keyed_banks[0]
    body = application(1).model_dump(mode="json")
    if where is None:
        body[field] = body.pop("bank_inputs")
    else:
        body[where] = {**body[where], field: "6222020200112233446"}
    with api_as(a, Role.workflow) as (client, headers):
        refused = client.post("/v1/applications", json=body, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert [d["loc"][-1] for d in refused.json()["error"]["details"]] == [field]
    assert "6222020200112233446" not in refused.text
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(LoanApplication)) == 0


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_create_application_refuses_non_finite_bank_input_and_stores_nothing(keyed_banks: list[NodeContext],
                                                                             number: str) -> None:
    a = keyed_banks[0]
    # The API's JSON parser takes these literals; a NaN falls in no scorecard band, so the input would go unscored.
    fields = application(1).model_dump(mode="json")
    body = json.dumps({**fields, "bank_inputs": {**fields["bank_inputs"], "debt_to_income": float(number)}})
    with api_as(a, Role.workflow) as (client, headers):
        refused = client.post("/v1/applications", content=body,
                              headers={**headers, "Content-Type": "application/json"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(LoanApplication)) == 0


@pytest.fixture
def bank_on_store(rpc_url: str, tmp_path: Path, store_url: str) -> Iterator[NodeContext]:
    """A one-bank consortium on the parametrised store, holding the epoch-1 key, whose pools may take one loan."""
    node = lone_bank(rpc_url, tmp_path, store_url)
    policy = tmp_path / "policy.toml"
    policy.write_text("[abs]\nmax_borrower_share = 1\nmax_region_share = 1\n")
    node.settings.credit_policy_file = policy
    yield node
    node.close()


@pytest.mark.parametrize("body", [
    {"pool_name": "p\u0000"},
    {"pool_name": "p\u001b[31m"},
    {"pool_name": "p", "anchor": True, "override_reason": "checked\u0000"},
], ids=["nul_in_name", "escape_in_name", "nul_in_reason"])
def test_create_pool_refuses_bad_characters_and_stores_and_sends_nothing(bank_on_store: NodeContext,
                                                                          body: dict[str, Any]) -> None:
    """PostgreSQL cannot store a NUL: it was a 500 there, for the reason only after the version was anchored."""
    a = bank_on_store
    approved = submit_application(a, application(1), submitted_by="t")["application_id"]
    book_loan(a, approved, loan_reference="L1")
    head = a.chain.block_number()
    with api_as(a, Role.operator) as (client, headers):
        refused = client.post("/v1/abs-factory/pools", json=body, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_characters"
    assert a.chain.block_number() == head
    with a.store.session() as session:
        assert session.scalars(select(AssetPool)).all() == []


def _walk(client: TestClient, path: str, headers: dict[str, str], **params: object) -> list[list[dict[str, Any]]]:
    """Every page of a list, following X-Next-After until a page names none."""
    pages: list[list[dict[str, Any]]] = []
    after: str | None = None
    while True:
        page = client.get(path, params={**params, **({"after": after} if after else {})}, headers=headers)
        assert page.status_code == 200, page.text
        pages.append(page.json())
        after = page.headers.get("X-Next-After")
        if after is None:
            return pages
        assert len(pages) <= 10, "the cursor does not advance"


def test_list_applications_pages_newest_first_each_once(bank_on_store: NodeContext) -> None:
    """The list answered the newest `limit` applications and no way to older ones; now pages follow, in an order
    that applications received in the same instant cannot make repeat or skip one."""
    a = bank_on_store
    ids = [submit_application(a, application(i), submitted_by="t")["application_id"] for i in range(1, 6)]
    moment = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    with a.store.transaction() as session:  # four received in one second (the clock's step): only ids order them
        session.execute(update(LoanApplication).where(LoanApplication.application_id.in_(ids[:4]))
                        .values(received_at=moment))
        session.execute(update(LoanApplication).where(LoanApplication.application_id == ids[4])
                        .values(received_at=moment + timedelta(seconds=1)))
    expected = [ids[4], *sorted(ids[:4], reverse=True)]
    with api_as(a, Role.analyst) as (client, headers):
        pages = _walk(client, "/v1/applications", headers, limit=2)
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [x["application_id"] for p in pages for x in p] == expected
        assert all("trail" not in x for p in pages for x in p)
        exact = client.get("/v1/applications", params={"limit": 5}, headers=headers)
        assert len(exact.json()) == 5 and "X-Next-After" not in exact.headers  # a full last page names no next one
        last = client.get("/v1/applications", params={"after": expected[-1]}, headers=headers)
        assert last.status_code == 200 and last.json() == [] and "X-Next-After" not in last.headers
        approved = _walk(client, "/v1/applications", headers, limit=1, outcome="approve")
        assert [x["application_id"] for p in approved for x in p] == expected


@pytest.mark.parametrize(("params", "code"), [
    ({"after": "app_nope"}, "invalid_cursor"), ({"after": ""}, "invalid_request"),
    ({"after": "a" * 41}, "invalid_request"), ({"limit": 0}, "invalid_request"), ({"limit": 1001}, "invalid_request"),
])
def test_list_applications_refuses_a_limit_or_cursor_out_of_range(bank_on_store: NodeContext,
                                                                   params: dict[str, object], code: str) -> None:
    with api_as(bank_on_store, Role.workflow) as (client, headers):
        refused = client.get("/v1/applications", params=params, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == code, refused.text


def add_alerts(node: NodeContext, count: int) -> list[int]:
    """`count` alerts on one booked loan, in the states open and dismissed by turns; their ids, oldest first."""
    approved = submit_application(node, application(1), submitted_by="t")["application_id"]
    book_loan(node, approved, loan_reference="L-alerts")
    with node.store.transaction() as session:
        loan = session.scalars(select(BookedLoanRow).where(BookedLoanRow.loan_reference == "L-alerts")).one()
        alerts = [RiskAlert(loan_ref=loan.id, application_id=approved, identifier_type="phone",
                            indicator=os.urandom(32), batch_id=i, block_number=i, reporter_member_id=2,
                            categories='["money_mule"]', confidence=90, state=("open", "dismissed")[i % 2],
                            webhook_state="none") for i in range(count)]
        session.add_all(alerts)
        session.flush()
        return [alert.id for alert in alerts]


@pytest.mark.parametrize(("where", "key", "shown"), [
    ("applicant", "13800138000", "{key}"),
    ("applicant", "+86 138-0013-8000", "{key}"),
    ("bank_inputs", "zhang.wei@example.cn", "{key}"),
    ("bank_inputs", "11010519491231002X", "{key}"),
    ("applicant", "k" * 5_000, "k" * 64 + "… (5,000 characters)"),
], ids=["phone", "spaced_phone", "email", "resident_id", "long_key"])
def test_a_refusal_does_not_echo_a_key_that_may_be_an_identifier(keyed_banks: list[NodeContext], where: str,
                                                                 key: str, shown: str) -> None:
    """A key the client chose is part of the refusal's location: a phone number or an e-mail address typed as a key
    came back in the 422, and from there into every log keeping error answers."""
    a = keyed_banks[0]
    body = application(1).model_dump(mode="json")
    body[where] = {**body[where], key: "not a number"}
    with api_as(a, Role.workflow) as (client, headers):
        refused = client.post("/v1/applications", json=body, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert [d["loc"] for d in refused.json()["error"]["details"]] == [["body", where, shown]]
    assert key not in refused.text
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(LoanApplication)) == 0


def test_list_alerts_pages_newest_first_each_once(bank_on_store: NodeContext) -> None:
    a = bank_on_store
    ids = add_alerts(a, 5)
    with api_as(a, Role.analyst) as (client, headers):
        pages = _walk(client, "/v1/alerts", headers, limit=2)
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [x["alert_id"] for p in pages for x in p] == ids[::-1]
        opened = _walk(client, "/v1/alerts", headers, limit=2, state="open")
        assert [x["alert_id"] for p in opened for x in p] == ids[::-2]
        exact = client.get("/v1/alerts", params={"limit": 5}, headers=headers)
        assert len(exact.json()) == 5 and "X-Next-After" not in exact.headers
        past_end = client.get("/v1/alerts", params={"after": min(ids)}, headers=headers)
        assert past_end.status_code == 200 and past_end.json() == [] and "X-Next-After" not in past_end.headers


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"after": 0}, {"after": 2**31}, {"after": "x"}])
def test_list_alerts_refuses_a_limit_or_cursor_out_of_range(bank_on_store: NodeContext,
                                                            params: dict[str, object]) -> None:
    with api_as(bank_on_store, Role.analyst) as (client, headers):
        refused = client.get("/v1/alerts", params=params, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert refused.json()["error"]["details"][0]["loc"] == ["query", next(iter(params))]
