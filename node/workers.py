"""The background work of a running node, each job in its own loop thread.

- keys: open envelopes addressed to this bank, generate an epoch's key when this bank started the
  epoch, forward keys to admitted members that lack them (node.ledger.key_distribution);
- publisher: publish queued reports in batches (node.ledger.publisher);
- indexer: follow the ledger's events into the mirror (node.ledger.indexer);
- retention: erase raw identifiers no report needs any more, query-log entries and applicants past their
  retention (node.ledger.retention).

A failing step (the chain is down, say) is logged once per streak and retried with a growing pause;
it never stops the loop or the API, which keeps accepting reports and answering checks meanwhile.
The signing loops take up a signing key `alliance key activate-signer` put in place at their next pass, as every
signed write of the API does (node.signer_switch): no restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from node.runtime import NodeContext

if TYPE_CHECKING:
    from node.ledger.indexer import Indexer, SyncResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF_S = 30.0


@dataclass
class LoopStatus:
    runs: int = 0
    failures_in_a_row: int = 0
    last_ok: datetime | None = None
    last_error: str | None = None
    last_error_type: str | None = None

    def to_json(self, *, error_text: bool = True) -> dict[str, object]:
        """`error_text` False: the last error by its type alone, for answers to callers without a key."""
        return {"runs": self.runs, "failures_in_a_row": self.failures_in_a_row,
                "last_ok": self.last_ok.isoformat() if self.last_ok else None,
                "last_error": self.last_error if error_text else self.last_error_type}


@dataclass
class Loop:
    name: str
    interval_s: float
    step: Callable[[], object]
    status: LoopStatus = field(default_factory=LoopStatus)

    def run_step(self) -> float:
        """Run the step once; returns how long to wait before the next run."""
        self.status.runs += 1
        try:
            self.step()
        except Exception as exc:  # a worker must outlive any failure of its step
            self.status.failures_in_a_row += 1
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            self.status.last_error_type = type(exc).__name__
            if self.status.failures_in_a_row == 1:
                logger.warning("%s: %s (retrying in the background)", self.name, self.status.last_error)
            return min(self.interval_s * 2 ** min(self.status.failures_in_a_row, 6), MAX_BACKOFF_S)
        if self.status.failures_in_a_row:
            logger.info("%s: recovered after %d failures", self.name, self.status.failures_in_a_row)
        self.status.failures_in_a_row = 0
        self.status.last_error = self.status.last_error_type = None
        self.status.last_ok = datetime.now(UTC)
        return self.interval_s


class BackgroundWorkers:
    def __init__(self, loops: list[Loop]) -> None:
        self.loops = loops
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for loop in self.loops:
            thread = threading.Thread(target=self._run, args=(loop,), name=f"alliance-{loop.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask every loop to stop after its current step and wait for them (a step is never cut in half)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def status(self, *, error_texts: bool = True) -> dict[str, dict[str, object]]:
        return {loop.name: loop.status.to_json(error_text=error_texts) for loop in self.loops}

    def _run(self, loop: Loop) -> None:
        while not self._stop.is_set():
            pause = loop.run_step()
            self._stop.wait(pause)


def node_workers(node: NodeContext) -> BackgroundWorkers:
    """The loops of a member node.

    What the loops need from the chain (the deployment, the signing key) is opened by their first step, not
    here: a node started before its contracts are deployed, or while the chain is down, still serves its API,
    and its loops report the problem and retry.
    """
    from node.ledger.indexer import indexer_for
    from node.ledger.key_distribution import sync_keys
    from node.ledger.retention import prune

    settings = node.settings
    node.store  # noqa: B018 - opened (and migrated) once, before the threads share it
    indexer = _once(lambda: indexer_for(node))
    return BackgroundWorkers([
        Loop("keys", settings.key_distribution_interval_s, lambda: sync_keys(_with_signer(node))),
        # The node's publisher at each pass: after a signing key activated beside the node, the new key's.
        Loop("publisher", settings.publish_interval_s, lambda: node.publisher.run_once()),
        Loop("indexer", settings.sync_interval_s, lambda: _sync_and_notify(node, indexer())),
        Loop("retention", settings.retention_interval_s, lambda: prune(node)),
    ])


_build_lock = threading.RLock()  # one factory call at a time: two loops' first passes share what it makes


def _once(factory: Callable[[], T]) -> Callable[[], T]:
    """`factory()` made on first success and reused; a failure is raised and tried again next time."""
    made: list[T] = []

    def get() -> T:
        with _build_lock:
            if not made:
                made.append(factory())
        return made[0]

    return get


def _with_signer(node: NodeContext) -> NodeContext:
    """`node`, its signing key opened, or the one an activation put in place since taken up (node.signer_switch): a
    pass fails while it does not open, which the loop's status says."""
    node.signing_chain  # noqa: B018 - made once (under the node's lock: one nonce count), then one `stat` a pass
    return node


def _sync_and_notify(node: NodeContext, indexer: Indexer) -> SyncResult:
    """One indexer pass; when it indexed new blocks, extensions hear of the range (they read the rows)."""
    from node.extensions.manager import extensions_for

    result = indexer.sync()
    # After a reorganisation the rows above the common ancestor were indexed again: they count as new.
    start = min([result.from_block, *(rewind.to_block for rewind in result.rewinds)])
    if result.to_block > start:
        extensions_for(node).call("alliance_indicators_mirrored", node=node, from_block=start,
                                  to_block=result.to_block)
    return result
