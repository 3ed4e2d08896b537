"""The pool builder: loan tapes become pool versions (Merkle trees) that are screened, then anchored on chain.

A tape is imported as a *draft* version of a named local pool: its records, borrower indicators and tree
root are stored in one transaction (a rejected tape stores nothing). Anchoring screens the draft (double
financing against the loan-id mirror, borrower indicators against the fraud ledger), refuses a pool with
findings unless an override reason is given (the findings and the reason are kept with the version),
rebuilds the tree from the stored records and checks it still has the imported root, registers the pool
on chain the first time, then anchors the version with the first chunk of its loan ids and publishes the
rest in further chunks (`publishLoanIds`), each sized well under the block gas limit, so a version of a
million loans takes a few hundred transactions instead of one that no block could hold.

A pool this bank received from another (transfer or succession) is imported into a local pool bound to its on-chain
id (`pool_id=`), so that anchoring adds its next version, or finishes publishing its latest one, instead of
registering a new pool.

There is no outbox here (anchoring is a rare operator action): a crash between sending and storing is
repaired on the next attempt, which adopts the pool registered with the same metadata hash by this member
(`poolIdOf`; the contract takes a hash once per member, so a registration still pending at the crash is mined
first and the attempt's own is refused with its pool id) and the latest version if it already has the draft's
root (once the transactions sent before are mined, so an anchor still pending at the crash is found), instead of
sending them again, then reads how many of that version's ids the contract has
(`loanIdsPublished`) and publishes from there. Each chunk names its offset and the contract refuses any other,
so a chunk whose first copy was still pending when the node crashed is refused rather than published twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from node.assets.loan_tape import LoanTapeRejected, TapeLoan, parse_tape
from node.assets.records import LEAF_ENCODING, Amortisation, LoanPurpose, LoanRecord, LoanStatus
from node.assets.screening import (
    Screen,
    ScreeningFindings,
    double_financed_loans,
    fraud_ledger_screen,
    screen_version,
    sync_loan_mirror,
)
from node.chain.asset_registry import (
    AnchoredVersion,
    AssetRegistryClient,
    PublishedChunk,
    SentChunk,
    loan_id_chunk_size,
)
from node.chain.errors import (
    AssetRegistryLoanIdsIncomplete,
    AssetRegistryLoanIdsOffsetMismatch,
    AssetRegistryPoolAlreadyRegistered,
    AssetRegistryRootUnchanged,
    ChainUnavailable,
)
from node.errors import AllianceError, Conflict, InvalidInput, NotFound
from node.ledger.checks import state_policy
from node.merkle import StandardMerkleTree
from node.runtime import NodeContext
from node.store.asset_tables import AssetLoan, AssetLoanIndicator, AssetPool, AssetVersion
from node.store.bulk import in_list_slices, rows_page
from node.store.db import Store, once_more_on_conflict
from node.store.models import utcnow
from node.text import printable_name, quoted, storable_text

logger = logging.getLogger(__name__)

INSERT_CHUNK = 5_000
MAX_POOL_NAME = 100  # asset_pools.name
MAX_POOL_ID = 2**63 - 1  # asset_pools.pool_id (BIGINT), narrower than the contract's uint256
MAX_POOL_REF = 2**31 - 1  # asset_pools.id (INTEGER): the paging cursor of GET /v1/assets/pools
# Pools per page of GET /v1/assets/pools: each carries all its versions (and their screening findings).
DEFAULT_POOLS_PAGE = 100
MAX_POOLS_PAGE = 1_000
# Chunks of loan ids sent ahead of their receipts: several share a block on a chain with block times (QBFT),
# few enough to stay within a transaction pool's per-sender limit.
CHUNKS_IN_FLIGHT = 4
_RECORD_COLUMNS = ("loan_id", "borrower_hash", "key_epoch", "origination_date", "maturity_date",
                   "original_principal", "current_principal", "currency", "interest_rate_micros", "purpose",
                   "amortisation", "status", "arrears_balance")


class PoolRefused(AllianceError):
    """Screening found double financing or blacklisted borrowers, and no override was given."""

    code = "pool_refused"
    http_status = 409


@dataclass(frozen=True)
class DraftVersion:
    pool_name: str
    pool_id: int | None
    loan_count: int
    total_principal: int
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool_name, "pool_id": self.pool_id, "loan_count": self.loan_count,
                "total_principal": str(self.total_principal), "root": "0x" + self.root.hex(), "state": "draft"}


@dataclass(frozen=True)
class AnchorResult:
    """An anchored version: its anchoring transaction, and the chunks of loan ids this attempt published after it
    (none for a version that fits one chunk; fewer than all for an attempt that resumed a crashed one)."""

    pool_name: str
    anchored: AnchoredVersion
    loan_count: int
    findings: ScreeningFindings
    override_reason: str | None = None
    chunks: list[PublishedChunk] = field(default_factory=list)

    @property
    def gas_used(self) -> int:
        return self.anchored.gas_used + sum(c.gas_used for c in self.chunks)

    def to_json(self) -> dict[str, Any]:
        a = self.anchored
        return {"pool": self.pool_name, "pool_id": a.pool_id, "version": a.version, "root": "0x" + a.root.hex(),
                "loan_count": self.loan_count, "tx_hash": a.tx_hash, "block_number": a.block_number,
                "gas_used": self.gas_used, "loan_id_chunks": [_chunk_json(c) for c in self.chunks],
                "findings": self.findings.to_json(), "override_reason": self.override_reason}


def _chunk_json(chunk: PublishedChunk) -> dict[str, Any]:
    return {"offset": chunk.offset, "count": chunk.count, "tx_hash": chunk.tx_hash,
            "block_number": chunk.block_number, "gas_used": chunk.gas_used}


def asset_registry(node: NodeContext, *, signing: bool = False) -> AssetRegistryClient:
    client = node.signing_chain if signing else node.chain
    return AssetRegistryClient(client, node.deployment.address("AssetRegistry"))


def build_tree(records: Sequence[LoanRecord]) -> StandardMerkleTree:
    """The version's tree: values in tape order, so a loan's position is its value index."""
    if not records:
        raise InvalidInput("a pool version needs at least one loan")
    return StandardMerkleTree.of([r.leaf_values() for r in records], LEAF_ENCODING)


def valid_pool_name(pool_name: str) -> str:
    """The pool name as stored: stripped, 1 to 100 printable characters (it is hashed into the pool's on-chain
    metadata and typed back on command lines and in URLs)."""
    name = pool_name.strip()
    if not name or len(name) > MAX_POOL_NAME:
        raise InvalidInput(f"a pool name has 1 to {MAX_POOL_NAME} characters")
    return printable_name(name, field="the pool name")


def valid_override_reason(override_reason: str | None) -> str | None:
    """The override reason as recorded with an anchored version (None for none), or InvalidInput; checked before
    anything is sent, since it is stored only once the version is anchored on chain."""
    reason = (override_reason or "").strip() or None
    return None if reason is None else storable_text(reason, field="the override reason")


def metadata_hash(name: str, originator_code: str) -> bytes:
    document = json.dumps({"name": name, "originator": originator_code}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode("utf-8")).digest()


# -- import ----------------------------------------------------------------------------------------------------
def import_tape(node: NodeContext, pool_name: str, path: Path, on_row: Callable[[int], None] | None = None, *,
                pool_id: int | None = None) -> DraftVersion:
    """Import a loan tape file as the draft of the pool's next version (the pool is created locally if new).
    `pool_id` binds the local pool to that on-chain pool, which this bank holds (see `check_pool_binding`)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return import_lines(node, pool_name, handle, on_row, pool_id=pool_id)
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc) from None


