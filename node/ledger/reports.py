"""Report intake: validate, normalise and hash a fraud report, then write it to the durable outbox.

Accepting a report touches only the local store, never the chain, so reports are accepted while the
chain is down; the publisher (node.ledger.publisher) takes them from the outbox.

The report id is derived from the report's content: HMAC-SHA256 under a key local to this bank over
the canonical identifiers and the report's fields. The same report sent twice gets the same id and
finds the first row, so it is published once. The id is keyed because it is shown to callers and
logged, and a plain hash of a phone number could be reversed by enumeration.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.crypto.keyed_hash import indicator_hash
from node.crypto.vault import LocalVault
from node.errors import InvalidInput, NotFound
from node.hex_input import hex32
from node.ledger.identifiers import IdentifierType, InvalidIdentifier, normalise
from node.ledger.keyring import KeyRing
from node.ledger.report_staging import count_staged_rows, take_over_staged
from node.ledger.vocabulary import MAX_CONFIDENCE, MAX_VALIDITY_S, Category, identifier_type_code, identifier_type_of
from node.store.bulk import in_list_slices, insert_rows
from node.store.db import Store, once_more_on_conflict
from node.store.ledger_tables import FraudReport, OutboxRecord, PublishBatch, ReportImport, accepted
from node.store.models import as_utc, utcnow

MAX_IDENTIFIERS_PER_REPORT = 20
MAX_REPORTS_PER_REQUEST = 10_000
MAX_CASE_REFERENCE = 200
DEFAULT_VALID_DAYS = 2 * 365
MAX_VALID_DAYS = MAX_VALIDITY_S // 86_400
ZERO_HASH = bytes(32)
REPORT_ID = re.compile(r"[0-9a-f]{32}")  # the first 32 hex digits of an HMAC (_report_id)
REPORT_ID_PURPOSE = b"alliance-report-id/v1"
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode's Cc: C0, DEL and C1
# Column order of the rows intake writes (_report_row, ReportIntake._outbox_rows).
REPORT_COLUMNS = ("report_id", "category", "confidence", "valid_from", "valid_until", "evidence_hash",
                  "case_ref_hash", "submitted_by", "created_at", "import_id")
OUTBOX_COLUMNS = ("report_id", "position", "epoch", "identifier_type", "indicator", "sealed_identifier", "state",
                  "import_id", "queued_at")


@dataclass(frozen=True)
class ReportRequest:
    """A report as an analyst submits it; identifiers are (type, raw value) pairs."""

    identifiers: Sequence[tuple[str, str]]
    category: str
    confidence: int
    valid_days: int = DEFAULT_VALID_DAYS
    valid_from: int | None = None  # Unix seconds; default: when the report is first accepted
    evidence_sha256: str | None = None  # hex SHA-256 of the bank's evidence file, which stays at the bank
    case_reference: str = ""  # the bank's case number; only its keyed hash is published


@dataclass(frozen=True)
class PreparedItem:
    position: int
    identifier_type: IdentifierType
    canonical: str
    indicator: bytes


@dataclass(frozen=True)
class PreparedReport:
    report_id: str
    epoch: int
    category: Category
    confidence: int
    valid_from: int
    valid_until: int
    evidence_hash: bytes
    case_ref_hash: bytes
    items: list[PreparedItem]
    # The id this report was given before its evidence hash was read in one spelling: "0x" + the hex, which a node
    # of an earlier version gave a report whose evidence was written so, and a retry of it must find.
    earlier_id: str | None = None


@dataclass(frozen=True)
class AcceptedReport:
    report_id: str
    created: bool  # False: the same report had been accepted before


@dataclass(frozen=True)
class ItemStatus:
    position: int
    identifier_type: str
    epoch: int
    indicator: str
    state: str
    tx_hash: str | None
    block_number: int | None
    batch_id: int | None


@dataclass(frozen=True)
class ReportStatus:
    report_id: str
    state: str  # queued | publishing | confirmed | withdrawn
    category: str
    confidence: int
    valid_from: int
    valid_until: int
    submitted_by: str
    created_at: datetime
    identifiers: list[ItemStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "report_id": self.report_id, "state": self.state, "category": self.category,
            "confidence": self.confidence, "valid_from": self.valid_from, "valid_until": self.valid_until,
            "submitted_by": self.submitted_by, "created_at": self.created_at.isoformat(),
            "identifiers": [vars(item) for item in self.identifiers],
        }


class ReportIntake:
    def __init__(self, store: Store, keyring: KeyRing, vault: LocalVault, report_id_key: bytes, *,
                 refuse_unless_reporter: Callable[[], None] = lambda: None) -> None:
        """`refuse_unless_reporter` raises for a bank that may not report (`NodeContext.refuse_reports_unless_member`),
        asked before any report is taken, whichever way it comes (API, CLI, import, the credit workflow)."""
        self._store = store
        self._keyring = keyring
        self._vault = vault
        self._report_id_key = report_id_key
        self.refuse_unless_reporter = refuse_unless_reporter

    def prepare(self, request: ReportRequest, *, now: int | None = None,
                epoch_key: tuple[int, bytes] | None = None) -> PreparedReport:
        """Validate and hash a report; raises InvalidInput (with the reason code) and touches nothing.

        `epoch_key` is the (epoch, alliance key) to hash under, by default the newest held.
        """
        category, evidence_hash = check_fields(request)
        canonical = _canonical_identifiers(request.identifiers)
        epoch, alliance_key = epoch_key or self._keyring.current()
        # The hash as read, not as written: "0x" + hex, bare hex and either in capitals are one report under one id.
        evidence = evidence_hash.hex() if request.evidence_sha256 else ""
        report_id = self._report_id(request, canonical, evidence)
        earlier_id = self._report_id(request, canonical, "0x" + evidence) if evidence else None
        valid_from = request.valid_from if request.valid_from is not None else int(now or time.time())
        items = [PreparedItem(position, kind, value, indicator_hash(alliance_key, kind, value))
                 for position, (kind, value) in enumerate(canonical)]
        return PreparedReport(report_id, epoch, category, request.confidence, valid_from,
                              valid_from + request.valid_days * 86_400, evidence_hash,
                              self._case_ref_hash(request.case_reference), items, earlier_id)

    def current_key(self) -> tuple[int, bytes]:
        """The (epoch, alliance key) new reports are hashed under."""
        return self._keyring.current()

    def accept(self, request: ReportRequest, *, submitted_by: str) -> AcceptedReport:
        return self.accept_many([request], submitted_by=submitted_by)[0]

    def accept_many(self, requests: Sequence[ReportRequest], *, submitted_by: str) -> list[AcceptedReport]:
        """Accept reports all or nothing: any invalid one raises InvalidInput listing every bad row."""
        self.refuse_unless_reporter()
        if not requests:
            raise InvalidInput("no reports given", code="empty_request")
        if len(requests) > MAX_REPORTS_PER_REQUEST:
            raise InvalidInput(f"at most {MAX_REPORTS_PER_REQUEST} reports per request", code="too_many_reports")
        prepared, problems = [], []
        now = int(time.time())
        epoch_key = self.current_key()
        for row, request in enumerate(requests):
            try:
                prepared.append(self.prepare(request, now=now, epoch_key=epoch_key))
            except InvalidInput as exc:
                problems.append({"row": row, "code": exc.code, "reason": str(exc)})
        if problems:
            first = problems[0]
            message = (f"{first['reason']}" if len(requests) == 1
                       else f"{len(problems)} of {len(requests)} reports are invalid; nothing was accepted")
            raise InvalidInput(message, code=str(first["code"]) if len(requests) == 1 else "invalid_reports",
                               details=problems)
        return self.store_prepared(prepared, submitted_by=submitted_by)

    def store_prepared(self, prepared: Sequence[PreparedReport], *, submitted_by: str,
                       import_id: int | None = None) -> list[AcceptedReport]:
        """Write prepared reports to the outbox in one transaction (reports already held are found, not added).

        With `import_id`, they are written as rows of that import, still staging (node.ledger.report_staging):
        accepted once it completes. ImportDiscarded if it is no longer staging.
        """
        # A concurrent request may store one of these reports first; storing again finds it.
        return once_more_on_conflict(lambda: self._store_reports(prepared, submitted_by, import_id))

    @property
    def store(self) -> Store:
        return self._store

    def _store_reports(self, prepared: Sequence[PreparedReport], submitted_by: str,
                       import_id: int | None) -> list[AcceptedReport]:
        # Sealed before the transaction: on SQLite the write lock is held from its first write to its commit, and
        # sealing an import chunk's identifiers inside it made the chunk hold it longer.
        records_of = {report.report_id: self._outbox_rows(report, import_id) for report in prepared}
        with self._store.transaction() as session:
            if import_id is not None:
                count_staged_rows(session, import_id, sum(len(report.items) for report in prepared))
            earlier = {report.earlier_id: report.report_id for report in prepared if report.earlier_id}
            ids = list({report.report_id for report in prepared} | earlier.keys())
            # In slices: one IN list of a whole import's ids passed the database's bind-parameter limit (65,535 on
            # PostgreSQL, 250,000 on this SQLite and 999 on one older than 3.32) and refused the file.
            held = [row for chunk in in_list_slices(ids) for row in session.execute(
                select(FraudReport.report_id, FraudReport.import_id, accepted(FraudReport.import_id))
                .where(FraudReport.report_id.in_(chunk)))]
            # A copy written by an import that is not complete (still staging, or abandoned) is not accepted and may
            # never be: this write replaces it. A copy this import wrote (the same report twice in a file) stands.
            staged = [(report_id, owner) for report_id, owner, is_accepted in held
                      if not is_accepted and owner is not None and owner != import_id]
            replaced = take_over_staged(session, staged) if staged else set()
            existing = {report_id for report_id, *_ in held} - replaced
            # Each report's id as held (its earlier id if only that is), by its id: found, not written again.
            held_as = {earlier[report_id]: report_id for report_id in existing if report_id in earlier}
            held_as.update((report_id, report_id) for report_id in existing if report_id not in earlier)
            accepted_now, new = [], []
            for report in prepared:
                held_id = held_as.get(report.report_id)
                accepted_now.append(AcceptedReport(held_id or report.report_id, held_id is None))
                if held_id is None:
                    held_as[report.report_id] = report.report_id
                    new.append(report)
            # In report id order: the ids are random, and inserting them sorted walks the B-trees keyed by report id
            # once instead of at random (an import of 300,000 rows kept a concurrent API write waiting 4.0 s, not 8.0).
            new.sort(key=lambda report: report.report_id)
            now = utcnow()  # accepted and queued in this transaction
            reports = [_report_row(report, submitted_by, import_id, now) for report in new]
            records = [(*row, now) for report in new for row in records_of[report.report_id]]
            # Straight to the driver (executemany / COPY): SQLAlchemy's per-parameter processing cost more than
            # the inserts themselves for a bulk request.
            insert_rows(session, FraudReport, REPORT_COLUMNS, reports)
            insert_rows(session, OutboxRecord, OUTBOX_COLUMNS, records)
        return accepted_now

    def _outbox_rows(self, report: PreparedReport, import_id: int | None) -> list[tuple[object, ...]]:
        """Rows in OUTBOX_COLUMNS order but the last (queued_at: the transaction's time, added in it)."""
        return [(report.report_id, item.position, report.epoch, identifier_type_code(item.identifier_type),
                 item.indicator, self._vault.encrypt(item.canonical.encode(), associated_data=sealed_identifier_ad(
                     report.report_id, item.position)), "queued", import_id) for item in report.items]

    def _report_id(self, request: ReportRequest, canonical: list[tuple[IdentifierType, str]], evidence: str) -> str:
        content = json.dumps([sorted([kind.value, value] for kind, value in canonical), request.category,
                              request.confidence, request.valid_from, request.valid_days, evidence,
                              request.case_reference],
                             separators=(",", ":"), ensure_ascii=False)
        return hmac.digest(self._report_id_key, content.encode(), "sha256").hex()[:32]

    def _case_ref_hash(self, case_reference: str) -> bytes:
        if not case_reference:
            return ZERO_HASH
        return hmac.digest(self._report_id_key, b"case-reference\x00" + case_reference.encode(), "sha256")


def check_fields(request: ReportRequest) -> tuple[Category, bytes]:
    """Check every field of `request` but its identifiers (InvalidInput); its category and evidence hash."""
    category = _category(request.category)
    if not isinstance(request.confidence, int) or not 0 <= request.confidence <= MAX_CONFIDENCE:
        raise InvalidInput(f"confidence must be an integer 0..{MAX_CONFIDENCE}", code="invalid_confidence")
    if not isinstance(request.valid_days, int) or not 1 <= request.valid_days <= MAX_VALID_DAYS:
        raise InvalidInput(f"valid_days must be 1..{MAX_VALID_DAYS} (at most six years)", code="invalid_validity")
    if request.valid_from is not None and not 0 < request.valid_from < 2**40 - MAX_VALIDITY_S:
        raise InvalidInput("valid_from must be a Unix timestamp in seconds", code="invalid_validity")
    if len(request.case_reference) > MAX_CASE_REFERENCE:
        raise InvalidInput(f"case_reference is longer than {MAX_CASE_REFERENCE} characters",
                           code="invalid_case_reference")
    if not _encodable(request.case_reference):  # it is hashed as UTF-8 (a command line's undecodable bytes)
        raise InvalidInput("case_reference holds a character that is not valid text (an unpaired surrogate)",
                           code="invalid_case_reference")
    # A case number has none: a NUL, a line break or a tab is a file's or a program's fault (a cell split badly, a C
    # string's end), and the keyed hash of it would match the bank's case under no spelling it searches for.
    if _CONTROL_CHARACTER.search(request.case_reference):
        raise InvalidInput("case_reference holds a control character (a NUL, a tab or a line break)",
                           code="invalid_case_reference")
    return category, _evidence_hash(request.evidence_sha256)


def sealed_identifier_ad(report_id: str, position: int) -> bytes:
    """Associated data binding a sealed identifier to its report and position."""
    return f"outbox-identifier/{report_id}/{position}".encode()


def _category(name: str) -> Category:
    try:
        return Category[name]
    except KeyError:
        # Not quoted: in a file whose columns are shifted, the category cell holds a customer's identifier.
        raise InvalidInput(f"unknown category; one of {', '.join(c.name for c in Category)}",
                           code="unknown_category") from None


def _evidence_hash(evidence_sha256: str | None) -> bytes:
    if not evidence_sha256:
        return ZERO_HASH
    # Matched in full (hex32): "ab ab…" (or a hash after a space) was taken as the same hash, under another report
    # id, and a retry so spelt queued the report a second time. Lowercased first: a 0X prefix is taken, as it was.
    digest = hex32(evidence_sha256.lower())
    if digest is None:
        raise InvalidInput("evidence_sha256 must be 64 hex digits", code="invalid_evidence_hash")
    return digest


def _canonical_identifiers(identifiers: Sequence[tuple[str, str]]) -> list[tuple[IdentifierType, str]]:
    if not identifiers:
        raise InvalidInput("a report needs at least one identifier", code="no_identifiers")
    if len(identifiers) > MAX_IDENTIFIERS_PER_REPORT:
        raise too_many_identifiers()
    canonical: list[tuple[IdentifierType, str]] = []
    for index, (kind, raw) in enumerate(identifiers):
        pair = canonical_identifier(index, kind, raw)
        if pair not in canonical:  # the same identifier written twice is one record
            canonical.append(pair)
    return canonical


def too_many_identifiers() -> InvalidInput:
    return InvalidInput(f"a report has at most {MAX_IDENTIFIERS_PER_REPORT} identifiers", code="too_many_identifiers")


def canonical_identifier(index: int, kind: str, raw: str) -> tuple[IdentifierType, str]:
    """The report's identifier number `index`, normalised; InvalidInput (naming it by its index) if it is invalid."""
    try:
        return IdentifierType(kind), normalise(kind, raw)
    except InvalidIdentifier as exc:
        raise InvalidInput(f"identifier {index}: {exc}", code=exc.code.value) from None
    except ValueError:
        # Not quoted: with type and value swapped, the type is the customer's identifier.
        raise InvalidInput(f"identifier {index}: unknown identifier type; one of {', '.join(IdentifierType)}",
                           code="unknown_type") from None


def _report_row(report: PreparedReport, submitted_by: str, import_id: int | None,
                created_at: datetime) -> tuple[object, ...]:
    """A row in REPORT_COLUMNS order."""
    return (report.report_id, int(report.category), report.confidence, report.valid_from, report.valid_until,
            report.evidence_hash, report.case_ref_hash, submitted_by, created_at, import_id)


def get_report(session: Session, report_id: str) -> FraudReport:
    """This bank's report `report_id`; NotFound (404 report_not_found) if it never accepted one."""
    # Not looked up in another shape: no report has it, and a lone surrogate (a command line's undecodable bytes)
    # cannot even be sent to the store.
    report = session.get(FraudReport, report_id) if REPORT_ID.fullmatch(report_id) else None
    if report is not None and report.import_id is not None and _import_state(session, report.import_id) != "complete":
        raise NotFound(f"report {report_id} is not accepted: the import writing it has not completed",
                       code="report_not_found")
    if report is None:
        # Quoted only in a report id's shape: anything else may be a customer's identifier typed in its place,
        # and the terminal, job logs and API error bodies are no place for it.
        # "32 lowercase": an id in capitals is 32 hex digits too, and was told it was not one.
        shown = report_id if REPORT_ID.fullmatch(report_id) else "with that id (a report id is 32 lowercase hex digits)"
        raise NotFound(f"no report {shown}", code="report_not_found")
    return report


def _import_state(session: Session, import_id: int) -> str | None:
    return session.scalar(select(ReportImport.state).where(ReportImport.id == import_id))


def report_status(session: Session, report_id: str) -> ReportStatus:
    report = get_report(session, report_id)
    rows = session.execute(
        select(OutboxRecord, PublishBatch).outerjoin(PublishBatch, OutboxRecord.publish_batch_id == PublishBatch.id)
        .where(OutboxRecord.report_id == report_id).order_by(OutboxRecord.epoch, OutboxRecord.position)).all()
    items = [ItemStatus(record.position, str(identifier_type_of(record.identifier_type)), record.epoch,
                        "0x" + record.indicator.hex(), record.state,
                        batch.tx_hash if batch is not None and record.state == "confirmed" else None,
                        batch.block_number if batch is not None else None,
                        batch.onchain_batch_id if batch is not None else None)
             for record, batch in rows]
    newest_epoch = max(item.epoch for item in items)
    states = {item.state for item in items if item.epoch == newest_epoch}
    state = ("withdrawn" if report.withdrawn_at is not None else "confirmed" if states == {"confirmed"}
             else "queued" if states == {"queued"} else "publishing")
    return ReportStatus(report.report_id, state, Category(report.category).name, report.confidence,
                        # Aware on either store: SQLite hands the UTC time back naive, which a client reads as local.
                        report.valid_from, report.valid_until, report.submitted_by, as_utc(report.created_at), items)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
