"""Checking customer identifiers against the alliance's indicators, from the local mirror only.

A check normalises each identifier, hashes it under *every* key epoch this node holds (indicators
published before a key rotation keep matching until they are republished), looks the hashes up in the
mirror tables (never a chain call: checks keep answering while the chain is down, saying how stale
they are) and records who asked what in the query log, in the same transaction.

Two shapes (docs/fraud-ledger.md):
- `check_identity`: the identifiers of one applicant; one invalid identifier refuses the whole check
  (HTTP 422 with the identifier's reason code), because a decision on a partly checked identity is wrong.
- `check_batch`: up to `MAX_BATCH` identifiers of unrelated customers; an invalid one gets a per-item
  `error` and the rest are answered, so one bad row does not make a caller resend 10,000.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.chain.errors import ChainError
from node.crypto.keyed_hash import INDICATOR_PREFIX
from node.errors import AllianceError, InvalidInput
from node.ledger.identifiers import InvalidIdentifier, ReasonCode, normalise
from node.ledger.indicator_state import ReactionFact, RecordFact, StatePolicy, derive_state
from node.ledger.keyring import NoAllianceKey
from node.ledger.mirror import MirrorStatus, facts_for, mirror_status
from node.runtime import NodeContext
from node.store.ledger_tables import AllianceKey, CheckLogEntry

MAX_IDENTITY = 100  # identifiers of one applicant
MAX_BATCH = 10_000


class TooManyIdentifiers(AllianceError):
    code = "too_many_identifiers"
    http_status = 413


class NoIdentifiers(InvalidInput):
    code = "no_identifiers"


@dataclass(frozen=True, slots=True)
class IdentifierCheck:
    """The answer for one identifier: a hit with what the alliance knows, a miss, or an input error."""

    item: int  # position in the request
    identifier_type: str | None  # None for a type that is none (it may be the identifier, see `_shown_type`)
    indicator: bytes | None  # under the current epoch; None for an invalid identifier
    hit: bool = False
    categories: tuple[str, ...] = ()
    reporter_count: int = 0
    confidence: int = 0
    disputed: bool = False
    error_code: str | None = None
    error_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "item": self.item, "type": self.identifier_type,
            "indicator": "0x" + self.indicator.hex() if self.indicator is not None else None,
            "hit": self.hit, "categories": list(self.categories), "reporter_count": self.reporter_count,
            "confidence": self.confidence, "disputed": self.disputed,
        }
        if self.error_code is not None:
            body["error"] = {"code": self.error_code, "reason": self.error_reason}
        return body


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    results: list[IdentifierCheck]
    checked_at: int  # Unix time the derived state was evaluated at
    mirror: MirrorStatus

    @property
    def hits(self) -> int:
        return sum(1 for r in self.results if r.hit)

    def to_json(self) -> dict[str, Any]:
        return {"results": [r.to_json() for r in self.results], "checked_at": self.checked_at,
                "as_of_block": self.mirror.as_of_block, "lag_s": self.mirror.lag_s, "stale": self.mirror.stale}


def state_policy(node: NodeContext) -> StatePolicy:
    return StatePolicy(half_life_days=node.settings.confidence_half_life_days,
                       dispute_window_days=node.settings.dispute_window_days)


def ledger_address(node: NodeContext) -> str | None:
    """The FraudLedger address the mirror follows, or None on a node without a deployment record."""
    try:
        return node.deployment.address("FraudLedger")
    except (AllianceError, ChainError, OSError):
        return None


def check_identity(node: NodeContext, identifiers: Sequence[tuple[str, str]], key_id: str, *,
                   session: Session | None = None) -> CheckOutcome:
    """Check the identifiers of one applicant; any invalid one refuses the whole check (InvalidInput).

    `session` is the caller's (the API request's), committed here with the query-log row; without one the
    check opens its own transaction.
    """
    _require_count(identifiers, MAX_IDENTITY)
    canonical: list[str | InvalidIdentifier] = [_normalised(kind, raw) for kind, raw in identifiers]
    problems = [(i, c) for i, c in enumerate(canonical) if isinstance(c, InvalidIdentifier)]
    if problems:
        item, first = problems[0]
        raise InvalidInput(f"identifier {item}: {first}", code=str(first.code),
                           details=[{"item": i, "type": _shown_type(e), "code": str(e.code), "reason": e.reason}
                                    for i, e in problems])
    return _check(node, identifiers, canonical, key_id, kind="identity", session=session)


def check_batch(node: NodeContext, identifiers: Sequence[tuple[str, str]], key_id: str, *,
                session: Session | None = None) -> CheckOutcome:
    """Check up to MAX_BATCH unrelated identifiers; invalid ones are answered with a per-item error."""
    _require_count(identifiers, MAX_BATCH)
    canonical = [_normalised(kind, raw) for kind, raw in identifiers]
    return _check(node, identifiers, canonical, key_id, kind="batch", session=session)


def _shown_type(problem: InvalidIdentifier) -> str | None:
    """The identifier type an answer names for an invalid identifier: none for a type that is not one, which may be
    the identifier itself, given in the type's place (columns swapped); answers never quote identifiers."""
    return None if problem.code == ReasonCode.UNKNOWN_TYPE else problem.identifier_type


