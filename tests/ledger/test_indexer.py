"""The indexer on a real chain: batches, records and reactions into the mirror, its checks, chunks, confirmations.

The helpers at the top are shared with the other test_indexer_*.py modules and the CLI tests.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from node.chain.client import ChainClient
from node.chain.fraud_ledger import FraudLedgerClient, LedgerRecord, SignedPublish, batch_root
from node.chain.ledger_events import BlockHeader, LedgerEvent, LedgerEventSource, PublishInput
from node.config import Settings
from node.ledger.digest import MirrorDigest, mirror_digest
from node.ledger.indexer import Indexer, indexer_for
from node.ledger.indicator_state import StatePolicy
from node.runtime import NodeContext
from node.store.db import Store
from node.store.ledger_tables import IndexedBlock, MirrorBatch, MirrorReaction, MirrorRecord, SyncState
from tests.conftest import LedgerNodes

POLICY = StatePolicy(half_life_days=365.0, dispute_window_days=30)
VALID_FROM = 1_760_000_000
YEAR = 365 * 86_400


def make_records(count: int, seed: int, **overrides: int) -> list[LedgerRecord]:
    rng = random.Random(seed)
    fields: dict[str, Any] = {"identifier_type": 3, "category": 5, "confidence": 80, "valid_from": VALID_FROM,
                              "valid_until": VALID_FROM + YEAR, **overrides}
    return [LedgerRecord(rng.randbytes(32), fields["identifier_type"], fields["category"], fields["confidence"],
                         fields["valid_from"], fields["valid_until"], rng.randbytes(32), rng.randbytes(32))
            for _ in range(count)]


def ledger_of(node: NodeContext) -> FraudLedgerClient:
    return node.fraud_ledger(signing=True)


def source_of(node: NodeContext) -> LedgerEventSource:
    return LedgerEventSource(node.settings.effective_rpc_url, node.deployment.address("FraudLedger"))


def indexer_of(node: NodeContext, *, store: Store | None = None, source: Any = None, **options: Any) -> Indexer:
    """An indexer of the node's FraudLedger, into its own store unless another is given."""
    real = source_of(node)
    return Indexer(store or node.store, source or real, contract_address=real.address,
                   start_block=node.deployment.contracts["FraudLedger"].block_number, **options)


def counts(store: Store) -> dict[str, int]:
    with store.session() as session:
        return {name: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for name, table in (("batches", MirrorBatch), ("records", MirrorRecord),
                                    ("reactions", MirrorReaction))}


def sync_state(store: Store, indexer: Indexer) -> SyncState:
    with store.session() as session:
        state = session.get(SyncState, indexer.contract)
        assert state is not None
        return state


def digest_at(store: Store, indexer: Indexer, block: int) -> MirrorDigest:
    header = source_of_indexer(indexer).headers([block])[block]
    assert header is not None
    with store.session() as session:
        return mirror_digest(session, block=block, at=header.timestamp, policy=POLICY)


def source_of_indexer(indexer: Indexer) -> Any:
    source = indexer.source
    return getattr(source, "inner", source)


def mine(rpc_url: str, blocks: int) -> None:
    ChainClient(rpc_url).rpc("anvil_mine", [hex(blocks)])


def reorg(rpc_url: str, depth: int, signed: Sequence[tuple[bytes, int]]) -> None:
    """Replace the last `depth` blocks with new ones holding `signed` (raw transaction, block offset)."""
    ChainClient(rpc_url).rpc("anvil_reorg", [depth, [["0x" + raw.hex(), offset] for raw, offset in signed]])


def signed_publish(node: NodeContext, records: Sequence[LedgerRecord], *, nonce_offset: int = 0) -> bytes:
    """A publishBatch signed by `node` with its next mined nonce plus `nonce_offset` (for replacement blocks)."""
    return signed_publish_tx(node, records, nonce_offset=nonce_offset).raw


def signed_publish_tx(node: NodeContext, records: Sequence[LedgerRecord], *, nonce_offset: int = 0) -> SignedPublish:
    """`signed_publish`, with the transaction's hash."""
    ledger = ledger_of(node)
    return ledger.sign_publish(1, records, root=batch_root(records), nonce=ledger.confirmed_nonce() + nonce_offset)


