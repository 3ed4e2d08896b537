"""Compiled contract artifacts: the only form in which the node knows its contracts.

Running a node needs no compiler: `alliance contracts build` writes these files and they are
committed, so every bank deploys and talks to byte-identical contracts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from node.paths import ARTIFACTS_DIR


class ArtifactMissing(FileNotFoundError):
    """A contract artifact is not in contracts/build (run `alliance contracts build`)."""


@dataclass(frozen=True)
class ContractArtifact:
    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str
    compiler_version: str
    settings: dict[str, Any]
    source_sha256: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "contractName": self.name,
            "source": self.source,
            "compiler": {"version": self.compiler_version, "settings": self.settings},
            "sourceSha256": self.source_sha256,
            "abi": self.abi,
            "bytecode": self.bytecode,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContractArtifact:
        return cls(
            name=data["contractName"],
            source=data["source"],
            abi=data["abi"],
            bytecode=data["bytecode"],
            compiler_version=data["compiler"]["version"],
            settings=data["compiler"]["settings"],
            source_sha256=data["sourceSha256"],
        )


def artifact_path(name: str, directory: Path = ARTIFACTS_DIR) -> Path:
    return directory / f"{name}.json"


def write_artifact(artifact: ContractArtifact, directory: Path = ARTIFACTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = artifact_path(artifact.name, directory)
    path.write_text(json.dumps(artifact.to_json(), indent=1, sort_keys=True) + "\n")
    return path


@cache
def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> ContractArtifact:
    path = artifact_path(name, directory)
    if not path.exists():
        raise ArtifactMissing(f"no compiled artifact for {name} at {path}; run `alliance contracts build`")
    return ContractArtifact.from_json(json.loads(path.read_text()))


def available_artifacts(directory: Path = ARTIFACTS_DIR) -> list[ContractArtifact]:
    return [load_artifact(p.stem, directory) for p in sorted(directory.glob("*.json"))]
