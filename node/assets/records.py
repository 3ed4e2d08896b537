"""The canonical loan record: what a pool version's Merkle tree commits to, without personal data.

A record holds the loan's terms and state and one keyed hash of the borrower (never a name, address,
income or raw identifier). Its Merkle leaf is OpenZeppelin's StandardMerkleTree leaf over `LEAF_ENCODING`,
so `MerkleProof.verify` on chain, the JS library and this node all agree on it. Every field is a static
ABI type, which keeps the million-loan tree on the fast column-wise encoder.

Units: dates are `YYYYMMDD` integers (readable, ordered, fixed); amounts are integers in the currency's
minor unit; the interest rate is in millionths (4.35 % = 43_500); enumerations use the codes below,
which are part of the leaf and therefore must never be renumbered.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from node.merkle import standard_leaf_hash

LEAF_ENCODING: tuple[str, ...] = (
    "bytes32",  # loan_id
    "bytes32",  # borrower_hash
    "uint32",  # key_epoch
    "uint32",  # origination_date
    "uint32",  # maturity_date
    "uint128",  # original_principal
    "uint128",  # current_principal
    "bytes3",  # currency
    "uint32",  # interest_rate_micros
    "uint8",  # purpose
    "uint8",  # amortisation
    "uint8",  # status
    "uint128",  # arrears_balance
)
LOAN_ID_DOMAIN = b"alliance/loan-id/v1\x00"
HASH32 = re.compile(r"0x[0-9a-fA-F]{64}")  # a 32-byte hash as bundles write it, in full


class LoanPurpose(IntEnum):
    home = 1
    auto = 2
    consumer = 3
    business = 4
    education = 5
    other = 6


class Amortisation(IntEnum):
    annuity = 1
    linear = 2
    bullet = 3
    interest_only = 4
    other = 5


class LoanStatus(IntEnum):
    """Loan statuses, in the order of the contract's `statusCounts` (code - 1 is the index)."""

    current = 1
    dpd30 = 2
    dpd60 = 3
    dpd90 = 4
    defaulted = 5
    repaid = 6
    repurchased = 7


def loan_id_of(alliance_key: bytes, originator_code: str, loan_reference: str) -> bytes:
    """The consortium-wide loan id: keyed, so the chain does not reveal banks' internal references, yet the
    same loan presented by its originator to two pools gets one id that every member can recompute."""
    message = LOAN_ID_DOMAIN + originator_code.encode("utf-8") + b"\x00" + loan_reference.encode("utf-8")
    return hmac.digest(alliance_key, message, "sha256")


@dataclass(frozen=True, slots=True)
class LoanRecord:
    loan_id: bytes
    borrower_hash: bytes
    key_epoch: int
    origination_date: int
    maturity_date: int
    original_principal: int
    current_principal: int
    currency: str
    interest_rate_micros: int
    purpose: LoanPurpose
    amortisation: Amortisation
    status: LoanStatus
    arrears_balance: int

    def leaf_values(self) -> tuple[Any, ...]:
        """The leaf's values in `LEAF_ENCODING` order (canonical Python types for the fast encoder)."""
        return (self.loan_id, self.borrower_hash, self.key_epoch, self.origination_date, self.maturity_date,
                self.original_principal, self.current_principal, self.currency.encode("ascii"),
                self.interest_rate_micros, int(self.purpose), int(self.amortisation), int(self.status),
                self.arrears_balance)

    def leaf(self) -> bytes:
        return standard_leaf_hash(LEAF_ENCODING, self.leaf_values())

    def to_json(self) -> dict[str, Any]:
        """The record as a provenance bundle carries it: hashes in 0x-hex, enumerations by name."""
        data = asdict(self)
        data["loan_id"] = "0x" + self.loan_id.hex()
        data["borrower_hash"] = "0x" + self.borrower_hash.hex()
        data["purpose"], data["amortisation"], data["status"] = (self.purpose.name, self.amortisation.name,
                                                                 self.status.name)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoanRecord:
        """Parse `to_json` output strictly; raises ValueError (with the field) on anything else."""
        expected = set(cls.__dataclass_fields__)
        if not isinstance(data, dict) or set(data) != expected:
            got = set(data) if isinstance(data, dict) else set()
            raise ValueError(f"record fields differ: missing {sorted(expected - got)}, "
                             f"unexpected {sorted(got - expected)}")

        def hash32(name: str) -> bytes:
            text = data[name]
            # In full: bytes.fromhex alone skips whitespace and reads a hash with spaces as a shorter one.
            if not (isinstance(text, str) and HASH32.fullmatch(text)):
                raise ValueError(f"record field {name} must be 0x + 64 hex digits")
            return bytes.fromhex(text[2:])

        def integer(name: str) -> int:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"record field {name} must be a non-negative integer")
            return value

        def enum(name: str, kind: type[IntEnum]) -> Any:
            try:
                return kind[data[name]]
            except (KeyError, TypeError):
                raise ValueError(f"record field {name} must be one of {[m.name for m in kind]}") from None

        currency = data["currency"]
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isupper()):
            raise ValueError("record field currency must be a 3-letter ISO 4217 code")
        return cls(hash32("loan_id"), hash32("borrower_hash"), integer("key_epoch"), integer("origination_date"),
                   integer("maturity_date"), integer("original_principal"), integer("current_principal"),
                   currency, integer("interest_rate_micros"), enum("purpose", LoanPurpose),
                   enum("amortisation", Amortisation), enum("status", LoanStatus), integer("arrears_balance"))


def status_counts(records: list[LoanRecord]) -> list[int]:
    """Loans per status, in the contract's order."""
    counts = [0] * len(LoanStatus)
    for record in records:
        counts[int(record.status) - 1] += 1
    return counts


STATUS_ENCODING: tuple[str, ...] = ("bytes32", "uint8")  # loan_id, status: leaves of a servicing status tree


def pack_statuses(statuses: Sequence[int]) -> bytes:
    """Status codes as a servicing report carries them on chain: 4 bits each, two a byte, the earlier loan in the
    high half, an odd count's last low half 0 (a status is 1 to 7, so 0 marks no loan)."""
    codes = [int(LoanStatus(s)) for s in statuses]
    if len(codes) % 2:
        codes.append(0)
    return bytes(high << 4 | low for high, low in zip(codes[::2], codes[1::2], strict=True))


def unpack_statuses(packed: bytes, loan_count: int) -> list[int]:
    """The `loan_count` status codes of `pack_statuses` output; ValueError if the bytes do not hold exactly that many
    valid codes (a custodian's malformed vector is refused here rather than proven wrong later)."""
    if len(packed) != (loan_count + 1) // 2:
        raise ValueError(f"{len(packed)} bytes of statuses for {loan_count} loans")
    codes = [half for byte in packed for half in (byte >> 4, byte & 0x0F)]
    if loan_count % 2 and codes[-1] != 0:
        raise ValueError("the padding half of an odd count is not 0")
    codes = codes[:loan_count]
    if any(not 1 <= code <= len(LoanStatus) for code in codes):
        raise ValueError("a status code is outside 1 to 7")
    return codes
