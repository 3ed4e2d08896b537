"""Credit platform: loan applications enter the node here, run through the pipeline and are stored with their
full decision trail; approved ones can be booked as loans, and confirmed fraud goes to the ledger in one step.

Storage keeps the applicant's identifiers only vault-encrypted (needed back for an ABS loan tape and for a
fraud report) until retention erases them (node.modules.application_retention; every action needing them is then
refused with `applicant_erased`), fingerprints for velocity, and a trail of codes, counts and module names. Errors
never quote the identifiers.
"""

from __future__ import annotations

import json
import secrets
import time
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator
from sqlalchemy import case, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from node.assets.loan_tape import MAX_LOAN_REFERENCE, valid_loan_reference
from node.crypto.keyed_hash import indicator_hash
from node.errors import Conflict, InvalidInput, NotFound
from node.extensions.hookspecs import hookimpl
from node.extensions.manager import extensions_for
from node.extensions.pipeline import PipelineResult, run_pipeline
from node.extensions.types import OUTCOMES, Applicant, Application, BookedLoan, FraudConfirmation
from node.json_numbers import JsonInt
from node.ledger.identifiers import day_in_china
from node.ledger.reports import ReportRequest
from node.modules.fingerprints import canonical_or_none, fingerprint, fingerprint_key
from node.store.application_tables import (
    ApplicationFingerprint,
    BookedLoanRow,
    BorrowerIndicator,
    LoanApplication,
)
from node.store.bulk import rows_page
from node.store.db import once_more_on_conflict
from node.store.models import as_utc, utcnow

TAG = r"^[a-z0-9_]{1,32}$"
VELOCITY_KINDS = ("phone", "device_id", "bank_card", "ip", "email")
MONITORED_TYPES = ("cn_resident_id", "phone", "bank_card", "email", "device_id")
MAX_BANK_INPUTS = 64
# Applications per page of GET /v1/applications.
DEFAULT_APPLICATIONS_PAGE = 50
MAX_APPLICATIONS_PAGE = 1_000
LOANS_PER_TRANSACTION = 500  # booked loans whose borrowers one transaction hashes under new key epochs
MAX_AMOUNT = Decimal("1e12")  # in minor units well within the store's BIGINT amount columns


class ApplicantIn(BaseModel):
    # A misspelt field (`bankcard`, `device`) was dropped without a word: that identifier was never checked against
    # the alliance's blacklist nor counted for velocity, and the application was decided as if it had not been given.
    model_config = ConfigDict(extra="forbid")

    cn_resident_id: str = Field(max_length=64)
    phone: str = Field(max_length=64)
    bank_card: str | None = Field(default=None, max_length=64)
    device_id: str | None = Field(default=None, max_length=128)
    email: str | None = Field(default=None, max_length=254)
    ip: str | None = Field(default=None, max_length=64)
    birth_date: date | None = None
    # [0-9], not \d: the schema's regex engine takes any script's digits (Arabic-Indic, full-width), which then
    # never matched the resident ID's region, and identity recognition flagged the mismatch.
    region_code: str | None = Field(default=None, pattern=r"^[0-9]{2}([0-9]{4})?$")
    sex: Literal["M", "F"] | None = None

    @field_validator("birth_date")
    @classmethod
    def _born(cls, value: date | None) -> date | None:
        # A declared birth date after today is a typing error, not a reason to decline: the bank fixes and resubmits.
        if value is not None and value > day_in_china(int(time.time())):
            raise ValueError("birth_date is in the future")
        return value


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # `bank_input` for `bank_inputs` scored none of the bank's inputs

    channel: str = Field(pattern=TAG, examples=["mobile_app"])
    scenario: str = Field(pattern=TAG, examples=["consumer_loan"])
    applicant: ApplicantIn
    amount: Decimal = Field(gt=0, le=MAX_AMOUNT, decimal_places=2)
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    term_months: JsonInt = Field(ge=1, le=360)
    # Finite only: the API's JSON parser takes NaN and Infinity, and a NaN falls in no scorecard band (unscored).
    bank_inputs: dict[str, FiniteFloat] = Field(default_factory=dict, max_length=MAX_BANK_INPUTS)

    @field_validator("bank_inputs", mode="before")
    @classmethod
    def _at_most_max_bank_inputs(cls, value: Any) -> Any:
        # Counted before the entries are validated: pydantic checks a dict's max_length only after them, so 16 MB of
        # entries that are not numbers made some 2 million errors, each listed.
        if isinstance(value, dict) and len(value) > MAX_BANK_INPUTS:
            raise ValueError(f"at most {MAX_BANK_INPUTS} bank inputs")
        return value


