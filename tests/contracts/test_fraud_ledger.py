"""Contract tests of FraudLedger on a real anvil: batch publication, proofs, reactions and every custom error.

Records travel as packed calldata (109 bytes each) and are never stored: the tests build them with
`pack_records`, compute the root with the node's StandardMerkleTree, check that the mined transaction's
input decodes back to the records, and that `verifyRecord` accepts the node's proofs. Reverts are asserted
by exception class and decoded arguments, then the ledger's state is compared with a snapshot taken
before the call. Member ids are 1..3 in founder order (Bank A = 1).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import pytest
from eth_typing import HexStr
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD

from node.chain.client import Receipt
from node.chain.errors import (
    ContractRevert,
    FraudLedgerBatchTooLarge,
    FraudLedgerDuplicateBatch,
    FraudLedgerInvalidConfidence,
    FraudLedgerInvalidReason,
    FraudLedgerMalformedRecords,
    FraudLedgerNotMember,
    FraudLedgerNotReporter,
    FraudLedgerUnknownBatch,
    FraudLedgerUnknownEpoch,
)
from node.chain.registry import MemberRole
from node.merkle import StandardMerkleTree
from tests.conftest import Bank, Consortium, make_bank
from tests.contracts.registry_helpers import MINED_GAS, Governance, expect_mined_revert, fixed_gas_tx

RECORD_BYTES = 109  # 32 + 1 + 1 + 1 + 5 + 5 + 32 + 32
MAX_BATCH_RECORDS = 5000
LEAF_ENCODING = ["bytes32", "uint8", "uint8", "uint8", "uint40", "uint40", "bytes32", "bytes32"]
# Field order of IFraudLedger.Record, for building the struct argument of verifyRecord.
RECORD_FIELDS = ("indicator", "identifierType", "category", "confidence", "validFrom", "validUntil",
                 "evidenceHash", "caseRefHash")
WIDTHS = (32, 1, 1, 1, 5, 5, 32, 32)
GAS_BUDGET_PER_INDICATOR = 2_000

Row = tuple[bytes, int, int, int, int, int, bytes, bytes]


def make_records(count: int, seed: int = 1) -> list[Row]:
    """`count` realistic records: random 32-byte hashes, timestamps around 2025, one-year validity."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for _ in range(count):
        valid_from = 1_740_000_000 + rng.randrange(10_000_000)
        rows.append((rng.randbytes(32), rng.randrange(1, 6), rng.randrange(1, 10), rng.randrange(101),
                     valid_from, valid_from + 365 * 86_400, rng.randbytes(32), rng.randbytes(32)))
    return rows


def pack_records(rows: Sequence[Row]) -> bytes:
    """The 109-byte big-endian packing of IFraudLedger: bytes32|u8|u8|u8|u40|u40|bytes32|bytes32."""
    out = bytearray()
    for row in rows:
        for value, width in zip(row, WIDTHS, strict=True):
            out += value if isinstance(value, bytes) else cast(int, value).to_bytes(width, "big")
    return bytes(out)


def unpack_records(data: bytes) -> list[Row]:
    rows: list[Row] = []
    for start in range(0, len(data), RECORD_BYTES):
        fields: list[Any] = []
        offset = start
        for width in WIDTHS:
            chunk = data[offset:offset + width]
            fields.append(chunk if width == 32 else int.from_bytes(chunk, "big"))
            offset += width
        rows.append(tuple(fields))  # type: ignore[arg-type]
    return rows


def tree_of(rows: Sequence[Row]) -> StandardMerkleTree:
    return StandardMerkleTree.of(rows, LEAF_ENCODING)


def as_struct(row: Row) -> dict[str, Any]:
    return dict(zip(RECORD_FIELDS, row, strict=True))


