"""Read side of the mirror tables: the facts behind indicators, the indexer's progress, one indicator's history.

The indexer (node.ledger.indexer) writes these tables; checks read them on every request, so `facts_for`
selects plain columns in chunked IN lists instead of loading ORM objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select, union
from sqlalchemy.orm import Session

from node.errors import NotFound
from node.ledger.indicator_state import IndicatorState, ReactionFact, RecordFact, StatePolicy, derive_state
from node.store.bulk import in_list_slices
from node.store.ledger_tables import IndexedBlock, MirrorBatch, MirrorReaction, MirrorRecord, SyncState
from node.store.models import as_utc

Facts = tuple[list[RecordFact], list[ReactionFact]]

# Column order of RecordFact and ReactionFact, so that rows construct them positionally.
RECORD_COLUMNS = (MirrorRecord.batch_id, MirrorRecord.position, MirrorRecord.indicator,
                   MirrorRecord.identifier_type, MirrorRecord.category, MirrorRecord.confidence,
                   MirrorRecord.valid_from, MirrorRecord.valid_until, MirrorRecord.reporter_member_id,
                   MirrorRecord.epoch, MirrorRecord.published_at, MirrorRecord.block_number)
REACTION_COLUMNS = (MirrorReaction.kind, MirrorReaction.indicator, MirrorReaction.member_id,
                     MirrorReaction.batch_id, MirrorReaction.value, MirrorReaction.at,
                     MirrorReaction.block_number, MirrorReaction.log_index)


class UnknownIndicator(NotFound):
    code = "unknown_indicator"


def facts_for(session: Session, indicators: Sequence[bytes], *, reactions_without_records: bool = True
              ) -> dict[bytes, Facts]:
    """Records and reactions of each indicator that has any; indicators the mirror does not know are absent.

    With `reactions_without_records=False` reactions are fetched only for indicators that have records:
    a check needs no more (reactions alone never make a hit), and most checked identifiers are unknown.
    """
    wanted = list(dict.fromkeys(bytes(i) for i in indicators))
    found: dict[bytes, Facts] = {}
    for chunk in in_list_slices(wanted):
        for values in _rows_with_indicators(session, MirrorRecord.__tablename__, RECORD_COLUMNS, chunk):
            fact = _record(values)
            found.setdefault(fact.indicator, ([], []))[0].append(fact)
    reaction_targets = wanted if reactions_without_records else list(found)
    for chunk in in_list_slices(reaction_targets):
        for reaction_values in _rows_with_indicators(session, MirrorReaction.__tablename__, REACTION_COLUMNS, chunk):
            reaction = _reaction(reaction_values)
            found.setdefault(reaction.indicator, ([], []))[1].append(reaction)
    return found


def _rows_with_indicators(session: Session, table: str, columns: Sequence[Any], chunk: Sequence[bytes]
                          ) -> Sequence[Sequence[Any]]:
    # Plain driver SQL: this runs for every check, and SQLAlchemy's statement and row processing cost
    # more than SQLite's indexed lookups themselves (measured in bench/checks.py). The column types
    # need no result processing (integers, bytes, text) on SQLite or psycopg.
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    sql = (f"SELECT {', '.join(c.name for c in columns)} FROM {table} "
           f"WHERE indicator IN ({', '.join([mark] * len(chunk))})")
    return connection.exec_driver_sql(sql, tuple(chunk)).all()


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which indicators a page takes, by what their records say; None: any. The record filters hold together for one
    record (a record of that category, by that reporter, published in that time), `changed_since_block` for any."""

    category: int | None = None
    identifier_type: int | None = None
    reporter_member_id: int | None = None
    published_since: int | None = None  # block time, inclusive
    published_until: int | None = None  # exclusive
    changed_since_block: int | None = None  # a record or a reaction in this block or a later one
    # Or (Unix times, after < t <= until) a change of state that no block marks: a record's validity ending, or a
    # dispute's response window running out (`dispute_window_s`), answered or not. Not a validity starting: a
    # record dated ahead says so itself (STIX valid_from), and one dated at its acceptance cannot be told from one
    # dated ahead when the chain's clock and the reporter's differ, which sent every recent report again.
    state_changed_between: tuple[int, int] | None = None
    dispute_window_s: int = 0
    reacted: str | None = None  # a reaction of this kind (disputed, revoked, ...), in any block

    def conditions(self) -> list[ColumnElement[bool]]:
        equal = ((MirrorRecord.category, self.category), (MirrorRecord.identifier_type, self.identifier_type),
                 (MirrorRecord.reporter_member_id, self.reporter_member_id))
        found = [column == value for column, value in equal if value is not None]
        if self.published_since is not None:
            found.append(MirrorRecord.published_at >= self.published_since)
        if self.published_until is not None:
            found.append(MirrorRecord.published_at < self.published_until)
        changed = []
        if self.changed_since_block is not None:
            block = self.changed_since_block
            changed += [select(MirrorRecord.indicator).where(MirrorRecord.block_number >= block),
                        select(MirrorReaction.indicator).where(MirrorReaction.block_number >= block)]
        if self.state_changed_between is not None:
            after, until = self.state_changed_between
            window = self.dispute_window_s
            changed += [
                select(MirrorRecord.indicator).where(MirrorRecord.valid_until > after,
                                                     MirrorRecord.valid_until <= until),
                select(MirrorReaction.indicator).where(MirrorReaction.kind == "disputed",
                                                       MirrorReaction.at > after - window,
                                                       MirrorReaction.at <= until - window)]
        if changed:
            found.append(MirrorRecord.indicator.in_(union(*changed)))
        if self.reacted is not None:
            found.append(MirrorRecord.indicator.in_(select(MirrorReaction.indicator)
                                                    .where(MirrorReaction.kind == self.reacted)))
        return found


