"""`make run` as a user sees it: `alliance node start --demo` in its own process, then the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def eventually(probe: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll `probe` until it returns something truthy (the background workers run on their own clocks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.2)
    raise AssertionError(f"nothing came within {timeout}s")


def report_then_check_through_the_workers(api: str, keys: dict[str, str]) -> None:
    """The node's own loops get the alliance key, publish the report and mirror it: no command by hand."""
    report_id = accept_report(api, keys, "13800138000")
    wait_until_confirmed_and_hit(api, keys, report_id, "13800138000")


def accept_report(api: str, keys: dict[str, str], phone: str) -> str:
    report = {"identifiers": [{"type": "phone", "value": phone}], "category": "telecom_fraud", "confidence": 90}
    accepted = eventually(lambda: (r := httpx.post(f"{api}/v1/fraud/reports", json=report,
                                                   headers={"X-API-Key": keys["analyst"]}))
                          .status_code == 202 and r)  # 503 no_alliance_key until the key worker has run
    return str(accepted.json()["report_id"])


def wait_until_confirmed_and_hit(api: str, keys: dict[str, str], report_id: str, phone: str) -> None:
    analyst, workflow = {"X-API-Key": keys["analyst"]}, {"X-API-Key": keys["workflow"]}
    eventually(lambda: httpx.get(f"{api}/v1/fraud/reports/{report_id}", headers=analyst).json()["state"]
               == "confirmed")
    check = {"identifiers": [{"type": "phone", "value": f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}"}]}
    hit = eventually(lambda: httpx.post(f"{api}/v1/checks/identity", json=check, headers=workflow)
                     .json()["results"][0]["hit"])
    assert hit is True


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
        report_then_check_through_the_workers(f"http://127.0.0.1:{api_port}", keys)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    # The node stopped the dev chain it started, and the chain's state survives for the next run.
    assert not (data_dir / "chain" / "anvil.pid").exists()
    assert (data_dir / "chain" / "state.json").exists()
