"""A digest of the mirror's derived state, for comparing nodes: same chain and block, same digest.

The digest covers what checks answer from, the *derived* state of every indicator (node.ledger.indicator_state),
not the raw rows: two mirrors that would answer every check alike have the same digest. It is evaluated at the
timestamp of the digest's block, so every node computes it at the same time whatever its clock says.

Rows are streamed in indicator order from two cursors (records and reactions) and merged, so a mirror of
millions of records is never loaded at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from node.errors import InvalidInput
from node.ledger.indicator_state import ReactionFact, RecordFact, StatePolicy, derive_state
from node.ledger.mirror import REACTION_COLUMNS, RECORD_COLUMNS
from node.store.ledger_tables import MirrorReaction, MirrorRecord, SyncState

if TYPE_CHECKING:
    from node.ledger.indexer import Indexer
    from node.runtime import NodeContext

STREAM_ROWS = 10_000



@dataclass(frozen=True)
class MirrorDigest:
    block: int
    at: int  # evaluation time: the block's timestamp
    indicator_count: int
    sha256_hex: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mirror_digest(session: Session, *, block: int, at: int, policy: StatePolicy) -> MirrorDigest:
    """SHA-256 over the canonical state of every indicator with rows up to `block`, in indicator order.

    Each state is `IndicatorState.canonical()` (compact JSON, no newlines) followed by a newline.
    """
    records = _grouped(session.execute(
        select(*RECORD_COLUMNS).where(MirrorRecord.block_number <= block)
        .order_by(MirrorRecord.indicator, MirrorRecord.block_number, MirrorRecord.batch_id, MirrorRecord.position)
        .execution_options(yield_per=STREAM_ROWS)), 2, RecordFact)
    reactions = _grouped(session.execute(
        select(*REACTION_COLUMNS).where(MirrorReaction.block_number <= block)
        .order_by(MirrorReaction.indicator, MirrorReaction.block_number, MirrorReaction.log_index)
        .execution_options(yield_per=STREAM_ROWS)), 1, ReactionFact)
    digest = hashlib.sha256()
    count = 0
    for indicator, record_facts, reaction_facts in _merge(records, reactions):
        state = derive_state(indicator, record_facts, reaction_facts, at=at, policy=policy)
        digest.update(state.canonical())
        digest.update(b"\n")
        count += 1
    return MirrorDigest(block, at, count, digest.hexdigest())


def _grouped(rows: Iterable[Row[Any]], key_index: int, fact: Any) -> Iterator[tuple[bytes, list[Any]]]:
    for indicator, group in groupby(rows, key=lambda row: bytes(row[key_index])):
        yield indicator, [fact(*row) for row in group]


def _merge(records: Iterator[tuple[bytes, list[RecordFact]]], reactions: Iterator[tuple[bytes, list[ReactionFact]]]
           ) -> Iterator[tuple[bytes, list[RecordFact], list[ReactionFact]]]:
    """Join two indicator-ordered streams: every indicator of either, with its records and reactions."""
    record = next(records, None)
    reaction = next(reactions, None)
    while record is not None or reaction is not None:
        if reaction is None or (record is not None and record[0] < reaction[0]):
            assert record is not None
            yield record[0], record[1], []
            record = next(records, None)
        elif record is None or reaction[0] < record[0]:
            yield reaction[0], [], reaction[1]
            reaction = next(reactions, None)
        else:
            yield record[0], record[1], reaction[1]
            record, reaction = next(records, None), next(reactions, None)


def policy_of(node: NodeContext) -> StatePolicy:
    return StatePolicy(node.settings.confidence_half_life_days, node.settings.dispute_window_days)


def node_digest(node: NodeContext, indexer: Indexer, *, block: int | None = None) -> MirrorDigest:
    """The digest of a node's mirror at `block` (default: the last indexed block), at that block's chain time."""
    with node.store.session() as session:
        state = session.get(SyncState, indexer.contract)
        last = state.last_block if state is not None else -1
        if last < indexer.start_block:
            raise InvalidInput("the mirror is empty: run `alliance ledger sync` first", code="mirror_empty")
        block = last if block is None else block
        if not 0 <= block <= last:
            raise InvalidInput(f"block {block} is not indexed: the mirror reaches block {last}",
                               code="block_not_indexed")
        header = indexer.source.headers([block])[block]
        if header is None:
            raise InvalidInput(f"the chain has no block {block}", code="block_not_indexed")
        return mirror_digest(session, block=block, at=header.timestamp, policy=policy_of(node))
