"""The CLI on a real chain: happy paths, and every refusal as one line with exit code 1."""

from __future__ import annotations

import gc
import getpass
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from node.chain.client import ChainClient
from node.chain.deployment import load_deployment
from node.chain.registry import RegistryClient
from node.chain.signer import Signer
from node.config import load_settings
from node.consortium import ensure_demo_consortium
from node.node_lock import node_lock
from node.paths import PROJECT_ROOT
from node.runtime import NodeContext
from node.store.db import Store
from node.store.ledger_tables import CheckLogEntry
from tests.chain.capped_rpc import capped_rpc
from tests.chain.test_client import web_server as json_rpc_impostor
from tests.cli.conftest import CliResult, CliRunner
from tests.conftest import free_port, immutable
from tests.http_stub import QuietHandler, serving
from tests.store.outage import PostgresRelay

KEY = "0x" + "ab" * 32


def one_error_line(result_err: str) -> str:
    lines = [line for line in result_err.splitlines() if line.strip()]
    assert len(lines) == 1, result_err
    assert lines[0].startswith("error: ")
    return lines[0]


def json_error(result: CliResult) -> dict[str, Any]:
    """With --json, a failure is one JSON object on stdout as well as one line on stderr: a script parsing stdout got
    an empty string (not JSON) and had only the exit code and a line meant for people."""
    assert result.code == 1
    line = one_error_line(result.err)
    error: dict[str, Any] = json.loads(result.out)["error"]
    assert line == f"error: {error['message']}"  # the same failure, said twice
    return error


@pytest.fixture
def deployed(cli: CliRunner) -> dict[str, str]:
    init = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--json")
    assert init.code == 0, init.err
    deploy = cli("contracts", "deploy")
    assert deploy.code == 0, deploy.err
    return dict(json.loads(init.out))


@pytest.fixture
def deployed_with_three_more(cli: CliRunner, tmp_path: Path, rpc_url: str) -> list[RegistryClient]:
    """This bank (BANKA) and banks B, C, D, founders of one deployment; registry clients of B, C and D."""
    init = json.loads(cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--json").out)
    others = [Signer.generate() for _ in range(3)]
    founders = [{"account": init["address"], "name": "Bank A", "bank_code": "BANKA", "encryption_key": KEY}]
    founders += [{"account": s.address, "name": f"Bank {c}", "bank_code": f"BANK{c}", "encryption_key": KEY}
                 for s, c in zip(others, "BCD", strict=True)]
    (tmp_path / "founders.json").write_text(json.dumps(founders))
    deploy = cli("contracts", "deploy", "--founders", str(tmp_path / "founders.json"))
    assert deploy.code == 0, deploy.err
    registry = load_deployment(tmp_path / "node-data" / "deployments" / "dev.json").address("AllianceRegistry")
    return [RegistryClient(ChainClient(rpc_url, signer=s), registry) for s in others]


def test_init_creates_keys_config_and_store(cli: CliRunner, data_dir: Path) -> None:
    result = cli("init", "--bank-name", "Bank A", "--bank-code", "banka", "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["address"].startswith("0x") and len(info["encryption_public_key"]) == 66
    assert (data_dir / "keys" / "signing-key.json").stat().st_mode & 0o777 == 0o600
    assert 'bank_code = "BANKA"' in (data_dir / "alliance.toml").read_text()
    assert (data_dir / "node.db").exists()


def test_init_refuses_to_overwrite_keys(cli: CliRunner, data_dir: Path) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    before = (data_dir / "keys" / "signing-key.json").read_bytes()
    result = cli("init", "--bank-name", "Bank B", "--bank-code", "BANKB")
    assert result.code == 1
    assert "refusing to overwrite" in one_error_line(result.err)
    assert (data_dir / "keys" / "signing-key.json").read_bytes() == before


@pytest.mark.parametrize("url", ["127.0.0.1:8545", "ftp://127.0.0.1/", "http://[::1", "http://host:99999", "http://"])
def test_init_refuses_an_rpc_url_that_is_no_http_url_and_writes_nothing(cli: CliRunner, data_dir: Path,
                                                                        url: str) -> None:
    """Written to the config as given: every chain command then failed on it."""
    result = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local", "--rpc-url", url,
                 env={"ALLIANCE_KEY_PASSPHRASE": "a passphrase long enough"})
    assert result.code == 1
    assert "rpc_url: Value error, not an http(s) URL with a host" in one_error_line(result.err)
    assert not data_dir.exists()


def test_init_outside_dev_without_a_passphrase_or_a_terminal_fails_with_one_line(cli: CliRunner,
                                                                                 data_dir: Path) -> None:
    """With nobody to ask, init prompted anyway: getpass's warnings and 'aborted' (or, here, a traceback)."""
    result = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local",
                 "--rpc-url", "http://127.0.0.1:8545")
    assert result.code == 1
    assert "set ALLIANCE_KEY_PASSPHRASE" in one_error_line(result.err)
    assert not data_dir.exists()



def test_init_takes_the_network_from_the_environment_and_refuses_an_unknown_one(cli: CliRunner,
                                                                                data_dir: Path) -> None:
    """--network defaulted to dev and outranked ALLIANCE_NETWORK: `ALLIANCE_NETWORK=bogus` made a dev node without a
    word, and `ALLIANCE_NETWORK=local` a dev node too, which starts a chain of its own."""
    refused = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env={"ALLIANCE_NETWORK": "bogus"})
    assert refused.code == 1
    assert "invalid configuration: network" in one_error_line(refused.err)
    assert not data_dir.exists()
    local = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--rpc-url", "http://127.0.0.1:8545",
                env={"ALLIANCE_NETWORK": "local", "ALLIANCE_KEY_PASSPHRASE": "a passphrase long enough"})
    assert local.code == 0, local.err
    assert load_settings(data_dir).network.value == "local"
    assert tomllib.loads((data_dir / "alliance.toml").read_text())["network"] == "local"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_passphrase_prompts_go_to_stderr_leaving_the_json_alone_on_stdout(cli: CliRunner, data_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The prompts were written to stdout: `init --json` printed 'Passphrase for the new keys:Repeat for
    confirmation:{...' (not JSON), and redirected to a file the person at the terminal never saw them."""
    passphrase = "a-long-test-passphrase"
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": passphrase)
    init = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local", "--json")
    assert init.code == 0, init.err
    assert json.loads(init.out)["data_dir"] == str(data_dir)
    assert "Passphrase for the new keys" in init.err and "Repeat for confirmation" in init.err
    assert cli("contracts", "deploy", env={"ALLIANCE_KEY_PASSPHRASE": passphrase}).code == 0
    sync = cli("key", "sync", "--json")
    assert sync.code == 0, sync.err
    assert json.loads(sync.out)["generated"] == [1]
    assert "Passphrase of this bank's keys" in sync.err

@pytest.mark.parametrize(("passphrase", "message"), [
    ("", "the key passphrase must not be empty"),
    ("a long passphrase\udcff", "the key passphrase holds bytes that are not UTF-8 text"),
], ids=["empty", "undecodable_byte"])
def test_init_refuses_a_passphrase_no_key_can_be_encrypted_under_and_writes_nothing(cli: CliRunner, data_dir: Path,
                                                                                  passphrase: str,
                                                                                  message: str) -> None:
    """Was a ValueError (UnicodeEncodeError) traceback from encrypting the X25519 key, after the store and the
    keys directory were made."""
    result = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env={"ALLIANCE_KEY_PASSPHRASE": passphrase})
    assert result.code == 1
    assert message in one_error_line(result.err)
    assert not data_dir.exists()


@pytest.mark.parametrize(("name", "code", "message"), [
    ("", "BANKA", "bank name"),
    ("Bank A", "x", "bank code"),
    ("Bank A", "BAD CODE!", "bank code"),
    ("Bank\x1b[2J A", "BANKA", "bank name must have printable characters only"),
    ("Bank A\udcff", "BANKA", "bank name must have printable characters only"),  # wrote TOML nothing could read
])
def test_init_rejects_bad_identity_and_writes_nothing(cli: CliRunner, data_dir: Path, name: str, code: str,
                                                      message: str) -> None:
    result = cli("init", "--bank-name", name, "--bank-code", code)
    assert result.code == 1
    assert message in one_error_line(result.err)
    assert not (data_dir / "keys").exists()


def test_init_with_a_database_it_cannot_open_writes_no_keys_and_can_be_run_again(cli: CliRunner,
                                                                                 data_dir: Path) -> None:
    """The keys and the config (with the failing database URL) were written before the store was opened: the
    error was followed by `init` refusing to run again, as the data dir now held keys."""
    unreachable = {"ALLIANCE_DATABASE_URL": f"postgresql+psycopg://alliance:secret@127.0.0.1:{free_port()}/x"}
    refused = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env=unreachable)
    assert refused.code == 1
    assert "cannot open the database" in one_error_line(refused.err)
    assert not (data_dir / "keys").exists() and not (data_dir / "alliance.toml").exists()
    again = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA")
    assert again.code == 0, again.err


