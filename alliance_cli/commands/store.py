"""`alliance store create|backup`: a new, empty store on purpose; a consistent copy of a running node's store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.state import node_context
from node.setup import create_store
from node.store.backup import backup_sqlite_store

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


@app.command("backup")
def store_backup(ctx: typer.Context,
                 target: Annotated[Path, typer.Argument(help="The backup file to write (must not exist).")]) -> None:
    """Copy the node's SQLite store to TARGET while the node runs: one consistent snapshot, checked, readable by
    this user only. To restore, stop the node and put the file at the store's path (docs/operations.md)."""
    backup = backup_sqlite_store(node_context(ctx).settings.effective_database_url, target)
    console.success(f"store copied to {backup.path} ({backup.size_bytes:,} bytes, schema revision {backup.revision})")
