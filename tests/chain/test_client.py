"""ChainClient against anvil: what happens to the nonce when the chain loses a transaction it was sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from node.chain import client as client_module
from node.chain.client import ChainClient
from node.chain.errors import (
    AllianceRegistryUnknownProposal,
    ChainDataMissing,
    ChainError,
    ChainUnavailable,
    MalformedChainAnswer,
    TransactionTimeout,
    UnknownRevert,
    redacted_url,
)
from node.chain.signer import Signer
from tests.chain.capped_rpc import BESU_REVERT, Rewrite, capped_rpc, with_result, worded_revert
from tests.conftest import Consortium
from tests.http_stub import QuietHandler, serving


def test_a_transaction_the_chain_dropped_leaves_no_nonce_gap(rpc_url: str) -> None:
    # As after an RPC node restarted without its mempool: the transaction never gets a receipt. The nonces handed
    # out locally after it would be queued behind a nonce the chain never mines, and every later transaction of the
    # node (publisher, key worker) would time out until a restart.
    client = ChainClient(rpc_url, signer=Signer.generate(), receipt_timeout=1)
    transfer = {**client.transaction_fields(21_000), "to": client.signer.address, "value": 0}  # zero gas price
    client.rpc("evm_setAutomine", [False])
    try:
        lost = client.send_signed(client.sign(transfer))
        assert client.rpc("anvil_dropTransaction", [lost]) is not None
        with pytest.raises(TransactionTimeout):
            client.wait_for_receipt(lost)
    finally:
        client.rpc("evm_setAutomine", [True])
    receipt = client.send_transaction(transfer)  # takes the lost one's nonce, so it is mined
    assert receipt.status == 1
    assert client.rpc("eth_getTransactionCount", [client.signer.address, "latest"]) == "0x1"


@pytest.fixture
def quick_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "STUCK_LOOK_INTERVAL_S", 0.2)


def transfer_of(client: ChainClient) -> dict[str, object]:
    return {**client.transaction_fields(21_000), "to": client.signer.address, "value": 0}  # type: ignore[union-attr]


def test_a_transaction_the_chain_dropped_is_given_up_without_waiting_out_the_receipt_timeout(
        rpc_url: str, quick_looks: None) -> None:
    """Waited the whole receipt timeout (60 s) after an RPC node restarted without its pool, holding up the
    publisher's retry."""
    client = ChainClient(rpc_url, signer=Signer.generate(), receipt_timeout=60)
    client.rpc("evm_setAutomine", [False])
    try:
        lost = client.send_signed(client.sign(transfer_of(client)))
        client.rpc("anvil_dropTransaction", [lost])
        started = time.monotonic()
        with pytest.raises(TransactionTimeout, match="no longer knows it"):
            client.wait_for_receipt(lost)
        assert time.monotonic() - started < 30
    finally:
        client.rpc("evm_setAutomine", [True])
    assert client.send_transaction(transfer_of(client)).status == 1


def test_a_transaction_behind_a_nonce_gap_is_given_up_and_the_next_one_fills_the_gap(
        rpc_url: str, quick_looks: None) -> None:
    """As after a chain went back to an older state: the node's local count is ahead of the chain's, and the
    transaction signed with it was queued behind nonces the chain never got."""
    client = ChainClient(rpc_url, signer=Signer.generate(), receipt_timeout=60)
    client.nonces.take()  # nonce 0 handed out, never sent
    gapped = client.send_signed(client.sign(transfer_of(client)))
    started = time.monotonic()
    with pytest.raises(TransactionTimeout, match=r"nonce 1 waits behind a gap .*next nonce is 0"):
        client.wait_for_receipt(gapped)
    assert time.monotonic() - started < 30
    assert client.send_transaction(transfer_of(client)).status == 1  # nonce 0, read from the chain again
    assert client.receipt_of(gapped) is not None  # and the queued one follows it


