"""Files the CLI writes for the user (a provenance bundle, a list of bad rows): whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_whole_text(path: Path, text: str) -> None:
    """`text` to `path` (UTF-8) whole or not at all: a failed or interrupted write (a full disk, Ctrl-C) leaves
    neither half a file nor half of the earlier file there. Written beside it, then renamed over it."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
