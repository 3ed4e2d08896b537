"""An initialised, deployed node and its FastAPI app, on the session's anvil and a real store."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.config import load_settings, write_config
from node.consortium import deploy_solo
from node.runtime import NodeContext
from node.setup import init_node
from node.store.db import sqlite_file_of


@dataclass
class ApiNode:
    node: NodeContext
    client: TestClient
    tokens: dict[Role, str]

    def headers(self, role: Role) -> dict[str, str]:
        return {"X-API-Key": self.tokens[role]}


# A data dir and SQLite store made by `init_node` once per session and bank code, copied for each test on SQLite: the
# migrations alone took ~0.3 s of each API test's set-up. A PostgreSQL store is made for each test. Each test still
# has its own files, its own store and its own deployment (the chain is reverted after each test); `alliance init`
# itself is tested in tests/cli.
_TEMPLATES = tempfile.TemporaryDirectory(prefix="alliance-api-templates-")


def start_api_node(data_dir: Path, rpc_url: str, store_url: str, *, bank_code: str = "BANKA") -> ApiNode:
    settings = load_settings(data_dir, rpc_url=rpc_url, database_url=store_url)
    sqlite_file = sqlite_file_of(make_url(store_url))
    if sqlite_file is not None and not sqlite_file.exists() and not data_dir.exists():
        _copy_template(data_dir, sqlite_file, rpc_url, store_url, bank_code)
    else:
        init_node(settings, bank_name=f"Bank {bank_code}", bank_code=bank_code, passphrase=settings.passphrase or "")
    node = NodeContext(load_settings(data_dir, rpc_url=rpc_url, database_url=store_url))
    deploy_solo(node, quorum_percent=50, proposal_lifetime_s=3600, force=False)
    with node.store.transaction() as session:
        tokens = {role: create_api_key(session, role, "test").token for role in Role}
    return ApiNode(node, TestClient(create_app(node)), tokens)


def _copy_template(data_dir: Path, sqlite_file: Path, rpc_url: str, store_url: str, bank_code: str) -> None:
    template = Path(_TEMPLATES.name) / bank_code
    template_store = template / "store.db"
    if not template.exists():
        settings = load_settings(template / "data", rpc_url=rpc_url, database_url=f"sqlite:///{template_store}")
        init_node(settings, bank_name=f"Bank {bank_code}", bank_code=bank_code, passphrase=settings.passphrase or "")
    shutil.copytree(template / "data", data_dir)
    shutil.copyfile(template_store, sqlite_file)
    write_config(load_settings(data_dir, rpc_url=rpc_url, database_url=store_url))  # the config init would write


@pytest.fixture
def api(data_dir: Path, rpc_url: str, store_url: str) -> Iterator[ApiNode]:
    started = start_api_node(data_dir, rpc_url, store_url)
    yield started
    started.client.close()
    started.node.close()
