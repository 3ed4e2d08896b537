"""Routes contributed by extensions (`alliance_api_routers`) are mounted only when every one checks the caller's
role: a route without `require_roles` would answer any valid key, an auditor's or an analyst's alike."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from node.api.app import create_app
from node.api.deps import current_key, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.extensions import hookimpl
from node.extensions.manager import ExtensionManager, use_extensions
from node.extensions.routes import install_extension_routes
from tests.api.conftest import ApiNode

Workflow = Annotated[KeyInfo, Depends(require_roles(Role.workflow))]


def _guarded_router(prefix: str = "/guarded") -> APIRouter:
    router = APIRouter(prefix=prefix)

    @router.get("/ping")
    def ping(*, key: Workflow) -> dict[str, str]:
        return {"role": key.role}

    return router


def _router_level_guarded_router() -> APIRouter:
    """Roles declared once for the router that declares the routes: each route checks them."""
    router = APIRouter(prefix="/router-level", dependencies=[Depends(require_roles(Role.workflow))])

    @router.get("/ping")
    def ping() -> dict[str, bool]:
        return {"checked": True}

    return router


def _include_level_router() -> APIRouter:
    """Roles declared only by a router that includes the one declaring the route: FastAPI checks them, but only
    after parsing the body, so that a wrong role would hear how its body is bad before the 403."""
    outer = APIRouter(prefix="/include-level", dependencies=[Depends(require_roles(Role.workflow))])
    inner = APIRouter()

    @inner.post("/do")
    def do(*, body: dict[str, int]) -> dict[str, int]:
        return body

    outer.include_router(inner)
    return outer


def _open_router() -> APIRouter:
    """One route with a role check and one that forgot it."""
    router = APIRouter(prefix="/half-open")

    @router.get("/checked")
    def checked(*, key: Workflow) -> dict[str, bool]:
        return {"checked": True}

    @router.get("/unchecked")
    def unchecked(*, key: Annotated[KeyInfo, Depends(current_key)]) -> dict[str, bool]:
        return {"checked": False}

    return router


def _raw_router() -> APIRouter:
    """A plain Starlette route: FastAPI mounts it without any dependency, not even the API-key check."""
    router = APIRouter()

    def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no key asked")

    router.add_route("/raw-ping", endpoint)
    return router


class Contributes:
    def __init__(self, *routers: APIRouter) -> None:
        self.routers = list(routers)

    @hookimpl
    def alliance_api_routers(self) -> list[Any]:
        return self.routers


def _paths(app: FastAPI) -> set[str]:
    return {str(r.path) for r in iter_route_contexts(app.routes) if str(r.path).startswith("/v1/")}


@pytest.fixture
def plugin_app(api: ApiNode) -> TestClient:
    manager = ExtensionManager(extra_plugins={
        "guarded": Contributes(_guarded_router(), _router_level_guarded_router()),
        "half_open": Contributes(_guarded_router("/also-guarded"), _open_router()),
        "raw": Contributes(_raw_router()), "include_level": Contributes(_include_level_router())})
    use_extensions(api.node, manager)
    return TestClient(create_app(api.node))


def test_mount_extension_routes_refuses_module_with_route_lacking_role_check(api: ApiNode,
                                                                          plugin_app: TestClient) -> None:
    paths = _paths(plugin_app.app)  # type: ignore[arg-type]
    assert {"/v1/guarded/ping", "/v1/router-level/ping"} <= paths
    # None of the module's routes, not even those that check a role: no half a module.
    assert not {"/v1/also-guarded/ping", "/v1/half-open/checked", "/v1/half-open/unchecked"} & paths
    for path in ("/v1/half-open/unchecked", "/v1/half-open/checked", "/v1/also-guarded/ping"):
        assert plugin_app.get(path, headers=api.headers(Role.auditor)).status_code == 404
    assert plugin_app.get("/v1/raw-ping").status_code == 404  # no key at all
    assert "/v1/include-level/do" not in paths
    bad_body = plugin_app.post("/v1/include-level/do", content="{", headers={**api.headers(Role.auditor),
                                                                             "Content-Type": "application/json"})
    assert bad_body.status_code == 404


def test_mount_extension_routes_logs_module_and_route(api: ApiNode, caplog: pytest.LogCaptureFixture) -> None:
    use_extensions(api.node, ExtensionManager(enabled=["half_open", "raw", "include_level"], extra_plugins={
        "half_open": Contributes(_open_router()), "raw": Contributes(_raw_router()),
        "include_level": Contributes(_include_level_router())}))
    with caplog.at_level("WARNING", logger="node.extensions.routes"):
        mounted = install_extension_routes(FastAPI(), api.node, dependencies=[Depends(current_key)])
    assert mounted == []
    assert "extension half_open" in caplog.text and "/v1/half-open/unchecked" in caplog.text
    assert "/v1/half-open/checked" not in caplog.text
    assert "extension raw" in caplog.text and "/v1/raw-ping" in caplog.text
    assert "extension include_level" in caplog.text and "/v1/include-level/do" in caplog.text


def test_extension_route_of_workflow_refuses_auditor(api: ApiNode, plugin_app: TestClient) -> None:
    refused = plugin_app.get("/v1/guarded/ping", headers=api.headers(Role.auditor))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert plugin_app.get("/v1/guarded/ping").status_code == 401
    allowed = plugin_app.get("/v1/guarded/ping", headers=api.headers(Role.workflow))
    assert allowed.status_code == 200 and allowed.json() == {"role": "workflow"}
    refused = plugin_app.get("/v1/router-level/ping", headers=api.headers(Role.analyst))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert plugin_app.get("/v1/router-level/ping", headers=api.headers(Role.workflow)).json() == {"checked": True}


def test_mount_extension_routes_mounts_every_builtin_route(api: ApiNode) -> None:
    app = FastAPI()
    mounted = install_extension_routes(app, api.node, dependencies=[Depends(current_key)])
    assert mounted == ["credit_platform", "marketing", "abs_factory", "risk_operations"]
    assert _paths(app) == {"/v1/applications", "/v1/applications/{application_id}",
                           "/v1/applications/{application_id}/book", "/v1/applications/{application_id}/fraud",
                           "/v1/loans/{loan_reference:path}/status", "/v1/abs-factory/eligible",
                           "/v1/abs-factory/pools", "/v1/marketing/prescreen", "/v1/alerts", "/v1/alerts/{alert_id}"}


def test_extensions_list_says_which_modules_routes_are_not_mounted(api: ApiNode) -> None:
    """A refused module was told only in the node's log: `alliance extensions list` showed it loaded and well."""
    from typer.testing import CliRunner

    from alliance_cli.main import app

    manager = ExtensionManager(extra_plugins={"guarded": Contributes(_guarded_router()),
                                              "half_open": Contributes(_open_router())})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("alliance_cli.commands.extensions.extensions_for", lambda _node: manager)
        patch.setattr("node.extensions.routes.extensions_for", lambda _node: manager)
        listed = CliRunner().invoke(app, ["--data-dir", str(api.node.settings.data_dir), "extensions", "list",
                                          "--json"])
        table = CliRunner().invoke(app, ["--data-dir", str(api.node.settings.data_dir), "extensions", "list"])
    assert listed.exit_code == 0, listed.output
    problems = {e["name"]: e["problem"] for e in json.loads(listed.output)}
    assert problems["guarded"] is None and problems["credit_platform"] is None
    assert problems["half_open"] == ("its routes are not mounted: /v1/half-open/unchecked check no role "
                                     "(require_roles)")
    assert table.exit_code == 0 and "(require_roles)" in table.output  # the table wraps the rest
