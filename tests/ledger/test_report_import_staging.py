"""Imports larger than one transaction, on SQLite and PostgreSQL with a real chain: written in chunks as an import
still staging, accepted all at once; never published before, never after a kill, an abort or a changed file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from node.errors import NotFound
from node.ledger import report_import, report_staging
from node.ledger.report_import import WAITING, FileChanged, ImportRefused, import_reports
from node.ledger.report_staging import ImportDiscarded, discard_abandoned_imports, import_lock
from node.ledger.reports import ReportIntake, ReportRequest, report_status
from node.ledger.republish import republish_active_reports
from node.ledger.retention import prune
from node.node_status import store_figures
from node.runtime import NodeContext
from node.store.ledger_tables import FraudReport, OutboxRecord, ReportImport
from tests.conftest import LedgerNodes, moved_to_store
from tests.ledger.test_publisher import onchain_records

HEADER = "report,identifier_type,identifier,category,confidence,valid_days,case_reference\n"
CHUNK = 20  # records per transaction in these tests (CHUNK_ROWS is 10,000)


@pytest.fixture
def bank(ledger_nodes: LedgerNodes, store_url: str) -> Iterator[NodeContext]:
    """Bank A on a fresh store (SQLite or PostgreSQL), holding the epoch-1 alliance key."""
    node = moved_to_store(ledger_nodes.nodes[0], store_url)
    node.keyring.store_key(1, os.urandom(32), source="generated")
    yield node
    node.close()


def phones(first: int, count: int) -> list[str]:
    return [f",phone,139{n:08d},telecom_fraud,90,365,\n" for n in range(first, first + count)]


def write(tmp_path: Path, rows: list[str], name: str = "reports.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(rows))
    return path


def stored(node: NodeContext) -> tuple[int, int, int]:
    """(reports, outbox records, imports) in the store, accepted or not."""
    with node.store.session() as session:
        return tuple(session.scalar(select(func.count()).select_from(table)) or 0  # type: ignore[return-value]
                     for table in (FraudReport, OutboxRecord, ReportImport))


def staged_report_ids(node: NodeContext) -> list[str]:
    with node.store.session() as session:
        return list(session.scalars(select(FraudReport.report_id).where(FraudReport.import_id.is_not(None))))


def import_file(node: NodeContext, path: Path) -> report_import.ImportResult:
    return import_reports(node.report_intake, path, submitted_by="cli", chunk_rows=CHUNK)


@pytest.fixture
def after_chunks(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, Callable[[], object]], None]:
    """Run an action once the import's `n`th chunk is committed, inside its writing pass."""

    def arrange(n: int, action: Callable[[], object]) -> None:
        real = ReportIntake.store_prepared
        seen = []

        def store_prepared(self: ReportIntake, *args: Any, **kwargs: Any) -> Any:
            accepted = real(self, *args, **kwargs)
            if kwargs.get("import_id") is not None:
                seen.append(1)
                if len(seen) == n:
                    action()
            return accepted

        monkeypatch.setattr(ReportIntake, "store_prepared", store_prepared)

    return arrange


