"""The fraud-ledger indexer: follows the FraudLedger's events into the mirror tables, reorg-safe and crash-safe.

One `sync` walks from the block after the last indexed one to `head - confirmations` in chunks of
`chunk_blocks`. Each chunk is read from the chain (events, then the publishBatch inputs and the headers of the
blocks with events), checked, and written in ONE transaction together with the SyncState row, so a crash at any
point leaves the mirror at a chunk boundary and the next sync resumes from there without inserting anything
twice. A chunk's transaction first claims the SyncState row at the block (number and hash) it extends, so two
indexers on one store (the node's worker and `alliance ledger sync`) never write the same chunk: the later one
finds the mirror moved and continues from there.

Checks, deterministic so that every node's mirror holds the same rows:
- a batch is accepted only if the StandardMerkleTree root of the records decoded from its transaction's calldata
  equals the root in its event; otherwise its header is kept with `accepted_count` 0 and no records;
- of an accepted batch, only records passing `record_is_well_formed` are stored (`accepted_count` of them);
- a confirmation or revocation is kept only if its indicator is among its batch's accepted records and its
  member is that batch's reporter (the contract checks neither, see IFraudLedger).

Reorganisations: the hash of every block with events and of each chunk's last block is kept in
`indexed_blocks`. Before a sync, the chain's hash of the last indexed block is compared with the stored one;
while extending, the first new block's parent hash must be the last indexed hash and every log's block hash
must be the hash of its block's header. On a mismatch the indexer walks its stored blocks downward to the
highest one the chain still has, deletes every mirror row above it, and continues from there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from queue import Full, Queue
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from sqlalchemy import Table, delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from node.chain.errors import ChainError
from node.chain.fraud_ledger import leaf_values_root, unpack_leaf_values
from node.chain.ledger_events import (
    BatchPublishedEvent,
    BlockHeader,
    LedgerEvent,
    LedgerEventSource,
    PublishInput,
    ReactionEvent,
)
from node.ledger.vocabulary import record_is_well_formed
from node.store.bulk import in_list_slices, insert_rows
from node.store.db import Store, once_more_on_conflict
from node.store.ledger_tables import IndexedBlock, MirrorBatch, MirrorReaction, MirrorRecord, SyncState

if TYPE_CHECKING:
    from node.runtime import NodeContext

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A chain that reorganises again while we rewind is re-checked this many times before the sync gives up.
MAX_REWINDS_PER_SYNC = 8
# Stored blocks compared with the chain per JSON-RPC batch while looking for the common ancestor.
ANCESTOR_PAGE = 64
# SQLite page cache of the indexer's connection: the indicator index takes random inserts, and with the default
# 2 MB cache a large chunk spills and rewrites its pages (measured 155k -> 180k rows/s inserting 300k records).
SQLITE_CACHE_KIB = 131_072
# publishBatch inputs downloaded ahead of the one being written (two JSON-RPC batches of 32: ~35 MB at most).
PREFETCH_INPUTS = 64
# A chunk announcing at least this many records, more than the mirror already holds (a new member catching up, a
# rebuild), is written with mirror_records' secondary indexes dropped and created again before the chunk commits:
# one sort per index is cheaper than a random B-tree insert per record (1,000,000 rows: 15.2 -> 11.5 µs a row).
BULK_LOAD_MIN_RECORDS = 50_000

MIRROR_RECORD_COLUMNS = ("batch_id", "position", "indicator", "identifier_type", "category", "confidence",
                         "valid_from", "valid_until", "evidence_hash", "case_ref_hash", "reporter_member_id", "epoch",
                         "block_number", "published_at")


class EventSource(Protocol):
    """What the indexer reads from the chain (LedgerEventSource; tests wrap it to inject failures)."""

    def block_number(self) -> int: ...

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockHeader | None]: ...

    def events(self, from_block: int, to_block: int) -> list[LedgerEvent]: ...

    def iter_publish_inputs(self, tx_hashes: Sequence[str]) -> Iterator[tuple[str, PublishInput | None]]: ...


class ReorgDetected(ChainError):
    """The chain changed under the chunk being read; the indexer rewinds and reads it again."""


class _MirrorMoved(Exception):
    """Another indexer on the same store (the node's worker and `alliance ledger sync`) indexed past the block this
    one started from; this one continues from where the other got to."""


@dataclass(frozen=True)
class Rewind:
    from_block: int  # last indexed block before the rewind
    to_block: int  # highest indexed block the chain still has (start block - 1 if none)


@dataclass
class SyncResult:
    contract: str
    from_block: int  # last indexed block when the sync began
    to_block: int  # last indexed block when it ended
    head: int
    target: int  # head - confirmations
    complete: bool  # reached the target
    blocks: int = 0
    batches: int = 0
    rejected_batches: int = 0  # calldata did not match the root (or could not be read)
    records: int = 0  # accepted records stored
    ignored_records: int = 0  # malformed, or in rejected batches
    reactions: int = 0
    ignored_reactions: int = 0  # confirm / revoke of an indicator not in the reporter's batch
    rewinds: list[Rewind] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Position:
    block: int
    hash: str | None
    time: int | None


@dataclass
class _ChunkCounts:
    batches: int = 0
    rejected_batches: int = 0
    records: int = 0
    ignored_records: int = 0
    reactions: int = 0
    ignored_reactions: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


class Indexer:
    """Mirrors one FraudLedger contract into one store."""

    def __init__(self, store: Store, source: EventSource, *, contract_address: str, start_block: int = 0,
                 confirmations: int = 0, chunk_blocks: int = 2_000) -> None:
        if chunk_blocks < 1 or confirmations < 0 or start_block < 0:
            raise ValueError("chunk_blocks must be >= 1, confirmations and start_block >= 0")
        self.store = store
        self.source = source
        self.contract = contract_address
        self.start_block = start_block
        self.confirmations = confirmations
        self.chunk_blocks = chunk_blocks

    # -- public ---------------------------------------------------------------------------------------
    def sync(self, *, max_blocks: int | None = None) -> SyncResult:
        """Index up to `head - confirmations` (or `max_blocks` blocks further); raise ChainError on failure,
        after recording it in SyncState."""
        try:
            return self._sync(max_blocks)
        except ChainError as exc:
            self._record_failure(exc)
            raise

    def rebuild(self) -> SyncResult:
        """Forget the mirror and index again from the start block."""
        # The chain is asked first: with it unreachable the mirror was emptied and the rebuild failed, leaving checks
        # (which answer from the mirror while the chain is down) with no indicators at all.
        try:
            self.source.block_number()
        except ChainError as exc:
            self._record_failure(exc)
            raise
        with self.store.transaction() as session:
            # The position first: its row lock waits for a chunk another indexer (the node's worker) is writing,
            # and keeps the next one out (its claim then finds no position). On PostgreSQL each DELETE sees what
            # was committed when it started, so the rows are deleted only once that chunk is in, not before.
            session.execute(delete(SyncState).where(SyncState.contract == self.contract))
            for table in (MirrorRecord, MirrorReaction, MirrorBatch, IndexedBlock):
                session.execute(delete(table))
        return self.sync()

    # -- sync -----------------------------------------------------------------------------------------
    def _sync(self, max_blocks: int | None) -> SyncResult:
        position = self._load_position()
        head = self.source.block_number()
        target = head - self.confirmations
        result = SyncResult(self.contract, position.block, position.block, head, target, complete=False)
        position = self._rewind_if_reorganised(position, result)
        end = target if max_blocks is None else min(target, position.block + max_blocks)
        while position.block < end:
            first = position.block + 1
            last = min(first + self.chunk_blocks - 1, end)
            try:
                position = self._index_chunk(first, last, position, head, result)
            except _MirrorMoved:
                position = self._load_position()
                logger.info("another indexer moved the mirror to block %d; continuing from there", position.block)
                continue
            except ReorgDetected as exc:
                logger.warning("reorganisation while reading blocks %d..%d: %s", first, last, exc)
                position = self._rewind(position, result)
                # The new branch may be shorter than the head read at the start.
                head = self.source.block_number()
                result.head, result.target = head, head - self.confirmations
                target = result.target
                end = min(end, target)
        result.to_block = position.block
        result.complete = position.block >= target
        with self.store.transaction() as session:
            values: dict[str, Any] = {"chain_head": head, "attempted_at": _now(), "last_error": None}
            if result.complete:
                values["synced_at"] = values["attempted_at"]
            session.execute(update(SyncState).where(SyncState.contract == self.contract).values(**values))
        return result

    def _load_position(self) -> _Position:
        # Another indexer on this store may create the SyncState row first: reading again finds it.
        return once_more_on_conflict(self._read_position)

    def _read_position(self) -> _Position:
        with self.store.transaction() as session:
            state = session.get(SyncState, self.contract)
            if state is None:
                state = SyncState(contract=self.contract, last_block=self.start_block - 1)
                session.add(state)
            return _Position(state.last_block, state.last_block_hash, state.last_block_time)

    def _record_failure(self, exc: Exception) -> None:
        with suppress(Exception), self.store.transaction() as session:  # the store may be the thing that failed
            state = session.get(SyncState, self.contract)
            if state is None:
                state = SyncState(contract=self.contract, last_block=self.start_block - 1)
                session.add(state)
            state.attempted_at = _now()
            state.last_error = f"{type(exc).__name__}: {exc}"[:2000]

    # -- reorganisations ------------------------------------------------------------------------------
    def _rewind_if_reorganised(self, position: _Position, result: SyncResult) -> _Position:
        if position.block < self.start_block or position.hash is None:
            return position
        header = self.source.headers([position.block])[position.block]
        if header is not None and header.hash == position.hash:
            return position
        logger.warning("block %d changed on chain (stored %s, chain %s)", position.block, position.hash,
                       header.hash if header else "missing")
        return self._rewind(position, result)

    def _rewind(self, position: _Position, result: SyncResult) -> _Position:
        if len(result.rewinds) >= MAX_REWINDS_PER_SYNC:
            raise ChainError(f"the chain reorganised {len(result.rewinds)} times during one sync; try again later")
        ancestor = self._common_ancestor(position.block)
        with self.store.transaction() as session:
            # The position first, for the reason given in `rebuild`: a chunk another indexer is writing is in
            # before the rows above the ancestor are deleted, and its next chunk finds the position moved.
            session.execute(update(SyncState).where(SyncState.contract == self.contract).values(
                last_block=ancestor.block, last_block_hash=ancestor.hash, last_block_time=ancestor.time))
            for table in (MirrorRecord, MirrorReaction, MirrorBatch):
                session.execute(delete(table).where(table.block_number > ancestor.block))
            session.execute(delete(IndexedBlock).where(IndexedBlock.number > ancestor.block))
        result.rewinds.append(Rewind(position.block, ancestor.block))
        logger.warning("rewound the mirror from block %d to %d", position.block, ancestor.block)
        return ancestor

    def _common_ancestor(self, below_or_at: int) -> _Position:
        """The highest stored block whose hash the chain still has; the start block - 1 if there is none.

        Stored blocks are compared a page at a time, downward, so a deep history is never loaded at once."""
        while True:
            with self.store.session() as session:
                page = session.execute(select(IndexedBlock.number, IndexedBlock.hash, IndexedBlock.timestamp)
                                       .where(IndexedBlock.number <= below_or_at)
                                       .order_by(IndexedBlock.number.desc()).limit(ANCESTOR_PAGE)).all()
            if not page:
                return _Position(self.start_block - 1, None, None)
            chain = self.source.headers([row.number for row in page])
            for row in page:
                header = chain[row.number]
                if header is not None and header.hash == row.hash:
                    return _Position(row.number, row.hash, row.timestamp)
            below_or_at = page[-1].number - 1

    # -- one chunk ------------------------------------------------------------------------------------
    def _index_chunk(self, first: int, last: int, position: _Position, head: int,
                     result: SyncResult) -> _Position:
        end_before = self.source.headers([last])[last]
        events = self.source.events(first, last)
        headers = self.source.headers(sorted({first, last} | {e.block_number for e in events}))
        self._check_consistent(first, last, position, end_before, events, headers)
        end = headers[last]
        assert end is not None  # checked above
        counts = _ChunkCounts()
        batches = [e for e in events if isinstance(e, BatchPublishedEvent)]
        with self.store.transaction() as session:
            # Claim the chunk first: the store's write lock (SQLite) or the SyncState row lock (PostgreSQL) is
            # taken now, and the claim fails if another indexer has moved the mirror since it was read, back to this
            # block number on another branch included (a rewind, then a sync that stopped there).
            claimed = session.execute(
                update(SyncState).where(SyncState.contract == self.contract, SyncState.last_block == position.block,
                                        SyncState.last_block_hash.is_(None) if position.hash is None
                                        else SyncState.last_block_hash == position.hash)
                .values(attempted_at=_now()))
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise _MirrorMoved
            with bulk_loading(session, sum(e.count for e in batches)):
                self._store_batches(session, batches, headers, counts)
            self._store_reactions(session, [e for e in events if isinstance(e, ReactionEvent)], headers, counts)
            kept = {e.block_number for e in events} | {last}
            session.execute(insert(IndexedBlock), [
                {"number": h.number, "hash": h.hash, "parent_hash": h.parent_hash, "timestamp": h.timestamp}
                for n, h in headers.items() if n in kept and h is not None])
            session.execute(update(SyncState).where(SyncState.contract == self.contract).values(
                last_block=last, last_block_hash=end.hash, last_block_time=end.timestamp, chain_head=head,
                attempted_at=_now(), last_error=None))
        result.blocks += last - first + 1
        for name, value in asdict(counts).items():
            setattr(result, name, getattr(result, name) + value)
        return _Position(last, end.hash, end.timestamp)

    def _check_consistent(self, first: int, last: int, position: _Position, end_before: BlockHeader | None,
                          events: Sequence[LedgerEvent], headers: dict[int, BlockHeader | None]) -> None:
        """Raise ReorgDetected unless the logs and headers read for a chunk all belong to one chain that
        extends the last indexed block."""
        end = headers[last]
        if end is None or end_before is None or end.hash != end_before.hash:
            raise ReorgDetected(f"block {last} changed while it was read")
        start = headers[first]
        if start is None or (position.hash is not None and start.parent_hash != position.hash):
            raise ReorgDetected(f"block {first} does not extend the last indexed block {position.block}")
        for event in events:
            header = headers[event.block_number]
            if header is None or header.hash != event.block_hash:
                raise ReorgDetected(f"a log of block {event.block_number} is from another branch")

    def _store_batches(self, session: Session, events: list[BatchPublishedEvent],
                       headers: dict[int, BlockHeader | None], counts: _ChunkCounts) -> None:
        by_tx: dict[str, list[BatchPublishedEvent]] = {}
        for event in events:
            by_tx.setdefault(event.tx_hash, []).append(event)
        # A thread downloads the next inputs (socket reads release the GIL) while this one checks and writes;
        # only a few JSON-RPC batches of inputs are in memory at once, however large the chunk.
        inputs = prefetched(self.source.iter_publish_inputs(list(by_tx)), PREFETCH_INPUTS)
        with closing(inputs):  # on an error, stop the download thread now, not when garbage-collected
            for tx_hash, call in inputs:
                for event in by_tx[tx_hash]:
                    header = headers[event.block_number]
                    assert header is not None  # checked by _check_consistent
                    self._store_batch(session, event, accepted_rows(event, call, header.timestamp),
                                      header.timestamp, counts)

    def _store_batch(self, session: Session, event: BatchPublishedEvent, rows: list[tuple[Any, ...]] | None,
                     published_at: int, counts: _ChunkCounts) -> None:
        counts.batches += 1
        if rows is None:
            counts.rejected_batches += 1
            counts.ignored_records += event.count
            logger.warning("batch %d (tx %s): calldata does not match its root; ignored", event.batch_id,
                           event.tx_hash)
            rows = []
        else:
            counts.ignored_records += event.count - len(rows)
        counts.records += len(rows)
        session.execute(insert(MirrorBatch), [{
            "batch_id": event.batch_id, "reporter_member_id": event.reporter_member_id, "epoch": event.epoch,
            "root": event.root, "record_count": event.count, "accepted_count": len(rows),
            "tx_hash": event.tx_hash, "block_number": event.block_number, "log_index": event.log_index,
            "published_at": published_at}])
        if rows:
            bulk_insert(session, MirrorRecord, MIRROR_RECORD_COLUMNS, rows)

    def _store_reactions(self, session: Session, events: list[ReactionEvent],
                         headers: dict[int, BlockHeader | None], counts: _ChunkCounts) -> None:
        if not events:
            return
        owned = _owned_indicators(session, [e for e in events if e.batch_id is not None])
        rows = []
        for event in events:
            if event.batch_id is not None and (event.batch_id, event.indicator, event.member_id) not in owned:
                counts.ignored_reactions += 1
                continue
            header = headers[event.block_number]
            assert header is not None  # checked by _check_consistent
            rows.append({"kind": event.kind, "indicator": event.indicator, "member_id": event.member_id,
                         "batch_id": event.batch_id, "value": event.value, "block_number": event.block_number,
                         "log_index": event.log_index, "tx_hash": event.tx_hash, "at": header.timestamp})
        counts.reactions += len(rows)
        if rows:
            session.execute(insert(MirrorReaction), rows)


def accepted_rows(event: BatchPublishedEvent, call: PublishInput | None,
                  published_at: int) -> list[tuple[Any, ...]] | None:
    """Mirror rows (in `MIRROR_RECORD_COLUMNS` order) of a batch's well-formed records, or None if the calldata of its
    transaction does not match its root."""
    if call is None or call.root != event.root:
        return None
    try:
        leaves = unpack_leaf_values(call.records)
        if not leaves or leaf_values_root(leaves) != event.root:
            return None
    except ValueError:
        return None
    batch_id, reporter, epoch, block = event.batch_id, event.reporter_member_id, event.epoch, event.block_number
    # A row is (batch_id, position, *leaf values, ...): the leaf values are the record columns in table order.
    return [(batch_id, position, *leaf, reporter, epoch, block, published_at)
            for position, leaf in enumerate(leaves)
            if record_is_well_formed(identifier_type=leaf[1], category=leaf[2], confidence=leaf[3],
                                     valid_from=leaf[4], valid_until=leaf[5])]


@contextmanager
def bulk_loading(session: Session, incoming: int) -> Iterator[None]:
    """Within the chunk's transaction, drop mirror_records' secondary indexes while a large load is written and
    create them again at the end. A failure rolls the DROP back with everything else.

    SQLite only: its readers keep the snapshot they started with, indexes included, so checks are served
    unchanged meanwhile. On PostgreSQL, DROP INDEX would lock the table against those readers until commit.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite" or incoming < BULK_LOAD_MIN_RECORDS:
        yield
        return
    held = session.scalar(select(func.coalesce(func.sum(MirrorBatch.accepted_count), 0))) or 0
    if held >= incoming:
        yield
        return
    if not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        # pysqlite opens a transaction only before an INSERT, UPDATE or DELETE: a DROP INDEX sent first would be
        # committed at once and survive the chunk's rollback.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    indexes = sorted(cast(Table, MirrorRecord.__table__).indexes, key=lambda index: str(index.name))
    for index in indexes:
        index.drop(connection)
    yield
    for index in indexes:
        index.create(connection)


def _owned_indicators(session: Session, events: list[ReactionEvent]) -> set[tuple[int, bytes, int]]:
    """(batch id, indicator, reporter) of each confirm/revoke target that is an accepted record of the batch."""
    pairs = list({(e.batch_id, e.indicator) for e in events})
    owned: set[tuple[int, bytes, int]] = set()
    for chunk in in_list_slices(pairs):
        rows = session.execute(
            select(MirrorRecord.batch_id, MirrorRecord.indicator, MirrorRecord.reporter_member_id)
            .where(tuple_(MirrorRecord.batch_id, MirrorRecord.indicator).in_(chunk)))
        owned.update((batch_id, bytes(indicator), reporter) for batch_id, indicator, reporter in rows)
    return owned


def prefetched(items: Iterator[T], depth: int) -> Generator[T, None, None]:
    """`items`, produced up to `depth` ahead by a thread: waiting for the chain (socket reads release the GIL)
    overlaps with checking and writing. An exception of the producer is raised here, in order."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((False, exc))

    thread = threading.Thread(target=produce, name="ledger-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, value = queue.get()
            if more:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()


def bulk_insert(session: Session, table: Any, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """The indexer's write path for many rows (`insert_rows`), with a large SQLite page cache for the random
    inserts into the indicator index."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    insert_rows(session, table, columns, rows)


def indexer_for(node: NodeContext) -> Indexer:
    """The indexer of a node's FraudLedger, from its settings and deployment record."""
    deployed = node.deployment.contracts.get("FraudLedger")
    address = node.deployment.address("FraudLedger")  # raises ContractNotDeployed when missing
    settings = node.settings
    source = LedgerEventSource(settings.effective_rpc_url, address,
                               request_timeout=max(settings.request_timeout_s, 30.0))
    return Indexer(node.store, source, contract_address=source.address,
                   start_block=deployed.block_number if deployed else 0,
                   confirmations=settings.effective_confirmations, chunk_blocks=settings.log_chunk_blocks)
