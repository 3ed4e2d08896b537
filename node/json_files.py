"""Reading a JSON document that a person hands the node: a founders list, a provenance bundle, an application."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from node.errors import InvalidInput


def read_json_file(path: Path, what: str) -> Any:
    """The document in `path`; InvalidInput (`file_not_found` or `malformed_file`) saying in one line what is wrong.

    `what` names the file in the message ("founders file"). A hostile file may nest its arrays thousands deep:
    that is refused like any other malformed file, not left to escape as a RecursionError and a traceback.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path} does not exist", code="file_not_found") from None
    except IsADirectoryError:
        raise InvalidInput(f"{what} {path} is a directory", code="malformed_file") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {path} is not UTF-8 text", code="malformed_file") from None
    except OSError as exc:
        raise InvalidInput(f"{what} {path} cannot be read: {exc.strerror or exc}", code="malformed_file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} {path} is not JSON: {exc}", code="malformed_file") from None
    except RecursionError:
        raise InvalidInput(f"{what} {path} is not JSON this node reads: it nests too deeply",
                           code="malformed_file") from None
