"""`alliance ledger sync|rebuild|digest|republish`: the fraud-ledger mirror of this node, and re-publication."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.ledger.digest import node_digest
from node.ledger.indexer import SyncResult, indexer_for
from node.ledger.republish import republish

app = typer.Typer(help="The fraud-ledger mirror: sync, rebuild, compare.", no_args_is_help=True)


def _show_sync(result: SyncResult, json_output: bool) -> None:
    if json_output:
        console.print_json(result.to_json())
        return
    for rewind in result.rewinds:
        console.info(Text.assemble(("reorganisation:", "yellow"),
                                   f" rewound from block {rewind.from_block} to {rewind.to_block}"))
    console.success(f"mirror at block {result.to_block} (head {result.head}, target {result.target}): "
                    f"{result.blocks} blocks, {result.batches} batches ({result.rejected_batches} rejected), "
                    f"{result.records} records ({result.ignored_records} ignored), "
                    f"{result.reactions} reactions ({result.ignored_reactions} ignored)")


@app.command("sync")
def ledger_sync(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Index the FraudLedger's new blocks into the mirror, up to the head minus the confirmations."""
    _show_sync(indexer_for(node_context(ctx)).sync(), json_output)


@app.command("rebuild")
def ledger_rebuild(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Drop the mirror and index the FraudLedger again from its deployment block."""
    _show_sync(indexer_for(node_context(ctx)).rebuild(), json_output)


@app.command("digest")
def ledger_digest(
    ctx: typer.Context,
    block: Annotated[int | None, typer.Option(help="Block to digest at (default: the last indexed).")] = None,
    json_output: JsonOption = False,
) -> None:
    """SHA-256 of every indicator's derived state at a block: equal on every node with the same mirror."""
    node = node_context(ctx)
    digest = node_digest(node, indexer_for(node), block=block)
    if json_output:
        console.print_json(digest.to_json())
        return
    console.info(f"block {digest.block} (time {digest.at}): {digest.indicator_count} indicators, "
                 f"sha256 {digest.sha256_hex}")


@app.command("republish")
def ledger_republish(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Queue this bank's still-valid reports again, hashed under the newest key epoch (after `key rotate`)."""
    node = node_context(ctx)
    result = republish(node)
    if json_output:
        console.print_json(vars(result))
        return
    console.success(f"{result.records} identifiers of {result.reports} reports queued under epoch {result.epoch}; "
                    "the running node (or `alliance fraud publish`) publishes them")
