"""Contract tests of AllianceRegistry on a real anvil: every governance path and every custom error.

Each test runs on a fresh evm snapshot (the `rpc_url` fixture) and deploys its own registry, so member
ids are 1..N in founder order (Bank A = 1, Bank B = 2, ...) and proposal ids count from 1. Reverts are
asserted by exception class and decoded arguments, then the registry's state is compared with a
snapshot taken before the call. Most calls go through the gas estimate (which already raises the
decoded error); the `mined` tests send with a fixed gas limit so the contract itself must refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_typing import HexStr
from web3 import Web3
from web3.contract.contract import ContractFunction, ContractFunctions

from node.chain.artifacts import load_artifact
from node.chain.deployment import DEFAULT_PROPOSAL_LIFETIME_S, deploy_consortium
from node.chain.errors import (
    AllianceRegistryAccountInUse,
    AllianceRegistryAlreadyVoted,
    AllianceRegistryBankCodeInUse,
    AllianceRegistryEmptyBankCode,
    AllianceRegistryEmptyEnvelope,
    AllianceRegistryEmptyName,
    AllianceRegistryEnvelopeTooLarge,
    AllianceRegistryInvalidLifetime,
    AllianceRegistryInvalidMemberStatus,
    AllianceRegistryInvalidQuorum,
    AllianceRegistryInvalidRole,
    AllianceRegistryLastVotingMember,
    AllianceRegistryNoFoundingMember,
    AllianceRegistryNotActive,
    AllianceRegistryNotActiveMember,
    AllianceRegistryProposalAlreadyExecuted,
    AllianceRegistryProposalExpired,
    AllianceRegistryQuorumNotMet,
    AllianceRegistryUnknownEpoch,
    AllianceRegistryUnknownMember,
    AllianceRegistryUnknownProposal,
    AllianceRegistryZeroAddress,
    ChainError,
    ContractRevert,
    UnknownRevert,
)
from node.chain.registry import FoundingMember, Member, MemberRole, MemberStatus, ProposalKind
from tests.conftest import Bank, Consortium
from tests.contracts.registry_helpers import (
    ENVELOPE,
    MINED_GAS,
    ZERO_ADDRESS,
    Governance,
    MinedCase,
    expect_mined_revert,
    fixed_gas_tx,
    founders_of,
    key,
    letter_banks,
)

M, AUDITOR, OBSERVER = MemberRole.member, MemberRole.auditor, MemberRole.observer
LIFETIME = 3600
UNUSED_ACCOUNT = Web3.to_checksum_address("0x" + "ab" * 20)


@pytest.fixture
def gov(consortium: Consortium) -> Governance:
    """Banks A, B, C (members 1, 2, 3), quorum 50%: two votes pass a proposal."""
    return Governance(consortium)


def assert_active_accounts(gov: Governance, expected: list[Bank]) -> None:
    """activeAccounts() is exactly `expected`, and agrees with the members' own statuses."""
    accounts = sorted(gov.reader.active_accounts())
    assert accounts == sorted(b.address for b in expected)
    assert accounts == sorted(m.account for m in gov.reader.members() if m.status is MemberStatus.active)


# ------------------------------------------------------------------------------------------------------
# Deployment
# ------------------------------------------------------------------------------------------------------

def test_deploy_registers_founders_and_parameters(gov: Governance) -> None:
    a, b, c = gov.banks
    w3 = gov.reader.chain.w3
    receipt = w3.eth.get_transaction_receipt(
        HexStr(gov.consortium.deployment.contracts["AllianceRegistry"].tx_hash))
    deployed_at = int(w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    assert gov.reader.members() == [
        Member(i + 1, bank.address, M, MemberStatus.active, deployed_at, key(i + 1), bank.name, bank.code)
        for i, bank in enumerate((a, b, c))
    ]
    assert [gov.reader.member_id_of(bank.address) for bank in (a, b, c)] == [1, 2, 3]
    assert all(gov.reader.is_active_member(bank.address) for bank in (a, b, c))
    assert all(gov.role_of(bank.address) is M for bank in (a, b, c))
    assert gov.active_voting_members() == 3
    assert gov.reader.required_votes() == 2
    assert gov.call(gov.fn.quorumPercent()) == 50
    assert gov.call(gov.fn.proposalLifetime()) == DEFAULT_PROPOSAL_LIFETIME_S
    assert gov.reader.current_key_epoch() == 1
    assert gov.reader.proposal_count() == 0
    assert_active_accounts(gov, [a, b, c])
    assert gov.events(receipt, "MemberAdmitted") == [
        {"memberId": i + 1, "account": bank.address, "role": M, "name": bank.name, "bankCode": bank.code}
        for i, bank in enumerate((a, b, c))
    ]
    assert gov.events(receipt, "EncryptionKeySet") == [{"memberId": i, "key": key(i)} for i in (1, 2, 3)]


def test_deploy_registers_auditor_and_observer_founders(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M, AUDITOR, OBSERVER))
    member, auditor, observer = gov.banks
    assert [gov.role_of(bank.address) for bank in gov.banks] == [M, AUDITOR, OBSERVER]
    assert [gov.reader.is_active_member(bank.address) for bank in gov.banks] == [True, False, False]
    assert gov.active_voting_members() == 1
    assert gov.reader.required_votes() == 1
    assert_active_accounts(gov, [member, auditor, observer])


# ------------------------------------------------------------------------------------------------------
# Admission
# ------------------------------------------------------------------------------------------------------

def test_admit_member_after_quorum(gov: Governance) -> None:
    a, b, _ = gov.banks
    d = gov.newcomer()
    outcome = gov.registry(a).propose_admission(d.address, M, d.name, d.code, key(0xD0))
    assert (outcome.proposal_id, outcome.executed) == (1, False)
    proposal = gov.reader.proposal(1)
    assert (proposal.kind, proposal.member_id, proposal.account, proposal.role, proposal.encryption_key) == (
        ProposalKind.admit, 0, d.address, M, key(0xD0))
    assert (proposal.proposer, proposal.votes, proposal.executed, proposal.name, proposal.bank_code) == (
        a.address, 1, False, d.name, d.code)
    assert proposal.expires_at == proposal.created_at + DEFAULT_PROPOSAL_LIFETIME_S
    assert gov.events(outcome.receipt, "ProposalCreated") == [{
        "proposalId": 1, "kind": ProposalKind.admit, "memberId": 0, "proposer": a.address,
        "account": d.address, "expiresAt": proposal.expires_at}]
    assert gov.events(outcome.receipt, "VoteCast") == [
        {"proposalId": 1, "voter": a.address, "votes": 1, "required": 2}]
    assert (gov.reader.has_voted(1, a.address), gov.reader.has_voted(1, b.address)) == (True, False)
    assert gov.reader.member_id_of(d.address) == 0
    assert gov.reader.member_count() == 3

    outcome = gov.registry(b).vote(1)
    assert outcome.executed
    assert gov.events(outcome.receipt, "VoteCast") == [
        {"proposalId": 1, "voter": b.address, "votes": 2, "required": 2}]
    assert gov.events(outcome.receipt, "MemberAdmitted") == [
        {"memberId": 4, "account": d.address, "role": M, "name": d.name, "bankCode": d.code}]
    assert gov.events(outcome.receipt, "EncryptionKeySet") == [{"memberId": 4, "key": key(0xD0)}]
    assert gov.events(outcome.receipt, "ProposalExecuted") == [
        {"proposalId": 1, "kind": ProposalKind.admit, "memberId": 4}]
    admitted_at = int(gov.reader.chain.w3.eth.get_block(outcome.receipt.block_number)["timestamp"])
    assert gov.reader.member(4) == Member(4, d.address, M, MemberStatus.active, admitted_at, key(0xD0),
                                          d.name, d.code)
    proposal = gov.reader.proposal(1)
    assert (proposal.member_id, proposal.votes, proposal.executed) == (4, 2, True)
    assert gov.reader.member_id_of(d.address) == 4
    assert gov.reader.is_active_member(d.address)
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (4, 3)
    assert_active_accounts(gov, [*gov.banks, d])

    # The newcomer now governs like a founder.
    assert gov.registry(d).vote(gov.open_proposal()).proposal_id == 2
    assert gov.reader.proposal(2).votes == 2


