"""An example extension of the alliance node, installed as a package with an `alliance.extensions` entry point.

It shows the three kinds of contribution (docs/extensions.md):
- a risk signal from the bank's own data (`employer_watchlisted`, when the application's bank inputs carry
  `employer_watchlisted = 1`), which the built-in scorecard reports (unknown codes score 0) and this
  plugin's decision acts on;
- a credit decision that runs before the built-in one (`tryfirst`): the bank does not lend for the
  `crypto_purchase` scenario, and sends watchlisted employers to review; otherwise it answers None and the
  built-in rules decide;
- a CLI command, `alliance example-policy`.
"""

from __future__ import annotations

from typing import Any

import typer

from node.extensions import Application, Decision, Signal, hookimpl

NAME = "example_policy"
EXCLUDED_SCENARIOS = ("crypto_purchase",)


@hookimpl
def alliance_risk_signals(application: Application) -> list[Signal]:
    if application.bank_inputs.get("employer_watchlisted"):
        return [Signal("employer_watchlisted", NAME, "the employer is on the bank's watchlist")]
    return []


@hookimpl(tryfirst=True)
def alliance_credit_decision(application: Application, signals: list[Signal]) -> Decision | None:
    if application.scenario in EXCLUDED_SCENARIOS:
        return Decision("decline", ("scenario_excluded_by_bank_policy",), NAME,
                        detail=f"the bank does not lend for {application.scenario}")
    if any(s.code == "employer_watchlisted" for s in signals):
        return Decision("review", ("employer_watchlisted",), NAME)
    return None


def _describe() -> None:
    """Show the example policy's rules."""
    typer.echo(f"declines scenarios: {', '.join(EXCLUDED_SCENARIOS)}; reviews watchlisted employers")


@hookimpl
def alliance_cli_commands() -> list[tuple[str, Any]]:
    return [("example-policy", _describe)]
