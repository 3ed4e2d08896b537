"""Replacing the node's X25519 encryption key, after a suspected compromise of its key file or for key hygiene.

That key does three jobs: members seal the alliance key of every epoch to its public key (on chain); the node's vault
key, which seals data at rest (alliance keys, the outbox's raw identifiers, applicants), is derived from it; and so
were the keys of the bank's own keyed hashes (report ids and their case-reference hashes, applicant fingerprints).
`replace_encryption_key` replaces it in four steps:

1. a new key is made and written beside the current one (`keys/encryption-key.next.pem`, under the same, proven
   passphrase), whole (written aside, then renamed), before anything is sealed under it;
2. every vault-sealed value in the store is sealed again under the new vault key, in one transaction. The keyed
   hashes' keys, derived from the old key, are kept in the store from then on (node.store.ledger_tables.LocalKey),
   sealed likewise: what was hashed under them (report ids, case-reference hashes on chain, velocity fingerprints)
   must keep matching what is hashed later. A value already sealed under the new key is left alone, so the step is
   simply done again after a crash;
3. the new key takes the old one's place: the old file is hard-linked to `keys/encryption-key.retired-<UTC
   time>.pem` first, then the new one is renamed over it, so `encryption-key.pem` is never missing and the store is
   never sealed under a key that is not on disk. The retired file opens store backups made before the replacement;
4. the new public key goes on chain (`setEncryptionKey`); each epoch's distributor then sends this member that
   epoch's key again, sealed to it (node.ledger.key_distribution). The node holds its keys meanwhile.

Each step is finished by running the command again, as `alliance key activate-signer` is (node.signer_rotation):
while `encryption-key.next.pem` is there, steps 2 and 3 are finished first, without the chain, and the node refuses to
use its encryption key (`NodeContext.encryption_key`), since the store may be sealed under the next key already. A run
that finds no next key but the chain holding another public key than the local one, one the chain never had (step 4
cut short, the chain down), only sends it. Any other run starts a new replacement, once the chain shows this bank as
an active member: a local key the chain had before (a keys directory restored from before a replacement) may be the
compromised one, and is replaced, never sent again.

The node must be stopped meanwhile: a running node keeps the old key in memory and would seal what it writes under it.
`alliance node start` holds the data dir's node lock while it runs (node.node_lock), and the replacement takes it
first, so it refuses to run beside a node of the same data dir (not beside a node of another data dir sharing this
PostgreSQL store: stop every node of the bank first).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from node.chain.errors import ChainUnavailable
from node.chain.registry import Member, MemberStatus
from node.config import Settings
from node.crypto.envelopes import (
    EnvelopeError,
    dump_private_key,
    generate_encryption_keypair,
    load_private_key,
    public_key_bytes,
)
from node.crypto.vault import LocalVault, VaultError, derive_local_key, derive_vault_key
from node.errors import Conflict
from node.key_users_lock import encryption_key_alone
from node.ledger.key_distribution import EncryptionKeyNotOnChain, NotAMember
from node.ledger.keyring import alliance_key_ad, local_key_ad
from node.ledger.reports import REPORT_ID_PURPOSE, sealed_identifier_ad
from node.modules.credit_platform import sealed_applicant_ad
from node.modules.fingerprints import PURPOSE as FINGERPRINT_PURPOSE
from node.node_lock import node_lock
from node.private_files import replace_durably, write_private_bytes
from node.runtime import NodeContext, WrongPassphrase
from node.store.application_tables import LoanApplication
from node.store.db import Store
from node.store.ledger_tables import AllianceKey, LocalKey, OutboxRecord

# The keys of the bank's own keyed hashes, which must outlive the X25519 key they were first derived from.
LOCAL_KEY_PURPOSES = (REPORT_ID_PURPOSE, FINGERPRINT_PURPOSE)
RESEAL_PAGE = 1_000  # rows read and written back at a time, by primary key


class PublicKeyNotOnChain(EncryptionKeyNotOnChain):
    """Steps 1-3 are done (the node uses the new key), the chain did not take the new public key yet."""


@dataclass(frozen=True)
class ReplacedEncryptionKey:
    public_key: bytes  # the new X25519 public key, now on chain
    old_public_key: bytes | None  # None when this run only sent the public key (an earlier run replaced the files)
    resealed: int  # values this run sealed again under the new vault key
    retired_path: Path | None  # the old key file, kept for store backups made before the replacement


@dataclass(frozen=True)
class _Sealed:
    """One column of vault-sealed values: its table's primary key, and the associated data of a row."""

    model: type[Any]
    key: InstrumentedAttribute[Any]
    column: InstrumentedAttribute[Any]
    context: tuple[InstrumentedAttribute[Any], ...]
    associated_data: Callable[..., bytes]


