"""Export of the mirror's indicators as a STIX 2.1 bundle, for a bank's threat-intelligence platform.

Mapping (docs/fraud-ledger.md): one `indicator` per indicator hash with its derived state, one `identity`
per reporting member. Ids are uuid5 of the indicator hash (and incarnation) or member id, and times are
block times, so two exports of the same mirror describe the same objects identically (platforms such as
OpenCTI and MISP update an object when they see its id again instead of duplicating it).

The hash is a keyed HMAC, not a hash of any standard observable, so the pattern uses a custom object
type, `[x-alliance-indicator:hash = '<64 hex>']` (pattern_type "stix"): valid STIX patterning, which a
platform stores and displays as is but cannot resolve to a phone number or account. That is the point:
only a member holding the alliance key can match its own customers' identifiers against it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.ledger.indicator_state import (
    ConfidenceSources,
    IndicatorState,
    ReactionFact,
    RecordFact,
    StatePolicy,
    confidence_settled_since,
    derive_state_and_sources,
)
from node.ledger.mirror import RecordFilter, block_time_before, facts_for, indicators_page
from node.ledger.vocabulary import identifier_type_of
from node.store.ledger_tables import MirrorBatch

# Fixed forever: changing it would give every exported object a new id in the importing platforms.
STIX_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:alliance-node:stix")
SPEC_VERSION = "2.1"
DEFAULT_PAGE = 10_000
MAX_PAGE = 50_000
# 9999-12-31T23:59:59Z, the last second STIX timestamps (four-digit years) can express. Records carry uint40 times
# (up to the year 36812), and the indexer accepts any of them as long as a record is valid for at most six years.
LAST_STIX_TIME = 253_402_300_799


def stix_timestamp(unix_seconds: int) -> str:
    """RFC 3339 in UTC with millisecond precision and a Z, as STIX 2.1 requires for created/modified."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def indicator_id(indicator: bytes, incarnation: int = 0) -> str:
    """The STIX id of an indicator's `incarnation` (see `incarnation_starts`); the first keeps the plain name."""
    name = f"indicator:{indicator.hex()}" + (f":{incarnation}" if incarnation else "")
    return f"indicator--{uuid.uuid5(STIX_NAMESPACE, name)}"


def incarnation_starts(records: Sequence[RecordFact], reactions: Sequence[ReactionFact]) -> list[int]:
    """The first block of each incarnation of the indicator, oldest first ([0] without records).

    STIX makes `revoked` final for an object id, but an indicator whose every record was revoked can be reported
    again. So an indicator that was fully revoked at the end of some block, and gets a record in a later block,
    starts a new incarnation, exported as a new object with its own id; the revoked one stays revoked in the
    platforms that imported it. Judged at block ends because the mirror (and so any export) only ever holds
    whole blocks: a revocation and a new report in the same block never showed the indicator revoked.
    """
    revocations: dict[int, set[tuple[int, int]]] = {}
    for event in reactions:
        if event.kind == "revoked" and event.batch_id is not None:
            revocations.setdefault(event.block_number, set()).add((event.batch_id, event.member_id))
    published: dict[int, list[RecordFact]] = {}
    for record in records:
        published.setdefault(record.block_number, []).append(record)
    starts = [min(published, default=0)]
    # (batch, reporter) of the records not revoked yet. A revocation never precedes its record: the indexer keeps
    # one only if its batch holds the indicator, and within a block the records are added first.
    outstanding: set[tuple[int, int]] = set()
    seen_any = False
    for block in sorted(published.keys() | revocations.keys()):
        new = published.get(block, [])
        if new and seen_any and not outstanding:
            starts.append(block)
        seen_any = seen_any or bool(new)
        outstanding.update((record.batch_id, record.reporter_member_id) for record in new)
        outstanding.difference_update(revocations.get(block, ()))
    return starts


def identity_id(member_id: int) -> str:
    return f"identity--{uuid.uuid5(STIX_NAMESPACE, f'member:{member_id}')}"


def identity_object(member_id: int, first_seen: int) -> dict[str, Any]:
    return {"type": "identity", "spec_version": SPEC_VERSION, "id": identity_id(member_id),
            "created": stix_timestamp(first_seen), "modified": stix_timestamp(first_seen),
            "name": f"Alliance member {member_id}", "identity_class": "organization",
            "x_alliance_member_id": member_id}


