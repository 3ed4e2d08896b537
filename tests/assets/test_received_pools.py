"""A pool received from another bank (transfer or succession): its tape imported into a local pool bound to it
(`pool_id=`), then anchored as its next version or used to finish publishing its latest one."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from node.assets import lifecycle
from node.assets.pools import PoolRefused, anchor_draft, asset_registry, discard_draft, import_tape, local_pools
from node.assets.provenance import build_bundle
from node.assets.records import LoanStatus
from node.assets.screening import double_financed_loans, sync_loan_mirror
from node.assets.verify import verify_bundle
from node.chain.errors import AssetRegistryNotCustodian, AssetRegistryUnknownPool
from node.errors import Conflict, InvalidInput
from node.runtime import NodeContext
from node.store.asset_tables import AssetLoan, AssetPool, AssetServicingReport, AssetVersion
from tests.assets.conftest import HEADER, loan_row, write_tape
from tests.assets.test_chunked_anchor import CHUNK, Crash, crash_after, mirrored_ids
from tests.assets.test_pools import anchor_tape, first_version_records
from tests.conftest import interrupted_before_writing


def tape_of_a(tmp_path: Path, name: str, seeds: range, extra: range = range(0)) -> Path:
    """A tape of loans originated by bank A (`seeds`), as the bank holding A's pool keeps them, plus loans of its
    own (`extra`)."""
    rows = [loan_row(i, originator="BANK-A") for i in seeds] + [loan_row(i, originator="BANK-B") for i in extra]
    return write_tape(tmp_path / name, rows, (*HEADER, "originator"))


def local_names(node: NodeContext) -> list[str]:
    return [p["name"] for p in local_pools(node)]


def loan_ids_of(node: NodeContext, pool: str) -> list[bytes]:
    """The loan ids of the local pool's latest version, in tape order."""
    with node.store.session() as session:
        version_ref = session.scalar(select(AssetVersion.id).join(AssetPool, AssetVersion.pool_ref == AssetPool.id)
                                     .where(AssetPool.name == pool).order_by(AssetVersion.id.desc()).limit(1))
        return [bytes(i) for i in session.scalars(select(AssetLoan.loan_id).where(AssetLoan.version_ref == version_ref)
                                                  .order_by(AssetLoan.position))]


def anchored_and_moved_to(a: NodeContext, b: NodeContext, tmp_path: Path) -> int:
    """A's pool "retail" of six loans, anchored, then transferred to and accepted by B; its on-chain id."""
    pool_id = anchor_tape(a, tmp_path, "retail", range(6))
    lifecycle.propose_transfer(a, pool_id, "BANK-B")
    lifecycle.accept_transfer(b, pool_id)
    return pool_id


def test_received_pool_without_binding_is_refused_as_double_financing(banks: list[NodeContext],
                                                                      tmp_path: Path) -> None:
    """The defect: the bank holding A's pool could only import into a new pool, refused against the pool it holds."""
    a, b, _c = banks
    anchored_and_moved_to(a, b, tmp_path)
    import_tape(b, "unbound", tape_of_a(tmp_path, "v2.csv", range(4)))
    with pytest.raises(PoolRefused, match="already active in another pool"):
        anchor_draft(b, "unbound")


def test_pool_received_by_transfer_anchors_its_next_version(banks: list[NodeContext], tmp_path: Path) -> None:
    a, b, c = banks
    pool_id = anchored_and_moved_to(a, b, tmp_path)

    draft = import_tape(b, "bought", tape_of_a(tmp_path, "v2.csv", range(4), range(100, 103)), pool_id=pool_id)
    assert draft.pool_id == pool_id
    result = anchor_draft(b, "bought", chunk_size=2)
    assert (result.anchored.pool_id, result.anchored.version) == (pool_id, 2)
    assert not result.findings  # the loans of pool 1's version 1 are not double financed against pool 1
    assert len(result.chunks) == 3  # B, the custodian, published the ids after the first chunk
    registry = asset_registry(c)
    assert registry.pool_count() == 1  # no new pool registered
    assert registry.pool(pool_id).version_count == 2
    assert registry.version(pool_id, 2).anchored_by_member_id == 2

    sync_loan_mirror(c.store, registry)
    assert mirrored_ids(c, pool_id, 2) == loan_ids_of(b, "bought")
    with c.store.session() as session:
        assert double_financed_loans(session) == {}
    assert [(p["name"], p["pool_id"], [v["version"] for v in p["versions"]]) for p in local_pools(b)] == [
        ("bought", pool_id, [2])]


