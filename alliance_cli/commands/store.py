"""`alliance store create`: a new, empty store for a node moving to another database on purpose."""

from __future__ import annotations

import typer

from alliance_cli import console
from alliance_cli.state import node_context
from node.setup import create_store

app = typer.Typer(help="The node's local store.", no_args_is_help=True)


@app.command("create")
def store_create(ctx: typer.Context) -> None:
    """Make the store at database_url, empty. An initialised node refuses to start without its store, so that a
    mistyped database_url is an error rather than a new, empty node; this makes one on purpose. What the old
    store held stays there: queued reports, API keys, the bank's raw identifiers. Alliance keys are fetched
    again from the chain (`alliance key sync`) and the mirror is rebuilt on the next sync."""
    creation = create_store(node_context(ctx).settings)
    if creation.created:
        console.success(f"new, empty store at {creation.where}")
    else:
        console.info(f"a store is already at {creation.where}; left as it was")
