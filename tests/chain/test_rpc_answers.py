"""The shape check of JSON-RPC results: what it refuses, and the answers of real nodes it must let through."""

from __future__ import annotations

from typing import Any

import pytest

from node.chain.errors import MalformedChainAnswer
from node.chain.rpc_answers import check_result

HASH = "0x" + "ab" * 32
ADDRESS = "0x" + "cd" * 20
LOG = {"address": ADDRESS, "topics": [HASH], "data": "0x", "blockNumber": "0x5", "logIndex": "0x0",
       "transactionHash": HASH, "blockHash": HASH, "removed": False}
TRANSACTION = {"hash": HASH, "from": ADDRESS, "to": ADDRESS, "nonce": "0x0", "input": "0x", "gas": "0x5208",
               "blockNumber": "0x5"}


@pytest.mark.parametrize(("method", "result"), [
    ("eth_chainId", "0x7a69"),
    ("eth_blockNumber", "0x00"),  # a leading zero: not the spec's form, but a number all the same
    ("eth_getCode", "0x"),
    ("eth_getLogs", []),
    ("eth_getLogs", [LOG, {k: v for k, v in LOG.items() if k not in ("blockHash", "removed")}]),
    ("eth_getTransactionByHash", None),  # no such transaction: web3's TransactionNotFound, not a malformed answer
    ("eth_getTransactionByHash", {**TRANSACTION, "to": None, "blockNumber": None, "extra": [1]}),  # pending creation
    ("eth_syncing", False),
    ("eth_syncing", {"currentBlock": "0x1", "highestBlock": "0x9"}),
    ("anvil_nodeInfo", {"anything": None}),  # a method the node does not read through web3
])
def test_check_result_passes_the_answers_of_a_node(method: str, result: Any) -> None:
    check_result(method, result, "http://node")


@pytest.mark.parametrize(("method", "result", "problem"), [
    ("eth_chainId", None, "the result is null, not a hex number"),
    ("eth_chainId", 31337, "the result is 31337, not a hex number"),
    ("eth_blockNumber", "0x" + "f" * 65, "the result is a long string, not a hex number"),
    ("eth_call", "0x0", "the result is '0x0', not hex data"),
    ("eth_getCode", 5, "the result is 5, not hex data"),
    ("eth_getLogs", None, "the result is null, not a list"),
    ("eth_getLogs", [LOG, {**LOG, "topics": None}], "the result[1]'s 'topics' is null, not a list"),
    ("eth_getLogs", [{k: v for k, v in LOG.items() if k != "logIndex"}], "the result[0] has no 'logIndex'"),
    ("eth_getTransactionByHash", "0xzz", "the result is '0xzz', not an object"),
    ("eth_getTransactionByHash", {**TRANSACTION, "from": None}, "the result's 'from' is null, not a hex address"),
    ("eth_syncing", "yes", "the result is 'yes', not true or false"),
])
def test_check_result_refuses_a_malformed_result_naming_what_is_wrong(method: str, result: Any, problem: str) -> None:
    with pytest.raises(MalformedChainAnswer) as refused:
        check_result(method, result, "http://node")
    assert str(refused.value) == f"chain RPC at http://node answered {method} with a malformed result: {problem}"
