"""`/v1/assets` on a one-bank node: roles, import, anchoring, servicing, provenance, error shapes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from node.api.app import create_app
from node.assets.pools import asset_registry
from node.assets.verify import verify_bundle
from node.auth.apikeys import Role, create_api_key
from node.config import load_settings
from node.runtime import NodeContext
from node.store.asset_tables import AssetServicingReport
from node.store.ledger_tables import SyncState
from tests.api.conftest import ApiNode, start_api_node
from tests.assets.conftest import ALLIANCE_KEY, HEADER, loan_row

CSV = {"Content-Type": "text/csv"}


def tape_text(rows: list[dict[str, str]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(HEADER))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


@pytest.fixture
def api(data_dir: Path, rpc_url: str, store_url: str) -> Iterator[ApiNode]:
    started = start_api_node(data_dir, rpc_url, store_url)
    started.node.keyring.store_key(1, ALLIANCE_KEY, source="generated")
    yield started
    started.client.close()
    started.node.close()


def post_tape(api: ApiNode, pool: str, rows: list[dict[str, str]], role: Role = Role.operator):  # type: ignore[no-untyped-def]
    return api.client.post(f"/v1/assets/pools/{pool}/tapes", content=tape_text(rows),
                           headers={**api.headers(role), **CSV})


def test_assets_api_import_anchor_service_prove(api: ApiNode, rpc_url: str) -> None:
    operator = api.headers(Role.operator)
    created = post_tape(api, "retail", [loan_row(i) for i in range(5)])
    assert created.status_code == 201, created.text
    assert created.json()["loan_count"] == 5
    anchored = api.client.post("/v1/assets/pools/retail/anchor", json={}, headers=operator)
    assert anchored.status_code == 201, anchored.text
    pool_id = anchored.json()["pool_id"]
    serviced = api.client.post(f"/v1/assets/pools/{pool_id}/servicing", json={"period": 1}, headers=operator)
    assert serviced.status_code == 201 and serviced.json()["status_counts"][0] == 5
    auditor = api.headers(Role.auditor)
    assert [p["name"] for p in api.client.get("/v1/assets/pools", headers=auditor).json()] == ["retail"]
    pool = api.client.get(f"/v1/assets/pools/{pool_id}", headers=auditor).json()
    assert [e["kind"] for e in pool["events"]] == ["registered", "anchored", "servicing"]
    bundle = api.client.get("/v1/assets/loans/LN-000002/provenance", headers=auditor)
    assert bundle.status_code == 200
    assert verify_bundle(bundle.json(), rpc_url, bundle.json()["registry"]).ok
    by_id = api.client.get(f"/v1/assets/loans/{bundle.json()['record']['loan_id']}/provenance", headers=auditor)
    assert by_id.json()["record"] == bundle.json()["record"]
    assert api.client.get("/v1/assets/double-financing", headers=auditor).json() == []


def test_assets_api_proves_several_loans_in_one_request(api: ApiNode, rpc_url: str) -> None:
    operator, auditor = api.headers(Role.operator), api.headers(Role.auditor)
    assert post_tape(api, "sample", [loan_row(i) for i in range(6)]).status_code == 201
    pool_id = api.client.post("/v1/assets/pools/sample/anchor", json={}, headers=operator).json()["pool_id"]
    assert api.client.post(f"/v1/assets/pools/{pool_id}/servicing", json={"period": 1}, headers=operator).is_success
    alone = [api.client.get(f"/v1/assets/loans/{r}/provenance", headers=auditor).json()
             for r in ("LN-000004", "LN-000001", "LN-000002")]
    asked = ["LN-000004", alone[1]["record"]["loan_id"], "LN-000002"]
    answer = api.client.post("/v1/assets/provenance", json={"loans": asked}, headers=auditor)
    assert answer.status_code == 200, answer.text
    bundles = answer.json()["bundles"]
    assert bundles == alone  # in the order asked, each the bundle the loan gets alone (nothing sent since)
    assert all(verify_bundle(b, rpc_url, b["registry"]).ok for b in bundles)

    head = api.node.chain.block_number()
    for body, status, code in [
        ({"loans": ["LN-000004", "LN-404"]}, 404, "loan_not_found"),  # one unknown loan refuses them all
        ({"loans": ["LN-000004", "0x12"]}, 422, "invalid_loan_id"),
        ({"loans": []}, 422, "invalid_request"),
        ({"loans": ["LN-000004"] * 101}, 422, "invalid_request"),
    ]:
        refused = api.client.post("/v1/assets/provenance", json=body, headers=auditor)
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), refused.text
    assert api.client.post("/v1/assets/provenance", json={"loans": asked},
                           headers=api.headers(Role.analyst)).status_code == 403
    assert api.node.chain.block_number() == head


def test_list_pools_pages_in_creation_order(api: ApiNode) -> None:
    """The list grew with every pool the bank ever made; now it comes a page at a time, the cursor in X-Next-After."""
    operator = api.headers(Role.operator)
    for name in ("c", "a", "b"):
        assert post_tape(api, name, [loan_row(1)]).status_code == 201
    first = api.client.get("/v1/assets/pools", params={"limit": 2}, headers=operator)
    assert first.status_code == 200 and [p["name"] for p in first.json()] == ["c", "a"]
    last = api.client.get("/v1/assets/pools", params={"limit": 2, "after": first.headers["X-Next-After"]},
                          headers=operator)
    assert [p["name"] for p in last.json()] == ["b"] and "X-Next-After" not in last.headers
    assert [v["state"] for v in last.json()[0]["versions"]] == ["draft"]
    everything = api.client.get("/v1/assets/pools", headers=operator)  # no parameters: the first page of 100
    assert [p["name"] for p in everything.json()] == ["c", "a", "b"] and "X-Next-After" not in everything.headers
    exact = api.client.get("/v1/assets/pools", params={"limit": 3}, headers=operator)
    assert len(exact.json()) == 3 and "X-Next-After" not in exact.headers  # a full last page names no next one
    past_end = api.client.get("/v1/assets/pools", params={"after": 2**31 - 1}, headers=operator)
    assert past_end.status_code == 200 and past_end.json() == [] and "X-Next-After" not in past_end.headers


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": 2**31}, {"after": "x"}])
def test_list_pools_refuses_a_limit_or_cursor_out_of_range(api: ApiNode, params: dict[str, object]) -> None:
    refused = api.client.get("/v1/assets/pools", params=params, headers=api.headers(Role.operator))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert refused.json()["error"]["details"][0]["loc"] == ["query", next(iter(params))]


def test_read_pool_pages_its_event_history_in_chain_order(api: ApiNode) -> None:
    """Every servicing period adds an event, each costing a call for its sender: the history comes a page at a time."""
    operator, auditor = api.headers(Role.operator), api.headers(Role.auditor)
    post_tape(api, "p", [loan_row(1)])
    pool_id = api.client.post("/v1/assets/pools/p/anchor", json={}, headers=operator).json()["pool_id"]
    for period in (1, 2):
        assert api.client.post(f"/v1/assets/pools/{pool_id}/servicing", json={"period": period},
                               headers=operator).status_code == 201
    first = api.client.get(f"/v1/assets/pools/{pool_id}", params={"limit": 2}, headers=auditor)
    assert first.status_code == 200 and [e["kind"] for e in first.json()["events"]] == ["registered", "anchored"]
    assert first.json()["version_count"] == 1
    last = api.client.get(f"/v1/assets/pools/{pool_id}", params={"limit": 2, "after": first.headers["X-Next-After"]},
                          headers=auditor)
    assert [(e["kind"], e["args"]["period"]) for e in last.json()["events"]] == [("servicing", 1), ("servicing", 2)]
    assert "X-Next-After" not in last.headers and last.json()["events"][0]["block_number"] > \
        first.json()["events"][1]["block_number"]
    whole = api.client.get(f"/v1/assets/pools/{pool_id}", headers=auditor)  # no parameters: the first 100 events
    assert len(whole.json()["events"]) == 4 and "X-Next-After" not in whole.headers
    past_end = api.client.get(f"/v1/assets/pools/{pool_id}", params={"after": "999999999:0"}, headers=auditor)
    assert past_end.status_code == 200 and past_end.json()["events"] == [] and "X-Next-After" not in past_end.headers


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"after": "12"}, {"after": "a:b"},
                                    {"after": "1" * 19 + ":0"}])
def test_read_pool_refuses_an_event_limit_or_cursor_out_of_range(api: ApiNode, params: dict[str, object]) -> None:
    refused = api.client.get("/v1/assets/pools/1", params=params, headers=api.headers(Role.auditor))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert refused.json()["error"]["details"][0]["loc"] == ["query", next(iter(params))]


def test_list_double_financing_pages_in_loan_id_order(api: ApiNode) -> None:
    operator = api.headers(Role.operator)
    rows = [loan_row(i) for i in range(5)]
    post_tape(api, "first", rows)
    first_pool = api.client.post("/v1/assets/pools/first/anchor", json={}, headers=operator).json()["pool_id"]
    post_tape(api, "second", rows)  # the same loans pledged again, on purpose
    second = api.client.post("/v1/assets/pools/second/anchor", json={"override_reason": "test"}, headers=operator)
    assert second.status_code == 201, second.text
    pools = sorted([first_pool, second.json()["pool_id"]])
    pages, after = [], None
    while True:
        page = api.client.get("/v1/assets/double-financing", params={"limit": 2, **({"after": after} if after else {})},
                              headers=api.headers(Role.auditor))
        assert page.status_code == 200, page.text
        pages.append(page.json())
        after = page.headers.get("X-Next-After")
        if after is None:
            break
        assert after == page.json()[-1]["loan_id"]
    assert [len(p) for p in pages] == [2, 2, 1]
    loan_ids = [flag["loan_id"] for p in pages for flag in p]
    assert loan_ids == sorted(loan_ids) and len(set(loan_ids)) == 5
    assert all(flag["pool_ids"] == pools for p in pages for flag in p)
    whole = api.client.get("/v1/assets/double-financing", headers=operator)  # no parameters: the first 1,000
    assert [f["loan_id"] for f in whole.json()] == loan_ids and "X-Next-After" not in whole.headers
    past_end = api.client.get("/v1/assets/double-financing", params={"after": "0x" + "ff" * 32}, headers=operator)
    assert past_end.status_code == 200 and past_end.json() == [] and "X-Next-After" not in past_end.headers


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 10_001}, {"after": "0x12"}, {"after": "ab" * 32}])
def test_list_double_financing_refuses_a_limit_or_cursor_out_of_range(api: ApiNode,
                                                                       params: dict[str, object]) -> None:
    refused = api.client.get("/v1/assets/double-financing", params=params, headers=api.headers(Role.operator))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert refused.json()["error"]["details"][0]["loc"] == ["query", next(iter(params))]


def proven_loan_ids(api: ApiNode, references: list[str]) -> list[str]:
    """The loan ids of this bank's anchored loans, as their provenance bundles name them."""
    answer = api.client.post("/v1/assets/provenance", json={"loans": references}, headers=api.headers(Role.auditor))
    assert answer.status_code == 200, answer.text
    return [bundle["record"]["loan_id"] for bundle in answer.json()["bundles"]]


