"""Contract tests of AssetRegistry on a real anvil: the life of a loan pool, custody, servicing, audit.

Banks A, B, C are founding members 1, 2, 3 (conftest's `consortium`); an auditor is admitted through
registry governance as member 4. Reverts are asserted by exception class and decoded arguments, then the
asset registry's observable state is compared with a snapshot taken before the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunctions
from web3.logs import DISCARD

from node.chain.client import Receipt
from node.chain.errors import (
    AssetRegistryAlreadyVotedSuccessor,
    AssetRegistryCustodianNotRemoved,
    AssetRegistryInvalidCustodian,
    AssetRegistryLoanIdsIncomplete,
    AssetRegistryLoanIdsOffsetMismatch,
    AssetRegistryNoPendingTransfer,
    AssetRegistryNoSuccession,
    AssetRegistryNotAuditor,
    AssetRegistryNotCustodian,
    AssetRegistryNotMember,
    AssetRegistryNotPendingCustodian,
    AssetRegistryPeriodNotIncreasing,
    AssetRegistryPoolAlreadyRegistered,
    AssetRegistryRootUnchanged,
    AssetRegistryStatusesOffsetMismatch,
    AssetRegistryTooManyLoanIds,
    AssetRegistryTooManyStatuses,
    AssetRegistryUnknownPool,
    AssetRegistryUnknownVersion,
    AssetRegistryZeroRoot,
    ContractRevert,
)
from node.chain.registry import MemberRole
from node.merkle import StandardMerkleTree
from tests.conftest import Bank, Consortium
from tests.contracts.registry_helpers import MINED_GAS, Governance, expect_mined_revert

ENCODING = ["bytes32", "bytes32", "uint256", "uint256", "uint8"]  # loan id, borrower hash, principal, rate bp, grade
METADATA = Web3.keccak(text="pool metadata v1")
REPORT = Web3.keccak(text="audit report")
STATUS_ROOT = Web3.keccak(text="statuses")
ZERO32 = b"\x00" * 32


def loan_id(seed: int) -> bytes:
    return Web3.keccak(text=f"loan-{seed}")


def loans(seeds: range) -> list[list[Any]]:
    return [[loan_id(i), Web3.keccak(text=f"borrower-{i}"), 100_000 + i, 350 + i, i % 5] for i in seeds]


class Assets:
    """The deployed AssetRegistry, acted on by any bank."""

    def __init__(self, consortium: Consortium) -> None:
        self.address = consortium.deployment.address("AssetRegistry")
        self.reader = consortium.banks[0].client
        self.contract: Contract = self.reader.contract("AssetRegistry", self.address)

    def fn(self, bank: Bank) -> ContractFunctions:
        return bank.client.contract("AssetRegistry", self.address).functions

    def send(self, bank: Bank, call: Callable[[ContractFunctions], Any]) -> Receipt:
        return bank.client.transact(call(self.fn(bank)))

    def read(self, call: Callable[[ContractFunctions], Any]) -> Any:
        return self.reader.call(call(self.contract.functions))

    def events(self, receipt: Receipt, name: str) -> list[dict[str, Any]]:
        event = getattr(self.contract.events, name)()
        return [dict(e["args"]) for e in event.process_receipt(receipt.raw, errors=DISCARD)]

    def snapshot(self) -> dict[str, Any]:
        count = self.read(lambda f: f.poolCount())
        functions = self.contract.functions
        pools = [self.reader.call(functions.pool(p)) for p in range(1, count + 1)]
        versions = [(self.reader.call(functions.version(p, v)), self.reader.call(functions.loanIdsPublished(p, v)))
                    for p, info in enumerate(pools, start=1) for v in range(1, info[4] + 1)]
        return {"count": count, "pools": pools, "versions": versions}

    def refuses(self, bank: Bank, call: Callable[[ContractFunctions], Any],
                error: type[ContractRevert], arguments: dict[str, Any]) -> None:
        """The call reverts with exactly this error and arguments, and changes nothing."""
        before = self.snapshot()
        with pytest.raises(error) as raised:
            self.send(bank, call)
        assert type(raised.value) is error
        assert raised.value.arguments == arguments
        assert self.snapshot() == before


@pytest.fixture
def assets(consortium: Consortium) -> Assets:
    return Assets(consortium)


def test_registry_is_bound_to_alliance_registry(consortium: Consortium, assets: Assets) -> None:
    assert assets.read(lambda f: f.registry()) == consortium.deployment.address("AllianceRegistry")
    assert assets.read(lambda f: f.poolCount()) == 0
    with pytest.raises(AssetRegistryUnknownPool) as raised:
        assets.read(lambda f: f.pool(1))
    assert raised.value.arguments == {"poolId": 1}


def test_pool_life_across_two_banks_and_an_auditor(consortium: Consortium, assets: Assets) -> None:
    gov = Governance(consortium)
    a, b, _c = consortium.banks
    auditor = gov.newcomer()
    auditor_id = gov.admit(auditor, MemberRole.auditor)  # A proposes, B votes
    assert auditor_id == 4
    w3 = assets.reader.w3

    # -- register --------------------------------------------------------------------------------------
    assets.refuses(auditor, lambda f: f.registerPool(METADATA), AssetRegistryNotMember,
                   {"account": auditor.address})
    receipt = assets.send(a, lambda f: f.registerPool(METADATA))
    registered_at = w3.eth.get_block(receipt.block_number)["timestamp"]
    assert assets.events(receipt, "PoolRegistered") == [
        {"poolId": 1, "originatorMemberId": 1, "metadataHash": METADATA}]
    assert assets.read(lambda f: f.poolCount()) == 1
    assert assets.read(lambda f: f.pool(1)) == (1, 1, 0, METADATA, 0, 0, registered_at)

    # -- anchor v1 ---------------------------------------------------------------------------------------
    v1_loans = loans(range(5))
    v1 = StandardMerkleTree.of(v1_loans, ENCODING)
    v1_ids = [row[0] for row in v1_loans]
    principal_v1 = sum(row[2] for row in v1_loans)
    assets.refuses(a, lambda f: f.anchorVersion(1, ZERO32, 5, principal_v1, v1_ids), AssetRegistryZeroRoot, {})
    assets.refuses(a, lambda f: f.anchorVersion(1, v1.root, 4, principal_v1, v1_ids),
                   AssetRegistryTooManyLoanIds, {"poolId": 1, "version": 1, "given": 5, "remaining": 4})
    assets.refuses(a, lambda f: f.anchorVersion(2, v1.root, 5, principal_v1, v1_ids),
                   AssetRegistryUnknownPool, {"poolId": 2})
    assets.refuses(b, lambda f: f.anchorVersion(1, v1.root, 5, principal_v1, v1_ids),
                   AssetRegistryNotCustodian, {"poolId": 1, "account": b.address})
    assets.refuses(auditor, lambda f: f.anchorVersion(1, v1.root, 5, principal_v1, v1_ids),
                   AssetRegistryNotCustodian, {"poolId": 1, "account": auditor.address})
    receipt = assets.send(a, lambda f: f.anchorVersion(1, v1.root, 5, principal_v1, v1_ids))
    anchored_at = w3.eth.get_block(receipt.block_number)["timestamp"]
    assert assets.events(receipt, "VersionAnchored") == [
        {"poolId": 1, "version": 1, "root": v1.root, "loanCount": 5, "totalPrincipal": principal_v1}]
    assert assets.events(receipt, "LoanIdsPublished") == [{"poolId": 1, "version": 1, "offset": 0, "loanIds": v1_ids}]
    assert assets.read(lambda f: f.version(1, 1)) == (v1.root, 5, principal_v1, anchored_at, 1)
    assert assets.read(lambda f: f.loanIdsPublished(1, 1)) == 5
    assert assets.read(lambda f: f.pool(1))[4] == 1
    # The same tape anchored again (a resend after a crash) is refused: no duplicate version.
    assets.refuses(a, lambda f: f.anchorVersion(1, v1.root, 5, principal_v1, v1_ids),
                   AssetRegistryRootUnchanged, {"poolId": 1, "version": 1})

    # -- verify loans against v1 ---------------------------------------------------------------------------
    for i, row in enumerate(v1_loans):
        leaf, proof = v1.leaf_hash(row), v1.proof(i)
        assert assets.reader.call(assets.contract.functions.verifyLoan(1, 1, leaf, proof)) is True
    leaf0, proof0 = v1.leaf_hash(v1_loans[0]), v1.proof(0)
    tampered_row = [v1_loans[0][0], v1_loans[0][1], v1_loans[0][2] + 1, v1_loans[0][3], v1_loans[0][4]]
    tampered_leaf = v1.leaf_hash(tampered_row)
    tampered_proof = [bytes([proof0[0][0] ^ 1]) + proof0[0][1:], *proof0[1:]]
    assert assets.read(lambda f: f.verifyLoan(1, 1, tampered_leaf, proof0)) is False
    assert assets.read(lambda f: f.verifyLoan(1, 1, leaf0, tampered_proof)) is False
    with pytest.raises(AssetRegistryUnknownVersion) as raised:
        assets.read(lambda f: f.verifyLoan(1, 2, leaf0, proof0))
    assert raised.value.arguments == {"poolId": 1, "version": 2}

    # -- anchor v2 (one loan repurchased, two added) ------------------------------------------------------------
    v2_loans = loans(range(1, 7))
    v2 = StandardMerkleTree.of(v2_loans, ENCODING)
    v2_ids = [row[0] for row in v2_loans]
    principal_v2 = sum(row[2] for row in v2_loans)
    receipt = assets.send(a, lambda f: f.anchorVersion(1, v2.root, 6, principal_v2, v2_ids))
    assert assets.events(receipt, "LoanIdsPublished") == [{"poolId": 1, "version": 2, "offset": 0, "loanIds": v2_ids}]
    assert assets.read(lambda f: f.version(1, 2))[:3] == (v2.root, 6, principal_v2)
    # Loan 0 is in v1 only: its v1 proof fails against v2 (wrong version).
    assert assets.read(lambda f: f.verifyLoan(1, 2, leaf0, proof0)) is False
    assert assets.read(lambda f: f.verifyLoan(1, 2, v2.leaf_hash(v2_loans[0]), v2.proof(0))) is True

    # -- custody A -> B -------------------------------------------------------------------------------------
    assets.refuses(a, lambda f: f.acceptTransfer(1), AssetRegistryNoPendingTransfer, {"poolId": 1})
    assets.refuses(a, lambda f: f.cancelTransfer(1), AssetRegistryNoPendingTransfer, {"poolId": 1})
    assets.refuses(a, lambda f: f.proposeTransfer(1, auditor.address), AssetRegistryInvalidCustodian,
                   {"account": auditor.address})
    assets.refuses(a, lambda f: f.proposeTransfer(1, a.address), AssetRegistryInvalidCustodian,
                   {"account": a.address})
    assets.refuses(b, lambda f: f.proposeTransfer(1, b.address), AssetRegistryNotCustodian,
                   {"poolId": 1, "account": b.address})
    receipt = assets.send(a, lambda f: f.proposeTransfer(1, b.address))
    assert assets.events(receipt, "CustodyTransferProposed") == [
        {"poolId": 1, "fromMemberId": 1, "toMemberId": 2}]
    assert assets.read(lambda f: f.pool(1))[:3] == (1, 1, 2)
    # Cancel, then propose again.
    receipt = assets.send(a, lambda f: f.cancelTransfer(1))
    assert assets.events(receipt, "CustodyTransferCancelled") == [
        {"poolId": 1, "fromMemberId": 1, "toMemberId": 2}]
    assert assets.read(lambda f: f.pool(1))[:3] == (1, 1, 0)
    assets.refuses(b, lambda f: f.acceptTransfer(1), AssetRegistryNoPendingTransfer, {"poolId": 1})
    assets.send(a, lambda f: f.proposeTransfer(1, b.address))
    c = consortium.banks[2]
    for outsider in (c, a, auditor):
        assets.refuses(outsider, lambda f: f.acceptTransfer(1), AssetRegistryNotPendingCustodian,
                       {"poolId": 1, "account": outsider.address})
    receipt = assets.send(b, lambda f: f.acceptTransfer(1))
    assert assets.events(receipt, "CustodyTransferred") == [{"poolId": 1, "fromMemberId": 1, "toMemberId": 2}]
    assert assets.read(lambda f: f.pool(1))[:5] == (1, 2, 0, METADATA, 2)
    assets.refuses(a, lambda f: f.anchorVersion(1, v2.root, 6, principal_v2, v2_ids),
                   AssetRegistryNotCustodian, {"poolId": 1, "account": a.address})
    statuses_1 = bytes([0x11, 0x12, 0x11])  # version 2's six loans, 4 bits each: the fourth is dpd30
    assets.refuses(a, lambda f: f.reportServicing(1, 2, 1, STATUS_ROOT, [5, 1, 0, 0, 0, 0, 0], statuses_1),
                   AssetRegistryNotCustodian, {"poolId": 1, "account": a.address})

    # -- servicing by B ---------------------------------------------------------------------------------------
    counts_1 = [5, 1, 0, 0, 0, 0, 0]
    counts_2 = [4, 0, 1, 0, 0, 1, 0]
    statuses_2 = bytes([0x13, 0x11, 0x61])
    assets.refuses(b, lambda f: f.reportServicing(1, 3, 1, STATUS_ROOT, counts_1, statuses_1),
                   AssetRegistryUnknownVersion, {"poolId": 1, "version": 3})
    assets.refuses(b, lambda f: f.reportServicing(1, 2, 0, STATUS_ROOT, counts_1, statuses_1),
                   AssetRegistryPeriodNotIncreasing, {"period": 0, "last": 0})
    assets.refuses(b, lambda f: f.reportServicing(1, 2, 1, STATUS_ROOT, counts_1, statuses_1 + b"\x00"),
                   AssetRegistryTooManyStatuses, {"poolId": 1, "period": 1, "given": 4, "remaining": 3})
    assert assets.read(lambda f: f.statusesProgress(1)) == (0, 0, 0)
    receipt = assets.send(b, lambda f: f.reportServicing(1, 2, 1, STATUS_ROOT, counts_1, statuses_1))
    assert assets.events(receipt, "ServicingReported") == [
        {"poolId": 1, "version": 2, "period": 1, "statusRoot": STATUS_ROOT, "statusCounts": counts_1}]
    assert assets.events(receipt, "LoanStatusesReported") == [
        {"poolId": 1, "period": 1, "offset": 0, "statuses": statuses_1}]
    assert assets.read(lambda f: f.statusesProgress(1)) == (1, 3, 3)
    assets.refuses(b, lambda f: f.publishStatuses(1, 1, 3, b"\x11"), AssetRegistryTooManyStatuses,
                   {"poolId": 1, "period": 1, "given": 1, "remaining": 0})
    # Period 2's statuses in two chunks: the first with the report, the rest after it.
    receipt = assets.send(b, lambda f: f.reportServicing(1, 2, 2, STATUS_ROOT, counts_2, statuses_2[:1]))
    assert assets.events(receipt, "ServicingReported")[0]["statusCounts"] == counts_2
    assert assets.read(lambda f: f.statusesProgress(1)) == (2, 1, 3)
    for bank, period, offset, chunk, error, arguments in (
            (a, 2, 1, statuses_2[1:], AssetRegistryNotCustodian, {"poolId": 1, "account": a.address}),
            (b, 1, 1, statuses_2[1:], AssetRegistryStatusesOffsetMismatch,  # an earlier period is closed
             {"poolId": 1, "period": 1, "offset": 1, "latestPeriod": 2, "published": 1}),
            (b, 2, 0, statuses_2, AssetRegistryStatusesOffsetMismatch,  # the first chunk again
             {"poolId": 1, "period": 2, "offset": 0, "latestPeriod": 2, "published": 1}),
            (b, 2, 2, statuses_2[2:], AssetRegistryStatusesOffsetMismatch,
             {"poolId": 1, "period": 2, "offset": 2, "latestPeriod": 2, "published": 1}),
            (b, 2, 1, statuses_2[1:] + b"\x11", AssetRegistryTooManyStatuses,
             {"poolId": 1, "period": 2, "given": 3, "remaining": 2})):
        assets.refuses(bank, lambda f, p=period, o=offset, c=chunk: f.publishStatuses(1, p, o, c), error, arguments)
    receipt = assets.send(b, lambda f: f.publishStatuses(1, 2, 1, statuses_2[1:]))
    assert assets.events(receipt, "LoanStatusesReported") == [
        {"poolId": 1, "period": 2, "offset": 1, "statuses": statuses_2[1:]}]
    assert assets.read(lambda f: f.statusesProgress(1)) == (2, 3, 3)
    assert assets.read(lambda f: f.pool(1))[5] == 2
    assets.refuses(b, lambda f: f.reportServicing(1, 2, 2, STATUS_ROOT, counts_2, statuses_2),
                   AssetRegistryPeriodNotIncreasing, {"period": 2, "last": 2})
    assets.refuses(b, lambda f: f.reportServicing(1, 2, 1, STATUS_ROOT, counts_2, statuses_2),
                   AssetRegistryPeriodNotIncreasing, {"period": 1, "last": 2})

    # -- attestation ------------------------------------------------------------------------------------------
    assets.refuses(b, lambda f: f.attest(1, 2, REPORT), AssetRegistryNotAuditor, {"account": b.address})
    assets.refuses(auditor, lambda f: f.attest(1, 3, REPORT), AssetRegistryUnknownVersion,
                   {"poolId": 1, "version": 3})
    assets.refuses(auditor, lambda f: f.attest(9, 1, REPORT), AssetRegistryUnknownPool, {"poolId": 9})
    receipt = assets.send(auditor, lambda f: f.attest(1, 2, REPORT))
    assert assets.events(receipt, "AuditorAttested") == [
        {"poolId": 1, "version": 2, "auditorMemberId": 4, "reportHash": REPORT}]


def test_custody_follows_signer_rotation_and_stops_on_suspension(consortium: Consortium, assets: Assets) -> None:
    gov = Governance(consortium)
    a, b, _c = consortium.banks
    assets.send(a, lambda f: f.registerPool(METADATA))
    tree = StandardMerkleTree.of(loans(range(2)), ENCODING)
    ids = [loan_id(0), loan_id(1)]

    a2 = gov.newcomer()
    gov.rotate(a, a2)
    assets.refuses(a, lambda f: f.anchorVersion(1, tree.root, 2, 1, ids), AssetRegistryNotCustodian,
                   {"poolId": 1, "account": a.address})
    receipt = assets.send(a2, lambda f: f.anchorVersion(1, tree.root, 2, 1, ids))
    assert assets.events(receipt, "VersionAnchored")[0]["version"] == 1
    assert assets.read(lambda f: f.version(1, 1))[4] == 1  # anchored by member 1, same as before rotation

    gov.suspend(1)
    assets.refuses(a2, lambda f: f.anchorVersion(1, tree.root, 2, 1, ids), AssetRegistryNotCustodian,
                   {"poolId": 1, "account": a2.address})
    assets.refuses(a2, lambda f: f.registerPool(METADATA), AssetRegistryNotMember, {"account": a2.address})
    assets.refuses(b, lambda f: f.acceptTransfer(1), AssetRegistryNoPendingTransfer, {"poolId": 1})


def test_register_pool_refuses_same_metadata_hash_of_same_member(consortium: Consortium, assets: Assets) -> None:
    """A registration resent after a crash (its first copy pending) or by a second process of the bank cannot
    make a second pool: the member's first pool with that hash is named instead, whichever signer asks."""
    gov = Governance(consortium)
    a, b, _c = consortium.banks
    other = Web3.keccak(text="pool metadata v2")
    assert assets.read(lambda f: f.poolIdOf(1, METADATA)) == 0
    assets.send(a, lambda f: f.registerPool(METADATA))
    assets.refuses(a, lambda f: f.registerPool(METADATA), AssetRegistryPoolAlreadyRegistered, {"poolId": 1})

    receipt = assets.send(b, lambda f: f.registerPool(METADATA))  # another member, the same hash
    assert assets.events(receipt, "PoolRegistered") == [
        {"poolId": 2, "originatorMemberId": 2, "metadataHash": METADATA}]
    receipt = assets.send(a, lambda f: f.registerPool(other))  # the same member, another hash
    assert assets.events(receipt, "PoolRegistered")[0]["poolId"] == 3

    a2 = gov.newcomer()
    gov.rotate(a, a2)
    assets.refuses(a2, lambda f: f.registerPool(METADATA), AssetRegistryPoolAlreadyRegistered, {"poolId": 1})
    assets.send(a2, lambda f: f.proposeTransfer(1, b.address))
    assets.send(b, lambda f: f.acceptTransfer(1))  # custody moves; the pool stays the one A registered
    assets.refuses(a2, lambda f: f.registerPool(METADATA), AssetRegistryPoolAlreadyRegistered, {"poolId": 1})
    assets.refuses(b, lambda f: f.registerPool(METADATA), AssetRegistryPoolAlreadyRegistered, {"poolId": 2})
    lookups = ((1, METADATA), (2, METADATA), (1, other), (2, other), (3, METADATA))
    assert [assets.reader.call(assets.contract.functions.poolIdOf(member, hash_)) for member, hash_ in lookups] == [
        1, 2, 3, 0, 0]


