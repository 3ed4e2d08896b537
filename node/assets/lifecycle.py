"""A pool's life after anchoring: custody transfers, servicing reports, auditor attestations.

Custody moves in two steps (the holder proposes, the recipient accepts), both enforced on chain. A pool whose
custodian was removed from the alliance passes by vote instead: a member proposes a successor and the members vote
until the registry's quorum (`propose_successor`, `vote_successor`).
A servicing report is a Merkle root over (loan id, status) of every loan of the reported version, in
version order, with the count per status, and the statuses themselves (4 bits a loan), so that any node and the
auditor rebuild the root from the chain and a loan's provenance bundle covers every period, whichever custodian
reported it. The reporter need not hold the loan records (a trustee usually does not): the version's loan ids come
from the loan-id mirror, and the statuses from a CSV (`loan_id,status`) or, for a pool this bank imported, from its
stored records.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node import governance
from node.assets.pools import MAX_POOL_ID as MAX_POOL_ID  # the store's width of a pool id, used here too
from node.assets.pools import asset_registry, load_records
from node.assets.records import STATUS_ENCODING, LoanStatus, pack_statuses
from node.assets.screening import sync_loan_mirror, version_complete
from node.chain.asset_registry import STATUS_CHUNK_BYTES, AssetRegistryClient
from node.chain.client import Receipt
from node.chain.errors import AssetRegistryPeriodNotIncreasing
from node.errors import Conflict, InvalidInput, NotFound
from node.hex_input import hex32
from node.merkle import StandardMerkleTree
from node.runtime import NodeContext
from node.store.asset_tables import AssetMirrorLoan, AssetPool, AssetServicingReport, AssetVersion
from node.store.db import once_more_on_conflict

# The store's widths (and MAX_POOL_ID above), narrower than the contract's (uint256 pool ids, uint32 versions and
# periods): a larger number is refused as bad input before anything is sent, rather than taken on chain and then
# failing to be stored.
MAX_PERIOD = MAX_VERSION = 2**31 - 1  # INTEGER

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServicingResult:
    pool_id: int
    version: int
    period: int
    status_root: bytes
    status_counts: list[int]
    receipt: Receipt

    def to_json(self) -> dict[str, Any]:
        return {"pool_id": self.pool_id, "version": self.version, "period": self.period,
                "status_root": "0x" + self.status_root.hex(), "status_counts": self.status_counts,
                "tx_hash": self.receipt.tx_hash, "block_number": self.receipt.block_number}


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {"tx_hash": receipt.tx_hash, "block_number": receipt.block_number}


# Run again after its answer was lost (a crash, a client's retry), each custody step first waits for the transactions
# its signer sent before to be mined, then returns the step if it is the pool's latest custody event already: sent
# again, a proposal would be proposed twice, and an accept or a cancel refused (no pending transfer) as if it had
# not happened. The look and the send are one `send_once`, so another process of this node taking the same step at
# the same moment (the API server beside the CLI) finds it too instead of sending it again.
_CUSTODY_KINDS = ("registered", "transfer_proposed", "transfer_cancelled", "transferred", "succeeded")


def propose_transfer(node: NodeContext, pool_id: int, to: str) -> Receipt:
    """Offer the pool to another member (id, address or bank code); custody moves when it accepts."""
    member = governance.find_member(node.registry(), to)
    registry = asset_registry(node, signing=True)
    return registry.chain.send_once(lambda: _proposed_earlier(registry, pool_id, member.member_id),
                                    lambda: registry.propose_transfer(pool_id, member.account))


def accept_transfer(node: NodeContext, pool_id: int) -> Receipt:
    registry = asset_registry(node, signing=True)
    return registry.chain.send_once(
        lambda: _latest_step_while_held(registry, pool_id, node.member_id, "transferred", toMemberId=node.member_id),
        lambda: registry.accept_transfer(pool_id))


def cancel_transfer(node: NodeContext, pool_id: int) -> Receipt:
    registry = asset_registry(node, signing=True)
    return registry.chain.send_once(
        lambda: _latest_step_while_held(registry, pool_id, node.member_id, "transfer_cancelled",
                                        fromMemberId=node.member_id),
        lambda: registry.cancel_transfer(pool_id))


def _proposed_earlier(registry: AssetRegistryClient, pool_id: int, member_id: int) -> Receipt | None:
    """The receipt of the pool's pending transfer to `member_id` if it is the latest custody step."""
    if registry.pool(pool_id).pending_custodian_member_id != member_id:
        return None
    return _latest_custody_step(registry, pool_id, "transfer_proposed", toMemberId=member_id)


