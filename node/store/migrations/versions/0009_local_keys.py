"""Local keys: the keys of the bank's own keyed hashes, kept once the node's X25519 key is replaced.

Until then they are derived from that key, so an older store has none to carry over.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "local_keys",
        sa.Column("purpose", sa.String(64), primary_key=True),
        sa.Column("sealed_key", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    # An older node derives these keys from the X25519 key again: after a replacement that gives other keys, so its
    # report ids and fingerprints no longer match the stored ones. Downgrade only a store whose key was never replaced.
    op.drop_table("local_keys")
