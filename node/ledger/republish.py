"""`alliance ledger republish`: re-hash this bank's active reports under the newest key epoch.

After `alliance key rotate`, indicators published under the old epoch still match (checks hash under
every epoch held), but a member admitted later receives only the keys it is sent, and a compromised
old key should stop mattering. The bank therefore publishes its still-valid reports again under the
new epoch. The raw identifiers come from the vault-encrypted copies kept in the outbox: they never
left the bank, and they are not re-entered by anyone.

Idempotent: a (report, identifier, epoch) is queued at most once (unique in the outbox).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Exists, delete, func, insert, select
from sqlalchemy.orm import Session

from node.chain.errors import ChainUnavailable
from node.crypto.keyed_hash import indicator_hash
from node.crypto.vault import LocalVault
from node.errors import Conflict
from node.ledger.indexer import indexer_for
from node.ledger.keyring import KeyRing
from node.ledger.reports import sealed_identifier_ad
from node.ledger.vocabulary import identifier_type_of
from node.runtime import NodeContext
from node.store.db import Store, once_more_on_conflict
from node.store.ledger_tables import FraudReport, MirrorReaction, OutboxRecord, PublishBatch, accepted
from node.store.models import utcnow

logger = logging.getLogger(__name__)


class NewestKeyMissing(Conflict):
    code = "newest_key_missing"


@dataclass(frozen=True)
class RepublishResult:
    epoch: int
    reports: int
    records: int


def republish(node: NodeContext) -> RepublishResult:
    """`republish_active_reports` for this node, refused while the chain has a newer epoch than the node holds.

    Run on a node whose key worker has not received the newest key yet (a rotation by another member moments ago),
    it would queue nothing, "under" the old epoch, and the operator would believe the reports were republished.
    With the chain unreachable the check is skipped: queuing is local, and the publisher waits for the chain anyway.
    """
    held, _ = node.keyring.current()
    try:
        on_chain = node.registry().current_key_epoch()
    except ChainUnavailable:
        on_chain = held
    if on_chain > held:
        raise NewestKeyMissing(f"the chain is at key epoch {on_chain} and this node holds keys up to epoch {held}: "
                               "run `alliance key sync` (or wait for the node's key worker), then republish")
    _sync_mirror(node)
    return republish_active_reports(node.store, node.keyring, node.vault)


def _sync_mirror(node: NodeContext) -> None:
    """Bring the mirror up to the chain first: the revocations it holds keep withdrawn reports out of the republish
    (see `_revoked_on_chain`). Without the chain the mirror is taken as it is: queuing is local."""
    try:
        indexer_for(node).sync()
    except ChainUnavailable as exc:
        logger.warning("republish: the mirror was not synced, the chain is unreachable (%s)", exc)


def republish_active_reports(store: Store, keyring: KeyRing, vault: LocalVault, *,
                             now: int | None = None) -> RepublishResult:
    """Queue every identifier of every still-valid, not withdrawn report that has no record under the newest epoch
    yet."""
    epoch, key = keyring.current()
    now = int(now if now is not None else time.time())
    # Another republish (a second `alliance ledger republish`) may queue some of them first; queuing again skips
    # those.
    records = once_more_on_conflict(lambda: _queue_records(store, vault, epoch, key, now))
    return RepublishResult(epoch, len({r["report_id"] for r in records}), len(records))


def _queue_records(store: Store, vault: LocalVault, epoch: int, key: bytes, now: int) -> list[dict[str, Any]]:
    with store.transaction() as session:
        newest = (select(OutboxRecord.report_id, OutboxRecord.position, func.max(OutboxRecord.epoch).label("epoch"))
                  .group_by(OutboxRecord.report_id, OutboxRecord.position).subquery())
        rows = session.execute(
            select(OutboxRecord.report_id, OutboxRecord.position, OutboxRecord.identifier_type,
                   OutboxRecord.sealed_identifier)
            .join(newest, (OutboxRecord.report_id == newest.c.report_id)
                  & (OutboxRecord.position == newest.c.position) & (OutboxRecord.epoch == newest.c.epoch))
            .join(FraudReport, FraudReport.report_id == OutboxRecord.report_id)
            .where(newest.c.epoch < epoch, FraudReport.valid_until > now, FraudReport.withdrawn_at.is_(None),
                   accepted(FraudReport.import_id),  # an import's rows are republished once it is complete
                   # erased by retention (node.ledger.retention) should the node's clock have gone back
                   OutboxRecord.sealed_identifier.is_not(None), ~_revoked_on_chain())
            .order_by(OutboxRecord.id)).all()
        records, queued_at = [], utcnow()  # queued now, however old the report
        for report_id, position, type_code, sealed in rows:
            assert sealed is not None  # selected only when not erased
            canonical = vault.decrypt(sealed, associated_data=sealed_identifier_ad(report_id, position)).decode()
            kind = identifier_type_of(type_code)
            assert kind is not None  # written by this node from a known type
            records.append({"report_id": report_id, "position": position, "identifier_type": type_code,
                            "epoch": epoch, "indicator": indicator_hash(key, kind, canonical),
                            "sealed_identifier": sealed, "state": "queued", "publish_batch_id": None,
                            "queued_at": queued_at})
        if not records:
            return []
        session.execute(insert(OutboxRecord), records)
        withdrawn = _withdrawn_meanwhile(session, epoch)
        if withdrawn:
            session.execute(delete(OutboxRecord).where(OutboxRecord.report_id.in_(withdrawn),
                                                       OutboxRecord.epoch == epoch, OutboxRecord.state == "queued"))
        return [r for r in records if r["report_id"] not in withdrawn]


def _revoked_on_chain() -> Exists:
    """Whether the mirror holds a revocation of the outbox row's published record (its indicator in its batch).

    A report is withdrawn by revoking its records; the store's mark of it (`withdrawn_at`) is what republish reads
    first, but a store restored from a backup taken before the withdrawal lacks it, and the report would be published
    again under the new epoch, hitting once more. The chain keeps the revocation whatever the store lost."""
    return (select(MirrorReaction.id)
            .join(PublishBatch, PublishBatch.onchain_batch_id == MirrorReaction.batch_id)
            .where(MirrorReaction.kind == "revoked", MirrorReaction.indicator == OutboxRecord.indicator,
                   PublishBatch.id == OutboxRecord.publish_batch_id)
            .exists())


def _withdrawn_meanwhile(session: Session, epoch: int) -> set[str]:
    """Reports withdrawn since they were read, among those with records queued under `epoch`.

    Read once the records are in, with the reports' rows locked (PostgreSQL; on SQLite the insert took the store's
    write lock): a withdrawal committed before is seen here, and one that comes after finds the records and
    withdraws them too."""
    queued = select(OutboxRecord.report_id).where(OutboxRecord.epoch == epoch, OutboxRecord.state == "queued")
    rows = session.execute(select(FraudReport.report_id, FraudReport.withdrawn_at)
                           .where(FraudReport.report_id.in_(queued)).with_for_update())
    return {report_id for report_id, withdrawn_at in rows if withdrawn_at is not None}
