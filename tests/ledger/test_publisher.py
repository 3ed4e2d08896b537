"""Report intake and the publisher on a real anvil: idempotent ids, crash at every step, nonce reuse, refusals.

"Crashes" stop the publisher between its durable steps by raising out of it; recovery then runs in a new
NodeContext on the same store, as a restarted process would.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ColumnElement, event, func, select, update

from node.chain.client import ChainClient
from node.chain.errors import FraudLedgerNotMember, TransactionTimeout
from node.chain.fraud_ledger import FraudLedgerClient, LedgerRecord
from node.config import load_settings
from node.errors import InvalidInput
from node.ledger.publisher import Publisher
from node.ledger.reactions import withdraw_report
from node.ledger.reports import ReportRequest, report_status
from node.ledger.republish import republish
from node.runtime import NodeContext
from node.store.backup import backup_sqlite_store
from node.store.ledger_tables import FraudReport, OutboxRecord, PublishBatch
from tests.conftest import LedgerNodes, moved_to_store

RESIDENT_ID = "11010519491231002X"
PHONE = "+86 138 0013 8000"


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the publisher handles it."""


def give_alliance_key(*nodes: NodeContext) -> bytes:
    key = os.urandom(32)
    for node in nodes:
        node.keyring.store_key(1, key, source="envelope")
    return key


def report(value: str = PHONE, **fields: object) -> ReportRequest:
    options: dict[str, object] = {"category": "telecom_fraud", "confidence": 80, **fields}
    return ReportRequest(identifiers=[("phone", value)], **options)  # type: ignore[arg-type]


def onchain_records(ledger: FraudLedgerClient) -> list[LedgerRecord]:
    """Every record on chain, decoded from the transactions of every BatchPublished event."""
    logs = ledger.contract.events.BatchPublished().get_logs(from_block=0)
    records: list[LedgerRecord] = []
    for log in logs:
        records.extend(ledger.records_of_transaction(log["transactionHash"].to_0x_hex())[2])
    return records


def restarted(node: NodeContext) -> NodeContext:
    """A fresh context on the same data dir and store, as after a process restart."""
    return NodeContext(load_settings(node.settings.data_dir, **_overrides(node)))


def _overrides(node: NodeContext) -> dict[str, object]:
    s = node.settings
    return {"network": s.network, "rpc_url": s.rpc_url, "deployment_file": s.deployment_file,
            "key_passphrase": s.key_passphrase}


@pytest.fixture
def bank(ledger_nodes: LedgerNodes) -> NodeContext:
    node = ledger_nodes.nodes[0]
    give_alliance_key(node)
    return node


def test_accept_report_twice_gives_one_id_and_one_record(bank: NodeContext) -> None:
    first = bank.report_intake.accept(report(), submitted_by="k1")
    again = bank.report_intake.accept(report(value="138-0013-8000"), submitted_by="k2")  # same phone, other format
    assert first.created and not again.created
    assert first.report_id == again.report_id
    bank.publisher.drain()
    assert len(onchain_records(bank.fraud_ledger())) == 1
    with bank.store.session() as session:
        status = report_status(session, first.report_id)
    assert status.state == "confirmed"
    [item] = status.identifiers
    assert item.tx_hash is not None and item.block_number is not None and item.batch_id == 1


def test_accept_report_with_other_fields_is_another_report(bank: NodeContext) -> None:
    first = bank.report_intake.accept(report(), submitted_by="k1")
    other = bank.report_intake.accept(report(confidence=50), submitted_by="k1")
    assert first.report_id != other.report_id


def test_an_evidence_hash_spelt_another_way_is_the_same_report(bank: NodeContext) -> None:
    # Each spelling was a report of its own: a retry from another tool queued the report a second time.
    spellings = ["0x" + "ab" * 32, "ab" * 32, "0X" + "AB" * 32, "Ab" * 32]
    accepted = [bank.report_intake.accept(report(evidence_sha256=evidence), submitted_by="k1")
                for evidence in spellings]
    assert [a.created for a in accepted] == [True, False, False, False]
    assert len({a.report_id for a in accepted}) == 1
    assert bank.report_intake.accept(report(evidence_sha256="cd" * 32), submitted_by="k1").created
    bank.publisher.drain()
    assert len(onchain_records(bank.fraud_ledger())) == 2


