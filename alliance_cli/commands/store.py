"""`alliance store create|backup|restore|prune`: a new, empty store on purpose; a consistent copy of a running node's
store, and putting one back; personal data past its retention removed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.state import node_context
from node.encryption_key_replacement import reseal_restored_store
from node.ledger.retention import prune
from node.setup import create_store
from node.store.backup import backup_sqlite_store, restore_sqlite_store

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
    this user only. To restore, stop the node and run `alliance store restore TARGET`."""
    backup = backup_sqlite_store(node_context(ctx).settings.effective_database_url, target)
    console.success(f"store copied to {backup.path} ({backup.size_bytes:,} bytes, schema revision {backup.revision})")


@app.command("restore")
def store_restore(ctx: typer.Context,
                  backup: Annotated[Path, typer.Argument(help="A file written by `alliance store backup`.")]) -> None:
    """Replace the stopped node's SQLite store with BACKUP (checked first; refused while the store is in use). What
    the store holds now is gone; the node catches up with the chain from the backup's position when it starts."""
    node = node_context(ctx)
    restored = restore_sqlite_store(node.settings.effective_database_url, backup)
    console.success(f"store at {restored.path} restored from {backup} (schema revision {restored.revision})")
    retired_key = reseal_restored_store(node)
    if retired_key is not None:
        console.success(f"its secrets, sealed under the retired key {retired_key.name} (the backup is older than a "
                        "replacement of the encryption key), sealed again under the current key")


@app.command("prune")
def store_prune(ctx: typer.Context) -> None:
    """Erase the raw identifiers of expired or withdrawn reports, query-log entries older than
    check_log_retention_days (if set), applicants no longer needed for application_retention_days (if set), and
    the rows of report imports left unfinished. The running node does the same every retention_interval_s."""
    result = prune(node_context(ctx))
    if result.abandoned_imports_discarded:
        console.success(f"discarded {result.abandoned_imports_discarded} report import(s) left unfinished (never "
                        "published)")
    console.success(f"erased {result.identifiers_erased:,} raw identifier(s) of expired or withdrawn reports")
    if result.check_log_retention_days is None:
        console.info("query log kept whole (check_log_retention_days is not set)")
    else:
        console.success(f"deleted {result.check_log_deleted:,} query-log entry(ies) older than "
                        f"{result.check_log_retention_days} day(s)")
    if result.application_retention_days is None:
        console.info("applicants kept (application_retention_days is not set)")
    else:
        console.success(f"erased {result.applicants_erased:,} applicant(s) no longer needed for "
                        f"{result.application_retention_days} day(s), and {result.fingerprints_deleted:,} velocity "
                        f"fingerprint(s) of erased applicants")