@dataclass(frozen=True)
class Submitted:
    application_id: str
    result: PipelineResult


# -- hooks -----------------------------------------------------------------------------------------------------
@hookimpl
def alliance_api_routers() -> list[Any]:
    from node.api.routes.applications import applications_router, loans_router

    return [applications_router, loans_router]


# -- intake ----------------------------------------------------------------------------------------------------
def submit_application(node: Any, body: ApplicationIn, *, submitted_by: str) -> dict[str, Any]:
    """Store the application as received with its velocity fingerprints, run the pipeline, then store its
    decision and trail; returns the stored view.

    The received row is committed before the pipeline runs so that applications assessed at the same time (two
    API replicas, a fraud ring submitting in parallel) count each other in their velocity checks: the later of
    two sees the earlier, as if they had come one after the other. A crash mid-way leaves the application
    `received` and undecided (its identifiers were presented, so they still count); the caller's retry starts
    over under a new id.
    """
    application = Application("app_" + secrets.token_hex(12), body.channel, body.scenario,
                              Applicant(**body.applicant.model_dump()), body.amount, body.currency,
                              body.term_months, dict(body.bank_inputs), int(time.time()))
    with node.store.transaction() as session:
        session.add(_received_row(node, application, submitted_by))
        session.flush()
        prints = fingerprint_rows(node, application)
        if prints:
            session.execute(insert(ApplicationFingerprint), prints)
    result = run_pipeline(node, application)
    decision = result.decision
    with node.store.transaction() as session:
        row = session.get_one(LoanApplication, application.application_id, with_for_update=True)
        if row.state == "received":  # a fraud confirmation made meanwhile keeps its state
            row.state = "decided"
        row.outcome, row.decided_at = decision.outcome, utcnow()
        row.score = result.score.score if result.score else None
        row.limit_amount = str(decision.limit) if decision.limit is not None else None
        row.annual_rate_percent = (str(decision.annual_rate_percent) if decision.annual_rate_percent is not None
                                   else None)  # 0 too: an interest-free offer
        row.reasons = json.dumps(list(decision.reasons))
        row.trail = json.dumps(result.trail())
        view = application_view(row)
    extensions_for(node).call("alliance_application_decided", node=node, application=application,
                              decision=decision)
    return view


def _received_row(node: Any, application: Application, submitted_by: str) -> LoanApplication:
    applicant = application.applicant
    sealed = node.vault.encrypt(json.dumps(applicant.to_json()).encode(),
                                associated_data=sealed_applicant_ad(application.application_id))
    return LoanApplication(
        application_id=application.application_id, received_at=datetime.fromtimestamp(application.received_at, UTC),
        submitted_by=submitted_by, channel=application.channel, scenario=application.scenario,
        applicant_fingerprint=applicant_fingerprint(node, application), amount=str(application.amount),
        currency=application.currency, term_months=application.term_months, sealed_applicant=sealed,
        bank_inputs=json.dumps(application.bank_inputs), state="received")


def applicant_fingerprint(node: Any, application: Application) -> bytes:
    return fingerprint(fingerprint_key(node), "cn_resident_id", application.applicant.cn_resident_id)


