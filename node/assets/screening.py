"""Screening of pools: double financing (one loan id active in two pools) and blacklisted borrowers.

Double financing is checked against the loan-id mirror, a materialised view of every bank's
LoanIdsPublished events: a loan is *active* in a pool when it is in that pool's latest anchored version,
so a loan moved from pool 1 to pool 2 (and dropped from pool 1's next version) is not flagged, while
the classic fraud, one loan pledged to two pools at once, is. A version's ids arrive in chunks (several
events, in order, each with its offset); they count as active as they arrive, and until the last one has
arrived the pool's previous version stays active too: a version being published replaces its predecessor
only once complete, so no loan drops out of sight in between (the contract lets a pool have at most one
incomplete version, its latest). `AssetMirrorVersion` holds the *complete* versions (row written by the
chunk that completes it, `loan_count` the anchored count); `AssetMirrorLoan` every id received.

Blacklist screening takes a `Screen` callable (borrower indicators in, the listed ones out), by default
the fraud-ledger mirror's derived indicator states (`fraud_ledger_screen`), so a pool is screened by the
rules a credit check applies.

The mirror follows the chain with a cursor (`sync_state` row of the AssetRegistry address). It does not
rewind on reorganisations: the consortium chain (QBFT) has immediate finality; on a chain without it,
rebuild the mirror (`rebuild_loan_mirror`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.assets.records import loan_id_of
from node.chain.asset_registry import AssetRegistryClient, PublishedLoanIds
from node.ledger.indicator_state import StatePolicy, derive_state
from node.ledger.mirror import facts_for
from node.store.asset_tables import AssetLoan, AssetLoanIndicator, AssetMirrorLoan, AssetMirrorVersion
from node.store.bulk import in_list_slices, insert_rows
from node.store.db import Store
from node.store.ledger_tables import SyncState
from node.store.models import utcnow

Screen = Callable[[set[bytes]], set[bytes]]
MIRROR_INSERT_CHUNK = 5_000
MIRROR_LOAN_COLUMNS = ("pool_id", "version", "position", "loan_id")
# Loan ids per page of GET /v1/assets/double-financing (each a 32-byte id and a few pool ids).
DEFAULT_FLAGS_PAGE = 1_000
MAX_FLAGS_PAGE = 10_000


@dataclass
class ScreeningFindings:
    """What screening found in one version: loan ids active in other pools, and listed borrower indicators."""

    double_financed: dict[bytes, list[int]] = field(default_factory=dict)  # loan id -> other pools
    blacklisted: dict[int, list[bytes]] = field(default_factory=dict)  # position -> listed indicators
    # position -> (loan id, loan reference) of each blacklisted loan: a position alone (0-based, in tape order) sent
    # the operator to the wrong row of the tape, whose rows are numbered from its header line.
    blacklisted_loans: dict[int, tuple[bytes, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.double_financed or self.blacklisted)

    def summary(self) -> str:
        parts = []
        if self.double_financed:
            parts.append(f"{len(self.double_financed)} loan(s) already active in another pool")
        if self.blacklisted:
            parts.append(f"{len(self.blacklisted)} loan(s) with a borrower on the fraud ledger")
        return ", ".join(parts) or "no findings"

    def details(self) -> list[dict[str, object]]:
        found: list[dict[str, object]] = [{"code": "double_financed", "loan_id": "0x" + k.hex(), "pools": v}
                                          for k, v in self.double_financed.items()]
        found.extend({"code": "blacklisted_borrower", "position": p, **self._loan_json(p),
                      "indicators": ["0x" + i.hex() for i in v]} for p, v in self.blacklisted.items())
        return found

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), "details": self.details()}

    def _loan_json(self, position: int) -> dict[str, str]:
        if position not in self.blacklisted_loans:
            return {}
        loan_id, reference = self.blacklisted_loans[position]
        return {"loan_id": "0x" + loan_id.hex(), "loan_reference": reference}


# -- mirror ----------------------------------------------------------------------------------------------------
class _MirrorMoved(Exception):
    """Another process moved the loan-id mirror's cursor after this one read it."""


def sync_loan_mirror(store: Store, registry: AssetRegistryClient, *, from_block: int = 0) -> int:
    """Bring the loan-id mirror up to the chain head; returns the number of chunks (events) added.

    Processes may sync one store at once (API requests, `alliance assets`, an anchor): a sync that finds the cursor
    moved by another goes on from where that one left it."""
    head = registry.chain.block_number()
    while True:
        _create_cursor(store, registry.address, from_block)
        try:
            return _sync_from_cursor(store, registry, head)
        except _MirrorMoved:
            continue


