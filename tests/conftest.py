"""Shared fixtures: a real anvil chain (started once per session), deployed contracts, stores.

Nothing here mocks the chain or the database. In CI (`CI=true`) a missing component fails the run
instead of skipping: `.ci/run` installs and starts everything.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from bench._common import postgres_schema
from node import runtime
from node.chain import signer as signer_module
from node.chain.client import ChainClient
from node.chain.deployment import Deployment, deploy_consortium, save_deployment
from node.chain.devchain import DevChain
from node.chain.registry import FoundingMember, MemberRole, RegistryClient
from node.chain.signer import Signer
from node.config import Network, Settings, load_settings, write_config
from node.consortium import this_bank_as_founder
from node.crypto.envelopes import public_key_bytes
from node.runtime import NodeContext
from node.setup import create_store, init_node
from node.store import bulk
from node.store.db import Store
from tests.store.outage import PostgresRelay

IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_PASSPHRASE = "test-passphrase-of-the-banks"

# The shell's node settings stay out of the tests: every test node also reads ALLIANCE_* from the environment, so
# one exported by an operator's shell (ALLIANCE_DEPLOYMENT_FILE, ALLIANCE_DATABASE_URL: docs/operations.md) had
# tests deploy their chain's contracts over that deployment record, or open that database. Test-only variables
# (ALLIANCE_TEST_POSTGRES_URL, ALLIANCE_ANVIL, ALLIANCE_SOLC) are no settings and stay.
NODE_SETTINGS_IN_ENVIRONMENT = frozenset(f"ALLIANCE_{name.upper()}" for name in Settings.model_fields)
for _name in NODE_SETTINGS_IN_ENVIRONMENT:
    os.environ.pop(_name, None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The scrypt cost the node writes keystores with, as imported (before the session fixture below lowers it to
# TEST_SCRYPT_N for the suite); tests/chain/test_keystore.py writes a keystore at it.
NODE_SCRYPT_N = signer_module.KEYSTORE_SCRYPT_N
TEST_SCRYPT_N = 2**10


@pytest.fixture(scope="session", autouse=True)
def cheap_keystore_scrypt() -> Iterator[None]:
    """Keystores written at scrypt N=2**10 instead of the node's 2**16: each node a test initialises writes one and
    opens it (two derivations of ~0.2 s), some four hundred nodes in the suite. The format, the passphrase check and
    every failure path are the same at any cost, which the keystore file names (the opener reads it from there)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(signer_module, "KEYSTORE_SCRYPT_N", TEST_SCRYPT_N)
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def decrypted_keystores_cached() -> Iterator[None]:
    """Nodes open their keystore with one scrypt derivation (~0.33 s); copies of one template keystore
    (`make_node`) are opened once per session. A wrong passphrase still fails: failures are not cached."""
    real = runtime.load_keystore
    opened: dict[tuple[bytes, str], Signer] = {}

    def load_keystore(path: Path, passphrase: str) -> Signer:
        try:
            key = (Path(path).read_bytes(), passphrase)
        except OSError:  # missing, or a directory: the real loader says so
            return real(path, passphrase)
        if key not in opened:
            opened[key] = real(path, passphrase)
        return opened[key]

    patch = pytest.MonkeyPatch()
    patch.setattr(runtime, "load_keystore", load_keystore)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    chain = DevChain(tmp_path_factory.mktemp("anvil"), port=free_port())
    chain.start()
    yield chain
    chain.stop()


# Block beneficiaries, one a test (0xc0... : apart from test_mirror_properties' branch coinbases, 1, 2, ...).
_TEST_COINBASES = (0xC0 << 152 | n for n in itertools.count(1))


@pytest.fixture
def rpc_url(anvil: DevChain) -> Iterator[str]:
    """The session chain, rolled back after each test so tests cannot see each other's writes.

    Each test's blocks name a beneficiary of their own, so no block of one test has the hash of a block of another.
    Without it they often had: the nodes' keys come from templates, so tests sending the same transactions from the
    same snapshot mined the same blocks (evm_revert sets anvil's clock back to the snapshot's block). anvil_reorg at
    such a block, after enough other tests on the worker, forked from a state without the contracts: the replacement
    batches were mined (status 1) to an address with no code and logged nothing (CI, 2 of 4 reorg parameters).
    """
    control = ChainClient(anvil.rpc_url)
    snapshot = control.rpc("evm_snapshot")
    control.rpc("anvil_setCoinbase", [f"0x{next(_TEST_COINBASES):040x}"])
    yield anvil.rpc_url
    control.rpc("evm_revert", [snapshot])


@dataclass
class Bank:
    name: str
    code: str
    signer: Signer
    client: ChainClient

    @property
    def address(self) -> str:
        return self.signer.address