def fingerprint_rows(node: Any, application: Application) -> list[dict[str, Any]]:
    """The application's velocity fingerprints (phone, device, card, IP, email) as rows to store."""
    key = fingerprint_key(node)
    person = applicant_fingerprint(node, application)
    return [{"application_id": application.application_id, "kind": kind, "fingerprint": fingerprint(key, kind, raw),
             "applicant_fingerprint": person, "seen_at": application.received_at}
            for kind, raw in application.applicant.identifiers() if kind in VELOCITY_KINDS]


def sealed_applicant_ad(application_id: str) -> bytes:
    return f"application-applicant/{application_id}".encode()


def unseal_applicant(node: Any, row: LoanApplication) -> Applicant:
    """The application's applicant; Conflict `applicant_erased` once retention erased it."""
    if row.sealed_applicant is None:
        raise applicant_erased(row.application_id)
    plain = node.vault.decrypt(row.sealed_applicant, associated_data=sealed_applicant_ad(row.application_id))
    return Applicant.from_json(json.loads(plain))


def applicant_erased(application_id: str) -> Conflict:
    return Conflict(f"the applicant of application {application_id} was erased at the end of its retention period "
                    f"(application_retention_days)", code="applicant_erased")


# -- reading ---------------------------------------------------------------------------------------------------
def application_view(row: LoanApplication) -> dict[str, Any]:
    """The stored application without raw identifiers: tags, amount, outcome, reasons and the full trail."""
    return {"application_id": row.application_id, "state": row.state, "channel": row.channel,
            "scenario": row.scenario, "amount": row.amount, "currency": row.currency,
            "term_months": row.term_months, "submitted_by": row.submitted_by,
            "received_at": _iso(row.received_at), "decided_at": _iso(row.decided_at), "outcome": row.outcome,
            "score": row.score, "limit": row.limit_amount, "annual_rate_percent": row.annual_rate_percent,
            "reasons": json.loads(row.reasons) if row.reasons else [],
            "trail": json.loads(row.trail) if row.trail else None, "fraud_report_id": row.fraud_report_id}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return as_utc(moment).isoformat()


def read_application(session: Session, application_id: str) -> dict[str, Any]:
    return application_view(_application(session, application_id))


@dataclass(frozen=True)
class ApplicationsPage:
    """One page of applications, newest first; `next_after` (the last one's id) continues while more follow."""

    applications: list[dict[str, Any]]
    next_after: str | None


def applications_page(session: Session, *, outcome: str | None = None, after: str | None = None,
                      limit: int = DEFAULT_APPLICATIONS_PAGE) -> ApplicationsPage:
    """The applications listed after application `after` (newest first, without trails), at most `limit`.

    Ordered by arrival and then id: applications received in the same instant would otherwise come in any order,
    and a page could repeat or skip one of them."""
    if outcome and outcome not in OUTCOMES:  # "approved" would otherwise list nothing, as if there were none
        raise InvalidInput(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}", code="invalid_outcome")
    query = select(LoanApplication).order_by(LoanApplication.received_at.desc(),
                                             LoanApplication.application_id.desc())
    if outcome:
        query = query.where(LoanApplication.outcome == outcome)
    if after is not None:
        last = session.get(LoanApplication, after)
        if last is None:
            raise InvalidInput("after: not a cursor this list gave (X-Next-After)", code="invalid_cursor")
        query = query.where(or_(LoanApplication.received_at < last.received_at,
                                (LoanApplication.received_at == last.received_at)
                                & (LoanApplication.application_id < last.application_id)))
    page, more = rows_page(session, query, limit)
    return ApplicationsPage([{k: v for k, v in application_view(r).items() if k != "trail"} for r in page],
                            page[-1].application_id if more else None)


def _application(session: Session, application_id: str) -> LoanApplication:
    row = session.get(LoanApplication, application_id)
    if row is None:
        raise NotFound(f"no application {application_id}", code="application_not_found")
    return row


