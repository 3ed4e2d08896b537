"""Pool versions on anvil: import, screening, anchoring, custody, servicing, attestation, and privacy on chain."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from node.assets import lifecycle
from node.assets.loan_tape import LoanTapeRejected
from node.assets.pools import (
    AnchorResult,
    PoolRefused,
    anchor_draft,
    asset_registry,
    build_tree,
    discard_draft,
    import_tape,
    load_records,
    local_pools,
    metadata_hash,
)
from node.assets.provenance import build_bundle
from node.assets.records import LoanRecord, LoanStatus
from node.assets.screening import double_financed_loans, sync_loan_mirror, version_complete
from node.assets.verify import verify_bundle
from node.chain.asset_registry import (
    ANCHOR_BASE_GAS,
    ANCHOR_GAS_PER_LOAN,
    AnchoredVersion,
    AssetRegistryClient,
    StatusesProgress,
    default_anchor_gas,
    loan_id_chunk_size,
)
from node.chain.client import ChainClient, Receipt
from node.chain.errors import (
    AssetRegistryNoPendingTransfer,
    AssetRegistryNotAuditor,
    AssetRegistryNotCustodian,
    AssetRegistryNotPendingCustodian,
    AssetRegistryPeriodNotIncreasing,
    ChainError,
)
from node.chain.registry import MemberRole
from node.crypto.keyed_hash import hash_identifier
from node.errors import Conflict, InvalidInput
from node.ledger.indexer import indexer_for
from node.ledger.publisher import Publisher
from node.ledger.reports import ReportRequest
from node.merkle import verify_proof
from node.runtime import NodeContext
from node.store.asset_tables import AssetLoan, AssetLoanIndicator, AssetMirrorLoan, AssetServicingReport, AssetVersion
from node.store.db import Store
from tests.assets.conftest import (
    ALLIANCE_KEY,
    HEADER,
    loan_row,
    name_of,
    phone,
    resident_id,
    run_again_while_pending,
    write_tape,
)
from tests.conftest import Bank, LedgerNodes, interrupted_before_writing, make_bank


def anchor_tape(node: NodeContext, tmp_path: Path, pool: str, seeds: range, **kwargs: object) -> int:
    """Import a tape of loans `seeds` into `pool` and anchor it; returns the on-chain pool id."""
    import_tape(node, pool, write_tape(tmp_path / f"{pool}-{seeds.start}.csv", [loan_row(i) for i in seeds]))
    return anchor_draft(node, pool, **kwargs).anchored.pool_id  # type: ignore[arg-type]


def first_version_records(node: NodeContext) -> list[LoanRecord]:
    with node.store.session() as session:
        version_ref = session.scalar(select(AssetVersion.id).order_by(AssetVersion.id))
        assert version_ref is not None
        return load_records(session, version_ref)


def admit_auditor(banks: list[NodeContext], rpc_url: str) -> Bank:
    auditor = make_bank(rpc_url, "Audit Firm", "AUDIT-1")
    outcome = banks[0].registry(signing=True).propose_admission(auditor.address, MemberRole.auditor, auditor.name,
                                                                auditor.code, b"\x09" * 32)
    assert banks[1].registry(signing=True).vote(outcome.proposal_id).executed
    return auditor


def test_anchor_of_a_tape_identical_to_the_latest_version_is_refused(banks: list[NodeContext],
                                                                       tmp_path: Path) -> None:
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "again", range(3))
    import_tape(a, "again", write_tape(tmp_path / "again-copy.csv", [loan_row(i) for i in range(3)]))
    with pytest.raises(Conflict) as refused:
        anchor_draft(a, "again")
    assert refused.value.code == "already_anchored"
    assert asset_registry(a).pool(pool_id).version_count == 1
    with a.store.session() as session:
        assert session.execute(select(AssetVersion.state, AssetVersion.version).order_by(AssetVersion.id)).all() == [
            ("anchored", 1), ("draft", None)]


def test_anchor_pool_version_publishes_root_and_loan_ids(banks: list[NodeContext], tmp_path: Path) -> None:
    a = banks[0]
    draft = import_tape(a, "auto-2024", write_tape(tmp_path / "tape.csv", [loan_row(i) for i in range(20)]))
    assert (draft.pool_id, draft.loan_count) == (None, 20)
    result = anchor_draft(a, "auto-2024")
    registry = asset_registry(a)
    pool_id, version = result.anchored.pool_id, result.anchored.version
    assert (pool_id, version) == (1, 1)
    on_chain = registry.version(pool_id, version)
    assert (on_chain.root, on_chain.loan_count, on_chain.anchored_by_member_id) == (draft.root, 20, 1)
    assert on_chain.total_principal == draft.total_principal
    [published] = registry.published_loan_ids(pool_id=pool_id)
    records = first_version_records(a)
    assert published.loan_ids == [r.loan_id for r in records]
    assert result.anchored.gas_used < default_anchor_gas(20)
    [pool] = local_pools(a)
    assert pool["versions"][0]["state"] == "anchored" and pool["versions"][0]["version"] == 1


def test_import_tape_with_bad_row_stores_nothing(banks: list[NodeContext], tmp_path: Path) -> None:
    a = banks[0]
    rows = [loan_row(i) for i in range(5)] + [loan_row(9, currency="XYZ")]
    with pytest.raises(LoanTapeRejected) as raised:
        import_tape(a, "bad", write_tape(tmp_path / "bad.csv", rows))
    assert raised.value.details == [{"row": 7, "field": "currency", "code": "unsupported",
                                     "reason": "must be one of ['CNY', 'EUR', 'GBP', 'HKD', 'JPY', 'SGD', 'USD']"}]
    with a.store.session() as session:
        assert session.scalar(select(func.count()).select_from(AssetLoan)) == 0
        assert session.scalar(select(func.count()).select_from(AssetVersion)) == 0
    assert local_pools(a) == []


def test_import_tape_refuses_mixed_currencies(banks: list[NodeContext], tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="this tape has CNY, USD") as raised:
        import_tape(banks[0], "fx", write_tape(tmp_path / "fx.csv", [loan_row(1), loan_row(2, currency="USD")]))
    assert raised.value.code == "mixed_currencies" and local_pools(banks[0]) == []


def test_import_tape_refuses_second_draft(banks: list[NodeContext], tmp_path: Path) -> None:
    a = banks[0]
    import_tape(a, "p", write_tape(tmp_path / "t1.csv", [loan_row(1)]))
    with pytest.raises(Conflict, match="already has a draft"):
        import_tape(a, "p", write_tape(tmp_path / "t2.csv", [loan_row(2)]))


def test_node_proof_verifies_with_contract_verify_loan(banks: list[NodeContext], tmp_path: Path) -> None:
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "mortgages", range(33))
    registry = asset_registry(a)
    records = first_version_records(a)
    tree = build_tree(records)
    for position in (0, 17, 32):
        leaf, proof = records[position].leaf(), tree.proof(position)
        assert verify_proof(tree.root, leaf, proof)
        assert registry.verify_loan(pool_id, 1, leaf, proof) is True
    assert registry.verify_loan(pool_id, 1, records[1].leaf(), tree.proof(0)) is False


def test_anchor_refuses_double_financed_loans_across_banks(banks: list[NodeContext], tmp_path: Path) -> None:
    a, b, _c = banks
    first = anchor_tape(a, tmp_path, "pool-a", range(10))
    # The same originator's loans 5..9 pledged again, to a second pool held by the same bank.
    import_tape(a, "pool-a2", write_tape(tmp_path / "again.csv", [loan_row(i) for i in range(5, 15)]))
    with pytest.raises(PoolRefused) as raised:
        anchor_draft(a, "pool-a2")
    assert "5 loan(s) already active in another pool" in str(raised.value)
    assert {d["pools"][0] for d in raised.value.details or []} == {first}  # type: ignore[index]
    with a.store.session() as session:
        refused = session.scalar(select(AssetVersion).where(AssetVersion.state == "draft"))
        assert refused is not None and refused.findings and "double_financed" in refused.findings
    result = anchor_draft(a, "pool-a2", override_reason="pool-a is being wound down; replacement pool")
    assert result.override_reason == "pool-a is being wound down; replacement pool"
    assert len(result.findings.double_financed) == 5
    # Bank B's node, which anchored nothing, sees the double financing from the chain alone.
    sync_loan_mirror(b.store, asset_registry(b))
    with b.store.session() as session:
        flagged = double_financed_loans(session)
    assert len(flagged) == 5 and set(map(tuple, flagged.values())) == {(first, result.anchored.pool_id)}


def test_new_version_without_the_loans_clears_double_financing(banks: list[NodeContext], tmp_path: Path) -> None:
    a, b, _c = banks
    anchor_tape(a, tmp_path, "old", range(4))
    anchor_tape(a, tmp_path, "new", range(2, 6), override_reason="moving loans 2-3")
    sync_loan_mirror(b.store, asset_registry(b))
    with b.store.session() as session:
        assert len(double_financed_loans(session)) == 2
    anchor_tape(a, tmp_path, "old", range(0, 2))  # version 2 of "old" no longer holds loans 2-3
    sync_loan_mirror(b.store, asset_registry(b))
    with b.store.session() as session:
        assert double_financed_loans(session) == {}


def test_anchor_refuses_pool_with_blacklisted_borrower(banks: list[NodeContext], tmp_path: Path) -> None:
    a = banks[0]
    import_tape(a, "screened", write_tape(tmp_path / "s.csv", [loan_row(i) for i in range(6)]))
    with a.store.session() as session:
        listed = session.scalar(select(AssetLoanIndicator.indicator).where(
            AssetLoanIndicator.position == 4, AssetLoanIndicator.identifier_type == "phone"))
    assert listed is not None
    seen: list[set[bytes]] = []

    def screen(indicators: set[bytes]) -> set[bytes]:
        seen.append(indicators)
        return indicators & {listed}

    with pytest.raises(PoolRefused, match="1 loan\\(s\\) with a borrower on the fraud ledger"):
        anchor_draft(a, "screened", screen=screen)
    assert len(seen[0]) == 12  # a resident ID and a phone per loan
    assert anchor_draft(a, "screened", screen=screen, override_reason="case closed").findings.blacklisted == {
        4: [listed]}


def test_pool_life_custody_servicing_attestation(banks: list[NodeContext], tmp_path: Path, rpc_url: str) -> None:
    a, b, c = banks
    auditor = admit_auditor(banks, rpc_url)
    pool_id = anchor_tape(a, tmp_path, "life", range(8))
    auditor_registry = AssetRegistryClient(auditor.client, a.deployment.address("AssetRegistry"))
    with pytest.raises(AssetRegistryNotCustodian):
        auditor_registry.anchor_version(pool_id, b"\x01" * 32, 1, [b"\x02" * 32])
    lifecycle.propose_transfer(a, pool_id, "BANK-B")
    with pytest.raises(AssetRegistryNotPendingCustodian):
        lifecycle.accept_transfer(c, pool_id)
    lifecycle.accept_transfer(b, pool_id)
    assert asset_registry(a).pool(pool_id).custodian_member_id == 2
    with pytest.raises(AssetRegistryNotCustodian):
        lifecycle.report_servicing(a, pool_id, 1)
    statuses = tmp_path / "statuses.csv"
    sync_loan_mirror(b.store, asset_registry(b))
    records = first_version_records(a)
    statuses.write_text("loan_id,status\n" + "".join(
        f"0x{r.loan_id.hex()},{'dpd30' if i == 3 else 'current'}\n" for i, r in enumerate(records)))
    report = lifecycle.report_servicing(b, pool_id, 202401, statuses=lifecycle.read_status_file(statuses))
    assert report.status_counts == [7, 1, 0, 0, 0, 0, 0]
    with pytest.raises(AssetRegistryNotAuditor):
        lifecycle.attest(b, pool_id, 1, lifecycle.report_hash_of(b"report"))
    auditor_registry.attest(pool_id, 1, b"\x07" * 32)
    events = [e.kind for e in asset_registry(a).pool_events(pool_id)]
    assert events == ["registered", "anchored", "transfer_proposed", "transferred", "servicing", "attested"]


def test_transfer_steps_run_again_while_their_first_copy_is_pending_act_once(banks: list[NodeContext],
                                                                             tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each custody step stopped after sending, before it was mined, then ran again: a proposal was proposed twice
    (two CustodyTransferProposed events), and an accept or a cancel, refused once the first copy was mined
    (AssetRegistryNoPendingTransfer), failed although it had happened. Each now returns the step already taken."""
    a, b, _c = banks
    pool_id = anchor_tape(a, tmp_path, "moving", range(2))
    registry = asset_registry(a)

    def kinds() -> list[str]:
        return [e.kind for e in registry.pool_events(pool_id) if e.kind.startswith("transfer")]

    proposed = run_again_while_pending(a.signing_chain, monkeypatch,
                                       lambda: lifecycle.propose_transfer(a, pool_id, "BANK-B"))
    assert kinds() == ["transfer_proposed"]
    assert proposed.tx_hash == registry.pool_events(pool_id)[-1].tx_hash
    cancelled = run_again_while_pending(a.signing_chain, monkeypatch,
                                        lambda: lifecycle.cancel_transfer(a, pool_id))
    assert kinds() == ["transfer_proposed", "transfer_cancelled"]
    assert cancelled.tx_hash == registry.pool_events(pool_id)[-1].tx_hash
    lifecycle.propose_transfer(a, pool_id, "BANK-B")
    accepted = run_again_while_pending(b.signing_chain, monkeypatch, lambda: lifecycle.accept_transfer(b, pool_id))
    assert kinds() == ["transfer_proposed", "transfer_cancelled", "transfer_proposed", "transferred"]
    assert accepted.tx_hash == registry.pool_events(pool_id)[-1].tx_hash
    assert registry.pool(pool_id).custodian_member_id == 2
    with pytest.raises(AssetRegistryNoPendingTransfer):  # nothing this bank did: the contract's refusal stands
        lifecycle.cancel_transfer(b, pool_id)


