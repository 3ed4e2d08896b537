"""A JSON-RPC relay in front of the test chain: refuses wide `eth_getLogs` ranges, as Besu does, and rewrites the
answers of chosen methods, as a pruned, broken or failing endpoint would give them.

Besu answers an `eth_getLogs` over more blocks than its `--rpc-max-logs-range` (1,000 or 5,000 by default) with an
error instead of logs; anvil has no such cap. A method in `CappedRpc.rewrite` is asked of the real chain and its
answer passed through the method's function (a node that pruned a transaction answers null, a broken one a result
of the wrong shape, a failing one nothing at all). Everything else is passed through to the real chain unchanged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.http_stub import QuietHandler, serving

# Besu's answer to a range over its cap (JSON-RPC error -32005, "limit exceeded").
# Besu's answer to a range over its cap (JSON-RPC error -32005, "limit exceeded":
# RpcErrorType.EXCEEDS_RPC_MAX_BLOCK_RANGE; "Exceeds max range" in older releases).
RANGE_REFUSAL = {"code": -32005, "message": "Requested range exceeds maximum RPC range limit"}
# How Besu 24.x answers a reverted eth_call or eth_estimateGas (RpcErrorType.REVERT_ERROR; code 3 from 25.x), the
# revert data in `data`.
BESU_REVERT = (-32000, "Execution reverted")
# A gateway's answer to a JSON-RPC batch when it takes single requests only.
BATCH_REFUSAL = {"code": -32600, "message": "batch requests are not supported"}
NO_CAP = 2**63

# (request, the real chain's answer) -> the answer sent instead, or None to close the connection without answering.
Rewrite = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]


@dataclass
class CappedRpc:
    url: str
    max_blocks: int  # may be changed while the relay runs (an endpoint restarted with a lower cap)
    log_ranges: list[tuple[int, int]] = field(default_factory=list)  # every eth_getLogs asked, refused or not
    refused: int = 0
    error: dict[str, Any] | None = None  # set: eth_getLogs is answered with this error (an outage, not a cap) ...
    error_times: int | None = None  # ... this many times (None: until unset)
    rewrite: dict[str, Rewrite] = field(default_factory=dict)  # method -> how its answers are rewritten
    methods: list[str] = field(default_factory=list)  # every method asked alone (not in a batch), in order
    requests: list[list[str]] = field(default_factory=list)  # the methods of every HTTP request (a batch: several)
    refuse_batches: bool = False  # set: a JSON-RPC batch is answered with one error, as gateways without batches do


def _block(value: Any, upstream: str) -> int:
    if value in (None, "latest", "pending", "safe", "finalized"):
        answer = requests.post(upstream, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
                               timeout=10).json()
        return int(answer["result"], 16)
    return 0 if value == "earliest" else int(value, 16)


def worded_revert(code: int, message: str) -> Rewrite:
    """A rewrite of eth_call and eth_estimateGas answers giving a revert `code` and `message`, its data kept."""
    def reword(_request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        error = answer.get("error")
        if not (isinstance(error, dict) and "revert" in str(error.get("message")).lower()):
            return answer
        return {**answer, "error": {"code": code, "message": message, "data": error.get("data", "0x")}}
    return reword


def with_result(result: Any) -> Rewrite:
    """A rewrite answering `result` in place of the chain's."""
    return lambda _request, answer: {**answer, "result": result}


@contextmanager
def capped_rpc(upstream: str, max_blocks: int = NO_CAP) -> Iterator[CappedRpc]:
    """A relay at `CappedRpc.url` to the chain at `upstream`, refusing eth_getLogs over more than `max_blocks`."""
    relay = CappedRpc("", max_blocks)

    upstream_sessions = threading.local()  # one kept-alive connection to the chain per relay thread

    def forward(body: bytes) -> requests.Response:
        if not hasattr(upstream_sessions, "session"):
            upstream_sessions.session = requests.Session()
        session: requests.Session = upstream_sessions.session
        return session.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30)

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"  # kept alive, as web3's session keeps it ...
        disable_nagle_algorithm = True  # ... without waiting on the delayed ack of the headers, sent apart

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = json.loads(body)
            relay.requests.append([call["method"] for call in (request if isinstance(request, list) else [request])])
            answer: bytes
            if isinstance(request, list) and relay.refuse_batches:
                self._answer(json.dumps({"jsonrpc": "2.0", "id": None, "error": BATCH_REFUSAL}).encode())
                return
            method = request.get("method") if isinstance(request, dict) else None
            if method is not None:
                relay.methods.append(method)
            if method == "eth_getLogs":
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
            forwarded = forward(body)
            if isinstance(request, list):  # a batch: each call's answer rewritten alone (found by its id)
                self._answer_batch(request, forwarded.json())
                return
            rewrite = relay.rewrite.get(method) if method is not None else None
            if rewrite is None:
                self._answer(forwarded.content)
                return
            rewritten = rewrite(request, forwarded.json())
            if rewritten is None:
                self.close_connection = True  # the client sees the connection closed with no answer
                return
            self._answer(json.dumps(rewritten).encode())

        def _answer_batch(self, calls: list[dict[str, Any]], answers: Any) -> None:
            by_id = {call.get("id"): call for call in calls}
            if isinstance(answers, list):
                for index, answer in enumerate(answers):
                    call = by_id.get(answer.get("id"), {})
                    rewrite = relay.rewrite.get(call.get("method", ""))
                    answers[index] = answer if rewrite is None else rewrite(call, answer)
            self._answer(json.dumps(answers).encode())

        def _answer(self, answer: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    with serving(Handler, threaded=True) as url:
        relay.url = url
        yield relay
