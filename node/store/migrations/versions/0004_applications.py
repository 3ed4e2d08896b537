"""Credit workflow: applications and decision trails, velocity fingerprints, booked loans, borrower indicators,
risk alerts.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("application_id", sa.String(40), primary_key=True),
        sa.Column("received_at", _TZ, nullable=False, index=True),
        sa.Column("submitted_by", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False, index=True),
        sa.Column("scenario", sa.String(32), nullable=False, index=True),
        sa.Column("applicant_fingerprint", sa.LargeBinary, nullable=False, index=True),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("term_months", sa.Integer, nullable=False),
        sa.Column("sealed_applicant", sa.LargeBinary, nullable=False),
        sa.Column("bank_inputs", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("outcome", sa.String(16), nullable=True, index=True),
        sa.Column("score", sa.Integer, nullable=True),
        sa.Column("limit_amount", sa.String(32), nullable=True),
        sa.Column("annual_rate_percent", sa.String(16), nullable=True),
        sa.Column("reasons", sa.Text, nullable=True),
        sa.Column("trail", sa.Text, nullable=True),
        sa.Column("decided_at", _TZ, nullable=True),
        sa.Column("fraud_report_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "application_fingerprints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("application_id", sa.String(40), sa.ForeignKey("applications.application_id"), nullable=False,
                  index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary, nullable=False),
        sa.Column("applicant_fingerprint", sa.LargeBinary, nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_application_fingerprints_kind_value_seen", "application_fingerprints",
                    ["kind", "fingerprint", "seen_at"])
    op.create_table(
        "booked_loans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("loan_reference", sa.String(64), nullable=False, unique=True),
        sa.Column("application_id", sa.String(40), sa.ForeignKey("applications.application_id"), nullable=False,
                  unique=True),
        sa.Column("applicant_fingerprint", sa.LargeBinary, nullable=False, index=True),
        sa.Column("region_code", sa.String(6), nullable=False),
        sa.Column("principal_minor", sa.BigInteger, nullable=False),
        sa.Column("current_principal_minor", sa.BigInteger, nullable=False),
        sa.Column("arrears_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("annual_rate_micros", sa.Integer, nullable=False),
        sa.Column("term_months", sa.Integer, nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("origination_date", sa.String(10), nullable=False),
        sa.Column("maturity_date", sa.String(10), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("booked_at", _TZ, nullable=False),
    )
    op.create_table(
        "borrower_indicators",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("loan_ref", sa.Integer, sa.ForeignKey("booked_loans.id"), nullable=False, index=True),
        sa.Column("identifier_type", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("indicator", sa.LargeBinary, nullable=False, index=True),
        sa.UniqueConstraint("loan_ref", "identifier_type", "epoch", name="uq_borrower_indicators"),
    )
    op.create_table(
        "risk_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", _TZ, nullable=False, index=True),
        sa.Column("loan_ref", sa.Integer, sa.ForeignKey("booked_loans.id"), nullable=False, index=True),
        sa.Column("application_id", sa.String(40), nullable=False),
        sa.Column("identifier_type", sa.String(16), nullable=False),
        sa.Column("indicator", sa.LargeBinary, nullable=False),
        sa.Column("batch_id", sa.BigInteger, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("reporter_member_id", sa.BigInteger, nullable=False),
        sa.Column("categories", sa.Text, nullable=False),
        sa.Column("confidence", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("webhook_state", sa.String(16), nullable=False),
        sa.Column("resolved_by", sa.String(64), nullable=True),
        sa.Column("fraud_report_id", sa.String(64), nullable=True),
        sa.UniqueConstraint("loan_ref", "indicator", "batch_id", name="uq_risk_alerts_match"),
    )


def downgrade() -> None:
    for table in ("risk_alerts", "borrower_indicators", "booked_loans", "application_fingerprints", "applications"):
        op.drop_table(table)