class HookedSource:
    """A real source that runs `hook(call_number)` after each `events` call: a reorg or a crash mid-sync."""

    def __init__(self, inner: LedgerEventSource, hook: Any) -> None:
        self.inner = inner
        self.hook = hook
        self.calls = 0
        self.read: list[tuple[int, int, int]] = []  # (from, to, events found) of each call, for failure messages

    def block_number(self) -> int:
        return self.inner.block_number()

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockHeader | None]:
        return self.inner.headers(numbers)

    def events(self, from_block: int, to_block: int) -> list[LedgerEvent]:
        found = self.inner.events(from_block, to_block)
        self.read.append((from_block, to_block, len(found)))
        self.calls += 1
        self.hook(self.calls)
        return found

    def iter_publish_inputs(self, tx_hashes: Sequence[str]) -> Iterator[tuple[str, PublishInput | None]]:
        return self.inner.iter_publish_inputs(tx_hashes)


# -- tests ---------------------------------------------------------------------------------------------------


def test_sync_mirrors_batches_records_and_reactions(ledger_nodes: LedgerNodes, store_url: str) -> None:
    a, b, c = ledger_nodes.nodes
    records = make_records(3, seed=1)
    published = ledger_of(a).publish_batch(1, records)
    ledger_of(b).endorse(records[0].indicator, 60)
    ledger_of(c).dispute(records[0].indicator, 2)
    ledger_of(a).confirm(published.batch_id, records[1].indicator)
    ledger_of(a).revoke(published.batch_id, records[2].indicator, 1)
    store = Store(store_url)
    store.migrate()
    indexer = indexer_of(a, store=store)

    result = indexer.sync()

    head = a.chain.head()
    assert (result.batches, result.records, result.reactions, result.rewinds) == (1, 3, 4, [])
    assert result.complete and result.to_block == head.block_number == result.target
    with store.session() as session:
        batch = session.get(MirrorBatch, published.batch_id)
        assert batch is not None
        assert (batch.reporter_member_id, batch.epoch, batch.root, batch.record_count, batch.accepted_count,
                batch.tx_hash, batch.block_number) == (1, 1, published.root, 3, 3, published.tx_hash,
                                                      published.block_number)
        rows = session.scalars(select(MirrorRecord).order_by(MirrorRecord.position)).all()
        assert [(r.position, r.indicator, r.reporter_member_id, r.epoch, r.block_number) for r in rows] == [
            (i, record.indicator, 1, 1, published.block_number) for i, record in enumerate(records)]
        assert (rows[0].category, rows[0].confidence, rows[0].valid_until) == (5, 80, VALID_FROM + YEAR)
        reactions = session.scalars(select(MirrorReaction).order_by(MirrorReaction.block_number)).all()
        assert [(e.kind, e.member_id, e.batch_id, e.value) for e in reactions] == [
            ("endorsed", 2, None, 60), ("disputed", 3, None, 2), ("confirmed", 1, 1, 0), ("revoked", 1, 1, 1)]
    state = sync_state(store, indexer)
    assert (state.last_block, state.last_block_hash, state.last_block_time, state.chain_head) == (
        head.block_number, head.block_hash, head.timestamp, head.block_number)
    assert state.synced_at is not None and state.last_error is None
    reference = indexer_of(a)  # the node's own SQLite store
    reference.sync()
    assert digest_at(store, indexer, head.block_number) == digest_at(a.store, reference, head.block_number)
    store.close()


