"""Snapshots of a loan selection kept in this process, so the pages of one listing come from one selection.

A paged listing whose every page recomputed the selection cost a whole selection a page, and mixed selections when
the book changed between pages (a loan listed twice or never, `total_principal` changing from page to page). Its
first page now keeps the selection here, under an unguessable id its cursor carries; the later pages read it.

The cache is in memory and per process (per `NodeContext`): no migration, nothing to clean up on disk, but a
snapshot is gone after `SNAPSHOT_TTL_S`, when `SNAPSHOT_CAPACITY` newer ones pushed it out (least recently used
first), on a restart, or on another API replica. Whoever reads a page of one that is gone is told to start again
(`SnapshotGone`), never served from another selection.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from node.errors import AllianceError

# The defaults of the node's settings `eligible_snapshot_ttl_s` and `eligible_snapshots`.
# Ten minutes: reading 100,000 verdicts takes seconds, and a snapshot older than that is too stale to be worth
# finishing. Counted from the selection, not from the last read, so a slow reader cannot keep one alive for good.
SNAPSHOT_TTL_S = 600.0
# A snapshot of 100,000 loans holds about 8 MB (bench/abs_selection.py `snapshot_mb`): at most that times this.
SNAPSHOT_CAPACITY = 8
# secrets.token_urlsafe(16): 128 random bits in 22 URL-safe base64 characters.
SNAPSHOT_ID_LENGTH = 22
_SNAPSHOT_ID = re.compile(rf"[A-Za-z0-9_-]{{{SNAPSHOT_ID_LENGTH}}}")

T = TypeVar("T")


class SnapshotGone(AllianceError):
    """The snapshot a cursor names is not (or no longer) held by this process: the listing starts again."""

    code = "cursor_expired"
    http_status = 410


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    id: str
    taken_at: datetime  # when the selection began
    content: T


def is_snapshot_id(text: str) -> bool:
    """Whether `text` has the form of a snapshot id (held or not)."""
    return _SNAPSHOT_ID.fullmatch(text) is not None


class SnapshotCache(Generic[T]):
    """At most `capacity` snapshots, each for `ttl_s` seconds after it was kept, the least recently read one leaving
    first. Safe to share between threads: the API runs its sync routes in a thread pool."""

    def __init__(self, *, capacity: int = SNAPSHOT_CAPACITY, ttl_s: float = SNAPSHOT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity, self._ttl_s, self._clock = capacity, ttl_s, clock
        self._held: OrderedDict[str, tuple[float, Snapshot[T]]] = OrderedDict()  # id -> (expiry, snapshot)
        self._lock = threading.Lock()

    def keep(self, taken_at: datetime, content: T) -> Snapshot[T]:
        snapshot = Snapshot(secrets.token_urlsafe(16), taken_at, content)
        with self._lock:
            self._drop_expired()
            self._held[snapshot.id] = (self._clock() + self._ttl_s, snapshot)
            while len(self._held) > self._capacity:
                self._held.popitem(last=False)
        return snapshot

    def get(self, snapshot_id: str) -> Snapshot[T]:
        with self._lock:
            self._drop_expired()
            held = self._held.get(snapshot_id)
            if held is None:
                raise SnapshotGone("after: the listing this cursor continues is no longer held (expired, pushed out "
                                   "by newer ones, or taken by another API process); start again from the first "
                                   "page, without after")
            self._held.move_to_end(snapshot_id)
            return held[1]

    def __len__(self) -> int:
        with self._lock:
            self._drop_expired()
            return len(self._held)

    def _drop_expired(self) -> None:
        now = self._clock()
        for snapshot_id in [i for i, (expiry, _) in self._held.items() if expiry <= now]:
            del self._held[snapshot_id]


_caches: weakref.WeakKeyDictionary[Any, SnapshotCache[Any]] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def snapshots_of(node: Any) -> SnapshotCache[Any]:
    """The node's cache (one per `NodeContext`: two nodes in one process, as in tests, hold their own), of the size
    and lifetime its settings give (`eligible_snapshots`, `eligible_snapshot_ttl_s`)."""
    with _caches_lock:
        cache = _caches.get(node)
        if cache is None:
            cache = _caches[node] = SnapshotCache(capacity=node.settings.eligible_snapshots,
                                                  ttl_s=node.settings.eligible_snapshot_ttl_s)
        return cache