def test_list_version_loans_pages_a_versions_ids_in_version_order(api: ApiNode) -> None:
    """No route listed a version's loan ids: an auditor had nothing to draw a sample to prove from."""
    operator, auditor = api.headers(Role.operator), api.headers(Role.auditor)
    post_tape(api, "retail/2026", [loan_row(i) for i in range(5)])
    assert api.client.post("/v1/assets/pools/retail%2F2026/anchor", json={}, headers=operator).status_code == 201
    first = proven_loan_ids(api, [f"LN-{i:06d}" for i in range(5)])
    post_tape(api, "retail/2026", [loan_row(i) for i in (9, 3)])
    assert api.client.post("/v1/assets/pools/retail%2F2026/anchor", json={}, headers=operator).status_code == 201
    path = "/v1/assets/pools/retail%2F2026/versions/{}/loans"
    pages, after = [], None
    while True:
        page = api.client.get(path.format(1), params={"limit": 2, **({"after": after} if after else {})},
                              headers=auditor)
        assert page.status_code == 200, page.text
        pages.append(page.json())
        after = page.headers.get("X-Next-After")
        if after is None:
            break
    assert pages == [first[0:2], first[2:4], first[4:]]
    whole = api.client.get(path.format(1), headers=operator)  # no parameters: the first 1,000
    assert whole.json() == first and "X-Next-After" not in whole.headers
    exact = api.client.get(path.format(1), params={"limit": 5}, headers=auditor)
    assert exact.json() == first and "X-Next-After" not in exact.headers  # a full last page names no next one
    past_end = api.client.get(path.format(1), params={"after": 4}, headers=auditor)
    assert past_end.status_code == 200 and past_end.json() == [] and "X-Next-After" not in past_end.headers
    assert api.client.get(path.format(2), headers=auditor).json() == proven_loan_ids(api, ["LN-000009", "LN-000003"])


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 10_001}, {"after": -1}, {"after": 2**31},
                                    {"after": "x"}])
