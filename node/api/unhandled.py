"""A failure no error handler maps (a bug in a bank's plugin route, a library error the node did not foresee):
answered 500 `internal_error` with a reference id, and logged once, without its message.

Starlette answers such a failure and raises it on to the server, whose log line ("Exception in ASGI application")
holds the full traceback, message included; `ValueError(f"bad phone {phone}")` put the customer's phone number in
the node's log. This middleware ends the failure here: one ERROR line naming the reference id, the route template,
the exception's type (and those of its causes) and the file:line of each frame, never the message or any value.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from types import TracebackType

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.api.access_log import route_template
from node.api.errors import ErrorResponse, error_body

logger = logging.getLogger(__name__)

# Causes listed in the log line at most: a chain longer than this is a loop or a bug of its own.
MAX_CAUSES = 5
_INSTALLED = "site-packages/"


def new_reference() -> str:
    """A random id for one failure, which the caller quotes to the operator: nothing of the request is in it."""
    return secrets.token_hex(8)


def exception_types(exc: BaseException) -> str:
    """`exc`'s qualified type, then those of what it was raised from or during (`a.B <- c.D`)."""
    names: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(names) <= MAX_CAUSES:
        seen.add(id(current))
        kind = type(current)
        names.append(kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return " <- ".join(names)


def traceback_frames(tb: TracebackType | None) -> str:
    """Each frame of `tb` as file:line in function, outermost first (the failing line last, as in a traceback): no
    source text, no local values. An installed library's file is named from its package (`starlette/routing.py`)."""
    return "; ".join(f"{frame.filename.rpartition(_INSTALLED)[2]}:{frame.lineno} in {frame.name}"
                     for frame in traceback.extract_tb(tb))


class UnhandledErrors:
    """Pure ASGI middleware, outermost: nothing it catches reaches Starlette's ServerErrorMiddleware or the server.

    A failure after the answer started (a streamed body) is logged the same way; the server then closes the
    connection of an answer left unfinished."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception as exc:
            reference = new_reference()
            logger.error("unhandled error, reference %s: %s %s raised %s; traceback: %s", reference,
                         scope.get("method", "-"), route_template(scope), exception_types(exc),
                         traceback_frames(exc.__traceback__))
            if not started:
                answer = ErrorResponse(error_body(
                    "internal_error", "the node could not answer this request; give its operator the reference",
                    reference=reference), status_code=500)
                await answer(scope, receive, send)
