"""Republishing a bank's active reports under a new key epoch, from the vault-encrypted raw identifiers."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import select, update

from node.crypto.keyed_hash import hash_identifier
from node.ledger.reactions import withdraw_report
from node.ledger.reports import ReportRequest
from node.ledger.republish import NewestKeyMissing, RepublishResult, republish, republish_active_reports
from node.runtime import NodeContext
from node.store.ledger_tables import FraudReport, OutboxRecord
from tests.conftest import LedgerNodes, interrupted_before_writing, moved_to_store
from tests.ledger.test_publisher import onchain_records


def test_republish_rehashes_active_reports_once_under_the_new_epoch(ledger_nodes: LedgerNodes) -> None:
    bank = ledger_nodes.nodes[0]
    bank.keyring.store_key(1, os.urandom(32), source="generated")
    intake = bank.report_intake
    intake.accept(ReportRequest([("phone", "13800138000"), ("email", "Mule@Example.COM")], "money_mule", 70),
                  submitted_by="k")
    expired_from = int(time.time()) - 10 * 86_400
    intake.accept(ReportRequest([("phone", "13900139000")], "other", 40, valid_days=1, valid_from=expired_from),
                  submitted_by="k")
    bank.publisher.drain()

    assert bank.registry(signing=True).start_key_epoch() == 2
    new_key = os.urandom(32)
    bank.keyring.store_key(2, new_key, source="generated")
    result = republish_active_reports(bank.store, bank.keyring, bank.vault)
    assert (result.epoch, result.reports, result.records) == (2, 1, 2)
    assert republish_active_reports(bank.store, bank.keyring, bank.vault).records == 0

    bank.publisher.drain()
    epoch_two = {r.indicator for r in onchain_records(bank.fraud_ledger())} - _epoch_one_indicators(bank)
    assert epoch_two == {hash_identifier(new_key, "phone", "+86 138 0013 8000")[1],
                         hash_identifier(new_key, "email", "mule@example.com")[1]}
    batches = [bank.fraud_ledger().batch(i) for i in range(1, bank.fraud_ledger().batch_count() + 1)]
    assert [b.epoch for b in batches] == [1, 2]


def test_republish_after_a_restore_that_lost_a_withdrawal_leaves_the_revoked_report_out(
        ledger_nodes: LedgerNodes) -> None:
    """A store restored from a backup taken before a withdrawal lacks the report's mark (`withdrawn_at`): republish
    queued it again under the new epoch, and the report hit again. The revocations on chain keep it out now."""
    bank = ledger_nodes.nodes[0]
    bank.keyring.store_key(1, os.urandom(32), source="generated")
    kept = bank.report_intake.accept(ReportRequest([("phone", "13800138000")], "other", 50), submitted_by="k")
    withdrawn = bank.report_intake.accept(ReportRequest([("phone", "13900139000"), ("email", "w@example.com")],
                                                        "money_mule", 60), submitted_by="k")
    bank.publisher.drain()
    assert len(withdraw_report(bank, withdrawn.report_id, "reported_in_error")) == 2
    with bank.store.transaction() as session:  # as the backup from before the withdrawal holds it
        session.execute(update(FraudReport).values(withdrawn_at=None))

    assert bank.registry(signing=True).start_key_epoch() == 2
    bank.keyring.store_key(2, os.urandom(32), source="generated")
    result = republish(bank)  # syncs the mirror, which holds the two revocations, first
    assert (result.epoch, result.reports, result.records) == (2, 1, 1)
    with bank.store.session() as session:
        assert set(session.scalars(select(OutboxRecord.report_id).where(OutboxRecord.epoch == 2))) == {
            kept.report_id}


def _epoch_one_indicators(bank) -> set[bytes]:  # type: ignore[no-untyped-def]
    with bank.store.session() as session:
        return set(session.scalars(select(OutboxRecord.indicator).where(OutboxRecord.epoch == 1)))


def test_republish_without_a_newer_epoch_queues_nothing(ledger_nodes: LedgerNodes) -> None:
    bank = ledger_nodes.nodes[0]
    bank.keyring.store_key(1, os.urandom(32), source="generated")
    bank.report_intake.accept(ReportRequest([("phone", "13800138000")], "other", 50), submitted_by="k")
    assert republish_active_reports(bank.store, bank.keyring, bank.vault).records == 0


def test_republish_before_the_newest_key_arrived_is_refused_and_queues_nothing(ledger_nodes: LedgerNodes) -> None:
    a, b = ledger_nodes.nodes[:2]
    a.keyring.store_key(1, os.urandom(32), source="generated")
    a.report_intake.accept(ReportRequest([("phone", "13800138000")], "other", 50), submitted_by="k")
    assert b.registry(signing=True).start_key_epoch() == 2  # B rotated; A's key worker has not received it yet
    with pytest.raises(NewestKeyMissing, match="chain is at key epoch 2 and this node holds keys up to epoch 1"):
        republish(a)
    assert outbox_states(a) == [(1, "queued")]
    a.keyring.store_key(2, os.urandom(32), source="envelope")  # as the key worker stores it
    assert republish(a).records == 1
    assert outbox_states(a) == [(1, "queued"), (2, "queued")]


@pytest.fixture
def rotated_bank(ledger_nodes: LedgerNodes, store_url: str) -> NodeContext:
    """Bank A on `store_url` (SQLite or PostgreSQL) with a queued report of epoch 1, holding the key of epoch 2."""
    bank = moved_to_store(ledger_nodes.nodes[0], store_url)
    ledger_nodes.nodes.append(bank)  # closed with the others
    bank.keyring.store_key(1, os.urandom(32), source="generated")
    bank.report_intake.accept(ReportRequest([("phone", "13800138000")], "other", 50), submitted_by="k")
    bank.keyring.store_key(2, os.urandom(32), source="generated")
    return bank


def outbox_states(bank: NodeContext) -> list[tuple[int, str]]:
    with bank.store.session() as session:
        rows = session.execute(select(OutboxRecord.epoch, OutboxRecord.state))
        return sorted((epoch, state) for epoch, state in rows)


def test_republish_beside_a_withdrawal_queues_nothing_of_the_withdrawn_report(ledger_nodes: LedgerNodes,
                                                                              rotated_bank: NodeContext) -> None:
    analyst = NodeContext(rotated_bank.settings)  # the API withdrawing while the operator republishes
    ledger_nodes.nodes.append(analyst)
    with analyst.store.session() as session:
        [report_id] = session.scalars(select(OutboxRecord.report_id))

    with interrupted_before_writing(rotated_bank.store, {"outbox_records"},
                                    lambda: withdraw_report(analyst, report_id, "superseded")):
        result = republish_active_reports(rotated_bank.store, rotated_bank.keyring, rotated_bank.vault)

    assert (result.reports, result.records) == (0, 0)
    assert outbox_states(rotated_bank) == [(1, "withdrawn")]


def test_republish_beside_another_republish_queues_each_record_once(ledger_nodes: LedgerNodes,
                                                                    rotated_bank: NodeContext) -> None:
    cli = NodeContext(rotated_bank.settings)  # a second `alliance ledger republish`
    ledger_nodes.nodes.append(cli)
    other: list[RepublishResult] = []

    with interrupted_before_writing(rotated_bank.store, {"outbox_records"},
                                    lambda: other.append(republish_active_reports(cli.store, cli.keyring, cli.vault))):
        result = republish_active_reports(rotated_bank.store, rotated_bank.keyring, rotated_bank.vault)

    assert (other[0].records, result.records) == (1, 0)
    assert outbox_states(rotated_bank) == [(1, "queued"), (2, "queued")]
