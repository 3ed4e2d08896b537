"""Deploying the consortium contracts and the deployment record that says where they are."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.chain.artifacts import ArtifactMissing, load_artifact
from node.chain.client import ChainClient
from node.chain.code_functions import missing_functions
from node.chain.errors import ContractNotDeployed
from node.chain.registry import FoundingMember

DEFAULT_QUORUM_PERCENT = 50  # strictly more than half of the active voting members
DEFAULT_PROPOSAL_LIFETIME_S = 7 * 24 * 3600
# Deployed after the registry, each taking the registry's address as its only constructor argument.
DEPENDENT_CONTRACTS = ("FraudLedger", "AssetRegistry")


@dataclass(frozen=True)
class DeployedContract:
    address: str
    block_number: int
    tx_hash: str
    bytecode_sha256: str


@dataclass(frozen=True)
class Deployment:
    network: str
    chain_id: int
    deployed_at: str
    contracts: dict[str, DeployedContract] = field(default_factory=dict)

    def address(self, name: str) -> str:
        try:
            return self.contracts[name].address
        except KeyError as exc:
            raise ContractNotDeployed(f"{name} is not in the {self.network} deployment record") from exc

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        return cls(data["network"], int(data["chain_id"]), data["deployed_at"],
                   {name: DeployedContract(**c) for name, c in data["contracts"].items()})


def save_deployment(deployment: Deployment, path: Path) -> None:
    """Write atomically: a crash mid-write must not leave a half record that hides the contracts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(deployment.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def load_deployment(path: Path) -> Deployment:
    try:
        return Deployment.from_json(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ContractNotDeployed(f"no deployment record at {path}; run `alliance contracts deploy`") from exc
    except UnicodeDecodeError as exc:
        raise ContractNotDeployed(f"deployment record {path} is malformed: it is not UTF-8 text") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ContractNotDeployed(f"deployment record {path} is malformed: {exc}") from exc
    except OSError as exc:  # a directory in its place, say (ALLIANCE_DEPLOYMENT_FILE is given by hand)
        raise ContractNotDeployed(f"deployment record {path} cannot be read: {exc.strerror or exc}") from exc


def check_deployment(client: ChainClient, deployment: Deployment) -> None:
    """Raise unless this chain is the recorded one and every recorded contract has code with every function this
    node's artifacts call (code_functions)."""
    if client.chain_id != deployment.chain_id:
        raise ContractNotDeployed(
            f"the chain's id is {client.chain_id}, the deployment record is for chain {deployment.chain_id}")
    for name, contract in deployment.contracts.items():
        code = client.code(contract.address)
        if not code:
            raise ContractNotDeployed(f"no code for {name} at {contract.address} on this chain")
        missing = missing_functions(load_artifact(name).abi, code)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ContractNotDeployed(
                f"{name} at {contract.address} was deployed from other contract sources than this node's: it lacks "
                f"{shown}; run the node version that deployed it, or deploy the contracts again")


def deploy_consortium(
    client: ChainClient,
    *,
    network: str,
    founders: list[FoundingMember],
    quorum_percent: int = DEFAULT_QUORUM_PERCENT,
    proposal_lifetime_s: int = DEFAULT_PROPOSAL_LIFETIME_S,
) -> Deployment:
    registry_artifact = load_artifact("AllianceRegistry")
    receipt = client.deploy(registry_artifact, [f.as_abi() for f in founders], quorum_percent, proposal_lifetime_s)
    registry_address = str(receipt.raw["contractAddress"])
    contracts = {"AllianceRegistry": _record(receipt, registry_artifact.bytecode)}
    for name in DEPENDENT_CONTRACTS:
        try:
            artifact = load_artifact(name)
        except ArtifactMissing:
            continue
        dependent = client.deploy(artifact, registry_address)
        contracts[name] = _record(dependent, artifact.bytecode)
    return Deployment(network, client.chain_id, datetime.now(UTC).isoformat(timespec="seconds"), contracts)


def _record(receipt: Any, bytecode: str) -> DeployedContract:
    return DeployedContract(
        address=str(receipt.raw["contractAddress"]),
        block_number=receipt.block_number,
        tx_hash=receipt.tx_hash,
        bytecode_sha256=hashlib.sha256(bytes.fromhex(bytecode.removeprefix("0x"))).hexdigest(),
    )
