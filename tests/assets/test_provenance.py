"""Provenance bundles and the auditor's chain-only verification, including tampered bundles."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from node.assets import lifecycle, provenance
from node.assets.history import ChainStatuses
from node.assets.pools import anchor_draft, asset_registry, build_tree, import_tape
from node.assets.provenance import MAX_BUNDLES, build_bundle, build_bundles, bundle_for
from node.assets.records import LoanStatus, pack_statuses
from node.assets.verify import _Failed, _RoleBook, verify_bundle, verify_bundles
from node.chain.asset_registry import AssetRegistryClient
from node.chain.client import ChainClient, Receipt
from node.chain.errors import ChainUnavailable
from node.chain.registry import GOVERNANCE_MIN_GAS, MemberRole
from node.chain.signer import Signer
from node.errors import InvalidInput, NotFound
from node.runtime import NodeContext
from node.store.asset_tables import AssetMirrorLoan
from tests.assets.conftest import HEADER, loan_row, run_again_while_pending, write_tape
from tests.assets.test_pools import admit_auditor, first_version_records
from tests.chain.capped_rpc import Rewrite, capped_rpc, with_result
from tests.cli.conftest import CliResult, run_cli
from tests.conftest import Bank, make_bank


@dataclass
class Life:
    """A pool that lived across two banks and an auditor, and a bundle of one loan of its version 2."""

    rpc_url: str
    registry: str
    pool_id: int
    bundle: dict[str, Any]
    originator: NodeContext
    nodes: list[NodeContext]
    auditor: Bank


@pytest.fixture
def life(banks: list[NodeContext], tmp_path: Path, rpc_url: str) -> Life:
    a, b, _c = banks
    auditor = admit_auditor(banks, rpc_url)
    import_tape(a, "life", write_tape(tmp_path / "v1.csv", [loan_row(i) for i in range(12)]))
    pool_id = anchor_draft(a, "life").anchored.pool_id
    import_tape(a, "life", write_tape(tmp_path / "v2.csv", [loan_row(i, status="dpd30" if i == 4 else "current")
                                                            for i in range(10)]))
    assert anchor_draft(a, "life").anchored.version == 2
    lifecycle.report_servicing(a, pool_id, 1)
    lifecycle.propose_transfer(a, pool_id, "BANK-B")
    lifecycle.accept_transfer(b, pool_id)
    statuses = tmp_path / "statuses.csv"
    loan_ids = next(e for e in asset_registry(a).published_loan_ids(pool_id=pool_id) if e.version == 2).loan_ids
    statuses.write_text("loan_id,status\n" + "".join(f"0x{i.hex()},current\n" for i in loan_ids))
    lifecycle.report_servicing(b, pool_id, 2, statuses=lifecycle.read_status_file(statuses))
    address = a.deployment.address("AssetRegistry")
    AssetRegistryClient(auditor.client, address).attest(pool_id, 2, b"\x05" * 32)
    bundle = build_bundle(a, "LN-000004")
    return Life(rpc_url, address, pool_id, bundle, a, banks, auditor)


def verify(life: Life, bundle: Any) -> dict[str, Any]:
    return verify_bundle(bundle, life.rpc_url, life.registry).to_json()


def failed(result: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in result["checks"] if not c["ok"]}


def test_verify_bundle_accepts_genuine_bundle(life: Life) -> None:
    result = verify(life, json.loads(json.dumps(life.bundle)))
    assert result["verified"] is True, failed(result)
    assert [c["name"] for c in result["checks"]] == ["bundle", "chain", "record", "proof", "anchor", "loan_ids",
                                                     "double_financing", "versions", "custody", "servicing",
                                                     "loan_statuses", "attestations"]
    assert life.bundle["version"] == 2 and life.bundle["record"]["status"] == "dpd30"
    assert [c["to_member_id"] for c in life.bundle["custody"]] == [1, 2]
    assert [s["period"] for s in life.bundle["servicing"]] == [1, 2]
    assert [a["auditor_member_id"] for a in life.bundle["attestations"]] == [4]
    # Period 2 was reported by B, the custodian since the hand-over, from its own store: A's bundle has it too.
    assert [(s["period"], s["status"]) for s in life.bundle["loan_statuses"]] == [(1, "dpd30"), (2, "current")]
    assert ({c["name"]: c["detail"] for c in result["checks"]}["loan_statuses"]
            == "the loan's status proven for all 2 servicing period(s) covering it (1: dpd30, 2: current)")
    assert (result["facts"]["loan_status_periods"], result["facts"]["loan_status_periods_missing"]) == ([1, 2], [])
    assert result["facts"]["custodian_member_id_now"] == 2
    assert (result["facts"]["latest_version_as_of_block"], result["facts"]["latest_version_now"]) == (2, 2)


def test_verify_bundle_of_a_superseded_version_verifies_and_says_so(life: Life) -> None:
    """LN-000011 is in version 1 only (version 2 left it out): its bundle proves version 1, and the facts say
    that version 2 is the pool's latest."""
    bundle = build_bundle(life.originator, "LN-000011")
    result = verify(life, bundle)
    assert result["verified"] is True, failed(result)
    assert result["facts"]["version"] == 1
    assert (result["facts"]["latest_version_as_of_block"], result["facts"]["latest_version_now"]) == (2, 2)
    # Both reports are of version 2, which left the loan out: none covers it, and none is missing.
    assert bundle["loan_statuses"] == []
    assert (result["facts"]["loan_status_periods"], result["facts"]["loan_status_periods_missing"]) == ([], [])


def test_verify_bundle_still_verifies_after_later_events(life: Life) -> None:
    _a, b, c = life.nodes
    lifecycle.propose_transfer(b, life.pool_id, "BANK-C")
    lifecycle.accept_transfer(c, life.pool_id)
    result = verify(life, life.bundle)
    assert result["verified"] is True, failed(result)
    assert result["facts"]["custodian_member_id_now"] == 3


