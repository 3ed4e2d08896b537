"""The values that flow through the application pipeline: what extensions receive and return.

They carry no raw personal data except `Application.applicant`, which only the pipeline's own modules and
the bank's extensions see in process: nothing here is written to logs, and the stored trail keeps only
codes, counts and module names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

Outcome = Literal["approve", "review", "decline"]
OUTCOMES: tuple[Outcome, ...] = ("approve", "review", "decline")


@dataclass(frozen=True)
class Applicant:
    """What the applicant declared. Identifiers are raw as typed; the node normalises them."""

    cn_resident_id: str
    phone: str
    bank_card: str | None = None
    device_id: str | None = None
    email: str | None = None
    ip: str | None = None
    birth_date: date | None = None
    region_code: str | None = None  # declared household registration division code (6 digits) or province (2)
    sex: Literal["M", "F"] | None = None

    def identifiers(self) -> list[tuple[str, str]]:
        """(type, raw value) of every identifier given, in a fixed order."""
        pairs = [("cn_resident_id", self.cn_resident_id), ("phone", self.phone), ("bank_card", self.bank_card),
                 ("device_id", self.device_id), ("email", self.email), ("ip", self.ip)]
        return [(kind, value) for kind, value in pairs if value]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["birth_date"] = self.birth_date.isoformat() if self.birth_date else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Applicant:
        birth = data.get("birth_date")
        return cls(**{**data, "birth_date": date.fromisoformat(birth) if birth else None})


@dataclass(frozen=True)
class Application:
    """A loan application as the pipeline sees it."""

    application_id: str
    channel: str  # where it came from: branch, mobile_app, partner_api, ...
    scenario: str  # what the money is for: consumer_loan, auto_loan, ...
    applicant: Applicant
    amount: Decimal
    currency: str
    term_months: int
    bank_inputs: dict[str, float] = field(default_factory=dict)  # the bank's own features (income, DTI, ...)
    received_at: int = 0  # Unix seconds


@dataclass(frozen=True)
class Signal:
    """One observation about an application, named by a stable code (the scorecard's key).

    `data` holds counts, categories, reason codes: never a raw identifier.
    """

    code: str
    module: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "module": self.module, "detail": self.detail, "data": self.data}


@dataclass(frozen=True)
class Reason:
    code: str
    points: int
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "points": self.points, "detail": self.detail}


@dataclass(frozen=True)
class RiskScore:
    score: int
    reasons: tuple[Reason, ...]  # every contribution, largest penalty first
    module: str

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "module": self.module, "reasons": [r.to_json() for r in self.reasons]}


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reasons: tuple[str, ...]  # reason codes, most important first
    module: str
    limit: Decimal | None = None
    annual_rate_percent: Decimal | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reasons": list(self.reasons), "module": self.module,
                "limit": str(self.limit) if self.limit is not None else None,
                "annual_rate_percent": str(self.annual_rate_percent) if self.annual_rate_percent is not None
                else None, "detail": self.detail}


@dataclass(frozen=True)
class BookedLoan:
    """A loan booked from an approved application (amounts in minor units)."""

    loan_reference: str
    application_id: str
    principal_minor: int
    currency: str
    annual_rate_micros: int
    term_months: int
    origination_date: date
    maturity_date: date


@dataclass(frozen=True)
class FraudConfirmation:
    """Fraud confirmed by the bank on an application or a booked loan, and the ledger report it became."""

    application_id: str
    report_id: str
    category: str
    confidence: int
    confirmed_by: str
