"""A pool's history as the AssetRegistry's events tell it, in the JSON shape of provenance bundles.

Shared by the bundle builder (on a node) and the auditor's verifier (on nothing but an RPC endpoint), so
both derive the same entries from the same events; this module needs no database and no node. A version's
loan ids are not part of the bundle (a million of them would be); `version_loan_ids` reassembles them from
their LoanIdsPublished chunks for whoever checks them, and `ChainStatuses` rebuilds each servicing period's
status tree from those ids and the statuses its report carried (LoanStatusesReported).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from node.assets.records import STATUS_ENCODING, unpack_statuses
from node.chain.asset_registry import AssetRegistryClient, PoolEvent, PublishedLoanIds
from node.merkle import StandardMerkleTree

BUNDLE_FORMAT = "alliance-loan-provenance/v1"


def hex32(value: bytes) -> str:
    return "0x" + bytes(value).hex()


@dataclass
class PoolHistory:
    """A pool's history derived from its events: custody hand-overs, versions, servicing, attestations."""

    custody: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    servicing: list[dict[str, Any]] = field(default_factory=list)
    attestations: list[dict[str, Any]] = field(default_factory=list)


def pool_history(events: Sequence[PoolEvent]) -> PoolHistory:
    """The history entries of a pool's events (chain order), in the bundle's JSON shape."""
    history = PoolHistory()
    for e in events:
        where = {"block_number": e.block_number, "tx_hash": e.tx_hash}
        if e.kind == "registered":
            history.custody.append({"from_member_id": 0, "to_member_id": e.args["originatorMemberId"], **where})
        elif e.kind == "transferred":
            history.custody.append({"from_member_id": e.args["fromMemberId"], "to_member_id": e.args["toMemberId"],
                                    **where})
        elif e.kind == "succeeded":  # the custodian was removed from the alliance; the members voted a successor
            history.custody.append({"from_member_id": e.args["fromMemberId"], "to_member_id": e.args["toMemberId"],
                                    "by_vote": True, **where})
        elif e.kind == "anchored":
            history.versions.append({"version": e.args["version"], "root": hex32(e.args["root"]),
                                     "loan_count": e.args["loanCount"],
                                     "total_principal": str(e.args["totalPrincipal"]), **where})
        elif e.kind == "servicing":
            history.servicing.append({"version": e.args["version"], "period": e.args["period"],
                                      "status_root": hex32(e.args["statusRoot"]),
                                      "status_counts": list(e.args["statusCounts"]), **where})
        elif e.kind == "attested":
            history.attestations.append({"version": e.args["version"], "auditor_member_id": e.args["auditorMemberId"],
                                         "report_hash": hex32(e.args["reportHash"]), **where})
    return history


class LoanIdsGap(ValueError):
    """A version's chunks of loan ids do not follow each other (one missing, or two overlapping)."""


def version_loan_ids(chunks: Sequence[PublishedLoanIds]) -> list[bytes]:
    """The ids of one version from its chunks (chain order), checking each starts where the previous ended."""
    ids: list[bytes] = []
    for chunk in chunks:
        if chunk.offset != len(ids):
            raise LoanIdsGap(f"the chunk in block {chunk.block_number} starts at offset {chunk.offset}, "
                             f"after {len(ids)} ids")
        ids.extend(chunk.loan_ids)
    return ids


def pools_holding_loan(chunks: Sequence[PublishedLoanIds], loan_id: bytes,
                       loan_count: Callable[[int, int], int]) -> list[int]:
    """The pools where `loan_id` is active after `chunks` (every LoanIdsPublished event up to a block, chain order),
    by the loan-id mirror's rule (node.assets.screening): in the pool's latest complete version, or in the version
    above it whose ids are still being published. `loan_count(pool, version)` gives a version's anchored count."""
    published: dict[tuple[int, int], int] = defaultdict(int)
    holding: set[tuple[int, int]] = set()
    for chunk in chunks:
        published[(chunk.pool_id, chunk.version)] += len(chunk.loan_ids)
        if loan_id in chunk.loan_ids:
            holding.add((chunk.pool_id, chunk.version))
    active = []
    for pool in sorted({pool for pool, _ in holding}):
        complete = max((v for (p, v), count in published.items() if p == pool and count == loan_count(p, v)),
                       default=0)
        if any(p == pool and v >= complete for p, v in holding):
            active.append(pool)
    return active


