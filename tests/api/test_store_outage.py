"""The API while its store cannot serve it (PostgreSQL away, every connection busy): 503 store_unavailable, then
normal answers again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role
from node.config import load_settings
from node.runtime import NodeContext
from tests.api.conftest import ApiNode, start_api_node
from tests.api.test_fraud_reports_api import REPORT, with_key
from tests.conftest import immutable
from tests.store.outage import PostgresRelay


@pytest.fixture
def api_via_relay(data_dir: Path, rpc_url: str, postgres_relay: PostgresRelay) -> Iterator[ApiNode]:
    started = start_api_node(data_dir, rpc_url, postgres_relay.url)
    # Server errors as responses, as a client sees them, instead of exceptions raised into the test.
    started.client = TestClient(create_app(started.node), raise_server_exceptions=False)
    yield started
    started.client.close()
    started.node.close()


@pytest.mark.postgres
def test_requests_while_the_store_is_down_answer_503_then_work_again(api_via_relay: ApiNode,
                                                                    postgres_relay: PostgresRelay) -> None:
    api = with_key(api_via_relay)
    analyst = api.headers(Role.analyst)
    postgres_relay.cut()

    for response in (api.client.get("/v1/fraud/reports/0123", headers=analyst),
                     api.client.post("/v1/fraud/reports", json=REPORT, headers=analyst),
                     # its key is looked up before the body's refusal is answered
                     api.client.post("/v1/fraud/reports", content=b"{", headers={**analyst,
                                                                                "content-type": "application/json"}),
                     api.client.get("/v1/node/status", headers=api.headers(Role.operator)),
                     api.client.get("/v1/node/metrics", headers=api.headers(Role.auditor))):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "store_unavailable"
        assert "alliance" not in response.text  # neither the database user nor its host
    assert api.client.get("/health").status_code == 503

    postgres_relay.restore()
    assert api.client.get("/v1/fraud/reports/0123", headers=analyst).json()["error"]["code"] == "report_not_found"
    accepted = api.client.post("/v1/fraud/reports", json=REPORT, headers=analyst)
    assert accepted.status_code == 202 and accepted.json()["created"]


def test_request_finding_every_store_connection_busy_answers_503(api: ApiNode) -> None:
    """More requests at once than the pool holds connections: the one that waited out the pool's timeout was a 500
    (SQLAlchemy's TimeoutError)."""
    engine = api.node.store.engine
    pool = engine.pool
    pool._timeout = 0.2  # type: ignore[attr-defined]  # the pool's wait, 30 s by default
    held = [engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
    client = TestClient(create_app(api.node), raise_server_exceptions=False)
    try:
        response = client.get("/v1/fraud/reports/0123", headers=api.headers(Role.analyst))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
    finally:
        for connection in held:
            connection.close()
    assert client.get("/v1/fraud/reports/0123", headers=api.headers(Role.analyst)).status_code == 404


@pytest.mark.postgres
def test_writes_to_a_postgresql_store_that_takes_none_answer_503_and_health_says_so(
        data_dir: Path, rpc_url: str, postgres_relay: PostgresRelay) -> None:
    """A server that accepts no writes (a standby the address leads to after a failover; here
    default_transaction_read_only) raised InternalError: every report, bulk or single, and every check was a
    plain-text 500, while /health answered 200."""
    started = start_api_node(data_dir, rpc_url, postgres_relay.url)
    with_key(started)
    started.node.close()
    read_only = postgres_relay.url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20", 1)
    node = NodeContext(load_settings(data_dir, rpc_url=rpc_url, database_url=read_only))
    client = TestClient(create_app(node), raise_server_exceptions=False)
    analyst = {"X-API-Key": started.tokens[Role.analyst]}
    try:
        for response in (client.post("/v1/fraud/reports", json=REPORT, headers=analyst),
                         client.post("/v1/fraud/reports/bulk", json={"reports": [REPORT]}, headers=analyst),
                         client.post("/v1/checks/identity", json={"identifiers": [{"type": "phone",
                                                                                   "value": "+8613800138000"}]},
                                     headers={"X-API-Key": started.tokens[Role.workflow]})):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "store_unavailable"
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["store_ok"] is False
    finally:
        client.close()
        node.close()


def test_health_of_a_node_whose_sqlite_store_it_may_not_write_answers_503(data_dir: Path, rpc_url: str,
                                                                          tmp_path: Path) -> None:
    """A store file the node may not write (its mode, its owner, a read-only mount; here immutable): every report
    was refused, while /health answered 200."""
    store = tmp_path / "store.db"
    api = with_key(start_api_node(data_dir, rpc_url, f"sqlite:///{store}"))
    client = TestClient(create_app(api.node), raise_server_exceptions=False)
    try:
        with immutable(store):
            refused = client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(Role.analyst))
            health = client.get("/health")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
        assert health.status_code == 503 and health.json()["store_ok"] is False
        assert client.get("/health").json()["store_ok"] is True
    finally:
        client.close()
        api.node.close()
