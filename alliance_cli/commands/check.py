"""`alliance check TYPE=VALUE ...`: check one applicant's identifiers against the alliance's indicators."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.arguments import parse_identifier_arguments
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.errors import InvalidInput
from node.ledger.check_log import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CheckLogQuery,
    identifier_indicators,
    parse_moment,
    read_check_log_page,
)
from node.ledger.checks import check_identity
from node.ledger.reactions import parse_indicator

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
                    # The whole hash (folded, not cut): an analyst endorses, disputes or looks up a hit by it.
                    r.confidence, "yes" if r.disputed else "-", "0x" + r.indicator.hex() if r.indicator
                    else "-") for r in outcome.results])
    mirror = outcome.mirror
    lag = f"{mirror.lag_s:.0f} s" if mirror.lag_s is not None else "never synced"
    console.info(f"mirror as of block {mirror.as_of_block}, lag {lag}{' (STALE)' if mirror.stale else ''}")


def check_log_command(
    ctx: typer.Context,
    key_id: Annotated[str | None, typer.Option("--key-id", help="checks by this API key ('cli': this command line)")]
    = None,
    identifier: Annotated[str | None, typer.Option(
        "--identifier", metavar="TYPE=VALUE", help="checks of this customer identifier (hashed here, every epoch)")]
    = None,
    indicator: Annotated[str | None, typer.Option("--indicator", help="checks of this indicator (hex)")] = None,
    since: Annotated[str | None, typer.Option(help="from this time (ISO 8601; UTC unless it says otherwise)")] = None,
    until: Annotated[str | None, typer.Option(help="before this time")] = None,
    hits_only: Annotated[bool, typer.Option("--hits-only", help="only checks with hits")] = False,
    before_id: Annotated[int | None, typer.Option("--before-id", help="older than this entry (next page)")] = None,
    limit: Annotated[int, typer.Option(help=f"entries, newest first (1..{MAX_LIMIT})")] = DEFAULT_LIMIT,
    include_indicators: Annotated[bool, typer.Option(
        "--include-indicators", help="every checked indicator of each entry, not only the hits")] = False,
    json_output: JsonOption = False,
) -> None:
    """The query log: who checked what, when, and what hit (newest first)."""
    if identifier is not None and indicator is not None:
        raise InvalidInput("give --identifier or --indicator, not both", code="conflicting_options")
    node = node_context(ctx)
    with node.store.session() as session:
        indicators: list[bytes] = []
        if identifier is not None:
            ((kind, value),) = parse_identifier_arguments([identifier])
            indicators = identifier_indicators(node, session, kind, value)
        elif indicator is not None:
            indicators = [parse_indicator(indicator)]
        page = read_check_log_page(session, CheckLogQuery(
            key_id=key_id, indicators=indicators, since=_moment(since, "--since"), until=_moment(until, "--until"),
            hits_only=hits_only, before_id=before_id, limit=limit, include_indicators=include_indicators))
    if json_output:  # as GET /v1/checks/log answers
        console.print_json({"entries": [e.to_json() for e in page.entries], "next_before_id": page.next_before_id})
        return
    columns = ["id", "asked at (UTC)", "key", "kind", "checked", "hits", "block", "stale"]
    console.table("Query log", [*columns, "indicators"] if include_indicators else columns,
                  [(e.id, e.asked_at.strftime("%Y-%m-%d %H:%M:%S"), e.key_id, e.kind, e.checked, len(e.hits),
                    e.as_of_block, "yes" if e.stale else "-",
                    *([] if e.indicators is None else ["\n".join(e.indicators)])) for e in page.entries])
    if page.next_before_id is not None:  # a page with every checked indicator may end before `limit` entries
        console.info(f"older entries: --before-id {page.next_before_id}")


def _moment(text: str | None, option: str) -> datetime | None:
    return None if text is None else parse_moment(text, option)
