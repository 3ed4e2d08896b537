"""Governance writes run again after their answer was lost (a crash, a client's retry): each acts once."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from node import governance
from node.chain.errors import (
    AllianceRegistryAccountInUse,
    AllianceRegistryBankCodeInUse,
    AllianceRegistryInvalidMemberStatus,
    AllianceRegistryProposalAlreadyExecuted,
)
from node.chain.registry import MemberStatus, RegistryClient
from node.chain.signer import Signer
from node.config import load_settings
from node.governance import ProposalAction
from node.runtime import NodeContext
from node.signer_rotation import activate_new_signer, prepare_new_signer
from tests.assets.conftest import run_again_while_pending
from tests.conftest import TEST_PASSPHRASE, Consortium, LedgerNodes, deploy_test_consortium

KEY = "0x" + "42" * 32


def _registries(consortium: Consortium) -> list[RegistryClient]:
    return [consortium.registry(bank) for bank in consortium.banks]


def test_proposing_again_while_the_first_proposal_is_pending_keeps_one_proposal(
        consortium: Consortium, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after sending a suspension, before it was mined: run again, it proposed the suspension a second
    time. The banks' votes then split between the two, and the vote that brought the second to its quorum was
    refused (its member was suspended already), reverting that vote."""
    a, b, _c = _registries(consortium)
    again = run_again_while_pending(a.chain, monkeypatch,
                                    lambda: governance.propose(a, ProposalAction.suspend, target="BANK-C"))
    assert (again.proposal_id, again.executed, a.proposal_count()) == (1, False, 1)
    assert again.receipt.tx_hash == a.vote_receipt(a.proposal(1), consortium.banks[0].address).tx_hash  # type: ignore[union-attr]
    once_more = governance.propose(a, ProposalAction.suspend, target="BANK-C")
    assert (once_more.proposal_id, once_more.receipt.tx_hash) == (1, again.receipt.tx_hash)
    # Another bank proposing the very same change votes in the open proposal instead of splitting the votes.
    seconded = governance.propose(b, ProposalAction.suspend, target="BANK-C")
    assert (seconded.proposal_id, seconded.executed, a.proposal_count()) == (1, True, 1)
    assert a.member(3).status == MemberStatus.suspended


def test_a_different_change_or_an_expired_proposal_is_proposed_anew(consortium: Consortium) -> None:
    a, _b, _c = _registries(consortium)
    newcomer = Signer.generate().address
    request = governance.admission_request(account=newcomer, role="member", name="Bank D", bank_code="BANK-D",
                                           encryption_key=KEY)
    assert governance.propose(a, ProposalAction.admit, admission=request).proposal_id == 1
    other = governance.admission_request(account=newcomer, role="auditor", name="Bank D", bank_code="BANK-D",
                                         encryption_key=KEY)
    assert governance.propose(a, ProposalAction.admit, admission=other).proposal_id == 2
    assert governance.propose(a, ProposalAction.suspend, target="BANK-B").proposal_id == 3
    assert governance.propose(a, ProposalAction.suspend, target="BANK-C").proposal_id == 4
    a.chain.rpc("evm_increaseTime", [a.proposal(1).expires_at - a.chain.head().timestamp + 1])
    a.chain.rpc("evm_mine")
    assert governance.vote(a, 1).state == "expired"  # its vote, answered with what the proposal awaits: nothing now
    assert governance.propose(a, ProposalAction.admit, admission=request).proposal_id == 5


