"""Quantitative marketing: pre-screen a prospect list before a campaign.

Input: a CSV with a header; identifier columns are named by identifier type (`phone`, `cn_resident_id`,
`bank_card`, `email`, `device_id`, `ip`, `uscc`), an optional `segment` column groups the counts, any other
column is carried through untouched. A row is dropped when an identifier in it is invalid, when it repeats a
prospect already kept (any identifier seen before), or when any identifier hits the alliance's ledger (one
batch check per 10,000 identifiers, logged in the query log as `marketing`). Output: the kept rows with
identifiers in canonical form, and counts per segment. A row whose `segment` cell holds a customer identifier (a
row missing a cell, its columns shifted) is dropped as invalid (`segment:holds_identifier`) and counted under `all`:
segment names are shown in the counts, and the identifier with them.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from node.errors import InvalidInput
from node.extensions.hookspecs import hookimpl
from node.ledger.checks import MAX_BATCH, check_batch
from node.ledger.identifiers import IdentifierType, InvalidIdentifier, normalise

NAME = "marketing"
IDENTIFIER_COLUMNS = tuple(t.value for t in IdentifierType)
MAX_ROWS = 1_000_000
MAX_LINE_CHARS = 1_048_576  # a prospect's row is a few hundred characters; the CSV reader's field limit is 131,072
DEFAULT_SEGMENT = "all"


@dataclass
class SegmentCounts:
    input: int = 0
    invalid: int = 0
    duplicate: int = 0
    blacklisted: int = 0
    kept: int = 0


@dataclass
class PrescreenResult:
    columns: list[str]
    kept_rows: list[dict[str, str]]
    segments: dict[str, SegmentCounts] = field(default_factory=dict)
    invalid_reasons: dict[str, int] = field(default_factory=dict)  # "type:code" -> rows

    def totals(self) -> SegmentCounts:
        total = SegmentCounts()
        for counts in self.segments.values():
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(counts, name))
        return total

    def clean_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.kept_rows)
        return out.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {"totals": vars(self.totals()), "segments": {k: vars(v) for k, v in sorted(self.segments.items())},
                "invalid_reasons": dict(sorted(self.invalid_reasons.items()))}


@hookimpl
def alliance_api_routers() -> list[Any]:
    from node.api.routes.marketing import router

    return [router]


def prescreen(node: Any, lines: Iterable[str], *, key_id: str = "marketing") -> PrescreenResult:
    """`lines`: the CSV as a file opened with newline="" gives them (a quoted field may hold a line break)."""
    reader = csv.DictReader(_bounded_lines(lines))
    try:
        return _prescreen(node, reader, key_id)
    except csv.Error as exc:  # its message names the problem (a field over the size limit, ...), not the data
        raise InvalidInput(f"line {reader.line_num} of the prospect list is not valid CSV: {exc}",
                           code="malformed_csv") from None


def _prescreen(node: Any, reader: csv.DictReader[str], key_id: str) -> PrescreenResult:
    columns = [c.strip() for c in (reader.fieldnames or [])]
    id_columns = [c for c in columns if c in IDENTIFIER_COLUMNS]
    if not id_columns:
        raise InvalidInput(f"the prospect list needs at least one identifier column ({', '.join(IDENTIFIER_COLUMNS)})",
                           code="no_identifier_columns")
    # A row keeps one value per name: of two `phone` columns the first would go unchecked and be overwritten
    # in the clean list. Positions, not names, in the message: a list without its header has data there.
    first_at: dict[str, int] = {}
    repeated = [str(i) for i, c in enumerate(columns, start=1) if first_at.setdefault(c, i) != i]
    if repeated:
        raise InvalidInput(f"the header repeats a column name (column {', '.join(repeated[:10])})",
                           code="duplicate_columns")
    result = PrescreenResult(columns, [])
    candidates: list[tuple[str, dict[str, str], list[tuple[str, str]]]] = []
    seen: set[tuple[str, str]] = set()
    for number, row in enumerate(reader, start=1):
        if number > MAX_ROWS:
            raise InvalidInput(f"at most {MAX_ROWS} prospects per list", code="too_many_rows")
        cells = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        segment = cells.get("segment") or DEFAULT_SEGMENT
        if _holds_identifier(segment):
            counts = result.segments.setdefault(DEFAULT_SEGMENT, SegmentCounts())
            counts.input += 1
            counts.invalid += 1
            result.invalid_reasons["segment:holds_identifier"] = (
                result.invalid_reasons.get("segment:holds_identifier", 0) + 1)
            continue
        counts = result.segments.setdefault(segment, SegmentCounts())
        counts.input += 1
        canonical = _canonical(cells, id_columns, result)
        if not canonical:
            if canonical is not None:  # a row without any identifier
                result.invalid_reasons["row:no_identifier"] = result.invalid_reasons.get("row:no_identifier", 0) + 1
            counts.invalid += 1
            continue
        if any(pair in seen for pair in canonical):
            counts.duplicate += 1
            continue
        seen.update(canonical)
        candidates.append((segment, {**cells, **dict(canonical)}, canonical))
    listed = _blacklisted(node, [pair for _, _, pairs in candidates for pair in pairs], key_id)
    for segment, cells, pairs in candidates:
        if any(pair in listed for pair in pairs):
            result.segments[segment].blacklisted += 1
            continue
        result.segments[segment].kept += 1
        result.kept_rows.append({c: cells.get(c, "") for c in columns})
    return result


def _bounded_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines of `lines`, each refused (InvalidInput) past MAX_LINE_CHARS. Iterating a file reads a line whole,
    however long: a file with no line break (/dev/zero, a zip passed by mistake) was read into memory until the node
    had none left, before the CSV reader could refuse its field as too large."""
    readline = getattr(lines, "readline", None)
    if readline is None:
        yield from lines
        return
    number = 0
    while line := readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise InvalidInput(f"line {number} of the prospect list is longer than {MAX_LINE_CHARS:,} characters",
                               code="malformed_csv")
        yield line


@lru_cache(maxsize=4096)  # a list has a few segments, repeated on every row
def _holds_identifier(segment: str) -> bool:
    """Whether a segment cell is a customer identifier: segment names are printed (the CLI's table and --json, the
    API's answer), and a row that lost a cell has its phone or resident ID there. A device ID counts in UUID form
    only: any 8 to 128 of a-z, 0-9 and _ - : . is one, as a segment name such as "young_adults" is."""
    for kind in IdentifierType:
        try:
            canonical = normalise(kind, segment)
        except InvalidIdentifier:
            continue
        if kind != IdentifierType.DEVICE_ID or _is_uuid(canonical):
            return True
    return False


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _canonical(cells: dict[str, str], id_columns: list[str], result: PrescreenResult) -> list[tuple[str, str]] | None:
    pairs = []
    for column in id_columns:
        if not cells.get(column):
            continue
        try:
            pairs.append((column, normalise(column, cells[column])))
        except InvalidIdentifier as exc:
            reason = f"{column}:{exc.code}"
            result.invalid_reasons[reason] = result.invalid_reasons.get(reason, 0) + 1
            return None
    return pairs


def _blacklisted(node: Any, pairs: list[tuple[str, str]], key_id: str) -> set[tuple[str, str]]:
    listed: set[tuple[str, str]] = set()
    for start in range(0, len(pairs), MAX_BATCH):
        chunk = pairs[start:start + MAX_BATCH]
        outcome = check_batch(node, chunk, key_id)
        listed.update(chunk[r.item] for r in outcome.results if r.hit)
    return listed
