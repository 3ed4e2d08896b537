"""`/v1/checks`: check customer identifiers against the alliance's fraud indicators (from the local mirror)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field, field_validator
from pydantic_core import PydanticSerializationError, to_json
from typing_extensions import TypedDict

from node.api.deps import NodeDep, SessionDep, require_roles
from node.api.errors import escaped_json
from node.auth.apikeys import KeyInfo, Role
from node.ledger import checks
from node.ledger.check_log import DEFAULT_LIMIT, MAX_LIMIT, CheckLogQuery, parse_moment, read_check_log_page
from node.ledger.reactions import parse_indicator

router = APIRouter(prefix="/checks", tags=["checks"])


class FastJSONResponse(JSONResponse):
    """JSON rendered by pydantic-core (Rust): a 10,000-result answer in a quarter of `json.dumps`'s time."""

    def render(self, content: Any) -> bytes:
        try:
            return to_json(content)
        except PydanticSerializationError:  # an item's type echoed back holds a lone surrogate (rare): escape it
            return escaped_json(content)


CheckerKey = Annotated[KeyInfo, Depends(require_roles(Role.workflow, Role.analyst))]


# A TypedDict, not a model: validating 10,000 of them into dicts costs about a seventh of building 10,000 models
# (measured ~20 ms against ~2.5 ms a batch), and the route only reads the two strings.
class CheckedIdentifierIn(TypedDict):
    """One identifier to check."""

    type: Annotated[str, Field(description="cn_resident_id, uscc, phone, bank_card, email, device_id or ip")]
    value: Annotated[str, Field(description="The identifier as the customer gave it; normalised by the node.")]


def _counted(most: int) -> Any:
    # Shown in the document, checked by the node itself (json_schema_extra, not min_length/max_length): an empty list
    # is its 422 `no_identifiers`, too many its 413 `too_many_identifiers`, counted before any item is validated.
    return Field(json_schema_extra={"minItems": 1, "maxItems": most},
                 description=f"1 to {most:,} identifiers (more: 413 too_many_identifiers)")


class CheckIn(BaseModel):
    identifiers: list[CheckedIdentifierIn] = _counted(checks.MAX_BATCH)

    @field_validator("identifiers", mode="before")
    @classmethod
    def _at_most_a_batch(cls, value: Any) -> Any:
        # Counted before the items are validated: each invalid item is an error of its own, and 16 MB of them (some
        # 8 million) took minutes and gigabytes to list, in the event loop, before the count was ever looked at.
        if isinstance(value, list) and len(value) > checks.MAX_BATCH:
            raise checks.TooManyIdentifiers(f"{len(value)} identifiers given; at most {checks.MAX_BATCH} per request")
        return value


class IdentityCheckIn(CheckIn):
    identifiers: list[CheckedIdentifierIn] = _counted(checks.MAX_IDENTITY)


class ItemError(BaseModel):
    code: str
    reason: str


class IdentifierResult(BaseModel):
    item: int
    type: str | None = Field(description="the type as given; null for a type that is none (not echoed: it may be "
                                         "the identifier itself, given in the type's place)")
    indicator: str | None = Field(description="0x + hex of the indicator under the current key epoch")
    hit: bool
    categories: list[str]
    reporter_count: int
    confidence: int
    disputed: bool
    error: ItemError | None = Field(default=None, description="batch only: why this identifier was not checked")


class CheckOut(BaseModel):
    results: list[IdentifierResult]
    checked_at: int = Field(description="Unix time the indicators' state was evaluated at")
    as_of_block: int = Field(description="last block in the mirror; -1 before the first sync")
    lag_s: float | None = Field(description="seconds since the mirror last caught up with the chain")
    stale: bool


def _pairs(body: CheckIn) -> list[tuple[str, str]]:
    return [(i["type"], i["value"]) for i in body.identifiers]


# Handlers return a JSON response directly: the outcome is already plain data, and re-validating 10,000 results
# through the response model would cost more than the check itself. The model still documents it.
@router.post("/identity", response_model=CheckOut)
def create_identity_check(*, body: IdentityCheckIn, node: NodeDep, session: SessionDep,
                          key: CheckerKey) -> JSONResponse:
    """Check one applicant's identifiers; any invalid identifier refuses the check (422, its reason code)."""
    return FastJSONResponse(checks.check_identity(node, _pairs(body), key.key_id, session=session).to_json())


@router.post("/batch", response_model=CheckOut)
def create_batch_check(*, body: CheckIn, node: NodeDep, session: SessionDep, key: CheckerKey) -> JSONResponse:
    """Check up to 10,000 identifiers; invalid ones are answered with a per-item error."""
    return FastJSONResponse(checks.check_batch(node, _pairs(body), key.key_id, session=session).to_json())


class CheckLogEntryOut(BaseModel):
    id: int
    key_id: str = Field(description="the API key that asked")
    asked_at: datetime
    kind: str = Field(description="identity or batch")
    checked: int = Field(description="identifiers checked (valid ones)")
    hits: list[str]
    as_of_block: int
    stale: bool
    indicators: list[str] | None = Field(default=None, description="every checked indicator, if asked for")


class CheckLogOut(BaseModel):
    entries: list[CheckLogEntryOut]
    next_before_id: int | None = Field(description="`before_id` of the next (older) page; null on the last")


def _iso_8601(name: str, value: Any) -> Any:
    # Raised through pydantic as the node's own refusal (422 invalid_time), the CLI's for the same text.
    return parse_moment(value, name) if isinstance(value, str) else value


# ISO 8601 only, read as the CLI reads it; not pydantic's default, which takes a number as Unix seconds.
_BOUND = "ISO 8601: 2026-12-01, 2026-12-01T09:30:00+08:00 (UTC unless it names a zone)"
Since = Annotated[datetime | None, BeforeValidator(partial(_iso_8601, "since")), Query(description=_BOUND)]
Until = Annotated[datetime | None, BeforeValidator(partial(_iso_8601, "until")), Query(description=_BOUND)]


@router.get("/log", response_model=CheckLogOut)
def read_log(*, session: SessionDep, _: Annotated[KeyInfo, Depends(require_roles(Role.operator, Role.auditor))],
             key_id: str | None = None, indicator: str | None = None, since: Since = None,
             until: Until = None, hits_only: bool = False, include_indicators: bool = False,
             before_id: Annotated[int | None, Query(ge=1)] = None,
             limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> dict[str, Any]:
    """The query log, newest first: who checked what, when, and what hit (naive times are UTC).

    Filter by key, by indicator (bound such a search by time on a large log: it reads every entry in range),
    by time, or to checks with hits. With `include_indicators` a page ends before 100,000 indicators (batch checks
    hold up to 10,000 each), with fewer entries than `limit`: `next_before_id` says where the next one starts."""
    query = CheckLogQuery(key_id=key_id, indicators=[parse_indicator(indicator)] if indicator is not None else (),
                          since=since, until=until, hits_only=hits_only, before_id=before_id, limit=limit,
                          include_indicators=include_indicators)
    page = read_check_log_page(session, query)
    return {"entries": [e.to_json() for e in page.entries], "next_before_id": page.next_before_id}
