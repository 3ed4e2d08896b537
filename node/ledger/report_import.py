"""Bulk import of fraud reports from CSV: every row is checked before anything is written.

Columns (header required, order free): `identifier_type`, `identifier`, `category`, `confidence`, and
optionally `valid_days`, `valid_from` (Unix seconds), `case_reference`, `evidence_sha256`, `report`.
Rows sharing a non-empty `report` value form one report with several identifiers (their other columns
must agree); a row without one is a report of its own. Any invalid row means nothing is imported; the
problems of every row come back together, so the file is fixed in one pass.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from node.errors import InvalidInput
from node.input_files import reading_text
from node.ledger.reports import DEFAULT_VALID_DAYS, AcceptedReport, PreparedReport, ReportIntake, ReportRequest

REQUIRED_COLUMNS = ("identifier_type", "identifier", "category", "confidence")
OPTIONAL_COLUMNS = ("valid_days", "valid_from", "case_reference", "evidence_sha256", "report")
MAX_FILE_BYTES = 512 * 1024 * 1024
# Data rows of one file. A file is stored in one transaction, which holds SQLite's write lock from its first insert to
# its commit, and is held in memory whole (about 2.5 KB a row): 600,000 rows kept API writes waiting past the 30 s
# busy timeout, so they failed, on a loaded machine; 300,000 made them wait 4 s on an idle one (8 s before the rows
# were inserted in report id order). Larger lists are imported as several files, each all or nothing.
MAX_ROWS = 200_000


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

    def __init__(self, problems: list[RowProblem], rows: int) -> None:
        super().__init__(f"{len(problems)} of {rows} rows are invalid; nothing was imported",
                         code="invalid_rows",
                         details=[{"line": p.line, "code": p.code, "reason": p.reason} for p in problems])
        self.problems = problems


@dataclass
class _Group:
    lines: list[int]
    request: ReportRequest


def import_reports(intake: ReportIntake, path: Path, *, submitted_by: str,
                   progress: Callable[[int], None] | None = None) -> ImportResult:
    """Validate every row of `path`, then store all its reports in one transaction (or raise ImportRefused)."""
    groups, problems, rows = _read_groups(path)
    prepared: list[PreparedReport] = []
    epoch_key = intake.current_key()
    for group in groups:
        try:
            prepared.append(intake.prepare(group.request, epoch_key=epoch_key))
        except InvalidInput as exc:
            problems.extend(RowProblem(line, exc.code, str(exc)) for line in group.lines)
        if progress is not None:
            progress(len(group.lines))
    if problems:
        raise ImportRefused(sorted(problems, key=lambda p: p.line), rows)
    accepted: list[AcceptedReport] = intake.store_prepared(prepared, submitted_by=submitted_by)
    return ImportResult(rows, len(accepted), sum(a.created for a in accepted))


def count_rows(path: Path) -> int:
    """Data rows in the file (for a progress bar's total)."""
    with _reading(path) as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


@contextmanager
def _reading(path: Path) -> Iterator[TextIO]:
    """The file opened as CSV text; whatever makes it unreadable is an `InvalidInput` naming the file."""
    with reading_text(path, "reports file", encoding="utf-8-sig", newline="") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"reports file {path} is larger than {MAX_FILE_BYTES // 2**20} MiB",
                               code="file_too_large")
        try:
            yield handle
        except csv.Error as exc:
            raise InvalidInput(f"reports file {path} is not valid CSV: {exc}", code="malformed_file") from None


def _read_groups(path: Path) -> tuple[list[_Group], list[RowProblem], int]:
    groups: dict[str, _Group] = {}
    singles: list[_Group] = []
    problems: list[RowProblem] = []
    rows = 0
    with _reading(path) as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{path} lacks the column(s) {', '.join(missing)}", code="malformed_file")
        # A row keeps one value per name: of two `identifier` columns the first would be dropped unread.
        # Positions, not names, in the message: a file without its header has data there.
        first_at: dict[str, int] = {}
        repeated = [str(i) for i, c in enumerate(reader.fieldnames or [], start=1) if first_at.setdefault(c, i) != i]
        if repeated:
            raise InvalidInput(f"{path} repeats a column name in its header (column {', '.join(repeated[:10])})",
                               code="malformed_file")
        for row in reader:
            rows += 1
            if rows > MAX_ROWS:  # before reading further: the rows read so far are held in memory
                raise InvalidInput(f"reports file {path} has more than {MAX_ROWS:,} data rows; split it into files of "
                                   f"at most {MAX_ROWS:,} (each is imported whole or not at all)", code="too_many_rows")
            line = reader.line_num
            if None in row:  # cells past the header's columns, dropped unread: the row's columns are shifted
                problems.append(RowProblem(line, "extra_cells", "the row has more cells than the header has columns"))
                continue
            try:
                request = _request_of(row)
            except InvalidInput as exc:
                problems.append(RowProblem(line, exc.code, str(exc)))
                continue
            key = (row.get("report") or "").strip()
            if not key:
                singles.append(_Group([line], request))
            elif key not in groups:
                groups[key] = _Group([line], request)
            else:
                _join(groups[key], request, line, problems)
    if rows == 0:
        raise InvalidInput(f"{path} has no data rows", code="empty_file")
    return [*groups.values(), *singles], problems, rows


def _join(group: _Group, request: ReportRequest, line: int, problems: list[RowProblem]) -> None:
    head = group.request
    if (request.category, request.confidence, request.valid_days, request.valid_from, request.case_reference,
            request.evidence_sha256) != (head.category, head.confidence, head.valid_days, head.valid_from,
                                         head.case_reference, head.evidence_sha256):
        problems.append(RowProblem(line, "inconsistent_report",
                                   "rows of one report must agree on every column but the identifier"))
        return
    group.lines.append(line)
    group.request = ReportRequest([*head.identifiers, *request.identifiers], head.category, head.confidence,
                                  head.valid_days, head.valid_from, head.evidence_sha256, head.case_reference)


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