SEALED_COLUMNS = (
    _Sealed(AllianceKey, AllianceKey.epoch, AllianceKey.sealed_key, (AllianceKey.epoch,), alliance_key_ad),
    _Sealed(OutboxRecord, OutboxRecord.id, OutboxRecord.sealed_identifier,
            (OutboxRecord.report_id, OutboxRecord.position), sealed_identifier_ad),
    _Sealed(LoanApplication, LoanApplication.application_id, LoanApplication.sealed_applicant,
            (LoanApplication.application_id,), sealed_applicant_ad),
    _Sealed(LocalKey, LocalKey.purpose, LocalKey.sealed_key, (LocalKey.purpose,), local_key_ad),
)


def replace_encryption_key(node: NodeContext) -> ReplacedEncryptionKey:
    """Replace the node's X25519 key, or finish a replacement cut short (see the module docstring); NodeRunning
    while `alliance node start` runs on this data dir."""
    with node_lock(node.settings.data_dir, doing="replace the encryption key"), \
            encryption_key_alone(node.settings.data_dir):
        return _replace(node)


def _replace(node: NodeContext) -> ReplacedEncryptionKey:
    settings = node.settings
    old_key = _load(settings.encryption_key_file, node.passphrase)  # the passphrase is proven before anything
    pending = settings.next_encryption_key_file
    if not pending.exists():
        if _publication_pending(node, public_key_bytes(old_key)):  # step 4 of an earlier run did not reach the chain
            _publish(node, old_key)
            return ReplacedEncryptionKey(public_key_bytes(old_key), None, 0, None)
        _write_next_key(pending, node.passphrase)  # step 1
    new_key = _load(pending, node.passphrase)
    resealed = reseal_store(node.store, old_key, new_key)  # step 2
    retired = _switch_key_files(settings)  # step 3
    _publish(node, new_key)  # step 4
    return ReplacedEncryptionKey(public_key_bytes(new_key), public_key_bytes(old_key), resealed, retired)


def reseal_restored_store(node: NodeContext) -> Path | None:
    """Seal a store restored from a backup made before a replacement (`alliance store restore`) again under the current
    key, opened with the retired key kept for it; that key's file, or None if the store opens under the current key
    (or holds nothing sealed). Such a store opened under no key the node uses: every command that read it failed with
    `vault_mismatch`, the retired key beside the current one unused. One the retired keys do not open either
    (another node's store, its key deleted) is left as it is, VaultError."""
    retired_keys = sorted(node.settings.keys_dir.glob("encryption-key.retired-*.pem"), reverse=True)  # newest first
    if not retired_keys:  # never replaced: the store is the current key's or none of this node's, and no passphrase
        return None
    with node_lock(node.settings.data_dir, doing="restore the store"), \
            encryption_key_alone(node.settings.data_dir):
        current = _load(node.settings.encryption_key_file, node.passphrase)
        sample = _first_sealed_value(node.store)
        if sample is None or _opens(current, sample):
            return None
        for path in retired_keys:
            retired = _load(path, node.passphrase)
            if _opens(retired, sample):
                reseal_store(node.store, retired, current)
                return path
    raise VaultError(f"the restored store's secrets open under neither {node.settings.encryption_key_file.name} nor "
                     f"a retired key in {node.settings.keys_dir}: it is another node's store, or the key it was "
                     "sealed under was deleted")


def _first_sealed_value(store: Store) -> tuple[bytes, bytes] | None:
    """One vault-sealed value of the store and its associated data; None if it holds none."""
    with store.session() as session:
        for sealed in SEALED_COLUMNS:
            row = session.execute(select(sealed.column, *sealed.context)
                                  .where(sealed.column.is_not(None), func.length(sealed.column) > 0)
                                  .order_by(sealed.key).limit(1)).first()
            if row is not None:
                value, *context = row
                return bytes(value), sealed.associated_data(*context)
    return None


def _opens(key: X25519PrivateKey, sample: tuple[bytes, bytes]) -> bool:
    value, associated_data = sample
    try:
        LocalVault(derive_vault_key(key)).decrypt(value, associated_data=associated_data)
    except VaultError:
        return False
    return True


def _load(path: Path, passphrase: str) -> X25519PrivateKey:
    try:
        return load_private_key(path.read_bytes(), passphrase)
    except FileNotFoundError:
        raise Conflict(f"no encryption key at {path}", code="encryption_key_missing") from None
    except EnvelopeError:
        raise WrongPassphrase(f"wrong passphrase for {path} (or the file is damaged)") from None


def _publication_pending(node: NodeContext, local: bytes) -> bool:
    """Whether the local key is one a replacement put in place and the chain never had: only that one is sent alone.

    A local key the chain had for this member before and was replaced (a keys directory restored from a backup older
    than a replacement) is never sent again, since it may be the compromised one: it is replaced like any other.
    """
    member = _own_member(node)
    if member.encryption_key == local:
        return False
    return not any(change.member_id == member.member_id and change.key == local
                   for change in node.registry().encryption_keys_set())


