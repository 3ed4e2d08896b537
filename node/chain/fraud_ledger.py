"""Typed access to the FraudLedger contract: packed records, batch roots, publication and reactions.

Records travel as packed calldata (`RECORD_BYTES` bytes each, big-endian, see IFraudLedger) under the
OpenZeppelin StandardMerkleTree root of their leaf encoding. Publication uses an explicit gas limit (no
estimate round trip on the hot path) and is split into build / sign / send / wait so that a publisher can
persist the signed transaction before sending it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_typing import HexStr
from web3 import Web3

from node.chain.client import ChainClient, Receipt, translate_errors
from node.chain.errors import ChainError, ContractRevert
from node.merkle import StandardMerkleTree

RECORD_BYTES = 109  # 32 + 1 + 1 + 1 + 5 + 5 + 32 + 32
MAX_BATCH_RECORDS = 5000
LEAF_ENCODING: tuple[str, ...] = ("bytes32", "uint8", "uint8", "uint8", "uint40", "uint40", "bytes32", "bytes32")
LeafValues = tuple[bytes, int, int, int, int, int, bytes, bytes]  # a record's fields in LEAF_ENCODING order

# Explicit gas of publishBatch: a fixed part (intrinsic 21,000, two header slots, the root index, the batch
# counter, the registry calls and the event) plus calldata per record (at most 16 * 109 = 1,744 gas).
# Gas is free on the consortium chain, so the limit is generous rather than tight.
PUBLISH_BASE_GAS = 160_000
PUBLISH_GAS_PER_RECORD = 2_100

# indicator | identifierType, category, confidence | validFrom, validUntil (5 bytes each: high byte + u32)
# | evidenceHash | caseRefHash
_RECORD = struct.Struct(">32s3B" + "BI" + "BI" + "32s32s")
assert _RECORD.size == RECORD_BYTES


@dataclass(frozen=True)
class LedgerRecord:
    """One fraud-indicator record, as packed in `publishBatch` calldata and hashed into the Merkle tree."""

    indicator: bytes
    identifier_type: int
    category: int
    confidence: int
    valid_from: int
    valid_until: int
    evidence_hash: bytes
    case_ref_hash: bytes

    def leaf_values(self) -> LeafValues:
        """The values of the record's Merkle leaf, in `LEAF_ENCODING` order."""
        return (self.indicator, self.identifier_type, self.category, self.confidence, self.valid_from,
                self.valid_until, self.evidence_hash, self.case_ref_hash)


@dataclass(frozen=True)
class PublishedBatch:
    batch_id: int
    root: bytes
    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class SignedPublish:
    """A signed publishBatch transaction: what the publisher persists before sending."""

    raw: bytes
    tx_hash: str
    nonce: int


@dataclass(frozen=True)
class MinedPublish:
    """Where a root was published on chain (found by the root, whichever transaction carried it)."""

    batch_id: int
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class OwnBatch:
    """A batch this signer's member published, with its records as decoded from the transaction's input."""

    mined: MinedPublish
    epoch: int
    root: bytes
    nonce: int
    records: list[LedgerRecord]


@dataclass(frozen=True)
class BatchInfo:
    batch_id: int
    root: bytes
    reporter_member_id: int
    epoch: int
    count: int
    published_at: int


def pack_records(records: Sequence[LedgerRecord]) -> bytes:
    """The packed calldata of `records`; raises ValueError if a field does not fit its width."""
    pack = _RECORD.pack
    parts: list[bytes] = []
    try:
        for r in records:
            if len(r.indicator) != 32 or len(r.evidence_hash) != 32 or len(r.case_ref_hash) != 32:
                raise ValueError(f"record hashes must be 32 bytes: {r!r}")
            parts.append(pack(r.indicator, r.identifier_type, r.category, r.confidence,
                              r.valid_from >> 32, r.valid_from & 0xFFFFFFFF,
                              r.valid_until >> 32, r.valid_until & 0xFFFFFFFF,
                              r.evidence_hash, r.case_ref_hash))
    except struct.error as exc:
        raise ValueError(f"record field out of range: {exc}") from exc
    return b"".join(parts)


