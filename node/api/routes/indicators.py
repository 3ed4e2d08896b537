"""`/v1/fraud/indicators` (a filtered listing), `/v1/fraud/indicators/{hash}` (one indicator's history and state)
and `/v1/fraud/export` (STIX 2.1, whole or incremental)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from node.api.deps import NEXT_CHANGED_SINCE_HEADER, NEXT_PAGE_HEADER, NodeDep, SessionDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.ledger.checks import ledger_address, state_policy
from node.ledger.indicator_search import DEFAULT_LIMIT, MAX_STORED_INT, SearchRequest, search_indicators
from node.ledger.mirror import indicator_history, mirror_status
from node.ledger.reactions import parse_indicator
from node.ledger.stix import DEFAULT_PAGE, MAX_PAGE, export_page, previous_pull_time

router = APIRouter(prefix="/fraud", tags=["fraud"])
# Unix seconds and block numbers the store can bind: a larger one is refused as a malformed query (422).
StoredInt = Annotated[int | None, Query(ge=0, le=MAX_STORED_INT)]
ReaderKey = Annotated[KeyInfo, Depends(require_roles(Role.analyst, Role.auditor))]


class IndicatorStateOut(BaseModel):
    indicator: str
    identifier_type: int | None
    active: bool
    categories: list[str]
    reporters: list[int]
    reporter_count: int
    endorsers: list[int]
    confidence: int
    disputed: bool
    revoked: bool
    first_reported: int | None
    last_reported: int | None
    valid_from: int | None
    valid_until: int | None


class IndicatorListItemOut(IndicatorStateOut):
    status: str = Field(description="revoked, disputed, active or expired (docs/fraud-ledger.md)")


class IndicatorListOut(BaseModel):
    indicators: list[IndicatorListItemOut]
    next_after: str | None = Field(description="`after` of the next page; null on the last")
    evaluated_at: int = Field(description="Unix time the states were derived at")
    as_of_block: int
    lag_s: float | None
    stale: bool
    next_changed_since_block: int = Field(description="`changed_since_block` of the next incremental listing")


class RecordOut(BaseModel):
    batch_id: int
    position: int
    reporter_member_id: int
    identifier_type: int
    category: int
    confidence: int
    valid_from: int
    valid_until: int
    epoch: int
    evidence_hash: str
    case_ref_hash: str
    tx_hash: str
    block_number: int
    log_index: int
    published_at: int


class ReactionOut(BaseModel):
    kind: str
    member_id: int
    batch_id: int | None
    value: int
    at: int
    block_number: int
    log_index: int
    tx_hash: str


class IndicatorHistoryOut(BaseModel):
    indicator: str
    state: IndicatorStateOut
    records: list[RecordOut]
    reactions: list[ReactionOut]
    evaluated_at: int = Field(description="Unix time the state was derived at")
    as_of_block: int
    stale: bool


@router.get("/indicators", response_model=IndicatorListOut)
def list_indicators(*, node: NodeDep, session: SessionDep, _: ReaderKey, category: str | None = None,
                    identifier_type: str | None = None, reporter: str | None = None,
                    reported_since: StoredInt = None, reported_until: StoredInt = None, state: str | None = None,
                    min_confidence: Annotated[int | None, Query(ge=0, le=100)] = None,
                    changed_since_block: StoredInt = None, after: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_LIMIT) -> dict[str, Any]:
    """The mirror's indicators with their state now, filtered, in indicator byte order, a page at a time."""
    request = SearchRequest(category, identifier_type, reporter, reported_since, reported_until, state,
                            min_confidence, changed_since_block)
    page = search_indicators(node, session, request, after=parse_indicator(after) if after is not None else None,
                             limit=limit)
    return page.to_json()


@router.get("/indicators/{indicator}", response_model=IndicatorHistoryOut)
def read_indicator(*, indicator: str, node: NodeDep, session: SessionDep, _: ReaderKey) -> dict[str, Any]:
    """Every record and reaction of one indicator, in chain order, and its state now."""
    at = int(time.time())
    history = indicator_history(session, parse_indicator(indicator), at=at, policy=state_policy(node))
    status = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    return {**history.to_json(), "evaluated_at": at, "as_of_block": status.as_of_block, "stale": status.stale}


@router.get("/export")
def read_export(*, node: NodeDep, session: SessionDep, _: Annotated[KeyInfo, Depends(require_roles(Role.analyst))],
                include_inactive: bool = False, after: str | None = None, changed_since_block: StoredInt = None,
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE) -> JSONResponse:
    """A STIX 2.1 bundle of the next `limit` indicators after `after` (with `changed_since_block`, only those with a
    record or reaction since, or a change of state no block marks since the previous pull: a validity ending, a
    dispute lapsing); the next cursor is in X-Next-After, the next pull's block in
    X-Next-Changed-Since-Block."""
    # Read before the indicators: a block indexed meanwhile is pulled again next time rather than never.
    status = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    page = export_page(session, at=int(time.time()), policy=state_policy(node), include_inactive=include_inactive,
                       after=parse_indicator(after) if after is not None else None, limit=limit,
                       changed_since_block=changed_since_block,
                       changed_since_time=None if changed_since_block is None
                       else previous_pull_time(session, changed_since_block))
    headers = {NEXT_CHANGED_SINCE_HEADER: str(status.as_of_block + 1)}
    if page.next_after is not None:
        headers[NEXT_PAGE_HEADER] = page.next_after.hex()
    # A plain JSONResponse: FastAPI's encoder would walk tens of thousands of objects again.
    return JSONResponse(page.bundle, headers=headers)
