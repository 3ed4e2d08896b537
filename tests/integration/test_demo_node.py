"""`make run` as a user sees it: `alliance node start --demo` in its own process, then the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ALLIANCE = Path(sys.executable).parent / "alliance"


def wait_for_health(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"node exited early with {process.returncode}")
        try:
            response = httpx.get(url, timeout=1)
            if response.status_code == 200 and response.json()["status"] == "ok":
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become healthy within {timeout}s")


@pytest.mark.slow
def test_node_start_demo_serves_health_and_three_members(tmp_path: Path) -> None:
    data_dir = tmp_path / "alliance"
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(data_dir), "ALLIANCE_DEV_CHAIN_PORT": str(free_port())}
    env.pop("ALLIANCE_RPC_URL", None)
    api_port = free_port()
    log = (tmp_path / "node.log").open("wb")
    node = subprocess.Popen([str(ALLIANCE), "node", "start", "--demo", "--port", str(api_port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        health = wait_for_health(f"http://127.0.0.1:{api_port}/health", node).json()
        assert health["contracts"]["deployed"] is True
        listed = subprocess.run([str(ALLIANCE), "member", "list", "--json"], env=env, capture_output=True,
                                check=True)
        members = json.loads(listed.stdout)
        assert [(m["bank_code"], m["status"]) for m in members] == \
            [("DEMO-A", "active"), ("DEMO-B", "active"), ("DEMO-C", "active")]
        keys = dict(line.split("=", 1) for line in (data_dir / "demo" / "api-keys.txt").read_text().split())
        response = httpx.get(f"http://127.0.0.1:{api_port}/v1/members", headers={"X-API-Key": keys["analyst"]})
        assert response.status_code == 200 and len(response.json()) == 3
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    # The node stopped the dev chain it started, and the chain's state survives for the next run.
    assert not (data_dir / "chain" / "anvil.pid").exists()
    assert (data_dir / "chain" / "state.json").exists()
