"""Mounting the API routes that extensions contribute (`alliance_api_routers`) under /v1."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from node.api.deps import roles_of
from node.extensions.manager import extensions_for

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before 0.137 copies an included router's routes, each with all its dependencies

    def iter_route_contexts(routes: Any) -> Iterator[Any]:  # type: ignore[misc]
        return iter(routes)

logger = logging.getLogger(__name__)

PREFIX = "/v1"


def install_extension_routes(app: FastAPI, node: Any, *, dependencies: Sequence[Any],
                             responses: dict[int | str, dict[str, Any]] | None = None) -> list[str]:
    """Include every contributed router behind `dependencies` (the API-key check), documenting `responses` (the
    errors every route may answer) on each of its routes; returns the mounting modules.

    A module whose hook fails, or answers with something other than routers, contributes nothing (logged). So does
    a module with any route that checks no role (`require_roles`): behind the API-key check alone it would answer
    every valid key, an auditor's as well as a workflow's, and a route that forgot its roles must not be open.
    """
    mountable, problems = contributed_routers(node)
    for module, problem in problems.items():
        logger.warning("extension %s: %s", module, problem)
    for _module, routers in mountable:
        for router in routers:
            app.include_router(router, prefix=PREFIX, dependencies=list(dependencies), responses=responses)
    return [module for module, _ in mountable]


def contributed_routers(node: Any) -> tuple[list[tuple[str, list[APIRouter]]], dict[str, str]]:
    """The routers each module may mount, and why a module's are refused (module -> problem), from one call of
    `alliance_api_routers`; `alliance extensions list` shows the problems too, not only the node's log."""
    outcome = extensions_for(node).call("alliance_api_routers", expect=list)
    mountable: list[tuple[str, list[APIRouter]]] = []
    problems = {failure.module: f"alliance_api_routers failed ({failure.error}): no routes mounted"
                for failure in outcome.failures}
    for module, routers in outcome.results:
        if not all(isinstance(r, APIRouter) for r in routers):
            problems[module] = "alliance_api_routers answered something other than APIRouters: no routes mounted"
            continue
        unchecked = _routes_without_role_check(routers)
        if unchecked:  # none of the module's routes: half a module would answer some calls and 404 others
            problems[module] = (f"its routes are not mounted: {', '.join(unchecked)} check no role "
                                "(require_roles)")
            continue
        mountable.append((module, list(routers)))
    return mountable, problems


def _routes_without_role_check(routers: Iterable[APIRouter]) -> list[str]:
    """The paths (as mounted) of routes that do not declare a role check themselves, or through the router that
    declares them: FastAPI serves a plain Starlette route or a mount without any dependency. Roles given only where
    a router is included count as none, since `caller_refusal` cannot see them: a wrong role would be told how its
    body is bad (422) before being refused (403)."""
    scratch = APIRouter()  # walks routers included in routers, and gives each route its path under /v1
    for router in routers:
        scratch.include_router(router, prefix=PREFIX)
    unchecked = []
    for route in iter_route_contexts(scratch.routes):
        declared = getattr(route, "original_route", route)
        dependant = getattr(declared, "dependant", None)
        if dependant is None or roles_of(dependant) is None:
            unchecked.append(str(getattr(route, "path", None) or route))
    return unchecked
