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
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.assets.history import BUNDLE_FORMAT, ChainStatuses, hex32, pool_history
from node.assets.pools import asset_registry, build_tree, load_records
from node.assets.records import HASH32, LEAF_ENCODING, LoanRecord, LoanStatus
from node.chain.asset_registry import AssetRegistryClient
from node.errors import InvalidInput, NotFound
from node.runtime import NodeContext
from node.store.asset_tables import AssetLoan, AssetPool, AssetVersion
from node.text import storable_text

logger = logging.getLogger(__name__)


def build_bundle(node: NodeContext, reference: str) -> dict[str, Any]:
    """The provenance bundle of a loan this bank anchored, by loan id (0x-hex) or local loan reference.

    The loan's newest anchored version is used; the history is read from the chain, as of its head.
    """
    storable_text(reference, field="the loan reference")  # a command line's undecodable bytes: never sent
    with node.store.session() as session:
        query = (select(AssetLoan.position, AssetVersion.id, AssetVersion.version, AssetPool.pool_id)
                 .join(AssetVersion, AssetLoan.version_ref == AssetVersion.id)
                 .join(AssetPool, AssetVersion.pool_ref == AssetPool.id)
                 .where(AssetVersion.state == "anchored")
                 .order_by(AssetVersion.block_number.desc()).limit(1))
        if reference.startswith("0x"):
            # In full: bytes.fromhex alone took "0x12" (or hex with spaces) as a shorter id, found nothing and
            # answered loan_not_found (404) for a malformed id.
            if not HASH32.fullmatch(reference):
                raise InvalidInput("a loan id is 0x + 64 hex digits", code="invalid_loan_id")
            query = query.where(AssetLoan.loan_id == bytes.fromhex(reference[2:]))
        else:
            _refuse_ambiguous_reference(session, reference)
            query = query.where(AssetLoan.loan_reference == reference)
        found = session.execute(query).first()
        if found is None:
            raise NotFound(f"no anchored loan {reference!r} in this node's pools", code="loan_not_found")
        position, version_ref, version, pool_id = found
        if pool_id is None or version is None:  # an anchored version always has both
            raise NotFound(f"loan {reference!r} is in no anchored version", code="loan_not_found")
        records = load_records(session, version_ref)
    return bundle_for(asset_registry(node), pool_id, version, records, position)


def _refuse_ambiguous_reference(session: Session, reference: str) -> None:
    """InvalidInput if the reference names loans of several originators (a bought loan may carry a reference this
    bank uses too): the newest of them was proven, quite possibly another loan than the one meant."""
    originators = sorted(session.scalars(
        select(AssetLoan.originator_code).distinct().join(AssetVersion, AssetLoan.version_ref == AssetVersion.id)
        .where(AssetVersion.state == "anchored", AssetLoan.loan_reference == reference)))
    if len(originators) > 1:
        raise InvalidInput(f"loan reference {reference!r} names loans of originators {', '.join(originators)}; "
                           "give the loan id (0x...) instead", code="ambiguous_loan_reference")


def loan_statuses(chain_statuses: ChainStatuses, servicing: Sequence[dict[str, Any]],
                  loan_id: bytes) -> list[dict[str, Any]]:
    """The loan's status in each servicing report of the pool whose version holds it, whichever custodian sent it,
    with its proof to the report's status root, rebuilt from the chain alone (the version's published ids and the
    statuses the report carried). A report whose statuses do not rebuild its root gets no entry: the verifier names
    that period as one the bundle gives no status for."""
    entries = []
    for report in servicing:
        if loan_id not in chain_statuses.version_ids(report["version"]):
            continue
        rebuilt = chain_statuses.tree(report)
        if rebuilt is None:
            logger.warning("pool servicing period %s: the statuses on chain do not rebuild its status root; the "
                           "bundle leaves the period out", report["period"])
            continue
        loan_ids, tree = rebuilt
        position = loan_ids.index(loan_id)
        entries.append({"period": report["period"], "status": LoanStatus(tree.values[position][1]).name,
                        "proof": [hex32(node) for node in tree.proof(position)]})
    return entries


def bundle_for(registry: AssetRegistryClient, pool_id: int, version: int, records: Sequence[LoanRecord],
               position: int) -> dict[str, Any]:
    """The bundle of the loan at `position` of an anchored version whose records are `records`, with the loan's
    status in every servicing report of the pool that covers it (as of the chain head)."""
    tree = build_tree(records)
    record = records[position]
    head = registry.chain.block_number()
    history = pool_history(registry.pool_events(pool_id, to_block=head))
    anchor = next((v for v in history.versions if v["version"] == version), None)
    if anchor is None or anchor["root"] != hex32(tree.root):
        raise NotFound(f"version {version} of pool {pool_id} is not anchored on chain with this node's root",
                       code="version_not_on_chain")
    return {
        "format": BUNDLE_FORMAT,
        "chain_id": registry.chain.chain_id,
        "registry": registry.address,
        "pool_id": pool_id,
        "version": version,
        "record": record.to_json(),
        "leaf_encoding": list(LEAF_ENCODING),
        "leaf": hex32(record.leaf()),
        "proof": [hex32(node) for node in tree.proof(position)],
        "root": hex32(tree.root),
        "anchor": {"block_number": anchor["block_number"], "tx_hash": anchor["tx_hash"]},
        "custody": history.custody,
        "servicing": history.servicing,
        "loan_statuses": loan_statuses(ChainStatuses(registry, pool_id, head), history.servicing, record.loan_id),
        "attestations": history.attestations,
        "as_of_block": head,
    }