def _create_cursor(store: Store, contract: str, from_block: int) -> None:
    with suppress(IntegrityError), store.transaction() as session:  # another process created it first
        if session.get(SyncState, contract) is None:
            session.add(SyncState(contract=contract, last_block=from_block - 1))


def _sync_from_cursor(store: Store, registry: AssetRegistryClient, head: int) -> int:
    with store.transaction() as session:
        last = session.scalar(select(SyncState.last_block).where(SyncState.contract == registry.address))
        if last is None:  # rebuilt meanwhile
            raise _MirrorMoved
        if last >= head:
            return 0
        # Claimed before anything is stored, as the indexer claims its chunks: the store's write lock (SQLite) or
        # the cursor's row lock (PostgreSQL) is taken now, and the claim fails if another sync moved the cursor.
        claimed = session.execute(update(SyncState).where(SyncState.contract == registry.address,
                                                          SyncState.last_block == last)
                                  .values(last_block=head, chain_head=head, synced_at=utcnow()))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise _MirrorMoved
        loan_counts: dict[tuple[int, int], int] = {}
        return sum(_mirror_chunk(session, registry, item, loan_counts)
                   for item in registry.published_loan_ids(from_block=last + 1, to_block=head))


def _mirror_chunk(session: Session, registry: AssetRegistryClient, item: PublishedLoanIds,
                  loan_counts: dict[tuple[int, int], int]) -> int:
    """Store one chunk of a version's ids (unless already stored), and mark the version complete if it is."""
    key = (item.pool_id, item.version)
    if session.get(AssetMirrorVersion, key) is not None:
        return 0
    if item.loan_ids and session.scalar(select(exists().where(
            AssetMirrorLoan.pool_id == item.pool_id, AssetMirrorLoan.version == item.version,
            AssetMirrorLoan.position == item.offset))):
        return 0
    rows = [(item.pool_id, item.version, item.offset + i, loan_id) for i, loan_id in enumerate(item.loan_ids)]
    for begin in range(0, len(rows), MIRROR_INSERT_CHUNK):
        insert_rows(session, AssetMirrorLoan, MIRROR_LOAN_COLUMNS, rows[begin:begin + MIRROR_INSERT_CHUNK])
    if key not in loan_counts:  # immutable once anchored, so the current state answers for any block
        loan_counts[key] = registry.version(item.pool_id, item.version).loan_count
    end = item.offset + len(item.loan_ids)
    if end == loan_counts[key] and _mirrored_count(session, *key) == end:
        session.add(AssetMirrorVersion(pool_id=item.pool_id, version=item.version, loan_count=end,
                                       block_number=item.block_number, tx_hash=item.tx_hash))
    return 1


def _mirrored_count(session: Session, pool_id: int, version: int) -> int:
    return int(session.scalar(select(func.count()).select_from(AssetMirrorLoan).where(
        AssetMirrorLoan.pool_id == pool_id, AssetMirrorLoan.version == version)) or 0)


def version_complete(session: Session, pool_id: int, version: int) -> bool:
    """Whether the mirror holds every id of the version (its last chunk has arrived)."""
    return session.get(AssetMirrorVersion, (pool_id, version)) is not None


def rebuild_loan_mirror(store: Store, registry: AssetRegistryClient, *, from_block: int = 0) -> int:
    with store.transaction() as session:
        session.execute(delete(AssetMirrorLoan))
        session.execute(delete(AssetMirrorVersion))
        session.execute(delete(SyncState).where(SyncState.contract == registry.address))
    return sync_loan_mirror(store, registry, from_block=from_block)


def _active_loans() -> Select[bytes, int]:
    """(loan id, pool id) of the active ids: per pool, those of its latest complete version and of the version
    above it whose chunks are still arriving (every version of a pool with no complete one yet)."""
    complete = (select(AssetMirrorVersion.pool_id, func.max(AssetMirrorVersion.version).label("version"))
                .group_by(AssetMirrorVersion.pool_id).subquery())
    return (select(AssetMirrorLoan.loan_id, AssetMirrorLoan.pool_id)
            .outerjoin(complete, AssetMirrorLoan.pool_id == complete.c.pool_id)
            .where(AssetMirrorLoan.version >= func.coalesce(complete.c.version, 0)))


