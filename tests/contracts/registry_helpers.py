"""Helpers for the AllianceRegistry contract tests.

`Governance` wraps one deployment: it votes proposals through with whichever banks are active voting
members at the time, tracks rotated and admitted banks, snapshots the registry's observable state
(to prove a revert changed nothing) and decodes events. `expect_mined_revert` sends a call past the
gas estimate so the contract itself, not the node's estimate, has to refuse it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD

from node.chain.client import Receipt
from node.chain.deployment import deploy_consortium
from node.chain.errors import ContractRevert
from node.chain.registry import FoundingMember, MemberRole, ProposalKind, ProposalOutcome, RegistryClient
from tests.conftest import Bank, Consortium, make_bank

# A sealed key envelope as the node builds it: version byte, ephemeral X25519 key (32), nonce (12),
# the 32-byte alliance hashing key, and the AEAD tag (16).
ENVELOPE = bytes(range(93))
# Enough for any single registry call, so a mined call can only fail by reverting, never out of gas.
MINED_GAS = 500_000
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
THREE_MEMBERS = (MemberRole.member,) * 3


def key(seed: int) -> bytes:
    """A recognisable 32-byte X25519 public key."""
    return bytes([seed]) * 32


def founders_of(banks: Sequence[Bank], roles: Sequence[MemberRole]) -> list[FoundingMember]:
    # Same keys as tests.conftest.deploy_test_consortium: member i (1-based) has key(i).
    return [FoundingMember(b.address, role, b.name, b.code, key(i + 1))
            for i, (b, role) in enumerate(zip(banks, roles, strict=True))]


def letter_banks(rpc_url: str, count: int, first: int = 0) -> list[Bank]:
    return [make_bank(rpc_url, f"Bank {chr(65 + i)}", f"BANK-{chr(65 + i)}")
            for i in range(first, first + count)]


@dataclass(frozen=True)
class MinedCase:
    """A call that the contract must refuse even when mined: who sends it and the expected error."""

    sender: Bank
    function: ContractFunction
    error: type[ContractRevert]
    arguments: dict[str, Any]


class Governance:
    """One deployed registry and the banks that act on it (founders first, in member-id order)."""

    def __init__(self, consortium: Consortium) -> None:
        self.consortium = consortium
        self.banks = consortium.banks
        # Reads need no signer; the first founder's client is as good as any and survives its rotation.
        self.reader = consortium.registry(consortium.banks[0])
        self.fn = self.reader.contract.functions
        self._outsiders = 0

    @classmethod
    def deploy(cls, rpc_url: str, roles: Sequence[MemberRole] = THREE_MEMBERS, **kwargs: int) -> Governance:
        banks = letter_banks(rpc_url, len(roles))
        deployment = deploy_consortium(banks[0].client, network="test", founders=founders_of(banks, roles),
                                       **kwargs)
        return cls(Consortium(rpc_url, deployment, banks))

    # -- acting ---------------------------------------------------------------------------------------
    def registry(self, bank: Bank) -> RegistryClient:
        return RegistryClient(bank.client, self.reader.address)

    def send(self, bank: Bank, function: ContractFunction, *, gas: int | None = None) -> Receipt:
        return bank.client.transact(function, gas=gas)

    def call(self, function: ContractFunction) -> Any:
        return self.reader.chain.call(function)

    def newcomer(self) -> Bank:
        """A fresh bank with a unique bank code, not registered anywhere."""
        self._outsiders += 1
        return make_bank(self.consortium.rpc_url, f"Newcomer {self._outsiders}", f"NEW-{self._outsiders}")

    def voters(self) -> list[Bank]:
        return [b for b in self.banks if self.reader.is_active_member(b.address)]

    def enact(self, propose: Callable[[RegistryClient], ProposalOutcome]) -> ProposalOutcome:
        """Propose with the first active voter, then vote with the others until the proposal executes."""
        proposer, *others = self.voters()
        outcome = propose(self.registry(proposer))
        for voter in others:
            if outcome.executed:
                break
            outcome = self.registry(voter).vote(outcome.proposal_id)
        assert outcome.executed, "not enough active voters to pass the proposal"
        return outcome

    def open_proposal(self, proposer: Bank | None = None) -> int:
        """An admission proposal (of an observer, so the quorum does not move) left open after one vote."""
        bank = self.newcomer()
        outcome = self.registry(proposer or self.banks[0]).propose_admission(
            bank.address, MemberRole.observer, bank.name, bank.code, key(0x0B))
        assert not outcome.executed
        return outcome.proposal_id

    def admit(self, bank: Bank, role: MemberRole = MemberRole.member,
              encryption_key: bytes = key(0xAD)) -> int:
        outcome = self.enact(lambda r: r.propose_admission(bank.address, role, bank.name, bank.code,
                                                           encryption_key))
        self.banks.append(bank)
        return self.reader.proposal(outcome.proposal_id).member_id

    def suspend(self, member_id: int) -> ProposalOutcome:
        return self.enact(lambda r: r.propose_suspension(member_id))

    def reinstate(self, member_id: int) -> ProposalOutcome:
        return self.enact(lambda r: r.propose_reinstatement(member_id))

    def remove(self, member_id: int) -> ProposalOutcome:
        return self.enact(lambda r: r.propose_removal(member_id))

    def rotate(self, old: Bank, new: Bank) -> ProposalOutcome:
        member_id = self.reader.member_id_of(old.address)
        outcome = self.enact(lambda r: r.propose_signer_rotation(member_id, new.address))
        self.banks[self.banks.index(old)] = new
        return outcome

    # -- observing ------------------------------------------------------------------------------------
    def active_voting_members(self) -> int:
        return int(self.call(self.fn.activeVotingMembers()))

    def role_of(self, account: str) -> MemberRole:
        return MemberRole(self.call(self.fn.roleOf(account)))

    def snapshot(self) -> dict[str, Any]:
        """Everything a revert must leave untouched: members, proposals (votes included), active sets, the proposal
        that last changed each member and the one that admitted each newcomer."""
        members, proposals = self.reader.members(), self.reader.proposals()
        return {
            "members": members,
            "proposals": proposals,
            "last_changes": [self.reader.last_change_on(m.member_id) for m in members],
            "admissions": [self.reader.admission_of(p.account) for p in proposals if p.kind == ProposalKind.admit],
            "active_accounts": sorted(self.reader.active_accounts()),
            "active_voting_members": self.active_voting_members(),
            "key_epoch": self.reader.current_key_epoch(),
        }

    def events(self, receipt: Receipt | Any, name: str) -> list[dict[str, Any]]:
        raw = receipt.raw if isinstance(receipt, Receipt) else receipt
        event = getattr(self.reader.contract.events, name)()
        return [dict(e["args"]) for e in event.process_receipt(raw, errors=DISCARD)]

    def advance(self, seconds: int) -> None:
        """Move chain time forward and mine, so both estimates and the next block see the new time."""
        self.reader.chain.rpc("evm_increaseTime", [seconds])
        self.reader.chain.rpc("evm_mine")


def fixed_gas_tx(bank: Bank, function: Any, gas: int = MINED_GAS) -> dict[str, Any]:
    """An unsigned transaction for a contract call or constructor, with a fixed gas limit (no estimate)."""
    params: Any = {"from": bank.address, "gas": gas, "gasPrice": 0, "chainId": bank.client.chain_id,
                   "nonce": 0}  # ChainClient.sign puts the real nonce in
    return dict(function.build_transaction(params))


def expect_mined_revert(sender: Bank, send: Callable[[], object]) -> ContractRevert:
    """Run `send` (a transaction with a fixed gas limit), and check it was mined, failed, and reverted.

    Returns the error decoded by ChainClient from its replay of the failed transaction.
    """
    w3 = sender.client.w3
    address = Web3.to_checksum_address(sender.address)
    nonce = w3.eth.get_transaction_count(address)
    with pytest.raises(ContractRevert) as raised:
        send()
    # The nonce moved: the node accepted and mined the transaction instead of refusing it up front.
    assert w3.eth.get_transaction_count(address) == nonce + 1
    latest = w3.eth.get_block("latest")
    tx_hash = cast(HexBytes, latest["transactions"][-1])
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["from"] == sender.address
    assert receipt["status"] == 0
    # Gas left over: a revert, not an out-of-gas failure that would prove nothing.
    assert receipt["gasUsed"] < w3.eth.get_transaction(tx_hash)["gas"]
    return raised.value
