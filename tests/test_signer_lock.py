"""One write at a time per signer among a node's processes (node.signer_lock)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from node.chain.client import ChainClient
from node.chain.signer import Signer, write_keystore
from node.config import load_settings
from node.errors import InvalidInput
from node.runtime import NodeContext
from node.signer_lock import SignerBusy, SignerLock, StoreSignerLock, signer_advisory_key, signer_lock_path
from node.store.db import STORE_LOST, make_engine
from tests.conftest import TEST_PASSPHRASE, immutable
from tests.store.outage import PostgresRelay

ADDRESS = "0x00000000000000000000000000000000000000a1"

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
    assert reentered_while_another_thread_waits(SignerLock(tmp_path / "signer.lock")) == ["inner", "outer", "other"]


def reentered_while_another_thread_waits(lock: SignerLock, *, while_reentered: Callable[[], None] = lambda: None,
                                         after_reentry: Callable[[], None] = lambda: None) -> list[str]:
    """Take `lock`, take it again inside, start another thread taking it, and answer the order things happened in
    ("inner" and "outer" when the two holds end, "other" when the thread got it)."""
    events: list[str] = []

    def other_request() -> None:
        with lock.held(timeout=10):
            events.append("other")

    with lock.held(timeout=1):
        with lock.held(timeout=1):
            while_reentered()
            other = threading.Thread(target=other_request)
            other.start()
            time.sleep(0.3)
            events.append("inner")
        after_reentry()
        events.append("outer")
    other.join()
    return events


def test_a_data_dir_it_may_not_write_is_one_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with immutable(data_dir), pytest.raises(InvalidInput, match="cannot write the signer's lock file"), \
            SignerLock(signer_lock_path(data_dir, "0xabc")).held(timeout=1):
        pass


# PostgreSQL: the signer's advisory lock on the store, which reaches processes on other hosts.

STORE_HOLDER = """
import sys, time
from pathlib import Path
from sqlalchemy import create_engine
from node.signer_lock import SignerLock, StoreSignerLock
engine = create_engine(sys.argv[2])
with SignerLock(Path(sys.argv[1]), StoreSignerLock(lambda: engine, sys.argv[3])).held(timeout=5):
    print("held", flush=True)
    time.sleep(600)
"""


def store_lock(path: Path, engine: Engine, address: str = ADDRESS) -> SignerLock:
    return SignerLock(path, StoreSignerLock(lambda: engine, address))


def taken_by_another_session(engine: Engine, address: str = ADDRESS) -> bool:
    """Whether another session could take the signer's advisory lock now (it keeps it only for this call)."""
    with engine.connect() as connection:
        key = signer_advisory_key(address)
        taken = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
        if taken:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        return taken


@pytest.fixture
def store_engine(postgres_store_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_store_url)
    yield engine
    engine.dispose()


def test_signer_advisory_key_is_a_stable_64_bit_key_of_the_address() -> None:
    key = signer_advisory_key("0xABC")
    assert key == signer_advisory_key("0xabc") != signer_advisory_key("0xabd")
    assert key == int.from_bytes(hashlib.sha256(b"alliance/signer-lock/0xabc").digest()[:8], "big", signed=True)
    assert -(1 << 63) <= key < 1 << 63


