"""Writing mirror rows directly, as the indexer would, for tests of the read side (checks, history, export)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from node.ledger.vocabulary import Category
from node.store.ledger_tables import MirrorBatch, MirrorReaction, MirrorRecord, SyncState

T0 = 1_700_000_000
DAY = 86_400
LEDGER = "0x" + "ab" * 20


@dataclass(frozen=True)
class Row:
    indicator: bytes
    identifier_type: int = 3
    category: int = Category.money_mule
    confidence: int = 80
    valid_from: int = T0
    valid_until: int = T0 + 3650 * DAY


def add_batch(session: Session, batch_id: int, reporter: int, rows: list[Row], *, block: int = 10,
              published_at: int = T0, epoch: int = 1) -> str:
    tx_hash = "0x" + os.urandom(32).hex()
    session.add(MirrorBatch(batch_id=batch_id, reporter_member_id=reporter, epoch=epoch, root=os.urandom(32),
                            record_count=len(rows), accepted_count=len(rows), tx_hash=tx_hash, block_number=block,
                            log_index=0, published_at=published_at))
    session.add_all(MirrorRecord(batch_id=batch_id, position=i, indicator=r.indicator,
                                 identifier_type=r.identifier_type, category=int(r.category),
                                 confidence=r.confidence, valid_from=r.valid_from, valid_until=r.valid_until,
                                 evidence_hash=b"\x01" * 32, case_ref_hash=b"\x02" * 32, reporter_member_id=reporter,
                                 epoch=epoch, block_number=block, published_at=published_at)
                    for i, r in enumerate(rows))
    return tx_hash


def add_reaction(session: Session, kind: str, indicator: bytes, member: int, *, block: int, at: int,
                 batch_id: int | None = None, value: int = 0, log_index: int = 0) -> None:
    session.add(MirrorReaction(kind=kind, indicator=indicator, member_id=member, batch_id=batch_id, value=value,
                               block_number=block, log_index=log_index, tx_hash="0x" + os.urandom(32).hex(), at=at))


def set_synced(session: Session, *, last_block: int, synced_at: datetime | None, contract: str = LEDGER,
               block_time: int = T0) -> None:
    session.merge(SyncState(contract=contract, last_block=last_block, last_block_hash="0x" + "00" * 32,
                            last_block_time=block_time, chain_head=last_block, synced_at=synced_at,
                            attempted_at=synced_at or datetime.now(UTC), last_error=None))
