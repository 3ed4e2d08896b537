"""`/v1/fraud/indicators/{hash}` (one indicator's history and state) and `/v1/fraud/export` (STIX 2.1)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from node.api.deps import NEXT_PAGE_HEADER, NodeDep, SessionDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.ledger.checks import ledger_address, state_policy
from node.ledger.mirror import indicator_history, mirror_status
from node.ledger.reactions import parse_indicator
from node.ledger.stix import DEFAULT_PAGE, MAX_PAGE, export_page

router = APIRouter(prefix="/fraud", tags=["fraud"])



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


@router.get("/indicators/{indicator}", response_model=IndicatorHistoryOut)
def read_indicator(*, indicator: str, node: NodeDep, session: SessionDep,
                   _: Annotated[KeyInfo, Depends(require_roles(Role.analyst, Role.auditor))]) -> dict[str, Any]:
    """Every record and reaction of one indicator, in chain order, and its state now."""
    at = int(time.time())
    history = indicator_history(session, parse_indicator(indicator), at=at, policy=state_policy(node))
    status = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    return {**history.to_json(), "evaluated_at": at, "as_of_block": status.as_of_block, "stale": status.stale}


@router.get("/export")
def read_export(*, node: NodeDep, session: SessionDep, _: Annotated[KeyInfo, Depends(require_roles(Role.analyst))],
                include_inactive: bool = False, after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE) -> JSONResponse:
    """A STIX 2.1 bundle of the next `limit` indicators after `after`; the next cursor is in X-Next-After."""
    page = export_page(session, at=int(time.time()), policy=state_policy(node), include_inactive=include_inactive,
                       after=parse_indicator(after) if after is not None else None, limit=limit)
    headers = {NEXT_PAGE_HEADER: page.next_after.hex()} if page.next_after is not None else {}
    # A plain JSONResponse: FastAPI's encoder would walk tens of thousands of objects again.
    return JSONResponse(page.bundle, headers=headers)
