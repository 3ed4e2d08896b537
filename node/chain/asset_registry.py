"""Typed access to the AssetRegistry contract: pools, versions, custody, servicing, attestations.

Writes are estimated like other administrative calls (they are rare), except `anchorVersion` and
`publishLoanIds`, whose cost grows with the number of loan ids they publish: they get an explicit gas limit,
checked against the block gas limit (`loan_id_chunk_size` sizes chunks well under it). Reads of history return
events in chain order with the transaction sender, so that a verifier can check who acted at each block
without trusting any node's database. Historical views (`at_block`) need an archive node (anvil and Besu
with `--data-storage-format=BONSAI --bonsai-historic-block-limit` or FOREST keep them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_typing import HexStr
from web3 import Web3
from web3.logs import DISCARD
from web3.types import BlockIdentifier

from node.chain.client import ChainClient, Receipt, translate_errors
from node.chain.errors import ChainError, MalformedChainAnswer

# anchorVersion: fixed part (intrinsic, pool, version and count slots, the two events) plus, per loan id, its
# calldata (512), its share of the LoanIdsPublished data (256), memory copying and the memory expansion that
# grows with the chunk. publishLoanIds: the same without the version slot. Measured (tests/contracts, bench):
# ~138,000 + ~775 per id (anchor), ~50,000 + ~780 per id (publish), ~793 per id all in at 4,000-id chunks.
ANCHOR_BASE_GAS = 180_000
PUBLISH_BASE_GAS = 80_000
ANCHOR_GAS_PER_LOAN = 850
# Ids per transaction: 4,000 ids are 128,000 bytes of calldata, under the 128 KiB transaction size that
# geth-derived pools accept, and about 3.4M gas, where the per-transaction cost and the memory expansion
# (quadratic in the chunk) together add the least gas per id.
DEFAULT_CHUNK_IDS = 4_000
# A chunk takes at most this share of the block gas limit, leaving room for the other banks' transactions.
CHUNK_BLOCK_SHARE = 0.25
STATUS_COUNT = 7  # current, dpd30, dpd60, dpd90, defaulted, repaid, repurchased
# Bytes of packed statuses (two loans a byte) per servicing transaction: 200,000 loans, under the 128 KiB a
# transaction may take (as for loan ids) and about 2.5M gas; a million loans take the report and four chunks.
STATUS_CHUNK_BYTES = 100_000

# Event name -> the kind recorded in PoolEvent.kind.
_EVENT_KINDS = {
    "PoolRegistered": "registered",
    "VersionAnchored": "anchored",
    "CustodyTransferProposed": "transfer_proposed",
    "CustodyTransferCancelled": "transfer_cancelled",
    "CustodyTransferred": "transferred",
    "SuccessorProposed": "successor_proposed",
    "SuccessorVoted": "successor_voted",
    "CustodySucceeded": "succeeded",
    "ServicingReported": "servicing",
    "AuditorAttested": "attested",
}


@dataclass(frozen=True)
class PoolInfo:
    pool_id: int
    originator_member_id: int
    custodian_member_id: int
    pending_custodian_member_id: int
    metadata_hash: bytes
    version_count: int
    last_servicing_period: int
    registered_at: int


@dataclass(frozen=True)
class SuccessionInfo:
    """A pool's succession vote: `successor_member_id` is 0 while none is open; `votes` count only members still
    active; `required` is the registry's quorum now."""

    pool_id: int
    round: int
    successor_member_id: int
    votes: int
    required: int


@dataclass(frozen=True)
class VersionInfo:
    pool_id: int
    version: int
    root: bytes
    loan_count: int
    total_principal: int
    anchored_at: int
    anchored_by_member_id: int


@dataclass(frozen=True)
class AnchoredVersion:
    pool_id: int
    version: int
    root: bytes
    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class PublishedChunk:
    """One publishLoanIds transaction: `count` ids of a version, starting at `offset`."""

    pool_id: int
    version: int
    offset: int
    count: int
    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class SentChunk:
    """A publishLoanIds transaction sent but not yet known to be mined (see `send_loan_ids`)."""

    pool_id: int
    version: int
    offset: int
    count: int
    tx_hash: str
    tx: dict[str, Any]


