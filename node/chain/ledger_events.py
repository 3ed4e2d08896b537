"""FraudLedger events, publishBatch inputs and block headers, fetched in bulk and decoded into plain values.

The indexer needs three things from the chain: the ledger's logs over block ranges, the calldata of the
`publishBatch` transactions (records are not in events, see IFraudLedger) and block headers (hash, parent hash,
timestamp) for reorg detection. All three go through plain JSON-RPC over one keep-alive HTTP session: logs of the
five event types in one `eth_getLogs` per chunk (a topic0 list), transactions and headers in JSON-RPC batch
requests. web3's per-call formatters and middleware would cost more than the data itself on a 545 kB
transaction input, so this module decodes with eth-abi against the committed ABI and returns frozen dataclasses:
no web3 type leaves `node.chain`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import count
from typing import Any, Literal, cast

import requests
from eth_abi import decode as abi_decode
from eth_typing import ABIEvent, ABIFunction
from eth_utils import event_abi_to_log_topic, function_abi_to_4byte_selector, to_checksum_address

from node.chain.artifacts import load_artifact
from node.chain.errors import ChainError, ChainUnavailable, redacted_url
from node.chain.log_window import LogWindow

logger = logging.getLogger(__name__)

ReactionKind = Literal["endorsed", "disputed", "confirmed", "revoked"]
REACTION_KINDS: dict[str, ReactionKind] = {
    "IndicatorEndorsed": "endorsed",
    "IndicatorDisputed": "disputed",
    "IndicatorConfirmed": "confirmed",
    "IndicatorRevoked": "revoked",
}
# The non-indexed uint8 each reaction carries (confidence or reason code); confirmations carry none.
_REACTION_VALUE = {"IndicatorEndorsed": "confidence", "IndicatorDisputed": "reasonCode",
                   "IndicatorRevoked": "reasonCode"}
# Requests per JSON-RPC batch: large enough to amortise round trips, small enough that a batch of 5,000-record
# transactions (545 kB of calldata each, twice that as hex) stays a few tens of megabytes.
DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class BlockHeader:
    number: int
    hash: str
    parent_hash: str
    timestamp: int


@dataclass(frozen=True)
class BatchPublishedEvent:
    batch_id: int
    reporter_member_id: int
    root: bytes
    epoch: int
    count: int
    tx_hash: str
    block_number: int
    block_hash: str
    log_index: int


@dataclass(frozen=True)
class ReactionEvent:
    kind: ReactionKind
    indicator: bytes
    member_id: int
    batch_id: int | None  # confirmed / revoked only
    value: int  # confidence (endorsed) or reason code (disputed, revoked); 0 for confirmed
    tx_hash: str
    block_number: int
    block_hash: str
    log_index: int


LedgerEvent = BatchPublishedEvent | ReactionEvent


@dataclass(frozen=True)
class PublishInput:
    """The arguments of one `publishBatch` call, from its transaction's input (records still packed)."""

    tx_hash: str
    epoch: int
    root: bytes
    records: bytes


@dataclass(frozen=True)
class _EventSpec:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data: tuple[tuple[str, str], ...]  # (name, type) in data order


@cache
def _ledger_abi() -> tuple[dict[bytes, _EventSpec], bytes, tuple[str, ...]]:
    """Event specs by topic0, and the selector and argument types of publishBatch, from the artifact."""
    abi = load_artifact("FraudLedger").abi
    events: dict[bytes, _EventSpec] = {}
    for entry in abi:
        if entry["type"] == "event" and (entry["name"] == "BatchPublished" or entry["name"] in REACTION_KINDS):
            events[bytes(event_abi_to_log_topic(cast(ABIEvent, entry)))] = _EventSpec(
                entry["name"],
                tuple((p["name"], p["type"]) for p in entry["inputs"] if p["indexed"]),
                tuple((p["name"], p["type"]) for p in entry["inputs"] if not p["indexed"]))
    [publish] = [e for e in abi if e["type"] == "function" and e["name"] == "publishBatch"]
    selector = bytes(function_abi_to_4byte_selector(cast(ABIFunction, publish)))
    return events, selector, tuple(p["type"] for p in publish["inputs"])


