"""Entry point of the `alliance` command: global options, command groups, one error boundary."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.commands import alerts as alerts_cmd
from alliance_cli.commands import apikey, chain, check, contracts, fraud, init, key, ledger, member, node_cmd
from alliance_cli.commands import apply as apply_cmd
from alliance_cli.commands import extensions as extensions_cmd
from alliance_cli.commands import marketing as marketing_cmd
from alliance_cli.commands import store as store_cmd
from alliance_cli.commands.assets import app as assets_app
from alliance_cli.commands.audit import app as audit_app
from alliance_cli.state import CliState, remember_options
from node.auth.apikeys import InvalidApiKey
from node.chain.artifacts import ArtifactMissing
from node.chain.client import keep_rpc_url_out_of_logs
from node.chain.compiler import CompilationFailed, CompilerNotFound
from node.chain.errors import ChainError, ContractRevert
from node.chain.signer import KeystoreError
from node.config import ConfigError
from node.errors import AllianceError
from node.store.db import STORE_LOST, StoreUnavailable

app = typer.Typer(name="alliance", help="Alliance node: shared fraud intelligence and ABS provenance.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(envvar="ALLIANCE_DATA_DIR",
                                                  help="The node's data dir (default .alliance).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and debug logs.")] = False,
) -> None:
    ctx.obj = remember_options(CliState(data_dir=data_dir, debug=debug))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_rpc_url_out_of_logs()


app.command("init")(init.init_command)
app.command("check")(check.check_command)
app.command("check-log")(check.check_log_command)
app.add_typer(chain.app, name="chain")
app.add_typer(contracts.app, name="contracts")
app.add_typer(member.app, name="member")
app.add_typer(fraud.app, name="fraud")
app.add_typer(apikey.app, name="apikey")
app.add_typer(node_cmd.app, name="node")
app.add_typer(key.app, name="key")
app.add_typer(ledger.app, name="ledger")
app.add_typer(assets_app, name="assets")
app.add_typer(audit_app, name="audit")
app.command("apply")(apply_cmd.apply_command)
app.add_typer(marketing_cmd.app, name="marketing")
app.add_typer(alerts_cmd.app, name="alerts")
app.add_typer(extensions_cmd.app, name="extensions")
app.add_typer(store_cmd.app, name="store")
extensions_cmd.add_extension_commands(app)

# Errors a user can act on: one line, exit 1, no traceback (unless --debug).
EXPECTED_ERRORS = (AllianceError, ChainError, ConfigError, StoreUnavailable, KeystoreError, CompilationFailed,
                   CompilerNotFound, ArtifactMissing, InvalidApiKey, *STORE_LOST)


def describe(exc: BaseException) -> str:
    if isinstance(exc, ContractRevert):
        return f"refused by the contract: {exc}"
    if isinstance(exc, STORE_LOST):
        reason = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__  # as the API logs it
        return f"the database is unavailable: {reason}".splitlines()[0]
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, AllianceError):
        # The code the API answers with and the docs name, so a script or a runbook can tell refusals apart.
        return f"{text.splitlines()[0]} [{exc.code}]"
    return text.splitlines()[0] if not isinstance(exc, CompilationFailed) else text


def run(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    console.json_errors = "--json" in args
    try:
        code = app(args=args, prog_name="alliance", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.failure("aborted", code="aborted")
        sys.exit(1)
    except typer.TyperException as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `alliance` alone: help, not an error
            console.out.print(message)
            sys.exit(0)
        # Click lists an enum's choices one per line ("Missing option '--role'. Choose from:\n  operator,..."):
        # folded into the one line an error gets.
        console.failure(f"{' '.join(message.split())} (see --help)", code="usage")
        sys.exit(1)
    except EXPECTED_ERRORS as exc:
        if debug:
            raise
        code = "store_unavailable" if isinstance(exc, STORE_LOST) else console.error_code(exc)
        console.failure(describe(exc), code=code, details=getattr(exc, "details", None))
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
