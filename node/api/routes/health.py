"""`GET /health`: is this node able to serve, and what does it see of the chain? No key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from node.api.deps import NodeDep
from node.chain.deployment import check_deployment
from node.chain.errors import ChainError, redacted_url

router = APIRouter(tags=["health"])


class ChainHealth(BaseModel):
    reachable: bool
    rpc_url: str
    chain_id: int | None = None
    latest_block: int | None = None
    error: str | None = None


class ContractsHealth(BaseModel):
    deployed: bool
    addresses: dict[str, str] = {}
    error: str | None = None


class HealthResponse(BaseModel):
    status: str  # "ok", or "degraded" while the node serves from its store but the chain is not usable
    bank_code: str
    store_ok: bool
    chain: ChainHealth
    contracts: ContractsHealth
    workers: dict[str, dict[str, object]] = {}  # background loops (keys, publisher, indexer), their last error's type


@router.get("/health", response_model=HealthResponse,
            responses={503: {"model": HealthResponse, "description": "The node's database does not answer."}})
def read_health(node: NodeDep, request: Request) -> JSONResponse:
    """Liveness and readiness: 200 while the store works (the chain may be down), else 503."""
    store_ok = node.store.ping()
    # No key is needed here: credentials in the URL (a proxy's basic auth) must not be shown.
    chain = ChainHealth(reachable=False, rpc_url=redacted_url(node.settings.effective_rpc_url))
    contracts = ContractsHealth(deployed=False)
    try:
        head = node.chain.head()
        chain = ChainHealth(reachable=True, rpc_url=chain.rpc_url, chain_id=head.chain_id,
                            latest_block=head.block_number)
        deployment = node.deployment
        check_deployment(node.chain, deployment)
        contracts = ContractsHealth(deployed=True,
                                    addresses={n: c.address for n, c in deployment.contracts.items()})
    except ChainError as exc:
        if chain.reachable:
            contracts = ContractsHealth(deployed=False, error=str(exc))
        else:
            chain = ChainHealth(reachable=False, rpc_url=chain.rpc_url, error=str(exc))
    status = "ok" if store_ok and chain.reachable and contracts.deployed else "degraded"
    workers = request.app.state.workers
    # A loop's error text may quote the database driver (host, user), a statement and its parameters: shown to
    # operator keys by /v1/node/status, here only by its type.
    body = HealthResponse(status=status, bank_code=node.settings.bank_code, store_ok=store_ok, chain=chain,
                          contracts=contracts,
                          workers=workers.status(error_texts=False) if workers is not None else {})
    return JSONResponse(body.model_dump(), status_code=200 if store_ok else 503)
