"""Fraud ledger: alliance keys, report outbox, publish batches, mirror, query log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alliance_keys",
        sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sealed_key", sa.LargeBinary, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_table(
        "fraud_reports",
        sa.Column("report_id", sa.String(64), primary_key=True),
        sa.Column("category", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Integer, nullable=False),
        sa.Column("valid_from", sa.BigInteger, nullable=False),
        sa.Column("valid_until", sa.BigInteger, nullable=False),
        sa.Column("evidence_hash", sa.LargeBinary, nullable=False),
        sa.Column("case_ref_hash", sa.LargeBinary, nullable=False),
        sa.Column("submitted_by", sa.String(64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_table(
        "publish_batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("signed_tx", sa.LargeBinary, nullable=False),
        sa.Column("onchain_batch_id", sa.BigInteger, nullable=True),
        sa.Column("block_number", sa.BigInteger, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("sent_at", _TZ, nullable=True),
        sa.Column("confirmed_at", _TZ, nullable=True),
    )
    op.create_index("ix_publish_batches_state", "publish_batches", ["state"])
    op.create_index("ix_publish_batches_tx_hash", "publish_batches", ["tx_hash"])
    op.create_table(
        "outbox_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.String(64), sa.ForeignKey("fraud_reports.report_id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("identifier_type", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("indicator", sa.LargeBinary, nullable=False),
        sa.Column("sealed_identifier", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("publish_batch_id", sa.Integer, sa.ForeignKey("publish_batches.id"), nullable=True),
        sa.UniqueConstraint("report_id", "position", "epoch", name="uq_outbox_records_report_position_epoch"),
    )
    op.create_index("ix_outbox_records_report_id", "outbox_records", ["report_id"])
    op.create_index("ix_outbox_records_indicator", "outbox_records", ["indicator"])
    op.create_index("ix_outbox_records_publish_batch_id", "outbox_records", ["publish_batch_id"])
    op.create_index("ix_outbox_records_state_id", "outbox_records", ["state", "id"])

    op.create_table(
        "sync_state",
        sa.Column("contract", sa.String(42), primary_key=True),
        sa.Column("last_block", sa.BigInteger, nullable=False),
        sa.Column("last_block_hash", sa.String(66), nullable=True),
        sa.Column("last_block_time", sa.BigInteger, nullable=True),
        sa.Column("chain_head", sa.BigInteger, nullable=True),
        sa.Column("synced_at", _TZ, nullable=True),
        sa.Column("attempted_at", _TZ, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_table(
        "indexed_blocks",
        sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(66), nullable=False),
        sa.Column("parent_hash", sa.String(66), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "mirror_batches",
        sa.Column("batch_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("reporter_member_id", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("accepted_count", sa.Integer, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("log_index", sa.Integer, nullable=False),
        sa.Column("published_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_mirror_batches_reporter_member_id", "mirror_batches", ["reporter_member_id"])
    op.create_index("ix_mirror_batches_block_number", "mirror_batches", ["block_number"])
    op.create_table(
        "mirror_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.BigInteger, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("indicator", sa.LargeBinary, nullable=False),
        sa.Column("identifier_type", sa.Integer, nullable=False),
        sa.Column("category", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Integer, nullable=False),
        sa.Column("valid_from", sa.BigInteger, nullable=False),
        sa.Column("valid_until", sa.BigInteger, nullable=False),
        sa.Column("evidence_hash", sa.LargeBinary, nullable=False),
        sa.Column("case_ref_hash", sa.LargeBinary, nullable=False),
        sa.Column("reporter_member_id", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("published_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("batch_id", "position", name="uq_mirror_records_batch_position"),
    )
    op.create_index("ix_mirror_records_batch_id", "mirror_records", ["batch_id"])
    op.create_index("ix_mirror_records_indicator", "mirror_records", ["indicator"])
    op.create_index("ix_mirror_records_block_number", "mirror_records", ["block_number"])
    op.create_table(
        "mirror_reactions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("indicator", sa.LargeBinary, nullable=False),
        sa.Column("member_id", sa.BigInteger, nullable=False),
        sa.Column("batch_id", sa.BigInteger, nullable=True),
        sa.Column("value", sa.Integer, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("log_index", sa.Integer, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("block_number", "log_index", name="uq_mirror_reactions_position"),
    )
    op.create_index("ix_mirror_reactions_indicator", "mirror_reactions", ["indicator"])
    op.create_index("ix_mirror_reactions_block_number", "mirror_reactions", ["block_number"])

    op.create_table(
        "check_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("asked_at", _TZ, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("indicators", sa.Text, nullable=False),
        sa.Column("hits", sa.Text, nullable=False),
        sa.Column("as_of_block", sa.BigInteger, nullable=False),
        sa.Column("stale", sa.Boolean, nullable=False),
    )
    op.create_index("ix_check_log_key_id", "check_log", ["key_id"])
    op.create_index("ix_check_log_asked_at", "check_log", ["asked_at"])


def downgrade() -> None:
    for table in ("check_log", "mirror_reactions", "mirror_records", "mirror_batches", "indexed_blocks",
                  "sync_state", "outbox_records", "publish_batches", "fraud_reports", "alliance_keys"):
        op.drop_table(table)
