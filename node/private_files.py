"""Files the node writes whole or not at all: those only its own user may read (its config with the database
password, demo API keys, prospect lists, the CLI's provenance bundles and import error lists), and those another
service reads (Besu's accounts allowlist)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private_text(path: Path, text: str) -> None:
    """Write `text` to `path` (UTF-8), readable and writable by its owner only, whole or not at all.

    Created 0600 (mkstemp) rather than with the umask's mode (0644: every account on the host could read it), so a
    file already there under a looser mode is replaced by one that never was. Written beside it and renamed over
    it: a write cut short (a full disk, a crash) leaves neither half a file nor half of the earlier one (a config
    the node could no longer read).
    """
    _write_whole(path, text, mode=0o600)


def write_public_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all, readable by all (0644: Besu may run as another user)."""
    _write_whole(path, text, mode=0o644)


def _write_whole(path: Path, text: str, *, mode: int) -> None:
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)  # mkstemp made it 0600
            handle.write(text)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