def import_tape_bytes(node: NodeContext, pool_name: str, tape: bytes, *, pool_id: int | None = None) -> DraftVersion:
    """Import a loan tape given whole (an API request body), UTF-8 with or without a byte order mark."""
    try:
        text = tape.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc) from None
    return import_lines(node, pool_name, io.StringIO(text, newline=""), pool_id=pool_id)


def _not_utf8(exc: UnicodeDecodeError) -> LoanTapeRejected:
    return LoanTapeRejected(f"the loan tape is not UTF-8 text (byte {exc.start}); re-export it as UTF-8")


def import_lines(node: NodeContext, pool_name: str, lines: Iterable[str],
                 on_row: Callable[[int], None] | None = None, *, pool_id: int | None = None) -> DraftVersion:
    """Import a loan tape given as CSV lines (e.g. an API request body)."""
    epoch, key = node.keyring.current()
    originator = node.settings.bank_code
    if not originator:
        raise InvalidInput("this node has no bank code; run `alliance init` first", code="not_initialised")
    # Checked before the tape is read: a refusal of a million-loan tape comes at once.
    registration = None if pool_id is None else check_pool_binding(node, pool_name, pool_id)
    loans = parse_tape(lines, alliance_key=key, key_epoch=epoch, originator_code=originator,
                       screening_keys=node.keyring.keys(), on_row=on_row)
    return store_draft(node.store, pool_name, loans, originator_code=originator, key_epoch=epoch, pool_id=pool_id,
                       own_registration=registration)