def active_pools_of(session: Session, loan_ids: Iterable[bytes]) -> dict[bytes, list[int]]:
    """For each given loan id, the pools where it is active."""
    found: dict[bytes, set[int]] = defaultdict(set)
    ids = list(dict.fromkeys(loan_ids))
    for chunk in in_list_slices(ids):
        query = _active_loans().where(AssetMirrorLoan.loan_id.in_(chunk))
        for loan_id, pool_id in session.execute(query):
            found[bytes(loan_id)].add(int(pool_id))
    return {k: sorted(v) for k, v in found.items()}


def double_financed_loans(session: Session, *, after: bytes | None = None,
                          limit: int | None = None) -> dict[bytes, list[int]]:
    """Loan ids active in two or more pools at once, across all banks, from the mirror: in byte order, those after
    `after`, at most `limit` of them (None: all)."""
    active = _active_loans()
    if after is not None:  # before grouping: a later page does not count the ids of the pages before it
        active = active.where(AssetMirrorLoan.loan_id > after)
    active_ids = active.subquery()
    flagged = (select(active_ids.c.loan_id).group_by(active_ids.c.loan_id)
               .having(func.count(func.distinct(active_ids.c.pool_id)) > 1).order_by(active_ids.c.loan_id))
    if limit is not None:
        flagged = flagged.limit(limit)
    # One statement, so a page never pairs a loan with pools read after the mirror moved on.
    rows = session.execute(select(active_ids.c.loan_id, active_ids.c.pool_id)
                           .where(active_ids.c.loan_id.in_(flagged.scalar_subquery()))
                           .order_by(active_ids.c.loan_id))
    found: dict[bytes, set[int]] = defaultdict(set)
    for loan_id, pool_id in rows:
        found[bytes(loan_id)].add(int(pool_id))
    return {k: sorted(v) for k, v in found.items()}


# -- screening a draft -----------------------------------------------------------------------------------------
def screen_version(session: Session, version_ref: int, *, own_pool_id: int | None, screen: Screen,
                   keys: Mapping[int, bytes] | None = None) -> ScreeningFindings:
    """Findings of a local version: its loans active in other pools, and its listed borrower indicators.

    A loan id depends on the key epoch, so each loan is also looked up under its id in every other epoch
    of `keys` (epoch -> alliance key): a loan pledged before a key rotation is still found.
    """
    aliases: dict[bytes, bytes] = {}  # loan id in any epoch -> the version's loan id
    loans: dict[int, tuple[bytes, str]] = {}  # position -> (loan id, loan reference)
    for position, loan_id, originator, reference, epoch in session.execute(
            select(AssetLoan.position, AssetLoan.loan_id, AssetLoan.originator_code, AssetLoan.loan_reference,
                   AssetLoan.key_epoch).where(AssetLoan.version_ref == version_ref)):
        aliases[bytes(loan_id)] = bytes(loan_id)
        loans[int(position)] = (bytes(loan_id), reference)
        for other_epoch, key in (keys or {}).items():
            if other_epoch != epoch:
                aliases[loan_id_of(key, originator, reference)] = bytes(loan_id)
    findings = ScreeningFindings()
    for alias, pools in active_pools_of(session, aliases).items():
        others = [p for p in pools if p != own_pool_id]
        if others:
            found = findings.double_financed.setdefault(aliases[alias], [])
            found.extend(p for p in others if p not in found)
    by_position: dict[int, list[bytes]] = defaultdict(list)
    for position, indicator in session.execute(select(AssetLoanIndicator.position, AssetLoanIndicator.indicator)
                                               .where(AssetLoanIndicator.version_ref == version_ref)):
        by_position[int(position)].append(bytes(indicator))
    listed = screen({i for indicators in by_position.values() for i in indicators})
    for position, indicators in sorted(by_position.items()):
        hits = [i for i in indicators if i in listed]
        if hits:
            findings.blacklisted[position] = hits
            findings.blacklisted_loans[position] = loans[position]
    return findings


def fraud_ledger_screen(session: Session, *, policy: StatePolicy, at: int | None = None) -> Screen:
    """A screen over the fraud-ledger mirror: the indicators whose derived state is active at `at` (the same
    rules as a credit check: validity, revocation, lapsed disputes). Any live listing stops a pool until a
    human overrides it, whatever its confidence."""
    when = int(time.time()) if at is None else at

    def screen(indicators: set[bytes]) -> set[bytes]:
        facts = facts_for(session, sorted(indicators), reactions_without_records=False)
        return {indicator for indicator, (records, reactions) in facts.items()
                if derive_state(indicator, records, reactions, at=when, policy=policy).active}

    return screen