@pytest.mark.parametrize("case", ["not_custodian", "zero_root", "too_many_ids", "not_pending", "not_auditor",
                                  "publish_offset", "publish_not_custodian", "already_registered"])
def test_mined_call_reverts_on_chain(consortium: Consortium, assets: Assets, case: str) -> None:
    """Sent past the gas estimate, the contract itself refuses, and nothing changes."""
    a, b, _c = consortium.banks
    assets.send(a, lambda f: f.registerPool(METADATA))
    root, ids = Web3.keccak(text="root"), [loan_id(0)]
    if case.startswith("publish"):
        assets.send(a, lambda f: f.anchorVersion(1, root, 3, 1, ids))
    sender, function, error, arguments = {
        "not_custodian": (b, assets.fn(b).anchorVersion(1, root, 1, 1, ids), AssetRegistryNotCustodian,
                          {"poolId": 1, "account": b.address}),
        "zero_root": (a, assets.fn(a).anchorVersion(1, ZERO32, 1, 1, ids), AssetRegistryZeroRoot, {}),
        "too_many_ids": (a, assets.fn(a).anchorVersion(1, root, 0, 1, ids), AssetRegistryTooManyLoanIds,
                         {"poolId": 1, "version": 1, "given": 1, "remaining": 0}),
        "publish_offset": (a, assets.fn(a).publishLoanIds(1, 1, 0, ids), AssetRegistryLoanIdsOffsetMismatch,
                           {"poolId": 1, "version": 1, "offset": 0, "published": 1}),
        "publish_not_custodian": (b, assets.fn(b).publishLoanIds(1, 1, 1, ids), AssetRegistryNotCustodian,
                                  {"poolId": 1, "account": b.address}),
        "not_pending": (b, assets.fn(b).acceptTransfer(1), AssetRegistryNoPendingTransfer, {"poolId": 1}),
        "not_auditor": (a, assets.fn(a).attest(1, 1, REPORT), AssetRegistryNotAuditor, {"account": a.address}),
        "already_registered": (a, assets.fn(a).registerPool(METADATA), AssetRegistryPoolAlreadyRegistered,
                               {"poolId": 1}),
    }[case]
    before = assets.snapshot()
    raised = expect_mined_revert(sender, lambda: sender.client.transact(function, gas=MINED_GAS))
    assert type(raised) is error
    assert raised.arguments == arguments
    assert assets.snapshot() == before


