"""Which processes use a data dir's encryption key: `<data_dir>/encryption-key.lock`, held shared by every process that
loaded the key, exclusively by `alliance key replace-encryption-key`.

The replacement seals the store again under a new key (node.encryption_key_replacement). A process that loaded the
old key before it began (an `alliance fraud import` of a long file, an `alliance apply`) and went on sealing rows
under it during or after the resealing left them sealed under a retired key: raw identifiers that `alliance ledger
republish` could no longer open, so those reports would never be published under a later key epoch. The node lock
(node.node_lock) keeps the replacement from running beside `alliance node start` only; this lock reaches every
process of the data dir. Each process takes it shared once, on loading the key, and keeps it until it exits (the
kernel drops an advisory `flock` however the process ends); the replacement converts this process's hold, or a hold of
its own, to exclusive, which fails while any other process holds it.

Processes of other data dirs sharing a PostgreSQL store are not reached (stop every node of the bank first, as the
replacement's documentation says).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.errors import Conflict
from node.lock_files import open_lock_file

LOCK_FILE = "encryption-key.lock"

# This process's shared hold per data dir (its open lock file), kept until the process exits: the process as a whole
# uses the key, whichever of its node contexts loaded it.
_holds: dict[Path, int] = {}
_holds_lock = threading.Lock()


class EncryptionKeyInUse(Conflict):
    code = "encryption_key_in_use"


def hold_encryption_key(data_dir: Path) -> None:
    """Mark this process as a user of the data dir's encryption key until it exits; EncryptionKeyInUse while a
    replacement of the key runs."""
    path = (data_dir / LOCK_FILE).resolve()
    with _holds_lock:
        if path in _holds:
            return
        fd = open_lock_file(path, f"cannot use the encryption key: cannot write its lock file {path}")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EncryptionKeyInUse("the encryption key is being replaced (`alliance key replace-encryption-key` is "
                                     "running on this data dir); try again once it is done") from None
        _holds[path] = fd


@contextmanager
def encryption_key_alone(data_dir: Path) -> Iterator[None]:
    """Hold the data dir's key lock exclusively for the block; EncryptionKeyInUse while another process uses the key.
    This process's hold (taken here if it had none) is converted, and given back shared afterwards: the process may
    load the key meanwhile (its own hold stands), and uses it after."""
    hold_encryption_key(data_dir)
    path = (data_dir / LOCK_FILE).resolve()
    fd = _holds[path]
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _keep_shared(path, fd)
        raise EncryptionKeyInUse("cannot replace the encryption key: another process of this data dir is using it "
                                 "(an `alliance` command still running, such as a fraud import); let it finish "
                                 "first") from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_SH)


def _keep_shared(path: Path, fd: int) -> None:
    """Take the shared hold again after a failed conversion: Linux removes the old lock before trying the new one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:  # a replacement got in between: this process holds nothing, and will ask again
        with _holds_lock:
            del _holds[path]
        os.close(fd)
