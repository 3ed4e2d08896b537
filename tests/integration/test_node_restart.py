"""`make run` again on the same data dir: after Ctrl-C, and after `kill -9` of the node (its dev chain runs on)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from node.chain.client import ChainClient
from node.chain.deployment import load_deployment
from node.chain.devchain import process_running
from node.chain.fraud_ledger import FraudLedgerClient
from node.paths import PROJECT_ROOT
from tests.conftest import free_port
from tests.integration.test_demo_node import (
    accept_report,
    eventually,
    report_then_check_through_the_workers,
    wait_for_health,
    wait_until_confirmed_and_hit,
)
from tests.ledger.test_publisher import onchain_records

# The CLI of the code under test (the `alliance` script runs whichever checkout was installed).
ALLIANCE = [sys.executable, "-c", "from alliance_cli.main import run; run()"]
HELD_PHONE = "13900139000"


@pytest.mark.slow
def test_node_start_demo_again_after_ctrl_c_then_after_kill_9_publishes_each_accepted_report_once(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "alliance"
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(data_dir), "ALLIANCE_DEV_CHAIN_PORT": str(free_port()),
           "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("ALLIANCE_RPC_URL", None)
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    log = (tmp_path / "node.log").open("wb")

    def start(**settings: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*ALLIANCE, "node", "start", "--demo", "--port", str(api_port)],
                                env={**env, **settings}, stdout=log, stderr=subprocess.STDOUT)

    node = start()
    try:
        wait_for_health(f"{api}/health", node)
        keys = dict(line.split("=", 1) for line in (data_dir / "demo" / "api-keys.txt").read_text().split())
        report_then_check_through_the_workers(api, keys)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)

    # Ctrl-C, then start again: the chain comes back with its state. A report is accepted and held in the queue
    # (its batch would wait an hour to fill) when the node is killed.
    node = start(ALLIANCE_PUBLISH_MAX_WAIT_S="3600")
    try:
        health = wait_for_health(f"{api}/health", node).json()
        deployment = load_deployment(data_dir / "deployments" / "dev.json")
        ledger = FraudLedgerClient(ChainClient(health["chain"]["rpc_url"]), deployment.address("FraudLedger"))
        assert ledger.batch_count() == 1
        held = accept_report(api, keys, HELD_PHONE)
        state = httpx.get(f"{api}/v1/fraud/reports/{held}", headers={"X-API-Key": keys["analyst"]}).json()["state"]
        assert state == "queued"
    finally:
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=30)
    orphaned_chain = int((data_dir / "chain" / "anvil.pid").read_text())

    node = start()
    try:
        wait_for_health(f"{api}/health", node)
        wait_until_confirmed_and_hit(api, keys, held, HELD_PHONE)
        eventually(lambda: ledger.batch_count() == 2)
        assert len(onchain_records(ledger)) == 2  # each report's record once
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    # The node that reused the killed node's dev chain stopped it, as it stops a chain it started.
    assert not (data_dir / "chain" / "anvil.pid").exists()
    assert not process_running(orphaned_chain)  # gone, or exited and not yet collected by init