def test_attest_run_again_records_the_attestation_once(ledger_nodes: LedgerNodes, banks: list[NodeContext],
                                                       tmp_path: Path) -> None:
    """The attestation was mined but its answer lost (a crash, a client's retry): running it again returns it
    instead of recording it a second time; another report, or the same one of another version, is a new one."""
    a = banks[0]
    auditor = ledger_nodes.admit(tmp_path / "auditor", "AUDIT-1", role=MemberRole.auditor)
    pool_id = anchor_tape(a, tmp_path, "attested", range(3))
    import_tape(a, "attested", write_tape(tmp_path / "attested-v2.csv", [loan_row(i) for i in range(2)]))
    anchor_draft(a, "attested")
    report = lifecycle.report_hash_of(b"audit report")
    first = lifecycle.attest(auditor, pool_id, 1, report)
    again = lifecycle.attest(auditor, pool_id, 1, report)
    assert (again.tx_hash, again.block_number) == (first.tx_hash, first.block_number)
    other_report = lifecycle.attest(auditor, pool_id, 1, lifecycle.report_hash_of(b"second report"))
    other_version = lifecycle.attest(auditor, pool_id, 2, report)
    attested = [(e.args["version"], e.args["reportHash"], e.tx_hash) for e in asset_registry(a).pool_events(pool_id)
                if e.kind == "attested"]
    assert attested == [(1, report, first.tx_hash), (1, lifecycle.report_hash_of(b"second report"),
                                                     other_report.tx_hash), (2, report, other_version.tx_hash)]


