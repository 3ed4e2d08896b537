"""ABS assets: local pools, versions, loans, borrower indicators, servicing reports; loan-id mirror.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "asset_pools",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("originator_code", sa.String(64), nullable=False),
        sa.Column("metadata_hash", sa.LargeBinary, nullable=False),
        sa.Column("pool_id", sa.BigInteger, nullable=True, unique=True),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_table(
        "asset_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pool_ref", sa.Integer, sa.ForeignKey("asset_pools.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("loan_count", sa.Integer, nullable=False),
        sa.Column("total_principal", sa.String(48), nullable=False),
        sa.Column("key_epoch", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger, nullable=True),
        sa.Column("gas_used", sa.BigInteger, nullable=True),
        sa.Column("findings", sa.Text, nullable=True),
        sa.Column("override_reason", sa.Text, nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("anchored_at", _TZ, nullable=True),
    )
    op.create_index("ix_asset_versions_pool_ref", "asset_versions", ["pool_ref"])
    op.create_index("ix_asset_versions_state", "asset_versions", ["state"])
    op.create_table(
        "asset_loans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version_ref", sa.Integer, sa.ForeignKey("asset_versions.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("loan_reference", sa.String(64), nullable=False),
        sa.Column("originator_code", sa.String(32), nullable=False),
        sa.Column("loan_id", sa.LargeBinary, nullable=False),
        sa.Column("borrower_hash", sa.LargeBinary, nullable=False),
        sa.Column("key_epoch", sa.Integer, nullable=False),
        sa.Column("origination_date", sa.Integer, nullable=False),
        sa.Column("maturity_date", sa.Integer, nullable=False),
        sa.Column("original_principal", sa.BigInteger, nullable=False),
        sa.Column("current_principal", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("interest_rate_micros", sa.Integer, nullable=False),
        sa.Column("purpose", sa.SmallInteger, nullable=False),
        sa.Column("amortisation", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("arrears_balance", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("version_ref", "position", name="uq_asset_loans_version_position"),
    )
    op.create_index("ix_asset_loans_version_ref", "asset_loans", ["version_ref"])
    op.create_index("ix_asset_loans_loan_id", "asset_loans", ["loan_id"])
    op.create_table(
        "asset_loan_indicators",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version_ref", sa.Integer, sa.ForeignKey("asset_versions.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("identifier_type", sa.String(32), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("indicator", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_asset_loan_indicators_version_ref", "asset_loan_indicators", ["version_ref"])
    op.create_index("ix_asset_loan_indicators_indicator", "asset_loan_indicators", ["indicator"])
    op.create_table(
        "asset_servicing_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pool_id", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("period", sa.Integer, nullable=False),
        sa.Column("status_root", sa.LargeBinary, nullable=False),
        sa.Column("statuses", sa.Text, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("pool_id", "period", name="uq_asset_servicing_pool_period"),
    )
    op.create_index("ix_asset_servicing_reports_pool_id", "asset_servicing_reports", ["pool_id"])
    op.create_table(
        "asset_mirror_versions",
        sa.Column("pool_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("loan_count", sa.Integer, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
    )
    op.create_index("ix_asset_mirror_versions_block_number", "asset_mirror_versions", ["block_number"])
    op.create_table(
        "asset_mirror_loans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pool_id", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("loan_id", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("pool_id", "version", "position", name="uq_asset_mirror_loans_position"),
    )
    op.create_index("ix_asset_mirror_loans_pool_id", "asset_mirror_loans", ["pool_id"])
    op.create_index("ix_asset_mirror_loans_loan_id", "asset_mirror_loans", ["loan_id"])


def downgrade() -> None:
    for table in ("asset_mirror_loans", "asset_mirror_versions", "asset_servicing_reports", "asset_loan_indicators",
                  "asset_loans", "asset_versions", "asset_pools"):
        op.drop_table(table)
