"""What proposing and listing proposals cost in JSON-RPC requests when the consortium has years of proposals."""

from __future__ import annotations

from collections import Counter

import pytest

from node import governance
from node.chain.client import ChainClient
from node.chain.registry import ProposalOutcome, RegistryClient
from node.chain.signer import Signer
from node.governance import ProposalAction
from tests.chain.capped_rpc import CappedRpc, capped_rpc
from tests.conftest import Consortium

OLD_PROPOSALS = 200


def _with_old_proposals(consortium: Consortium) -> RegistryClient:
    """Bank A's registry after it proposed OLD_PROPOSALS suspensions of C that expired (one vote of the two needed),
    and one of B that is still open."""
    a = consortium.registry(consortium.banks[0])
    for _ in range(OLD_PROPOSALS):
        a.propose_suspension(3)
    a.chain.rpc("evm_increaseTime", [a.proposal(OLD_PROPOSALS).expires_at - a.chain.head().timestamp + 1])
    a.chain.rpc("evm_mine")
    assert governance.propose(a, ProposalAction.suspend, target="BANK-B").proposal_id == OLD_PROPOSALS + 1
    return a


def _counted(relay: CappedRpc, registry: RegistryClient) -> RegistryClient:
    """`registry`'s bank, reaching the chain through `relay`, which counts its requests."""
    return RegistryClient(ChainClient(relay.url, signer=registry.chain.signer), registry.address)


def _calls(relay: CappedRpc) -> list[str]:
    return [method for request in relay.requests for method in request]


def test_proposing_reads_the_unexpired_proposals_only(consortium: Consortium) -> None:
    """Proposing read every proposal ever made, one eth_call each, to find an open one making the same change: with
    200 old proposals, over 200 calls. It reads back from the newest until the first expired one now."""
    a = _with_old_proposals(consortium)
    with capped_rpc(consortium.rpc_url, max_blocks=10**9) as relay:
        proposed = governance.propose(_counted(relay, a), ProposalAction.suspend, target="BANK-C")
        new_proposal = _calls(relay)
        relay.requests.clear()
        again = governance.propose(_counted(relay, a), ProposalAction.suspend, target="BANK-B")
        answered = _calls(relay)
    assert (proposed.proposal_id, proposed.executed, again.proposal_id) == (OLD_PROPOSALS + 2, False, OLD_PROPOSALS + 1)
    print(f"propose, {OLD_PROPOSALS} expired proposals: {len(new_proposal)} JSON-RPC calls, "
          f"{new_proposal.count('eth_call')} eth_call; answering an open one: {len(answered)} calls, "
          f"{answered.count('eth_call')} eth_call")
    # The member lookup of the target (count, 3 members), the proposal count and the proposals back to the first
    # expired one (2 or 3 of them): not one per proposal.
    assert new_proposal.count("eth_call") <= 10
    assert answered.count("eth_call") <= 20  # and the counted votes of the proposal it answers


def test_listing_proposals_sends_a_few_requests_for_hundreds_of_proposals(consortium: Consortium) -> None:
    """`member proposals` sent one request per proposal and one per proposal and active member (its counted votes):
    over 800 round trips for 200 proposals of three banks. They go in JSON-RPC batches now."""
    a = _with_old_proposals(consortium)
    with capped_rpc(consortium.rpc_url, max_blocks=10**9) as relay:
        views = governance.proposal_views(_counted(relay, a), a.chain.head().timestamp)
    print(f"proposal_views, {len(views)} proposals: {len(relay.requests)} HTTP requests, "
          f"{len(_calls(relay))} JSON-RPC calls")
    assert [(v.proposal.proposal_id, v.counted_votes, v.state) for v in views] == \
        [(i, 1, "expired") for i in range(1, OLD_PROPOSALS + 1)] + [(OLD_PROPOSALS + 1, 1, "open")]
    assert len(relay.requests) <= 20  # the members, the proposals and the votes: in batches of 200


def test_an_endpoint_refusing_batches_is_read_one_call_at_a_time(consortium: Consortium) -> None:
    """A gateway that takes single requests only answers a batch with one error: the reads fall back to one call each
    (and stop offering it batches), with the same answers."""
    a = consortium.registry(consortium.banks[0])
    governance.propose(a, ProposalAction.suspend, target="BANK-C")
    with capped_rpc(consortium.rpc_url, max_blocks=10**9) as relay:
        relay.refuse_batches = True
        counted = _counted(relay, a)
        members, views = counted.members(), governance.proposal_views(counted, a.chain.head().timestamp)
        again = counted.members()
    assert [m.bank_code for m in members] == [m.bank_code for m in again] == ["BANK-A", "BANK-B", "BANK-C"]
    assert [(v.proposal.proposal_id, v.counted_votes, v.state) for v in views] == [(1, 1, "open")]
    assert sum(len(r) > 1 for r in relay.requests) == 1  # the first batch only