def _latest_step_while_held(registry: AssetRegistryClient, pool_id: int, member_id: int, kind: str,
                            **arguments: object) -> Receipt | None:
    """The receipt of the pool's latest custody step if it is `kind` with `arguments` and left the pool held by
    `member_id` with no transfer pending (as an accept or a cancel by it does)."""
    info = registry.pool(pool_id)
    if info.custodian_member_id != member_id or info.pending_custodian_member_id != 0:
        return None
    return _latest_custody_step(registry, pool_id, kind, **arguments)


def _latest_custody_step(registry: AssetRegistryClient, pool_id: int, kind: str,
                         **arguments: object) -> Receipt | None:
    """The receipt of the pool's latest custody event if it is a `kind` event with `arguments`."""
    steps = [e for e in registry.pool_events(pool_id) if e.kind in _CUSTODY_KINDS]
    if not steps or steps[-1].kind != kind or any(steps[-1].args[k] != v for k, v in arguments.items()):
        return None
    return registry.chain.wait_for_receipt(steps[-1].tx_hash)


@dataclass(frozen=True)
class SuccessionVote:
    """A pool's succession round after this bank's proposal or vote: `decided` if the round passed custody (with this
    vote, or, for a vote found again after its answer was lost, possibly with another member's later one)."""

    pool_id: int
    round: int
    decided: bool
    votes: int  # votes of the round that count now (0 once decided)
    required: int  # votes the registry's quorum needs now
    receipt: Receipt

    def to_json(self) -> dict[str, Any]:
        return {**receipt_json(self.receipt), "pool_id": self.pool_id, "round": self.round, "decided": self.decided,
                "votes": self.votes, "required": self.required}


def propose_successor(node: NodeContext, pool_id: int, successor: str) -> SuccessionVote:
    """Open a vote to make `successor` (id, address or bank code) the custodian of a pool whose custodian was removed
    from the alliance; this bank's vote is counted (and may decide it)."""
    member = governance.find_member(node.registry(), successor)
    registry = asset_registry(node, signing=True)
    # Held from the look to the receipt: another process of this node proposing at the same moment looks after it.
    with registry.chain.one_writer():
        return _propose_successor(node, registry, pool_id, member.member_id, member.account)


def _propose_successor(node: NodeContext, registry: AssetRegistryClient, pool_id: int, member_id: int,
                       account: str) -> SuccessionVote:
    registry.chain.wait_for_sent()  # a proposal sent by a run stopped before its receipt opens the round looked at
    open_vote = registry.succession(pool_id)
    if open_vote.successor_member_id != 0 and open_vote.successor_member_id == member_id:
        # Proposed already (this very proposal run again after its answer was lost, or another bank's): a new round
        # would only drop the votes cast in this one, so this bank votes in it, once.
        earlier = _voted_earlier(registry, pool_id, open_vote.round, node.member_id)
        if earlier is None:
            return _after_vote(registry, pool_id, open_vote.round,
                               registry.vote_successor(pool_id, open_vote.round))
        if open_vote.votes < open_vote.required:
            return _after_vote(registry, pool_id, open_vote.round, earlier)
        # Its votes reach the quorum only since a suspension or removal: no vote of this bank can decide it any more
        # (only a vote checks the count), so a new round does, as before.
    elif open_vote.round and registry.pool(pool_id).custodian_member_id == member_id:
        # Decided for this successor already, by this bank's vote if it is this very proposal run again after its
        # answer was lost: the contract would refuse a new proposal (the custodian is no longer removed).
        earlier = _voted_earlier(registry, pool_id, open_vote.round, node.member_id)
        if earlier is not None:
            return _after_vote(registry, pool_id, open_vote.round, earlier)
    round_, receipt = registry.propose_successor(pool_id, account)
    return _after_vote(registry, pool_id, round_, receipt)


def _voted_earlier(registry: AssetRegistryClient, pool_id: int, round_: int, member_id: int) -> Receipt | None:
    """The receipt of `member_id`'s vote in the round (its proposal's, for the proposer), if it voted."""
    return _receipt_of_event(registry, pool_id, "successor_voted", round=round_, voterMemberId=member_id)


