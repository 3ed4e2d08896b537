"""`/v1/node/...`: operator routes — the node's own state (outbox, publisher, mirror, keys) and re-publication."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select

from node.api.deps import NodeDep, SessionDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.ledger.checks import ledger_address
from node.ledger.mirror import mirror_status
from node.ledger.republish import republish
from node.store.ledger_tables import OutboxRecord, PublishBatch

router = APIRouter(prefix="/node", tags=["operations"])

Operator = Annotated[KeyInfo, Depends(require_roles(Role.operator))]


@router.get("/status")
def read_node_status(*, node: NodeDep, session: SessionDep, request: Request, key: Operator) -> dict[str, Any]:
    """Outbox and publish-batch counts by state, the mirror's position and lag, key epochs held, workers."""
    outbox = dict(session.execute(select(OutboxRecord.state, func.count()).group_by(OutboxRecord.state)).all())
    batches = dict(session.execute(select(PublishBatch.state, func.count()).group_by(PublishBatch.state)).all())
    mirror = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    workers = request.app.state.workers
    return {"bank_code": node.settings.bank_code, "outbox": outbox, "publish_batches": batches,
            "mirror": mirror.to_json(), "key_epochs_held": sorted(node.keyring.keys()),
            "workers": workers.status() if workers is not None else {}}


@router.post("/republish")
def create_republication(*, node: NodeDep, key: Operator) -> dict[str, int]:
    """Queue the bank's still-valid reports under the newest key epoch (after a rotation)."""
    result = republish(node)
    return {"epoch": result.epoch, "reports": result.reports, "records": result.records}