# -- booking ---------------------------------------------------------------------------------------------------
def book_loan(node: Any, application_id: str, *, loan_reference: str | None = None,
              amount: Decimal | None = None, purpose: str = "consumer", start: date | None = None) -> BookedLoan:
    """Book an approved application as a loan (at most its approved limit); store its borrower's indicators
    under every key epoch held, so post-loan monitoring can match new ledger indicators."""
    if loan_reference and not valid_loan_reference(loan_reference):  # an empty one takes the default below
        raise InvalidInput(f"loan_reference must be 1 to {MAX_LOAN_REFERENCE} printable characters, no space at "
                           "either end", code="invalid_loan_reference")
    keys = node.keyring.keys()
    with node.store.transaction() as session:
        row = _application(session, application_id)
        _require_bookable(application_id, row.state, row.fraud_report_id)
        if row.outcome != "approve":
            raise Conflict(f"application {application_id} is not approved ({row.outcome})", code="not_approved")
        principal = amount if amount is not None else Decimal(row.limit_amount or row.amount)
        if principal <= 0 or principal > Decimal(row.limit_amount or row.amount):
            raise InvalidInput("the booked amount must be positive and within the approved limit",
                               code="amount_over_limit")
        applicant = unseal_applicant(node, row)
        origination = start or date.today()
        try:
            maturity = _add_months(origination, row.term_months)
        except ValueError:  # past year 9999
            raise InvalidInput("origination_date: the loan would mature after year 9999",
                               code="invalid_origination_date") from None
        loan = BookedLoan(loan_reference or "L-" + application_id.removeprefix("app_"), application_id,
                          int(principal * 100), row.currency, int(Decimal(row.annual_rate_percent or "0") * 10_000),
                          row.term_months, origination, maturity)
        resident = canonical_or_none("cn_resident_id", applicant.cn_resident_id) or ""
        # Claimed before the loan is added, in the state it was read in, with no fraud confirmation and its
        # applicant: of two bookings at once (two requests, two API replicas), or a booking and a fraud confirmation
        # or a retention pass, only the first still finds it so; the other is refused as if it had come second.
        claimed = session.execute(update(LoanApplication).where(LoanApplication.application_id == application_id,
                                                                LoanApplication.state == row.state,
                                                                LoanApplication.fraud_report_id.is_(None),
                                                                LoanApplication.sealed_applicant.is_not(None))
                                  .values(state="booked"))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            session.refresh(row)
            _require_bookable(application_id, row.state, row.fraud_report_id)
            if row.sealed_applicant is None:
                raise applicant_erased(application_id)
            raise Conflict(f"application {application_id} changed while it was booked; try again",
                           code="application_changed")
        booked = BookedLoanRow(
            loan_reference=loan.loan_reference, application_id=application_id,
            applicant_fingerprint=row.applicant_fingerprint, region_code=resident[:2],
            principal_minor=loan.principal_minor, current_principal_minor=loan.principal_minor, arrears_minor=0,
            currency=loan.currency, annual_rate_micros=loan.annual_rate_micros, term_months=loan.term_months,
            purpose=purpose, origination_date=origination.isoformat(), maturity_date=loan.maturity_date.isoformat(),
            status="current")
        session.add(booked)
        try:
            session.flush()
        except IntegrityError as exc:  # the application's own booking is claimed above, so it is the reference
            raise Conflict(f"loan reference {loan.loan_reference!r} is already used by another loan",
                           code="loan_reference_taken") from exc
        session.add_all(_borrower_indicators(booked.id, applicant, keys))
    extensions_for(node).call("alliance_loan_booked", node=node, loan=loan)
    return loan


def _require_bookable(application_id: str, state: str, fraud_report_id: str | None) -> None:
    if state == "booked":
        raise Conflict(f"application {application_id} is already booked", code="already_booked")
    # A confirmation claims its report on the application before it reports, and sets the state after: one under
    # way, or stopped in between with the applicant reported, has only the report id to show for it.
    if state == "fraud" or fraud_report_id is not None:
        raise Conflict(f"application {application_id} was confirmed as fraud; it cannot be booked",
                       code="fraud_confirmed")


