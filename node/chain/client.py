"""JSON-RPC access to the chain: connection, local signing, nonces, receipts, revert decoding.

Everything else in the node reaches the chain through this module and the contract wrappers beside
it; nothing outside `node.chain` imports web3.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import requests
from eth_abi.exceptions import DecodingError
from eth_typing import HexStr
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractEvent, ContractFunction
from web3.exceptions import (
    BadFunctionCallOutput,
    BadResponseFormat,
    BlockNotFound,
    ContractLogicError,
    MismatchedABI,
    TransactionNotFound,
    Web3RPCError,
)
from web3.middleware import ExtraDataToPOAMiddleware
from web3.types import EventData, RPCEndpoint, RPCResponse, TxParams

from node.chain.artifacts import ContractArtifact, load_artifact
from node.chain.errors import (
    ChainDataMissing,
    ChainError,
    ChainUnavailable,
    ContractRevert,
    MalformedChainAnswer,
    OutOfGas,
    TransactionTimeout,
    UnknownRevert,
    decode_revert,
    redacted_url,
)
from node.chain.log_window import LogWindow
from node.chain.rpc_answers import check_result
from node.chain.signer import Signer

logger = logging.getLogger(__name__)

# Gas for administrative transactions is estimated (they are rare); this margin covers small state
# changes between estimate and inclusion. Callers whose cost can jump (a vote that ends up executing
# the proposal) also pass `min_gas`.
_ESTIMATE_MARGIN = 1.3

# A sent transaction the chain can never mine is given up after this many looks this far apart, not after the
# whole receipt timeout (60 s by default). Several looks, so that a load-balanced endpoint whose other node has
# not seen the transaction yet does not make it look lost.
STUCK_LOOK_INTERVAL_S = 2.0
STUCK_AFTER_LOOKS = 3
RECEIPT_POLL_S = 0.02
# Calls sent in one JSON-RPC batch by `call_many`: well under Besu's `--rpc-http-max-batch-size` (1,024).
BATCH_CALLS = 200


@dataclass(frozen=True)
class _FollowedLogs:
    block_number: int  # the head the logs were read up to
    block_hash: str
    logs: list[EventData]


@dataclass(frozen=True)
class ChainHead:
    chain_id: int
    block_number: int
    block_hash: str
    timestamp: int


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    status: int
    raw: Any  # the web3 receipt, for event decoding inside node.chain


T = TypeVar("T")


class WriteLock(Protocol):
    """What keeps the processes of one node (on one data dir, or on one PostgreSQL store from any host) from looking
    for and sending one write at once (node.signer_lock)."""

    def held(self, timeout: float) -> AbstractContextManager[None]: ...


# How geth-derived nodes, Besu and anvil word a transaction refused for its nonce (lowercased): used by a mined
# transaction, or held in the pool by another pending transaction of the sender (same nonce, no higher gas price).
_NONCE_TAKEN = ("nonce too low", "replacement transaction underpriced")
# ... and one refused because the pool holds these very bytes already: geth "already known", anvil (1.x) "transaction
# already imported", Besu "Known transaction".
_ALREADY_KNOWN = ("already known", "already imported", "known transaction")
# Signings of one transaction, each with the chain's nonce count read again, before a nonce collision is given up on:
# each retry loses only to another process of the signer sending in the very same instant.
SEND_ATTEMPTS = 3


def _rpc_refusal(exc: ChainError) -> str:
    """The endpoint's own words (lowercased) for a request it refused; empty for any other failure (unreachable, not
    a JSON-RPC endpoint), whose text may quote a URL."""
    return str(exc.__cause__).lower() if isinstance(exc.__cause__, Web3RPCError) else ""


def nonce_taken(exc: ChainError) -> bool:
    """Whether the endpoint refused a transaction for its nonce, which another transaction of the sender has (mined or
    pending): signed again with the chain's count, it goes through."""
    return any(words in _rpc_refusal(exc) for words in _NONCE_TAKEN)