def unpack_leaf_values(data: bytes) -> list[LeafValues]:
    """The records of packed calldata as leaf values, without building LedgerRecords (the indexer's hot path);
    raises ValueError unless the length is a multiple of RECORD_BYTES."""
    if len(data) % RECORD_BYTES != 0:
        raise ValueError(f"packed records are {len(data)} bytes, not a multiple of {RECORD_BYTES}")
    return [(ind, kind, cat, conf, (vf_hi << 32) | vf_lo, (vu_hi << 32) | vu_lo, ev, case)
            for ind, kind, cat, conf, vf_hi, vf_lo, vu_hi, vu_lo, ev, case in _RECORD.iter_unpack(data)]


def unpack_records(data: bytes) -> list[LedgerRecord]:
    """The records of packed calldata; raises ValueError unless the length is a multiple of RECORD_BYTES."""
    return [LedgerRecord(*values) for values in unpack_leaf_values(data)]


def leaf_values_root(leaves: Sequence[LeafValues]) -> bytes:
    """The StandardMerkleTree root of records given as leaf values."""
    if not leaves:
        raise ValueError("a batch needs at least one record")
    return StandardMerkleTree.root_of(leaves, LEAF_ENCODING)


def batch_root(records: Sequence[LedgerRecord]) -> bytes:
    """The StandardMerkleTree root of `records` (what publishBatch anchors)."""
    return leaf_values_root([r.leaf_values() for r in records])


def default_publish_gas(count: int) -> int:
    return PUBLISH_BASE_GAS + PUBLISH_GAS_PER_RECORD * count