def _borrower_indicators(loan_ref: int, applicant: Applicant, keys: dict[int, bytes]) -> list[BorrowerIndicator]:
    rows: list[BorrowerIndicator] = []
    for kind, raw in applicant.identifiers():
        canonical = canonical_or_none(kind, raw) if kind in MONITORED_TYPES else None
        if canonical is None:
            continue
        rows.extend(BorrowerIndicator(loan_ref=loan_ref, identifier_type=kind, epoch=epoch,
                                      indicator=indicator_hash(key, kind, canonical)) for epoch, key in keys.items())
    return rows


def refresh_borrower_indicators(node: Any) -> int:
    """Hash booked borrowers under epochs added since booking (after a key rotation); returns rows added.

    A page of loans per transaction: after a rotation every borrower of the book lacks the new epoch, and one
    transaction for the whole book held the store's write lock, and every unsealed applicant in memory, for as long
    as it took (20,000 loans: 40 s, API writes waiting 14 s; past the 30 s busy timeout they fail). A crash keeps
    the finished pages, and the next call goes on with the loans still lacking an epoch."""
    keys = node.keyring.keys()
    added, after = 0, 0
    while keys:
        # Another process (the indexer's alerts, an eligibility request) may add some of them first; adding again
        # skips those.
        page_added, last = once_more_on_conflict(partial(_add_borrower_indicators, node, keys, after))
        added += page_added
        if last is None:
            break
        after = last
    return added


def _add_borrower_indicators(node: Any, keys: dict[int, bytes], after: int) -> tuple[int, int | None]:
    """Add the missing indicators of the next page of loans after the loan id `after`; (rows added, the page's last
    loan id, None on the last page)."""
    added = 0
    with node.store.transaction() as session:
        # Only loans with no indicator under some epoch held are unsealed: this runs on every indexer pass, and
        # unsealing and hashing every borrower each time grew with the book (seconds per pass, past the hook's
        # time limit).
        held_rows = aliased(BorrowerIndicator)
        lacking = or_(*(~exists().where(held_rows.loan_ref == BookedLoanRow.id, held_rows.epoch == epoch)
                        for epoch in keys))
        # A repaid loan whose applicant retention erased has no indicators left and none to make.
        stale = list(session.execute(select(BookedLoanRow, LoanApplication).join(
            LoanApplication, LoanApplication.application_id == BookedLoanRow.application_id)
            .where(BookedLoanRow.id > after, lacking, LoanApplication.sealed_applicant.is_not(None))
            .order_by(BookedLoanRow.id).limit(LOANS_PER_TRANSACTION)))
        held = {(r.loan_ref, r.identifier_type, r.epoch) for r in session.scalars(
            select(BorrowerIndicator).where(BorrowerIndicator.loan_ref.in_([loan.id for loan, _ in stale])))}
        for loan, application in stale:
            fresh = [r for r in _borrower_indicators(loan.id, unseal_applicant(node, application), keys)
                     if (r.loan_ref, r.identifier_type, r.epoch) not in held]
            session.add_all(fresh)
            added += len(fresh)
    return added, stale[-1][0].id if len(stale) == LOANS_PER_TRANSACTION else None


