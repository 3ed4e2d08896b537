"""Risk operations: post-loan monitoring against the alliance ledger.

When the indexer mirrors new blocks (`alliance_indicators_mirrored`), the records indexed in that block range (and
in any earlier block not matched yet) are matched against the indicators of this bank's own booked borrowers (stored
under every key epoch at booking, refreshed after rotations); a loan just booked is matched against every record
mirrored so far (`alliance_loan_booked`), and so is, by the next pass, any borrower indicator added since the last
pass (a booking whose hook failed, a key epoch received after records under it were mirrored). Each active match
raises an alert, stored once per (loan, indicator, batch), listed by `GET /v1/alerts` and `alliance alerts`, and
POSTed to `risk_alert_webhook_url` if set (the alert carries loan reference, identifier type, categories and the
indicator hash: no raw identifier). A POST that failed, or never happened (the node stopped between storing and
posting), is retried on later passes, oldest first, at most once a minute: delivery is at least once, `alert_id`
identifies it. An analyst then dismisses it, or confirms fraud, which reports the borrower back to the ledger in one
step.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from node.errors import Conflict, InvalidInput, NotFound
from node.extensions.hookspecs import hookimpl
from node.extensions.types import BookedLoan
from node.ledger.checks import state_policy
from node.ledger.indicator_state import derive_state
from node.ledger.mirror import facts_for
from node.ledger.reports import ReportRequest
from node.modules.credit_platform import confirm_fraud, fraud_report_request, refresh_borrower_indicators
from node.store.application_tables import BookedLoanRow, BorrowerIndicator, LoanApplication, RiskAlert
from node.store.bulk import rows_page
from node.store.db import once_more_on_conflict
from node.store.ledger_tables import MirrorRecord, SyncState
from node.store.models import as_utc, utcnow
from node.text import quoted

NAME = "risk_operations"
ALERT_STATES = ("open", "dismissed", "confirming", "confirmed")
# The `sync_state` row holding the last block whose mirrored records were matched against the borrowers.
MONITOR_CURSOR = "risk_operations"
# The `sync_state` row holding, in `last_block`, the highest `borrower_indicators` id matched against every record
# mirrored so far (not a block number: the row's other columns are unused).
BORROWER_CURSOR = "risk_operations_borrowers"
MAX_ALERT_ID = 2**31 - 1  # the store's INTEGER key: a larger id is bad input, not an overflow in the query
# Alerts per page of GET /v1/alerts.
DEFAULT_ALERTS_PAGE = 100
MAX_ALERTS_PAGE = 1_000
WEBHOOK_RETRY_INTERVAL_S = 60.0
WEBHOOK_RETRY_BATCH = 50
# A `pending` alert younger than this may be being posted right now by the pass that raised it.
WEBHOOK_PENDING_GRACE = timedelta(seconds=30)
logger = logging.getLogger(__name__)
# httpx logs each request's URL in full at INFO (httpcore its connections at DEBUG), and a webhook URL may carry its
# credentials (a token in its path or query): with `--debug` (or any logging set up at INFO) they reached the node's
# log. Only warnings of theirs are kept; a failed delivery is logged here, without the URL.
for _http_logger in ("httpx", "httpcore"):
    logging.getLogger(_http_logger).setLevel(logging.WARNING)
_webhook_retry_due: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


@hookimpl
def alliance_indicators_mirrored(node: Any, from_block: int, to_block: int) -> None:
    raise_alerts(node, from_block, to_block)


@hookimpl
def alliance_loan_booked(node: Any, loan: BookedLoan) -> None:
    raise_booking_alerts(node, loan.loan_reference)


@hookimpl
def alliance_api_routers() -> list[Any]:
    from node.api.routes.alerts import router

    return [router]


def raise_alerts(node: Any, from_block: int, to_block: int) -> list[dict[str, Any]]:
    """Alerts for own borrowers among the records of blocks (from_block, to_block], and of any earlier blocks not
    matched yet; returns the new ones."""
    refresh_borrower_indicators(node)
    # Another replica's indexer alerting for an overlapping range may store some of these first; storing again
    # skips those and keeps the rest.
    alerts = _notified(node, once_more_on_conflict(lambda: _store_alerts(node, from_block, to_block)))
    _resend_when_due(node)
    return alerts


def raise_booking_alerts(node: Any, loan_reference: str) -> list[dict[str, Any]]:
    """Alerts for a loan just booked among every record mirrored so far; returns the new ones.

    The indexer's passes match the borrowers booked when they run: a borrower reported after the decision and
    mirrored before the booking would otherwise never be matched.
    """
    def store() -> list[dict[str, Any]]:
        with node.store.transaction() as session:
            loan = select(BookedLoanRow.id).where(BookedLoanRow.loan_reference == loan_reference).scalar_subquery()
            return _alert_matches(node, session, _matches(session, BorrowerIndicator.loan_ref == loan))

    return _notified(node, once_more_on_conflict(store))


def _notified(node: Any, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if node.settings.risk_alert_webhook_url:
        for view in views:
            _notify(node, view)
    return views


def _store_alerts(node: Any, from_block: int, to_block: int) -> list[dict[str, Any]]:
    with node.store.transaction() as session:
        # The indexer commits its blocks before extensions hear of them: blocks whose hook call failed, or never
        # came (the node stopped in between), lie below from_block, after the last block matched. Matching goes
        # back to there, and the mark moves with the alerts, in one transaction.
        start = _move_cursor(session, MONITOR_CURSOR, to_block)
        start = from_block if start is None else min(from_block, start)
        matches = _matches(session, MirrorRecord.block_number > start, MirrorRecord.block_number <= to_block)
        # Borrower indicators added since the last pass are matched against the earlier blocks too: those of a loan
        # whose booking hook failed or never ran (the node stopped after the booking), and those of a key epoch
        # this node received after the indexer had mirrored records under it (nothing matched them then).
        newest = session.scalar(select(func.max(BorrowerIndicator.id))) or 0
        held = _move_cursor(session, BORROWER_CURSOR, newest) or 0
        if newest > held:
            matches += _matches(session, MirrorRecord.block_number <= start, BorrowerIndicator.id > held,
                                BorrowerIndicator.id <= newest)
        return _alert_matches(node, session, matches)


def _move_cursor(session: Any, name: str, position: int) -> int | None:
    """Set the `sync_state` row `name` to `position`; returns where it was (None: the row is new)."""
    row = session.get(SyncState, name)
    if row is None:
        session.add(SyncState(contract=name, last_block=position))
        return None
    # The block cursor is lowered too, after a reorganisation: the blocks above to_block are indexed (and heard of)
    # again.
    previous, row.last_block = row.last_block, position
    return int(previous)


def _alert_matches(node: Any, session: Any, matches: list[Any]) -> list[dict[str, Any]]:
    """Store an alert for each match whose indicator is active and not alerted yet; their views."""
    if not matches:
        return []
    facts = facts_for(session, [bytes(m[0]) for m in matches])
    now, policy = int(time.time()), state_policy(node)
    existing = {(a.loan_ref, bytes(a.indicator), a.batch_id) for a in session.scalars(
        select(RiskAlert).where(RiskAlert.loan_ref.in_({m[4] for m in matches})))}
    created = []
    for indicator, batch_id, block, reporter, loan_ref, kind, application_id in matches:
        indicator = bytes(indicator)
        records, reactions = facts.get(indicator, ([], []))
        state = derive_state(indicator, records, reactions, at=now, policy=policy)
        if not state.active or (loan_ref, indicator, batch_id) in existing:
            continue
        existing.add((loan_ref, indicator, batch_id))
        alert = RiskAlert(loan_ref=loan_ref, application_id=application_id, identifier_type=kind,
                          indicator=indicator, batch_id=batch_id, block_number=block,
                          reporter_member_id=reporter, categories=json.dumps(list(state.categories)),
                          confidence=state.confidence, state="open",
                          webhook_state="none" if not node.settings.risk_alert_webhook_url else "pending")
        session.add(alert)
        created.append(alert)
    session.flush()
    return [alert_view(a, session) for a in created]


def _matches(session: Any, *where: Any) -> list[Any]:
    """(indicator, batch, block, reporter, loan, identifier type, application) of each mirrored record meeting
    `where` that is one of a booked borrower's indicators."""
    return list(session.execute(
        select(MirrorRecord.indicator, MirrorRecord.batch_id, MirrorRecord.block_number,
               MirrorRecord.reporter_member_id, BorrowerIndicator.loan_ref, BorrowerIndicator.identifier_type,
               BookedLoanRow.application_id)
        .join(BorrowerIndicator, BorrowerIndicator.indicator == MirrorRecord.indicator)
        .join(BookedLoanRow, BookedLoanRow.id == BorrowerIndicator.loan_ref)
        .join(LoanApplication, LoanApplication.application_id == BookedLoanRow.application_id)
        # A borrower this bank already confirmed as fraud (and reported itself) needs no alert.
        .where(*where, LoanApplication.fraud_report_id.is_(None))).all())


