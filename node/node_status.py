"""What a node's store says about its own work: outbox and batch counts, the mirror's position, key epochs held.

Shared by `GET /v1/node/status` and `alliance node status` (`current_status`: one builder, so that the two answer the
same keys; the API lacked `oldest_queued_report_at` when each assembled its own) and `GET /v1/node/metrics`
(Prometheus).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.ledger.checks import ledger_address
from node.ledger.mirror import MirrorStatus, mirror_status
from node.runtime import NodeContext
from node.signer_rotation import prepared_signer
from node.signer_switch import UnusableSigningKey, unusable_signing_key
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
        oldest = self.oldest_queued_at.isoformat() if self.oldest_queued_at else None
        return {"outbox": self.outbox, "publish_batches": self.batches, "oldest_queued_report_at": oldest,
                "mirror": self.mirror.to_json(), "key_epochs_held": self.key_epochs}


@dataclass(frozen=True)
class NodeStatus:
    """What `GET /v1/node/status` and `alliance node status` show of a node, whether or not it runs (the API adds its
    background loops)."""

    bank_code: str
    figures: StoreFigures
    next_signer_prepared: str | None  # the address of a next signing key prepared and not yet activated
    signing_key_unusable: UnusableSigningKey | None  # an activated signing key the running node could not open

    def to_json(self) -> dict[str, object]:
        unusable = self.signing_key_unusable
        return {"bank_code": self.bank_code, **self.figures.to_json(),
                "next_signer_prepared": self.next_signer_prepared,
                "signing_key_unusable": unusable.to_json() if unusable else None}


def current_status(node: NodeContext, session: Session) -> NodeStatus:
    return NodeStatus(node.settings.bank_code, store_figures(node, session), prepared_signer(node.settings),
                      unusable_signing_key(node.settings))


def store_figures(node: NodeContext, session: Session) -> StoreFigures:
    outbox = dict(session.execute(select(OutboxRecord.state, func.count()).where(accepted(OutboxRecord.import_id))
                                  .group_by(OutboxRecord.state)).all())
    # Records of imports still staging (or being discarded): not in the outbox yet, and perhaps never.
    staged = session.scalar(select(func.count()).select_from(OutboxRecord).where(
        OutboxRecord.import_id.is_not(None), ~accepted(OutboxRecord.import_id)))
    if staged:
        outbox["staged"] = staged
    batches = dict(session.execute(select(PublishBatch.state, func.count()).group_by(PublishBatch.state)).all())
    # On PostgreSQL one probe of the partial index ix_outbox_records_queued_at, however many records a republish
    # queued; SQLite's planner (no statistics) reads the queued rows through ix_outbox_records_state_id instead.
    oldest_queued_at = session.scalar(select(func.min(OutboxRecord.queued_at))
                                      .where(OutboxRecord.state == "queued", accepted(OutboxRecord.import_id)))
    mirror = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    epochs = list(session.scalars(select(AllianceKey.epoch).order_by(AllianceKey.epoch)))
    return StoreFigures(outbox, batches, oldest_queued_at, mirror, epochs)
