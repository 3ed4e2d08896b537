"""Network profiles from chain_config/<network>.toml: the facts about a chain the node must agree on."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from node.paths import CHAIN_CONFIG_DIR


class ProfileError(Exception):
    """A network profile is missing or malformed."""


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    chain_id: int
    gas_price: int
    hardfork: str
    confirmations: int


@cache
def load_profile(network: str, directory: Path = CHAIN_CONFIG_DIR) -> NetworkProfile:
    path = directory / f"{network}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ProfileError(f"no network profile {path}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProfileError(f"network profile {path} is malformed: {reason}") from exc
    try:
        return NetworkProfile(network, _integer(data, "chain_id", minimum=1), _integer(data, "gas_price", minimum=0),
                              _hardfork(data), _integer(data, "confirmations", minimum=0))
    except (KeyError, ValueError) as exc:
        raise ProfileError(f"network profile {path} is malformed: {exc.args[0]}") from exc


def _integer(data: dict[str, object], name: str, *, minimum: int) -> int:
    # Typed, not converted: int() took `true` as 1 and `1.9` as 1, and nothing refused a negative depth or price.
    if name not in data:
        raise KeyError(f"{name} is missing")
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return value


def _hardfork(data: dict[str, object]) -> str:
    if "hardfork" not in data:
        raise KeyError("hardfork is missing")
    value = data["hardfork"]
    if not isinstance(value, str) or not value:
        raise ValueError(f"hardfork must be a hardfork's name, not {value!r}")
    return value
