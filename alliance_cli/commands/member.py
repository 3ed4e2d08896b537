"""`alliance member propose|vote|execute|list|show|proposals`: consortium membership by proposal and vote."""

from __future__ import annotations

from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node import governance
from node.chain.registry import Member, Proposal, ProposalKind, ProposalOutcome
from node.errors import InvalidInput
from node.governance import ProposalAction

app = typer.Typer(help="Consortium membership: proposals, votes, members.", no_args_is_help=True)


@app.command("propose")
def member_propose(
    ctx: typer.Context,
    action: Annotated[ProposalAction, typer.Argument(help="admit, suspend, reinstate, remove or rotate.")],
    target: Annotated[str | None, typer.Argument(help="Member id, address or bank code (not for admit).")] = None,
    account: Annotated[str | None, typer.Option(help="admit: the newcomer's signing address.")] = None,
    role: Annotated[str, typer.Option(help="admit: member, auditor or observer.")] = "member",
    name: Annotated[str | None, typer.Option(help="admit: the bank's name.")] = None,
    bank_code: Annotated[str | None, typer.Option(help="admit: the bank's unique code.")] = None,
    encryption_key: Annotated[str | None, typer.Option(help="admit: X25519 public key, 0x + 64 hex.")] = None,
    new_account: Annotated[str | None, typer.Option(help="rotate: the new signing address.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Propose a membership change; this bank's vote is counted at once."""
    admit, rotate = action == ProposalAction.admit, action == ProposalAction.rotate
    # Checked before anything is sent: an option of another action was dropped unread, so `propose suspend BANK
    # --new-account 0x…` (meant: rotate) proposed a suspension, and `propose admit BANK …` ignored the member named.
    stray = [name for name, given, applies in (
        ("MEMBER", target is not None, not admit), ("--account", account is not None, admit),
        ("--role", role != "member", admit), ("--name", name is not None, admit),
        ("--bank-code", bank_code is not None, admit), ("--encryption-key", encryption_key is not None, admit),
        ("--new-account", new_account is not None, rotate)) if given and not applies]
    if stray:
        raise InvalidInput(f"`member propose {action}` takes no {', '.join(stray)}; nothing was proposed", code="usage")
    node = node_context(ctx)
    admission = None
    if admit:
        admission = governance.admission_request(account=account or "", role=role, name=name or "",
                                                 bank_code=bank_code or "", encryption_key=encryption_key or "")
    outcome = governance.propose(node.registry(signing=True), action, target=target, admission=admission,
                                 new_account=new_account)
    _report(outcome, json_output, f"proposal {outcome.proposal_id} ({action})")


@app.command("vote")
def member_vote(
    ctx: typer.Context,
    proposal_id: Annotated[int, typer.Argument(min=1, help="The proposal to approve.")],
    json_output: JsonOption = False,
) -> None:
    """Approve a proposal; it executes when the quorum is reached."""
    node = node_context(ctx)
    outcome = governance.vote(node.registry(signing=True), proposal_id)
    _report(outcome, json_output, f"voted for proposal {proposal_id}")


@app.command("execute")
def member_execute(
    ctx: typer.Context,
    proposal_id: Annotated[int, typer.Argument(min=1, help="The proposal to execute.")],
    json_output: JsonOption = False,
) -> None:
    """Execute a proposal that has enough votes now that fewer members are active (none of its voters can vote
    again)."""
    node = node_context(ctx)
    outcome = governance.execute(node.registry(signing=True), proposal_id)
    _report(outcome, json_output, f"proposal {proposal_id}")


def _report(outcome: ProposalOutcome, json_output: bool, what: str) -> None:
    if json_output:
        console.print_json({"proposal_id": outcome.proposal_id, "executed": outcome.executed, "state": outcome.state,
                            "tx_hash": outcome.receipt.tx_hash, "block_number": outcome.receipt.block_number})
        return
    console.success(f"{what}; {_awaits(outcome)} (tx {outcome.receipt.tx_hash}, block {outcome.receipt.block_number})")


def _awaits(outcome: ProposalOutcome) -> str:
    """What the proposal needs now. One run again (or voted again) after it got its votes is `ready`: no more can come
    from its voters, and only `member execute` passes it."""
    return {"executed": "executed", "open": "awaiting more votes",
            "ready": f"ready: it has the votes, and `alliance member execute {outcome.proposal_id}` executes it",
            "expired": "expired without the votes it needed"}[outcome.state]


@app.command("list")
def member_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List every member ever admitted, with role and status."""
    members = node_context(ctx).registry().members()
    if json_output:
        console.print_json([m.to_json() for m in members])
        return
    console.table("Members", ["id", "bank code", "name", "role", "status", "account"],
                  [(m.member_id, m.bank_code, m.name, m.role.name, m.status.name, m.account) for m in members])


@app.command("show")
def member_show(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="Member id, signing address or bank code.")],
    json_output: JsonOption = False,
) -> None:
    """Show one member."""
    found: Member = governance.find_member(node_context(ctx).registry(), member)
    if json_output:
        console.print_json(found.to_json())
        return
    for key, value in found.to_json().items():
        console.info(f"{key:>14}: {value}")


@app.command("proposals")
def member_proposals(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List proposals with the votes that count now (active members'), the votes needed, and their state: open,
    ready (enough votes now: `alliance member execute ID`), executed or expired."""
    node = node_context(ctx)
    views = governance.proposal_views(node.registry(), node.chain.head().timestamp)
    if json_output:
        console.print_json([v.to_json() for v in views])
        return
    console.table("Proposals", ["id", "kind", "member", "account", "votes", "state", "expires at"],
                  [(v.proposal.proposal_id, v.proposal.kind.name, _proposed_member(v.proposal), v.proposal.account,
                    f"{v.counted_votes}/{v.required_votes}", v.state, console.chain_time(v.proposal.expires_at))
                   for v in views])


def _proposed_member(proposal: Proposal) -> str:
    """An admission names its newcomer by bank code and role: shown `-`, a voter could not tell which bank, or
    whether as a member or an auditor, it was asked to admit without `--json`."""
    if proposal.kind == ProposalKind.admit:
        return f"{proposal.bank_code} ({proposal.role.name})"
    return str(proposal.member_id)
