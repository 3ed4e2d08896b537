"""`/v1/assets`: ABS pools. Operators import, anchor (or discard a draft), transfer (or vote a successor for a
removed custodian's pool) and report servicing; auditors read and attest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status
from pydantic import BaseModel, BeforeValidator, Field, field_validator

from node.api.deps import NEXT_PAGE_HEADER, NodeDep, require_roles
from node.assets import lifecycle
from node.assets.pool_state import read_pool_state
from node.assets.pools import (
    DEFAULT_POOLS_PAGE,
    MAX_POOL_REF,
    MAX_POOLS_PAGE,
    anchor_draft,
    asset_registry,
    discard_draft,
    double_financing,
    import_tape_bytes,
    pools_page,
)
from node.assets.provenance import build_bundle, build_bundles
from node.assets.screening import DEFAULT_FLAGS_PAGE, MAX_FLAGS_PAGE
from node.assets.version_loans import DEFAULT_LOANS_PAGE, MAX_LOANS_PAGE, MAX_POSITION, anchored_version, loan_ids_page
from node.auth.apikeys import KeyInfo, Role
from node.json_numbers import JsonInt, not_a_boolean

router = APIRouter(prefix="/assets", tags=["assets"])

Operator = Annotated[KeyInfo, Depends(require_roles(Role.operator))]
Reader = Annotated[KeyInfo, Depends(require_roles(Role.operator, Role.auditor))]
Auditor = Annotated[KeyInfo, Depends(require_roles(Role.auditor))]
_HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
# The store's widths (node.assets.lifecycle), narrower than the contract's: a larger number is bad input (422).
PoolId = Annotated[int, Path(ge=1, le=lifecycle.MAX_POOL_ID, description="The pool's on-chain id.")]
# A pool's history grows by a servicing report a period for the pool's life; each event costs the node a call to
# the chain for its sender, so the route reads a page at a time (block numbers as far as a bigint goes).
_EVENT_CURSOR_PATTERN = r"^[0-9]{1,18}:[0-9]{1,9}$"
DEFAULT_EVENTS_PAGE = 100
MAX_EVENTS_PAGE = 1_000
VersionNumber = Annotated[int, Path(ge=1, le=lifecycle.MAX_VERSION, description="A version of the pool.")]


class AnchorIn(BaseModel):
    override_reason: str | None = Field(default=None, max_length=1000,
                                        description="Anchor despite screening findings, for this recorded reason.")


class TransferIn(BaseModel):
    to: str = Field(max_length=64, description="Member id, signing address or bank code of the recipient.")


class SuccessorIn(BaseModel):
    successor: str = Field(max_length=64, description="Member id, signing address or bank code of the new custodian.")


class SuccessionOut(BaseModel):
    tx_hash: str
    block_number: int
    pool_id: int
    round: int
    decided: bool = Field(description="The round is decided: custody passed to the successor, with this vote or, "
                                      "for a vote answered again, possibly with another member's later one.")
    votes: int = Field(description="Votes of the round that count, while it is open.")
    required: int = Field(description="Votes the registry's quorum needs now.")


# A loan's bundle is some 20 KB plus ~1.4 KB per servicing period covering it: 100 bundles of a pool five years into
# monthly servicing answer ~10 MB. A larger sample is several requests (the CLI builds up to 1,000 at once).
MAX_BUNDLES_PER_REQUEST = 100


class ProvenanceIn(BaseModel):
    loans: list[Annotated[str, Field(max_length=80)]] = Field(
        min_length=1, max_length=MAX_BUNDLES_PER_REQUEST,
        description="Loan ids (0x-hex) or this bank's loan references; one unknown loan refuses the request.")


class ServicingIn(BaseModel):
    period: JsonInt = Field(ge=1, le=lifecycle.MAX_PERIOD)
    version: Annotated[int, Field(ge=1, le=lifecycle.MAX_VERSION), BeforeValidator(not_a_boolean)] | None = Field(
        default=None, description="Default: the pool's latest version.")
    statuses: dict[str, str] | None = Field(default=None, description="loan id (0x-hex) -> status; default: the "
                                            "statuses of this bank's records of the version.")

    @field_validator("statuses", mode="before")
    @classmethod
    def _statuses_are_strings(cls, value: Any) -> Any:
        # One error for the map, not one per entry: 16 MB of {"id": 1, ...} made some 2 million, each listed.
        if isinstance(value, dict) and not all(isinstance(status, str) for status in value.values()):
            raise ValueError("each status is a string: current, dpd30, dpd60, dpd90, defaulted, repaid or repurchased")
        return value


class AttestationIn(BaseModel):
    report_sha256: str = Field(pattern=_HASH_PATTERN, description="0x + SHA-256 of the audit report.")


class TxOut(BaseModel):
    tx_hash: str
    block_number: int


# `text` (node.api.deps): a pool name and a loan reference may hold "/" (the CLI, POST /v1/abs-factory/pools and a tape
# take one), which no encoding gets through a plain path parameter: such a pool could not be anchored here, nor such a
# loan proved.
@router.post("/pools/{name:text}/tapes", status_code=status.HTTP_201_CREATED)
def create_draft(*, name: str, node: NodeDep, _key: Operator,
                 tape: Annotated[bytes, Body(media_type="text/csv", description="The loan tape (CSV, UTF-8).")],
                 pool_id: Annotated[int | None, Query(ge=1, le=lifecycle.MAX_POOL_ID, description=(
                     "Bind the pool to this on-chain pool, which this bank holds (received by transfer or "
                     "succession), so that anchoring adds its next version."))] = None) -> Any:
    """Import a loan tape as the pool's draft version; a bad row imports nothing (422 with every bad row)."""
    # Taken as bytes: a tape that is not UTF-8 is refused as a tape (loan_tape_rejected, re-export it), not as a body
    # that does not match the schema.
    return import_tape_bytes(node, name, tape, pool_id=pool_id).to_json()


