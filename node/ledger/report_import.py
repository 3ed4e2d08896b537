"""Bulk import of fraud reports from CSV: every row is checked before anything is written, and a file is accepted
whole or not at all, whatever its size (up to MAX_FILE_BYTES).

Columns (header required, order free): `identifier_type`, `identifier`, `category`, `confidence`, and
optionally `valid_days`, `valid_from` (Unix seconds), `case_reference`, `evidence_sha256`, `report`.
Rows sharing a non-empty `report` value form one report with several identifiers (their other columns
must agree); a row without one is a report of its own. Any invalid row means nothing is imported; the
problems of every row come back together, so the file is fixed in one pass.

Two passes over the file, neither holding it in memory:
1. *check*: every row is validated; what grouping needs is kept (per multi-row report: its shared columns, its
   lines and its first problem), not the rows. Any problem refuses the file; nothing was written.
2. *write*: the file is read again and its reports are written CHUNK_ROWS records per transaction as rows of an
   import still staging (node.ledger.report_staging), then accepted together by one short transaction. Each chunk
   holds SQLite's write lock for a fraction of a second, so the API's writes go on between chunks. A failure
   (the process killed, the store gone, the file changed since the first pass: its bytes are hashed in both)
   leaves nothing accepted: the import discards its rows, or the next import (or the node's retention loop) does.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from node.errors import InvalidInput
from node.input_files import reading_bytes
from node.ledger.report_staging import (
    begin_import,
    complete_import,
    discard_abandoned_holding_lock,
    discard_import,
    import_lock,
)
from node.ledger.reports import (
    DEFAULT_VALID_DAYS,
    MAX_IDENTIFIERS_PER_REPORT,
    PreparedReport,
    ReportIntake,
    ReportRequest,
    canonical_identifier,
    check_fields,
    too_many_identifiers,
)

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("identifier_type", "identifier", "category", "confidence")
OPTIONAL_COLUMNS = ("valid_days", "valid_from", "case_reference", "evidence_sha256", "report")
MAX_FILE_BYTES = 512 * 1024 * 1024
# Outbox records written per transaction. 300,000 in one transaction kept an API write waiting 4 s for SQLite's
# write lock; a chunk of 5,000 kept it waiting 0.23 s at most (10,000: 0.44 s) during an import of 300,000 rows
# (bench/report_import.py, a loaded machine), and the import took 18.3 s (16.5 s).
CHUNK_ROWS = 5_000
# Problems listed in a refusal (all are counted): a file of millions of bad rows (the wrong file) would otherwise
# hold millions of messages in memory, and a list that long helps nobody fix it.
MAX_LISTED_PROBLEMS = 100_000
READ_BYTES = 1 << 16

# What a progress callback hears: what the import is doing (CHECKING, WAITING or WRITING) and how many more bytes of
# the file it read. Both passes read the whole file, so the work is twice its size (`import_work`).
Progress = Callable[[str, int], None]
CHECKING, WAITING, WRITING = "checking rows", "waiting for another import", "writing rows"
# A data row: its line number, its `report` value and its report (one identifier), or why it has none.
_Row = tuple[int, str, "ReportRequest | InvalidInput"]


@dataclass(frozen=True)
class RowProblem:
    line: int  # line number in the file (the header is line 1)
    code: str
    reason: str


@dataclass(frozen=True)
class ImportResult:
    rows: int
    reports: int
    created: int


class ImportRefused(InvalidInput):
    """The file has invalid rows; nothing was imported."""

    def __init__(self, problems: list[RowProblem], rows: int, invalid: int | None = None) -> None:
        invalid = len(problems) if invalid is None else invalid
        listed = "" if invalid == len(problems) else f" (the first {len(problems):,} are listed)"
        super().__init__(f"{invalid} of {rows} rows are invalid{listed}; nothing was imported",
                         code="invalid_rows",
                         details=[{"line": p.line, "code": p.code, "reason": p.reason} for p in problems])
        self.problems = problems


class FileChanged(InvalidInput):
    """The file read in the second pass is not the file checked in the first; nothing was imported."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"reports file {path} changed while it was imported; nothing was imported (import it again "
                         "once nothing writes to it)", code="file_changed")


@dataclass(slots=True)
class _Group:
    """What the first pass keeps of a report of several rows: not its identifiers."""

    shared: tuple[object, ...]  # the columns its rows must agree on (_shared)
    lines: list[int]
    fields_problem: InvalidInput | None  # of its shared columns
    identifier_problem: InvalidInput | None = None  # its first invalid identifier's


@dataclass
class _Checked:
    rows: int
    sha256: bytes
    last_line: dict[str, int]  # of each multi-row report, by its `report` value
    problems: list[RowProblem] = field(default_factory=list)
    invalid: int = 0


