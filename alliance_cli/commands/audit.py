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
from node.assets.verify import verify_bundle
from node.governance import parse_address
from node.input_files import read_json_file

# A bundle carries a proof of a few dozen hashes and the pool's history (custody, servicing reports with the loan's
# status proofs, attestations): decades of monthly reports stay under a few MB.
MAX_BUNDLE_CHARS = 64 * 2**20

app = typer.Typer(help="Independent verification for auditors (needs only a chain endpoint).", no_args_is_help=True)


@app.command("verify")
def audit_verify(
    bundle_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The provenance bundle (JSON).")],
    rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of any node of the consortium chain.")],
    registry: Annotated[str, typer.Option("--registry", help="Address of the AssetRegistry contract.")],
    json_output: JsonOption = False,
) -> None:
    """Verify a loan's provenance against the chain; exit code 1 unless every check passes."""
    bundle = read_json_file(bundle_file, "provenance bundle", max_chars=MAX_BUNDLE_CHARS, unique_keys=True)
    verdict = verify_bundle(bundle, rpc, parse_address(registry, what="registry address"))
    if json_output:
        console.print_json(verdict.to_json())
    else:
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
            missing = facts["loan_status_periods_missing"]
            if missing and verdict.failures[0].name != "loan_statuses":
                # Said on its own line whatever failed first: a period left out may hide the loan's default.
                periods = ", ".join(str(m["period"]) for m in missing)
                console.err.print(Text.assemble(("MISSING SERVICING PERIODS", "red"), f": {periods} are on chain "
                                                "for the loan, but the bundle gives no status for them"))
    if not verdict.ok:
        raise typer.Exit(1)