def _resend_when_due(node: Any) -> None:
    now = time.monotonic()
    if not node.settings.risk_alert_webhook_url or _webhook_retry_due.get(node, 0.0) > now:
        return
    _webhook_retry_due[node] = now + WEBHOOK_RETRY_INTERVAL_S
    resend_undelivered_alerts(node)


def resend_undelivered_alerts(node: Any) -> int:
    """POST again, oldest first, alerts whose webhook call failed or never happened; returns how many went out.

    At most WEBHOOK_RETRY_BATCH, and none after the first failure (the endpoint is still down). A `pending` alert
    is taken only after WEBHOOK_PENDING_GRACE, so the pass that raised it is not raced.
    """
    if not node.settings.risk_alert_webhook_url:
        return 0
    settled_pending = (RiskAlert.webhook_state == "pending") & (RiskAlert.created_at < utcnow() - WEBHOOK_PENDING_GRACE)
    with node.store.session() as session:
        undelivered = session.scalars(
            select(RiskAlert).where((RiskAlert.webhook_state == "failed") | settled_pending)
            .order_by(RiskAlert.id).limit(WEBHOOK_RETRY_BATCH)).all()
        views = [alert_view(alert, session) for alert in undelivered]
    for sent, view in enumerate(views):
        _notify(node, view)
        if view["webhook_state"] != "sent":
            return sent
    return len(views)


