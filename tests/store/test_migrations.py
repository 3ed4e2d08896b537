import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text

from node.auth.apikeys import InvalidApiKey, Role, authenticate, create_api_key, list_api_keys, revoke_api_key
from node.store import db
from node.store.db import Store, StoreUnavailable, UnknownSchemaRevision, alembic_config
from node.store.ledger_tables import FraudReport, OutboxRecord
from node.store.models import as_utc

ROOT = Path(__file__).resolve().parents[2]


def test_migrate_creates_schema_idempotently(store: Store) -> None:
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert {"alembic_version", "api_keys"} <= tables


def test_migrate_downgrade_to_base_removes_tables(store: Store) -> None:
    command.downgrade(alembic_config(store.engine), "base")
    assert "api_keys" not in inspect(store.engine).get_table_names()


def schema_revision(store: Store) -> set[str]:
    with store.engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def test_migrate_refuses_a_store_migrated_by_a_newer_node_and_leaves_it(store: Store) -> None:
    """A downgraded node met a revision it does not have: it was alembic's CommandError, a traceback."""
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_newer'"))
    tables = set(inspect(store.engine).get_table_names())
    older = Store(store.url)
    try:
        with pytest.raises(UnknownSchemaRevision, match="schema revision 0099_newer, which this version"):
            older.migrate()
    finally:
        older.close()
    assert schema_revision(store) == {"0099_newer"}
    assert set(inspect(store.engine).get_table_names()) == tables


def test_migrate_upgrades_a_store_at_an_older_revision(store_url: str) -> None:
    store = Store(store_url)
    try:
        command.upgrade(alembic_config(store.engine), "0001")
        with store.transaction() as session:
            issued = create_api_key(session, Role.analyst, "kept")
        store.migrate()
        assert schema_revision(store) == {"0011"}
        with store.session() as session:
            assert authenticate(session, issued.token).label == "kept"
    finally:
        store.close()


def test_migration_0007_keeps_sealed_identifiers_and_lets_them_be_erased(store_url: str) -> None:
    """0007 makes outbox_records.sealed_identifier nullable (retention erases it) on a table with rows; the
    downgrade gives erased rows an empty value instead of failing on the NOT NULL it restores."""
    store = Store(store_url)
    try:
        command.upgrade(alembic_config(store.engine), "0006")
        with store.engine.begin() as connection:
            connection.execute(text("INSERT INTO fraud_reports VALUES ('r', 1, 50, 0, 1, :z, :z, 'k', :at, NULL)"),
                               {"z": b"\0" * 32, "at": "2026-01-01 00:00:00"})
            insert_record = text("INSERT INTO outbox_records (report_id, position, identifier_type, epoch, indicator, "
                                 "sealed_identifier, state) VALUES ('r', :p, 1, 1, :i, :s, 'queued')")
            for position, sealed in ((0, b"sealed-0"), (1, b"sealed-1")):
                connection.execute(insert_record, {"p": position, "i": bytes([position]) * 32, "s": sealed})
        store.migrate()
        with store.engine.begin() as connection:
            connection.execute(text("UPDATE outbox_records SET sealed_identifier = NULL WHERE position = 1"))
        command.downgrade(alembic_config(store.engine), "0006")
        with store.engine.connect() as connection:
            rows = connection.execute(text("SELECT position, sealed_identifier FROM outbox_records ORDER BY position"))
            assert [(p, bytes(s)) for p, s in rows] == [(0, b"sealed-0"), (1, b"")]
        assert not next(c for c in inspect(store.engine).get_columns("outbox_records")
                        if c["name"] == "sealed_identifier")["nullable"]
    finally:
        store.close()


def _nullable(store: Store, table: str, column: str) -> bool:
    return bool(next(c for c in inspect(store.engine).get_columns(table) if c["name"] == column)["nullable"])