def test_attest_run_again_while_the_first_is_pending_records_it_once(ledger_nodes: LedgerNodes,
                                                                    banks: list[NodeContext], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after sending the attestation, before it was mined (a block time on QBFT, a receipt timeout):
    run again, attest found no attestation on chain yet and sent a second, and the contract took both."""
    auditor = ledger_nodes.admit(tmp_path / "auditor", "AUDIT-1", role=MemberRole.auditor)
    pool_id = anchor_tape(banks[0], tmp_path, "pending-attest", range(3))
    report = lifecycle.report_hash_of(b"audit report")
    again = run_again_while_pending(auditor.signing_chain, monkeypatch,
                                    lambda: lifecycle.attest(auditor, pool_id, 1, report))
    attested = [e.tx_hash for e in asset_registry(banks[0]).pool_events(pool_id) if e.kind == "attested"]
    assert attested == [again.tx_hash]


def test_chain_carries_no_raw_borrower_data(banks: list[NodeContext], tmp_path: Path) -> None:
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "privacy", range(5))
    lifecycle.report_servicing(a, pool_id, 1)
    chain = a.chain
    secrets = [s for i in range(5) for s in (resident_id(i), phone(i), "+86" + phone(i), name_of(i),
                                             f"{i} Chang'an Avenue", f"LN-{i:06d}")]
    blobs: list[bytes] = []
    for number in range(chain.block_number() + 1):
        block = chain.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            assert not isinstance(tx, bytes)  # full transactions, not hashes
            blobs.append(bytes(tx["input"]))
            receipt = chain.w3.eth.get_transaction_receipt(tx["hash"])
            blobs.extend(bytes(log["data"]) + b"".join(map(bytes, log["topics"])) for log in receipt["logs"])
    assert len(blobs) > 5
    for secret in secrets:
        raw = secret.encode()
        assert not any(raw in blob or raw.hex().encode() in blob for blob in blobs), secret


def test_anchor_refuses_borrower_reported_by_another_bank(banks: list[NodeContext], tmp_path: Path) -> None:
    """Bank B reports a borrower's phone to the fraud ledger; bank A's mirror picks it up and stops A's pool."""
    a, b, _c = banks
    b.report_intake.accept(ReportRequest([("phone", phone(2))], "other", 80), submitted_by="analyst")
    Publisher(b.store, b.fraud_ledger(signing=True), batch_size=10, max_wait_s=0).drain()
    indexer_for(a).sync()
    import_tape(a, "reported", write_tape(tmp_path / "r.csv", [loan_row(i) for i in range(4)]))
    with pytest.raises(PoolRefused, match="1 loan\\(s\\) with a borrower on the fraud ledger") as raised:
        anchor_draft(a, "reported")
    [finding] = raised.value.details or []
    assert finding["code"] == "blacklisted_borrower" and finding["position"] == 2
    # Which loan, as the operator looks it up: its reference in the tape, and its id in the pool.
    draft_records = first_version_records(a)
    assert (finding["loan_reference"], finding["loan_id"]) == ("LN-000002", "0x" + draft_records[2].loan_id.hex())
    assert anchor_draft(a, "reported", override_reason="reviewed: identity theft victim").findings.blacklisted


def test_anchor_after_crash_adopts_earlier_registration_and_anchor(banks: list[NodeContext], tmp_path: Path) -> None:
    """A previous anchor sent both transactions and died before storing them: nothing is sent twice."""
    a = banks[0]
    draft = import_tape(a, "crashed", write_tape(tmp_path / "c.csv", [loan_row(i) for i in range(3)]))
    registry = asset_registry(a, signing=True)
    pool_id, _ = registry.register_pool(metadata_hash("crashed", "BANK-A"))
    records = first_version_records(a)
    registry.anchor_version(pool_id, draft.root, draft.total_principal, [r.loan_id for r in records])
    result = anchor_draft(a, "crashed")
    assert (result.anchored.pool_id, result.anchored.version) == (pool_id, 1)
    assert registry.pool_count() == 1 and registry.pool(pool_id).version_count == 1


class Stopped(Exception):
    """The node stopping between a chain transaction and its store write."""


def test_discard_of_a_draft_anchored_on_chain_before_the_node_stopped_is_refused(banks: list[NodeContext],
                                                                                 tmp_path: Path) -> None:
    """The anchor stopped after the version was anchored, before it was recorded: the draft is on chain. Discarded,
    its records were deleted, and the node could never prove a loan of that anchored version again."""
    a = banks[0]
    import_tape(a, "stopped", write_tape(tmp_path / "s.csv", [loan_row(i) for i in range(3)]))
    records = first_version_records(a)

    def stop() -> None:
        raise Stopped

    with pytest.raises(Stopped), interrupted_before_writing(a.store, {"asset_versions"}, stop):
        anchor_draft(a, "stopped")
    assert asset_registry(a).pool(1).version_count == 1
    with pytest.raises(Conflict, match="version 1 of pool 1 on chain already") as refused:
        discard_draft(a, "stopped")
    assert refused.value.code == "anchored_on_chain"
    assert first_version_records(a) == records
    result = anchor_draft(a, "stopped")  # records it
    assert (result.anchored.pool_id, result.anchored.version) == (1, 1)
    import_tape(a, "stopped", write_tape(tmp_path / "again.csv", [loan_row(i) for i in range(3)]))
    discard_draft(a, "stopped")  # the same loans imported again: version 1 keeps their records
    [pool] = local_pools(a)
    assert [(v["state"], v["version"]) for v in pool["versions"]] == [("anchored", 1)]


def test_anchor_after_crash_with_registration_pending_adopts_its_pool(banks: list[NodeContext], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped while its registerPool was still in the transaction pool (a chain with block times): the
    retry finds no pool and registers again, both land in the next block, and the retry's copy is refused with the
    first one's pool, which anchoring then goes on in. One pool on chain, its loans published once."""
    a = banks[0]
    import_tape(a, "pending", write_tape(tmp_path / "p.csv", [loan_row(i) for i in range(3)]))
    registry = asset_registry(a)
    real_wait = ChainClient.wait_for_receipt

    def stopped(self: ChainClient, tx_hash: str, tx: dict[str, Any] | None = None) -> Receipt:
        raise Stopped

    def next_block(self: ChainClient, tx_hash: str, tx: dict[str, Any] | None = None) -> Receipt:
        self.rpc("evm_mine")  # the block time passes: everything pending goes into the next block
        return real_wait(self, tx_hash, tx)

    a.signing_chain.rpc("evm_setAutomine", [False])
    try:
        monkeypatch.setattr(ChainClient, "wait_for_receipt", stopped)
        with pytest.raises(Stopped):
            anchor_draft(a, "pending")
        assert registry.pool_count() == 0  # sent, not mined
        monkeypatch.setattr(ChainClient, "wait_for_receipt", next_block)
        result = anchor_draft(a, "pending")
    finally:
        a.signing_chain.rpc("evm_setAutomine", [True])
    monkeypatch.undo()

    assert (result.anchored.pool_id, result.anchored.version) == (1, 1)
    assert registry.pool_count() == 1
    assert registry.pool(1).metadata_hash == metadata_hash("pending", "BANK-A")
    registered, anchored = registry.pool_events(1)
    assert (registered.kind, anchored.kind) == ("registered", "anchored")
    w3 = a.chain.w3
    block = w3.eth.get_block(registered.block_number)
    # Both registrations were mined in one block; the retry's was refused on chain (it passed its gas estimate).
    assert [w3.eth.get_transaction_receipt(tx)["status"] for tx in block["transactions"]] == [1, 0]
    [published] = registry.published_loan_ids()
    assert published.loan_ids == [r.loan_id for r in first_version_records(a)]
    [pool] = local_pools(a)
    assert (pool["pool_id"], [(v["state"], v["version"]) for v in pool["versions"]]) == (1, [("anchored", 1)])


def test_report_servicing_refuses_incomplete_or_missing_statuses(banks: list[NodeContext], tmp_path: Path) -> None:
    a, b, _c = banks
    pool_id = anchor_tape(a, tmp_path, "serviced", range(3))
    lifecycle.propose_transfer(a, pool_id, "2")
    lifecycle.accept_transfer(b, pool_id)
    with pytest.raises(InvalidInput) as raised:
        lifecycle.report_servicing(b, pool_id, 1)  # the trustee holds no records
    assert raised.value.code == "statuses_required"
    first = first_version_records(a)[0]
    with pytest.raises(InvalidInput, match="2 missing, 0 not in the version"):
        lifecycle.report_servicing(b, pool_id, 1, statuses={first.loan_id: LoanStatus.current})
    bad = tmp_path / "bad.csv"
    bad.write_text("loan_id,status\n0x12,current\n")
    with pytest.raises(InvalidInput, match="line 2"):
        lifecycle.read_status_file(bad)
    assert asset_registry(a).pool(pool_id).last_servicing_period == 0


def stored_periods(node: NodeContext, pool_id: int) -> list[int]:
    """The periods of the pool's servicing reports in the node's store, once each."""
    with node.store.session() as session:
        return list(session.scalars(select(AssetServicingReport.period)
                                    .where(AssetServicingReport.pool_id == pool_id)
                                    .order_by(AssetServicingReport.period)))


def test_report_servicing_again_after_crash_records_the_report_on_chain(banks: list[NodeContext],
                                                                         tmp_path: Path) -> None:
    """The report was mined but the node stopped before storing it: running it again stores it (its statuses back
    the loans' status proofs) instead of being refused for its period; a different report of the period still is."""
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "crash-serviced", range(4))

    def stop() -> None:
        raise Stopped

    with pytest.raises(Stopped), interrupted_before_writing(a.store, {"asset_servicing_reports"}, stop):
        lifecycle.report_servicing(a, pool_id, 1)
    assert asset_registry(a).pool(pool_id).last_servicing_period == 1
    report = lifecycle.report_servicing(a, pool_id, 1)
    [event] = [e for e in asset_registry(a).pool_events(pool_id) if e.kind == "servicing"]
    assert (report.receipt.tx_hash, report.receipt.block_number) == (event.tx_hash, event.block_number)
    records = first_version_records(a)
    assert stored_periods(a, pool_id) == [1]
    assert [s["period"] for s in build_bundle(a, "0x" + records[2].loan_id.hex())["loan_statuses"]] == [1]
    with pytest.raises(AssetRegistryPeriodNotIncreasing):
        lifecycle.report_servicing(a, pool_id, 1, statuses={r.loan_id: LoanStatus.repaid for r in records})


def test_report_servicing_again_while_the_first_copy_is_pending_stores_it(banks: list[NodeContext], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after sending the report, before it was mined (a chain with block times): run again, it found
    no report of the period yet and sent a second copy, which the contract refused for its period once the first was
    mined, so the report was never stored and the statuses behind its loans' proofs were lost."""
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "pending-serviced", range(4))
    again = run_again_while_pending(a.signing_chain, monkeypatch, lambda: lifecycle.report_servicing(a, pool_id, 1))
    [event] = [e for e in asset_registry(a).pool_events(pool_id) if e.kind == "servicing"]
    assert (again.receipt.tx_hash, again.period) == (event.tx_hash, 1)
    records = first_version_records(a)
    assert stored_periods(a, pool_id) == [1]
    assert [s["period"] for s in build_bundle(a, "0x" + records[2].loan_id.hex())["loan_statuses"]] == [1]


@pytest.mark.parametrize("loans", [3, 120], ids=["one_chunk", "chunked"])
def test_anchor_again_while_the_first_copy_is_pending_adopts_its_version(banks: list[NodeContext], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         loans: int) -> None:
    """The node stopped after sending a version's anchor, before it was mined (a chain with block times): run again, it
    found the pool's previous version still latest and sent a second copy, which the contract refused once the first
    was mined (AssetRegistryRootUnchanged, or AssetRegistryLoanIdsIncomplete for a version of several chunks), and the
    run failed instead of adopting the version and publishing its remaining ids."""
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "pending-v2", range(2))
    import_tape(a, "pending-v2", write_tape(tmp_path / "v2.csv", [loan_row(i) for i in range(10, 10 + loans)]))
    again = run_again_while_pending(a.signing_chain, monkeypatch, lambda: anchor_draft(a, "pending-v2", chunk_size=50))
    assert (again.anchored.pool_id, again.anchored.version) == (pool_id, 2)
    registry = asset_registry(a)
    assert registry.pool(pool_id).version_count == 2
    assert registry.loan_ids_published(pool_id, 2) == loans
    [pool] = local_pools(a)
    assert [(v["state"], v["version"]) for v in pool["versions"]] == [("anchored", 1), ("anchored", 2)]