def test_admit_auditor_and_observer_without_voting_rights(gov: Governance) -> None:
    auditor, observer = gov.newcomer(), gov.newcomer()
    assert gov.admit(auditor, AUDITOR) == 4
    assert gov.admit(observer, OBSERVER) == 5
    assert [gov.reader.member(i).role for i in (4, 5)] == [AUDITOR, OBSERVER]
    assert (gov.role_of(auditor.address), gov.role_of(observer.address)) == (AUDITOR, OBSERVER)
    assert not gov.reader.is_active_member(auditor.address)
    assert not gov.reader.is_active_member(observer.address)
    # Only `Member`s count toward the quorum.
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (3, 2)
    assert_active_accounts(gov, gov.banks)
    # Refusals to propose and vote are covered by test_governance_functions_refuse_non_member.


def test_propose_executes_at_creation_when_one_vote_suffices(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M, AUDITOR))
    newcomer = gov.newcomer()
    outcome = gov.registry(gov.banks[0]).propose_admission(newcomer.address, OBSERVER, newcomer.name,
                                                          newcomer.code, key(7))
    assert outcome.executed
    assert gov.events(outcome.receipt, "VoteCast") == [
        {"proposalId": 1, "voter": gov.banks[0].address, "votes": 1, "required": 1}]
    assert gov.events(outcome.receipt, "ProposalExecuted") == [
        {"proposalId": 1, "kind": ProposalKind.admit, "memberId": 3}]
    proposal = gov.reader.proposal(1)
    assert (proposal.votes, proposal.executed, proposal.member_id) == (1, True, 3)
    assert gov.role_of(newcomer.address) is OBSERVER


# ------------------------------------------------------------------------------------------------------
# Quorum
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("members", "quorum", "required"), [
    (1, 50, 1), (2, 50, 2), (3, 50, 2), (4, 50, 3), (5, 50, 3),
    (1, 66, 1), (2, 66, 2), (3, 66, 2), (4, 66, 3), (5, 66, 4),
    (5, 1, 1), (4, 75, 4), (3, 99, 3),
])
def test_vote_executes_exactly_at_required_votes(
        rpc_url: str, members: int, quorum: int, required: int) -> None:
    # "More than quorum% of the active voting members": required - 1 votes must not pass, required must.
    assert (required - 1) * 100 <= members * quorum < required * 100
    gov = Governance.deploy(rpc_url, (M,) * members, quorum_percent=quorum)
    assert gov.call(gov.fn.quorumPercent()) == quorum
    assert gov.reader.required_votes() == required
    newcomer = gov.newcomer()
    outcome = gov.registry(gov.banks[0]).propose_admission(newcomer.address, OBSERVER, newcomer.name,
                                                          newcomer.code, key(9))
    assert outcome.executed is (required == 1)
    for votes, voter in enumerate(gov.banks[1:required], start=2):
        with pytest.raises(AllianceRegistryQuorumNotMet) as err:
            gov.send(voter, gov.fn.execute(outcome.proposal_id))
        assert err.value.arguments == {"proposalId": 1, "votes": votes - 1, "required": required}
        outcome = gov.registry(voter).vote(outcome.proposal_id)
        assert outcome.executed is (votes == required)
        assert gov.events(outcome.receipt, "VoteCast") == [
            {"proposalId": 1, "voter": voter.address, "votes": votes, "required": required}]
    proposal = gov.reader.proposal(1)
    assert (proposal.votes, proposal.executed) == (required, True)
    assert gov.role_of(newcomer.address) is OBSERVER


def test_execute_proposal_after_active_count_dropped(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 4)
    a, b, c, d = gov.banks
    proposal_id = gov.open_proposal(a)
    gov.registry(b).vote(proposal_id)
    with pytest.raises(AllianceRegistryQuorumNotMet) as err:
        gov.send(c, gov.fn.execute(proposal_id))
    assert err.value.arguments == {"proposalId": proposal_id, "votes": 2, "required": 3}

    gov.remove(4)
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (3, 2)
    # Nobody voted again: the two votes already cast now exceed half of the three remaining members.
    outcome = gov.registry(c).execute(proposal_id)
    assert outcome.executed
    assert gov.events(outcome.receipt, "ProposalExecuted") == [
        {"proposalId": proposal_id, "kind": ProposalKind.admit, "memberId": 5}]
    assert gov.reader.proposal(proposal_id).votes == 2
    assert gov.reader.member(5).status is MemberStatus.active
    with pytest.raises(AllianceRegistryProposalAlreadyExecuted) as again:
        gov.send(c, gov.fn.execute(proposal_id))
    assert again.value.arguments == {"proposalId": proposal_id}
    assert not gov.reader.is_active_member(d.address)



@pytest.mark.parametrize("deactivate", ["suspend", "remove"])
def test_execute_refuses_quorum_made_of_deactivated_members_votes(rpc_url: str, deactivate: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 4)
    a, b, c, _ = gov.banks
    proposal_id = gov.open_proposal(a)
    gov.registry(b).vote(proposal_id)
    getattr(gov, deactivate)(2)
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (3, 2)
    before = gov.snapshot()
    # Two votes were cast, but B's no longer counts: only A of the three active Members is for it.
    with pytest.raises(AllianceRegistryQuorumNotMet) as err:
        gov.send(c, gov.fn.execute(proposal_id))
    assert err.value.arguments == {"proposalId": proposal_id, "votes": 1, "required": 2}
    assert gov.snapshot() == before
    outcome = gov.registry(c).vote(proposal_id)
    assert outcome.executed
    assert gov.events(outcome.receipt, "VoteCast") == [
        {"proposalId": proposal_id, "voter": c.address, "votes": 2, "required": 2}]


def test_vote_does_not_execute_on_deactivated_members_votes(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 5)
    a, b, c, d, _ = gov.banks
    proposal_id = gov.open_proposal(a)
    gov.registry(b).vote(proposal_id)
    gov.remove(2)
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (4, 3)
    # C's is the third vote cast but only the second of an active Member: the proposal stays open.
    outcome = gov.registry(c).vote(proposal_id)
    assert not outcome.executed
    assert gov.events(outcome.receipt, "VoteCast") == [
        {"proposalId": proposal_id, "voter": c.address, "votes": 2, "required": 3}]
    assert gov.reader.proposal(proposal_id).votes == 3
    assert gov.registry(d).vote(proposal_id).executed


