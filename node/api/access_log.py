"""One access-log line per request, naming the route it matched, never the path or query it was sent with.

A customer's phone number or ID number typed where the API expects an indicator hash (`/v1/fraud/indicators/138...`)
or put in a query would otherwise sit in clear in every log the line reaches, as it did in uvicorn's own access log
(node.server turns that one off). A line reads `127.0.0.1:51234 - "GET /v1/fraud/indicators/{indicator} HTTP/1.1"
422 3.1ms`; a path no route matched is UNMATCHED.
"""

from __future__ import annotations

import logging
import time

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


class AccessLog:
    """Pure ASGI middleware: logs method, route template, status, duration and client address at INFO once the
    answer is sent (500 for a failure that escaped the app, `-` for a request abandoned before any answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            status = status or 500  # Starlette answers 500 and raises it on, for the server to log its traceback
            raise
        finally:
            if logger.isEnabledFor(logging.INFO):
                self._log(scope, status, time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, status: int | None, seconds: float) -> None:
        client = scope.get("client")
        logger.info('%s - "%s %s HTTP/%s" %s %.1fms', f"{client[0]}:{client[1]}" if client else "-", scope["method"],
                    route_template(scope), scope.get("http_version", "1.1"), status if status is not None else "-",
                    seconds * 1000)
