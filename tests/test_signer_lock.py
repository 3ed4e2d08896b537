"""One write at a time per signer among a node's processes (node.signer_lock)."""

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
from node.chain.signer import Signer
from node.errors import InvalidInput
from node.signer_lock import SignerBusy, SignerLock, signer_lock_path
from tests.conftest import immutable

HOLDER = """
import sys, time
from pathlib import Path
from node.signer_lock import SignerLock
with SignerLock(Path(sys.argv[1])).held(timeout=5):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_write_waits_for_another_process_at_most_the_receipt_timeout_and_sends_nothing(tmp_path: Path) -> None:
    """Another process of the node holds the signer's lock (its transaction not mined): this one's write fails with a
    clear error after the receipt timeout instead of hanging, before anything is looked for or sent."""
    path = signer_lock_path(tmp_path, "0xABC")
    client = ChainClient("http://127.0.0.1:9", signer=Signer.generate(), receipt_timeout=0.5,
                         write_lock=SignerLock(path))
    touched: list[str] = []
    holder = hold_in_another_process(path)
    try:
        started = time.monotonic()
        with pytest.raises(SignerBusy, match=rf"for over 0.5s \(it holds {path}\); nothing was sent"):
            client.send_once(lambda: touched.append("find"), lambda: touched.append("send"))
        assert 0.5 <= time.monotonic() - started < 5
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert touched == []
    with SignerLock(path).held(timeout=5):  # the kernel dropped the killed holder's lock: no stale claim
        pass
    assert path.name == "signer-0xabc.lock"


def test_a_thread_may_take_the_lock_it_holds_and_other_threads_wait_for_it(tmp_path: Path) -> None:
    """Two API requests of one process exclude each other like two processes; a write inside a held section (a
    send_once within one_writer) does not wait for itself."""
    lock = SignerLock(tmp_path / "signer.lock")
    events: list[str] = []

    def other_request() -> None:
        with lock.held(timeout=10):
            events.append("other")

    with lock.held(timeout=1):
        with lock.held(timeout=1):
            other = threading.Thread(target=other_request)
            other.start()
            time.sleep(0.3)
            events.append("inner")
        events.append("outer")
    other.join()
    assert events == ["inner", "outer", "other"]


def test_a_data_dir_it_may_not_write_is_one_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with immutable(data_dir), pytest.raises(InvalidInput, match="cannot write the signer's lock file"), \
            SignerLock(signer_lock_path(data_dir, "0xabc")).held(timeout=1):
        pass