@router.post("/pools/{name:text}/anchor", status_code=status.HTTP_201_CREATED)
def anchor_pool(*, name: str, body: AnchorIn | None = None, node: NodeDep, _key: Operator) -> Any:
    """Screen the pool's draft and anchor it on chain (409 with the findings unless overridden); no body is no
    override."""
    return anchor_draft(node, name, override_reason=None if body is None else body.override_reason).to_json()


@router.delete("/pools/{name:text}/draft", status_code=status.HTTP_204_NO_CONTENT)
def delete_draft(*, name: str, node: NodeDep, _key: Operator) -> None:
    """Drop the pool's draft (refused by screening, or the loans of its latest version again), so that a corrected
    tape can be imported."""
    discard_draft(node, name)


@router.get("/pools")
def list_pools(*, node: NodeDep, _key: Reader, response: Response,
               after: Annotated[int, Query(ge=0, le=MAX_POOL_REF, description=(
                   "The previous page's X-Next-After: pools created after it."))] = 0,
               limit: Annotated[int, Query(ge=1, le=MAX_POOLS_PAGE)] = DEFAULT_POOLS_PAGE) -> Any:
    """This bank's pools and versions, oldest pool first, a page at a time; X-Next-After continues while more follow."""
    page = pools_page(node, after=after, limit=limit)
    if page.next_after is not None:
        response.headers[NEXT_PAGE_HEADER] = str(page.next_after)
    return page.pools


@router.get("/pools/{pool_id}")
def read_pool(*, pool_id: PoolId, node: NodeDep, _key: Reader, response: Response,
              after: Annotated[str | None, Query(pattern=_EVENT_CURSOR_PATTERN, description=(
                  "The previous page's X-Next-After (block number:log index): events after it."))] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = DEFAULT_EVENTS_PAGE) -> Any:
    """A pool's on-chain state and event history in chain order, a page of events at a time; X-Next-After continues
    while more follow."""
    cursor = None if after is None else (int(after.split(":")[0]), int(after.split(":")[1]))
    state = read_pool_state(asset_registry(node), pool_id, after=cursor, limit=limit)
    if state.next_after is not None:
        response.headers[NEXT_PAGE_HEADER] = f"{state.next_after[0]}:{state.next_after[1]}"
    return state.to_json()


@router.get("/pools/{name:text}/versions/{version}/loans")
def list_version_loans(*, name: str, version: VersionNumber, node: NodeDep, _key: Reader, response: Response,
                       after: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description=(
                           "The previous page's X-Next-After: the loans after that position in the version."))] = None,
                       limit: Annotated[int, Query(ge=1, le=MAX_LOANS_PAGE)] = DEFAULT_LOANS_PAGE) -> Any:
    """The loan ids of an anchored version of a local pool, in version order (tree positions), a page at a time;
    X-Next-After continues while more follow. A sample of them is what `POST /v1/assets/provenance` proves."""
    page = loan_ids_page(node.store, anchored_version(node.store, name, version), after=after, limit=limit)
    if page.next_after is not None:
        response.headers[NEXT_PAGE_HEADER] = str(page.next_after)
    return ["0x" + loan_id.hex() for loan_id in page.loan_ids]