def test_report_servicing_beside_the_same_report_from_another_process_stores_it_once(
        bank_on_store: NodeContext, replica: NodeContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API and the CLI report the same period at once: the one whose copy came second was refused for its period
    (AssetRegistryPeriodNotIncreasing) and failed, although its very report was on chain and stored."""
    a = bank_on_store
    pool_id = anchor_tape(a, tmp_path, "serviced-twice", range(3))
    real_report = AssetRegistryClient.report_servicing
    interruptions = [lambda: lifecycle.report_servicing(replica, pool_id, 1)]
    first: list[lifecycle.ServicingResult] = []

    def other_process_first(self: AssetRegistryClient, *args: Any, **kwargs: Any) -> Receipt:
        if interruptions:  # this process found no report of the period; the other sends and stores its own meanwhile
            first.append(interruptions.pop()())
        return real_report(self, *args, **kwargs)

    monkeypatch.setattr(AssetRegistryClient, "report_servicing", other_process_first)
    second = lifecycle.report_servicing(a, pool_id, 1)
    monkeypatch.undo()

    assert second.receipt.tx_hash == first[0].receipt.tx_hash
    assert [e.kind for e in asset_registry(a).pool_events(pool_id)].count("servicing") == 1
    records = first_version_records(a)
    assert stored_periods(a, pool_id) == [1]
    assert [s["period"] for s in build_bundle(a, "0x" + records[0].loan_id.hex())["loan_statuses"]] == [1]
    with pytest.raises(AssetRegistryPeriodNotIncreasing):  # a different report of the period is still refused
        lifecycle.report_servicing(a, pool_id, 1, statuses={r.loan_id: LoanStatus.repaid for r in records})


def test_report_servicing_in_chunks_puts_every_status_on_chain(banks: list[NodeContext], tmp_path: Path,
                                                               rpc_url: str) -> None:
    """Nine loans' statuses (5 bytes) sent 2 bytes a transaction: the report and two chunks, in order, and the
    period's status tree rebuilds from the chain alone."""
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "chunked-statuses", range(9))
    records = first_version_records(a)
    statuses = {r.loan_id: LoanStatus(1 + i % 7) for i, r in enumerate(records)}
    lifecycle.report_servicing(a, pool_id, 1, statuses=statuses, chunk_bytes=2)
    registry = asset_registry(a)
    assert registry.statuses_progress(pool_id) == StatusesProgress(1, 5, 5)
    assert [(c.offset, len(c.statuses)) for c in registry.reported_statuses(pool_id)] == [(0, 2), (2, 2), (4, 1)]
    bundle = build_bundle(a, "0x" + records[8].loan_id.hex())
    assert [(s["period"], s["status"]) for s in bundle["loan_statuses"]] == [(1, "dpd30")]
    assert verify_bundle(bundle, rpc_url, a.deployment.address("AssetRegistry")).ok


