"""Loan tape import: CSV rows into canonical loan records, with personal data hashed or dropped.

Columns (header row required, any order; modelled on the loan-level ABS templates' loan, borrower and
performance sections, documented in docs/assets.md):

| column | content |
|---|---|
| loan_reference | the originator's own reference, unique in the tape (kept locally only) |
| originator | optional: bank code of the loan's originator when it is not this bank (bought loans) |
| origination_date, maturity_date | ISO dates `YYYY-MM-DD`, maturity after origination |
| original_principal, current_principal, arrears_balance | decimal amounts in major units (`1234.56`) |
| currency | ISO 4217 code of a supported currency (`SUPPORTED_CURRENCIES`) |
| interest_rate | annual rate in percent, up to 4 decimals (`4.35`) |
| purpose | home, auto, consumer, business, education, other |
| amortisation_type | annuity, linear, bullet, interest_only, other |
| status | current, dpd30, dpd60, dpd90, defaulted, repaid, repurchased |
| borrower_resident_id / borrower_uscc | the borrower's primary identifier (one of them is required) |
| borrower_phone, borrower_email | optional further identifiers, for blacklist screening only |
| borrower_name, borrower_address, borrower_income | accepted and dropped on reading |

Borrower identifiers become keyed hashes with the alliance key (the fraud ledger's scheme, so a pool can
be screened against the blacklist); raw values are never stored. Any other column is refused, since it
could carry personal data nobody decided to handle. The loan id hashes the *originator's* bank code with the
loan reference, so a loan bought from another bank and pledged again keeps the id its originator gave it
(and double financing is caught across banks). A tape with a bad row imports nothing: the error
lists every bad row with field, code and reason, so it can be fixed in one pass.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import Any

from node.assets.records import Amortisation, LoanPurpose, LoanRecord, LoanStatus, loan_id_of
from node.crypto.keyed_hash import hash_identifier, indicator_hash
from node.errors import InvalidInput
from node.ledger.identifiers import IdentifierType, InvalidIdentifier
from node.setup import BANK_CODE

REQUIRED_COLUMNS = ("loan_reference", "origination_date", "maturity_date", "original_principal",
                    "current_principal", "currency", "interest_rate", "purpose", "amortisation_type", "status",
                    "arrears_balance")
PRIMARY_IDENTIFIERS = {"borrower_resident_id": IdentifierType.CN_RESIDENT_ID,
                       "borrower_uscc": IdentifierType.USCC}
SECONDARY_IDENTIFIERS = {"borrower_phone": IdentifierType.PHONE, "borrower_email": IdentifierType.EMAIL}
DROPPED_COLUMNS = ("borrower_name", "borrower_address", "borrower_income")
KNOWN_COLUMNS = frozenset(REQUIRED_COLUMNS) | set(PRIMARY_IDENTIFIERS) | set(SECONDARY_IDENTIFIERS) \
    | set(DROPPED_COLUMNS) | {"originator"}
# Minor-unit exponents (ISO 4217) of the currencies the alliance's pools are denominated in.
SUPPORTED_CURRENCIES = {"CNY": 2, "HKD": 2, "USD": 2, "EUR": 2, "GBP": 2, "SGD": 2, "JPY": 0}
MAX_RATE_PERCENT = 100
MAX_RATE_MICROS = MAX_RATE_PERCENT * 10_000  # interest rates are kept in units of 10^-4 percent
MAX_AMOUNT = 2**63  # stored as BIGINT; far above any loan in minor units
# Scaling in the default context rounds to 28 digits and overflows past 1e999999: a tape's amount could lose its
# extra decimals unnoticed (1.0000000000000000000000000000001 imported as 1.00), vanish (1e-999999999 as 0) or raise
# decimal.Overflow (1e999999999). Scaled in this one, it stays exact and is refused for what it is.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
MAX_LOAN_REFERENCE = 64
MAX_ERRORS_IN_MESSAGE = 5
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class LoanTapeRejected(InvalidInput):
    code = "loan_tape_rejected"


@dataclass(frozen=True)
class TapeLoan:
    """One imported loan: its canonical record, the local reference and every borrower indicator."""

    loan_reference: str
    originator_code: str
    record: LoanRecord
    # (identifier type, key epoch, keyed hash): every identifier under every epoch's key held, for screening
    # against fraud reports hashed before a key rotation; the primary identifier first.
    indicators: tuple[tuple[str, int, bytes], ...]


class _RowError(Exception):
    def __init__(self, field: str, code: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.code, self.reason = field, code, reason


def valid_loan_reference(reference: str) -> bool:
    """1 to MAX_LOAN_REFERENCE printable characters, no space at either end: the rule of a tape's loan_reference,
    and of a booked loan's, which goes into a pool's tape later. A tape's cells are read stripped, so a loan booked as
    " " made a row the tape refused, and every pool with it; one booked as "L-1 " went in as "L-1", another loan's
    reference, and was not the booked loan a pool of it named."""
    return 0 < len(reference) <= MAX_LOAN_REFERENCE and reference.isprintable() and reference == reference.strip()


def parse_tape(lines: Iterable[str], *, alliance_key: bytes, key_epoch: int, originator_code: str,
               screening_keys: Mapping[int, bytes] | None = None,
               on_row: Callable[[int], None] | None = None) -> list[TapeLoan]:
    """Every row as a TapeLoan, or LoanTapeRejected listing every bad row (row = CSV line number).

    Records are hashed under `alliance_key` (epoch `key_epoch`); borrower identifiers are also hashed under
    every key of `screening_keys` (epoch -> key), so that fraud reports from before a rotation still match.
    """
    keys = {**(screening_keys or {}), key_epoch: alliance_key}
    try:
        return _parse_rows(csv.DictReader(lines), keys, key_epoch, originator_code, on_row)
    except csv.Error as exc:
        raise LoanTapeRejected(f"the loan tape is not valid CSV: {exc}") from None


def _parse_rows(reader: csv.DictReader[str], keys: dict[int, bytes], key_epoch: int, originator_code: str,
                on_row: Callable[[int], None] | None) -> list[TapeLoan]:
    _check_header(reader.fieldnames)
    loans: list[TapeLoan] = []
    errors: list[dict[str, object]] = []
    seen: dict[bytes, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:  # more cells than header columns
            errors.append({"row": line, "field": "", "code": "extra_cells", "reason": "more cells than columns"})
            continue
        try:
            loan = _parse_row(row, keys, key_epoch, originator_code)
        except _RowError as exc:
            errors.append({"row": line, "field": exc.field, "code": exc.code, "reason": exc.reason})
            continue
        if loan.record.loan_id in seen:
            errors.append({"row": line, "field": "loan_reference", "code": "duplicate",
                           "reason": f"the same loan is already on row {seen[loan.record.loan_id]}"})
            continue
        seen[loan.record.loan_id] = line
        loans.append(loan)
        if on_row is not None:
            on_row(len(loans))
    if errors:
        shown = "; ".join(f"row {e['row']} {e['field']}: {e['reason']}" for e in errors[:MAX_ERRORS_IN_MESSAGE])
        more = f" (and {len(errors) - MAX_ERRORS_IN_MESSAGE} more)" if len(errors) > MAX_ERRORS_IN_MESSAGE else ""
        raise LoanTapeRejected(f"{len(errors)} bad row(s), nothing imported: {shown}{more}", details=errors)
    if not loans:
        raise LoanTapeRejected("the loan tape has no rows")
    return loans


def _check_header(fieldnames: Any) -> None:
    if not fieldnames:
        raise LoanTapeRejected("the loan tape is empty (a header row is required)")
    columns = [name.strip() for name in fieldnames]
    unknown = sorted(set(columns) - KNOWN_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if unknown or missing or not set(PRIMARY_IDENTIFIERS) & set(columns):
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if unknown and missing:
            # Quite possibly a tape without its header row, whose first row is read as the header: its "names" are
            # a borrower's ID, phone and name. Positions, then; a real header (nothing missing) is quoted below.
            positions = [i for i, name in enumerate(columns, start=1) if name not in KNOWN_COLUMNS]
            problems.append(f"unknown columns at positions {positions} (refused: they may hold personal data)")
        elif unknown:
            problems.append(f"unknown columns {unknown} (refused: they may hold personal data)")
        if not set(PRIMARY_IDENTIFIERS) & set(columns):
            problems.append(f"one of {sorted(PRIMARY_IDENTIFIERS)} is required")
        raise LoanTapeRejected("bad loan tape header: " + "; ".join(problems))
    if len(set(columns)) != len(columns):
        raise LoanTapeRejected("bad loan tape header: a column appears twice")


def _parse_row(row: dict[str, str], keys: dict[int, bytes], epoch: int, originator: str) -> TapeLoan:
    cells = {name.strip(): (value or "").strip() for name, value in row.items()}
    reference = cells["loan_reference"]
    if not valid_loan_reference(reference):
        raise _RowError("loan_reference", "bad_format", f"must be 1 to {MAX_LOAN_REFERENCE} printable characters")
    currency = cells["currency"].upper()
    if currency not in SUPPORTED_CURRENCIES:
        raise _RowError("currency", "unsupported", f"must be one of {sorted(SUPPORTED_CURRENCIES)}")
    exponent = SUPPORTED_CURRENCIES[currency]
    origination, maturity = _date(cells, "origination_date"), _date(cells, "maturity_date")
    if maturity <= origination:
        raise _RowError("maturity_date", "out_of_range", "must be after origination_date")
    original = _amount(cells, "original_principal", exponent)
    current = _amount(cells, "current_principal", exponent)
    arrears = _amount(cells, "arrears_balance", exponent)
    if original == 0:
        raise _RowError("original_principal", "out_of_range", "must be positive")
    if current > original:
        raise _RowError("current_principal", "out_of_range", "must not exceed original_principal")
    originator = cells.get("originator", "").upper() or originator
    if not BANK_CODE.match(originator):
        raise _RowError("originator", "bad_format", "must be a bank code: 2-32 of A-Z, 0-9, '_' or '-'")
    indicators = _indicators(cells, keys, epoch)
    record = LoanRecord(
        loan_id=loan_id_of(keys[epoch], originator, reference), borrower_hash=indicators[0][2], key_epoch=epoch,
        origination_date=_yyyymmdd(origination), maturity_date=_yyyymmdd(maturity), original_principal=original,
        current_principal=current, currency=currency, interest_rate_micros=_rate(cells["interest_rate"]),
        purpose=_enum(cells, "purpose", LoanPurpose), amortisation=_enum(cells, "amortisation_type", Amortisation),
        status=_enum(cells, "status", LoanStatus), arrears_balance=arrears)
    return TapeLoan(reference, originator, record, indicators)


def _indicators(cells: dict[str, str], keys: dict[int, bytes], epoch: int) -> tuple[tuple[str, int, bytes], ...]:
    """Every identifier's indicator under the current epoch's key first, then under the earlier ones."""
    found: list[tuple[str, int, bytes]] = []
    for column, kind in (*PRIMARY_IDENTIFIERS.items(), *SECONDARY_IDENTIFIERS.items()):
        raw = cells.get(column, "")
        if not raw:
            continue
        try:
            canonical, indicator = hash_identifier(keys[epoch], kind, raw)
        except InvalidIdentifier as exc:
            raise _RowError(column, str(exc.code), exc.reason) from None
        found.append((kind.value, epoch, indicator))
        found.extend((kind.value, e, indicator_hash(k, kind, canonical)) for e, k in sorted(keys.items()) if e != epoch)
    if not found or found[0][0] not in {k.value for k in PRIMARY_IDENTIFIERS.values()}:
        raise _RowError("borrower_resident_id", "missing", "the borrower needs a resident ID or a USCC")
    return tuple(found)


def _date(cells: dict[str, str], field: str) -> date:
    # The documented form only: date.fromisoformat also reads 20240115 and ISO week dates (2024-W03-1), which a tape
    # exported with another date format must not pass as.
    if not _ISO_DATE.fullmatch(cells[field]):
        raise _RowError(field, "bad_format", "must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(cells[field])
    except ValueError:
        raise _RowError(field, "bad_format", "must be a date YYYY-MM-DD") from None


def _yyyymmdd(day: date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


def _amount(cells: dict[str, str], field: str, exponent: int) -> int:
    try:
        value = Decimal(cells[field])
    except InvalidOperation:
        raise _RowError(field, "bad_format", "must be a decimal amount") from None
    if not value.is_finite() or value < 0:
        raise _RowError(field, "out_of_range", "must be a non-negative amount")
    minor = value.scaleb(exponent, _EXACT)
    if minor != minor.to_integral_value(context=_EXACT):
        raise _RowError(field, "bad_format", f"has more than {exponent} decimals for its currency")
    if minor >= MAX_AMOUNT:
        raise _RowError(field, "out_of_range", "is too large")
    return int(minor)


def _rate(text: str) -> int:
    try:
        percent = Decimal(text)
    except InvalidOperation:
        raise _RowError("interest_rate", "bad_format", "must be a percentage such as 4.35") from None
    if not percent.is_finite() or not 0 <= percent <= MAX_RATE_PERCENT:
        raise _RowError("interest_rate", "out_of_range", f"must be between 0 and {MAX_RATE_PERCENT} percent")
    micros = percent.scaleb(4, _EXACT)
    if micros != micros.to_integral_value(context=_EXACT):
        raise _RowError("interest_rate", "bad_format", "has more than 4 decimals")
    return int(micros)


def _enum(cells: dict[str, str], field: str, kind: Any) -> Any:
    try:
        return kind[cells[field].lower()]
    except KeyError:
        raise _RowError(field, "unknown_value", f"must be one of {[m.name for m in kind]}") from None