@dataclass(frozen=True)
class PoolEvent:
    """One AssetRegistry event of a pool, in chain order, with the account that sent its transaction."""

    kind: str
    pool_id: int
    block_number: int
    log_index: int
    tx_hash: str
    sender: str
    args: dict[str, Any]


@dataclass(frozen=True)
class PublishedLoanIds:
    """One LoanIdsPublished event: a chunk of a version's ids, at `offset` in the version."""

    pool_id: int
    version: int
    offset: int
    loan_ids: list[bytes]
    block_number: int
    log_index: int
    tx_hash: str


@dataclass(frozen=True)
class ReportedStatuses:
    """One LoanStatusesReported event: a chunk of a servicing period's packed statuses (`unpack_statuses`), at byte
    `offset` of them."""

    pool_id: int
    period: int
    offset: int
    statuses: bytes
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class StatusesProgress:
    """How far the statuses of a pool's latest servicing period are published (bytes)."""

    period: int
    published: int
    length: int


def default_anchor_gas(loan_count: int) -> int:
    """Gas limit of an anchorVersion carrying `loan_count` ids."""
    return ANCHOR_BASE_GAS + ANCHOR_GAS_PER_LOAN * loan_count


def default_publish_gas(loan_count: int) -> int:
    """Gas limit of a publishLoanIds chunk of `loan_count` ids."""
    return PUBLISH_BASE_GAS + ANCHOR_GAS_PER_LOAN * loan_count


