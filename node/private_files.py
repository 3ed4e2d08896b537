"""Files only the node's own user may read: its config (the database password), demo API keys, prospect lists."""

from __future__ import annotations

import os
from pathlib import Path


def write_private_text(path: Path, text: str) -> None:
    """Write `text` to `path` (UTF-8), readable and writable by its owner only.

    Created 0600 rather than with the umask's mode (0644: every account on the host could read it), and a file
    already there under a looser mode is narrowed to 0600 before anything is written to it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
