"""One node process per data dir (node.node_lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.errors import InvalidInput
from node.node_lock import LOCK_FILE, NodeRunning, node_lock
from tests.conftest import immutable

HOLDER = """
import sys, time
from pathlib import Path
from node.node_lock import node_lock
with node_lock(Path(sys.argv[1]), doing="start the node"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_lock_refuses_a_second_holder_naming_the_first_and_is_free_after(tmp_path: Path) -> None:
    refusal = rf"cannot replace the key: a node is running on .* \(pid {os.getpid()}\)"
    with node_lock(tmp_path, doing="start the node"), pytest.raises(NodeRunning, match=refusal), \
            node_lock(tmp_path, doing="replace the key"):
        pass
    with node_lock(tmp_path, doing="replace the key"):  # released at the end of the block
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The kernel drops a flock with its process, however it ends: a node killed with -9 never blocks a restart."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(NodeRunning, match=rf"\(pid {holder.pid}\)"), node_lock(tmp_path, doing="start the node"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with node_lock(tmp_path, doing="start the node"):
                break
        except NodeRunning:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert (tmp_path / LOCK_FILE).exists()


def test_a_data_dir_it_may_not_write_is_one_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with immutable(data_dir), pytest.raises(InvalidInput, match="cannot start the node: cannot write its lock file"), \
            node_lock(data_dir, doing="start the node"):
        pass