def test_publish_loan_ids_in_chunks_until_complete(consortium: Consortium, assets: Assets) -> None:
    gov = Governance(consortium)
    a, b, _c = consortium.banks
    auditor = gov.newcomer()
    gov.admit(auditor, MemberRole.auditor)
    assets.send(a, lambda f: f.registerPool(METADATA))
    tree = StandardMerkleTree.of(loans(range(7)), ENCODING)
    ids = [loan_id(i) for i in range(7)]
    receipt = assets.send(a, lambda f: f.anchorVersion(1, tree.root, 7, 10**6, ids[:3]))
    assert assets.events(receipt, "LoanIdsPublished") == [{"poolId": 1, "version": 1, "offset": 0,
                                                            "loanIds": ids[:3]}]
    assert assets.read(lambda f: f.loanIdsPublished(1, 1)) == 3

    # -- refusals while incomplete ------------------------------------------------------------------------------
    for outsider in (b, auditor):
        assets.refuses(outsider, lambda f: f.publishLoanIds(1, 1, 3, ids[3:]), AssetRegistryNotCustodian,
                       {"poolId": 1, "account": outsider.address})
    assets.refuses(a, lambda f: f.publishLoanIds(1, 1, 0, ids[:3]), AssetRegistryLoanIdsOffsetMismatch,
                   {"poolId": 1, "version": 1, "offset": 0, "published": 3})
    assets.refuses(a, lambda f: f.publishLoanIds(1, 1, 4, ids[4:]), AssetRegistryLoanIdsOffsetMismatch,
                   {"poolId": 1, "version": 1, "offset": 4, "published": 3})
    assets.refuses(a, lambda f: f.publishLoanIds(1, 1, 3, [*ids[3:], loan_id(99)]), AssetRegistryTooManyLoanIds,
                   {"poolId": 1, "version": 1, "given": 5, "remaining": 4})
    assets.refuses(a, lambda f: f.publishLoanIds(1, 2, 0, ids[3:]), AssetRegistryUnknownVersion,
                   {"poolId": 1, "version": 2})
    assets.refuses(a, lambda f: f.publishLoanIds(2, 1, 0, ids[3:]), AssetRegistryUnknownPool, {"poolId": 2})
    assets.refuses(a, lambda f: f.anchorVersion(1, tree.root, 1, 1, ids[:1]), AssetRegistryLoanIdsIncomplete,
                   {"poolId": 1, "version": 1, "published": 3, "loanCount": 7})
    # Statuses of a version whose ids are not all out could not be matched to its loans.
    assets.refuses(a, lambda f: f.reportServicing(1, 1, 1, STATUS_ROOT, [7, 0, 0, 0, 0, 0, 0], b"\x11" * 4),
                   AssetRegistryLoanIdsIncomplete, {"poolId": 1, "version": 1, "published": 3, "loanCount": 7})
    assets.send(a, lambda f: f.proposeTransfer(1, b.address))
    assets.refuses(b, lambda f: f.acceptTransfer(1), AssetRegistryLoanIdsIncomplete,
                   {"poolId": 1, "version": 1, "published": 3, "loanCount": 7})
    with pytest.raises(AssetRegistryUnknownVersion):
        assets.read(lambda f: f.loanIdsPublished(1, 2))

    # -- the rest, in two chunks ---------------------------------------------------------------------------------
    receipt = assets.send(a, lambda f: f.publishLoanIds(1, 1, 3, ids[3:5]))
    assert assets.events(receipt, "LoanIdsPublished") == [{"poolId": 1, "version": 1, "offset": 3,
                                                            "loanIds": ids[3:5]}]
    assets.send(a, lambda f: f.publishLoanIds(1, 1, 5, []))  # an empty chunk changes nothing
    receipt = assets.send(a, lambda f: f.publishLoanIds(1, 1, 5, ids[5:]))
    assert assets.events(receipt, "LoanIdsPublished")[0]["offset"] == 5
    assert assets.read(lambda f: f.loanIdsPublished(1, 1)) == 7
    assets.refuses(a, lambda f: f.publishLoanIds(1, 1, 7, [loan_id(99)]), AssetRegistryTooManyLoanIds,
                   {"poolId": 1, "version": 1, "given": 1, "remaining": 0})
    published = [args for args in (dict(log["args"]) for log in assets.contract.events.LoanIdsPublished()
                                   .get_logs(from_block=0, argument_filters={"poolId": 1, "version": 1}))]
    assert [i for chunk in published for i in chunk["loanIds"]] == ids

    # -- complete: the next version (ids to follow) and the hand-over go through ------------------------------
    second = StandardMerkleTree.of(loans(range(2)), ENCODING)
    receipt = assets.send(a, lambda f: f.anchorVersion(1, second.root, 2, 1, []))
    assert assets.events(receipt, "LoanIdsPublished") == [{"poolId": 1, "version": 2, "offset": 0, "loanIds": []}]
    assert assets.read(lambda f: f.loanIdsPublished(1, 2)) == 0
    assets.refuses(b, lambda f: f.acceptTransfer(1), AssetRegistryLoanIdsIncomplete,
                   {"poolId": 1, "version": 2, "published": 0, "loanCount": 2})
    assets.send(a, lambda f: f.publishLoanIds(1, 2, 0, ids[:2]))
    assets.send(b, lambda f: f.acceptTransfer(1))
    assert assets.read(lambda f: f.pool(1))[1] == 2


