"""One error shape for every API failure: `{"error": {"code": "...", "message": "..."}}`.

Domain and chain errors become HTTP responses only here, at the edge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from node.chain.errors import ChainError, ChainUnavailable, ContractNotDeployed, ContractRevert, UnknownRevert
from node.errors import AllianceError
from node.store.db import STORE_LOST, StoreUnavailable
from node.text import MAX_QUOTED_CHARS, location_shown

logger = logging.getLogger(__name__)

# Request values shorter than this stay in a refusal's message: a pool id, a version or a limit of a digit or two
# may stand in it for other text too, and no personal identifier the node takes is that short.
MIN_REDACTED_VALUE = 4

# The most per-item problems an answer lists: every row of the largest request that has rows (10,000 bulk reports).
# Past it a refusal would grow with the body, not the request's meaning: a 1 MB loan tape of bad rows answered 65 MB
# of details, and 2 MB of invalid list items 100 MB, built and encoded in the event loop.
MAX_DETAILS = 10_000

# AllianceRegistryNotActiveMember, AllianceRegistryNotActive, FraudLedgerNotMember and AssetRegistryNotMember: each
# contract's way of saying the caller is not an active member (suspended, removed; or never admitted).
_NOT_ACTIVE_MEMBER = ("NotActiveMember", "NotActive", "NotMember")


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def listed_details(details: Sequence[Any]) -> dict[str, Any]:
    """`details` for an error body, at most MAX_DETAILS of them; `details_omitted` counts the rest."""
    listed = {"details": list(details[:MAX_DETAILS])}
    return listed if len(details) <= MAX_DETAILS else {**listed, "details_omitted": len(details) - MAX_DETAILS}


def escaped_json(content: Any) -> bytes:
    """`content` as ASCII-escaped JSON, which renders any string: answers that quote the client's input may hold
    a lone surrogate (a JSON "\\ud800") that UTF-8 cannot encode."""
    return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def request_values_hidden(request: Request) -> Callable[[str], str]:
    """A function replacing, in a message, each path parameter and query value of `request` by `{its name}`.

    Refusals name what was looked up ("no member with id, address or bank code '...'", "no application ...",
    "unknown outcome '...'"), so a phone or ID number typed into the URL came back in the answer, and from there
    into every proxy, gateway and client log that keeps error answers.
    """
    named = [(name, str(value)) for name, value in (*request.path_params.items(), *request.query_params.multi_items())]
    # A long value is quoted cut short (node.text.quoted): its start is hidden as the whole value is.
    names = {form: name for name, value in named for whole in (value, value.strip())
             for form in (whole, whole[:MAX_QUOTED_CHARS]) if len(form) >= MIN_REDACTED_VALUE}
    forms = sorted(names, key=len, reverse=True)  # longest first: one value may hold another

    def hidden(message: str) -> str:
        for form in forms:
            message = message.replace(form, "{" + names[form] + "}")
        return message

    return hidden


def _argument_shown(value: Any, hidden: Callable[[str], str]) -> Any:
    """A contract error's argument as an answer shows it: bytes as 0x-hex, a value the URL gave as its name."""
    text = "0x" + value.hex() if isinstance(value, bytes) else str(value)
    shown = hidden(text)
    return shown if isinstance(value, bytes | str) or shown != text else value  # a number stays one otherwise


class ErrorResponse(JSONResponse):
    """An error body as ASCII-escaped JSON: messages quote the client's input, so a refusal stays a 4xx whatever
    that input holds."""

    def render(self, content: Any) -> bytes:
        return escaped_json(content)


