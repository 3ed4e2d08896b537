"""`alliance audit verify`: an auditor checks a provenance bundle with nothing but a chain endpoint.

Deliberately opens no node context: no data dir, database, keys or configuration are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from alliance_cli import console
from alliance_cli.console import JsonOption
from node.assets.verify import Verdict, verify_bundles
from node.errors import InvalidInput
from node.governance import parse_address
from node.input_files import read_json_file

# A bundle carries a proof of a few dozen hashes and the pool's history (custody, servicing reports with the loan's
# status proofs, attestations): decades of monthly reports stay under a few MB.
MAX_BUNDLE_CHARS = 64 * 2**20

app = typer.Typer(help="Independent verification for auditors (needs only a chain endpoint).", no_args_is_help=True)


@app.command("verify")
def audit_verify(
    bundle_paths: Annotated[list[Path], typer.Argument(
        exists=True, metavar="BUNDLE...", help="Provenance bundles (JSON), or directories of them (their *.json).")],
    rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of any node of the consortium chain.")],
    registry: Annotated[str, typer.Option("--registry", help="Address of the AssetRegistry contract.")],
    json_output: JsonOption = False,
) -> None:
    """Verify loans' provenance against the chain; exit code 1 unless every check of every bundle passes.

    Several bundles (an audit sample, as `alliance assets prove --out DIR` writes it) are verified in one run that
    reads the chain once for all of them."""
    files = _bundle_files(bundle_paths)
    # Every file read before the chain is asked anything: a malformed one refuses the run, naming it.
    bundles = [read_json_file(path, "provenance bundle", max_chars=MAX_BUNDLE_CHARS, unique_keys=True)
               for path in files]
    verdicts = verify_bundles(bundles, rpc, parse_address(registry, what="registry address"))
    if len(bundle_paths) == 1 and bundle_paths[0].is_file():
        _say(verdicts[0], json_output)
    else:
        _say_each(files, verdicts, json_output)
    if not all(verdict.ok for verdict in verdicts):
        raise typer.Exit(1)


def _bundle_files(paths: list[Path]) -> list[Path]:
    """The files named, a directory standing for its *.json files (by name); InvalidInput for one holding none."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise InvalidInput(f"{path} holds no provenance bundle (*.json)", code="file_not_found")
            files.extend(found)
        else:
            files.append(path)
    return files


def _say_each(files: list[Path], verdicts: list[Verdict], json_output: bool) -> None:
    """One line a bundle, then the count; --json: every verdict with its file."""
    if json_output:
        console.print_json({"verified": all(v.ok for v in verdicts), "bundles": [
            {"file": str(path), **verdict.to_json()} for path, verdict in zip(files, verdicts, strict=True)]})
        return
    for path, verdict in zip(files, verdicts, strict=True):
        if verdict.ok:
            facts = verdict.facts
            console.info(Text.assemble(("✓", "green"), f" VERIFIED      {console.shown(str(path))}: loan "
                                       f"{facts['loan_id']}, pool {facts['pool_id']} version {facts['version']}"))
        else:
            failure, periods = verdict.failures[0], _periods_left_out(verdict)
            gap = f"; MISSING SERVICING PERIODS {periods}" if periods else ""
            console.info(Text.assemble(("✗", "red"), f" NOT VERIFIED  {console.shown(str(path))}: {failure.name}: "
                                       f"{console.shown(failure.detail)}{gap}"))
    failed = sum(not v.ok for v in verdicts)
    if failed:
        console.err.print(Text.assemble(("NOT VERIFIED", "red"), f": {failed} of {len(verdicts)} bundles failed; "
                                        "`alliance audit verify FILE` shows each check of one"))
    else:
        console.success(f"VERIFIED: all {len(verdicts)} bundles, each as of its block (chain head "
                        f"{verdicts[0].facts['chain_head']}); `alliance audit verify FILE` shows each check of one")


def _say(verdict: Verdict, json_output: bool) -> None:
    """One bundle's checks, one a line, and the verdict with what changed since the bundle's block."""
    if json_output:
        console.print_json(verdict.to_json())
        return
    for check in verdict.checks:
        mark = ("✓", "green") if check.ok else ("✗", "red")
        console.info(Text.assemble(mark, f" {check.name:<16} {console.shown(check.detail)}"))
    facts = verdict.facts
    if verdict.ok:
        # What holds as of which block: the history (custody, servicing, attestations) is the chain's up to the
        # bundle's block only, so what changed since is said beside it.
        console.success(f"VERIFIED: loan {facts['loan_id']} is in version {facts['version']} of pool "
                        f"{facts['pool_id']}, as anchored on chain; the pool's history is verified as of block "
                        f"{facts['as_of_block']} (chain head {facts['chain_head']})")
        if facts["latest_version_now"] > facts["version"]:
            console.info(f"note: the pool's latest version is now {facts['latest_version_now']}; this bundle "
                         f"proves version {facts['version']} only")
        if len(facts["pools_holding_loan_now"]) > 1:
            console.info(f"note: as of the chain head the loan's id is active in pools "
                         f"{', '.join(map(str, facts['pools_holding_loan_now']))} at once: financed twice after "
                         f"block {facts['as_of_block']}")
        if facts["custodian_member_id_now"] != facts["custodian_member_id_as_of_block"]:
            console.info(f"note: the pool changed custody after block {facts['as_of_block']}: held by member "
                         f"{facts['custodian_member_id_as_of_block']} then, by member "
                         f"{facts['custodian_member_id_now']} now")
    else:
        console.err.print(Text.assemble(("NOT VERIFIED", "red"), f": {console.shown(verdict.failures[0].detail)}"))
        if periods := _periods_left_out(verdict):
            console.err.print(Text.assemble(("MISSING SERVICING PERIODS", "red"), f": {periods} are on chain "
                                            "for the loan, but the bundle gives no status for them"))


def _periods_left_out(verdict: Verdict) -> str:
    """The servicing periods the bundle leaves out ("3, 7"), when a check other than `loan_statuses` failed first
    (that one names them itself); said whatever failed first, since a period left out may hide the loan's default."""
    missing = verdict.facts["loan_status_periods_missing"]
    if not missing or verdict.failures[0].name == "loan_statuses":
        return ""
    return ", ".join(str(m["period"]) for m in missing)