@pytest.mark.parametrize("written", ["0x" + "ab" * 32, "0X" + "AB" * 32])
def test_a_report_an_earlier_version_accepted_with_0x_evidence_is_found_under_its_id(bank: NodeContext,
                                                                                    written: str) -> None:
    # The ids of each spelling, before and now: tests/ledger/test_report_ids.py.
    request = report(evidence_sha256=written)
    prepared = bank.report_intake.prepare(request)
    assert prepared.earlier_id is not None
    earlier_id = prepared.earlier_id
    # As an earlier version stored it: under the id of its spelling.
    [stored] = bank.report_intake.store_prepared([dataclasses.replace(prepared, report_id=earlier_id,
                                                                      earlier_id=None)], submitted_by="k1")
    assert stored.created
    again = [bank.report_intake.accept(report(evidence_sha256=evidence), submitted_by="k2")
             for evidence in (written, "ab" * 32)]
    together = bank.report_intake.accept_many([request, report(evidence_sha256="ab" * 32)], submitted_by="k3")
    assert {(a.report_id, a.created) for a in again + together} == {(earlier_id, False)}
    with bank.store.session() as session:
        assert session.scalars(select(FraudReport.report_id)).all() == [earlier_id]
        assert session.scalar(select(func.count()).select_from(OutboxRecord)) == 1
    bank.publisher.drain()
    assert len(onchain_records(bank.fraud_ledger())) == 1


@pytest.mark.parametrize(("request_", "code"), [
    (ReportRequest([("cn_resident_id", "110105194912310021")], "identity_theft", 90), "checksum_failed"),
    (ReportRequest([("phone", "12")], "identity_theft", 90), "bad_length"),
    (ReportRequest([("passport", "E1234")], "identity_theft", 90), "unknown_type"),
    (ReportRequest([], "identity_theft", 90), "no_identifiers"),
    (ReportRequest([("phone", PHONE)], "shoplifting", 90), "unknown_category"),
    (ReportRequest([("phone", PHONE)], "other", 101), "invalid_confidence"),
    (ReportRequest([("phone", PHONE)], "other", 50, valid_days=7 * 365), "invalid_validity"),
    (ReportRequest([("phone", PHONE)], "other", 50, evidence_sha256="abc"), "invalid_evidence_hash"),
    # bytes.fromhex skips whitespace: each was taken as the hash without it, under a report id of its own.
    (ReportRequest([("phone", PHONE)], "other", 50, evidence_sha256="ab ab" + "ab" * 30), "invalid_evidence_hash"),
    (ReportRequest([("phone", PHONE)], "other", 50, evidence_sha256=" " + "ab" * 32), "invalid_evidence_hash"),
    (ReportRequest([("phone", PHONE)], "other", 50, evidence_sha256="0x" + "ab" * 32 + "\n"),
     "invalid_evidence_hash"),
    (ReportRequest([("phone", PHONE)], "other", 50, case_reference="C" * 201), "invalid_case_reference"),
    (ReportRequest([("phone", PHONE)], "other", 50, case_reference="CASE-\udc80"), "invalid_case_reference"),
    (ReportRequest([("phone", PHONE)], "other", 50, case_reference="CASE-1\x00"), "invalid_case_reference"),
    (ReportRequest([("phone", PHONE)], "other", 50, case_reference="CASE-1\n"), "invalid_case_reference"),
    (ReportRequest([("phone", PHONE)], "other", 50, case_reference="CASE\t1"), "invalid_case_reference"),
    (ReportRequest([("phone", PHONE)], "other", 50, case_reference="CASE-\x85"), "invalid_case_reference"),
])
def test_accept_report_refuses_invalid_input_and_writes_nothing(bank: NodeContext, request_: ReportRequest,
                                                                 code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        bank.report_intake.accept(request_, submitted_by="k1")
    assert refused.value.code == code
    assert RESIDENT_ID not in str(refused.value) and "110105194912310021" not in str(refused.value)
    with bank.store.session() as session:
        assert session.scalar(select(func.count()).select_from(FraudReport)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxRecord)) == 0