def test_report_servicing_again_after_a_crash_between_chunks_publishes_the_rest(
        banks: list[NodeContext], tmp_path: Path, rpc_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after the report and its first chunk: the period's statuses are incomplete on chain, so a
    bundle cannot prove the loan's status there and the verifier names the period; run again, the report is found
    on chain and the missing chunks follow."""
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "crash-chunks", range(9))
    records = first_version_records(a)

    def stopped(*args: object, **kwargs: object) -> Receipt:
        raise Stopped

    with monkeypatch.context() as patched:
        patched.setattr(AssetRegistryClient, "publish_statuses", stopped)
        with pytest.raises(Stopped):
            lifecycle.report_servicing(a, pool_id, 1, chunk_bytes=2)
    registry = asset_registry(a)
    assert registry.statuses_progress(pool_id) == StatusesProgress(1, 2, 5)
    address = a.deployment.address("AssetRegistry")
    loan = "0x" + records[0].loan_id.hex()
    incomplete = verify_bundle(build_bundle(a, loan), rpc_url, address)
    assert not incomplete.ok
    assert incomplete.facts["loan_status_periods_missing"] == [{"period": 1, "version": 1, "status_on_chain": None}]

    again = lifecycle.report_servicing(a, pool_id, 1, chunk_bytes=2)
    assert [e.kind for e in registry.pool_events(pool_id)].count("servicing") == 1
    assert again.receipt.tx_hash == registry.reported_statuses(pool_id)[0].tx_hash
    assert registry.statuses_progress(pool_id) == StatusesProgress(1, 5, 5)
    complete = verify_bundle(build_bundle(a, loan), rpc_url, address)
    assert complete.ok, complete.failures
    assert complete.facts["loan_status_periods"] == [1]


def test_reporting_the_next_period_finishes_the_statuses_of_one_stopped_between_chunks(
        banks: list[NodeContext], tmp_path: Path, rpc_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The node stopped between period 1's chunks, and the custodian went on to period 2 without reporting period 1
    again: the contract takes statuses of the latest period only, so period 1's gap stayed in every bundle for good.
    The report of period 2 first publishes the rest of period 1 from the stored report. A period this node holds no
    report of (another custodian's) cannot be finished: it is logged, and period 2 goes on."""
    a = banks[0]
    pool_id = anchor_tape(a, tmp_path, "next-period", range(9))
    records = first_version_records(a)
    registry = asset_registry(a)

    def stopped(*args: object, **kwargs: object) -> Receipt:
        raise Stopped

    for period in (1, 3):
        with monkeypatch.context() as patched:
            patched.setattr(AssetRegistryClient, "publish_statuses", stopped)
            with pytest.raises(Stopped):
                lifecycle.report_servicing(a, pool_id, period, chunk_bytes=2)
        assert registry.statuses_progress(pool_id) == StatusesProgress(period, 2, 5)
        if period == 1:
            lifecycle.report_servicing(a, pool_id, 2, chunk_bytes=2)
            assert [(c.period, c.offset) for c in registry.reported_statuses(pool_id)] == \
                [(1, 0), (1, 2), (1, 4), (2, 0), (2, 2), (2, 4)]
    bundle = build_bundle(a, "0x" + records[0].loan_id.hex())
    verdict = verify_bundle(bundle, rpc_url, a.deployment.address("AssetRegistry"))
    assert not verdict.ok and [m["period"] for m in verdict.facts["loan_status_periods_missing"]] == [3]
    with a.store.transaction() as session:  # as if another custodian had reported period 3
        session.execute(delete(AssetServicingReport).where(AssetServicingReport.period == 3))
    with caplog.at_level(logging.WARNING, logger="node.assets.lifecycle"):
        lifecycle.report_servicing(a, pool_id, 4, chunk_bytes=2)
    assert registry.statuses_progress(pool_id) == StatusesProgress(4, 5, 5)
    assert "period 3 has 2 of its 5 bytes of statuses on chain and was not reported by this node" in caplog.text


@pytest.mark.parametrize("period", [2**31, 2**32])
def test_report_servicing_refuses_period_the_store_cannot_hold(bank_on_store: NodeContext, tmp_path: Path,
                                                                 period: int) -> None:
    """Refused before anything is sent: sent, the period would be taken on chain (later reports need a greater one)
    while the store (a 32-bit column) failed to record the report."""
    a = bank_on_store
    pool_id = anchor_tape(a, tmp_path, "far", range(2))
    with pytest.raises(InvalidInput) as raised:
        lifecycle.report_servicing(a, pool_id, period)
    assert raised.value.code == "invalid_period"
    assert asset_registry(a).pool(pool_id).last_servicing_period == 0


LOAN_ID_HEX = "0x" + "ab" * 32


@pytest.mark.parametrize(("content", "problem"), [
    (f"loan_id,status\n{LOAN_ID_HEX}\n".encode(), "line 2"),  # a row short of its status cell
    (f"loan_id,status\n{LOAN_ID_HEX},curr\xe9nt\n".encode("latin-1"), "not UTF-8"),
    (f"loan_id,status\n0xab ab{'ab' * 30},current\n".encode(), "line 2"),  # bytes.fromhex skipped the space
], ids=["short_row", "not_utf8", "inner_space"])
def test_read_status_file_refuses_malformed_file(tmp_path: Path, content: bytes, problem: str) -> None:
    """A trustee's hand-made status file is input like a tape: refused with the reason, never a traceback."""
    path = tmp_path / "statuses.csv"
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=problem) as raised:
        lifecycle.read_status_file(path)
    assert raised.value.code == "bad_status_file"


