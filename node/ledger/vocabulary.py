"""The fixed vocabularies of the fraud ledger and their on-chain codes (one byte each in a record).

The codes are part of the consortium's protocol: every node must map them identically, so values are
never renumbered, only appended.
"""

from __future__ import annotations

from enum import IntEnum

from node.ledger.identifiers import IdentifierType

MAX_VALIDITY_S = 6 * 365 * 24 * 3600  # a record may apply for at most six years
MAX_CONFIDENCE = 100


class Category(IntEnum):
    identity_theft = 1
    synthetic_identity = 2
    application_fraud = 3
    account_takeover = 4
    money_mule = 5
    first_party_fraud = 6
    telecom_fraud = 7
    transaction_fraud = 8
    other = 9


class DisputeReason(IntEnum):
    """Why a member disputes another member's indicator (the contract accepts 1..5)."""

    mistaken_identity = 1
    insufficient_evidence = 2
    resolved_by_customer = 3
    data_entry_error = 4
    other = 5


class RevokeReason(IntEnum):
    """Why a reporter withdraws its own indicator (not interpreted by the contract)."""

    reported_in_error = 1
    dispute_upheld = 2
    customer_cleared = 3
    superseded = 4
    other = 5


IDENTIFIER_TYPE_CODES: dict[IdentifierType, int] = {
    IdentifierType.CN_RESIDENT_ID: 1,
    IdentifierType.USCC: 2,
    IdentifierType.PHONE: 3,
    IdentifierType.BANK_CARD: 4,
    IdentifierType.EMAIL: 5,
    IdentifierType.DEVICE_ID: 6,
    IdentifierType.IP: 7,
}
IDENTIFIER_TYPES_BY_CODE: dict[int, IdentifierType] = {code: kind for kind, code in IDENTIFIER_TYPE_CODES.items()}


def identifier_type_code(identifier_type: str | IdentifierType) -> int:
    return IDENTIFIER_TYPE_CODES[IdentifierType(identifier_type)]


def identifier_type_of(code: int) -> IdentifierType | None:
    """The identifier type of an on-chain code, or None for a code this node does not know."""
    return IDENTIFIER_TYPES_BY_CODE.get(code)


def record_is_well_formed(*, identifier_type: int, category: int, confidence: int, valid_from: int,
                          valid_until: int) -> bool:
    """The indexers' deterministic field check of a published record (see IFraudLedger).

    The contract does not validate fields, to stay within the gas budget; every node ignores the same
    malformed records, so every mirror derives the same state.
    """
    return (identifier_type in IDENTIFIER_TYPES_BY_CODE
            and category in Category._value2member_map_
            and 0 <= confidence <= MAX_CONFIDENCE
            and valid_from < valid_until <= valid_from + MAX_VALIDITY_S)