class NonceManager:
    """Hands out consecutive nonces locally so that transactions can be pipelined."""

    def __init__(self, fetch_pending_count: Any) -> None:
        self._fetch = fetch_pending_count
        self._next: int | None = None
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if self._next is None:
                self._next = int(self._fetch())
            nonce = self._next
            self._next += 1
            return nonce

    def reset(self) -> None:
        """Forget the local count; the next nonce is read from the chain's pending count."""
        with self._lock:
            self._next = None


# Loggers of the HTTP stack that write the RPC URL in full at DEBUG: web3's request lines and cached sessions, urllib3's
# request paths with their query.
_URL_LOGGERS = ("web3.providers", "web3._utils.http_session_manager", "urllib3")


def keep_rpc_url_out_of_logs() -> None:
    """Cap the loggers that write the RPC URL with its credentials and query (`--debug`) at INFO: the node's own
    messages show it only through `redacted_url`."""
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


# How nodes word a refusal for history they no longer keep (lowercased): a past block's state (geth "missing trie
# node" and, path scheme, "historical state … is not available"; Besu "World state unavailable"; anvil with
# --prune-history "BlockOutOfRangeError: block height is N but requested was M"), or old blocks, transactions and
# logs (geth's history expiry, error 4444 "pruned history unavailable").
_HISTORY_PRUNED = ("missing trie node", "historical state", "world state unavailable", "blockoutofrange",
                   "pruned history")
# What web3 (its result formatters, the ABI and event decoders) and the code reading its answers raise on a result of
# the wrong shape that the check of `rpc_answers` let through: a field the node does not read, in a form web3 does not
# take, or a log of another event than the one asked for.
_MALFORMED_ANSWER = (KeyError, TypeError, ValueError, AttributeError, IndexError, DecodingError, MismatchedABI)
_ARCHIVE_HINT = ("the endpoint may keep recent history only (pruned) or not have synced that far; use an archive "
                 "node")

_answers = threading.local()  # per thread: how many answers its providers received


def _answers_received() -> int:
    return int(getattr(_answers, "count", 0))


