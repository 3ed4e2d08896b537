"""One write at a time per signer among the processes of a node: `<data_dir>/signer-<address>.lock`, and on a
PostgreSQL store an advisory lock of the store's database keyed by the signer's address.

The node makes some writes idempotent by looking on chain first: an anchor, a servicing report, an attestation, a
custody step or a successor vote run again after its answer was lost finds its copy instead of sending another.
Two processes of one node signing with the bank's key (the API server and an `alliance ...` command on the same
data dir, or two API replicas on different hosts sharing one PostgreSQL store) that both look before either sends
would both send; for an attestation, which the contract takes any number of times, the pool then shows it twice. So
"look on chain, send, wait for the receipt" is done holding this lock (`ChainClient.one_writer`), and the second
process looks only once the first one's write is mined.

The file lock is an advisory `flock` on a file opened for each hold: the kernel releases it when the process ends,
however it ends, so a crash leaves no stale claim; and two threads of one process (two API requests) exclude each
other too, each holding its own open file. It reaches the processes of one data dir on one host only. On a
PostgreSQL store the holder of the file lock then takes a session-level advisory lock too (`StoreSignerLock`), on a
connection of its own kept for the hold: it reaches every process on the store, whatever its host or data dir, and
the server drops it when that session ends (the process killed, its host gone), so it leaves no stale claim either.
The file lock stays first: SQLite stores have nothing else, and on PostgreSQL it keeps a process's waiting threads
from each holding a store connection. A thread holding the lock may take it again (a write inside a held section).
A node that takes up a signing key activated beside it (node.signer_switch) takes the new address's lock from then
on, as every process started with that key does: the lock always follows the key a write is signed with. The two
locks are never needed together, since the chain refuses the old key's writes from the rotation on.
A holder keeps it about one receipt wait (a block time; on a chain that stopped mining at most a few
`receipt_timeout`s): the wait for it is bounded by the caller, after which the write fails with nothing sent.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from node.chain.errors import TransactionTimeout
from node.lock_files import open_lock_file

logger = logging.getLogger(__name__)

POLL_S = 0.02
STORE_POLL_S = 0.05  # a query to the server at each try: less often than the file lock's
# Prefixed to the signer's address to make its advisory lock key, so that no other user of the database's 64-bit
# advisory keys (another application's) is likely to take the same one.
ADVISORY_KEY_NAMESPACE = "alliance/signer-lock/"

# Paths of the locks each thread holds, with how many times: taken again inside a held section, a lock is not
# waited for (it would wait for itself).
_held = threading.local()


class SignerBusy(TransactionTimeout):
    """Another process of this node kept sending for the signer longer than this one could wait."""


def signer_lock_path(data_dir: Path, address: str) -> Path:
    return data_dir / f"signer-{address.lower()}.lock"


def signer_advisory_key(address: str) -> int:
    """The signer's PostgreSQL advisory lock key: the first 8 bytes of SHA-256(ADVISORY_KEY_NAMESPACE + the address
    in lowercase hex, 0x included), read as a big-endian signed 64-bit integer (pg_locks shows its high 32 bits as
    `classid`, its low ones as `objid`). The same on every host and every version of the node."""
    digest = hashlib.sha256(f"{ADVISORY_KEY_NAMESPACE}{address.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class StoreSignerLock:
    """The signer's advisory lock on a PostgreSQL store: keeps apart processes on other hosts sharing the store."""

    def __init__(self, engine: Callable[[], Engine], address: str) -> None:
        """`engine`: the store's, asked for only when the lock is taken (a node opens its store lazily)."""
        self._engine = engine
        self.key = signer_advisory_key(address)

    @contextmanager
    def held(self, deadline: float, timeout: float) -> Iterator[None]:
        """Hold the lock for the block, waiting until `deadline` (time.monotonic) for another session holding it
        (SignerBusy after, saying `timeout`). A store that cannot be reached raises as any store access does."""
        # Autocommit: a session idle in a transaction for a whole receipt wait could be ended by the server's
        # idle_in_transaction_session_timeout, and the lock with it.
        connection = self._engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            self._take(connection, deadline, timeout)
            try:
                yield
            finally:
                self._release(connection)
        finally:
            connection.close()

    def _take(self, connection: Connection, deadline: float, timeout: float) -> None:
        # Polled, not pg_advisory_lock: a waiter gives up at the deadline as a waiter for the file lock does.
        while not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar():
            if time.monotonic() >= deadline:
                raise SignerBusy(f"another process signing for this bank on its store (an API replica, perhaps on "
                                 f"another host) has been sending a transaction of this signer for over {timeout:g}s "
                                 f"(it holds the store's advisory lock {self.key}); nothing was sent: try again "
                                 "once it is done")
            time.sleep(STORE_POLL_S)

    def _release(self, connection: Connection) -> None:
        try:
            released = bool(connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}).scalar())
        except DBAPIError as exc:
            logger.warning("could not release the signer's advisory lock %s (%s): closing its session",
                           self.key, str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else exc)
            released = False
        if not released:
            # The session is ended rather than pooled: the server drops whatever lock it still holds with it.
            connection.invalidate()


class SignerLock:
    def __init__(self, path: Path, store: StoreSignerLock | None = None) -> None:
        """`store`: the signer's advisory lock on the node's PostgreSQL store, taken after the file lock; None on
        SQLite."""
        self.path = path
        self.store = store

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
        deadline = time.monotonic() + timeout
        fd = self._open()
        try:
            self._take(fd, deadline, timeout)
            with self._store_lock(deadline, timeout):
                depths[self.path] = 1
                try:
                    yield
                finally:
                    depths[self.path] = 0
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def _store_lock(self, deadline: float, timeout: float) -> Iterator[None]:
        if self.store is None:
            yield
            return
        with self.store.held(deadline, timeout):
            yield

    def _open(self) -> int:
        return open_lock_file(self.path, f"cannot sign: cannot write the signer's lock file {self.path}")

    def _take(self, fd: int, deadline: float, timeout: float) -> None:
        # Polled, not a blocking flock: a blocking one cannot be given up on after `timeout`.
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
