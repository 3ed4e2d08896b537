"""`/v1/node/...`: the node's own state (outbox, publisher, mirror, keys) for operators, its metrics for operators
and auditors, and re-publication."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from node.api.deps import NodeDep, SessionDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.ledger.republish import republish
from node.metrics import METRICS_CONTENT_TYPE, render_metrics
from node.node_status import current_status

router = APIRouter(prefix="/node", tags=["operations"])

Operator = Annotated[KeyInfo, Depends(require_roles(Role.operator))]
Monitor = Annotated[KeyInfo, Depends(require_roles(Role.operator, Role.auditor))]


@router.get("/status")
def read_node_status(*, node: NodeDep, session: SessionDep, request: Request, key: Operator) -> dict[str, Any]:
    """Outbox and publish-batch counts by state, when the record queued longest was queued, the mirror's position and
    lag, key epochs held, the address of a next signing key prepared (`alliance key new-signer`) and not yet
    activated, an activated one the node cannot open, workers."""
    workers = request.app.state.workers
    return {**current_status(node, session).to_json(), "workers": workers.status() if workers is not None else {}}


@router.post("/republish")
def create_republication(*, node: NodeDep, key: Operator) -> dict[str, int]:
    """Queue the bank's still-valid reports under the newest key epoch (after a rotation)."""
    result = republish(node)
    return {"epoch": result.epoch, "reports": result.reports, "records": result.records}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text format"}})
def read_metrics(*, node: NodeDep, request: Request, key: Monitor) -> Response:
    """Prometheus metrics: outbox and batch counts, the mirror's block and lag, key epochs, background loops.
    For a read-only scraper, use an auditor key (X-API-Key, or `Authorization: Bearer`)."""
    workers = request.app.state.workers
    body = render_metrics(node, workers.status() if workers is not None else {}, version=request.app.version)
    return Response(body, media_type=METRICS_CONTENT_TYPE)
