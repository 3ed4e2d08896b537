"""CSV import of reports: grouped rows, all-or-nothing with every bad row listed, malformed files."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from node.errors import InvalidInput
from node.ledger import report_import
from node.ledger.report_import import CHECKING, MAX_FILE_BYTES, WRITING, ImportRefused, import_reports, import_work
from node.runtime import NodeContext
from node.store.ledger_tables import FraudReport, OutboxRecord
from tests.conftest import LedgerNodes

HEADER = "report,identifier_type,identifier,category,confidence,valid_days,case_reference\n"


@pytest.fixture
def bank(ledger_nodes: LedgerNodes) -> NodeContext:
    node = ledger_nodes.nodes[0]
    node.keyring.store_key(1, os.urandom(32), source="generated")
    return node


def write(tmp_path: Path, text: str, name: str = "reports.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def counts(node: NodeContext) -> tuple[int, int]:
    with node.store.session() as session:
        return (session.scalar(select(func.count()).select_from(FraudReport)) or 0,
                session.scalar(select(func.count()).select_from(OutboxRecord)) or 0)


def test_import_groups_rows_into_reports(bank: NodeContext, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER
                 + "case-1,phone,13800138000,telecom_fraud,90,365,C-1\n"
                 + "case-1,cn_resident_id,11010519491231002X,telecom_fraud,90,365,C-1\n"
                 + ",email,mule@example.com,money_mule,60,,\n")
    seen: list[tuple[str, int]] = []
    result = import_reports(bank.report_intake, path, submitted_by="cli",
                            progress=lambda phase, read: seen.append((phase, read)))
    assert (result.rows, result.reports, result.created) == (3, 2, 2)
    size = path.stat().st_size  # progress: each pass reads the whole file
    assert [sum(read for doing, read in seen if doing == name) for name in (CHECKING, WRITING)] == [size, size]
    assert import_work(path) == 2 * size
    assert counts(bank) == (2, 3)
    again = import_reports(bank.report_intake, path, submitted_by="cli")
    assert (again.reports, again.created) == (2, 0)
    assert counts(bank) == (2, 3)


def test_import_with_bad_rows_imports_nothing_and_lists_every_problem(bank: NodeContext, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER
                 + ",phone,13800138000,telecom_fraud,90,365,\n"
                 + ",cn_resident_id,110105194912310021,identity_theft,90,365,\n"
                 + ",phone,13900139000,telecom_fraud,ninety,365,\n"
                 + "g,phone,13700137000,telecom_fraud,90,365,\n"
                 + "g,phone,13600136000,money_mule,90,365,\n")
    with pytest.raises(ImportRefused) as refused:
        import_reports(bank.report_intake, path, submitted_by="cli")
    assert [(p.line, p.code) for p in refused.value.problems] == [
        (3, "checksum_failed"), (4, "invalid_confidence"), (6, "inconsistent_report")]
    assert "110105194912310021" not in str(refused.value.details)
    assert counts(bank) == (0, 0)


def test_import_of_more_reports_than_the_database_takes_bind_parameters(bank: NodeContext, tmp_path: Path) -> None:
    """The ids of a whole file went into one IN list: past the database's bind-parameter limit (65,535 on
    PostgreSQL; 999 here, as on a SQLite older than 3.32) the import failed as 'the database is unavailable'."""
    bank.store.engine.dispose()
    event.listen(bank.store.engine, "connect",
                 lambda connection, _record: connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999))
    rows = "".join(f",phone,139{n:08d},telecom_fraud,90,365,\n" for n in range(1_200))
    result = import_reports(bank.report_intake, write(tmp_path, HEADER + rows), submitted_by="cli")
    assert (result.reports, result.created) == (1_200, 1_200)
    assert counts(bank) == (1_200, 1_200)


def test_import_writes_each_chunk_in_report_id_order(bank: NodeContext, tmp_path: Path) -> None:
    """The report ids are random: inserted sorted, a chunk walks the B-trees keyed by report id once, and holds the
    write lock for less time."""
    rows = [f",phone,139{n:08d},telecom_fraud,90,365,\n" for n in range(10)]
    result = import_reports(bank.report_intake, write(tmp_path, HEADER + "".join(rows)), submitted_by="cli",
                            chunk_rows=5)
    assert (result.reports, result.created) == (10, 10)
    with bank.store.session() as session:
        stored = list(session.scalars(select(OutboxRecord.report_id).order_by(OutboxRecord.id)))
    assert stored[:5] == sorted(stored[:5]) and stored[5:] == sorted(stored[5:]) and len(set(stored)) == 10


def test_import_refuses_a_report_by_its_first_problem_on_each_of_its_lines(bank: NodeContext,
                                                                           tmp_path: Path) -> None:
    """A report of several rows is checked as a whole, as one request would be: its problem is every row's."""
    many = "".join(f"big,phone,139{n:08d},telecom_fraud,90,365,\n" for n in range(21))
    path = write(tmp_path, HEADER
                 + "g,phone,13800138000,telecom_fraud,90,365,\n"
                 + ",phone,13700137000,telecom_fraud,90,365,\n"
                 + "g,cn_resident_id,110105194912310021,telecom_fraud,90,365,\n"
                 + "h,phone,13600136000,no_such_category,90,365,\n"
                 + "h,phone,1,no_such_category,90,365,\n" + many)
    with pytest.raises(ImportRefused) as refused:
        import_reports(bank.report_intake, path, submitted_by="cli")
    assert [(p.line, p.code) for p in refused.value.problems] == [
        (2, "checksum_failed"), (4, "checksum_failed"), (5, "unknown_category"), (6, "unknown_category"),
        *((line, "too_many_identifiers") for line in range(7, 28))]
    assert str(refused.value.problems[0]).count("identifier 1:") == 1
    assert counts(bank) == (0, 0)