def test_voting_again_returns_the_vote_cast(consortium: Consortium, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after sending its vote, before it was mined: run again, the vote was refused
    (ProposalAlreadyExecuted once the first copy had executed the proposal, AlreadyVoted else) although this bank's
    vote was on chain. Each run now returns it; a bank that did not vote still gets the contract's refusal."""
    a, b, c = _registries(consortium)
    admission = governance.admission_request(account=Signer.generate().address, role="member", name="Bank D",
                                             bank_code="BANK-D", encryption_key=KEY)
    proposed = governance.propose(a, ProposalAction.admit, admission=admission)
    assert governance.vote(a, 1).receipt.tx_hash == proposed.receipt.tx_hash  # the proposer's vote
    again = run_again_while_pending(b.chain, monkeypatch, lambda: governance.vote(b, 1))
    assert again.executed
    assert again.receipt.tx_hash == a.vote_receipt(a.proposal(1), consortium.banks[1].address).tx_hash  # type: ignore[union-attr]
    assert (a.member_count(), a.proposal(1).votes) == (4, 2)
    once_more = governance.vote(b, 1)
    assert (once_more.executed, once_more.receipt.tx_hash) == (True, again.receipt.tx_hash)
    with pytest.raises(AllianceRegistryProposalAlreadyExecuted):  # C did not vote: the contract's refusal stands
        governance.vote(c, 1)


def test_executing_again_returns_the_execution(rpc_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stopped after sending an execute, before it was mined: run again, it was refused
    (ProposalAlreadyExecuted) although this bank had executed the proposal. It now returns that execution; one by
    another bank's transaction is still refused."""
    consortium = deploy_test_consortium(rpc_url, founders=4)
    a, b, c, _d = _registries(consortium)
    admission = governance.admission_request(account=Signer.generate().address, role="member", name="Bank E",
                                             bank_code="BANK-E", encryption_key=KEY)
    governance.propose(a, ProposalAction.admit, admission=admission)
    assert not governance.vote(b, 1).executed  # 2 of 4
    governance.propose(a, ProposalAction.suspend, target="BANK-D")
    governance.vote(b, 2)
    assert governance.vote(c, 2).executed  # 3 active now: proposal 1's 2 votes pass it
    again = run_again_while_pending(a.chain, monkeypatch, lambda: governance.execute(a, 1))
    assert again.executed
    assert a.member_count() == 5
    once_more = governance.execute(a, 1)
    assert (once_more.executed, once_more.receipt.tx_hash) == (True, again.receipt.tx_hash)
    with pytest.raises(AllianceRegistryProposalAlreadyExecuted):  # executed by C's vote, not by A
        governance.execute(a, 2)


def _propose_in_a_process(node_settings: dict[str, Any], arrivals: Path, start: Any, answers: Any) -> None:
    """`member propose suspend BANK-C` of node A, its send held until the other process reached its send too (or 4s
    passed: with the signer's lock, the other is waiting for it)."""
    node = NodeContext(load_settings(key_passphrase=TEST_PASSPHRASE, **node_settings))
    try:
        send = RegistryClient.propose_suspension

        def delayed(registry: RegistryClient, member_id: int) -> Any:
            (arrivals / str(os.getpid())).touch()
            deadline = time.monotonic() + 4.0
            while len(list(arrivals.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            return send(registry, member_id)

        RegistryClient.propose_suspension = delayed  # type: ignore[method-assign]
        assert node.signer is not None  # the key unlocked before the start
        start.wait(timeout=60)
        outcome = governance.propose(node.registry(signing=True), ProposalAction.suspend, target="BANK-C")
        answers.put(("done", outcome.proposal_id, outcome.receipt.tx_hash))
    except Exception as exc:  # reported to the test, which fails on it
        answers.put(("failed", f"{type(exc).__name__}: {exc}", ""))
    finally:
        node.close()


def test_two_processes_proposing_one_change_at_once_make_one_proposal(ledger_nodes: LedgerNodes,
                                                                      tmp_path: Path) -> None:
    """The API server's and a CLI command's process of one node proposed the same suspension at the same moment:
    both looked, found no such proposal, and sent one each. One proposes it now, the other finds it."""
    a = ledger_nodes.nodes[0]
    settings = {name: getattr(a.settings, name)
                for name in ("data_dir", "network", "rpc_url", "deployment_file", "database_url")}
    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    spawn = multiprocessing.get_context("spawn")
    start, answers = spawn.Barrier(2), spawn.Queue()
    processes = [spawn.Process(target=_propose_in_a_process, args=(settings, arrivals, start, answers))
                 for _ in range(2)]
    for process in processes:
        process.start()
    try:
        results = [answers.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
    assert results == [("done", 1, results[0][2])] * 2, results
    assert a.registry().proposal_count() == 1


def test_proposing_again_a_change_made_at_once_returns_its_proposal(rpc_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With a quorum of one vote the proposal executes when mined. Stopped before its receipt and run again, the
    proposal was refused as a change that no longer applies (AllianceRegistryBankCodeInUse for an admission,
    AllianceRegistryInvalidMemberStatus for a suspension) although this bank had just made it. It now answers that
    proposal; a change made since (a reinstatement, a removal) leaves the contract's refusal standing."""
    a = _registries(deploy_test_consortium(rpc_url, founders=1))[0]
    observer = governance.admission_request(account=Signer.generate().address, role="observer", name="Bank D",
                                            bank_code="BANK-D", encryption_key=KEY)
    admitted = run_again_while_pending(a.chain, monkeypatch,
                                       lambda: governance.propose(a, ProposalAction.admit, admission=observer))
    assert (admitted.proposal_id, admitted.executed, a.proposal_count(), a.member_count()) == (1, True, 1, 2)
    suspended = run_again_while_pending(a.chain, monkeypatch,
                                        lambda: governance.propose(a, ProposalAction.suspend, target="BANK-D"))
    assert (suspended.proposal_id, suspended.executed, a.proposal_count()) == (2, True, 2)
    assert governance.propose(a, ProposalAction.suspend, target="BANK-D").receipt.tx_hash == suspended.receipt.tx_hash
    assert governance.propose(a, ProposalAction.reinstate, target="BANK-D").proposal_id == 3
    assert governance.propose(a, ProposalAction.suspend, target="BANK-D").proposal_id == 4  # a new suspension
    assert governance.propose(a, ProposalAction.remove, target="BANK-D").proposal_id == 5
    with pytest.raises(AllianceRegistryInvalidMemberStatus):  # removed since: not this bank's suspension to answer
        governance.propose(a, ProposalAction.suspend, target="BANK-D")
    other = governance.admission_request(account=Signer.generate().address, role="observer", name="Bank D",
                                         bank_code="BANK-D", encryption_key=KEY)
    with pytest.raises(AllianceRegistryBankCodeInUse):  # another bank under a code in use: not the one admitted
        governance.propose(a, ProposalAction.admit, admission=other)
    assert a.proposal_count() == 5


def _rotate_signer(ledger_nodes: LedgerNodes, target: NodeContext) -> NodeContext:
    """`target`'s bank replaces its signing key as operators do (`key new-signer`, A proposes `rotate`, B votes,
    `key activate-signer`); the node restarted on the new key."""
    a, b = (node.registry(signing=True) for node in ledger_nodes.nodes[:2])
    prepared = prepare_new_signer(target)
    rotation = governance.propose(a, ProposalAction.rotate, target=target.settings.bank_code,
                                  new_account=prepared.address)
    assert governance.vote(b, rotation.proposal_id).executed
    assert activate_new_signer(target).new_address == prepared.address
    restarted = NodeContext(target.settings)
    ledger_nodes.nodes.append(restarted)  # closed with the others
    assert restarted.registry().member(restarted.member_id).account == prepared.address
    return restarted


def test_proposing_again_after_the_target_rotated_its_signer_answers_the_open_proposal(
        ledger_nodes: LedgerNodes) -> None:
    """A suspension stores its target's signer when proposed: once that bank had rotated its key, the same suspension
    run again (or seconded by another bank) was a second proposal, and the banks' votes split between the two."""
    a, b = (node.registry(signing=True) for node in ledger_nodes.nodes[:2])
    old_account = ledger_nodes.nodes[2].address
    assert governance.propose(a, ProposalAction.suspend, target="BANK-C").proposal_id == 1
    c = _rotate_signer(ledger_nodes, ledger_nodes.nodes[2])  # proposal 2
    assert a.proposal(1).account == old_account != c.address

    again = governance.propose(a, ProposalAction.suspend, target="BANK-C")
    assert (again.proposal_id, again.executed, a.proposal_count()) == (1, False, 2)
    assert governance.propose(a, ProposalAction.suspend, target=c.address).proposal_id == 1  # named by its new signer
    seconded = governance.propose(b, ProposalAction.suspend, target="BANK-C")
    assert (seconded.proposal_id, seconded.executed, a.proposal_count()) == (1, True, 2)
    assert a.member(c.member_id).status == MemberStatus.suspended


def test_a_rotation_or_admission_to_another_account_is_proposed_anew(ledger_nodes: LedgerNodes) -> None:
    """What a rotation or an admission changes is its account: matched by the member alone, a rotation to another
    new key would have been taken for the open one."""
    a = ledger_nodes.nodes[0].registry(signing=True)
    first, second = Signer.generate().address, Signer.generate().address
    assert governance.propose(a, ProposalAction.rotate, target="BANK-C", new_account=first).proposal_id == 1
    assert governance.propose(a, ProposalAction.rotate, target="BANK-C", new_account=second).proposal_id == 2
    assert governance.propose(a, ProposalAction.rotate, target="BANK-C", new_account=first).proposal_id == 1
    for account in (first, second):
        admission = governance.admission_request(account=account, role="member", name="Bank D", bank_code="BANK-D",
                                                 encryption_key=KEY)
        governance.propose(a, ProposalAction.admit, admission=admission)
    assert [(p.kind.name, p.account) for p in a.proposals()[2:]] == [("admit", first), ("admit", second)]


def test_proposing_again_a_suspension_executed_after_its_target_rotated_its_signer_returns_it(
        ledger_nodes: LedgerNodes) -> None:
    """Executed by B's vote after C had rotated its key, A's suspension run again was refused
    (AllianceRegistryInvalidMemberStatus) although it was A's own proposal that made it: the executed proposal was
    matched on C's signer at the time it was proposed."""
    a, b = (node.registry(signing=True) for node in ledger_nodes.nodes[:2])
    proposed = governance.propose(a, ProposalAction.suspend, target="BANK-C")
    _rotate_signer(ledger_nodes, ledger_nodes.nodes[2])
    assert governance.vote(b, 1).executed

    again = governance.propose(a, ProposalAction.suspend, target="BANK-C")
    assert (again.proposal_id, again.executed, again.receipt.tx_hash) == (1, True, proposed.receipt.tx_hash)
    assert governance.propose(a, ProposalAction.reinstate, target="BANK-C").proposal_id == 3
    assert governance.vote(b, 3).executed
    assert governance.propose(a, ProposalAction.suspend, target="BANK-C").proposal_id == 4  # a new suspension


# A change refused as made already is answered with the proposal of this bank's vote only if that proposal is the
# last to have executed on its target (the contract's lastChangeOf) or admitted its account (admissionOf).

def test_proposing_again_a_suspension_made_again_without_this_banks_vote_is_refused(consortium: Consortium) -> None:
    """A's suspension of C executed, C was reinstated, then B and C suspended it again: proposed again by A, the
    suspension is the contract's refusal, not A's first one (the same change, but not the last made); by B, it is
    B's proposal that made it."""
    a, b, c = _registries(consortium)
    first = governance.propose(a, ProposalAction.suspend, target="BANK-C")
    assert governance.vote(b, first.proposal_id).executed
    reinstated = governance.propose(a, ProposalAction.reinstate, target="BANK-C")
    assert governance.vote(b, reinstated.proposal_id).executed
    again = governance.propose(b, ProposalAction.suspend, target="BANK-C")
    assert (again.proposal_id, governance.vote(c, again.proposal_id).executed) == (3, True)
    with pytest.raises(AllianceRegistryInvalidMemberStatus) as refused:
        governance.propose(a, ProposalAction.suspend, target="BANK-C")
    assert refused.value.arguments == {"memberId": 3, "status": int(MemberStatus.suspended)}
    answered = governance.propose(b, ProposalAction.suspend, target="BANK-C")
    assert (answered.proposal_id, answered.executed, answered.receipt.tx_hash) == (3, True, again.receipt.tx_hash)
    assert a.proposal_count() == 3


def test_proposing_again_a_rotation_followed_by_a_suspension_answers_the_suspension_only(
        consortium: Consortium) -> None:
    """C's signer rotated (proposal 1), then C suspended (2), both with A's vote: the suspension proposed again is
    answered with A's proposal of it; the rotation, no longer C's last change, is the contract's refusal."""
    a, b, _c = _registries(consortium)
    new_account = Signer.generate().address
    rotation = governance.propose(a, ProposalAction.rotate, target="BANK-C", new_account=new_account)
    assert governance.vote(b, rotation.proposal_id).executed
    suspension = governance.propose(a, ProposalAction.suspend, target="BANK-C")
    assert governance.vote(b, suspension.proposal_id).executed
    answered = governance.propose(a, ProposalAction.suspend, target=new_account)
    assert (answered.proposal_id, answered.executed, answered.receipt.tx_hash) == (2, True, suspension.receipt.tx_hash)
    with pytest.raises(AllianceRegistryAccountInUse) as refused:
        governance.propose(a, ProposalAction.rotate, target="BANK-C", new_account=new_account)
    assert refused.value.arguments == {"account": new_account}
    assert a.proposal_count() == 2


def test_proposing_again_an_admission_answers_the_one_of_that_account_only(consortium: Consortium) -> None:
    """D admitted with A's vote, then rotated to a new signer: the admission proposed again is still answered with
    A's proposal (the account admitted is D's first one, whatever D signs with now). An admission of the account D
    rotated to, of a founder's account, or of D's with another role is the contract's refusal."""
    a, b, c = _registries(consortium)
    admission = governance.admission_request(account=Signer.generate().address, role="member", name="Bank D",
                                             bank_code="BANK-D", encryption_key=KEY)
    admitted = governance.propose(a, ProposalAction.admit, admission=admission)
    assert governance.vote(b, admitted.proposal_id).executed
    rotated_to = Signer.generate().address
    rotation = governance.propose(a, ProposalAction.rotate, target="BANK-D", new_account=rotated_to)
    assert not governance.vote(b, rotation.proposal_id).executed  # 2 of the 4 members
    assert governance.vote(c, rotation.proposal_id).executed

    answered = governance.propose(a, ProposalAction.admit, admission=admission)
    assert (answered.proposal_id, answered.executed, answered.receipt.tx_hash) == (1, True, admitted.receipt.tx_hash)
    for account, role in ((rotated_to, "member"), (consortium.banks[1].address, "member"),
                          (admission.account, "observer")):
        other = governance.admission_request(account=account, role=role, name="Bank D", bank_code="BANK-D",
                                             encryption_key=KEY)
        with pytest.raises(AllianceRegistryAccountInUse) as refused:
            governance.propose(a, ProposalAction.admit, admission=other)
        assert refused.value.arguments == {"account": account}
    assert a.proposal_count() == 2


def test_proposing_a_change_no_proposal_made_is_refused(consortium: Consortium) -> None:
    """A founder never suspended is active from its deployment: its reinstatement has no proposal to answer."""
    a, _b, _c = _registries(consortium)
    with pytest.raises(AllianceRegistryInvalidMemberStatus) as refused:
        governance.propose(a, ProposalAction.reinstate, target="BANK-B")
    assert refused.value.arguments == {"memberId": 2, "status": int(MemberStatus.active)}
    assert a.proposal_count() == 0