def test_accept_many_is_all_or_nothing_with_per_row_errors(bank: NodeContext) -> None:
    requests = [report(), report(value="12"), report(value="+8613900139000"),
                ReportRequest([("email", "no-at-sign")], "other", 10)]
    with pytest.raises(InvalidInput) as refused:
        bank.report_intake.accept_many(requests, submitted_by="k1")
    assert refused.value.code == "invalid_reports"
    assert [(d["row"], d["code"]) for d in refused.value.details or []] == [(1, "bad_length"), (3, "bad_format")]
    with bank.store.session() as session:
        assert session.scalar(select(func.count()).select_from(FraudReport)) == 0


def test_publisher_batches_by_size_and_waits_for_small_batches(bank: NodeContext) -> None:
    phones = [f"+86139{n:08d}" for n in range(7)]
    bank.report_intake.accept_many([report(value=p) for p in phones], submitted_by="k1")
    publisher = Publisher(bank.store, bank.fraud_ledger(signing=True), batch_size=3, max_wait_s=3600)
    assert publisher.run_once().batches == 2  # two full batches; one record waits for more or for time
    assert publisher.pending() == 1
    assert publisher.run_once(flush=True).records == 1
    assert bank.fraud_ledger().batch_count() == 3
    assert len(onchain_records(bank.fraud_ledger())) == 7


def _queued_since(bank: NodeContext, ago: timedelta, *, report_id: str | None = None) -> None:
    """The queued records (of `report_id` only, if given), and their reports, date from `ago` before now."""
    then = datetime.now(UTC) - ago
    with bank.store.transaction() as session:
        session.execute(update(FraudReport).where(*_of_report(FraudReport, report_id)).values(created_at=then))
        session.execute(update(OutboxRecord).where(OutboxRecord.state == "queued",
                                                   *_of_report(OutboxRecord, report_id)).values(queued_at=then))


def _of_report(table: type[FraudReport] | type[OutboxRecord], report_id: str | None) -> list[ColumnElement[bool]]:
    return [] if report_id is None else [table.report_id == report_id]


def test_records_republished_for_old_reports_wait_for_a_full_batch_like_new_ones(bank: NodeContext) -> None:
    """The wait counted from the report's acceptance: records republished after a key rotation, of reports years
    old, were sent at once, in batches of a few records, however many rounds a large republish took."""
    bank.report_intake.accept_many([report(value=f"+86135{n:08d}") for n in range(2)], submitted_by="k1")
    bank.publisher.drain()
    _queued_since(bank, timedelta(days=3 * 365))
    assert bank.registry(signing=True).start_key_epoch() == 2
    bank.keyring.store_key(2, os.urandom(32), source="generated")
    assert republish(bank).records == 2
    publisher = Publisher(bank.store, bank.fraud_ledger(signing=True), batch_size=3, max_wait_s=3600)
    assert publisher.run_once().batches == 0  # queued just now: they wait for a third record or for the hour
    assert publisher.pending() == 2
    _queued_since(bank, timedelta(hours=2))  # an hour and more later
    assert publisher.run_once().records == 2
    assert bank.fraud_ledger().batch_count() == 2


