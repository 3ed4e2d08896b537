"""Reading the query log: who checked which indicators when, and what hit (compliance and audit questions such
as "which keys checked this customer last quarter?").

Every check writes one `check_log` row in its own transaction (node.ledger.checks). The log holds indicators,
never raw identifiers; to find the checks of a customer, the identifier is hashed here under every key epoch this
node holds, as a check does. Entries come newest first, a page at a time (`before_id` continues).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer

from node.crypto.keyed_hash import indicator_hash
from node.errors import InvalidInput
from node.ledger.checks import keys_newest_first
from node.ledger.identifiers import InvalidIdentifier, normalise
from node.runtime import NodeContext
from node.store.bulk import in_list_slices
from node.store.ledger_tables import CheckLogEntry
from node.store.models import as_utc
from node.text import storable_text

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
# The store's widest integer: SQLite cannot even bind a larger one, so a larger `before_id` failed the query.
MAX_ENTRY_ID = 2**63 - 1
# Indicators a page with `include_indicators` lists at most (about 7 MB of JSON): `limit` counts entries, and a batch
# check's entry holds up to 10,000, so a page of 1,000 batch entries was a 700 MB body (14 s, 2.7 GB to build).
MAX_PAGE_INDICATORS = 100_000
# Indicators an entry checked, counted by the store from the quotation marks of its JSON list (hex digits hold none):
# reading and parsing the list to count it cost 650 MB for a page of 1,000 batch entries.
CHECKED = (func.length(CheckLogEntry.indicators)
           - func.length(func.replace(CheckLogEntry.indicators, '"', ""))) / 2


@dataclass(frozen=True, slots=True)
class CheckLogQuery:
    key_id: str | None = None
    indicators: Sequence[bytes] = ()  # entries that checked any of these
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    hits_only: bool = False
    before_id: int | None = None  # continue a listing: entries older than this one
    limit: int = DEFAULT_LIMIT
    include_indicators: bool = False  # every checked indicator (10,000 for a full batch), not only the hits


@dataclass(frozen=True, slots=True)
class CheckLogView:
    id: int
    key_id: str
    asked_at: datetime
    kind: str
    checked: int
    hits: list[str]
    as_of_block: int
    stale: bool
    indicators: list[str] | None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "key_id": self.key_id, "asked_at": self.asked_at.isoformat(),
                                "kind": self.kind, "checked": self.checked, "hits": self.hits,
                                "as_of_block": self.as_of_block, "stale": self.stale}
        if self.indicators is not None:
            body["indicators"] = self.indicators
        return body


@dataclass(frozen=True, slots=True)
class CheckLogPage:
    entries: list[CheckLogView]
    next_before_id: int | None  # `before_id` of the next (older) page; None on the last


def read_check_log(session: Session, query: CheckLogQuery) -> list[CheckLogView]:
    """One page of entries matching every filter given, newest first."""
    return read_check_log_page(session, query).entries


def read_check_log_page(session: Session, query: CheckLogQuery) -> CheckLogPage:
    """One page of entries matching every filter given, newest first, and where the next one starts. With
    `include_indicators` a page ends early, before MAX_PAGE_INDICATORS (but never empty while entries remain)."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1..{MAX_LIMIT}", code="invalid_limit")
    if query.before_id is not None and not 1 <= query.before_id <= MAX_ENTRY_ID:
        raise InvalidInput(f"before_id must be 1..{MAX_ENTRY_ID}", code="invalid_before_id")
    # Both in UTC before they are compared: a naive time and one with a zone cannot be compared as they come.
    since = _bound_in_utc(query.since, "since")
    until = _bound_in_utc(query.until, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since must be before until", code="invalid_time_range")
    statement = (select(CheckLogEntry, CHECKED).options(defer(CheckLogEntry.indicators))
                 .order_by(CheckLogEntry.id.desc()).limit(query.limit))
    if query.key_id is not None:  # as a store can compare it: not a command line's undecodable bytes
        statement = statement.where(CheckLogEntry.key_id == storable_text(query.key_id, field="key_id"))
    if since is not None:
        statement = statement.where(CheckLogEntry.asked_at >= since)
    if until is not None:
        statement = statement.where(CheckLogEntry.asked_at < until)
    if query.before_id is not None:
        statement = statement.where(CheckLogEntry.id < query.before_id)
    if query.hits_only:
        statement = statement.where(CheckLogEntry.hits != "[]")
    if query.indicators:
        # A substring of the JSON list: hex digits need no LIKE escaping, and 64 of them match one indicator only.
        # It reads every row in range, so bound a search of a large log by time.
        statement = statement.where(or_(*(CheckLogEntry.indicators.contains(i.hex()) for i in query.indicators)))
    rows = [(entry, int(checked)) for entry, checked in session.execute(statement)]
    full = len(rows) == query.limit
    listed: dict[int, list[str]] | None = None
    if query.include_indicators:
        kept = _within_indicator_budget([checked for _, checked in rows])
        full, rows = full or kept < len(rows), rows[:kept]
        listed = _indicators_of(session, [entry.id for entry, _ in rows])
    entries = [_view(entry, checked, None if listed is None else listed[entry.id]) for entry, checked in rows]
    return CheckLogPage(entries, entries[-1].id if full and entries else None)


def _within_indicator_budget(counts: list[int]) -> int:
    """How many of the entries, newest first, a page with their indicators takes: at least one."""
    total = 0
    for taken, count in enumerate(counts):
        total += count
        if total > MAX_PAGE_INDICATORS and taken > 0:
            return taken
    return len(counts)


def _indicators_of(session: Session, ids: list[int]) -> dict[int, list[str]]:
    return {entry_id: json.loads(indicators) for chunk in in_list_slices(ids)
            for entry_id, indicators in session.execute(select(CheckLogEntry.id, CheckLogEntry.indicators)
                                                        .where(CheckLogEntry.id.in_(chunk)))}


def identifier_indicators(node: NodeContext, session: Session, identifier_type: str, raw: str) -> list[bytes]:
    """The indicators of a customer identifier under every key epoch this node holds, for searching the log."""
    try:
        canonical = normalise(identifier_type, raw)
    except InvalidIdentifier as exc:
        raise InvalidInput(f"identifier: {exc}", code=str(exc.code)) from None
    return [indicator_hash(key, identifier_type, canonical) for key in keys_newest_first(node, session)]


def _view(entry: CheckLogEntry, checked: int, indicators: list[str] | None) -> CheckLogView:
    return CheckLogView(entry.id, entry.key_id, _in_utc(entry.asked_at), entry.kind, checked,
                        ["0x" + h for h in json.loads(entry.hits)], entry.as_of_block, entry.stale,
                        None if indicators is None else ["0x" + h for h in indicators])


def parse_moment(text: str, name: str) -> datetime:
    """A bound of a log query as written (ISO 8601, basic or extended: 2026-12-01, 20261201, 2026-12-01T09:30+08:00);
    InvalidInput otherwise. The API and the CLI read it alike: the API took a number as Unix seconds, so
    since=20261201 (1 December 2026 to the CLI) meant 23 August 1970 and listed the whole log."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name} is a date or time in ISO 8601, e.g. 2026-12-01 or 2026-12-01T09:30:00+08:00",
                           code="invalid_time") from None


def _bound_in_utc(moment: datetime | None, name: str) -> datetime | None:
    if moment is None:
        return None
    try:
        return _in_utc(moment)
    except OverflowError:  # 9999-12-31T23:59:59-01:00, say: UTC has no such time
        raise InvalidInput(f"{name} {moment.isoformat()} is outside the times this node can compare",
                           code="invalid_time") from None


def _in_utc(moment: datetime) -> datetime:
    # A naive time is UTC, as the store writes (as_utc); another zone is converted: SQLite compares the stored UTC
    # times as text, and PostgreSQL answers in its session's zone.
    return as_utc(moment).astimezone(UTC)