def set_loan_status(node: Any, loan_reference: str, *, status: str, arrears: Decimal = Decimal(0),
                    current_principal: Decimal | None = None) -> dict[str, Any]:
    """Servicing update of a booked loan (what ABS eligibility looks at)."""
    from node.assets.records import LoanStatus

    if status not in LoanStatus.__members__:
        raise InvalidInput(f"status must be one of {list(LoanStatus.__members__)}", code="invalid_status")
    with node.store.transaction() as session:
        loan = session.scalar(select(BookedLoanRow).where(BookedLoanRow.loan_reference == loan_reference))
        if loan is None:
            raise NotFound(f"no booked loan {loan_reference}", code="loan_not_found")
        if current_principal is not None and int(current_principal * 100) > loan.principal_minor:
            # A loan tape refuses it (node.assets.loan_tape): the loan stayed eligible and blocked every pool.
            raise InvalidInput(f"current_principal must not exceed the booked principal "
                               f"({Decimal(loan.principal_minor) / 100})", code="current_principal_over_principal")
        if status != loan.status:  # a repaid loan reported repaid again keeps its first repayment time
            # The repayment starts the retention period of the borrower's identifiers (node.ledger.retention).
            loan.repaid_at = utcnow() if status == "repaid" else None
        loan.status, loan.arrears_minor = status, int(arrears * 100)
        if current_principal is not None:
            loan.current_principal_minor = int(current_principal * 100)
        return {"loan_reference": loan.loan_reference, "status": loan.status, "arrears": str(arrears),
                "current_principal": str(Decimal(loan.current_principal_minor) / 100)}


def _add_months(start: date, months: int) -> date:
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, monthrange(year, month)[1]))


# -- fraud -----------------------------------------------------------------------------------------------------
def fraud_report_request(node: Any, application_id: str, *, category: str, confidence: int,
                         case_reference: str = "") -> ReportRequest:
    """The ledger report that confirming fraud on the application makes (its id derives from this content alone)."""
    with node.store.session() as session:
        applicant = unseal_applicant(node, _application(session, application_id))
    identifiers = [(kind, raw) for kind, raw in applicant.identifiers()
                   if kind in MONITORED_TYPES and canonical_or_none(kind, raw) is not None]
    if not identifiers:
        raise InvalidInput("the application has no valid identifier to report", code="nothing_to_report")
    return ReportRequest(identifiers, category, confidence, case_reference=case_reference or application_id)


def confirm_fraud(node: Any, application_id: str, *, category: str, confidence: int, confirmed_by: str,
                  case_reference: str = "") -> FraudConfirmation:
    """Report the application's applicant to the alliance ledger in one step (queued in the durable outbox).

    Once per application: the report's id (derived from its content) is claimed on the application before it is
    made, so the same confirmation again (a retry, one interrupted by a crash) finishes it and reports once, and
    another one (another category or confidence, at once or later) is refused: it reported the borrower twice.
    """
    request = fraud_report_request(node, application_id, category=category, confidence=confidence,
                                   case_reference=case_reference)
    report_id = node.report_intake.prepare(request).report_id  # validated before anything is claimed
    with node.store.transaction() as session:
        held = session.scalar(select(LoanApplication.fraud_report_id)
                              .where(LoanApplication.application_id == application_id))
        claimed = session.execute(update(LoanApplication).where(
            LoanApplication.application_id == application_id,
            or_(LoanApplication.fraud_report_id.is_(None), LoanApplication.fraud_report_id == report_id))
            .values(fraud_report_id=report_id))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"fraud on application {application_id} was confirmed already, with another report",
                           code="fraud_already_confirmed")
    try:
        accepted = node.report_intake.accept(request, submitted_by=confirmed_by)
    except Exception:
        if held is None:  # this call claimed it: free it for another confirmation
            _release_fraud_claim(node, application_id, report_id)
        raise
    with node.store.transaction() as session:
        # One statement, so that a booking committed meanwhile keeps its state.
        session.execute(update(LoanApplication).where(LoanApplication.application_id == application_id).values(
            fraud_report_id=accepted.report_id,
            state=case((LoanApplication.state == "booked", LoanApplication.state), else_="fraud")))
    confirmation = FraudConfirmation(application_id, accepted.report_id, category, confidence, confirmed_by)
    extensions_for(node).call("alliance_fraud_confirmed", node=node, confirmation=confirmation)
    return confirmation


def _release_fraud_claim(node: Any, application_id: str, report_id: str) -> None:
    with node.store.transaction() as session:
        session.execute(update(LoanApplication).where(LoanApplication.application_id == application_id,
                                                      LoanApplication.fraud_report_id == report_id)
                        .values(fraud_report_id=None))