def test_vote_counts_again_member_reinstated_after_voting(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 4)
    a, b, c, _ = gov.banks
    proposal_id = gov.open_proposal(a)
    gov.registry(b).vote(proposal_id)
    gov.suspend(2)
    gov.reinstate(2)
    # B is active again: its vote counts, and it cannot vote a second time.
    with pytest.raises(AllianceRegistryAlreadyVoted):
        gov.send(b, gov.fn.vote(proposal_id))
    assert gov.registry(c).vote(proposal_id).executed



def test_votes_of_member_ids_past_255_are_counted(rpc_url: str) -> None:
    """Votes are a bitmap of 256 member ids per word: ids 256 and 257 live in the second word."""
    gov = Governance.deploy(rpc_url, (M,))
    a = gov.banks[0]
    for i in range(254):  # observers 2..255, each admitted at once by A's single vote
        address = Web3.to_checksum_address((0xAB00 + i).to_bytes(20, "big"))
        assert gov.registry(a).propose_admission(address, OBSERVER, f"Observer {i}", f"OBS-{i}", key(1)).executed
    b, c = gov.newcomer(), gov.newcomer()
    assert gov.admit(b) == 256
    assert gov.admit(c) == 257
    proposal_id = gov.open_proposal(c)
    assert gov.reader.has_voted(proposal_id, c.address)
    gov.suspend(257)
    # C's vote no longer counts: B's alone is one of the two needed.
    outcome = gov.registry(b).vote(proposal_id)
    assert not outcome.executed
    assert gov.events(outcome.receipt, "VoteCast") == [
        {"proposalId": proposal_id, "voter": b.address, "votes": 1, "required": 2}]
    assert gov.registry(a).vote(proposal_id).executed


# ------------------------------------------------------------------------------------------------------
# Suspension, reinstatement, removal
# ------------------------------------------------------------------------------------------------------

def test_suspend_member_after_quorum(gov: Governance) -> None:
    a, b, c = gov.banks
    outcome = gov.registry(a).propose_suspension(3)
    proposal = gov.reader.proposal(1)
    assert (proposal.kind, proposal.member_id, proposal.account, proposal.role) == (
        ProposalKind.suspend, 3, c.address, MemberRole.none)
    assert (proposal.encryption_key, proposal.name, proposal.bank_code) == (bytes(32), "", "")
    assert gov.events(outcome.receipt, "ProposalCreated") == [{
        "proposalId": 1, "kind": ProposalKind.suspend, "memberId": 3, "proposer": a.address,
        "account": c.address, "expiresAt": proposal.expires_at}]

    outcome = gov.registry(b).vote(1)
    assert outcome.executed
    assert gov.events(outcome.receipt, "MemberSuspended") == [{"memberId": 3, "account": c.address}]
    assert gov.events(outcome.receipt, "ProposalExecuted") == [
        {"proposalId": 1, "kind": ProposalKind.suspend, "memberId": 3}]
    assert gov.reader.member(3).status is MemberStatus.suspended
    assert gov.reader.member_id_of(c.address) == 3
    assert not gov.reader.is_active_member(c.address)
    assert gov.role_of(c.address) is MemberRole.none
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (2, 2)
    assert_active_accounts(gov, [a, b])


def test_reinstate_suspended_member(gov: Governance) -> None:
    a, b, c = gov.banks
    gov.suspend(3)
    outcome = gov.reinstate(3)
    assert gov.events(outcome.receipt, "MemberReinstated") == [{"memberId": 3, "account": c.address}]
    assert gov.events(outcome.receipt, "ProposalExecuted") == [
        {"proposalId": 2, "kind": ProposalKind.reinstate, "memberId": 3}]
    assert gov.reader.member(3).status is MemberStatus.active
    assert gov.role_of(c.address) is M
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (3, 2)
    assert_active_accounts(gov, [a, b, c])
    assert gov.registry(c).vote(gov.open_proposal(a)).executed


def test_remove_member_for_good(gov: Governance) -> None:
    a, b, c = gov.banks
    outcome = gov.remove(3)
    assert gov.events(outcome.receipt, "MemberRemoved") == [{"memberId": 3, "account": c.address}]
    assert gov.events(outcome.receipt, "ProposalExecuted") == [
        {"proposalId": 1, "kind": ProposalKind.remove, "memberId": 3}]
    removed = gov.reader.member(3)
    assert (removed.status, removed.account, removed.bank_code) == (MemberStatus.removed, c.address, c.code)
    # Unlike a rotated-away address, a removed member's address still resolves to its id.
    assert gov.reader.member_id_of(c.address) == 3
    assert gov.role_of(c.address) is MemberRole.none
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (2, 2)
    assert_active_accounts(gov, [a, b])
    # Finality (no reinstatement, account and bank code burnt) is asserted by the revert tests below.


def test_remove_suspended_member_counts_it_once(gov: Governance) -> None:
    a, b, _ = gov.banks
    gov.suspend(3)
    gov.remove(3)
    assert gov.reader.member(3).status is MemberStatus.removed
    # The suspension already uncounted it; removing must not decrement again.
    assert (gov.active_voting_members(), gov.reader.required_votes()) == (2, 2)
    assert_active_accounts(gov, [a, b])


def test_suspend_auditor_keeps_voting_count(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M, AUDITOR))
    member, auditor = gov.banks
    # With a single voter, each proposal executes at creation; an auditor is never the last voter.
    gov.suspend(2)
    assert gov.reader.member(2).status is MemberStatus.suspended
    assert gov.role_of(auditor.address) is MemberRole.none
    assert gov.active_voting_members() == 1
    assert_active_accounts(gov, [member])
    gov.reinstate(2)
    assert gov.role_of(auditor.address) is AUDITOR
    gov.remove(2)
    assert gov.active_voting_members() == 1
    assert_active_accounts(gov, [member])


# ------------------------------------------------------------------------------------------------------
# Signer rotation
# ------------------------------------------------------------------------------------------------------

def test_rotate_signer_new_key_acts_old_key_refused(gov: Governance) -> None:
    a, b, c = gov.banks
    b2 = gov.newcomer()
    outcome = gov.registry(a).propose_signer_rotation(2, b2.address)
    proposal = gov.reader.proposal(1)
    assert (proposal.kind, proposal.member_id, proposal.account) == (
        ProposalKind.rotate_signer, 2, b2.address)
    assert gov.events(outcome.receipt, "ProposalCreated")[0]["account"] == b2.address

    # The member votes for its own rotation with the key being replaced.
    outcome = gov.registry(b).vote(1)
    assert outcome.executed
    assert gov.events(outcome.receipt, "SignerRotated") == [
        {"memberId": 2, "oldAccount": b.address, "newAccount": b2.address}]
    assert gov.events(outcome.receipt, "ProposalExecuted") == [
        {"proposalId": 1, "kind": ProposalKind.rotate_signer, "memberId": 2}]
    rotated = gov.reader.member(2)
    assert (rotated.account, rotated.status, rotated.name, rotated.bank_code, rotated.encryption_key) == (
        b2.address, MemberStatus.active, b.name, b.code, key(2))
    assert (gov.reader.member_id_of(b.address), gov.reader.member_id_of(b2.address)) == (0, 2)
    assert (gov.reader.is_active_member(b.address), gov.reader.is_active_member(b2.address)) == (False, True)
    assert (gov.role_of(b.address), gov.role_of(b2.address)) == (MemberRole.none, M)
    assert gov.active_voting_members() == 3
    assert_active_accounts(gov, [a, b2, c])

    proposal_id = gov.open_proposal(b2)
    assert gov.reader.proposal(proposal_id).proposer == b2.address
    assert gov.reader.has_voted(proposal_id, b2.address)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryNotActiveMember) as err:
        gov.send(b, gov.fn.vote(proposal_id))
    assert err.value.arguments == {"account": b.address}
    with pytest.raises(AllianceRegistryNotActive) as not_active:
        gov.send(b, gov.fn.setEncryptionKey(key(0xBB)))
    assert not_active.value.arguments == {"account": b.address}
    assert gov.snapshot() == before


