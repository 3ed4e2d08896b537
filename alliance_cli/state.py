"""Options shared by every command (set by the top-level callback) and the node context they open."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from node.config import load_settings
from node.runtime import NodeContext


@dataclass
class CliState:
    data_dir: Path | None = None
    debug: bool = False


def node_context(ctx: typer.Context) -> NodeContext:
    state: CliState = ctx.find_root().obj
    return NodeContext(load_settings(state.data_dir), ask_passphrase=_prompt_if_interactive)


def _prompt_if_interactive() -> str:
    # Without a terminal (CI, cron) there is nobody to ask: the caller reports the missing passphrase.
    if not sys.stdin.isatty():
        return ""
    return str(typer.prompt("Passphrase of this bank's keys", hide_input=True))
