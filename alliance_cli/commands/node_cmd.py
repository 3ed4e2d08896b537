"""`alliance node start|status`: serve this node's API (and run its dev chain on the dev network); show what its
store says of its work."""

from __future__ import annotations

from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.node_status import current_status

app = typer.Typer(help="Run the node, and see how its work stands.", no_args_is_help=True)


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
    # Imported here: the web framework and the app take ~0.3 s to load, which every other command would pay.
    from node.server import serve

    node = node_context(ctx, initialised=not demo)  # the demo initialises an empty data dir itself
    console.info(f"alliance node ({node.settings.network}) starting; data dir {node.settings.data_dir}")
    serve(node, demo=demo, host=host, port=port)


@app.command("status")
def node_status(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Outbox and publish-batch counts by state, the mirror's position and lag, key epochs held, a next signing key
    prepared, an activated signing key the running node could not open: from the data dir, whether or not the node
    runs (its background loops' state is in GET /health)."""
    node = node_context(ctx)
    with node.store.session() as session:
        status = current_status(node, session)
    data = status.to_json()
    if json_output:
        console.print_json(data)
        return
    figures, next_signer, unusable = status.figures, status.next_signer_prepared, status.signing_key_unusable
    for title, counts in (("outbox records", figures.outbox), ("publish batches", figures.batches)):
        if counts:
            console.table(title, ["state", title.split()[-1]], sorted(counts.items()))
        else:
            console.info(f"{title}: none")
    mirror = figures.mirror
    lag = f"{mirror.lag_s:.0f} s" if mirror.lag_s is not None else "never synced"
    console.info(f"oldest queued record queued at: {data['oldest_queued_report_at'] or 'none'}")
    console.info(f"mirror: block {mirror.as_of_block}, lag {lag}{' (stale)' if mirror.stale else ''}"
                 + (f"; last error: {mirror.last_error}" if mirror.last_error else ""))
    console.info(f"key epochs held: {', '.join(map(str, figures.key_epochs)) or 'none'}")
    if next_signer is not None:
        console.info(f"next signing key prepared: {next_signer}; once the members pass its rotation, run "
                     "`alliance key activate-signer`: a running node then signs with it by itself")
    if unusable is not None:
        console.info(f"the running node signs nothing since {unusable.since}: the signing key put in place by "
                     f"`alliance key activate-signer` ({unusable.address or 'no address'}) does not open there "
                     f"({unusable.error}); reports stay queued")
