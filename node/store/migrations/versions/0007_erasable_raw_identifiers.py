"""Outbox: a report's sealed raw identifiers may be erased (NULL) once it has expired or been withdrawn.

Republish is their only reader and never takes such reports again (node.ledger.retention).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_records") as batch:
        batch.alter_column("sealed_identifier", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # An erased identifier cannot come back: it stays empty, which republish never reads (expired or withdrawn).
    op.execute(sa.text("UPDATE outbox_records SET sealed_identifier = :empty WHERE sealed_identifier IS NULL")
               .bindparams(sa.bindparam("empty", b"", type_=sa.LargeBinary())))
    with op.batch_alter_table("outbox_records") as batch:
        batch.alter_column("sealed_identifier", existing_type=sa.LargeBinary(), nullable=False)
