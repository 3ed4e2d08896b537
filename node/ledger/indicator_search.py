"""Listing the mirror's indicators with their derived state, filtered, a page at a time (docs/fraud-ledger.md,
"Searching indicators").

Filters on what records say (category, identifier type, reporter, publication time) and on what changed since a
block run in SQL on the mirror tables (`node.ledger.mirror.indicators_page`); filters on the derived state (`state`,
`min_confidence`) can only run after `derive_state`, on the facts of each candidate, exactly as the single-indicator
view derives it. So a page reads candidates in indicator byte order until it holds `limit` matches or has examined
`SCAN_BUDGET` candidates; the cursor is then the last indicator examined, and such a page may hold fewer than
`limit` (even none) while more follow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from node.errors import AllianceError, InvalidInput
from node.governance import find_member
from node.ledger.checks import ledger_address, state_policy
from node.ledger.identifiers import IdentifierType, ReasonCode
from node.ledger.indicator_state import IndicatorState, StatePolicy, derive_state
from node.ledger.mirror import MirrorStatus, RecordFilter, facts_for, indicators_page, mirror_status
from node.ledger.vocabulary import Category, identifier_type_code
from node.runtime import NodeContext

T = TypeVar("T")

DEFAULT_LIMIT = 100
# Candidates one page examines at most when a state filter needs their derived state (0.65 s here): a filter
# that matches little would otherwise derive the state of the whole mirror in one request.
SCAN_BUDGET = 10_000
# The store's widest integer: SQLite cannot bind a larger one (a time or block past it matches nothing anyway).
MAX_STORED_INT = 2**63 - 1


class IndicatorStatus(StrEnum):
    """One word per indicator for the `state` filter, from its derived state only; every indicator has exactly one."""

    revoked = "revoked"  # every record was revoked by its reporter
    disputed = "disputed"  # an unanswered dispute stands (hitting within the window, lapsed after it)
    active = "active"  # produces hits, no dispute stands
    expired = "expired"  # none of the above: each record not revoked is outside its validity


# A reaction without which no indicator can be in the state: the rules give `disputed` only from a dispute of the
# hash and `revoked` only from revocations of it. Selecting in SQL only indicators that have one spares deriving the
# state of the others (the derived state still decides); both states are rare, so such a search read a page of
# candidates for each few matches.
_REACTION_NEEDED = {IndicatorStatus.disputed: "disputed", IndicatorStatus.revoked: "revoked"}


def status_of(state: IndicatorState) -> IndicatorStatus:
    if state.revoked:
        return IndicatorStatus.revoked
    if state.disputed:
        return IndicatorStatus.disputed
    if state.active:
        return IndicatorStatus.active
    return IndicatorStatus.expired


@dataclass(frozen=True, slots=True)
class IndicatorSearch:
    records: RecordFilter = field(default_factory=RecordFilter)  # runs in SQL
    status: IndicatorStatus | None = None  # runs on the derived state
    min_confidence: int | None = None  # on the decayed confidence, 0..100

    @property
    def filters_state(self) -> bool:
        return self.status is not None or self.min_confidence is not None

    def admits(self, state: IndicatorState) -> bool:
        return ((self.status is None or status_of(state) == self.status)
                and (self.min_confidence is None or state.confidence >= self.min_confidence))


def search_filters(*, category: str | None = None, identifier_type: str | None = None,
                   reporter_member_id: int | None = None, reported_since: int | None = None,
                   reported_until: int | None = None, state: str | None = None, min_confidence: int | None = None,
                   changed_since_block: int | None = None) -> IndicatorSearch:
    """The search of these filters as an API query or the CLI gives them (names as in reports); InvalidInput with a
    code per problem. Messages never quote a value: a misplaced identifier may be one."""
    if reported_since is not None and reported_until is not None and reported_since >= reported_until:
        raise InvalidInput("reported_since must be before reported_until", code="invalid_time_range")
    if min_confidence is not None and not 0 <= min_confidence <= 100:
        raise InvalidInput("min_confidence must be 0..100", code="invalid_confidence")
    for name, number in (("reported_since", reported_since), ("reported_until", reported_until),
                         ("changed_since_block", changed_since_block)):
        if number is not None and not 0 <= number <= MAX_STORED_INT:
            raise InvalidInput(f"{name} must be 0..{MAX_STORED_INT}", code="invalid_range")
    status = _named(state, _STATUSES, "state", "invalid_state")
    records = RecordFilter(category=_named(category, _CATEGORIES, "category", "unknown_category"),
                           identifier_type=_named(identifier_type, _IDENTIFIER_TYPES, "identifier_type",
                                                  ReasonCode.UNKNOWN_TYPE.value),
                           reporter_member_id=reporter_member_id, published_since=reported_since,
                           published_until=reported_until, changed_since_block=changed_since_block,
                           reacted=_REACTION_NEEDED.get(status) if status is not None else None)
    return IndicatorSearch(records, status, min_confidence)


_CATEGORIES = {category.name: int(category) for category in Category}
_IDENTIFIER_TYPES = {kind.value: identifier_type_code(kind) for kind in IdentifierType}
_STATUSES = {status.value: status for status in IndicatorStatus}


def _named(name: str | None, choices: Mapping[str, T], filter_name: str, code: str) -> T | None:
    """The value `name` stands for among `choices` (any case), None for no filter; InvalidInput naming the choices."""
    if name is None:
        return None
    try:
        return choices[name.strip().lower()]
    except KeyError:
        raise InvalidInput(f"{filter_name} must be one of {', '.join(choices)}", code=code) from None


@dataclass(frozen=True, slots=True)
class SearchPage:
    states: list[IndicatorState]
    next_after: bytes | None  # cursor of the next page; None on the last
    evaluated_at: int
    mirror: MirrorStatus

    def statuses(self) -> list[str]:
        return [status_of(state).value for state in self.states]

    def to_json(self) -> dict[str, Any]:
        return {"indicators": [{**s.to_json(), "status": status} for s, status in zip(self.states, self.statuses(),
                                                                                      strict=True)],
                "next_after": "0x" + self.next_after.hex() if self.next_after is not None else None,
                "evaluated_at": self.evaluated_at, "as_of_block": self.mirror.as_of_block,
                "lag_s": self.mirror.lag_s, "stale": self.mirror.stale,
                # Where a later `changed_since_block` pull starts so as to miss nothing this one did not see: the
                # mirror status was read before the indicators, so a change indexed meanwhile comes again, not never.
                "next_changed_since_block": self.mirror.as_of_block + 1}


def search_page(session: Session, search: IndicatorSearch, *, at: int, policy: StatePolicy, mirror: MirrorStatus,
                after: bytes | None = None, limit: int = DEFAULT_LIMIT) -> SearchPage:
    """Up to `limit` indicators after `after` (byte order) that pass `search`, each with its state at `at`; `mirror`
    is the mirror's status, read by the caller before this (see `SearchPage.to_json`)."""
    states: list[IndicatorState] = []
    scanned, cursor = 0, after
    budget = max(limit, SCAN_BUDGET) if search.filters_state else limit
    while True:
        # Without a state filter every candidate matches: exactly the page is read. With one, at least a thousand
        # at a time, so that a selective filter needs few round trips.
        wanted = min(budget - scanned, limit - len(states) if not search.filters_state else max(limit, 1_000))
        candidates = indicators_page(session, after=cursor, limit=wanted, where=search.records)
        scanned += len(candidates)
        for indicator, state in zip(candidates, _states(session, candidates, at=at, policy=policy), strict=True):
            if search.admits(state):
                states.append(state)
                if len(states) == limit:
                    return SearchPage(states, indicator, at, mirror)
        if len(candidates) < wanted:  # the mirror holds no more
            return SearchPage(states, None, at, mirror)
        cursor = candidates[-1]
        if scanned >= budget:
            return SearchPage(states, cursor, at, mirror)