class Ledger:
    """The consortium's FraudLedger, seen through each bank's own signer."""

    def __init__(self, consortium: Consortium) -> None:
        self.consortium = consortium
        self.banks = consortium.banks
        self.address = consortium.deployment.address("FraudLedger")
        self.reader = self.of(self.banks[0])
        self.client = self.banks[0].client

    def of(self, bank: Bank) -> Contract:
        return bank.client.contract("FraudLedger", self.address)

    def function(self, bank: Bank, name: str, *args: Any) -> ContractFunction:
        return getattr(self.of(bank).functions, name)(*args)  # type: ignore[no-any-return]

    def send(self, bank: Bank, name: str, *args: Any) -> Receipt:
        """Send `name(*args)` signed by `bank`, through the gas estimate (which raises the decoded error)."""
        return bank.client.transact(self.function(bank, name, *args))

    def publish(self, bank: Bank, rows: Sequence[Row], epoch: int = 1) -> Receipt:
        return self.send(bank, "publishBatch", epoch, tree_of(rows).root, pack_records(rows))

    def call(self, name: str, *args: Any) -> Any:
        return self.client.call(getattr(self.reader.functions, name)(*args))

    def batch(self, batch_id: int) -> dict[str, Any]:
        root, reporter, epoch, count, published_at = self.call("batch", batch_id)
        return {"root": root, "reporterMemberId": reporter, "epoch": epoch, "count": count,
                "publishedAt": published_at}

    def events(self, receipt: Receipt, name: str) -> list[dict[str, Any]]:
        event = getattr(self.reader.events, name)()
        return [dict(e["args"]) for e in event.process_receipt(receipt.raw, errors=DISCARD)]

    def snapshot(self, *roots: bytes) -> dict[str, Any]:
        count = self.call("batchCount")
        return {
            "count": count,
            "batches": [self.batch(i) for i in range(1, count + 1)],
            "roots": [self.call("batchIdOfRoot", member_id, r) for r in roots for member_id in (1, 2, 3)],
        }


@pytest.fixture
def ledger(consortium: Consortium) -> Ledger:
    return Ledger(consortium)


def expect_revert(ledger: Ledger, error: type[ContractRevert], arguments: dict[str, Any],
                  send: Callable[[], object], *roots: bytes) -> None:
    before = ledger.snapshot(*roots)
    with pytest.raises(error) as raised:
        send()
    assert type(raised.value) is error
    assert raised.value.arguments == arguments
    assert ledger.snapshot(*roots) == before


# ------------------------------------------------------------------------------------------------------
# Deployment and publication
# ------------------------------------------------------------------------------------------------------

def test_deployment_binds_registry_and_constants(ledger: Ledger) -> None:
    assert ledger.call("registry") == ledger.consortium.deployment.address("AllianceRegistry")
    assert ledger.call("RECORD_BYTES") == RECORD_BYTES
    assert ledger.call("MAX_BATCH_RECORDS") == MAX_BATCH_RECORDS
    assert ledger.call("batchCount") == 0


def test_publish_batch_stores_header_and_emits_event(ledger: Ledger) -> None:
    a, b, _ = ledger.banks
    rows_a, rows_b = make_records(5, seed=1), make_records(3, seed=2)
    receipt_a = ledger.publish(a, rows_a)
    receipt_b = ledger.publish(b, rows_b)
    root_a, root_b = tree_of(rows_a).root, tree_of(rows_b).root
    time_b = ledger.client.w3.eth.get_block(receipt_b.block_number)["timestamp"]

    assert ledger.call("batchCount") == 2
    assert ledger.batch(2) == {"root": root_b, "reporterMemberId": 2, "epoch": 1, "count": 3,
                               "publishedAt": time_b}
    assert ledger.batch(1)["root"] == root_a
    assert ledger.call("batchIdOfRoot", 1, root_a) == 1
    assert ledger.call("batchIdOfRoot", 2, root_b) == 2
    assert ledger.call("batchIdOfRoot", 2, root_a) == 0  # roots are indexed by reporter
    assert ledger.call("batchIdOfRoot", 1, b"\x42" * 32) == 0
    assert ledger.events(receipt_a, "BatchPublished") == [
        {"batchId": 1, "reporterMemberId": 1, "root": root_a, "epoch": 1, "count": 5}]
    assert ledger.events(receipt_b, "BatchPublished") == [
        {"batchId": 2, "reporterMemberId": 2, "root": root_b, "epoch": 1, "count": 3}]
    # Records are not re-emitted: the event is the only log.
    assert len(receipt_b.raw["logs"]) == 1


