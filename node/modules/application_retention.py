"""Erasing an application's applicant once no action of the credit platform needs it (node.ledger.retention runs it).

The applicant's identifiers are kept, vault-encrypted, for three readers only: booking (an approved application),
the ABS loan tape and post-loan monitoring (a booked loan), and a fraud confirmation (reporting the applicant to
the ledger, by hand or from a risk alert). An applicant is *spent* when none of them can still need it:
- an application not booked (declined, referred, approved but never booked, or left undecided by a crash) whose
  decision (or receipt, when undecided) is older than `application_retention_days`: an approval not booked within
  the period can no longer be booked;
- a booked loan repaid more than that long ago, while the credit policy's ABS `eligible_statuses` leave repaid
  loans out of pools;
and, in both cases, with no risk alert open or being confirmed, and no fraud confirmation under way (one claimed on
the application whose report is not in the outbox yet: a retry still needs the identifiers).

What goes is the sealed applicant and every keyed hash of the applicant kept for it: the application's and the
loan's applicant fingerprint, the borrower's alliance indicators (monitoring of the repaid loan ends), and the
velocity fingerprints once they are older than the velocity window (until then they still count in other
applicants' velocity). The fingerprints are HMACs under a key only this bank holds: nobody else can link them to a
person, but the bank can, by fingerprinting any identifier it is shown, so they are personal data like the
identifiers themselves. The decision, its trail of codes and the loan's servicing figures stay.

Each page of applications is its own transaction, so a first pass over a large store never holds the write lock
for long and a crash keeps the finished pages; a pass is idempotent. Every action that needs an erased applicant
is refused with `applicant_erased` (node.modules.credit_platform).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update

from node.modules.policy import policy_for
from node.store.application_tables import (
    ApplicationFingerprint,
    BookedLoanRow,
    BorrowerIndicator,
    LoanApplication,
    RiskAlert,
)
from node.store.bulk import delete_in_slices
from node.store.db import Store
from node.store.ledger_tables import FraudReport

APPLICATIONS_PER_TRANSACTION = 1_000  # applications whose applicant one transaction erases
FINGERPRINTS_PER_TRANSACTION = 10_000  # velocity fingerprints one transaction deletes


def prune_applications(node: Any, *, cutoff: datetime, now: int) -> tuple[int, int]:
    """Erase the applicants spent at `cutoff` (now less the retention period) and the velocity fingerprints of
    erased applicants seen before the velocity window; (applicants erased, fingerprints deleted)."""
    policy = policy_for(node)
    repaid_spent = "repaid" not in policy.abs["eligible_statuses"]
    window_s = math.ceil(float(policy.velocity["window_hours"]) * 3600)
    erased = erase_spent_applicants(node.store, cutoff=cutoff, repaid_spent=repaid_spent)
    return erased, delete_spent_fingerprints(node.store, seen_before=now - window_s)


def spent_applicant(cutoff: datetime, *, repaid_spent: bool) -> ColumnElement[bool]:
    """The applications whose applicant is held and no longer needed at `cutoff` (module docstring)."""
    app = LoanApplication
    settled = or_(app.decided_at < cutoff, and_(app.decided_at.is_(None), app.received_at < cutoff))
    ended = [and_(app.state != "booked", settled)]
    if repaid_spent:
        ended.append(and_(app.state == "booked", exists().where(
            BookedLoanRow.application_id == app.application_id, BookedLoanRow.status == "repaid",
            BookedLoanRow.repaid_at < cutoff)))
    no_claim_under_way = or_(app.fraud_report_id.is_(None),
                             exists().where(FraudReport.report_id == app.fraud_report_id))
    no_alert_pending = ~exists().where(RiskAlert.application_id == app.application_id,
                                       RiskAlert.state.in_(("open", "confirming")))
    return and_(app.sealed_applicant.is_not(None), or_(*ended), no_claim_under_way, no_alert_pending)


def erase_spent_applicants(store: Store, *, cutoff: datetime, repaid_spent: bool) -> int:
    """Erase the applicants spent at `cutoff` with their keyed hashes, a page of applications per transaction;
    the count erased.

    The erasing statement checks the condition again on each row, so an application booked, or alerted on, by
    another process between the page's read and its erasure keeps its applicant (booking, for its part, claims
    only an application still holding one)."""
    spent = spent_applicant(cutoff, repaid_spent=repaid_spent)
    erased, after = 0, ""
    while True:
        with store.transaction() as session:
            page = list(session.scalars(select(LoanApplication.application_id)
                                        .where(LoanApplication.application_id > after, spent)
                                        .order_by(LoanApplication.application_id)
                                        .limit(APPLICATIONS_PER_TRANSACTION)))
            if not page:
                return erased
            done = list(session.scalars(
                update(LoanApplication).where(LoanApplication.application_id.in_(page), spent)
                .values(sealed_applicant=None, applicant_fingerprint=None)
                .returning(LoanApplication.application_id).execution_options(synchronize_session=False)))
            if done:
                loans = select(BookedLoanRow.id).where(BookedLoanRow.application_id.in_(done))
                session.execute(delete(BorrowerIndicator).where(BorrowerIndicator.loan_ref.in_(loans))
                                .execution_options(synchronize_session=False))
                session.execute(update(BookedLoanRow).where(BookedLoanRow.application_id.in_(done))
                                .values(applicant_fingerprint=None).execution_options(synchronize_session=False))
            erased += len(done)
        after = page[-1]


def delete_spent_fingerprints(store: Store, *, seen_before: int) -> int:
    """Delete the velocity fingerprints of erased applicants seen before `seen_before` (Unix seconds); the count."""
    erased = exists().where(LoanApplication.application_id == ApplicationFingerprint.application_id,
                            LoanApplication.sealed_applicant.is_(None))
    return delete_in_slices(store, ApplicationFingerprint.id, ApplicationFingerprint.seen_at < seen_before, erased,
                            slice_rows=FINGERPRINTS_PER_TRANSACTION)