@router.post("/pools/{pool_id}/transfer", response_model=TxOut)
def propose_transfer(*, pool_id: PoolId, body: TransferIn, node: NodeDep, _key: Operator) -> Any:
    """Offer the pool to another member; custody moves when that member accepts."""
    return lifecycle.receipt_json(lifecycle.propose_transfer(node, pool_id, body.to))


@router.post("/pools/{pool_id}/accept", response_model=TxOut)
def accept_transfer(*, pool_id: PoolId, node: NodeDep, _key: Operator) -> Any:
    """Accept custody of a pool offered to this bank."""
    return lifecycle.receipt_json(lifecycle.accept_transfer(node, pool_id))


@router.post("/pools/{pool_id}/cancel", response_model=TxOut)
def cancel_transfer(*, pool_id: PoolId, node: NodeDep, _key: Operator) -> Any:
    """Withdraw this bank's pending transfer proposal."""
    return lifecycle.receipt_json(lifecycle.cancel_transfer(node, pool_id))


@router.post("/pools/{pool_id}/successor", response_model=SuccessionOut)
def propose_successor(*, pool_id: PoolId, body: SuccessorIn, node: NodeDep, _key: Operator) -> Any:
    """Propose a new custodian for a pool whose custodian was removed from the alliance (this bank votes for it);
    custody passes when the members' votes reach the registry's quorum."""
    return lifecycle.propose_successor(node, pool_id, body.successor).to_json()


@router.post("/pools/{pool_id}/successor/vote", response_model=SuccessionOut)
def vote_successor(*, pool_id: PoolId, node: NodeDep, _key: Operator) -> Any:
    """Vote for the successor proposed in the pool's open succession round (404 `no_succession` if none is open)."""
    return lifecycle.vote_successor(node, pool_id).to_json()


@router.post("/pools/{pool_id}/servicing", status_code=status.HTTP_201_CREATED)
def create_servicing_report(*, pool_id: PoolId, body: ServicingIn, node: NodeDep, _key: Operator) -> Any:
    """Report the servicing status of a version's loans for a period."""
    statuses = None if body.statuses is None else lifecycle.parse_statuses(body.statuses)
    return lifecycle.report_servicing(node, pool_id, body.period, version=body.version, statuses=statuses).to_json()


@router.post("/pools/{pool_id}/versions/{version}/attestations", response_model=TxOut,
             status_code=status.HTTP_201_CREATED)
def create_attestation(*, pool_id: PoolId, version: VersionNumber, body: AttestationIn, node: NodeDep,
                       _key: Auditor) -> Any:
    """Attest a pool version with an audit report's hash (the node's signer must be an auditor member)."""
    return lifecycle.receipt_json(lifecycle.attest(node, pool_id, version, bytes.fromhex(body.report_sha256[2:])))


@router.get("/loans/{loan_id:text}/provenance")
def read_provenance(*, loan_id: str, node: NodeDep, _key: Reader) -> Any:
    """The loan's provenance bundle, for `alliance audit verify` (loan id or this bank's loan reference)."""
    return build_bundle(node, loan_id)


@router.post("/provenance")
def create_provenance_bundles(*, body: ProvenanceIn, node: NodeDep, _key: Reader) -> Any:
    """The provenance bundles of several loans, in the order asked, as of one block: each version's tree and each
    servicing period's status tree is built once for all of them (a sample of a large pool is one request, not one
    tree build per loan)."""
    return {"bundles": build_bundles(node, body.loans)}


@router.get("/double-financing")
def list_double_financing(*, node: NodeDep, _key: Reader, response: Response,
                          after: Annotated[str | None, Query(pattern=_HASH_PATTERN, description=(
                              "The previous page's X-Next-After: loan ids after it, in byte order."))] = None,
                          limit: Annotated[int, Query(ge=1, le=MAX_FLAGS_PAGE)] = DEFAULT_FLAGS_PAGE) -> Any:
    """Loan ids active in two or more pools at once, across every bank's pools, in loan id order, a page at a time;
    X-Next-After continues while more follow."""
    flagged = double_financing(node, after=None if after is None else bytes.fromhex(after[2:]),
                               limit=limit + 1)  # one more says whether another page follows
    page = list(flagged.items())[:limit]
    if len(flagged) > limit:
        response.headers[NEXT_PAGE_HEADER] = "0x" + page[-1][0].hex()
    return [{"loan_id": "0x" + loan_id.hex(), "pool_ids": pools} for loan_id, pools in page]

