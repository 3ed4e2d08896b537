"""All CLI output goes through here: rich tables for people, `--json` for machines, errors to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    # Plain print, not rich: machine output must be exactly the JSON, never wrapped or styled.
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def info(message: str) -> None:
    out.print(message)


def success(message: str) -> None:
    out.print(f"[green]✓[/green] {message}")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    out.print(grid)


def fail(message: str) -> NoReturn:
    """One readable line on stderr and exit code 1."""
    err.print(f"[red]error:[/red] {message}", markup=True)
    raise typer.Exit(1)
