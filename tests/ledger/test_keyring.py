import os
from pathlib import Path

import pytest

from node.crypto.vault import LocalVault
from node.errors import Conflict
from node.ledger.keyring import KeyRing, NoAllianceKey
from node.store.db import Store


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
