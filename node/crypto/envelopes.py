"""Envelopes that hand the alliance key of one epoch to one member, over a public chain.

Each member publishes an X25519 public key on chain. To give member R the key of epoch E, a sender:

- makes an ephemeral X25519 key pair and computes shared = X25519(ephemeral_private, R_public);
- derives aes_key = HKDF-SHA256(shared, salt = ephemeral_public || R_public,
  info = b"alliance-key-envelope/v1" || E as 4 bytes big-endian || R's member id as 8 bytes big-endian);
- seals the 32-byte alliance key with AES-256-GCM under a random 12-byte nonce, with the info as AAD.

Envelope = 0x01 || ephemeral_public (32) || nonce (12) || ciphertext and tag (48): 93 bytes.

Binding the epoch and member id into both the key derivation and the AAD means an envelope copied to
another member's slot or replayed for another epoch does not open. The ephemeral key pair gives every
envelope its own key, so the sender keeps no secret that could later expose past envelopes.

This module also keeps the member's X25519 private key on disk as passphrase-encrypted PKCS#8 PEM.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.crypto.keyed_hash import ALLIANCE_KEY_BYTES

ENVELOPE_VERSION = 1
ENVELOPE_BYTES = 93

_INFO_PREFIX = b"alliance-key-envelope/v1"
_PUBLIC_KEY_BYTES = 32
_NONCE_BYTES = 12
_MAX_EPOCH = 2**32 - 1
_MAX_MEMBER_ID = 2**64 - 1


class EnvelopeError(ValueError):
    """An envelope or key file that cannot be opened."""


def generate_encryption_keypair() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key, as published on chain."""
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def is_usable_public_key(raw: bytes) -> bool:
    """Whether envelopes can be sealed for this X25519 public key: 32 bytes and no low-order point (all zero, say),
    whose shared secret is all zero whatever the ephemeral key, which OpenSSL refuses."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return False
    return True


def seal_envelope(
    *, recipient_public_key: bytes, recipient_member_id: int, epoch: int, alliance_key: bytes,
) -> bytes:
    if len(alliance_key) != ALLIANCE_KEY_BYTES:
        raise ValueError(f"alliance key must be {ALLIANCE_KEY_BYTES} bytes, got {len(alliance_key)}")
    info = _context(recipient_member_id, epoch)
    recipient = X25519PublicKey.from_public_bytes(recipient_public_key)  # ValueError unless 32 bytes
    ephemeral = X25519PrivateKey.generate()
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError:
        # OpenSSL refuses the all-zero secret that a low-order point yields; such a key is not a member's.
        raise ValueError("recipient public key is not a usable X25519 key") from None
    ephemeral_public = public_key_bytes(ephemeral)
    aes_key = _derive_key(shared, ephemeral_public + recipient_public_key, info)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(aes_key).encrypt(nonce, alliance_key, info)
    return bytes([ENVELOPE_VERSION]) + ephemeral_public + nonce + sealed


def open_envelope(
    *, envelope: bytes, recipient_private_key: X25519PrivateKey, recipient_member_id: int, epoch: int,
) -> bytes:
    """The alliance key sealed in `envelope`; raises EnvelopeError if it cannot be opened."""
    info = _context(recipient_member_id, epoch)
    if not envelope:
        raise EnvelopeError("envelope is empty")
    if envelope[0] != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {envelope[0]}, expected {ENVELOPE_VERSION}")
    if len(envelope) != ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope is {len(envelope)} bytes, expected {ENVELOPE_BYTES}")
    ephemeral_public = envelope[1:1 + _PUBLIC_KEY_BYTES]
    nonce = envelope[1 + _PUBLIC_KEY_BYTES:1 + _PUBLIC_KEY_BYTES + _NONCE_BYTES]
    sealed = envelope[1 + _PUBLIC_KEY_BYTES + _NONCE_BYTES:]
    ephemeral = X25519PublicKey.from_public_bytes(ephemeral_public)
    try:
        shared = recipient_private_key.exchange(ephemeral)
    except ValueError:
        raise EnvelopeError("envelope carries an unusable ephemeral public key") from None
    aes_key = _derive_key(shared, ephemeral_public + public_key_bytes(recipient_private_key), info)
    try:
        return AESGCM(aes_key).decrypt(nonce, sealed, info)
    except InvalidTag:
        raise EnvelopeError(
            "envelope does not open: it is for another key, member id or epoch, or it was altered",
        ) from None


def dump_private_key(private_key: X25519PrivateKey, passphrase: str) -> bytes:
    """PKCS#8 PEM encrypted under `passphrase` (UTF-8)."""
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode("utf-8")),
    )


def load_private_key(pem: bytes, passphrase: str) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase.encode("utf-8"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError covers a key file that is not encrypted at all: this node never writes one.
        raise EnvelopeError("wrong passphrase or corrupt key file") from None
    if not isinstance(key, X25519PrivateKey):
        raise EnvelopeError(f"key file holds a {type(key).__name__}, not an X25519 key")
    return key


def _context(member_id: int, epoch: int) -> bytes:
    if not 0 <= epoch <= _MAX_EPOCH:
        raise ValueError(f"epoch must be in 0..{_MAX_EPOCH}")
    if not 0 <= member_id <= _MAX_MEMBER_ID:
        raise ValueError(f"member id must be in 0..{_MAX_MEMBER_ID}")
    return _INFO_PREFIX + epoch.to_bytes(4, "big") + member_id.to_bytes(8, "big")


def _derive_key(shared: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(shared)
