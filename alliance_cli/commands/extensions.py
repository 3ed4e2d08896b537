"""`alliance extensions list`, and the commands that installed extensions contribute to `alliance`."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import typer
from typer.main import get_command

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context, settings_of_this_run
from node.extensions.manager import ExtensionManager, extensions_for, require_extension

logger = logging.getLogger(__name__)

COMMAND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

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

    Runs when the CLI starts, before any data dir is known, so every installed plugin is asked; a command run on a
    node whose settings leave its extension out is refused then (`extension_not_running`), as the API leaves out the
    extension's routes.
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
            if not COMMAND_NAME.fullmatch(name):
                # An empty name made Typer name the command after its function: one called `apply` replaced
                # `alliance apply`, unseen by the check below.
                logger.warning("extension %s: command name %r is not a word of letters, digits, - and _", module, name)
                continue
            if name in taken:
                logger.warning("extension %s: command %r is taken", module, name)
                continue
            command = _requiring(module, command)
            problem = _unbuildable(name, command)
            if problem is not None:
                logger.warning("extension %s: command %r not added: %s", module, name, problem)
                continue
            _add(cli, name, command)
            taken.add(name)
            added.append(name)
    return added


def _requiring(module: str, command: Any) -> Any:
    """`command` refusing to run unless the node's settings run `module` (its help still shows). A Typer app is
    given as (app, its group callback): that callback runs before any of the group's commands."""
    if isinstance(command, typer.Typer):
        own = command.registered_callback.callback if command.registered_callback is not None else None
        return command, _checked(module, own or _no_callback)
    return _checked(module, command) if callable(command) else command


def _no_callback() -> None:
    pass  # the group of a plugin's app that has no callback of its own (no docstring: the app's help stays)


def _checked(module: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # Typer reads the parameters through __wrapped__
    def run(*args: Any, **kwargs: Any) -> Any:
        require_extension(settings_of_this_run(), module)
        return function(*args, **kwargs)

    return run


def _unbuildable(name: str, command: Any) -> str | None:
    """Why Typer cannot make a command of `command`, or None. Typer builds every command when the CLI runs, whatever
    command was asked for: one it cannot build (not callable, a parameter type it does not know) ended every
    `alliance` command, `node start` included, in a traceback."""
    if not (isinstance(command, tuple) or callable(command)):
        return f"a {type(command).__name__}, neither a Typer app nor a function"
    scratch = typer.Typer()
    _add(scratch, name, command)
    try:
        get_command(scratch)
    except Exception as exc:  # whatever Typer or Click raise for a command they cannot build
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def _add(cli: typer.Typer, name: str, command: Any) -> None:
    if isinstance(command, tuple):  # a Typer app and the callback it runs under (_requiring)
        cli.add_typer(command[0], name=name, callback=command[1])
    else:
        cli.command(name)(command)
