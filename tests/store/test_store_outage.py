"""A PostgreSQL server that stops answering: the store says it is unavailable in bounded time, then recovers."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from node.store.db import CONNECT_TIMEOUT_S, Store, StoreUnavailable
from tests.store.outage import PostgresRelay

pytestmark = pytest.mark.postgres
T = TypeVar("T")


def within(seconds: float, action: Callable[[], T]) -> tuple[T | BaseException, float]:
    """`action()`'s result (or exception) and how long it took; fails the test if it takes longer than `seconds`
    (the thread is left behind: it hung)."""
    outcome: list[T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    return outcome[0], time.monotonic() - started


def test_store_of_a_server_that_stopped_answering_is_unavailable_within_the_connect_timeout(
        postgres_relay: PostgresRelay) -> None:
    """A server that accepts and never answers held every query, /health's ping included, for good."""
    store = Store(postgres_relay.url)
    try:
        store.migrate()
        postgres_relay.freeze()
        answer, _ = within(CONNECT_TIMEOUT_S + 5, store.ping)
        assert answer is False
        postgres_relay.restore()
        assert store.ping()
    finally:
        store.close()


def test_opening_a_store_on_a_server_that_never_answers_is_store_unavailable(postgres_relay: PostgresRelay) -> None:
    postgres_relay.freeze()
    store = Store(postgres_relay.url)
    try:
        refused, _ = within(CONNECT_TIMEOUT_S + 5, store.migrate)
        assert isinstance(refused, StoreUnavailable)
    finally:
        store.close()


def test_connect_timeout_of_the_url_is_kept(postgres_relay: PostgresRelay) -> None:
    postgres_relay.freeze()
    store = Store(postgres_relay.url + "&connect_timeout=1")
    try:
        answer, took = within(CONNECT_TIMEOUT_S, store.ping)
        assert answer is False and took < CONNECT_TIMEOUT_S - 1
    finally:
        store.close()


def test_store_connections_probe_a_silent_peer_with_tcp_keepalives(postgres_relay: PostgresRelay) -> None:
    """A host that dies without a reset (powered off, a partition) left a pooled connection waiting for the kernel's
    default two hours; keepalives end it in about a minute."""
    store = Store(postgres_relay.url)
    try:
        with store.engine.connect() as connection:
            fd = connection.connection.dbapi_connection.pgconn.socket  # type: ignore[union-attr]
            with socket.socket(fileno=os.dup(fd)) as sock:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)) == (30, 10, 3)
    finally:
        store.close()