class FraudLedgerClient:
    def __init__(self, client: ChainClient, address: str) -> None:
        self.chain = client
        self.contract = client.contract("FraudLedger", address)
        self.address = self.contract.address
        self._registry_address: str | None = None  # fixed at the ledger's deployment, read once

    # -- publication ----------------------------------------------------------------------------------
    def build_publish_tx(self, epoch: int, records: Sequence[LedgerRecord], gas: int | None = None,
                         *, root: bytes | None = None) -> dict[str, Any]:
        """The unsigned publishBatch transaction (nonce filled in by ChainClient.sign)."""
        if root is None:
            root = batch_root(records)
        if gas is None:
            gas = default_publish_gas(len(records))
        function = self.contract.functions.publishBatch(epoch, root, pack_records(records))
        return self.chain.build_transaction(function, gas=gas)

    def sign_publish(self, epoch: int, records: Sequence[LedgerRecord], *, root: bytes, nonce: int,
                     gas: int | None = None) -> SignedPublish:
        """Sign publishBatch with an explicit nonce; nothing is sent."""
        tx = {**self.build_publish_tx(epoch, records, gas, root=root), "nonce": nonce}
        tx.pop("from", None)
        raw = self.chain._require_signer().sign_transaction(tx)
        return SignedPublish(raw, Web3.keccak(raw).to_0x_hex(), nonce)

    def send_raw(self, raw: bytes) -> str:
        """Broadcast a signed transaction; a node that already has it in its pool is not an error (`send_signed`)."""
        return self.chain.send_signed(raw)

    def replaced_sender(self, raw: bytes) -> str | None:
        """The sender of the signed transaction `raw` if it is not this client's signer (a key the bank replaced since,
        node.signer_switch); None if it is."""
        sender = Web3.to_checksum_address(Account.recover_transaction(raw))
        return None if sender == Web3.to_checksum_address(self.chain._require_signer().address) else sender

    def has_pending(self, address: str) -> bool:
        """Whether `address` has transactions in the pool, not mined yet (its pending count is above its mined one)."""
        checksum = Web3.to_checksum_address(address)
        with translate_errors(self.chain.rpc_url):
            return int(self.chain.w3.eth.get_transaction_count(checksum, "pending")) > \
                int(self.chain.w3.eth.get_transaction_count(checksum, "latest"))

    def confirmed_nonce(self) -> int:
        """The signer's count of mined transactions (nonces below it are used up)."""
        with translate_errors(self.chain.rpc_url):
            return int(self.chain.w3.eth.get_transaction_count(
                Web3.to_checksum_address(self.chain._require_signer().address), "latest"))

    def pending_nonce(self) -> int:
        """The signer's count of transactions mined or waiting to be (a nonce above it follows a gap that nothing
        fills: the chain lost the transactions below it)."""
        return self.chain._pending_nonce()

    def receipt_of(self, tx_hash: str) -> Receipt | None:
        """The receipt of a mined transaction, None while it is not mined (or unknown)."""
        return self.chain.receipt_of(tx_hash)

    def wait_published(self, tx_hash: str, root: bytes) -> MinedPublish:
        """Wait for a publishBatch receipt. A refused duplicate root means an earlier send already published
        it: that batch is returned, not an error."""
        try:
            receipt = self.chain.wait_for_receipt(tx_hash, self._replayable(tx_hash))
        except ContractRevert as revert:
            if revert.error_name != "FraudLedgerDuplicateBatch":
                raise
        else:
            published = self.published_from(receipt, root)
            return MinedPublish(published.batch_id, tx_hash, receipt.block_number)
        found = self.find_published(root)
        if found is None:
            raise ChainError(f"root 0x{root.hex()} was refused as a duplicate but no batch carries it")
        return found

    def _replayable(self, tx_hash: str) -> dict[str, Any]:
        """The fields of a sent transaction that a failure replay needs (the publisher has only raw bytes)."""
        with translate_errors(self.chain.rpc_url):
            tx = self.chain.w3.eth.get_transaction(HexStr(tx_hash))
        return {"from": tx["from"], "to": tx["to"], "data": tx["input"], "gas": int(tx["gas"])}

    def find_published(self, root: bytes) -> MinedPublish | None:
        """This signer's member's batch of `root`, located by the contract's root index and its event (another
        member's batch of the same root is not ours: its records are not necessarily ours)."""
        reporter = self.reporter_member_id()
        batch_id = self.batch_id_of_root(root, reporter)
        if batch_id == 0:
            return None
        logs = self.chain.event_logs(self.contract.events.BatchPublished(),
                                     argument_filters={"root": root, "reporterMemberId": reporter})
        for log in logs:
            if int(log["args"]["batchId"]) == batch_id:
                return MinedPublish(batch_id, log["transactionHash"].to_0x_hex(), int(log["blockNumber"]))
        raise ChainError(f"batch {batch_id} of root 0x{root.hex()} has no BatchPublished event")

    def own_batches_since(self, from_block: int) -> list[OwnBatch]:
        """The batches this signer's member published from block `from_block` on, oldest first."""
        reporter = self.reporter_member_id()
        if reporter == 0:
            return []
        logs = self.chain.event_logs(self.contract.events.BatchPublished(), from_block=from_block,
                                     argument_filters={"reporterMemberId": reporter})
        batches = []
        for log in logs:  # in chain order (event_logs)
            tx_hash = log["transactionHash"].to_0x_hex()
            try:
                nonce, epoch, root, records = self._publish_call(tx_hash)
            except ValueError as exc:
                raise ChainError(f"transaction {tx_hash} emitted BatchPublished: {exc}") from exc
            if root != bytes(log["args"]["root"]):
                raise ChainError(f"transaction {tx_hash} emitted BatchPublished but is no publishBatch of its root")
            if batch_root(records) != root:
                raise ChainError(f"the records of transaction {tx_hash} do not hash to its root")
            batches.append(OwnBatch(MinedPublish(int(log["args"]["batchId"]), tx_hash, int(log["blockNumber"])),
                                    epoch, root, nonce, records))
        return batches

    def publish_batch(self, epoch: int, records: Sequence[LedgerRecord], *, gas: int | None = None) -> PublishedBatch:
        """Publish `records` under their root with an explicit gas limit and wait for the receipt.

        A refused batch (e.g. a duplicate root) raises the decoded custom error, replayed from the mined
        failure; nothing is recorded on chain.
        """
        root = batch_root(records)
        receipt = self.chain.send_transaction(self.build_publish_tx(epoch, records, gas, root=root))
        return self.published_from(receipt, root)

    def published_from(self, receipt: Receipt, root: bytes) -> PublishedBatch:
        """The PublishedBatch of a mined publishBatch receipt (for callers that send pre-signed txs)."""
        events = self.contract.events.BatchPublished().process_receipt(receipt.raw)
        batch_ids = [int(e["args"]["batchId"]) for e in events if bytes(e["args"]["root"]) == root]
        if not batch_ids:
            raise ChainError(f"transaction {receipt.tx_hash} published no batch with root 0x{root.hex()}")
        return PublishedBatch(batch_ids[0], root, receipt.tx_hash, receipt.block_number, receipt.gas_used)

    # -- reactions ------------------------------------------------------------------------------------
    def endorse(self, indicator: bytes, confidence: int) -> Receipt:
        return self.chain.transact(self.contract.functions.endorse(indicator, confidence))

    def dispute(self, indicator: bytes, reason_code: int) -> Receipt:
        return self.chain.transact(self.contract.functions.dispute(indicator, reason_code))

    def confirm(self, batch_id: int, indicator: bytes) -> Receipt:
        return self.chain.transact(self.contract.functions.confirm(batch_id, indicator))

    def revoke(self, batch_id: int, indicator: bytes, reason_code: int) -> Receipt:
        return self.chain.transact(self.contract.functions.revoke(batch_id, indicator, reason_code))

    # -- reads ----------------------------------------------------------------------------------------
    def batch_count(self) -> int:
        return int(self.chain.call(self.contract.functions.batchCount()))

    def batch_id_of_root(self, root: bytes, reporter_member_id: int | None = None) -> int:
        """The id of the batch in which a member (default: this signer's) published `root`, or 0 if it did not."""
        if reporter_member_id is None:
            reporter_member_id = self.reporter_member_id()
        return int(self.chain.call(self.contract.functions.batchIdOfRoot(reporter_member_id, root)))

    def reporter_member_id(self) -> int:
        """The registry member id of this client's signer (0 if it is no member's current signing address)."""
        if self._registry_address is None:
            self._registry_address = str(self.chain.call(self.contract.functions.registry()))
        registry = self.chain.contract("AllianceRegistry", self._registry_address)
        signer = Web3.to_checksum_address(self.chain._require_signer().address)
        return int(self.chain.call(registry.functions.memberIdOf(signer)))

    def batch(self, batch_id: int) -> BatchInfo:
        root, reporter, epoch, count, published_at = self.chain.call(self.contract.functions.batch(batch_id))
        return BatchInfo(batch_id, bytes(root), int(reporter), int(epoch), int(count), int(published_at))

    def records_of_transaction(self, tx_hash: str) -> tuple[int, bytes, list[LedgerRecord]]:
        """(epoch, root, records) of a publishBatch transaction, decoded from its input."""
        _, epoch, root, records = self._publish_call(tx_hash)
        return epoch, root, records

    def _publish_call(self, tx_hash: str) -> tuple[int, int, bytes, list[LedgerRecord]]:
        """(nonce, epoch, root, records) of a publishBatch transaction; ValueError for any other transaction."""
        with translate_errors(self.chain.rpc_url):
            tx = self.chain.w3.eth.get_transaction(HexStr(tx_hash))
        if tx.get("to") is None or Web3.to_checksum_address(str(tx["to"])) != self.address:
            raise ValueError(f"transaction {tx_hash} is not addressed to the FraudLedger at {self.address}")
        function, args = self.contract.decode_function_input(tx["input"])
        if function.fn_name != "publishBatch":
            raise ValueError(f"transaction {tx_hash} calls {function.fn_name}, not publishBatch")
        return int(tx["nonce"]), int(args["epoch"]), bytes(args["root"]), unpack_records(bytes(args["records"]))
