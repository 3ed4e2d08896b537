"""`alliance init`: create this bank's data dir, keys and config."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import CliState
from node.config import Network, load_settings
from node.errors import InvalidInput
from node.setup import init_node


def init_command(
    ctx: typer.Context,
    bank_name: Annotated[str, typer.Option(help="The bank's name as shown to the consortium.")],
    bank_code: Annotated[str, typer.Option(help="A unique code, e.g. the bank's BIC or CNAPS code.")],
    network: Annotated[Network | None, typer.Option(
        help="dev (local chain the node starts), local or consortium; default ALLIANCE_NETWORK, else dev.",
        show_default=False)] = None,
    rpc_url: Annotated[str | None, typer.Option(help="JSON-RPC URL (local and consortium networks).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Create the data dir with a signing key, an X25519 key for key envelopes, config and store."""
    state: CliState = ctx.find_root().obj
    # Only what was given: a default here outranked ALLIANCE_NETWORK, so `ALLIANCE_NETWORK=consortium alliance init`
    # made a dev node, and a misspelt value went unread instead of being refused as invalid configuration.
    overrides = ({"network": network} if network else {}) | ({"rpc_url": rpc_url} if rpc_url else {})
    settings = load_settings(state.data_dir, **overrides)
    passphrase = settings.passphrase
    if passphrase is None:
        if not sys.stdin.isatty():  # CI, cron, a pipe: nobody to ask (getpass would warn and read EOF)
            raise InvalidInput("set ALLIANCE_KEY_PASSPHRASE to the passphrase for the new keys",
                               code="passphrase_required")
        # On stderr (with its "do not match" retries): stdout holds only the result, `--json` a JSON document.
        passphrase = typer.prompt("Passphrase for the new keys", hide_input=True, confirmation_prompt=True,
                                  err=True)
    result = init_node(settings, bank_name=bank_name, bank_code=bank_code, passphrase=passphrase)
    if json_output:
        console.print_json({"data_dir": str(result.data_dir), "address": result.address,
                            "encryption_public_key": "0x" + result.encryption_public_key.hex(),
                            "config_file": str(result.config_file)})
        return
    console.success(f"initialised {result.data_dir}")
    console.info(f"signing address:       {result.address}")
    console.info(f"encryption public key: 0x{result.encryption_public_key.hex()}")