@pytest.mark.parametrize("file_size_limit", [100, 400], ids=["encryption_key", "signing_key"])
def test_init_that_cannot_finish_writing_its_keys_leaves_none_and_can_be_run_again(cli: CliRunner, data_dir: Path,
                                                                                  file_size_limit: int) -> None:
    """A full disk (here a file size limit: the X25519 key file is 302 bytes, the keystore 486) cut the keys short
    after the first was written, or half of it: `init` then refused to run again (the data dir held keys), and the
    node could not start on keys without a config or with half a key."""
    store = Store(f"sqlite:///{data_dir / 'node.db'}")
    store.migrate()  # the store first, as init makes it, whole: the limit is for the keys
    with store.engine.connect() as held:  # keeps the store's -shm file whole while init opens the store again
        held.exec_driver_sql("SELECT 1 FROM alembic_version").all()
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, hard))  # Python ignores SIGXFSZ: EFBIG
        try:
            refused = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    store.close()
    assert refused.code == 1
    assert "cannot write the data dir" in one_error_line(refused.err)
    assert not any((data_dir / "keys").iterdir()) and not (data_dir / "alliance.toml").exists()
    again = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA")
    assert again.code == 0, again.err


def test_init_in_a_data_dir_that_is_a_file_fails_with_one_line(cli: CliRunner, tmp_path: Path,
                                                               store_url: str) -> None:
    """Was a NotADirectoryError traceback."""
    taken = tmp_path / "a-file"
    taken.write_text("not a data dir")
    env = {"ALLIANCE_DATA_DIR": str(taken), "ALLIANCE_DATABASE_URL": store_url}
    result = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env=env)
    assert result.code == 1
    assert str(taken) in one_error_line(result.err)
    assert taken.read_text() == "not a data dir"



def interrupted_while_encrypting(_signer: Signer, _passphrase: str) -> dict[str, object]:
    raise KeyboardInterrupt  # Ctrl-C during the keystore's scrypt, the longest step of writing a key


def test_init_interrupted_while_writing_the_keys_leaves_none_and_can_be_run_again(
        cli: CliRunner, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left an encryption key and an empty signing keystore: init then refused to overwrite them, and every other
    command refused the data dir, until someone deleted key files by hand."""
    with monkeypatch.context() as interrupted:
        interrupted.setattr(Signer, "encrypt", interrupted_while_encrypting)
        assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code != 0
    assert not list((data_dir / "keys").iterdir())
    again = cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--json")
    assert again.code == 0, again.err
    assert cli("contracts", "deploy").code == 0

def test_an_initialised_node_pointed_at_no_store_is_refused_until_one_is_created_on_purpose(
        cli: CliRunner, data_dir: Path, store_url: str) -> None:
    """A mistyped database_url (or a deleted node.db) made a new, empty store: the node started without its API
    keys, queued reports and alliance keys, and `apikey create` put a key into the wrong store."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    elsewhere = {"ALLIANCE_DATABASE_URL": store_url}
    refused = cli("apikey", "create", "--role", "analyst", env=elsewhere)
    assert refused.code == 1
    assert "no store at" in one_error_line(refused.err) and "alliance store create" in refused.err
    assert ":alliance@" not in refused.err  # the test PostgreSQL's password (alliance) is masked
    if store_url.startswith("sqlite"):
        assert not Path(store_url.removeprefix("sqlite:///")).exists()  # not even an empty file
    else:
        store = Store(store_url)
        try:
            with store.engine.connect() as connection:
                assert connection.exec_driver_sql("SELECT count(*) FROM information_schema.tables "
                                                  "WHERE table_schema = current_schema()").scalar() == 0
        finally:
            store.close()

    created = cli("store", "create", env=elsewhere)
    assert created.code == 0, created.err
    assert "new, empty store" in created.out
    assert cli("apikey", "create", "--role", "analyst", env=elsewhere).code == 0
    again = cli("store", "create", env=elsewhere)
    assert again.code == 0 and "already" in again.out
    listed = cli("apikey", "list", "--json", env=elsewhere)
    assert listed.code == 0 and len(json.loads(listed.out)) == 1  # the second `store create` emptied nothing
    assert cli("apikey", "list", "--json").code == 0 and json.loads(cli("apikey", "list", "--json").out) == []


def test_store_backup_restores_into_a_node_and_never_overwrites(cli: CliRunner, data_dir: Path,
                                                                tmp_path: Path) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    assert cli("apikey", "create", "--role", "analyst", "--label", "fraud desk").code == 0
    backup = tmp_path / "backups" / "node-2026-12-06.db"
    backup.parent.mkdir()
    done = cli("store", "backup", str(backup))
    assert done.code == 0, done.err
    assert str(backup) in done.out and "schema revision 0011" in done.out

    again = cli("store", "backup", str(backup))
    assert again.code == 1 and "exists already" in one_error_line(again.err)

    # Restore: the node's files, and the backup put at the store's path while the node is stopped.
    restored = tmp_path / "restored"
    shutil.copytree(data_dir / "keys", restored / "keys")
    shutil.copy(data_dir / "alliance.toml", restored / "alliance.toml")
    shutil.copy(backup, restored / "node.db")
    listed = cli("apikey", "list", "--json", env={"ALLIANCE_DATA_DIR": str(restored)})
    assert listed.code == 0, listed.err
    assert [key["label"] for key in json.loads(listed.out)] == ["fraud desk"]


# A node killed while it writes: its last transactions are only in node.db-wal, beside the store.
KILLED_WRITER = """
import os, signal, sys
from node.auth.apikeys import Role, create_api_key
from node.store.db import Store
store = Store("sqlite:///" + sys.argv[1])
for n in range(20):
    with store.transaction() as session:
        create_api_key(session, Role.auditor, f"after the backup {n}")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_store_restore_after_the_node_was_killed_puts_the_backup_in_place(cli: CliRunner, data_dir: Path,
                                                                         tmp_path: Path) -> None:
    """The documented restore (the backup copied over node.db) after the node was killed: SQLite applied the WAL the
    old store left beside it to the restored file at the next start, so the node ran on the old store again (or on
    a mix of both) without a word."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    assert cli("apikey", "create", "--role", "analyst", "--label", "fraud desk").code == 0
    backup = tmp_path / "node-2026-12-06.db"
    assert cli("store", "backup", str(backup)).code == 0
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(data_dir / "node.db")],
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert (data_dir / "node.db-wal").stat().st_size > 0

    gc.collect()  # closes the store connections of the commands above, which ran in this process
    restored = cli("store", "restore", str(backup))
    assert restored.code == 0, restored.err
    assert f"restored from {backup} (schema revision 0011)" in restored.out
    assert not (data_dir / "node.db-wal").exists()
    listed = cli("apikey", "list", "--json")
    assert listed.code == 0, listed.err
    assert [key["label"] for key in json.loads(listed.out)] == ["fraud desk"]


