"""`alliance marketing prescreen FILE.csv`: clean a prospect list before a campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import module_context
from node.errors import InvalidInput
from node.input_files import reading_text
from node.modules.marketing import prescreen
from node.private_files import writing_private_file

app = typer.Typer(help="Quantitative marketing: pre-screen prospect lists.", no_args_is_help=True)


@app.command("prescreen")
def marketing_prescreen(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV with identifier columns (phone, cn_resident_id, ...), segment.")],
    output: Annotated[Path | None, typer.Option(help="Clean list (default FILE.clean.csv).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Drop invalid, duplicate and blacklisted prospects; write the clean list and count per segment."""
    target = output or file.with_name(file.stem + ".clean.csv")
    if _same_file(target, file):
        # The clean list replaced the list it came from: the rows it drops were gone, with nothing saying which.
        raise InvalidInput(f"--output {target} is the prospect list itself; name another file",
                           code="output_is_input")
    node = module_context(ctx, "marketing")
    with reading_text(file, "prospect list", encoding="utf-8-sig", newline="") as handle:
        try:
            # Owner-only: it holds the prospects' raw identifiers. Made before the list is screened: a clean list
            # with nowhere to go (its directory missing, a directory in its place) was found only after every
            # prospect had been checked and the checks written to the query log, for a list nobody got.
            with writing_private_file(target) as clean_list:
                result = prescreen(node, handle, key_id="cli")
                clean_list.write(result.clean_csv().encode("utf-8"))
        except OSError as exc:  # here, not in reading_text, which would call it the prospect list's
            console.fail(f"cannot write {target}: {exc.strerror}", code="cannot_write")
    if json_output:
        console.print_json({**result.to_json(), "output": str(target)})
        return
    console.table("prospects by segment", ["segment", "input", "invalid", "duplicate", "blacklisted", "kept"],
                  [(name, c.input, c.invalid, c.duplicate, c.blacklisted, c.kept)
                   for name, c in sorted(result.segments.items())])
    console.success(f"{result.totals().kept} prospects written to {target}")


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.samefile(other)
    except OSError:  # either not there, or a name too long (exists() raised that one): said when read or written
        return False