def test_mined_calldata_decodes_back_to_records(ledger: Ledger) -> None:
    rows = make_records(40, seed=3)
    receipt = ledger.publish(ledger.banks[0], rows)
    tx = ledger.client.w3.eth.get_transaction(HexStr(receipt.tx_hash))
    function, args = ledger.reader.decode_function_input(tx["input"])
    assert function.fn_name == "publishBatch"
    assert args["epoch"] == 1
    assert len(args["records"]) == 40 * RECORD_BYTES
    decoded = unpack_records(args["records"])
    assert decoded == rows
    # What an indexer does: recompute the root from the calldata and match it with the event.
    assert tree_of(decoded).root == args["root"] == ledger.events(receipt, "BatchPublished")[0]["root"]


def test_publish_in_a_later_epoch(ledger: Ledger) -> None:
    a = ledger.banks[0]
    registry = ledger.consortium.registry(a)
    a.client.transact(registry.contract.functions.startKeyEpoch())
    assert registry.current_key_epoch() == 2
    rows = make_records(2)
    expect_revert(ledger, FraudLedgerUnknownEpoch, {"epoch": 3}, lambda: ledger.publish(a, rows, epoch=3))
    ledger.publish(a, rows, epoch=2)
    ledger.publish(a, make_records(2, seed=7), epoch=1)  # older epochs stay publishable
    assert [ledger.batch(i)["epoch"] for i in (1, 2)] == [2, 1]


def test_verify_record_accepts_every_proof_and_rejects_tampering(ledger: Ledger) -> None:
    rows = make_records(13, seed=4)
    tree = tree_of(rows)
    ledger.publish(ledger.banks[0], rows)
    ledger.publish(ledger.banks[1], make_records(4, seed=5))

    def verify(batch_id: int, row: Row, proof: list[bytes]) -> bool:
        return bool(ledger.call("verifyRecord", batch_id, as_struct(row), proof))

    for i, row in enumerate(rows):
        assert verify(1, row, tree.proof(i))
    row, proof = rows[6], tree.proof(6)
    for field in range(len(WIDTHS)):
        tampered: list[Any] = list(row)
        value = tampered[field]
        tampered[field] = bytes([value[0] ^ 1]) + value[1:] if isinstance(value, bytes) else value ^ 1
        assert not verify(1, tuple(tampered), proof)  # type: ignore[arg-type]
    assert not verify(1, row, [proof[0][:31] + bytes([proof[0][31] ^ 1]), *proof[1:]])
    assert not verify(1, row, proof[:-1])
    assert not verify(1, row, tree.proof(7))
    assert not verify(2, row, proof)  # right record and proof, wrong batch
    with pytest.raises(FraudLedgerUnknownBatch) as raised:
        verify(3, row, proof)
    assert raised.value.arguments == {"batchId": 3}


# ------------------------------------------------------------------------------------------------------
# Reactions
# ------------------------------------------------------------------------------------------------------

def test_endorse_dispute_confirm_revoke_emit_events(ledger: Ledger) -> None:
    a, b, _ = ledger.banks
    rows = make_records(3)
    ledger.publish(a, rows)
    indicator = rows[1][0]

    receipt = ledger.send(b, "endorse", indicator, 100)
    assert ledger.events(receipt, "IndicatorEndorsed") == [
        {"indicator": indicator, "memberId": 2, "confidence": 100}]
    receipt = ledger.send(b, "endorse", indicator, 0)
    assert ledger.events(receipt, "IndicatorEndorsed")[0]["confidence"] == 0
    for reason in (1, 5):
        receipt = ledger.send(b, "dispute", indicator, reason)
        assert ledger.events(receipt, "IndicatorDisputed") == [
            {"indicator": indicator, "memberId": 2, "reasonCode": reason}]
    receipt = ledger.send(a, "confirm", 1, indicator)
    assert ledger.events(receipt, "IndicatorConfirmed") == [{"indicator": indicator, "batchId": 1, "memberId": 1}]
    receipt = ledger.send(a, "revoke", 1, indicator, 7)
    assert ledger.events(receipt, "IndicatorRevoked") == [
        {"indicator": indicator, "batchId": 1, "memberId": 1, "reasonCode": 7}]


