"""Tables of the credit workflow: applications with their decision trail, velocity fingerprints, booked loans,
their borrowers' indicator hashes, and risk alerts. The schema is owned by migrations 0004 and 0008.

Raw personal data is kept only where the bank needs it back: the applicant's identifiers, vault-encrypted
(`sealed_applicant`), to book a loan into an ABS tape and to report confirmed fraud to the ledger. Velocity
counts use fingerprints keyed with a key local to this bank, so they survive alliance key rotations and mean
nothing outside the bank; alliance indicators of borrowers are stored per key epoch for post-loan monitoring.
Once none of that needs the applicant any more, retention erases it with every keyed hash of it kept here
(node.ledger.retention).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base, utcnow


class LoanApplication(Base):
    __tablename__ = "applications"

    application_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    submitted_by: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32), index=True)
    scenario: Mapped[str] = mapped_column(String(32), index=True)
    # Local key, resident ID; erased (NULL) with the applicant (node.ledger.retention).
    applicant_fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, index=True)
    amount: Mapped[str] = mapped_column(String(32))  # decimal, major units
    currency: Mapped[str] = mapped_column(String(3))
    term_months: Mapped[int] = mapped_column(Integer)
    # Vault-encrypted JSON of the applicant; NULL once retention erased it (no action needs it any more).
    sealed_applicant: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    bank_inputs: Mapped[str] = mapped_column(Text)  # JSON
    state: Mapped[str] = mapped_column(String(16), index=True)  # received | decided | booked | fraud
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_amount: Mapped[str | None] = mapped_column(String(32), nullable=True)
    annual_rate_percent: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reasons: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of reason codes
    trail: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: every stage, module, signal, failure
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    fraud_report_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApplicationFingerprint(Base):
    """An identifier of an application (phone, device, card, ...) as a local keyed hash, for velocity counts."""

    __tablename__ = "application_fingerprints"
    __table_args__ = (Index("ix_application_fingerprints_kind_value_seen", "kind", "fingerprint", "seen_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.application_id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    applicant_fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    seen_at: Mapped[int] = mapped_column(BigInteger)  # Unix seconds


class BookedLoanRow(Base):
    __tablename__ = "booked_loans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    loan_reference: Mapped[str] = mapped_column(String(64), unique=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.application_id"), unique=True)
    applicant_fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, index=True)  # as above
    region_code: Mapped[str] = mapped_column(String(6))  # province of the borrower's resident ID (2 digits)
    principal_minor: Mapped[int] = mapped_column(BigInteger)
    current_principal_minor: Mapped[int] = mapped_column(BigInteger)
    arrears_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    annual_rate_micros: Mapped[int] = mapped_column(Integer)
    term_months: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(16))
    origination_date: Mapped[str] = mapped_column(String(10))  # ISO date
    maturity_date: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(16), index=True)  # current | dpd30 | ... | repaid
    booked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    repaid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # status became repaid


class BorrowerIndicator(Base):
    """A booked borrower's identifier hashed under one alliance key epoch: what a new indicator is matched to."""

    __tablename__ = "borrower_indicators"
    __table_args__ = (UniqueConstraint("loan_ref", "identifier_type", "epoch", name="uq_borrower_indicators"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    loan_ref: Mapped[int] = mapped_column(ForeignKey("booked_loans.id"), index=True)
    identifier_type: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer)
    indicator: Mapped[bytes] = mapped_column(LargeBinary, index=True)


class RiskAlert(Base):
    __tablename__ = "risk_alerts"
    __table_args__ = (UniqueConstraint("loan_ref", "indicator", "batch_id", name="uq_risk_alerts_match"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    loan_ref: Mapped[int] = mapped_column(ForeignKey("booked_loans.id"), index=True)
    application_id: Mapped[str] = mapped_column(String(40))
    identifier_type: Mapped[str] = mapped_column(String(16))
    indicator: Mapped[bytes] = mapped_column(LargeBinary)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    reporter_member_id: Mapped[int] = mapped_column(BigInteger)
    categories: Mapped[str] = mapped_column(Text)  # JSON list
    confidence: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)  # open | dismissed | confirming | confirmed
    webhook_state: Mapped[str] = mapped_column(String(16))  # none | sent | failed
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fraud_report_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