def test_store_restore_of_a_running_node_fails_with_one_line(cli: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    backup = tmp_path / "backup.db"
    assert cli("store", "backup", str(backup)).code == 0
    running = Store(f"sqlite:///{data_dir / 'node.db'}")  # the node's pool keeps its connections open
    try:
        assert running.ping()
        refused = cli("store", "restore", str(backup))
    finally:
        running.close()
    assert refused.code == 1
    assert "is in use: stop the node" in one_error_line(refused.err)


def test_store_prune_deletes_query_log_entries_past_retention(cli: CliRunner, data_dir: Path) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    store = Store(f"sqlite:///{data_dir / 'node.db'}")
    try:
        now = datetime.now(UTC)
        with store.transaction() as session:
            session.add_all([CheckLogEntry(key_id="k", asked_at=now - timedelta(days=age), kind="identity",
                                           indicators="[]", hits="[]", as_of_block=1, stale=False)
                             for age in (400, 100, 2)])
    finally:
        store.close()

    kept = cli("store", "prune")
    assert kept.code == 0, kept.err
    assert "erased 0 raw identifier(s)" in kept.out and "query log kept whole" in kept.out
    assert "applicants kept (application_retention_days is not set)" in kept.out

    pruned = cli("store", "prune", env={"ALLIANCE_CHECK_LOG_RETENTION_DAYS": "90",
                                        "ALLIANCE_APPLICATION_RETENTION_DAYS": "1825"})
    assert pruned.code == 0, pruned.err
    assert "deleted 2 query-log entry(ies) older than 90 day(s)" in pruned.out
    assert "erased 0 applicant(s) no longer needed for 1825 day(s), and 0 velocity fingerprint(s)" in pruned.out

    refused = cli("store", "prune", env={"ALLIANCE_CHECK_LOG_RETENTION_DAYS": "0"})
    assert refused.code == 1 and "check_log_retention_days" in one_error_line(refused.err)
    refused = cli("store", "prune", env={"ALLIANCE_APPLICATION_RETENTION_DAYS": "0"})
    assert refused.code == 1 and "application_retention_days" in one_error_line(refused.err)


def test_store_backup_of_a_postgresql_store_fails_with_one_line(cli: CliRunner, data_dir: Path, tmp_path: Path,
                                                                  postgres_relay: PostgresRelay) -> None:
    postgres = {"ALLIANCE_DATABASE_URL": postgres_relay.url}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env=postgres).code == 0
    refused = cli("store", "backup", str(tmp_path / "copy.db"), env=postgres)
    assert refused.code == 1 and "pg_dump" in one_error_line(refused.err)
    assert not (tmp_path / "copy.db").exists()


def test_a_write_to_a_postgresql_store_that_takes_none_fails_with_one_line(cli: CliRunner,
                                                                            postgres_relay: PostgresRelay) -> None:
    """A standby (here default_transaction_read_only) refused the write with an InternalError: a traceback."""
    postgres = {"ALLIANCE_DATABASE_URL": postgres_relay.url}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env=postgres).code == 0
    read_only = {"ALLIANCE_DATABASE_URL": postgres_relay.url.replace(
        "options=", "options=-cdefault_transaction_read_only%3Don%20", 1)}
    refused = cli("apikey", "create", "--role", "analyst", env=read_only)
    assert refused.code == 1
    assert "the database is unavailable: cannot execute INSERT in a read-only transaction" in \
        one_error_line(refused.err)


def test_store_create_needs_an_initialised_node(cli: CliRunner, data_dir: Path) -> None:
    result = cli("store", "create")
    assert result.code == 1
    assert "not an initialised node data dir" in one_error_line(result.err)
    assert not data_dir.exists()


