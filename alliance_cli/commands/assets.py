"""`alliance assets import|anchor|discard|transfer|accept|cancel|succeed|vote-successor|service|attest|prove|loans|
show`: ABS loan pools."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.assets import lifecycle
from node.assets.pool_state import read_pool_state
from node.assets.pools import anchor_draft, asset_registry, discard_draft, double_financing, import_tape, local_pools
from node.assets.provenance import MAX_BUNDLES, build_bundles
from node.assets.version_loans import anchored_version, iter_loan_ids
from node.chain.client import Receipt
from node.errors import InvalidInput
from node.input_files import reading_bytes, reading_text
from node.private_files import write_private_chunks, write_private_files, write_private_text

app = typer.Typer(help="ABS loan pools: import tapes, anchor versions, custody, servicing, provenance.",
                  no_args_is_help=True)
# Bounded by what the store holds (node.assets.lifecycle), so a larger number is a usage error, not a failure.
PoolIdArgument = Annotated[int, typer.Argument(min=1, max=lifecycle.MAX_POOL_ID, help="The pool's on-chain id.")]


@app.command("import")
def assets_import(
    ctx: typer.Context,
    tape: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The loan tape (CSV, see docs/assets.md).")],
    pool: Annotated[str, typer.Option(help="Local name of the pool the tape becomes the next version of.")],
    pool_id: Annotated[int | None, typer.Option(
        min=1, max=lifecycle.MAX_POOL_ID, help="Bind the local pool to this on-chain pool, which this bank holds "
        "(received by transfer or succession), so that `anchor` adds its next version.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Import a loan tape as a draft version; a bad row imports nothing and lists every bad row."""
    node = node_context(ctx)
    with reading_bytes(tape, "loan tape") as handle:
        total = max(sum(1 for _ in handle) - 1, 0)
    # On a terminal only: elsewhere (a pipe, cron, CI) the bar is printed once, a line before the result or error.
    with Progress(TextColumn("reading loans"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console.err, disable=json_output or total < 10_000 or not console.err.is_terminal) \
            as progress:
        task = progress.add_task("import", total=total)
        draft = import_tape(node, pool, tape, pool_id=pool_id, on_row=lambda n: progress.update(task, completed=n)
                            if n % 5_000 == 0 else None)
    if json_output:
        console.print_json(draft.to_json())
        return
    bound = f", pool {draft.pool_id} on chain" if draft.pool_id is not None else ""
    console.success(f"imported {draft.loan_count} loans into a draft of pool {pool!r} (root 0x{draft.root.hex()}"
                    f"{bound}); anchor it with `alliance assets anchor {pool}`")


@app.command("anchor")
def assets_anchor(
    ctx: typer.Context,
    pool: Annotated[str, typer.Argument(help="Local name of the pool whose draft to anchor.")],
    override: Annotated[str | None, typer.Option(help="Anchor despite screening findings, for this reason "
                                                      "(recorded with the version).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Screen the draft (double financing, fraud ledger) and anchor it as the pool's next version."""
    result = anchor_draft(node_context(ctx), pool, override_reason=override)
    if json_output:
        console.print_json(result.to_json())
        return
    a = result.anchored
    console.success(f"anchored version {a.version} of pool {a.pool_id} ({result.loan_count} loans, root "
                    f"0x{a.root.hex()}) in block {a.block_number}")
    if result.findings:
        console.info(f"findings overridden ({result.override_reason}): {result.findings.summary()}")


@app.command("discard")
def assets_discard(
    ctx: typer.Context,
    pool: Annotated[str, typer.Argument(help="Local name of the pool whose draft to drop.")],
    json_output: JsonOption = False,
) -> None:
    """Drop the pool's draft version (e.g. refused by screening), so a corrected tape can be imported."""
    discard_draft(node_context(ctx), pool)
    if json_output:
        console.print_json({"pool": pool, "state": "discarded"})
        return
    console.success(f"discarded the draft of pool {pool!r}")


@app.command("transfer")
def assets_transfer(
    ctx: typer.Context,
    pool_id: PoolIdArgument,
    to: Annotated[str, typer.Argument(help="The recipient: member id, signing address or bank code.")],
    json_output: JsonOption = False,
) -> None:
    """Propose to hand the pool over; custody moves when the recipient accepts."""
    _done(lifecycle.propose_transfer(node_context(ctx), pool_id, to), json_output,
          f"proposed pool {pool_id} to {to}; it moves when they run `alliance assets accept {pool_id}`")


@app.command("accept")
def assets_accept(ctx: typer.Context, pool_id: PoolIdArgument, json_output: JsonOption = False) -> None:
    """Accept custody of a pool proposed to this bank."""
    _done(lifecycle.accept_transfer(node_context(ctx), pool_id), json_output, f"this bank now holds pool {pool_id}")


@app.command("cancel")
def assets_cancel(ctx: typer.Context, pool_id: PoolIdArgument, json_output: JsonOption = False) -> None:
    """Withdraw this bank's pending transfer proposal."""
    _done(lifecycle.cancel_transfer(node_context(ctx), pool_id), json_output,
          f"cancelled the transfer of pool {pool_id}")


@app.command("succeed")
def assets_succeed(
    ctx: typer.Context,
    pool_id: PoolIdArgument,
    successor: Annotated[str, typer.Argument(help="The new custodian: member id, signing address or bank code.")],
    json_output: JsonOption = False,
) -> None:
    """Propose a successor custodian for a pool whose custodian was removed from the alliance (this bank's vote
    counts); custody passes when the members' votes reach the quorum (`alliance assets vote-successor`)."""
    _voted(lifecycle.propose_successor(node_context(ctx), pool_id, successor), json_output,
           f"proposed {successor} as custodian of pool {pool_id}")


@app.command("vote-successor")
def assets_vote_successor(ctx: typer.Context, pool_id: PoolIdArgument, json_output: JsonOption = False) -> None:
    """Vote for the successor proposed for a pool whose custodian was removed from the alliance."""
    _voted(lifecycle.vote_successor(node_context(ctx), pool_id), json_output,
           f"voted for the successor of pool {pool_id}")


def _voted(vote: lifecycle.SuccessionVote, json_output: bool, message: str) -> None:
    if json_output:
        console.print_json(vote.to_json())
        return
    outcome = ("custody passed to the successor" if vote.decided else
               f"{vote.votes} of {vote.required} votes; the other members run "
               f"`alliance assets vote-successor {vote.pool_id}`")
    console.success(f"{message} (round {vote.round}): {outcome}")


@app.command("service")
def assets_service(
    ctx: typer.Context,
    pool_id: PoolIdArgument,
    period: Annotated[int, typer.Option(min=1, max=lifecycle.MAX_PERIOD,
                                        help="Reporting period, e.g. 202406; increasing per pool.")],
    version: Annotated[int | None, typer.Option(min=1, max=lifecycle.MAX_VERSION,
                                                help="Version reported on (default: the latest).")] = None,
    statuses: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="CSV loan_id,status (default: this bank's records).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Report the servicing status of every loan of a version for a period."""
    table = lifecycle.read_status_file(statuses) if statuses is not None else None
    result = lifecycle.report_servicing(node_context(ctx), pool_id, period, version=version, statuses=table)
    if json_output:
        console.print_json(result.to_json())
        return
    console.success(f"reported period {period} of pool {pool_id} version {result.version}: counts "
                    f"{result.status_counts} (tx {result.receipt.tx_hash})")


@app.command("attest")
def assets_attest(
    ctx: typer.Context,
    pool_id: PoolIdArgument,
    version: Annotated[int, typer.Argument(min=1, max=lifecycle.MAX_VERSION, help="The version attested.")],
    report: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The audit report (hashed).")],
    json_output: JsonOption = False,
) -> None:
    """Attest a pool version (auditor members only): the report's SHA-256 goes on chain."""
    with reading_bytes(report, "audit report") as handle:
        report_hash = lifecycle.report_hash_of(handle.read())
    receipt = lifecycle.attest(node_context(ctx), pool_id, version, report_hash)
    _done(receipt, json_output, f"attested pool {pool_id} version {version} with report 0x{report_hash.hex()}")


@app.command("prove")
def assets_prove(
    ctx: typer.Context,
    loans: Annotated[list[str] | None, typer.Argument(
        help="Loan ids (0x...) or this bank's loan references.", show_default=False)] = None,
    loans_file: Annotated[Path | None, typer.Option(
        "--loans-file", dir_okay=False,
        help="Also the loans listed in this file, one a line (an audit sample).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the bundle to this file instead of to stdout; for several "
                                                  "loans or a --loans-file, a directory getting one LOAN_ID.json "
                                                  "each.")] = None,
) -> None:
    """Produce loans' provenance bundles, for `alliance audit verify`; several loans share each tree built."""
    references = [*(loans or []), *(_listed_loans(loans_file) if loans_file is not None else [])]
    if not references:
        console.fail("name the loans to prove, or give --loans-file", code="usage")
    bundles = build_bundles(node_context(ctx), references)
    # A sample file makes a sample whatever it lists: a script reading it gets a list, and `--out DIR` a directory,
    # also when the file names one loan.
    several = len(references) > 1 or loans_file is not None or (out is not None and out.is_dir())
    if out is None:
        console.print_json(bundles if several else bundles[0])
    elif several:
        _write_bundles(out, bundles)
        console.success(f"wrote {len({b['record']['loan_id'] for b in bundles})} provenance bundle(s) to {out}")
    else:
        _write_bundle(out, bundles[0])
        console.success(f"wrote the provenance bundle of loan {bundles[0]['record']['loan_id']} to {out}")


def _listed_loans(path: Path) -> list[str]:
    """The loan ids or references of a file, one a line (blank lines and `#` comments skipped), read no further than
    one past the most `build_bundles` takes: a wrong file (a 1 GB tape) is refused without being read whole."""
    listed: list[str] = []
    with reading_text(path, "loan list") as handle:
        for line in handle:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                listed.append(entry)
                if len(listed) > MAX_BUNDLES:
                    raise InvalidInput(f"{path} lists more than {MAX_BUNDLES:,} loans, the most proven at once; "
                                       "split it", code="too_many_loans")
    return listed


def _write_bundles(directory: Path, bundles: list[dict[str, Any]]) -> None:
    """One file per loan in `directory` (made if missing), all or none: a run's bundles are one sample, and half of
    them left behind would look like the whole. None is put in place before all are written: the run's files were
    removed after a failed write, and with them the earlier bundles of the same loans they had replaced."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        console.fail(f"cannot make the directory {directory}: {exc.strerror}", code="cannot_write")
    files = {directory / f"{bundle['record']['loan_id']}.json": bundle for bundle in bundles}  # a loan asked twice
    try:
        write_private_files((path, _bundle_text(bundle)) for path, bundle in files.items())
    except OSError as exc:
        console.fail(f"cannot write the bundles to {directory}: {exc.strerror}", code="cannot_write")


def _write_bundle(path: Path, bundle: dict[str, Any]) -> None:
    """Write `bundle` to `path`, whole or not at all."""
    try:
        write_private_text(path, _bundle_text(bundle))
    except OSError as exc:
        console.fail(f"cannot write {path}: {exc.strerror}", code="cannot_write")


def _bundle_text(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, indent=2) + "\n"


@app.command("loans")
def assets_loans(
    ctx: typer.Context,
    pool: Annotated[str, typer.Argument(help="Local name of the pool.")],
    version: Annotated[int | None, typer.Option(min=1, max=lifecycle.MAX_VERSION, help=(
        "An anchored version (default: the latest anchored one; a draft is listed once anchored)."))] = None,
    out: Annotated[Path | None, typer.Option(dir_okay=False, help=(
        "Write the ids to this file, whole or not at all, instead of to stdout."))] = None,
    json_output: JsonOption = False,
) -> None:
    """List the loan ids of an anchored pool version, one a line in version order: what `prove --loans-file` takes."""
    node = node_context(ctx)
    anchored = anchored_version(node.store, pool, version)
    slices = iter_loan_ids(node.store, anchored)  # a slice at a time: a million ids are never held at once
    if out is None and json_output:
        console.print_json_streamed(anchored.to_json(), "loan_ids", (["0x" + i.hex() for i in s] for s in slices))
        return
    lines = ("".join(f"0x{loan_id.hex()}\n" for loan_id in ids) for ids in slices)
    if out is None:
        for text in lines:  # a reader that stops early (`| head`): Click ends the command quietly, exit code 1
            sys.stdout.write(text)
        return
    try:
        write_private_chunks(out, (text.encode("ascii") for text in lines))
    except OSError as exc:
        console.fail(f"cannot write {out}: {exc.strerror}", code="cannot_write")
    if json_output:
        console.print_json({**anchored.to_json(), "out": str(out)})
        return
    console.success(f"wrote the {anchored.loan_count:,} loan ids of pool {pool!r} version {anchored.version} to {out}")


@app.command("show")
def assets_show(
    ctx: typer.Context,
    pool_id: Annotated[int | None, typer.Argument(min=1, max=lifecycle.MAX_POOL_ID,
                                                  help="A pool's on-chain id (default: local pools).")] = None,
    json_output: JsonOption = False,
) -> None:
    """This bank's pools and double-financing flags, or one pool's on-chain state and history."""
    node = node_context(ctx)
    if pool_id is not None:
        # The API's object (GET /v1/assets/pools/{id}), with every event rather than a page of them.
        pool = read_pool_state(asset_registry(node), pool_id).to_json()
        if json_output:
            console.print_json(pool)
            return
        console.info(f"pool {pool_id}: originator {pool['originator_member_id']}, custodian "
                     f"{pool['custodian_member_id']}, {pool['version_count']} version(s)")
        console.table("History", ["block", "event", "details"],
                      [(e["block_number"], e["kind"], {k: v for k, v in e["args"].items() if k != "poolId"})
                       for e in pool["events"]])
        return
    flags = {"0x" + k.hex(): v for k, v in double_financing(node).items()}
    pools = local_pools(node)
    if json_output:
        console.print_json({"pools": pools, "double_financed": flags})
        return
    # A pool whose only draft was discarded has no version, but keeps its name (and its on-chain identity): listed.
    console.table("Pools", ["name", "pool id", "state", "version", "loans", "root"],
                  [(p["name"], p["pool_id"] or "-", v["state"], v["version"] or "-", v["loan_count"], v["root"])
                   for p in pools for v in p["versions"]]
                  + [(p["name"], p["pool_id"] or "-", "no version", "-", 0, "-") for p in pools if not p["versions"]])
    if flags:
        console.info(Text.assemble((f"{len(flags)} loan id(s) active in two or more pools", "red"), ":"))
        for loan_id, pool_ids in flags.items():
            console.info(f"  {loan_id}: pools {', '.join(map(str, pool_ids))}")


def _done(receipt: Receipt, json_output: bool, message: str) -> None:
    if json_output:
        console.print_json(lifecycle.receipt_json(receipt))
        return
    console.success(f"{message} (tx {receipt.tx_hash}, block {receipt.block_number})")