def check_pool_binding(node: NodeContext, pool_name: str, pool_id: int) -> bytes | None:
    """Refuse to bind local pool `pool_name` to on-chain pool `pool_id` unless the binding is new or the same, the
    pool exists and this bank is its custodian. A bank that received a pool (transfer or succession) anchors its
    next versions, or finishes publishing its latest one, through such a binding. The chain is asked only if it is
    reachable: anchoring asks it again, and the contract takes versions and ids from the custodian only.

    Returns the metadata hash the pool was registered with if this bank registered it (else None): a local pool not
    bound yet may be bound to its own registration, made by an anchor that stopped before storing the pool id."""
    name = valid_pool_name(pool_name)
    if not 1 <= pool_id <= MAX_POOL_ID:
        raise InvalidInput(f"a pool id is a number from 1 to {MAX_POOL_ID}", code="invalid_pool_id")
    try:
        info = asset_registry(node).pool(pool_id)  # AssetRegistryUnknownPool for a pool never registered
        member_id = node.member_id
    except ChainUnavailable as exc:
        unreachable: ChainUnavailable | None = exc
    else:
        unreachable = None
    own_registration = info.metadata_hash if unreachable is None and info.originator_member_id == member_id else None
    with node.store.session() as session:
        _refuse_other_binding(session, name, pool_id, own_registration=own_registration)
    if unreachable is not None:
        logger.warning("pool %s: custody not checked at import, the chain is unreachable (%s)", pool_id, unreachable)
        return None
    if info.custodian_member_id != member_id:
        hint = (f"accept its transfer first (`alliance assets accept {pool_id}`)"
                if info.pending_custodian_member_id == member_id else "only its custodian anchors its versions")
        raise Conflict(f"pool {pool_id} is held by member {info.custodian_member_id}, not this bank (member "
                       f"{member_id}): {hint}", code="not_custodian")
    if own_registration is not None:
        _refuse_registration_of_another(node.store, name, pool_id, own_registration)
    return own_registration


def _refuse_registration_of_another(store: Store, name: str, pool_id: int, registered_hash: bytes) -> None:
    """Conflict if this bank registered `pool_id` for another local pool whose anchor stopped before storing the id:
    the pool is that one's (its next anchor adopts it), and bound to `name` it could never be adopted."""
    with store.session() as session:
        owner = session.scalar(select(AssetPool.name).where(AssetPool.metadata_hash == registered_hash,
                                                            AssetPool.pool_id.is_(None)))
    if owner is not None and owner != name:
        raise Conflict(f"pool {pool_id} was registered for the local pool {owner!r} by an anchor that stopped before "
                       f"storing its id; anchor {owner!r} again (it adopts the pool), or import the tape into it",
                       code="pool_already_bound")


def _refuse_other_binding(session: Session, name: str, pool_id: int, *, own_registration: bytes | None) -> None:
    """Conflict if another local pool is bound to `pool_id`, or the local pool `name` is another pool (or one not
    registered yet, whose loans would then be anchored into a pool they were not screened for) - unless `pool_id` is
    that unbound pool's own registration: this bank registered it with the pool's metadata hash (`own_registration`)."""
    bound = session.scalar(select(AssetPool.name).where(AssetPool.pool_id == pool_id))
    if bound is not None and bound != name:
        raise Conflict(f"pool {pool_id} is the local pool {bound!r} already; import the tape into it",
                       code="pool_already_bound")
    named = session.scalar(select(AssetPool).where(AssetPool.name == name))
    if named is None or named.pool_id == pool_id:
        return
    if named.pool_id is None and own_registration is not None and bytes(named.metadata_hash) == own_registration:
        return
    what = "not registered on chain yet" if named.pool_id is None else f"pool {named.pool_id}"
    raise Conflict(f"the local pool {name!r} is {what}, not pool {pool_id}; import the tape under another name",
                   code="pool_name_taken")


