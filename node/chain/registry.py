"""Typed access to the AllianceRegistry contract: members, governance proposals, key envelopes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from web3 import Web3
from web3.logs import DISCARD

from node.chain.client import ChainClient, Receipt

# A vote or proposal may execute when mined although it did not when estimated (another vote landed, or
# the active count dropped); an executing admission costs ~340k gas. Gas is free on the consortium chain.
GOVERNANCE_MIN_GAS = 600_000


class MemberRole(IntEnum):
    none = 0
    member = 1
    auditor = 2
    observer = 3


class MemberStatus(IntEnum):
    none = 0
    active = 1
    suspended = 2
    removed = 3


class ProposalKind(IntEnum):
    admit = 0
    suspend = 1
    reinstate = 2
    remove = 3
    rotate_signer = 4


@dataclass(frozen=True)
class FoundingMember:
    account: str
    role: MemberRole
    name: str
    bank_code: str
    encryption_key: bytes  # X25519 public key, 32 bytes

    def as_abi(self) -> tuple[Any, ...]:
        return (Web3.to_checksum_address(self.account), int(self.role), self.name, self.bank_code,
                self.encryption_key)


@dataclass(frozen=True)
class Member:
    member_id: int
    account: str
    role: MemberRole
    status: MemberStatus
    admitted_at: int
    encryption_key: bytes
    name: str
    bank_code: str

    def to_json(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id, "account": self.account, "role": self.role.name,
            "status": self.status.name, "admitted_at": self.admitted_at,
            "encryption_key": "0x" + self.encryption_key.hex(), "name": self.name, "bank_code": self.bank_code,
        }


@dataclass(frozen=True)
class Proposal:
    proposal_id: int
    kind: ProposalKind
    member_id: int
    account: str
    role: MemberRole
    encryption_key: bytes
    proposer: str
    created_at: int
    expires_at: int
    votes: int
    executed: bool
    name: str
    bank_code: str

    def to_json(self) -> dict[str, Any]:
        return {
            "proposal_id": self.proposal_id, "kind": self.kind.name, "member_id": self.member_id,
            "account": self.account, "role": self.role.name, "proposer": self.proposer,
            "created_at": self.created_at, "expires_at": self.expires_at, "votes": self.votes,
            "executed": self.executed, "name": self.name, "bank_code": self.bank_code,
        }


@dataclass(frozen=True)
class ProposalOutcome:
    """What a propose/vote transaction did: the proposal, and whether it executed."""

    proposal_id: int
    executed: bool
    receipt: Receipt
    # Not executed: what it awaits. `open` (more votes) after a transaction of this run; answered with a vote cast
    # before (run again), the proposal may be `ready` since (enough votes: `member execute`) or `expired`.
    waiting: str = "open"

    @property
    def state(self) -> str:
        return "executed" if self.executed else self.waiting


@dataclass(frozen=True)
class KeyEnvelope:
    """A KeyEnvelopePublished event: the key of `epoch` sealed for one member."""

    recipient_member_id: int
    epoch: int
    sender_member_id: int
    envelope: bytes
    block_number: int
    log_index: int  # with block_number, its place in the chain: later than its recipient's latest key change?

    @property
    def position(self) -> tuple[int, int]:
        return self.block_number, self.log_index


@dataclass(frozen=True)
class EncryptionKeySet:
    """An EncryptionKeySet event: a member's X25519 public key, at admission or replaced (setEncryptionKey)."""

    member_id: int
    key: bytes
    block_number: int
    log_index: int

    @property
    def position(self) -> tuple[int, int]:
        return self.block_number, self.log_index