def test_a_record_queued_longest_is_sent_after_the_max_wait_behind_records_queued_again(bank: NodeContext) -> None:
    """The wait read the first written queued record: a batch the chain lost, queued again, held back a record
    written after it but queued long before, past `max_wait_s`."""
    control = ChainClient(bank.settings.effective_rpc_url)
    before = control.rpc("evm_snapshot")
    bank.report_intake.accept(report(), submitted_by="k1")
    bank.publisher.drain()
    control.rpc("evm_revert", [before])  # the chain lost the batch the store holds as confirmed
    waiting = bank.report_intake.accept(report(value="+8613900139000"), submitted_by="k1")
    _queued_since(bank, timedelta(hours=2), report_id=waiting.report_id)
    publisher = Publisher(bank.store, bank.fraud_ledger(signing=True), batch_size=3, max_wait_s=3600)
    assert publisher.run_once().records == 2  # the lost batch's record, queued again just now, goes along
    assert len(onchain_records(bank.fraud_ledger())) == 2


def test_records_another_publisher_claims_between_the_two_reads_of_the_queue_are_left_to_it(
        bank: NodeContext) -> None:
    """The queue is read twice (the oldest record's epoch, then that epoch's records). On PostgreSQL (read committed)
    another publisher's claim committed in between left the second read empty, and the wait taken from its rows
    raised ValueError (min of nothing). Played here by claiming the rows on the publisher's own connection."""
    bank.report_intake.accept(report(), submitted_by="k1")
    claimed: list[str] = []

    def claim_first(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not claimed and "outbox_records.queued_at, outbox_records.id" in statement:
            claimed.append(statement)
            connection.exec_driver_sql("UPDATE outbox_records SET state = 'batched' WHERE state = 'queued'")

    event.listen(bank.store.engine, "before_cursor_execute", claim_first)
    try:
        result = Publisher(bank.store, bank.fraud_ledger(signing=True), batch_size=10, max_wait_s=0).run_once()
    finally:
        event.remove(bank.store.engine, "before_cursor_execute", claim_first)
    assert claimed and result.batches == 0
    assert bank.fraud_ledger().batch_count() == 0


def test_drain_passes_by_the_records_of_a_report_withdrawn_before_publication(bank: NodeContext) -> None:
    withdrawn = bank.report_intake.accept(report(), submitted_by="k1")
    assert withdraw_report(bank, withdrawn.report_id, "reported_in_error") == []  # nothing was published to revoke
    bank.report_intake.accept(report(value="+8613900139000"), submitted_by="k1")
    assert bank.publisher.pending() == 1
    # Counted as unpublished, the withdrawn record kept `alliance fraud publish` waiting out its timeout and failing.
    assert bank.publisher.drain(timeout_s=5).records == 1
    assert bank.publisher.pending() == 0
    assert len(onchain_records(bank.fraud_ledger())) == 1


class ReadsThenWaits(Publisher):
    """A publisher that, between reading the queue and claiming it, lets `other` publish everything: the node's
    worker and `alliance fraud publish` (another process, its own nonce count) running at the same moment."""

    other: Publisher

    def _queued_rows(self, session, *, flush):  # type: ignore[no-untyped-def]
        rows = super()._queued_rows(session, flush=flush)
        if rows is not None and self.other.pending():
            self.other.drain()
        return rows


def test_two_publishers_reading_the_same_queue_publish_each_record_once(bank: NodeContext) -> None:
    bank.report_intake.accept_many([report(value=f"+86136{n:08d}") for n in range(6)], submitted_by="k1")
    by_hand = restarted(bank)
    try:
        worker = ReadsThenWaits(bank.store, bank.fraud_ledger(signing=True), batch_size=6, max_wait_s=0)
        # Batches of 4, so the other's roots differ from the worker's: the contract's duplicate-root check
        # cannot save a second publication of the same records.
        worker.other = Publisher(by_hand.store, by_hand.fraud_ledger(signing=True), batch_size=4, max_wait_s=0)

        assert worker.drain().batches == 0

        counted = Counter(r.indicator for r in onchain_records(bank.fraud_ledger()))
        with bank.store.session() as session:
            assert counted == Counter(session.scalars(select(OutboxRecord.indicator)))
            assert set(session.scalars(select(PublishBatch.state))) == {"confirmed"}
            assert session.scalar(select(func.count()).select_from(PublishBatch)) == 2
        assert max(counted.values()) == 1 and bank.fraud_ledger().batch_count() == 2
    finally:
        by_hand.close()


class CrashAfterPrepare(Publisher):
    def _send(self, prepared):  # type: ignore[no-untyped-def]
        raise SimulatedCrash


class CrashAfterSend(Publisher):
    def _finish(self, batch_row_id):  # type: ignore[no-untyped-def]
        raise SimulatedCrash


class CrashBeforeSendConfirmation(Publisher):
    """Sends, then dies before recording that it sent (sent_at never written)."""

    def _send(self, prepared):  # type: ignore[no-untyped-def]
        self._ledger.send_raw(prepared.raw_tx)
        raise SimulatedCrash


@pytest.mark.parametrize("crashing", [CrashAfterPrepare, CrashBeforeSendConfirmation, CrashAfterSend])
def test_crash_at_each_publish_step_then_restart_publishes_each_record_once(
        bank: NodeContext, crashing: type[Publisher]) -> None:
    accepted = bank.report_intake.accept_many([report(value=f"+86137{n:08d}") for n in range(5)],
                                              submitted_by="k1")
    doomed = crashing(bank.store, bank.fraud_ledger(signing=True), batch_size=5, max_wait_s=0)
    with pytest.raises(SimulatedCrash):
        doomed.run_once()
    node = restarted(bank)
    try:
        result = node.publisher.drain()
        assert result.recovered == 1 and result.batches == 0
        records = onchain_records(node.fraud_ledger())
        with node.store.session() as session:
            indicators = set(session.scalars(select(OutboxRecord.indicator)))
            assert all(report_status(session, a.report_id).state == "confirmed" for a in accepted)
            assert session.scalar(select(func.count()).select_from(PublishBatch)) == 1
        assert Counter(r.indicator for r in records) == Counter(indicators)
        assert max(Counter(r.indicator for r in records).values()) == 1
    finally:
        node.close()


def test_crash_after_outbox_write_then_restart_publishes_the_queue(bank: NodeContext) -> None:
    bank.report_intake.accept(report(), submitted_by="k1")
    bank.close()  # the process dies with the report only in the outbox
    node = restarted(bank)
    try:
        assert node.publisher.drain().records == 1
        assert len(onchain_records(node.fraud_ledger())) == 1
    finally:
        node.close()


def test_recover_resigns_when_the_stored_nonce_was_used_by_another_transaction(bank: NodeContext) -> None:
    bank.report_intake.accept(report(), submitted_by="k1")
    with pytest.raises(SimulatedCrash):
        CrashAfterPrepare(bank.store, bank.fraud_ledger(signing=True), batch_size=1, max_wait_s=0).run_once()
    with bank.store.session() as session:
        stored_nonce = session.scalars(select(PublishBatch.nonce)).one()
    # Another process of the bank uses the nonce the stored transaction was signed with.
    other = ChainClient(bank.settings.effective_rpc_url, signer=bank.signer)
    other.transact(bank.fraud_ledger().contract.functions.endorse(b"\x01" * 32, 10))
    node = restarted(bank)
    try:
        node.publisher.drain()
        assert len(onchain_records(node.fraud_ledger())) == 1
        with node.store.session() as session:
            batch = session.scalars(select(PublishBatch)).one()
            assert (batch.state, batch.nonce) == ("confirmed", stored_nonce + 1)
    finally:
        node.close()


def test_recover_finds_a_root_published_by_another_transaction(bank: NodeContext) -> None:
    bank.report_intake.accept(report(), submitted_by="k1")
    with pytest.raises(SimulatedCrash):
        CrashAfterPrepare(bank.store, bank.fraud_ledger(signing=True), batch_size=1, max_wait_s=0).run_once()
    # The same root reached the chain in a different transaction (say, re-signed by an earlier attempt).
    ledger = FraudLedgerClient(ChainClient(bank.settings.effective_rpc_url, signer=bank.signer),
                               bank.deployment.address("FraudLedger"))
    published = ledger.publish_batch(1, batched_records(bank))
    node = restarted(bank)
    try:
        node.publisher.drain()
        with node.store.session() as session:
            batch = session.scalars(select(PublishBatch)).one()
            assert (batch.state, batch.onchain_batch_id, batch.tx_hash) == ("confirmed", 1, published.tx_hash)
        assert len(onchain_records(node.fraud_ledger())) == 1
    finally:
        node.close()


def test_batch_signed_above_a_nonce_the_chain_lost_is_signed_again(bank: NodeContext) -> None:
    """The chain went back without a transaction of this bank (a dev chain killed with -9 restarts from an older
    state), so the next batch was signed with a nonce above the chain's count and can never be mined. Settling it
    sent the same bytes again forever, in every later round and after every restart: the batch stayed `signed`
    and nothing the bank reported after it was published."""
    control = ChainClient(bank.settings.effective_rpc_url)
    before = control.rpc("evm_snapshot")
    bank.fraud_ledger(signing=True).endorse(bytes(range(32)), 50)
    control.rpc("evm_revert", [before])  # the endorsement's nonce is free again; this process counts past it
    bank.signing_chain.receipt_timeout = 1.0
    bank.report_intake.accept(report(), submitted_by="k1")
    with pytest.raises(TransactionTimeout):
        bank.publisher.run_once(flush=True)
    node = restarted(bank)
    try:
        node.signing_chain.receipt_timeout = 5.0
        node.publisher.drain(timeout_s=10)
        assert len(onchain_records(node.fraud_ledger())) == 1
        with node.store.session() as session:
            assert session.scalars(select(PublishBatch.state)).all() == ["confirmed"]
            assert session.scalars(select(OutboxRecord.state)).all() == ["confirmed"]
    finally:
        node.close()


def test_batch_the_chain_lost_is_published_again_after_restart(bank: NodeContext) -> None:
    control = ChainClient(bank.settings.effective_rpc_url)
    before = control.rpc("evm_snapshot")
    accepted = bank.report_intake.accept(report(), submitted_by="k1")
    bank.publisher.drain()
    # The chain comes back without the batch the store holds as confirmed: a dev chain killed with -9 restarts
    # from its last state file.
    control.rpc("evm_revert", [before])
    node = restarted(bank)
    try:
        node.publisher.drain()
        assert len(onchain_records(node.fraud_ledger())) == 1
        with node.store.session() as session:
            assert report_status(session, accepted.report_id).state == "confirmed"
            assert session.scalars(select(PublishBatch.state)).all() == ["confirmed"]
    finally:
        node.close()


def test_batch_the_chain_lost_while_the_publisher_ran_idle_is_published_again(bank: NodeContext) -> None:
    """The running node's publisher checked the chain in its first round only (and after an outage it saw): a dev
    chain killed with -9 and started again while the queue was empty went unnoticed, since an idle round asks the
    chain nothing. The next batch then landed, and a restart's check stopped at it (newest first): the lost batch
    stayed `confirmed` in the store and its records were never published again."""
    control = ChainClient(bank.settings.effective_rpc_url)
    before = control.rpc("evm_snapshot")
    bank.report_intake.accept(report(), submitted_by="k1")
    bank.publisher.drain()
    control.rpc("evm_revert", [before])  # between two rounds of the publisher, which found nothing queued
    bank.signing_chain.receipt_timeout = 5.0
    bank.publisher.run_once()
    bank.report_intake.accept(report(value="+8613900139000"), submitted_by="k1")
    bank.publisher.run_once(flush=True)
    restarted(bank).publisher.drain()
    with bank.store.session() as session:
        outbox = Counter(bytes(i) for i in session.scalars(select(OutboxRecord.indicator)))
        assert set(session.scalars(select(OutboxRecord.state))) == {"confirmed"}
    assert Counter(record.indicator for record in onchain_records(bank.fraud_ledger())) == outbox
    assert sum(outbox.values()) == 2


def test_two_publishers_finding_the_same_lost_batch_publish_its_records_once(bank: NodeContext,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    control = ChainClient(bank.settings.effective_rpc_url)
    before = control.rpc("evm_snapshot")
    bank.report_intake.accept(report(), submitted_by="k1")
    bank.publisher.drain()
    control.rpc("evm_revert", [before])  # the chain lost the batch the store holds as confirmed
    first, second = restarted(bank), restarted(bank)  # two node processes on one store
    try:
        ledger_type = type(second.fraud_ledger())
        batch_id_of_root = ledger_type.batch_id_of_root

        def first_requeues_and_republishes_meanwhile(self: object, root: bytes, reporter: int | None = None) -> int:
            # The second publisher saw the batch lost; before it requeues it, the first one does, and publishes it
            # again (the same records: the same batch row).
            monkeypatch.setattr(ledger_type, "batch_id_of_root", batch_id_of_root)
            first.publisher.drain()
            return 0

        monkeypatch.setattr(ledger_type, "batch_id_of_root", first_requeues_and_republishes_meanwhile)
        assert second.publisher.requeue_lost_batches() == 0
        second.publisher.drain()
        assert len(onchain_records(bank.fraud_ledger())) == 1
        with bank.store.session() as session:
            assert session.scalars(select(PublishBatch.state)).all() == ["confirmed"]
            assert session.scalars(select(OutboxRecord.state)).all() == ["confirmed"]
    finally:
        first.close()
        second.close()


def test_a_syncing_rpc_node_is_not_taken_for_a_chain_that_lost_batches(bank: NodeContext,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bank.report_intake.accept(report(), submitted_by="k1")
    bank.publisher.drain()
    node = restarted(bank)
    try:
        # anvil never syncs; a Besu node catching up after a restart does, and lacks the newest batches meanwhile.
        monkeypatch.setattr(ChainClient, "is_syncing", lambda self: True)
        monkeypatch.setattr(type(node.fraud_ledger()), "batch_id_of_root", lambda self, root, reporter=None: 0)
        assert node.publisher.requeue_lost_batches() is None
        node.publisher.run_once()
        with node.store.session() as session:
            assert session.scalars(select(PublishBatch.state)).all() == ["confirmed"]
            assert session.scalar(select(func.count()).select_from(OutboxRecord)
                                  .where(OutboxRecord.state != "confirmed")) == 0
    finally:
        node.close()


def batched_records(node: NodeContext) -> list[LedgerRecord]:
    from node.ledger.publisher import _ledger_records

    with node.store.session() as session:
        batch_id = session.scalars(select(PublishBatch.id)).one()
        return _ledger_records(session, batch_id)


def test_refused_batch_requeues_its_records(ledger_nodes: LedgerNodes) -> None:
    a, b, _ = ledger_nodes.nodes
    give_alliance_key(a, b)
    # B is suspended (A and C vote), so the ledger refuses its batches.
    outcome = a.registry(signing=True).propose_suspension(2)
    ledger_nodes.nodes[2].registry(signing=True).vote(outcome.proposal_id)
    b.report_intake.accept(report(), submitted_by="k1")
    with pytest.raises(FraudLedgerNotMember):
        b.publisher.run_once(flush=True)
    with b.store.session() as session:
        assert session.scalars(select(OutboxRecord.state)).all() == ["queued"]
        assert session.scalars(select(PublishBatch.state)).all() == ["failed"]
    assert b.fraud_ledger().batch_count() == 0
    assert b.publisher.run_once(flush=True).batches == 0  # backing off, not hammering the chain


def test_a_store_restored_from_a_backup_does_not_publish_again_what_was_published_after_it(
        bank: NodeContext, tmp_path: Path) -> None:
    """Restored from a backup taken while a report was queued, the store still has it queued although its node
    published it afterwards: the restored node published it a second time."""
    before = bank.report_intake.accept(report(), submitted_by="k")
    backup = backup_sqlite_store(bank.settings.effective_database_url, tmp_path / "backup.db")
    bank.publisher.drain()
    assert len(onchain_records(bank.fraud_ledger())) == 1

    restored = NodeContext(bank.settings.model_copy(update={"database_url": f"sqlite:///{backup.path}"}))
    try:
        after = restored.report_intake.accept(report(value="13900139000"), submitted_by="k")  # new since
        with restored.store.session() as session:
            assert report_status(session, before.report_id).state == "queued"
        restored.publisher.drain()
        on_chain = onchain_records(restored.fraud_ledger())
        assert len(on_chain) == 2 and len(set(on_chain)) == 2  # the new report published, the old one not again
        with restored.store.session() as session:
            for report_id in (before.report_id, after.report_id):
                assert report_status(session, report_id).state == "confirmed"
        with restored.store.session() as session:
            adopted = session.scalars(select(PublishBatch).order_by(PublishBatch.id)).all()
        with bank.store.session() as session:
            original = session.scalars(select(PublishBatch)).one()
        assert (adopted[0].onchain_batch_id, adopted[0].tx_hash, adopted[0].block_number) == \
            (original.onchain_batch_id, original.tx_hash, original.block_number)
    finally:
        restored.close()


def test_queued_records_of_another_content_are_not_taken_for_published(bank: NodeContext) -> None:
    """Only the very record (indicator and every field) in one of this member's batches is adopted: the same
    identifier reported with another confidence is a record of its own."""
    bank.report_intake.accept(report(confidence=80), submitted_by="k")
    bank.publisher.drain()
    bank.report_intake.accept(report(confidence=60), submitted_by="k")
    fresh = restarted(bank)
    try:
        assert fresh.publisher.adopt_published_elsewhere() == 0
        fresh.publisher.drain()
        assert sorted(r.confidence for r in onchain_records(fresh.fraud_ledger())) == [60, 80]
    finally:
        fresh.close()


def test_records_this_member_published_from_another_store_are_adopted(bank: NodeContext, store_url: str) -> None:
    """The matching on either store (SQLite or PostgreSQL): the same report queued in two stores of the one member,
    published from the first, is confirmed in the second from the chain."""
    elsewhere = moved_to_store(bank, store_url)
    try:
        elsewhere.keyring.store_key(1, bank.keyring.key(1), source="envelope")
        # One valid_from, as a restored copy of a store holds it: each store's default (its time of acceptance) differed
        # when the two accepts fell either side of a second, and the copies were then different records (1 run in 6).
        same = report(valid_from=int(time.time()))
        for node in (bank, elsewhere):
            node.report_intake.accept(same, submitted_by="k")
        bank.publisher.drain()
        assert elsewhere.publisher.adopt_published_elsewhere() == 1
        elsewhere.publisher.drain()
        assert len(onchain_records(bank.fraud_ledger())) == 1
    finally:
        elsewhere.close()


def test_a_nonce_another_process_took_since_the_last_batch_is_signed_again_in_the_same_round(
        bank: NodeContext) -> None:
    """A CLI command beside the node (a vote, a key rotation) signs with the bank's key: the node's next batch went out
    with the nonce it had counted to, was refused ("nonce too low") and failed its round (the worker's warning quoting
    the endpoint's error, a failure in /health) until the next round signed it again."""
    publisher = bank.publisher
    bank.report_intake.accept(report(), submitted_by="k1")
    assert publisher.run_once(flush=True).records == 1  # the publisher counts this signer's nonces from here
    other = ChainClient(bank.settings.effective_rpc_url, signer=bank.signer)
    other.transact(bank.fraud_ledger().contract.functions.endorse(b"\x01" * 32, 10))
    bank.report_intake.accept(report("13900139000"), submitted_by="k1")

    published = publisher.run_once(flush=True)

    assert (published.batches, published.records) == (1, 1)
    assert len(onchain_records(bank.fraud_ledger())) == 2
    with bank.store.session() as session:
        assert set(session.scalars(select(PublishBatch.state))) == {"confirmed"}
