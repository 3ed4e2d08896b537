"""Running a node: the dev chain if configured, the demo consortium if asked, then the API."""

from __future__ import annotations

import copy
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from node.api.access_log import ACCESS_LOGGER
from node.api.app import create_app
from node.api_tls import check_tls_files, is_loopback, tls_files
from node.auth.apikeys import Role, create_api_key
from node.config import Network, load_settings
from node.consortium import DEMO_BANKS, ensure_demo_consortium
from node.errors import AllianceError
from node.extensions.manager import check_extension_names
from node.modules.policy import policy_for
from node.node_lock import node_lock
from node.private_files import write_private_text
from node.runtime import NodeContext, refuse_unfinished_replacement
from node.setup import init_node
from node.workers import node_workers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoKeys:
    path: Path
    tokens: dict[str, str]


def prepare_demo(node: NodeContext) -> NodeContext:
    """Initialise this data dir as demo bank A on the dev network if it is empty."""
    if not node.settings.signing_key_file.exists():
        settings = load_settings(node.settings.data_dir, network=Network.dev)
        name, code = DEMO_BANKS[0]
        init_node(settings, bank_name=name, bank_code=code, passphrase=settings.passphrase or "")
        node = NodeContext(load_settings(node.settings.data_dir))
    return node


def demo_api_keys(node: NodeContext) -> DemoKeys:
    """One key per role for the demo, written once to a file only the owner can read."""
    path = node.settings.data_dir / "demo" / "api-keys.txt"
    if path.exists():
        tokens = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return DemoKeys(path, tokens)
    with node.store.transaction() as session:
        tokens = {role.value: create_api_key(session, role, "demo").token for role in Role}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_text(path, "".join(f"{role}={token}\n" for role, token in tokens.items()))
    return DemoKeys(path, tokens)


def start_chain_if_dev(node: NodeContext) -> bool:
    """Start the dev chain unless it runs already; True if this process is to stop it at exit."""
    if node.settings.network != Network.dev:
        return False
    chain = node.dev_chain
    if chain.running_pid() is not None:
        if not chain.adopt_orphan():
            return False  # `alliance chain up` started it, or another node runs it: it outlives this one
        logger.warning("reusing the dev chain left running by a node process that was killed; it stops with this one")
        return True
    chain.start(owned=True)
    return True


def freeze_startup_heap() -> None:
    """Move everything loaded so far (modules, the app, settings) out of the garbage collector's reach.

    It lives for the whole process, and a large request (a 10,000-identifier check, a bulk report of 5,000)
    allocates enough objects to trigger full collections, which would otherwise walk all of it again each time:
    +25% batch-check throughput (bench/checks.py), +20% bulk intake (bench/ledger_publish.py).
    """
    gc.collect()
    gc.freeze()


class CannotListen(AllianceError):
    code = "cannot_listen"


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for every address `host` resolves to, as uvicorn would bind them itself.

    The node binds before it starts its chain and workers, so an address it cannot have (in use, not on this
    machine, not resolvable) is one readable error with nothing started, instead of uvicorn exiting the process
    after the workers run.
    """
    try:
        addresses = dict.fromkeys((family, address) for family, _, _, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))
    except (socket.gaierror, UnicodeError) as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: the host does not resolve ({exc})") from None
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # its IPv4 twin is bound separately
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets


class _NodeServer(uvicorn.Server):
    """uvicorn's server, returning once it has shut down on SIGTERM or SIGINT.

    uvicorn records the signal and raises it again after its shutdown; for SIGTERM (`kill`, `systemctl stop`,
    `docker stop`) that ended the process there, before the node stopped its workers after their current step,
    closed its store and stopped the dev chain it had started (which then ran on, still marked as its own).
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handling, without recording the signal to raise again: a second Ctrl-C forces the exit.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


# Not uvicorn's "trace", whose ASGI message log holds every request's path and query.
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


def log_config(log_level: LogLevel) -> dict[str, Any]:
    """uvicorn's logging set-up, with the node's access log (node.api.access_log) where uvicorn's own was: on
    stdout, in uvicorn's line format, at `log_level`."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["node_access"] = {**config["handlers"]["access"], "formatter": "default"}
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["node_access"], "level": log_level.upper(), "propagate": False}
    return config


def run_api(app: FastAPI, *, sockets: list[socket.socket], tls: tuple[Path, Path] | None = None,
            log_level: LogLevel = "info") -> None:
    """Serve `app` on bound `sockets` until interrupted, over TLS with `tls` (certificate, key), with the start-up
    heap frozen first (freeze_startup_heap)."""
    freeze_startup_heap()
    certfile, keyfile = tls if tls is not None else (None, None)
    # Sets up uvicorn's loggers; a TLS context is built from the files when the server starts. uvicorn's access log
    # is off: its lines hold the path and query as sent, a phone or ID number typed into the URL included.
    server = _NodeServer(uvicorn.Config(app, log_level=log_level, log_config=log_config(log_level), access_log=False,
                                        ssl_certfile=certfile, ssl_keyfile=keyfile))
    scheme = "https" if tls is not None else "http"
    for sock in sockets:  # uvicorn names the address only when it binds the socket itself
        host, port = sock.getsockname()[:2]
        logging.getLogger("uvicorn.error").info(
            "serving on %s://%s:%d (Ctrl-C to stop)", scheme, f"[{host}]" if ":" in host else host, port)
    server.run(sockets=sockets)


def serve(node: NodeContext, *, demo: bool, host: str | None = None, port: int | None = None) -> None:
    refuse_unfinished_replacement(node.settings)  # else every request and worker touching the vault failed one by one
    check_extension_names(node)  # before anything is bound or started
    policy_for(node)  # a credit policy file the modules cannot use, too
    tls = tls_files(node.settings)
    if tls is not None:
        check_tls_files(*tls)  # and the TLS files
    host = host or node.settings.api_host
    with node_lock(node.settings.data_dir, doing="start the node"):
        sockets = listening_sockets(host, port or node.settings.api_port)
        # Once bound: an address the node cannot have is one line, not a warning about serving it as well.
        if tls is None and not is_loopback(host):
            logger.warning("serving plain HTTP on %s: API keys cross the network in clear; set api_tls_certfile "
                           "and api_tls_keyfile, or put a TLS proxy in front of the node", host)
        try:
            _serve_on(node, sockets, demo=demo, tls=tls)
        finally:
            for sock in sockets:
                sock.close()


def _serve_on(node: NodeContext, sockets: list[socket.socket], *, demo: bool, tls: tuple[Path, Path] | None) -> None:
    if demo:
        node = prepare_demo(node)
    started_chain = start_chain_if_dev(node)
    try:
        if demo:
            ensure_demo_consortium(node)
            keys = demo_api_keys(node)
            logger.warning("demo API keys (one per role) are in %s", keys.path)
        node.store.refuse_if_unwritable()  # opened and migrated first, before accepting requests
        workers = node_workers(node)
        workers.start()
        try:
            run_api(create_app(node, workers=workers), sockets=sockets, tls=tls)
        finally:
            workers.stop()
    finally:
        node.close()
        if started_chain:
            node.dev_chain.stop_if_owned()
