"""`alliance check TYPE=VALUE ...`: check one applicant's identifiers against the alliance's indicators."""

from __future__ import annotations

from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.arguments import parse_identifier_arguments
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.ledger.checks import check_identity

CLI_KEY_ID = "cli"  # the query log's "who" for checks run on the node's own command line


def check_command(
    ctx: typer.Context,
    identifiers: Annotated[list[str], typer.Argument(
        metavar="TYPE=VALUE...", help="e.g. phone=13800138000 cn_resident_id=11010519491231002X")],
    json_output: JsonOption = False,
) -> None:
    """Check identifiers from the local mirror (no chain call); exit 1 if any is invalid."""
    outcome = check_identity(node_context(ctx), parse_identifier_arguments(identifiers), CLI_KEY_ID)
    if json_output:
        console.print_json(outcome.to_json())
        return
    console.table("Checks", ["type", "hit", "categories", "reporters", "confidence", "disputed", "indicator"],
                  [(r.identifier_type, "HIT" if r.hit else "-", ", ".join(r.categories) or "-", r.reporter_count,
                    r.confidence, "yes" if r.disputed else "-", "0x" + r.indicator.hex()[:16] + "…" if r.indicator
                    else "-") for r in outcome.results])
    mirror = outcome.mirror
    lag = f"{mirror.lag_s:.0f} s" if mirror.lag_s is not None else "never synced"
    console.info(f"mirror as of block {mirror.as_of_block}, lag {lag}{' (STALE)' if mirror.stale else ''}")