class _CheckedProvider(HTTPProvider):
    """An HTTP provider that checks the shape of each result (`rpc_answers`) before web3 formats it, and counts the
    answers received (see `translate_errors`)."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        response = super().make_request(method, params)
        _answers.count = _answers_received() + 1
        if isinstance(response, dict) and "result" in response:
            check_result(method, response["result"], redacted_url(str(self.endpoint_uri)))
        return response

    def make_batch_request(self, batch_requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        responses = super().make_batch_request(batch_requests)
        _answers.count = _answers_received() + 1
        if not isinstance(responses, list):  # one error for the whole batch (a gateway refusing batches)
            return responses
        endpoint = redacted_url(str(self.endpoint_uri))
        if len(responses) != len(batch_requests):
            raise MalformedChainAnswer(f"chain RPC at {endpoint} answered a batch of {len(batch_requests)} "
                                       f"requests with {len(responses)} answers")
        # Sorted by id, as the requests' ids were given: each answer is its request's.
        for (method, _params), response in zip(batch_requests, responses, strict=True):
            if isinstance(response, dict) and "result" in response:
                check_result(method, response["result"], endpoint)
        return responses


@contextmanager
def translate_errors(rpc_url: str) -> Iterator[None]:
    """Turn web3/requests exceptions into the node's chain errors."""
    answered = _answers_received()
    try:
        yield
    except ContractLogicError as exc:
        raise _revert_from(exc) from exc
    except requests.ReadTimeout as exc:  # connected and asked, no answer in time: a slow or stuck endpoint
        raise ChainUnavailable(f"chain RPC at {redacted_url(rpc_url)} did not answer in time") from exc
    except (requests.ConnectionError, requests.Timeout, ConnectionError) as exc:
        raise ChainUnavailable(f"chain RPC at {redacted_url(rpc_url)} is unreachable") from exc
    except requests.HTTPError as exc:  # a proxy or web server at the URL, not a JSON-RPC endpoint (or one down)
        status = exc.response.status_code if exc.response is not None else 0
        error = ChainUnavailable if status >= 500 else ChainError
        raise error(f"chain RPC at {redacted_url(rpc_url)} answered HTTP {status}") from exc
    except requests.RequestException as exc:  # no scheme, not http(s), a malformed host: nothing was sent
        raise ChainError(f"chain RPC URL {redacted_url(rpc_url)!r} is not an http(s) URL requests can reach") from exc
    except (TransactionNotFound, BlockNotFound) as exc:  # null for a hash or number: pruned, or never on this chain
        raise ChainDataMissing(f"{exc.message.rstrip('.')} at chain RPC {redacted_url(rpc_url)}: {_ARCHIVE_HINT}") \
            from exc
    except Web3RPCError as exc:
        refusal = (exc.rpc_response or {}).get("error")
        revert = _worded_revert(refusal)
        if revert is not None:
            raise revert from exc
        reason = refusal.get("message") if isinstance(refusal, dict) else None
        raise _refusal(rpc_url, f"chain RPC error: {exc}", str(reason or exc.message)) from exc
    except (json.JSONDecodeError, BadResponseFormat) as exc:  # a web server at the URL (a proxy's login page)
        raise ChainError(f"chain RPC at {redacted_url(rpc_url)} did not answer as a JSON-RPC endpoint") from exc
    except BadFunctionCallOutput as exc:  # the address holds code of another ABI (an empty fallback answers nothing)
        raise ChainError(f"the contract's answer does not decode as its ABI's: {exc}".splitlines()[0]) from exc
    except _MALFORMED_ANSWER as exc:
        # Raised while an answer was read (by web3's formatters or the code in the block): the endpoint's doing.
        # Before any answer came back it was raised over the request itself, a mistake of the node's to show as it is.
        if _answers_received() == answered:
            raise
        raise MalformedChainAnswer(f"chain RPC at {redacted_url(rpc_url)} answered with a malformed result: "
                                   f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc


def _refusal(rpc_url: str, text: str, reason: str) -> ChainError:
    """The error for a request the endpoint refused with `reason`: ChainDataMissing when it no longer keeps the history
    asked for (a narrower log range or a retry will not bring it back), else a ChainError saying `text`."""
    if any(words in reason.lower() for words in _HISTORY_PRUNED):
        return ChainDataMissing(f"chain RPC at {redacted_url(rpc_url)} does not have the history asked for: "
                                f"{_ARCHIVE_HINT} ({reason.strip().splitlines()[0]})")
    return ChainError(text)


def _revert_from(exc: ContractLogicError) -> ContractRevert:
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    return _revert_of(data, exc.message or str(exc))


def _revert_of(data: Any, message: str) -> ContractRevert:
    """The revert whose data an endpoint answered (`0x` + selector and arguments), or an UnknownRevert saying
    `message` when it gave none."""
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        return decode_revert(bytes.fromhex(data[2:]))
    return UnknownRevert({"message": message})


def _worded_revert(error: Any) -> ContractRevert | None:
    """The revert in an error web3 did not take for one. web3 knows geth's and anvil's wording (code 3, or "execution
    reverted" in lower case); Besu 24.x answers a reverted eth_call or eth_estimateGas with code -32000 and "Execution
    reverted" (its RpcErrorType.REVERT_ERROR), the revert data in `data` as anvil puts it. web3 raises a custom error
    or a panic from that data whatever the wording, but not an empty revert (an out-of-range enum argument) nor
    Error(string): those came out as plain RPC errors, and a batch of reads (`call_many`) gave up batching for good.
    `error` is the answer's JSON-RPC error object."""
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "")
    if error.get("code") != 3 and not message.lower().startswith("execution reverted"):
        return None
    return _revert_of(error.get("data"), message)


