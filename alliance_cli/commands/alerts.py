"""`alliance alerts [confirm|dismiss ID]`: post-loan risk alerts raised by the risk operations module."""

from __future__ import annotations

from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import module_context
from node.modules.risk_operations import MAX_ALERT_ID, list_alerts, resolve_alert

MODULE = "risk_operations"
AlertIdArgument = Annotated[int, typer.Argument(min=1, max=MAX_ALERT_ID)]

app = typer.Typer(help="Post-loan risk alerts (own borrowers newly reported to the alliance ledger).",
                  invoke_without_command=True)


@app.callback()
def alerts_list(ctx: typer.Context,
                state: Annotated[str | None, typer.Option(help="open, dismissed, confirming or confirmed.")] = None,
                json_output: JsonOption = False) -> None:
    """List alerts, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    alerts = list_alerts(module_context(ctx, MODULE), state=state)
    if json_output:
        console.print_json(alerts)
        return
    console.table("risk alerts", ["id", "loan", "type", "categories", "confidence", "state", "block"],
                  [(a["alert_id"], a["loan_reference"], a["identifier_type"], ", ".join(a["categories"]),
                    a["confidence"], a["state"], a["block_number"]) for a in alerts])


@app.command("confirm")
def alerts_confirm(ctx: typer.Context, alert_id: AlertIdArgument,
                   category: Annotated[str, typer.Option()] = "first_party_fraud",
                   confidence: Annotated[int, typer.Option()] = 90, json_output: JsonOption = False) -> None:
    """Confirm fraud: the borrower is reported to the ledger in this one step."""
    alert = resolve_alert(module_context(ctx, MODULE), alert_id, confirm=True, by="cli", category=category,
                          confidence=confidence)
    if json_output:
        console.print_json(alert)
        return
    console.success(f"alert {alert_id} confirmed; report {alert['fraud_report_id']} queued")


@app.command("dismiss")
def alerts_dismiss(ctx: typer.Context, alert_id: AlertIdArgument, json_output: JsonOption = False) -> None:
    """Dismiss an alert (not fraud)."""
    alert = resolve_alert(module_context(ctx, MODULE), alert_id, confirm=False, by="cli")
    if json_output:  # as `alerts confirm --json` and POST /v1/alerts/{id} answer
        console.print_json(alert)
        return
    console.success(f"alert {alert_id} dismissed")
