"""`alliance init`: a bank's data dir with its signing key, its X25519 key, its config and store."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from node.chain.signer import Signer, keystore_address, write_keystore
from node.config import Network, Settings, write_config
from node.crypto.envelopes import dump_private_key, generate_encryption_keypair, public_key_bytes
from node.errors import Conflict, InvalidInput
from node.private_files import write_private_bytes
from node.store.db import Store, StoreNotFound
from node.text import printable_name

BANK_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,31}$")
MAX_BANK_NAME = 120


@dataclass(frozen=True)
class InitResult:
    data_dir: Path
    address: str
    encryption_public_key: bytes
    config_file: Path


def validate_bank_identity(bank_name: str, bank_code: str) -> tuple[str, str]:
    name = bank_name.strip()
    code = bank_code.strip().upper()
    if not name or len(name) > MAX_BANK_NAME:
        raise InvalidInput(f"bank name must be 1-{MAX_BANK_NAME} characters", code="invalid_bank_name")
    # The name goes into alliance.toml (where a lone surrogate is TOML no command can read again) and onto the chain
    # for good (where a control character garbles every member listing).
    printable_name(name, field="bank name")
    if not BANK_CODE.match(code):
        raise InvalidInput(f"bank code {bank_code!r} must be 2-32 of A-Z, 0-9, '_' or '-'",
                           code="invalid_bank_code")
    return name, code


def init_node(settings: Settings, *, bank_name: str, bank_code: str, passphrase: str) -> InitResult:
    """Create the data dir. Refuses to touch an existing key: losing it would lose the membership."""
    name, code = validate_bank_identity(bank_name, bank_code)
    _validate_passphrase(passphrase, settings.network)
    if settings.signing_key_file.exists() or settings.encryption_key_file.exists():
        raise Conflict(f"{settings.data_dir} already holds a bank's keys; refusing to overwrite them",
                       code="already_initialised")
    # The store first: a database that cannot be opened must leave no keys behind, or `init` could not be run
    # again (it refuses to overwrite keys) and the config would keep the database URL that failed.
    create_store(settings)
    signer = Signer.generate()
    encryption_key = generate_encryption_keypair()
    configured = settings.model_copy(update={"bank_name": name, "bank_code": code})
    written: list[Path] = []
    try:
        settings.keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.keys_dir, 0o700)
        write_private_bytes(settings.encryption_key_file, dump_private_key(encryption_key, passphrase), exclusive=True)
        written.append(settings.encryption_key_file)
        write_keystore(settings.signing_key_file, signer, passphrase)
        written.append(settings.signing_key_file)
        config_file = write_config(configured)
    except BaseException as exc:
        # Whatever stops init here (Ctrl-C in the keystore's scrypt, a full disk) takes back the keys it wrote: left
        # behind, they made `init` refuse to run again (it never overwrites keys) and every other command refuse the
        # data dir (no signing key, or no config), until someone deleted key files by hand.
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # the data dir is a file, or on a file system this user cannot write
            raise InvalidInput(f"cannot write the data dir {settings.data_dir}: {exc.strerror or exc}",
                               code="data_dir_unwritable") from None
        raise
    return InitResult(settings.data_dir, keystore_address(settings.signing_key_file),
                      public_key_bytes(encryption_key), config_file)


def _validate_passphrase(passphrase: str, network: Network) -> None:
    """Checked before anything is written: the keys are encrypted under it only after the store is made."""
    if not passphrase:
        # The dev network may use a short passphrase, not none: neither key file can be encrypted under it.
        raise InvalidInput("the key passphrase must not be empty", code="weak_passphrase")
    try:
        passphrase.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 in ALLIANCE_KEY_PASSPHRASE or at the prompt
        raise InvalidInput("the key passphrase holds bytes that are not UTF-8 text",
                           code="invalid_passphrase") from None
    if len(passphrase) < 12 and network != Network.dev:
        raise InvalidInput("the key passphrase must be at least 12 characters", code="weak_passphrase")


@dataclass(frozen=True)
class StoreCreation:
    where: str  # the database URL, its password masked
    created: bool  # False: a store was there already, and is left as it was


def create_store(settings: Settings) -> StoreCreation:
    """Make the node's store at its database URL, migrated and empty, for a node moving to a new database on
    purpose (the node itself refuses to start on a missing one)."""
    store = Store(settings.effective_database_url)
    where = store.engine.url.render_as_string()
    try:
        try:
            store.migrate(new_store=False)
            return StoreCreation(where, created=False)
        except StoreNotFound:
            store.migrate()
            return StoreCreation(where, created=True)
    finally:
        store.close()
