"""Keeping personal data no longer than it is needed (data minimisation).

- **Raw identifiers.** The outbox keeps each reported identifier vault-encrypted for one purpose only:
  `alliance ledger republish` hashes it again under a new key epoch. Republish takes only reports that are
  still valid and not withdrawn, so once a report has expired or been withdrawn its copies are never read
  again: they are erased (set to NULL). The indicators, states and transaction details stay, so the
  report's history, withdrawal and the publisher's bookkeeping are unchanged.
- **Query log.** Entries older than `check_log_retention_days` are deleted, when that is set. Unset (the
  default) keeps the log for good: how long a bank must keep the record of who checked whom is the bank's
  legal decision, not the node's.
- **Applicants.** An application's applicant is erased `application_retention_days` after no action needs it
  any more (node.modules.application_retention), when that is set; unset keeps them, for the same reason.
- **Abandoned imports.** The rows of a report import whose process died before it completed were never accepted
  and never will be: they are deleted (node.ledger.report_staging), unless an import is running.

Run by the node's `retention` loop (`retention_interval_s`) and by `alliance store prune`. Each page of
reports or slice of log entries is its own short transaction, so a first pass over a large store never holds
the write lock for long and a crash keeps what the finished pages did; a pass is idempotent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from node.ledger.report_staging import discard_abandoned_imports
from node.modules.application_retention import prune_applications
from node.runtime import NodeContext
from node.store.bulk import delete_in_slices
from node.store.db import Store
from node.store.ledger_tables import CheckLogEntry, FraudReport, OutboxRecord

REPORTS_PER_TRANSACTION = 5_000  # reports whose identifiers one transaction erases
ROWS_PER_TRANSACTION = 10_000  # query-log entries one transaction deletes


@dataclass(frozen=True)
class RetentionResult:
    identifiers_erased: int
    check_log_deleted: int
    check_log_retention_days: int | None
    applicants_erased: int
    fingerprints_deleted: int
    application_retention_days: int | None
    abandoned_imports_discarded: int = 0


def prune(node: NodeContext, *, now: float | None = None) -> RetentionResult:
    """One retention pass over this node's store."""
    now = time.time() if now is None else now
    imports = discard_abandoned_imports(node.store)  # first: the loop's first pass runs as the node starts
    days = node.settings.check_log_retention_days
    erased = erase_spent_identifiers(node.store, now=int(now))
    deleted = 0
    if days is not None:
        deleted = delete_check_log_before(node.store, datetime.fromtimestamp(now, UTC) - timedelta(days=days))
    applicants = fingerprints = 0
    application_days = node.settings.application_retention_days
    if application_days is not None:
        applicants, fingerprints = prune_applications(
            node, cutoff=datetime.fromtimestamp(now, UTC) - timedelta(days=application_days), now=int(now))
    return RetentionResult(erased, deleted, days, applicants, fingerprints, application_days, imports)


def erase_spent_identifiers(store: Store, *, now: int) -> int:
    """Erase the sealed raw identifiers of reports expired at `now` (Unix seconds) or withdrawn; the count erased.

    Walks the reports in id order, a page of those still holding a sealed identifier at a time, so a pass reads
    each report once (an hourly pass that finds nothing costs one scan of the reports with an index probe of the
    outbox for each spent one) and each transaction erases one page through the outbox's report_id index."""
    spent = or_(FraudReport.valid_until <= now, FraudReport.withdrawn_at.is_not(None))
    holding = (select(OutboxRecord.id).where(OutboxRecord.report_id == FraudReport.report_id,
                                             OutboxRecord.sealed_identifier.is_not(None)).exists())
    erased, after = 0, ""
    while True:
        with store.transaction() as session:
            page = list(session.scalars(select(FraudReport.report_id)
                                        .where(FraudReport.report_id > after, spent, holding)
                                        .order_by(FraudReport.report_id).limit(REPORTS_PER_TRANSACTION)))
            if not page:
                return erased
            in_page = select(FraudReport.report_id).where(FraudReport.report_id > after,
                                                          FraudReport.report_id <= page[-1], spent)
            erased += session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.report_id.in_(in_page), OutboxRecord.sealed_identifier.is_not(None))
                .values(sealed_identifier=None)
                .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        after = page[-1]


def delete_check_log_before(store: Store, cutoff: datetime) -> int:
    """Delete the query-log entries asked before `cutoff`; the count deleted."""
    return delete_in_slices(store, CheckLogEntry.id, CheckLogEntry.asked_at < cutoff, slice_rows=ROWS_PER_TRANSACTION)
