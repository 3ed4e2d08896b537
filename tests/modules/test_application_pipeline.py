"""End to end on anvil: bank B reports an applicant, bank A declines them with the alliance hit in the trail;
a clean applicant is approved with a limit and price; a fraud ring sharing a device is caught by velocity."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.modules.credit_platform import submit_application
from node.runtime import NodeContext
from tests.modules.workflow import application, phone, report_and_mirror, resident_id


def _tokens(node: NodeContext) -> dict[Role, str]:
    with node.store.transaction() as session:
        return {role: create_api_key(session, role, "test").token for role in Role}


def test_decide_application_declines_alliance_hit_and_approves_clean(keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    report_and_mirror(b, a, [("phone", phone(1)), ("cn_resident_id", resident_id(1))], category="identity_theft")
    tokens = _tokens(a)
    with TestClient(create_app(a)) as client:
        workflow = {"X-API-Key": tokens[Role.workflow]}
        declined = client.post("/v1/applications", json=application(1).model_dump(mode="json"), headers=workflow)
        approved = client.post("/v1/applications", json=application(2).model_dump(mode="json"), headers=workflow)
        assert declined.status_code == 201 and approved.status_code == 201, declined.text + approved.text
        shown = client.get(f"/v1/applications/{declined.json()['application_id']}", headers=workflow).json()
        forbidden = client.post("/v1/applications", json=application(3).model_dump(mode="json"),
                                headers={"X-API-Key": tokens[Role.auditor]})

    assert shown["outcome"] == "decline" and shown["reasons"][0] == "alliance_hit"
    hits = [s for s in shown["trail"]["signals"] if s["code"] == "alliance_hit"]
    assert {h["data"]["type"] for h in hits} == {"phone", "cn_resident_id"}
    assert hits[0]["data"]["categories"] == ["identity_theft"] and hits[0]["data"]["reporter_count"] == 1
    assert shown["trail"]["decision"]["module"] == "credit_decision"
    assert [s["stage"] for s in shown["trail"]["stages"]] == ["received", "identity", "risk", "score", "decision"]
    assert shown["channel"] == "mobile_app" and shown["scenario"] == "consumer_loan"
    assert resident_id(1) not in str(shown) and phone(1) not in str(shown)  # no raw identifier in the view

    clean = approved.json()
    assert clean["outcome"] == "approve" and clean["reasons"] == ["score_approved"]
    assert (clean["limit"], clean["annual_rate_percent"]) == ("30000", "4.35")
    assert clean["score"] == 650 + 40 + 40 + 30
    assert forbidden.status_code == 403


def test_decide_applications_sharing_a_device_flags_fraud_ring(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    outcomes = [submit_application(a, application(10 + i, device_id="ring-device-0001"), submitted_by="test")
                for i in range(4)]
    assert [o["outcome"] for o in outcomes] == ["approve", "approve", "review", "review"]
    assert outcomes[2]["reasons"][0] == "velocity_device_id"
    velocity = next(s for s in outcomes[3]["trail"]["signals"] if s["code"] == "velocity_device_id")
    assert velocity["data"]["applicants"] == 4
    # The same applicant applying again on their own device is not a ring.
    again = [submit_application(a, application(30), submitted_by="test") for _ in range(3)]
    assert {o["outcome"] for o in again} == {"approve"}


@pytest.mark.parametrize("region", ["\u0661\u0661", "\u0661\u0661\u0660\u0661\u0660\u0665", "\uff11\uff11"],
                         ids=["arabic_indic_province", "arabic_indic_division", "fullwidth_province"])
def test_application_refuses_region_code_in_other_digits(region: str) -> None:
    """Taken by the schema's \\d, then scored as a region mismatch against the resident ID's (a penalty or a decline)
    instead of refused as a typing error."""
    with pytest.raises(ValidationError, match="region_code"):
        application(1, region_code=region)


def test_decide_application_flags_inconsistent_identity(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    mismatch = submit_application(a, application(40, birth_date="1990-01-01", region_code="310115"),
                                  submitted_by="test")
    codes = {s["code"] for s in mismatch["trail"]["signals"]}
    assert {"resident_id_birth_date_mismatch", "resident_id_region_mismatch"} <= codes
    assert mismatch["outcome"] == "decline" and mismatch["reasons"][:2] == ["score_below_review_min",
                                                                          "resident_id_birth_date_mismatch"]
    region_only = submit_application(a, application(44, region_code="31"), submitted_by="test")
    assert region_only["outcome"] == "approve" and region_only["score"] == 760 - 80
    invalid = submit_application(a, application(41, cn_resident_id="110105198503120000"), submitted_by="test")
    assert invalid["outcome"] == "decline" and invalid["reasons"][0] == "identifier_invalid"
    virtual = submit_application(a, application(42, phone="17012345678"), submitted_by="test")
    assert "phone_virtual_operator" in {s["code"] for s in virtual["trail"]["signals"]}
    minor = submit_application(a, application(43, cn_resident_id=resident_id(43, birth="20150101"),
                                              birth_date="2015-01-01"), submitted_by="test")
    assert minor["outcome"] == "decline" and "applicant_underage" in minor["reasons"]


def test_identity_signals_count_age_by_the_day_in_china(keyed_banks: list[NodeContext]) -> None:
    from datetime import date, datetime, timedelta, timezone
    from decimal import Decimal

    from node.extensions.types import Applicant, Application
    from node.modules.identity_recognition import alliance_identity_signals

    a = keyed_banks[0]
    # 00:30 in Beijing on the applicant's 18th birthday is still the day before in UTC: they were declined as 17.
    received = datetime(2026, 3, 12, 0, 30, tzinfo=timezone(timedelta(hours=8)))
    number = resident_id(45, birth="20080312")
    applicant = Applicant(number, phone(45), birth_date=date(2008, 3, 12),
                          sex="M" if int(number[16]) % 2 else "F")
    signals = alliance_identity_signals(a, Application("app_age", "branch", "consumer_loan", applicant,
                                                       Decimal(1000), "CNY", 12, {}, int(received.timestamp())))
    assert "applicant_underage" not in {s.code for s in signals}
    day_before = alliance_identity_signals(a, Application("app_age2", "branch", "consumer_loan", applicant,
                                                          Decimal(1000), "CNY", 12, {},
                                                          int((received - timedelta(hours=1)).timestamp())))
    assert "applicant_underage" in {s.code for s in day_before}
