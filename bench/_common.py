"""Small helpers shared by the benchmarks: `--quick` parsing, the final JSON line, a private anvil.

Every benchmark prints readable lines, then exactly one JSON object as its LAST line (`emit`), so a
runner can parse the figures with `json.loads(output.splitlines()[-1])`.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from node.chain.devchain import DevChain, DevChainError
from node.chain.fraud_ledger import LedgerRecord
from node.runtime import NodeContext
from node.store.db import Store

# Another process may take the free port between the probe and anvil's bind; try a few ports.
_START_ATTEMPTS = 3


def parse_args(description: str | None, argv: Sequence[str] | None = None,
               configure: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Arguments of a benchmark: always `--quick`, plus whatever `configure` adds."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run that finishes in seconds")
    if configure is not None:
        configure(parser)
    return parser.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    """Print the machine-readable result: one JSON object, the last line of the output."""
    print(json.dumps(result, sort_keys=True), flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def postgres_schema(postgres_url: str, prefix: str) -> Iterator[str]:
    """A URL of the PostgreSQL database at `postgres_url` whose search path is a new, empty schema, dropped
    afterwards with everything in it."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def fresh_store(directory: Path, name: str, postgres_url: str | None = None) -> Iterator[Store]:
    """An empty, migrated store: a SQLite file in `directory`, or a new schema in the PostgreSQL database at
    `postgres_url`, dropped afterwards."""
    with ExitStack() as stack:
        url = (f"sqlite:///{directory / (name + '.db')}" if postgres_url is None
               else stack.enter_context(postgres_schema(postgres_url, f"bench_{name}")))
        store = Store(url)
        stack.callback(store.close)
        store.migrate()
        yield store


@contextmanager
def private_chain() -> Iterator[str]:
    """A throw-away anvil (the dev chain's settings) in a temporary directory; yields its RPC URL.

    Never the developer's dev chain nor a test session's: a benchmark must not share a chain whose
    load it does not control.
    """
    with tempfile.TemporaryDirectory(prefix="alliance-bench-") as directory:
        chain = DevChain(Path(directory) / "anvil", port=free_port())
        for attempt in range(_START_ATTEMPTS):
            try:
                chain.start()
                break
            except DevChainError:
                if attempt == _START_ATTEMPTS - 1:
                    raise
                chain = DevChain(Path(directory) / "anvil", port=free_port())
        try:
            yield chain.rpc_url
        finally:
            chain.stop()


def random_ledger_records(count: int, rng: random.Random) -> list[LedgerRecord]:
    """Well-formed FraudLedger records with random indicators and fields (identifier types 1..5)."""
    records = []
    for _ in range(count):
        valid_from = 1_740_000_000 + rng.randrange(10_000_000)
        records.append(LedgerRecord(rng.randbytes(32), rng.randrange(1, 6), rng.randrange(1, 10), rng.randrange(101),
                                    valid_from, valid_from + 365 * 86_400, rng.randbytes(32), rng.randbytes(32)))
    return records


BENCH_PASSPHRASE = "bench-passphrase-0001"


def member_node(rpc_url: str, directory: str | Path, bank_code: str, *, key_seed: int, **settings: Any) -> NodeContext:
    """A bank node in `directory`: keys, store, a one-member consortium on `rpc_url`, and an epoch-1 alliance key
    (stored directly: key distribution is not what the benchmarks measure)."""
    from node.chain.deployment import deploy_consortium, save_deployment
    from node.config import Network, load_settings
    from node.consortium import this_bank_as_founder
    from node.setup import init_node

    options = {"network": Network.local, "rpc_url": rpc_url, "key_passphrase": BENCH_PASSPHRASE,
               "deployment_file": Path(directory) / "deployment.json", **settings}
    init_node(load_settings(directory, **options), bank_name="Bench bank", bank_code=bank_code,
              passphrase=BENCH_PASSPHRASE)
    node = NodeContext(load_settings(directory, **options))
    deployment = deploy_consortium(node.signing_chain, network="bench", founders=[this_bank_as_founder(node)])
    save_deployment(deployment, node.settings.effective_deployment_file)
    node.keyring.store_key(1, random.Random(key_seed).randbytes(32), source="generated")
    return node
