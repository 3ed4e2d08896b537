"""Report imports: a CSV file's reports are written in many short transactions and accepted together.

`report_imports` holds one row per import; `fraud_reports.import_id` and `outbox_records.import_id` name the import
that wrote a row (NULL for every row accepted on its own, which all existing rows were). Added columns, no foreign
key: SQLite adds a column in place but would copy the whole outbox to add a constraint. Partial indexes: only
imported rows are indexed (to discard an import's rows), so no other insert pays for them.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

IMPORTED = sa.text("import_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "report_imports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("submitted_by", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("reports", sa.BigInteger, nullable=True),
        sa.Column("created", sa.BigInteger, nullable=True),
        sa.Column("sha256", sa.LargeBinary, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    for table in ("fraud_reports", "outbox_records"):
        op.add_column(table, sa.Column("import_id", sa.Integer, nullable=True))
        op.create_index(f"ix_{table}_import_id", table, ["import_id"], sqlite_where=IMPORTED,
                        postgresql_where=IMPORTED)


def downgrade() -> None:
    # Rows of imports that never completed were never accepted: an older node, which knows no imports, would
    # publish them.
    op.execute(sa.text("DELETE FROM outbox_records WHERE import_id IS NOT NULL AND import_id NOT IN "
                       "(SELECT id FROM report_imports WHERE state = 'complete')"))
    op.execute(sa.text("DELETE FROM fraud_reports WHERE import_id IS NOT NULL AND import_id NOT IN "
                       "(SELECT id FROM report_imports WHERE state = 'complete')"))
    for table in ("outbox_records", "fraud_reports"):
        op.drop_index(f"ix_{table}_import_id", table_name=table)
        # In place (SQLite 3.35+ drops a column itself): batch mode would copy fraud_reports into a new table and drop
        # the old one, which the outbox's foreign key forbids.
        op.drop_column(table, "import_id")
    op.drop_table("report_imports")