def import_reports(intake: ReportIntake, path: Path, *, submitted_by: str, progress: Progress | None = None,
                   chunk_rows: int = CHUNK_ROWS) -> ImportResult:
    """Check every row of `path` (ImportRefused listing every problem), then store its reports, accepted all at once.

    Imports into one store run one at a time: a second waits for the first's writing pass. An import that fails
    discards what it wrote."""
    intake.refuse_unless_reporter()
    report = progress or (lambda _phase, _bytes: None)
    checked = _check(path, report)
    if checked.problems:
        raise ImportRefused(checked.problems, checked.rows, checked.invalid)
    store = intake.store
    with import_lock(store, on_wait=lambda: report(WAITING, 0)):
        discard_abandoned_holding_lock(store)  # holding the lock: whatever is still staging was left by the dead
        import_id = begin_import(store, source=path.name, submitted_by=submitted_by)
        try:
            reports, created = _write(intake, path, checked, import_id, submitted_by, report, chunk_rows)
            complete_import(store, import_id, reports=reports, created=created, sha256=checked.sha256)
        except BaseException:
            # Also on KeyboardInterrupt: whatever stops the import, its rows go now if they can (a killed process
            # leaves them to the next import or the node's retention loop).
            try:
                discard_import(store, import_id)
            except Exception:
                logger.exception("import %s failed and its rows could not be discarded now; the next import or "
                                 "the node's retention loop discards them (they are never published)", import_id)
            raise
    return ImportResult(checked.rows, reports, created)


def import_work(path: Path) -> int | None:
    """The work a progress bar of `import_reports` counts to: both passes' bytes; None if the file cannot be read."""
    try:
        return 2 * path.stat().st_size
    except OSError:
        return None


# -- pass 1: check -----------------------------------------------------------------------------------------------
def _check(path: Path, progress: Progress) -> _Checked:
    groups: dict[str, _Group] = {}
    problems: list[RowProblem] = []
    invalid = rows = 0
    with _reading(path, lambda read: progress(CHECKING, read)) as (reader, raw):
        for line, key, request in reader:
            rows += 1
            try:
                _check_row(groups, line, key, request)
            except InvalidInput as exc:
                invalid += 1
                if len(problems) < MAX_LISTED_PROBLEMS:  # in line order: the ones dropped come after these
                    problems.append(RowProblem(line, exc.code, str(exc)))
        sha256 = raw.digest.digest()
    if rows == 0:
        raise InvalidInput(f"{path} has no data rows", code="empty_file")
    for group in groups.values():
        problem = _problem_of(group)
        if problem is not None:
            invalid += len(group.lines)
            problems.extend(RowProblem(line, problem.code, str(problem)) for line in group.lines)
    problems.sort(key=lambda p: p.line)
    return _Checked(rows, sha256, {key: group.lines[-1] for key, group in groups.items()},
                    problems[:MAX_LISTED_PROBLEMS], invalid)


def _check_row(groups: dict[str, _Group], line: int, key: str, request: ReportRequest | InvalidInput) -> None:
    """Check a row, a report of its own or one row of the report `key`; InvalidInput if it is invalid by itself (the
    problems of a report of several rows are its own, `_problem_of`)."""
    if isinstance(request, InvalidInput):
        raise request
    if key:
        _join(groups, key, request, line)
        return
    check_fields(request)
    canonical_identifier(0, *request.identifiers[0])


def _join(groups: dict[str, _Group], key: str, request: ReportRequest, line: int) -> None:
    """Count the row into its report; InvalidInput if it disagrees with the report's first row."""
    group = groups.get(key)
    if group is None:
        try:
            check_fields(request)
            fields_problem = None
        except InvalidInput as exc:
            fields_problem = exc
        group = groups[key] = _Group(_shared(request), [], fields_problem)
    elif _shared(request) != group.shared:
        raise InvalidInput("rows of one report must agree on every column but the identifier",
                           code="inconsistent_report")
    if group.identifier_problem is None:
        try:
            canonical_identifier(len(group.lines), *request.identifiers[0])
        except InvalidInput as exc:
            group.identifier_problem = exc
    group.lines.append(line)


def _problem_of(group: _Group) -> InvalidInput | None:
    """The report's problem, as checking it whole would find it first (ReportIntake.prepare's order)."""
    if group.fields_problem is not None:
        return group.fields_problem
    if len(group.lines) > MAX_IDENTIFIERS_PER_REPORT:
        return too_many_identifiers()
    return group.identifier_problem


