"""`alliance contracts build|deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.state import node_context
from node.chain.compiler import build_contracts, find_compiler
from node.consortium import deploy_from_founders_file, deploy_solo

# The registry's constructor takes a uint64: a larger number was an ABI encoding error (a traceback) at deployment.
MAX_PROPOSAL_LIFETIME = 2**64 - 1

app = typer.Typer(help="Compile and deploy the consortium contracts.", no_args_is_help=True)


@app.command("build")
def contracts_build() -> None:
    """Compile contracts/*.sol into contracts/build/ (the committed artifacts)."""
    compiler = find_compiler()
    for path in build_contracts():
        console.success(f"{path.name} (solc via {compiler.origin})")


@app.command("deploy")
def contracts_deploy(
    ctx: typer.Context,
    founders: Annotated[Path | None, typer.Option(
        help="JSON list of founding members {account, role, name, bank_code, encryption_key}; "
             "default: this bank alone.")] = None,
    quorum_percent: Annotated[int, typer.Option(min=1, max=99, help="Votes must exceed this share.")] = 50,
    proposal_lifetime: Annotated[int, typer.Option(min=1, max=MAX_PROPOSAL_LIFETIME,
                                                   help="Seconds a proposal stays open.")] = 7 * 24 * 3600,
    force: Annotated[bool, typer.Option(help="Deploy even if a deployment record exists.")] = False,
) -> None:
    """Deploy AllianceRegistry (and the ledger contracts) and write the deployment record."""
    node = node_context(ctx)
    if founders is None:
        deployment = deploy_solo(node, quorum_percent=quorum_percent, proposal_lifetime_s=proposal_lifetime,
                                 force=force)
    else:
        deployment = deploy_from_founders_file(node, founders, quorum_percent=quorum_percent,
                                               proposal_lifetime_s=proposal_lifetime, force=force)
    for name, contract in deployment.contracts.items():
        console.success(f"{name} at {contract.address} (block {contract.block_number})")
    console.info(f"deployment record: {node.settings.effective_deployment_file}")