# ------------------------------------------------------------------------------------------------------
# Custom errors
# ------------------------------------------------------------------------------------------------------

def every_write(rows: list[Any], root: bytes) -> list[tuple[Any, ...]]:
    """One call of each write function, all valid but for the caller (batch 1 must exist)."""
    return [("publishBatch", 1, root, pack_records(rows)),
            ("endorse", rows[0][0], 50),
            ("dispute", rows[0][0], 1),
            ("confirm", 1, rows[0][0]),
            ("revoke", 1, rows[0][0], 1)]


def test_non_member_is_refused_everywhere(ledger: Ledger) -> None:
    a = ledger.banks[0]
    rows = make_records(2)
    ledger.publish(a, make_records(1, seed=9))
    outsider = make_bank(ledger.consortium.rpc_url, "Outsider", "OUT-1")
    ledger.client.rpc("anvil_setBalance", [outsider.address, hex(10**18)])
    root = tree_of(rows).root
    error = {"account": outsider.address}
    for call in every_write(rows, root):
        expect_revert(ledger, FraudLedgerNotMember, error, partial(ledger.send, outsider, *call), root)


def test_suspended_member_is_refused(ledger: Ledger) -> None:
    a, b, _ = ledger.banks
    ledger.publish(b, make_records(1, seed=9))
    Governance(ledger.consortium).suspend(2)
    rows = make_records(2)
    root = tree_of(rows).root
    for call in every_write(rows, root):
        expect_revert(ledger, FraudLedgerNotMember, {"account": b.address}, partial(ledger.send, b, *call), root)
    ledger.publish(a, rows)  # the others still publish


def test_unknown_epoch(ledger: Ledger) -> None:
    a = ledger.banks[0]
    rows = make_records(2)
    root = tree_of(rows).root
    for epoch in (0, 2):
        expect_revert(ledger, FraudLedgerUnknownEpoch, {"epoch": epoch},
                      partial(ledger.publish, a, rows, epoch), root)


def test_malformed_records(ledger: Ledger) -> None:
    a = ledger.banks[0]
    packed = pack_records(make_records(3))
    for data in (b"", packed[:-1], packed + b"\x01", packed[:RECORD_BYTES - 1]):
        expect_revert(ledger, FraudLedgerMalformedRecords, {"length": len(data)},
                      partial(ledger.send, a, "publishBatch", 1, b"\x11" * 32, data), b"\x11" * 32)


def test_batch_too_large(ledger: Ledger) -> None:
    a = ledger.banks[0]
    data = pack_records(make_records(1, seed=6)) * (MAX_BATCH_RECORDS + 1)
    expect_revert(ledger, FraudLedgerBatchTooLarge, {"count": MAX_BATCH_RECORDS + 1, "max": MAX_BATCH_RECORDS},
                  lambda: ledger.send(a, "publishBatch", 1, b"\x22" * 32, data), b"\x22" * 32)