# -- pass 2: write -----------------------------------------------------------------------------------------------
def _write(intake: ReportIntake, path: Path, checked: _Checked, import_id: int, submitted_by: str,
           progress: Progress, chunk_rows: int) -> tuple[int, int]:
    """Store the file's reports as the import's rows, chunk by chunk; (reports, created). FileChanged if the file is
    not the one checked."""
    epoch_key, now = intake.current_key(), int(time.time())
    open_reports: dict[str, list[tuple[str, str]]] = {}  # identifiers of multi-row reports not complete yet
    chunk: list[PreparedReport] = []
    chunk_records = reports = created = rows = 0

    def flush() -> None:
        nonlocal chunk, chunk_records, created
        created += sum(a.created for a in intake.store_prepared(chunk, submitted_by=submitted_by,
                                                               import_id=import_id))
        chunk, chunk_records = [], 0

    with _reading(path, lambda read: progress(WRITING, read)) as (reader, raw):
        for line, key, parsed in reader:
            rows += 1
            try:
                if isinstance(parsed, InvalidInput):
                    raise parsed
                request = parsed
                if key:
                    if checked.last_line.get(key, 0) < line:
                        raise FileChanged(path)
                    identifiers = open_reports.setdefault(key, [])
                    identifiers.extend(request.identifiers)
                    if line < checked.last_line[key]:
                        continue
                    del open_reports[key]
                    request = ReportRequest(identifiers, *_shared(request))
                prepared = intake.prepare(request, now=now, epoch_key=epoch_key)
            except InvalidInput:
                raise FileChanged(path) from None
            chunk.append(prepared)
            reports += 1
            chunk_records += len(prepared.items)
            if chunk_records >= chunk_rows:
                flush()
        if raw.digest.digest() != checked.sha256 or rows != checked.rows or open_reports:
            raise FileChanged(path)
    if chunk:
        flush()
    return reports, created


# -- reading -----------------------------------------------------------------------------------------------------
class _HashingReader(io.RawIOBase):
    """The file's bytes as they are read, hashed and counted (a pass's progress), under a text decoder."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None]) -> None:
        super().__init__()
        self._raw = raw
        self._progress = progress
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self.digest.update(memoryview(buffer)[:count])
            self._progress(count)
        return int(count or 0)


@contextmanager
def _reading(path: Path, progress: Callable[[int], None]) -> Iterator[tuple[Iterator[_Row], _HashingReader]]:
    """The file's data rows (_Row), and its bytes' reader (with their hash so far); whatever makes it
    unreadable is an `InvalidInput` naming the file. A header that lacks a column or repeats one is refused."""
    with reading_bytes(path, "reports file") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"reports file {path} is larger than {MAX_FILE_BYTES // 2**20} MiB",
                               code="file_too_large")
        raw = _HashingReader(handle, progress)
        text = io.TextIOWrapper(io.BufferedReader(raw, READ_BYTES), encoding="utf-8-sig", newline="")
        try:
            reader = csv.DictReader(text)
            _check_header(path, reader.fieldnames)
            yield _rows(reader), raw
        except csv.Error as exc:
            raise InvalidInput(f"reports file {path} is not valid CSV: {exc}", code="malformed_file") from None


def _check_header(path: Path, columns: Sequence[str] | None) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in (columns or [])]
    if missing:
        raise InvalidInput(f"{path} lacks the column(s) {', '.join(missing)}", code="malformed_file")
    # A row keeps one value per name: of two `identifier` columns the first would be dropped unread.
    # Positions, not names, in the message: a file without its header has data there.
    first_at: dict[str, int] = {}
    repeated = [str(i) for i, c in enumerate(columns or [], start=1) if first_at.setdefault(c, i) != i]
    if repeated:
        raise InvalidInput(f"{path} repeats a column name in its header (column {', '.join(repeated[:10])})",
                           code="malformed_file")


def _rows(reader: csv.DictReader[str]) -> Iterator[_Row]:
    for row in reader:
        line = reader.line_num
        if None in row:  # cells past the header's columns, dropped unread: the row's columns are shifted
            yield line, "", InvalidInput("the row has more cells than the header has columns", code="extra_cells")
            continue
        try:
            yield line, (row.get("report") or "").strip(), _request_of(row)  # type: ignore[arg-type]
        except InvalidInput as exc:
            yield line, "", exc


def _shared(request: ReportRequest) -> tuple[str, int, int, int | None, str | None, str]:
    """The columns the rows of one report must agree on, in ReportRequest's order after its identifiers."""
    return (request.category, request.confidence, request.valid_days, request.valid_from, request.evidence_sha256,
            request.case_reference)


def _request_of(row: dict[str, str | None]) -> ReportRequest:
    def text(column: str) -> str:
        return (row.get(column) or "").strip()

    return ReportRequest([(text("identifier_type"), row.get("identifier") or "")], text("category"),
                         _integer(text("confidence"), "confidence"),
                         _integer(text("valid_days"), "valid_days") if text("valid_days") else DEFAULT_VALID_DAYS,
                         _integer(text("valid_from"), "valid_from") if text("valid_from") else None,
                         text("evidence_sha256") or None, text("case_reference"))


def _integer(value: str, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{column} must be an integer", code=f"invalid_{column}") from None