@pytest.mark.postgres
def test_a_write_waits_for_a_process_of_another_host_at_most_the_receipt_timeout_and_sends_nothing(
        tmp_path: Path, postgres_store_url: str, store_engine: Engine) -> None:
    """A process on another host (another data dir: its lock file is not this one's) holds the signer's advisory
    lock on the shared store: this one's write fails after the receipt timeout, nothing looked for or sent. Killed,
    the holder's session ends and the server drops its lock."""
    holder = subprocess.Popen([sys.executable, "-c", STORE_HOLDER, str(tmp_path / "host-b" / "signer.lock"),
                               postgres_store_url, ADDRESS], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        client = ChainClient("http://127.0.0.1:9", signer=Signer.generate(), receipt_timeout=0.5,
                             write_lock=store_lock(tmp_path / "host-a" / "signer.lock", store_engine))
        touched: list[str] = []
        started = time.monotonic()
        with pytest.raises(SignerBusy, match=r"another host\) has been sending a transaction of this signer for "
                                             rf"over 0.5s \(it holds the store's advisory lock "
                                             rf"{signer_advisory_key(ADDRESS)}\); nothing was sent"):
            client.send_once(lambda: touched.append("find"), lambda: touched.append("send"))
        assert 0.5 <= time.monotonic() - started < 5
        assert touched == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with store_lock(tmp_path / "host-a" / "signer.lock", store_engine).held(timeout=10):
        pass


@pytest.mark.postgres
def test_the_advisory_lock_is_held_once_per_thread_and_released_after(tmp_path: Path, store_engine: Engine) -> None:
    """Taken again inside a held section it is not waited for; another thread waits for it; once the outermost hold
    ends another session may take it (not left with a pooled connection)."""
    lock = store_lock(tmp_path / "signer.lock", store_engine)
    other_host = store_lock(tmp_path / "other-host.lock", store_engine)  # another data dir: no shared file

    def still_held_by_this_session() -> None:
        assert not taken_by_another_session(store_engine)

    def held_here_and_refused_to_another_host() -> None:
        still_held_by_this_session()
        with pytest.raises(SignerBusy), other_host.held(timeout=0.2):
            pass

    events = reentered_while_another_thread_waits(
        lock, while_reentered=held_here_and_refused_to_another_host, after_reentry=still_held_by_this_session)
    assert events == ["inner", "outer", "other"]
    assert taken_by_another_session(store_engine)
    assert taken_by_another_session(store_engine, "0xdef")  # another signer's key is another lock


@pytest.mark.postgres
def test_a_store_outage_while_taking_the_lock_is_the_store_unavailable_error_and_sends_nothing(
        tmp_path: Path, postgres_relay: PostgresRelay) -> None:
    engine = make_engine(postgres_relay.url)
    try:
        client = ChainClient("http://127.0.0.1:9", signer=Signer.generate(), receipt_timeout=5,
                             write_lock=store_lock(tmp_path / "signer.lock", engine))
        touched: list[str] = []
        postgres_relay.cut()
        with pytest.raises(STORE_LOST):
            client.send_once(lambda: touched.append("find"), lambda: touched.append("send"))
        assert touched == []
        postgres_relay.restore()
        with store_lock(tmp_path / "signer.lock", engine).held(timeout=5):  # nothing left held by the failure
            pass
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_store_lost_while_the_lock_is_held_ends_the_hold_without_an_error_and_leaves_no_claim(
        tmp_path: Path, postgres_relay: PostgresRelay, store_engine: Engine) -> None:
    """The server drops the lock with the lost session; releasing it fails, which is only logged: the write's own
    outcome is what the caller needs."""
    engine = make_engine(postgres_relay.url)
    try:
        with store_lock(tmp_path / "signer.lock", engine).held(timeout=5):
            postgres_relay.cut()
        deadline = time.monotonic() + 10
        while not taken_by_another_session(store_engine):  # the server notices the closed session at once, or soon
            assert time.monotonic() < deadline
            time.sleep(0.1)
        postgres_relay.restore()
        with store_lock(tmp_path / "signer.lock", engine).held(timeout=5):
            pass
    finally:
        engine.dispose()


def test_a_node_on_postgresql_takes_the_store_lock_too_and_one_on_sqlite_the_file_alone(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "node", database_url="postgresql+psycopg://u:p@127.0.0.1:9/db",
                             key_passphrase=TEST_PASSPHRASE)
    signer = Signer.generate()
    write_keystore(settings.signing_key_file, signer, TEST_PASSPHRASE)
    on_postgresql = NodeContext(settings)
    lock = on_postgresql.signing_chain.write_lock
    assert isinstance(lock, SignerLock) and isinstance(lock.store, StoreSignerLock)
    assert lock.store.key == signer_advisory_key(signer.address)
    on_sqlite = NodeContext(load_settings(tmp_path / "node", key_passphrase=TEST_PASSPHRASE))
    lock = on_sqlite.signing_chain.write_lock
    assert isinstance(lock, SignerLock) and lock.store is None