def test_duplicate_and_zero_root(ledger: Ledger) -> None:
    a, b, _ = ledger.banks
    rows = make_records(4)
    root = tree_of(rows).root
    ledger.publish(a, rows)
    duplicate = {"root": root, "existingBatchId": 1}
    # Resent by the same bank, with the same or with other records under the same root.
    expect_revert(ledger, FraudLedgerDuplicateBatch, duplicate, lambda: ledger.publish(a, rows), root)
    expect_revert(ledger, FraudLedgerDuplicateBatch, duplicate,
                  lambda: ledger.send(a, "publishBatch", 1, root, pack_records(make_records(2, 8))), root)
    # Another member's batch under the same root is its own; resending that one is refused in turn.
    ledger.publish(b, rows)
    assert ledger.call("batchIdOfRoot", 2, root) == 2
    expect_revert(ledger, FraudLedgerDuplicateBatch, {"root": root, "existingBatchId": 2},
                  lambda: ledger.publish(b, rows), root)
    zero = b"\x00" * 32
    expect_revert(ledger, FraudLedgerDuplicateBatch, {"root": zero, "existingBatchId": 0},
                  lambda: ledger.send(a, "publishBatch", 1, zero, pack_records(rows)), zero)


def test_duplicate_resend_is_refused_when_mined(ledger: Ledger) -> None:
    """A resent batch mined past the gas estimate (e.g. by the outbox after a timeout) is refused on chain."""
    a = ledger.banks[0]
    rows = make_records(4)
    root = tree_of(rows).root
    ledger.publish(a, rows)
    before = ledger.snapshot(root)
    function = ledger.of(a).functions.publishBatch(1, root, pack_records(rows))
    error = expect_mined_revert(a, lambda: a.client.send_transaction(fixed_gas_tx(a, function, MINED_GAS)))
    assert type(error) is FraudLedgerDuplicateBatch
    assert error.arguments == {"root": root, "existingBatchId": 1}
    assert ledger.snapshot(root) == before


def test_publish_batch_whose_root_another_member_took_first(ledger: Ledger) -> None:
    """B copies A's root from A's pending transaction and publishes it first, with junk records.

    Indexers reject B's batch (its records do not hash to the root); A's batch must still land, or A's
    reports would never reach any mirror.
    """
    a, b, _ = ledger.banks
    rows = make_records(4)
    root = tree_of(rows).root
    ledger.send(b, "publishBatch", 1, root, pack_records(make_records(2, seed=8)))
    receipt = ledger.publish(a, rows)
    assert ledger.events(receipt, "BatchPublished") == [
        {"batchId": 2, "reporterMemberId": 1, "root": root, "epoch": 1, "count": 4}]
    assert (ledger.call("batchIdOfRoot", 1, root), ledger.call("batchIdOfRoot", 2, root)) == (2, 1)


def test_not_reporter_and_unknown_batch(ledger: Ledger) -> None:
    a, b, _ = ledger.banks
    rows = make_records(2)
    ledger.publish(a, rows)
    indicator = rows[0][0]
    expect_revert(ledger, FraudLedgerNotReporter, {"batchId": 1, "account": b.address},
                  lambda: ledger.send(b, "confirm", 1, indicator))
    expect_revert(ledger, FraudLedgerNotReporter, {"batchId": 1, "account": b.address},
                  lambda: ledger.send(b, "revoke", 1, indicator, 1))
    for batch_id in (0, 2):
        expect_revert(ledger, FraudLedgerUnknownBatch, {"batchId": batch_id},
                      partial(ledger.send, a, "confirm", batch_id, indicator))
        expect_revert(ledger, FraudLedgerUnknownBatch, {"batchId": batch_id},
                      partial(ledger.send, a, "revoke", batch_id, indicator, 1))
        with pytest.raises(FraudLedgerUnknownBatch) as raised:
            ledger.call("batch", batch_id)
        assert raised.value.arguments == {"batchId": batch_id}


def test_invalid_confidence_and_reason(ledger: Ledger) -> None:
    b = ledger.banks[1]
    indicator = b"\x33" * 32
    for confidence in (101, 255):
        expect_revert(ledger, FraudLedgerInvalidConfidence, {"confidence": confidence},
                      partial(ledger.send, b, "endorse", indicator, confidence))
    for reason in (0, 6, 255):
        expect_revert(ledger, FraudLedgerInvalidReason, {"reasonCode": reason},
                      partial(ledger.send, b, "dispute", indicator, reason))


# ------------------------------------------------------------------------------------------------------
# Gas
# ------------------------------------------------------------------------------------------------------

