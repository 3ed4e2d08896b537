"""Tables of the fraud ledger: alliance keys, the report outbox, publish batches, the mirror, the query log.

Hashes and roots are raw bytes (32); timestamps that mirror the chain are Unix seconds (ints, as on
chain), local bookkeeping times are timezone-aware datetimes. The schema is owned by migration 0002 (report
imports: 0010; when outbox records were queued: 0011).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    or_,
    select,
    text,
)
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column
from sqlalchemy.sql import ColumnElement

from node.store.models import Base, utcnow


# -- keys ------------------------------------------------------------------------------------------------------
class AllianceKey(Base):
    """The alliance hashing key of one epoch, encrypted at rest with the node's vault key."""

    __tablename__ = "alliance_keys"

    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(16))  # "generated" (this node started the epoch) | "envelope"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LocalKey(Base):
    """A key of this bank's own keyed hashes (report ids, applicant fingerprints), vault-encrypted.

    Such a key is derived from the node's X25519 key until that key is replaced (node.encryption_key_replacement):
    then the derived key is kept here, because what was hashed under it (report ids, the case-reference hashes on
    chain, velocity fingerprints) must keep matching what is hashed from then on.
    """

    __tablename__ = "local_keys"

    purpose: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- outbox ----------------------------------------------------------------------------------------------------
_QUEUED = text("state = 'queued'")


class FraudReport(Base):
    """An accepted report: one case with one or more identifiers, each published as one record.

    `report_id` is derived from the content (a keyed hash, see node.ledger.reports), so resubmitting
    the same report finds this row instead of creating another.
    """

    __tablename__ = "fraud_reports"
    __table_args__ = (
        Index("ix_fraud_reports_import_id", "import_id", sqlite_where=text("import_id IS NOT NULL"),
              postgresql_where=text("import_id IS NOT NULL")),
    )

    report_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_until: Mapped[int] = mapped_column(BigInteger)
    evidence_hash: Mapped[bytes] = mapped_column(LargeBinary)
    case_ref_hash: Mapped[bytes] = mapped_column(LargeBinary)
    submitted_by: Mapped[str] = mapped_column(String(64))  # API key id or "cli"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set when the bank withdrew the report (revoked its records on chain): it is then never republished.
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The import (ReportImport) that wrote the report; NULL for one accepted on its own. See `accepted`.
    import_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class OutboxRecord(Base):
    """One record to publish: an identifier of a report, hashed under one key epoch.

    States: queued -> batched (in a signed publish batch) -> confirmed; `republish` under a new epoch
    adds rows with the new epoch for the same (report, position).
    """

    __tablename__ = "outbox_records"
    __table_args__ = (
        UniqueConstraint("report_id", "position", "epoch", name="uq_outbox_records_report_position_epoch"),
        Index("ix_outbox_records_state_id", "state", "id"),
        # Partial: only imported rows are indexed, for discarding an import's rows; other inserts pay nothing.
        Index("ix_outbox_records_import_id", "import_id", sqlite_where=text("import_id IS NOT NULL"),
              postgresql_where=text("import_id IS NOT NULL")),
        # The oldest queued record (node.node_status), read at every metrics scrape: on PostgreSQL one probe of this
        # index instead of a scan of every queued row, which a republish of years of reports makes many (SQLite's
        # planner, without statistics, keeps to the state index). Partial, so it holds only queued rows and only a
        # row entering the queue pays for it (a state change already rewrites the row's entries, `state` being
        # indexed above).
        Index("ix_outbox_records_queued_at", "queued_at", sqlite_where=_QUEUED, postgresql_where=_QUEUED),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("fraud_reports.report_id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    identifier_type: Mapped[int] = mapped_column(Integer)  # on-chain code, node.ledger.vocabulary
    epoch: Mapped[int] = mapped_column(Integer)
    indicator: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    # The canonical identifier, vault-encrypted (associated data: report id and position), kept so that
    # `ledger republish` can hash it again under a new epoch. Never leaves the node. NULL once the report has
    # expired or been withdrawn: republish never reads it again (node.ledger.retention erases it).
    sealed_identifier: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    # When the record last entered the queue: written, or queued again (its batch lost or refused). Not its report's
    # created_at: a republish queues new records of reports perhaps years old, and the age of the oldest queued
    # record (an operator's "queue stuck" alert) must count from then. Set in the transaction that queues the row.
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    publish_batch_id: Mapped[int | None] = mapped_column(ForeignKey("publish_batches.id"), nullable=True,
                                                         index=True)
    # The import that wrote the record, as its report's; NULL for one accepted on its own. See `accepted`.
    import_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ReportImport(Base):
    """A CSV import of reports (node.ledger.report_import), written in many short transactions.

    States: staging -> complete, or staging -> discarding (its rows are being deleted; the row goes last). Rows
    written by an import are part of the outbox only once it is complete (`accepted`): the switch is this one row,
    so a file of millions of rows becomes publishable at once, all or nothing, without rewriting them.
    """

    __tablename__ = "report_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(16), default="staging")
    source: Mapped[str] = mapped_column(String(255))  # the file's name (not its path)
    submitted_by: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(BigInteger, default=0)  # data rows written so far (all of them once complete)
    reports: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # once complete
    created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # reports new to the store, once complete
    sha256: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # of the file's bytes, once complete
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def accepted(import_id: InstrumentedAttribute[int | None]) -> ColumnElement[bool]:
    """Whether a report or outbox row is accepted: written on its own, or by an import that completed.

    Rows of an import still staging, being discarded, or gone (an id no import has) are not: a positive test, so
    that no state an import passes through on its way out makes its rows visible. The subquery is evaluated once
    per statement (not correlated), and a row accepted on its own answers at the NULL test: the publisher's claim
    query costs no more for it.
    """
    return or_(import_id.is_(None), import_id.in_(select(ReportImport.id).where(ReportImport.state == "complete")))


class PublishBatch(Base):
    """A publishBatch transaction, stored signed *before* it is sent so a crash can resend the same bytes.

    States: signed -> confirmed, or failed (its records go back to the queue). A member's root is unique on
    chain (FraudLedgerDuplicateBatch), which is what makes resending safe.
    """

    __tablename__ = "publish_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    epoch: Mapped[int] = mapped_column(Integer)
    root: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    record_count: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="signed", index=True)
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66), index=True)
    signed_tx: Mapped[bytes] = mapped_column(LargeBinary)
    onchain_batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# -- mirror ----------------------------------------------------------------------------------------------------
