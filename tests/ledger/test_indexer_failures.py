"""The indexer when things fail: chain outages and crashes leave a consistent mirror that the next sync completes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from node.chain.errors import ChainUnavailable
from node.chain.ledger_events import LedgerEventSource, PublishInput
from node.ledger.indexer import Indexer
from node.runtime import NodeContext
from node.store.db import Store
from tests.chain.capped_rpc import capped_rpc
from tests.conftest import LedgerNodes, free_port, interrupted_before_writing
from tests.ledger.test_indexer import (
    HookedSource,
    counts,
    digest_at,
    indexer_of,
    ledger_of,
    make_records,
    mine,
    reorg,
    signed_publish,
    source_of,
    sync_state,
)

# Besu's log-range cap behind which a test indexes, in blocks.
CAP = 6


class Crash(Exception):
    """Stands for the process dying at an arbitrary point."""


def publish_in_separate_chunks(ledger_nodes: LedgerNodes, batches: int) -> list[int]:
    a = ledger_nodes.nodes[0]
    return [ledger_of(a).publish_batch(1, make_records(3, seed=100 + i)).block_number for i in range(batches)]


def fresh_digest(ledger_nodes: LedgerNodes, tmp_path: Path, block: int) -> tuple[dict[str, int], str]:
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    store.migrate()
    indexer = indexer_of(ledger_nodes.nodes[0], store=store)
    indexer.sync()
    try:
        return counts(store), digest_at(store, indexer, block).sha256_hex
    finally:
        store.close()


def test_sync_raises_chain_unavailable_and_records_the_error(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    ledger_of(a).publish_batch(1, make_records(2, seed=1))
    dead = LedgerEventSource(f"http://127.0.0.1:{free_port()}", a.deployment.address("FraudLedger"),
                             request_timeout=2)
    offline = indexer_of(a, source=dead)

    with pytest.raises(ChainUnavailable, match="unreachable"):
        offline.sync()

    state = sync_state(a.store, offline)
    assert state.last_error is not None and "ChainUnavailable" in state.last_error
    assert state.attempted_at is not None and state.synced_at is None
    assert state.last_block == offline.start_block - 1 and counts(a.store)["batches"] == 0

    indexer_of(a).sync()
    state = sync_state(a.store, offline)
    assert state.last_error is None and state.synced_at is not None and counts(a.store)["batches"] == 1


def test_sync_keeps_finished_chunks_when_the_chain_goes_away(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    blocks = publish_in_separate_chunks(ledger_nodes, 4)
    a = ledger_nodes.nodes[0]
    source = source_of(a)
    live_url = source.rpc_url

    def cut_chain(call: int) -> None:
        if call == 2:  # the chain goes away after the second chunk's logs were read
            source.rpc_url = f"http://127.0.0.1:{free_port()}"

    indexer = indexer_of(a, source=HookedSource(source, cut_chain), chunk_blocks=blocks[1] - indexer_start(a) + 1)
    with pytest.raises(ChainUnavailable):
        indexer.sync()

    state = sync_state(a.store, indexer)
    assert state.last_block == blocks[1] and state.last_error is not None
    assert counts(a.store) == {"batches": 2, "records": 6, "reactions": 0}

    source.rpc_url = live_url
    result = indexer.sync()
    head = a.chain.block_number()
    assert result.complete and result.batches == 2 and sync_state(a.store, indexer).last_error is None
    assert (counts(a.store), digest_at(a.store, indexer, head).sha256_hex) == fresh_digest(ledger_nodes, tmp_path,
                                                                                           head)


def indexer_start(node: NodeContext) -> int:
    return node.deployment.contracts["FraudLedger"].block_number


def test_sync_resumes_after_a_crash_between_chunks(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    blocks = publish_in_separate_chunks(ledger_nodes, 3)
    a = ledger_nodes.nodes[0]

    def crash(call: int) -> None:
        if call == 2:
            raise Crash

    crashing = indexer_of(a, source=HookedSource(source_of(a), crash), chunk_blocks=blocks[0] - indexer_start(a) + 1)
    with pytest.raises(Crash):
        crashing.sync()
    assert sync_state(a.store, crashing).last_block == blocks[0]
    assert counts(a.store) == {"batches": 1, "records": 3, "reactions": 0}

    result = indexer_of(a).sync()  # a restarted node: a new indexer over the same store
    head = a.chain.block_number()
    assert result.from_block == blocks[0] and result.batches == 2 and result.complete
    assert (counts(a.store), digest_at(a.store, crashing, head).sha256_hex) == fresh_digest(ledger_nodes, tmp_path,
                                                                                            head)


class CrashAfterFirstInput(HookedSource):
    """Dies after the first publish input of a chunk was handed over (its rows are written, not committed)."""

    def iter_publish_inputs(self, tx_hashes: Sequence[str]) -> Iterator[tuple[str, PublishInput | None]]:
        inputs = self.inner.iter_publish_inputs(tx_hashes)
        yield next(inputs)
        raise Crash


def test_sync_writes_nothing_of_a_chunk_that_crashed_midway(ledger_nodes: LedgerNodes) -> None:
    publish_in_separate_chunks(ledger_nodes, 3)
    a = ledger_nodes.nodes[0]
    source = CrashAfterFirstInput(source_of(a), lambda _call: None)
    crashing = Indexer(a.store, source, contract_address=source.inner.address, start_block=indexer_start(a))

    with pytest.raises(Crash):
        crashing.sync()

    assert counts(a.store) == {"batches": 0, "records": 0, "reactions": 0}
    assert sync_state(a.store, crashing).last_block == indexer_start(a) - 1
    assert indexer_of(a).sync().batches == 3


def test_two_indexers_on_one_store_index_each_chunk_once(ledger_nodes: LedgerNodes, store_url: str) -> None:
    a = ledger_nodes.nodes[0]
    for seed in range(3):
        ledger_of(a).publish_batch(1, make_records(2, seed=140 + seed))
    store = Store(store_url)
    store.migrate()
    other = indexer_of(a, store=store, chunk_blocks=2)  # `alliance ledger sync` while the node's worker runs
    # The worker has read its first chunk when the other indexer goes through everything.
    worker = indexer_of(a, store=store, chunk_blocks=2,
                        source=HookedSource(source_of(a), lambda call: other.sync() if call == 1 else None))

    result = worker.sync()

    assert result.complete and result.to_block == a.chain.block_number()
    assert (result.batches, result.records) == (0, 0)  # the other indexer stored them
    assert counts(store) == {"batches": 3, "records": 6, "reactions": 0}
    assert sync_state(store, worker).last_error is None
    store.close()


def test_two_indexers_starting_on_an_empty_store_create_its_position_once(ledger_nodes: LedgerNodes,
                                                                         store_url: str) -> None:
    a = ledger_nodes.nodes[0]
    ledger_of(a).publish_batch(1, make_records(2, seed=150))
    store = Store(store_url)
    store.migrate()
    worker, other = indexer_of(a, store=store), indexer_of(a, store=store)

    # The other indexer (`alliance ledger sync`) creates the position and indexes everything after the worker
    # found no position and before it stores one.
    with interrupted_before_writing(store, {"sync_state"}, other.sync):
        result = worker.sync()

    assert result.complete and (result.batches, result.records) == (0, 0)
    assert counts(store) == {"batches": 1, "records": 2, "reactions": 0}
    assert sync_state(store, worker).last_error is None
    store.close()


def test_rebuild_while_the_worker_writes_a_chunk_leaves_one_copy_of_each_row(ledger_nodes: LedgerNodes,
                                                                            store_url: str, tmp_path: Path) -> None:
    """`alliance ledger rebuild` while the node's worker is inside a chunk's transaction. On PostgreSQL the rebuild
    deleted the mirror rows it could see, waited for the worker's position, then deleted it: the worker's chunk
    survived without a position, and the rebuild (and every later sync) failed on its duplicate rows."""
    a = ledger_nodes.nodes[0]
    for seed in range(3):
        ledger_of(a).publish_batch(1, make_records(2, seed=160 + seed))
    worker_store, cli_store = Store(store_url), Store(store_url)
    worker_store.migrate()
    worker, rebuilding = indexer_of(a, store=worker_store), indexer_of(a, store=cli_store)
    try:
        with worker_paused_in_a_chunk(worker, worker_store) as resume:
            # the rebuild reaches the rows the worker holds and waits for them
            resume.after(rebuilding.rebuild)
        block = a.chain.block_number()
        assert (counts(worker_store), digest_at(worker_store, worker, block).sha256_hex) \
            == fresh_digest(ledger_nodes, tmp_path, block)
        assert worker.sync().records == 0
    finally:
        worker_store.close()
        cli_store.close()


def test_rewind_while_another_indexer_writes_a_chunk_leaves_one_copy_of_each_row(
        ledger_nodes: LedgerNodes, store_url: str, tmp_path: Path) -> None:
    """`alliance ledger sync` finds a reorganisation and rewinds while the node's worker is inside a chunk's
    transaction (read before the reorganisation). On PostgreSQL the rewind deleted the rows it could see, waited for
    the position and set it back: the worker's chunk stayed above the position, and the new branch's batches then
    failed on its duplicate keys at every sync."""
    a, _, c = ledger_nodes.nodes
    store, other, worker_store, worker = _two_indexers_one_behind(a, store_url, seed=170)
    try:
        with worker_paused_in_a_chunk(worker, worker_store) as resume:
            reorg(ledger_nodes.rpc_url, 3, [(signed_publish(c, make_records(2, seed=180)), 0),
                                            (signed_publish(c, make_records(2, seed=181), nonce_offset=1), 1),
                                            (signed_publish(c, make_records(2, seed=182), nonce_offset=2), 2)])
            # the rewind reaches the position the worker holds and waits for it
            resume.after(other.sync)
        other.sync()
        block = a.chain.block_number()
        assert (counts(store), digest_at(store, other, block).sha256_hex) == fresh_digest(ledger_nodes, tmp_path, block)
    finally:
        worker_store.close()
        store.close()


def _two_indexers_one_behind(a: NodeContext, store_url: str, *, seed: int) -> tuple[Store, Indexer, Store, Indexer]:
    """Two indexers of A's ledger on one store, each with its own engine: the first synced to two batches, two more
    published since. (store, first, worker's store, worker)."""
    for offset in range(2):
        ledger_of(a).publish_batch(1, make_records(2, seed=seed + offset))
    store = Store(store_url)
    store.migrate()
    first = indexer_of(a, store=store)
    first.sync()
    for offset in range(2, 4):
        ledger_of(a).publish_batch(1, make_records(2, seed=seed + offset))
    worker_store = Store(store_url)
    return store, first, worker_store, indexer_of(a, store=worker_store)


class _Resume:
    def __init__(self, finish_chunk: threading.Event, failures: list[BaseException]) -> None:
        self._finish_chunk, self._failures = finish_chunk, failures

    def after(self, action: Callable[[], object]) -> None:
        """Run `action` in a thread, let it reach what the paused worker holds, resume the worker, wait for both;
        neither may have raised."""
        other = started(action, self._failures)
        time.sleep(1.0)
        self._finish_chunk.set()
        other.join(60)


@contextmanager
def worker_paused_in_a_chunk(worker: Indexer, store: Store) -> Iterator[_Resume]:
    """`worker.sync()` running in a thread, paused inside its first chunk's transaction (at the indexed_blocks
    insert, its rows written) until `resume.after(action)` runs another action against it."""
    in_chunk, finish_chunk = threading.Event(), threading.Event()

    def hold_the_chunk(_connection: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO INDEXED_BLOCKS") and not in_chunk.is_set():
            in_chunk.set()
            finish_chunk.wait(30)

    event.listen(store.engine, "before_cursor_execute", hold_the_chunk)
    failures: list[BaseException] = []
    syncing = started(worker.sync, failures)
    try:
        assert in_chunk.wait(30)
        yield _Resume(finish_chunk, failures)
    finally:
        finish_chunk.set()
        syncing.join(60)
        event.remove(store.engine, "before_cursor_execute", hold_the_chunk)
    assert failures == []


def started(action: Callable[[], object], failures: list[BaseException]) -> threading.Thread:
    """`action` running in a thread; what it raises is appended to `failures`."""
    def guarded() -> None:
        try:
            action()
        except BaseException as exc:  # handed to the test
            failures.append(exc)
    thread = threading.Thread(target=guarded)
    thread.start()
    return thread


def test_chunk_read_before_a_reorganisation_is_not_written_over_the_new_branch(
        ledger_nodes: LedgerNodes, store_url: str, tmp_path: Path) -> None:
    """The worker read a chunk from the old branch; before it wrote it, `alliance ledger sync` rewound and indexed
    the new branch up to the very block the worker's chunk extends. Its claim checked the block number only, so the
    old branch's batches were written on top of the new branch."""
    a, _, c = ledger_nodes.nodes
    store, other, worker_store, worker = _two_indexers_one_behind(a, store_url, seed=190)
    claiming = threading.Event()

    def reorganise_before_the_claim(_connection: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE SYNC_STATE") and not claiming.is_set():
            claiming.set()
            reorg(ledger_nodes.rpc_url, 3, [(signed_publish(c, make_records(2, seed=195)), 0),
                                            (signed_publish(c, make_records(2, seed=196), nonce_offset=1), 2)])
            other.sync(max_blocks=1)  # rewinds, then indexes the first block of the new branch only

    event.listen(worker_store.engine, "before_cursor_execute", reorganise_before_the_claim)
    try:
        worker.sync()
        assert claiming.is_set()
        block = a.chain.block_number()
        assert (counts(store), digest_at(store, worker, block).sha256_hex) == fresh_digest(ledger_nodes, tmp_path,
                                                                                          block)
    finally:
        worker_store.close()
        store.close()


def test_sync_through_a_capped_endpoint_learns_its_window_once(ledger_nodes: LedgerNodes) -> None:
    """Behind Besu's `--rpc-max-logs-range` below the chunk size, every chunk of every sync was asked whole first and
    refused: the indexer halved each refused range on its own and forgot the width the endpoint took. It now keeps
    the width (LogWindow, shared with ChainClient): one refused request per process, and the same mirror."""
    a = ledger_nodes.nodes[0]
    for i in range(3):
        mine(ledger_nodes.rpc_url, CAP + 2)
        ledger_of(a).publish_batch(1, make_records(2, seed=700 + i))
    address = a.deployment.address("FraudLedger")
    with capped_rpc(ledger_nodes.rpc_url, CAP) as relay:
        capped = Indexer(a.store, LedgerEventSource(relay.url, address), contract_address=address,
                         start_block=a.deployment.contracts["FraudLedger"].block_number, chunk_blocks=4 * CAP)
        first = capped.sync(max_blocks=4 * CAP)
        assert relay.refused >= 1
        refused = relay.refused
        rest = capped.sync()
        mine(ledger_nodes.rpc_url, 4 * CAP)
        ledger_of(a).publish_batch(1, make_records(2, seed=710))
        later = capped.sync()
        assert relay.refused == refused  # nothing refused once the width is known, over later chunks and syncs
        assert all(last - first_block + 1 <= CAP for first_block, last in relay.log_ranges[refused:])
    assert first.records + rest.records + later.records == 8 and later.complete
    block = a.chain.block_number()
    direct_store = Store(f"sqlite:///{a.settings.data_dir / 'direct.db'}")
    direct_store.migrate()
    direct = indexer_of(a, store=direct_store)
    direct.sync()
    assert digest_at(a.store, direct, block) == digest_at(direct_store, direct, block)  # direct: the relay is gone
    direct_store.close()