def _require_count(identifiers: Sequence[tuple[str, str]], limit: int) -> None:
    if not identifiers:
        raise NoIdentifiers("give at least one identifier to check")
    if len(identifiers) > limit:
        raise TooManyIdentifiers(f"{len(identifiers)} identifiers given; at most {limit} per request")


def _normalised(kind: str, raw: str) -> str | InvalidIdentifier:
    try:
        return normalise(kind, raw)
    except InvalidIdentifier as exc:
        return exc


def _check(node: NodeContext, identifiers: Sequence[tuple[str, str]], canonical: Sequence[str | InvalidIdentifier],
           key_id: str, *, kind: str, session: Session | None) -> CheckOutcome:
    if session is None:
        with node.store.transaction() as own:
            return _check_in(node, identifiers, canonical, key_id, kind, own)
    outcome = _check_in(node, identifiers, canonical, key_id, kind, session)
    session.commit()
    return outcome


def keys_newest_first(node: NodeContext, session: Session) -> list[bytes]:
    """The alliance key of every epoch this node holds, the current one first (a check reports the indicator of
    the first); raises NoAllianceKey if it holds none."""
    # Epochs are read in this session and keys taken from the keyring's cache: a second connection per
    # request could exhaust the pool while every request holds its first (the API's request session).
    epochs = sorted(session.scalars(select(AllianceKey.epoch)), reverse=True)
    if not epochs:
        raise NoAllianceKey("this node holds no alliance key yet, so it cannot hash identifiers to check; "
                            "a member's node sends it as an envelope once this bank is admitted (`alliance key "
                            "sync` fetches it; the distributing member's key pass must have run since)")
    return [node.keyring.key(epoch) for epoch in epochs]


def _check_in(node: NodeContext, identifiers: Sequence[tuple[str, str]], canonical: Sequence[str | InvalidIdentifier],
              key_id: str, kind: str, session: Session) -> CheckOutcome:
    epoch_keys = keys_newest_first(node, session)
    hashes: list[list[bytes] | None] = []
    for (identifier_type, _), value in zip(identifiers, canonical, strict=True):
        if isinstance(value, InvalidIdentifier):
            hashes.append(None)
            continue
        message = INDICATOR_PREFIX[identifier_type] + value.encode()
        hashes.append([hmac.digest(key, message, "sha256") for key in epoch_keys])

    at = int(time.time())
    policy = state_policy(node)
    facts = facts_for(session, [h for hs in hashes if hs for h in hs], reactions_without_records=False)
    results = [_answer(i, identifiers[i][0], hs, canonical[i], facts, at, policy) for i, hs in enumerate(hashes)]
    status = mirror_status(session, ledger_address(node), stale_after_s=node.settings.mirror_stale_after_s)
    _log(session, key_id, kind, results, status)
    return CheckOutcome(results, at, status)


def _answer(item: int, identifier_type: str, hashes: list[bytes] | None, canonical: str | InvalidIdentifier,
            facts: dict[bytes, tuple[list[RecordFact], list[ReactionFact]]], at: int,
            policy: StatePolicy) -> IdentifierCheck:
    if hashes is None:
        assert isinstance(canonical, InvalidIdentifier)
        return IdentifierCheck(item, _shown_type(canonical), None, error_code=str(canonical.code),
                               error_reason=canonical.reason)
    known = [facts[h] for h in hashes if h in facts]
    if not known:
        return IdentifierCheck(item, identifier_type, hashes[0])
    state = derive_state(hashes[0], [r for rs, _ in known for r in rs], [e for _, es in known for e in es],
                         at=at, policy=policy)
    return IdentifierCheck(item, identifier_type, hashes[0], hit=state.active, categories=state.categories,
                           reporter_count=state.reporter_count, confidence=state.confidence,
                           disputed=state.disputed)


def _log(session: Session, key_id: str, kind: str, results: list[IdentifierCheck], status: MirrorStatus) -> None:
    checked = [r.indicator.hex() for r in results if r.indicator is not None]
    hits = [r.indicator.hex() for r in results if r.hit and r.indicator is not None]
    session.add(CheckLogEntry(key_id=key_id, kind=kind, indicators=json.dumps(checked), hits=json.dumps(hits),
                              as_of_block=status.as_of_block, stale=status.stale))

