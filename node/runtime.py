"""The node's runtime context: settings plus lazily opened store, chain client and contracts.

The CLI and the API both build one `NodeContext` and go through it; nothing else wires parts up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import make_url

from node.chain.client import ChainClient
from node.chain.deployment import Deployment, load_deployment
from node.chain.devchain import DevChain
from node.chain.errors import ChainError
from node.chain.fraud_ledger import FraudLedgerClient
from node.chain.registry import MemberRole, RegistryClient
from node.chain.signer import KeystoreError, Signer, keystore_address, load_keystore
from node.config import Network, Settings
from node.crypto.envelopes import EnvelopeError, load_private_key
from node.crypto.vault import LocalVault, derive_local_key, derive_vault_key
from node.errors import AllianceError, Conflict, InvalidInput, NotInitialised
from node.key_users_lock import hold_encryption_key
from node.ledger.keyring import KeyRing, stored_local_key
from node.ledger.publisher import Publisher
from node.ledger.reports import REPORT_ID_PURPOSE, ReportIntake
from node.signer_lock import SignerLock, StoreSignerLock, signer_lock_path
from node.signer_switch import (
    KeyFileIdentity,
    SigningKeyUnusable,
    activated_over,
    clear_unusable,
    key_file_identity,
    named_address,
    note_unusable,
    unusable_signing_key,
)
from node.store.db import Store

logger = logging.getLogger(__name__)


class WrongPassphrase(AllianceError):
    code = "wrong_passphrase"
    http_status = 401


def refuse_unfinished_replacement(settings: Settings) -> None:
    """Refuse to use the encryption key while a replacement of it is under way (node.encryption_key_replacement):
    the store may be sealed under the next key already, so the current one must not seal or open anything until the
    replacement has finished (which needs no chain for that)."""
    pending = settings.next_encryption_key_file
    if pending.exists():
        raise Conflict(f"a replacement of the encryption key is under way ({pending} is there): run `alliance key "
                       "replace-encryption-key` to finish it", code="encryption_key_replacement_unfinished")


# How long a node that could not learn its role from the chain accepts reports before it asks again: a report must not
# wait for a chain that does not answer at each request.
ROLE_RETRY_S = 30.0


class NodeContext:
    def __init__(self, settings: Settings, *, ask_passphrase: Callable[[], str] | None = None) -> None:
        """`ask_passphrase` is called once, only when a key must be unlocked and no passphrase is set."""
        self.settings = settings
        self._ask_passphrase = ask_passphrase
        self._member_id = 0
        self._role: MemberRole | None = None
        self._role_asked_at = -ROLE_RETRY_S
        self._local_keys: dict[bytes, bytes] = {}
        # The signing key and what is made with it, replaced together when an activation is taken up.
        self._signing = threading.RLock()
        self._signer: Signer | None = None
        self._signer_file: KeyFileIdentity | None = None  # of the key file `_signer` was read from (or did not open)
        self._signer_unusable: str | None = None  # why the key an activation put in place does not open
        self._signing_chain: ChainClient | None = None
        self._publisher: Publisher | None = None

    @cached_property
    def passphrase(self) -> str:
        passphrase = self.settings.passphrase
        if passphrase is None and self._ask_passphrase is not None:
            passphrase = self._ask_passphrase()
        if not passphrase:
            raise InvalidInput("set ALLIANCE_KEY_PASSPHRASE to unlock the bank's keys", code="passphrase_required")
        return passphrase

    @cached_property
    def store(self) -> Store:
        store = Store(self.settings.effective_database_url)
        # `alliance init` makes the store before the keys, so a node with keys whose store is missing has been
        # pointed elsewhere: refused (StoreNotFound), unless made on purpose with `alliance store create`.
        store.migrate(new_store=not self.settings.signing_key_file.exists())
        return store

    @property
    def dev_chain(self) -> DevChain:
        return DevChain(self.settings.chain_state_dir, port=self.settings.dev_chain_port,
                        chain_id=self.settings.effective_chain_id, hardfork=self.settings.profile.hardfork,
                        persisted_states=self.settings.dev_chain_history_blocks)

    @cached_property
    def chain(self) -> ChainClient:
        """A read-only client; `signing_chain` adds the bank's key."""
        return ChainClient(self.settings.effective_rpc_url, request_timeout=self.settings.request_timeout_s,
                           gas_price=self.settings.profile.gas_price)

    @property
    def signer(self) -> Signer:
        """The bank's signing key; the one `alliance key activate-signer` put in place since it was loaded, once that
        activation is finished (node.signer_switch). SigningKeyUnusable while that key does not open."""
        with self._signing:
            self._follow_activation()
            if self._signer_unusable is not None:
                raise SigningKeyUnusable(self._signer_unusable)
            if self._signer is None:
                identity = key_file_identity(self.settings.signing_key_file)  # before the read: a later file is seen
                self._signer = self._load_signer()
                self._signer_file = identity
                note = unusable_signing_key(self.settings)
                if note is not None and note.identity == identity:  # a node restarted with the passphrase it lacked
                    clear_unusable(self.settings)
            return self._signer

    def _load_signer(self) -> Signer:
        try:
            return load_keystore(self.settings.signing_key_file, self.passphrase)
        except KeystoreError as exc:
            if "wrong passphrase" in str(exc):
                raise WrongPassphrase(str(exc)) from exc
            raise NotInitialised(str(exc)) from exc

    def _follow_activation(self) -> None:
        """Take up the key an activation put in place of the loaded one; one `stat` while the key file is unchanged."""
        if self._signer is None and self._signer_unusable is None:
            return  # nothing loaded yet: the first use loads the file as it is
        identity = key_file_identity(self.settings.signing_key_file)
        if identity == self._signer_file:
            return
        current = named_address(self.settings.signing_key_file)
        if self._signer is not None and not activated_over(self.settings, self._signer.address, current):
            self._signer_file = identity  # said once for this file; an activation over it is a change again
            if current is None or current.lower() != self._signer.address.lower():
                logger.warning("%s was replaced, not by `alliance key activate-signer` (the key it held is not kept "
                               "as retired): this node keeps signing as %s until it is restarted",
                               self.settings.signing_key_file, self._signer.address)
            return
        self._switch_signer(identity, current)

    def _switch_signer(self, identity: KeyFileIdentity | None, current: str | None) -> None:
        # Dropped before the new key is opened: if it does not open, nothing is signed with the one the chain
        # rotated away from. The client and the publisher are made again for the new key, with its own nonce count
        # and its own signer lock (the one every other process signing with that key takes).
        old = self._signer.address if self._signer is not None else None
        self._signer = self._signing_chain = self._publisher = None
        self._signer_file = identity
        try:
            self._signer = self._load_signer()
        except AllianceError as exc:
            self._signer_unusable = (f"the signing key put in place by `alliance key activate-signer` "
                                     f"({current or 'no address'}) does not open: {exc}; nothing is signed (reports "
                                     "stay queued) until a key file that opens with the node's passphrase is put "
                                     "there")
            logger.error("%s", self._signer_unusable)
            note_unusable(self.settings, identity, current, str(exc))
            return
        self._signer_unusable = None
        clear_unusable(self.settings)
        logger.warning("signing key replaced by `alliance key activate-signer`: this node now signs as %s%s",
                       self._signer.address, f" (was {old})" if old else "")

    @property
    def signing_chain(self) -> ChainClient:
        with self._signing:  # two threads starting at once share one client, so one nonce count
            signer = self.signer
            if self._signing_chain is None:
                self._signing_chain = self._signing_client(signer)
            return self._signing_chain

    def _signing_client(self, signer: Signer) -> ChainClient:
        # The lock is keyed by the signer's address: every process of this node signing with this key shares it. On
        # PostgreSQL the store's advisory lock reaches the processes on other hosts too (API replicas on one store).
        address = signer.address
        on_postgresql = make_url(self.settings.effective_database_url).get_backend_name() == "postgresql"
        lock = SignerLock(signer_lock_path(self.settings.data_dir, address),
                          StoreSignerLock(lambda: self.store.engine, address) if on_postgresql else None)
        return ChainClient(self.settings.effective_rpc_url, signer=signer,
                           request_timeout=self.settings.request_timeout_s, gas_price=self.settings.profile.gas_price,
                           write_lock=lock)

    @property
    def address(self) -> str:
        try:
            return keystore_address(self.settings.signing_key_file)
        except KeystoreError as exc:
            raise NotInitialised(str(exc)) from exc

    @cached_property
    def encryption_key(self) -> X25519PrivateKey:
        # Held before the look for an unfinished replacement: one starting after that look waits for this process.
        hold_encryption_key(self.settings.data_dir)
        refuse_unfinished_replacement(self.settings)
        try:
            return load_private_key(self.settings.encryption_key_file.read_bytes(), self.passphrase)
        except FileNotFoundError as exc:
            raise NotInitialised(f"no encryption key at {self.settings.encryption_key_file}") from exc
        except EnvelopeError as exc:
            raise WrongPassphrase(f"wrong passphrase for {self.settings.encryption_key_file}") from exc

    @cached_property
    def vault(self) -> LocalVault:
        """Encryption at rest for the bank's raw identifiers and the alliance keys."""
        return LocalVault(derive_vault_key(self.encryption_key))

    @cached_property
    def keyring(self) -> KeyRing:
        return KeyRing(self.store, self.vault)

    @cached_property
    def report_intake(self) -> ReportIntake:
        return ReportIntake(self.store, self.keyring, self.vault, self.local_key(REPORT_ID_PURPOSE),
                            refuse_unless_reporter=self.refuse_reports_unless_member)

    def local_key(self, purpose: bytes) -> bytes:
        """The key of one of this bank's own keyed hashes (report ids, fingerprints): derived from the encryption key
        until that key is first replaced, kept in the store from then on, so what was hashed before keeps matching."""
        key = self._local_keys.get(purpose)
        if key is None:
            key = stored_local_key(self.store, self.vault, purpose) or derive_local_key(self.encryption_key, purpose)
            self._local_keys[purpose] = key
        return key

    @property
    def publisher(self) -> Publisher:
        """The publisher of the current signing key: after a switch, a new one, whose first round settles the batches
        the old key signed before it signs any (Publisher.recover)."""
        with self._signing:
            self.signing_chain  # noqa: B018 - follows an activation, which drops the publisher of the old key
            if self._publisher is None:
                self._publisher = Publisher(self.store, self.fraud_ledger(signing=True),
                                            batch_size=self.settings.publish_batch_size,
                                            max_wait_s=self.settings.publish_max_wait_s)
            return self._publisher

    @cached_property
    def deployment(self) -> Deployment:
        return load_deployment(self.settings.effective_deployment_file)

    def registry(self, *, signing: bool = False) -> RegistryClient:
        client = self.signing_chain if signing else self.chain
        return RegistryClient(client, self.deployment.address("AllianceRegistry"))

    def fraud_ledger(self, *, signing: bool = False) -> FraudLedgerClient:
        client = self.signing_chain if signing else self.chain
        return FraudLedgerClient(client, self.deployment.address("FraudLedger"))

    @property
    def member_id(self) -> int:
        """This bank's registry member id (0 if it is not a member yet; asked again until it is one)."""
        if not self._member_id:
            self._member_id = self.registry().member_id_of(self.address)
        return self._member_id

    def refuse_reports_unless_member(self) -> None:
        """Refuse a fraud report of a bank admitted as an auditor or observer: the FraudLedger takes members' batches
        only, so its reports were accepted and stayed queued for good, `fraud publish` refused with
        FraudLedgerNotMember while `member show` said active. A role is set at admission and never changes, so the
        first answer is kept; without one (the chain down, not admitted yet) reports are accepted, as any is then."""
        if self._role is None and time.monotonic() - self._role_asked_at >= ROLE_RETRY_S:
            self._role_asked_at = time.monotonic()
            with suppress(ChainError):
                member_id = self.member_id
                self._role = self.registry().member(member_id).role if member_id else None
        if self._role in (MemberRole.auditor, MemberRole.observer):
            raise Conflict(f"this bank is an {self._role.name} of the alliance: only banks of role member report "
                           "fraud", code="not_a_reporter")

    @property
    def is_dev(self) -> bool:
        return self.settings.network == Network.dev

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
