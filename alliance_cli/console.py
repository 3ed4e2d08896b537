"""All CLI output goes through here: rich tables for people, `--json` for machines, errors to stderr.

Messages and table cells are plain text, never rich markup: they quote what the user typed, file contents and
names read from the chain, and a `[/]` in any of them would otherwise be a MarkupError (a traceback), and a
`[bold]` would be swallowed."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
json_errors = False  # the command was given --json: failures are said on stdout as JSON too (set by the entry point)


def chain_time(timestamp: int) -> str:
    """A chain timestamp (Unix seconds) as UTC to the minute, with a space that rich may wrap at (an ISO time, one
    word, was cut short in an 80-column terminal; Unix seconds were not readable)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def print_json(data: Any) -> None:
    # Plain print, not rich: machine output must be exactly the JSON, never wrapped or styled.
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_json_streamed(data: dict[str, Any], key: str, slices: Iterable[Iterable[Any]]) -> None:
    """`print_json` of `data` with `key` holding every item of `slices`, written a slice at a time as they come (a
    million-loan version's ids are never held at once); the same text print_json prints of the whole object."""
    head = json.dumps(data, indent=2, default=str)[:-2] if data else "{"  # without its closing "\n}"
    sys.stdout.write(f"{head}{',' if data else ''}\n  {json.dumps(key)}: [")
    empty = True
    for items in slices:
        for item in items:
            sys.stdout.write(f"{'' if empty else ','}\n    {json.dumps(item, default=str)}")
            empty = False
    sys.stdout.write("]\n}\n" if empty else "\n  ]\n}\n")


def info(message: str | Text) -> None:
    """`message` as plain text; a caller that styles a part passes a `Text`."""
    out.print(message if isinstance(message, Text) else Text(message))


def success(message: str) -> None:
    out.print(Text.assemble(("✓", "green"), " ", message))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        # Folded onto more lines, never cut: a cell cut to fit the terminal ("0xbca715e25b…") hid the hash or address
        # that people copy from it.
        grid.add_row(*(Text(str(cell), overflow="fold") for cell in row))
    out.print(grid)


def shown(text: str, *, keep: str = "") -> str:
    """`text` with every character a terminal would act on (but those in `keep`) written as an escape: messages quote
    files, endpoints' answers and what the chain holds, whose ESC sequences could otherwise clear the screen or
    write over what was printed (a VERIFIED over a NOT VERIFIED)."""
    return "".join(c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii") for c in text)


def error(message: str) -> None:
    """The one line of a failure, on stderr (a compiler's report keeps its lines)."""
    err.print(Text.assemble(("error:", "red"), " ", shown(message, keep="\n\t")))


def failure(message: str, *, code: str = "failed", details: list[dict[str, object]] | None = None) -> None:
    """Say that the command failed: one line on stderr and, when the command was given --json, the same as one JSON
    object on stdout (`{"error": {"code", "message", "details"?}}`), so a script reading stdout gets an answer it can
    parse on failure too."""
    error(message)
    if json_errors:
        print_json({"error": {"code": code, "message": message, **({"details": details} if details else {})}})


def fail(message: str, *, code: str = "failed", details: list[dict[str, object]] | None = None) -> NoReturn:
    """`failure` and exit code 1."""
    failure(message, code=code, details=details)
    raise typer.Exit(1)


def error_code(exc: BaseException) -> str:
    """The machine-readable code of a failure: the node's own code (the one the API answers with), else the error's
    kind in snake case (`chain_unavailable`, `malformed_chain_answer`, a contract's custom error, ...)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(exc).__name__).lower()