def test_answering_a_vote_again_reads_the_logs_of_the_proposals_lifetime_only(consortium: Consortium) -> None:
    """A vote (or execution) run again was looked up in the registry's events from the first block: on Besu, one
    eth_getLogs per 5,000 blocks of the chain's whole history. The contract takes votes and executions from a
    proposal's creation to its expiry, and only those blocks are read now."""
    a = consortium.registry(consortium.banks[0])
    a.chain.rpc("anvil_mine", [hex(3_000), hex(1)])  # a block a second
    created = governance.propose(a, ProposalAction.suspend, target="BANK-C")
    a.chain.rpc("anvil_mine", [hex(1_000), hex(1)])
    with capped_rpc(consortium.rpc_url, max_blocks=200) as relay:
        counted = _counted(relay, a)
        again = governance.vote(counted, created.proposal_id)
    assert (again.proposal_id, again.receipt.tx_hash) == (created.proposal_id, created.receipt.tx_hash)
    assert relay.log_ranges and min(first for first, _ in relay.log_ranges) >= created.receipt.block_number - 1
    # The ~1,000 blocks since (all within its lifetime): a few refused ranges halved down to the cap, then about
    # 1,000 / 125 taken ones; from the first block, about four times as many.
    assert len(relay.log_ranges) <= 15


_ADMISSION = governance.admission_request(account=Signer.generate().address, role="member", name="Bank D",
                                          bank_code="BANK-D", encryption_key="0x" + "42" * 32)


def _proposed_twice(registry: RegistryClient, action: ProposalAction) -> ProposalOutcome:
    """`registry`'s bank proposes the suspension of C, or the admission of a Bank D, as before: the same change."""
    if action == ProposalAction.admit:
        return governance.propose(registry, action, admission=_ADMISSION)
    return governance.propose(registry, action, target="BANK-C")


@pytest.mark.parametrize("action", [ProposalAction.suspend, ProposalAction.admit])
def test_a_change_refused_as_made_already_is_found_in_requests_that_do_not_grow_with_the_chain(
        consortium: Consortium, action: ProposalAction) -> None:
    """Proposed again once executed, a change is refused (its member suspended, its newcomer's account in use) and
    answered with the proposal of this bank's vote that made it. Which proposal that was came from the member's
    events read from the first block: one eth_getLogs per range the endpoint takes, for the chain's whole history
    (about 3,200 on Besu for a year of 2-second blocks). The contract records it now, and the lookup asks the same
    logs on a chain four times as long: those of the proposal's lifetime."""
    a, b = (consortium.registry(bank) for bank in consortium.banks[:2])
    a.chain.rpc("anvil_mine", [hex(1_000), hex(1)])  # a block a second
    made = _proposed_twice(a, action)
    assert governance.vote(b, made.proposal_id).executed
    costs: list[Counter[str]] = []
    for mined_since in (0, 3_000):
        if mined_since:  # past the proposal's expiry, then a chain four times as long as before it
            a.chain.rpc("evm_increaseTime", [a.proposal(made.proposal_id).expires_at - a.chain.head().timestamp + 1])
            a.chain.rpc("anvil_mine", [hex(mined_since), hex(1)])
        with capped_rpc(consortium.rpc_url, max_blocks=20) as relay:
            again = _proposed_twice(_counted(relay, a), action)
        assert (again.proposal_id, again.executed, again.receipt.tx_hash) == (made.proposal_id, True,
                                                                              made.receipt.tx_hash)
        costs.append(Counter(_calls(relay)))
    head = a.chain.block_number()
    print(f"{action} made already, {head - 3_000:,} then {head:,} blocks: {[dict(c) for c in costs]}")
    shorter, longer = costs
    # The logs of the blocks from the proposal to the vote that executed it: one range. From the first block, 75 and
    # then 277 requests of at most 20 blocks, refused ones included (143 and 545 for an admission: its account's
    # admission, then its member's changes).
    assert shorter["eth_getLogs"] == longer["eth_getLogs"] == 1
    # The rest is the same on the longer chain (the target, the open proposals, the refused estimate, the proposal
    # that made the change, the vote's receipt) but for the bisection of block times that finds the proposal's
    # lifetime: two reads per halving of the chain (about 50 on Besu for a year of 2-second blocks).
    assert {m: n for m, n in shorter.items() if m != "eth_getBlockByNumber"} == \
        {m: n for m, n in longer.items() if m != "eth_getBlockByNumber"}
    assert longer["eth_getBlockByNumber"] <= 2 * head.bit_length() + 3
