"""The oldest queued record (`oldest_queued_report_at`, `alliance_outbox_oldest_queued_age_seconds`) counts from
when a record entered the queue, not from its report's acceptance: records queued again (a republish after a key
rotation, a batch the chain lost) made the gauge jump to their reports' whole age, and a "queue stuck" alert fire.
On a real chain, on SQLite and PostgreSQL stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from node.chain.client import ChainClient
from node.ledger.republish import republish
from node.metrics import render_metrics
from node.node_status import store_figures
from node.runtime import NodeContext
from node.store.ledger_tables import FraudReport, OutboxRecord
from node.store.models import as_utc
from tests.api.test_metrics_api import samples
from tests.conftest import LedgerNodes, moved_to_store
from tests.ledger.test_publisher import give_alliance_key, report

AGE = ("alliance_outbox_oldest_queued_age_seconds", ())


@pytest.fixture
def bank(ledger_nodes: LedgerNodes, store_url: str) -> Iterator[NodeContext]:
    node = moved_to_store(ledger_nodes.nodes[0], store_url)
    give_alliance_key(node)
    yield node
    node.close()


def _accepted_long_ago(bank: NodeContext, ago: timedelta) -> None:
    """Every report held was accepted, and its records queued, `ago` before now (a store of a node running for
    years)."""
    long_ago = datetime.now(UTC) - ago
    with bank.store.transaction() as session:
        session.execute(update(FraudReport).values(created_at=long_ago))
        session.execute(update(OutboxRecord).values(queued_at=long_ago))


def _oldest_queued_at(bank: NodeContext) -> datetime | None:
    with bank.store.session() as session:
        oldest = store_figures(bank, session).oldest_queued_at
    return None if oldest is None else as_utc(oldest)


def _queued_age_s(bank: NodeContext) -> float:
    return samples(render_metrics(bank, {}, version="test").decode())[AGE]


def test_records_republished_after_a_key_rotation_count_as_queued_from_the_republish(bank: NodeContext) -> None:
    bank.report_intake.accept(report(), submitted_by="k")
    bank.publisher.drain()
    _accepted_long_ago(bank, timedelta(days=3 * 365))
    assert _oldest_queued_at(bank) is None and _queued_age_s(bank) == 0

    assert bank.registry(signing=True).start_key_epoch() == 2
    bank.keyring.store_key(2, os.urandom(32), source="generated")
    republished_from = datetime.now(UTC)
    assert republish(bank).records == 1

    oldest = _oldest_queued_at(bank)
    assert oldest is not None and republished_from <= oldest <= datetime.now(UTC)
    assert 0 <= _queued_age_s(bank) < 60
    bank.publisher.drain()
    assert _oldest_queued_at(bank) is None and _queued_age_s(bank) == 0


def test_records_of_a_batch_the_chain_lost_count_as_queued_from_the_requeue(bank: NodeContext) -> None:
    control = ChainClient(bank.settings.effective_rpc_url)
    before = control.rpc("evm_snapshot")
    bank.report_intake.accept(report(), submitted_by="k")
    bank.publisher.drain()
    _accepted_long_ago(bank, timedelta(days=1))
    control.rpc("evm_revert", [before])  # the chain comes back without the batch the store holds as confirmed

    requeued_from = datetime.now(UTC)
    assert bank.publisher.requeue_lost_batches() == 1
    oldest = _oldest_queued_at(bank)
    assert oldest is not None and requeued_from <= oldest <= datetime.now(UTC)
    assert 0 <= _queued_age_s(bank) < 60


def test_a_record_still_queued_counts_from_when_it_was_queued(bank: NodeContext) -> None:
    """Not reset by anything but a queuing: a record waiting a day shows a day (the alert this figure is for)."""
    bank.report_intake.accept(report(), submitted_by="k")
    _accepted_long_ago(bank, timedelta(days=1))
    assert 86_400 <= _queued_age_s(bank) < 86_400 + 60