def test_audit_verify_says_as_of_which_block_and_what_changed_since(life: Life, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The pool passed to another custodian after the bundle's block: the CLI said VERIFIED with nothing about the
    block its custody chain was checked up to or the custodian now (only --json had it, and a failed verdict's facts
    lacked the keys a script reads)."""
    _a, b, c = life.nodes
    lifecycle.propose_transfer(b, life.pool_id, "BANK-C")
    lifecycle.accept_transfer(c, life.pool_id)
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(json.dumps(life.bundle))
    args = ("audit", "verify", str(bundle_file), "--rpc", life.rpc_url, "--registry", life.registry)
    human = run_cli(capsys, *args)
    head = ChainClient(life.rpc_url).block_number()
    assert human.code == 0, human.err
    assert (f"the pool's history is verified as of block {life.bundle['as_of_block']} (chain head {head})"
            in " ".join(human.out.split()))
    assert (f"note: the pool changed custody after block {life.bundle['as_of_block']}: held by member 2 then, by "
            "member 3 now") in " ".join(human.out.split())
    facts = json.loads(run_cli(capsys, *args, "--json").out)["facts"]
    assert (facts["custodian_member_id_as_of_block"], facts["custodian_member_id_now"]) == (2, 3)
    bundle_file.write_text(json.dumps({**life.bundle, "chain_id": 5}))
    refused = json.loads(run_cli(capsys, *args, "--json").out)
    assert refused["verified"] is False and set(refused["facts"]) == set(facts)
    assert refused["facts"]["custodian_member_id_now"] is None


def test_verify_bundle_through_an_endpoint_that_caps_log_ranges(life: Life) -> None:
    """The verifier read the pool's events and every published loan id from block 0 in one eth_getLogs each: an
    auditor's Besu endpoint (`--rpc-max-logs-range`) refuses that on any chain longer than its cap."""
    with capped_rpc(life.rpc_url, 4) as relay:
        result = verify_bundle(life.bundle, relay.url, life.registry).to_json()
    assert result["verified"] is True, failed(result)
    assert relay.refused >= 1


# Gas of an attestation, given explicitly: estimated against the latest state, the call of a signer whose admission
# waits in the same block would be refused before it is sent.
ATTEST_GAS = 300_000


def in_one_block(*calls: tuple[ChainClient, Any, int]) -> list[Receipt]:
    """Send (client, contract call, gas) in this order and mine them together, as a QBFT block would hold them."""
    control = calls[0][0]
    control.rpc("evm_setAutomine", [False])
    try:
        sent = [(client, client.send_signed(client.sign(client.build_transaction(call, gas=gas))))
                for client, call, gas in calls]
        control.rpc("evm_mine", [])
    finally:
        control.rpc("evm_setAutomine", [True])
    receipts = [client.wait_for_receipt(tx_hash) for client, tx_hash in sent]
    assert len({r.block_number for r in receipts}) == 1
    assert [r.raw["transactionIndex"] for r in receipts] == list(range(len(receipts)))
    return receipts


def attest_in_admission_block(life: Life) -> tuple[Bank, Receipt]:
    """A second auditor (member 5), admitted by the vote just before its first attestation, in the same block."""
    a, b, _c = life.nodes
    auditor = make_bank(life.rpc_url, "Second Audit", "AUDIT-2")
    admission = a.registry(signing=True).propose_admission(auditor.address, MemberRole.auditor, auditor.name,
                                                           auditor.code, b"\x0a" * 32)
    voter = b.registry(signing=True)
    attesting = AssetRegistryClient(auditor.client, life.registry)
    _vote, attested = in_one_block(
        (voter.chain, voter.contract.functions.vote(admission.proposal_id), GOVERNANCE_MIN_GAS),
        (auditor.client, attesting.contract.functions.attest(life.pool_id, 2, b"\x06" * 32), ATTEST_GAS))
    return auditor, attested


def test_verify_bundle_accepts_an_attestation_in_the_block_that_admitted_its_auditor(life: Life) -> None:
    """On a chain of several transactions a block (Besu QBFT), the registry's state at the end of the block before
    knows no such auditor, though the contract saw it admitted: the genuine bundle failed as signed by member 0."""
    attest_in_admission_block(life)
    bundle = build_bundle(life.originator, "LN-000004")
    assert [a["auditor_member_id"] for a in bundle["attestations"]] == [4, 5]
    result = verify(life, bundle)
    assert result["verified"] is True, failed(result)


def test_verify_bundle_accepts_an_attestation_before_its_auditor_is_removed_in_the_same_block(life: Life) -> None:
    """The other side: the end of the block shows the auditor removed, the end of the block before shows it active,
    as it was when it attested."""
    a, b, _c = life.nodes
    removal = a.registry(signing=True).propose_removal(4)
    voter = b.registry(signing=True)
    attesting = AssetRegistryClient(life.auditor.client, life.registry)
    in_one_block((life.auditor.client, attesting.contract.functions.attest(life.pool_id, 1, b"\x07" * 32), ATTEST_GAS),
                 (voter.chain, voter.contract.functions.vote(removal.proposal_id), GOVERNANCE_MIN_GAS))
    assert a.registry().member(4).status.name == "removed"
    bundle = build_bundle(life.originator, "LN-000004")
    assert [a["auditor_member_id"] for a in bundle["attestations"]] == [4, 4]
    result = verify(life, bundle)
    assert result["verified"] is True, failed(result)


def test_role_check_refuses_a_signer_who_was_not_the_member_before_or_after_its_block(life: Life) -> None:
    _auditor, attested = attest_in_admission_block(life)
    registry = AssetRegistryClient(ChainClient(life.rpc_url), life.registry)
    [event] = [e for e in registry.pool_events(life.pool_id) if e.kind == "attested" and e.tx_hash == attested.tx_hash]
    roles = _RoleBook(registry)
    roles.require(event, 5, MemberRole.auditor, "attestation")  # the block of its admission: passes
    block = event.block_number
    with pytest.raises(_Failed, match=f"attestation in block {block - 1} was signed by {event.sender}, member 0, "
                                      "not member 5"):
        roles.require(dataclasses.replace(event, block_number=block - 1), 5, MemberRole.auditor, "attestation")
    stranger = Signer.generate().address
    with pytest.raises(_Failed, match=f"signed by {stranger}, member 0, not member 5"):
        roles.require(dataclasses.replace(event, sender=stranger), 5, MemberRole.auditor, "attestation")
    auditor_4 = life.auditor.address
    with pytest.raises(_Failed, match=r"was not an active member then \(role auditor, status active"):
        roles.require(dataclasses.replace(event, sender=auditor_4), 4, MemberRole.member, "attestation")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = bundle
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value(target[int(last) if isinstance(target, list)
                                                                                else last])
    return change


def _flip_hex(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


@pytest.mark.parametrize(("tamper", "check", "reason"), [
    (_set("record.current_principal", lambda v: v + 1), "record", "the record was altered"),
    (_set("record.status", lambda v: "current"), "record", "the record was altered"),
    (_set("record.borrower_hash", _flip_hex), "record", "the record was altered"),
    (_set("proof.0", _flip_hex), "proof", "the proof or root was altered"),
    (_set("leaf", _flip_hex), "record", "not the bundle's"),
    (_set("version", lambda v: 1), "anchor", "wrong version or altered root"),
    (_set("version", lambda v: 3), "anchor", "had no version 3"),
    (_set("custody.1.to_member_id", lambda v: 3), "custody", "custody entry 1 differs from the chain"),
    (_set("custody", lambda v: v[:1]), "custody", "lists 1 custody entries, the chain has 2"),
    (_set("servicing.0.status_counts", lambda v: [v[0] - 1, v[1] + 1, *v[2:]]), "servicing", "differs"),
    (_set("attestations", lambda v: []), "attestations", "lists 0 attestations entries"),
    (_set("loan_statuses.0.status", lambda v: "current"), "loan_statuses", "is not in that report's status root"),
    (_set("loan_statuses.0.period", lambda v: 7), "loan_statuses", "refers to no servicing report on chain"),
    (lambda b: b["loan_statuses"].append(copy.deepcopy(b["loan_statuses"][1])), "loan_statuses",
     "status for period 2 twice"),
    (_set("loan_statuses.0.proof", lambda v: "0x12"), "loan_statuses", "status proof must be 0x"),
    (_set("anchor.block_number", lambda v: v + 1), "anchor", "is not the chain's"),
    (_set("pool_id", lambda v: 99), "anchor", "pool 99 had no version 2"),
    # Values no ABI field can hold: refused as a malformed bundle, not a traceback from the encoder.
    (_set("record.key_epoch", lambda v: 2**32), "bundle", "malformed record"),
    (_set("record.original_principal", lambda v: 2**128), "bundle", "malformed record"),
    (_set("pool_id", lambda v: 2**256), "bundle", "pool_id must be"),
    # 66 characters with whitespace for the last byte: bytes.fromhex skips it and read a 31-byte hash, which the
    # contract call's encoder refused with a traceback (leaf, proof), or the leaf encoder with a confusing reason.
    (_set("leaf", lambda v: v[:-2] + "  "), "bundle", "leaf must be 0x + 64 hex digits"),
    (_set("proof.0", lambda v: v[:-2] + "\t\n"), "bundle", "proof[0] must be 0x + 64 hex digits"),
    (_set("record.loan_id", lambda v: v[:-2] + "  "), "bundle", "loan_id must be 0x + 64 hex digits"),
    # Numbers rewritten as floats or booleans (JSON 41.0, 1e3, true), and fields the chain never gave: Python's ==
    # took them for the chain's values, and the bundle verified with them.
    (_set("anchor.block_number", float), "anchor", "is not the chain's"),
    (lambda b: b["anchor"].update(total_principal="1e12"), "anchor", "is not the chain's"),
    (_set("custody.0.from_member_id", lambda v: False), "custody", "custody entry 0 differs from the chain"),
    (_set("custody.1.to_member_id", float), "custody", "custody entry 1 differs from the chain"),
    (_set("servicing.0.status_counts", lambda v: [float(n) for n in v]), "servicing", "differs"),
    (_set("attestations.0.block_number", float), "attestations", "differs"),
    (_set("loan_statuses.0.period", lambda v: True), "loan_statuses", "refers to no servicing report on chain"),
    (lambda b: b["loan_statuses"][0].update(note="repaid in full"), "loan_statuses",
     "has fields ['note', 'period', 'proof', 'status']"),
])
def test_verify_bundle_rejects_tampered_bundle(life: Life, tamper: Callable[[dict[str, Any]], None], check: str,
                                               reason: str) -> None:
    bundle = copy.deepcopy(life.bundle)
    tamper(bundle)
    result = verify(life, bundle)
    assert result["verified"] is False
    assert check in failed(result) and reason in failed(result)[check], failed(result)


def test_verify_bundle_counts_history_entries_as_of_the_bundles_block(life: Life) -> None:
    """The count was said "by block" of the chain's last entry: "the chain has 0 by block 0" for a pool with none, as
    if the chain had been read no further than block 0."""
    bundle = copy.deepcopy(life.bundle)
    bundle["pool_id"] = 99
    as_of = bundle["as_of_block"]
    assert failed(verify(life, bundle))["attestations"] == \
        f"the bundle lists 1 attestations entries, the chain has 0 by block {as_of}"
    dropped = copy.deepcopy(life.bundle)
    dropped["custody"] = dropped["custody"][:1]
    assert failed(verify(life, dropped))["custody"] == \
        f"the bundle lists 1 custody entries, the chain has 2 by block {as_of}"


@pytest.mark.parametrize(("bundle", "reason"), [
    ("not json object", "not a JSON object"),
    ({"format": "other"}, "format is 'other'"),
])
def test_verify_bundle_rejects_malformed_bundle(life: Life, bundle: Any, reason: str) -> None:
    result = verify(life, bundle)
    assert result["verified"] is False and reason in failed(result)["bundle"]


def test_verify_bundle_rejects_wrong_chain_or_registry(life: Life) -> None:
    bundle = copy.deepcopy(life.bundle)
    bundle["chain_id"] = 5
    assert "the bundle is for chain 5" in failed(verify(life, bundle))["chain"]
    other = verify_bundle(life.bundle, life.rpc_url, life.originator.deployment.address("FraudLedger"))
    assert not other.ok and "chain" in {c.name for c in other.failures}


def test_verify_bundle_flags_any_flipped_byte(life: Life) -> None:
    """Every hex digit of the record's hashes, the leaf, root and proof is bound to the chain."""
    text = json.dumps(life.bundle)
    targets = [life.bundle["record"]["loan_id"], life.bundle["root"], life.bundle["proof"][-1]]
    for target in targets:
        tampered = json.loads(text.replace(target, _flip_hex(target)))
        assert verify(life, tampered)["verified"] is False, target


def test_verify_bundle_refuses_a_loan_financed_in_two_pools(life: Life, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A genuine bundle of a loan that another pool held as well verified: nothing told the auditor the loan was
    pledged twice. A loan that its pool's later version let go, taken into another pool, is not financed twice."""
    a = life.originator
    let_go = build_bundle(a, "LN-000011")  # in version 1 of the pool only
    import_tape(a, "second", write_tape(tmp_path / "second.csv", [loan_row(4), loan_row(11)]))
    second = anchor_draft(a, "second", override_reason="pledged twice on purpose").anchored.pool_id
    head = a.chain.block_number()
    pledged_twice = {**life.bundle, "as_of_block": head}
    assert failed(verify(life, pledged_twice)) == {
        "double_financing": f"by block {head} the loan's id is active in pools {life.pool_id}, {second} at once: "
                            "it is financed twice"}
    in_second = build_bundle(a, "LN-000004")
    assert in_second["pool_id"] == second and "double_financing" in failed(verify(life, in_second))
    as_of_its_block = verify(life, life.bundle)  # as of its block, the second pool did not exist
    assert as_of_its_block["verified"] is True
    # ... but the auditor is told: it said VERIFIED with nothing about the second pledge.
    assert as_of_its_block["facts"]["pools_holding_loan_now"] == [life.pool_id, second]
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(json.dumps(life.bundle))
    human = run_cli(capsys, "audit", "verify", str(bundle_file), "--rpc", life.rpc_url, "--registry", life.registry)
    assert human.code == 0
    assert (f"note: as of the chain head the loan's id is active in pools {life.pool_id}, {second} at once: financed "
            f"twice after block {life.bundle['as_of_block']}") in " ".join(human.out.split())
    result = verify(life, {**let_go, "as_of_block": head})
    assert result["verified"] is True, failed(result)


def test_build_bundle_refuses_a_reference_of_loans_of_two_originators(banks: list[NodeContext],
                                                                       tmp_path: Path) -> None:
    """A bought loan keeps its originator's reference, which may be one this bank uses too: proving by that
    reference gave the bundle of whichever came first, quite possibly another loan than the one meant."""
    a = banks[0]
    rows = [{**loan_row(1), "originator": ""}, {**loan_row(2, loan_reference="LN-000001"), "originator": "BANK-X"}]
    import_tape(a, "bought", write_tape(tmp_path / "bought.csv", rows, header=(*HEADER, "originator")))
    anchor_draft(a, "bought")
    with pytest.raises(InvalidInput, match="names loans of originators BANK-A, BANK-X") as refused:
        build_bundle(a, "LN-000001")
    assert refused.value.code == "ambiguous_loan_reference"
    bought = first_version_records(a)[1]
    assert build_bundle(a, "0x" + bought.loan_id.hex())["record"] == bought.to_json()


def test_build_bundle_while_the_loan_id_mirror_lacks_some_ids_of_a_reported_version(life: Life) -> None:
    """The mirror being rebuilt (or a sync stopped half-way) holds part of version 2's ids: proving a loan among them
    was a ValueError from zip(strict=True) over the report's statuses (a traceback, HTTP 500), then a bundle without
    the statuses. The statuses' proofs are now built from the ids on chain, so the mirror does not matter."""
    a = life.originator
    with a.store.transaction() as session:
        session.execute(delete(AssetMirrorLoan).where(AssetMirrorLoan.pool_id == life.pool_id,
                                                      AssetMirrorLoan.version == 2, AssetMirrorLoan.position > 4))
    bundle = build_bundle(a, "LN-000004")
    assert [s["period"] for s in bundle["loan_statuses"]] == [1, 2]
    result = verify(life, bundle)
    assert result["verified"] is True, failed(result)


def report_defaulted(life: Life, node: NodeContext, period: int, reference: str) -> None:
    """`node`, the custodian, reports `period` of version 2 with the loan `reference` defaulted, the rest current."""
    defaulted = bytes.fromhex(build_bundle(life.originator, reference)["record"]["loan_id"][2:])
    loan_ids = next(e for e in asset_registry(node).published_loan_ids(pool_id=life.pool_id)
                    if e.version == 2).loan_ids
    lifecycle.report_servicing(node, life.pool_id, period, statuses={
        i: LoanStatus.defaulted if i == defaulted else LoanStatus.current for i in loan_ids})


def test_verify_bundle_refuses_a_bundle_that_leaves_out_a_servicing_period(life: Life) -> None:
    """B, the custodian, reported the loan defaulted in period 3. A bundle without that period's entry verified (it
    said "loan status proven for 2 period(s)"): a default on chain was missing from a clean-looking history. It now
    fails, naming the period and what the chain's own statuses of that report say."""
    report_defaulted(life, life.nodes[1], 3, "LN-000004")
    bundle = build_bundle(life.originator, "LN-000004")
    assert [(s["period"], s["status"]) for s in bundle["loan_statuses"]] == [
        (1, "dpd30"), (2, "current"), (3, "defaulted")]
    assert verify(life, bundle)["verified"] is True

    without_default = copy.deepcopy(bundle)
    del without_default["loan_statuses"][2]
    result = verify(life, without_default)
    assert result["verified"] is False
    assert list(failed(result)) == ["loan_statuses"]
    assert ("the bundle gives no status of the loan for servicing period(s) 3 (version 2; the report's statuses on "
            "chain say defaulted)") in failed(result)["loan_statuses"]
    assert result["facts"]["loan_status_periods"] == [1, 2, 3]
    assert result["facts"]["loan_status_periods_missing"] == [
        {"period": 3, "version": 2, "status_on_chain": "defaulted"}]

    no_statuses = copy.deepcopy(bundle)
    no_statuses["loan_statuses"] = []
    result = verify(life, no_statuses)
    assert [m["period"] for m in result["facts"]["loan_status_periods_missing"]] == [1, 2, 3]
    assert "servicing period(s) 1 (version 2; the report's statuses on chain say dpd30), 2 " in failed(result)[
        "loan_statuses"]


def test_audit_verify_names_the_servicing_periods_a_bundle_leaves_out(life: Life, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Human output and --json both say which periods are on chain but missing from the bundle, even when another
    check fails first."""
    bundle = copy.deepcopy(life.bundle)
    del bundle["loan_statuses"][1]
    bundle["attestations"] = []  # a failure before: the missing period is still said on its own line
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(json.dumps(bundle))
    args = ("audit", "verify", str(bundle_file), "--rpc", life.rpc_url, "--registry", life.registry)
    human = run_cli(capsys, *args)
    assert human.code == 1 and "VERIFIED:" not in human.out
    err = " ".join(human.err.split())
    assert "NOT VERIFIED: the bundle gives no status of the loan for servicing period(s) 2 (version 2;" in err
    assert "✗ loan_statuses" in " ".join(human.out.split())
    bundle["attestations"] = life.bundle["attestations"]
    del bundle["custody"][0]
    bundle_file.write_text(json.dumps(bundle))
    human = run_cli(capsys, *args)
    assert ("MISSING SERVICING PERIODS: 2 are on chain for the loan, but the bundle gives no status for them"
            in " ".join(human.err.split()))
    machine = run_cli(capsys, *args, "--json")
    assert machine.code == 1
    answer = json.loads(machine.out)
    assert answer["verified"] is False
    assert answer["facts"]["loan_status_periods_missing"] == [{"period": 2, "version": 2, "status_on_chain": "current"}]


def test_verify_bundle_names_a_period_whose_statuses_on_chain_do_not_match_its_root(life: Life) -> None:
    """A custodian sent a report whose statuses do not rebuild its root: no node can prove the loan's status there,
    the bundle leaves the period out, and the verifier says the report itself is at fault."""
    b = life.nodes[1]
    registry = asset_registry(b, signing=True)
    good = next(s for s in life.bundle["servicing"] if s["period"] == 2)
    registry.report_servicing(life.pool_id, 2, 3, bytes.fromhex(good["status_root"][2:]), good["status_counts"],
                              pack_statuses([LoanStatus.repaid] * 10))
    bundle = build_bundle(life.originator, "LN-000004")
    assert [s["period"] for s in bundle["loan_statuses"]] == [1, 2]
    result = verify(life, bundle)
    assert result["verified"] is False
    assert ("3 (version 2; the report's statuses on chain are incomplete or do not rebuild its root)"
            in failed(result)["loan_statuses"])
    assert result["facts"]["loan_status_periods_missing"] == [{"period": 3, "version": 2, "status_on_chain": None}]


def test_build_bundles_builds_each_tree_once_for_every_loan_asked(life: Life, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample of loans of one pool built its version's tree and every period's status tree again for each loan
    (a 100-loan sample of a million-loan pool a year into servicing: hours). Each is now built once for them all,
    and every bundle is the one the loan gets alone, as of one block."""
    a = life.originator
    report_defaulted(life, life.nodes[1], 3, "LN-000004")
    loan_4 = build_bundle(a, "LN-000004")["record"]["loan_id"]
    asked = ["LN-000004", "LN-000011", "LN-000002", loan_4, "LN-000007"]  # LN-000011: in version 1 only
    alone = [build_bundle(a, reference) for reference in asked]
    trees: list[int] = []
    status_trees: list[int] = []
    real_build_tree, real_status_tree = provenance.build_tree, ChainStatuses.tree
    monkeypatch.setattr(provenance, "build_tree", lambda records: trees.append(len(records))
                        or real_build_tree(records))
    monkeypatch.setattr(ChainStatuses, "tree", lambda self, report: status_trees.append(report["period"])
                        or real_status_tree(self, report))

    bundles = build_bundles(a, asked)

    assert sorted(trees) == [10, 12]  # versions 2 and 1, once each
    assert sorted(status_trees) == [1, 2, 3]  # each period once (all three report version 2)
    assert bundles == alone  # nothing changed on chain since: each the bundle the loan gets alone, in order
    assert [b["version"] for b in bundles] == [2, 1, 2, 2, 2]
    assert len({b["record"]["loan_id"] for b in bundles}) == 4 and bundles[3] == bundles[0]
    assert [(s["period"], s["status"]) for s in bundles[0]["loan_statuses"]] == [
        (1, "dpd30"), (2, "current"), (3, "defaulted")]
    assert bundles[1]["loan_statuses"] == []  # version 1 was never serviced
    assert all(verify(life, bundle)["verified"] for bundle in bundles)


def test_verify_bundles_reads_the_chain_once_for_a_sample(life: Life, monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor's sample verified one bundle at a time read every published loan id (3 s on a million-loan chain),
    the version's ids, the pool's events and the signers' roles again for each bundle. One run reads each once, and
    each bundle still gets the verdict it gets alone: a tampered one among them fails, the others verify. A version's
    ids are read once too, for the loan-id check and the status trees both (they were read twice a run)."""
    bundles = build_bundles(life.originator, ["LN-000004", "LN-000001", "LN-000007", "LN-000011"])
    tampered = copy.deepcopy(bundles[2])
    del tampered["loan_statuses"][0]
    hidden = copy.deepcopy(bundles[0])  # a loan id that version 2 never published, under its genuine leaf and proof
    hidden["record"]["loan_id"] = "0x" + "ab" * 32
    sample = [*bundles, tampered, hidden]
    alone = [verify(life, bundle) for bundle in sample]
    reads: list[tuple[str, int]] = []
    for name in ("published_loan_ids", "pool_events", "reported_statuses", "member_at"):
        real = getattr(AssetRegistryClient, name)
        monkeypatch.setattr(AssetRegistryClient, name, lambda self, *args, _name=name, _real=real, **kwargs:
                            reads.append((_name, kwargs.get("version") or 0)) or _real(self, *args, **kwargs))

    verdicts = verify_bundles(sample, life.rpc_url, life.registry)

    assert [v.to_json() for v in verdicts] == alone
    assert [v.ok for v in verdicts] == [True, True, True, True, False, False]
    assert [c.name for c in verdicts[4].failures] == ["loan_statuses"]
    assert [c.name for c in verdicts[5].failures] == ["record", "loan_ids", "loan_statuses"]
    assert "not among the 10 ids published for version 2" in verdicts[5].failures[1].detail
    # Every published id (version 0 here) once for the double-financing check, and each version's ids once.
    assert sorted(version for name, version in reads if name == "published_loan_ids") == [0, 1, 2]
    one_run = sorted(reads)
    reads.clear()
    verify_bundles(sample[:1], life.rpc_url, life.registry)
    assert sorted(version for name, version in reads if name == "published_loan_ids") == [0, 2]
    # The version 1 bundle (LN-000011) adds its version's ids; nothing else is read again for more bundles.
    assert one_run == sorted([*reads, ("published_loan_ids", 1)])


def test_build_bundles_refuses_them_all_for_one_bad_loan(life: Life) -> None:
    with pytest.raises(NotFound, match="'LN-999999'") as unknown:
        build_bundles(life.originator, ["LN-000004", "LN-999999"])
    assert unknown.value.code == "loan_not_found"
    with pytest.raises(InvalidInput, match="'0x12'") as malformed:
        build_bundles(life.originator, ["LN-000004", "0x12"])
    assert malformed.value.code == "invalid_loan_id"
    with pytest.raises(InvalidInput) as none:
        build_bundles(life.originator, [])
    assert none.value.code == "no_loans"
    with pytest.raises(InvalidInput, match="at most 1,000") as too_many:
        build_bundles(life.originator, ["LN-000004"] * (MAX_BUNDLES + 1))
    assert too_many.value.code == "too_many_loans"


def test_build_bundle_of_unknown_loan_fails(life: Life) -> None:
    with pytest.raises(NotFound, match="no anchored loan"):
        build_bundle(life.originator, "LN-999999")


def test_verify_bundle_refuses_loan_hidden_from_published_ids(banks: list[NodeContext], tmp_path: Path,
                                                              rpc_url: str) -> None:
    """A custodian anchors a root holding loan 3 but publishes another id in its place, or not all ids."""
    a = banks[0]
    import_tape(a, "hidden", write_tape(tmp_path / "h.csv", [loan_row(i) for i in range(6)]))
    records = first_version_records(a)
    root, total = build_tree(records).root, sum(r.current_principal for r in records)
    ids = [r.loan_id for r in records]
    registry = asset_registry(a, signing=True)
    hidden, _ = registry.register_pool(b"\x01" * 32)
    registry.anchor_version(hidden, root, total, [*ids[:3], b"\x99" * 32, *ids[4:]])
    partial, _ = registry.register_pool(b"\x02" * 32)
    registry.anchor_version(partial, root, total, ids[:2], loan_count=len(ids))
    address = a.deployment.address("AssetRegistry")

    def loan_ids_check(pool_id: int, position: int) -> str:
        result = verify_bundle(bundle_for(asset_registry(a), pool_id, 1, records, position), rpc_url, address)
        failures = {c.name: c.detail for c in result.failures}
        assert set(failures) <= {"loan_ids", "double_financing"}  # both pools hold the other ids
        return failures["loan_ids"]

    assert "not among the 6 ids published for version 1" in loan_ids_check(hidden, 3)
    assert "only 2 of the 6 loan ids of version 1 were published" in loan_ids_check(partial, 0)
    registry.publish_loan_ids(partial, 1, 2, ids[2:])
    # Loan 3, the one the first pool left out of its ids, is in no other pool.
    result = verify_bundle(bundle_for(asset_registry(a), partial, 1, records, 3), rpc_url, address)
    assert result.ok, result.failures
    assert "all 6 loan ids of version 1 published in 2 chunk(s)" in {c.name: c.detail for c in result.checks}[
        "loan_ids"]


def test_a_pool_of_a_removed_custodian_passes_by_vote_and_its_bundles_verify(life: Life) -> None:
    a, _b, c = life.nodes
    with pytest.raises(NotFound, match="no open succession vote"):
        lifecycle.vote_successor(c, life.pool_id)
    removal = a.registry(signing=True).propose_removal(2)  # B, the custodian, leaves; A and C vote
    assert c.registry(signing=True).vote(removal.proposal_id).executed

    proposed = lifecycle.propose_successor(a, life.pool_id, "BANK-C")
    assert (proposed.round, proposed.decided, proposed.votes, proposed.required) == (1, False, 1, 2)
    voted = lifecycle.vote_successor(c, life.pool_id)
    assert (voted.round, voted.decided) == (1, True)
    assert asset_registry(a).pool(life.pool_id).custodian_member_id == 3
    report_defaulted(life, c, 3, "LN-000004")

    bundle = build_bundle(a, "LN-000004")
    # Periods of all three custodians' times, the successor's included, from three stores.
    assert [(s["period"], s["status"]) for s in bundle["loan_statuses"]] == [
        (1, "dpd30"), (2, "current"), (3, "defaulted")]
    assert [(e["to_member_id"], e.get("by_vote", False)) for e in bundle["custody"]] == [
        (1, False), (2, False), (3, True)]
    result = verify(life, bundle)
    assert result["verified"] is True, failed(result)
    assert result["facts"]["custodian_member_id_now"] == 3
    assert verify(life, life.bundle)["verified"] is True  # the bundle made before the succession, too (as of its block)

    forged = copy.deepcopy(bundle)
    del forged["custody"][-1]["by_vote"]  # a vote passed off as a hand-over the custodian proposed
    assert "custody" in failed(verify(life, forged))


def test_proposing_the_successor_proposed_already_votes_in_the_open_round(life: Life) -> None:
    """A proposal run again (its answer lost) opened a new round, dropping the votes cast in the first; proposing the
    successor already proposed is now this bank's vote in the open round, counted once."""
    a, _b, c = life.nodes
    removal = a.registry(signing=True).propose_removal(2)
    assert c.registry(signing=True).vote(removal.proposal_id).executed
    first = lifecycle.propose_successor(a, life.pool_id, "BANK-C")
    again = lifecycle.propose_successor(a, life.pool_id, "3")
    assert (again.round, again.decided, again.votes) == (1, False, 1)
    assert again.receipt.tx_hash == first.receipt.tx_hash
    joined = lifecycle.propose_successor(c, life.pool_id, "BANK-C")
    assert (joined.round, joined.decided) == (1, True)
    assert [e.kind for e in asset_registry(a).pool_events(life.pool_id) if e.kind.startswith("succ")] == [
        "successor_proposed", "successor_voted", "successor_voted", "succeeded"]


def test_proposing_again_the_successor_of_a_round_passed_by_a_suspension_decides_it(life: Life) -> None:
    """A round whose votes reach the quorum only after a voter-less suspension cannot be decided by a vote (every
    active member voted already); proposing its successor again opened a new round that the proposer's vote decides,
    but proposing it again returned the earlier vote's receipt instead, so custody could never pass to it."""
    a, _b, c = life.nodes
    removal = a.registry(signing=True).propose_removal(2)  # B, the custodian, leaves; A and C vote
    assert c.registry(signing=True).vote(removal.proposal_id).executed
    first = lifecycle.propose_successor(a, life.pool_id, "BANK-A")
    assert (first.decided, first.votes, first.required) == (False, 1, 2)
    suspension = a.registry(signing=True).propose_suspension(3)  # C leaves too: A's vote alone is the quorum now
    assert c.registry(signing=True).vote(suspension.proposal_id).executed
    again = lifecycle.propose_successor(a, life.pool_id, "BANK-A")
    assert again.decided
    assert asset_registry(a).pool(life.pool_id).custodian_member_id == 1
    result = verify(life, build_bundle(a, "LN-000004"))  # a hand-over by the new round's vote
    assert result["verified"] is True, failed(result)


def test_proposing_a_successor_again_while_the_first_proposal_is_pending_keeps_one_round(
        life: Life, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after sending the proposal, before it was mined: run again, it found no open round and opened
    a second one, which would drop the votes cast in the first meanwhile."""
    a, _b, c = life.nodes
    removal = a.registry(signing=True).propose_removal(2)
    assert c.registry(signing=True).vote(removal.proposal_id).executed
    again = run_again_while_pending(a.signing_chain, monkeypatch,
                                    lambda: lifecycle.propose_successor(a, life.pool_id, "BANK-C"))
    assert (again.round, again.decided, again.votes) == (1, False, 1)
    assert [e.kind for e in asset_registry(a).pool_events(life.pool_id) if e.kind.startswith("succ")] == [
        "successor_proposed", "successor_voted"]


def test_proposing_a_successor_again_after_the_proposal_decided_returns_it(life: Life) -> None:
    """A proposal that decided the succession (its answer lost) run again was refused by the contract as a proposal
    for a pool whose custodian is not removed; it now returns the deciding proposal's receipt."""
    a, _b, c = life.nodes
    removal = a.registry(signing=True).propose_removal(2)
    assert c.registry(signing=True).vote(removal.proposal_id).executed
    suspension = a.registry(signing=True).propose_suspension(3)  # A alone is the quorum now
    assert c.registry(signing=True).vote(suspension.proposal_id).executed
    first = lifecycle.propose_successor(a, life.pool_id, "BANK-A")
    assert (first.round, first.decided) == (1, True)
    again = lifecycle.propose_successor(a, life.pool_id, "BANK-A")
    assert (again.round, again.decided, again.receipt.tx_hash) == (1, True, first.receipt.tx_hash)
    assert [e.kind for e in asset_registry(a).pool_events(life.pool_id) if e.kind.startswith("succ")] == [
        "successor_proposed", "successor_voted", "succeeded"]


def test_voting_for_a_successor_again_returns_the_vote_cast(life: Life, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after sending its vote, before it was mined, and voted again: the second copy was refused once
    the first had decided the succession; run once more, the vote was refused as voting in no open round. Both
    times this bank's vote had been cast and had passed custody. Each run now returns it."""
    a, _b, c = life.nodes
    removal = a.registry(signing=True).propose_removal(2)
    assert c.registry(signing=True).vote(removal.proposal_id).executed
    lifecycle.propose_successor(a, life.pool_id, "BANK-C")
    again = run_again_while_pending(c.signing_chain, monkeypatch, lambda: lifecycle.vote_successor(c, life.pool_id))
    assert (again.round, again.decided) == (1, True)
    once_more = lifecycle.vote_successor(c, life.pool_id)
    assert (once_more.round, once_more.decided, once_more.receipt.tx_hash) == (1, True, again.receipt.tx_hash)
    assert [e.kind for e in asset_registry(a).pool_events(life.pool_id) if e.kind.startswith("succ")] == [
        "successor_proposed", "successor_voted", "successor_voted", "succeeded"]
    assert asset_registry(a).pool(life.pool_id).custodian_member_id == 3


# -- an endpoint that lacks, withholds or garbles what the checks ask: one line, exit code 1, never VERIFIED --------
def audit_verify(capsys: pytest.CaptureFixture[str], life: Life, rpc_url: str, tmp_path: Path) -> CliResult:
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(json.dumps(life.bundle))
    return run_cli(capsys, "audit", "verify", str(bundle_file), "--rpc", rpc_url, "--registry", life.registry)


def one_line_failure(result: CliResult) -> str:
    """The one line of a failed verification, checked to be that: exit code 1, no VERIFIED, one line on stderr."""
    assert result.code == 1, result
    assert "VERIFIED:" not in result.out and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return " ".join(lines[0].split())


def test_audit_verify_through_an_endpoint_without_a_transaction_says_so_in_one_line(
        life: Life, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node that pruned old transactions answers null for the hash of one the checks read the sender of: the
    auditor got web3's words, "chain RPC error: Transaction with hash: '0x…' not found.", with nothing about why or
    what to do."""
    with capped_rpc(life.rpc_url) as relay:
        relay.rewrite["eth_getTransactionByHash"] = with_result(None)
        line = one_line_failure(audit_verify(capsys, life, relay.url, tmp_path))
    assert line.startswith("error: Transaction with hash: '0x")
    assert (f"not found at chain RPC {relay.url}: the endpoint may keep recent history only (pruned) or not have "
            "synced that far; use an archive node") in line


# How nodes refuse history they no longer keep: a past block's state (anvil --prune-history, geth's hash scheme), old
# logs (geth's history expiry).
PRUNED = [("eth_call", {"code": -32602, "message": "BlockOutOfRangeError: block height is 40 but requested was 5"}),
          ("eth_call", {"code": -32000, "message": "missing trie node 5a2c0f (path ) state 0x5a2c0f is not available"}),
          ("eth_getLogs", {"code": 4444, "message": "pruned history unavailable"})]


@pytest.mark.parametrize(("method", "refusal"), PRUNED, ids=["anvil state", "geth state", "geth logs"])
def test_audit_verify_through_an_endpoint_without_past_history_says_so_in_one_line(
        life: Life, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str, refusal: dict[str, Any]) -> None:
    """The checks read the registries as of past blocks (loan ids published by the bundle's block, each signer's
    membership at its block) and the logs from block 0; a node keeping recent history only refuses. A refused state
    failed a check as though the bundle were wrong ("NOT VERIFIED: chain refused the lookup: chain RPC error: {…}");
    refused logs were asked again over halved ranges down to single blocks, and then "chain RPC error: {…}"."""
    def refuse_the_past(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        if method == "eth_call" and request["params"][1] == "latest":
            return answer
        return {"jsonrpc": "2.0", "id": answer["id"], "error": refusal}

    with capped_rpc(life.rpc_url) as relay:
        relay.rewrite[method] = refuse_the_past
        line = one_line_failure(audit_verify(capsys, life, relay.url, tmp_path))
    assert line == (f"error: chain RPC at {relay.url} does not have the history asked for: the endpoint may keep "
                    f"recent history only (pruned) or not have synced that far; use an archive node "
                    f"({refusal['message']})")
    if method == "eth_getLogs":
        assert relay.methods.count("eth_getLogs") == 1  # not asked again over narrower ranges


def test_audit_verify_through_an_endpoint_that_goes_away_mid_way_says_so_in_one_line(
        life: Life, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with capped_rpc(life.rpc_url) as relay:
        relay.rewrite["eth_getTransactionByHash"] = lambda _request, _answer: None  # connection closed, no answer
        line = one_line_failure(audit_verify(capsys, life, relay.url, tmp_path))
    assert line == f"error: chain RPC at {relay.url} is unreachable"


def test_verify_bundle_through_an_endpoint_too_slow_mid_way_raises_did_not_answer_in_time(life: Life) -> None:
    def slowly(_request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        time.sleep(1)
        return answer

    with capped_rpc(life.rpc_url) as relay:
        relay.rewrite["eth_getTransactionByHash"] = slowly
        with pytest.raises(ChainUnavailable) as failed:
            verify_bundle(life.bundle, relay.url, life.registry, request_timeout=0.3)
    assert str(failed.value) == f"chain RPC at {relay.url} did not answer in time"


# Each method the verification calls, with a field of its result that the node reads (None: not an object).
VERIFY_METHODS = {"eth_chainId": None, "eth_blockNumber": None, "eth_getCode": None, "eth_call": None,
                  "eth_getLogs": "transactionHash", "eth_getTransactionByHash": "from"}


def _corruptions(field: str | None) -> dict[str, Callable[[Any], Any]]:
    """Name -> how a result is garbled: in place of the result, or (for objects and lists of them) in one field."""
    corrupt: dict[str, Callable[[Any], Any]] = {"null": lambda _r: None, "a number": lambda _r: 5,
                                                "bad hex": lambda _r: "0xzz", "an object": lambda _r: {"unexpected": 1}}
    if field is not None:
        def without(result: Any) -> Any:
            return [{k: v for k, v in result[0].items() if k != field}, *result[1:]] if isinstance(result, list) \
                else {k: v for k, v in result.items() if k != field}

        def null_field(result: Any) -> Any:
            return [{**result[0], field: None}, *result[1:]] if isinstance(result, list) else {**result, field: None}

        corrupt.update({f"no {field}": without, f"{field} null": null_field})
    return corrupt


def _holds_something(answer: dict[str, Any]) -> bool:
    return answer.get("result") not in ([], None)  # an empty list of logs has no field to garble


def garbled(call: int, corrupt: Callable[[Any], Any]) -> Rewrite:
    """A rewrite garbling the `call`-th answer (from 0) that holds something, passing the others."""
    held = [0]

    def rewrite(_request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        if not _holds_something(answer):
            return answer
        held[0] += 1
        return {**answer, "result": corrupt(answer["result"])} if held[0] - 1 == call else answer

    return rewrite


@pytest.mark.parametrize("method", VERIFY_METHODS)
def test_audit_verify_never_tracebacks_or_verifies_on_a_malformed_result(
        life: Life, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str) -> None:
    """Each method's result garbled, at a call half-way through the verification and at its last call (the checks
    after the chain check): KeyError, TypeError and ValueError tracebacks from web3's formatters and the code reading
    their answers (eth_getLogs null, a transaction without "from", eth_call null in a membership lookup), or VERIFIED
    (a number where eth_getCode's hex is due read as one byte of code)."""
    with capped_rpc(life.rpc_url) as relay:
        held: list[Any] = []

        def count(_request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
            held.extend([answer] if _holds_something(answer) else [])
            return answer

        relay.rewrite[method] = count
        assert audit_verify(capsys, life, relay.url, tmp_path).code == 0  # the normal path, through the relay
        # web3 asks eth_chainId before each eth_call and reads the answer the same way each time: its last one is enough
        calls = {len(held) - 1} if method == "eth_chainId" else {len(held) // 2, len(held) - 1}
        outcomes = {}
        for name, corrupt in _corruptions(VERIFY_METHODS[method]).items():
            for call in sorted(calls):
                relay.rewrite[method] = garbled(call, corrupt)
                result = audit_verify(capsys, life, relay.url, tmp_path)
                outcomes[(name, call)] = one_line_failure(result)
    # null for a transaction is the endpoint's "no such transaction"
    assert all(f"answered {method} with a malformed result" in line or (name == "null" and "not found" in line)
               for (name, _call), line in outcomes.items()), outcomes
