"""The loan ids of an anchored pool version, from this bank's store, in version order (their positions in the tree).

An auditor samples loans from them for `alliance assets prove --loans-file`, and an operator reconciles a pool with
them. A version may hold a million loans, so they are read a slice at a time by position (the store's unique
(version, position) index), never all at once: the API answers a page, the CLI streams every slice to its output as
it is read, and neither holds more than a slice in memory.

Only anchored versions are listed, by their on-chain number, as `alliance assets prove` proves anchored loans only:
a draft has no number yet and may still be discarded (`alliance assets show` lists it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.errors import NotFound
from node.store.asset_tables import AssetLoan, AssetPool, AssetVersion
from node.store.db import Store
from node.text import quoted, storable_text

# Loan ids per page of GET /v1/assets/pools/{name}/versions/{n}/loans: an id is 68 bytes of JSON, so the largest page
# is some 0.7 MB, and a million-loan version is a hundred requests.
DEFAULT_LOANS_PAGE = 1_000
MAX_LOANS_PAGE = 10_000
MAX_POSITION = 2**31 - 1  # asset_loans.position (INTEGER): the paging cursor
# Ids read from the store at once while streaming a whole version: 10,000 ids are ~1 MB of Python objects.
STREAM_SLICE = 10_000


@dataclass(frozen=True)
class AnchoredVersion:
    """A version of a local pool anchored on chain: its names and its store row."""

    pool_name: str
    pool_id: int
    version: int
    loan_count: int
    row_id: int

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool_name, "pool_id": self.pool_id, "version": self.version,
                "loan_count": self.loan_count}


def anchored_version(store: Store, pool_name: str, version: int | None = None) -> AnchoredVersion:
    """Version `version` of the local pool `pool_name` (None: its latest anchored version); NotFound naming what is
    missing: the pool (`pool_not_found`) or the version (`version_not_found`)."""
    with store.session() as session:
        pool = session.scalar(select(AssetPool).where(AssetPool.name == storable_text(pool_name,
                                                                                     field="the pool name")))
        if pool is None:
            raise NotFound(f"no local pool named {quoted(pool_name)}", code="pool_not_found")
        found = _anchored_row(session, pool.id, version)
        if found is None or pool.pool_id is None or found.version is None:  # an anchored version has both numbers
            raise NotFound(_no_version(pool_name, version), code="version_not_found")
        return AnchoredVersion(pool.name, pool.pool_id, found.version, found.loan_count, found.id)


def _anchored_row(session: Session, pool_row_id: int, version: int | None) -> AssetVersion | None:
    query = select(AssetVersion).where(AssetVersion.pool_ref == pool_row_id, AssetVersion.state == "anchored")
    if version is None:
        return session.scalar(query.order_by(AssetVersion.version.desc()).limit(1))
    return session.scalar(query.where(AssetVersion.version == version))


def _no_version(pool_name: str, version: int | None) -> str:
    if version is None:
        return f"pool {pool_name!r} has no anchored version (a draft is listed once anchored)"
    return f"pool {pool_name!r} has no anchored version {version} in this node's store"


@dataclass(frozen=True)
class LoanIdsPage:
    """A page of a version's loan ids; `next_after` (the position of the page's last id) continues while more follow."""

    loan_ids: list[bytes]
    next_after: int | None


def loan_ids_page(store: Store, version: AnchoredVersion, *, after: int | None, limit: int) -> LoanIdsPage:
    """At most `limit` loan ids of `version` in version order, those after position `after` (None: from the first).
    One row more than the page is read, so a last page names no cursor."""
    with store.session() as session:
        query = (select(AssetLoan.position, AssetLoan.loan_id).where(AssetLoan.version_ref == version.row_id)
                 .order_by(AssetLoan.position).limit(limit + 1))
        if after is not None:
            query = query.where(AssetLoan.position > after)
        rows = session.execute(query).all()
    page = rows[:limit]
    return LoanIdsPage([bytes(loan_id) for _position, loan_id in page],
                       page[-1][0] if len(rows) > limit else None)


def iter_loan_ids(store: Store, version: AnchoredVersion) -> Iterator[list[bytes]]:
    """Every loan id of `version` in version order, a slice of at most STREAM_SLICE at a time, each read in its own
    short session (a slow reader of the stream holds no transaction open)."""
    after: int | None = None
    while True:
        page = loan_ids_page(store, version, after=after, limit=STREAM_SLICE)
        if page.loan_ids:
            yield page.loan_ids
        if page.next_after is None:
            return
        after = page.next_after
