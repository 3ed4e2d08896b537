"""The state of one indicator, derived from its records and reactions on the chain.

The contract stores no per-indicator state: every node derives it from the same events with this
module, so it must give byte-identical results on every platform. All arithmetic is therefore on
integers: confidence decay is a fixed-point power of two built from exact integer square roots, never
`float ** float` (libm differs between platforms, and one unit of difference would change a digest).
The rules are documented in docs/fraud-ledger.md; in short:

- a record applies while ``valid_from <= at < valid_until``, unless its reporter revoked it, or a dispute
  against it stayed unanswered for `dispute_window_days` (it *lapses*; answering revives it);
- a dispute is answered for a reporter when that reporter confirms or revokes the indicator after it;
- an endorsement or dispute by a member that itself reports the indicator (has a record of it not revoked by
  then) is void: the contract cannot refuse it, so every node ignores it alike;
- confidence is the noisy-OR of the applying reporters' and the endorsers' confidences, each halved
  every `half_life_days` of age.

This module is pure (no database): it accepts any objects with the attributes of `RecordFact` and
`ReactionFact`, so ORM rows and named tuples from the mirror work alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import isqrt
from typing import Any, Literal, Protocol

from node.ledger.vocabulary import Category

SECONDS_PER_DAY = 86_400
ReactionKind = Literal["endorsed", "disputed", "confirmed", "revoked"]

# Fixed point with 64 fractional bits. _HALVING_ROOTS[i] = floor(2^-(2^-i) * 2^64) for i = 1..64, each
# the integer square root of the one before, so the table is exact integer arithmetic on every machine.
_FRACTION_BITS = 64
_ONE = 1 << _FRACTION_BITS


def _halving_roots() -> tuple[int, ...]:
    roots = [_ONE >> 1]  # 2^-(2^0), only the seed
    for _ in range(_FRACTION_BITS):
        roots.append(isqrt(roots[-1] << _FRACTION_BITS))
    return tuple(roots[1:])


_HALVING_ROOTS = _halving_roots()


@dataclass(frozen=True, slots=True)
class StatePolicy:
    half_life_days: float = 365.0
    dispute_window_days: int = 30

    @property
    def half_life_s(self) -> int:
        return max(1, round(self.half_life_days * SECONDS_PER_DAY))

    @property
    def dispute_window_s(self) -> int:
        return self.dispute_window_days * SECONDS_PER_DAY


class _RecordLike(Protocol):
    @property
    def batch_id(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def indicator(self) -> bytes: ...
    @property
    def identifier_type(self) -> int: ...
    @property
    def category(self) -> int: ...
    @property
    def confidence(self) -> int: ...
    @property
    def valid_from(self) -> int: ...
    @property
    def valid_until(self) -> int: ...
    @property
    def reporter_member_id(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def published_at(self) -> int: ...
    @property
    def block_number(self) -> int: ...


class _ReactionLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def indicator(self) -> bytes: ...
    @property
    def member_id(self) -> int: ...
    @property
    def batch_id(self) -> int | None: ...
    @property
    def value(self) -> int: ...
    @property
    def at(self) -> int: ...
    @property
    def block_number(self) -> int: ...
    @property
    def log_index(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RecordFact:
    """One well-formed published record (a row of mirror_records)."""

    batch_id: int
    position: int
    indicator: bytes
    identifier_type: int
    category: int
    confidence: int
    valid_from: int
    valid_until: int
    reporter_member_id: int
    epoch: int
    published_at: int
    block_number: int

    @classmethod
    def of(cls, row: _RecordLike) -> RecordFact:
        return cls(row.batch_id, row.position, bytes(row.indicator), row.identifier_type, row.category,
                   row.confidence, row.valid_from, row.valid_until, row.reporter_member_id, row.epoch,
                   row.published_at, row.block_number)


@dataclass(frozen=True, slots=True)
class ReactionFact:
    """One endorsement, dispute, confirmation or revocation (a row of mirror_reactions).

    `value` is the endorser's confidence, or the reason code of a dispute or revocation.
    """

    kind: ReactionKind
    indicator: bytes
    member_id: int
    batch_id: int | None
    value: int
    at: int
    block_number: int
    log_index: int

    @classmethod
    def of(cls, row: _ReactionLike) -> ReactionFact:
        kind: Any = row.kind
        return cls(kind, bytes(row.indicator), row.member_id, row.batch_id, row.value, row.at,
                   row.block_number, row.log_index)


@dataclass(frozen=True, slots=True)
class IndicatorState:
    indicator: bytes
    identifier_type: int | None  # on-chain code, of the first record in chain order
    active: bool  # produces hits at the evaluation time
    categories: tuple[str, ...]  # of the records that apply, sorted
    reporters: tuple[int, ...]  # members whose records apply, sorted
    reporter_count: int
    endorsers: tuple[int, ...]  # members whose endorsement is in force (not their own indicator's), sorted
    confidence: int  # 0..100, decayed noisy-OR; 0 when not active
    disputed: bool  # an unanswered dispute stands against a record that is not revoked
    revoked: bool  # every record was revoked by its reporter
    first_reported: int | None  # block time of the first record
    last_reported: int | None
    valid_from: int | None  # earliest valid_from of any record
    valid_until: int | None  # latest valid_until of any record

    def to_json(self) -> dict[str, Any]:
        return {
            "indicator": "0x" + self.indicator.hex(),
            "identifier_type": self.identifier_type,
            "active": self.active,
            "categories": list(self.categories),
            "reporters": list(self.reporters),
            "reporter_count": self.reporter_count,
            "endorsers": list(self.endorsers),
            "confidence": self.confidence,
            "disputed": self.disputed,
            "revoked": self.revoked,
            "first_reported": self.first_reported,
            "last_reported": self.last_reported,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
        }

    def canonical(self) -> bytes:
        """Deterministic bytes for digests: sorted-key compact JSON of ints, bools, strings and nulls only."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def decay_factor(age_s: int, half_life_s: int) -> int:
    """2^(-age_s / half_life_s) as a 64-bit fixed-point integer (2^64 is 1.0), rounded down at each step.

    The fraction's binary digits select exact square roots of 1/2 from a table, so the result depends on
    integer arithmetic only.
    """
    if age_s <= 0:
        return _ONE
    whole, remainder = divmod(age_s, half_life_s)
    if whole >= _FRACTION_BITS:
        return 0
    factor = _ONE >> whole
    for root in _HALVING_ROOTS:
        if not remainder:
            break
        remainder <<= 1
        if remainder >= half_life_s:
            remainder -= half_life_s
            factor = (factor * root) >> _FRACTION_BITS
    return factor


