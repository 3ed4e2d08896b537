"""Chain errors, including Python exceptions named after the contracts' Solidity custom errors.

A revert carrying `AllianceRegistryAlreadyVoted(7, 0xabc...)` surfaces as an instance of
`node.chain.errors.AllianceRegistryAlreadyVoted` (a `ContractRevert`) with `arguments`
`{"proposalId": 7, "voter": "0xabc..."}`. The classes are made on first use from the ABIs of the
committed artifacts, so a new Solidity error needs no Python change.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from node.chain.artifacts import available_artifacts


def redacted_url(url: str) -> str:
    """`url` as the node shows it (error messages, logs, `/health`): any credentials before the host (a proxy's basic
    auth, `https://user:token@besu:8545`, which requests sends) and the query (a gateway's `?apikey=…`) replaced by
    `***`."""
    scheme, separator, rest = url.partition("://")
    if not separator:  # typed without its scheme (`user:token@besu:8545`): it starts with the authority
        scheme, rest = "", url
    rest, question, _query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{separator}{authority}{slash}{path}" + ("?***" if question else "")


class ChainError(Exception):
    """Base class of everything that goes wrong talking to the chain."""


class ChainUnavailable(ChainError):
    """The JSON-RPC endpoint cannot be reached."""


class ChainDataMissing(ChainError):
    """The endpoint does not have what was asked of it: a transaction or block it does not know, or the state of a
    past block it no longer keeps (a node that pruned it, or one that has not synced that far)."""


class MalformedChainAnswer(ChainError):
    """The endpoint answered, but not with a result of the shape the method gives (null where a value is due, a number
    where a hex string is, an object without a field the node reads): not an Ethereum node, or a broken one."""


class TransactionTimeout(ChainError):
    """A sent transaction was not mined in time (it may still be mined later)."""


class OutOfGas(ChainError):
    """A mined transaction used all its gas; nothing it did took effect."""


class ContractNotDeployed(ChainError):
    """No deployment record, or no code at the recorded address."""


class ContractRevert(ChainError):
    """A contract call reverted. Subclasses are named after the Solidity custom error."""

    error_name: str = "Revert"

    def __init__(self, arguments: dict[str, Any] | None = None, *, raw: bytes = b"") -> None:
        self.arguments = arguments or {}
        self.raw = raw
        rendered = ", ".join(f"{k}={_render(v)}" for k, v in self.arguments.items())
        super().__init__(f"{self.error_name}({rendered})")


class RevertWithReason(ContractRevert):
    error_name = "Error"


class RevertWithPanic(ContractRevert):
    error_name = "Panic"


class UnknownRevert(ContractRevert):
    error_name = "UnknownRevert"


def _render(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


def _canonical_type(param: dict[str, Any]) -> str:
    kind = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple'):]}"
    return str(kind)


@cache
def _error_table() -> dict[bytes, tuple[str, list[dict[str, Any]]]]:
    table: dict[bytes, tuple[str, list[dict[str, Any]]]] = {}
    for artifact in available_artifacts():
        for entry in artifact.abi:
            if entry["type"] != "error":
                continue
            signature = f"{entry['name']}({','.join(_canonical_type(p) for p in entry['inputs'])})"
            table[function_signature_to_4byte_selector(signature)] = (entry["name"], entry["inputs"])
    return table


@cache
def revert_class(error_name: str) -> type[ContractRevert]:
    """The exception class for a Solidity custom error name (made once, then reused)."""
    return type(error_name, (ContractRevert,), {"error_name": error_name, "__module__": __name__})


def decode_revert(data: bytes) -> ContractRevert:
    selector, payload = data[:4], data[4:]
    if selector == function_signature_to_4byte_selector("Error(string)"):
        return RevertWithReason({"reason": abi_decode(["string"], payload)[0]}, raw=data)
    if selector == function_signature_to_4byte_selector("Panic(uint256)"):
        return RevertWithPanic({"code": abi_decode(["uint256"], payload)[0]}, raw=data)
    known = _error_table().get(selector)
    if known is None:
        return UnknownRevert({"data": data}, raw=data)
    name, inputs = known
    values = abi_decode([_canonical_type(p) for p in inputs], payload)
    arguments = {p["name"]: _normalise(p["type"], v) for p, v in zip(inputs, values, strict=True)}
    return revert_class(name)(arguments, raw=data)


def _normalise(abi_type: str, value: Any) -> Any:
    return to_checksum_address(value) if abi_type == "address" else value


def __getattr__(name: str) -> type[ContractRevert]:
    # `from node.chain.errors import AllianceRegistryNotActiveMember` works for every known error.
    if any(error_name == name for error_name, _ in _error_table().values()):
        return revert_class(name)
    raise AttributeError(name)