def test_sync_reads_many_blocks_in_chunks(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    blocks = []
    for i in range(5):
        mine(ledger_nodes.rpc_url, 3)
        blocks.append(ledger_of(a).publish_batch(1, make_records(2, seed=10 + i)).block_number)
    source = HookedSource(source_of(a), lambda _call: None)
    indexer = indexer_of(a, source=source, chunk_blocks=2)

    partial = indexer.sync(max_blocks=4)
    assert partial.to_block == indexer.start_block + 3 and not partial.complete
    assert sync_state(a.store, indexer).synced_at is None
    rest = indexer.sync()

    head = a.chain.block_number()
    assert rest.complete and rest.to_block == head
    assert partial.blocks + rest.blocks == head - indexer.start_block + 1
    assert source.calls == -(-4 // 2) + -(-(head - indexer.start_block - 3) // 2)
    assert (partial.batches + rest.batches, partial.records + rest.records) == (5, 10)
    assert counts(a.store) == {"batches": 5, "records": 10, "reactions": 0}
    with a.store.session() as session:
        indexed = set(session.scalars(select(IndexedBlock.number)))
    assert set(blocks) <= indexed and head in indexed


def test_sync_ignores_malformed_records_alike_on_every_node(ledger_nodes: LedgerNodes) -> None:
    a, b, _ = ledger_nodes.nodes
    good = make_records(2, seed=3)
    malformed = [*make_records(1, 4, category=0), *make_records(1, 5, category=10),
                 *make_records(1, 6, confidence=101), *make_records(1, 7, valid_until=VALID_FROM),
                 *make_records(1, 8, valid_until=VALID_FROM + 7 * YEAR), *make_records(1, 9, identifier_type=99)]
    published = ledger_of(a).publish_batch(1, [good[0], *malformed, good[1]])
    indexers = [indexer_of(node) for node in (a, b)]

    results = [indexer.sync() for indexer in indexers]

    assert [(r.records, r.ignored_records, r.rejected_batches) for r in results] == [(2, 6, 0)] * 2
    with a.store.session() as session:
        batch = session.get(MirrorBatch, published.batch_id)
        assert batch is not None and (batch.record_count, batch.accepted_count) == (8, 2)
        assert list(session.execute(select(MirrorRecord.position, MirrorRecord.indicator)
                                    .order_by(MirrorRecord.position))) == [(0, good[0].indicator),
                                                                           (7, good[1].indicator)]
    block = results[0].to_block
    assert digest_at(a.store, indexers[0], block) == digest_at(b.store, indexers[1], block)


def test_sync_rejects_batch_whose_calldata_does_not_match_its_root(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    ledger = ledger_of(a)
    records = make_records(3, seed=11)
    forged_root = batch_root(make_records(3, seed=12))
    a.signing_chain.send_transaction(ledger.build_publish_tx(1, records, root=forged_root))
    batch_id = ledger.batch_count()
    ledger.confirm(batch_id, records[0].indicator)  # the contract cannot tell; the indexer can
    honest = ledger.publish_batch(1, make_records(2, seed=13))

    result = indexer_of(a).sync()

    assert (result.batches, result.rejected_batches, result.records, result.ignored_records) == (2, 1, 2, 3)
    assert (result.reactions, result.ignored_reactions) == (0, 1)
    with a.store.session() as session:
        forged = session.get(MirrorBatch, batch_id)
        assert forged is not None and (forged.root, forged.record_count, forged.accepted_count) == (forged_root, 3, 0)
        assert set(session.scalars(select(MirrorRecord.batch_id))) == {honest.batch_id}


def test_sync_ignores_confirm_and_revoke_of_indicators_not_in_the_batch(ledger_nodes: LedgerNodes) -> None:
    a, b, _ = ledger_nodes.nodes
    records = make_records(2, seed=20)
    malformed = make_records(1, seed=21, category=0)
    published = ledger_of(a).publish_batch(1, [*records, *malformed])
    elsewhere = make_records(1, seed=22)
    ledger_of(a).publish_batch(1, elsewhere)
    ledger_of(a).confirm(published.batch_id, b"\x42" * 32)  # in no batch
    ledger_of(a).revoke(published.batch_id, malformed[0].indicator, 1)  # in the batch but malformed
    ledger_of(a).confirm(published.batch_id, elsewhere[0].indicator)  # in another of A's batches
    ledger_of(a).confirm(published.batch_id, records[0].indicator)  # kept
    ledger_of(a).revoke(published.batch_id, records[1].indicator, 4)  # kept
    ledger_of(b).endorse(b"\x43" * 32, 10)  # endorsements need no batch: kept

    result = indexer_of(a, chunk_blocks=3).sync()

    assert (result.reactions, result.ignored_reactions) == (3, 3)
    with a.store.session() as session:
        kept = session.execute(select(MirrorReaction.kind, MirrorReaction.indicator)
                               .order_by(MirrorReaction.block_number)).all()
    assert kept == [("confirmed", records[0].indicator), ("revoked", records[1].indicator),
                    ("endorsed", b"\x43" * 32)]


def test_sync_again_changes_nothing(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    records = make_records(4, seed=30)
    published = ledger_of(a).publish_batch(1, records)
    ledger_of(a).confirm(published.batch_id, records[0].indicator)
    first = indexer_of(a).sync()
    before = counts(a.store)

    again = indexer_of(a).sync()  # a new indexer: everything it knows comes from the store

    assert before == {"batches": 1, "records": 4, "reactions": 1}
    assert counts(a.store) == before
    assert (again.blocks, again.batches, again.records, again.reactions, again.rewinds) == (0, 0, 0, 0, [])
    assert again.complete and again.from_block == again.to_block == first.to_block


def test_sync_keeps_the_last_blocks_out_until_confirmed(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    early = ledger_of(a).publish_batch(1, make_records(1, seed=40))
    mine(ledger_nodes.rpc_url, 2)
    late = ledger_of(a).publish_batch(1, make_records(1, seed=41))
    indexer = indexer_of(a, confirmations=2)

    first = indexer.sync()
    assert first.target == late.block_number - 2 and first.to_block == first.target and first.complete
    with a.store.session() as session:
        assert set(session.scalars(select(MirrorBatch.batch_id))) == {early.batch_id}

    mine(ledger_nodes.rpc_url, 2)
    second = indexer.sync()
    assert second.to_block == late.block_number and second.batches == 1
    assert counts(a.store)["batches"] == 2


def test_node_indexer_stays_the_profiles_confirmations_behind_unless_set(ledger_nodes: LedgerNodes,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    a = ledger_nodes.nodes[0]
    deep = dataclasses.replace(a.settings.profile, confirmations=12)
    monkeypatch.setattr(Settings, "profile", property(lambda self: deep))
    assert indexer_for(a).confirmations == 12
    a.settings.confirmations = 1
    assert indexer_for(a).confirmations == 1


def test_digest_is_identical_on_two_nodes(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    for i, node in enumerate((a, b, c)):
        records = make_records(5, seed=50 + i)
        published = ledger_of(node).publish_batch(1, records)
        ledger_of(node).confirm(published.batch_id, records[0].indicator)
        ledger_of(a if node is not a else b).dispute(records[1].indicator, 1)
        ledger_of(c).endorse(records[2].indicator, 70)
    ledger_of(a).endorse(b"\x44" * 32, 30)  # an indicator with reactions only is part of the state too
    indexers = [indexer_of(node) for node in (a, b)]
    for indexer in indexers:
        indexer.sync()

    block = a.chain.block_number()
    digests = [digest_at(node.store, indexer, block) for node, indexer in zip((a, b), indexers, strict=True)]
    assert digests[0] == digests[1]
    assert digests[0].indicator_count == 16
    earlier = digest_at(a.store, indexers[0], block - 3)
    assert earlier.sha256_hex != digests[0].sha256_hex and earlier.block == block - 3


def test_rebuild_restores_the_same_mirror(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    records = make_records(3, seed=60)
    published = ledger_of(a).publish_batch(1, records)
    ledger_of(a).revoke(published.batch_id, records[2].indicator, 2)
    indexer = indexer_of(a, chunk_blocks=4)
    indexer.sync()
    block = sync_state(a.store, indexer).last_block
    before = (counts(a.store), digest_at(a.store, indexer, block))

    result = indexer.rebuild()

    assert result.from_block == indexer.start_block - 1 and result.to_block == block
    assert (counts(a.store), digest_at(a.store, indexer, block)) == before

