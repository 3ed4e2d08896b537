"""Outbox: when each record entered the queue (`outbox_records.queued_at`), set again whenever it is queued again.

The age of the oldest queued record (`alliance_outbox_oldest_queued_age_seconds`, `oldest_queued_report_at`) was
its report's `created_at`: a republish of old reports, or a lost batch's records queued again, made it jump to the
reports' whole age. Existing rows take their report's `created_at`, the best time the store knows. A partial index
holds the queued rows only, so that the oldest is one index probe at every metrics scrape.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    op.add_column("outbox_records", sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text("UPDATE outbox_records SET queued_at = (SELECT created_at FROM fraud_reports "
                       "WHERE fraud_reports.report_id = outbox_records.report_id)"))
    # In place on PostgreSQL; SQLite cannot add NOT NULL to a column and copies the table (batch mode), as 0007 did.
    with op.batch_alter_table("outbox_records") as batch:
        batch.alter_column("queued_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index("ix_outbox_records_queued_at", "outbox_records", ["queued_at"], sqlite_where=QUEUED,
                    postgresql_where=QUEUED)


def downgrade() -> None:
    op.drop_index("ix_outbox_records_queued_at", table_name="outbox_records")
    op.drop_column("outbox_records", "queued_at")  # in place (SQLite 3.35+), as 0010's downgrade
