"""The widest `eth_getLogs` range one JSON-RPC endpoint takes, learnt from its refusals.

Besu refuses a request of more blocks than its `--rpc-max-logs-range` (1,000 or 5,000 by default, blocks every 2 s
on the consortium chain), other clients cap the results. Each reader of an endpoint (ChainClient for the node's
whole-chain reads, LedgerEventSource for the indexer) keeps one `LogWindow`, so a cap costs one refused request per
process, not one per read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from node.chain.errors import ChainDataMissing, ChainError, ChainUnavailable, MalformedChainAnswer

logger = logging.getLogger(__name__)


class LogWindow:
    """Reads block ranges in pieces the endpoint takes; safe to share between threads."""

    def __init__(self) -> None:
        # The widest range the endpoint has taken since it refused a wider one (None: never refused).
        self.width: int | None = None
        self._lock = threading.Lock()
        # A width the endpoint had taken was refused since it last took that width (a passing error, or a lower cap).
        self._doubted = False

    def read(self, fetch: Callable[[int, int], list[Any]], from_block: int, to_block: int) -> list[Any]:
        """`fetch(first, last)` over `from_block..to_block` (inclusive), in one request while the endpoint takes it.

        `fetch` raises ChainUnavailable when the endpoint cannot be reached, ChainDataMissing when it no longer keeps
        the blocks and MalformedChainAnswer when its answer is not logs (raised here at once: a narrower range changes
        none of them), and ChainError when it answers with another error. A refused range is halved until the
        endpoint takes it, and that width is kept for the next calls (see `narrowed`); an error on a single block is
        the endpoint's real answer and is raised.
        """
        found: list[Any] = []
        start = from_block
        # The width this call was refused above, halved; it stays for the rest of the call (a cap on results refuses
        # dense ranges again). Kept as the endpoint's window only once a request of that width is taken, and only
        # if the refused one was wider than the endpoint had taken before, or such a width is refused a second
        # time before it is taken again (the cap was lowered): an error that is no range refusal (a node
        # restarting, a proxy's rate limit, answered as JSON-RPC errors) fails down to one block, or befalls a short
        # last range, and would leave every later read asking a block at a time.
        narrowed: int | None = None
        learn = False
        while start <= to_block:
            window = self.width  # read once: other threads may narrow it meanwhile
            if narrowed is not None:
                window = narrowed if window is None else min(window, narrowed)
            stop = to_block if window is None else min(to_block, start + window - 1)
            width = stop - start + 1
            try:
                found.extend(fetch(start, stop))
            except (ChainUnavailable, ChainDataMissing, MalformedChainAnswer):
                raise
            except ChainError:
                if stop == start:
                    raise
                known = self.width
                if known is None or width > known or self._doubted:
                    learn = True
                else:
                    self._doubted = True
                narrowed = width // 2
                continue
            if narrowed is not None and learn:
                self._take(narrowed)
                learn = False
            if width == self.width:
                self._doubted = False
            start = stop + 1
        return found

    def _take(self, width: int) -> None:
        """Keep `width` as the endpoint's window unless a narrower one is known."""
        with self._lock:
            if self.width is None or width < self.width:
                self.width = width
                logger.info("eth_getLogs of more than %d blocks refused; asking %d at a time", width, width)
