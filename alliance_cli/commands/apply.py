"""`alliance apply FILE.json`: run one loan application through the node's pipeline and show the decision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.text import Text

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.errors import InvalidInput
from node.extensions.manager import check_extension_names, require_extension
from node.input_files import read_json_file
from node.modules.credit_platform import ApplicationIn, submit_application
from node.modules.policy import policy_for
from node.text import location_shown

CLI_SUBMITTER = "cli"
# An application is a few kilobytes (64 bank inputs at most). A longer file is a mistake: a device such as
# /dev/zero, or an export passed in its place, was read whole into memory before anything was checked.
MAX_APPLICATION_FILE_CHARS = 1_048_576


def apply_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The application as JSON (see docs/extensions.md).")],
    json_output: JsonOption = False,
) -> None:
    """Decide one application; prints outcome, score, limit and the reasons."""
    try:
        body = ApplicationIn.model_validate(read_json_file(file, "application file",
                                                           max_chars=MAX_APPLICATION_FILE_CHARS))
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, location_shown(e['loc'])))}: {e['msg']}" for e in exc.errors())
        # Refused as the API refuses such a body, its line ending with that code as every refusal's does.
        raise InvalidInput(f"{file} is not a valid application: {problem}", code="invalid_request") from None
    node = node_context(ctx)
    # As at `node start`, one line here rather than a decision: a misspelt extension name left the built-in the bank
    # replaces deciding (or a module out), and a policy file the modules cannot use sent the application to review.
    check_extension_names(node)
    require_extension(node.settings, "credit_platform")  # its routes are not mounted either: intake is off
    policy_for(node)
    view = submit_application(node, body, submitted_by=CLI_SUBMITTER)
    if json_output:
        console.print_json(view)
        return
    offer = f", limit {view['limit']} at {view['annual_rate_percent']} %" if view["limit"] else ""
    console.info(Text.assemble(f"application {view['application_id']}: ", (str(view["outcome"]), "bold"),
                               f" (score {view['score']}{offer})"))
    console.table("reasons", ["code"], [(code,) for code in view["reasons"]])
