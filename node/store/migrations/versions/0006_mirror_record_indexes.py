"""Mirror records: drop the batch_id index, which the (batch_id, position) unique index already covers.

Every mirrored record paid for maintaining both; lookups by batch use the unique index's prefix.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_mirror_records_batch_id", table_name="mirror_records")


def downgrade() -> None:
    op.create_index("ix_mirror_records_batch_id", "mirror_records", ["batch_id"])