def store_draft(store: Store, pool_name: str, loans: Sequence[TapeLoan], *, originator_code: str,
                key_epoch: int, pool_id: int | None = None, own_registration: bytes | None = None) -> DraftVersion:
    """Store parsed loans as the pool's draft, all in one transaction (a new pool bound to `pool_id` if given, or an
    unbound one bound to it if `pool_id` is its registration by this bank, `own_registration` its metadata hash)."""
    name = valid_pool_name(pool_name)
    records = [loan.record for loan in loans]
    currencies = sorted({r.currency for r in records})
    if len(currencies) > 1:
        raise InvalidInput(f"a pool version's loans share one currency (its total principal goes on chain); "
                           f"this tape has {', '.join(currencies)}", code="mixed_currencies")
    root = build_tree(records).root
    total = sum(r.current_principal for r in records)
    # Another import (a second request, the CLI) may create the pool first; importing again finds its draft.
    stored_pool_id = once_more_on_conflict(
        lambda: _store_draft(store, name, originator_code, loans, root=root, total=total, key_epoch=key_epoch,
                             bind_to=pool_id, own_registration=own_registration))
    return DraftVersion(name, stored_pool_id, len(records), total, root)


def _store_draft(store: Store, name: str, originator_code: str, loans: Sequence[TapeLoan], *, root: bytes,
                 total: int, key_epoch: int, bind_to: int | None, own_registration: bytes | None) -> int | None:
    with store.transaction() as session:
        # Locked, so that two imports into one pool take turns (PostgreSQL; SQLite ignores FOR UPDATE).
        pool = session.scalar(select(AssetPool).where(AssetPool.name == name).with_for_update())
        if bind_to is not None:  # checked again in the transaction: another import may have bound the pool meanwhile
            _refuse_other_binding(session, name, bind_to, own_registration=own_registration)
            if pool is not None and pool.pool_id is None:  # its own registration: bound as its next anchor would
                pool.pool_id = bind_to
        if pool is None:
            # A bound pool is never registered by this bank, so its metadata hash is never sent.
            pool = AssetPool(name=name, originator_code=originator_code,
                             metadata_hash=metadata_hash(name, originator_code), pool_id=bind_to)
            session.add(pool)
            session.flush()
        draft = AssetVersion(pool_ref=pool.id, state="draft", root=root, loan_count=len(loans),
                             total_principal=str(total), key_epoch=key_epoch)
        session.add(draft)
        session.flush()
        # Looked for once this draft is added: on SQLite adding it took the store's write lock, so the draft of an
        # import that ran meanwhile is committed by now and seen here.
        if session.scalar(select(AssetVersion.id).where(AssetVersion.pool_ref == pool.id, AssetVersion.state == "draft",
                                                        AssetVersion.id != draft.id)) is not None:
            raise Conflict(f"pool {name!r} already has a draft version; anchor or discard it first",
                           code="draft_exists")
        _insert_loans(session, draft.id, loans)
        return pool.pool_id


def _insert_loans(session: Session, version_ref: int, loans: Sequence[TapeLoan]) -> None:
    for start in range(0, len(loans), INSERT_CHUNK):
        chunk = loans[start:start + INSERT_CHUNK]
        rows: list[dict[str, Any]] = []
        indicators: list[dict[str, Any]] = []
        for position, loan in enumerate(chunk, start=start):
            r = loan.record
            rows.append({"version_ref": version_ref, "position": position, "loan_reference": loan.loan_reference,
                         "originator_code": loan.originator_code, **{c: getattr(r, c) for c in _RECORD_COLUMNS}})
            indicators.extend({"version_ref": version_ref, "position": position, "identifier_type": kind,
                               "epoch": epoch, "indicator": value} for kind, epoch, value in loan.indicators)
        session.execute(insert(AssetLoan), rows)
        session.execute(insert(AssetLoanIndicator), indicators)


