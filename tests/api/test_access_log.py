"""A raw identifier typed into a URL (a phone or ID number where a route expects a hash, reference or filter) stays
out of the node's access log and its error answers; the log names the route template, method and status instead."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role
from tests.api.conftest import ApiNode
from tests.api.test_api_fuzz import CSV_ROUTES, EXAMPLES, admitted_roles, routes, url_for
from tests.api.test_fraud_reports_api import with_key
from tests.assets.test_assets_api import tape_text

PHONE = "13812345678"
RESIDENT_ID = "11010519491231002X"
ACCESS_LOGGER = "node.api.access"  # named in docs/operations.md: operators route the access log by it


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # everything any logger writes, as under `--debug`
    return caplog


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == ACCESS_LOGGER]


def assert_no_identifier(text: str) -> None:
    assert PHONE not in text and RESIDENT_ID not in text, text


def test_access_log_names_the_route_template_not_the_identifier_in_path_and_query(
        api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    response = api.client.get(f"/v1/fraud/indicators/{PHONE}?phone={PHONE}&id={RESIDENT_ID}",
                              headers=api.headers(Role.analyst))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_indicator"
    [line] = access_lines(logs)
    assert re.fullmatch(r'testclient:\d+ - "GET /v1/fraud/indicators/\{indicator\} HTTP/1\.1" 422 \d+\.\dms', line)
    assert_no_identifier(logs.text + response.text)


def test_access_log_names_an_unmatched_path_by_a_fixed_marker(api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    headers = api.headers(Role.operator)
    unknown = api.client.get(f"/v1/customers/{PHONE}?id={RESIDENT_ID}", headers=headers)
    redirected = api.client.get(f"/v1/members/{RESIDENT_ID}/", headers=headers, follow_redirects=False)
    assert unknown.status_code == 404 and unknown.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    assert redirected.status_code == 307  # Starlette's answer to a trailing slash, in a header for the caller alone
    assert [line.split('"')[1] for line in access_lines(logs)] == ["GET <unmatched> HTTP/1.1"] * 2
    assert_no_identifier(logs.text + unknown.text + redirected.text)


def test_access_log_names_a_route_without_parameters_by_its_path(api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    assert api.client.get("/health").status_code == 200
    assert api.client.get("/openapi.json").status_code == 200
    assert [line.split('"')[1] for line in access_lines(logs)] == ["GET /health HTTP/1.1", "GET /openapi.json HTTP/1.1"]


def test_access_log_names_a_failure_and_an_oversized_body(api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    """A failure that escapes the routes (answered 500 by node.api.unhandled, outside the access log) is logged with
    its route; so is a body refused before routing (413, by BodySizeLimit inside the access log), which was logged as
    unmatched. A body too large for a path no route takes stays unmatched."""
    app = create_app(api.node)

    def fail(value: str) -> None:
        raise RuntimeError("a failure the node did not foresee")

    app.add_api_route("/v1/failing/{value}", fail)
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.get(f"/v1/failing/{PHONE}")
        oversized = client.post(f"/v1/checks/identity?phone={PHONE}", headers=api.headers(Role.workflow),
                                content=b"x" * (api.node.settings.max_request_bytes + 1))
        too_much = b"x" * (api.node.settings.max_request_bytes + 1)
        to_a_member = client.post(f"/v1/members/{RESIDENT_ID}", content=too_much)  # a route for GET only
        to_nowhere = client.post(f"/v1/customers/{PHONE}", content=too_much)
    assert (failed.status_code, oversized.status_code, to_a_member.status_code, to_nowhere.status_code) == \
        (500, 413, 413, 413)
    assert [line.split(" ", 2)[2].rsplit(" ", 1)[0] for line in access_lines(logs)] == [
        '"GET /v1/failing/{value} HTTP/1.1" 500', '"POST /v1/checks/identity HTTP/1.1" 413',
        '"POST /v1/members/{reference} HTTP/1.1" 413', '"POST <unmatched> HTTP/1.1" 413']
    assert_no_identifier(logs.text + failed.text + oversized.text + to_a_member.text + to_nowhere.text)


@pytest.mark.parametrize(("role", "url", "status", "code", "named"), [
    (Role.operator, f"/v1/members/{RESIDENT_ID}", 404, "unknown_member", "{reference}"),
    (Role.auditor, f"/v1/assets/loans/{RESIDENT_ID}/provenance", 404, "loan_not_found", "{loan_id}"),
    (Role.analyst, f"/v1/applications/{PHONE}", 404, "application_not_found", "{application_id}"),
    (Role.analyst, f"/v1/applications?outcome={PHONE}", 422, "invalid_outcome", "{outcome}"),
    (Role.analyst, f"/v1/alerts?state={RESIDENT_ID}", 422, "invalid_state", "{state}"),
], ids=["member", "loan", "application", "outcome", "alert_state"])
def test_refusals_name_the_parameter_not_the_identifier_given_in_the_url(
        api: ApiNode, logs: pytest.LogCaptureFixture, role: Role, url: str, status: int, code: str,
        named: str) -> None:
    """These refusals quoted what was looked up, so a phone or ID number typed there came back in the answer."""
    response = api.client.get(url, headers=api.headers(role))
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert named in response.json()["error"]["message"]
    assert_no_identifier(response.text + logs.text)


def test_schema_refusals_of_a_query_value_do_not_quote_it(api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    response = api.client.get(f"/v1/checks/log?limit={PHONE}&before_id={RESIDENT_ID}",
                              headers=api.headers(Role.operator))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert {tuple(d["loc"]) for d in response.json()["error"]["details"]} == {("query", "limit"),
                                                                               ("query", "before_id")}
    assert_no_identifier(response.text + logs.text)


def test_every_route_logs_its_template_and_answers_without_an_identifier_in_its_url(
        api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    """Every operation with a path or query parameter, each parameter given a phone number, by every role it admits
    and with its example body, so that the request reaches the node's own look-ups."""
    with_key(api)
    for method, path, operation in routes(api):
        parameters = operation.get("parameters", [])
        if not parameters:
            continue
        url = url_for(path, operation, lambda _: PHONE)
        query = "&".join(f"{p['name']}={PHONE}" for p in parameters if p["in"] == "query")
        example = EXAMPLES.get(path)
        as_tape = path in CSV_ROUTES and example is not None
        content = tape_text([example]).encode() if as_tape else None
        for role in sorted(admitted_roles(api, method, path, operation)):
            logs.clear()
            headers = {**api.headers(role), **({"content-type": "text/csv"} if as_tape else {})}
            response = api.client.request(method, url + ("?" + query if query else ""), headers=headers,
                                          content=content, json=None if as_tape else example)
            assert response.status_code < 500, response.text
            if response.status_code >= 400:  # a pool imported under that name answers with its name, as asked
                assert_no_identifier(response.text)
            [line] = access_lines(logs)
            assert f'"{method} {path} HTTP/1.1" {response.status_code} ' in line, line
            assert_no_identifier(logs.text)
