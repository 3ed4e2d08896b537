"""Applications: the applicant (sealed identifiers and keyed fingerprints) may be erased (NULL) once no action needs
it any more; booked loans record when they were repaid, which starts a repaid loan's retention period.

node.ledger.retention erases them after `application_retention_days`. Loans already repaid get the upgrade's time as
their repayment time: their period starts now rather than at an unknown, earlier moment.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ERASABLE = (("applications", "sealed_applicant"), ("applications", "applicant_fingerprint"),
             ("booked_loans", "applicant_fingerprint"))


@contextmanager
def _altered(table: str) -> Iterator[BatchOperations]:
    """`op.batch_alter_table(table)`, on SQLite with the rows of a table other tables refer to kept aside.

    SQLite changes a column's NOT NULL by copying the table into a new one and dropping the old, and the migrations
    run in one transaction with foreign keys on (node.store.migrations.env), where they cannot be turned off:
    dropping `applications` with its fingerprints and loans failed on their foreign keys. So the rows leave before
    the copy and come back after it, under deferred checks: their children miss them only in between.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        with op.batch_alter_table(table) as batch:
            yield batch
        return
    kept = f"_{table}_rows_0008"
    op.execute("PRAGMA defer_foreign_keys = ON")  # until the transaction ends
    op.execute(f"CREATE TABLE {kept} AS SELECT * FROM {table}")
    op.execute(f"DELETE FROM {table}")
    with op.batch_alter_table(table, recreate="always") as batch:
        yield batch
    columns = ", ".join(c["name"] for c in sa.inspect(bind).get_columns(kept)
                        if c["name"] in {n["name"] for n in sa.inspect(bind).get_columns(table)})
    op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {kept}")
    op.execute(f"DROP TABLE {kept}")


def upgrade() -> None:
    with _altered("applications") as batch:
        batch.alter_column("sealed_applicant", existing_type=sa.LargeBinary(), nullable=True)
        batch.alter_column("applicant_fingerprint", existing_type=sa.LargeBinary(), nullable=True)
    with _altered("booked_loans") as batch:
        batch.alter_column("applicant_fingerprint", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("repaid_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text("UPDATE booked_loans SET repaid_at = :now WHERE status = 'repaid'")
               .bindparams(sa.bindparam("now", datetime.now(UTC), type_=sa.DateTime(timezone=True))))


def downgrade() -> None:
    # An erased applicant cannot come back: it stays empty, and the older node's vault refuses it where this
    # version answers `applicant_erased` (booking, fraud confirmation, a loan tape: none of them wanted by then).
    # One reader does not stop there: the older node's monitoring unseals every booked loan lacking indicators
    # under a key epoch, which an erased repaid loan is, so its alert passes fail while one exists.
    for table, column in _ERASABLE:
        op.execute(sa.text(f"UPDATE {table} SET {column} = :empty WHERE {column} IS NULL")
                   .bindparams(sa.bindparam("empty", b"", type_=sa.LargeBinary())))
    with _altered("booked_loans") as batch:
        batch.drop_column("repaid_at")
        batch.alter_column("applicant_fingerprint", existing_type=sa.LargeBinary(), nullable=False)
    with _altered("applications") as batch:
        batch.alter_column("applicant_fingerprint", existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column("sealed_applicant", existing_type=sa.LargeBinary(), nullable=False)
