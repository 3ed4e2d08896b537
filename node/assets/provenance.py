"""Provenance bundles: everything an auditor needs to check one loan against the chain, as one JSON file.

A bundle holds the loan's canonical record, its leaf and Merkle proof, the pool and version it belongs
to, the chain id and registry address, the pool's history as of a block (anchoring, custody, servicing,
attestations) and the loan's status in every servicing report whose version holds the loan, each with a proof
to the report's status root. Those statuses come from the chain (each report carries its loans' statuses), not
from this node's store, so a bundle covers the periods of every custodian, before and after a hand-over.
Nothing in it is trusted: `node.assets.verify` recomputes the leaf from the record, walks the proof to a
root, and compares that root and every history entry with the chain. The history is derived from the
AssetRegistry's events by `node.assets.history`, which the verifier reuses on the events it fetches itself.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.assets.history import BUNDLE_FORMAT, ChainStatuses, PoolHistory, hex32, pool_history
from node.assets.pools import asset_registry, build_tree, load_records
from node.assets.records import HASH32, LEAF_ENCODING, LoanRecord, LoanStatus
from node.chain.asset_registry import AssetRegistryClient
from node.errors import InvalidInput, NotFound
from node.runtime import NodeContext
from node.store.asset_tables import AssetLoan, AssetPool, AssetVersion
from node.text import quoted, storable_text

logger = logging.getLogger(__name__)


# At most this many loans' bundles in one call: they are all held in memory until the last is built (a loan's bundle
# is some 20 KB, plus ~1.4 KB for each servicing period covering it), and the store is read for all of them first.
MAX_BUNDLES = 1_000


@dataclass(frozen=True)
class _AnchoredLoan:
    """Where a loan asked for sits: its anchored version (store row and on-chain numbers) and its position in it."""

    pool_id: int
    version: int
    version_ref: int
    position: int


def build_bundle(node: NodeContext, reference: str) -> dict[str, Any]:
    """The provenance bundle of a loan this bank anchored, by loan id (0x-hex) or local loan reference.

    The loan's newest anchored version is used; the history is read from the chain, as of its head.
    """
    return build_bundles(node, [reference])[0]


def build_bundles(node: NodeContext, references: Sequence[str]) -> list[dict[str, Any]]:
    """The provenance bundles of several loans (ids or references, as `build_bundle` takes one), in the order given,
    all as of one chain head.

    An auditor samples hundreds of loans of one pool, and a bundle's cost is its trees, not the loan: the version's
    tree from its records (13 s for a million loans) and each servicing period's status tree from the chain (11 s
    each). Built one loan at a time, a 100-loan sample of a million-loan pool a year into servicing took hours; here
    each version's tree and each period's status tree is built once for every loan asked of it. Every reference is
    found in the store before anything is read from the chain: one unknown loan refuses the whole call.
    """
    if not references:
        raise InvalidInput("no loan given to prove", code="no_loans")
    if len(references) > MAX_BUNDLES:
        raise InvalidInput(f"{len(references)} loans asked; at most {MAX_BUNDLES:,} bundles are built at once",
                           code="too_many_loans")
    for reference in references:
        storable_text(reference, field="the loan reference")  # a command line's undecodable bytes: never sent
    with node.store.session() as session:
        loans = [_anchored_loan(session, reference) for reference in references]
    registry = asset_registry(node)
    head = registry.chain.block_number()
    bundles: dict[_AnchoredLoan, dict[str, Any]] = {}
    for pool_id in dict.fromkeys(loan.pool_id for loan in loans):  # one pool's trees in memory at a time
        in_pool = [loan for loan in dict.fromkeys(loans) if loan.pool_id == pool_id]
        bundles.update(_pool_bundles(node, registry, pool_id, in_pool, head))
    return [bundles[loan] for loan in loans]


def _anchored_loan(session: Session, reference: str) -> _AnchoredLoan:
    """The loan's newest anchored version and position; NotFound if this bank anchored no such loan."""
    query = (select(AssetLoan.position, AssetVersion.id, AssetVersion.version, AssetPool.pool_id)
             .join(AssetVersion, AssetLoan.version_ref == AssetVersion.id)
             .join(AssetPool, AssetVersion.pool_ref == AssetPool.id)
             .where(AssetVersion.state == "anchored")
             .order_by(AssetVersion.block_number.desc()).limit(1))
    if reference.startswith("0x"):
        # In full: bytes.fromhex alone took "0x12" (or hex with spaces) as a shorter id, found nothing and
        # answered loan_not_found (404) for a malformed id.
        if not HASH32.fullmatch(reference):
            raise InvalidInput(f"a loan id is 0x + 64 hex digits, not {quoted(reference)}", code="invalid_loan_id")
        query = query.where(AssetLoan.loan_id == bytes.fromhex(reference[2:]))
    else:
        _refuse_ambiguous_reference(session, reference)
        query = query.where(AssetLoan.loan_reference == reference)
    found = session.execute(query).first()
    if found is None:
        raise NotFound(f"no anchored loan {quoted(reference)} in this node's pools", code="loan_not_found")
    position, version_ref, version, pool_id = found
    if pool_id is None or version is None:  # an anchored version always has both
        raise NotFound(f"loan {quoted(reference)} is in no anchored version", code="loan_not_found")
    return _AnchoredLoan(pool_id, version, version_ref, position)


