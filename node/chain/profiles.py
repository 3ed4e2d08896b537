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
        return NetworkProfile(network, int(data["chain_id"]), int(data["gas_price"]), str(data["hardfork"]),
                              int(data["confirmations"]))
    except FileNotFoundError as exc:
        raise ProfileError(f"no network profile {path}") from exc
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"network profile {path} is malformed: {exc}") from exc
