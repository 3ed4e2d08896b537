"""Options shared by every command (set by the top-level callback) and the node context they open."""

from __future__ import annotations

import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import typer

from node.config import Settings, load_settings
from node.errors import NotInitialised
from node.extensions.manager import require_extension
from node.runtime import NodeContext


@dataclass
class CliState:
    data_dir: Path | None = None
    debug: bool = False


# The options of the `alliance` command being run, for code that gets no Typer context: a plugin's command, which
# takes only its own parameters (alliance_cli.commands.extensions).
_invoked: ContextVar[CliState | None] = ContextVar("alliance_cli_state", default=None)


def remember_options(state: CliState) -> CliState:
    _invoked.set(state)
    return state


def settings_of_this_run() -> Settings:
    """The settings of the data dir this `alliance` run names (or the default one)."""
    state = _invoked.get()
    return load_settings(state.data_dir if state is not None else None)


def node_context(ctx: typer.Context, *, initialised: bool = True) -> NodeContext:
    """This bank's node; unless `initialised` is False, refused for a data dir `alliance init` never made.

    Checked up front because opening the store creates it: a mistyped --data-dir would otherwise become a new,
    empty node (with the API key just created in it) instead of an error."""
    state: CliState = ctx.find_root().obj
    settings = load_settings(state.data_dir)
    if initialised and not settings.signing_key_file.exists():
        raise NotInitialised(f"{settings.data_dir} is not an initialised node data dir (no signing key); "
                             "run `alliance init` first, or pass the right --data-dir")
    return NodeContext(settings, ask_passphrase=_prompt_if_interactive)


def module_context(ctx: typer.Context, module: str) -> NodeContext:
    """This bank's node, for a command of the extension `module`: refused (ExtensionNotRunning) when the node's
    settings leave the module out, as the API leaves out its routes."""
    node = node_context(ctx)
    require_extension(node.settings, module)
    return node


def _prompt_if_interactive() -> str:
    # Without a terminal (CI, cron) there is nobody to ask: the caller reports the missing passphrase.
    if not sys.stdin.isatty():
        return ""
    # On stderr, as getpass itself asks: on stdout the prompt went into `--json` output and, redirected, unseen.
    return str(typer.prompt("Passphrase of this bank's keys", hide_input=True, err=True))