def _notify(node: Any, view: dict[str, Any]) -> None:
    try:
        response = httpx.post(node.settings.risk_alert_webhook_url, json={"event": "risk_alert", "alert": view},
                              timeout=node.settings.request_timeout_s)
        state = "sent" if response.is_success else "failed"
    except httpx.HTTPError as exc:
        logger.warning("risk alert webhook failed: %s", type(exc).__name__)
        state = "failed"
    with node.store.transaction() as session:
        session.get_one(RiskAlert, view["alert_id"]).webhook_state = state
    view["webhook_state"] = state


def alert_view(alert: RiskAlert, session: Any) -> dict[str, Any]:
    loan = session.get_one(BookedLoanRow, alert.loan_ref)
    # Aware on either store, as the webhook sent it: SQLite hands the UTC time back naive, read as local time.
    return {"alert_id": alert.id, "created_at": as_utc(alert.created_at).isoformat() if alert.created_at else None,
            "loan_reference": loan.loan_reference, "application_id": alert.application_id,
            "identifier_type": alert.identifier_type, "indicator": "0x" + bytes(alert.indicator).hex(),
            "batch_id": alert.batch_id, "block_number": alert.block_number,
            "reporter_member_id": alert.reporter_member_id, "categories": json.loads(alert.categories),
            "confidence": alert.confidence, "state": alert.state, "webhook_state": alert.webhook_state,
            "resolved_by": alert.resolved_by, "fraud_report_id": alert.fraud_report_id}


@dataclass(frozen=True)
class AlertsPage:
    """One page of alerts, newest first; `next_after` (the last alert's id) continues while more follow."""

    alerts: list[dict[str, Any]]
    next_after: int | None


def list_alerts(node: Any, *, state: str | None = None) -> list[dict[str, Any]]:
    """Every alert (in `state`), newest first."""
    return alerts_page(node, state=state, limit=None).alerts


def alerts_page(node: Any, *, state: str | None = None, after: int | None = None,
                limit: int | None = DEFAULT_ALERTS_PAGE) -> AlertsPage:
    """The alerts older than alert `after` (newest first: by id, which only grows), at most `limit` (None: all)."""
    if state and state not in ALERT_STATES:  # a typo would otherwise list nothing, as if there were no alerts
        raise InvalidInput(f"unknown alert state {quoted(state)}; one of {', '.join(ALERT_STATES)}",
                           code="invalid_state")
    with node.store.session() as session:
        query = select(RiskAlert).order_by(RiskAlert.id.desc())
        if state:
            query = query.where(RiskAlert.state == state)
        if after is not None:
            query = query.where(RiskAlert.id < after)
        alerts, more = rows_page(session, query, limit)
        return AlertsPage([alert_view(a, session) for a in alerts], alerts[-1].id if more else None)


