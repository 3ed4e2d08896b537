"""Tests of alliance-key envelopes and of the member's key file."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.crypto.envelopes import (
    ENVELOPE_BYTES,
    EnvelopeError,
    dump_private_key,
    generate_encryption_keypair,
    load_private_key,
    open_envelope,
    public_key_bytes,
    seal_envelope,
)

ALLIANCE_KEY = bytes(range(100, 132))
MEMBER_ID = 7
EPOCH = 3
DOES_NOT_OPEN = "envelope does not open"
WRONG_PASSPHRASE = r"^wrong passphrase or corrupt key file$"


@pytest.fixture(scope="module")
def recipient() -> X25519PrivateKey:
    return generate_encryption_keypair()


@pytest.fixture(scope="module")
def envelope(recipient: X25519PrivateKey) -> bytes:
    return seal_envelope(
        recipient_public_key=public_key_bytes(recipient), recipient_member_id=MEMBER_ID, epoch=EPOCH,
        alliance_key=ALLIANCE_KEY,
    )


def open_as(
    recipient: X25519PrivateKey, envelope: bytes, *, member_id: int = MEMBER_ID, epoch: int = EPOCH,
) -> bytes:
    return open_envelope(
        envelope=envelope, recipient_private_key=recipient, recipient_member_id=member_id, epoch=epoch,
    )


def opens(recipient: X25519PrivateKey, envelope: bytes) -> bool:
    try:
        open_as(recipient, envelope)
    except EnvelopeError:
        return False
    return True


def spec_info(epoch: int, member_id: int) -> bytes:
    return b"alliance-key-envelope/v1" + epoch.to_bytes(4, "big") + member_id.to_bytes(8, "big")


def spec_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes, info: bytes) -> bytes:
    salt = ephemeral_public + recipient_public
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(shared)


# --- round trip and wire format ----------------------------------------------------------------

def test_open_envelope_returns_sealed_alliance_key(recipient: X25519PrivateKey, envelope: bytes) -> None:
    assert open_as(recipient, envelope) == ALLIANCE_KEY


def test_seal_envelope_has_version_byte_and_fixed_length(envelope: bytes) -> None:
    assert ENVELOPE_BYTES == 93
    assert len(envelope) == 93
    assert envelope[0] == 0x01


def test_seal_envelope_follows_specification(recipient: X25519PrivateKey, envelope: bytes) -> None:
    # Decrypted here from the written specification alone, so another implementation can interoperate.
    ephemeral_public, nonce, sealed = envelope[1:33], envelope[33:45], envelope[45:]
    shared = recipient.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    info = spec_info(EPOCH, MEMBER_ID)
    aes_key = spec_key(shared, ephemeral_public, public_key_bytes(recipient), info)
    assert AESGCM(aes_key).decrypt(nonce, sealed, info) == ALLIANCE_KEY


def test_open_envelope_built_from_specification(recipient: X25519PrivateKey) -> None:
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = public_key_bytes(ephemeral)
    info = spec_info(EPOCH, MEMBER_ID)
    shared = ephemeral.exchange(recipient.public_key())
    aes_key = spec_key(shared, ephemeral_public, public_key_bytes(recipient), info)
    nonce = os.urandom(12)
    envelope = b"\x01" + ephemeral_public + nonce + AESGCM(aes_key).encrypt(nonce, ALLIANCE_KEY, info)
    assert open_as(recipient, envelope) == ALLIANCE_KEY


def test_seal_envelope_uses_fresh_ephemeral_key_and_nonce(
    recipient: X25519PrivateKey, envelope: bytes,
) -> None:
    again = seal_envelope(
        recipient_public_key=public_key_bytes(recipient), recipient_member_id=MEMBER_ID, epoch=EPOCH,
        alliance_key=ALLIANCE_KEY,
    )
    assert again[1:33] != envelope[1:33]
    assert again[33:45] != envelope[33:45]
    assert open_as(recipient, again) == ALLIANCE_KEY


@pytest.mark.parametrize(("member_id", "epoch"), [(0, 0), (2**64 - 1, 2**32 - 1)])
def test_open_envelope_at_range_limits_of_member_id_and_epoch(
    recipient: X25519PrivateKey, member_id: int, epoch: int,
) -> None:
    envelope = seal_envelope(
        recipient_public_key=public_key_bytes(recipient), recipient_member_id=member_id, epoch=epoch,
        alliance_key=ALLIANCE_KEY,
    )
    assert open_as(recipient, envelope, member_id=member_id, epoch=epoch) == ALLIANCE_KEY


def test_public_key_bytes_is_raw_x25519_key(recipient: X25519PrivateKey) -> None:
    raw = public_key_bytes(recipient)
    assert len(raw) == 32
    assert X25519PublicKey.from_public_bytes(raw) == recipient.public_key()


def test_generate_encryption_keypair_gives_distinct_keys() -> None:
    assert public_key_bytes(generate_encryption_keypair()) != public_key_bytes(generate_encryption_keypair())


# --- envelopes that must not open --------------------------------------------------------------

def test_open_envelope_rejects_other_recipient_key(envelope: bytes) -> None:
    with pytest.raises(EnvelopeError, match=DOES_NOT_OPEN):
        open_as(generate_encryption_keypair(), envelope)


@pytest.mark.parametrize("epoch", [EPOCH - 1, EPOCH + 1, EPOCH + 2**16])
def test_open_envelope_rejects_other_epoch(recipient: X25519PrivateKey, envelope: bytes, epoch: int) -> None:
    with pytest.raises(EnvelopeError, match=DOES_NOT_OPEN):
        open_as(recipient, envelope, epoch=epoch)


@pytest.mark.parametrize("member_id", [MEMBER_ID - 1, MEMBER_ID + 1, MEMBER_ID + 2**32])
def test_open_envelope_rejects_other_member_id(
    recipient: X25519PrivateKey, envelope: bytes, member_id: int,
) -> None:
    with pytest.raises(EnvelopeError, match=DOES_NOT_OPEN):
        open_as(recipient, envelope, member_id=member_id)


# 0x80 in the last public-key byte flips a bit X25519 ignores: only the HKDF salt catches it.
@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_open_envelope_rejects_every_single_byte_altered(
    recipient: X25519PrivateKey, envelope: bytes, mask: int,
) -> None:
    assert len(envelope) == 93
    altered = [envelope[:i] + bytes([envelope[i] ^ mask]) + envelope[i + 1:] for i in range(93)]
    assert [i for i, candidate in enumerate(altered) if opens(recipient, candidate)] == []


@pytest.mark.parametrize("length", [0, 1, 45, 92])
def test_open_envelope_rejects_truncated(recipient: X25519PrivateKey, envelope: bytes, length: int) -> None:
    message = "envelope is empty" if length == 0 else f"envelope is {length} bytes, expected 93"
    with pytest.raises(EnvelopeError, match=message):
        open_as(recipient, envelope[:length])


def test_open_envelope_rejects_extended(recipient: X25519PrivateKey, envelope: bytes) -> None:
    with pytest.raises(EnvelopeError, match="envelope is 94 bytes, expected 93"):
        open_as(recipient, envelope + b"\x00")


@pytest.mark.parametrize("version", [0x00, 0x02, 0xFF])
def test_open_envelope_rejects_unknown_version(
    recipient: X25519PrivateKey, envelope: bytes, version: int,
) -> None:
    with pytest.raises(EnvelopeError, match=f"unsupported envelope version {version}, expected 1"):
        open_as(recipient, bytes([version]) + envelope[1:])


def test_open_envelope_rejects_low_order_ephemeral_key(recipient: X25519PrivateKey, envelope: bytes) -> None:
    with pytest.raises(EnvelopeError, match="unusable ephemeral public key"):
        open_as(recipient, envelope[:1] + bytes(32) + envelope[33:])


# --- argument errors are bugs, not bad envelopes -----------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alliance_key": bytes(31)}, "alliance key must be 32 bytes"),
        ({"alliance_key": bytes(33)}, "alliance key must be 32 bytes"),
        ({"recipient_public_key": bytes(31)}, "32 bytes"),
        ({"recipient_public_key": bytes(32)}, "not a usable X25519 key"),
        ({"epoch": -1}, "epoch must be in"),
        ({"epoch": 2**32}, "epoch must be in"),
        ({"recipient_member_id": -1}, "member id must be in"),
        ({"recipient_member_id": 2**64}, "member id must be in"),
    ],
)
def test_seal_envelope_rejects_bad_argument(
    recipient: X25519PrivateKey, overrides: dict[str, Any], message: str,
) -> None:
    arguments = {
        "recipient_public_key": public_key_bytes(recipient), "recipient_member_id": MEMBER_ID, "epoch": EPOCH,
        "alliance_key": ALLIANCE_KEY, **overrides,
    }
    with pytest.raises(ValueError, match=message) as caught:
        seal_envelope(**arguments)
    assert not isinstance(caught.value, EnvelopeError)


@pytest.mark.parametrize(
    ("member_id", "epoch"), [(-1, EPOCH), (2**64, EPOCH), (MEMBER_ID, -1), (MEMBER_ID, 2**32)],
)
def test_open_envelope_rejects_out_of_range_context(
    recipient: X25519PrivateKey, envelope: bytes, member_id: int, epoch: int,
) -> None:
    with pytest.raises(ValueError, match="must be in") as caught:
        open_as(recipient, envelope, member_id=member_id, epoch=epoch)
    assert not isinstance(caught.value, EnvelopeError)


# --- key file ----------------------------------------------------------------------------------

@pytest.mark.parametrize("passphrase", ["correct horse battery staple", "联盟节点-密钥"])
def test_load_private_key_returns_dumped_key(recipient: X25519PrivateKey, passphrase: str) -> None:
    pem = dump_private_key(recipient, passphrase)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert public_key_bytes(load_private_key(pem, passphrase)) == public_key_bytes(recipient)


def test_dump_private_key_rejects_empty_passphrase(recipient: X25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="passphrase must not be empty"):
        dump_private_key(recipient, "")


@pytest.mark.parametrize("passphrase", ["wrong", "", "pass phrase "])
def test_load_private_key_rejects_wrong_passphrase(recipient: X25519PrivateKey, passphrase: str) -> None:
    pem = dump_private_key(recipient, "pass phrase")
    with pytest.raises(EnvelopeError, match=WRONG_PASSPHRASE):
        load_private_key(pem, passphrase)


def test_load_private_key_rejects_corrupt_file(recipient: X25519PrivateKey) -> None:
    pem = dump_private_key(recipient, "pass phrase")
    for corrupt in (b"", b"not a key", pem[: len(pem) // 2], pem.replace(b"A", b"B", 1)):
        with pytest.raises(EnvelopeError, match=WRONG_PASSPHRASE):
            load_private_key(corrupt, "pass phrase")


def test_load_private_key_rejects_unencrypted_file(recipient: X25519PrivateKey) -> None:
    plain = recipient.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )
    with pytest.raises(EnvelopeError, match=WRONG_PASSPHRASE):
        load_private_key(plain, "pass phrase")


def test_load_private_key_rejects_other_key_type() -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass phrase"),
    )
    with pytest.raises(EnvelopeError, match="not an X25519 key"):
        load_private_key(pem, "pass phrase")
