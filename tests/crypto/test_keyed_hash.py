"""Tests of the keyed indicator hash."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.keyed_hash import ALLIANCE_KEY_BYTES, hash_identifier, indicator_hash
from node.ledger.identifiers import IdentifierType, InvalidIdentifier

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_alliance_key_is_256_bits() -> None:
    assert ALLIANCE_KEY_BYTES == 32


def test_indicator_hash_matches_vector_from_openssl() -> None:
    # printf 'phone\x00+8613800138000' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f
    expected = "015e2e107471877ceb31f0ab92a0f2b79b6d7ae24c366f838fa3f671d16d153b"
    assert indicator_hash(KEY, "phone", "+8613800138000").hex() == expected


def test_hash_identifier_matches_vector_from_openssl() -> None:
    # printf 'cn_resident_id\x0011010519491231002X' | openssl dgst -sha256 -mac HMAC -macopt hexkey:0001...1f
    canonical, digest = hash_identifier(KEY, "cn_resident_id", "110105 19491231 002x")
    assert canonical == "11010519491231002X"
    assert digest.hex() == "a2b213e91c8827dec52039d14dcdbced887184fc238c28ed30d6966efb3dd384"


@settings(max_examples=100, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.sampled_from(list(IdentifierType)),
    st.text(min_size=1).filter(lambda value: "\x00" not in value),
)
def test_indicator_hash_equals_hmac_of_type_nul_value(key: bytes, kind: IdentifierType, value: str) -> None:
    expected = hmac.new(key, kind.value.encode() + b"\x00" + value.encode(), hashlib.sha256).digest()
    assert indicator_hash(key, kind, value) == expected
    assert len(expected) == 32


def test_indicator_hash_separates_types_with_same_value() -> None:
    # These digits are both a valid card number and a valid device ID.
    card_canonical, card_hash = hash_identifier(KEY, "bank_card", "4111111111111111")
    device_canonical, device_hash = hash_identifier(KEY, "device_id", "4111111111111111")
    assert card_canonical == device_canonical
    assert card_hash != device_hash


def test_indicator_hash_depends_on_key() -> None:
    value = "+8613800138000"
    assert indicator_hash(KEY, "phone", value) != indicator_hash(OTHER_KEY, "phone", value)


def test_indicator_hash_takes_enum_member_or_plain_string() -> None:
    value = "+8613800138000"
    assert indicator_hash(KEY, IdentifierType.PHONE, value) == indicator_hash(KEY, "phone", value)


@pytest.mark.parametrize(
    ("identifier_type", "variants"),
    [
        ("phone", ["+86 138-0013-8000", "13800138000", "(0086)13800138000", " 0086 138 0013 8000 "]),
        ("cn_resident_id", ["11010519491231002X", "110105-19491231-002x", " 110105 19491231 002X "]),
        ("email", ["Zhang.San@Example.com", "zhang.san@example.com", " ZHANG.SAN@EXAMPLE.COM"]),
        ("bank_card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111"]),
    ],
)
def test_hash_identifier_gives_one_hash_for_formatting_variants(
    identifier_type: str, variants: list[str],
) -> None:
    results = {hash_identifier(KEY, identifier_type, raw) for raw in variants}
    assert len(results) == 1
    ((canonical, digest),) = results
    assert digest == indicator_hash(KEY, identifier_type, canonical)


def test_indicator_hash_does_not_normalise() -> None:
    # Documented contract: callers holding raw input must use hash_identifier.
    assert indicator_hash(KEY, "phone", "13800138000") != indicator_hash(KEY, "phone", "+8613800138000")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_reject_alliance_key_of_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match="alliance key must be 32 bytes"):
        indicator_hash(bytes(length), "phone", "+8613800138000")
    with pytest.raises(ValueError, match="alliance key must be 32 bytes"):
        hash_identifier(bytes(length), "phone", "13800138000")


def test_hash_identifier_reports_bad_key_before_bad_input() -> None:
    with pytest.raises(ValueError, match="alliance key") as caught:
        hash_identifier(bytes(31), "phone", "not a phone")
    assert not isinstance(caught.value, InvalidIdentifier)


@pytest.mark.parametrize("identifier_type", ["passport", "PHONE", ""])
def test_indicator_hash_rejects_unknown_type(identifier_type: str) -> None:
    with pytest.raises(ValueError, match="unknown identifier type"):
        indicator_hash(KEY, identifier_type, "+8613800138000")


def test_indicator_hash_rejects_empty_value() -> None:
    with pytest.raises(ValueError, match="empty"):
        indicator_hash(KEY, "phone", "")


@pytest.mark.parametrize("value", ["\x00", "+86138\x0000138000", "+8613800138000\x00"])
def test_indicator_hash_rejects_value_containing_nul(value: str) -> None:
    with pytest.raises(ValueError, match="NUL"):
        indicator_hash(KEY, "phone", value)


def test_hash_identifier_raises_invalid_identifier_for_bad_input() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        hash_identifier(KEY, "bank_card", "4111111111111112")
    assert caught.value.code == "checksum_failed"


def test_hash_identifier_raises_invalid_identifier_for_unknown_type() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        hash_identifier(KEY, "passport", "E12345678")
    assert caught.value.code == "unknown_type"