class SyncState(Base):
    """Where the indexer stands, one row per followed contract; and how far the risk operations module has matched
    the mirror against booked borrowers (row `risk_operations`)."""

    __tablename__ = "sync_state"

    contract: Mapped[str] = mapped_column(String(42), primary_key=True)
    last_block: Mapped[int] = mapped_column(BigInteger)  # last block fully indexed (-1: none)
    last_block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    last_block_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chain_head: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # head seen at the last sync
    synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class IndexedBlock(Base):
    """Hashes of indexed blocks (those with events, and each sync's last block), for reorg detection."""

    __tablename__ = "indexed_blocks"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    parent_hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class MirrorBatch(Base):
    __tablename__ = "mirror_batches"

    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reporter_member_id: Mapped[int] = mapped_column(BigInteger, index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    record_count: Mapped[int] = mapped_column(Integer)  # as announced in the event
    accepted_count: Mapped[int] = mapped_column(Integer)  # well-formed records kept in mirror_records
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    log_index: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[int] = mapped_column(BigInteger)  # block timestamp


class MirrorRecord(Base):
    __tablename__ = "mirror_records"
    __table_args__ = (UniqueConstraint("batch_id", "position", name="uq_mirror_records_batch_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(BigInteger)  # looked up through uq_mirror_records_batch_position
    position: Mapped[int] = mapped_column(Integer)  # index of the record in the batch calldata
    indicator: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    identifier_type: Mapped[int] = mapped_column(Integer)
    category: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_until: Mapped[int] = mapped_column(BigInteger)
    evidence_hash: Mapped[bytes] = mapped_column(LargeBinary)
    case_ref_hash: Mapped[bytes] = mapped_column(LargeBinary)
    reporter_member_id: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    published_at: Mapped[int] = mapped_column(BigInteger)


class MirrorReaction(Base):
    """An endorsement, dispute, confirmation or revocation event (kind), in chain order."""

    __tablename__ = "mirror_reactions"
    __table_args__ = (UniqueConstraint("block_number", "log_index", name="uq_mirror_reactions_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # endorsed | disputed | confirmed | revoked
    indicator: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    member_id: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # confirmed / revoked only
    value: Mapped[int] = mapped_column(Integer)  # confidence (endorsed) or reason code (disputed, revoked); 0
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(String(66))
    at: Mapped[int] = mapped_column(BigInteger)  # block timestamp


# -- query log -------------------------------------------------------------------------------------------------
class CheckLogEntry(Base):
    """Who checked which indicators when, and what hit: the bank's record of every check."""

    __tablename__ = "check_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(64), index=True)
    asked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # identity | batch
    indicators: Mapped[str] = mapped_column(Text)  # JSON list of hex indicators
    hits: Mapped[str] = mapped_column(Text)  # JSON list of hex indicators that hit
    as_of_block: Mapped[int] = mapped_column(BigInteger)
    stale: Mapped[bool] = mapped_column(Boolean)
