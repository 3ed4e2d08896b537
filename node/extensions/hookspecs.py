"""Hook specifications of the alliance node: what a credit-workflow extension can implement.

Plugin authors import `hookimpl` and decorate functions (in a module or on an object) named like the specs
below; they may accept any subset of a spec's arguments. The node calls each extension in isolation: an
exception or a call longer than `extension_timeout_s` is recorded against the extension's name and, for the
pipeline hooks, turns the application's outcome into "review" (never an HTTP 500). See docs/extensions.md.

Pipeline order for one application: `alliance_application_received` -> `alliance_identity_signals` ->
`alliance_risk_signals` -> `alliance_risk_score` (first result wins) -> `alliance_credit_decision` (first
result wins) -> `alliance_application_decided`. Extensions marked `tryfirst=True` run before the
built-ins, which is how a bank's own decision rule overrides the built-in one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from node.extensions.types import (
        Application,
        BookedLoan,
        Decision,
        FraudConfirmation,
        RiskScore,
        Signal,
    )
    from node.runtime import NodeContext

PROJECT = "alliance"
ENTRY_POINT_GROUP = "alliance.extensions"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def alliance_application_received(node: NodeContext, application: Application) -> None:
    """An application arrived and is about to be assessed (audit, enrichment caches, notifications)."""


@hookspec
def alliance_identity_signals(node: NodeContext, application: Application) -> list[Signal] | None:
    """Signals about the applicant's identity: validation, consistency, velocity, alliance blacklist hits."""


@hookspec
def alliance_risk_signals(node: NodeContext, application: Application,
                          identity_signals: list[Signal]) -> list[Signal] | None:
    """Further risk signals (the bank's own data, bureau scores), given the identity signals so far."""


@hookspec(firstresult=True)
def alliance_risk_score(node: NodeContext, application: Application, signals: list[Signal]) -> RiskScore | None:
    """Turn the signals into a score with reason codes; the first non-None answer wins."""


@hookspec(firstresult=True)
def alliance_credit_decision(node: NodeContext, application: Application, signals: list[Signal],
                             score: RiskScore | None) -> Decision | None:
    """Decide approve / review / decline with limit, price and reasons; the first non-None answer wins."""


@hookspec
def alliance_application_decided(node: NodeContext, application: Application, decision: Decision) -> None:
    """The application and its decision were stored (notify the channel, open a manual-review task, ...)."""


@hookspec
def alliance_loan_booked(node: NodeContext, loan: BookedLoan) -> None:
    """An approved application became a loan on the bank's books."""


@hookspec
def alliance_fraud_confirmed(node: NodeContext, confirmation: FraudConfirmation) -> None:
    """The bank confirmed fraud on an application or loan; it has been queued as a ledger report."""


@hookspec
def alliance_indicators_mirrored(node: NodeContext, from_block: int, to_block: int) -> None:
    """The mirror indexed new ledger blocks (from_block, to_block]; read the new rows from the store."""


@hookspec
def alliance_api_routers() -> list[Any] | None:
    """FastAPI `APIRouter`s to mount under /v1 (behind the API-key check).

    Every route must check the caller's role with `node.api.deps.require_roles`, as a parameter or in the
    `dependencies` of the route or of the router that declares it (not only of a router including that one): if
    any route of the answer checks none, none of the module's routes is mounted (a warning names the module and
    the route). The API-key check alone admits every role, auditors included.
    """


@hookspec
def alliance_cli_commands() -> list[tuple[str, Any]] | None:
    """(name, Typer app or command function) pairs to add to the `alliance` command."""