def test_pool_received_by_succession_finishes_publishing_its_incomplete_version(
        banks: list[NodeContext], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = banks
    import_tape(a, "retail", tape_of_a(tmp_path, "v1.csv", range(120)))
    crash_after(monkeypatch, 0)
    with pytest.raises(Crash):
        anchor_draft(a, "retail", chunk_size=CHUNK)
    monkeypatch.undo()
    registry = asset_registry(b)
    assert (registry.pool(1).version_count, registry.loan_ids_published(1, 1)) == (1, CHUNK)
    removal = b.registry(signing=True).propose_removal(1)  # A leaves with its version half published
    assert c.registry(signing=True).vote(removal.proposal_id).executed
    lifecycle.propose_successor(c, 1, "BANK-B")
    assert lifecycle.vote_successor(b, 1).decided

    import_tape(b, "inherited", tape_of_a(tmp_path, "v1-again.csv", range(120)), pool_id=1)
    result = anchor_draft(b, "inherited", chunk_size=CHUNK)
    assert (result.anchored.pool_id, result.anchored.version) == (1, 1)
    assert [(chunk.offset, chunk.count) for chunk in result.chunks] == [(50, 50), (100, 20)]
    assert registry.loan_ids_published(1, 1) == 120
    assert registry.pool_count() == 1
    sync_loan_mirror(c.store, asset_registry(c))
    assert mirrored_ids(c, 1, 1) == loan_ids_of(b, "inherited")


def test_import_into_a_pool_not_held_or_bound_elsewhere_is_refused_and_stores_nothing(
        banks: list[NodeContext], tmp_path: Path) -> None:
    a, b, c = banks
    pool_id = anchor_tape(a, tmp_path, "retail", range(6))
    import_tape(a, "unregistered", write_tape(tmp_path / "draft.csv", [loan_row(20)]))
    other, _receipt = asset_registry(a, signing=True).register_pool(b"\x01" * 32)  # held by A, bound to no name
    tape = tape_of_a(tmp_path, "v2.csv", range(4))

    with pytest.raises(AssetRegistryUnknownPool):
        import_tape(b, "x", tape, pool_id=99)
    with pytest.raises(Conflict, match="held by member 1, not this bank") as held:
        import_tape(c, "x", tape, pool_id=pool_id)
    assert held.value.code == "not_custodian"
    lifecycle.propose_transfer(a, pool_id, "BANK-B")
    with pytest.raises(Conflict, match="accept its transfer first"):
        import_tape(b, "x", tape, pool_id=pool_id)
    with pytest.raises(Conflict, match="pool 1 is the local pool 'retail' already") as bound:
        import_tape(a, "x", tape, pool_id=pool_id)
    assert bound.value.code == "pool_already_bound"
    with pytest.raises(Conflict, match="the local pool 'retail' is pool 1, not pool 2") as taken:
        import_tape(a, "retail", tape, pool_id=other)
    assert taken.value.code == "pool_name_taken"
    with pytest.raises(Conflict, match="'unregistered' is not registered on chain yet, not pool 2"):
        import_tape(a, "unregistered", tape, pool_id=other)
    for bad in (0, -1, 2**63):
        with pytest.raises(InvalidInput, match="a pool id is a number") as invalid:
            import_tape(b, "x", tape, pool_id=bad)
        assert invalid.value.code == "invalid_pool_id"
    assert (local_names(a), local_names(b), local_names(c)) == (["retail", "unregistered"], [], [])
    assert [[v["state"] for v in p["versions"]] for p in local_pools(a)] == [["anchored"], ["draft"]]


def test_anchor_of_a_bound_pool_whose_custody_moved_away_is_refused_by_the_contract(banks: list[NodeContext],
                                                                                     tmp_path: Path) -> None:
    a, b, c = banks
    pool_id = anchored_and_moved_to(a, b, tmp_path)
    import_tape(b, "bought", tape_of_a(tmp_path, "v2.csv", range(4)), pool_id=pool_id)
    lifecycle.propose_transfer(b, pool_id, "BANK-C")
    lifecycle.accept_transfer(c, pool_id)
    with pytest.raises(AssetRegistryNotCustodian):
        anchor_draft(b, "bought")
    assert asset_registry(b).pool(pool_id).version_count == 1
    assert [v["state"] for v in local_pools(b)[0]["versions"]] == ["draft"]


def test_import_bound_with_the_chain_down_is_checked_by_the_contract_at_anchor(banks: list[NodeContext],
                                                                              tmp_path: Path) -> None:
    """Importing needs no chain; custody is then checked when anchoring, where the contract refuses a non-custodian."""
    a, _b, c = banks
    pool_id = anchor_tape(a, tmp_path, "retail", range(6))
    chain_down = NodeContext(c.settings.model_copy(update={"rpc_url": "http://127.0.0.1:9"}))
    try:
        assert import_tape(chain_down, "x", tape_of_a(tmp_path, "v2.csv", range(4)), pool_id=pool_id).pool_id == 1
    finally:
        chain_down.close()
    with pytest.raises(AssetRegistryNotCustodian) as refused:
        anchor_draft(c, "x")
    assert refused.value.arguments == {"poolId": pool_id, "account": c.address}
    assert asset_registry(c).pool(pool_id).version_count == 1
    assert [v["state"] for v in local_pools(c)[0]["versions"]] == ["draft"]


def test_import_bound_beside_another_binding_of_the_pool_is_refused(bank_on_store: NodeContext,
                                                                    replica: NodeContext, tmp_path: Path) -> None:
    """Two imports binding two names to one pool at once: the second finds the first's binding in its transaction."""
    a = bank_on_store
    pool_id, _receipt = asset_registry(a, signing=True).register_pool(b"\x02" * 32)  # held by A, bound to no name
    tape = write_tape(tmp_path / "t.csv", [loan_row(1)])
    with (interrupted_before_writing(a.store, {"asset_pools"},
                                     lambda: import_tape(replica, "first", tape, pool_id=pool_id)),
          pytest.raises(Conflict, match="is the local pool 'first' already") as late):
        import_tape(a, "second", tape, pool_id=pool_id)
    assert late.value.code == "pool_already_bound"
    assert [(p["name"], p["pool_id"], len(p["versions"])) for p in local_pools(a)] == [("first", pool_id, 1)]


class Stopped(Exception):
    """The node stopping between a chain transaction and its store write."""


def registered_then_stopped(node: NodeContext, pool: str) -> None:
    """Anchor `pool`, stopping after its registerPool was mined, before its pool id was stored."""
    def stop() -> None:
        raise Stopped

    with pytest.raises(Stopped), interrupted_before_writing(node.store, {"asset_pools"}, stop):
        anchor_draft(node, pool)


def test_import_bound_to_a_pool_registered_for_another_local_pool_is_refused(bank_on_store: NodeContext,
                                                                              tmp_path: Path) -> None:
    """An anchor of "first" registered pool 1 and stopped before storing its id; the operator, seeing pool 1 held by
    this bank, binds another name to it. Refused: pool 1 is "first"'s, whose next anchor adopts it."""
    a = bank_on_store
    import_tape(a, "first", write_tape(tmp_path / "first.csv", [loan_row(i) for i in range(3)]))
    registered_then_stopped(a, "first")
    registry = asset_registry(a)
    assert registry.pool_count() == 1 and local_pools(a)[0]["pool_id"] is None

    with pytest.raises(Conflict, match="pool 1 was registered for the local pool 'first'") as refused:
        import_tape(a, "second", write_tape(tmp_path / "second.csv", [loan_row(7)]), pool_id=1)
    assert refused.value.code == "pool_already_bound"
    assert local_names(a) == ["first"]

    result = anchor_draft(a, "first")
    assert (result.anchored.pool_id, result.anchored.version) == (1, 1)
    assert registry.pool_count() == 1 and registry.pool(1).version_count == 1
    assert [(p["name"], p["pool_id"]) for p in local_pools(a)] == [("first", 1)]


def test_import_bound_to_the_pools_own_registration_binds_it(bank_on_store: NodeContext, tmp_path: Path) -> None:
    """An anchor of "first" registered pool 1 and stopped before storing its id; its draft was discarded, and the
    operator imports a new tape into "first" bound to pool 1, its own registration. Taken (it was refused as "not
    registered on chain yet"), and the next anchor is version 1 of pool 1: still one pool on chain."""
    a = bank_on_store
    import_tape(a, "first", write_tape(tmp_path / "first.csv", [loan_row(i) for i in range(3)]))
    registered_then_stopped(a, "first")
    discard_draft(a, "first")
    other, _receipt = asset_registry(a, signing=True).register_pool(b"\x03" * 32)  # A's too, not "first"'s
    tape = write_tape(tmp_path / "again.csv", [loan_row(i) for i in range(4)])

    with pytest.raises(Conflict, match="'first' is not registered on chain yet, not pool 2") as taken:
        import_tape(a, "first", tape, pool_id=other)
    assert taken.value.code == "pool_name_taken"
    assert import_tape(a, "first", tape, pool_id=1).pool_id == 1
    assert [(p["name"], p["pool_id"]) for p in local_pools(a)] == [("first", 1)]

    result = anchor_draft(a, "first")
    registry = asset_registry(a)
    assert (result.anchored.pool_id, result.anchored.version) == (1, 1)
    assert registry.pool_count() == 2 and registry.pool(1).version_count == 1
    assert registry.version(1, 1).root == result.anchored.root


def test_anchor_of_a_pool_whose_registration_was_bound_elsewhere_meanwhile_says_so(bank_on_store: NodeContext,
                                                                                   tmp_path: Path) -> None:
    """As above, but the other name was bound with the chain down (unchecked): the next anchor of "first" finds its
    pool bound to "second" and says so, instead of failing on the store's unique pool id; nothing is sent."""
    a = bank_on_store
    import_tape(a, "first", write_tape(tmp_path / "first.csv", [loan_row(i) for i in range(3)]))
    registered_then_stopped(a, "first")
    chain_down = NodeContext(a.settings.model_copy(update={"rpc_url": "http://127.0.0.1:9"}))
    try:
        import_tape(chain_down, "second", write_tape(tmp_path / "second.csv", [loan_row(7)]), pool_id=1)
    finally:
        chain_down.close()

    with pytest.raises(Conflict, match="pool 1 was registered on chain for the local pool 'first', but the local "
                                       "pool 'second' is bound to it") as refused:
        anchor_draft(a, "first")
    assert refused.value.code == "pool_already_bound"
    registry = asset_registry(a)
    assert registry.pool_count() == 1 and registry.pool(1).version_count == 0
    assert [(p["name"], p["pool_id"], [v["state"] for v in p["versions"]]) for p in local_pools(a)] == [
        ("first", None, ["draft"]), ("second", 1, ["draft"])]
    # The operator's binding stands: "second" anchors into pool 1.
    assert anchor_draft(a, "second").anchored.pool_id == 1


def test_anchor_storing_its_registration_beside_a_binding_of_the_pool_says_so(bank_on_store: NodeContext,
                                                                                tmp_path: Path) -> None:
    """The binding lands between this anchor's check and its write of the pool id: the store's unique id refuses the
    write, and the anchor says which local pool holds the id instead of failing on it."""
    a = bank_on_store
    import_tape(a, "first", write_tape(tmp_path / "first.csv", [loan_row(i) for i in range(3)]))
    chain_down = NodeContext(a.settings.model_copy(update={"rpc_url": "http://127.0.0.1:9"}))
    try:
        with (interrupted_before_writing(a.store, {"asset_pools"}, lambda: import_tape(
                chain_down, "second", write_tape(tmp_path / "second.csv", [loan_row(7)]), pool_id=1)),
              pytest.raises(Conflict, match="the local pool 'second' is bound to it") as refused):
            anchor_draft(a, "first")
    finally:
        chain_down.close()
    assert refused.value.code == "pool_already_bound"
    registry = asset_registry(a)
    assert registry.pool_count() == 1 and registry.pool(1).version_count == 0
    assert [(p["name"], p["pool_id"]) for p in local_pools(a)] == [("first", None), ("second", 1)]


def test_bundles_of_a_received_pool_cover_both_custodians_periods(banks: list[NodeContext], tmp_path: Path,
                                                                  rpc_url: str) -> None:
    """A reports period 1 and hands the pool to B, which anchors version 2 and reports period 2, each from its own
    store. Each bank's bundle of a loan in both versions held only the periods that bank reported (A's period 2 and
    B's period 1 missing, and the verifier said VERIFIED); the statuses now come from the chain, so both bundles hold
    both periods and verify."""
    a, b, _c = banks
    pool_id = anchor_tape(a, tmp_path, "retail", range(6))
    records = first_version_records(a)
    late = records[2].loan_id
    lifecycle.report_servicing(a, pool_id, 1, statuses={
        r.loan_id: LoanStatus.dpd60 if r.loan_id == late else LoanStatus.current for r in records})
    lifecycle.propose_transfer(a, pool_id, "BANK-B")
    lifecycle.accept_transfer(b, pool_id)
    import_tape(b, "bought", tape_of_a(tmp_path, "v2.csv", range(4), range(100, 102)), pool_id=pool_id)
    assert anchor_draft(b, "bought").anchored.version == 2
    lifecycle.report_servicing(b, pool_id, 2)  # from B's records: every loan current
    with b.store.session() as session:  # B's store holds its own report only
        assert list(session.scalars(select(AssetServicingReport.period))) == [2]

    address = a.deployment.address("AssetRegistry")
    for node, version in ((a, 1), (b, 2)):
        bundle = build_bundle(node, "0x" + late.hex())
        assert bundle["version"] == version
        assert [(s["period"], s["status"]) for s in bundle["loan_statuses"]] == [(1, "dpd60"), (2, "current")]
        verdict = verify_bundle(bundle, rpc_url, address)
        assert verdict.ok, verdict.failures
        assert verdict.facts["loan_status_periods"] == [1, 2]
    # A loan of A's version 1 that B's version 2 left out: only period 1 covers it.
    dropped = build_bundle(a, "0x" + records[5].loan_id.hex())
    assert [s["period"] for s in dropped["loan_statuses"]] == [1]
    assert verify_bundle(dropped, rpc_url, address).ok