def _receipt_of_event(registry: AssetRegistryClient, pool_id: int, kind: str, **arguments: object) -> Receipt | None:
    """The receipt of the pool's first `kind` event whose arguments include `arguments`, if the chain has one: the
    action run again after its answer was lost finds it there instead of sending it twice."""
    for event in registry.pool_events(pool_id):
        if event.kind == kind and all(event.args[name] == value for name, value in arguments.items()):
            return registry.chain.wait_for_receipt(event.tx_hash)
    return None


def vote_successor(node: NodeContext, pool_id: int) -> SuccessionVote:
    """Vote for the successor proposed in the pool's open succession round. Run again after its answer was lost, it
    returns the vote this bank cast in the latest round (which may have decided it) instead of voting twice."""
    registry = asset_registry(node, signing=True)
    # Held from the look to the receipt: another process of this node voting at the same moment finds this vote.
    with registry.chain.one_writer():
        return _vote_successor(node, registry, pool_id)


def _vote_successor(node: NodeContext, registry: AssetRegistryClient, pool_id: int) -> SuccessionVote:
    registry.chain.wait_for_sent()  # a vote sent by a run stopped before its receipt is mined first, then found
    open_vote = registry.succession(pool_id)
    earlier = _voted_earlier(registry, pool_id, open_vote.round, node.member_id) if open_vote.round else None
    if earlier is not None:
        return _after_vote(registry, pool_id, open_vote.round, earlier)
    if open_vote.successor_member_id == 0:
        raise NotFound(f"pool {pool_id} has no open succession vote", code="no_succession")
    receipt = registry.vote_successor(pool_id, open_vote.round)
    return _after_vote(registry, pool_id, open_vote.round, receipt)


def _after_vote(registry: AssetRegistryClient, pool_id: int, round_: int, receipt: Receipt) -> SuccessionVote:
    after = registry.succession(pool_id)
    # A round is closed by its deciding vote, or replaced by a newer proposal (then it was not decided).
    decided = after.round == round_ and after.successor_member_id == 0
    return SuccessionVote(pool_id, round_, decided, 0 if decided else after.votes, after.required, receipt)


def report_hash_of(report: bytes) -> bytes:
    """What an attestation records of an audit report: its SHA-256 (the report stays off chain)."""
    return hashlib.sha256(report).digest()


def attest(node: NodeContext, pool_id: int, version: int, report_hash: bytes) -> Receipt:
    """Attest a pool version (the node's signer must be an active auditor member)."""
    if len(report_hash) != 32:
        raise InvalidInput("a report hash is 32 bytes (SHA-256)", code="invalid_report_hash")
    registry = asset_registry(node, signing=True)
    # A copy sent by a run stopped before its receipt, or by another process of this node at the same moment (the API
    # server beside `alliance assets attest`), is found instead of sent again: the contract takes any number of them,
    # so only the signer's lock, held by send_once from the look to the receipt, keeps the second one out.
    return registry.chain.send_once(lambda: _attested_earlier(registry, pool_id, version, node.member_id, report_hash),
                                    lambda: registry.attest(pool_id, version, report_hash))


def _attested_earlier(registry: AssetRegistryClient, pool_id: int, version: int, auditor_member_id: int,
                      report_hash: bytes) -> Receipt | None:
    """The receipt of this very attestation if the chain has it already: run again after its answer was lost (a
    crash, a client's retry), it would otherwise be recorded twice, since the contract takes any number of them."""
    return _receipt_of_event(registry, pool_id, "attested", version=version, auditorMemberId=auditor_member_id,
                             reportHash=report_hash)


