"""One access-log line per request, naming the route it matched, never the path or query it was sent with.

A customer's phone number or ID number typed where the API expects an indicator hash (`/v1/fraud/indicators/138...`)
or put in a query would otherwise sit in clear in every log the line reaches, as it did in uvicorn's own access log
(node.server turns that one off). A line reads `127.0.0.1:51234 - "GET /v1/fraud/indicators/{indicator} HTTP/1.1"
422 3.1ms`; a path no route matched is UNMATCHED. A request answered before routing (a body too large) is named by
the route its path and method would have taken.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "node.api.access"  # operators route or silence the access log by this name
UNMATCHED = "<unmatched>"

logger = logging.getLogger(ACCESS_LOGGER)


def route_template(scope: Scope) -> str:
    """The template of the route that took this request (`/v1/members/{reference}`), or UNMATCHED."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    pattern = getattr(route, "path_regex", None)
    path: str = scope["path"]
    if isinstance(template, str) and pattern is not None:
        # Newer FastAPI gives the route as its router declared it, without the prefix the router was included under
        # ("/v1"): that prefix is what precedes the part of the path the route's own pattern matches, from where
        # the template's fixed head is. The node's include prefixes are fixed text: nothing the caller chose.
        head = template.split("{", 1)[0]
        start = path.find(head)
        while start != -1:
            if pattern.match(path[start:]):
                return path[:start] + template
            start = path.find(head, start + 1)
        return UNMATCHED
    if "endpoint" in scope and not scope.get("path_params"):
        return path  # a route without parameters (/health, /openapi.json): its path is fixed text
    return UNMATCHED


class RouteTemplates:
    """The app's route templates as its OpenAPI document lists them, to name a request answered before it was routed
    (a body refused for its size): FastAPI routes the request only inside the app, after the refusal."""

    def __init__(self, openapi: Callable[[], dict[str, Any]]) -> None:
        self._openapi = openapi
        self._patterns: list[tuple[re.Pattern[str], str, frozenset[str]]] | None = None

    def template(self, method: str, path: str) -> str | None:
        """The template of the route taking `path` with `method` (else with another method: a 405), or None."""
        if self._patterns is None:
            self._patterns = [(re.compile("^" + re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template)) + "$"),
                               template, frozenset(operations)) for template, operations in
                              self._openapi().get("paths", {}).items()]
        found = [(template, methods) for pattern, template, methods in self._patterns if pattern.match(path)]
        return next((t for t, methods in found if method.lower() in methods), found[0][0] if found else None)


class AccessLog:
    """Pure ASGI middleware: logs method, route template, status, duration and client address at INFO once the
    answer is sent (500 for a failure that escaped the app, `-` for a request abandoned before any answer).

    `templates` name the route of a request refused before routing (BodySizeLimit's 413)."""

    def __init__(self, app: ASGIApp, templates: RouteTemplates | None = None) -> None:
        self.app = app
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            status = status or 500  # node.api.unhandled answers it 500 and logs it, outside this middleware
            raise
        finally:
            if logger.isEnabledFor(logging.INFO):
                self._log(scope, self._template(scope), status, time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        if "route" in scope or "endpoint" in scope or self.templates is None:
            return route_template(scope)
        try:
            return self.templates.template(scope["method"], scope["path"]) or UNMATCHED
        except Exception:  # a line naming no route beats no line; the answer itself is unaffected
            logger.debug("no route template for a request answered before routing", exc_info=True)
            return UNMATCHED

    @staticmethod
    def _log(scope: Scope, template: str, status: int | None, seconds: float) -> None:
        client = scope.get("client")
        logger.info('%s - "%s %s HTTP/%s" %s %.1fms', f"{client[0]}:{client[1]}" if client else "-", scope["method"],
                    template, scope.get("http_version", "1.1"), status if status is not None else "-",
                    seconds * 1000)
