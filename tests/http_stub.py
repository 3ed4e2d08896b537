"""A local HTTP server for tests that need an endpoint behaving as no real one does on demand (a proxy's login page,
an endpoint too slow to answer, a webhook receiver, a relay in front of the test chain)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the server's access lines out of the test output."""

    def log_message(self, *_args: object) -> None:
        pass


class _QuietServer(HTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer was written (a command that gave up on a failed check) is no
        # fault of the test; the default printed its traceback on stderr, into the output of the command tested.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _QuietThreadingServer(ThreadingMixIn, _QuietServer):
    daemon_threads = True


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], *, threaded: bool = False) -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a server on a free port handling requests with `handler` (each on a thread of its
    own if `threaded`), stopped and closed on exit."""
    server = (_QuietThreadingServer if threaded else _QuietServer)(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
