"""`alliance fraud report|import|show|publish` on a one-bank dev consortium with its alliance key."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from node.chain.client import ChainClient
from node.chain.registry import MemberRole
from node.ledger.key_distribution import sync_keys
from tests.cli.conftest import CliRunner
from tests.cli.test_cli import json_error, one_error_line
from tests.conftest import TEST_PASSPHRASE, LedgerNodes


@pytest.fixture
def member(cli: CliRunner) -> None:
    """An initialised, deployed bank that holds the epoch-1 key (it generates it as member 1)."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    assert cli("contracts", "deploy").code == 0
    synced = cli("key", "sync", "--json")
    assert synced.code == 0, synced.err


def test_fraud_report_publish_show(cli: CliRunner, member: None) -> None:
    reported = cli("fraud", "report", "phone=138 0013 8000", "cn_resident_id=11010519491231002X",
                   "--category", "identity_theft", "--confidence", "90", "--json")
    assert reported.code == 0, reported.err
    report_id = json.loads(reported.out)["report_id"]
    again = cli("fraud", "report", "phone=13800138000", "cn_resident_id=11010519491231002x",
                "--category", "identity_theft", "--confidence", "90", "--json")
    assert json.loads(again.out) == {"report_id": report_id, "created": False}
    published = cli("fraud", "publish", "--json")
    assert published.code == 0, published.err
    assert json.loads(published.out)["records"] == 2
    shown = json.loads(cli("fraud", "show", report_id, "--json").out)
    assert shown["state"] == "confirmed"
    assert all(item["tx_hash"] for item in shown["identifiers"])
    table = cli("fraud", "show", report_id)  # the whole indicators, folded over lines, not cut short
    indicators = "".join(line.split("│")[4].strip() for line in table.out.splitlines() if line.startswith("│"))
    assert indicators == "".join(item["indicator"] for item in shown["identifiers"]) and "…" not in table.out


def test_fraud_report_takes_valid_from_as_the_api_and_the_import_do(cli: CliRunner, member: None) -> None:
    reported = cli("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50",
                   "--valid-from", "1900000000", "--valid-days", "10", "--json")
    assert reported.code == 0, reported.err
    shown = json.loads(cli("fraud", "show", json.loads(reported.out)["report_id"], "--json").out)
    assert (shown["valid_from"], shown["valid_until"]) == (1900000000, 1900000000 + 10 * 86400)
    refused = cli("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50",
                  "--valid-from", str(2**63))
    assert refused.code == 1
    assert one_error_line(refused.err).endswith("[invalid_validity]")


@pytest.mark.parametrize(("args", "message"), [
    (("phone=12",), "bad_length"),
    (("phone:13800138000",), "TYPE=VALUE"),
    (("passport=E123",), "unknown identifier type"),
])
def test_fraud_report_refuses_bad_identifiers_in_one_line(cli: CliRunner, member: None, args: tuple[str, ...],
                                                           message: str) -> None:
    result = cli("fraud", "report", *args, "--category", "other", "--confidence", "50")
    assert result.code == 1
    assert message in one_error_line(result.err)