def test_rotate_signer_of_suspended_member_keeps_it_inactive(gov: Governance) -> None:
    a, b, c = gov.banks
    c2 = gov.newcomer()
    gov.suspend(3)
    gov.rotate(c, c2)
    assert (gov.reader.member(3).account, gov.reader.member(3).status) == (c2.address, MemberStatus.suspended)
    assert gov.reader.member_id_of(c2.address) == 3
    assert gov.role_of(c2.address) is MemberRole.none
    assert_active_accounts(gov, [a, b])
    gov.reinstate(3)
    assert_active_accounts(gov, [a, b, c2])
    assert gov.registry(c2).vote(gov.open_proposal(a)).executed


# ------------------------------------------------------------------------------------------------------
# Encryption keys and the alliance hashing key
# ------------------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------------------
# Which proposal made a member what it is: lastChangeOf, admissionOf
# ------------------------------------------------------------------------------------------------------

def test_last_change_of_is_the_latest_proposal_to_execute_on_the_member(rpc_url: str) -> None:
    """The proposal a node answers when a change it proposes again is refused as made already: the last to execute
    on the member, which is not the highest id when a vote comes late, and never the member's admission."""
    gov = Governance.deploy(rpc_url, (M,) * 4)
    a, b, c, d = gov.banks
    reader = gov.reader
    assert [reader.last_change_on(i) for i in (0, 1, 2, 3, 4, 5)] == [None] * 6  # founders; no member 0 or 5
    suspension = gov.registry(a).propose_suspension(4).proposal_id
    assert reader.last_change_on(4) is None  # proposed, not executed
    rotation = gov.rotate(d, gov.newcomer()).proposal_id
    assert (suspension, rotation, reader.last_change_on(4)) == (1, 2, 2)
    gov.registry(b).vote(suspension)
    assert gov.registry(c).vote(suspension).executed  # the older proposal executes after the newer one
    assert reader.last_change_on(4) == suspension
    reinstatement = gov.reinstate(4).proposal_id
    assert reader.last_change_on(4) == reinstatement == 3
    assert [reader.last_change_on(i) for i in (1, 2, 3)] == [None] * 3


def test_admission_of_names_the_proposal_that_admitted_an_account(gov: Governance) -> None:
    a, b, c = gov.banks
    reader = gov.reader
    assert [reader.admission_of(bank.address) for bank in (a, b, c)] == [None] * 3  # founders: no proposal
    d = gov.newcomer()
    proposal_id = gov.registry(a).propose_admission(d.address, M, d.name, d.code, key(0xD0)).proposal_id
    assert reader.admission_of(d.address) is None  # proposed, not executed
    assert gov.registry(b).vote(proposal_id).executed
    assert reader.admission_of(d.address) == proposal_id == 1
    assert reader.last_change_on(4) is None  # an admission is not a change of the member
    gov.banks.append(d)
    e = gov.newcomer()
    rotation = gov.rotate(d, e).proposal_id
    # The account admitted keeps its admission after its member moved away from it; the one moved to has none.
    assert (reader.admission_of(d.address), reader.admission_of(e.address), reader.last_change_on(4)) == (
        1, None, rotation)


def test_set_encryption_key_by_any_active_role(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M, AUDITOR, OBSERVER))
    for member_id, bank in enumerate(gov.banks, start=1):
        new_key = key(0x40 + member_id)
        receipt = gov.send(bank, gov.fn.setEncryptionKey(new_key))
        assert gov.events(receipt, "EncryptionKeySet") == [{"memberId": member_id, "key": new_key}]
        assert gov.reader.member(member_id).encryption_key == new_key


def test_start_key_epoch_records_epoch_and_starter(gov: Governance) -> None:
    a, b, _ = gov.banks
    assert a.client.call(gov.fn.startKeyEpoch(), sender=a.address) == 2
    receipt = gov.send(a, gov.fn.startKeyEpoch())
    assert gov.events(receipt, "KeyEpochStarted") == [{"epoch": 2, "startedBy": 1}]
    receipt = gov.send(b, gov.fn.startKeyEpoch())
    assert gov.events(receipt, "KeyEpochStarted") == [{"epoch": 3, "startedBy": 2}]
    assert gov.reader.current_key_epoch() == 3


def test_publish_key_envelope_emits_fields(gov: Governance) -> None:
    a, b, _ = gov.banks
    gov.send(a, gov.fn.startKeyEpoch())
    gov.suspend(3)
    before = gov.snapshot()
    # Any epoch up to the current one, to any registered member that is not removed (suspended included).
    for recipient, epoch in ((2, 1), (2, 2), (3, 2), (1, 2)):
        receipt = gov.send(b, gov.fn.publishKeyEnvelope(recipient, epoch, ENVELOPE))
        assert gov.events(receipt, "KeyEnvelopePublished") == [
            {"recipientMemberId": recipient, "epoch": epoch, "senderMemberId": 2, "envelope": ENVELOPE}]
    assert gov.snapshot() == before  # nothing is stored


# ------------------------------------------------------------------------------------------------------
# activeAccounts() through every transition
# ------------------------------------------------------------------------------------------------------

def test_active_accounts_follow_every_transition(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M, M, M, AUDITOR))
    a, b, c, e = gov.banks
    x, y, a2, b2 = (gov.newcomer() for _ in range(4))
    assert_active_accounts(gov, [a, b, c, e])
    gov.admit(x, M)
    assert_active_accounts(gov, [a, b, c, e, x])
    gov.admit(y, OBSERVER)
    assert_active_accounts(gov, [a, b, c, e, x, y])
    gov.suspend(2)
    assert_active_accounts(gov, [a, c, e, x, y])
    gov.rotate(b, b2)  # while suspended: stays out
    assert_active_accounts(gov, [a, c, e, x, y])
    gov.reinstate(2)
    assert_active_accounts(gov, [a, b2, c, e, x, y])
    gov.rotate(a, a2)  # while active: swapped in place
    assert_active_accounts(gov, [a2, b2, c, e, x, y])
    gov.suspend(4)
    assert_active_accounts(gov, [a2, b2, c, x, y])
    gov.remove(6)
    assert_active_accounts(gov, [a2, b2, c, x])
    gov.remove(5)
    assert_active_accounts(gov, [a2, b2, c])
    gov.remove(4)  # already suspended
    assert_active_accounts(gov, [a2, b2, c])
    assert gov.active_voting_members() == 3


# ------------------------------------------------------------------------------------------------------
# NotActiveMember / NotActive: callers without voting rights
# ------------------------------------------------------------------------------------------------------

ROLES_WITH_NON_VOTERS = (M, M, M, M, AUDITOR, OBSERVER)  # A..D members 1-4, E auditor 5, F observer 6


def _outsider(gov: Governance) -> Bank:
    return gov.newcomer()