def _states(session: Session, indicators: Sequence[bytes], *, at: int, policy: StatePolicy) -> list[IndicatorState]:
    """The state of each indicator as `GET /v1/fraud/indicators/{hash}` derives it: every record and reaction of the
    hash."""
    facts = facts_for(session, indicators)
    return [derive_state(i, *facts.get(i, ([], [])), at=at, policy=policy) for i in indicators]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """The filters as an analyst gives them (API query, CLI options): names, a member reference, numbers."""

    category: str | None = None
    identifier_type: str | None = None
    reporter: str | None = None  # member id, signing address or bank code
    reported_since: int | None = None
    reported_until: int | None = None
    state: str | None = None
    min_confidence: int | None = None
    changed_since_block: int | None = None


def search_indicators(node: NodeContext, session: Session, request: SearchRequest, *, after: bytes | None = None,
                      limit: int = DEFAULT_LIMIT) -> SearchPage:
    """One page of the indicators `request` admits, with the mirror's status; invalid filters raise InvalidInput
    before anything is looked up. A reporter is resolved through the registry (a chain call), as other member
    references are."""
    search = search_filters(category=request.category, identifier_type=request.identifier_type,
                            reported_since=request.reported_since, reported_until=request.reported_until,
                            state=request.state, min_confidence=request.min_confidence,
                            changed_since_block=request.changed_since_block)
    if request.reporter is not None:
        search = replace(search, records=replace(search.records, reporter_member_id=_member_id(node, request.reporter)))
    mirror = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    return search_page(session, search, at=int(time.time()), policy=state_policy(node), mirror=mirror, after=after,
                       limit=limit)


def _member_id(node: NodeContext, reference: str) -> int:
    try:
        return find_member(node.registry(), reference).member_id
    except AllianceError as refused:  # its message quotes the reference, which may be an identifier typed there
        raise type(refused)("no single member has that id, signing address or bank code; give another reporter",
                            code=refused.code) from None