def test_list_version_loans_refuses_a_limit_or_cursor_out_of_range(api: ApiNode, params: dict[str, object]) -> None:
    post_tape(api, "p", [loan_row(1)])
    assert api.client.post("/v1/assets/pools/p/anchor", json={}, headers=api.headers(Role.operator)).is_success
    refused = api.client.get("/v1/assets/pools/p/versions/1/loans", params=params, headers=api.headers(Role.auditor))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert refused.json()["error"]["details"][0]["loc"] == ["query", next(iter(params))]


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/v1/assets/pools/nowhere/versions/1/loans", 404, "pool_not_found"),
    ("/v1/assets/pools/p/versions/2/loans", 404, "version_not_found"),
    ("/v1/assets/pools/drafted/versions/1/loans", 404, "version_not_found"),  # a draft is no version yet
    ("/v1/assets/pools/p/versions/0/loans", 422, "invalid_request"),
    (f"/v1/assets/pools/p/versions/{2**31}/loans", 422, "invalid_request"),
    ("/v1/assets/pools/p/versions/x/loans", 422, "invalid_request"),
], ids=["unknown_pool", "unknown_version", "draft_only", "version_0", "version_too_large", "version_not_a_number"])
def test_list_version_loans_of_an_unknown_pool_or_version_is_refused(api: ApiNode, path: str, status: int,
                                                                     code: str) -> None:
    post_tape(api, "p", [loan_row(1)])
    assert api.client.post("/v1/assets/pools/p/anchor", json={}, headers=api.headers(Role.operator)).is_success
    post_tape(api, "drafted", [loan_row(2)])
    refused = api.client.get(path, headers=api.headers(Role.auditor))
    assert refused.status_code == status and refused.json()["error"]["code"] == code, refused.text


