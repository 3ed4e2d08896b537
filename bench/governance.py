"""Benchmark of AllianceRegistry governance: gas per call and governance round-trips per second.

    python bench/governance.py                 # 10 founding members, 30 timed rounds
    python bench/governance.py --quick         # 4 founding members, 5 timed rounds
    python bench/governance.py --members N --rounds R

Runs on a private anvil (started and stopped here). Gas: deployment, proposeAdmission, a vote that does
not execute, the vote that executes (for an admission, a suspension and a signer rotation),
proposeSuspension, proposeSignerRotation, startKeyEpoch, publishKeyEnvelope with a 93-byte envelope.
Speed: a governance round is proposeAdmission (of an observer, so the quorum never moves) plus the
votes up to quorum, each sent through RegistryClient (estimate, local signing, receipt). The baseline
is plain 21,000-gas value transfers sent the same way by the same accounts, timed interleaved with the
rounds; `ratio_round_to_transfer` = mean round time / mean transfer time is the machine-independent
figure (ideally about the number of transactions per round). Prints readable lines, then one JSON
object as the last line.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_typing import HexStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import emit, parse_args, private_chain
from node.chain.client import _ESTIMATE_MARGIN, ChainClient
from node.chain.deployment import deploy_consortium
from node.chain.registry import FoundingMember, MemberRole, ProposalOutcome, RegistryClient
from node.chain.signer import Signer

# What the node publishes: version byte, ephemeral X25519 key (32), nonce (12), hashing key (32), tag (16).
ENVELOPE = bytes(range(93))
SINK = "0x000000000000000000000000000000000000dEaD"
FUNDING_WEI = 10**18
WARMUP_TRANSFERS = 5


@dataclass
class Bank:
    signer: Signer
    client: ChainClient
    registry: RegistryClient | None = None

    @property
    def address(self) -> str:
        return self.signer.address


def new_bank(rpc_url: str) -> Bank:
    signer = Signer.generate()
    return Bank(signer, ChainClient(rpc_url, signer=signer))


def founders(banks: Sequence[Bank]) -> list[FoundingMember]:
    return [FoundingMember(b.address, MemberRole.member, f"Bench bank {i}", f"BENCH-{i}", bytes([i + 1]) * 32)
            for i, b in enumerate(banks)]


def registry(bank: Bank) -> RegistryClient:
    assert bank.registry is not None
    return bank.registry


def pass_proposal(outcome: ProposalOutcome, voters: Sequence[Bank]) -> list[ProposalOutcome]:
    """Vote with `voters` in order until the proposal executes; returns every vote's outcome."""
    votes = []
    for voter in voters:
        if outcome.executed:
            break
        outcome = registry(voter).vote(outcome.proposal_id)
        votes.append(outcome)
    if not outcome.executed:
        raise SystemExit(f"proposal {outcome.proposal_id} did not reach quorum with {len(voters)} voters")
    return votes


def admission(proposer: Bank, role: MemberRole, serial: int) -> ProposalOutcome:
    newcomer = Signer.generate()
    return registry(proposer).propose_admission(newcomer.address, role, f"Newcomer {serial}", f"NEW-{serial}",
                                                bytes([0xA0 + serial % 16]) * 32)


def measure_gas(rpc_url: str, banks: list[Bank]) -> dict[str, Any]:
    """Gas of each governance call; leaves member N suspended and member N-1 rotated to a new key."""
    proposer, reader = banks[0], registry(banks[0])
    gas: dict[str, Any] = {"required_votes": reader.required_votes()}

    created = admission(proposer, MemberRole.member, 0)
    votes = pass_proposal(created, banks[1:])
    gas["propose_admission"] = created.receipt.gas_used
    gas["vote"] = int(statistics.median(v.receipt.gas_used for v in votes[:-1]))
    gas["executing_vote_admission"] = votes[-1].receipt.gas_used

    suspended = len(banks)  # member ids follow founder order
    created = reader.propose_suspension(suspended)
    votes = pass_proposal(created, banks[1:])
    gas["propose_suspension"] = created.receipt.gas_used
    gas["executing_vote_suspension"] = votes[-1].receipt.gas_used

    rotated = len(banks) - 2  # an active member: rotation also swaps it in the active-account set
    replacement = new_bank(rpc_url)
    created = reader.propose_signer_rotation(rotated + 1, replacement.address)
    votes = pass_proposal(created, banks[1:-1])
    gas["propose_signer_rotation"] = created.receipt.gas_used
    gas["executing_vote_rotation"] = votes[-1].receipt.gas_used
    replacement.registry = RegistryClient(replacement.client, reader.address)
    banks[rotated] = replacement

    functions = reader.contract.functions
    gas["start_key_epoch"] = proposer.client.transact(functions.startKeyEpoch()).gas_used
    gas["publish_key_envelope"] = proposer.client.transact(
        functions.publishKeyEnvelope(2, 2, ENVELOPE)).gas_used
    return gas


def transfer(bank: Bank) -> None:
    """A plain value transfer through the same ChainClient path as a contract write."""
    client = bank.client
    tx: Any = {"from": bank.address, "to": SINK, "value": 1, "gasPrice": client.gas_price,
               "chainId": client.chain_id}
    tx["gas"] = int(client.w3.eth.estimate_gas(tx))  # transact() estimates too
    client.send_transaction(tx)