def loan_id_chunk_size(block_gas_limit: int, *, max_ids: int = DEFAULT_CHUNK_IDS) -> int:
    """Ids per anchoring transaction: at most `max_ids`, and within `CHUNK_BLOCK_SHARE` of the block gas limit."""
    fits = (int(block_gas_limit * CHUNK_BLOCK_SHARE) - ANCHOR_BASE_GAS) // ANCHOR_GAS_PER_LOAN
    if fits < 1:
        raise ChainError(f"the chain's block gas limit {block_gas_limit:,} leaves no room for loan ids")
    return max(1, min(max_ids, fits))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _topic_word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _published_loan_ids(log: dict[str, Any]) -> PublishedLoanIds:
    """One raw LoanIdsPublished log: topics (signature, poolId, version), data (offset, then the bytes32[] of ids:
    its head offset, length and words)."""
    try:
        topics, data = log["topics"], bytes.fromhex(log["data"][2:])
        count = int.from_bytes(data[64:96], "big")
        if len(topics) != 3 or int.from_bytes(data[32:64], "big") != 64 or len(data) != 96 + 32 * count:
            raise ValueError("not the event's layout")
        return PublishedLoanIds(int(topics[1], 16), int(topics[2], 16), int.from_bytes(data[:32], "big"),
                                [data[i:i + 32] for i in range(96, len(data), 32)], int(log["blockNumber"], 16),
                                int(log["logIndex"], 16), log["transactionHash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedChainAnswer(f"malformed LoanIdsPublished log in block {log.get('blockNumber')}: {exc}") from exc


def _reported_statuses(log: dict[str, Any]) -> ReportedStatuses:
    """One raw LoanStatusesReported log: topics (signature, poolId, period), data (offset, then the bytes' head
    offset, length and padded content)."""
    try:
        topics, data = log["topics"], bytes.fromhex(log["data"][2:])
        length = int.from_bytes(data[64:96], "big")
        if len(topics) != 3 or int.from_bytes(data[32:64], "big") != 64 or len(data) != 96 + -(-length // 32) * 32:
            raise ValueError("not the event's layout")
        return ReportedStatuses(int(topics[1], 16), int(topics[2], 16), int.from_bytes(data[:32], "big"),
                                data[96:96 + length], int(log["blockNumber"], 16), log["transactionHash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedChainAnswer(f"malformed LoanStatusesReported log in block {log.get('blockNumber')}: "
                                   f"{exc}") from exc


class AssetRegistryClient:
    def __init__(self, client: ChainClient, address: str) -> None:
        self.chain = client
        self.contract = client.contract("AssetRegistry", address)
        self.address = self.contract.address

    # -- writes ---------------------------------------------------------------------------------------
    def register_pool(self, metadata_hash: bytes) -> tuple[int, Receipt]:
        """Register a pool; a hash this member registered before raises `AssetRegistryPoolAlreadyRegistered`
        with that pool's id, whether refused at the gas estimate or mined and reverted."""
        receipt = self.chain.transact(self.contract.functions.registerPool(metadata_hash))
        [event] = self.contract.events.PoolRegistered().process_receipt(receipt.raw, errors=DISCARD)
        return int(event["args"]["poolId"]), receipt

    def anchor_version(self, pool_id: int, root: bytes, total_principal: int, loan_ids: Sequence[bytes],
                       *, loan_count: int | None = None, gas: int | None = None) -> AnchoredVersion:
        """Anchor a version of `loan_count` loans (default: all in `loan_ids`) with its first chunk of ids,
        under an explicit gas limit; a refused anchor raises the decoded custom error."""
        count = len(loan_ids) if loan_count is None else loan_count
        function = self.contract.functions.anchorVersion(pool_id, root, count, total_principal, list(loan_ids))
        tx = self._within_block(function, gas or default_anchor_gas(len(loan_ids)), len(loan_ids))
        receipt = self.chain.send_transaction(tx)
        events = self.contract.events.VersionAnchored().process_receipt(receipt.raw, errors=DISCARD)
        if not events:
            raise ChainError(f"transaction {receipt.tx_hash} anchored no version of pool {pool_id}")
        version = int(events[0]["args"]["version"])
        return AnchoredVersion(pool_id, version, root, receipt.tx_hash, receipt.block_number, receipt.gas_used)

    def publish_loan_ids(self, pool_id: int, version: int, offset: int, loan_ids: Sequence[bytes], *,
                         gas: int | None = None) -> PublishedChunk:
        """Publish the chunk of a version's ids that starts at `offset` (the contract refuses any other start,
        so a chunk already mined is never published twice) and wait for it to be mined."""
        return self.wait_loan_ids(self.send_loan_ids(pool_id, version, offset, loan_ids, gas=gas))

    def send_loan_ids(self, pool_id: int, version: int, offset: int, loan_ids: Sequence[bytes], *,
                      gas: int | None = None, block_gas_limit: int | None = None) -> SentChunk:
        """Sign and send a publishLoanIds chunk without waiting, so that several can share a block; the nonce
        order keeps them in order, and the offset check refuses any that would land out of place."""
        function = self.contract.functions.publishLoanIds(pool_id, version, offset, list(loan_ids))
        tx = self._within_block(function, gas or default_publish_gas(len(loan_ids)), len(loan_ids),
                                block_gas_limit)
        tx_hash = self.chain.sign_and_send(tx)
        return SentChunk(pool_id, version, offset, len(loan_ids), tx_hash, tx)

    def wait_loan_ids(self, sent: SentChunk) -> PublishedChunk:
        """The receipt of a sent chunk; a reverted chunk raises the decoded custom error."""
        receipt = self.chain.wait_for_receipt(sent.tx_hash, sent.tx)
        return PublishedChunk(sent.pool_id, sent.version, sent.offset, sent.count, receipt.tx_hash,
                              receipt.block_number, receipt.gas_used)

    def _within_block(self, function: Any, gas: int, id_count: int,
                      block_gas_limit: int | None = None) -> dict[str, Any]:
        block_limit = block_gas_limit or self.block_gas_limit()
        if gas > block_limit:
            raise ChainError(f"publishing {id_count:,} loan ids in one transaction needs about {gas:,} gas, more "
                             f"than the chain's block gas limit {block_limit:,}: send smaller chunks")
        return self.chain.build_transaction(function, gas=gas)

    def propose_transfer(self, pool_id: int, to: str) -> Receipt:
        return self.chain.transact(self.contract.functions.proposeTransfer(pool_id, Web3.to_checksum_address(to)))

    def accept_transfer(self, pool_id: int) -> Receipt:
        return self.chain.transact(self.contract.functions.acceptTransfer(pool_id))

    def cancel_transfer(self, pool_id: int) -> Receipt:
        return self.chain.transact(self.contract.functions.cancelTransfer(pool_id))

    def propose_successor(self, pool_id: int, successor: str) -> tuple[int, Receipt]:
        """Open a succession vote for a pool of a removed custodian; returns the round and the receipt."""
        receipt = self.chain.transact(self.contract.functions.proposeSuccessor(
            pool_id, Web3.to_checksum_address(successor)))
        [event] = self.contract.events.SuccessorProposed().process_receipt(receipt.raw, errors=DISCARD)
        return int(event["args"]["round"]), receipt

    def vote_successor(self, pool_id: int, round_: int) -> Receipt:
        return self.chain.transact(self.contract.functions.voteSuccessor(pool_id, round_))

    def succession(self, pool_id: int) -> SuccessionInfo:
        info, votes = self.chain.call(self.contract.functions.succession(pool_id))
        registry = self.chain.contract("AllianceRegistry", self.registry_address())
        required = int(self.chain.call(registry.functions.requiredVotes()))
        return SuccessionInfo(pool_id, int(info[1]), int(info[0]), int(votes), required)

    def report_servicing(self, pool_id: int, version: int, period: int, status_root: bytes,
                         status_counts: Sequence[int], statuses: bytes) -> Receipt:
        """Report a period with the first chunk of the version's packed statuses (`pack_statuses`); the rest follow by
        `publish_statuses`."""
        if len(status_counts) != STATUS_COUNT:
            raise ValueError(f"need {STATUS_COUNT} status counts, got {len(status_counts)}")
        return self.chain.transact(self.contract.functions.reportServicing(
            pool_id, version, period, status_root, list(status_counts), statuses))

    def publish_statuses(self, pool_id: int, period: int, offset: int, statuses: bytes) -> Receipt:
        """Publish the chunk of the latest period's packed statuses that starts at byte `offset` (the contract refuses
        any other start, so a chunk already mined is never published twice)."""
        return self.chain.transact(self.contract.functions.publishStatuses(pool_id, period, offset, statuses))

    def attest(self, pool_id: int, version: int, report_hash: bytes) -> Receipt:
        return self.chain.transact(self.contract.functions.attest(pool_id, version, report_hash))

    # -- reads ----------------------------------------------------------------------------------------
    def block_gas_limit(self) -> int:
        with translate_errors(self.chain.rpc_url):
            return int(self.chain.w3.eth.get_block("latest")["gasLimit"])

    def registry_address(self) -> str:
        return str(self.chain.call(self.contract.functions.registry()))

    def pool_count(self) -> int:
        return int(self.chain.call(self.contract.functions.poolCount()))

    def pool(self, pool_id: int) -> PoolInfo:
        raw = self.chain.call(self.contract.functions.pool(pool_id))
        return PoolInfo(pool_id, int(raw[0]), int(raw[1]), int(raw[2]), bytes(raw[3]), int(raw[4]), int(raw[5]),
                        int(raw[6]))

    def version(self, pool_id: int, version: int) -> VersionInfo:
        raw = self.chain.call(self.contract.functions.version(pool_id, version))
        return VersionInfo(pool_id, version, bytes(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]))

    def statuses_progress(self, pool_id: int) -> StatusesProgress:
        """The pool's latest servicing period and how many bytes of its statuses are published, of how many."""
        period, published, length = self.chain.call(self.contract.functions.statusesProgress(pool_id))
        return StatusesProgress(int(period), int(published), int(length))

    def loan_ids_published(self, pool_id: int, version: int, *, at_block: BlockIdentifier = "latest") -> int:
        """How many of the version's ids are published (all of them when it equals the loan count)."""
        with translate_errors(self.chain.rpc_url):
            return int(self.contract.functions.loanIdsPublished(pool_id, version).call(block_identifier=at_block))

    def verify_loan(self, pool_id: int, version: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """The contract's own check of a loan proof against the anchored root."""
        return bool(self.chain.call(self.contract.functions.verifyLoan(pool_id, version, leaf, list(proof))))

    # -- history --------------------------------------------------------------------------------------
    def pool_events(self, pool_id: int, *, to_block: int | str = "latest", after: tuple[int, int] | None = None,
                    limit: int | None = None) -> list[PoolEvent]:
        """Every event of `pool_id` except LoanIdsPublished, in chain order, with each transaction's sender: those
        after the (block number, log index) `after`, at most `limit` of them (None: all)."""
        # One head for every kind: read one by one up to a moving head, a later kind could show a block whose events
        # of an earlier kind were left out, and a page's cursor would step over them for good.
        last = self.chain.block_number() if to_block == "latest" else to_block
        logs: list[tuple[tuple[int, int], str, Any]] = []
        for name, kind in _EVENT_KINDS.items():
            for log in self.chain.event_logs(getattr(self.contract.events, name)(), to_block=last,
                                             from_block=0 if after is None else after[0],
                                             argument_filters={"poolId": pool_id}):
                position = (int(log["blockNumber"]), int(log["logIndex"]))
                if after is None or position > after:
                    logs.append((position, kind, log))
        logs.sort(key=lambda item: item[0])
        found: list[PoolEvent] = []
        senders: dict[str, str] = {}
        for (block_number, log_index), kind, log in logs[:limit]:  # a sender costs a call: only the page's
            tx_hash = log["transactionHash"].to_0x_hex()
            if tx_hash not in senders:
                senders[tx_hash] = self.sender_of(tx_hash)
            args = {k: _plain(v) for k, v in dict(log["args"]).items()}
            found.append(PoolEvent(kind, pool_id, block_number, log_index, tx_hash, senders[tx_hash], args))
        return found

    def published_loan_ids(self, *, from_block: int = 0, to_block: int | str = "latest",
                           pool_id: int | None = None, version: int | None = None) -> list[PublishedLoanIds]:
        """LoanIdsPublished events (chunks) in chain order: the feed of every node's double-financing mirror and of
        the verifier's double-financing check, which read every id on the chain. Decoded here from the raw logs:
        web3's decoder took over a minute for a million ids."""
        topics = [self.contract.events.LoanIdsPublished().topic,
                  None if pool_id is None else _topic_word(pool_id), None if version is None else _topic_word(version)]
        return [_published_loan_ids(log) for log in self.chain.raw_logs(self.address, topics, from_block=from_block,
                                                                         to_block=to_block)]

    def reported_statuses(self, pool_id: int, *, to_block: int | str = "latest") -> list[ReportedStatuses]:
        """The pool's LoanStatusesReported events (chunks of each period's packed statuses) in chain order, decoded
        from the raw logs like loan ids: a hundred thousand loans are 50 KB a period."""
        topics = [self.contract.events.LoanStatusesReported().topic, _topic_word(pool_id)]
        return [_reported_statuses(log) for log in self.chain.raw_logs(self.address, topics, to_block=to_block)]

    def pool_id_of(self, originator_member_id: int, metadata_hash: bytes) -> int | None:
        """The pool a member registered with this metadata hash, if any (the contract takes each hash once per
        member, so this finds a registration whose receipt was lost to a crash)."""
        pool_id = int(self.chain.call(self.contract.functions.poolIdOf(originator_member_id, metadata_hash)))
        return pool_id or None

    def sender_of(self, tx_hash: str) -> str:
        with translate_errors(self.chain.rpc_url):
            tx = self.chain.w3.eth.get_transaction(HexStr(tx_hash))
        return Web3.to_checksum_address(str(tx["from"]))

    def member_at(self, account: str, block_number: int) -> tuple[int, int, int]:
        """(member id, role, status) of `account` in the AllianceRegistry as of `block_number`."""
        registry = self.chain.contract("AllianceRegistry", self.registry_address())
        with translate_errors(self.chain.rpc_url):
            member_id = int(registry.functions.memberIdOf(Web3.to_checksum_address(account)).call(
                block_identifier=block_number))
            if member_id == 0:
                return 0, 0, 0
            raw = registry.functions.member(member_id).call(block_identifier=block_number)
        return member_id, int(raw[1]), int(raw[2])
