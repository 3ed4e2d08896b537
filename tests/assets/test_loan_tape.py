"""Loan tape parsing: canonical records, hashed identifiers, dropped personal data, all-or-nothing errors."""

from __future__ import annotations

import csv
import io

import pytest

from node.assets.loan_tape import LoanTapeRejected, parse_tape
from node.assets.records import LEAF_ENCODING, LoanRecord, LoanStatus, loan_id_of
from node.crypto.keyed_hash import hash_identifier
from node.merkle import StandardMerkleTree, standard_leaf_hash
from tests.assets.conftest import ALLIANCE_KEY, HEADER, loan_row, phone, resident_id


def tape(rows: list[dict[str, str]], header: tuple[str, ...] = HEADER) -> io.StringIO:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(header), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    text.seek(0)
    return text


def parse(rows: list[dict[str, str]], header: tuple[str, ...] = HEADER) -> list:  # type: ignore[type-arg]
    return parse_tape(tape(rows, header), alliance_key=ALLIANCE_KEY, key_epoch=1, originator_code="BANK-A")


def test_parse_tape_builds_canonical_records() -> None:
    [loan] = parse([loan_row(7, interest_rate="4.3525", status="DPD30", arrears_balance="1200.5")])
    record = loan.record
    assert loan.loan_reference == "LN-000007"
    assert record.loan_id == loan_id_of(ALLIANCE_KEY, "BANK-A", "LN-000007")
    assert record.borrower_hash == hash_identifier(ALLIANCE_KEY, "cn_resident_id", resident_id(7))[1]
    assert loan.indicators == (("cn_resident_id", 1, record.borrower_hash),
                               ("phone", 1, hash_identifier(ALLIANCE_KEY, "phone", phone(7))[1]))
    assert (record.origination_date, record.maturity_date) == (20240115, 20290115)
    assert (record.original_principal, record.current_principal, record.arrears_balance) == (10000700, 9000750,
                                                                                           120050)
    assert (record.currency, record.interest_rate_micros, record.status) == ("CNY", 43525, LoanStatus.dpd30)


def test_parse_tape_drops_personal_data() -> None:
    [loan] = parse([loan_row(3)])
    text = repr(loan) + str(loan.record.to_json())
    for secret in (resident_id(3), phone(3), "Borrower Zhang 3", "Chang'an", "250000"):
        assert secret not in text


def test_parse_tape_uses_currency_minor_units() -> None:
    [loan] = parse([loan_row(1, currency="JPY", original_principal="1500000", current_principal="1000000")])
    assert (loan.record.original_principal, loan.record.current_principal) == (1500000, 1000000)
    with pytest.raises(LoanTapeRejected) as raised:
        parse([loan_row(1, currency="JPY", original_principal="15.5", current_principal="1")])
    assert raised.value.details == [{"row": 2, "field": "original_principal", "code": "bad_format",
                                     "reason": "has more than 0 decimals for its currency"}]


@pytest.mark.parametrize(("field", "value", "code"), [
    ("original_principal", "1e999999999", "out_of_range"),  # decimal.Overflow: the import was a 500
    ("arrears_balance", "1e-999999999", "bad_format"),  # vanished to 0 and was imported as 0
    ("current_principal", "1.0000000000000000000000000000001", "bad_format"),  # rounded to 1.00 and imported
    ("interest_rate", "4.350000000000000000000000000000001", "bad_format"),  # rounded to 4.35 and imported
], ids=["huge_exponent", "tiny_exponent", "amount_past_28_digits", "rate_past_28_digits"])
def test_parse_tape_refuses_numbers_the_default_decimal_context_would_round(field: str, value: str,
                                                                             code: str) -> None:
    with pytest.raises(LoanTapeRejected) as raised:
        parse([loan_row(1, **{field: value})])
    assert [(d["field"], d["code"]) for d in raised.value.details or []] == [(field, code)]


@pytest.mark.parametrize("value", ["20240115", "2024-W03-1", "2024W031", "2024-1-15", "2024-02-30", "15/01/2024"])
def test_parse_tape_refuses_a_date_not_written_yyyy_mm_dd(value: str) -> None:
    """date.fromisoformat also read 20240115 and ISO week dates, which the tape's documented form is not."""
    with pytest.raises(LoanTapeRejected) as raised:
        parse([loan_row(1, origination_date=value)])
    assert raised.value.details == [{"row": 2, "field": "origination_date", "code": "bad_format",
                                     "reason": "must be a date YYYY-MM-DD"}]


def test_parse_tape_reports_every_bad_row_and_imports_nothing() -> None:
    rows = [loan_row(1), loan_row(2, maturity_date="2020-01-01"), loan_row(3, borrower_resident_id="110101"),
            loan_row(4, status="late"), loan_row(1), loan_row(5, current_principal="999999999")]
    with pytest.raises(LoanTapeRejected) as raised:
        parse(rows)
    assert [(d["row"], d["field"], d["code"]) for d in raised.value.details or []] == [
        (3, "maturity_date", "out_of_range"), (4, "borrower_resident_id", "bad_length"),
        (5, "status", "unknown_value"), (6, "loan_reference", "duplicate"), (7, "current_principal", "out_of_range")]
    assert "5 bad row(s), nothing imported" in str(raised.value)
    assert resident_id(3) not in str(raised.value.details)