def _suspended(gov: Governance) -> Bank:
    gov.suspend(4)
    return gov.banks[3]


def _removed(gov: Governance) -> Bank:
    gov.remove(4)
    return gov.banks[3]


def _auditor(gov: Governance) -> Bank:
    return gov.banks[4]


def _observer(gov: Governance) -> Bank:
    return gov.banks[5]


def _rotated_away(gov: Governance) -> Bank:
    old = gov.banks[3]
    gov.rotate(old, gov.newcomer())
    return old


NON_VOTERS: dict[str, Callable[[Governance], Bank]] = {
    "outsider": _outsider, "suspended": _suspended, "removed": _removed,
    "auditor": _auditor, "observer": _observer, "rotated_away": _rotated_away,
}
NOT_ACTIVE = {k: v for k, v in NON_VOTERS.items() if k not in ("auditor", "observer")}

# Arguments are valid where it is cheap to make them so: the membership check must come first anyway.
MEMBER_ONLY_CALLS: dict[str, Callable[[ContractFunctions, int, str], ContractFunction]] = {
    "proposeAdmission": lambda f, _, new: f.proposeAdmission(new, int(M), "New bank", "NEW-X", key(1)),
    "proposeSuspension": lambda f, _, __: f.proposeSuspension(2),
    "proposeReinstatement": lambda f, _, __: f.proposeReinstatement(2),
    "proposeRemoval": lambda f, _, __: f.proposeRemoval(2),
    "proposeSignerRotation": lambda f, _, new: f.proposeSignerRotation(2, new),
    "vote": lambda f, proposal_id, _: f.vote(proposal_id),
    "execute": lambda f, proposal_id, _: f.execute(proposal_id),
    "startKeyEpoch": lambda f, _, __: f.startKeyEpoch(),
    "publishKeyEnvelope": lambda f, _, __: f.publishKeyEnvelope(1, 1, ENVELOPE),
}


@pytest.mark.parametrize("call", MEMBER_ONLY_CALLS)
@pytest.mark.parametrize("caller_kind", NON_VOTERS)
def test_governance_functions_refuse_non_member(rpc_url: str, caller_kind: str, call: str) -> None:
    gov = Governance.deploy(rpc_url, ROLES_WITH_NON_VOTERS)
    caller = NON_VOTERS[caller_kind](gov)
    proposal_id = gov.open_proposal()
    function = MEMBER_ONLY_CALLS[call](gov.fn, proposal_id, gov.newcomer().address)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryNotActiveMember) as err:
        gov.send(caller, function)
    assert err.value.arguments == {"account": caller.address}
    assert gov.snapshot() == before


@pytest.mark.parametrize("caller_kind", NOT_ACTIVE)
def test_set_encryption_key_refuses_inactive_caller(rpc_url: str, caller_kind: str) -> None:
    gov = Governance.deploy(rpc_url, ROLES_WITH_NON_VOTERS)
    caller = NOT_ACTIVE[caller_kind](gov)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryNotActive) as err:
        gov.send(caller, gov.fn.setEncryptionKey(key(0xEE)))
    assert err.value.arguments == {"account": caller.address}
    assert gov.snapshot() == before


# ------------------------------------------------------------------------------------------------------
# Votes: AlreadyVoted, ProposalExpired, QuorumNotMet, UnknownProposal, ProposalAlreadyExecuted
# ------------------------------------------------------------------------------------------------------

def test_vote_refuses_double_vote(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 5)  # three votes needed: two leave the proposal open
    a, b, *_ = gov.banks
    proposal_id = gov.open_proposal(a)
    gov.registry(b).vote(proposal_id)
    before = gov.snapshot()
    for voter in (a, b):  # the proposer's implicit vote counts too
        with pytest.raises(AllianceRegistryAlreadyVoted) as err:
            gov.send(voter, gov.fn.vote(proposal_id))
        assert err.value.arguments == {"proposalId": proposal_id, "voter": voter.address}
    assert gov.snapshot() == before
    assert gov.reader.proposal(proposal_id).votes == 2


def test_vote_refuses_member_that_voted_before_rotation(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 5)
    a, b, *_ = gov.banks
    b2 = gov.newcomer()
    proposal_id = gov.open_proposal(a)
    gov.registry(b).vote(proposal_id)
    gov.rotate(b, b2)
    # Votes belong to the member, not the key: the new key sees the old key's vote.
    assert gov.reader.has_voted(proposal_id, b2.address)
    assert not gov.reader.has_voted(proposal_id, b.address)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryAlreadyVoted) as err:
        gov.send(b2, gov.fn.vote(proposal_id))
    assert err.value.arguments == {"proposalId": proposal_id, "voter": b2.address}
    assert gov.snapshot() == before
    assert gov.reader.proposal(proposal_id).votes == 2


@pytest.mark.parametrize("call", ["vote", "execute"])
def test_vote_refuses_expired_proposal(rpc_url: str, call: str) -> None:
    gov = Governance.deploy(rpc_url, proposal_lifetime_s=LIFETIME)
    _, b, _ = gov.banks
    proposal_id = gov.open_proposal()
    expires_at = gov.reader.proposal(proposal_id).expires_at
    gov.advance(LIFETIME + 1)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryProposalExpired) as err:
        gov.send(b, getattr(gov.fn, call)(proposal_id))
    assert err.value.arguments == {"proposalId": proposal_id, "expiredAt": expires_at}
    assert gov.snapshot() == before
    assert not gov.reader.has_voted(proposal_id, b.address)


def test_vote_accepts_proposal_at_its_expiry_timestamp(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, proposal_lifetime_s=LIFETIME)
    _, b, _ = gov.banks
    proposal_id = gov.open_proposal()
    expires_at = gov.reader.proposal(proposal_id).expires_at
    gov.reader.chain.rpc("evm_setNextBlockTimestamp", [expires_at])
    # Fixed gas: the estimate would run at the current (earlier) time, which proves nothing here.
    receipt = gov.send(b, gov.fn.vote(proposal_id), gas=MINED_GAS)
    assert int(gov.reader.chain.w3.eth.get_block(receipt.block_number)["timestamp"]) == expires_at
    assert gov.events(receipt, "ProposalExecuted")
    assert gov.reader.proposal(proposal_id).executed


def test_execute_refuses_proposal_below_quorum(gov: Governance) -> None:
    a, b, _ = gov.banks
    proposal_id = gov.open_proposal(a)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryQuorumNotMet) as err:
        gov.send(b, gov.fn.execute(proposal_id))
    assert err.value.arguments == {"proposalId": proposal_id, "votes": 1, "required": 2}
    assert gov.snapshot() == before


@pytest.mark.parametrize("proposal_id", [0, 2])
@pytest.mark.parametrize("call", ["vote", "execute", "proposal"])
def test_vote_refuses_unknown_proposal(gov: Governance, call: str, proposal_id: int) -> None:
    gov.open_proposal()  # proposal 1 exists; 0 and 2 do not
    before = gov.snapshot()
    function = getattr(gov.fn, call)(proposal_id)
    with pytest.raises(AllianceRegistryUnknownProposal) as err:
        gov.call(function) if call == "proposal" else gov.send(gov.banks[1], function)
    assert err.value.arguments == {"proposalId": proposal_id}
    assert gov.snapshot() == before