def measure_rounds(banks: list[Bank], rounds: int) -> dict[str, float]:
    """Wall-clock governance rounds against transfers by the same accounts, interleaved."""
    reader = registry(banks[0])
    voters = [b for b in banks if reader.is_active_member(b.address)]
    required = reader.required_votes()
    senders = voters[:required]
    for bank in senders:
        bank.client.rpc("anvil_setBalance", [bank.address, hex(FUNDING_WEI)])
    # Warm-up: connections, caches and the first blocks are not what is being measured.
    pass_proposal(admission(senders[0], MemberRole.observer, 1000), senders[1:])
    for i in range(WARMUP_TRANSFERS):
        transfer(senders[i % len(senders)])

    round_s = transfer_s = 0.0
    transfers = 0
    for i in range(rounds):
        start = time.perf_counter()
        pass_proposal(admission(senders[0], MemberRole.observer, 1001 + i), senders[1:])
        round_s += time.perf_counter() - start
        start = time.perf_counter()
        for bank in senders:  # as many transfers as the round had transactions
            transfer(bank)
        transfer_s += time.perf_counter() - start
        transfers += len(senders)
    mean_round, mean_transfer = round_s / rounds, transfer_s / transfers
    return {
        "round_txs": required,
        "governance_rounds_per_s": rounds / round_s,
        "transfers_per_s": transfers / transfer_s,
        "mean_round_ms": mean_round * 1000,
        "mean_transfer_ms": mean_transfer * 1000,
        "ratio_round_to_transfer": mean_round / mean_transfer,
    }


def configure(parser: Any) -> None:
    parser.add_argument("--members", type=int, help="founding members (default 10; --quick 4; at least 4)")
    parser.add_argument("--rounds", type=int, help="timed governance rounds (default 30; --quick 5)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, configure)
    members = args.members or (4 if args.quick else 10)
    rounds = args.rounds or (5 if args.quick else 30)
    if members < 4:
        # Fewer than 4 members at 50% quorum leaves no vote that does not execute.
        raise SystemExit("--members must be at least 4")
    if rounds < 1:
        raise SystemExit("--rounds must be at least 1")

    with private_chain() as rpc_url:
        banks = [new_bank(rpc_url) for _ in range(members)]
        deployment = deploy_consortium(banks[0].client, network="bench", founders=founders(banks))
        w3 = banks[0].client.w3
        deployment_gas = {name: int(w3.eth.get_transaction_receipt(HexStr(c.tx_hash))["gasUsed"])
                          for name, c in deployment.contracts.items()}
        address = deployment.address("AllianceRegistry")
        for bank in banks:
            bank.registry = RegistryClient(bank.client, address)
        gas = measure_gas(rpc_url, banks)
        speed = measure_rounds(banks, rounds)

    covered = gas["vote"] * _ESTIMATE_MARGIN
    print(f"governance: {members} founding members, quorum 50% ({gas['required_votes']} votes), "
          f"{rounds} timed rounds")
    for name, used in deployment_gas.items():
        print(f"deploy {name + ':':24} {used:>9,} gas")
    for name in ("propose_admission", "vote", "executing_vote_admission", "propose_suspension",
                 "executing_vote_suspension", "propose_signer_rotation", "executing_vote_rotation",
                 "start_key_epoch", "publish_key_envelope"):
        print(f"{name + ':':31} {gas[name]:>9,} gas")
    print(f"estimate margin x{_ESTIMATE_MARGIN} on a non-executing vote covers {covered:,.0f} gas; "
          f"the executing admission vote needs {gas['executing_vote_admission']:,}")
    print(f"rounds:    {speed['governance_rounds_per_s']:8.2f} /s  ({speed['mean_round_ms']:.1f} ms for "
          f"{speed['round_txs']} transactions)")
    print(f"transfers: {speed['transfers_per_s']:8.2f} /s  ({speed['mean_transfer_ms']:.1f} ms each)")
    print(f"round / transfer time: {speed['ratio_round_to_transfer']:.2f}")
    emit({
        "members": members,
        "rounds": rounds,
        "required_votes": gas["required_votes"],
        "deployment_gas": deployment_gas["AllianceRegistry"],
        "gas_per_proposal": gas["propose_admission"],
        "gas_per_vote": gas["vote"],
        "gas_per_executing_vote": gas["executing_vote_admission"],
        "gas_executing_vote_suspension": gas["executing_vote_suspension"],
        "gas_executing_vote_rotation": gas["executing_vote_rotation"],
        "gas_propose_suspension": gas["propose_suspension"],
        "gas_propose_signer_rotation": gas["propose_signer_rotation"],
        "gas_start_key_epoch": gas["start_key_epoch"],
        "gas_publish_key_envelope": gas["publish_key_envelope"],
        "round_txs": speed["round_txs"],
        "governance_rounds_per_s": round(speed["governance_rounds_per_s"], 2),
        "transfers_per_s": round(speed["transfers_per_s"], 2),
        "ratio_round_to_transfer": round(speed["ratio_round_to_transfer"], 3),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
