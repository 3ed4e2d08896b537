"""Versions larger than one transaction: loan ids published in chunks, resumed after a crash, mirrored by all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from node.assets.pools import (
    PoolRefused,
    anchor_draft,
    asset_registry,
    discard_draft,
    import_tape,
    local_pools,
    publish_remaining_ids,
)
from node.assets.screening import double_financed_loans, rebuild_loan_mirror, sync_loan_mirror, version_complete
from node.chain.asset_registry import AssetRegistryClient, SentChunk, _published_loan_ids
from node.chain.errors import (
    AssetRegistryLoanIdsIncomplete,
    AssetRegistryLoanIdsOffsetMismatch,
    AssetRegistryNotCustodian,
    AssetRegistryTooManyLoanIds,
    ChainError,
)
from node.errors import Conflict
from node.runtime import NodeContext
from node.store.asset_tables import AssetMirrorLoan, AssetVersion
from node.store.db import Store
from tests.assets.conftest import loan_row, write_tape
from tests.assets.test_pools import first_version_records
from tests.conftest import interrupted_before_writing
from tests.store.outage import PostgresRelay

CHUNK = 50


class Crash(Exception):
    """The node stopping between two transactions."""


def crash_after(monkeypatch: pytest.MonkeyPatch, chunks: int) -> None:
    """Let `chunks` publishLoanIds transactions through, then stop the node before the next one is sent."""
    real = AssetRegistryClient.send_loan_ids
    sent: list[SentChunk] = []

    def send(self: AssetRegistryClient, *args: Any, **kwargs: Any) -> SentChunk:
        if len(sent) == chunks:
            raise Crash
        sent.append(real(self, *args, **kwargs))
        return sent[-1]

    monkeypatch.setattr(AssetRegistryClient, "send_loan_ids", send)


def import_pool(node: NodeContext, tmp_path: Path, pool: str, seeds: range) -> None:
    import_tape(node, pool, write_tape(tmp_path / f"{pool}-{seeds.start}-{seeds.stop}.csv",
                                       [loan_row(i) for i in seeds]))


def mirrored_ids(node: NodeContext, pool_id: int, version: int) -> list[bytes]:
    with node.store.session() as session:
        return [bytes(i) for i in session.scalars(
            select(AssetMirrorLoan.loan_id)
            .where(AssetMirrorLoan.pool_id == pool_id, AssetMirrorLoan.version == version)
            .order_by(AssetMirrorLoan.position))]


def event_offsets(node: NodeContext, pool_id: int, version: int) -> list[tuple[int, int]]:
    return [(e.offset, len(e.loan_ids))
            for e in asset_registry(node).published_loan_ids(pool_id=pool_id, version=version)]


def test_anchor_publishes_large_version_in_chunks(banks: list[NodeContext], tmp_path: Path) -> None:
    a, b, _c = banks
    import_pool(a, tmp_path, "big", range(180))
    result = anchor_draft(a, "big", chunk_size=CHUNK)
    pool_id, version = result.anchored.pool_id, result.anchored.version
    assert [(c.offset, c.count) for c in result.chunks] == [(50, 50), (100, 50), (150, 30)]
    assert event_offsets(a, pool_id, version) == [(0, 50), (50, 50), (100, 50), (150, 30)]
    registry = asset_registry(a)
    assert registry.loan_ids_published(pool_id, version) == registry.version(pool_id, version).loan_count == 180
    assert result.gas_used == result.anchored.gas_used + sum(c.gas_used for c in result.chunks)
    assert len(result.to_json()["loan_id_chunks"]) == 3
    with a.store.session() as session:
        row = session.scalar(select(AssetVersion).where(AssetVersion.version == version))
        assert row is not None and (row.state, row.gas_used) == ("anchored", result.gas_used)
    expected = [r.loan_id for r in first_version_records(a)]
    sync_loan_mirror(b.store, asset_registry(b))
    assert mirrored_ids(b, pool_id, version) == expected
    with b.store.session() as session:
        assert version_complete(session, pool_id, version)


def test_anchor_resumes_after_crash_without_publishing_twice(banks: list[NodeContext], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _c = banks
    import_pool(a, tmp_path, "resumed", range(180))
    crash_after(monkeypatch, 1)
    with pytest.raises(Crash):
        anchor_draft(a, "resumed", chunk_size=CHUNK)
    registry = asset_registry(a)
    assert registry.loan_ids_published(1, 1) == 100  # the anchor's chunk and one more
    sync_loan_mirror(b.store, asset_registry(b))
    with b.store.session() as session:
        assert not version_complete(session, 1, 1)
    assert len(mirrored_ids(b, 1, 1)) == 100
    with a.store.session() as session:
        assert session.scalar(select(AssetVersion.state)) == "draft"

    monkeypatch.undo()
    result = anchor_draft(a, "resumed", chunk_size=CHUNK)
    assert (result.anchored.pool_id, result.anchored.version) == (1, 1)
    assert [(c.offset, c.count) for c in result.chunks] == [(100, 50), (150, 30)]
    assert event_offsets(a, 1, 1) == [(0, 50), (50, 50), (100, 50), (150, 30)]
    assert registry.pool(1).version_count == 1
    sync_loan_mirror(b.store, asset_registry(b))
    assert mirrored_ids(b, 1, 1) == [r.loan_id for r in first_version_records(a)]
    with b.store.session() as session:
        assert version_complete(session, 1, 1)


def test_resume_while_crashed_copy_pending_publishes_each_id_once(banks: list[NodeContext], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The crashed attempt's chunk is still in the transaction pool when the node resumes: the resumed copy
    of that chunk is refused for its offset, the rest go through."""
    a = banks[0]
    import_pool(a, tmp_path, "pending", range(180))
    crash_after(monkeypatch, 0)
    with pytest.raises(Crash):
        anchor_draft(a, "pending", chunk_size=CHUNK)
    monkeypatch.undo()
    ids = [r.loan_id for r in first_version_records(a)]
    registry = asset_registry(a, signing=True)
    chain = registry.chain
    chain.rpc("evm_setAutomine", [False])
    try:
        registry.send_loan_ids(1, 1, 50, ids[50:100])  # sent just before the crash, not yet mined
        assert registry.loan_ids_published(1, 1) == 50
        chain.rpc("evm_setIntervalMining", [1])
        chunks = publish_remaining_ids(registry, 1, 1, ids, chunk_size=CHUNK)
    finally:
        chain.rpc("evm_setIntervalMining", [0])
        chain.rpc("evm_setAutomine", [True])
    assert [(c.offset, c.count) for c in chunks] == [(100, 50), (150, 30)]
    assert event_offsets(a, 1, 1) == [(0, 50), (50, 50), (100, 50), (150, 30)]
    published = asset_registry(a).published_loan_ids(pool_id=1, version=1)
    assert [i for chunk in published for i in chunk.loan_ids] == ids


