"""One write at a time per signer among the processes of a node: `<data_dir>/signer-<address>.lock`.

The node makes some writes idempotent by looking on chain first: an anchor, a servicing report, an attestation, a
custody step or a successor vote run again after its answer was lost finds its copy instead of sending another.
Two processes of one node signing with the bank's key (the API server and an `alliance ...` command on the same
data dir) that both look before either sends would both send; for an attestation, which the contract takes any
number of times, the pool then shows it twice. So "look on chain, send, wait for the receipt" is done holding this
lock (`ChainClient.one_writer`), and the second process looks only once the first one's write is mined.

The lock is an advisory `flock` on a file opened for each hold: the kernel releases it when the process ends, however
it ends, so a crash leaves no stale claim; and two threads of one process (two API requests) exclude each other too,
each holding its own open file. A thread holding it may take it again (a write inside a held section). A holder
keeps it about one receipt wait (a block time; on a chain that stopped mining at most a few `receipt_timeout`s): the
wait for it is bounded by the caller, after which the write fails with nothing sent.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.chain.errors import TransactionTimeout
from node.errors import InvalidInput

POLL_S = 0.02

# Paths of the locks each thread holds, with how many times: taken again inside a held section, a lock is not
# waited for (it would wait for itself).
_held = threading.local()


class SignerBusy(TransactionTimeout):
    """Another process of this node kept sending for the signer longer than this one could wait."""


def signer_lock_path(data_dir: Path, address: str) -> Path:
    return data_dir / f"signer-{address.lower()}.lock"


class SignerLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        """Hold the lock for the block, waiting at most `timeout` seconds for another holder (SignerBusy after)."""
        depths: dict[Path, int] = _held.__dict__.setdefault("depths", {})
        if depths.get(self.path):
            depths[self.path] += 1
            try:
                yield
            finally:
                depths[self.path] -= 1
            return
        fd = self._open()
        try:
            self._take(fd, timeout)
            depths[self.path] = 1
            try:
                yield
            finally:
                depths[self.path] = 0
        finally:
            os.close(fd)  # releases the lock

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # a read-only or full data dir, another user's
            raise InvalidInput(f"cannot sign: cannot write the signer's lock file {self.path}: "
                               f"{exc.strerror or exc}", code="data_dir_unwritable") from None

    def _take(self, fd: int, timeout: float) -> None:
        # Polled, not a blocking flock: a blocking one cannot be given up on after `timeout`.
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SignerBusy(f"another process of this node has been sending a transaction of this signer "
                                     f"for over {timeout:g}s (it holds {self.path}); nothing was sent: try again "
                                     "once it is done") from None
                time.sleep(POLL_S)
