"""The indexer across chain reorganisations (anvil_reorg, evm_revert): the mirror ends as a rebuild would."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from node.chain.client import ChainClient, Receipt
from node.ledger.indexer import Rewind
from node.runtime import NodeContext
from node.store.db import Store
from node.store.ledger_tables import MirrorBatch
from tests.conftest import LedgerNodes
from tests.ledger.test_indexer import (
    HookedSource,
    counts,
    digest_at,
    indexer_of,
    ledger_of,
    make_records,
    reorg,
    signed_publish,
    signed_publish_tx,
    source_of,
)


def rebuilt_digest(node: NodeContext, tmp_path: Path, block: int) -> tuple[dict[str, int], str]:
    """Counts and digest of a mirror built from scratch in a fresh store."""
    store = Store(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    store.migrate()
    indexer = indexer_of(node, store=store)
    indexer.sync()
    try:
        return counts(store), digest_at(store, indexer, block).sha256_hex
    finally:
        store.close()


def reporters(node: NodeContext) -> list[tuple[int, int]]:
    with node.store.session() as session:
        return list(session.execute(select(MirrorBatch.batch_id, MirrorBatch.reporter_member_id)
                                    .order_by(MirrorBatch.batch_id)))


def chain_answers(node: NodeContext, source: HookedSource, receipts: list[Receipt | None]) -> str:
    """What the chain answered, for a failure message: the indexer's reads, where the receipts put the transactions,
    the logs and headers of those blocks now, and whether the ledger still has code."""
    blocks = sorted({r.block_number for r in receipts if r is not None})
    headers = source.headers(blocks)
    now = {n: len(source.inner.raw_logs(n, n)) for n in blocks}
    return (f"reads (from, to, events) {source.read}; receipts (block, hash) "
            f"{[(r.block_number, r.block_hash) for r in receipts if r is not None]}; headers now "
            f"{ {n: h.hash if h else None for n, h in headers.items()} }; logs now {now}; ledger has code: "
            f"{node.chain.has_code(source.inner.address)}")


def test_sync_rewinds_a_reorganisation_between_syncs(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    a, _, c = ledger_nodes.nodes
    ledger_of(a).publish_batch(1, make_records(2, seed=1))
    replaced = ledger_of(a).publish_batch(1, make_records(2, seed=2))
    indexer = indexer_of(a)
    indexer.sync()

    reorg(ledger_nodes.rpc_url, 1, [(signed_publish(c, make_records(3, seed=3)), 0)])
    result = indexer.sync()

    assert result.rewinds == [Rewind(replaced.block_number, replaced.block_number - 1)]
    assert (result.batches, result.records) == (1, 3)
    assert reporters(a) == [(1, 1), (2, 3)]
    block = a.chain.block_number()
    assert (counts(a.store), digest_at(a.store, indexer, block).sha256_hex) == rebuilt_digest(a, tmp_path, block)


@pytest.mark.parametrize("reorg_after_call", [2, 3, 4, 5])
def test_sync_follows_a_reorganisation_during_the_sync(ledger_nodes: LedgerNodes, tmp_path: Path,
                                                       reorg_after_call: int) -> None:
    """Six batches of A and an endorsement by B, then the last six blocks are replaced by two batches of C,
    after the indexer read 2..5 chunks of two blocks: logs from the old branch, or committed blocks of it."""
    a, b, c = ledger_nodes.nodes
    for seed in range(6):
        published = ledger_of(a).publish_batch(1, make_records(2, seed=10 + seed))
    ledger_of(b).endorse(make_records(2, seed=15)[0].indicator, 50)  # in the replaced blocks: must vanish
    replacement = [(signed_publish_tx(c, make_records(2, seed=20)), 0),
                   (signed_publish_tx(c, make_records(2, seed=21), nonce_offset=1), 2)]
    done: list[int] = []

    def reorganise(call: int) -> None:
        if call == reorg_after_call:
            reorg(ledger_nodes.rpc_url, 6, [(signed.raw, offset) for signed, offset in replacement])
            done.append(call)

    source = HookedSource(source_of(a), reorganise)
    indexer = indexer_of(a, source=source, chunk_blocks=2)
    result = indexer.sync()

    assert done == [reorg_after_call]
    assert result.rewinds
    block = a.chain.block_number()
    assert result.complete and result.to_block == block and published.block_number == block - 1
    # Said apart from the mirror's content: twice (parameters 4 and 5, after 2 and 3 on the same chain) the mirror held
    # none of C's batches although they were mined, the chain having forked from a state without the ledger (see
    # `rpc_url` in tests/conftest.py); the message says what the chain answered.
    replaced = [a.chain.receipt_of(signed.tx_hash) for signed, _ in replacement]
    assert [receipt.status if receipt else None for receipt in replaced] == [1, 1]
    assert [r for _, r in reporters(a)] == [1, 3, 3], chain_answers(a, source, replaced)
    assert (counts(a.store), digest_at(a.store, indexer, block).sha256_hex) == rebuilt_digest(a, tmp_path, block)


def test_sync_rewinds_when_the_chain_lost_its_last_blocks(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    a, b, _ = ledger_nodes.nodes
    control = ChainClient(ledger_nodes.rpc_url)
    kept = ledger_of(a).publish_batch(1, make_records(2, seed=30))
    snapshot = control.rpc("evm_snapshot")
    ledger_of(a).publish_batch(1, make_records(2, seed=31))
    ledger_of(a).publish_batch(1, make_records(2, seed=32))
    indexer = indexer_of(b)
    indexer.sync()

    control.rpc("evm_revert", [snapshot])
    a.signing_chain.nonces.reset()
    result = indexer.sync()  # the last indexed block is gone: the head is below it

    assert result.rewinds == [Rewind(kept.block_number + 2, kept.block_number)]
    assert [r for _, r in reporters(b)] == [1]
    ledger_of(a).publish_batch(1, make_records(2, seed=33))
    indexer.sync()
    block = b.chain.block_number()
    assert (counts(b.store), digest_at(b.store, indexer, block).sha256_hex) == rebuilt_digest(b, tmp_path, block)
