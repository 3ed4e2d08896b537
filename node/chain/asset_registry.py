"""Typed access to the AssetRegistry contract: pools, versions, custody, servicing, attestations.

Writes are estimated like other administrative calls (they are rare), except `anchorVersion`, whose cost
grows with the number of loan ids it publishes: it gets an explicit gas limit. Reads of history return
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

from node.chain.client import ChainClient, Receipt, translate_errors
from node.chain.errors import ChainError

# anchorVersion: fixed part (intrinsic, pool and version slots, the two events) plus, per loan id, its
# calldata (512), its share of the LoanIdsPublished data (256) and memory copying. bench/assets.py measures
# ~114,000 + ~775 per loan id; the margin stays small because the limit must fit in one block.
ANCHOR_BASE_GAS = 160_000
ANCHOR_GAS_PER_LOAN = 850
STATUS_COUNT = 7  # current, dpd30, dpd60, dpd90, defaulted, repaid, repurchased

# Event name -> the kind recorded in PoolEvent.kind.
_EVENT_KINDS = {
    "PoolRegistered": "registered",
    "VersionAnchored": "anchored",
    "CustodyTransferProposed": "transfer_proposed",
    "CustodyTransferCancelled": "transfer_cancelled",
    "CustodyTransferred": "transferred",
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
    pool_id: int
    version: int
    loan_ids: list[bytes]
    block_number: int
    log_index: int
    tx_hash: str


def default_anchor_gas(loan_count: int) -> int:
    return ANCHOR_BASE_GAS + ANCHOR_GAS_PER_LOAN * loan_count


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class AssetRegistryClient:
    def __init__(self, client: ChainClient, address: str) -> None:
        self.chain = client
        self.contract = client.contract("AssetRegistry", address)
        self.address = self.contract.address

    # -- writes ---------------------------------------------------------------------------------------
    def register_pool(self, metadata_hash: bytes) -> tuple[int, Receipt]:
        receipt = self.chain.transact(self.contract.functions.registerPool(metadata_hash))
        [event] = self.contract.events.PoolRegistered().process_receipt(receipt.raw, errors=DISCARD)
        return int(event["args"]["poolId"]), receipt

    def anchor_version(self, pool_id: int, root: bytes, total_principal: int, loan_ids: Sequence[bytes],
                       *, gas: int | None = None) -> AnchoredVersion:
        """Anchor a version with an explicit gas limit; a refused anchor raises the decoded custom error."""
        function = self.contract.functions.anchorVersion(pool_id, root, len(loan_ids), total_principal,
                                                         list(loan_ids))
        gas = gas or default_anchor_gas(len(loan_ids))
        block_limit = self.block_gas_limit()
        if gas > block_limit:
            raise ChainError(f"anchoring {len(loan_ids)} loan ids needs about {gas:,} gas, more than the chain's "
                             f"block gas limit {block_limit:,}: raise the consortium chain's gas limit or split "
                             "the pool")
        tx = self.chain.build_transaction(function, gas=gas)
        receipt = self.chain.send_transaction(tx)
        events = self.contract.events.VersionAnchored().process_receipt(receipt.raw, errors=DISCARD)
        if not events:
            raise ChainError(f"transaction {receipt.tx_hash} anchored no version of pool {pool_id}")
        version = int(events[0]["args"]["version"])
        return AnchoredVersion(pool_id, version, root, receipt.tx_hash, receipt.block_number, receipt.gas_used)

    def propose_transfer(self, pool_id: int, to: str) -> Receipt:
        return self.chain.transact(self.contract.functions.proposeTransfer(pool_id, Web3.to_checksum_address(to)))

    def accept_transfer(self, pool_id: int) -> Receipt:
        return self.chain.transact(self.contract.functions.acceptTransfer(pool_id))

    def cancel_transfer(self, pool_id: int) -> Receipt:
        return self.chain.transact(self.contract.functions.cancelTransfer(pool_id))

    def report_servicing(self, pool_id: int, version: int, period: int, status_root: bytes,
                         status_counts: Sequence[int]) -> Receipt:
        if len(status_counts) != STATUS_COUNT:
            raise ValueError(f"need {STATUS_COUNT} status counts, got {len(status_counts)}")
        return self.chain.transact(self.contract.functions.reportServicing(
            pool_id, version, period, status_root, list(status_counts)))

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

    def verify_loan(self, pool_id: int, version: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """The contract's own check of a loan proof against the anchored root."""
        return bool(self.chain.call(self.contract.functions.verifyLoan(pool_id, version, leaf, list(proof))))

    # -- history --------------------------------------------------------------------------------------
    def pool_events(self, pool_id: int, *, to_block: int | str = "latest") -> list[PoolEvent]:
        """Every event of `pool_id` except LoanIdsPublished, in chain order, with each transaction's sender."""
        found: list[PoolEvent] = []
        senders: dict[str, str] = {}
        for name, kind in _EVENT_KINDS.items():
            with translate_errors(self.chain.rpc_url):
                logs = getattr(self.contract.events, name)().get_logs(
                    from_block=0, to_block=to_block, argument_filters={"poolId": pool_id})
            for log in logs:
                tx_hash = log["transactionHash"].to_0x_hex()
                if tx_hash not in senders:
                    senders[tx_hash] = self.sender_of(tx_hash)
                args = {k: _plain(v) for k, v in dict(log["args"]).items()}
                found.append(PoolEvent(kind, pool_id, int(log["blockNumber"]), int(log["logIndex"]), tx_hash,
                                       senders[tx_hash], args))
        found.sort(key=lambda e: (e.block_number, e.log_index))
        return found

    def published_loan_ids(self, *, from_block: int = 0, to_block: int | str = "latest",
                           pool_id: int | None = None) -> list[PublishedLoanIds]:
        """LoanIdsPublished events in chain order (the feed of every node's double-financing mirror)."""
        filters = {"poolId": pool_id} if pool_id is not None else {}
        with translate_errors(self.chain.rpc_url):
            logs = self.contract.events.LoanIdsPublished().get_logs(from_block=from_block, to_block=to_block,
                                                                     argument_filters=filters)
        published = [PublishedLoanIds(int(log["args"]["poolId"]), int(log["args"]["version"]),
                                      [bytes(i) for i in log["args"]["loanIds"]], int(log["blockNumber"]),
                                      int(log["logIndex"]), log["transactionHash"].to_0x_hex()) for log in logs]
        published.sort(key=lambda p: (p.block_number, p.log_index))
        return published

    def pools_registered_by(self, originator_member_id: int, metadata_hash: bytes, *,
                            from_block: int = 0) -> list[int]:
        """Ids of the pools a member registered with this metadata hash (finds a registration whose receipt
        was lost to a crash)."""
        with translate_errors(self.chain.rpc_url):
            logs = self.contract.events.PoolRegistered().get_logs(
                from_block=from_block, argument_filters={"originatorMemberId": originator_member_id})
        return [int(log["args"]["poolId"]) for log in logs if bytes(log["args"]["metadataHash"]) == metadata_hash]

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
