"""The access log of a running node (`alliance node start`, with and without `--debug`): one line per request with
the route template, never the path or query as sent, which uvicorn's own access log wrote out in full."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.test_node_stop import ALLIANCE, answering, initialised_dev_node, kill_left_running

PHONE = "13812345678"
RESIDENT_ID = "11010519491231002X"


@pytest.mark.slow
@pytest.mark.parametrize("debug", [False, True], ids=["default", "debug"])
def test_node_access_log_holds_route_templates_not_identifiers_in_urls(tmp_path: Path, debug: bool) -> None:
    data_dir = tmp_path / "alliance"
    env = initialised_dev_node(data_dir)
    port = free_port()
    log_file = tmp_path / "node.log"
    with log_file.open("wb") as log:  # stdout (the access log) and stderr (uvicorn's and the node's other lines)
        node = subprocess.Popen([*ALLIANCE, *(["--debug"] if debug else []), "node", "start", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    chain_pid = None
    try:
        base = f"http://127.0.0.1:{port}"
        answering(f"{base}/health", node)
        chain_pid = int((data_dir / "chain" / "anvil.pid").read_text())
        indicator = httpx.get(f"{base}/v1/fraud/indicators/{PHONE}?phone={PHONE}&id={RESIDENT_ID}")
        unknown = httpx.get(f"{base}/v1/customers/{RESIDENT_ID}?phone={PHONE}")
        assert (indicator.status_code, unknown.status_code) == (401, 404)
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0
    finally:
        kill_left_running(node, chain_pid)
    text = log_file.read_text()
    assert PHONE not in text and RESIDENT_ID not in text, text
    assert '"GET /v1/fraud/indicators/{indicator} HTTP/1.1" 401 ' in text, text
    assert '"GET <unmatched> HTTP/1.1" 404 ' in text, text
    assert "INFO:     127.0.0.1:" in text  # uvicorn's line format, with the client's address
