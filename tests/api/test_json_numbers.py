"""`true` and `false` where a body takes a whole number: refused (422), not read as 1 and 0."""

from __future__ import annotations

from typing import Any

import pytest

from node.auth.apikeys import Role
from tests.api.conftest import ApiNode
from tests.api.test_api_fuzz import EXAMPLES, store_digest
from tests.api.test_fraud_reports_api import REPORT, with_key

INDICATOR = "0x" + "ab" * 32


@pytest.mark.parametrize(("path", "role", "body", "field"), [
    ("/v1/fraud/reports", Role.analyst, {**REPORT, "confidence": True}, "confidence"),  # was queued at confidence 1
    ("/v1/fraud/reports", Role.analyst, {**REPORT, "valid_days": True}, "valid_days"),  # valid for one day
    ("/v1/fraud/reports/bulk", Role.analyst, {"reports": [{**REPORT, "confidence": False}]}, "confidence"),
    ("/v1/applications", Role.workflow, {**EXAMPLES["/v1/applications"], "term_months": True}, "term_months"),
    (f"/v1/fraud/indicators/{INDICATOR}/endorsements", Role.analyst, {"confidence": True}, "confidence"),
    ("/v1/applications/app_x/fraud", Role.analyst, {"category": "application_fraud", "confidence": True},
     "confidence"),
    ("/v1/alerts/1", Role.analyst, {"action": "confirm", "confidence": True}, "confidence"),
    ("/v1/assets/pools/1/servicing", Role.operator, {"period": True}, "period"),
    ("/v1/assets/pools/1/servicing", Role.operator, {"period": 1, "version": True}, "version"),
], ids=["report_confidence", "report_valid_days", "bulk_confidence", "application_term", "endorsement",
        "application_fraud", "alert", "servicing_period", "servicing_version"])
def test_booleans_are_refused_where_a_body_takes_a_whole_number(api: ApiNode, path: str, role: Role,
                                                                 body: dict[str, Any], field: str) -> None:
    with_key(api)
    store, head = store_digest(api), api.node.chain.block_number()
    response = api.client.post(path, json=body, headers=api.headers(role))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [d["loc"][-1] for d in error["details"]] == [field]
    assert store_digest(api) == store
    assert api.node.chain.block_number() == head


def test_whole_numbers_still_go_in_as_numbers(api: ApiNode) -> None:
    with_key(api)
    response = api.client.post("/v1/fraud/reports", json={**REPORT, "confidence": 1, "valid_days": 1},
                               headers=api.headers(Role.analyst))
    assert response.status_code == 202, response.text