def load_records(session: Session, version_ref: int) -> list[LoanRecord]:
    """A version's records in tape order."""
    rows = session.execute(select(*(getattr(AssetLoan, c) for c in _RECORD_COLUMNS))
                           .where(AssetLoan.version_ref == version_ref).order_by(AssetLoan.position))
    return [LoanRecord(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], LoanPurpose(r[9]),
                       Amortisation(r[10]), LoanStatus(r[11]), r[12]) for r in rows]


# -- anchoring -------------------------------------------------------------------------------------------------
def discard_draft(node: NodeContext, pool_name: str) -> None:
    """Delete the pool's draft and its records, unless the chain has it as the pool's latest version already (an anchor
    that stopped before recording it): its records are the only ones that prove that version's loans."""
    with node.store.session() as session:
        pool, draft = _draft_of(session, pool_name)
    try:
        _refuse_discard_of_anchored(node, pool, draft)
    except ChainUnavailable as exc:  # discarding is local: it is not held up by the chain being away
        logger.warning("pool %r: draft discarded without asking the chain whether it is anchored (%s)", pool_name, exc)
    with node.store.transaction() as session:
        _pool, draft = _draft_of(session, pool_name)
        for table in (AssetLoanIndicator, AssetLoan):
            session.execute(delete(table).where(table.version_ref == draft.id))
        session.delete(draft)


def _refuse_discard_of_anchored(node: NodeContext, pool: AssetPool, draft: AssetVersion) -> None:
    with node.store.session() as session:
        if session.scalar(select(AssetVersion.id).where(AssetVersion.pool_ref == pool.id,
                                                        AssetVersion.state == "anchored",
                                                        AssetVersion.root == bytes(draft.root))) is not None:
            return  # the same loans imported again: the anchored version keeps their records
    registry = asset_registry(node)
    pool_id = pool.pool_id if pool.pool_id is not None else registry.pool_id_of(node.member_id,
                                                                                 bytes(pool.metadata_hash))
    if pool_id is None:
        return
    latest = registry.pool(pool_id).version_count
    if latest and registry.version(pool_id, latest).root == bytes(draft.root):
        raise Conflict(f"the draft of pool {pool.name!r} is version {latest} of pool {pool_id} on chain already (an "
                       "anchor stopped before recording it): anchor it again to record it", code="anchored_on_chain")


@dataclass(frozen=True)
class _Screened:
    pool_id: int | None
    pool_row_id: int
    metadata_hash: bytes
    draft_id: int
    records: list[LoanRecord]
    tree: StandardMerkleTree
    findings: ScreeningFindings