def test_migration_0008_lets_applicants_be_erased_and_dates_repaid_loans(store_url: str) -> None:
    """0008 makes an application's sealed applicant and fingerprints nullable (retention erases them) and adds
    booked_loans.repaid_at, set to the upgrade's time for loans already repaid; the downgrade gives erased
    applicants an empty value instead of failing on the NOT NULL it restores, and keeps the rest."""
    store = Store(store_url)
    try:
        command.upgrade(alembic_config(store.engine), "0007")
        with store.engine.begin() as connection:
            for n in (1, 2):
                connection.execute(text(
                    "INSERT INTO applications (application_id, received_at, submitted_by, channel, scenario, "
                    "applicant_fingerprint, amount, currency, term_months, sealed_applicant, bank_inputs, state) "
                    "VALUES (:id, :at, 'k', 'web', 'loan', :fp, '100', 'CNY', 12, :sealed, '{}', 'booked')"),
                    {"id": f"app_{n}", "at": "2026-01-01 00:00:00", "fp": b"fp-%d" % n, "sealed": b"sealed-%d" % n})
                connection.execute(text(
                    "INSERT INTO booked_loans (loan_reference, application_id, applicant_fingerprint, region_code, "
                    "principal_minor, current_principal_minor, arrears_minor, currency, annual_rate_micros, "
                    "term_months, purpose, origination_date, maturity_date, status, booked_at) VALUES (:ref, :id, "
                    ":fp, '11', 100, 100, 0, 'CNY', 1, 12, 'consumer', '2026-01-01', '2027-01-01', :status, :at)"),
                    {"ref": f"L{n}", "id": f"app_{n}", "fp": b"fp-%d" % n, "status": ("current", "repaid")[n - 1],
                     "at": "2026-01-01 00:00:00"})
        store.migrate()
        with store.engine.begin() as connection:
            repaid_at = dict(connection.execute(text("SELECT loan_reference, repaid_at FROM booked_loans")).all())
            assert repaid_at["L1"] is None and repaid_at["L2"] is not None
            connection.execute(text("UPDATE applications SET sealed_applicant = NULL, applicant_fingerprint = NULL "
                                    "WHERE application_id = 'app_2'"))
            connection.execute(text("UPDATE booked_loans SET applicant_fingerprint = NULL WHERE loan_reference = 'L2'"))

        command.downgrade(alembic_config(store.engine), "0007")

        with store.engine.connect() as connection:
            rows = connection.execute(text("SELECT application_id, sealed_applicant, applicant_fingerprint "
                                           "FROM applications ORDER BY application_id")).all()
            assert [(a, bytes(s), bytes(f)) for a, s, f in rows] == [("app_1", b"sealed-1", b"fp-1"),
                                                                     ("app_2", b"", b"")]
            loans = connection.execute(text("SELECT loan_reference, applicant_fingerprint, status FROM booked_loans "
                                            "ORDER BY loan_reference")).all()
            assert [(r, bytes(f), s) for r, f, s in loans] == [("L1", b"fp-1", "current"), ("L2", b"", "repaid")]
        assert "repaid_at" not in {c["name"] for c in inspect(store.engine).get_columns("booked_loans")}
        assert not any(_nullable(store, table, column) for table, column in (
            ("applications", "sealed_applicant"), ("applications", "applicant_fingerprint"),
            ("booked_loans", "applicant_fingerprint")))
        store.migrate()  # and up again, over the downgraded rows
        assert schema_revision(store) == {"0011"} and _nullable(store, "applications", "sealed_applicant")
    finally:
        store.close()


def test_migration_0010_keeps_reports_accepted_and_downgrades_without_unfinished_imports(store_url: str) -> None:
    """0010 adds report imports: reports already held stay accepted (no import); the downgrade deletes the rows of
    imports not complete, which an older node (knowing no imports) would publish, and keeps those of complete ones."""
    store = Store(store_url)
    report = text("INSERT INTO fraud_reports (report_id, category, confidence, valid_from, valid_until, evidence_hash, "
                  "case_ref_hash, submitted_by, created_at{extra}) VALUES (:r, 1, 50, 0, 1, :z, :z, 'k', :at{value})")
    record = text("INSERT INTO outbox_records (report_id, position, identifier_type, epoch, indicator, "
                  "sealed_identifier, state{extra}) VALUES (:r, 0, 1, 1, :z, :z, 'queued'{value})")
    try:
        command.upgrade(alembic_config(store.engine), "0009")
        with store.engine.begin() as connection:
            for statement in (report, record):
                connection.execute(text(statement.text.format(extra="", value="")),
                                   {"r": "own", "z": b"\0" * 32, "at": "2026-01-01 00:00:00"})
        command.upgrade(alembic_config(store.engine), "0010")  # the rows below are in 0010's shape
        with store.engine.begin() as connection:
            assert connection.execute(text("SELECT import_id FROM outbox_records")).all() == [(None,)]
            connection.execute(text("INSERT INTO report_imports (id, state, source, submitted_by, rows, started_at) "
                                    "VALUES (1, 'complete', 'a.csv', 'cli', 1, :at), "
                                    "(2, 'staging', 'b.csv', 'cli', 1, :at)"), {"at": "2026-01-01 00:00:00"})
            for report_id, import_id in (("done", 1), ("staged", 2)):
                for statement in (report, record):
                    connection.execute(text(statement.text.format(extra=", import_id", value=", :i")),
                                       {"r": report_id, "i": import_id, "z": b"\0" * 32, "at": "2026-01-01 00:00:00"})
        command.downgrade(alembic_config(store.engine), "0009")
        with store.engine.connect() as connection:
            for table in ("fraud_reports", "outbox_records"):
                assert sorted(connection.execute(text(f"SELECT report_id FROM {table}")).scalars()) == ["done", "own"]
        assert "report_imports" not in inspect(store.engine).get_table_names()
        store.migrate()
    finally:
        store.close()


