"""The bank's signing key: an encrypted keystore file (Web3 Secret Storage v3) and local signing.

Signing is local (never `eth_sendTransaction` on a node that holds keys); with `coincurve`
installed eth-keys signs in C, which matters on the publishing hot path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.private_files import write_private_bytes

# The scrypt cost of a keystore written here (read back from the file when it is opened): 2**16, about 0.2 s each way
# on this project's machines, so a stolen keystore costs that much a guessed passphrase. Read at each write, not
# bound as a default, so that the test suite, which writes hundreds of keystores, can lower it (tests/conftest.py).
KEYSTORE_SCRYPT_N = 2**16


class KeystoreError(Exception):
    """The keystore is missing, corrupt, or the passphrase is wrong."""


class Signer:
    """Signs transactions with a key held in memory; the address is the bank's on-chain identity."""

    def __init__(self, account: LocalAccount) -> None:
        self._account = account

    @property
    def address(self) -> str:
        return str(self._account.address)

    def sign_transaction(self, transaction: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(transaction).raw_transaction)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Account.create())

    @classmethod
    def from_private_key(cls, private_key: bytes | str) -> Signer:
        return cls(Account.from_key(private_key))

    def encrypt(self, passphrase: str, *, scrypt_n: int | None = None) -> dict[str, Any]:
        cost = KEYSTORE_SCRYPT_N if scrypt_n is None else scrypt_n
        return dict(Account.encrypt(self._account.key, passphrase, kdf="scrypt", iterations=cost))


def write_keystore(path: Path, signer: Signer, passphrase: str) -> None:
    """Write the keystore readable by its owner only; refuse to overwrite an existing key."""
    if not passphrase:
        raise KeystoreError("a passphrase is required to encrypt the signing key")
    # Encrypted (a scrypt of a second or so) before the file exists, and the file removed if it cannot be written
    # whole: an interrupted run left an empty keystore that made the data dir look initialised yet unusable.
    keystore = json.dumps(signer.encrypt(passphrase))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_bytes(path, keystore.encode("utf-8"), exclusive=True)


def load_keystore(path: Path, passphrase: str) -> Signer:
    try:
        keystore = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeystoreError(f"no signing key at {path}; run `alliance init` first") from exc
    except ValueError as exc:  # not JSON, or not UTF-8 text
        raise KeystoreError(f"signing key file {path} is corrupt") from exc
    except OSError as exc:
        raise KeystoreError(f"signing key file {path} cannot be read: {exc.strerror or exc}") from exc
    try:
        return Signer(Account.from_key(Account.decrypt(keystore, passphrase)))
    except (KeyError, TypeError, AttributeError) as exc:  # JSON, but not a keystore: fields missing or mistyped
        raise KeystoreError(f"signing key file {path} is corrupt") from exc
    except ValueError as exc:
        raise KeystoreError(f"wrong passphrase for the signing key at {path}") from exc


def keystore_address(path: Path) -> str:
    """The address stored in clear in the keystore (no passphrase needed)."""
    try:
        return "0x" + str(json.loads(path.read_text())["address"]).removeprefix("0x")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError: not JSON, or not UTF-8 text
        raise KeystoreError(f"no readable signing key at {path}") from exc
