"""Indicator hashes: the only form in which a customer identifier leaves the bank.

indicator = HMAC-SHA256(alliance key of the epoch, type_utf8 || 0x00 || canonical_utf8)

A plain SHA-256 of a resident ID or phone number is reversible: the valid values are few enough (about
5 * 10^9 numbers in China's mobile ranges, about 10^11 resident IDs) to hash them all. Keying the hash with a
secret shared only by members leaves an outsider who reads the chain nothing to enumerate against. The identifier
type is hashed with the value so that equal digits of different kinds (a phone number and a card number) never give
one indicator; the NUL byte ends the type, which no type name contains.
"""

from __future__ import annotations

import hmac

from node.ledger.identifiers import IdentifierType, normalise

ALLIANCE_KEY_BYTES = 32
# What the HMAC takes before the canonical value, by type name: the type and the NUL that ends it. Built once: a batch
# check hashes 10,000 identifiers a request (node.ledger.checks hashes with it directly, under every key epoch).
INDICATOR_PREFIX: dict[str, bytes] = {kind.value: kind.value.encode("utf-8") + b"\x00" for kind in IdentifierType}


def indicator_hash(alliance_key: bytes, identifier_type: str, canonical_value: str) -> bytes:
    """The 32-byte indicator of an identifier that is already in canonical form.

    This does not normalise: hashing a raw value gives an indicator no other member can match. Use
    `hash_identifier` for raw input.
    """
    _require_alliance_key(alliance_key)
    try:
        kind = IdentifierType(identifier_type)
    except ValueError:
        raise ValueError(f"unknown identifier type {identifier_type!r}") from None
    if not canonical_value:
        raise ValueError("canonical value is empty")
    if "\x00" in canonical_value:
        # No normaliser produces NUL, so such a value was never normalised.
        raise ValueError("canonical value contains a NUL character")
    message = INDICATOR_PREFIX[kind] + canonical_value.encode("utf-8")
    return hmac.digest(alliance_key, message, "sha256")  # one-shot C path


def hash_identifier(alliance_key: bytes, identifier_type: str, raw: str) -> tuple[str, bytes]:
    """Normalise `raw` and return (canonical value, indicator); raises InvalidIdentifier for bad input."""
    # Checked before the input so a misconfigured key is not reported as a bad customer record.
    _require_alliance_key(alliance_key)
    canonical = normalise(identifier_type, raw)
    return canonical, indicator_hash(alliance_key, identifier_type, canonical)


def _require_alliance_key(alliance_key: bytes) -> None:
    if len(alliance_key) != ALLIANCE_KEY_BYTES:
        raise ValueError(f"alliance key must be {ALLIANCE_KEY_BYTES} bytes, got {len(alliance_key)}")