def test_read_status_file_drops_spaces_around_names_and_cells(tmp_path: Path) -> None:
    """As a tape's are: "loan_id, status" (a spreadsheet's export) was refused, and " 0x…" taken for no loan id."""
    path = tmp_path / "statuses.csv"
    path.write_text(f"loan_id, status\n {LOAN_ID_HEX} , DPD30 \n")
    assert lifecycle.read_status_file(path) == {bytes.fromhex(LOAN_ID_HEX[2:]): LoanStatus.dpd30}
    path.write_text(f"loan_id,status,status\n{LOAN_ID_HEX},current,current\n")
    with pytest.raises(InvalidInput, match="exactly the columns"):
        lifecycle.read_status_file(path)


def test_double_financing_of_bought_loans_is_caught_across_banks(banks: list[NodeContext], tmp_path: Path) -> None:
    """Bank C bought loans originated by bank A and pledges them while they are still in A's pool."""
    a, _b, c = banks
    first = anchor_tape(a, tmp_path, "a-pool", range(5))
    bought = [loan_row(i, originator="BANK-A") for i in range(3, 7)]
    import_tape(c, "c-pool", write_tape(tmp_path / "bought.csv", bought, (*HEADER, "originator")))
    with pytest.raises(PoolRefused, match="2 loan\\(s\\) already active in another pool"):
        anchor_draft(c, "c-pool")
    second = anchor_draft(c, "c-pool", override_reason="A sells loans 3-4 to C this month").anchored.pool_id
    sync_loan_mirror(a.store, asset_registry(a))
    with a.store.session() as session:
        flagged = double_financed_loans(session)
    assert sorted(flagged.values()) == [[first, second]] * 2


