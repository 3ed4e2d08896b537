"""Retention: raw identifiers erased once no report needs them, query-log entries deleted past their retention."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from node.ledger import retention
from node.ledger.reactions import withdraw_report
from node.ledger.reports import ReportRequest
from node.ledger.republish import republish_active_reports
from node.ledger.retention import prune
from node.runtime import NodeContext
from node.store.ledger_tables import CheckLogEntry, OutboxRecord
from node.workers import node_workers
from tests.conftest import LedgerNodes, moved_to_store

DAY = 86_400


@pytest.fixture
def bank(ledger_nodes: LedgerNodes, store_url: str) -> NodeContext:
    """Bank A on `store_url` (SQLite or PostgreSQL) holding the key of epoch 1."""
    node = moved_to_store(ledger_nodes.nodes[0], store_url)
    ledger_nodes.nodes.append(node)  # closed with the others
    node.keyring.store_key(1, os.urandom(32), source="generated")
    return node


def _accept(node: NodeContext, identifiers: list[tuple[str, str]], **fields: int) -> str:
    return node.report_intake.accept(ReportRequest(identifiers, "money_mule", 70, **fields),
                                     submitted_by="k").report_id


def _sealed(node: NodeContext) -> dict[str, list[bool]]:
    """Per report, whether each outbox row still holds its sealed identifier."""
    with node.store.session() as session:
        rows = session.execute(select(OutboxRecord.report_id, OutboxRecord.sealed_identifier)
                               .order_by(OutboxRecord.id)).all()
    held: dict[str, list[bool]] = {}
    for report_id, sealed in rows:
        held.setdefault(report_id, []).append(sealed is not None)
    return held


def test_prune_erases_identifiers_of_expired_and_withdrawn_reports_only(bank: NodeContext,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "REPORTS_PER_TRANSACTION", 1)  # a page per report
    live = _accept(bank, [("phone", "13800138000"), ("email", "mule@example.com")])
    expired = _accept(bank, [("phone", "13900139000"), ("ip", "10.0.0.1")], valid_days=1,
                      valid_from=int(time.time()) - 10 * DAY)
    withdrawn = _accept(bank, [("phone", "13700137000")])
    withdraw_report(bank, withdrawn, "reported_in_error")

    result = prune(bank)

    assert result.identifiers_erased == 3
    assert _sealed(bank) == {live: [True, True], expired: [False, False], withdrawn: [False]}
    assert prune(bank).identifiers_erased == 0  # idempotent
    # Republish still finds the live report's identifiers, and only them.
    bank.keyring.store_key(2, os.urandom(32), source="generated")
    assert republish_active_reports(bank.store, bank.keyring, bank.vault).records == 2


def test_prune_keeps_identifiers_until_the_report_expires(bank: NodeContext) -> None:
    report = _accept(bank, [("phone", "13800138000")], valid_days=1, valid_from=int(time.time()))
    assert prune(bank, now=time.time() + DAY - 60).identifiers_erased == 0
    assert _sealed(bank) == {report: [True]}
    assert prune(bank, now=time.time() + DAY + 60).identifiers_erased == 1
    assert _sealed(bank) == {report: [False]}


def test_republish_skips_identifiers_erased_under_a_clock_that_went_back(bank: NodeContext) -> None:
    """A retention pass run under a clock ahead of time erased a report republish still takes for live: it is
    left out instead of failing every republish on an identifier that is not there."""
    _accept(bank, [("phone", "13800138000")], valid_days=30)
    assert prune(bank, now=time.time() + 40 * DAY).identifiers_erased == 1
    bank.keyring.store_key(2, os.urandom(32), source="generated")
    assert republish_active_reports(bank.store, bank.keyring, bank.vault).records == 0


def _log_entries(node: NodeContext, ages_days: list[float]) -> None:
    now = datetime.now(UTC)
    with node.store.transaction() as session:
        session.add_all([CheckLogEntry(key_id=f"k{i}", asked_at=now - timedelta(days=age), kind="identity",
                                       indicators="[]", hits="[]", as_of_block=1, stale=False)
                         for i, age in enumerate(ages_days)])


def _log_keys(node: NodeContext) -> list[str]:
    with node.store.session() as session:
        return list(session.scalars(select(CheckLogEntry.key_id).order_by(CheckLogEntry.id)))


def test_prune_deletes_query_log_entries_past_retention_only(bank: NodeContext,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "ROWS_PER_TRANSACTION", 2)  # several slices, the last one short
    _log_entries(bank, [400, 31, 29, 200, 30.01, 1, 500])
    bank.settings.check_log_retention_days = 30

    result = prune(bank)

    assert (result.check_log_deleted, result.check_log_retention_days) == (5, 30)
    assert _log_keys(bank) == ["k2", "k5"]
    assert prune(bank).check_log_deleted == 0


def test_prune_keeps_the_whole_query_log_without_a_retention_setting(bank: NodeContext) -> None:
    _log_entries(bank, [5000, 1])
    assert bank.settings.check_log_retention_days is None

    result = prune(bank)

    assert (result.check_log_deleted, result.check_log_retention_days) == (0, None)
    assert _log_keys(bank) == ["k0", "k1"]


def test_the_node_runs_retention_in_the_background(bank: NodeContext) -> None:
    report = _accept(bank, [("phone", "13800138000")], valid_days=1, valid_from=int(time.time()) - 3 * DAY)
    [loop] = [loop for loop in node_workers(bank).loops if loop.name == "retention"]
    assert loop.interval_s == bank.settings.retention_interval_s == 3600

    loop.run_step()

    assert loop.status.last_error is None and _sealed(bank) == {report: [False]}