@pytest.mark.parametrize("args", [
    ("apikey", "create", "--role", "analyst"),
    ("apikey", "list"),
    ("alerts",),
    ("fraud", "show", "0" * 32),
    ("ledger", "republish"),
    ("chain", "status"),
])
def test_commands_on_an_uninitialised_data_dir_fail_and_create_nothing(cli: CliRunner, data_dir: Path,
                                                                       args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 1
    assert "alliance init" in one_error_line(result.err)
    assert not data_dir.exists()


@pytest.mark.parametrize("args", [
    ("--data-dir", "{long}", "node", "status"),
    ("--data-dir", "{long}", "init", "--bank-name", "A", "--bank-code", "BA"),
    ("store", "backup", "{long}"), ("store", "restore", "{long}"),
    ("marketing", "prescreen", "{tmp}/prospects.csv", "--output", "{long}"),
], ids=["data_dir", "init_data_dir", "store_backup", "store_restore", "prescreen_output"])
def test_a_path_whose_name_is_too_long_fails_with_one_line(cli: CliRunner, data_dir: Path, tmp_path: Path,
                                                          args: tuple[str, ...]) -> None:
    """Path.exists() and is_file() answer False only for a path that is not there: a name past the file system's
    limit (or a directory this user may not search) raised its OSError, a traceback."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    (tmp_path / "prospects.csv").write_text("phone\n13800138000\n")
    long = tmp_path / ("a" * 300)  # one name past NAME_MAX (255)
    result = cli(*(a.format(long=long, tmp=tmp_path) for a in args))
    assert result.code == 1
    assert "too long" in one_error_line(result.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node-data", "prospects.csv"]


def test_member_list_shows_the_deployer(cli: CliRunner, deployed: dict[str, str]) -> None:
    result = cli("member", "list", "--json")
    assert result.code == 0, result.err
    members = json.loads(result.out)
    assert [(m["bank_code"], m["status"], m["account"]) for m in members] == \
        [("BANKA", "active", deployed["address"])]


def test_member_propose_admit_executes_with_a_single_member(cli: CliRunner, deployed: dict[str, str]) -> None:
    newcomer = Signer.generate().address
    result = cli("member", "propose", "admit", "--account", newcomer, "--name", "Bank B", "--bank-code",
                 "BANKB", "--encryption-key", KEY, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["executed"] is True
    shown = json.loads(cli("member", "show", "BANKB", "--json").out)
    assert (shown["account"], shown["status"], shown["encryption_key"]) == (newcomer, "active", KEY)


def test_output_quoting_brackets_is_printed_as_typed_not_as_rich_markup(cli: CliRunner,
                                                                         deployed: dict[str, str]) -> None:
    """Errors, tables and messages were rich markup: a `[/]` in an argument, a key's label or a member's name on
    chain was a MarkupError traceback (`apikey list` failed for good once such a label was stored), a `[bold]`
    vanished from the line."""
    unknown = cli("member", "show", "[/]x[bold]")
    assert unknown.code == 1
    assert "'[/]x[bold]'" in one_error_line(unknown.err)
    assert cli("apikey", "create", "--role", "analyst", "--label", "desk [/] [bold]").code == 0
    listed = cli("apikey", "list")
    assert listed.code == 0, listed.err
    assert "desk [/] [bold]" in listed.out
    newcomer = Signer.generate().address
    admitted = cli("member", "propose", "admit", "--account", newcomer, "--name", "Bank [/red]", "--bank-code",
                   "BANKB", "--encryption-key", KEY)
    assert admitted.code == 0, admitted.err
    members = cli("member", "list")
    assert members.code == 0, members.err
    assert "Bank [/red]" in members.out


@pytest.mark.parametrize(("args", "message"), [
    (["--account", "0x123"], "not a 0x-prefixed 20-byte hex address"),
    (["--account", "0x" + "0" * 40], "zero address"),
    (["--account", "0x" + "1" * 40, "--encryption-key", "0x12"], "X25519"),
    (["--account", "0x" + "1" * 40, "--role", "king"], "role"),
    # Low-order points: admitted, the member never got the alliance key (every distributor pass failed to seal it).
    (["--account", "0x" + "1" * 40, "--encryption-key", "0x" + "00" * 32], "not a usable X25519 public key"),
    (["--account", "0x" + "1" * 40, "--encryption-key", "0x01" + "00" * 31], "not a usable X25519 public key"),
    (["--account", "0x" + "1" * 40, "--name", "Bank\x00B"], "bank name must have printable characters only"),
    (["--account", "0x" + "1" * 40, "--name", "Bank\nB"], "bank name must have printable characters only"),
])
def test_member_propose_rejects_bad_input_and_sends_nothing(cli: CliRunner, deployed: dict[str, str],
                                                            args: list[str], message: str) -> None:
    base = {"--name": "Bank B", "--bank-code": "BANKB", "--encryption-key": KEY}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [item for pair in ({**base, **given}).items() for item in pair]
    result = cli("member", "propose", "admit", *argv)
    assert result.code == 1
    assert message in one_error_line(result.err)
    assert json.loads(cli("member", "proposals", "--json").out) == []


@pytest.mark.parametrize(("args", "stray"), [
    (["suspend", "BANKA", "--new-account", "0x" + "1" * 40], "`member propose suspend` takes no --new-account"),
    (["rotate", "BANKA", "--new-account", "0x" + "1" * 40, "--role", "auditor", "--name", "Bank B"],
     "`member propose rotate` takes no --role, --name"),
    (["admit", "BANKA", "--account", "0x" + "1" * 40, "--name", "Bank B", "--bank-code", "BANKB",
      "--encryption-key", KEY], "`member propose admit` takes no MEMBER"),
])
def test_member_propose_with_an_option_of_another_action_sends_nothing(cli: CliRunner, deployed: dict[str, str],
                                                                        args: list[str], stray: str) -> None:
    """Options of another action were dropped unread: `propose suspend BANK --new-account 0x…`, meant as a rotation,
    proposed the suspension of the bank."""
    result = cli("member", "propose", *args)
    assert result.code == 1
    assert one_error_line(result.err) == f"error: {stray}; nothing was proposed [usage]"
    assert json.loads(cli("member", "proposals", "--json").out) == []


def test_member_show_unknown_member_fails(cli: CliRunner, deployed: dict[str, str]) -> None:
    for reference in ("9", "NOBANK", "0x" + "2" * 40):
        result = cli("member", "show", reference)
        assert result.code == 1
        assert "no member" in one_error_line(result.err)


LONG = "x" * 200_000  # a line of a file, or a file's content, passed where a name or a reference goes


@pytest.mark.parametrize(("args", "code"), [
    (("member", "show", LONG), "unknown_member"), (("member", "show", "9" * 200_000), "unknown_member"),
    (("member", "propose", "suspend", LONG), "unknown_member"),
    (("member", "propose", "rotate", "1", "--new-account", LONG), "invalid_address"),
    (("apikey", "revoke", LONG), ""),
    (("fraud", "withdraw", "0" * 32, "--reason", LONG), "unknown_reason"),
    (("alerts", "--state", LONG), "invalid_state"),
    (("assets", "anchor", LONG), "pool_not_found"), (("assets", "loans", LONG), "pool_not_found"),
    (("assets", "prove", LONG), "loan_not_found"), (("assets", "prove", "0x" + LONG), "invalid_loan_id"),
], ids=["member_show", "member_show_digits", "member_propose", "member_propose_new_account", "apikey_revoke",
        "fraud_withdraw_reason", "alerts_state", "assets_anchor", "assets_loans", "assets_prove", "assets_prove_id"])
def test_a_refusal_quotes_a_long_argument_cut_short(cli: CliRunner, deployed: dict[str, str],
                                                   args: tuple[str, ...], code: str) -> None:
    """The line quoted the value whole: 200,000 characters (the megabytes of a file's line) of one error "line" on
    the terminal, in logs and in the API's answer."""
    result = cli(*args)
    assert result.code == 1
    line = one_error_line(result.err)
    assert len(line) < 400 and "… (200,0" in line and line.endswith(f" [{code}]" if code else ""), line[:400]


def test_member_show_finds_a_bank_by_a_bank_code_of_digits(cli: CliRunner, deployed: dict[str, str]) -> None:
    """All digits was read as a member id only: a bank with a CNAPS code (12 digits) could not be found by it."""
    assert cli("member", "propose", "admit", "--account", Signer.generate().address, "--name", "Bank B",
               "--bank-code", "102100099996", "--encryption-key", KEY).code == 0
    result = cli("member", "show", "102100099996", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["member_id"] == 2


def test_member_propose_on_a_reference_that_is_one_members_id_and_anothers_bank_code_sends_nothing(
        cli: CliRunner, deployed: dict[str, str]) -> None:
    """`suspend 01` meant the bank with code 01 and proposed to suspend member 1."""
    assert cli("member", "propose", "admit", "--account", Signer.generate().address, "--name", "Bank B",
               "--bank-code", "01", "--encryption-key", KEY).code == 0
    result = cli("member", "propose", "suspend", "01")
    assert result.code == 1
    assert "01 is the id of member 1 (BANKA) and the bank code of member 2" in one_error_line(result.err)
    assert len(json.loads(cli("member", "proposals", "--json").out)) == 1  # the admission only


def test_member_execute_passes_a_proposal_whose_quorum_was_reached_by_a_suspension(
        cli: CliRunner, deployed_with_three_more: list[RegistryClient]) -> None:
    """The contract's `execute` had no command: a proposal whose voters were enough only once another member was
    suspended could not be executed by its voters (they cannot vote again) and lapsed."""
    b, c, _ = deployed_with_three_more
    newcomer = Signer.generate().address
    assert cli("member", "propose", "admit", "--account", newcomer, "--name", "Bank E", "--bank-code", "BANKE",
               "--encryption-key", KEY).code == 0
    assert not b.vote(1).executed  # 2 of 4: not more than half
    assert _proposal_states(cli) == {1: (2, 3, "open")}
    assert cli("member", "propose", "suspend", "BANKD").code == 0
    b.vote(2)
    assert c.vote(2).executed  # 3 active members now: proposal 1's 2 votes pass it, and no vote is left to cast
    assert _proposal_states(cli) == {1: (2, 2, "ready"), 2: (3, 2, "executed")}
    voted = cli("member", "vote", "1", "--json")  # this bank voted by proposing it: its vote, not a refusal
    assert voted.code == 0, voted.err
    assert (json.loads(voted.out)["proposal_id"], json.loads(voted.out)["executed"]) == (1, False)
    refused = cli("member", "execute", "2")
    assert refused.code == 1
    assert "AllianceRegistryProposalAlreadyExecuted(proposalId=2)" in one_error_line(refused.err)
    result = cli("member", "execute", "1", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["executed"] is True
    assert json.loads(cli("member", "show", newcomer, "--json").out)["bank_code"] == "BANKE"
    assert _proposal_states(cli)[1][2] == "executed"
    table = cli("member", "proposals")
    assert table.code == 0 and "2/3" in table.out and "executed" in table.out  # E admitted: 4 active, 3 needed
    assert "BANKE" in table.out and "(member)" in table.out  # which bank an admission admits, as what: not `-`
    expires_at = json.loads(cli("member", "proposals", "--json").out)[0]["expires_at"]
    day, minute = time.strftime("%Y-%m-%d %H:%M", time.gmtime(expires_at)).split()
    assert day in table.out and minute in table.out and str(expires_at) not in table.out  # a time, not Unix seconds


def test_member_propose_run_again_for_a_proposal_that_has_its_votes_says_it_is_ready_to_execute(
        cli: CliRunner, deployed_with_three_more: list[RegistryClient]) -> None:
    """Run again once a suspension had left its votes enough, the proposal answered that it awaited more votes: none
    can come (its voters cannot vote again), only `member execute`."""
    b, c, _ = deployed_with_three_more
    admit = ("member", "propose", "admit", "--account", Signer.generate().address, "--name", "Bank E",
             "--bank-code", "BANKE", "--encryption-key", KEY)
    assert cli(*admit).code == 0
    assert not b.vote(1).executed  # 2 of 4
    waiting = cli(*admit, "--json")
    assert waiting.code == 0, waiting.err
    assert (json.loads(waiting.out)["proposal_id"], json.loads(waiting.out)["state"]) == (1, "open")
    assert "awaiting more votes" in cli(*admit).out
    assert cli("member", "propose", "suspend", "BANKD").code == 0
    b.vote(2)
    assert c.vote(2).executed  # 3 active now: proposal 1's 2 votes pass it
    again = cli(*admit, "--json")
    assert again.code == 0, again.err
    assert {k: json.loads(again.out)[k] for k in ("proposal_id", "executed", "state")} == \
        {"proposal_id": 1, "executed": False, "state": "ready"}
    text = cli(*admit)
    assert text.code == 0, text.err
    assert "ready" in text.out and "alliance member execute 1" in " ".join(text.out.split())
    assert "awaiting" not in text.out
    assert json.loads(cli("member", "vote", "1", "--json").out)["state"] == "ready"  # voted by proposing it
    assert json.loads(cli("member", "execute", "1", "--json").out)["state"] == "executed"
    assert json.loads(cli("member", "list", "--json").out)[-1]["bank_code"] == "BANKE"


def test_member_proposals_does_not_call_ready_a_proposal_its_target_no_longer_allows(
        cli: CliRunner, deployed_with_three_more: list[RegistryClient]) -> None:
    """Enough votes once D's removal left 3 active members, but the contract executes a suspension only of an active
    member: shown `ready` (run `member execute`), it could only be refused."""
    b, c, _ = deployed_with_three_more
    assert cli("member", "propose", "suspend", "BANKD").code == 0
    assert not b.vote(1).executed  # 2 of 4
    assert cli("member", "propose", "remove", "BANKD").code == 0
    b.vote(2)
    assert c.vote(2).executed

    assert _proposal_states(cli) == {1: (2, 2, "open"), 2: (3, 2, "executed")}
    assert "AllianceRegistryInvalidMemberStatus" in one_error_line(cli("member", "execute", "1").err)


def _proposal_states(cli: CliRunner) -> dict[int, tuple[int, int, str]]:
    """Per proposal: the votes that count now, the votes needed, the state (`member proposals --json`)."""
    listed = cli("member", "proposals", "--json")
    assert listed.code == 0, listed.err
    return {p["proposal_id"]: (p["counted_votes"], p["required_votes"], p["state"]) for p in json.loads(listed.out)}


def test_member_execute_of_a_proposal_short_of_its_quorum_fails_with_one_line(
        cli: CliRunner, deployed_with_three_more: list[RegistryClient]) -> None:
    assert cli("member", "propose", "suspend", "BANKD").code == 0
    result = cli("member", "execute", "1")
    assert result.code == 1
    assert "AllianceRegistryQuorumNotMet(proposalId=1, votes=1, required=3)" in one_error_line(result.err)
    assert "no proposal 2" in one_error_line(cli("member", "execute", "2").err)


def test_chain_allowlist_lists_the_active_members_accounts_only(cli: CliRunner, tmp_path: Path,
                                                                deployed_with_three_more: list[RegistryClient]) -> None:
    """Besu's accounts allowlist was documented as exported from activeAccounts(), with nothing to export it."""
    b, c, _ = deployed_with_three_more
    account = {code: json.loads(cli("member", "show", code, "--json").out)["account"].lower()
               for code in ("BANKA", "BANKB", "BANKC", "BANKD")}
    assert cli("member", "propose", "suspend", "BANKD").code == 0
    b.vote(1)
    assert c.vote(1).executed
    rotated_to = Signer.generate().address
    assert cli("member", "propose", "rotate", "BANKC", "--new-account", rotated_to).code == 0
    assert b.vote(2).executed
    expected = sorted([account["BANKA"], account["BANKB"], rotated_to.lower()])
    printed = cli("chain", "allowlist")
    assert printed.code == 0, printed.err
    assert tomllib.loads(printed.out) == {"accounts-allowlist": expected}
    target = tmp_path / "accounts_allowlist.toml"
    written = cli("chain", "allowlist", "--output", str(target))
    assert written.code == 0, written.err
    assert target.read_text() == printed.out and target.stat().st_mode & 0o777 == 0o644
    assert account["BANKC"] not in target.read_text() and account["BANKD"] not in target.read_text()


def test_chain_allowlist_while_the_chain_is_down_leaves_the_file_as_it_was(cli: CliRunner, tmp_path: Path,
                                                                          deployed: dict[str, str]) -> None:
    target = tmp_path / "accounts_allowlist.toml"
    assert cli("chain", "allowlist", "--output", str(target)).code == 0
    before = target.read_text()
    result = cli("chain", "allowlist", "--output", str(target), env={"ALLIANCE_RPC_URL": "http://127.0.0.1:9"})
    assert result.code == 1
    assert "unreachable" in one_error_line(result.err)
    assert target.read_text() == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    unwritable = cli("chain", "allowlist", "--output", str(tmp_path / "no-such-dir" / "x.toml"))
    assert unwritable.code == 1
    assert "cannot write" in one_error_line(unwritable.err)


def test_member_vote_with_wrong_passphrase_fails(cli: CliRunner, deployed: dict[str, str]) -> None:
    result = cli("member", "vote", "1", env={"ALLIANCE_KEY_PASSPHRASE": "not-the-passphrase"})
    assert result.code == 1
    assert "wrong passphrase" in one_error_line(result.err)


def test_member_vote_on_executed_proposal_reports_the_contract_error(
        cli: CliRunner, deployed_with_three_more: list[RegistryClient]) -> None:
    """This bank did not vote on it: the contract's refusal (a bank that did gets its vote, as run again)."""
    b, c, d = deployed_with_three_more
    b.propose_suspension(2)
    c.vote(1)
    assert d.vote(1).executed  # 3 of 4
    result = cli("member", "vote", "1")
    assert result.code == 1
    assert "AllianceRegistryProposalAlreadyExecuted(proposalId=1)" in one_error_line(result.err)


def test_member_vote_unknown_proposal_fails(cli: CliRunner, deployed: dict[str, str]) -> None:
    result = cli("member", "vote", "42")
    assert result.code == 1
    assert "no proposal 42" in one_error_line(result.err)


def test_chain_status_with_unreachable_rpc_fails(cli: CliRunner, deployed: dict[str, str]) -> None:
    result = cli("chain", "status", env={"ALLIANCE_RPC_URL": "http://127.0.0.1:9"})
    assert result.code == 1
    assert "unreachable" in one_error_line(result.err)


def test_debug_logs_never_show_credentials_of_the_rpc_url(deployed: dict[str, str], data_dir: Path,
                                                          rpc_url: str) -> None:
    """`--debug` logged web3's and urllib3's request lines, with the RPC URL's user, password and query in full."""
    with_secrets = rpc_url.replace("http://", "http://alliance:s3cret-token@") + "/?apikey=s3cret-key"
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(data_dir), "ALLIANCE_RPC_URL": with_secrets,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for args in (("chain", "status"), ("member", "list")):
        done = subprocess.run([sys.executable, "-c", "from alliance_cli.main import run; run()", "--debug", *args],
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert " DEBUG " in done.stderr  # debug logs are on
        assert "s3cret" not in done.stderr + done.stdout


@pytest.mark.parametrize("body", [b"<html>sign in</html>", b'{"status": "ok"}', b"[1]", b'"ok"'],
                         ids=["html", "json_object", "json_list", "json_string"])
def test_chain_commands_with_an_rpc_url_answering_200_that_is_not_json_rpc_fail_with_one_line(
        cli: CliRunner, deployed: dict[str, str], body: bytes) -> None:
    """A web server answering 200 (a proxy's login page, a health endpoint) made a traceback of JSONDecodeError,
    web3's BadResponseFormat, or the ledger indexer's KeyError/TypeError on the answer."""
    with json_rpc_impostor(body) as url:
        for args in (("chain", "status"), ("member", "list"), ("ledger", "sync")):
            result = cli(*args, env={"ALLIANCE_RPC_URL": url})
            assert result.code == 1, (args, result.err)
            assert one_error_line(result.err).startswith(f"error: chain RPC at {url} "), (args, result.err)


@pytest.fixture
def web_server() -> Iterator[str]:
    """An HTTP server that is no JSON-RPC endpoint: it answers POST /status/<code> with that status."""
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.send_response(int(self.path.rsplit("/", 1)[-1]))
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as url:
        yield url


@pytest.mark.parametrize(("url", "message"), [
    ("{web}/status/404", "answered HTTP 404"),
    ("{web}/status/502", "answered HTTP 502"),
    ("127.0.0.1:8545", "not an http(s) URL"),
    ("ftp://127.0.0.1/", "not an http(s) URL"),
    ("http://[::1", "not an http(s) URL"),
])
def test_chain_commands_with_an_rpc_url_that_is_no_rpc_endpoint_fail_with_one_line(
        cli: CliRunner, deployed: dict[str, str], web_server: str, url: str, message: str) -> None:
    """A URL without its scheme, or one answered by a web server or proxy with an HTTP error, was a traceback of
    requests' exception."""
    for args in (("chain", "status"), ("member", "list")):
        result = cli(*args, env={"ALLIANCE_RPC_URL": url.format(web=web_server)})
        assert result.code == 1
        assert message in one_error_line(result.err)


@pytest.mark.parametrize(("name", "damage", "args", "message"), [
    ("alliance.toml", "not_utf8", ("member", "list"), "is not UTF-8 text"),
    ("alliance.toml", "directory", ("member", "list"), "cannot be read: Is a directory"),
    ("deployments/dev.json", "not_utf8", ("member", "list"), "is malformed: it is not UTF-8 text"),
    ("deployments/dev.json", "directory", ("member", "list"), "cannot be read: Is a directory"),
    ("keys/signing-key.json", "not_utf8", ("member", "vote", "1"), "is corrupt"),
    ("keys/signing-key.json", "json_not_a_keystore", ("member", "vote", "1"), "is corrupt"),
    ("keys/signing-key.json", "directory", ("member", "vote", "1"), "cannot be read: Is a directory"),
])
def test_commands_with_a_damaged_node_file_fail_with_one_line_naming_it(
        cli: CliRunner, deployed: dict[str, str], data_dir: Path, name: str, damage: str, args: tuple[str, ...],
        message: str) -> None:
    """A config, deployment record or keystore that is not UTF-8, a directory, or JSON without a keystore's fields
    was a UnicodeDecodeError, IsADirectoryError or KeyError traceback."""
    path = data_dir / name
    path.unlink()
    if damage == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe" if damage == "not_utf8" else b"{}")
    result = cli(*args)
    assert result.code == 1
    line = one_error_line(result.err)
    assert str(path) in line and message in line


@pytest.mark.parametrize("state", ["missing", "not_executable"])
def test_chain_up_with_an_anvil_it_cannot_run_fails_with_one_line(cli: CliRunner, data_dir: Path, tmp_path: Path,
                                                                  state: str) -> None:
    """ALLIANCE_ANVIL naming a missing or non-executable file was subprocess's FileNotFoundError/PermissionError
    as a traceback."""
    binary = tmp_path / "anvil"
    if state == "not_executable":
        binary.write_text("not a program")
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    result = cli("chain", "up", env={"ALLIANCE_ANVIL": str(binary), "ALLIANCE_DEV_CHAIN_PORT": str(free_port())})
    assert result.code == 1
    assert f"cannot run anvil at {binary}" in one_error_line(result.err)
    assert not (data_dir / "chain" / "anvil.pid").exists()


@pytest.mark.parametrize("command", ["up", "down"])
def test_chain_up_and_down_off_the_dev_network_fail_with_one_line(cli: CliRunner, command: str) -> None:
    """`chain down` on a node of another network said "the dev chain was not running" and exited 0, while `chain up`
    refused: both now refuse, naming the network."""
    env = {"ALLIANCE_KEY_PASSPHRASE": "a passphrase long enough"}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local",
               "--rpc-url", "http://127.0.0.1:9", env=env).code == 0
    result = cli("chain", command, env=env)
    assert result.code == 1
    assert one_error_line(result.err).endswith(
        f"`chain {command}` manages only the dev network; this node is on local [invalid_input]")


def test_chain_up_that_cannot_write_its_pid_file_fails_with_one_line_and_leaves_no_chain(cli: CliRunner,
                                                                                         data_dir: Path,
                                                                                         tmp_path: Path) -> None:
    """A full disk (here a file size limit) after anvil started was an OSError traceback, and that anvil ran on
    without a pid file: nothing could stop it, and it held the port the next start needed."""
    binary = tmp_path / "anvil"  # stands in for anvil: runs until killed, writes nothing
    binary.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(120)\n")
    binary.chmod(0o755)
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    env = {"ALLIANCE_ANVIL": str(binary), "ALLIANCE_DEV_CHAIN_PORT": str(free_port())}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # Python ignores SIGXFSZ: the write fails with EFBIG
    try:
        result = cli("chain", "up", env=env)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        left = _processes_running(binary)
        for pid in left:
            os.kill(pid, 9)
    assert result.code == 1
    assert f"cannot write the dev chain's files in {data_dir / 'chain'}" in one_error_line(result.err)
    assert left == [] and not (data_dir / "chain" / "anvil.pid").exists()


def test_chain_up_in_a_read_only_data_dir_fails_with_one_line(cli: CliRunner, data_dir: Path) -> None:
    """A data dir the node may not write in (here immutable: even root may not) was an OSError traceback."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    with immutable(data_dir):
        result = cli("chain", "up", env={"ALLIANCE_DEV_CHAIN_PORT": str(free_port())})
    assert result.code == 1
    assert f"cannot write the dev chain's files in {data_dir / 'chain'}" in one_error_line(result.err)
    assert not (data_dir / "chain").exists()


def test_node_start_in_a_read_only_data_dir_says_why_it_cannot_start(cli: CliRunner, data_dir: Path) -> None:
    """SQLite's own words only were "unable to open database file" (it cannot create the store's -shm file beside
    it), which says nothing of the data dir being read-only; the node lock's file is now the first it writes."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local",
               "--rpc-url", "http://127.0.0.1:9", env={"ALLIANCE_KEY_PASSPHRASE": "a passphrase long enough"}).code == 0
    gc.collect()  # closes the store connections of init, which ran in this process
    assert not (data_dir / "node.db-shm").exists()
    with immutable(data_dir):
        refused = cli("node", "start", "--port", str(free_port()),
                      env={"ALLIANCE_KEY_PASSPHRASE": "a passphrase long enough"})
    assert refused.code == 1
    assert f"cannot start the node: cannot write its lock file {data_dir / 'node.lock'}: Operation not permitted" \
        in one_error_line(refused.err)


def test_node_start_on_a_store_file_it_may_not_write_fails_with_one_line(cli: CliRunner, data_dir: Path) -> None:
    """A store file the node may not write (its mode, its owner; here immutable) opened, so the node started and
    refused every report and check-log entry with 503 while it ran. It now refuses to start, saying why."""
    env = {"ALLIANCE_KEY_PASSPHRASE": "a passphrase long enough"}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local",
               "--rpc-url", "http://127.0.0.1:9", env=env).code == 0
    gc.collect()  # closes the store connections of init, which ran in this process
    with immutable(data_dir / "node.db"):
        refused = cli("node", "start", "--port", str(free_port()), env=env)  # 8000 may be taken: a node running
    assert refused.code == 1
    assert f"cannot write the database at {data_dir / 'node.db'}: this user may not write the file" \
        in one_error_line(refused.err)


def test_node_start_beside_a_node_running_on_the_same_data_dir_fails_with_one_line(cli: CliRunner,
                                                                                 data_dir: Path) -> None:
    """Two nodes on one data dir ran two publishers on one outbox, racing for the same nonces."""
    env = {"ALLIANCE_KEY_PASSPHRASE": "a passphrase long enough"}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local",
               "--rpc-url", "http://127.0.0.1:9", env=env).code == 0
    with node_lock(data_dir, doing="start the node"):
        refused = cli("node", "start", "--port", str(free_port()), env=env)  # 8000 may be taken: a node running
    assert refused.code == 1
    assert f"cannot start the node: a node is running on {data_dir} (pid {os.getpid()}); stop it first" \
        in one_error_line(refused.err)


