"""`alliance node start`: serve this node's API (and run its dev chain on the dev network)."""

from __future__ import annotations

from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.state import node_context
from node.server import serve

app = typer.Typer(help="Run the node.", no_args_is_help=True)


@app.command("start")
def node_start(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option(help="Dev only: set up this node as demo bank A of a three-bank "
                                            "consortium, with demo API keys.")] = False,
    host: Annotated[str | None, typer.Option(help="Listen address (default from config: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Listen port (default from config: 8000).")]
    = None,
) -> None:
    """Start the API server; on the dev network the local chain is started too and stopped at exit."""
    node = node_context(ctx, initialised=not demo)  # the demo initialises an empty data dir itself
    console.info(f"alliance node ({node.settings.network}) starting; data dir {node.settings.data_dir}")
    serve(node, demo=demo, host=host, port=port)