@pytest.mark.parametrize(("header", "problem"), [
    ((*HEADER, "borrower_employer"), "unknown columns ['borrower_employer']"),
    (tuple(c for c in HEADER if c != "currency"), "missing columns ['currency']"),
    (tuple(c for c in HEADER if c != "borrower_resident_id"), "one of ['borrower_resident_id', 'borrower_uscc']"),
])
def test_parse_tape_rejects_bad_header(header: tuple[str, ...], problem: str) -> None:
    with pytest.raises(LoanTapeRejected, match="bad loan tape header") as raised:
        parse([loan_row(1)], header)
    assert problem in str(raised.value)


def test_parse_tape_without_header_row_quotes_no_borrower_data() -> None:
    """The first row of a tape that lacks its header is read as the header: its "column names" are a borrower's."""
    text = tape([loan_row(1), loan_row(2)])
    text.readline()  # drop the header row
    with pytest.raises(LoanTapeRejected, match="bad loan tape header") as raised:
        parse_tape(text, alliance_key=ALLIANCE_KEY, key_epoch=1, originator_code="BANK-A")
    assert "unknown columns at positions [1, 2," in str(raised.value)
    for secret in (resident_id(1), phone(1), "Borrower Zhang 1", "Chang'an", "LN-000001"):
        assert secret not in str(raised.value) and secret not in str(raised.value.details)


def test_parse_tape_rejects_borrower_without_primary_identifier() -> None:
    with pytest.raises(LoanTapeRejected) as raised:
        parse([loan_row(1, borrower_resident_id="")])
    assert raised.value.details == [{"row": 2, "field": "borrower_resident_id", "code": "missing",
                                     "reason": "the borrower needs a resident ID or a USCC"}]


def test_record_leaf_matches_standard_tree_and_json_round_trip() -> None:
    records = [loan.record for loan in parse([loan_row(i) for i in range(5)])]
    tree = StandardMerkleTree.of([r.leaf_values() for r in records], LEAF_ENCODING)
    for record in records:
        assert record.leaf() == tree.leaf_hash(record.leaf_values())
        assert record.leaf() == standard_leaf_hash(LEAF_ENCODING, record.leaf_values())
        assert LoanRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(("field", "value"), [
    ("status", "lost"), ("currency", "cny"), ("loan_id", "0x12"), ("original_principal", -1),
    ("interest_rate_micros", True),
])
def test_record_from_json_rejects_malformed_field(field: str, value: object) -> None:
    [loan] = parse([loan_row(1)])
    data = loan.record.to_json() | {field: value}
    with pytest.raises(ValueError, match=field):
        LoanRecord.from_json(data)


def test_loan_id_matches_vector_from_openssl() -> None:
    # Loan ids are on chain and recomputed by every member: the derivation must never drift.
    # printf 'alliance/loan-id/v1\x00BANK-A\x00L-0001' | openssl dgst -sha256 -mac HMAC -macopt hexkey:0001...1f
    expected = "6c9bd2a5f815556fc3142a4b485c4ce2abe8b775f8b2a12252912047b7757371"
    assert loan_id_of(bytes(range(32)), "BANK-A", "L-0001").hex() == expected


def test_parse_tape_takes_loan_id_from_the_originator_column() -> None:
    header = (*HEADER, "originator")
    own, bought = parse([loan_row(1), loan_row(2, originator="bank-b")], header)
    assert own.record.loan_id == loan_id_of(ALLIANCE_KEY, "BANK-A", "LN-000001")
    assert bought.record.loan_id == loan_id_of(ALLIANCE_KEY, "BANK-B", "LN-000002")
    with pytest.raises(LoanTapeRejected) as raised:
        parse([loan_row(1, originator="B"), loan_row(2, originator="BANK-A"), loan_row(2)], header)
    assert [(d["row"], d["field"], d["code"]) for d in raised.value.details or []] == [
        (2, "originator", "bad_format"), (4, "loan_reference", "duplicate")]


def test_parse_tape_hashes_identifiers_under_every_screening_key() -> None:
    old_key = bytes(range(1, 33))
    [loan] = parse_tape(tape([loan_row(5)]), alliance_key=ALLIANCE_KEY, key_epoch=2, originator_code="BANK-A",
                        screening_keys={1: old_key, 2: ALLIANCE_KEY})
    assert loan.record.key_epoch == 2 and loan.record.loan_id == loan_id_of(ALLIANCE_KEY, "BANK-A", "LN-000005")
    assert loan.indicators == (
        ("cn_resident_id", 2, hash_identifier(ALLIANCE_KEY, "cn_resident_id", resident_id(5))[1]),
        ("cn_resident_id", 1, hash_identifier(old_key, "cn_resident_id", resident_id(5))[1]),
        ("phone", 2, hash_identifier(ALLIANCE_KEY, "phone", phone(5))[1]),
        ("phone", 1, hash_identifier(old_key, "phone", phone(5))[1]))