def test_migration_0011_dates_queued_records_from_their_reports_and_downgrades(store_url: str) -> None:
    """0011 adds outbox_records.queued_at (the oldest queued record's age counted from it, not from its report's
    acceptance): rows already held take their report's created_at, whatever their state, and the column is NOT NULL
    with the partial index of queued rows; the downgrade drops both and keeps the rows."""
    store = Store(store_url)
    accepted_at = {"old": datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC), "new": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    try:
        command.upgrade(alembic_config(store.engine), "0010")
        with store.engine.begin() as connection:
            for report_id, at in accepted_at.items():
                connection.execute(insert(FraudReport).values(
                    report_id=report_id, category=1, confidence=50, valid_from=0, valid_until=1, evidence_hash=b"z",
                    case_ref_hash=b"z", submitted_by="k", created_at=at))
                for position, state in enumerate(("queued", "confirmed")):
                    connection.execute(text("INSERT INTO outbox_records (report_id, position, identifier_type, epoch, "
                                            "indicator, sealed_identifier, state) VALUES (:r, :p, 1, 1, :i, :i, :s)"),
                                       {"r": report_id, "p": position, "i": f"{report_id}{position}".encode(),
                                        "s": state})
        store.migrate()
        assert schema_revision(store) == {"0011"} and not _nullable(store, "outbox_records", "queued_at")
        assert "ix_outbox_records_queued_at" in {index["name"] for index in inspect(store.engine).get_indexes(
            "outbox_records")}
        with store.session() as session:
            rows = session.execute(select(OutboxRecord.report_id, OutboxRecord.position, OutboxRecord.queued_at)).all()
        assert sorted((r, p, as_utc(at)) for r, p, at in rows) == [
            (report_id, position, at) for report_id, at in sorted(accepted_at.items()) for position in (0, 1)]

        command.downgrade(alembic_config(store.engine), "0010")
        assert "queued_at" not in {c["name"] for c in inspect(store.engine).get_columns("outbox_records")}
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM outbox_records")).scalar() == 4
        store.migrate()
    finally:
        store.close()


def test_a_migration_failing_half_way_leaves_the_schema_as_it_was(store_url: str) -> None:
    """0002 fails at its third table: on SQLite its first two were committed on their own (pysqlite begins a
    transaction only before DML), and every later start failed on "table alliance_keys already exists"."""
    store = Store(store_url)
    try:
        command.upgrade(alembic_config(store.engine), "0001")
        with store.engine.begin() as connection:
            connection.execute(text("CREATE TABLE publish_batches (blocker INTEGER)"))
        with pytest.raises(Exception, match="publish_batches"):
            store.migrate()
        assert schema_revision(store) == {"0001"}
        assert not {"alliance_keys", "fraud_reports"} & set(inspect(store.engine).get_table_names())

        with store.engine.begin() as connection:
            connection.execute(text("DROP TABLE publish_batches"))
        store.migrate()
        assert schema_revision(store) == {"0011"}
    finally:
        store.close()


def assert_migration_refused(url: str, reason: str) -> None:
    """Opening (migrating) the store at `url` is StoreUnavailable, its message matching `reason`."""
    store = Store(url)
    try:
        with pytest.raises(StoreUnavailable, match=reason):
            store.migrate()
    finally:
        store.close()


def test_a_new_sqlite_store_and_its_wal_are_readable_by_the_node_user_only(tmp_path: Path) -> None:
    """SQLite made the file with the umask's mode (0644): every local user could read the query log, applications
    and pool drafts."""
    store = Store(f"sqlite:///{tmp_path / 'node.db'}")
    try:
        store.migrate()
        with store.transaction() as session:
            create_api_key(session, Role.operator)
        files = sorted(tmp_path.iterdir())
        assert [f.name for f in files] == ["node.db", "node.db-shm", "node.db-wal"]
        assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
    finally:
        store.close()


def test_opening_a_file_that_is_not_sqlite_is_store_unavailable(tmp_path: Path) -> None:
    """It was SQLAlchemy's DatabaseError, a traceback; the file is left as it was."""
    other = tmp_path / "notes.db"
    other.write_text("not a database " * 20)
    assert_migration_refused(f"sqlite:///{other}", "file is not a database")
    assert other.read_text() == "not a database " * 20


def test_a_sqlite_path_under_a_file_is_store_unavailable(tmp_path: Path) -> None:
    """It was FileExistsError from making the directory, a traceback."""
    (tmp_path / "data").write_text("")
    assert_migration_refused(f"sqlite:///{tmp_path / 'data' / 'node.db'}", "cannot create the directory")