@dataclass(frozen=True)
class VersionLoanIds:
    """A version's published loan ids as one read of its LoanIdsPublished chunks gives them."""

    ids: list[bytes]  # in version order: the order of its status trees
    chunks: int

    @cached_property
    def id_set(self) -> frozenset[bytes]:
        """For membership: a list searched for every loan of an audit sample took a second per period. Made when
        first asked: a million ids take a tenth of a second."""
        return frozenset(self.ids)


def read_version_loan_ids(registry: AssetRegistryClient, pool_id: int, version: int, *, from_block: int = 0,
                          to_block: int) -> VersionLoanIds:
    """The version's ids from its chunks in `from_block..to_block`; LoanIdsGap if they do not follow each other.
    The contract emits none before the block that anchors the version (its first chunk is in the anchoring
    transaction, later ones need the version to exist), so reading from that block gives what reading from 0 does."""
    chunks = registry.published_loan_ids(pool_id=pool_id, version=version, from_block=from_block, to_block=to_block)
    return VersionLoanIds(version_loan_ids(chunks), len(chunks))


class ChainStatuses:
    """A pool's servicing statuses as the chain holds them up to a block: each report's version's published loan
    ids, and the per-loan statuses the report carried. Whoever holds nothing but a chain endpoint (another custodian,
    the auditor) rebuilds any period's status tree from them; versions' ids are read once each, by `read_ids` if
    given (the verifier's, which its loan-id check shares: a million ids are some 250 transactions' logs)."""

    def __init__(self, registry: AssetRegistryClient, pool_id: int, to_block: int, *,
                 read_ids: Callable[[int], VersionLoanIds] | None = None) -> None:
        self._read_ids = read_ids or (lambda version: read_version_loan_ids(registry, pool_id, version,
                                                                            to_block=to_block))
        self._packed: dict[int, bytearray] = defaultdict(bytearray)
        out_of_order: set[int] = set()
        for chunk in registry.reported_statuses(pool_id, to_block=to_block):
            # The contract refuses a chunk at any other offset; one that does not follow anyway (an endpoint's gap)
            # leaves its period without statuses, which rebuild no root, and the verifier names the period.
            if chunk.offset != len(self._packed[chunk.period]):
                out_of_order.add(chunk.period)
            self._packed[chunk.period] += chunk.statuses
        for period in out_of_order:
            del self._packed[period]
        self._versions: dict[int, VersionLoanIds | None] = {}

    def _version(self, version: int) -> VersionLoanIds | None:
        """The version's published ids; None if its chunks do not follow each other."""
        if version not in self._versions:
            try:
                self._versions[version] = self._read_ids(version)
            except LoanIdsGap:
                self._versions[version] = None
        return self._versions[version]

    def version_ids(self, version: int) -> list[bytes]:
        """The version's loan ids in version order (empty if its chunks do not follow each other)."""
        published = self._version(version)
        return published.ids if published is not None else []

    def holds(self, version: int, loan_id: bytes) -> bool:
        """Whether the version's published ids hold the loan."""
        published = self._version(version)
        return published is not None and loan_id in published.id_set

    def tree(self, report: dict[str, Any]) -> tuple[list[bytes], StandardMerkleTree] | None:
        """The status tree of a servicing report (a `PoolHistory.servicing` entry) with its loan ids in version
        order, if the statuses it carried rebuild its status root; None if they do not (or are not all published)."""
        loan_ids = self.version_ids(report["version"])
        if not loan_ids:
            return None
        try:
            statuses = unpack_statuses(bytes(self._packed.get(report["period"], b"")), len(loan_ids))
        except ValueError:
            return None
        tree = StandardMerkleTree.of(list(zip(loan_ids, statuses, strict=True)), STATUS_ENCODING)
        return (loan_ids, tree) if hex32(tree.root) == report["status_root"] else None