def test_anchor_gas_per_version_and_per_loan_id(consortium: Consortium, assets: Assets) -> None:
    a = consortium.banks[0]
    assets.send(a, lambda f: f.registerPool(METADATA))
    one = assets.send(a, lambda f: f.anchorVersion(1, Web3.keccak(text="root 1"), 1, 10**9, [loan_id(0)]))
    ids = [loan_id(i) for i in range(1000)]
    thousand = assets.send(a, lambda f: f.anchorVersion(1, Web3.keccak(text="root 1000"), 1000, 10**12, ids))
    assert assets.events(thousand, "LoanIdsPublished")[0]["loanIds"] == ids
    per_id = (thousand.gas_used - one.gas_used) / 999
    print(f"\nAssetRegistry.anchorVersion gas: 1 id {one.gas_used}, 1000 ids {thousand.gas_used}, "
          f"{per_id:.1f} per loan id")
    assert one.gas_used < 160_000
    assert 300 < per_id < 800


def test_publish_loan_ids_gas_per_chunk_and_per_loan_id(consortium: Consortium, assets: Assets) -> None:
    """A version of 8,001 ids: 1 with the anchor, then chunks of 1 and 4,000 (the node's default) ids."""
    a = consortium.banks[0]
    assets.send(a, lambda f: f.registerPool(METADATA))
    ids = [loan_id(i) for i in range(8_001)]
    assets.send(a, lambda f: f.anchorVersion(1, Web3.keccak(text="root"), len(ids), 10**12, ids[:1]))
    one = assets.send(a, lambda f: f.publishLoanIds(1, 1, 1, ids[1:2]))
    chunk = assets.send(a, lambda f: f.publishLoanIds(1, 1, 2, ids[2:4_002]))
    last = assets.send(a, lambda f: f.publishLoanIds(1, 1, 4_002, ids[4_002:]))
    per_id = (chunk.gas_used - one.gas_used) / 3_999
    overall = chunk.gas_used / 4_000
    print(f"\nAssetRegistry.publishLoanIds gas: 1 id {one.gas_used}, 4000 ids {chunk.gas_used}, {per_id:.1f} "
          f"per loan id, {overall:.1f} per id all in")
    assert last.gas_used == pytest.approx(chunk.gas_used, rel=0.01)
    assert one.gas_used < 60_000
    assert 300 < per_id < 800 and overall < 800
    assert assets.read(lambda f: f.loanIdsPublished(1, 1)) == len(ids)


