"""Which of an ABI's functions a contract's deployed code lacks: a deployment made from other contract sources.

A node whose artifacts were compiled from newer sources than the deployed contracts (a function added, or its
arguments changed since) would otherwise learn it from a revert without data on its first call of such a function
(an "unknown revert" of a servicing report, say). Solidity's dispatcher compares the call's selector with each
public function's, pushing each selector as a constant (PUSH4, or a shorter PUSH for one with leading zero bytes),
so a function whose selector appears nowhere in the code is not there. A selector found by chance in other code is
possible, so the check can only miss a lacking function, never accuse a present one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from eth_typing import ABIFunction
from eth_utils import abi_to_signature, function_abi_to_4byte_selector

_PUSH0 = 0x5F


def missing_functions(abi: Sequence[dict[str, Any]], code: bytes) -> list[str]:
    """The signatures (`name(type,...)`) of the ABI's functions whose selector the runtime `code` never pushes."""
    missing = []
    for entry in abi:
        if entry.get("type") != "function":
            continue
        function = cast(ABIFunction, entry)
        if _push_of(function_abi_to_4byte_selector(function)) not in code:
            missing.append(abi_to_signature(function))
    return missing


def _push_of(selector: bytes) -> bytes:
    """The instruction pushing `selector` as the compiler writes it: the shortest PUSH of its value."""
    value = selector.lstrip(b"\0")
    return bytes([_PUSH0 + len(value)]) + value
