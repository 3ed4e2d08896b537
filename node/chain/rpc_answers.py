"""The shape of the JSON-RPC results the node reads, checked as they arrive, before web3 or the node reads them.

web3 turns a result it cannot format into whatever its formatter happened to raise (a ValueError from a hex
conversion, a TypeError from null, a KeyError later in the node for an object missing a field), and takes some
results of the wrong type for right ones: a JSON number where a hex string is due reads as one byte of contract code,
or as a chain id. One table of the results the node reads, checked in the provider, makes every such answer a
`MalformedChainAnswer` that names the method and what was wrong with it.

Only what the node reads is required of an object; other fields are left to web3 (see `translate_errors`), so that a
node of another client that adds or leaves out a field the node does not read keeps working. A null where the method
may answer null (no such transaction, block or receipt) is web3's to report as not found.
"""

from __future__ import annotations

import re
from typing import Any

from node.chain.errors import MalformedChainAnswer

_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")  # leading zeros tolerated; no wider than 256 bits
# Whole bytes: an even number of digits, checked apart (`_is_data`) - a regex of digit pairs took 38 ms over the
# 545 kB of a fraud-ledger batch's calldata, this one under 1 ms.
_DATA = re.compile(r"0x[0-9a-fA-F]*")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")

# A shape: a pattern (a hex string matching it), `bool`, a one-element list (a list of that shape), a dict (an
# object with those fields; a name ending in "?" may be absent) or a tuple (any of those shapes; None: null).
Shape = Any

_LOG = {"address": _ADDRESS, "topics": [_HASH], "data": _DATA, "blockNumber": _QUANTITY, "logIndex": _QUANTITY,
        "transactionHash": _HASH, "blockHash?": _HASH, "removed?": bool}
_TRANSACTION = {"hash": _HASH, "from": _ADDRESS, "to?": (None, _ADDRESS), "nonce": _QUANTITY, "input": _DATA,
                "gas": _QUANTITY, "blockNumber?": (None, _QUANTITY)}
_BLOCK = {"number": _QUANTITY, "hash": _HASH, "parentHash": _HASH, "timestamp": _QUANTITY, "gasLimit": _QUANTITY}
_RECEIPT = {"transactionHash": _HASH, "blockNumber": _QUANTITY, "blockHash": _HASH, "gasUsed": _QUANTITY,
            "status": _QUANTITY, "from?": _ADDRESS, "logs": [_LOG]}

RESULT_SHAPES: dict[str, Shape] = {
    "eth_chainId": _QUANTITY,
    "eth_blockNumber": _QUANTITY,
    "eth_getTransactionCount": _QUANTITY,
    "eth_estimateGas": _QUANTITY,
    "eth_getCode": _DATA,
    "eth_call": _DATA,
    "eth_sendRawTransaction": _HASH,
    "eth_getLogs": [_LOG],
    "eth_getTransactionByHash": (None, _TRANSACTION),
    "eth_getBlockByNumber": (None, _BLOCK),
    "eth_getBlockByHash": (None, _BLOCK),
    "eth_getTransactionReceipt": (None, _RECEIPT),
    "eth_syncing": (bool, {}),  # false, or an object of the sync's progress
}


def check_result(method: str, result: Any, endpoint: str) -> None:
    """Raise MalformedChainAnswer unless `result` has the shape of `method`'s results (any result of a method the
    node does not read through web3, such as `anvil_*`, passes)."""
    shape = RESULT_SHAPES.get(method)
    if shape is None:
        return
    problem = _problem(shape, result, "the result")
    if problem is not None:
        raise MalformedChainAnswer(f"chain RPC at {endpoint} answered {method} with a malformed result: {problem}")


def _problem(shape: Shape, value: Any, where: str) -> str | None:
    """What is wrong with `value` (at `where`) for `shape`, None if nothing."""
    if isinstance(shape, tuple):
        problems = [_problem(s, value, where) for s in shape if s is not None]
        if (value is None and None in shape) or None in problems:
            return None
        return next(p for p in problems if p is not None) if value is not None else f"{where} is null"
    if shape is bool:
        return None if isinstance(value, bool) else f"{where} is {_kind(value)}, not true or false"
    if isinstance(shape, re.Pattern):
        if isinstance(value, str) and shape.fullmatch(value) and (shape is not _DATA or len(value) % 2 == 0):
            return None
        return f"{where} is {_kind(value)}, not {_HEX_NAMES[shape.pattern]}"
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is {_kind(value)}, not a list"
        return next((p for i, item in enumerate(value) if (p := _problem(shape[0], item, f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return f"{where} is {_kind(value)}, not an object"
    for name, field_shape in shape.items():
        key = name.rstrip("?")
        if key not in value:
            if name.endswith("?"):
                continue
            return f"{where} has no {key!r}"
        if problem := _problem(field_shape, value[key], f"{where}'s {key!r}"):
            return problem
    return None


_HEX_NAMES = {_QUANTITY.pattern: "a hex number", _DATA.pattern: "hex data", _HASH.pattern: "a 32-byte hex hash",
              _ADDRESS.pattern: "a hex address"}


def _kind(value: Any) -> str:
    """`value` named for a message: short values as they are, others by their JSON type."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 20):
        return repr(value)
    if isinstance(value, str):
        return "a long string"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__