@pytest.mark.parametrize("loan_count", [10_000, 100_000])
def test_report_servicing_gas_with_every_loans_status(consortium: Consortium, assets: Assets,
                                                     loan_count: int) -> None:
    """The cost of carrying every loan's status (4 bits) in the report, against a report of the root alone (the
    same call for a one-loan version, whose one status byte costs next to nothing)."""
    a = consortium.banks[0]
    assets.send(a, lambda f: f.registerPool(METADATA))
    ids = [loan_id(i) for i in range(loan_count)]
    assets.send(a, lambda f: f.anchorVersion(1, Web3.keccak(text="one"), 1, 1, ids[:1]))
    assets.send(a, lambda f: f.anchorVersion(1, Web3.keccak(text="all"), loan_count, 1, ids[:4_000]))
    for offset in range(4_000, loan_count, 4_000):
        assets.send(a, lambda f, offset=offset: f.publishLoanIds(1, 2, offset, ids[offset:offset + 4_000]))
    counts = [loan_count, 0, 0, 0, 0, 0, 0]
    first = assets.send(a, lambda f: f.reportServicing(1, 1, 1, STATUS_ROOT, [1, 0, 0, 0, 0, 0, 0], b"\x10"))
    root_only = assets.send(a, lambda f: f.reportServicing(1, 1, 2, STATUS_ROOT, [1, 0, 0, 0, 0, 0, 0], b"\x10"))
    mixed = bytes((1 + i % 7) << 4 | (1 + (i + 3) % 7) for i in range(loan_count // 2))  # no zero byte
    every = assets.send(a, lambda f: f.reportServicing(1, 2, 3, STATUS_ROOT, counts, mixed))
    per_loan = (every.gas_used - root_only.gas_used) / loan_count
    print(f"\nAssetRegistry.reportServicing gas: a pool's first report {first.gas_used}, later ones: root alone "
          f"{root_only.gas_used}, {loan_count} loans' statuses {every.gas_used}, {per_loan:.1f} per loan")
    assert root_only.gas_used < 65_000 < first.gas_used < 85_000  # the progress slot's first write
    assert 8 < per_loan < 20  # calldata 8 + event data 4 per loan (half a byte each), and memory


def test_a_removed_custodians_pool_passes_to_the_successor_the_members_vote_for(consortium: Consortium,
                                                                                assets: Assets) -> None:
    """Before: a pool whose custodian was removed could never be anchored, reported on or handed over again."""
    gov = Governance(consortium)
    a, b, c = consortium.banks
    assets.send(a, lambda f: f.registerPool(METADATA))
    assets.refuses(b, lambda f: f.proposeSuccessor(1, b.address), AssetRegistryCustodianNotRemoved,
                   {"poolId": 1, "custodianMemberId": 1})

    gov.remove(1)  # two voting members left: two votes needed
    outsider = gov.newcomer()
    assets.refuses(a, lambda f: f.proposeSuccessor(1, b.address), AssetRegistryNotMember, {"account": a.address})
    assets.refuses(b, lambda f: f.proposeSuccessor(1, outsider.address), AssetRegistryInvalidCustodian,
                   {"account": outsider.address})
    assets.refuses(b, lambda f: f.proposeSuccessor(1, a.address), AssetRegistryInvalidCustodian,
                   {"account": a.address})
    assets.refuses(b, lambda f: f.voteSuccessor(1, 1), AssetRegistryNoSuccession, {"poolId": 1, "round": 1})

    proposed = assets.send(b, lambda f: f.proposeSuccessor(1, b.address))
    assert assets.events(proposed, "SuccessorProposed") == [
        {"poolId": 1, "round": 1, "successorMemberId": 2, "proposerMemberId": 2}]
    assert assets.events(proposed, "SuccessorVoted") == [{"poolId": 1, "round": 1, "voterMemberId": 2}]
    assert assets.read(lambda f: f.succession(1)) == [(2, 1), 1]
    assert assets.read(lambda f: f.pool(1))[1] == 1  # one vote of two: still the removed custodian
    assets.refuses(b, lambda f: f.voteSuccessor(1, 1), AssetRegistryAlreadyVotedSuccessor,
                   {"poolId": 1, "round": 1, "memberId": 2})
    assets.refuses(c, lambda f: f.voteSuccessor(1, 2), AssetRegistryNoSuccession, {"poolId": 1, "round": 2})

    # C proposes itself instead: round 2 replaces round 1, whose vote no longer counts.
    assets.send(c, lambda f: f.proposeSuccessor(1, c.address))
    assert assets.read(lambda f: f.succession(1)) == [(3, 2), 1]
    assets.refuses(c, lambda f: f.voteSuccessor(1, 1), AssetRegistryNoSuccession, {"poolId": 1, "round": 1})
    decided = assets.send(b, lambda f: f.voteSuccessor(1, 2))
    assert assets.events(decided, "CustodySucceeded") == [{"poolId": 1, "fromMemberId": 1, "toMemberId": 3}]
    assert assets.read(lambda f: f.pool(1))[1:3] == (3, 0)  # custodian C, no transfer pending
    assert assets.read(lambda f: f.succession(1)) == [(0, 2), 0]
    assets.refuses(b, lambda f: f.voteSuccessor(1, 2), AssetRegistryCustodianNotRemoved,
                   {"poolId": 1, "custodianMemberId": 3})

    tree = StandardMerkleTree.of(loans(range(2)), ENCODING)
    anchored = assets.send(c, lambda f: f.anchorVersion(1, tree.root, 2, 1, [loan_id(0), loan_id(1)]))
    assert assets.events(anchored, "VersionAnchored")[0]["version"] == 1  # the successor acts as custodian


def test_succession_counts_only_votes_of_members_still_active(consortium: Consortium, assets: Assets) -> None:
    gov = Governance(consortium)
    a, b, c = consortium.banks
    d = gov.newcomer()
    gov.admit(d)  # member 4
    assets.send(a, lambda f: f.registerPool(METADATA))
    gov.remove(1)  # B, C, D vote: two votes needed
    assets.send(b, lambda f: f.proposeSuccessor(1, d.address))
    gov.suspend(2)  # B's vote stops counting
    assert assets.read(lambda f: f.succession(1)) == [(4, 1), 0]
    assets.send(c, lambda f: f.voteSuccessor(1, 1))  # C and D are the active voters; two votes are needed
    assert assets.read(lambda f: f.pool(1))[1] == 1
    decided = assets.send(d, lambda f: f.voteSuccessor(1, 1))
    assert assets.events(decided, "CustodySucceeded") == [{"poolId": 1, "fromMemberId": 1, "toMemberId": 4}]
