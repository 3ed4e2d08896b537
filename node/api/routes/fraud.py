"""`/v1/fraud/reports` and reactions: analysts report fraud (queued, published in the background), endorse or
dispute other banks' indicators, confirm or withdraw their own reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, Field

from node.api.deps import NodeDep, SessionDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.json_numbers import JsonInt
from node.ledger.identifiers import MAX_RAW_LENGTH
from node.ledger.reactions import confirm_report, dispute_indicator, endorse_indicator, parse_indicator, withdraw_report
from node.ledger.reports import (
    DEFAULT_VALID_DAYS,
    MAX_CASE_REFERENCE,
    MAX_IDENTIFIERS_PER_REPORT,
    MAX_REPORTS_PER_REQUEST,
    ReportRequest,
    report_status,
)

router = APIRouter(prefix="/fraud", tags=["fraud"])

Analyst = Annotated[KeyInfo, Depends(require_roles(Role.analyst))]


class IdentifierIn(BaseModel):
    type: str = Field(max_length=32, examples=["phone"])
    value: str = Field(max_length=MAX_RAW_LENGTH, examples=["+86 138 0013 8000"])


class ReportIn(BaseModel):
    identifiers: list[IdentifierIn] = Field(min_length=1, max_length=MAX_IDENTIFIERS_PER_REPORT)
    category: str = Field(examples=["telecom_fraud"])
    confidence: JsonInt = Field(ge=0, le=100)
    valid_days: JsonInt = Field(default=DEFAULT_VALID_DAYS, ge=1)
    valid_from: JsonInt | None = Field(default=None, description="Unix seconds; default: when first accepted")
    evidence_sha256: str | None = Field(default=None, description="hex SHA-256 of the evidence kept at the bank")
    case_reference: str = Field(default="", max_length=MAX_CASE_REFERENCE)

    def to_request(self) -> ReportRequest:
        return ReportRequest([(i.type, i.value) for i in self.identifiers], self.category, self.confidence,
                             self.valid_days, self.valid_from, self.evidence_sha256, self.case_reference)


class BulkReportsIn(BaseModel):
    reports: list[ReportIn] = Field(min_length=1, max_length=MAX_REPORTS_PER_REQUEST)


class AcceptedOut(BaseModel):
    report_id: str
    created: bool = Field(description="false when the same report had been accepted before")
    state: str


class BulkAcceptedOut(BaseModel):
    accepted: int
    created: int
    report_ids: list[str]


class ItemOut(BaseModel):
    position: int
    identifier_type: str
    epoch: int
    indicator: str
    state: str
    tx_hash: str | None
    block_number: int | None
    batch_id: int | None


class ReportOut(BaseModel):
    report_id: str
    state: str
    category: str
    confidence: int
    valid_from: int
    valid_until: int
    submitted_by: str
    created_at: str
    identifiers: list[ItemOut]


@router.post("/reports", status_code=status.HTTP_202_ACCEPTED, response_model=AcceptedOut)
def create_report(*, body: ReportIn, node: NodeDep, session: SessionDep, key: Analyst) -> AcceptedOut:
    """Queue a report for publication; the id depends only on the content, so a retry is harmless."""
    accepted = node.report_intake.accept(body.to_request(), submitted_by=key.key_id)
    return AcceptedOut(report_id=accepted.report_id, created=accepted.created,
                       state=report_status(session, accepted.report_id).state)


@router.post("/reports/bulk", status_code=status.HTTP_202_ACCEPTED, response_model=BulkAcceptedOut)
def create_reports(*, body: BulkReportsIn, node: NodeDep, key: Analyst) -> BulkAcceptedOut:
    """Queue up to 10,000 reports, all or nothing; a refusal lists every invalid row in `details`."""
    accepted = node.report_intake.accept_many([r.to_request() for r in body.reports], submitted_by=key.key_id)
    return BulkAcceptedOut(accepted=len(accepted), created=sum(a.created for a in accepted),
                           report_ids=[a.report_id for a in accepted])


@router.get("/reports/{report_id}", response_model=ReportOut)
def read_report(*, report_id: str, session: SessionDep, key: Analyst) -> ReportOut:
    """A report's publication state, per identifier: queued, batched (sent) or confirmed with its block."""
    return ReportOut(**report_status(session, report_id).to_json())  # type: ignore[arg-type]


class ReactionOut(BaseModel):
    kind: str
    indicator: str
    batch_id: int | None
    tx_hash: str
    block_number: int


class EndorsementIn(BaseModel):
    confidence: JsonInt = Field(ge=0, le=100)


class DisputeIn(BaseModel):
    reason: str = Field(examples=["mistaken_identity"],
                        description="mistaken_identity, insufficient_evidence, resolved_by_customer, "
                                    "data_entry_error or other")


class WithdrawalIn(BaseModel):
    reason: str = Field(examples=["reported_in_error"],
                        description="reported_in_error, dispute_upheld, customer_cleared, superseded or other")


@router.post("/indicators/{indicator}/endorsements", status_code=status.HTTP_201_CREATED, response_model=ReactionOut)
def create_endorsement(*, indicator: str, body: EndorsementIn, node: NodeDep, key: Analyst) -> ReactionOut:
    """Corroborate another bank's indicator (sent on chain and mined before the answer)."""
    return ReactionOut(**vars(endorse_indicator(node, parse_indicator(indicator), body.confidence)))


@router.post("/indicators/{indicator}/disputes", status_code=status.HTTP_201_CREATED, response_model=ReactionOut)
def create_dispute(*, indicator: str, body: DisputeIn, node: NodeDep, key: Analyst) -> ReactionOut:
    """Dispute another bank's indicator; unanswered by its reporter within the window, it stops producing hits."""
    return ReactionOut(**vars(dispute_indicator(node, parse_indicator(indicator), body.reason)))


@router.post("/reports/{report_id}/confirmation", response_model=list[ReactionOut])
def create_confirmation(*, report_id: str, node: NodeDep, key: Analyst) -> list[ReactionOut]:
    """Confirm this bank's published report: the answer to disputes against it."""
    return [ReactionOut(**vars(sent)) for sent in confirm_report(node, report_id)]


@router.post("/reports/{report_id}/withdrawal", response_model=list[ReactionOut])
def create_withdrawal(*, report_id: str, body: WithdrawalIn, node: NodeDep, key: Analyst) -> list[ReactionOut]:
    """Withdraw this bank's report: its published records are revoked, its queued ones never published."""
    return [ReactionOut(**vars(sent)) for sent in withdraw_report(node, report_id, body.reason)]