def test_list_version_loans_is_for_operators_and_auditors(api: ApiNode) -> None:
    post_tape(api, "p", [loan_row(1)])
    assert api.client.post("/v1/assets/pools/p/anchor", json={}, headers=api.headers(Role.operator)).is_success
    path = "/v1/assets/pools/p/versions/1/loans"
    assert api.client.get(path, headers=api.headers(Role.analyst)).status_code == 403
    assert api.client.get(path).status_code == 401
    assert len(api.client.get(path, headers=api.headers(Role.operator)).json()) == 1


def test_assets_api_reaches_a_pool_and_a_loan_whose_names_hold_a_slash(api: ApiNode, rpc_url: str) -> None:
    created = post_tape(api, "retail%2F2026", [loan_row(1, loan_reference="LN/1"), loan_row(2)])
    assert created.status_code == 201, created.text
    anchored = api.client.post("/v1/assets/pools/retail%2F2026/anchor", json={}, headers=api.headers(Role.operator))
    assert anchored.status_code == 201, anchored.text
    assert [p["name"] for p in api.client.get("/v1/assets/pools", headers=api.headers(Role.auditor)).json()] == [
        "retail/2026"]
    bundle = api.client.get("/v1/assets/loans/LN%2F1/provenance", headers=api.headers(Role.auditor))
    assert bundle.status_code == 200, bundle.text
    assert verify_bundle(bundle.json(), rpc_url, bundle.json()["registry"]).ok


def test_assets_api_roles(api: ApiNode) -> None:
    assert post_tape(api, "p", [loan_row(1)], role=Role.auditor).status_code == 403
    assert post_tape(api, "p", [loan_row(1)], role=Role.analyst).status_code == 403
    assert api.client.get("/v1/assets/pools", headers=api.headers(Role.analyst)).status_code == 403
    attest = api.client.post("/v1/assets/pools/1/versions/1/attestations", json={"report_sha256": "0x" + "ab" * 32},
                             headers=api.headers(Role.operator))
    assert attest.status_code == 403
    assert api.client.get("/v1/assets/pools").status_code == 401