def test_import_over_the_old_cap_is_written_in_chunks_and_published_whole(
        bank: NodeContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file was capped (MAX_ROWS, 200,000 rows; 5 here) because it was written in one transaction: now any file up
    to MAX_FILE_BYTES is imported, in transactions of CHUNK records."""
    monkeypatch.setattr(report_import, "MAX_ROWS", 5, raising=False)
    path = write(tmp_path, [*phones(0, 150), "g,phone,13800138000,telecom_fraud,80,365,C-1\n",
                            "g,email,mule@example.com,telecom_fraud,80,365,C-1\n"])
    transactions: list[int] = []
    inserted = [0]

    def count_insert(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if "outbox_records" in statement and ("INSERT" in statement or "COPY" in statement):
            inserted[0] += len(parameters) if many else 1

    def count_commit(_conn: Any) -> None:
        if inserted[0]:
            transactions.append(inserted[0])
            inserted[0] = 0

    event.listen(bank.store.engine, "before_cursor_execute", count_insert)
    event.listen(bank.store.engine, "commit", count_commit)
    try:
        result = import_file(bank, path)
    finally:
        event.remove(bank.store.engine, "before_cursor_execute", count_insert)
        event.remove(bank.store.engine, "commit", count_commit)
    assert (result.rows, result.reports, result.created) == (152, 151, 151)
    if bank.store.engine.dialect.name == "sqlite":  # COPY rows are not seen by the cursor event on PostgreSQL
        assert len(transactions) >= 152 // CHUNK and max(transactions) <= CHUNK + 1 and sum(transactions) == 152
    with bank.store.session() as session:
        done = session.scalars(select(ReportImport)).one()
    assert (done.state, done.rows, done.reports, done.created, done.source) == ("complete", 152, 151, 151, path.name)
    assert bank.publisher.drain().records == 152
    assert len(onchain_records(bank.fraud_ledger())) == 152


def test_import_with_a_bad_last_row_writes_nothing(bank: NodeContext, tmp_path: Path) -> None:
    path = write(tmp_path, [*phones(0, 100), ",phone,139,telecom_fraud,90,365,\n"])
    with pytest.raises(ImportRefused) as refused:
        import_file(bank, path)
    assert [(p.line, p.code) for p in refused.value.problems] == [(102, "bad_length")]
    assert stored(bank) == (0, 0, 0)


def test_staged_rows_are_neither_published_nor_shown_until_the_import_completes(
        bank: NodeContext, tmp_path: Path, after_chunks: Callable[[int, Callable[[], object]], None]) -> None:
    bank.report_intake.accept(ReportRequest([("phone", "13700137000")], "money_mule", 70), submitted_by="api")
    looked: dict[str, object] = {}

    def look() -> None:
        staged = staged_report_ids(bank)
        looked["staged"] = len(staged)
        looked["published"] = bank.publisher.drain().records  # only the report accepted on its own
        with pytest.raises(NotFound, match="the import writing it has not completed"), \
                bank.store.session() as session:
            report_status(session, staged[0])
        with bank.store.session() as session:
            looked["outbox"] = store_figures(bank, session).outbox

    after_chunks(2, look)
    result = import_file(bank, write(tmp_path, phones(0, 100)))
    assert looked == {"staged": 2 * CHUNK, "published": 1, "outbox": {"confirmed": 1, "staged": 2 * CHUNK}}
    assert result.created == 100
    with bank.store.session() as session:
        assert report_status(session, staged_report_ids(bank)[0]).state == "queued"
        assert store_figures(bank, session).outbox == {"confirmed": 1, "queued": 100}
    assert bank.publisher.drain().records == 100
    assert len(onchain_records(bank.fraud_ledger())) == 101


def test_staged_rows_are_not_republished_until_the_import_completes(
        bank: NodeContext, tmp_path: Path, after_chunks: Callable[[int, Callable[[], object]], None]) -> None:
    bank.report_intake.accept(ReportRequest([("phone", "13700137000")], "money_mule", 70), submitted_by="api")
    republished: list[int] = []

    def republish() -> None:
        bank.keyring.store_key(2, os.urandom(32), source="generated")
        republished.append(republish_active_reports(bank.store, bank.keyring, bank.vault).reports)

    after_chunks(2, republish)
    import_file(bank, write(tmp_path, phones(0, 100)))  # hashed under epoch 1, the newest as it started writing
    assert republished == [1]  # the report accepted on its own, none of the staged ones
    assert republish_active_reports(bank.store, bank.keyring, bank.vault).reports == 100


class Aborted(BaseException):
    """Stands for what stops an import from outside its control (Ctrl-C is a BaseException too)."""


def test_import_aborted_while_writing_discards_its_rows(
        bank: NodeContext, tmp_path: Path, after_chunks: Callable[[int, Callable[[], object]], None]) -> None:
    path = write(tmp_path, phones(0, 100))

    def abort() -> None:
        assert stored(bank) == (3 * CHUNK, 3 * CHUNK, 1)
        raise Aborted

    after_chunks(3, abort)
    with pytest.raises(Aborted):
        import_file(bank, path)
    assert stored(bank) == (0, 0, 0)
    assert bank.publisher.drain().records == 0


KILLED_IMPORT = """
import json, os, signal, sys
from pathlib import Path
from node.config import load_settings
from node.ledger.report_import import import_reports
from node.ledger.reports import ReportIntake
from node.runtime import NodeContext

options = json.loads(sys.argv[1])
node = NodeContext(load_settings(Path(options.pop("data_dir")), **options))
real, chunks = ReportIntake.store_prepared, []

def store_prepared(self, *args, **kwargs):
    accepted = real(self, *args, **kwargs)
    chunks.append(1)
    if len(chunks) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9`: nothing of the import runs after its third chunk
    return accepted

ReportIntake.store_prepared = store_prepared
import_reports(node.report_intake, Path(sys.argv[2]), submitted_by="cli", chunk_rows=int(sys.argv[3]))
"""


def kill_import_after_three_chunks(node: NodeContext, path: Path) -> None:
    s = node.settings
    options = {"data_dir": str(s.data_dir), "network": s.network.value, "rpc_url": s.rpc_url,
               "deployment_file": str(s.deployment_file),
               "key_passphrase": s.key_passphrase.get_secret_value() if s.key_passphrase else None,
               "database_url": s.effective_database_url}
    done = subprocess.run([sys.executable, "-c", KILLED_IMPORT, json.dumps(options), str(path), str(CHUNK)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_import_killed_while_writing_publishes_nothing_and_the_file_imports_again(
        bank: NodeContext, tmp_path: Path) -> None:
    path = write(tmp_path, [*phones(0, 99), "g,phone,13800138000,telecom_fraud,80,365,C-1\n",
                            "g,email,mule@example.com,telecom_fraud,80,365,C-1\n"])
    kill_import_after_three_chunks(bank, path)
    assert stored(bank) == (3 * CHUNK, 3 * CHUNK, 1)  # the killed process's chunks, never accepted
    assert bank.publisher.drain().records == 0
    assert len(onchain_records(bank.fraud_ledger())) == 0

    result = import_file(bank, path)  # discards the dead import's rows first (its lock died with it)
    assert (result.rows, result.reports, result.created) == (101, 100, 100)
    assert stored(bank) == (100, 101, 1)
    assert bank.publisher.drain().records == 101
    assert len(onchain_records(bank.fraud_ledger())) == 101


def test_rows_of_a_killed_import_are_discarded_by_the_retention_pass_unless_an_import_runs(
        bank: NodeContext, tmp_path: Path) -> None:
    kill_import_after_three_chunks(bank, write(tmp_path, phones(0, 100)))
    with import_lock(bank.store):  # an import is running: its rows are not abandoned
        assert discard_abandoned_imports(bank.store) == 0
    assert stored(bank) == (3 * CHUNK, 3 * CHUNK, 1)
    assert prune(bank).abandoned_imports_discarded == 1  # the node's retention loop, first run as it starts
    assert stored(bank) == (0, 0, 0)


def test_overlapping_imports_store_each_report_once(
        bank: NodeContext, tmp_path: Path, after_chunks: Callable[[int, Callable[[], object]], None]) -> None:
    """A second import waits for the first's writing pass (the import lock); reports of both files are stored once
    and counted as created by the import that stored them first."""
    first, second = write(tmp_path, phones(0, 60), "first.csv"), write(tmp_path, phones(40, 60), "second.csv")
    results: dict[str, report_import.ImportResult] = {}
    second_waits = threading.Event()

    def run_second() -> None:
        results["second"] = import_reports(bank.report_intake, second, submitted_by="cli", chunk_rows=CHUNK,
                                           progress=lambda doing, _read: doing == WAITING and second_waits.set())

    other = threading.Thread(target=run_second)

    def start_second_and_wait() -> None:
        other.start()
        assert second_waits.wait(timeout=30)  # for the lock, while the first import writes
        other.join(timeout=1)
        assert other.is_alive()

    after_chunks(1, start_second_and_wait)
    results["first"] = import_file(bank, first)
    other.join(timeout=60)
    assert (results["first"].created, results["second"].created) == (60, 40)
    assert stored(bank)[:2] == (100, 100)
    assert bank.publisher.drain().records == 100
    assert len({r.indicator for r in onchain_records(bank.fraud_ledger())}) == 100


def test_report_sent_to_the_api_while_an_import_stages_it_is_accepted_once(
        bank: NodeContext, tmp_path: Path, after_chunks: Callable[[int, Callable[[], object]], None]) -> None:
    """The API's copy replaces the import's staged copy (it would be lost if the import then failed); the import
    then finds the report accepted."""
    path = write(tmp_path, phones(0, 60))
    accepted: list[bool] = []

    def send_staged_report() -> None:
        accepted.append(bank.report_intake.accept(ReportRequest([("phone", "13900000005")], "telecom_fraud", 90,
                                                                365), submitted_by="api").created)
        raise Aborted

    after_chunks(1, send_staged_report)
    with pytest.raises(Aborted):
        import_file(bank, path)
    assert accepted == [True]  # new: the staged copy was no report of the store's
    assert stored(bank) == (1, 1, 0)  # the import's rows discarded, the API's report kept
    assert bank.publisher.drain().records == 1


@pytest.mark.parametrize("changed_row", [",phone,13999999999,telecom_fraud,90,365,\n",  # valid, other content
                                         ",phone,139,telecom_fraud,90,365,\n"])  # invalid
def test_file_changed_between_passes_imports_nothing(bank: NodeContext, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, changed_row: str) -> None:
    rows = phones(0, 100)
    path = write(tmp_path, rows)
    real_begin = report_staging.begin_import

    def begin_after_a_change(*args: Any, **kwargs: Any) -> int:
        write(tmp_path, [*rows[:-1], changed_row])
        return real_begin(*args, **kwargs)

    monkeypatch.setattr(report_import, "begin_import", begin_after_a_change)
    with pytest.raises(FileChanged) as refused:
        import_file(bank, path)
    assert refused.value.code == "file_changed"
    assert stored(bank) == (0, 0, 0)
    monkeypatch.undo()
    assert import_file(bank, write(tmp_path, rows)).created == 100


@pytest.mark.parametrize("after", [1, 5])  # mid-file; after the last chunk, before the import completes
def test_import_discarded_by_another_process_stops_and_accepts_nothing(
        bank: NodeContext, tmp_path: Path, after_chunks: Callable[[int, Callable[[], object]], None],
        after: int) -> None:
    """An import taken for abandoned (its PostgreSQL connection dropped, say, so its lock was released) is discarded
    by another process while it still runs: its next chunk, or its completion, finds it so and stops."""
    def discard_it() -> None:
        with bank.store.session() as session:
            import_id = session.scalars(select(ReportImport.id)).one()
        report_staging.discard_import(bank.store, import_id)

    after_chunks(after, discard_it)
    with pytest.raises(ImportDiscarded):
        import_file(bank, write(tmp_path, phones(0, 100)))
    assert stored(bank) == (0, 0, 0)
    assert bank.publisher.drain().records == 0