def _topic_value(abi_type: str, topic: str) -> Any:
    raw = bytes.fromhex(topic[2:])
    return raw if abi_type == "bytes32" else int.from_bytes(raw, "big")


def decode_log(log: dict[str, Any]) -> LedgerEvent | None:
    """The event of one raw JSON-RPC log entry, or None if it is not one of the ledger's five events."""
    specs, _, _ = _ledger_abi()
    topics = log.get("topics") or []
    spec = specs.get(bytes.fromhex(topics[0][2:])) if topics else None
    if spec is None or len(topics) != 1 + len(spec.indexed):
        return None
    args = {name: _topic_value(kind, topic) for (name, kind), topic in zip(spec.indexed, topics[1:], strict=True)}
    data = bytes.fromhex(log["data"][2:])
    args.update(zip((n for n, _ in spec.data), abi_decode([t for _, t in spec.data], data), strict=True))
    where = {"tx_hash": log["transactionHash"], "block_number": int(log["blockNumber"], 16),
             "block_hash": log["blockHash"], "log_index": int(log["logIndex"], 16)}
    if spec.name == "BatchPublished":
        return BatchPublishedEvent(int(args["batchId"]), int(args["reporterMemberId"]), bytes(args["root"]),
                                   int(args["epoch"]), int(args["count"]), **where)
    batch_id = args.get("batchId")
    value_name = _REACTION_VALUE.get(spec.name)
    return ReactionEvent(REACTION_KINDS[spec.name], bytes(args["indicator"]), int(args["memberId"]),
                         None if batch_id is None else int(batch_id),
                         int(args[value_name]) if value_name else 0, **where)


def decode_publish_input(tx_hash: str, calldata: bytes) -> PublishInput | None:
    """The publishBatch arguments of a transaction input, None if the input is not a publishBatch call."""
    _, selector, types = _ledger_abi()
    if calldata[:4] != selector:
        return None
    try:
        epoch, root, records = abi_decode(list(types), calldata[4:])
    except Exception:  # eth-abi raises several types for truncated or inconsistent encodings
        return None
    return PublishInput(tx_hash, int(epoch), bytes(root), bytes(records))


