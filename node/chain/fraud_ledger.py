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

from eth_typing import HexStr
from web3 import Web3

from node.chain.client import ChainClient, Receipt, translate_errors
from node.chain.errors import ChainError
from node.merkle import StandardMerkleTree

RECORD_BYTES = 109  # 32 + 1 + 1 + 1 + 5 + 5 + 32 + 32
MAX_BATCH_RECORDS = 5000
LEAF_ENCODING: tuple[str, ...] = ("bytes32", "uint8", "uint8", "uint8", "uint40", "uint40", "bytes32", "bytes32")

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

    def leaf_values(self) -> tuple[bytes, int, int, int, int, int, bytes, bytes]:
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


def unpack_records(data: bytes) -> list[LedgerRecord]:
    """The records of packed calldata; raises ValueError unless the length is a multiple of RECORD_BYTES."""
    if len(data) % RECORD_BYTES != 0:
        raise ValueError(f"packed records are {len(data)} bytes, not a multiple of {RECORD_BYTES}")
    return [LedgerRecord(ind, kind, cat, conf, (vf_hi << 32) | vf_lo, (vu_hi << 32) | vu_lo, ev, case)
            for ind, kind, cat, conf, vf_hi, vf_lo, vu_hi, vu_lo, ev, case in _RECORD.iter_unpack(data)]


def batch_root(records: Sequence[LedgerRecord]) -> bytes:
    """The StandardMerkleTree root of `records` (what publishBatch anchors)."""
    if not records:
        raise ValueError("a batch needs at least one record")
    return bytes(StandardMerkleTree.of([r.leaf_values() for r in records], LEAF_ENCODING).root)


def default_publish_gas(count: int) -> int:
    return PUBLISH_BASE_GAS + PUBLISH_GAS_PER_RECORD * count


class FraudLedgerClient:
    def __init__(self, client: ChainClient, address: str) -> None:
        self.chain = client
        self.contract = client.contract("FraudLedger", address)
        self.address = self.contract.address

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

    def batch_id_of_root(self, root: bytes) -> int:
        """The id of the batch that published `root`, or 0 if none did."""
        return int(self.chain.call(self.contract.functions.batchIdOfRoot(root)))

    def batch(self, batch_id: int) -> BatchInfo:
        root, reporter, epoch, count, published_at = self.chain.call(self.contract.functions.batch(batch_id))
        return BatchInfo(batch_id, bytes(root), int(reporter), int(epoch), int(count), int(published_at))

    def records_of_transaction(self, tx_hash: str) -> tuple[int, bytes, list[LedgerRecord]]:
        """(epoch, root, records) of a publishBatch transaction, decoded from its input."""
        with translate_errors(self.chain.rpc_url):
            tx = self.chain.w3.eth.get_transaction(HexStr(tx_hash))
        if tx.get("to") is None or Web3.to_checksum_address(str(tx["to"])) != self.address:
            raise ValueError(f"transaction {tx_hash} is not addressed to the FraudLedger at {self.address}")
        function, args = self.contract.decode_function_input(tx["input"])
        if function.fn_name != "publishBatch":
            raise ValueError(f"transaction {tx_hash} calls {function.fn_name}, not publishBatch")
        return int(args["epoch"]), bytes(args["root"]), unpack_records(bytes(args["records"]))