def make_bank(rpc_url: str, name: str, code: str) -> Bank:
    signer = Signer.generate()
    return Bank(name, code, signer, ChainClient(rpc_url, signer=signer))


@dataclass
class Consortium:
    rpc_url: str
    deployment: Deployment
    banks: list[Bank]

    def registry(self, bank: Bank) -> RegistryClient:
        return RegistryClient(bank.client, self.deployment.address("AllianceRegistry"))


def deploy_test_consortium(rpc_url: str, founders: int = 3, **kwargs: int) -> Consortium:
    banks = [make_bank(rpc_url, f"Bank {chr(65 + i)}", f"BANK-{chr(65 + i)}") for i in range(founders)]
    deployment = deploy_consortium(
        banks[0].client,
        network="test",
        founders=[FoundingMember(b.address, MemberRole.member, b.name, b.code, bytes([i + 1]) * 32)
                  for i, b in enumerate(banks)],
        **kwargs,
    )
    return Consortium(rpc_url, deployment, banks)


@pytest.fixture
def consortium(rpc_url: str) -> Consortium:
    """Three founding member banks on a fresh deployment (quorum: more than half)."""
    return deploy_test_consortium(rpc_url)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "node-data"


def _postgres_admin_url() -> str | None:
    return os.environ.get("ALLIANCE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    url = _postgres_admin_url()
    reason = "ALLIANCE_TEST_POSTGRES_URL is not set"
    if url:
        try:
            engine = create_engine(url)
            with engine.connect():
                pass
            engine.dispose()
            return True
        except OperationalError as exc:
            reason = f"PostgreSQL at {url} is unreachable: {exc.orig}"
    if IN_CI:
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    pytest.skip(reason)


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path`, a file or a directory, read-only for every user, root included (`chattr +i`), for the time of the
    block."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        reason = f"chattr +i needs root and a file system with inode flags: {made.stderr.strip()}"
        if IN_CI:  # CI runs as root (.ci/run installs PostgreSQL with apt): nothing is skipped there
            pytest.fail(f"CI must run the read-only store tests: {reason}")
        pytest.skip(reason)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def interrupted_before_writing(store: Store, tables: set[str], interruption: Callable[[], object]) -> Iterator[None]:
    """Run `interruption` once, just before `store` next writes to one of `tables` or locks rows of one (SELECT ...
    FOR UPDATE): another process (with its own store) acting between this one's plain reads and its writes, the
    window of a lost update.

    `store` holds no write lock or row lock then, unless it took one on another table first in the same transaction.
    Bulk writes (`node.store.bulk.insert_rows`, a COPY on PostgreSQL that no SQLAlchemy event sees) count too.
    """
    names = "|".join(map(re.escape, tables))
    pattern = re.compile(rf"\s*(?:(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(?:{names})\b"
                         rf"|SELECT\b.*\bFROM\s+\"?(?:{names})\b.*\bFOR\s+UPDATE\b)", re.IGNORECASE | re.DOTALL)
    pending = [interruption]

    def interrupt() -> None:
        if pending:
            pending.pop()()

    def before_execute(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if pattern.match(statement):
            interrupt()

    def insert_rows(session: Session, table: Any, *args: Any) -> None:
        if session.get_bind() is store.engine and getattr(table, "__tablename__", None) in tables:
            interrupt()
        bulk.insert_rows(session, table, *args)

    event.listen(store.engine, "before_cursor_execute", before_execute)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for module in [m for name, m in sys.modules.items() if name.startswith("node.") and m is not bulk]:
                if getattr(module, "insert_rows", None) is bulk.insert_rows:
                    patch.setattr(module, "insert_rows", insert_rows)
            yield
    finally:
        event.remove(store.engine, "before_cursor_execute", before_execute)
    assert not pending, f"nothing was written to or locked in {', '.join(sorted(tables))}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for an empty store: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    request.getfixturevalue("postgres_available")
    with postgres_schema(_postgres_admin_url() or "", "t") as url:
        yield url


@pytest.fixture
def postgres_store_url(postgres_available: bool) -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema, for a test about PostgreSQL only."""
    with postgres_schema(_postgres_admin_url() or "", "t") as url:
        yield url


@pytest.fixture
def postgres_relay(postgres_available: bool) -> Iterator[PostgresRelay]:
    """A fresh PostgreSQL schema behind a relay the test can cut, freeze and restore (tests/store/outage.py)."""
    with postgres_schema(_postgres_admin_url() or "", "t") as url:
        relay = PostgresRelay(url)
        yield relay
        relay.close()


@dataclass
class LedgerNodes:
    """Bank nodes with their own data dirs and stores, founders of one deployment on the test chain."""

    rpc_url: str
    deployment_file: Path
    nodes: list[NodeContext]

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def admit(self, root: Path, code: str, role: MemberRole = MemberRole.member) -> NodeContext:
        """A new bank node, admitted by A's proposal and B's vote (2 of 3 founders)."""
        newcomer = make_node(root, self.rpc_url, self.deployment_file, f"Bank {code}", code)
        a, b = self.nodes[:2]
        outcome = a.registry(signing=True).propose_admission(newcomer.address, role, newcomer.settings.bank_name,
                                                             code, public_key_bytes(newcomer.encryption_key))
        assert b.registry(signing=True).vote(outcome.proposal_id).executed
        self.nodes.append(newcomer)  # closed with the others
        return newcomer


@pytest.fixture
def keyed_banks(ledger_nodes: LedgerNodes) -> list[NodeContext]:
    """Bank nodes A, B, C holding the epoch-1 alliance key, with A's mirror synced."""
    from node.ledger.indexer import indexer_for
    from node.ledger.key_distribution import sync_keys

    for node in ledger_nodes.nodes:
        sync_keys(node)  # A generates the epoch-1 key and sends it to B and C; they open it
    indexer_for(ledger_nodes.nodes[0]).sync()
    return ledger_nodes.nodes


def chain_texts(rpc_url: str) -> list[str]:
    """Every transaction input and every log (data and topics) on the chain, as lowercase hex text."""
    chain = ChainClient(rpc_url)
    seen = []
    for number in range(chain.block_number() + 1):
        block = chain.rpc("eth_getBlockByNumber", [hex(number), True])
        seen += [tx["input"].lower() for tx in block["transactions"]]
    logs = chain.rpc("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])
    seen += [(log["data"] + "".join(log["topics"])).lower() for log in logs]
    return seen


# A hook call's time limit in the nodes tests build: the node's 2 s default, on a machine running both test workers,
# their anvils and PostgreSQL, let a module's hook time out now and then and its application go to review instead of
# being approved. Tests of the time limit give their own.
TEST_EXTENSION_TIMEOUT_S = 30.0


# Data dirs made by `init_node` once per session, by (name, code): a test's node is a copy. Initialising costs
# ~0.65 s a node (two scrypt key derivations, the migrations) and most tests build three; every test still gets
# its own files and its own chain state (the chain is reverted after each test). `alliance init` itself is
# tested in tests/cli.
_NODE_TEMPLATES = tempfile.TemporaryDirectory(prefix="alliance-node-templates-")


def make_node(root: Path, rpc_url: str, deployment_file: Path, name: str, code: str,
              **overrides: object) -> NodeContext:
    """An initialised bank node (keys, config, SQLite store) pointed at the test chain."""
    data_dir = root / code.lower()
    options = {"network": Network.local, "rpc_url": rpc_url, "deployment_file": deployment_file,
               "key_passphrase": TEST_PASSPHRASE, "extension_timeout_s": TEST_EXTENSION_TIMEOUT_S, **overrides}
    if "database_url" in overrides:  # another store: initialise this node for real
        init_node(load_settings(data_dir, **options), bank_name=name, bank_code=code, passphrase=TEST_PASSPHRASE)
    else:
        template = Path(_NODE_TEMPLATES.name) / f"{code}-{name}"
        if not template.exists():
            init_node(load_settings(template, **options), bank_name=name, bank_code=code, passphrase=TEST_PASSPHRASE)
        shutil.copytree(template, data_dir)
        write_config(load_settings(data_dir, **options))  # the config init would write here, not the template's
    return NodeContext(load_settings(data_dir, **options))  # reloaded: init wrote the bank's name and code


def moved_to_store(node: NodeContext, store_url: str) -> NodeContext:
    """`node` (same data dir, same keys) on a new, empty store at `store_url`, made on purpose as `alliance store
    create` makes it: the node refuses to open a missing store by itself."""
    settings = node.settings.model_copy(update={"database_url": store_url})
    assert create_store(settings).created
    return NodeContext(settings)


@pytest.fixture
def ledger_nodes(rpc_url: str, tmp_path: Path) -> Iterator[LedgerNodes]:
    """Three bank nodes (A, B, C) founding a fresh consortium (key epoch 1 begins at deployment)."""
    deployment_file = tmp_path / "deployment.json"
    nodes = [make_node(tmp_path, rpc_url, deployment_file, f"Bank {c}", f"BANK-{c}") for c in "ABC"]
    founders = [this_bank_as_founder(node) for node in nodes]
    save_deployment(deploy_consortium(nodes[0].signing_chain, network="local", founders=founders),
                    deployment_file)
    group = LedgerNodes(rpc_url, deployment_file, nodes)
    yield group
    group.close()
