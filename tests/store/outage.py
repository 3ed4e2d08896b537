"""A PostgreSQL server that can go away and come back: a TCP relay in front of the real test server.

`cut()` closes every relayed connection and stops accepting new ones, as a stopped or unreachable server looks
to the node (connection refused, open connections reset); `freeze()` accepts connections and never answers, as a
server behind a dropped route or a hung host does; `restore()` relays again on the same port. The database behind
it is the real one, untouched, so nothing about the node's SQL is simulated.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from urllib.parse import urlsplit, urlunsplit


class PostgresRelay:
    def __init__(self, url: str) -> None:
        """`url`: the real server's SQLAlchemy URL; `self.url` is the same one through the relay."""
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._frozen = False
        self.port = self._listen(0)
        user = parts.netloc.rsplit("@", 1)[0]
        self.url = urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))

    def cut(self) -> None:
        """The server goes away: connections reset, new ones refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [s for s in (listener,) if s is not None] + sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def freeze(self) -> None:
        """The server stops answering: connections reset, new ones accepted but never answered."""
        self.cut()
        self._frozen = True
        self._listen(self.port)

    def restore(self) -> None:
        """The server is back on the same address."""
        if self._frozen:
            self.cut()
            self._frozen = False
        self._listen(self.port)

    def close(self) -> None:
        self.cut()

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if self._frozen:
                with self._lock:
                    self._sockets.append(client)
                continue
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