class LedgerEventSource:
    """Reads the FraudLedger's events, publish inputs and block headers from one JSON-RPC endpoint.

    Every method raises `ChainUnavailable` when the endpoint cannot be reached and `ChainError` when it
    answers with an error.
    """

    def __init__(self, rpc_url: str, contract_address: str, *, request_timeout: float = 30.0,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.rpc_url = rpc_url
        self.address = to_checksum_address(contract_address)
        self.request_timeout = request_timeout
        self.max_batch = max_batch
        self._session = requests.Session()
        self._ids = count(1)
        self.log_window = LogWindow()

    # -- transport ------------------------------------------------------------------------------------
    def _post(self, payload: Any) -> Any:
        try:
            response = self._session.post(self.rpc_url, data=json.dumps(payload),
                                          headers={"Content-Type": "application/json"},
                                          timeout=self.request_timeout)
        except requests.RequestException as exc:
            raise ChainUnavailable(f"chain RPC at {redacted_url(self.rpc_url)} is unreachable") from exc
        if response.status_code >= 500:
            raise ChainUnavailable(f"chain RPC at {redacted_url(self.rpc_url)} answered HTTP {response.status_code}")
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise ChainError(f"chain RPC at {redacted_url(self.rpc_url)} answered HTTP {response.status_code} "
                             "without JSON") from exc

    def _not_json_rpc(self) -> ChainError:
        """A JSON answer that is no JSON-RPC response (a web server's health endpoint, say)."""
        return ChainError(f"chain RPC at {redacted_url(self.rpc_url)} did not answer as a JSON-RPC endpoint")

    def call(self, method: str, params: list[Any]) -> Any:
        answer = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        if not isinstance(answer, dict) or not ("result" in answer or "error" in answer):
            raise self._not_json_rpc()
        if "error" in answer:
            raise ChainError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def batch_call(self, method: str, param_lists: Sequence[list[Any]]) -> list[Any]:
        """The results of one method over many parameter lists, in order, `max_batch` requests per round trip."""
        results: list[Any] = []
        for start in range(0, len(param_lists), self.max_batch):
            requests_ = [{"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
                         for params in param_lists[start:start + self.max_batch]]
            answers = self._post(requests_)
            if isinstance(answers, dict) and "error" in answers:  # the whole batch was refused
                raise ChainError(f"batch of {method} failed: {answers['error']}")
            if not isinstance(answers, list) or not all(isinstance(answer, dict) for answer in answers):
                raise self._not_json_rpc()
            by_id = {answer.get("id"): answer for answer in answers}
            for request in requests_:
                answer = by_id.get(request["id"])
                if answer is None or "error" in answer:
                    error = answer["error"] if answer else "no answer"
                    raise ChainError(f"{method} {request['params']} failed: {error}")
                results.append(answer["result"])
        return results

    def close(self) -> None:
        self._session.close()

    # -- reads ----------------------------------------------------------------------------------------
    def block_number(self) -> int:
        return int(self.call("eth_blockNumber", []), 16)

    def headers(self, numbers: Iterable[int]) -> dict[int, BlockHeader | None]:
        """Headers by number; None for a number beyond the chain's head."""
        wanted = sorted(set(numbers))
        blocks = self.batch_call("eth_getBlockByNumber", [[hex(n), False] for n in wanted])
        return {n: None if b is None else BlockHeader(int(b["number"], 16), b["hash"], b["parentHash"],
                                                      int(b["timestamp"], 16))
                for n, b in zip(wanted, blocks, strict=True)}

    def raw_logs(self, from_block: int, to_block: int) -> list[dict[str, Any]]:
        """The ledger's logs of the five event types in one inclusive range, as the node returns them.

        A node that refuses a large range (Besu's `--rpc-max-logs-range`, a cap on results) is asked in ranges it
        takes, and the width it took is kept for the next chunks and syncs (LogWindow).
        """
        specs, _, _ = _ledger_abi()
        topics = [["0x" + topic.hex() for topic in specs]]

        def fetch(first: int, last: int) -> list[dict[str, Any]]:
            return list(self.call("eth_getLogs", [{"address": self.address, "fromBlock": hex(first),
                                                   "toBlock": hex(last), "topics": topics}]))

        return self.log_window.read(fetch, from_block, to_block)

    def events(self, from_block: int, to_block: int, *, chunk_blocks: int | None = None) -> list[LedgerEvent]:
        """The ledger's events in `from_block..to_block` (inclusive), in chain order; one request per chunk."""
        step = chunk_blocks or max(1, to_block - from_block + 1)
        found: list[LedgerEvent] = []
        for start in range(from_block, to_block + 1, step):
            for log in self.raw_logs(start, min(start + step - 1, to_block)):
                if log.get("removed"):
                    continue
                event = decode_log(log)
                if event is not None:
                    found.append(event)
        found.sort(key=lambda e: (e.block_number, e.log_index))
        return found

    def raw_transactions(self, tx_hashes: Sequence[str]) -> list[dict[str, Any] | None]:
        return list(self.batch_call("eth_getTransactionByHash", [[h] for h in tx_hashes]))

    def publish_inputs(self, tx_hashes: Sequence[str]) -> dict[str, PublishInput | None]:
        """The publishBatch arguments of each transaction; None for one that is unknown, not addressed to the
        ledger, or not a publishBatch call (its batch cannot be checked, so the indexer rejects it)."""
        found: dict[str, PublishInput | None] = {}
        for tx_hash, tx in zip(tx_hashes, self.raw_transactions(tx_hashes), strict=True):
            found[tx_hash] = self._publish_input(tx_hash, tx)
        return found

    def iter_publish_inputs(self, tx_hashes: Sequence[str]) -> Iterator[tuple[str, PublishInput | None]]:
        """`publish_inputs` one JSON-RPC batch at a time, so that a caller holds few inputs at once."""
        for start in range(0, len(tx_hashes), self.max_batch):
            yield from self.publish_inputs(tx_hashes[start:start + self.max_batch]).items()

    def _publish_input(self, tx_hash: str, tx: dict[str, Any] | None) -> PublishInput | None:
        if tx is None or not tx.get("to") or to_checksum_address(tx["to"]) != self.address:
            return None
        return decode_publish_input(tx_hash, bytes.fromhex(tx["input"][2:]))