def indicator_object(state: IndicatorState, sources: ConfidenceSources, records: Sequence[RecordFact],
                     reactions: Sequence[ReactionFact], incarnation: int = 0, *, at: int, policy: StatePolicy
                     ) -> dict[str, Any]:
    """The STIX indicator of one derived state at `at` (of the records of one incarnation; `sources` of its
    confidence, as `derive_state_and_sources` gives them); `records` must not be empty."""
    first = min(records, key=lambda r: (r.block_number, r.batch_id, r.position))
    reporters = sorted({r.reporter_member_id for r in records})
    created = min(r.published_at for r in records)
    changed = max([created, *(r.published_at for r in records), *(e.at for e in reactions),
                   _last_change_without_event(records, reactions, at=at, policy=policy)])
    # Confidence falls with age alone: `modified` moves to when it last fell a whole point, or an importer keeping one
    # version per (id, modified) would keep the confidence of the last event for good. A block may be timed after `at`
    # (its proposer's clock ahead of this node's): the object holds its events all the same, and STIX requires
    # `modified` >= `created`, so `modified` is never before the last of them (the search stops at `at`).
    modified = max(changed, confidence_settled_since(sources, state.confidence, since=changed, at=at, policy=policy))
    kind = identifier_type_of(first.identifier_type)
    kind_name = kind.value if kind else "identifier"
    assert state.valid_from is not None and state.valid_until is not None and exportable(state)
    body: dict[str, Any] = {
        "type": "indicator", "spec_version": SPEC_VERSION, "id": indicator_id(state.indicator, incarnation),
        "created_by_ref": identity_id(first.reporter_member_id),
        "created": stix_timestamp(created), "modified": stix_timestamp(modified),
        "name": f"Alliance {kind_name} indicator", "description": _description(kind_name),
        "indicator_types": ["malicious-activity"],
        "pattern": f"[x-alliance-indicator:hash = '{state.indicator.hex()}']",
        "pattern_type": "stix", "pattern_version": SPEC_VERSION,
        "valid_from": stix_timestamp(state.valid_from),
        "valid_until": stix_timestamp(min(state.valid_until, LAST_STIX_TIME)),
        "confidence": state.confidence, "revoked": state.revoked,
        "x_alliance_identifier_type": kind.value if kind else None,
        "x_alliance_active": state.active, "x_alliance_disputed": state.disputed,
        "x_alliance_reporter_refs": [identity_id(m) for m in reporters],
        "x_alliance_endorser_count": len(state.endorsers),
    }
    if state.categories:  # STIX forbids an empty list
        body["labels"] = list(state.categories)
    return body


def _description(kind: str) -> str:
    """STIX 2.1 says producers SHOULD describe an indicator. Fixed per identifier type: a text that changed with the
    state would need its own `modified` moves, and the state is already in the other properties."""
    return (f"Fraud indicator of the banking alliance: the keyed hash (HMAC-SHA256 under the alliance key) of a "
            f"normalised {kind} that members reported. Only a member holding the alliance key can match its own "
            f"customers against it; the pattern does not reveal the {kind}.")


def _last_change_without_event(records: Sequence[RecordFact], reactions: Sequence[ReactionFact], *, at: int,
                               policy: StatePolicy) -> int:
    """The latest time up to `at` at which the object may have changed with no record or reaction: a record's
    validity starting or ending (`x_alliance_active`, `labels`), a dispute's response window running out. A
    `modified` that did not move then would let an importer keep the older values (0: no such time)."""
    times = [time for record in records for time in (record.valid_from, record.valid_until)]
    times += [event.at + policy.dispute_window_s for event in reactions if event.kind == "disputed"]
    return max((time for time in times if time <= at), default=0)


def first_batch_times(session: Session, members: set[int]) -> dict[int, int]:
    """Block time of each member's first batch: an identity's `created`, the same on every page and in every export
    (the records on one page would give another time on the next, and STIX never lets `created` change)."""
    if not members:
        return {}
    rows = session.execute(select(MirrorBatch.reporter_member_id, func.min(MirrorBatch.published_at))
                           .where(MirrorBatch.reporter_member_id.in_(sorted(members)))
                           .group_by(MirrorBatch.reporter_member_id))
    return {member: int(first) for member, first in rows}


def exportable(state: IndicatorState) -> bool:
    """Whether STIX can express the indicator: it applies from a time before the year 10000 (a later end is cut
    to the last second of 9999, the same thing to any reader)."""
    return state.valid_from is not None and state.valid_from < LAST_STIX_TIME