class RegistryClient:
    def __init__(self, client: ChainClient, address: str) -> None:
        self.chain = client
        self.contract = client.contract("AllianceRegistry", address)
        self.address = self.contract.address

    # -- reads ----------------------------------------------------------------------------------------
    def member_count(self) -> int:
        return int(self.chain.call(self.contract.functions.memberCount()))

    def member(self, member_id: int) -> Member:
        return _member(member_id, self.chain.call(self.contract.functions.member(member_id)))

    def members(self) -> list[Member]:
        """Every member ever admitted, by id, read in JSON-RPC batches (ChainClient.call_many)."""
        ids = range(1, self.member_count() + 1)
        raws = self.chain.call_many([self.contract.functions.member(i) for i in ids])
        return [_member(i, raw) for i, raw in zip(ids, raws, strict=True)]

    def member_id_of(self, account: str) -> int:
        return int(self.chain.call(self.contract.functions.memberIdOf(Web3.to_checksum_address(account))))

    def is_active_member(self, account: str) -> bool:
        return bool(self.chain.call(self.contract.functions.isActiveMember(Web3.to_checksum_address(account))))

    def proposal_count(self) -> int:
        return int(self.chain.call(self.contract.functions.proposalCount()))

    def proposal(self, proposal_id: int) -> Proposal:
        return _proposal(proposal_id, self.chain.call(self.contract.functions.proposal(proposal_id)))

    def proposals(self) -> list[Proposal]:
        """Every proposal, oldest first, read in JSON-RPC batches (ChainClient.call_many)."""
        ids = range(1, self.proposal_count() + 1)
        raws = self.chain.call_many([self.contract.functions.proposal(i) for i in ids])
        return [_proposal(i, raw) for i, raw in zip(ids, raws, strict=True)]

    def proposals_newest_first(self) -> Iterator[Proposal]:
        """The proposals from the newest back, each read when the caller reaches it: a caller that stops early (at the
        first expired one) reads as far back as it looks, not the whole history."""
        for proposal_id in range(self.proposal_count(), 0, -1):
            yield self.proposal(proposal_id)

    def has_voted(self, proposal_id: int, account: str) -> bool:
        return bool(self.chain.call(self.contract.functions.hasVoted(proposal_id,
                                                                     Web3.to_checksum_address(account))))

    def votes_cast(self, ballots: Sequence[tuple[int, str]]) -> list[bool]:
        """`has_voted` of each (proposal id, account), in order, read in JSON-RPC batches."""
        return [bool(voted) for voted in self.chain.call_many([
            self.contract.functions.hasVoted(proposal_id, Web3.to_checksum_address(account))
            for proposal_id, account in ballots])]

    def required_votes(self) -> int:
        return int(self.chain.call(self.contract.functions.requiredVotes()))

    def active_accounts(self) -> list[str]:
        return list(self.chain.call(self.contract.functions.activeAccounts()))

    def current_key_epoch(self) -> int:
        return int(self.chain.call(self.contract.functions.currentKeyEpoch()))

    # -- governance writes ----------------------------------------------------------------------------
    def propose_admission(self, account: str, role: MemberRole, name: str, bank_code: str,
                          encryption_key: bytes) -> ProposalOutcome:
        return self._propose(self.contract.functions.proposeAdmission(
            Web3.to_checksum_address(account), int(role), name, bank_code, encryption_key))

    def propose_suspension(self, member_id: int) -> ProposalOutcome:
        return self._propose(self.contract.functions.proposeSuspension(member_id))

    def propose_reinstatement(self, member_id: int) -> ProposalOutcome:
        return self._propose(self.contract.functions.proposeReinstatement(member_id))

    def propose_removal(self, member_id: int) -> ProposalOutcome:
        return self._propose(self.contract.functions.proposeRemoval(member_id))

    def propose_signer_rotation(self, member_id: int, new_account: str) -> ProposalOutcome:
        return self._propose(self.contract.functions.proposeSignerRotation(
            member_id, Web3.to_checksum_address(new_account)))

    def vote(self, proposal_id: int) -> ProposalOutcome:
        receipt = self.chain.transact(self.contract.functions.vote(proposal_id), min_gas=GOVERNANCE_MIN_GAS)
        return ProposalOutcome(proposal_id, self._executed(receipt), receipt)

    def execute(self, proposal_id: int) -> ProposalOutcome:
        receipt = self.chain.transact(self.contract.functions.execute(proposal_id), min_gas=GOVERNANCE_MIN_GAS)
        return ProposalOutcome(proposal_id, self._executed(receipt), receipt)

    def vote_receipt(self, proposal: Proposal, account: str) -> Receipt | None:
        """The receipt of `account`'s vote on the proposal (its proposal's, for the proposer), if the chain has one."""
        logs = self._proposal_logs(self.contract.events.VoteCast(), proposal,
                                   {"voter": Web3.to_checksum_address(account)})
        return self.chain.wait_for_receipt(logs[0]["transactionHash"].to_0x_hex()) if logs else None

    def execution_receipt(self, proposal: Proposal, sent_by: str) -> Receipt | None:
        """The receipt of the transaction that executed the proposal (an execute, a vote or the proposal itself), if
        `sent_by` sent it."""
        logs = self._proposal_logs(self.contract.events.ProposalExecuted(), proposal)
        if not logs:
            return None
        receipt = self.chain.wait_for_receipt(logs[0]["transactionHash"].to_0x_hex())
        return receipt if str(receipt.raw["from"]).lower() == sent_by.lower() else None

    def _proposal_logs(self, event: Any, proposal: Proposal, filters: dict[str, Any] | None = None) -> list[Any]:
        """The proposal's logs of `event`, read over the blocks of its lifetime only: the contract takes its votes and
        its execution from its creation to its expiry (`_checkOpen`), and the chain's history before and after can be
        years of blocks."""
        span = self.chain.blocks_between(proposal.created_at, proposal.expires_at)
        if span is None:
            return []
        return self.chain.event_logs(event, from_block=span[0], to_block=span[1],
                                     argument_filters={"proposalId": proposal.proposal_id, **(filters or {})})

    def last_change_on(self, member_id: int) -> int | None:
        """The id of the last proposal executed on the member other than its admission (a suspension, reinstatement,
        removal or signer rotation), in the order they executed, which is not their ids' (a vote that came late
        executes an older proposal after a newer one); None if none was. One call: the contract records it when a
        proposal executes, where the member's events were a scan of the chain's whole history."""
        return int(self.chain.call(self.contract.functions.lastChangeOf(member_id))) or None

    def admission_of(self, account: str) -> int | None:
        """The id of the executed proposal that admitted `account` as a new member's signer, whatever that member's
        signer is now; None for a founder's account and for one never admitted (one a member rotated to)."""
        return int(self.chain.call(self.contract.functions.admissionOf(Web3.to_checksum_address(account)))) or None

    def set_encryption_key(self, key: bytes) -> Receipt:
        return self.chain.transact(self.contract.functions.setEncryptionKey(key))

    # -- alliance key distribution --------------------------------------------------------------------
    def start_key_epoch(self) -> int:
        """Start a new key epoch; returns its number."""
        receipt = self.chain.transact(self.contract.functions.startKeyEpoch())
        started = self.contract.events.KeyEpochStarted().process_receipt(receipt.raw, errors=DISCARD)
        return int(started[0]["args"]["epoch"])

    def publish_key_envelope(self, recipient_member_id: int, epoch: int, envelope: bytes) -> Receipt:
        return self.chain.transact(self.contract.functions.publishKeyEnvelope(recipient_member_id, epoch, envelope))

    def key_envelopes(self, *, recipient_member_id: int | None = None, epoch: int | None = None,
                      from_block: int = 0) -> list[KeyEnvelope]:
        """Envelopes announced on chain, oldest first, filtered on the indexed recipient and epoch."""
        filters: dict[str, Any] = {}
        if recipient_member_id is not None:
            filters["recipientMemberId"] = recipient_member_id
        if epoch is not None:
            filters["epoch"] = epoch
        event = self.contract.events.KeyEnvelopePublished()
        if filters or from_block:
            logs = self.chain.event_logs(event, from_block=from_block, argument_filters=filters)
        else:  # the key worker's read, every few seconds: only the new blocks
            logs = self.chain.followed_logs(event)
        return [KeyEnvelope(int(log["args"]["recipientMemberId"]), int(log["args"]["epoch"]),
                            int(log["args"]["senderMemberId"]), bytes(log["args"]["envelope"]),
                            int(log["blockNumber"]), int(log["logIndex"])) for log in logs]

    def encryption_keys_set(self) -> list[EncryptionKeySet]:
        """Every EncryptionKeySet, oldest first (read like the envelopes, only the new blocks on repeated calls)."""
        logs = self.chain.followed_logs(self.contract.events.EncryptionKeySet())
        return [EncryptionKeySet(int(log["args"]["memberId"]), bytes(log["args"]["key"]), int(log["blockNumber"]),
                                 int(log["logIndex"])) for log in logs]

    def key_epochs_started(self, *, from_block: int = 0) -> list[tuple[int, int, int]]:
        """(epoch, id of the member that started it, block) of every KeyEpochStarted, oldest first.

        Epoch 1 begins at deployment without this event; the member that starts an epoch generates its key.
        """
        event = self.contract.events.KeyEpochStarted()
        logs = self.chain.event_logs(event, from_block=from_block) if from_block else self.chain.followed_logs(event)
        return [(int(log["args"]["epoch"]), int(log["args"]["startedBy"]), int(log["blockNumber"]))
                for log in logs]

    def _propose(self, function: Any) -> ProposalOutcome:
        receipt = self.chain.transact(function, min_gas=GOVERNANCE_MIN_GAS)
        created = self.contract.events.ProposalCreated().process_receipt(receipt.raw, errors=DISCARD)
        return ProposalOutcome(int(created[0]["args"]["proposalId"]), self._executed(receipt), receipt)

    def _executed(self, receipt: Receipt) -> bool:
        return bool(self.contract.events.ProposalExecuted().process_receipt(receipt.raw, errors=DISCARD))


def _member(member_id: int, raw: Any) -> Member:
    return Member(member_id, raw[0], MemberRole(raw[1]), MemberStatus(raw[2]), int(raw[3]), bytes(raw[4]), raw[5],
                  raw[6])


def _proposal(proposal_id: int, raw: Any) -> Proposal:
    return Proposal(proposal_id, ProposalKind(raw[0]), int(raw[1]), raw[2], MemberRole(raw[3]), bytes(raw[4]), raw[5],
                    int(raw[6]), int(raw[7]), int(raw[8]), bool(raw[9]), raw[10], raw[11])
