"""Tests of the local vault that keeps raw identifiers encrypted at rest."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.crypto.vault import LocalVault, VaultError

KEY = bytes(range(32))
AAD = b"customers/42/resident_id"
PLAINTEXT = b"11010519491231002X"


def decrypts(vault: LocalVault, sealed: bytes) -> bool:
    try:
        vault.decrypt(sealed, associated_data=AAD)
    except VaultError:
        return False
    return True


@pytest.fixture
def vault() -> LocalVault:
    return LocalVault(KEY)


@pytest.mark.parametrize("plaintext", [PLAINTEXT, b"", bytes(range(256)) * 4])
def test_decrypt_returns_encrypted_plaintext(vault: LocalVault, plaintext: bytes) -> None:
    assert vault.decrypt(vault.encrypt(plaintext, associated_data=AAD), associated_data=AAD) == plaintext


def test_encrypt_writes_nonce_then_aes_gcm_ciphertext(vault: LocalVault) -> None:
    sealed = vault.encrypt(PLAINTEXT, associated_data=AAD)
    assert len(sealed) == 12 + len(PLAINTEXT) + 16
    assert AESGCM(KEY).decrypt(sealed[:12], sealed[12:], AAD) == PLAINTEXT


def test_encrypt_uses_fresh_nonce(vault: LocalVault) -> None:
    first = vault.encrypt(PLAINTEXT, associated_data=AAD)
    second = vault.encrypt(PLAINTEXT, associated_data=AAD)
    assert first[:12] != second[:12]
    assert first[12:] != second[12:]


def test_decrypt_rejects_other_associated_data(vault: LocalVault) -> None:
    sealed = vault.encrypt(PLAINTEXT, associated_data=AAD)
    for other in (b"customers/43/resident_id", b"", AAD + b"\x00"):
        with pytest.raises(VaultError, match="does not decrypt"):
            vault.decrypt(sealed, associated_data=other)


def test_decrypt_rejects_other_key(vault: LocalVault) -> None:
    sealed = vault.encrypt(PLAINTEXT, associated_data=AAD)
    with pytest.raises(VaultError, match="does not decrypt"):
        LocalVault(LocalVault.generate_key()).decrypt(sealed, associated_data=AAD)


def test_decrypt_rejects_every_single_byte_altered(vault: LocalVault) -> None:
    sealed = vault.encrypt(PLAINTEXT, associated_data=AAD)
    assert len(sealed) == 46
    altered = [sealed[:i] + bytes([sealed[i] ^ 0x01]) + sealed[i + 1:] for i in range(46)]
    assert [i for i, candidate in enumerate(altered) if decrypts(vault, candidate)] == []


@pytest.mark.parametrize("length", [0, 12, 27])
def test_decrypt_rejects_ciphertext_shorter_than_nonce_and_tag(vault: LocalVault, length: int) -> None:
    sealed = vault.encrypt(b"", associated_data=AAD)
    with pytest.raises(VaultError, match=f"ciphertext is {length} bytes"):
        vault.decrypt(sealed[:length], associated_data=AAD)


def test_decrypt_rejects_truncated_ciphertext(vault: LocalVault) -> None:
    sealed = vault.encrypt(PLAINTEXT, associated_data=AAD)
    with pytest.raises(VaultError, match="does not decrypt"):
        vault.decrypt(sealed[:-1], associated_data=AAD)


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_reject_vault_key_of_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match="vault key must be 32 bytes"):
        LocalVault(bytes(length))


def test_generate_key_gives_distinct_256_bit_keys() -> None:
    first, second = LocalVault.generate_key(), LocalVault.generate_key()
    assert len(first) == 32
    assert first != second
    LocalVault(first)


def test_vault_keeps_no_key_attribute(vault: LocalVault) -> None:
    assert not hasattr(vault, "__dict__")
    assert KEY.hex() not in repr(vault)


def test_derive_vault_key_is_stable_per_member_key_and_differs_between_keys() -> None:
    from node.crypto.envelopes import generate_encryption_keypair
    from node.crypto.vault import derive_vault_key

    key = generate_encryption_keypair()
    assert derive_vault_key(key) == derive_vault_key(key)
    assert len(derive_vault_key(key)) == 32
    assert derive_vault_key(key) != derive_vault_key(generate_encryption_keypair())