@dataclass(frozen=True, slots=True)
class ExportPage:
    bundle: dict[str, Any]
    next_after: bytes | None  # cursor of the next page; None on the last page


# The chain's clock (block times) and this node's (the time a pull is evaluated at) may differ a little: a margin
# that sends some objects twice (a platform updates them in place) rather than miss one.
CLOCK_MARGIN_S = 300


def previous_pull_time(session: Session, changed_since_block: int) -> int | None:
    """Since when an incremental pull from `changed_since_block` takes the changes no block marks: the time of the
    block the previous pull's mirror stood at (the newest indexed block before it), less CLOCK_MARGIN_S. None if the
    mirror holds no block before it: the indexer keeps every block with events, so every record is in the pull
    already."""
    time = block_time_before(session, changed_since_block)
    return None if time is None else max(time - CLOCK_MARGIN_S, 0)


def export_page(session: Session, *, at: int, policy: StatePolicy, include_inactive: bool = False,
                after: bytes | None = None, limit: int = DEFAULT_PAGE, changed_since_block: int | None = None,
                changed_since_time: int | None = None) -> ExportPage:
    """One self-contained bundle of the next `limit` indicators with records after `after`, in byte order.

    Only indicators producing hits at `at` become objects unless `include_inactive`, so a page may hold
    fewer than `limit`; paging goes on while `next_after` is set.

    With `changed_since_block` (an incremental pull) only indicators with a record or reaction in that block or a
    later one are read, and each becomes an object whatever its state: a platform holding it from an earlier pull
    must learn that it was revoked, disputed or stopped hitting. So must it of an earlier incarnation revoked since
    (its last event in that block or later), which comes too, revoked, beside the one that replaced it.
    `changed_since_time` (Unix time) adds the indicators whose state changed since then with no block to mark it
    (a record's validity ending, a dispute's response window running out, up to `at`): a platform would otherwise go
    on holding an indicator whose dispute lapsed as one that hits.
    """
    changed = RecordFilter(changed_since_block=changed_since_block, dispute_window_s=policy.dispute_window_s,
                           state_changed_between=None if changed_since_time is None else (changed_since_time, at))
    page = indicators_page(session, after=after, limit=limit, where=changed)
    facts = facts_for(session, page)
    objects: list[dict[str, Any]] = []
    members: set[int] = set()
    for indicator in page:
        records, reactions = facts[indicator]
        starts = incarnation_starts(records, reactions)
        ends = [*starts[1:], None]
        for incarnation, (start, end) in enumerate(zip(starts, ends, strict=True)):
            # The first incarnation takes every fact, also a reaction older than its first record.
            own_records, own_reactions = _incarnation_facts(records, reactions, start if incarnation else 0, end)
            if end is not None and not (changed_since_block is not None
                                        and _last_block(own_records, own_reactions) >= changed_since_block):
                continue  # an earlier incarnation: the export carries it no longer, unless revoked since the last pull
            state, sources = derive_state_and_sources(indicator, own_records, own_reactions, at=at, policy=policy)
            if not (state.active or include_inactive or changed_since_block is not None) or not exportable(state):
                continue
            objects.append(indicator_object(state, sources, own_records, own_reactions, incarnation, at=at,
                                            policy=policy))
            members.update(record.reporter_member_id for record in own_records)
    first_seen = first_batch_times(session, members)
    identities = [identity_object(member, first_seen[member]) for member in sorted(members)]
    bundle: dict[str, Any] = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}"}
    if objects:  # STIX lists are never empty: a page without indicators (all inactive, or the end) has no `objects`
        bundle["objects"] = [*identities, *objects]
    return ExportPage(bundle, page[-1] if len(page) == limit else None)


def _incarnation_facts(records: Sequence[RecordFact], reactions: Sequence[ReactionFact], start: int, end: int | None
                       ) -> tuple[list[RecordFact], list[ReactionFact]]:
    """The records and reactions of the incarnation from block `start` to before block `end` (None: to now)."""
    def within(block: int) -> bool:
        return block >= start and (end is None or block < end)

    return [r for r in records if within(r.block_number)], [e for e in reactions if within(e.block_number)]


def _last_block(records: Sequence[RecordFact], reactions: Sequence[ReactionFact]) -> int:
    return max([r.block_number for r in records] + [e.block_number for e in reactions])