class ApiError(Exception):
    """Raised by dependencies and routes for HTTP-specific refusals (auth, roles)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _answer(exc: ApiError) -> ErrorResponse:
    return ErrorResponse(error_body(exc.code, exc.message), status_code=exc.status)


def install_error_handlers(app: FastAPI, *, caller_refusal: Callable[[Request], ApiError | None] | None = None) -> None:
    """`caller_refusal` (node.api.deps) tells how the key and role checks refuse a request; a refusal made before
    they ran (a body FastAPI could not parse, a NUL in the path) gives way to theirs."""

    async def _caller_first(request: Request, refusal: ErrorResponse) -> ErrorResponse:
        if caller_refusal is None:
            return refusal
        # A store error raised here goes on to the app-wide handlers (503 store_unavailable).
        first = await run_in_threadpool(caller_refusal, request)
        return refusal if first is None else _answer(first)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> ErrorResponse:
        if exc.status in (401, 403):
            return _answer(exc)
        return await _caller_first(request, _answer(exc))

    @app.exception_handler(AllianceError)
    async def _domain_error(request: Request, exc: AllianceError) -> ErrorResponse:
        extra = listed_details(exc.details) if exc.details else {}
        return ErrorResponse(error_body(exc.code, request_values_hidden(request)(str(exc)), **extra),
                             status_code=exc.http_status)

    @app.exception_handler(ContractRevert)
    async def _revert(request: Request, exc: ContractRevert) -> ErrorResponse:
        hidden = request_values_hidden(request)
        arguments = {k: _argument_shown(v, hidden) for k, v in exc.arguments.items()}
        # A suspended bank may not write at all: that is no conflict with the state its write would change.
        status = 403 if exc.error_name.endswith(_NOT_ACTIVE_MEMBER) else 409
        # <Contract>Unknown<Thing>: no such pool, version, batch... is not a conflict. A revert the node cannot decode
        # is named UnknownRevert, and says nothing of what was asked for.
        if "Unknown" in exc.error_name and not isinstance(exc, UnknownRevert):
            status = 404
        return ErrorResponse(error_body("contract_revert", hidden(str(exc)),
                                       contract_error=exc.error_name, arguments=arguments), status_code=status)

    @app.exception_handler(ChainError)
    async def _chain_error(_: Request, exc: ChainError) -> ErrorResponse:
        if isinstance(exc, ContractNotDeployed):
            return ErrorResponse(error_body("contracts_not_deployed", str(exc)), status_code=503)
        code = "chain_unavailable" if isinstance(exc, ChainUnavailable) else "chain_error"
        return ErrorResponse(error_body(code, str(exc)), status_code=503)

    async def _store_unavailable(_: Request, exc: Exception) -> ErrorResponse:
        # The request may succeed later, which is what 503 says (node.store.db.STORE_LOST). The driver's text stays
        # in the log; it names hosts and users.
        logger.warning("store unavailable: %s", str(getattr(exc, "orig", None) or exc).splitlines()[0])
        return ErrorResponse(error_body("store_unavailable", "the node's database is unavailable; try again later"),
                             status_code=503)

    for store_error in (*STORE_LOST, StoreUnavailable):
        app.add_exception_handler(store_error, _store_unavailable)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> ErrorResponse:
        listed = listed_details(exc.errors())
        # Without pydantic's `input` (the value refused, which may be an identifier typed in the wrong place) and
        # `ctx`; a validator's own message may quote the value, too.
        hidden = request_values_hidden(request)
        # A key the client chose (an unknown field) is in `loc`: one that may be an identifier is shown as {key}.
        listed["details"] = [{"loc": location_shown(e.get("loc", ())), "msg": hidden(e.get("msg", "")),
                              "type": e.get("type", "")} for e in listed["details"]]
        return await _caller_first(request, ErrorResponse(error_body(
            "invalid_request", "the request does not match the schema", **listed), status_code=422))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> ErrorResponse:
        # 400 is FastAPI's answer to a body it could not parse at all (nested too deeply for the parser, say).
        code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # With the exception's headers: a 405's Allow lists the methods the path takes (RFC 9110 requires it).
        answer = ErrorResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)
        return await _caller_first(request, answer) if exc.status_code == 400 else answer