@pytest.mark.parametrize("call", ["vote", "execute"])
def test_vote_refuses_executed_proposal(gov: Governance, call: str) -> None:
    outcome = gov.suspend(3)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryProposalAlreadyExecuted) as err:
        gov.send(gov.banks[1], getattr(gov.fn, call)(outcome.proposal_id))
    assert err.value.arguments == {"proposalId": outcome.proposal_id}
    assert gov.snapshot() == before


# ------------------------------------------------------------------------------------------------------
# Proposal targets and newcomers: UnknownMember, AccountInUse, BankCodeInUse, InvalidRole, ZeroAddress,
# EmptyName, EmptyBankCode, InvalidMemberStatus, LastVotingMember
# ------------------------------------------------------------------------------------------------------

MEMBER_ID_CALLS: dict[str, Callable[[ContractFunctions, int], ContractFunction]] = {
    "proposeSuspension": lambda f, member_id: f.proposeSuspension(member_id),
    "proposeReinstatement": lambda f, member_id: f.proposeReinstatement(member_id),
    "proposeRemoval": lambda f, member_id: f.proposeRemoval(member_id),
    "proposeSignerRotation": lambda f, member_id: f.proposeSignerRotation(member_id, UNUSED_ACCOUNT),
    "publishKeyEnvelope": lambda f, member_id: f.publishKeyEnvelope(member_id, 1, ENVELOPE),
    "member": lambda f, member_id: f.member(member_id),
}


@pytest.mark.parametrize("member_id", [0, 4])
@pytest.mark.parametrize("call", MEMBER_ID_CALLS)
def test_propose_refuses_unknown_member(gov: Governance, call: str, member_id: int) -> None:
    function = MEMBER_ID_CALLS[call](gov.fn, member_id)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryUnknownMember) as err:
        gov.call(function) if call == "member" else gov.send(gov.banks[0], function)
    assert err.value.arguments == {"memberId": member_id}
    assert gov.snapshot() == before


def _active_account(gov: Governance) -> str:
    return gov.banks[1].address


def _removed_account(gov: Governance) -> str:
    gov.remove(3)
    return gov.banks[2].address


def _rotated_away_account(gov: Governance) -> str:
    old = gov.banks[1]
    gov.rotate(old, gov.newcomer())
    return old.address


USED_ACCOUNTS: dict[str, Callable[[Governance], str]] = {
    "active": _active_account, "removed": _removed_account, "rotated_away": _rotated_away_account,
}


@pytest.mark.parametrize("call", ["proposeAdmission", "proposeSignerRotation"])
@pytest.mark.parametrize("account_kind", USED_ACCOUNTS)
def test_propose_refuses_account_in_use(gov: Governance, account_kind: str, call: str) -> None:
    account = USED_ACCOUNTS[account_kind](gov)
    proposer = gov.voters()[0]
    if call == "proposeAdmission":
        function = gov.fn.proposeAdmission(account, int(M), "Reused", "NEW-R", key(3))
    else:
        function = gov.fn.proposeSignerRotation(1, account)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryAccountInUse) as err:
        gov.send(proposer, function)
    assert err.value.arguments == {"account": account}
    assert gov.snapshot() == before


@pytest.mark.parametrize(("case", "error", "arguments"), [
    ("zero_address", AllianceRegistryZeroAddress, {}),
    ("role_none", AllianceRegistryInvalidRole, {"role": 0}),
    ("empty_name", AllianceRegistryEmptyName, {}),
    ("empty_bank_code", AllianceRegistryEmptyBankCode, {}),
    ("active_bank_code", AllianceRegistryBankCodeInUse, {"bankCode": "BANK-B"}),
    ("removed_bank_code", AllianceRegistryBankCodeInUse, {"bankCode": "BANK-C"}),
])
def test_propose_admission_refuses_invalid_newcomer(
        gov: Governance, case: str, error: type[ContractRevert], arguments: dict[str, Any]) -> None:
    newcomer = gov.newcomer()
    fields: dict[str, Any] = {"account": newcomer.address, "role": int(M), "name": newcomer.name,
                              "bankCode": newcomer.code}
    if case == "removed_bank_code":
        gov.remove(3)
    overrides: dict[str, dict[str, Any]] = {
        "zero_address": {"account": ZERO_ADDRESS}, "role_none": {"role": 0}, "empty_name": {"name": ""},
        "empty_bank_code": {"bankCode": ""}, "active_bank_code": {"bankCode": "BANK-B"},
        "removed_bank_code": {"bankCode": "BANK-C"},
    }
    fields.update(overrides[case])
    before = gov.snapshot()
    with pytest.raises(error) as err:
        gov.send(gov.banks[0], gov.fn.proposeAdmission(
            fields["account"], fields["role"], fields["name"], fields["bankCode"], key(4)))
    assert type(err.value) is error
    assert err.value.arguments == arguments
    assert gov.snapshot() == before


def test_propose_admission_refuses_out_of_range_role(gov: Governance) -> None:
    # Role 4 is not in the enum: the ABI decoder reverts before any custom check, without revert data.
    newcomer = gov.newcomer()
    before = gov.snapshot()
    with pytest.raises(UnknownRevert):
        gov.send(gov.banks[0], gov.fn.proposeAdmission(newcomer.address, 4, newcomer.name, newcomer.code,
                                                       key(4)))
    assert gov.snapshot() == before


def test_propose_signer_rotation_refuses_zero_address(gov: Governance) -> None:
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryZeroAddress) as err:
        gov.send(gov.banks[0], gov.fn.proposeSignerRotation(2, ZERO_ADDRESS))
    assert err.value.arguments == {}
    assert gov.snapshot() == before


@pytest.mark.parametrize(("target_state", "call", "status"), [
    ("suspended", "proposeSuspension", MemberStatus.suspended),
    ("active", "proposeReinstatement", MemberStatus.active),
    ("removed", "proposeSuspension", MemberStatus.removed),
    ("removed", "proposeReinstatement", MemberStatus.removed),
    ("removed", "proposeRemoval", MemberStatus.removed),
    ("removed", "proposeSignerRotation", MemberStatus.removed),
    ("removed", "publishKeyEnvelope", MemberStatus.removed),
])
def test_propose_refuses_invalid_member_status(
        gov: Governance, target_state: str, call: str, status: MemberStatus) -> None:
    if target_state == "suspended":
        gov.suspend(3)
    elif target_state == "removed":
        gov.remove(3)
    function = MEMBER_ID_CALLS[call](gov.fn, 3)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryInvalidMemberStatus) as err:
        gov.send(gov.banks[0], function)
    assert err.value.arguments == {"memberId": 3, "status": int(status)}
    assert gov.snapshot() == before


def test_vote_revalidates_target_status_at_execution(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 4)
    a, b, c, _ = gov.banks
    first = gov.registry(a).propose_suspension(4).proposal_id
    second = gov.registry(b).propose_suspension(4).proposal_id
    assert gov.registry(b).vote(first).executed is False
    assert gov.registry(c).vote(first).executed
    # `second` now has enough votes with C's, but its target is no longer Active.
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryInvalidMemberStatus) as err:
        gov.send(c, gov.fn.vote(second))
    assert err.value.arguments == {"memberId": 4, "status": int(MemberStatus.suspended)}
    assert gov.snapshot() == before


