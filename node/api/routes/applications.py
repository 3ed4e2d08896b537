"""`/v1/applications`, `/v1/loans`, `/v1/abs-factory`: the credit platform's intake, booking and pool building.

Mounted by the built-in modules through the `alliance_api_routers` hook (node.modules.credit_platform,
node.modules.abs_factory).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field

from node.api.deps import NEXT_PAGE_HEADER, NodeDep, SessionDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.json_numbers import JsonInt
from node.modules import abs_factory, credit_platform
from node.modules.credit_platform import MAX_AMOUNT, ApplicationIn

applications_router = APIRouter(prefix="/applications", tags=["applications"])
loans_router = APIRouter(prefix="/loans", tags=["loans"])
abs_factory_router = APIRouter(prefix="/abs-factory", tags=["abs-factory"])

Workflow = Annotated[KeyInfo, Depends(require_roles(Role.workflow))]
Reader = Annotated[KeyInfo, Depends(require_roles(Role.workflow, Role.analyst))]
Analyst = Annotated[KeyInfo, Depends(require_roles(Role.analyst))]
Operator = Annotated[KeyInfo, Depends(require_roles(Role.operator))]

MAX_APPLICATION_ID = 40  # applications.application_id


class BookIn(BaseModel):
    loan_reference: str | None = Field(default=None, min_length=1, max_length=64)
    amount: Decimal | None = Field(default=None, gt=0, decimal_places=2)
    purpose: str = Field(default="consumer", pattern=r"^(home|auto|consumer|business|education|other)$")
    origination_date: date | None = None


class FraudIn(BaseModel):
    category: str = Field(examples=["application_fraud"])
    confidence: JsonInt = Field(ge=0, le=100)
    case_reference: str = Field(default="", max_length=200)


class LoanStatusIn(BaseModel):
    status: str
    # Bounded like an application's amount: 1e17 overflowed the BIGINT minor-unit columns (a 500).
    arrears: Decimal = Field(default=Decimal(0), ge=0, le=MAX_AMOUNT, decimal_places=2)
    current_principal: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT, decimal_places=2)


class PoolIn(BaseModel):
    pool_name: str = Field(min_length=1, max_length=100)
    anchor: bool = False
    override_reason: str | None = Field(default=None, max_length=500)


@applications_router.post("", status_code=status.HTTP_201_CREATED)
def create_application(*, body: ApplicationIn, node: NodeDep, key: Workflow) -> dict[str, Any]:
    """Take an application, run the pipeline, answer with the outcome and the full decision trail."""
    return credit_platform.submit_application(node, body, submitted_by=key.key_id)


@applications_router.get("")
def list_applications(*, session: SessionDep, key: Reader, response: Response, outcome: str | None = None,
                      after: Annotated[str | None, Query(min_length=1, max_length=MAX_APPLICATION_ID, description=(
                          "The previous page's X-Next-After: the applications listed after that one."))] = None,
                      limit: Annotated[int, Query(ge=1, le=credit_platform.MAX_APPLICATIONS_PAGE)]
                      = credit_platform.DEFAULT_APPLICATIONS_PAGE) -> list[dict[str, Any]]:
    """Applications (without trails), newest first, a page at a time; X-Next-After continues while more follow."""
    page = credit_platform.applications_page(session, outcome=outcome, after=after, limit=limit)
    if page.next_after is not None:
        response.headers[NEXT_PAGE_HEADER] = page.next_after
    return page.applications


@applications_router.get("/{application_id}")
def read_application(*, application_id: str, session: SessionDep, key: Reader) -> dict[str, Any]:
    """One application with its decision trail (no raw identifiers)."""
    return credit_platform.read_application(session, application_id)


@applications_router.post("/{application_id}/book", status_code=status.HTTP_201_CREATED)
def book_application(*, application_id: str, body: BookIn, node: NodeDep, key: Workflow) -> dict[str, Any]:
    """Book an approved application as a loan (monitored against the ledger from now on)."""
    loan = credit_platform.book_loan(node, application_id, loan_reference=body.loan_reference, amount=body.amount,
                                     purpose=body.purpose, start=body.origination_date)
    return {"loan_reference": loan.loan_reference, "application_id": loan.application_id,
            "principal": str(Decimal(loan.principal_minor) / 100), "currency": loan.currency,
            "maturity_date": loan.maturity_date.isoformat()}


@applications_router.post("/{application_id}/fraud", status_code=status.HTTP_202_ACCEPTED)
def confirm_application_fraud(*, application_id: str, body: FraudIn, node: NodeDep, key: Analyst) -> dict[str, Any]:
    """Confirm fraud on an application: its identifiers are reported to the ledger (queued) in this one step."""
    confirmation = credit_platform.confirm_fraud(node, application_id, category=body.category,
                                                 confidence=body.confidence, confirmed_by=key.key_id,
                                                 case_reference=body.case_reference)
    return {"application_id": application_id, "report_id": confirmation.report_id}


# `path`: a loan reference may hold "/" (a tape's may, and booking takes what a tape takes), which no encoding gets
# through a plain path parameter; such a loan could never be serviced, and stayed `current` (eligible) for good.
@loans_router.post("/{loan_reference:path}/status")
def update_loan_status(*, loan_reference: str, body: LoanStatusIn, node: NodeDep, key: Workflow) -> dict[str, Any]:
    """Servicing update: status, arrears and outstanding principal of a booked loan."""
    return credit_platform.set_loan_status(node, loan_reference, status=body.status, arrears=body.arrears,
                                           current_principal=body.current_principal)


@abs_factory_router.get("/eligible")
def read_eligible_loans(*, node: NodeDep, key: Operator, response: Response,
                        after: Annotated[str | None, Query(
                            min_length=1, max_length=abs_factory.MAX_ELIGIBLE_CURSOR, description=(
                            "The previous page's X-Next-After: the loans after that page's last, in the selection "
                            "the first page made (410 cursor_expired once it is no longer held)."))] = None,
                        limit: Annotated[int, Query(ge=1, le=abs_factory.MAX_ELIGIBLE_PAGE)]
                        = abs_factory.DEFAULT_ELIGIBLE_PAGE) -> dict[str, Any]:
    """Which booked loans a pool would take, and why the others are left out, a page of loans (in reference order) at
    a time, every page from the selection the first one made (`snapshot_id`, `as_of`); X-Next-After continues while
    more follow."""
    page = abs_factory.eligible_page(node, after=after, limit=limit)
    if page.next_after is not None:
        response.headers[NEXT_PAGE_HEADER] = page.next_after
    return page.answer


@abs_factory_router.post("/pools", status_code=status.HTTP_201_CREATED)
def create_pool(*, body: PoolIn, node: NodeDep, key: Operator) -> dict[str, Any]:
    """Select eligible loans into a draft pool version (and anchor it on chain if asked)."""
    return abs_factory.build_pool(node, body.pool_name, anchor=body.anchor,
                                  override_reason=body.override_reason).to_json()