def anchor_draft(node: NodeContext, pool_name: str, *, override_reason: str | None = None,
                 screen: Screen | None = None, chunk_size: int | None = None) -> AnchorResult:
    """Screen and anchor the pool's draft. Findings without `override_reason` raise PoolRefused; either way
    the findings are recorded on the version. `chunk_size` caps the loan ids per transaction (default: what
    `loan_id_chunk_size` allows on this chain)."""
    if chunk_size is not None and chunk_size < 1:
        raise InvalidInput("a chunk holds at least one loan id", code="invalid_chunk_size")
    reason = valid_override_reason(override_reason)
    with node.store.session() as session:
        # An unknown pool, no draft or a draft of the loans anchored already is refused before anything is synced or
        # sent, so it says what is wrong with the chain down too.
        _refuse_anchored_again(session, *_draft_of(session, pool_name))
    registry = asset_registry(node, signing=True)
    _adopt_registration(node, registry, pool_name)
    sync_loan_mirror(node.store, registry, from_block=_registry_block(node))
    screened = _screen_draft(node, registry, pool_name, screen)
    findings, records = screened.findings, screened.records
    if findings and reason is None:
        _record_findings(node, screened.draft_id, findings, None)
        raise PoolRefused(f"pool {pool_name!r} not anchored: {findings.summary()}; pass an override reason to "
                          "anchor it anyway", details=findings.details())
    pool_id = screened.pool_id if screened.pool_id is not None else _register(node, registry, screened)
    loan_ids = [r.loan_id for r in records]
    chunk = chunk_size if chunk_size is not None else loan_id_chunk_size(registry.block_gas_limit())
    # An anchor sent by a run stopped before its receipt, or by another process, is found and adopted: sent again, its
    # copy is refused (the root unchanged, or the version incomplete while its ids are being published).
    root = screened.tree.root
    anchored = registry.chain.send_once(
        lambda: _anchored_earlier(registry, pool_id, root),
        lambda: registry.anchor_version(pool_id, root, sum(r.current_principal for r in records), loan_ids[:chunk],
                                        loan_count=len(loan_ids)),
        refused_as_done=(AssetRegistryRootUnchanged, AssetRegistryLoanIdsIncomplete))
    chunks = publish_remaining_ids(registry, pool_id, anchored.version, loan_ids, chunk_size=chunk)
    result = AnchorResult(pool_name, anchored, len(records), findings, reason, chunks)
    with node.store.transaction() as session:  # unless another anchor of the draft recorded it first
        recorded = session.execute(
            update(AssetVersion).where(AssetVersion.id == screened.draft_id, AssetVersion.state == "draft")
            .values(state="anchored", version=anchored.version, tx_hash=anchored.tx_hash,
                    block_number=anchored.block_number, gas_used=result.gas_used, anchored_at=utcnow(),
                    findings=json.dumps(findings.to_json()), override_reason=reason))
        if recorded.rowcount != 1 and session.get(AssetVersion, screened.draft_id) is None:  # type: ignore[attr-defined]
            raise Conflict(f"the draft of pool {pool_name!r} was discarded while it was anchored as version "
                           f"{anchored.version} of pool {pool_id}; import its tape again to keep its records",
                           code="draft_discarded")
    try:
        sync_loan_mirror(node.store, registry, from_block=_registry_block(node))
    except ChainUnavailable as exc:  # the anchor is done and recorded: reported as failed, it would be sought again
        logger.warning("pool %s version %s anchored; the loan-id mirror catches up at its next sync (%s)", pool_id,
                       anchored.version, exc)
    return result


def publish_remaining_ids(registry: AssetRegistryClient, pool_id: int, version: int, loan_ids: Sequence[bytes],
                          *, chunk_size: int, in_flight: int = CHUNKS_IN_FLIGHT) -> list[PublishedChunk]:
    """Publish the ids of an anchored version that the contract does not have yet, in chunks of `chunk_size`,
    with up to `in_flight` chunks sent ahead of their receipts (so that a block can take several).

    Starts from the contract's own count, so it resumes an attempt that crashed half-way. A chunk refused for
    its offset means an earlier copy (pending at the crash) was mined meanwhile: the chunks in flight are
    settled, the count re-read, and publishing goes on from there; no id is ever published twice."""
    if chunk_size < 1 or in_flight < 1:
        raise InvalidInput("a chunk holds at least one loan id, and at least one is in flight",
                           code="invalid_chunk_size")
    block_gas_limit = registry.block_gas_limit()
    published: list[PublishedChunk] = []
    offset = registry.loan_ids_published(pool_id, version)
    while offset < len(loan_ids):
        sent: deque[SentChunk] = deque()
        try:
            while offset < len(loan_ids) or sent:
                while offset < len(loan_ids) and len(sent) < in_flight:
                    sent.append(registry.send_loan_ids(pool_id, version, offset,
                                                       loan_ids[offset:offset + chunk_size],
                                                       block_gas_limit=block_gas_limit))
                    offset += sent[-1].count
                published.append(registry.wait_loan_ids(sent.popleft()))
        except AssetRegistryLoanIdsOffsetMismatch as moved:
            logger.info("pool %s version %s: ids were published meanwhile (%s)", pool_id, version, moved)
            published.extend(_settle(registry, sent))
            offset = registry.loan_ids_published(pool_id, version)
    return published


def _settle(registry: AssetRegistryClient, sent: deque[SentChunk]) -> list[PublishedChunk]:
    """The chunks of `sent` that were mined; those refused for their offset are dropped (others raise)."""
    mined = []
    while sent:
        try:
            mined.append(registry.wait_loan_ids(sent.popleft()))
        except AssetRegistryLoanIdsOffsetMismatch:
            continue
    return mined