@pytest.mark.parametrize("clash", ["account", "bank_code"])
def test_vote_revalidates_admission_at_execution(rpc_url: str, clash: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 4)
    a, b, c, _ = gov.banks
    x, y = gov.newcomer(), gov.newcomer()
    first = gov.registry(a).propose_admission(x.address, M, x.name, x.code, key(5)).proposal_id
    # Same account or same bank code as the first: both proposals can be open at once.
    account, code = (x.address, y.code) if clash == "account" else (y.address, x.code)
    second = gov.registry(b).propose_admission(account, M, y.name, code, key(6)).proposal_id
    gov.registry(b).vote(first)
    gov.registry(c).vote(first)
    gov.registry(a).vote(second)
    before = gov.snapshot()
    with pytest.raises(ContractRevert) as err:
        gov.send(c, gov.fn.vote(second))
    if clash == "account":
        assert type(err.value) is AllianceRegistryAccountInUse
        assert err.value.arguments == {"account": x.address}
    else:
        assert type(err.value) is AllianceRegistryBankCodeInUse
        assert err.value.arguments == {"bankCode": x.code}
    assert gov.snapshot() == before


def test_vote_revalidates_rotation_account_at_execution(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M,) * 4)
    a, b, c, _ = gov.banks
    x = gov.newcomer()
    rotation = gov.registry(a).propose_signer_rotation(2, x.address).proposal_id
    # The new signing address is taken by an admission while the rotation is still open.
    admission = gov.registry(b).propose_admission(x.address, OBSERVER, x.name, x.code, key(5)).proposal_id
    gov.registry(c).vote(admission)
    assert gov.registry(a).vote(admission).executed
    gov.registry(b).vote(rotation)
    before = gov.snapshot()
    with pytest.raises(AllianceRegistryAccountInUse) as err:
        gov.send(c, gov.fn.vote(rotation))
    assert err.value.arguments == {"account": x.address}
    assert gov.snapshot() == before
    assert gov.reader.member(2).account == b.address


@pytest.mark.parametrize("call", ["proposeSuspension", "proposeRemoval"])
def test_propose_refuses_deactivating_last_voting_member(rpc_url: str, call: str) -> None:
    gov = Governance.deploy(rpc_url, (M, AUDITOR))
    before = gov.snapshot()
    # One vote suffices, so the proposal executes at creation and the whole transaction reverts.
    with pytest.raises(AllianceRegistryLastVotingMember) as err:
        gov.send(gov.banks[0], getattr(gov.fn, call)(1))
    assert err.value.arguments == {"memberId": 1}
    assert gov.snapshot() == before
    assert gov.reader.proposal_count() == 0


def _two_members_one_suspended_with_pending_suspension(gov: Governance) -> int:
    """A and B each propose to suspend the other; A's suspension passes. Returns B's pending suspension."""
    a, b = gov.banks
    suspend_b = gov.registry(a).propose_suspension(2).proposal_id
    suspend_a = gov.registry(b).propose_suspension(1).proposal_id
    assert gov.registry(a).vote(suspend_a).executed
    return suspend_b


def test_vote_refuses_deactivating_last_voting_member(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M, M))
    suspend_b = _two_members_one_suspended_with_pending_suspension(gov)
    before = gov.snapshot()
    # B's vote would pass the proposal (2 > 50% of 1) and suspend the only remaining Member.
    with pytest.raises(AllianceRegistryLastVotingMember) as err:
        gov.send(gov.banks[1], gov.fn.vote(suspend_b))
    assert err.value.arguments == {"memberId": 2}
    assert gov.snapshot() == before


# ------------------------------------------------------------------------------------------------------
# Constructor: InvalidQuorum, InvalidLifetime, NoFoundingMember and the founder checks
# ------------------------------------------------------------------------------------------------------

def _founders(rpc_url: str, roles: tuple[MemberRole, ...] = (M, M)) -> list[FoundingMember]:
    return founders_of(letter_banks(rpc_url, len(roles)), roles)


def _replace(founder: FoundingMember, **changes: Any) -> FoundingMember:
    fields = {"account": founder.account, "role": founder.role, "name": founder.name,
              "bank_code": founder.bank_code, "encryption_key": founder.encryption_key}
    return FoundingMember(**{**fields, **changes})


DeployCase = tuple[list[FoundingMember], dict[str, int], type[ContractRevert], dict[str, Any]]
DEPLOY_CASES: dict[str, Callable[[list[FoundingMember]], DeployCase]] = {
    "quorum_zero": lambda f: (f, {"quorum_percent": 0}, AllianceRegistryInvalidQuorum, {"quorumPercent": 0}),
    "quorum_hundred": lambda f: (
        f, {"quorum_percent": 100}, AllianceRegistryInvalidQuorum, {"quorumPercent": 100}),
    "lifetime_zero": lambda f: (
        f, {"proposal_lifetime_s": 0}, AllianceRegistryInvalidLifetime, {"lifetime": 0}),
    "no_founder": lambda f: ([], {}, AllianceRegistryNoFoundingMember, {}),
    "only_auditor_and_observer": lambda f: (
        [_replace(f[0], role=AUDITOR), _replace(f[1], role=OBSERVER)], {},
        AllianceRegistryNoFoundingMember, {}),
    "zero_address": lambda f: (
        [f[0], _replace(f[1], account=ZERO_ADDRESS)], {}, AllianceRegistryZeroAddress, {}),
    "role_none": lambda f: (
        [f[0], _replace(f[1], role=MemberRole.none)], {}, AllianceRegistryInvalidRole, {"role": 0}),
    "empty_name": lambda f: ([f[0], _replace(f[1], name="")], {}, AllianceRegistryEmptyName, {}),
    "empty_bank_code": lambda f: (
        [f[0], _replace(f[1], bank_code="")], {}, AllianceRegistryEmptyBankCode, {}),
    "duplicate_account": lambda f: (
        [f[0], _replace(f[1], account=f[0].account)], {}, AllianceRegistryAccountInUse,
        {"account": f[0].account}),
    "duplicate_bank_code": lambda f: (
        [f[0], _replace(f[1], bank_code=f[0].bank_code)], {}, AllianceRegistryBankCodeInUse,
        {"bankCode": f[0].bank_code}),
}


@pytest.mark.parametrize("case", DEPLOY_CASES)
def test_deploy_refuses_invalid_parameters(rpc_url: str, case: str) -> None:
    deployer = letter_banks(rpc_url, 1, first=25)[0]
    founders, kwargs, error, arguments = DEPLOY_CASES[case](_founders(rpc_url))
    with pytest.raises(error) as err:
        deploy_consortium(deployer.client, network="test", founders=founders, **kwargs)
    assert type(err.value) is error
    assert err.value.arguments == arguments
    # Refused at the estimate: nothing was sent.
    assert deployer.client.w3.eth.get_transaction_count(Web3.to_checksum_address(deployer.address)) == 0


def test_deploy_mined_with_invalid_quorum_reverts_on_chain(rpc_url: str) -> None:
    deployer = letter_banks(rpc_url, 1, first=25)[0]
    artifact = load_artifact("AllianceRegistry")
    factory = deployer.client.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    founders = [f.as_abi() for f in _founders(rpc_url)]
    tx = fixed_gas_tx(deployer, factory.constructor(founders, 0, LIFETIME), gas=3_000_000)
    error = expect_mined_revert(deployer, lambda: deployer.client.send_transaction(tx))
    assert isinstance(error, AllianceRegistryInvalidQuorum)
    assert error.arguments == {"quorumPercent": 0}


