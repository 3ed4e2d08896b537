"""Encryption at rest for the bank's own raw identifiers, which never leave the node.

AES-256-GCM with a random 12-byte nonce per message; output = nonce || ciphertext || 16-byte tag.
Random nonces are safe for about 2^32 messages under one key (NIST SP 800-38D), far beyond one
bank's customer records. The associated data binds a ciphertext to its place (say, table and row id),
so a ciphertext copied onto another record does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VAULT_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


class VaultError(ValueError):
    """A vault ciphertext that cannot be decrypted."""


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
