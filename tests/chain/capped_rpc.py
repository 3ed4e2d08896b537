"""A JSON-RPC relay in front of the test chain that refuses wide `eth_getLogs` ranges, as Besu does.

Besu answers an `eth_getLogs` over more blocks than its `--rpc-max-logs-range` (1,000 or 5,000 by default) with an
error instead of logs; anvil has no such cap. Everything else is passed through to the real chain unchanged. The
methods of every request are recorded, for tests of how many requests a read costs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

# Besu's answer to a range over its cap (JSON-RPC error -32005, "limit exceeded").
RANGE_REFUSAL = {"code": -32005, "message": "Exceeds max range"}
# A gateway's answer to a JSON-RPC batch when it takes single requests only.
BATCH_REFUSAL = {"code": -32600, "message": "batch requests are not supported"}


@dataclass
class CappedRpc:
    url: str
    max_blocks: int  # may be changed while the relay runs (an endpoint restarted with a lower cap)
    log_ranges: list[tuple[int, int]] = field(default_factory=list)  # every eth_getLogs asked, refused or not
    refused: int = 0
    error: dict[str, Any] | None = None  # set: eth_getLogs is answered with this error (an outage, not a cap) ...
    error_times: int | None = None  # ... this many times (None: until unset)
    requests: list[list[str]] = field(default_factory=list)  # the methods of every HTTP request (a batch: several)
    refuse_batches: bool = False  # set: a JSON-RPC batch is answered with one error, as gateways without batches do
    block_extra_data: str | None = None  # set: every block answered carries this extraData (Besu QBFT's is ~100 bytes)


def _block(value: Any, upstream: str) -> int:
    if value in (None, "latest", "pending", "safe", "finalized"):
        answer = requests.post(upstream, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
                               timeout=10).json()
        return int(answer["result"], 16)
    return 0 if value == "earliest" else int(value, 16)


@contextmanager
def capped_rpc(upstream: str, max_blocks: int) -> Iterator[CappedRpc]:
    """A relay at `CappedRpc.url` to the chain at `upstream`, refusing eth_getLogs over more than `max_blocks`."""
    relay = CappedRpc("", max_blocks)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = json.loads(body)
            relay.requests.append([call["method"] for call in (request if isinstance(request, list) else [request])])
            answer: bytes
            if isinstance(request, list) and relay.refuse_batches:
                self._answer(json.dumps({"jsonrpc": "2.0", "id": None, "error": BATCH_REFUSAL}).encode())
                return
            if isinstance(request, dict) and request.get("method") == "eth_getLogs":
                query = request["params"][0]
                first, last = _block(query.get("fromBlock"), upstream), _block(query.get("toBlock"), upstream)
                relay.log_ranges.append((first, last))
                if relay.error is not None and relay.error_times != 0:
                    if relay.error_times is not None:
                        relay.error_times -= 1
                    self._answer(json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": relay.error}).encode())
                    return
                if last - first + 1 > relay.max_blocks:
                    relay.refused += 1
                    answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": RANGE_REFUSAL}).encode()
                    self._answer(answer)
                    return
            forwarded = requests.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30)
            if relay.block_extra_data is not None and isinstance(request, dict) \
                    and request.get("method") in ("eth_getBlockByNumber", "eth_getBlockByHash"):
                answer = forwarded.json()
                if answer.get("result"):
                    answer["result"]["extraData"] = relay.block_extra_data
                self._answer(json.dumps(answer).encode())
                return
            self._answer(forwarded.content)

        def _answer(self, answer: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    relay.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        server.shutdown()
        server.server_close()