def combine_confidences(decayed: Iterable[int]) -> int:
    """Noisy-OR of fixed-point confidences (percent times 2^64), rounded down to a whole percent.

    The chance that every source is wrong is kept in the same unit (100% is 100 * 2^64), so exact
    inputs such as 40% stay exact instead of losing a unit to truncation.
    """
    certain = 100 * _ONE
    miss = certain
    for value in decayed:
        miss = miss * (certain - min(value, certain)) // certain
    return 100 * (certain - miss) // certain


def decayed_confidence(confidence: int, age_s: int, policy: StatePolicy) -> int:
    """Fixed-point `confidence` (percent) after `age_s` seconds; divide by 2^64 for percent."""
    return max(0, min(confidence, 100)) * decay_factor(age_s, policy.half_life_s)


# Sources of an indicator's confidence: each one's (confidence, decaying since) candidates, of which the best counts
# (a reporter's records; an endorsement is a source of one).
ConfidenceSources = list[list[tuple[int, int]]]


def derive_state(indicator: bytes, records: Sequence[_RecordLike], reactions: Sequence[_ReactionLike], *,
                 at: int, policy: StatePolicy) -> IndicatorState:
    """The state of `indicator` at Unix time `at`, from every record and reaction up to the evaluation block.

    `records` and `reactions` may also carry other indicators of the same identifier (one per key epoch), as a
    check passes them; the result is then the identifier's combined state, reported under `indicator`. A
    revocation applies to its own record only. A dispute applies to the identifier's records under every
    epoch, and a reporter answers it by confirming or revoking any of them: a member disputing a republished
    report sees only the newest hash, and the old-epoch copies of that report would otherwise keep hitting. It
    also applies to the copies of a disputed record that its reporter republished later under a newer epoch.
    Whether an endorsement or dispute is void (its member reports the indicator itself) is judged against that
    member's records of the reaction's own indicator, so a check's combined state and each indicator's own state
    (the digest's) agree on it.
    """
    return _derive(indicator, records, reactions, at=at, policy=policy)[0]


def derive_state_and_sources(indicator: bytes, records: Sequence[_RecordLike], reactions: Sequence[_ReactionLike],
                             *, at: int, policy: StatePolicy) -> tuple[IndicatorState, ConfidenceSources]:
    """`derive_state`, and the sources of its confidence for `confidence_settled_since`."""
    return _derive(indicator, records, reactions, at=at, policy=policy)