def test_a_transaction_waiting_for_its_block_is_not_taken_for_lost(rpc_url: str, quick_looks: None) -> None:
    client = ChainClient(rpc_url, signer=Signer.generate(), receipt_timeout=60)
    client.rpc("evm_setAutomine", [False])
    try:
        waiting = client.send_signed(client.sign(transfer_of(client)))
        miner = threading.Timer(2.0, lambda: client.rpc("evm_mine", []))  # ten looks later
        miner.start()
        receipt = client.wait_for_receipt(waiting)
        miner.join()
    finally:
        client.rpc("evm_setAutomine", [True])
    assert receipt.status == 1 and receipt.tx_hash == waiting


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pass@127.0.0.1:8545", "http://***@127.0.0.1:8545"),
    ("https://token@besu.bank.example/rpc?x=1", "https://***@besu.bank.example/rpc?***"),
    ("https://gateway.bank.example/rpc?apikey=s3cret&x=1", "https://gateway.bank.example/rpc?***"),
    ("https://gateway.bank.example/a@b?k=a@b", "https://gateway.bank.example/a@b?***"),
    ("http://u:p@[::1]:8545/", "http://***@[::1]:8545/"),
    ("http://127.0.0.1:8545/a@b", "http://127.0.0.1:8545/a@b"),
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("user:s3cret@besu.bank.example:8545/rpc?apikey=k", "***@besu.bank.example:8545/rpc?***"),  # no scheme
    ("127.0.0.1:8545/a@b", "127.0.0.1:8545/a@b"),
])
def test_redacted_url_hides_credentials_and_the_query_only(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_unreachable_error_never_shows_credentials_of_the_rpc_url() -> None:
    with pytest.raises(ChainUnavailable) as refused:
        ChainClient("http://alliance:s3cret@127.0.0.1:9").head()
    assert str(refused.value) == "chain RPC at http://***@127.0.0.1:9 is unreachable"


def test_wait_for_sent_waits_out_a_pending_transaction_then_times_out(rpc_url: str) -> None:
    """What the signer sent is mined before anything looks for it on chain; a copy never mined is a timeout."""
    client = ChainClient(rpc_url, signer=Signer.generate(), receipt_timeout=1)
    client.wait_for_sent()  # nothing sent: returns at once
    client.rpc("evm_setAutomine", [False])
    try:
        client.send_signed(client.sign(transfer_of(client)))
        started = time.monotonic()
        with pytest.raises(TransactionTimeout, match="1 transaction"):
            client.wait_for_sent()
        assert time.monotonic() - started >= 1
        threading.Timer(0.3, lambda: client.rpc("evm_mine")).start()
        client.wait_for_sent()
    finally:
        client.rpc("evm_setAutomine", [True])
    assert client.rpc("eth_getTransactionCount", [client.signer.address, "latest"]) == "0x1"


@contextmanager
def web_server(body: bytes) -> Iterator[str]:
    """A web server that answers every POST with 200 and `body` (a proxy's login page, a health endpoint)."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as url:
        yield url + "/"


@pytest.mark.parametrize("body", [b"<html>sign in</html>", b'{"status": "ok"}'], ids=["html", "json_not_rpc"])
def test_an_rpc_url_answering_other_than_json_rpc_is_one_chain_error(body: bytes) -> None:
    """A URL at a web server that answers 200 (a proxy's login page) raised JSONDecodeError or web3's
    BadResponseFormat past translate_errors: a traceback in the CLI, a 500 from the API, GET /health included."""
    with web_server(body) as url, pytest.raises(ChainError) as refused:
        ChainClient(url.replace("http://", "http://alliance:s3cret@") + "?apikey=s3cret").head()
    shown = url.replace("http://", "http://***@") + "?***"
    assert str(refused.value) == f"chain RPC at {shown} did not answer as a JSON-RPC endpoint"


def test_an_rpc_endpoint_that_answers_too_slowly_is_not_called_unreachable() -> None:
    """An endpoint that took the request and did not answer within the request timeout was reported as unreachable,
    which sent an auditor (audit verify) or an operator looking at the network instead of the endpoint's load."""
    answered = threading.Event()

    class Slow(QuietHandler):
        def do_POST(self) -> None:
            answered.wait(5)

    with serving(Slow) as url:
        try:
            with pytest.raises(ChainUnavailable) as refused:
                ChainClient(f"{url}/", request_timeout=0.3).head()
        finally:
            answered.set()
    assert str(refused.value) == f"chain RPC at {url}/ did not answer in time"


def test_a_nonce_used_by_another_process_of_the_signer_is_taken_again_from_the_chain(rpc_url: str) -> None:
    """The API node and a CLI command sign with the bank's one key: the node's local count went stale once the CLI had
    sent a transaction, and the node's next transaction was refused ("nonce too low"), a failed anchor, transfer or
    report for the operator. Refused for its nonce, it is signed again with the chain's count; nothing is sent twice."""
    signer = Signer.generate()
    node, cli = ChainClient(rpc_url, signer=signer), ChainClient(rpc_url, signer=signer)
    assert node.send_transaction(transfer_of(node)).status == 1  # the node's count is 1 now
    assert cli.send_transaction(transfer_of(cli)).status == 1  # the CLI read the chain's: 1
    assert node.send_transaction(transfer_of(node)).status == 1
    assert cli.send_transaction(transfer_of(cli)).status == 1
    sent = node.sign_and_send(transfer_of(node))  # as a chunk of loan ids is sent, its receipt awaited later
    assert node.wait_for_receipt(sent).status == 1
    assert cli.rpc("eth_getTransactionCount", [signer.address, "latest"]) == "0x5"


def transfer_to(client: ChainClient, to: str) -> dict[str, object]:
    return {**client.transaction_fields(21_000), "to": to, "value": 0}


def mined_transactions(client: ChainClient) -> list[str]:
    """Every transaction mined so far in the block automining was switched off for (the next block)."""
    block = client.rpc("eth_getBlockByNumber", ["latest", False])
    return list(block["transactions"])


@contextmanager
def one_block(client: ChainClient) -> Iterator[None]:
    """Transactions sent in the block wait in the pool together (as on a chain with block times), mined at its end."""
    client.rpc("evm_setAutomine", [False])
    try:
        yield
        client.rpc("evm_mine")
    finally:
        client.rpc("evm_setAutomine", [True])


def test_the_same_transaction_signed_by_two_processes_with_one_nonce_is_sent_once(rpc_url: str) -> None:
    """Two processes of one signer took the same nonce and signed the same transaction: the second send was refused
    as already in the pool ("transaction already imported" from anvil, "already known" from geth), and its caller
    failed although its transaction was on its way. It is that very transaction: its hash is returned."""
    signer = Signer.generate()
    node, cli = ChainClient(rpc_url, signer=signer), ChainClient(rpc_url, signer=signer)
    with one_block(node):
        first = node.sign_and_send(transfer_of(node))  # the node's local count is 1 from now on
        by_cli = cli.sign_and_send(transfer_of(cli))  # the CLI reads the pending count: 1
        by_node = node.sign_and_send(transfer_of(node))  # the very same bytes, nonce 1
    assert by_node == by_cli
    assert mined_transactions(node) == [first, by_cli]
    assert node.wait_for_receipt(by_node).status == 1
    third = node.sign_and_send(transfer_of(node))
    assert third not in (first, by_cli)  # its local count went on: nonce 2
    assert node.wait_for_receipt(third).status == 1  # automine answers the send before the block is in
    assert cli.rpc("eth_getTransactionCount", [signer.address, "latest"]) == "0x3"


def test_a_nonce_held_in_the_pool_by_another_process_of_the_signer_is_taken_again_from_the_chain(
        rpc_url: str) -> None:
    """Two processes of one signer took the same nonce for different transactions, both still pending: the second
    was refused ("replacement transaction underpriced"; only "nonce too low", for a mined one, was signed again) and
    its write failed. It is signed again with the chain's pending count, which counts the pool: both are mined."""
    signer = Signer.generate()
    node, cli = ChainClient(rpc_url, signer=signer), ChainClient(rpc_url, signer=signer)
    other = Signer.generate().address
    with one_block(node):
        first = node.sign_and_send(transfer_of(node))
        by_cli = cli.sign_and_send(transfer_of(cli))  # nonce 1
        by_node = node.sign_and_send(transfer_to(node, other))  # nonce 1 taken in the pool: signed again, nonce 2
    assert mined_transactions(node) == [first, by_cli, by_node]
    assert node.wait_for_receipt(by_node).status == 1
    assert node.receipt_of(by_node).raw["to"] == other  # type: ignore[union-attr]
    fourth = node.sign_and_send(transfer_of(node))
    assert fourth != by_node  # the count read from the chain went on: nonce 3
    assert node.wait_for_receipt(fourth).status == 1  # automine answers the send before the block is in
    assert cli.rpc("eth_getTransactionCount", [signer.address, "latest"]) == "0x4"


def test_a_nonce_taken_at_every_signing_is_given_up_after_the_bounded_attempts(rpc_url: str) -> None:
    """As if another process of the signer won the nonce each time: after SEND_ATTEMPTS signings the refusal is
    raised, and nothing but the other's transaction is sent."""
    signer = Signer.generate()
    node, cli = ChainClient(rpc_url, signer=signer), ChainClient(rpc_url, signer=signer)
    fetched: list[int] = []
    node.nonces = client_module.NonceManager(lambda: fetched.append(0) or 0)  # always the nonce the CLI holds
    with one_block(node):
        held = cli.sign_and_send(transfer_of(cli))
        with pytest.raises(ChainError, match="replacement transaction underpriced"):
            node.sign_and_send(transfer_to(node, Signer.generate().address))
    assert len(fetched) == client_module.SEND_ATTEMPTS
    assert mined_transactions(node) == [held]


def test_the_endpoint_is_asked_its_chain_id_once_not_before_every_call(rpc_url: str) -> None:
    """web3 checks each eth_call and gas estimate against the endpoint's chain id, and asked the endpoint for it every
    time: a read took two round trips. A client asks once (a thread of its own once each)."""
    with capped_rpc(rpc_url, max_blocks=10**9) as relay:
        client = ChainClient(relay.url, signer=Signer.generate())
        for _ in range(5):
            client.w3.eth.call({"to": client.signer.address, "data": "0x"})
            client.w3.eth.estimate_gas({"from": client.signer.address, "to": client.signer.address, "value": 0})
    methods = [method for request in relay.requests for method in request]
    assert (methods.count("eth_call"), methods.count("eth_estimateGas")) == (5, 5)
    assert methods.count("eth_chainId") <= 2  # web3's cache asks once more when it first stores an answer


# A QBFT block's extraData: RLP of a 32-byte vanity, the validators, a vote, the round and the seals.
QBFT_EXTRA_DATA = "0x" + "f87aa0" + "00" * 32 + "d594" + "ab" * 20 + "c080c0" + "11" * 64


def test_blocks_of_a_proof_of_authority_chain_are_read(rpc_url: str) -> None:
    """Besu's QBFT (and IBFT, Clique) blocks carry more than 32 bytes of extraData, which web3 refused
    (ExtraDataLengthError): a node on the production chain could not read its head."""
    with capped_rpc(rpc_url, max_blocks=10**9) as relay:
        for method in ("eth_getBlockByNumber", "eth_getBlockByHash"):
            relay.rewrite[method] = lambda _request, answer: {
                **answer, "result": {**answer["result"], "extraData": QBFT_EXTRA_DATA}}
        client = ChainClient(relay.url)
        head = client.head()
        assert head.block_hash == ChainClient(rpc_url).head().block_hash
        assert client._block_hash(head.block_number) == head.block_hash
        assert relay.requests.count(["eth_getBlockByNumber"]) == 2


@pytest.mark.parametrize("wording", [BESU_REVERT, (3, "Execution reverted")], ids=["besu-24", "besu-25"])
def test_reverts_worded_as_besu_words_them_are_reverts(consortium: Consortium, wording: tuple[int, str]) -> None:
    """Besu answers a reverted eth_call or eth_estimateGas with "Execution reverted" (capital E; code -32000 in 24.x):
    web3 took an empty revert for a plain RPC error, so a refused write surfaced as a chain failure, and a batch of
    reads holding one gave up JSON-RPC batches for good."""
    bank, outsider = consortium.banks[0], Signer.generate()
    with capped_rpc(consortium.rpc_url) as relay:
        relay.rewrite["eth_call"] = relay.rewrite["eth_estimateGas"] = worded_revert(*wording)
        client = ChainClient(relay.url, signer=bank.signer)
        registry = client.contract("AllianceRegistry", consortium.deployment.address("AllianceRegistry"))
        # Role 4 is not in the enum: the ABI decoder reverts without revert data.
        out_of_range = registry.functions.proposeAdmission(outsider.address, 4, "Bank X", "BANK-X", b"\x04" * 32)
        with pytest.raises(UnknownRevert):
            client.transact(out_of_range)  # eth_estimateGas
        with pytest.raises(UnknownRevert):
            client.call(out_of_range, sender=bank.address)  # eth_call
        with pytest.raises(AllianceRegistryUnknownProposal):
            client.transact(registry.functions.vote(12345))
        with pytest.raises(UnknownRevert):
            client.call_many([registry.functions.memberCount(), out_of_range])
        assert client._takes_batches
        assert ["eth_call", "eth_call"] in relay.requests


PRUNED_STATE = {"code": -32000, "message": "missing trie node 5a2c0f (path ) state 0x5a2c0f is not available"}


def _refused_with(error: dict[str, object]) -> Rewrite:
    return lambda request, _answer: {"jsonrpc": "2.0", "id": request.get("id"), "error": error}


@pytest.mark.parametrize(("rewrite", "raised"), [(with_result(None), MalformedChainAnswer),
                                                 (_refused_with(PRUNED_STATE), ChainDataMissing)],
                         ids=["malformed", "pruned"])
def test_a_bad_answer_in_a_batch_is_its_error_and_batches_go_on(consortium: Consortium, rewrite: Rewrite,
                                                                 raised: type[ChainError]) -> None:
    """A batch of reads holding one malformed answer, or one the endpoint no longer has the state for, was taken
    for a refusal of batches: the error came out of the single call that followed, and every later read went one
    call at a time for good. It is the read's own error now, and batches go on."""
    with capped_rpc(consortium.rpc_url) as relay:
        client = ChainClient(relay.url)
        registry = client.contract("AllianceRegistry", consortium.deployment.address("AllianceRegistry"))
        relay.rewrite["eth_call"] = rewrite
        with pytest.raises(raised):
            client.call_many([registry.functions.memberCount(), registry.functions.memberCount()])
        assert client._takes_batches
        del relay.rewrite["eth_call"]
        assert client.call_many([registry.functions.memberCount()] * 2) == [3, 3]
    assert relay.requests[-1] == ["eth_call", "eth_call"]


def test_blocks_between_two_times_are_found_by_bisection(rpc_url: str) -> None:
    client = ChainClient(rpc_url)
    start = client.head()
    client.rpc("anvil_mine", [hex(10), hex(5)])  # ten blocks five seconds apart
    stamps = {n: int(client.w3.eth.get_block(n)["timestamp"]) for n in range(start.block_number + 1,
                                                                             start.block_number + 11)}
    first, last = start.block_number + 3, start.block_number + 7
    assert client.blocks_between(stamps[first], stamps[last]) == (first, last)
    assert client.blocks_between(stamps[first] - 4, stamps[last] + 4) == (first, last)  # between blocks: the inner ones
    assert client.blocks_between(stamps[first] + 1, stamps[first] + 4) is None  # no block in the gap
    head = client.head()
    assert client.blocks_between(head.timestamp + 1, head.timestamp + 100) is None  # not mined yet