def test_publish_remaining_ids_refuses_resent_chunk(banks: list[NodeContext], tmp_path: Path) -> None:
    a = banks[0]
    import_pool(a, tmp_path, "done", range(120))
    anchor_draft(a, "done", chunk_size=CHUNK)
    ids = [r.loan_id for r in first_version_records(a)]
    registry = asset_registry(a, signing=True)
    with pytest.raises(AssetRegistryLoanIdsOffsetMismatch) as raised:
        registry.publish_loan_ids(1, 1, 50, ids[50:100])  # a copy of a chunk already mined
    assert raised.value.arguments == {"poolId": 1, "version": 1, "offset": 50, "published": 120}
    with pytest.raises(AssetRegistryTooManyLoanIds) as over:
        registry.publish_loan_ids(1, 1, 120, ids[:1])
    assert over.value.arguments == {"poolId": 1, "version": 1, "given": 1, "remaining": 0}
    assert publish_remaining_ids(registry, 1, 1, ids, chunk_size=CHUNK) == []
    assert event_offsets(a, 1, 1) == [(0, 50), (50, 50), (100, 20)]


def test_publish_loan_ids_by_non_custodian_reverts(banks: list[NodeContext], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _c = banks
    import_pool(a, tmp_path, "held", range(120))
    crash_after(monkeypatch, 0)
    with pytest.raises(Crash):
        anchor_draft(a, "held", chunk_size=CHUNK)
    monkeypatch.undo()
    ids = [r.loan_id for r in first_version_records(a)]
    with pytest.raises(AssetRegistryNotCustodian) as raised:
        asset_registry(b, signing=True).publish_loan_ids(1, 1, 50, ids[50:100])
    assert raised.value.arguments == {"poolId": 1, "account": b.address}
    assert asset_registry(a).loan_ids_published(1, 1) == 50
    # Custody does not move while the version is incomplete: A, which anchored it, completes it.
    asset_registry(a, signing=True).propose_transfer(1, b.address)
    with pytest.raises(AssetRegistryLoanIdsIncomplete) as blocked:
        asset_registry(b, signing=True).accept_transfer(1)
    assert blocked.value.arguments == {"poolId": 1, "version": 1, "published": 50, "loanCount": 120}


def test_anchor_of_other_version_refused_while_previous_incomplete(banks: list[NodeContext], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a = banks[0]
    import_pool(a, tmp_path, "stuck", range(120))
    crash_after(monkeypatch, 0)
    with pytest.raises(Crash):
        anchor_draft(a, "stuck", chunk_size=CHUNK)
    monkeypatch.undo()
    with pytest.raises(Conflict) as refused:  # the draft is version 1 on chain, incomplete: its records finish it
        discard_draft(a, "stuck")
    assert refused.value.code == "anchored_on_chain"
    # The operator drops the draft all the same with the chain away (unchecked), and imports another tape.
    chain_down = NodeContext(a.settings.model_copy(update={"rpc_url": "http://127.0.0.1:9"}))
    try:
        discard_draft(chain_down, "stuck")
    finally:
        chain_down.close()
    import_pool(a, tmp_path, "stuck", range(10))
    with pytest.raises(Conflict, match="has only 50 of its 120 loan ids published") as raised:
        anchor_draft(a, "stuck", chunk_size=CHUNK)
    assert raised.value.code == "version_incomplete"
    assert asset_registry(a).pool(1).version_count == 1


def test_double_financing_detected_across_chunks(banks: list[NodeContext], tmp_path: Path) -> None:
    a, b, _c = banks
    import_pool(a, tmp_path, "first", range(180))
    first = anchor_draft(a, "first", chunk_size=CHUNK).anchored.pool_id
    # Loans 0-4 went out with the anchor, 120-129 in the third chunk.
    import_tape(a, "second", write_tape(tmp_path / "second.csv",
                                        [loan_row(i) for i in [*range(5), *range(120, 130), *range(500, 505)]]))
    with pytest.raises(PoolRefused, match="15 loan\\(s\\) already active in another pool"):
        anchor_draft(a, "second", chunk_size=CHUNK)
    second = anchor_draft(a, "second", chunk_size=CHUNK, override_reason="test").anchored.pool_id
    sync_loan_mirror(b.store, asset_registry(b))
    with b.store.session() as session:
        flagged = double_financed_loans(session)
    assert len(flagged) == 15 and set(map(tuple, flagged.values())) == {(first, second)}


def test_previous_version_stays_active_until_next_is_complete(banks: list[NodeContext], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 2 of "old" drops loans 60-99, but until its last chunk is in, version 1 still holds them."""
    a, b, _c = banks
    import_pool(a, tmp_path, "old", range(100))
    anchor_draft(a, "old", chunk_size=CHUNK)
    import_pool(a, tmp_path, "old", range(60))
    crash_after(monkeypatch, 0)
    with pytest.raises(Crash):
        anchor_draft(a, "old", chunk_size=20)
    monkeypatch.undo()
    assert asset_registry(a).loan_ids_published(1, 2) == 20
    import_pool(a, tmp_path, "new", range(80, 85))
    with pytest.raises(PoolRefused, match="5 loan\\(s\\) already active in another pool"):
        anchor_draft(a, "new")
    sync_loan_mirror(b.store, asset_registry(b))
    with b.store.session() as session:
        assert double_financed_loans(session) == {}  # "new" was refused, so nothing is pledged twice yet

    anchor_draft(a, "old", chunk_size=20)  # resume: version 2 complete, loans 60-99 leave pool 1
    assert anchor_draft(a, "new").findings.double_financed == {}
    sync_loan_mirror(b.store, asset_registry(b))
    with b.store.session() as session:
        assert double_financed_loans(session) == {}
        assert version_complete(session, 1, 2)


def test_mirror_takes_chunked_versions_in_any_store(banks: list[NodeContext], tmp_path: Path, store_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An observer's mirror (SQLite or PostgreSQL) across a complete version, a half-published one and overlap."""
    a = banks[0]
    import_pool(a, tmp_path, "one", range(120))
    anchor_draft(a, "one", chunk_size=CHUNK)
    import_pool(a, tmp_path, "two", range(100, 160))
    crash_after(monkeypatch, 0)
    with pytest.raises(Crash):
        anchor_draft(a, "two", chunk_size=CHUNK, override_reason="moving loans 100-119")
    monkeypatch.undo()
    store = Store(store_url)
    store.migrate()
    try:
        registry = asset_registry(a)
        assert sync_loan_mirror(store, registry) == 4  # chunks: 3 of pool 1, 1 of pool 2
        with store.session() as session:
            assert version_complete(session, 1, 1) and not version_complete(session, 2, 1)
            assert len(double_financed_loans(session)) == 20  # pool 2's first chunk holds loans 100-119
        anchor_draft(a, "two", chunk_size=CHUNK, override_reason="moving loans 100-119")
        assert sync_loan_mirror(store, registry) == 1
        assert sync_loan_mirror(store, registry) == 0
        with store.session() as session:
            assert version_complete(session, 2, 1)
            assert set(map(tuple, double_financed_loans(session).values())) == {(1, 2)}
        assert rebuild_loan_mirror(store, registry) == 5
        with store.session() as session:
            assert version_complete(session, 1, 1) and version_complete(session, 2, 1)
    finally:
        store.close()


def test_published_loan_ids_decoded_by_hand_equal_the_abi_decoding(banks: list[NodeContext], tmp_path: Path) -> None:
    """The chunks are decoded from the raw logs (web3's decoder took over a minute for a million ids): each field
    as web3 decodes it, for every filter the mirror and the verifier use."""
    a, _b, _c = banks
    import_pool(a, tmp_path, "one", range(120))
    import_pool(a, tmp_path, "two", range(200, 230))
    first = anchor_draft(a, "one", chunk_size=CHUNK).anchored
    second = anchor_draft(a, "two", chunk_size=CHUNK).anchored
    registry = asset_registry(a)
    event = registry.contract.events.LoanIdsPublished()

    def abi_decoded(from_block: int = 0, **filters: int) -> list[tuple[Any, ...]]:
        return [(int(log["args"]["poolId"]), int(log["args"]["version"]), int(log["args"]["offset"]),
                 [bytes(i) for i in log["args"]["loanIds"]], log["blockNumber"], log["logIndex"],
                 log["transactionHash"].to_0x_hex())
                for log in registry.chain.event_logs(event, from_block=from_block, argument_filters=filters)]

    def by_hand(**kwargs: int) -> list[tuple[Any, ...]]:
        return [(p.pool_id, p.version, p.offset, p.loan_ids, p.block_number, p.log_index, p.tx_hash)
                for p in registry.published_loan_ids(**kwargs)]

    assert [(pool, offset, len(ids)) for pool, _v, offset, ids, *_ in by_hand()] == [
        (first.pool_id, 0, 50), (first.pool_id, 50, 50), (first.pool_id, 100, 20), (second.pool_id, 0, 30)]
    assert by_hand() == abi_decoded()
    assert by_hand(pool_id=second.pool_id) == abi_decoded(poolId=second.pool_id)
    assert by_hand(pool_id=first.pool_id, version=first.version) == abi_decoded(poolId=first.pool_id,
                                                                                 version=first.version)
    assert by_hand(pool_id=first.pool_id, version=first.version + 1) == []
    later = by_hand()[2][4]
    assert by_hand(from_block=later) == abi_decoded(from_block=later) != abi_decoded()


def test_a_malformed_loan_ids_log_is_refused_not_decoded() -> None:
    """The chunks are sliced from the raw logs by hand: a log not in the event's layout (another event's topics,
    data of another length or head) is a ChainError naming its block, never ids read from the wrong bytes."""
    def word(n: int) -> str:
        return n.to_bytes(32, "big").hex()

    log: dict[str, Any] = {"topics": ["0x" + "11" * 32, "0x" + word(7), "0x" + word(1)],
                           "data": "0x" + word(50) + word(64) + word(2) + "ab" * 32 + "cd" * 32,
                           "blockNumber": "0x5", "logIndex": "0x1", "transactionHash": "0x" + "22" * 32}
    chunk = _published_loan_ids(log)
    assert (chunk.pool_id, chunk.version, chunk.offset, chunk.loan_ids, chunk.block_number, chunk.log_index) == (
        7, 1, 50, [b"\xab" * 32, b"\xcd" * 32], 5, 1)
    malformed = [{**log, "data": log["data"][:-64]},  # one id fewer than its length says
                 {**log, "data": log["data"] + "ef" * 32},  # one more
                 {**log, "data": "0x" + word(50) + word(32) + word(2) + "ab" * 64},  # the array's head elsewhere
                 {**log, "data": "0x"},
                 {**log, "data": "0xzz"},
                 {**log, "topics": log["topics"][:2]},  # an event with another number of indexed fields
                 {key: value for key, value in log.items() if key != "data"}]
    for bad in malformed:
        with pytest.raises(ChainError, match="malformed LoanIdsPublished log in block 0x5"):
            _published_loan_ids(bad)


def test_anchor_recorded_before_the_chain_went_down_reports_the_anchor(banks: list[NodeContext], tmp_path: Path,
                                                                       rpc_url: str) -> None:
    """The chain went away after the version was anchored, its ids published and the anchor recorded, while the node
    refreshed its loan-id mirror: the anchor was reported as failed (chain_unavailable), so the operator, told nothing
    was anchored, found no draft left to anchor. It now reports the anchor; the mirror catches up at its next sync."""
    a = banks[0]
    import_pool(a, tmp_path, "outage", range(120))
    relay = PostgresRelay(rpc_url)  # a TCP relay in front of the real chain
    through_relay = NodeContext(a.settings.model_copy(update={"rpc_url": f"http://127.0.0.1:{relay.port}"}))
    try:
        with interrupted_before_writing(through_relay.store, {"asset_versions"}, relay.cut):
            result = anchor_draft(through_relay, "outage", chunk_size=CHUNK)
    finally:
        through_relay.close()
        relay.close()
    assert (result.anchored.pool_id, result.anchored.version, result.loan_count) == (1, 1, 120)
    assert asset_registry(a).loan_ids_published(1, 1) == 120
    [pool] = local_pools(a)
    assert [(v["state"], v["version"]) for v in pool["versions"]] == [("anchored", 1)]
    sync_loan_mirror(a.store, asset_registry(a))
    with a.store.session() as session:
        assert version_complete(session, 1, 1)