def test_import_lists_the_first_problems_of_a_file_of_many(bank: NodeContext, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of millions of bad rows (the wrong file) held a message for each in memory."""
    monkeypatch.setattr(report_import, "MAX_LISTED_PROBLEMS", 2)
    rows = "".join(f",phone,139{n:08d},telecom_fraud,ninety,365,\n" for n in range(5))
    with pytest.raises(ImportRefused, match=r"^5 of 6 rows are invalid \(the first 2 are listed\)") as refused:
        import_reports(bank.report_intake, write(tmp_path, HEADER + ",phone,13800138000,telecom_fraud,90,365,\n"
                                                 + rows), submitted_by="cli")
    assert [p.line for p in refused.value.problems] == [3, 4]


def test_import_refuses_cells_it_would_drop_unread(bank: NodeContext, tmp_path: Path) -> None:
    """A repeated column kept only its last cell, and cells past the header were ignored: a file whose columns
    were shifted or doubled was imported with identifiers silently left out."""
    doubled = write(tmp_path, "identifier_type,identifier,category,confidence,identifier\n"
                              "phone,13800138000,telecom_fraud,90,13900139000\n", "doubled.csv")
    with pytest.raises(InvalidInput) as refused:
        import_reports(bank.report_intake, doubled, submitted_by="cli")
    assert refused.value.code == "malformed_file" and "(column 5)" in str(refused.value)
    assert "13900139000" not in str(refused.value)
    longer = write(tmp_path, "identifier_type,identifier,category,confidence\n"
                             "phone,13800138000,telecom_fraud,90\n"
                             "phone,13700137000,telecom_fraud,90,13600136000\n", "longer.csv")
    with pytest.raises(ImportRefused) as rows_refused:
        import_reports(bank.report_intake, longer, submitted_by="cli")
    assert [(p.line, p.code) for p in rows_refused.value.problems] == [(3, "extra_cells")]
    assert "13600136000" not in str(rows_refused.value.details)
    assert counts(bank) == (0, 0)


@pytest.mark.parametrize(("content", "code"), [
    ("identifier_type,identifier\nphone,13800138000\n", "malformed_file"),
    (HEADER, "empty_file"),
])
def test_import_refuses_malformed_files(bank: NodeContext, tmp_path: Path, content: str, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        import_reports(bank.report_intake, write(tmp_path, content), submitted_by="cli")
    assert refused.value.code == code
    assert counts(bank) == (0, 0)


def test_import_refuses_binary_and_missing_files(bank: NodeContext, tmp_path: Path) -> None:
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    oversized = tmp_path / "huge.csv"
    with oversized.open("wb") as handle:  # sparse: nothing is written to the disk
        handle.truncate(MAX_FILE_BYTES + 1)
    cases = ((binary, "malformed_file"), (tmp_path / "missing.csv", "file_not_found"), (tmp_path, "malformed_file"),
             (oversized, "file_too_large"))
    for path, code in cases:
        with pytest.raises(InvalidInput) as refused:
            import_reports(bank.report_intake, path, submitted_by="cli")
        assert refused.value.code == code
        assert str(refused.value).startswith(f"reports file {path} ")
    assert counts(bank) == (0, 0)