def test_assets_api_rejects_bad_tape_with_row_details(api: ApiNode) -> None:
    response = post_tape(api, "bad", [loan_row(1), loan_row(2, purpose="yacht")])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "loan_tape_rejected"
    assert error["details"] == [{"row": 3, "field": "purpose", "code": "unknown_value",
                                 "reason": "must be one of ['home', 'auto', 'consumer', 'business', 'education', "
                                           "'other']"}]
    assert api.client.get("/v1/assets/pools", headers=api.headers(Role.operator)).json() == []


def test_create_draft_refuses_a_tape_not_utf8_as_a_tape_and_takes_a_byte_order_mark(api: ApiNode) -> None:
    """A Latin-1 tape was 422 invalid_request, 'unable to parse raw data as a unicode string', where the command
    line says loan_tape_rejected and to re-export it as UTF-8."""
    operator = {**api.headers(Role.operator), **CSV}
    latin1 = tape_text([loan_row(1, borrower_name="Borrower Müller")]).encode("latin-1")
    refused = api.client.post("/v1/assets/pools/p/tapes", content=latin1, headers=operator)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "loan_tape_rejected" and "re-export it as UTF-8" in refused.text
    assert api.client.get("/v1/assets/pools", headers=operator).json() == []
    with_bom = "\ufeff".encode() + tape_text([loan_row(1, borrower_name="Borrower Müller")]).encode()
    created = api.client.post("/v1/assets/pools/p/tapes", content=with_bom, headers=operator)
    assert created.status_code == 201 and created.json()["loan_count"] == 1, created.text


@pytest.mark.parametrize("pool", ["a%0Ab", "a%1B[31m", "a%E2%80%8Bb"], ids=["newline", "escape", "zero_width"])
def test_create_draft_refuses_pool_name_with_control_character_and_imports_nothing(api: ApiNode, pool: str) -> None:
    refused = post_tape(api, pool, [loan_row(1)])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_characters"
    assert api.client.get("/v1/assets/pools", headers=api.headers(Role.operator)).json() == []


def test_anchor_pool_refuses_override_reason_with_nul_and_sends_nothing(api: ApiNode) -> None:
    """PostgreSQL cannot store the NUL: the reason used to fail there only after the version was anchored."""
    operator = api.headers(Role.operator)
    post_tape(api, "p", [loan_row(1)])
    head = api.node.chain.block_number()
    refused = api.client.post("/v1/assets/pools/p/anchor", json={"override_reason": "checked\x00"}, headers=operator)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_characters"
    assert api.node.chain.block_number() == head
    pools = api.client.get("/v1/assets/pools", headers=operator).json()
    assert [(p["pool_id"], [v["state"] for v in p["versions"]]) for p in pools] == [(None, ["draft"])]


@pytest.mark.parametrize(("pool", "code"), [("nowhere", "pool_not_found"), ("anchored", "no_draft")])
def test_anchor_of_an_unknown_pool_or_no_draft_is_404_even_with_the_chain_down(api: ApiNode, pool: str,
                                                                              code: str) -> None:
    """The loan mirror was synced first: with the chain down the answer was 503, not what was wrong."""
    operator = api.headers(Role.operator)
    post_tape(api, "anchored", [loan_row(1)])
    assert api.client.post("/v1/assets/pools/anchored/anchor", json={}, headers=operator).status_code == 201
    with api.node.store.session() as session:
        cursors = session.scalars(select(SyncState.last_block)).all()
    chain_down = load_settings(api.node.settings.data_dir, rpc_url="http://127.0.0.1:9",
                               database_url=api.node.settings.effective_database_url)
    with TestClient(create_app(NodeContext(chain_down))) as client:
        refused = client.post(f"/v1/assets/pools/{pool}/anchor", json={}, headers=operator)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == code
    with api.node.store.session() as session:
        assert session.scalars(select(SyncState.last_block)).all() == cursors


def test_anchor_of_a_draft_anchored_already_is_409_even_with_the_chain_down(api: ApiNode) -> None:
    """docs/assets.md: refused `already_anchored` before anything is read from the chain; the loan mirror was
    synced first, so with the chain down the answer was 503."""
    operator = api.headers(Role.operator)
    post_tape(api, "again", [loan_row(1)])
    assert api.client.post("/v1/assets/pools/again/anchor", json={}, headers=operator).status_code == 201
    assert post_tape(api, "again", [loan_row(1)]).status_code == 201
    chain_down = load_settings(api.node.settings.data_dir, rpc_url="http://127.0.0.1:9",
                               database_url=api.node.settings.effective_database_url)
    with TestClient(create_app(NodeContext(chain_down))) as client:
        refused = client.post("/v1/assets/pools/again/anchor", json={}, headers=operator)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "already_anchored", refused.text


