"""What a node's store says about its own work: outbox and batch counts, the mirror's position, key epochs held.

Shared by `GET /v1/node/status` (JSON for operators) and `GET /v1/node/metrics` (Prometheus).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.ledger.checks import ledger_address
from node.ledger.mirror import MirrorStatus, mirror_status
from node.runtime import NodeContext
from node.store.ledger_tables import AllianceKey, OutboxRecord, PublishBatch, accepted


@dataclass(frozen=True)
class StoreFigures:
    outbox: dict[str, int]  # records by state; "staged": written by imports not complete
    batches: dict[str, int]  # publish batches by state
    oldest_queued_at: datetime | None  # when the record queued longest (accepted, not staged) entered the queue
    mirror: MirrorStatus
    key_epochs: list[int]  # held, oldest first

    def to_json(self) -> dict[str, object]:
        """The figures as `GET /v1/node/status` and `alliance node status --json` give them."""
        return {"outbox": self.outbox, "publish_batches": self.batches, "mirror": self.mirror.to_json(),
                "key_epochs_held": self.key_epochs}


def store_figures(node: NodeContext, session: Session) -> StoreFigures:
    outbox = dict(session.execute(select(OutboxRecord.state, func.count()).where(accepted(OutboxRecord.import_id))
                                  .group_by(OutboxRecord.state)).all())
    # Records of imports still staging (or being discarded): not in the outbox yet, and perhaps never.
    staged = session.scalar(select(func.count()).select_from(OutboxRecord).where(
        OutboxRecord.import_id.is_not(None), ~accepted(OutboxRecord.import_id)))
    if staged:
        outbox["staged"] = staged
    batches = dict(session.execute(select(PublishBatch.state, func.count()).group_by(PublishBatch.state)).all())
    # One probe of the partial index ix_outbox_records_queued_at, however many records a republish queued.
    oldest_queued_at = session.scalar(select(func.min(OutboxRecord.queued_at))
                                      .where(OutboxRecord.state == "queued", accepted(OutboxRecord.import_id)))
    mirror = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    epochs = list(session.scalars(select(AllianceKey.epoch).order_by(AllianceKey.epoch)))
    return StoreFigures(outbox, batches, oldest_queued_at, mirror, epochs)