def _processes_running(program: Path) -> list[int]:
    """The pids of processes whose command line names `program`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(program).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return pids


def test_contracts_deploy_twice_is_refused(cli: CliRunner, deployed: dict[str, str], data_dir: Path) -> None:
    record = (data_dir / "deployments" / "dev.json").read_text()
    result = cli("contracts", "deploy")
    assert result.code == 1
    assert "already deployed" in one_error_line(result.err)
    assert (data_dir / "deployments" / "dev.json").read_text() == record


def test_demo_banks_data_dirs_run_commands_of_their_own(cli: CliRunner, data_dir: Path) -> None:
    """`node start --demo` makes data dirs for banks B and C so that they can be used too; their commands looked for
    a deployment record in their own data dir, found none and refused every command that needs the chain."""
    assert cli("init", "--bank-name", "Demo Bank A", "--bank-code", "DEMO-A").code == 0
    ensure_demo_consortium(NodeContext(load_settings(data_dir)))
    demo_b = data_dir / "demo" / "demo-b"
    shown = cli("--data-dir", str(demo_b), "member", "show", "DEMO-B", "--json")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["status"] == "active"
    assert cli("--data-dir", str(demo_b), "key", "sync").code == 0
    # A demo made before its configs named the record gets it at the next `node start --demo`.
    config = demo_b / "alliance.toml"
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.startswith("deployment_file")))
    assert cli("--data-dir", str(demo_b), "member", "show", "DEMO-B").code == 1
    ensure_demo_consortium(NodeContext(load_settings(data_dir)))
    assert cli("--data-dir", str(demo_b), "member", "show", "DEMO-B").code == 0


def test_contracts_deploy_with_a_proposal_lifetime_past_uint64_fails_with_one_line(cli: CliRunner,
                                                                                   data_dir: Path) -> None:
    """The registry's constructor takes a uint64: a larger lifetime was web3's encoding error as a traceback."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    result = cli("contracts", "deploy", "--proposal-lifetime", str(2**64))
    assert result.code == 1
    assert "--proposal-lifetime" in one_error_line(result.err)
    assert not (data_dir / "deployments").exists()


