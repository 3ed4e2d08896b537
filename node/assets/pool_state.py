"""A pool's on-chain state and event history, as one JSON object: what `GET /v1/assets/pools/{id}` answers (a page of
events) and `alliance assets show POOL_ID --json` prints (every event). Built in one place so that the two cannot
drift apart again: the CLI once printed each event's arguments spread into the event and without its sender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.chain.asset_registry import AssetRegistryClient, PoolEvent, PoolInfo


@dataclass(frozen=True)
class PoolState:
    """A pool's state and a page of its events in chain order; `next_after` (block number, log index of the page's
    last event) continues while more follow."""

    info: PoolInfo
    events: list[PoolEvent]
    next_after: tuple[int, int] | None

    def to_json(self) -> dict[str, Any]:
        info = self.info
        return {"pool_id": info.pool_id, "originator_member_id": info.originator_member_id,
                "custodian_member_id": info.custodian_member_id,
                "pending_custodian_member_id": info.pending_custodian_member_id, "version_count": info.version_count,
                "events": [event_json(e) for e in self.events]}


def event_json(event: PoolEvent) -> dict[str, Any]:
    return {"kind": event.kind, "block_number": event.block_number, "tx_hash": event.tx_hash, "sender": event.sender,
            "args": {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in event.args.items()}}


def read_pool_state(registry: AssetRegistryClient, pool_id: int, *, after: tuple[int, int] | None = None,
                    limit: int | None = None) -> PoolState:
    """The pool's state and its events after (block number, log index) `after`, at most `limit` of them (None: all).
    Each event costs a call to the chain for its transaction's sender."""
    info = registry.pool(pool_id)  # AssetRegistryUnknownPool (404) for a pool never registered
    events = registry.pool_events(pool_id, after=after, limit=None if limit is None else limit + 1)
    if limit is None or len(events) <= limit:  # one more than the page says whether more follow
        return PoolState(info, events, None)
    page = events[:limit]
    return PoolState(info, page, (page[-1].block_number, page[-1].log_index))
