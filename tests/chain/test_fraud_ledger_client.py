"""FraudLedgerClient on a real anvil: packing, publication with the default explicit gas, decoding, duplicates."""

from __future__ import annotations

import random

import pytest

from bench._common import random_ledger_records
from node.chain.errors import FraudLedgerDuplicateBatch
from node.chain.fraud_ledger import (
    RECORD_BYTES,
    FraudLedgerClient,
    LedgerRecord,
    batch_root,
    default_publish_gas,
    pack_records,
    unpack_records,
)
from tests.conftest import Consortium


def make_records(count: int, seed: int = 1) -> list[LedgerRecord]:
    return random_ledger_records(count, random.Random(seed))


def ledger_of(consortium: Consortium) -> FraudLedgerClient:
    return FraudLedgerClient(consortium.banks[0].client, consortium.deployment.address("FraudLedger"))


def test_pack_unpack_round_trip() -> None:
    records = make_records(50)
    edge = LedgerRecord(b"\xff" * 32, 255, 0, 100, 0, 2**40 - 1, b"\x00" * 32, b"\x01" * 32)
    packed = pack_records([*records, edge])
    assert len(packed) == 51 * RECORD_BYTES
    assert unpack_records(packed) == [*records, edge]
    # Big-endian layout of IFraudLedger: indicator | u8 u8 u8 | u40 | u40 | bytes32 | bytes32.
    assert pack_records([edge]) == (b"\xff" * 32 + bytes([255, 0, 100]) + (0).to_bytes(5, "big")
                                    + (2**40 - 1).to_bytes(5, "big") + b"\x00" * 32 + b"\x01" * 32)
    assert unpack_records(b"") == []


@pytest.mark.parametrize("length", [1, RECORD_BYTES - 1, RECORD_BYTES + 1, 2 * RECORD_BYTES + 5])
def test_unpack_rejects_bad_lengths(length: int) -> None:
    with pytest.raises(ValueError):
        unpack_records(bytes(length))


def test_pack_rejects_fields_that_do_not_fit() -> None:
    good = make_records(1)[0]
    for bad in (LedgerRecord(b"\x00" * 31, 1, 1, 1, 0, 1, b"\x00" * 32, b"\x00" * 32),
                LedgerRecord(good.indicator, 256, 1, 1, 0, 1, good.evidence_hash, good.case_ref_hash),
                LedgerRecord(good.indicator, 1, 1, 1, 2**40, 1, good.evidence_hash, good.case_ref_hash)):
        with pytest.raises(ValueError):
            pack_records([bad])


@pytest.mark.parametrize("count", [1, 1000])
def test_publish_with_default_gas_and_decode(consortium: Consortium, count: int) -> None:
    ledger = ledger_of(consortium)
    records = make_records(count, seed=count)
    published = ledger.publish_batch(1, records)
    assert published.batch_id == 1
    assert published.root == batch_root(records)
    assert published.gas_used < default_publish_gas(count)
    assert ledger.batch_id_of_root(published.root) == 1
    assert ledger.batch_id_of_root(b"\x42" * 32) == 0
    info = ledger.batch(1)
    assert (info.root, info.reporter_member_id, info.epoch, info.count) == (published.root, 1, 1, count)
    epoch, root, decoded = ledger.records_of_transaction(published.tx_hash)
    assert (epoch, root) == (1, published.root)
    assert decoded == records


def test_publishing_the_same_records_twice_is_refused(consortium: Consortium) -> None:
    ledger = ledger_of(consortium)
    records = make_records(3)
    first = ledger.publish_batch(1, records)
    with pytest.raises(FraudLedgerDuplicateBatch) as raised:
        ledger.publish_batch(1, records)
    assert raised.value.arguments == {"root": first.root, "existingBatchId": 1}
    assert ledger.batch_count() == 1
    assert ledger.batch_id_of_root(first.root) == 1


def test_build_publish_tx_can_be_signed_and_sent_later(consortium: Consortium) -> None:
    ledger = ledger_of(consortium)
    chain = consortium.banks[0].client
    batches = [make_records(5, seed=s) for s in (10, 11)]
    raws = [chain.sign(ledger.build_publish_tx(1, records, default_publish_gas(len(records)))) for records in batches]
    hashes = [chain.send_signed(raw) for raw in raws]
    for tx_hash, records in zip(hashes, batches, strict=True):
        published = ledger.published_from(chain.wait_for_receipt(tx_hash), batch_root(records))
        assert ledger.records_of_transaction(tx_hash)[2] == records
        assert ledger.batch_id_of_root(published.root) == published.batch_id
    assert ledger.batch_count() == 2


def test_publish_lands_when_another_member_took_its_root_first(consortium: Consortium) -> None:
    """B copies the root of A's pending transaction and publishes it first with junk records.

    A's batch must still land as A's own: were it refused as a duplicate, A's publisher would take B's
    batch (which every indexer rejects) for its own and mark its records published, losing them.
    """
    ledger = ledger_of(consortium)
    squatter = FraudLedgerClient(consortium.banks[1].client, ledger.address)
    records = make_records(4)
    root = batch_root(records)
    signed = ledger.sign_publish(1, records, root=root, nonce=ledger.confirmed_nonce())
    squatter.chain.transact(squatter.contract.functions.publishBatch(1, root, pack_records(make_records(2, 9))))
    assert ledger.find_published(root) is None
    assert ledger.batch_id_of_root(root) == 0
    assert ledger.batch_id_of_root(root, 2) == squatter.batch_id_of_root(root) == 1

    mined = ledger.wait_published(ledger.send_raw(signed.raw), root)
    assert (mined.batch_id, mined.tx_hash) == (2, signed.tx_hash)
    assert ledger.batch(2).reporter_member_id == 1
    assert ledger.records_of_transaction(mined.tx_hash)[2] == records
    assert ledger.find_published(root) == mined