def confidence_settled_since(sources: ConfidenceSources, confidence: int, *, since: int, at: int,
                             policy: StatePolicy) -> int:
    """The earliest time in `since..at` from which the confidence of `sources` is `confidence`, its value at `at`.

    Only for a span in which nothing but age changes the state (no record, reaction, validity bound or lapse after
    `since`): the applying records and endorsements are then those of `at`, and each decays with age, so the
    confidence only falls and a search over whole seconds finds when it reached its value at `at`.
    """
    if not sources or since >= at or _confidence(sources, since, policy) == confidence:
        return min(since, at)

    def settled(t: int) -> bool:
        return _confidence(sources, t, policy) == confidence

    low, high = since, at  # not settled(low), settled(high)
    # The real-valued curve says within a second or so where the integer one falls to its value: galloping out from
    # there settles most searches in a few exact evaluations (each a fixed-point decay per source) instead of ~27.
    start = min(max(_estimated_fall(sources, confidence, since, at, policy), low + 1), high)
    step = 1
    if settled(start):
        high = start
        while high - step > low and settled(high - step):
            high, step = high - step, step * 2
        low = max(low, high - step)
    else:
        low = start
        while low + step < high and not settled(low + step):
            low, step = low + step, step * 2
        high = min(high, low + step)
    while high - low > 1:
        middle = (low + high) // 2
        if settled(middle):
            high = middle
        else:
            low = middle
    return high


def _estimated_fall(sources: ConfidenceSources, confidence: int, since: int, at: int, policy: StatePolicy) -> int:
    """About when (the second after) the real-valued noisy-OR of `sources` falls below `confidence` + 1, between
    `since` and `at`; a guess only, to be checked with exact arithmetic."""
    half_life = policy.half_life_s
    # Every candidate of a source decays at the same rate, so the best one at `since` stays the best: one weight each.
    weights = [max(min(max(c, 0), 100) / 100 * 2.0 ** (-(since - start) / half_life) for c, start in source)
               for source in sources]

    def real_confidence(t: float) -> float:
        factor = 2.0 ** (-(t - since) / half_life)
        miss = 1.0
        for weight in weights:
            miss *= 1.0 - weight * factor
        return 100.0 * (1.0 - miss)

    threshold = confidence + 1
    if len(weights) == 1:
        if weights[0] <= 0 or threshold <= 0:
            return at
        return since + math.ceil(half_life * math.log2(100.0 * weights[0] / threshold))
    low, high = float(since), float(at)
    while high - low > 0.01:
        middle = (low + high) / 2
        if real_confidence(middle) >= threshold:
            low = middle
        else:
            high = middle
    return math.ceil(high)


def _confidence(sources: ConfidenceSources, at: int, policy: StatePolicy) -> int:
    # Plain loops: this runs for every identifier a check hits (bench/checks.py).
    decayed = []
    for source in sources:
        best = 0
        for confidence, since in source:
            value = decayed_confidence(confidence, at - since, policy)
            if value > best:
                best = value
        decayed.append(best)
    return combine_confidences(decayed)


def _derive(indicator: bytes, records: Sequence[_RecordLike], reactions: Sequence[_ReactionLike], *,
            at: int, policy: StatePolicy) -> tuple[IndicatorState, ConfidenceSources]:
    ordered = sorted(records, key=lambda r: (r.block_number, r.batch_id, r.position))
    chain_reactions = _in_force(sorted(reactions, key=lambda e: (e.block_number, e.log_index)), ordered)
    revoked_records = {(e.batch_id, bytes(e.indicator), e.member_id)
                       for e in chain_reactions if e.kind == "revoked"}
    reporter_records: dict[int, set[tuple[int, bytes]]] = {}
    for record in ordered:
        reporter_records.setdefault(record.reporter_member_id, set()).add((record.batch_id, bytes(record.indicator)))

    def is_revoked(record: _RecordLike) -> bool:
        return (record.batch_id, bytes(record.indicator), record.reporter_member_id) in revoked_records

    def answered(dispute: _ReactionLike, reporter: int) -> bool:
        own_records = reporter_records.get(reporter, set())
        return any(e.kind in ("confirmed", "revoked") and e.member_id == reporter
                   and (e.batch_id, bytes(e.indicator)) in own_records
                   and (e.block_number, e.log_index) > (dispute.block_number, dispute.log_index)
                   for e in chain_reactions)

    disputes = [e for e in chain_reactions if e.kind == "disputed"]
    reach = _dispute_reach(ordered)
    disputed = False
    applying: list[_RecordLike] = []
    for record in ordered:
        if is_revoked(record):
            continue
        lapsed = False
        for dispute in disputes:
            if (dispute.member_id == record.reporter_member_id
                    or dispute.block_number < reach[id(record)]
                    or answered(dispute, record.reporter_member_id)):
                continue
            disputed = True
            if at - dispute.at >= policy.dispute_window_s:
                lapsed = True
        if not lapsed and record.valid_from <= at < record.valid_until:
            applying.append(record)

    reporters = sorted({r.reporter_member_id for r in applying})
    latest_endorsement: dict[int, _ReactionLike] = {}
    for event in chain_reactions:
        if event.kind == "endorsed":
            latest_endorsement[event.member_id] = event

    active = bool(applying)
    sources: ConfidenceSources = []
    if active:
        by_reporter: dict[int, list[tuple[int, int]]] = {}
        for record in applying:
            by_reporter.setdefault(record.reporter_member_id, []).append((record.confidence, record.valid_from))
        # An endorsement made before its member reported the indicator too (still in force, see `_in_force`) would
        # count that member's evidence twice in the noisy-OR while its record applies.
        sources = [*by_reporter.values(),
                   *([(e.value, e.at)] for member, e in latest_endorsement.items() if member not in by_reporter)]
    confidence = _confidence(sources, at, policy) if active else 0

    state = IndicatorState(
        indicator=bytes(indicator),
        identifier_type=ordered[0].identifier_type if ordered else None,
        active=active,
        categories=tuple(sorted({_category_name(r.category) for r in applying})),
        reporters=tuple(reporters),
        reporter_count=len(reporters),
        endorsers=tuple(sorted(latest_endorsement)),
        confidence=confidence,
        disputed=disputed,
        revoked=bool(ordered) and all(is_revoked(r) for r in ordered),
        first_reported=min((r.published_at for r in ordered), default=None),
        last_reported=max((r.published_at for r in ordered), default=None),
        valid_from=min((r.valid_from for r in ordered), default=None),
        valid_until=max((r.valid_until for r in ordered), default=None),
    )
    return state, sources