def report_servicing(node: NodeContext, pool_id: int, period: int, *, version: int | None = None,
                     statuses: dict[bytes, LoanStatus] | None = None,
                     chunk_bytes: int = STATUS_CHUNK_BYTES) -> ServicingResult:
    """Report the statuses of a version's loans (default: the pool's latest version) for `period`: the root and
    counts with the first `chunk_bytes` of the packed statuses, then the rest in chunks. Run again after a crash, it
    finds the report on chain and publishes the statuses still missing."""
    # Checked before anything is sent: a period taken on chain but refused by the store's column would be lost.
    if not 1 <= period <= MAX_PERIOD or (version is not None and not 1 <= version <= MAX_VERSION):
        raise InvalidInput(f"a period and a version are 1 to {MAX_PERIOD:,}", code="invalid_period")
    registry = asset_registry(node, signing=True)
    sync_loan_mirror(node.store, registry, from_block=node.deployment.contracts["AssetRegistry"].block_number)
    if version is None:
        version = registry.pool(pool_id).version_count
    with node.store.session() as session:
        loan_ids = [bytes(i) for i in session.scalars(
            select(AssetMirrorLoan.loan_id).where(AssetMirrorLoan.pool_id == pool_id,
                                                  AssetMirrorLoan.version == version)
            .order_by(AssetMirrorLoan.position))]
        if not version_complete(session, pool_id, version):
            if loan_ids:
                raise Conflict(f"version {version} of pool {pool_id} has only {len(loan_ids):,} of its loan ids "
                               "published so far; report once its custodian has published them all",
                               code="loan_ids_incomplete")
            raise NotFound(f"pool {pool_id} has no anchored version {version} with published loan ids",
                           code="version_not_found")
        if statuses is None:
            statuses = _statuses_from_records(session, pool_id, version)
    missing = [i for i in loan_ids if i not in statuses]
    extra = set(statuses) - set(loan_ids)
    if missing or extra:
        raise InvalidInput(f"statuses must cover exactly the {len(loan_ids)} loans of version {version}: "
                           f"{len(missing)} missing, {len(extra)} not in the version", code="statuses_mismatch")
    values = [(loan_id, int(statuses[loan_id])) for loan_id in loan_ids]
    root = StandardMerkleTree.of(values, STATUS_ENCODING).root
    counts = [0] * len(LoanStatus)
    for _, status in values:
        counts[status - 1] += 1
    packed = pack_statuses([s for _, s in values])
    _finish_earlier_statuses(node, registry, pool_id, period, chunk_bytes)
    # A copy sent by a run stopped before its receipt, or by another process (the API beside the CLI), is found and
    # stored: sent again, it is refused for its period, and the statuses behind the loans' proofs were lost.
    receipt = registry.chain.send_once(lambda: _reported_earlier(registry, pool_id, version, period, root),
                                       lambda: registry.report_servicing(pool_id, version, period, root, counts,
                                                                         packed[:chunk_bytes]),
                                       refused_as_done=(AssetRegistryPeriodNotIncreasing,))
    # Stored before the rest of its statuses go: a node stopped between chunks then holds what the next report of
    # the pool needs to finish them (_finish_earlier_statuses), should the period not be reported again first.
    row = AssetServicingReport(pool_id=pool_id, version=version, period=period, status_root=root,
                               statuses=json.dumps([s for _, s in values]), tx_hash=receipt.tx_hash,
                               block_number=receipt.block_number)
    once_more_on_conflict(lambda: _store_servicing_report(node, row))
    publish_remaining_statuses(registry, pool_id, period, packed, chunk_bytes)
    return ServicingResult(pool_id, version, period, root, counts, receipt)


def _finish_earlier_statuses(node: NodeContext, registry: AssetRegistryClient, pool_id: int, period: int,
                             chunk_bytes: int) -> None:
    """Publish the rest of the statuses of the pool's latest reported period before a later period is reported: the
    contract takes statuses of the latest period only, so reporting the next one would leave that period's gap in
    every bundle of its loans for good. Done from this node's stored report; one another custodian sent (custody
    changed since) cannot be finished here, and is logged."""
    progress = registry.statuses_progress(pool_id)
    if not 0 < progress.period < period or progress.published >= progress.length:
        return
    with node.store.session() as session:
        stored = session.scalar(select(AssetServicingReport.statuses).where(
            AssetServicingReport.pool_id == pool_id, AssetServicingReport.period == progress.period))
    if stored is None:
        logger.warning("pool %d: period %d has %d of its %d bytes of statuses on chain and was not reported by this "
                       "node; reporting period %d leaves that gap for good (every bundle of its loans names it)",
                       pool_id, progress.period, progress.published, progress.length, period)
        return
    publish_remaining_statuses(registry, pool_id, progress.period, pack_statuses(json.loads(stored)), chunk_bytes)


def publish_remaining_statuses(registry: AssetRegistryClient, pool_id: int, period: int, packed: bytes,
                                chunk_bytes: int) -> None:
    """Publish the period's statuses not yet on chain, a chunk a transaction, each after a look at how far they are:
    this report run again after a crash, or another process of this node, may have published some. A later period
    reported meanwhile closes this one (the contract takes statuses of the latest period only); its gap shows in
    every bundle of its loans and in the auditor's check."""
    while True:
        with registry.chain.one_writer():
            registry.chain.wait_for_sent()
            progress = registry.statuses_progress(pool_id)
            if progress.period != period or progress.published >= len(packed):
                return
            offset = progress.published
            registry.publish_statuses(pool_id, period, offset, packed[offset:offset + chunk_bytes])