def block_time_before(session: Session, block: int) -> int | None:
    """The timestamp of the newest indexed block before `block`: the time the mirror stood at when a pull that said
    to go on from `block` was answered (the indexer keeps each sync's last block). None if it holds none before."""
    return session.scalar(select(IndexedBlock.timestamp).where(IndexedBlock.number < block)
                          .order_by(IndexedBlock.number.desc()).limit(1))


def indicators_page(session: Session, *, after: bytes | None, limit: int, where: RecordFilter = RecordFilter()
                    ) -> list[bytes]:
    """Up to `limit` indicators that have records (those `where` admits), in byte order, after `after` (a paging
    cursor)."""
    query = (select(MirrorRecord.indicator).distinct().where(*where.conditions())
             .order_by(MirrorRecord.indicator).limit(limit))
    if after is not None:
        query = query.where(MirrorRecord.indicator > after)
    return [bytes(i) for i in session.scalars(query)]


def _record(values: Sequence[Any]) -> RecordFact:
    return RecordFact(*values)


def _reaction(values: Sequence[Any]) -> ReactionFact:
    return ReactionFact(*values)


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    as_of_block: int  # last block fully indexed; -1 before the first sync
    block_time: int | None  # its timestamp
    synced_at: datetime | None  # when the indexer last caught up with the head it saw
    lag_s: float | None  # seconds since then; None if it never did
    stale: bool  # lag over the limit, never synced, or the last sync failed: answers may miss recent reports
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"as_of_block": self.as_of_block, "block_time": self.block_time,
                "synced_at": self.synced_at.isoformat() if self.synced_at else None,
                "lag_s": self.lag_s, "stale": self.stale, "last_error": self.last_error}


def mirror_status(session: Session, contract_address: str | None, *, stale_after_s: float,
                  now: datetime | None = None) -> MirrorStatus:
    """How far the mirror of `contract_address` is behind, from the indexer's SyncState row.

    Lag is measured from the last successful sync, not from the last block's time: a consortium chain
    with no traffic produces no blocks, and an idle mirror is not a stale one.
    """
    row = None
    if contract_address:
        # The address may be stored checksummed or lowercase; there is one row per followed contract.
        row = next((r for r in session.scalars(select(SyncState))
                    if r.contract.lower() == contract_address.lower()), None)
    if row is None:
        return MirrorStatus(-1, None, None, None, True, None)
    synced_at = as_utc(row.synced_at) if row.synced_at is not None else None
    current = now or datetime.now(UTC)
    lag_s = max(0.0, (current - synced_at).total_seconds()) if synced_at else None
    # The last attempt failing (the chain is down) makes the answer stale at once: new reports may exist that
    # this node cannot see, however recent its last successful sync.
    stale = lag_s is None or lag_s > stale_after_s or row.last_block < 0 or row.last_error is not None
    return MirrorStatus(row.last_block, row.last_block_time, synced_at, lag_s, stale, row.last_error)


@dataclass(frozen=True, slots=True)
class IndicatorHistory:
    indicator: bytes
    state: IndicatorState
    records: list[dict[str, Any]]
    reactions: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"indicator": "0x" + self.indicator.hex(), "state": self.state.to_json(),
                "records": self.records, "reactions": self.reactions}


def indicator_history(session: Session, indicator: bytes, *, at: int, policy: StatePolicy) -> IndicatorHistory:
    """Every record of `indicator` with its batch, every reaction in chain order, and the state at `at`."""
    records = session.execute(
        select(MirrorRecord, MirrorBatch.tx_hash, MirrorBatch.log_index)
        .join(MirrorBatch, MirrorBatch.batch_id == MirrorRecord.batch_id)
        .where(MirrorRecord.indicator == indicator)
        .order_by(MirrorRecord.block_number, MirrorRecord.batch_id, MirrorRecord.position)
    ).all()
    reactions = session.scalars(
        select(MirrorReaction).where(MirrorReaction.indicator == indicator)
        .order_by(MirrorReaction.block_number, MirrorReaction.log_index)
    ).all()
    if not records and not reactions:
        raise UnknownIndicator(f"the mirror holds nothing about indicator 0x{indicator.hex()}")
    state = derive_state(indicator, [RecordFact.of(r) for r, _, _ in records],
                         [ReactionFact.of(e) for e in reactions], at=at, policy=policy)
    return IndicatorHistory(
        indicator=indicator, state=state,
        records=[{"batch_id": r.batch_id, "position": r.position, "reporter_member_id": r.reporter_member_id,
                  "identifier_type": r.identifier_type, "category": r.category, "confidence": r.confidence,
                  "valid_from": r.valid_from, "valid_until": r.valid_until, "epoch": r.epoch,
                  "evidence_hash": "0x" + r.evidence_hash.hex(), "case_ref_hash": "0x" + r.case_ref_hash.hex(),
                  "tx_hash": tx_hash, "block_number": r.block_number, "log_index": log_index,
                  "published_at": r.published_at}
                 for r, tx_hash, log_index in records],
        reactions=[{"kind": e.kind, "member_id": e.member_id, "batch_id": e.batch_id, "value": e.value,
                    "at": e.at, "block_number": e.block_number, "log_index": e.log_index, "tx_hash": e.tx_hash}
                   for e in reactions],
    )

