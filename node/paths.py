"""Where the project's own files live. The node runs from a checkout (installed editable by `make`)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
ARTIFACTS_DIR = CONTRACTS_DIR / "build"
CHAIN_CONFIG_DIR = PROJECT_ROOT / "chain_config"
NODE_MODULES = PROJECT_ROOT / "node_modules"
SOLCJS_WRAPPER = CONTRACTS_DIR / "tools" / "solcjs-standard-json.cjs"
