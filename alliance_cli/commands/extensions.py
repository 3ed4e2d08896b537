"""`alliance extensions list`, and the commands that installed extensions contribute to `alliance`."""

from __future__ import annotations

import logging
from typing import Any

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.extensions.manager import ExtensionManager, extensions_for

logger = logging.getLogger(__name__)

app = typer.Typer(help="Credit workflow extensions (built-in modules and installed plugins).", no_args_is_help=True)


@app.command("list")
def extensions_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Extensions in call order with their hooks; those not loaded with the reason."""
    # Reads only the settings: works before `alliance init`, to see what a node would load.
    node = node_context(ctx, initialised=False)
    infos = extensions_for(node).extensions()
    # What the node would refuse to mount (a route without a role check): said here, not only in the node's log.
    from node.extensions.routes import contributed_routers  # FastAPI: imported only for this command

    _, problems = contributed_routers(node)
    if json_output:
        console.print_json([{**i.to_json(), "problem": problems.get(i.name)} for i in infos])
        return
    console.table("extensions", ["name", "source", "loaded", "hooks / error"],
                  [(i.name, i.source, "yes" if i.loaded else "no",
                    _hooks_and_problem(i.hooks, problems.get(i.name)) if i.loaded else i.error)
                   for i in infos])


def _hooks_and_problem(hooks: tuple[str, ...], problem: str | None) -> str:
    listed = ", ".join(h.removeprefix("alliance_") for h in hooks)
    return listed if problem is None else f"{listed}; {problem}"


def add_extension_commands(cli: typer.Typer, manager: ExtensionManager | None = None) -> list[str]:
    """Add the commands of installed extensions (`alliance_cli_commands`); names already taken are skipped.

    Runs when the CLI starts, before any data dir is known, so every installed plugin is asked (the settings'
    enabled list applies to the node's pipeline, not to which commands exist).
    """
    taken = {c.name for c in cli.registered_commands} | {g.name for g in cli.registered_groups}
    outcome = (manager or ExtensionManager()).call("alliance_cli_commands", expect=list)
    added = []
    for module, commands in outcome.results:
        for entry in commands:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
                logger.warning("extension %s: a CLI command must be a (name, command) pair", module)
                continue
            name, command = entry
            if name in taken:
                logger.warning("extension %s: command %r is taken", module, name)
                continue
            _add(cli, name, command)
            taken.add(name)
            added.append(name)
    return added


def _add(cli: typer.Typer, name: str, command: Any) -> None:
    if isinstance(command, typer.Typer):
        cli.add_typer(command, name=name)
    else:
        cli.command(name)(command)
