"""The error answers as the OpenAPI document shows them.

Every refusal and failure is `{"error": {"code": ..., "message": ...}}` (node.api.errors). FastAPI documents its own
422 body instead (`{"detail": [...]}`, which this node never sends) and no other error status, so a client generated
from the document read none of the node's errors.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # a refusal may add fields of its own

    code: str = Field(description="Machine-readable reason: `unauthorized`, `forbidden`, `invalid_request`, "
                                  "`checksum_failed`, `not_found`, `chain_unavailable`, ...")
    message: str = Field(description="One readable sentence; it never quotes a customer identifier.")
    details: list[Any] | None = Field(default=None, description="Per item, row or field problems (at most 10,000).")
    details_omitted: int | None = Field(default=None, description="How many problems past those listed.")
    contract_error: str | None = Field(default=None, description="`contract_revert`: the contract's custom error.")
    arguments: dict[str, Any] | None = Field(default=None, description="`contract_revert`: that error's arguments.")
    reference: str | None = Field(default=None, description="`internal_error`: the id of its line in the node's log.")


class ErrorOut(BaseModel):
    error: ErrorInfo


def _answered(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


# Every /v1 route (an extension's too) can answer each of these.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _answered("No `X-API-Key`, or a key this node does not know or has revoked (`unauthorized`)."),
    403: _answered("The key's role may not use this route (`forbidden`), or the chain refuses a write from a bank "
                   "that is not an active member (`contract_revert`)."),
    413: _answered("The body is larger than this node takes (`request_too_large`, setting `max_request_bytes`)."),
    422: _answered("Invalid input, nothing changed: `invalid_request` (the body, path or query does not match the "
                   "schema; one `details` entry per problem) or the node's own reason code (`checksum_failed`, "
                   "`invalid_confidence`, `invalid_cursor`, ...)."),
    "4XX": _answered("Another refusal, nothing changed: 400 `malformed_body`, 404 for what does not exist, 409 for "
                     "a request that conflicts with the state of the node or the chain."),
    500: _answered("`internal_error`: an unforeseen failure, logged under `reference`."),
    503: _answered("The node's database or the chain is unavailable (`store_unavailable`, `chain_unavailable`, "
                   "`chain_error`, `contracts_not_deployed`): try again later."),
}