def _in_force(chain_reactions: Sequence[_ReactionLike], ordered: Sequence[_RecordLike]) -> list[_ReactionLike]:
    """`chain_reactions` (in chain order) less the void ones: an endorsement or dispute by a member that reports the
    indicator itself at that point, i.e. has a record of that indicator published in the reaction's block or earlier
    and not revoked before the reaction.

    The contract cannot refuse them (the records are calldata under a batch root), nodes refuse to send them, and
    another implementation may still: ignored as if never sent, they neither list an endorser, nor replace the
    member's earlier endorsement, nor dispute anything. Judged when each was sent, so an endorsement made before its
    member reported the indicator stays in force, and one made after the member revoked its record is in force."""
    if not any(e.kind in ("endorsed", "disputed") for e in chain_reactions):  # most indicators: a check's fast path
        return list(chain_reactions)
    first_revoked: dict[tuple[int | None, bytes, int], tuple[int, int]] = {}
    for event in chain_reactions:
        if event.kind == "revoked":
            first_revoked.setdefault((event.batch_id, bytes(event.indicator), event.member_id),
                                     (event.block_number, event.log_index))
    # Per (reporter, indicator): each record's block and when its reporter revoked it (None: never).
    own_records: dict[tuple[int, bytes], list[tuple[int, tuple[int, int] | None]]] = {}
    for record in ordered:
        indicator = bytes(record.indicator)
        own_records.setdefault((record.reporter_member_id, indicator), []).append(
            (record.block_number, first_revoked.get((record.batch_id, indicator, record.reporter_member_id))))

    def reported_by_itself(event: _ReactionLike) -> bool:
        # A record of the reaction's own block counts as earlier: records carry no log index, and the mirror
        # only holds whole blocks.
        position = (event.block_number, event.log_index)
        return any(block <= event.block_number and (revoked is None or revoked > position)
                   for block, revoked in own_records.get((event.member_id, bytes(event.indicator)), ()))

    return [e for e in chain_reactions if e.kind not in ("endorsed", "disputed") or not reported_by_itself(e)]


def _dispute_reach(ordered: Sequence[_RecordLike]) -> dict[int, int]:
    """By `id()` of each record (in block order), the block from which on a dispute applies to it: its own, or that
    of the first copy of its report under an older epoch.

    `alliance ledger republish` copies every field of a record but the indicator under a newer epoch, after any
    dispute of the report: counted from its own block, the copy escaped the dispute, and a report that stopped
    hitting when the dispute went unanswered hit again once republished."""
    first: dict[tuple[int, ...], _RecordLike] = {}
    reach: dict[int, int] = {}
    for record in ordered:
        report = (record.reporter_member_id, record.identifier_type, record.category, record.confidence,
                  record.valid_from, record.valid_until)
        original = first.setdefault(report, record)
        reach[id(record)] = original.block_number if original.epoch < record.epoch else record.block_number
    return reach


def _category_name(code: int) -> str:
    try:
        return Category(code).name
    except ValueError:  # the indexer drops such records; named anyway rather than failing a digest
        return f"category_{code}"
