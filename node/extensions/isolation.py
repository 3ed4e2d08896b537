"""Calling extension code with a time limit, on daemon threads.

Python cannot kill a thread, so a hook that never returns keeps its worker: the caller stops waiting after
the timeout and moves on, and the stuck worker is replaced by a new one. The workers are daemon threads
(unlike `concurrent.futures`' pool, whose workers are joined at interpreter exit), so a hung extension
cannot stop the node from shutting down. Idle workers are reused: starting a thread per call would cost
more than most hooks do.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

_Task = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class CallTimedOut(Exception):
    """The call did not return within its time limit (it may still be running on its worker)."""


class DaemonPool:
    def __init__(self, name: str = "alliance-extension") -> None:
        self._name = name
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0
        self._hung: dict[str, int] = {}  # calls past their time limit still running on a worker, by owner

    def hung(self, owner: str) -> int:
        """How many calls made for `owner` timed out and are still running, each holding a worker thread."""
        with self._lock:
            return self._hung.get(owner, 0)

    def call(self, function: Callable[..., Any], *args: Any, timeout_s: float | None, owner: str = "") -> Any:
        """`function(*args)`'s result or exception; CallTimedOut after `timeout_s` (None or 0: in this thread). A call
        that timed out counts as hung for `owner` until it returns."""
        if not timeout_s:
            return function(*args)
        future: Future[Any] = Future()
        with self._lock:
            if self._idle:
                self._idle -= 1  # that idle worker takes this task
            else:
                self._started += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True).start()
        self._tasks.put((future, function, args))
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            if not future.cancel():  # running: its worker is held until it returns, however long that is
                with self._lock:
                    self._hung[owner] = self._hung.get(owner, 0) + 1
                future.add_done_callback(lambda _: self._returned(owner))  # at once if it returned meanwhile
            raise CallTimedOut(f"no answer within {timeout_s:g} s") from None

    def _returned(self, owner: str) -> None:
        with self._lock:
            self._hung[owner] -= 1

    def _work(self) -> None:
        while True:
            future, function, args = self._tasks.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as exc:  # handed to the caller, which decides what it means
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1
