"""The signing keystore: the scrypt cost it is written with, which the suite lowers for speed (tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.chain import signer as signer_module
from node.chain.signer import KeystoreError, Signer, load_keystore, write_keystore
from tests.conftest import NODE_SCRYPT_N, TEST_SCRYPT_N


def test_the_node_writes_keystores_at_the_production_scrypt_cost(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite's session fixture lowered the module's cost; the value the module was imported with is the node's.
    monkeypatch.setattr(signer_module, "KEYSTORE_SCRYPT_N", NODE_SCRYPT_N)
    signer = Signer.generate()
    path = tmp_path / "signing-key.json"
    write_keystore(path, signer, "a passphrase")
    assert json.loads(path.read_text())["crypto"]["kdfparams"]["n"] == 2**16
    assert load_keystore(path, "a passphrase").address == signer.address


def test_a_keystore_at_the_suite_cost_still_refuses_a_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.json"
    write_keystore(path, Signer.generate(), "right")
    assert json.loads(path.read_text())["crypto"]["kdfparams"]["n"] == TEST_SCRYPT_N
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_keystore(path, "wrong")
