"""`kill` (SIGTERM) of a running node: it stops as after Ctrl-C, its workers, store and dev chain included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from node.chain.devchain import process_running
from node.paths import PROJECT_ROOT
from tests.conftest import TEST_PASSPHRASE, free_port

ALLIANCE = [sys.executable, "-c", "from alliance_cli.main import run; run()"]


def answering(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"node exited early with {process.returncode}"
        with suppress(httpx.TransportError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def alive(pid: int) -> bool:
    # Not a zombie: anvil has exited once `chain down` returns, but its parent (the node that started it, or init for
    # one a `chain up` started) may collect it later.
    return process_running(pid)


def initialised_dev_node(data_dir: Path) -> dict[str, str]:
    """The environment of a node on its own dev chain in `data_dir`, after `alliance init` there."""
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(data_dir), "ALLIANCE_DEV_CHAIN_PORT": str(free_port()),
           "ALLIANCE_KEY_PASSPHRASE": TEST_PASSPHRASE, "PYTHONPATH": str(PROJECT_ROOT)}
    for name in ("ALLIANCE_RPC_URL", "ALLIANCE_DATABASE_URL"):
        env.pop(name, None)
    subprocess.run([*ALLIANCE, "init", "--bank-name", "Bank A", "--bank-code", "BANKA"], env=env, check=True,
                   capture_output=True)
    return env


def kill_left_running(node: subprocess.Popen[bytes], chain_pid: int | None) -> None:
    """Clean-up after a test that failed before its node, or the dev chain it started, stopped."""
    if node.poll() is None:
        node.kill()
        node.wait()
    if chain_pid is not None and alive(chain_pid):
        os.kill(chain_pid, signal.SIGTERM)


def answering_node(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`alliance node start` in `env`, once its API answers."""
    port = free_port()
    with (tmp_path / "node.log").open("wb") as log:
        node = subprocess.Popen([*ALLIANCE, "node", "start", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        answering(f"http://127.0.0.1:{port}/health", node)
    except BaseException:
        kill_left_running(node, None)
        raise
    return node


@pytest.mark.slow
def test_sigterm_stops_the_node_and_the_dev_chain_it_started(tmp_path: Path) -> None:
    """uvicorn raised SIGTERM again after its shutdown, which ended the process before the node's own clean-up:
    the dev chain it started ran on, still marked as this node's."""
    data_dir = tmp_path / "alliance"
    env = initialised_dev_node(data_dir)
    node = answering_node(tmp_path, env)
    chain_pid = None
    try:
        chain_pid = int((data_dir / "chain" / "anvil.pid").read_text())
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0
        assert not (data_dir / "chain" / "anvil.pid").exists()
        assert not alive(chain_pid)
    finally:
        kill_left_running(node, chain_pid)


@pytest.mark.slow
def test_sigterm_leaves_running_a_dev_chain_started_again_by_chain_up(tmp_path: Path) -> None:
    """`chain down` then `chain up` while the node ran: the chain `chain up` started is one of its own, which outlives
    the node (docs: the node stops the dev chain "if this node started it"); the node stopped it at exit."""
    data_dir = tmp_path / "alliance"
    env = initialised_dev_node(data_dir)
    node = answering_node(tmp_path, env)
    chain_pid = None
    try:
        for command in ("down", "up"):
            subprocess.run([*ALLIANCE, "chain", command], env=env, check=True, capture_output=True)
        chain_pid = int((data_dir / "chain" / "anvil.pid").read_text())
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0
        assert alive(chain_pid)
        subprocess.run([*ALLIANCE, "chain", "down"], env=env, check=True, capture_output=True)
        assert not alive(chain_pid)
    finally:
        kill_left_running(node, chain_pid)
