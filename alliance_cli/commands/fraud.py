"""`alliance fraud report|import|show|search|publish|endorse|dispute|confirm|withdraw`: the fraud ledger from the
command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from alliance_cli import console
from alliance_cli.arguments import parse_identifier_arguments
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.chain.errors import ContractRevert
from node.errors import InvalidInput
from node.ledger.indicator_search import DEFAULT_LIMIT, SearchRequest, search_indicators
from node.ledger.reactions import (
    ReactionSent,
    confirm_report,
    dispute_indicator,
    endorse_indicator,
    parse_indicator,
    withdraw_report,
)
from node.ledger.report_import import CHECKING, ImportRefused, import_reports, import_work
from node.ledger.reports import DEFAULT_VALID_DAYS, ReportRequest, report_status
from node.ledger.stix import MAX_PAGE
from node.private_files import write_private_text

app = typer.Typer(help="Report fraud indicators to the alliance ledger.", no_args_is_help=True)

CLI_SUBMITTER = "cli"


@app.command("report")
def fraud_report(
    ctx: typer.Context,
    identifiers: Annotated[list[str], typer.Argument(help="TYPE=VALUE, e.g. phone=13800138000.")],
    category: Annotated[str, typer.Option(help="identity_theft, synthetic_identity, ..., other.")],
    confidence: Annotated[int, typer.Option(help="0-100.")],
    valid_days: Annotated[int, typer.Option(help="How long the indicator applies.")] = DEFAULT_VALID_DAYS,
    valid_from: Annotated[int | None, typer.Option(
        help="When it starts to apply (Unix seconds; default: when first accepted).")] = None,
    case_reference: Annotated[str, typer.Option(help="The bank's case number (published keyed-hashed).")] = "",
    evidence_sha256: Annotated[str | None, typer.Option(help="SHA-256 of the evidence file.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Queue one report; the running node (or `alliance fraud publish`) publishes it."""
    node = node_context(ctx)
    request = ReportRequest(parse_identifier_arguments(identifiers), category, confidence, valid_days, valid_from,
                            evidence_sha256, case_reference)
    accepted = node.report_intake.accept(request, submitted_by=CLI_SUBMITTER)
    if json_output:
        console.print_json({"report_id": accepted.report_id, "created": accepted.created})
        return
    verb = "queued" if accepted.created else "already accepted earlier"
    console.success(f"report {accepted.report_id} {verb}")


@app.command("import")
def fraud_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV with identifier_type, identifier, category, confidence, ...")],
    json_output: JsonOption = False,
) -> None:
    """Import reports from CSV, all or nothing; invalid rows are listed in FILE.errors.csv."""
    node = node_context(ctx)
    intake = node.report_intake
    report = file.with_name(file.name + ".errors.csv")
    try:
        # Only on a terminal: elsewhere (a pipe, cron, CI) a transient bar leaves an empty line on stderr.
        with Progress(console=console.err, transient=True,
                      disable=json_output or not console.err.is_terminal) as progress:
            # Over both passes (checking every row, then writing): each reads the whole file.
            task = progress.add_task(CHECKING, total=import_work(file))
            result = import_reports(intake, file, submitted_by=CLI_SUBMITTER,
                                    progress=lambda doing, read: progress.update(task, description=doing,
                                                                                 advance=read))
    except ImportRefused as refused:
        try:
            write_private_text(report, "line,code,reason\n" + "".join(
                f'{p.line},{p.code},"{p.reason.replace(chr(34), chr(39))}"\n' for p in refused.problems))
        except OSError as exc:
            raise InvalidInput(f"{refused}; the list of bad rows could not be written to {report}: "
                               f"{exc.strerror or exc}", code=refused.code, details=refused.details) from None
        # Said as every refusal by the node is: its line ends with the code (README, CLI tour).
        raise InvalidInput(f"{refused}; see {report}", code=refused.code, details=refused.details) from None
    # The list of an earlier refusal of this file no longer stands: left beside it, it would say rows failed.
    stale_report = _remove_file(report)
    if json_output:
        console.print_json(vars(result))
        return
    console.success(f"{result.rows} rows: {result.reports} reports, {result.created} new, queued for publication"
                    + (f" (removed {report.name}, of an earlier attempt)" if stale_report else ""))


@app.command("show")
def fraud_show(ctx: typer.Context, report_id: Annotated[str, typer.Argument(help="The report id.")],
               json_output: JsonOption = False) -> None:
    """A report's publication state per identifier."""
    with node_context(ctx).store.session() as session:
        status = report_status(session, report_id)
    if json_output:
        console.print_json(status.to_json())
        return
    console.info(f"report {status.report_id}: {status.state}, {status.category}, confidence {status.confidence}")
    # The whole indicator, as `fraud search` shows it: another bank's analyst endorses or disputes it by that hash.
    console.table("identifiers", ["#", "type", "epoch", "indicator", "state", "block", "tx"],
                  [(i.position, i.identifier_type, i.epoch, i.indicator, i.state, i.block_number or "",
                    i.tx_hash or "") for i in status.identifiers])


