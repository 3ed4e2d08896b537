"""Encryption at rest for the bank's own raw identifiers, which never leave the node.

AES-256-GCM with a random 12-byte nonce per message; output = nonce || ciphertext || 16-byte tag.
Random nonces are safe for about 2^32 messages under one key (NIST SP 800-38D), far beyond one
bank's customer records. The associated data binds a ciphertext to its place (say, table and row id),
so a ciphertext copied onto another record does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.errors import AllianceError

VAULT_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


_VAULT_KEY_INFO = b"alliance-node-vault/v1"


def derive_local_key(encryption_key: X25519PrivateKey, purpose: bytes) -> bytes:
    """A 32-byte key for one local purpose, derived from the node's passphrase-protected X25519 key.

    Deriving rather than storing more secrets means each local key is exactly as well protected as the
    member key and is restored with it from a backup of the keys directory. Distinct purposes give
    independent keys (HKDF info).
    """
    private = encryption_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                           serialization.NoEncryption())
    return HKDF(algorithm=hashes.SHA256(), length=VAULT_KEY_BYTES, salt=None, info=purpose).derive(private)


def derive_vault_key(encryption_key: X25519PrivateKey) -> bytes:
    """The key of the node's vault (encryption at rest of raw identifiers and alliance keys)."""
    return derive_local_key(encryption_key, _VAULT_KEY_INFO)


class VaultError(AllianceError, ValueError):
    """A vault ciphertext that cannot be decrypted: altered, or sealed by another node (a store that is not this
    node's, or a keys directory that was replaced). The node cannot serve from such a store, hence 503."""

    code = "vault_mismatch"
    http_status = 503


class LocalVault:
    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != VAULT_KEY_BYTES:
            raise ValueError(f"vault key must be {VAULT_KEY_BYTES} bytes, got {len(key)}")
        # Only the cipher object is kept, so the key cannot leak through attributes or repr.
        self._aead = AESGCM(key)

    @staticmethod
    def generate_key() -> bytes:
        return AESGCM.generate_key(bit_length=VAULT_KEY_BYTES * 8)

    def encrypt(self, plaintext: bytes, *, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, *, associated_data: bytes) -> bytes:
        if len(ciphertext) < _NONCE_BYTES + _TAG_BYTES:
            raise VaultError(f"ciphertext is {len(ciphertext)} bytes, shorter than nonce and tag")
        try:
            return self._aead.decrypt(ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise VaultError(
                "ciphertext does not decrypt: wrong key or associated data, or it was altered",
            ) from None