@pytest.mark.postgres
def test_a_role_that_may_not_create_tables_is_store_unavailable(postgres_available: bool) -> None:
    """PostgreSQL 15 grants no CREATE on public to other roles than the owner: it was a ProgrammingError traceback.
    (information_schema stands for such a schema: the test role may use it but not create in it.)"""
    url = os.environ["ALLIANCE_TEST_POSTGRES_URL"]
    assert_migration_refused(f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3Dinformation_schema",
                             "permission denied for schema information_schema")


MIGRATE_AT = """
import sys, time
from node.store.db import Store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
Store(sys.argv[1]).migrate()
"""


def test_processes_migrating_one_new_store_at_once_all_start(store_url: str) -> None:
    """API replicas (or the node and a command) starting together on a new store: the later ones failed on
    PostgreSQL with a UniqueViolation traceback, on SQLite with "table api_keys already exists"."""
    start_at = str(time.time() + 4)  # after every interpreter has imported the node
    processes = [subprocess.Popen([sys.executable, "-c", MIGRATE_AT, store_url, start_at], stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(4)]
    failures = [error for process in processes
                if (error := process.communicate(timeout=60)[1]) and process.returncode != 0]
    assert failures == []
    store = Store(store_url)
    try:
        assert schema_revision(store) == {"0011"}
    finally:
        store.close()


def _write_locked_rollback_journal_file(path: Path) -> sqlite3.Connection:
    """A SQLite file in the default rollback-journal mode, with a write transaction held open on it."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other_tool (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other_tool VALUES (1)")
    return holder


def test_opening_a_file_whose_write_lock_is_held_waits_for_it_to_switch_to_wal(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once (no busy timeout) while another connection holds a write lock: two
    processes opening a new store together, one failed with "database is locked" (seen in CI)."""
    path = tmp_path / "store.db"
    holder = _write_locked_rollback_journal_file(path)
    releaser = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    releaser.start()
    store = Store(f"sqlite:///{path}")
    try:
        store.migrate()
        assert schema_revision(store) == {"0011"}
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        releaser.join()
        holder.close()
        store.close()


def test_a_write_lock_held_past_the_busy_timeout_is_store_unavailable(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_S", 0.3)
    path = tmp_path / "store.db"
    holder = _write_locked_rollback_journal_file(path)
    store = Store(f"sqlite:///{path}")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.migrate()
        assert time.monotonic() - started >= 0.3
    finally:
        holder.close()
        store.close()


def test_authenticate_api_key_roundtrip(store: Store) -> None:
    with store.transaction() as session:
        issued = create_api_key(session, Role.analyst, "fraud desk")
    with store.session() as session:
        info = authenticate(session, issued.token)
        assert (info.key_id, info.role, info.label) == (issued.key_id, Role.analyst, "fraud desk")
        assert [k.key_id for k in list_api_keys(session)] == [issued.key_id]


@pytest.mark.parametrize("mangle", [
    lambda t: t + "x",
    lambda t: t.replace("ak_", "xx_", 1),
    lambda t: "ak_",
    lambda t: "",
    lambda t: "ak_deadbeefdeadbeef_" + t.split("_", 2)[2],
])
def test_authenticate_api_key_rejects_wrong_tokens(store: Store, mangle) -> None:  # type: ignore[no-untyped-def]
    with store.transaction() as session:
        issued = create_api_key(session, Role.operator)
    with store.session() as session, pytest.raises(InvalidApiKey):
        authenticate(session, mangle(issued.token))


def test_authenticate_api_key_rejects_revoked(store: Store) -> None:
    with store.transaction() as session:
        issued = create_api_key(session, Role.workflow)
    with store.transaction() as session:
        assert revoke_api_key(session, issued.key_id).revoked
    with store.session() as session, pytest.raises(InvalidApiKey, match="revoked"):
        authenticate(session, issued.token)


def test_store_secret_is_not_persisted_in_clear(store: Store) -> None:
    with store.transaction() as session:
        issued = create_api_key(session, Role.auditor)
    secret = issued.token.split("_", 2)[2]  # ak_<key id>_<secret>: the secret may hold "_" itself
    assert len(secret) == 43
    with store.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT key_id, role, label, secret_sha256 FROM api_keys").all()
    assert rows and all(secret not in " ".join(map(str, row)) for row in rows)


def test_migrated_schema_matches_models(store: Store) -> None:
    """The hand-written migrations create exactly the tables and columns the models declare."""
    import node.store.application_tables  # registers the credit workflow tables (binds `node`, so no F401)
    import node.store.asset_tables  # registers the asset tables on Base.metadata (binds `node`, so no F401)
    import node.store.ledger_tables  # noqa: F401 - registers the ledger tables on Base.metadata
    from node.store.models import Base

    inspector = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        migrated = {column["name"]: column["nullable"] for column in inspector.get_columns(table.name)}
        declared = {column.name: column.nullable for column in table.columns}
        assert migrated == declared, table.name
