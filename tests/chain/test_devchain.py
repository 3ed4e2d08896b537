"""The dev chain's pid file across crashes: a pid reused by another process, an orphan of a killed node."""

from __future__ import annotations

import subprocess
from pathlib import Path

from node.chain.devchain import DevChain
from tests.conftest import free_port


def test_start_dev_chain_when_its_stale_pid_file_names_another_process(tmp_path: Path) -> None:
    # After a reboot or a container restart, the pid anvil had may belong to any other process.
    other = subprocess.Popen(["sleep", "60"])
    chain = DevChain(tmp_path / "chain", port=free_port())
    chain.state_dir.mkdir()
    chain.pid_file.write_text(str(other.pid))
    try:
        assert chain.running_pid() is None
        assert chain.start().chain_id == 31337
        assert chain.running_pid() not in (None, other.pid)
    finally:
        chain.stop()
        other.kill()
        other.wait()
    assert other.returncode == -9  # stop() left the other process alone
