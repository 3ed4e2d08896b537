"""The dev chain's pid file across crashes (a pid reused by another process, an orphan of a killed node), and the
state it keeps across a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node.chain.client import ChainClient
from node.chain.devchain import DevChain
from node.chain.errors import ChainDataMissing, ChainError
from node.chain.signer import Signer
from node.paths import PROJECT_ROOT
from tests.conftest import free_port

# Contract creation code that loops until its gas runs out (JUMPDEST PUSH1 0 JUMP): each such transaction keeps
# anvil executing its block for a while, and fails, but is mined and uses up its sender's nonce.
SPIN_UNTIL_OUT_OF_GAS = bytes.fromhex("5b600056")


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


def test_a_clean_stop_amid_mining_keeps_the_accounts_and_the_blocks_in_step(tmp_path: Path) -> None:
    # anvil writes its state on SIGTERM while it may still be mining: the block being executed then was saved in the
    # accounts but not in the blocks (here in every run, 5 of 5), so the chain came back with a nonce, and in a
    # ledger a batch root, that no transaction on it accounts for.
    chain = DevChain(tmp_path / "chain", port=free_port())
    chain.start()
    sender = Signer.generate()
    client = ChainClient(chain.rpc_url, signer=sender)
    stopped = threading.Event()

    def send_until_stopped() -> None:
        nonce = 0
        while not stopped.is_set():
            try:
                client.send_signed(sender.sign_transaction({"data": SPIN_UNTIL_OUT_OF_GAS, "gas": 90_000_000,
                                                            "gasPrice": 0, "nonce": nonce, "chainId": 31337}))
            except ChainError:
                return  # the chain is going
            nonce += 1

    sending = threading.Thread(target=send_until_stopped)
    sending.start()
    try:
        deadline = time.monotonic() + 30
        while client.block_number() < 3:  # the miner is busy with one slow block after another
            assert time.monotonic() < deadline, "anvil mined nothing"
            time.sleep(0.05)
        assert chain.stop()
        stopped.set()
        sending.join(30)
        chain.start()
        in_blocks = sum(len(client.rpc("eth_getBlockByNumber", [hex(number), False])["transactions"])
                        for number in range(client.block_number() + 1))
        assert in_blocks >= 3
        assert int(client.rpc("eth_getTransactionCount", [sender.address, "latest"]), 16) == in_blocks
    finally:
        stopped.set()
        chain.stop()


def test_past_states_stay_in_the_data_dir_bounded_and_go_with_the_chain(tmp_path: Path) -> None:
    """anvil spilled a past state per block (about 440 KB, empty blocks too) to ~/.foundry/anvil/tmp, kept every one,
    and left them there when stopped or killed: a test run's chains filled the disk. They are kept in the chain's
    own dir now, for at most `persisted_states` blocks, and removed when the chain stops or starts again."""
    chain = DevChain(tmp_path / "chain", port=free_port(), persisted_states=20)
    chain.start()
    client = ChainClient(chain.rpc_url)
    nobody = "0x" + "00" * 20
    try:
        client.rpc("anvil_mine", [hex(1_600)])
        deadline = time.monotonic() + 10
        while len(states := list(chain.history_dir.glob("*/*"))) < 15 and time.monotonic() < deadline:
            time.sleep(0.1)  # anvil writes them in the background, one file per block
        # Here, not in the user's home, and at most 20 (with unbounded history anvil held ~1,550 files by now).
        assert 15 <= len(states) <= 25
        # A recent block's state is read; one older than the kept history is refused as history the chain lacks.
        assert client.rpc("eth_getBalance", [nobody, hex(1_590)]) == "0x0"
        with pytest.raises(ChainDataMissing, match="does not have the history asked for"):
            client.rpc("eth_getBalance", [nobody, hex(1_500)])
        pid = chain.running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # a crash: anvil leaves its states behind
        os.waitpid(pid, 0)  # this process started it: collected, not left a zombie
        assert any(chain.history_dir.glob("*/*"))
        chain.start()
        assert not any(chain.history_dir.glob("*/*"))  # the dead process's states are gone
    finally:
        chain.stop()
    assert not chain.history_dir.exists()


def test_a_stop_beside_the_process_that_started_the_chain_ends_it_with_sigterm_and_keeps_its_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`alliance chain down` while the node that started the chain runs: anvil saved its state and exited on SIGTERM
    at once, but stayed the node's zombie until the node collected it, and a signal of 0 finds a zombie. The stop
    waited its whole timeout (15 s) for the process to go, then sent SIGKILL."""
    port = free_port()
    code = ("import time\nfrom pathlib import Path\nfrom node.chain.devchain import DevChain\n"
            f"DevChain(Path({str(tmp_path / 'chain')!r}), port={port}).start(owned=True)\n"
            "print('started', flush=True)\ntime.sleep(120)\n")
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    chain = DevChain(tmp_path / "chain", port=port)
    sent: list[int] = []
    real_kill = os.kill

    def kill(pid: int, signal_number: int) -> None:
        if signal_number:
            sent.append(signal_number)
        real_kill(pid, signal_number)

    try:
        assert starter.stdout is not None and starter.stdout.readline().strip() == "started"
        client = ChainClient(chain.rpc_url)
        client.rpc("evm_mine")
        head = client.block_number()
        anvil = chain.running_pid()
        assert anvil is not None
        monkeypatch.setattr(os, "kill", kill)
        assert chain.stop(timeout=60)
        monkeypatch.undo()
        assert sent == [signal.SIGTERM]  # no SIGKILL: it had gone
        assert Path(f"/proc/{anvil}/stat").read_text().rpartition(")")[2].split()[0] == "Z"  # the starter's zombie
        chain.start()
        assert client.block_number() == head
    finally:
        monkeypatch.undo()
        chain.stop()
        starter.kill()
        starter.wait()
