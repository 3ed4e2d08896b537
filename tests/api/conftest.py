"""An initialised, deployed node and its FastAPI app, on the session's anvil and a real store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.config import load_settings
from node.consortium import deploy_solo
from node.runtime import NodeContext
from node.setup import init_node


@dataclass
class ApiNode:
    node: NodeContext
    client: TestClient
    tokens: dict[Role, str]

    def headers(self, role: Role) -> dict[str, str]:
        return {"X-API-Key": self.tokens[role]}


def start_api_node(data_dir: Path, rpc_url: str, store_url: str, *, bank_code: str = "BANKA") -> ApiNode:
    settings = load_settings(data_dir, rpc_url=rpc_url, database_url=store_url)
    init_node(settings, bank_name=f"Bank {bank_code}", bank_code=bank_code, passphrase=settings.passphrase or "")
    node = NodeContext(load_settings(data_dir, rpc_url=rpc_url, database_url=store_url))
    deploy_solo(node, quorum_percent=50, proposal_lifetime_s=3600, force=False)
    with node.store.transaction() as session:
        tokens = {role: create_api_key(session, role, "test").token for role in Role}
    return ApiNode(node, TestClient(create_app(node)), tokens)


@pytest.fixture
def api(data_dir: Path, rpc_url: str, store_url: str) -> Iterator[ApiNode]:
    started = start_api_node(data_dir, rpc_url, store_url)
    yield started
    started.client.close()
    started.node.close()