def test_screening_finds_loans_and_borrowers_hashed_before_a_key_rotation(banks: list[NodeContext],
                                                                          tmp_path: Path) -> None:
    a = banks[0]
    anchor_tape(a, tmp_path, "epoch-1", range(3))
    old_phone = hash_identifier(ALLIANCE_KEY, "phone", phone(1))[1]
    a.keyring.store_key(2, bytes(range(100, 132)), source="generated")
    draft = import_tape(a, "epoch-2", write_tape(tmp_path / "e2.csv", [loan_row(i) for i in range(2, 5)]))
    with a.store.session() as session:
        ids = session.scalars(select(AssetLoan.loan_id).where(AssetLoan.key_epoch == 2)).all()
    assert len(ids) == 3 and draft.root  # new ids under epoch 2 ...
    with pytest.raises(PoolRefused) as raised:  # ... still matched to loan 2 of the epoch-1 pool
        anchor_draft(a, "epoch-2", screen=lambda indicators: indicators & {old_phone})
    assert [d["code"] for d in raised.value.details or []] == ["double_financed"]
    import_tape(a, "borrower", write_tape(tmp_path / "b.csv", [loan_row(1, loan_reference="NEW-1")]))
    with pytest.raises(PoolRefused) as raised:
        anchor_draft(a, "borrower", screen=lambda indicators: indicators & {old_phone})
    assert [d["code"] for d in raised.value.details or []] == ["blacklisted_borrower"]


def test_anchor_version_refuses_single_transaction_beyond_block_gas_limit(banks: list[NodeContext]) -> None:
    """The client refuses one transaction no block could hold; the node never builds one (it sends chunks)."""
    a = banks[0]
    registry = asset_registry(a, signing=True)
    pool_id, _ = registry.register_pool(b"\x01" * 32)
    too_many = (registry.block_gas_limit() - ANCHOR_BASE_GAS) // ANCHOR_GAS_PER_LOAN + 1
    with pytest.raises(ChainError, match="more than the chain's block gas limit"):
        registry.anchor_version(pool_id, b"\x02" * 32, 1, [b"\x03" * 32] * too_many)
    assert registry.pool(pool_id).version_count == 0
    assert loan_id_chunk_size(registry.block_gas_limit()) * ANCHOR_GAS_PER_LOAN < registry.block_gas_limit() // 4