def test_fraud_import_all_or_nothing_with_error_file(cli: CliRunner, member: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("identifier_type,identifier,category,confidence\nphone,13800138000,other,50\n"
                   "phone,999,other,50\n")
    result = cli("fraud", "import", str(bad))
    assert result.code == 1
    line = one_error_line(result.err)
    assert "1 of 2 rows are invalid; nothing was imported" in line and line.endswith(" [invalid_rows]")
    errors = (tmp_path / "bad.csv.errors.csv").read_text().splitlines()
    assert errors[0] == "line,code,reason" and errors[1].startswith("3,bad_length,")
    assert result.err.count("\n") == 1  # the progress bar left an empty line before it off a terminal
    good = tmp_path / "good.csv"
    good.write_text("identifier_type,identifier,category,confidence\nphone,13800138000,other,50\n"
                    "email,mule@example.com,money_mule,70\n")
    imported = cli("fraud", "import", str(good), "--json")
    assert imported.code == 0, imported.err
    assert json.loads(imported.out) == {"rows": 2, "reports": 2, "created": 2}
    again = cli("fraud", "import", str(good))
    assert again.code == 0 and again.err == ""
    # Once the file is corrected, the list of its earlier refusal goes: left there it would say rows failed.
    bad.write_text("identifier_type,identifier,category,confidence\nphone,13800138000,other,50\n")
    fixed = cli("fraud", "import", str(bad))
    assert fixed.code == 0 and "removed bad.csv.errors.csv" in fixed.out
    assert not (tmp_path / "bad.csv.errors.csv").exists()


def test_fraud_import_whose_error_list_cannot_be_written_fails_in_one_line(cli: CliRunner, member: None,
                                                                           tmp_path: Path) -> None:
    """Writing FILE.errors.csv where a directory (or a read-only file system) is in the way was a traceback."""
    bad = tmp_path / "reports" / "bad.csv"
    bad.parent.mkdir()
    bad.write_text("identifier_type,identifier,category,confidence\nphone,999,other,50\n")
    (bad.parent / "bad.csv.errors.csv").mkdir()
    result = cli("fraud", "import", str(bad))
    assert result.code == 1
    assert "nothing was imported; the list of bad rows could not be written to" in one_error_line(result.err)
    assert sorted(p.name for p in bad.parent.iterdir()) == ["bad.csv", "bad.csv.errors.csv"]  # no partial file


def test_fraud_commands_quote_no_identifier_typed_in_the_wrong_place(cli: CliRunner, member: None,
                                                                     tmp_path: Path) -> None:
    """A value typed without its TYPE= or as a report id, or a file whose columns are shifted, puts the customer's
    identifier where a type, category name or report id belongs: the refusal names the argument or line, never that
    value (the terminal, job logs and the error file are not places for it)."""
    forgot_type = cli("fraud", "report", "13512345678", "--category", "other", "--confidence", "50")
    assert forgot_type.code == 1 and "TYPE=VALUE" in one_error_line(forgot_type.err)
    as_type = cli("fraud", "report", "11010519491231002X=phone", "--category", "other", "--confidence", "50")
    assert as_type.code == 1 and "unknown identifier type" in one_error_line(as_type.err)
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("identifier_type,identifier,category,confidence\n13900139000,phone,other,50\n"
                       "phone,13700137000,13600136000,50\n")
    imported = cli("fraud", "import", str(shifted))
    errors = (tmp_path / "shifted.csv.errors.csv").read_text()
    assert imported.code == 1 and "unknown_type" in errors and "unknown_category" in errors
    as_report = [cli("fraud", command, "11010519491231002X", *extra)
                 for command, extra in (("show", ()), ("confirm", ()), ("withdraw", ("--reason", "other")))]
    assert all(r.code == 1 and "no report with that id" in one_error_line(r.err) for r in as_report)
    printed = forgot_type.err + as_type.err + imported.err + errors + "".join(r.err for r in as_report)
    assert not [raw for raw in ("13512345678", "11010519491231002X", "13900139000", "13600136000") if raw in printed]


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe\x00garbage\n", "is not UTF-8 text"),
    (b"identifier_type,identifier,category,confidence\nphone," + b"9" * 200_000 + b",other,50\n", "not valid CSV"),
])
def test_fraud_import_unreadable_file_fails_in_one_line_and_imports_nothing(cli: CliRunner, member: None,
                                                                           tmp_path: Path, content: bytes,
                                                                           message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    result = cli("fraud", "import", str(bad))
    assert result.code == 1
    assert message in one_error_line(result.err)
    assert json.loads(cli("fraud", "publish", "--json").out)["records"] == 0


def test_fraud_show_unknown_report_fails(cli: CliRunner, member: None) -> None:
    result = cli("fraud", "show", "0" * 32)
    assert result.code == 1
    assert "no report" in one_error_line(result.err)
    capitals = cli("fraud", "show", "A" * 32)  # 32 hex digits, but not a report id's form: said which form is
    assert "a report id is 32 lowercase hex digits" in one_error_line(capitals.err)


def test_fraud_report_before_the_key_arrives_fails_clearly(cli: CliRunner) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    result = cli("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50")
    assert result.code == 1
    assert "no alliance key" in one_error_line(result.err)


def test_ledger_republish_after_key_rotation(cli: CliRunner, member: None) -> None:
    assert cli("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50").code == 0
    nothing = cli("ledger", "republish", "--json")
    assert nothing.code == 0, nothing.err
    assert json.loads(nothing.out) == {"epoch": 1, "reports": 0, "records": 0}
    assert cli("key", "rotate").code == 0
    again = cli("ledger", "republish", "--json")
    assert json.loads(again.out) == {"epoch": 2, "reports": 1, "records": 1}
    assert json.loads(cli("fraud", "publish", "--json").out)["records"] == 2


def test_fraud_withdraw_and_reaction_refusals(cli: CliRunner, member: None) -> None:
    reported = cli("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50", "--json")
    report_id = json.loads(reported.out)["report_id"]
    assert cli("fraud", "publish").code == 0
    withdrawn = cli("fraud", "withdraw", report_id, "--reason", "reported_in_error", "--json")
    assert withdrawn.code == 0, withdrawn.err
    assert [s["kind"] for s in json.loads(withdrawn.out)] == ["revoked"]
    assert json.loads(cli("fraud", "show", report_id, "--json").out)["state"] == "withdrawn"
    bad_hex = cli("fraud", "dispute", "0x12", "--reason", "other")
    assert bad_hex.code == 1 and "64 hex digits" in one_error_line(bad_hex.err)
    unknown = cli("fraud", "endorse", "0x" + "ab" * 32, "--confidence", "50")
    assert unknown.code == 1 and "no such indicator" in one_error_line(unknown.err)


def test_fraud_endorse_and_dispute_of_this_banks_own_indicator_fail_in_one_line(cli: CliRunner, member: None,
                                                                                rpc_url: str) -> None:
    """The bank's own indicator, published and mirrored or only queued: refused before anything is sent."""
    published = json.loads(cli("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50",
                               "--json").out)["report_id"]
    assert cli("fraud", "publish").code == 0 and cli("ledger", "sync").code == 0
    queued = json.loads(cli("fraud", "report", "phone=13900139000", "--category", "other", "--confidence", "50",
                            "--json").out)["report_id"]
    before = ChainClient(rpc_url).block_number()
    for report_id in (published, queued):
        [item] = json.loads(cli("fraud", "show", report_id, "--json").out)["identifiers"]
        endorsed = cli("fraud", "endorse", item["indicator"], "--confidence", "90")
        assert endorsed.code == 1
        assert f"reports this indicator itself (report {report_id})" in one_error_line(endorsed.err)
        disputed = cli("fraud", "dispute", item["indicator"], "--reason", "other", "--json")
        assert json_error(disputed)["code"] == "own_indicator"
    assert ChainClient(rpc_url).block_number() == before


def test_fraud_publish_of_a_suspended_bank_fails_in_one_line_and_keeps_the_reports(
        cli: CliRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The runbook's last step: a suspended bank's publish is refused once, in one line, and nothing is lost."""
    other = ["--data-dir", str(tmp_path / "bank-b")]
    banks = []
    for args, name, code in (([], "Bank A", "BANKA"), (other, "Bank B", "BANKB")):
        created = cli(*args, "init", "--bank-name", name, "--bank-code", code, "--json")
        assert created.code == 0, created.err
        info = json.loads(created.out)
        banks.append({"account": info["address"], "name": name, "bank_code": code,
                      "encryption_key": info["encryption_public_key"]})
    founders = tmp_path / "founders.json"
    founders.write_text(json.dumps(banks))
    assert cli("contracts", "deploy", "--founders", str(founders), "--quorum-percent", "1").code == 0
    shared = {"ALLIANCE_DEPLOYMENT_FILE": str(tmp_path / "node-data" / "deployments" / "dev.json")}
    assert cli("key", "sync").code == 0
    assert cli(*other, "key", "sync", env=shared).code == 0
    assert cli("member", "propose", "suspend", "BANKB").code == 0
    reported = cli(*other, "fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50",
                   "--json", env=shared)
    assert reported.code == 0, reported.err
    report_id = json.loads(reported.out)["report_id"]
    caplog.clear()
    refused = cli(*other, "fraud", "publish", env=shared)
    assert refused.code == 1
    line = one_error_line(refused.err)
    assert "FraudLedgerNotMember" in line and "stay queued" in line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    shown = json.loads(cli(*other, "fraud", "show", report_id, "--json", env=shared).out)
    assert shown["state"] == "queued"


def test_node_status_follows_a_report_from_queue_to_chain(cli: CliRunner, member: None) -> None:
    def status() -> dict[str, object]:
        shown = cli("node", "status", "--json")
        assert shown.code == 0, shown.err
        return dict(json.loads(shown.out))

    before = status()
    assert before["outbox"] == {} and before["key_epochs_held"] == [1] and before["oldest_queued_report_at"] is None
    empty = cli("node", "status")
    assert empty.code == 0 and "outbox records: none" in empty.out and "publish batches: none" in empty.out
    assert cli("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50").code == 0
    queued = status()
    assert queued["outbox"] == {"queued": 1} and queued["oldest_queued_report_at"] is not None
    assert cli("fraud", "publish").code == 0
    assert cli("ledger", "sync").code == 0
    after = status()
    assert after["outbox"] == {"confirmed": 1} and after["publish_batches"] == {"confirmed": 1}
    mirror = after["mirror"]
    assert isinstance(mirror, dict) and mirror["as_of_block"] >= 1 and mirror["stale"] is False
    human = cli("node", "status")
    assert human.code == 0 and "confirmed" in human.out and "key epochs held: 1" in human.out


def test_node_status_of_a_data_dir_never_initialised_fails_with_one_line(cli: CliRunner) -> None:
    result = cli("node", "status")
    assert result.code == 1 and "not an initialised node data dir" in one_error_line(result.err)


UNDECODABLE = "ref-\udcff"  # how Python hands over a command-line byte that is not UTF-8 (here 0xff)


@pytest.mark.parametrize(("args", "message"), [
    (("fraud", "report", "phone=13800138000", "--category", "other", "--confidence", "50",
      "--case-reference", UNDECODABLE), "case_reference holds a character that is not valid text"),
    (("fraud", "show", UNDECODABLE), "no report with that id"),
    (("fraud", "confirm", UNDECODABLE), "no report with that id"),
    (("fraud", "withdraw", UNDECODABLE, "--reason", "other"), "no report with that id"),
    (("check-log", "--key-id", UNDECODABLE), "key_id holds a character that is not valid text"),
    (("assets", "anchor", UNDECODABLE), "the pool name holds a character that is not valid text"),
    (("assets", "discard", UNDECODABLE), "the pool name holds a character that is not valid text"),
    (("assets", "prove", UNDECODABLE), "the loan reference holds a character that is not valid text"),
    (("assets", "loans", UNDECODABLE), "the pool name holds a character that is not valid text"),
], ids=["report", "show", "confirm", "withdraw", "check-log", "anchor", "discard", "prove", "loans"])
def test_arguments_with_bytes_that_are_not_utf8_fail_with_one_line(cli: CliRunner, member: None,
                                                                    args: tuple[str, ...], message: str) -> None:
    """Such an argument went on to the store as a lone surrogate, which it cannot encode: a UnicodeEncodeError
    traceback (a report's case reference was hashed first, with the same result)."""
    result = cli(*args)
    assert result.code == 1
    assert message in one_error_line(result.err)
    assert json.loads(cli("node", "status", "--json").out)["outbox"] == {}


def test_a_refused_import_with_json_lists_its_rows_on_stdout(cli: CliRunner, member: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("identifier_type,identifier,category,confidence\nphone,13800138000,other,50\nphone,999,other,50\n")
    error = json_error(cli("fraud", "import", str(bad), "--json"))
    assert error["code"] == "invalid_rows"
    assert [(d["line"], d["code"]) for d in error["details"]] == [(3, "bad_length")]


def test_a_node_refusal_and_a_usage_error_with_json_carry_their_codes(cli: CliRunner, member: None) -> None:
    error = json_error(cli("fraud", "show", "no-such-report", "--json"))
    assert error["code"] == "report_not_found"
    usage = json_error(cli("fraud", "show", "--json"))  # the report id is missing
    assert usage["code"] == "usage" and "Missing argument" in usage["message"]


def test_fraud_search_lists_filtered_indicators_as_table_and_json(cli: CliRunner, member: None) -> None:
    for phone, category in (("13800138000", "money_mule"), ("13900139000", "telecom_fraud")):
        assert cli("fraud", "report", f"phone={phone}", "--category", category, "--confidence", "60").code == 0
    assert cli("fraud", "publish").code == 0
    assert cli("ledger", "sync").code == 0
    found = cli("fraud", "search", "--category", "money_mule", "--reporter", "BANKA", "--state", "active", "--json")
    assert found.code == 0, found.err
    body = json.loads(found.out)
    assert [(i["categories"], i["reporters"], i["status"]) for i in body["indicators"]] == [(["money_mule"], [1],
                                                                                           "active")]
    assert body["next_after"] is None and body["as_of_block"] >= 0
    table = cli("fraud", "search", "--identifier-type", "phone", "--limit", "1")
    assert table.code == 0 and table.out.count("active") == 1
    assert f"--after {json.loads(cli('fraud', 'search', '--limit', '1', '--json').out)['next_after']}" in table.out
    assert "mirror as of block" in table.out
    # The whole hash, folded over lines in an 80-column table rather than cut ("0xbca715e25b…"), and a readable time.
    listed = json.loads(cli("fraud", "search", "--identifier-type", "phone", "--limit", "1", "--json").out)
    first_column = "".join(line.split("│")[1].strip() for line in table.out.splitlines() if line.startswith("│"))
    assert first_column == listed["indicators"][0]["indicator"] and "…" not in table.out
    assert re.search(r"│ 20\d\d-\d\d-\d\d +│", table.out) and " UTC " in table.out  # not Unix seconds
    assert json.loads(cli("fraud", "search", "--changed-since-block", str(body["next_changed_since_block"]),
                          "--json").out)["indicators"] == []


@pytest.mark.parametrize(("args", "code"), [
    (("--category", "13800138000"), "unknown_category"), (("--state", "13800138000"), "invalid_state"),
    (("--min-confidence", "101"), "invalid_confidence"), (("--limit", "0"), "invalid_limit"),
    (("--reporter", "13800138000"), "unknown_member")])
def test_fraud_search_refuses_invalid_filters_with_codes(cli: CliRunner, member: None, args: tuple[str, ...],
                                                         code: str) -> None:
    refused = cli("fraud", "search", *args, "--json")
    assert refused.code == 1 and json.loads(refused.out)["error"]["code"] == code
    assert one_error_line(refused.err).endswith(f" [{code}]")  # each, as the README says every refusal ends
    assert "13800138000" not in refused.out + refused.err


@pytest.mark.parametrize("role", [MemberRole.auditor, MemberRole.observer])
def test_fraud_report_and_import_of_an_auditor_or_observer_bank_are_refused(
        cli: CliRunner, ledger_nodes: LedgerNodes, tmp_path: Path, role: MemberRole) -> None:
    """The FraudLedger takes members' batches only: an auditor's report was queued, and `fraud publish` then refused it
    for good with FraudLedgerNotMember while `member show` said active."""
    bank = ledger_nodes.admit(tmp_path / "admitted", "BANK-D", role)
    for node in (ledger_nodes.nodes[0], bank):
        sync_keys(node)  # an auditor holds the alliance key, for checks
    env = {"ALLIANCE_DATA_DIR": str(bank.settings.data_dir), "ALLIANCE_KEY_PASSPHRASE": TEST_PASSPHRASE,
           "ALLIANCE_DEPLOYMENT_FILE": str(ledger_nodes.deployment_file)}
    reports = tmp_path / "reports.csv"
    reports.write_text("identifier_type,identifier,category,confidence\nphone,13800138000,telecom_fraud,90\n")

    for command in (("fraud", "report", "phone=13800138000", "--category", "telecom_fraud", "--confidence", "90"),
                    ("fraud", "import", str(reports))):
        result = cli(*command, env=env)
        assert result.code == 1
        assert one_error_line(result.err) == (f"error: this bank is an {role.name} of the alliance: only banks of role "
                                              "member report fraud [not_a_reporter]")
    assert json.loads(cli("node", "status", "--json", env=env).out)["outbox"] == {}
