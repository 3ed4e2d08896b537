"""`alliance chain up|down|status|allowlist`: the dev chain, the state of whichever chain is configured, and Besu's
accounts allowlist."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node import governance
from node.chain.errors import redacted_url
from node.errors import InvalidInput
from node.private_files import write_public_text

app = typer.Typer(help="Start, stop and inspect the chain.", no_args_is_help=True)


@app.command("up")
def chain_up(ctx: typer.Context) -> None:
    """Start the local dev chain in the background (state kept in the data dir)."""
    node = node_context(ctx)
    if not node.is_dev:
        raise InvalidInput(f"`chain up` manages only the dev network; this node is on {node.settings.network}")
    head = node.dev_chain.start()
    console.success(f"dev chain at {node.dev_chain.rpc_url} (chain id {head.chain_id}, block {head.block_number})")


@app.command("down")
def chain_down(ctx: typer.Context) -> None:
    """Stop the local dev chain, saving its state."""
    node = node_context(ctx)
    if not node.is_dev:  # as `chain up`: "was not running" and exit 0 read as if a dev chain had been looked for
        raise InvalidInput(f"`chain down` manages only the dev network; this node is on {node.settings.network}")
    if node.dev_chain.stop():
        console.success("dev chain stopped")
    else:
        console.info("the dev chain was not running")


@app.command("status")
def chain_status(
    ctx: typer.Context,
    json_output: JsonOption = False,
) -> None:
    """Show the configured chain's id and head block (exit code 1 if unreachable)."""
    node = node_context(ctx)
    head = node.chain.head()
    data = {"network": node.settings.network.value, "rpc_url": redacted_url(node.settings.effective_rpc_url),
            "chain_id": head.chain_id, "block_number": head.block_number, "block_hash": head.block_hash}
    if json_output:
        console.print_json(data)
        return
    for key, value in data.items():
        console.info(f"{key:>13}: {value}")


@app.command("allowlist")
def chain_allowlist(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option(help="Write it to this file (replaced whole); default: stdout.")]
    = None,
) -> None:
    """Besu's accounts allowlist (accounts_allowlist.toml) from the registry's active members."""
    text = governance.besu_accounts_allowlist(node_context(ctx).registry())
    if output is None:
        sys.stdout.write(text)  # exactly the file, never wrapped by rich
        return
    try:
        write_public_text(output, text)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror or exc}", code="output_unwritable") from None
    console.success(f"wrote the accounts allowlist to {output}")