def test_assets_api_refuses_double_financing_with_409(api: ApiNode) -> None:
    operator = api.headers(Role.operator)
    post_tape(api, "first", [loan_row(i) for i in range(3)])
    assert api.client.post("/v1/assets/pools/first/anchor", json={}, headers=operator).status_code == 201
    post_tape(api, "second", [loan_row(i) for i in range(2, 4)])
    refused = api.client.post("/v1/assets/pools/second/anchor", json={}, headers=operator)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "pool_refused"
    assert refused.json()["error"]["details"][0]["code"] == "double_financed"


def test_delete_draft_refused_by_screening_lets_a_corrected_tape_in(api: ApiNode) -> None:
    """A draft refused by screening (or the loans of the latest version again) could be dropped on the command line
    only: a client of the API was left with a pool it could neither anchor nor import into (`draft_exists`)."""
    operator = api.headers(Role.operator)
    post_tape(api, "first", [loan_row(i) for i in range(3)])
    assert api.client.post("/v1/assets/pools/first/anchor", headers=operator).status_code == 201  # no body: none
    post_tape(api, "second", [loan_row(i) for i in range(2, 4)])
    assert api.client.post("/v1/assets/pools/second/anchor", headers=operator).json()["error"]["code"] == "pool_refused"
    assert post_tape(api, "second", [loan_row(3)]).json()["error"]["code"] == "draft_exists"
    assert api.client.delete("/v1/assets/pools/second/draft", headers=api.headers(Role.auditor)).status_code == 403
    assert api.client.delete("/v1/assets/pools/second/draft", headers=operator).status_code == 204
    assert post_tape(api, "second", [loan_row(3)]).status_code == 201
    assert api.client.post("/v1/assets/pools/second/anchor", headers=operator).status_code == 201
    nothing = api.client.delete("/v1/assets/pools/second/draft", headers=operator)
    assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "no_draft"
    unknown = api.client.delete("/v1/assets/pools/nowhere/draft", headers=operator)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "pool_not_found"


def test_assets_api_attestation_by_non_auditor_signer_is_refused_by_contract(api: ApiNode) -> None:
    operator = api.headers(Role.operator)
    post_tape(api, "p", [loan_row(1)])
    pool_id = api.client.post("/v1/assets/pools/p/anchor", json={}, headers=operator).json()["pool_id"]
    refused = api.client.post(f"/v1/assets/pools/{pool_id}/versions/1/attestations",
                              json={"report_sha256": "0x" + "ab" * 32}, headers=api.headers(Role.auditor))
    assert refused.status_code == 409
    assert refused.json()["error"]["contract_error"] == "AssetRegistryNotAuditor"


def test_assets_api_servicing_report_sent_again_answers_the_same_report(api: ApiNode) -> None:
    """A client's retry of a report the node had already stored was a 500 (the store's unique period); it answers
    the report sent, and nothing is sent or stored twice."""
    operator = api.headers(Role.operator)
    post_tape(api, "p", [loan_row(i) for i in range(2)])
    pool_id = api.client.post("/v1/assets/pools/p/anchor", json={}, headers=operator).json()["pool_id"]
    first = api.client.post(f"/v1/assets/pools/{pool_id}/servicing", json={"period": 1}, headers=operator)
    head = api.node.chain.block_number()
    again = api.client.post(f"/v1/assets/pools/{pool_id}/servicing", json={"period": 1}, headers=operator)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert api.node.chain.block_number() == head
    with api.node.store.session() as session:
        assert session.scalar(select(func.count()).select_from(AssetServicingReport)) == 1


def test_assets_api_unknown_loan_and_bad_statuses(api: ApiNode) -> None:
    auditor = api.headers(Role.auditor)
    missing = api.client.get("/v1/assets/loans/LN-1/provenance", headers=auditor)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "loan_not_found"
    for malformed in ("0x12", "0xzz", "0x" + "ab" * 31 + "%20%20"):  # "0x12" was a 404 loan_not_found
        refused = api.client.get(f"/v1/assets/loans/{malformed}/provenance", headers=auditor)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_loan_id", malformed
    bad = api.client.post("/v1/assets/pools/1/servicing", json={"period": 1, "statuses": {"0x12": "current"}},
                          headers=api.headers(Role.operator))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_statuses"


