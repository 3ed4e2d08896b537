"""Running a node: the dev chain if configured, the demo consortium if asked, then the API."""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.config import Network, load_settings
from node.consortium import DEMO_BANKS, ensure_demo_consortium
from node.runtime import NodeContext
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{role}={token}\n" for role, token in tokens.items()))
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


def run_api(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve `app` until interrupted, with the start-up heap frozen first (freeze_startup_heap)."""
    freeze_startup_heap()
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def serve(node: NodeContext, *, demo: bool, host: str | None = None, port: int | None = None) -> None:
    if demo:
        node = prepare_demo(node)
    started_chain = start_chain_if_dev(node)
    try:
        if demo:
            ensure_demo_consortium(node)
            keys = demo_api_keys(node)
            logger.warning("demo API keys (one per role) are in %s", keys.path)
        node.store  # noqa: B018 - open and migrate the store before accepting requests
        workers = node_workers(node)
        workers.start()
        try:
            run_api(create_app(node, workers=workers), host=host or node.settings.api_host,
                    port=port or node.settings.api_port)
        finally:
            workers.stop()
    finally:
        node.close()
        if started_chain:
            node.dev_chain.stop()