def test_gas_per_indicator_at_batch_500(ledger: Ledger) -> None:
    """Total gas of the transaction (intrinsic and calldata included) divided by the number of records.

    Measured on the ledger's very first batch, the dearest case (the batch counter goes from zero).
    """
    receipt = ledger.publish(ledger.banks[0], make_records(500, seed=11))
    per_indicator = receipt.gas_used / 500
    assert per_indicator <= GAS_BUDGET_PER_INDICATOR, per_indicator


def test_only_role_member_writes(rpc_url: str) -> None:
    gov = Governance.deploy(rpc_url, (MemberRole.member, MemberRole.auditor, MemberRole.observer))
    ledger = Ledger(gov.consortium)
    rows = make_records(2)
    root = tree_of(rows).root
    for bank in gov.banks[1:]:
        expect_revert(ledger, FraudLedgerNotMember, {"account": bank.address},
                      partial(ledger.publish, bank, rows), root)
        expect_revert(ledger, FraudLedgerNotMember, {"account": bank.address},
                      partial(ledger.send, bank, "endorse", rows[0][0], 10))
    ledger.publish(gov.banks[0], rows)


def test_reporter_is_the_member_not_the_signing_address(ledger: Ledger) -> None:
    """After a signer rotation the member keeps its batches; the retired address can do nothing."""
    a = ledger.banks[0]
    rows = make_records(2)
    ledger.publish(a, rows)
    gov = Governance(ledger.consortium)
    new_a = gov.newcomer()
    gov.rotate(a, new_a)
    receipt = ledger.send(new_a, "confirm", 1, rows[0][0])
    assert ledger.events(receipt, "IndicatorConfirmed") == [{"indicator": rows[0][0], "batchId": 1, "memberId": 1}]
    expect_revert(ledger, FraudLedgerNotMember, {"account": a.address},
                  partial(ledger.send, a, "revoke", 1, rows[0][0], 1))
    receipt = ledger.publish(new_a, make_records(1, seed=12))
    assert ledger.events(receipt, "BatchPublished")[0]["reporterMemberId"] == 1


def test_contract_itself_refuses_when_mined(ledger: Ledger) -> None:
    """Sent past the gas estimate with a fixed gas limit, each call is mined, reverts, and changes nothing."""
    a, b, _ = ledger.banks
    rows = make_records(3)
    root = tree_of(rows).root
    ledger.publish(a, make_records(1, seed=13))
    outsider = make_bank(ledger.consortium.rpc_url, "Outsider", "OUT-1")
    cases: list[tuple[Bank, tuple[Any, ...], type[ContractRevert], dict[str, Any]]] = [
        (outsider, ("publishBatch", 1, root, pack_records(rows)), FraudLedgerNotMember,
         {"account": outsider.address}),
        (a, ("publishBatch", 9, root, pack_records(rows)), FraudLedgerUnknownEpoch, {"epoch": 9}),
        (a, ("publishBatch", 1, root, pack_records(rows)[:-3]), FraudLedgerMalformedRecords,
         {"length": 3 * RECORD_BYTES - 3}),
        (b, ("confirm", 1, rows[0][0]), FraudLedgerNotReporter, {"batchId": 1, "account": b.address}),
        (a, ("revoke", 5, rows[0][0], 1), FraudLedgerUnknownBatch, {"batchId": 5}),
        (b, ("endorse", rows[0][0], 101), FraudLedgerInvalidConfidence, {"confidence": 101}),
        (b, ("dispute", rows[0][0], 0), FraudLedgerInvalidReason, {"reasonCode": 0}),
    ]
    for sender, call, error, arguments in cases:
        before = ledger.snapshot(root)
        tx = fixed_gas_tx(sender, ledger.function(sender, *call), MINED_GAS)
        raised = expect_mined_revert(sender, partial(sender.client.send_transaction, tx))
        assert type(raised) is error
        assert raised.arguments == arguments
        assert ledger.snapshot(root) == before