def test_contracts_deploy_that_fails_on_chain_leaves_no_record_directory(cli: CliRunner, data_dir: Path,
                                                                         tmp_path: Path) -> None:
    """The record's directories were made (to check they can be written) before the chain was asked, and stayed."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    record = tmp_path / "records" / "nested" / "consortium.json"
    elsewhere = {"ALLIANCE_DEPLOYMENT_FILE": str(record)}
    for env, made in [({}, data_dir / "deployments"), (elsewhere, tmp_path / "records")]:
        result = cli("contracts", "deploy", env={"ALLIANCE_RPC_URL": nowhere, **env})
        assert result.code == 1
        assert "chain" in one_error_line(result.err)
        assert not made.exists()
    (tmp_path / "records").mkdir()  # a directory there before is left as it was
    assert cli("contracts", "deploy", env={"ALLIANCE_RPC_URL": nowhere, **elsewhere}).code == 1
    assert (tmp_path / "records").is_dir() and not (tmp_path / "records" / "nested").exists()


@pytest.mark.parametrize("blocker", ["directory_at_record", "file_at_parent"])
def test_contracts_deploy_whose_record_cannot_be_written_sends_nothing(cli: CliRunner, tmp_path: Path, rpc_url: str,
                                                                       blocker: str) -> None:
    """The three contracts were deployed, then writing the record failed as a traceback: their addresses were
    printed nowhere and the node could not use them."""
    record = tmp_path / "records" / "consortium.json"
    if blocker == "directory_at_record":
        record.mkdir(parents=True)
    else:
        record.parent.write_text("a file")
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    head = ChainClient(rpc_url).block_number()
    result = cli("contracts", "deploy", env={"ALLIANCE_DEPLOYMENT_FILE": str(record)})
    assert result.code == 1
    assert f"cannot write the deployment record {record}" in one_error_line(result.err)
    assert ChainClient(rpc_url).block_number() == head


def test_contracts_deploy_checks_this_banks_identity_from_the_environment(cli: CliRunner, rpc_url: str) -> None:
    """ALLIANCE_BANK_CODE went on chain as given: a lowercase code no reference could find, or any text at all."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    head = ChainClient(rpc_url).block_number()
    refused = cli("contracts", "deploy", env={"ALLIANCE_BANK_CODE": "bad code!"})
    assert refused.code == 1
    assert "bank code 'bad code!'" in one_error_line(refused.err)
    assert ChainClient(rpc_url).block_number() == head
    assert cli("contracts", "deploy", env={"ALLIANCE_BANK_CODE": "banka"}).code == 0
    assert json.loads(cli("member", "show", "BANKA", "--json").out)["bank_code"] == "BANKA"


