"""Health, members, authentication and the error envelope of the node API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.api.error_schema import ErrorOut
from node.api.errors import MAX_DETAILS
from node.auth.apikeys import Role
from node.chain.errors import UnknownRevert
from node.config import load_settings
from node.runtime import NodeContext
from node.workers import BackgroundWorkers, Loop
from tests.api.conftest import ApiNode
from tests.assets.conftest import loan_row
from tests.assets.test_assets_api import tape_text
from tests.chain.test_client import web_server


def test_read_health_reports_chain_contracts_and_store(api: ApiNode) -> None:
    response = api.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["store_ok"] is True and body["bank_code"] == "BANKA"
    assert body["chain"]["reachable"] is True and body["chain"]["latest_block"] >= 1
    assert set(body["contracts"]["addresses"]) >= {"AllianceRegistry"}


def test_read_health_names_a_loops_error_by_its_type_alone(api: ApiNode) -> None:
    def fail() -> None:
        raise RuntimeError('connection to server at "db.internal", port 5432 failed for user "alliance"')

    loop = Loop("store", 1.0, fail)
    loop.run_step()
    with TestClient(create_app(api.node, workers=BackgroundWorkers([loop]))) as client:
        health = client.get("/health")
        status = client.get("/v1/node/status", headers=api.headers(Role.operator))
    assert health.json()["workers"]["store"]["last_error"] == "RuntimeError", health.text
    assert "db.internal" not in health.text and "5432" not in health.text
    assert "db.internal" in status.json()["workers"]["store"]["last_error"]  # operators see the text


def test_read_health_degraded_when_chain_unreachable(api: ApiNode) -> None:
    settings = load_settings(api.node.settings.data_dir, rpc_url="http://127.0.0.1:9",
                             database_url=api.node.settings.effective_database_url)
    with TestClient(create_app(NodeContext(settings))) as client:
        body = client.get("/health").json()
    assert body["status"] == "degraded"
    assert body["chain"]["reachable"] is False and "unreachable" in body["chain"]["error"]


@pytest.mark.parametrize("reachable", [True, False], ids=["chain_up", "chain_down"])
def test_read_health_never_shows_credentials_of_the_rpc_url(api: ApiNode, rpc_url: str, reachable: bool) -> None:
    """/health needs no key, and it answered the RPC URL, user and password included, also in its error."""
    endpoint = rpc_url if reachable else "http://127.0.0.1:9"
    with_credentials = endpoint.replace("http://", "http://alliance:s3cret-token@")
    settings = load_settings(api.node.settings.data_dir, rpc_url=with_credentials,
                             database_url=api.node.settings.effective_database_url)
    with TestClient(create_app(NodeContext(settings))) as client:
        response = client.get("/health")
    chain = response.json()["chain"]
    assert chain["reachable"] is reachable  # requests sends them: a node may need them
    assert chain["rpc_url"] == endpoint.replace("http://", "http://***@")
    assert "s3cret-token" not in response.text and "alliance:" not in response.text
    assert reachable or chain["error"] == f"chain RPC at {chain['rpc_url']} is unreachable"


def test_read_health_degraded_when_the_rpc_url_is_a_web_server(api: ApiNode) -> None:
    """A URL answering 200 with a web page (a proxy's login) made GET /health a 500."""
    with web_server(b"<html>sign in</html>") as url:
        settings = load_settings(api.node.settings.data_dir, rpc_url=url,
                                 database_url=api.node.settings.effective_database_url)
        with TestClient(create_app(NodeContext(settings))) as client:
            response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["chain"]["error"] == f"chain RPC at {url} did not answer as a JSON-RPC endpoint"


def test_list_members_requires_an_api_key(api: ApiNode) -> None:
    response = api.client.get("/v1/members")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", ["", "garbage", "ak_0000000000000000_nope"])
def test_list_members_rejects_bad_keys(api: ApiNode, token: str) -> None:
    response = api.client.get("/v1/members", headers={"X-API-Key": token})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("role", list(Role))
def test_list_members_for_every_role(api: ApiNode, role: Role) -> None:
    response = api.client.get("/v1/members", headers=api.headers(role))
    assert response.status_code == 200
    assert [(m["bank_code"], m["status"]) for m in response.json()] == [("BANKA", "active")]


def test_read_member_by_code_id_and_address(api: ApiNode) -> None:
    headers = api.headers(Role.analyst)
    by_code = api.client.get("/v1/members/BANKA", headers=headers).json()
    assert api.client.get("/v1/members/1", headers=headers).json() == by_code
    assert api.client.get(f"/v1/members/{by_code['account']}", headers=headers).json() == by_code


@pytest.mark.parametrize(("reference", "status", "code"), [
    ("7", 404, "unknown_member"), ("NOPE", 404, "unknown_member"), ("0x12", 422, "invalid_address"),
    ("\u00b2", 404, "unknown_member"), ("9" * 5000, 404, "unknown_member"),  # a digit int() refuses; too many digits
])
def test_read_member_errors_have_codes(api: ApiNode, reference: str, status: int, code: str) -> None:
    response = api.client.get(f"/v1/members/{reference}", headers=api.headers(Role.analyst))
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_a_refusal_quoting_a_long_path_value_cut_short_hides_its_start_too(api: ApiNode) -> None:
    """A refusal quotes a long value cut short (node.text.quoted): the start it kept must be hidden as the whole
    value was, or a phone number opening a mistyped path came back in the answer."""
    reference = "13800138000" + "x" * 5000
    response = api.client.get(f"/v1/members/{reference}", headers=api.headers(Role.analyst))
    message = response.json()["error"]["message"]
    assert response.status_code == 404 and "13800138000" not in message and len(message) < 200, message[:200]


def test_members_unavailable_when_chain_down_is_503(api: ApiNode) -> None:
    settings = load_settings(api.node.settings.data_dir, rpc_url="http://127.0.0.1:9",
                             database_url=api.node.settings.effective_database_url)
    with TestClient(create_app(NodeContext(settings))) as client:
        response = client.get("/v1/members", headers=api.headers(Role.analyst))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "chain_unavailable"


def test_oversized_request_is_refused_with_413(api: ApiNode) -> None:
    limit = api.node.settings.max_request_bytes
    response = api.client.post("/v1/members", content=b"x" * (limit + 1), headers=api.headers(Role.operator))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(("path", "role", "content_type"), [
    ("/v1/fraud/reports", Role.analyst, "application/json"), ("/v1/assets/pools/p/tapes", Role.operator, "text/csv"),
    ("/v1/marketing/prescreen", Role.workflow, "text/csv"),
], ids=["json_body", "csv_body", "read_by_the_route"])
def test_oversized_request_without_content_length_is_refused_with_413(api: ApiNode, path: str, role: Role,
                                                                      content_type: str) -> None:
    # Sent in chunks, the body is measured while it is read; FastAPI caught the refusal and answered 400.
    chunks = api.node.settings.max_request_bytes // 2**16 + 1

    def body() -> Iterator[bytes]:
        yield from (b" " * 2**16 for _ in range(chunks))

    response = api.client.post(path, content=body(), headers={**api.headers(role), "content-type": content_type})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


DEEPLY_NESTED = "[" * 100_000 + "]" * 100_000  # 200 KB, far below the size limit


def test_parsing_a_deeply_nested_document_after_loading_the_chain_stack_raises_instead_of_crashing() -> None:
    # py-ecc (imported by eth-keyfile, so by web3) raised the recursion limit to 100,000: json.loads then overflowed
    # the C stack on this document and the process died of SIGSEGV. In a child, so a regression cannot kill pytest.
    script = "import json, sys, node.chain.client, node.chain.signer; json.loads(sys.stdin.read())"
    result = subprocess.run([sys.executable, "-c", script], input=DEEPLY_NESTED, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, (result.returncode, result.stderr[-500:])
    assert "RecursionError" in result.stderr


def test_deeply_nested_json_body_is_refused_and_the_node_keeps_serving(api: ApiNode) -> None:
    assert sys.getrecursionlimit() <= 10_000  # else the request below could kill this process (see the test above)
    response = api.client.post("/v1/checks/batch", content=DEEPLY_NESTED.encode(),
                               headers={**api.headers(Role.workflow), "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_body"
    assert api.client.get("/health").status_code == 200


@pytest.mark.parametrize(("path", "role"), [
    ("/v1/fraud/reports/r%00", Role.analyst), ("/v1/applications/app_%00", Role.workflow),
    ("/v1/applications?outcome=%00", Role.workflow), ("/v1/alerts?state=open%00", Role.analyst),
    ("/v1/assets/loans/L%00/provenance", Role.operator),
])
def test_nul_character_in_path_or_query_is_refused(api: ApiNode, path: str, role: Role) -> None:
    response = api.client.get(path, headers=api.headers(role))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_characters"


@pytest.mark.parametrize(("body", "refused"), [
    (b"{", (422, "invalid_request")), (b"{\"a\": \"\xff\"}", (400, "malformed_body")),
    (DEEPLY_NESTED.encode(), (400, "malformed_body")),
], ids=["not_json", "not_utf8", "nested_too_deeply"])
@pytest.mark.parametrize(("role", "answer"), [
    (None, (401, "unauthorized")), ("ak_0000000000000000_nope", (401, "unauthorized")),
    (Role.operator, (403, "forbidden")), (Role.analyst, None),
], ids=["no_key", "unknown_key", "wrong_role", "analyst"])
def test_unparsable_body_gets_the_key_and_role_answer_first(api: ApiNode, body: bytes, refused: tuple[int, str],
                                                            role: Role | str | None,
                                                            answer: tuple[int, str] | None) -> None:
    # FastAPI parses a JSON body before it runs any dependency: a caller without a key (or with the wrong role)
    # was told how its body was bad instead of 401 (or 403).
    headers = {"content-type": "application/json"}
    if role is not None:
        headers["X-API-Key"] = api.tokens[role] if isinstance(role, Role) else role
    response = api.client.post("/v1/fraud/reports", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (answer or refused)


@pytest.mark.parametrize(("role", "status", "code"), [
    (Role.workflow, 403, "forbidden"), (Role.analyst, 422, "invalid_characters"),
])
def test_nul_character_in_path_gets_the_role_answer_first(api: ApiNode, role: Role, status: int, code: str) -> None:
    response = api.client.get("/v1/fraud/reports/r%00", headers=api.headers(role))
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize("alert_id", [0, 2**31, 2**80])
def test_resolve_alert_refuses_out_of_range_id(api: ApiNode, alert_id: int) -> None:
    response = api.client.post(f"/v1/alerts/{alert_id}", json={"action": "dismiss"}, headers=api.headers(Role.analyst))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_unknown_route_has_error_envelope(api: ApiNode) -> None:
    response = api.client.get("/v1/nothing-here", headers=api.headers(Role.analyst))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unexpected_failure_answers_the_error_envelope_without_its_text(api: ApiNode,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise RuntimeError("connection to postgresql://alliance:s3cret@db.internal/alliance failed")

    monkeypatch.setattr("node.api.routes.members.governance.find_member", fail)
    client = TestClient(api.client.app, raise_server_exceptions=False)
    response = client.get("/v1/members/1", headers=api.headers(Role.analyst))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "internal_error"
    assert "s3cret" not in response.text and "postgresql" not in response.text


def test_a_revert_the_node_cannot_decode_is_409_not_404(api: ApiNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """404 is for `<Contract>Unknown<Thing>` (no such pool, proposal): an undecodable revert (a registry deployed
    before a view the node calls) was 404 too, its class being named UnknownRevert."""
    def revert(*_: object) -> None:
        raise UnknownRevert({"data": b"\x12\x34\x56\x78"})

    monkeypatch.setattr("node.api.routes.members.governance.find_member", revert)
    response = api.client.get("/v1/members/1", headers=api.headers(Role.analyst))
    assert response.status_code == 409, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["contract_error"]) == (
        "contract_revert", "UnknownRevert")


def test_refusal_lists_at_most_max_details_of_a_loan_tapes_bad_rows(api: ApiNode) -> None:
    api.node.keyring.store_key(1, os.urandom(32), source="generated")
    header = tape_text([loan_row(1)]).splitlines()[0]
    response = api.client.post("/v1/assets/pools/P/tapes", content=header + "\n" + "x\n" * (MAX_DETAILS + 5),
                               headers={**api.headers(Role.operator), "content-type": "text/csv"})
    assert response.status_code == 422, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "loan_tape_rejected" and error["message"].startswith(f"{MAX_DETAILS + 5} bad row(s)")
    assert len(error["details"]) == MAX_DETAILS and error["details_omitted"] == 5
    assert error["details"][0]["row"] == 2


def test_schema_refusal_lists_at_most_max_details(api: ApiNode) -> None:
    reports = {"reports": [{"category": "other"}] * 10_000}  # two fields missing in each: 20,000 problems
    response = api.client.post("/v1/fraud/reports/bulk", json=reports, headers=api.headers(Role.analyst))
    assert response.status_code == 422, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert len(error["details"]) == MAX_DETAILS and error["details_omitted"] == 20_000 - MAX_DETAILS
    assert error["details"][0] == {"loc": ["body", "reports", 0, "identifiers"], "msg": "Field required",
                                   "type": "missing"}


def test_openapi_lists_routes_and_key_scheme(api: ApiNode) -> None:
    spec = api.client.get("/openapi.json").json()
    assert {"/health", "/v1/members", "/v1/members/{reference}"} <= set(spec["paths"])
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]


def test_openapi_documents_the_error_answers_the_node_sends(api: ApiNode) -> None:
    """FastAPI documented a 422 body of its own ({"detail": [...]}), which the node never sends, and no other error:
    a client generated from the document could read none of the node's refusals."""
    spec = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error = spec["components"]["schemas"]["ErrorOut"]
    assert error["required"] == ["error"]
    operations = [(method, path, operation) for path, methods in spec["paths"].items() if path.startswith("/v1/")
                  for method, operation in methods.items()]
    assert len(operations) > 40  # the extensions' routes among them
    for method, path, operation in operations:
        for status in ("401", "403", "413", "422", "4XX", "500", "503"):
            answer = operation["responses"].get(status, {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
    # What the node answers fits it: a refusal of each kind validated against the documented model.
    bodies = [api.client.get("/v1/members").json(),  # 401
              api.client.get("/v1/node/status", headers=api.headers(Role.auditor)).json(),  # 403
              api.client.post("/v1/checks/batch", json={"identifiers": 1}, headers=api.headers(Role.workflow)).json(),
              api.client.get("/v1/fraud/reports/" + "0" * 32, headers=api.headers(Role.analyst)).json()]  # 404
    for body in bodies:
        assert ErrorOut.model_validate(body).error.code in {"unauthorized", "forbidden", "invalid_request",
                                                            "report_not_found"}, body


@pytest.mark.parametrize(("method", "path", "allowed"), [("DELETE", "/health", "GET"),
                                                         ("TRACE", "/v1/members", "GET"),
                                                         ("PUT", "/v1/fraud/reports", "POST")])
def test_a_method_the_path_does_not_take_is_405_naming_those_it_takes(api: ApiNode, method: str, path: str,
                                                                        allowed: str) -> None:
    """The error handler answered 405 without the Allow header (RFC 9110 requires it), which Starlette had set."""
    response = api.client.request(method, path, headers=api.headers(Role.operator))
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert ErrorOut.model_validate(response.json()).error.code == "method_not_allowed"


def test_openapi_bounds_are_json_schema_keywords(api: ApiNode) -> None:
    """A bound on an optional field (ServicingIn.version) was written as pydantic's `ge`/`le`, which JSON Schema does
    not know: clients and generated validators took any integer, and the node refused what its document allowed."""
    pydantic_only = {"ge", "le", "gt", "lt", "min_length", "max_length", "multiple_of", "max_digits", "decimal_places"}

    def misnamed(node: object, path: tuple[str, ...]) -> list[str]:
        if isinstance(node, list):
            return [found for i, item in enumerate(node) for found in misnamed(item, (*path, str(i)))]
        if not isinstance(node, dict):
            return []
        here = [] if path[-1:] == ("properties",) else ["/".join((*path, key)) for key in node if key in pydantic_only]
        return here + [found for key, value in node.items() for found in misnamed(value, (*path, key))]

    spec = api.client.get("/openapi.json").json()
    assert misnamed(spec, ()) == []
    version = spec["components"]["schemas"]["ServicingIn"]["properties"]["version"]["anyOf"][0]
    assert version["minimum"] == 1 and version["type"] == "integer"