@pytest.mark.parametrize("statuses", [
    {"0x" + "ab" * 32: "current", "0x" + "AB" * 32: "defaulted"},  # one loan twice: the last status was kept
    {"0xab ab" + "ab" * 30: "current"},  # bytes.fromhex skips the space: taken as a loan id
], ids=["repeated_loan", "inner_space"])
def test_servicing_statuses_are_refused_before_the_chain_is_asked(api: ApiNode, statuses: dict[str, str]) -> None:
    """Each was read as a loan's status (and for the unknown pool here, answered 404 by the registry); a report of
    such a map published one status of two, unsaid."""
    head = api.node.chain.block_number()
    response = api.client.post("/v1/assets/pools/1/servicing", json={"period": 1, "statuses": statuses},
                               headers=api.headers(Role.operator))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "bad_statuses"
    assert api.node.chain.block_number() == head


@pytest.mark.parametrize(("method", "path", "role", "body"), [
    ("GET", "/v1/assets/pools/99", Role.auditor, None),
    ("POST", "/v1/assets/pools/99/accept", Role.operator, None),
    ("POST", "/v1/assets/pools/99/transfer", Role.operator, {"to": "BANKA"}),
    ("POST", "/v1/assets/pools/99/servicing", Role.operator, {"period": 1, "statuses": {}}),
], ids=["read", "accept", "transfer", "servicing"])
def test_assets_api_unknown_pool_is_404(api: ApiNode, method: str, path: str, role: Role,
                                        body: dict[str, object] | None) -> None:
    """A pool the registry never saw is not found, not a conflict (it was 409), and nothing is sent."""
    head = api.node.chain.block_number()
    response = api.client.request(method, path, headers=api.headers(role), json=body)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["contract_error"] == "AssetRegistryUnknownPool"
    assert api.node.chain.block_number() == head


def test_assets_api_transfer_refusals(api: ApiNode) -> None:
    operator = api.headers(Role.operator)
    post_tape(api, "p", [loan_row(1)])
    pool_id = api.client.post("/v1/assets/pools/p/anchor", json={}, headers=operator).json()["pool_id"]
    unknown = api.client.post(f"/v1/assets/pools/{pool_id}/transfer", json={"to": "NOBANK"}, headers=operator)
    assert unknown.status_code == 404, unknown.text
    to_self = api.client.post(f"/v1/assets/pools/{pool_id}/transfer", json={"to": "BANKA"}, headers=operator)
    assert to_self.status_code == 409 and to_self.json()["error"]["contract_error"] == "AssetRegistryInvalidCustodian"
    accept = api.client.post(f"/v1/assets/pools/{pool_id}/accept", headers=operator)
    assert accept.json()["error"]["contract_error"] == "AssetRegistryNoPendingTransfer"
    assert api.client.post(f"/v1/assets/pools/{pool_id}/cancel", headers=api.headers(Role.auditor)).status_code == 403


@pytest.mark.parametrize(("path", "role", "body"), [
    (f"/v1/assets/pools/{2**256}", Role.auditor, None),
    (f"/v1/assets/pools/{2**256}/accept", Role.operator, None),
    ("/v1/assets/pools/-1/cancel", Role.operator, None),
    (f"/v1/assets/pools/1/versions/{2**32}/attestations", Role.auditor, {"report_sha256": "0x" + "ab" * 32}),
], ids=["read_pool", "accept", "cancel_negative", "attest_version"])
def test_assets_api_refuses_ids_the_contract_cannot_hold(api: ApiNode, path: str, role: Role,
                                                         body: dict[str, str] | None) -> None:
    """A pool id beyond uint256 or a version beyond uint32 is bad input, not an encoding failure in web3."""
    method = api.client.get if body is None and role is Role.auditor else api.client.post
    response = method(path, headers=api.headers(role), **({"json": body} if body is not None else {}))
    assert response.status_code == 422, response.text