class ChainClient:
    """One JSON-RPC endpoint, optionally with the bank's signer for writes."""

    def __init__(
        self,
        rpc_url: str,
        *,
        signer: Signer | None = None,
        request_timeout: float = 10.0,
        receipt_timeout: float = 60.0,
        gas_price: int = 0,
        write_lock: WriteLock | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.signer = signer
        self.write_lock = write_lock
        self.receipt_timeout = receipt_timeout
        self.gas_price = gas_price
        provider = _CheckedProvider(
            rpc_url,
            request_kwargs={"timeout": request_timeout},
            # Retrying is the outbox's job, with idempotency; silent retries here would hide outages.
            exception_retry_configuration=None,
        )
        self.w3 = Web3(provider)
        # web3's validation asked the endpoint its chain id before every eth_call and gas estimate (a read took two
        # round trips), to check a chainId the node never puts in them (it signs its transactions itself, with the
        # chain id it asks once); and it refused every block whose extraData is over 32 bytes, as a QBFT or IBFT
        # chain's (Besu's) always is. web3's proof-of-authority middleware takes such blocks, as it takes anvil's.
        self.w3.middleware_onion.remove("validation")
        self.w3.middleware_onion.inject(ExtraDataToPOAMiddleware, name="proof_of_authority", layer=0)
        self._chain_id: int | None = None
        self._takes_batches = True  # until the endpoint refuses a JSON-RPC batch (call_many)
        self.nonces = NonceManager(self._pending_nonce)
        self.log_window = LogWindow()  # shared by the threads that read logs through this client
        self._followed: dict[tuple[str, str], _FollowedLogs] = {}
        self._followed_lock = threading.Lock()

    # -- reads ----------------------------------------------------------------------------------------
    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            with translate_errors(self.rpc_url):
                self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def head(self) -> ChainHead:
        with translate_errors(self.rpc_url):
            block = self.w3.eth.get_block("latest")
        return ChainHead(self.chain_id, int(block["number"]), block["hash"].to_0x_hex(), int(block["timestamp"]))

    def blocks_between(self, earliest: int, latest: int) -> tuple[int, int] | None:
        """The first and last block whose timestamps lie in `earliest..latest` (Unix seconds), None if none does: the
        blocks an event bounded in time can be in, found by bisection (two reads per halving, about 50 on a chain of
        millions of blocks) where a scan of its logs from the first block cost one eth_getLogs per range the endpoint
        takes (5,000 blocks on Besu). Block timestamps never decrease along a chain."""
        head = self.head()
        first = self._first_block_after(earliest - 1, head)
        last = self._first_block_after(latest, head) - 1
        return (first, last) if first <= last else None

    def _first_block_after(self, timestamp: int, head: ChainHead) -> int:
        """The first block whose timestamp is above `timestamp`; head + 1 if none is."""
        if head.timestamp <= timestamp:
            return head.block_number + 1
        low, high = 0, head.block_number  # the answer lies in low..high
        while low < high:
            middle = (low + high) // 2
            with translate_errors(self.rpc_url):
                stamp = int(self.w3.eth.get_block(middle)["timestamp"])
            if stamp > timestamp:
                high = middle
            else:
                low = middle + 1
        return low

    def block_number(self) -> int:
        with translate_errors(self.rpc_url):
            return int(self.w3.eth.block_number)

    def is_syncing(self) -> bool:
        """True while the node is still catching up with the network (`eth_syncing`): what it lacks may yet come."""
        with translate_errors(self.rpc_url):
            return bool(self.w3.eth.syncing)

    def code(self, address: str) -> bytes:
        """The runtime code at `address` (empty: no contract there)."""
        with translate_errors(self.rpc_url):
            return bytes(self.w3.eth.get_code(Web3.to_checksum_address(address)))

    def has_code(self, address: str) -> bool:
        return len(self.code(address)) > 0

    def event_logs(self, event: ContractEvent, *, from_block: int = 0, to_block: int | str = "latest",
                   argument_filters: dict[str, Any] | None = None) -> list[EventData]:
        """The logs of `event` in `from_block..to_block` (inclusive), decoded, in chain order (see `_windowed`)."""
        logs: list[EventData] = self._windowed(
            lambda first, last: event.get_logs(from_block=first, to_block=last, argument_filters=argument_filters),
            from_block, to_block)
        logs.sort(key=lambda log: (log["blockNumber"], log["logIndex"]))
        return logs

    def raw_logs(self, address: str, topics: list[Any], *, from_block: int = 0,
                 to_block: int | str = "latest") -> list[dict[str, Any]]:
        """Undecoded logs (hex fields, as the node sends them) in chain order: for events whose data web3's decoder
        takes long over (a million loan ids took over a minute)."""
        query = {"address": Web3.to_checksum_address(address), "topics": topics}
        logs: list[dict[str, Any]] = self._windowed(
            lambda first, last: self.rpc("eth_getLogs", [{**query, "fromBlock": hex(first), "toBlock": hex(last)}]),
            from_block, to_block)
        live = [log for log in logs if not log.get("removed")]
        live.sort(key=lambda log: (int(log["blockNumber"], 16), int(log["logIndex"], 16)))
        return live

    def _windowed(self, fetch: Callable[[int, int], Any], from_block: int, to_block: int | str) -> list[Any]:
        """`fetch(first, last)` over `from_block..to_block`, in ranges the endpoint takes (see LogWindow)."""
        end = self.block_number() if to_block == "latest" else int(to_block)

        def translated(first: int, last: int) -> list[Any]:
            with translate_errors(self.rpc_url):
                return list(fetch(first, last))

        return self.log_window.read(translated, from_block, end)

    def followed_logs(self, event: ContractEvent) -> list[EventData]:
        """Every log of `event` (no filter) from block 0 to the head, as `event_logs` gives them, kept between calls.

        For reads repeated every few seconds (the key worker reads every key envelope and epoch on each pass): a
        call asks only the blocks after the last one it saw, once that block's hash shows the chain still holds it
        (the hash commits to every block before it). A reorganisation, or a chain that lost blocks and grew again,
        has another hash there, and everything is read again.
        """
        key = (str(event.address), str(event.event_name))
        with self._followed_lock:  # one reader per event at a time: the cache is extended in place
            followed = self._followed.get(key)
            head = self.head()
            if followed is not None and followed.block_number <= head.block_number \
                    and self._block_hash(followed.block_number) == followed.block_hash:
                new = self.event_logs(event, from_block=followed.block_number + 1, to_block=head.block_number)
                logs = [*followed.logs, *new]
            else:
                logs = self.event_logs(event, to_block=head.block_number)
            self._followed[key] = _FollowedLogs(head.block_number, head.block_hash, logs)
            return list(logs)

    def _block_hash(self, number: int) -> str | None:
        """The hash of block `number`; None once the chain no longer has it (it went back meanwhile)."""
        try:
            with translate_errors(self.rpc_url):
                return self.w3.eth.get_block(number)["hash"].to_0x_hex()
        except ChainDataMissing:
            return None

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """A raw JSON-RPC call, for node-specific methods (`anvil_*`, `evm_*`, `txpool_*`)."""
        with translate_errors(self.rpc_url):  # an answer with neither is malformed (see translate_errors)
            response = self.w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
            if "error" in response:
                error = response["error"]
                message = error.get("message") if isinstance(error, dict) else None
                raise _refusal(self.rpc_url, f"{method} failed: {error}", str(message or ""))
            return response["result"]

    def contract(self, name: str, address: str) -> Contract:
        artifact = load_artifact(name)
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact.abi)

    def call(self, function: ContractFunction, *, sender: str | None = None) -> Any:
        params = cast(TxParams, {"from": sender} if sender else {})
        with translate_errors(self.rpc_url):
            return function.call(params)

    def call_many(self, functions: Sequence[ContractFunction]) -> list[Any]:
        """`call` of each function, in order, sent as JSON-RPC batches of BATCH_CALLS: one round trip per batch, for
        reads of every proposal (or vote) that one call each made as slow as the chain's history is long."""
        answers: list[Any] = []
        for start in range(0, len(functions), BATCH_CALLS):
            chunk = functions[start:start + BATCH_CALLS]
            answers.extend(self._batch(chunk) if self._takes_batches else [self.call(f) for f in chunk])
        return answers

    def _batch(self, functions: Sequence[ContractFunction]) -> list[Any]:
        try:
            with translate_errors(self.rpc_url), self.w3.batch_requests() as batch:
                for function in functions:
                    batch.add(function)
                return list(batch.execute())
        except (ChainUnavailable, ContractRevert):
            raise
        except ChainError as exc:
            # JSON-RPC batches are optional: a gateway taking single requests only answers one with an error. The
            # same reads are made one call at a time; only if those succeed was it the batch that was refused, and
            # the reads go one call at a time from then on. A call failing alone too (a pruned state, a malformed
            # answer) raises its own error here and leaves batching on: one bad answer is not a refusal of batches.
            answers = [self.call(function) for function in functions]
            logger.warning("chain RPC at %s refused a JSON-RPC batch (%s); reading one call at a time",
                           redacted_url(self.rpc_url), exc)
            self._takes_batches = False
            return answers

    # -- writes ---------------------------------------------------------------------------------------
    def _pending_nonce(self) -> int:
        with translate_errors(self.rpc_url):
            return int(self.w3.eth.get_transaction_count(
                Web3.to_checksum_address(self._require_signer().address), "pending"))

    def wait_for_sent(self) -> None:
        """Wait until every transaction the signer had sent when called is mined (its mined nonce count reaches its
        pending count then), TransactionTimeout after `receipt_timeout`. Before a write the contract would take twice,
        a look for a copy already on chain (sent by a run whose answer was lost) must not miss one still pending."""
        address = Web3.to_checksum_address(self._require_signer().address)
        with translate_errors(self.rpc_url):
            pending = int(self.w3.eth.get_transaction_count(address, "pending"))
        started = time.monotonic()
        while True:
            with translate_errors(self.rpc_url):
                mined = int(self.w3.eth.get_transaction_count(address, "latest"))
            if mined >= pending:
                return
            if time.monotonic() - started >= self.receipt_timeout:
                raise TransactionTimeout(f"{pending - mined} transaction(s) of {address} sent earlier not mined "
                                         f"within {self.receipt_timeout}s")
            time.sleep(RECEIPT_POLL_S)

    @contextmanager
    def one_writer(self) -> Iterator[None]:
        """Hold the client's write lock for a look on chain followed by a send and its receipt: another process of this
        node (the API server beside a CLI command, an API replica on another host sharing the PostgreSQL store)
        looking for the same write then looks only once this one is mined.
        The wait for another holder is bounded by `receipt_timeout` (the lock's holder is waiting for about one
        receipt); a client without a lock (tests, tools) holds nothing."""
        if self.write_lock is None:
            yield
            return
        with self.write_lock.held(self.receipt_timeout):
            yield

    def send_once(self, find: Callable[[], T | None], send: Callable[[], T],
                  refused_as_done: tuple[type[Exception], ...] = ()) -> T:
        """A write to make once (an anchor, a servicing report, an attestation, a custody step): what `find` finds on
        chain, else `send()`, holding the write lock (`one_writer`) from the look to the receipt.

        The signer's earlier transactions are mined first, so that a copy sent by a run stopped before its receipt is
        found rather than sent again. Refused as done already (`refused_as_done`, for a write the contract takes once),
        it is looked for once more: a process signing for this bank without this lock (one on another store or another
        host's SQLite with the same key, an older node) may have sent this very write since; a refusal of anything
        else is raised."""
        with self.one_writer():
            self.wait_for_sent()
            found = find()
            if found is not None:
                return found
            try:
                return send()
            except refused_as_done as refusal:
                self.wait_for_sent()
                found = find()
                if found is None:
                    raise
                logger.info("refused as done already (%s): found on chain, sent meanwhile by another process",
                            refusal)
                return found

    def _require_signer(self) -> Signer:
        if self.signer is None:
            raise ChainError("this operation needs the bank's signing key, and none was loaded")
        return self.signer

    def transact(self, function: ContractFunction | ContractConstructor, *, gas: int | None = None,
                 min_gas: int = 0) -> Receipt:
        """Send a contract call (or a deployment) signed by the bank and wait for its receipt.

        Without `gas`, the call is first estimated: a call that would revert raises the decoded
        custom error before anything is sent, so a refused write changes nothing on chain.
        """
        if gas is None:
            with translate_errors(self.rpc_url):
                estimate = function.estimate_gas({"from": self._require_signer().address})
            gas = max(int(estimate * _ESTIMATE_MARGIN), min_gas)
        return self.send_transaction(self.build_transaction(function, gas=gas))

    def deploy(self, artifact: ContractArtifact, *args: Any) -> Receipt:
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        return self.transact(factory.constructor(*args))

    def build_transaction(self, function: ContractFunction | ContractConstructor, *, gas: int) -> dict[str, Any]:
        """The unsigned transaction of a call with an explicit gas limit (the nonce is set by `sign`)."""
        with translate_errors(self.rpc_url):
            return dict(function.build_transaction(cast(TxParams, self.transaction_fields(gas))))

    def transaction_fields(self, gas: int) -> dict[str, Any]:
        # Legacy transactions with an explicit gas price: consortium chains run at zero gas price
        # and there is no fee market to query per call.
        return {
            "from": self._require_signer().address,
            "gas": gas,
            "gasPrice": self.gas_price,
            "chainId": self.chain_id,
            "nonce": 0,  # replaced at signing time
        }

    def send_transaction(self, tx: dict[str, Any]) -> Receipt:
        tx_hash = self.sign_and_send(tx)
        logger.debug("sent %s (gas %s)", tx_hash, tx.get("gas"))
        return self.wait_for_receipt(tx_hash, tx)

    def sign_and_send(self, tx: dict[str, Any]) -> str:
        """Sign `tx` with the next nonce and send it. Another process signing with this bank's key (a CLI command beside
        the API node) may have taken that nonce since this one last read the chain's count. Refused for it (mined
        already: "nonce too low"; held in the pool by the other's pending transaction: "replacement transaction
        underpriced"), the transaction is signed again with the chain's pending count, which counts the pool, up to
        SEND_ATTEMPTS signings; a refused copy was never taken, so nothing is sent twice. The other process's pending
        transaction being these very bytes is this one sent (see `send_signed`)."""
        attempt = 1
        while True:
            try:
                return self.send_signed(self.sign(tx))
            except ChainError as exc:
                if attempt >= SEND_ATTEMPTS or not nonce_taken(exc):
                    raise
                # send_signed dropped the local count: the next signing reads the chain's
                logger.info("nonce taken meanwhile by another process of this signer; signing again (%s)", exc)
            attempt += 1

    def sign(self, tx: dict[str, Any]) -> bytes:
        tx = {**tx, "nonce": self.nonces.take()}
        tx.pop("from", None)
        return self._require_signer().sign_transaction(tx)

    def send_signed(self, raw_tx: bytes) -> str:
        """Broadcast a signed transaction; its hash. One the endpoint's pool holds already (sent again by the publisher
        after a restart, or signed byte for byte alike by another process of this signer with the same nonce) is sent:
        waiting for its receipt is all that is left to do."""
        try:
            with translate_errors(self.rpc_url):
                return self.w3.eth.send_raw_transaction(raw_tx).to_0x_hex()
        except ChainError as exc:
            if any(words in _rpc_refusal(exc) for words in _ALREADY_KNOWN):
                return Web3.keccak(raw_tx).to_0x_hex()
            # The nonce may or may not have been consumed; re-read it from the chain next time.
            self.nonces.reset()
            raise

    def receipt_of(self, tx_hash: str) -> Receipt | None:
        """The receipt of a mined transaction, None while it is not mined (or unknown)."""
        with translate_errors(self.rpc_url):
            try:
                raw = self.w3.eth.get_transaction_receipt(HexStr(tx_hash))
            except TransactionNotFound:
                return None
        return Receipt(tx_hash, int(raw["blockNumber"]), raw["blockHash"].to_0x_hex(), int(raw["gasUsed"]),
                       int(raw["status"]), raw)

    def wait_for_receipt(self, tx_hash: str, tx: dict[str, Any] | None = None) -> Receipt:
        """The receipt of a sent transaction; TransactionTimeout after `receipt_timeout`, or as soon as the chain
        shows it can never mine it (see `_why_never_mined`). Either way the local nonce count is dropped: every
        nonce handed out after a lost transaction would wait behind its gap forever, and the chain's pending count,
        read again for the next one, still counts the transaction while the chain holds it."""
        started = time.monotonic()
        strikes, next_look = 0, started + STUCK_LOOK_INTERVAL_S
        while (receipt := self.receipt_of(tx_hash)) is None:
            now = time.monotonic()
            if now - started >= self.receipt_timeout:
                self.nonces.reset()
                raise TransactionTimeout(f"transaction {tx_hash} not mined within {self.receipt_timeout}s")
            if now >= next_look:
                reason = self._why_never_mined(tx_hash)
                strikes = strikes + 1 if reason else 0
                if reason and strikes >= STUCK_AFTER_LOOKS:
                    self.nonces.reset()
                    raise TransactionTimeout(f"transaction {tx_hash} will not be mined: {reason}")
                next_look = now + STUCK_LOOK_INTERVAL_S
            time.sleep(RECEIPT_POLL_S)
        if receipt.status != 1:
            raise self._explain_failure(receipt, tx)
        return receipt

    def _why_never_mined(self, tx_hash: str) -> str | None:
        """Why a sent, unmined transaction can never be mined, or None while it still may be: the chain no longer
        knows it (an RPC node restarted without its pool, a chain gone back to an older state, the nonce taken by
        another transaction), or it waits behind a nonce the chain lacks (the chain lost a transaction before it)."""
        with translate_errors(self.rpc_url):
            try:
                pending = self.w3.eth.get_transaction(HexStr(tx_hash))
            except TransactionNotFound:
                return "the chain no longer knows it"
            if pending.get("blockNumber") is not None:
                return None  # mined since the receipt was asked for
            count = self.w3.eth.get_transaction_count(pending["from"], "pending")
        if int(pending["nonce"]) >= count:  # the pending count stops at the first missing nonce
            return f"its nonce {pending['nonce']} waits behind a gap (the chain's next nonce is {count})"
        return None

    def _explain_failure(self, receipt: Receipt, tx: dict[str, Any] | None) -> ChainError:
        """Replay a failed transaction as a call on its parent block to recover the revert data."""
        if tx is None:
            return ChainError(f"transaction {receipt.tx_hash} reverted")
        call = {k: v for k, v in tx.items() if k in ("from", "to", "data", "gas")}
        call.setdefault("from", self._require_signer().address)
        if tx.get("gas") == receipt.gas_used:
            return OutOfGas(f"transaction {receipt.tx_hash} ran out of gas ({receipt.gas_used})")
        # The failed block first: its timestamp, and the transactions mined before this one in it (a racing
        # vote that executed the proposal), are what made it fail; the parent block has neither.
        for block in (receipt.block_number, receipt.block_number - 1):
            try:
                with translate_errors(self.rpc_url):
                    self.w3.eth.call(call, block_identifier=block)  # type: ignore[arg-type]
            except ContractRevert as revert:
                return revert
        return ChainError(f"transaction {receipt.tx_hash} reverted (the replay did not)")


def wait_until_reachable(rpc_url: str, timeout: float, *, gone: Callable[[], bool] | None = None) -> ChainHead:
    """Poll until the endpoint answers, e.g. right after starting a local chain; `gone` says whether what should
    answer has exited already (a chain process that failed to start), which ends the wait at once."""
    client = ChainClient(rpc_url, request_timeout=1.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.head()
        except ChainUnavailable:
            if time.monotonic() >= deadline or (gone is not None and gone()):
                raise
            time.sleep(0.05)


