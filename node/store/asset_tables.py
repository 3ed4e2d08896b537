"""Tables of ABS assets: this bank's pools, versions and loans, and the mirror of every bank's loan ids.

Local tables hold what the bank imported (records without personal data, borrower indicators for
screening, the local loan reference); `asset_mirror_*` are a materialised view of the AssetRegistry's
events, rebuilt from the chain at will, for double-financing checks. Hashes are raw 32-byte values;
amounts that can exceed 64 bits (version totals) are decimal strings. The schema is owned by migration 0003.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base, utcnow


class AssetPool(Base):
    """A pool this bank originated or holds, by a local name; `pool_id` once registered on chain."""

    __tablename__ = "asset_pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    originator_code: Mapped[str] = mapped_column(String(64))
    metadata_hash: Mapped[bytes] = mapped_column(LargeBinary)
    pool_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AssetVersion(Base):
    """One imported loan tape of a pool: a draft until anchored as the pool's next on-chain version."""

    __tablename__ = "asset_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_ref: Mapped[int] = mapped_column(ForeignKey("asset_pools.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # draft | anchored
    root: Mapped[bytes] = mapped_column(LargeBinary)
    loan_count: Mapped[int] = mapped_column(Integer)
    total_principal: Mapped[str] = mapped_column(String(48))  # decimal, minor units
    key_epoch: Mapped[int] = mapped_column(Integer)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # on-chain number once anchored
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    findings: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: screening at anchor time
    override_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    anchored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AssetLoan(Base):
    """One loan of a version, at its position in the tape (its index among the tree's values)."""

    __tablename__ = "asset_loans"
    __table_args__ = (UniqueConstraint("version_ref", "position", name="uq_asset_loans_version_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_ref: Mapped[int] = mapped_column(ForeignKey("asset_versions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    loan_reference: Mapped[str] = mapped_column(String(64))
    originator_code: Mapped[str] = mapped_column(String(32))
    loan_id: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    borrower_hash: Mapped[bytes] = mapped_column(LargeBinary)
    key_epoch: Mapped[int] = mapped_column(Integer)
    origination_date: Mapped[int] = mapped_column(Integer)
    maturity_date: Mapped[int] = mapped_column(Integer)
    original_principal: Mapped[int] = mapped_column(BigInteger)
    current_principal: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    interest_rate_micros: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[int] = mapped_column(SmallInteger)
    amortisation: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[int] = mapped_column(SmallInteger)
    arrears_balance: Mapped[int] = mapped_column(BigInteger)


class AssetLoanIndicator(Base):
    """A keyed hash of a borrower identifier of a loan under one epoch's key, kept for blacklist screening."""

    __tablename__ = "asset_loan_indicators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_ref: Mapped[int] = mapped_column(ForeignKey("asset_versions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    identifier_type: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(Integer)  # of the alliance key it is hashed under
    indicator: Mapped[bytes] = mapped_column(LargeBinary, index=True)


class AssetServicingReport(Base):
    """A servicing report this bank sent, with the statuses its root commits to (JSON list by position)."""

    __tablename__ = "asset_servicing_reports"
    __table_args__ = (UniqueConstraint("pool_id", "period", name="uq_asset_servicing_pool_period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_id: Mapped[int] = mapped_column(BigInteger, index=True)
    version: Mapped[int] = mapped_column(Integer)
    period: Mapped[int] = mapped_column(Integer)
    status_root: Mapped[bytes] = mapped_column(LargeBinary)
    statuses: Mapped[str] = mapped_column(Text)
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(BigInteger)


class AssetMirrorVersion(Base):
    """A version anchored by any bank, from its LoanIdsPublished event."""

    __tablename__ = "asset_mirror_versions"

    pool_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    loan_count: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    tx_hash: Mapped[str] = mapped_column(String(66))


class AssetMirrorLoan(Base):
    """A loan id published in a version; a loan is active in a pool if it is in the pool's latest version."""

    __tablename__ = "asset_mirror_loans"
    __table_args__ = (UniqueConstraint("pool_id", "version", "position", name="uq_asset_mirror_loans_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_id: Mapped[int] = mapped_column(BigInteger, index=True)
    version: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    loan_id: Mapped[bytes] = mapped_column(LargeBinary, index=True)