def test_successor_routes_refuse_while_the_custodian_is_a_member(api: ApiNode) -> None:
    """The vote itself is tested with three banks (tests/assets/test_provenance.py); here the refusals over HTTP."""
    operator = api.headers(Role.operator)
    post_tape(api, "held", [loan_row(1)])
    pool_id = api.client.post("/v1/assets/pools/held/anchor", json={}, headers=operator).json()["pool_id"]
    head = api.node.chain.block_number()
    refused = api.client.post(f"/v1/assets/pools/{pool_id}/successor", json={"successor": "BANKA"}, headers=operator)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["contract_error"] == "AssetRegistryCustodianNotRemoved"
    no_vote = api.client.post(f"/v1/assets/pools/{pool_id}/successor/vote", headers=operator)
    assert no_vote.status_code == 404 and no_vote.json()["error"]["code"] == "no_succession"
    unknown = api.client.post("/v1/assets/pools/999/successor", json={"successor": "NOBODY"}, headers=operator)
    assert unknown.status_code == 404
    for role in (Role.analyst, Role.auditor):
        assert api.client.post(f"/v1/assets/pools/{pool_id}/successor/vote",
                               headers=api.headers(role)).status_code == 403
    assert api.node.chain.block_number() == head  # nothing was sent


def test_create_draft_bound_to_a_pool_this_bank_holds_anchors_its_next_version(api: ApiNode) -> None:
    """A pool this bank holds but no local pool stands for (received from another bank; here registered by this
    bank's signer outside the node): `?pool_id=` binds the import to it, and anchoring adds its next version."""
    operator = api.headers(Role.operator)
    registry = asset_registry(api.node, signing=True)
    pool_id, _receipt = registry.register_pool(b"\x07" * 32)
    registry.anchor_version(pool_id, b"\x08" * 32, 1, [b"\x09" * 32])
    created = api.client.post(f"/v1/assets/pools/held/tapes?pool_id={pool_id}", content=tape_text([loan_row(1)]),
                              headers={**operator, **CSV})
    assert created.status_code == 201 and created.json()["pool_id"] == pool_id, created.text
    anchored = api.client.post("/v1/assets/pools/held/anchor", json={}, headers=operator)
    assert anchored.status_code == 201, anchored.text
    assert (anchored.json()["pool_id"], anchored.json()["version"]) == (pool_id, 2)
    assert registry.pool_count() == pool_id


@pytest.mark.parametrize(("pool_id", "status", "code"), [
    ("99", 404, "contract_revert"), ("1", 409, "pool_already_bound"), ("0", 422, "invalid_request"),
    (str(2**63), 422, "invalid_request"), ("one", 422, "invalid_request"),
], ids=["unknown", "bound_elsewhere", "zero", "too_large", "not_a_number"])
def test_create_draft_bound_to_a_pool_refused_imports_nothing(api: ApiNode, pool_id: str, status: int,
                                                              code: str) -> None:
    operator = api.headers(Role.operator)
    post_tape(api, "retail", [loan_row(1)])
    assert api.client.post("/v1/assets/pools/retail/anchor", json={}, headers=operator).status_code == 201
    refused = api.client.post(f"/v1/assets/pools/other/tapes?pool_id={pool_id}", content=tape_text([loan_row(2)]),
                              headers={**operator, **CSV})
    assert refused.status_code == status and refused.json()["error"]["code"] == code, refused.text
    if pool_id == "1":
        assert "'retail'" in refused.json()["error"]["message"]
    assert [p["name"] for p in api.client.get("/v1/assets/pools", headers=operator).json()] == ["retail"]


def test_assets_api_refuses_a_suspended_banks_writes_403_naming_the_contract_error(banks: list[NodeContext]) -> None:
    """A bank suspended by the alliance anchoring a pool was answered 409, as if its pool clashed with another, while
    the same refusal from the registry (AllianceRegistryNotActiveMember) was 403: the bank may not write at all."""
    a, b, c = banks
    assert b.registry(signing=True).vote(a.registry(signing=True).propose_suspension(3).proposal_id).executed
    with c.store.transaction() as session:
        operator = {"X-API-Key": create_api_key(session, Role.operator, "test").token}
    client = TestClient(create_app(c))
    try:
        assert client.post("/v1/assets/pools/p/tapes", content=tape_text([loan_row(1)]),
                           headers={**operator, **CSV}).status_code == 201
        head = c.chain.block_number()
        refused = client.post("/v1/assets/pools/p/anchor", json={}, headers=operator)
        assert refused.status_code == 403, refused.text
        assert (refused.json()["error"]["code"], refused.json()["error"]["contract_error"]) == (
            "contract_revert", "AssetRegistryNotMember")
        assert c.chain.block_number() == head
    finally:
        client.close()
