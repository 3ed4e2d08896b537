"""The committed artifacts are exactly what the pinned compiler makes of the committed sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.chain.artifacts import ArtifactMissing, load_artifact
from node.chain.compiler import SOLC_VERSION, CompilationFailed, CompilerNotFound, compile_contracts, find_compiler
from node.paths import ARTIFACTS_DIR, CONTRACTS_DIR


def test_committed_artifacts_are_current() -> None:
    rebuilt = {a.name: a.to_json() for a in compile_contracts()}
    committed = {p.stem: json.loads(p.read_text()) for p in ARTIFACTS_DIR.glob("*.json")}
    assert set(rebuilt) == set(committed), "artifacts missing or left over: run `alliance contracts build`"
    for name, artifact in rebuilt.items():
        assert committed[name] == artifact, f"{name}.json is stale: run `alliance contracts build` and commit"


def test_artifacts_record_compiler_and_sources() -> None:
    artifact = load_artifact("AllianceRegistry")
    assert artifact.compiler_version == SOLC_VERSION
    assert artifact.settings["optimizer"] == {"enabled": True, "runs": 200}
    assert artifact.settings["evmVersion"] == "cancun"
    assert "AllianceRegistry.sol" in artifact.source_sha256
    assert any(unit.startswith("@openzeppelin/contracts/") for unit in artifact.source_sha256)


def test_compile_reports_solidity_errors(tmp_path: Path) -> None:
    (tmp_path / "Broken.sol").write_text("// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\n"
                                         "contract Broken { function f() external { undefined(); } }\n")
    with pytest.raises(CompilationFailed, match="undefined"):
        compile_contracts(tmp_path)


def test_compile_reports_unresolvable_import(tmp_path: Path) -> None:
    (tmp_path / "Importer.sol").write_text('pragma solidity ^0.8.24;\nimport {X} from "@nowhere/X.sol";\n')
    with pytest.raises(CompilationFailed, match="cannot resolve import"):
        compile_contracts(tmp_path)


def test_find_compiler_honours_alliance_solc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALLIANCE_SOLC", str(tmp_path / "missing-solc"))
    with pytest.raises(Exception, match="does not exist"):
        find_compiler()
    monkeypatch.setenv("ALLIANCE_SOLC", str(CONTRACTS_DIR / "tools" / "solcjs-standard-json.cjs"))
    assert find_compiler().origin == "ALLIANCE_SOLC"


@pytest.mark.parametrize(("solc", "problem"), [
    ("directory", "cannot be run: Permission denied"),
    ("not-executable", "cannot be run: Permission denied"),
    ("another-program", "does not answer `--version` as solc does"),
])
def test_compile_refuses_alliance_solc_that_runs_no_solc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, solc: str,
                                                         problem: str) -> None:
    # These raised PermissionError or SolcError from the version probe: `alliance contracts build` a traceback.
    path = tmp_path / solc
    if solc == "directory":
        path.mkdir()
    else:
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755 if solc == "another-program" else 0o644)
    monkeypatch.setenv("ALLIANCE_SOLC", str(path))
    with pytest.raises(CompilerNotFound, match=f"ALLIANCE_SOLC solc at {path} {problem}"):
        compile_contracts()


def test_load_artifact_missing_is_clear() -> None:
    with pytest.raises(ArtifactMissing, match="alliance contracts build"):
        load_artifact("NoSuchContract")