def _pool_bundles(node: NodeContext, registry: AssetRegistryClient, pool_id: int, loans: Sequence[_AnchoredLoan],
                  head: int) -> dict[_AnchoredLoan, dict[str, Any]]:
    """The bundles of `loans`, all of pool `pool_id`, as of block `head`: each of their versions' trees built once,
    and each servicing period's status tree once for all of them."""
    history = pool_history(registry.pool_events(pool_id, to_block=head))
    bundles: dict[_AnchoredLoan, tuple[bytes, dict[str, Any]]] = {}
    for version_ref in dict.fromkeys(loan.version_ref for loan in loans):
        in_version = [loan for loan in loans if loan.version_ref == version_ref]
        with node.store.session() as session:
            records = load_records(session, version_ref)
        made = _version_bundles(registry, pool_id, in_version[0].version, records,
                                [loan.position for loan in in_version], history, head)
        bundles.update((loan, (records[loan.position].loan_id, bundle))
                       for loan, bundle in zip(in_version, made, strict=True))
    _add_pool_facts(registry, pool_id, history, head, list(bundles.values()))
    return {loan: bundle for loan, (_loan_id, bundle) in bundles.items()}


def _add_pool_facts(registry: AssetRegistryClient, pool_id: int, history: PoolHistory, head: int,
                    bundles: Sequence[tuple[bytes, dict[str, Any]]]) -> None:
    """Complete bundles of one pool (each with its loan's id) with what is read per pool, as of block `head`: each
    loan's servicing statuses (each period's status tree built once for all), the attestations, the block."""
    statuses = loan_statuses(ChainStatuses(registry, pool_id, head), history.servicing,
                             {loan_id for loan_id, _bundle in bundles})
    for loan_id, bundle in bundles:
        bundle.update(loan_statuses=statuses[loan_id], attestations=history.attestations, as_of_block=head)


def _refuse_ambiguous_reference(session: Session, reference: str) -> None:
    """InvalidInput if the reference names loans of several originators (a bought loan may carry a reference this
    bank uses too): the newest of them was proven, quite possibly another loan than the one meant."""
    originators = sorted(session.scalars(
        select(AssetLoan.originator_code).distinct().join(AssetVersion, AssetLoan.version_ref == AssetVersion.id)
        .where(AssetVersion.state == "anchored", AssetLoan.loan_reference == reference)))
    if len(originators) > 1:
        raise InvalidInput(f"loan reference {quoted(reference)} names loans of originators {', '.join(originators)}; "
                           "give the loan id (0x...) instead", code="ambiguous_loan_reference")


def loan_statuses(chain_statuses: ChainStatuses, servicing: Sequence[dict[str, Any]],
                  loan_ids: Collection[bytes]) -> dict[bytes, list[dict[str, Any]]]:
    """Each loan's status in each servicing report of the pool whose version holds it, whichever custodian sent it,
    with its proof to the report's status root, rebuilt from the chain alone (the version's published ids and the
    statuses the report carried); each report's tree is built once for all the loans. A report whose statuses do not
    rebuild its root gets no entry: the verifier names that period as one the bundle gives no status for."""
    entries: dict[bytes, list[dict[str, Any]]] = {loan_id: [] for loan_id in loan_ids}
    for report in servicing:
        # One pass over the version's ids (a million of them) per report, not one list search per loan.
        positions = {loan_id: position for position, loan_id in enumerate(chain_statuses.version_ids(report["version"]))
                     if loan_id in entries}
        if not positions:
            continue
        rebuilt = chain_statuses.tree(report)
        if rebuilt is None:
            logger.warning("pool servicing period %s: the statuses on chain do not rebuild its status root; the "
                           "bundle leaves the period out", report["period"])
            continue
        _loan_ids, tree = rebuilt
        for loan_id, position in positions.items():
            entries[loan_id].append({"period": report["period"], "status": LoanStatus(tree.values[position][1]).name,
                                     "proof": [hex32(node) for node in tree.proof(position)]})
    return entries


def bundle_for(registry: AssetRegistryClient, pool_id: int, version: int, records: Sequence[LoanRecord],
               position: int) -> dict[str, Any]:
    """The bundle of the loan at `position` of an anchored version whose records are `records`, with the loan's
    status in every servicing report of the pool that covers it (as of the chain head)."""
    head = registry.chain.block_number()
    history = pool_history(registry.pool_events(pool_id, to_block=head))
    [bundle] = _version_bundles(registry, pool_id, version, records, [position], history, head)
    _add_pool_facts(registry, pool_id, history, head, [(records[position].loan_id, bundle)])
    return bundle


def _version_bundles(registry: AssetRegistryClient, pool_id: int, version: int, records: Sequence[LoanRecord],
                     positions: Sequence[int], history: PoolHistory, head: int) -> list[dict[str, Any]]:
    """The bundles of the loans at `positions` of one anchored version, its tree built once, without the parts read
    per pool (loan statuses, attestations, as-of block), which `_add_pool_facts` adds."""
    tree = build_tree(records)
    anchor = next((v for v in history.versions if v["version"] == version), None)
    if anchor is None or anchor["root"] != hex32(tree.root):
        raise NotFound(f"version {version} of pool {pool_id} is not anchored on chain with this node's root",
                       code="version_not_on_chain")
    return [{
        "format": BUNDLE_FORMAT,
        "chain_id": registry.chain.chain_id,
        "registry": registry.address,
        "pool_id": pool_id,
        "version": version,
        "record": records[position].to_json(),
        "leaf_encoding": list(LEAF_ENCODING),
        "leaf": hex32(records[position].leaf()),
        "proof": [hex32(node) for node in tree.proof(position)],
        "root": hex32(tree.root),
        "anchor": {"block_number": anchor["block_number"], "tx_hash": anchor["tx_hash"]},
        "custody": history.custody,
        "servicing": history.servicing,
    } for position in positions]
