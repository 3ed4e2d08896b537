"""A failure no handler maps (a bug in a bank's plugin route, a library error in a node route) answers 500
`internal_error` with a reference id and is logged once, by reference, route template, type and frames: never its
message, which may quote customer data (`ValueError(f"bad phone {phone}")`). Starlette raised it on to the server,
whose traceback quoted the message."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.api.deps import require_roles
from node.auth.apikeys import KeyInfo, Role
from node.extensions import hookimpl
from node.extensions.manager import ExtensionManager, use_extensions
from tests.api.conftest import ApiNode
from tests.conftest import free_port

PHONE = "13812345678"
REFERENCE = re.compile(r"[0-9a-f]{16}")


class BuggyRules:
    """A bank's plugin whose route fails on what it was given, quoting it."""

    @hookimpl
    def alliance_api_routers(self) -> list[Any]:
        router = APIRouter(prefix="/bank-rules")

        @router.get("/score/{phone}")
        def score(phone: str, *, key: Annotated[KeyInfo, Depends(require_roles(Role.workflow))]) -> dict[str, str]:
            raise ValueError(f"bad phone {phone}")

        return [router]


def _fail(*_: object) -> None:
    raise KeyError(f"member row for {PHONE}")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # everything any logger writes, as under `--debug`
    return caplog


def _error_lines(logs: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in logs.records if record.levelno >= logging.ERROR]


def _assert_answered_and_logged(response: httpx.Response, logs: pytest.LogCaptureFixture, *, route: str,
                                exception: str, frame: str) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "internal_error" and REFERENCE.fullmatch(error["reference"]), error
    [line] = _error_lines(logs)  # one line: not the server's traceback as well
    assert line.name == "node.api.unhandled" and line.exc_info is None and line.exc_text is None
    message = line.getMessage()
    assert error["reference"] in message and route in message and exception in message, message
    assert re.search(rf"\.py:\d+ in {frame}\b", message), message
    access = [r.getMessage() for r in logs.records if r.name == "node.api.access"]
    assert any(f'"GET {route} HTTP/1.1" 500 ' in a for a in access), access
    assert PHONE not in logs.text and PHONE not in response.text, logs.text


def test_a_plugin_route_failure_is_500_with_a_reference_and_logged_without_its_message(
        api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    use_extensions(api.node, ExtensionManager(extra_plugins={"buggy_rules": BuggyRules()}))
    client = TestClient(create_app(api.node))  # raises in the test what escapes the app
    headers = api.headers(Role.workflow)
    failed = client.get(f"/v1/bank-rules/score/{PHONE}", headers=headers)
    _assert_answered_and_logged(failed, logs, route="/v1/bank-rules/score/{phone}", exception="ValueError",
                                frame="score")
    again = client.get(f"/v1/bank-rules/score/{PHONE}", headers=headers)
    assert again.json()["error"]["reference"] != failed.json()["error"]["reference"]  # one per failure, not per input
    assert client.get("/v1/members", headers=api.headers(Role.operator)).status_code == 200


def test_a_node_route_failure_is_500_with_a_reference_and_logged_without_its_message(
        api: ApiNode, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.api.routes.members.governance.find_member", _fail)
    failed = api.client.get("/v1/members/BANKA", headers=api.headers(Role.analyst))
    _assert_answered_and_logged(failed, logs, route="/v1/members/{reference}", exception="KeyError", frame="_fail")
    assert api.client.get("/v1/members", headers=api.headers(Role.analyst)).status_code == 200


def test_a_domain_error_is_answered_as_before_and_not_logged_as_a_failure(
        api: ApiNode, logs: pytest.LogCaptureFixture) -> None:
    refused = api.client.get("/v1/members/NOSUCHBANK", headers=api.headers(Role.analyst))
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "unknown_member"
    assert "reference" not in refused.json()["error"] and _error_lines(logs) == []


def test_a_failure_cause_is_named_by_type_alone(api: ApiNode, logs: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        try:
            _fail()
        except KeyError as exc:
            raise RuntimeError(f"lookup of {PHONE} failed") from exc

    monkeypatch.setattr("node.api.routes.members.governance.find_member", fail)
    failed = api.client.get("/v1/members/BANKA", headers=api.headers(Role.analyst))
    _assert_answered_and_logged(failed, logs, route="/v1/members/{reference}",
                                exception="RuntimeError <- KeyError", frame="fail")


def test_uvicorn_does_not_log_the_failure_again(api: ApiNode, logs: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Served by uvicorn, whose loggers are left to propagate here (log_config=None): it logged "Exception in ASGI
    application" with the traceback, message included, for any failure the app raised on."""
    monkeypatch.setattr("node.api.routes.members.governance.find_member", _fail)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(api.node), port=port, log_config=None, access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        failed = httpx.get(f"http://127.0.0.1:{port}/v1/members/BANKA", headers=api.headers(Role.analyst))
        ok = httpx.get(f"http://127.0.0.1:{port}/health")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    _assert_answered_and_logged(failed, logs, route="/v1/members/{reference}", exception="KeyError", frame="_fail")
    assert ok.status_code == 200