@app.command("search")
def fraud_search(
    ctx: typer.Context,
    category: Annotated[str | None, typer.Option(help="Reported in this category (money_mule, ...).")] = None,
    identifier_type: Annotated[str | None, typer.Option(help="phone, bank_card, cn_resident_id, ...")] = None,
    reporter: Annotated[str | None, typer.Option(help="Reported by this member (id, address or bank code).")] = None,
    reported_since: Annotated[int | None, typer.Option(help="Published at or after (Unix seconds).")] = None,
    reported_until: Annotated[int | None, typer.Option(help="Published before (Unix seconds).")] = None,
    state: Annotated[str | None, typer.Option(help="active, disputed, revoked or expired.")] = None,
    min_confidence: Annotated[int | None, typer.Option(help="Decayed confidence at least this (0-100).")] = None,
    changed_since_block: Annotated[int | None, typer.Option(help="A record or reaction in this block or later.")]
    = None,
    after: Annotated[str | None, typer.Option(help="Continue after this indicator (the previous page's cursor).")]
    = None,
    limit: Annotated[int, typer.Option(help=f"Indicators per page (1..{MAX_PAGE}).")] = DEFAULT_LIMIT,
    json_output: JsonOption = False,
) -> None:
    """Indicators of the local mirror with their state now, filtered (no chain call unless --reporter)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"--limit must be 1..{MAX_PAGE}", code="invalid_limit")  # a refusal like the others
    node = node_context(ctx)
    request = SearchRequest(category, identifier_type, reporter, reported_since, reported_until, state,
                            min_confidence, changed_since_block)
    with node.store.session() as session:
        page = search_indicators(node, session, request, after=parse_indicator(after) if after else None, limit=limit)
    if json_output:
        console.print_json(page.to_json())
        return
    console.table("Indicators", ["indicator", "state", "categories", "reporters", "confidence", "last reported"],
                  # The whole hash: an analyst copies it into `fraud show`-like lookups and the indicator route.
                  [("0x" + s.indicator.hex(), status, ", ".join(s.categories) or "-",
                    ", ".join(map(str, s.reporters)) or "-", s.confidence,
                    console.chain_time(s.last_reported) if s.last_reported is not None else "-")
                   for s, status in zip(page.states, page.statuses(), strict=True)])
    mirror = page.mirror
    console.info(f"mirror as of block {mirror.as_of_block}{' (STALE)' if mirror.stale else ''}"
                 + (f"; next page: --after 0x{page.next_after.hex()}" if page.next_after is not None else ""))


@app.command("publish")
def fraud_publish(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Publish every queued report now and wait for the chain (the running node does this by itself)."""
    try:
        result = node_context(ctx).publisher.drain()
    except ContractRevert as refused:
        console.fail(f"refused by the contract: {refused}; the reports stay queued until the chain accepts "
                     "this bank's batches (`alliance member show` shows its status)", code=console.error_code(refused))
    if json_output:
        console.print_json(vars(result))
        return
    console.success(f"{result.records} records published in {result.batches} batches"
                    f" ({result.recovered} unfinished batches settled)")


def _show_reactions(sent: list[ReactionSent], json_output: bool) -> None:
    if json_output:
        console.print_json([vars(s) for s in sent])
        return
    for s in sent:
        console.success(f"{s.kind} {s.indicator[:18]}… in block {s.block_number} (tx {s.tx_hash})")
    if not sent:
        console.info("nothing to send: no published record of this report is left to change")


@app.command("endorse")
def fraud_endorse(ctx: typer.Context, indicator: Annotated[str, typer.Argument(help="64 hex digits.")],
                  confidence: Annotated[int, typer.Option(help="0-100.")], json_output: JsonOption = False) -> None:
    """Corroborate another bank's indicator."""
    _show_reactions([endorse_indicator(node_context(ctx), parse_indicator(indicator), confidence)], json_output)


@app.command("dispute")
def fraud_dispute(ctx: typer.Context, indicator: Annotated[str, typer.Argument(help="64 hex digits.")],
                  reason: Annotated[str, typer.Option(help="mistaken_identity, insufficient_evidence, "
                                                          "resolved_by_customer, data_entry_error or other.")],
                  json_output: JsonOption = False) -> None:
    """Dispute another bank's indicator; its reporter must confirm or revoke it within the response window."""
    _show_reactions([dispute_indicator(node_context(ctx), parse_indicator(indicator), reason)], json_output)


@app.command("confirm")
def fraud_confirm(ctx: typer.Context, report_id: Annotated[str, typer.Argument(help="The report id.")],
                  json_output: JsonOption = False) -> None:
    """Confirm this bank's published report (answers disputes against it)."""
    _show_reactions(confirm_report(node_context(ctx), report_id), json_output)


@app.command("withdraw")
def fraud_withdraw(ctx: typer.Context, report_id: Annotated[str, typer.Argument(help="The report id.")],
                   reason: Annotated[str, typer.Option(help="reported_in_error, dispute_upheld, customer_cleared, "
                                                           "superseded or other.")],
                   json_output: JsonOption = False) -> None:
    """Withdraw this bank's report: revoke its published records, never publish its queued ones."""
    _show_reactions(withdraw_report(node_context(ctx), report_id, reason), json_output)


def _remove_file(path: Path) -> bool:
    """Remove `path` if it is a file this user may remove; whether it did."""
    try:
        path.unlink()
    except OSError:  # absent, a directory, or not ours to remove: left as it is
        return False
    return True
