"""Compiles contracts/*.sol with py-solc-x into committed artifacts.

The compiler is found in this order: the `ALLIANCE_SOLC` environment variable, a solc of the pinned
version installed by py-solc-x, then the pinned npm `solc` through a wrapper that speaks the
native `--standard-json` interface (native binaries cannot be downloaded on every machine).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx
from solcx.exceptions import SolcError
from solcx.install import get_executable
from solcx.wrapper import get_solc_version

from node.chain.artifacts import ContractArtifact, write_artifact
from node.paths import ARTIFACTS_DIR, CONTRACTS_DIR, NODE_MODULES, SOLCJS_WRAPPER

SOLC_VERSION = "0.8.30"
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200
COMPILER_SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
    "evmVersion": EVM_VERSION,
    "viaIR": False,
}
_IMPORT = re.compile(r"""^\s*import\s+(?:[^"';]*?\bfrom\s+)?["']([^"']+)["']""", re.MULTILINE)


class CompilerNotFound(RuntimeError):
    """No Solidity compiler of the pinned version is available."""


class CompilationFailed(RuntimeError):
    """solc reported errors; the message lists them."""


@dataclass(frozen=True)
class SolcCompiler:
    path: Path
    origin: str  # "ALLIANCE_SOLC", "py-solc-x" or "npm solc"


def find_compiler() -> SolcCompiler:
    configured = os.environ.get("ALLIANCE_SOLC")
    if configured:
        path = Path(configured)
        if not path.exists():
            raise CompilerNotFound(f"ALLIANCE_SOLC points to {path}, which does not exist")
        return SolcCompiler(path, "ALLIANCE_SOLC")
    installed = {str(v) for v in solcx.get_installed_solc_versions()}
    if SOLC_VERSION in installed:
        return SolcCompiler(Path(get_executable(SOLC_VERSION)), "py-solc-x")
    if SOLCJS_WRAPPER.exists() and (NODE_MODULES / "solc").exists():
        return SolcCompiler(SOLCJS_WRAPPER, "npm solc")
    raise CompilerNotFound(
        f"no solc {SOLC_VERSION}: set ALLIANCE_SOLC, run `python -m solcx.install v{SOLC_VERSION}`, "
        "or `npm ci` for the pinned npm solc"
    )


def _version_of(compiler: SolcCompiler) -> str:
    """The solc version `compiler` says it is. A path that runs no solc (ALLIANCE_SOLC naming a directory, a file that
    is not executable, another program) is CompilerNotFound, one line: the probe raised OSError or SolcError, and
    `contracts build` ended in a traceback."""
    try:
        return str(get_solc_version(compiler.path))
    except OSError as exc:
        raise CompilerNotFound(f"{compiler.origin} solc at {compiler.path} cannot be run: "
                               f"{exc.strerror or exc}") from None
    except SolcError:
        raise CompilerNotFound(f"{compiler.origin} solc at {compiler.path} does not answer `--version` as solc "
                               "does") from None


def collect_sources(entry_files: list[Path], contracts_dir: Path = CONTRACTS_DIR) -> dict[str, str]:
    """Source unit name -> content for the entry files and everything they import, transitively.

    Imports are inlined because solcjs has no file system access; native solc accepts the same input.
    """
    sources: dict[str, str] = {}
    pending = [(path.relative_to(contracts_dir).as_posix(), path) for path in entry_files]
    while pending:
        unit, path = pending.pop()
        if unit in sources:
            continue
        content = path.read_text()
        sources[unit] = content
        for imported in _IMPORT.findall(content):
            name = posixpath.normpath(posixpath.join(posixpath.dirname(unit), imported)) \
                if imported.startswith(".") else imported
            if name not in sources:
                pending.append((name, _resolve(name, contracts_dir)))
    return sources


def _resolve(unit: str, contracts_dir: Path) -> Path:
    for base in (contracts_dir, NODE_MODULES):
        candidate = base / unit
        if candidate.exists():
            return candidate
    raise CompilationFailed(f"cannot resolve import {unit!r} (is `npm ci` done?)")


def compile_contracts(contracts_dir: Path = CONTRACTS_DIR,
                      compiler: SolcCompiler | None = None) -> list[ContractArtifact]:
    compiler = compiler or find_compiler()
    found = _version_of(compiler)
    if found != SOLC_VERSION:
        raise CompilerNotFound(f"{compiler.origin} solc at {compiler.path} is {found}, the project pins {SOLC_VERSION}")
    entries = sorted(contracts_dir.glob("*.sol"))
    if not entries:
        raise CompilationFailed(f"no .sol files in {contracts_dir}")
    sources = collect_sources(entries, contracts_dir)
    standard_input = {
        "language": "Solidity",
        "sources": {unit: {"content": text} for unit, text in sorted(sources.items())},
        "settings": {**COMPILER_SETTINGS,
                     "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}},
    }
    try:
        output = solcx.compile_standard(standard_input, solc_binary=str(compiler.path))
    except SolcError as exc:
        raise CompilationFailed(str(exc)) from exc
    problems = [e for e in output.get("errors", []) if e.get("severity") in ("error", "warning")]
    if problems:
        raise CompilationFailed("\n".join(e.get("formattedMessage", e.get("message", "")) for e in problems))
    artifacts = []
    for entry in entries:
        unit = entry.relative_to(contracts_dir).as_posix()
        # Each artifact records the hashes of exactly the sources it was built from.
        source_hashes = {name: hashlib.sha256(text.encode()).hexdigest()
                         for name, text in sorted(collect_sources([entry], contracts_dir).items())}
        for name, compiled in output["contracts"].get(unit, {}).items():
            if not compiled["evm"]["bytecode"]["object"]:
                continue  # interfaces and abstract contracts are not deployable
            artifacts.append(ContractArtifact(
                name=name,
                source=unit,
                abi=compiled["abi"],
                bytecode="0x" + compiled["evm"]["bytecode"]["object"],
                compiler_version=SOLC_VERSION,
                settings=COMPILER_SETTINGS,
                source_sha256=source_hashes,
            ))
    return artifacts


def build_contracts(contracts_dir: Path = CONTRACTS_DIR, out_dir: Path = ARTIFACTS_DIR) -> list[Path]:
    """Compile and write artifacts, removing artifacts of contracts that no longer exist."""
    artifacts = compile_contracts(contracts_dir)
    written = [write_artifact(artifact, out_dir) for artifact in artifacts]
    for stale in set(out_dir.glob("*.json")) - set(written):
        stale.unlink()
    return written