def resolve_alert(node: Any, alert_id: int, *, confirm: bool, by: str, category: str = "first_party_fraud",
                  confidence: int = 90) -> dict[str, Any]:
    """Dismiss an alert, or confirm fraud: the borrower is reported to the ledger in the same step.

    A confirmation marks the alert `confirming` with the id of the report it is about to make (derived from the
    report's content), reports, then marks it `confirmed`. A crash in between leaves it `confirming`; confirming it
    again with the same category and confidence makes the same report, so it finishes the job and reports the
    borrower once. Any other confirmation or dismissal of a `confirming` alert is refused: two analysts confirming
    at once with different categories reported the borrower twice."""
    report = _planned_report(node, alert_id, category, confidence) if confirm else None
    if report is not None:
        reported = _fraud_report_of_application(node, alert_id)
        if reported is not None and reported != report[1]:
            # The bank confirmed fraud on the application already (POST .../fraud, or another alert of the loan):
            # the borrower is reported, so this confirmation records that report instead of making a second one.
            return _confirm_as_reported(node, alert_id, reported, by, planned=report[1])
    with node.store.transaction() as session:
        # Claimed before anything is reported: of an analyst dismissing and another confirming one alert at once (or
        # the API and `alliance alerts`), only one still finds it in a state it may leave; the other is refused.
        claimable = RiskAlert.state == "open"
        if report is not None:
            claimable = claimable | ((RiskAlert.state == "confirming") & (RiskAlert.fraud_report_id == report[1]))
        application_id = session.scalar(
            update(RiskAlert).where(RiskAlert.id == alert_id, claimable)
            .values(state="confirming" if confirm else "dismissed", resolved_by=by,
                    fraud_report_id=report[1] if report else None).returning(RiskAlert.application_id))
        if application_id is None:
            raise _not_claimable(session, alert_id)
    if report is None:
        return _alert(node, alert_id)
    _report_borrower(node, alert_id, application_id, by, report[0])
    with node.store.transaction() as session:
        session.execute(update(RiskAlert).where(RiskAlert.id == alert_id, RiskAlert.state == "confirming")
                        .values(state="confirmed"))
    return _alert(node, alert_id)


def _fraud_report_of_application(node: Any, alert_id: int) -> str | None:
    with node.store.session() as session:
        return session.scalar(select(LoanApplication.fraud_report_id)
                              .join(RiskAlert, RiskAlert.application_id == LoanApplication.application_id)
                              .where(RiskAlert.id == alert_id))


def _confirm_as_reported(node: Any, alert_id: int, report_id: str, by: str, *, planned: str) -> dict[str, Any]:
    """Confirm the alert with the application's report `report_id`; also one left `confirming` by this same
    confirmation (its `planned` report) when it was interrupted: the application was confirmed in between, and
    that alert could otherwise be neither confirmed nor dismissed."""
    with node.store.transaction() as session:
        claimable = (RiskAlert.state == "open") | (
            (RiskAlert.state == "confirming") & (RiskAlert.fraud_report_id == planned))
        claimed = session.execute(update(RiskAlert).where(RiskAlert.id == alert_id, claimable)
                                  .values(state="confirmed", resolved_by=by, fraud_report_id=report_id))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise _not_claimable(session, alert_id)
    return _alert(node, alert_id)


def _not_claimable(session: Any, alert_id: int) -> NotFound | Conflict:
    """Why an alert's claim found no row: there is no such alert, or it left the state the claim needed."""
    alert = session.get(RiskAlert, alert_id)
    if alert is None:
        return NotFound(f"no alert {alert_id}", code="alert_not_found")
    state = "being confirmed" if alert.state == "confirming" else f"already {alert.state}"
    return Conflict(f"alert {alert_id} is {state}", code="alert_resolved")


def _planned_report(node: Any, alert_id: int, category: str, confidence: int) -> tuple[ReportRequest, str]:
    """The report confirming the alert would make, and its id; validated (InvalidInput) before anything is claimed."""
    with node.store.session() as session:
        alert = session.get(RiskAlert, alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}", code="alert_not_found")
        application_id = alert.application_id
    request = fraud_report_request(node, application_id, category=category, confidence=confidence,
                                   case_reference=f"alert-{alert_id}")
    return request, node.report_intake.prepare(request).report_id


def _alert(node: Any, alert_id: int) -> dict[str, Any]:
    with node.store.session() as session:
        return alert_view(session.get_one(RiskAlert, alert_id), session)


def _report_borrower(node: Any, alert_id: int, application_id: str, by: str, request: ReportRequest) -> None:
    """Report the confirmed alert's borrower; the alert is open again if that fails."""
    try:
        confirm_fraud(node, application_id, category=request.category, confidence=request.confidence,
                      confirmed_by=by, case_reference=request.case_reference)
    except Exception:
        _reopen(node, alert_id)
        raise


def _reopen(node: Any, alert_id: int) -> None:
    with node.store.transaction() as session:
        session.execute(update(RiskAlert).where(RiskAlert.id == alert_id, RiskAlert.state == "confirming")
                        .values(state="open", resolved_by=None, fraud_report_id=None))