# ------------------------------------------------------------------------------------------------------
# Key distribution: UnknownEpoch, EmptyEnvelope
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("epoch", "envelope", "error", "arguments"), [
    (0, ENVELOPE, AllianceRegistryUnknownEpoch, {"epoch": 0}),
    (2, ENVELOPE, AllianceRegistryUnknownEpoch, {"epoch": 2}),
    (1, b"", AllianceRegistryEmptyEnvelope, {}),
    # 60,000 bytes were accepted, and every node's key pass reads every envelope from the first block on.
    (1, b"\x01" * 513, AllianceRegistryEnvelopeTooLarge, {"length": 513, "maxLength": 512}),
])
def test_publish_key_envelope_refuses_bad_epoch_or_envelope(
        gov: Governance, epoch: int, envelope: bytes, error: type[ContractRevert],
        arguments: dict[str, Any]) -> None:
    assert gov.reader.current_key_epoch() == 1
    with pytest.raises(error) as err:
        gov.send(gov.banks[0], gov.fn.publishKeyEnvelope(2, epoch, envelope))
    assert err.value.arguments == arguments


# ------------------------------------------------------------------------------------------------------
# The contract itself refuses: transactions mined with a fixed gas limit, past the estimate
# ------------------------------------------------------------------------------------------------------

def _mined_outsider_vote(gov: Governance) -> MinedCase:
    proposal_id, outsider = gov.open_proposal(), gov.newcomer()
    return MinedCase(outsider, gov.fn.vote(proposal_id), AllianceRegistryNotActiveMember,
                     {"account": outsider.address})


def _mined_removed_member_proposes(gov: Governance) -> MinedCase:
    gov.remove(3)
    c = gov.banks[2]
    return MinedCase(c, gov.fn.proposeSuspension(1), AllianceRegistryNotActiveMember, {"account": c.address})


def _mined_rotated_away_key_votes(gov: Governance) -> MinedCase:
    proposal_id, b = gov.open_proposal(), gov.banks[1]
    gov.rotate(b, gov.newcomer())
    return MinedCase(b, gov.fn.vote(proposal_id), AllianceRegistryNotActiveMember, {"account": b.address})


def _mined_double_vote(gov: Governance) -> MinedCase:
    proposal_id, a = gov.open_proposal(), gov.banks[0]
    return MinedCase(a, gov.fn.vote(proposal_id), AllianceRegistryAlreadyVoted,
                     {"proposalId": proposal_id, "voter": a.address})


def _mined_expired_vote(gov: Governance) -> MinedCase:
    proposal_id = gov.open_proposal()
    expires_at = gov.reader.proposal(proposal_id).expires_at
    gov.advance(DEFAULT_PROPOSAL_LIFETIME_S + 1)
    return MinedCase(gov.banks[1], gov.fn.vote(proposal_id), AllianceRegistryProposalExpired,
                     {"proposalId": proposal_id, "expiredAt": expires_at})


def _mined_execute_below_quorum(gov: Governance) -> MinedCase:
    proposal_id = gov.open_proposal()
    return MinedCase(gov.banks[1], gov.fn.execute(proposal_id), AllianceRegistryQuorumNotMet,
                     {"proposalId": proposal_id, "votes": 1, "required": 2})


def _mined_vote_on_executed(gov: Governance) -> MinedCase:
    outcome = gov.suspend(3)
    return MinedCase(gov.banks[1], gov.fn.vote(outcome.proposal_id), AllianceRegistryProposalAlreadyExecuted,
                     {"proposalId": outcome.proposal_id})


def _mined_admit_used_account(gov: Governance) -> MinedCase:
    b = gov.banks[1]
    return MinedCase(gov.banks[0], gov.fn.proposeAdmission(b.address, int(M), "Again", "NEW-A", key(8)),
                     AllianceRegistryAccountInUse, {"account": b.address})


def _mined_suspend_suspended(gov: Governance) -> MinedCase:
    gov.suspend(3)
    return MinedCase(gov.banks[0], gov.fn.proposeSuspension(3), AllianceRegistryInvalidMemberStatus,
                     {"memberId": 3, "status": int(MemberStatus.suspended)})


MINED_CASES: dict[str, Callable[[Governance], MinedCase]] = {
    "outsider_vote": _mined_outsider_vote,
    "removed_member_proposes": _mined_removed_member_proposes,
    "rotated_away_key_votes": _mined_rotated_away_key_votes,
    "double_vote": _mined_double_vote,
    "expired_vote": _mined_expired_vote,
    "execute_below_quorum": _mined_execute_below_quorum,
    "vote_on_executed": _mined_vote_on_executed,
    "admit_used_account": _mined_admit_used_account,
    "suspend_suspended": _mined_suspend_suspended,
}


@pytest.mark.parametrize("case", MINED_CASES)
def test_mined_call_reverts_on_chain(gov: Governance, case: str) -> None:
    mined = MINED_CASES[case](gov)
    before = gov.snapshot()
    error = expect_mined_revert(mined.sender, lambda: gov.send(mined.sender, mined.function, gas=MINED_GAS))
    assert type(error) is mined.error
    assert error.arguments == mined.arguments
    assert gov.snapshot() == before


def test_mined_vote_refuses_deactivating_last_voting_member(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (M, M))
    suspend_b = _two_members_one_suspended_with_pending_suspension(gov)
    b = gov.banks[1]
    before = gov.snapshot()
    error = expect_mined_revert(b, lambda: gov.send(b, gov.fn.vote(suspend_b), gas=MINED_GAS))
    assert type(error) is AllianceRegistryLastVotingMember
    assert error.arguments == {"memberId": 2}
    assert gov.snapshot() == before


# ------------------------------------------------------------------------------------------------------
# Reverts that depend on the failed block itself: its timestamp, or a transaction mined before it in the
# same block. ChainClient replays on the failed block first, so the custom error is still recovered.
# ------------------------------------------------------------------------------------------------------


def test_mined_vote_expiring_in_its_own_block_decodes_revert(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, proposal_lifetime_s=LIFETIME)
    b = gov.banks[1]
    proposal_id = gov.open_proposal()
    expires_at = gov.reader.proposal(proposal_id).expires_at
    gov.reader.chain.rpc("evm_setNextBlockTimestamp", [expires_at + 1])
    with pytest.raises(ChainError) as err:
        gov.send(b, gov.fn.vote(proposal_id), gas=MINED_GAS)
    assert isinstance(err.value, AllianceRegistryProposalExpired)


def test_racing_votes_in_one_block_decode_revert(gov: Governance) -> None:
    _, b, c = gov.banks
    proposal_id = gov.open_proposal()
    control = gov.reader.chain
    sent = []
    control.rpc("evm_setAutomine", [False])
    try:
        for voter in (b, c):  # both valid when sent; B's executes the proposal first
            tx = fixed_gas_tx(voter, gov.fn.vote(proposal_id))
            sent.append((voter, voter.client.send_signed(voter.client.sign(tx)), tx))
        control.rpc("evm_mine")
    finally:
        control.rpc("evm_setAutomine", [True])
    assert sent[0][0].client.wait_for_receipt(sent[0][1], sent[0][2]).status == 1
    voter, tx_hash, tx = sent[1]
    with pytest.raises(ChainError) as err:
        voter.client.wait_for_receipt(tx_hash, tx)
    assert isinstance(err.value, AllianceRegistryProposalAlreadyExecuted)