@pytest.mark.parametrize("new_pool", [True, False])
def test_import_tape_beside_another_import_into_the_pool_refuses_second_draft(
        bank_on_store: NodeContext, replica: NodeContext, tmp_path: Path, new_pool: bool) -> None:
    a = bank_on_store
    if not new_pool:
        import_tape(a, "p", write_tape(tmp_path / "t0.csv", [loan_row(0)]))
        discard_draft(a, "p")
    tape = write_tape(tmp_path / "t1.csv", [loan_row(1)])

    with (interrupted_before_writing(a.store, {"asset_pools", "asset_versions"},
                                     lambda: import_tape(replica, "p", write_tape(tmp_path / "t2.csv", [loan_row(2)]))),
          pytest.raises(Conflict) as late):
        import_tape(a, "p", tape)

    assert late.value.code == "draft_exists"
    [pool] = local_pools(a)
    assert [v["state"] for v in pool["versions"]] == ["draft"]


def test_anchor_beside_another_anchor_of_the_new_pool_registers_and_anchors_it_once(
        bank_on_store: NodeContext, replica: NodeContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = bank_on_store
    import_tape(a, "p", write_tape(tmp_path / "t.csv", [loan_row(i) for i in range(5)]))
    real_register = AssetRegistryClient.register_pool
    interruptions = [lambda: anchor_draft(replica, "p")]
    interrupted: list[AnchorResult] = []

    def replica_anchors_first(self: AssetRegistryClient, metadata: bytes) -> tuple[int, Receipt]:
        # This anchor found the pool unregistered; a retried request anchors it completely meanwhile.
        if interruptions:
            interrupted.append(interruptions.pop()())
        return real_register(self, metadata)

    monkeypatch.setattr(AssetRegistryClient, "register_pool", replica_anchors_first)
    result = anchor_draft(a, "p")
    monkeypatch.undo()

    registry = asset_registry(a)
    pool_id = interrupted[0].anchored.pool_id
    assert (result.anchored.pool_id, result.anchored.version) == (pool_id, 1)
    assert registry.pool_count() == 1 and registry.pool(pool_id).version_count == 1
    sync_loan_mirror(a.store, registry)
    with a.store.session() as session:
        assert double_financed_loans(session) == {}
    [pool] = local_pools(a)
    assert (pool["pool_id"], [(v["state"], v["version"]) for v in pool["versions"]]) == (pool_id, [("anchored", 1)])


@pytest.mark.parametrize("loans", [3, 120], ids=["one_chunk", "chunked"])
def test_anchor_beside_another_anchor_of_the_version_anchors_it_once(
        bank_on_store: NodeContext, replica: NodeContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        loans: int) -> None:
    """Two processes on one store anchor the same draft of a registered pool at once: both found the version not
    anchored yet, and the second one's copy was refused (AssetRegistryRootUnchanged) and its command failed,
    although the version it sent was anchored."""
    a = bank_on_store
    pool_id = anchor_tape(a, tmp_path, "p", range(2))
    import_tape(a, "p", write_tape(tmp_path / "v2.csv", [loan_row(i) for i in range(10, 10 + loans)]))
    real_anchor = AssetRegistryClient.anchor_version
    interruptions = [lambda: anchor_draft(replica, "p", chunk_size=50)]
    first: list[AnchorResult] = []

    def other_process_first(self: AssetRegistryClient, *args: Any, **kwargs: Any) -> AnchoredVersion:
        if interruptions:
            first.append(interruptions.pop()())
        return real_anchor(self, *args, **kwargs)

    monkeypatch.setattr(AssetRegistryClient, "anchor_version", other_process_first)
    second = anchor_draft(a, "p", chunk_size=50)
    monkeypatch.undo()

    assert (second.anchored.pool_id, second.anchored.version) == (pool_id, 2)
    assert second.anchored.tx_hash == first[0].anchored.tx_hash
    registry = asset_registry(a)
    assert registry.pool(pool_id).version_count == 2 and registry.loan_ids_published(pool_id, 2) == loans
    [pool] = local_pools(a)
    assert [(v["state"], v["version"]) for v in pool["versions"]] == [("anchored", 1), ("anchored", 2)]


def test_anchor_of_a_draft_discarded_meanwhile_says_so(bank_on_store: NodeContext, replica: NodeContext,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = bank_on_store
    import_tape(a, "p", write_tape(tmp_path / "t.csv", [loan_row(i) for i in range(3)]))
    real_anchor = AssetRegistryClient.anchor_version

    def discarded_first(self: AssetRegistryClient, *args: Any, **kwargs: Any) -> AnchoredVersion:
        discard_draft(replica, "p")  # `alliance assets discard` while the API anchors
        return real_anchor(self, *args, **kwargs)

    monkeypatch.setattr(AssetRegistryClient, "anchor_version", discarded_first)
    with pytest.raises(Conflict) as discarded:
        anchor_draft(a, "p")

    assert discarded.value.code == "draft_discarded" and "version 1 of pool 1" in str(discarded.value)


@pytest.mark.parametrize("synced_before", [True, False])
def test_sync_loan_mirror_beside_another_sync_stores_each_chunk_once(banks: list[NodeContext], tmp_path: Path,
                                                                     store_url: str, synced_before: bool) -> None:
    a = banks[0]
    registry = asset_registry(a)
    worker, replica = Store(store_url), Store(store_url)  # two processes of an observing bank, on its database
    worker.migrate()
    try:
        if synced_before:
            sync_loan_mirror(worker, registry)  # the cursor exists, and falls behind
        anchor_tape(a, tmp_path, "p", range(5))

        with interrupted_before_writing(worker, {"sync_state", "asset_mirror_loans"},
                                        lambda: sync_loan_mirror(replica, registry)):
            assert sync_loan_mirror(worker, registry) == 0  # the replica stored the chunk

        with worker.session() as session:
            assert version_complete(session, 1, 1)
            assert session.scalar(select(func.count()).select_from(AssetMirrorLoan)) == 5
    finally:
        worker.close()
        replica.close()
