"""The in-process cache of selection snapshots behind the pages of GET /v1/abs-factory/eligible: how long a snapshot
is held, which one leaves first, and many API threads at once."""

from __future__ import annotations

import contextlib
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.config import ConfigError, Settings, load_settings
from node.modules.selection_snapshots import SnapshotCache, SnapshotGone, is_snapshot_id, snapshots_of


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_get_snapshot_is_refused_once_its_time_to_live_has_passed() -> None:
    clock = _Clock()
    cache: SnapshotCache[str] = SnapshotCache(capacity=4, ttl_s=600, clock=clock)
    kept = cache.keep(datetime.now(UTC), "verdicts")
    assert is_snapshot_id(kept.id) and kept.id != cache.keep(datetime.now(UTC), "other").id
    clock.now += 599
    assert cache.get(kept.id).content == "verdicts"  # reading it does not extend its life
    clock.now += 1
    with pytest.raises(SnapshotGone) as gone:
        cache.get(kept.id)
    assert (gone.value.code, gone.value.http_status) == ("cursor_expired", 410)
    assert len(cache) == 0


def test_keep_snapshot_beyond_capacity_drops_the_least_recently_read() -> None:
    cache: SnapshotCache[int] = SnapshotCache(capacity=2, ttl_s=600)
    first, second = cache.keep(datetime.now(UTC), 1), cache.keep(datetime.now(UTC), 2)
    cache.get(first.id)  # read since: `second` is now the least recently read
    third = cache.keep(datetime.now(UTC), 3)
    assert [cache.get(s.id).content for s in (first, third)] == [1, 3]
    with pytest.raises(SnapshotGone):
        cache.get(second.id)
    with pytest.raises(SnapshotGone):
        cache.get("A" * 22)  # never kept


def test_keep_and_get_snapshots_from_many_threads_stay_within_capacity() -> None:
    # Snapshots expiring within the run, as well as pushed out: threads drop the same ones at once.
    cache: SnapshotCache[int] = SnapshotCache(capacity=3, ttl_s=0.001)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def reader(n: int) -> None:
        start.wait()
        try:
            for i in range(5_000):
                kept = cache.keep(datetime.now(UTC), n * 10_000 + i)
                # Gone already (expired, or pushed out by the other threads' newer ones in between): allowed.
                with contextlib.suppress(SnapshotGone):
                    assert cache.get(kept.id).content == n * 10_000 + i
                assert len(cache) <= 3
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: races show up within the run
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and len(cache) <= 3, errors[:3]


def test_a_node_holds_as_many_snapshots_as_long_as_its_settings_say(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The number and lifetime of snapshots were constants: an operator whose clients read slowly, or who runs
    several listings at once, could not change them."""
    monkeypatch.setenv("ALLIANCE_ELIGIBLE_SNAPSHOTS", "2")
    monkeypatch.setenv("ALLIANCE_ELIGIBLE_SNAPSHOT_TTL_S", "1800")
    node = _Node(load_settings(tmp_path))
    cache = snapshots_of(node)
    assert snapshots_of(node) is cache and (cache._capacity, cache._ttl_s) == (2, 1800)
    first = cache.keep(datetime.now(UTC), 1)
    cache.keep(datetime.now(UTC), 2)
    cache.keep(datetime.now(UTC), 3)
    with pytest.raises(SnapshotGone):
        cache.get(first.id)
    monkeypatch.setenv("ALLIANCE_ELIGIBLE_SNAPSHOTS", "0")
    with pytest.raises(ConfigError, match="eligible_snapshots"):
        load_settings(tmp_path)


class _Node:
    """What the cache reads of a node: its settings (a NodeContext also opens a store, not needed here)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