def test_contracts_deploy_rejects_malformed_founders_file(cli: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    founders = tmp_path / "founders.json"
    for content, message in [(b"{not json", "not JSON"), (b"[]", "non-empty JSON list"),
                             (b'[{"account": "0x1", "name": "A", "bank_code": "AA", "encryption_key": "0x"}]',
                              "entry 0"), (b"\xff\xfe[]", "not UTF-8"),
                             # were deployed as a founder named "None" with bank code "NONE"
                             (b'[{"account": "0x' + b"1" * 40 + b'", "name": null, "bank_code": null, '
                              b'"encryption_key": "' + KEY.encode() + b'"}]', "bank_code, name must be a JSON string")]:
        founders.write_bytes(content)
        result = cli("contracts", "deploy", "--founders", str(founders))
        assert result.code == 1
        assert message in one_error_line(result.err)
    result = cli("contracts", "deploy", "--founders", str(tmp_path))
    assert result.code == 1
    assert "is a directory" in one_error_line(result.err)
    founders.write_bytes(b"[" * 100_000 + b"]" * 100_000)  # was a RecursionError traceback
    result = cli("contracts", "deploy", "--founders", str(founders))
    assert result.code == 1
    assert "nests too deeply" in one_error_line(result.err)
    assert not (data_dir / "deployments" / "dev.json").exists()


def test_apikey_create_list_revoke(cli: CliRunner, deployed: dict[str, str]) -> None:
    created = json.loads(cli("apikey", "create", "--role", "analyst", "--label", "desk", "--json").out)
    listed = json.loads(cli("apikey", "list", "--json").out)
    assert [(k["key_id"], k["role"], k["revoked"]) for k in listed] == [(created["key_id"], "analyst", False)]
    assert created["token"] not in cli("apikey", "list", "--json").out
    assert cli("apikey", "revoke", created["key_id"]).code == 0
    assert json.loads(cli("apikey", "list", "--json").out)[0]["revoked"] is True
    refused = cli("apikey", "revoke", "nope")
    assert refused.code == 1
    assert one_error_line(refused.err) == "error: no API key nope [api_key_not_found]"


def test_apikey_revoke_of_a_whole_token_revokes_its_key_and_never_shows_its_secret(
        cli: CliRunner, deployed: dict[str, str]) -> None:
    """An operator handed a leaked token revokes it as it is: it was refused as an unknown key id, its secret written
    out in the error line."""
    created = json.loads(cli("apikey", "create", "--role", "analyst", "--json").out)
    secret = created["token"].rsplit("_", 1)[1]
    unknown = created["token"].replace(created["key_id"], "0" * 16)
    refused = cli("apikey", "revoke", unknown)
    assert refused.code == 1
    assert one_error_line(refused.err) == f"error: no API key {'0' * 16} [api_key_not_found]"
    assert json.loads(cli("apikey", "list", "--json").out)[0]["revoked"] is False
    revoked = cli("apikey", "revoke", created["token"])
    assert revoked.code == 0
    assert secret not in revoked.out + revoked.err
    assert f"key {created['key_id']} revoked" in revoked.out
    assert json.loads(cli("apikey", "list", "--json").out)[0]["revoked"] is True


@pytest.mark.parametrize("label", ["desk\nops", "desk\x1b[2J", "desk\udcff", "x" * 201],
                         ids=["newline", "escape", "undecodable_byte", "too_long"])
def test_apikey_create_refuses_bad_label_and_issues_nothing(cli: CliRunner, store_url: str, label: str) -> None:
    """The label was stored as given on SQLite; on PostgreSQL one over its 200 characters was a traceback."""
    store = {"ALLIANCE_DATABASE_URL": store_url}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env=store).code == 0
    result = cli("apikey", "create", "--role", "analyst", "--label", label, env=store)
    assert result.code == 1
    assert "label" in one_error_line(result.err)
    assert json.loads(cli("apikey", "list", "--json", env=store).out) == []


@pytest.mark.parametrize("key_id", ["nope\x00", "0123456789abcdef\x00"], ids=["nul", "issued_form_then_nul"])
def test_apikey_revoke_of_an_id_no_key_can_have_fails_with_one_line(cli: CliRunner, store_url: str,
                                                                   key_id: str) -> None:
    """A NUL in the id was a psycopg DataError traceback on PostgreSQL."""
    store = {"ALLIANCE_DATABASE_URL": store_url}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env=store).code == 0
    result = cli("apikey", "revoke", key_id, env=store)
    assert result.code == 1
    assert one_error_line(result.err).startswith("error: no API key")


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"), (b"", "is a directory"), (b"phone\n\xff\xfe\n", "is not UTF-8 text")],
    ids=["missing", "directory", "not_utf8"])
