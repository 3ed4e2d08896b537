"""`alliance apikey create|list|revoke`: keys for the node's API, each with one role."""

from __future__ import annotations

from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.auth.apikeys import Role, create_api_key, list_api_keys, revoke_api_key

app = typer.Typer(help="API keys and their roles.", no_args_is_help=True)


@app.command("create")
def apikey_create(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option(help="operator, analyst, auditor or workflow.")],
    label: Annotated[str, typer.Option(help="Who or what uses the key.")] = "",
    json_output: JsonOption = False,
) -> None:
    """Create a key; its secret is printed once and only its hash is stored."""
    node = node_context(ctx)
    with node.store.transaction() as session:
        issued = create_api_key(session, role, label)
    if json_output:
        console.print_json({"key_id": issued.key_id, "role": issued.role.value, "token": issued.token})
        return
    console.success(f"{issued.role} key {issued.key_id} created; store this token now, it is not shown again:")
    console.info(issued.token)


@app.command("list")
def apikey_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List keys (never their secrets)."""
    with node_context(ctx).store.session() as session:
        keys = list_api_keys(session)
    if json_output:
        console.print_json([{"key_id": k.key_id, "role": k.role.value, "label": k.label,
                             "created_at": k.created_at.isoformat(), "revoked": k.revoked} for k in keys])
        return
    console.table("API keys", ["key id", "role", "label", "created", "revoked"],
                  [(k.key_id, k.role, k.label, k.created_at.isoformat(timespec="seconds"), k.revoked) for k in keys])


@app.command("revoke")
def apikey_revoke(ctx: typer.Context,
                  key: Annotated[str, typer.Argument(help="The key id, or the whole token.")]) -> None:
    """Revoke a key at once."""
    with node_context(ctx).store.transaction() as session:
        revoked = revoke_api_key(session, key)
    console.success(f"key {revoked.key_id} revoked")
