import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from node.crypto.vault import LocalVault
from node.errors import Conflict
from node.ledger.keyring import KeyRing, NoAllianceKey
from node.store.db import Store
from tests.store.outage import PostgresRelay


@pytest.fixture
def keyring(store_url: str) -> KeyRing:
    store = Store(store_url)
    store.migrate()
    return KeyRing(store, LocalVault(LocalVault.generate_key()))


def test_current_key_is_newest_epoch(keyring: KeyRing) -> None:
    first, second = os.urandom(32), os.urandom(32)
    assert keyring.store_key(1, first, source="envelope")
    assert keyring.store_key(2, second, source="generated")
    assert keyring.current() == (2, second)
    assert keyring.keys() == {1: first, 2: second}


def test_store_key_is_idempotent_and_refuses_a_different_key(keyring: KeyRing) -> None:
    key = os.urandom(32)
    assert keyring.store_key(1, key, source="envelope")
    assert not keyring.store_key(1, key, source="envelope")
    with pytest.raises(Conflict, match="different alliance key"):
        keyring.store_key(1, os.urandom(32), source="envelope")
    assert keyring.key(1) == key


class InterruptedVault(LocalVault):
    """A vault that, before its next encryption, runs `interruption`: another process storing the same epoch
    after this one found it absent (the node's key worker and `alliance key sync` opening one envelope)."""

    interruption: Callable[[], object] | None = None

    def encrypt(self, plaintext: bytes, *, associated_data: bytes) -> bytes:
        interruption, self.interruption = self.interruption, None
        if interruption is not None:
            interruption()
        return super().encrypt(plaintext, associated_data=associated_data)


@pytest.mark.parametrize("same_key", [True, False])
def test_store_key_when_another_process_stores_the_epoch_first(store_url: str, same_key: bool) -> None:
    vault_key = LocalVault.generate_key()
    worker_store, cli_store = Store(store_url), Store(store_url)
    worker_store.migrate()
    vault = InterruptedVault(vault_key)
    worker, cli = KeyRing(worker_store, vault), KeyRing(cli_store, LocalVault(vault_key))
    theirs = os.urandom(32)
    mine = theirs if same_key else os.urandom(32)
    vault.interruption = lambda: cli.store_key(1, theirs, source="generated")
    try:
        if same_key:
            assert not worker.store_key(1, mine, source="envelope")
        else:
            with pytest.raises(Conflict, match="different alliance key"):
                worker.store_key(1, mine, source="generated")
        assert worker.key(1) == theirs and KeyRing(worker_store, LocalVault(vault_key)).keys() == {1: theirs}
    finally:
        worker_store.close()
        cli_store.close()


def test_current_key_without_keys_raises(keyring: KeyRing) -> None:
    with pytest.raises(NoAllianceKey):
        keyring.current()
    with pytest.raises(NoAllianceKey):
        keyring.key(3)


def test_keys_are_encrypted_at_rest(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    store.migrate()
    key = os.urandom(32)
    KeyRing(store, LocalVault(LocalVault.generate_key())).store_key(1, key, source="generated")
    store.close()
    assert key not in (tmp_path / "k.db").read_bytes()
    assert not any(key in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


@pytest.mark.postgres
def test_keys_read_while_the_store_is_down_are_read_again_once_it_is_back(postgres_relay: PostgresRelay) -> None:
    """A failed read counted as a refresh: for two seconds after the store came back, a node holding a key (stored
    by its key worker, not yet read here) answered that it held none (no_alliance_key to reports), and a key pass
    in that window warned that this node had lost the key it generated."""
    store = Store(postgres_relay.url)
    store.migrate()
    vault = LocalVault(LocalVault.generate_key())
    key = os.urandom(32)
    try:
        KeyRing(store, vault).store_key(1, key, source="generated")
        keyring = KeyRing(store, vault)
        postgres_relay.cut()
        with pytest.raises(OperationalError):
            keyring.current()
        postgres_relay.restore()
        assert keyring.current() == (1, key)
    finally:
        store.close()