def test_marketing_prescreen_of_an_unreadable_list_says_why_in_one_line(cli: CliRunner, tmp_path: Path,
                                                                       content: bytes | None, message: str) -> None:
    """The line named the Python exception (`cannot read x.csv: IsADirectoryError`) rather than the problem."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    prospects = tmp_path / "prospects.csv"
    if content == b"":
        prospects.mkdir()
    elif content is not None:
        prospects.write_bytes(content)
    result = cli("marketing", "prescreen", str(prospects))
    assert result.code == 1
    assert f"prospect list {prospects} {message}" in one_error_line(result.err)
    assert not (tmp_path / "prospects.clean.csv").exists()


def test_unknown_option_is_one_line_exit_1(cli: CliRunner) -> None:
    result = cli("member", "list", "--bogus")
    assert result.code == 1
    one_error_line(result.err)


@pytest.mark.parametrize("args", [("apikey", "create"), ("member", "propose")], ids=["option", "argument"])
def test_missing_choice_is_one_line_listing_the_choices(cli: CliRunner, args: tuple[str, ...]) -> None:
    """Click put each choice of a missing enum option or argument on a line of its own."""
    result = cli(*args)
    assert result.code == 1
    assert "Choose from: " in one_error_line(result.err)


def test_member_vote_outside_dev_without_passphrase_fails_clearly(cli: CliRunner, deployed: dict[str, str],
                                                                 data_dir: Path) -> None:
    # The data dir was made on the dev network; as a consortium node it has no built-in passphrase.
    toml = data_dir / "alliance.toml"
    toml.write_text(toml.read_text().replace('network = "dev"', 'network = "local"'))
    result = cli("member", "vote", "1")
    assert result.code == 1
    assert "ALLIANCE_KEY_PASSPHRASE" in one_error_line(result.err)


def test_node_start_with_a_port_out_of_range_fails_with_one_line(cli: CliRunner) -> None:
    passphrase = {"ALLIANCE_KEY_PASSPHRASE": "a-long-test-passphrase"}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", "--network", "local", env=passphrase).code == 0
    result = cli("node", "start", "--port", "65536", env=passphrase)
    assert result.code == 1
    assert "--port" in one_error_line(result.err)


@pytest.mark.parametrize("problem", ["port in use", "unresolvable host", "address not on this machine"])
def test_node_start_on_an_address_it_cannot_listen_on_fails_with_one_line_before_starting_its_dev_chain(
        cli: CliRunner, data_dir: Path, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0  # dev network: it runs anvil
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host, port = {"port in use": ("127.0.0.1", taken.getsockname()[1]),
                      "unresolvable host": ("no-such-host.invalid", 8000),
                      "address not on this machine": ("192.0.2.1", 8000)}[problem]
        result = cli("node", "start", "--host", host, "--port", str(port))
    assert result.code == 1
    assert f"cannot listen on {host}:{port}" in one_error_line(result.err)
    # Logged on the terminal's stderr beside the error line: a warning about serving what is never served.
    assert "plain HTTP" not in caplog.text
    assert not (data_dir / "chain" / "anvil.pid").exists()
    assert not (data_dir / "chain" / "anvil.owner").exists()


@pytest.mark.parametrize("setting", ["ALLIANCE_EXTENSIONS_ENABLED", "ALLIANCE_EXTENSIONS_DISABLED"])
def test_node_start_with_an_extension_name_nothing_answers_to_fails_with_one_line_before_starting(
        cli: CliRunner, data_dir: Path, setting: str) -> None:
    """A misspelt built-in: enabled, the node served no /v1/applications at all; disabled, the built-in the bank
    meant to replace kept deciding."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0  # dev network: it runs anvil
    with socket.socket() as taken:  # were the names not checked first, the start would fail on the port instead
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("node", "start", "--port", str(taken.getsockname()[1]),
                     env={setting: '["credit_platform", "credit_descision"]'})
    assert result.code == 1
    line = one_error_line(result.err)
    assert "'credit_descision'" in line and "'credit_platform'" not in line
    assert not (data_dir / "chain" / "anvil.pid").exists()


def test_node_start_with_a_credit_policy_the_modules_cannot_use_fails_with_one_line_before_starting(
        cli: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[decision]\napprove_min_score = "high"\n')  # every application went to review
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0  # dev network: it runs anvil
    with socket.socket() as taken:  # were the policy not read first, the start would fail on the port instead
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("node", "start", "--port", str(taken.getsockname()[1]),
                     env={"ALLIANCE_CREDIT_POLICY_FILE": str(policy)})
    assert result.code == 1
    assert "decision.approve_min_score" in one_error_line(result.err)
    assert not (data_dir / "chain" / "anvil.pid").exists()


@pytest.mark.postgres
def test_commands_while_postgresql_is_away_fail_with_one_line(cli: CliRunner, postgres_relay: PostgresRelay,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Down when a command starts: one line from opening the store; gone after it was opened: a traceback of
    SQLAlchemy's OperationalError, now one line too."""
    store = {"ALLIANCE_DATABASE_URL": postgres_relay.url}
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA", env=store).code == 0
    postgres_relay.cut()
    down = cli("apikey", "list", env=store)
    assert down.code == 1 and "cannot open the database" in one_error_line(down.err)

    postgres_relay.restore()
    migrate = Store.migrate
    monkeypatch.setattr(Store, "migrate", lambda self, **options: (migrate(self, **options), postgres_relay.cut()))
    gone = cli("apikey", "list", env=store)
    assert gone.code == 1 and "the database is unavailable" in one_error_line(gone.err)
    assert "alliance:" not in gone.err  # no password


def test_chain_up_with_an_anvil_that_exits_at_once_fails_without_waiting_out_the_timeout(
        cli: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    """An anvil that exits before answering (a wrong binary, a bad flag) was waited for the whole 30 s."""
    binary = tmp_path / "anvil"
    binary.write_text("#!/bin/sh\necho 'error: unexpected argument' >&2\nexit 2\n")
    binary.chmod(0o755)
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    result = cli("chain", "up", env={"ALLIANCE_ANVIL": str(binary), "ALLIANCE_DEV_CHAIN_PORT": str(free_port())})
    assert result.code == 1
    # The timeout's own message is "did not answer within 30s": this one comes from noticing the exit.
    assert "anvil exited with code 2 before answering" in one_error_line(result.err)
    assert not (data_dir / "chain" / "anvil.pid").exists()


def test_an_error_line_quoting_an_endpoints_words_writes_its_terminal_escapes_as_text(
        cli: CliRunner, deployed: dict[str, str], rpc_url: str) -> None:
    """An error line quotes what the endpoint said (a pruning refusal's reason): its ESC sequences reached the
    operator's terminal, which could clear the screen or write over what was printed."""
    refusal = {"code": -32000, "message": "missing trie node \x1b[2J\x1b[1GOK"}
    with capped_rpc(rpc_url) as relay:
        relay.rewrite["eth_getBlockByNumber"] = lambda request, _answer: {
            "jsonrpc": "2.0", "id": request.get("id"), "error": refusal}
        result = cli("chain", "status", env={"ALLIANCE_RPC_URL": relay.url})
    assert result.code == 1
    line = one_error_line(result.err)
    assert "\x1b" not in result.err and line.endswith("(missing trie node \\x1b[2J\\x1b[1GOK)"), line


def test_the_cli_loads_no_web_framework_until_the_node_starts() -> None:
    """Only `node start` serves HTTP: the framework and the app's routes were loaded by every command (~0.6 s of an
    `alliance --help` of 2.4-2.8 s here)."""
    web = ("fastapi", "uvicorn", "starlette", "node.server", "node.api.app")
    loaded = subprocess.run([sys.executable, "-c", "import sys, alliance_cli.main; "
                             f"print([m for m in {web!r} if m in sys.modules])"],
                            capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