def _screen_draft(node: NodeContext, registry: AssetRegistryClient, pool_name: str,
                  screen: Screen | None) -> _Screened:
    """The draft's records and findings, after checking they still hash to the imported root."""
    with node.store.transaction() as session:
        pool, draft = _draft_of(session, pool_name)
        _refuse_anchored_again(session, pool, draft)  # checked again: another process may have anchored meanwhile
        check = screen if screen is not None else fraud_ledger_screen(session, policy=state_policy(node))
        findings = screen_version(session, draft.id, own_pool_id=pool.pool_id, screen=check,
                                  keys=node.keyring.keys())
        records = load_records(session, draft.id)
        tree = build_tree(records)
        if tree.root != bytes(draft.root):
            raise Conflict(f"the stored loans of pool {pool_name!r} no longer hash to the imported root",
                           code="draft_corrupted")
        return _Screened(pool.pool_id, pool.id, bytes(pool.metadata_hash), draft.id, records, tree, findings)


def _refuse_anchored_again(session: Session, pool: AssetPool, draft: AssetVersion) -> None:
    """Conflict if the draft has the root of the pool's latest anchored version: the same tape imported again, which
    the chain has already, and anchoring would only record a second time locally. (After a crash mid-anchor the
    draft itself is the one not yet anchored.)"""
    latest = session.scalar(select(AssetVersion).where(AssetVersion.pool_ref == pool.id,
                                                       AssetVersion.state == "anchored")
                            .order_by(AssetVersion.version.desc()).limit(1))
    if latest is not None and bytes(latest.root) == bytes(draft.root):
        raise Conflict(f"the draft of pool {pool.name!r} holds the same loans as its version {latest.version}, "
                       "which is anchored already; discard the draft", code="already_anchored")


def _register(node: NodeContext, registry: AssetRegistryClient, screened: _Screened) -> int:
    """Register the pool on chain and store its id. The contract takes each metadata hash once per member, so a
    registration of this pool sent before (by an attempt that stopped while it was pending, or by another process
    anchoring it meanwhile) makes this one refused with that pool's id, which is adopted: one pool on chain."""
    try:
        pool_id, _receipt = registry.register_pool(screened.metadata_hash)
    except AssetRegistryPoolAlreadyRegistered as registered:
        pool_id = int(registered.arguments["poolId"])
        logger.info("pool %s was registered meanwhile (an earlier attempt or another process); anchoring in it",
                    pool_id)
    _store_pool_id(node.store, screened.pool_row_id, pool_id)
    return pool_id


def _adopt_registration(node: NodeContext, registry: AssetRegistryClient, pool_name: str) -> None:
    """Store the id of the pool an earlier attempt registered for this local pool and stopped before storing (the
    contract keeps each member's metadata hashes), so that its own loans are not screened as double financing and it
    is not registered again."""
    with node.store.session() as session:
        pool, _draft = _draft_of(session, pool_name)
    if pool.pool_id is None and (registered := registry.pool_id_of(node.member_id, bytes(pool.metadata_hash))):
        _store_pool_id(node.store, pool.id, registered)


def _store_pool_id(store: Store, pool_row_id: int, pool_id: int) -> None:
    """Record `pool_id`, registered on chain for the local pool `pool_row_id`, as its id (unless another anchor of
    this pool stored it first). Conflict if another local pool is bound to it (bound while the chain was down, so
    unchecked): which local pool the operator meant cannot be decided here."""
    def store_it() -> None:
        with store.transaction() as session:
            name = session.get_one(AssetPool, pool_row_id).name
            other = session.scalar(select(AssetPool.name).where(AssetPool.pool_id == pool_id,
                                                                AssetPool.id != pool_row_id))
            if other is not None:
                raise Conflict(f"pool {pool_id} was registered on chain for the local pool {name!r}, but the local "
                               f"pool {other!r} is bound to it (bound with the chain down, unchecked): import "
                               f"{name!r}'s tape into {other!r} and anchor it there", code="pool_already_bound")
            session.execute(update(AssetPool).where(AssetPool.id == pool_row_id, AssetPool.pool_id.is_(None))
                            .values(pool_id=pool_id))

    once_more_on_conflict(store_it)  # a binding stored meanwhile fails the unique id: the second run names it


