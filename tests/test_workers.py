"""The node's background loops: they outlive failures, and a node without contracts still starts them."""

from __future__ import annotations

from pathlib import Path

from node.config import Network, load_settings
from node.runtime import NodeContext
from node.setup import init_node
from node.workers import Loop, node_workers
from tests.conftest import TEST_PASSPHRASE


def test_loop_backs_off_after_failures_and_recovers() -> None:
    outcomes = [RuntimeError("chain down"), RuntimeError("chain down"), None]

    def step() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    loop = Loop("test", 0.5, step)
    assert loop.run_step() == 1.0 and loop.status.last_error == "RuntimeError: chain down"
    assert loop.run_step() == 2.0 and loop.status.failures_in_a_row == 2
    assert loop.run_step() == 0.5
    assert (loop.status.failures_in_a_row, loop.status.last_error, loop.status.runs) == (0, None, 3)
    assert loop.status.last_ok is not None


def test_workers_of_a_node_without_contracts_start_and_report_the_problem(tmp_path: Path, rpc_url: str) -> None:
    options = {"network": Network.local, "rpc_url": rpc_url, "key_passphrase": TEST_PASSPHRASE,
               "deployment_file": tmp_path / "missing.json"}
    init_node(load_settings(tmp_path / "bank", **options), bank_name="Bank A", bank_code="BANK-A",
              passphrase=TEST_PASSPHRASE)
    node = NodeContext(load_settings(tmp_path / "bank", **options))
    try:
        workers = node_workers(node)  # no deployment record: building them must not fail
        chain_loops = [loop for loop in workers.loops if loop.name != "retention"]
        assert [loop.name for loop in chain_loops] == ["keys", "publisher", "indexer"]
        for loop in chain_loops:
            assert loop.run_step() > loop.interval_s
            assert "deployment record" in (loop.status.last_error or ""), loop.name
        [retention] = [loop for loop in workers.loops if loop.name == "retention"]
        assert retention.run_step() == retention.interval_s  # the store alone: no chain needed
        assert retention.status.last_error is None
    finally:
        node.close()