def _store_servicing_report(node: NodeContext, row: AssetServicingReport) -> None:
    """Store the report unless its period is stored already: then it is this very report, sent again (a client's
    retry) and found on chain by _reported_earlier, since the contract takes one report per period."""
    with node.store.transaction() as session:
        stored = session.scalar(select(AssetServicingReport.id).where(AssetServicingReport.pool_id == row.pool_id,
                                                                      AssetServicingReport.period == row.period))
        if stored is None:
            session.add(row)


def _reported_earlier(registry: AssetRegistryClient, pool_id: int, version: int, period: int,
                      root: bytes) -> Receipt | None:
    """The receipt of this very report if the chain has it already: one mined before the node stopped and stored
    it (sent again, the contract would refuse its period, and the statuses behind the loans' proofs would be lost).
    A different report of the period is left to the contract to refuse."""
    if registry.pool(pool_id).last_servicing_period < period:
        return None
    return _receipt_of_event(registry, pool_id, "servicing", period=period, version=version, statusRoot=root)


def read_status_file(path: Path) -> dict[bytes, LoanStatus]:
    """Statuses from a CSV with the columns loan_id (0x-hex) and status (a `LoanStatus` name)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _read_statuses(csv.DictReader(handle))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the status file is not UTF-8 text (byte {exc.start})", code="bad_status_file") from None
    except csv.Error as exc:
        raise InvalidInput(f"the status file is not valid CSV: {exc}", code="bad_status_file") from None
    except OSError as exc:  # not this user's to read, or a socket
        raise InvalidInput(f"the status file {path} cannot be read: {exc.strerror or exc}",
                           code="bad_status_file") from None


def _read_statuses(reader: csv.DictReader[str]) -> dict[bytes, LoanStatus]:
    statuses: dict[bytes, LoanStatus] = {}
    # Names and cells are read with the spaces around them dropped, as a tape's are ("loan_id, status" from a
    # spreadsheet was refused).
    reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
    if sorted(reader.fieldnames) != ["loan_id", "status"]:
        raise InvalidInput("a status file has exactly the columns loan_id,status", code="bad_status_file")
    for row in reader:
        try:
            # A short row leaves its missing cells None; a long one puts its extra cells under None.
            if None in row or None in row.values():
                raise ValueError("cells do not match the columns")
            loan_id = hex32(row["loan_id"].strip())
            status = LoanStatus[row["status"].strip().lower()]
        except (ValueError, KeyError):
            raise InvalidInput(f"line {reader.line_num}: need a 0x loan id and one of "
                               f"{[s.name for s in LoanStatus]}", code="bad_status_file") from None
        if loan_id is None or loan_id in statuses:
            raise InvalidInput(f"line {reader.line_num}: bad or repeated loan id", code="bad_status_file")
        statuses[loan_id] = status
    return statuses


def parse_statuses(raw: dict[str, str]) -> dict[bytes, LoanStatus]:
    """Statuses given as loan id (0x-hex) -> status name, as the API takes them; InvalidInput (bad_statuses) for a
    malformed or repeated id or an unknown status."""
    statuses: dict[bytes, LoanStatus] = {}
    for text, name in raw.items():
        loan_id = hex32(text)
        if loan_id is None or name not in LoanStatus.__members__:
            raise InvalidInput(f"statuses: need 0x loan ids and one of {[s.name for s in LoanStatus]}",
                               code="bad_statuses")
        if loan_id in statuses:
            # "0xAB..." and "0xab..." are one loan: a second status for it was kept and the first one dropped.
            raise InvalidInput("statuses: a loan id is given twice", code="bad_statuses")
        statuses[loan_id] = LoanStatus[name]
    return statuses


def _statuses_from_records(session: Any, pool_id: int, version: int) -> dict[bytes, LoanStatus]:
    version_ref = session.scalar(select(AssetVersion.id).join(AssetPool, AssetVersion.pool_ref == AssetPool.id)
                                 .where(AssetPool.pool_id == pool_id, AssetVersion.version == version))
    if version_ref is None:
        raise InvalidInput(f"this node holds no records of pool {pool_id} version {version}; give a status file",
                           code="statuses_required")
    return {r.loan_id: r.status for r in load_records(session, version_ref)}
