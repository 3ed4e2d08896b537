"""Opening the file an advisory `flock` is taken on (the node, signer and encryption-key locks of a data dir)."""

from __future__ import annotations

import os
from pathlib import Path

from node.errors import InvalidInput


def open_lock_file(path: Path, refusal: str) -> int:
    """An open descriptor of `path`, made (with its directory) if missing, readable by this user only; InvalidInput
    (`data_dir_unwritable`) saying `refusal` and why when it cannot be: a read-only or full data dir, another user's."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise InvalidInput(f"{refusal}: {exc.strerror or exc}", code="data_dir_unwritable") from None
