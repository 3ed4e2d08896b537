"""`/v1/alerts`: post-loan risk alerts (an own borrower appeared in the alliance ledger) and their resolution."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from node.api.deps import NEXT_PAGE_HEADER, NodeDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.json_numbers import JsonInt
from node.modules import risk_operations

router = APIRouter(prefix="/alerts", tags=["alerts"])

Reader = Annotated[KeyInfo, Depends(require_roles(Role.analyst, Role.workflow))]
Analyst = Annotated[KeyInfo, Depends(require_roles(Role.analyst))]
AlertId = Annotated[int, Path(ge=1, le=risk_operations.MAX_ALERT_ID)]


class ResolveIn(BaseModel):
    action: Literal["confirm", "dismiss"]
    category: str = Field(default="first_party_fraud")
    confidence: JsonInt = Field(default=90, ge=0, le=100)


@router.get("")
def list_alerts(*, node: NodeDep, key: Reader, response: Response, state: str | None = None,
                after: Annotated[int | None, Query(ge=1, le=risk_operations.MAX_ALERT_ID, description=(
                    "The previous page's X-Next-After: alerts older than it."))] = None,
                limit: Annotated[int, Query(ge=1, le=risk_operations.MAX_ALERTS_PAGE)]
                = risk_operations.DEFAULT_ALERTS_PAGE) -> list[dict[str, Any]]:
    """Alerts, newest first, a page at a time; X-Next-After continues while more follow."""
    page = risk_operations.alerts_page(node, state=state, after=after, limit=limit)
    if page.next_after is not None:
        response.headers[NEXT_PAGE_HEADER] = str(page.next_after)
    return page.alerts


@router.post("/{alert_id}")
def resolve_alert(*, alert_id: AlertId, body: ResolveIn, node: NodeDep, key: Analyst) -> dict[str, Any]:
    """Dismiss an alert, or confirm fraud and report the borrower to the ledger in the same step."""
    return risk_operations.resolve_alert(node, alert_id, confirm=body.action == "confirm", by=key.key_id,
                                         category=body.category, confidence=body.confidence)