def _anchored_earlier(registry: AssetRegistryClient, pool_id: int, root: bytes) -> AnchoredVersion | None:
    """The pool's latest version if it already has this root: an earlier anchor whose receipt was lost, or
    whose ids were still being published when the node stopped. A latest version with another root and
    missing ids blocks the pool (the contract takes no new version before it is complete): say so plainly."""
    count = registry.pool(pool_id).version_count
    if count == 0:
        return None
    latest = registry.version(pool_id, count)
    if latest.root != root:
        published = registry.loan_ids_published(pool_id, count)
        if published < latest.loan_count:
            raise Conflict(f"version {count} of pool {pool_id} has only {published:,} of its {latest.loan_count:,} "
                           "loan ids published; import the tape it was anchored from again and anchor it to finish "
                           "it before anchoring another version", code="version_incomplete")
        return None
    event = next(e for e in reversed(registry.pool_events(pool_id)) if e.kind == "anchored")
    return AnchoredVersion(pool_id, count, root, event.tx_hash, event.block_number, 0)


def _record_findings(node: NodeContext, version_ref: int, findings: ScreeningFindings, reason: str | None) -> None:
    with node.store.transaction() as session:
        row = session.get_one(AssetVersion, version_ref)
        row.findings, row.override_reason = json.dumps(findings.to_json()), reason


def _draft_of(session: Session, pool_name: str) -> tuple[AssetPool, AssetVersion]:
    # A name a store cannot compare (a command line's undecodable bytes) is refused, not sent.
    pool = session.scalar(select(AssetPool).where(AssetPool.name == storable_text(pool_name, field="the pool name")))
    if pool is None:
        raise NotFound(f"no local pool named {quoted(pool_name)}", code="pool_not_found")
    draft = session.scalar(select(AssetVersion).where(AssetVersion.pool_ref == pool.id,
                                                      AssetVersion.state == "draft"))
    if draft is None:
        raise NotFound(f"pool {pool_name!r} has no draft version; import a loan tape first", code="no_draft")
    return pool, draft


def _registry_block(node: NodeContext) -> int:
    return node.deployment.contracts["AssetRegistry"].block_number


# -- reading ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolsPage:
    """One page of this bank's pools; `next_after` (the last pool's local row id) continues while more follow."""

    pools: list[dict[str, Any]]
    next_after: int | None


def double_financing(node: NodeContext, *, after: bytes | None = None,
                     limit: int | None = None) -> dict[bytes, list[int]]:
    """Loan ids active in two or more pools at once, across every bank's pools, from the loan-id mirror brought up to
    the chain first: in byte order, those after `after`, at most `limit` of them (None: all)."""
    sync_loan_mirror(node.store, asset_registry(node), from_block=_registry_block(node))
    with node.store.session() as session:
        return double_financed_loans(session, after=after, limit=limit)


def local_pools(node: NodeContext) -> list[dict[str, Any]]:
    """This bank's pools and their versions (drafts included), newest version last."""
    return pools_page(node, limit=None).pools


def pools_page(node: NodeContext, *, after: int = 0, limit: int | None = DEFAULT_POOLS_PAGE) -> PoolsPage:
    """The pools created after local row `after`, in creation order, at most `limit` of them (None: all)."""
    with node.store.session() as session:
        query = select(AssetPool).where(AssetPool.id > after).order_by(AssetPool.id)
        pools, more = rows_page(session, query, limit)
        versions: dict[int, list[AssetVersion]] = {pool.id: [] for pool in pools}
        for refs in in_list_slices(list(versions)):
            for version in session.scalars(select(AssetVersion).where(AssetVersion.pool_ref.in_(refs))
                                           .order_by(AssetVersion.id)):
                versions[version.pool_ref].append(version)
        result = [{"name": pool.name, "pool_id": pool.pool_id, "originator_code": pool.originator_code,
                   "versions": [_version_json(v) for v in versions[pool.id]]} for pool in pools]
        return PoolsPage(result, pools[-1].id if more else None)


def _version_json(v: AssetVersion) -> dict[str, Any]:
    return {"state": v.state, "version": v.version, "root": "0x" + bytes(v.root).hex(), "loan_count": v.loan_count,
            "total_principal": v.total_principal, "tx_hash": v.tx_hash, "block_number": v.block_number,
            "findings": json.loads(v.findings) if v.findings else None, "override_reason": v.override_reason}