def _own_member(node: NodeContext) -> Member:
    member_id = node.member_id
    if member_id == 0:
        raise NotAMember(f"{node.address} is not a member of the alliance: the chain must have this bank before its "
                         "encryption key can be replaced", code="not_a_member")
    member = node.registry().member(member_id)
    if member.status != MemberStatus.active:
        raise Conflict(f"member {member_id} is {member.status.name}: only an active member can set its encryption "
                       "key on chain", code="member_not_active")
    return member


def _write_next_key(path: Path, passphrase: str) -> None:
    """The new key, whole or not at all: written aside and renamed, so a crash never leaves half a key file."""
    write_private_bytes(path, dump_private_key(generate_encryption_keypair(), passphrase))


def reseal_store(store: Store, old_key: X25519PrivateKey, new_key: X25519PrivateKey) -> int:
    """Seal every vault-sealed value under `new_key`'s vault key, in one transaction; the number sealed again.

    Values already under the new key are left alone (a run after a crash). One that opens under neither key stops
    the step with nothing changed: it belongs to no key this node has.
    """
    old, new = LocalVault(derive_vault_key(old_key)), LocalVault(derive_vault_key(new_key))
    with store.transaction() as session:
        _keep_local_keys(session, old_key, new)
        return sum(_reseal_column(session, sealed, old, new) for sealed in SEALED_COLUMNS)


def _keep_local_keys(session: Session, old_key: X25519PrivateKey, new: LocalVault) -> None:
    """The keyed hashes' keys, derived from the old key, kept from the first replacement on (later ones re-seal
    the kept ones: deriving from a newer key would give other keys)."""
    kept = set(session.scalars(select(LocalKey.purpose)))
    for purpose in LOCAL_KEY_PURPOSES:
        name = purpose.decode()
        if name not in kept:
            key = derive_local_key(old_key, purpose)
            session.add(LocalKey(purpose=name, sealed_key=new.encrypt(key, associated_data=local_key_ad(name))))
    session.flush()


def _reseal_column(session: Session, sealed: _Sealed, old: LocalVault, new: LocalVault) -> int:
    count, after = 0, None
    while True:
        query = select(sealed.key, sealed.column, *sealed.context).where(sealed.column.is_not(None))
        if after is not None:
            query = query.where(sealed.key > after)
        rows = session.execute(query.order_by(sealed.key).limit(RESEAL_PAGE)).all()
        if not rows:
            return count
        changes = []
        for key, value, *context in rows:
            resealed = _resealed(bytes(value), sealed.associated_data(*context), old, new, sealed, key)
            if resealed is not None:
                changes.append({sealed.key.key: key, sealed.column.key: resealed})
        if changes:
            session.execute(update(sealed.model), changes)
        count += len(changes)
        after = rows[-1][0]


def _resealed(value: bytes, associated_data: bytes, old: LocalVault, new: LocalVault, sealed: _Sealed,
              key: object) -> bytes | None:
    """`value` sealed under the new vault key; None if it is already (or holds nothing: an erased value)."""
    if not value:
        return None
    with suppress(VaultError):
        new.decrypt(value, associated_data=associated_data)
        return None
    try:
        plain = old.decrypt(value, associated_data=associated_data)
    except VaultError:
        raise VaultError(f"{sealed.model.__tablename__} {key}: the sealed value opens under neither the current nor "
                         "the new encryption key; nothing was changed") from None
    return new.encrypt(plain, associated_data=associated_data)


def _switch_key_files(settings: Settings) -> Path:
    """Put the next key in place of the current one, keeping the current one as a retired file; its path."""
    current, pending = settings.encryption_key_file, settings.next_encryption_key_file
    retired = _retired_link_of(current) or _link_retired(current)  # the link made by a run cut short before the rename
    replace_durably(pending, current)
    return retired


def _link_retired(current: Path) -> Path:
    stamp, attempt = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), 1
    while True:
        retired = current.parent / f"encryption-key.retired-{stamp}{'' if attempt == 1 else f'-{attempt}'}.pem"
        try:
            os.link(current, retired)
        except FileExistsError:  # another replacement within the same second
            attempt += 1
        else:
            return retired


def _retired_link_of(current: Path) -> Path | None:
    for path in sorted(current.parent.glob("encryption-key.retired-*.pem")):
        if path.samefile(current):
            return path
    return None


def _publish(node: NodeContext, key: X25519PrivateKey) -> None:
    public = public_key_bytes(key)
    try:
        _own_member(node)
        node.registry(signing=True).set_encryption_key(public)
    except ChainUnavailable as exc:
        raise PublicKeyNotOnChain(
            f"the node uses its new encryption key; the chain did not take its public key yet ({exc}): run "
            "`alliance key replace-encryption-key` again once the chain answers") from None

