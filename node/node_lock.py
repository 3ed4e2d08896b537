"""One node process per data dir: `alliance node start` holds `<data_dir>/node.lock` while it runs.

Commands that change what a running node holds in memory (its encryption key: `alliance key
replace-encryption-key`) take the same lock first, so they refuse to run beside the node instead of leaving it
sealing new rows under a retired key. A second `node start` on the same data dir is refused the same way: two
publishers on one outbox would race each other for the same nonces.

The lock is an advisory `flock` on an open file: the kernel releases it when the process ends, however it ends
(a crash, `kill -9`), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.errors import Conflict
from node.lock_files import open_lock_file

LOCK_FILE = "node.lock"


class NodeRunning(Conflict):
    code = "node_running"


@contextmanager
def node_lock(data_dir: Path, *, doing: str) -> Iterator[None]:
    """Hold the data dir's node lock for the block; NodeRunning, naming the holder's pid, if another process has it.

    `doing` completes the refusal: "cannot {doing}: ...".
    """
    path = data_dir / LOCK_FILE
    # A data dir this user cannot write: the node could not run there anyway.
    fd = open_lock_file(path, f"cannot {doing}: cannot write its lock file {path}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise NodeRunning(f"cannot {doing}: a node is running on {data_dir} (pid {holder}); stop it first") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
