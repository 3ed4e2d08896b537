"""`alliance check`: answers from the mirror, and every refusal as one line with exit code 1."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import load_settings
from node.crypto.keyed_hash import hash_identifier
from node.runtime import NodeContext
from tests.cli.conftest import CliRunner
from tests.cli.test_cli import one_error_line
from tests.ledger.mirror_rows import DAY, Row, add_batch

PHONE = "13800138000"


@pytest.fixture
def initialised(cli: CliRunner, data_dir: Path) -> Iterator[NodeContext]:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    node = NodeContext(load_settings(data_dir))
    yield node
    node.close()


@pytest.fixture
def reported(initialised: NodeContext) -> bytes:
    key = os.urandom(32)
    initialised.keyring.store_key(1, key, source="generated")
    phone = hash_identifier(key, "phone", PHONE)[1]
    with initialised.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(phone, confidence=90, valid_from=int(time.time()) - DAY)])
    return phone


def test_check_reports_hit_as_json(cli: CliRunner, reported: bytes) -> None:
    result = cli("check", "phone=+86 138 0013 8000", "email=someone@example.com", "--json")
    assert result.code == 0, result.err
    body = json.loads(result.out)
    hit, miss = body["results"]
    assert hit["hit"] and hit["indicator"] == "0x" + reported.hex() and hit["confidence"] == 89
    assert not miss["hit"]
    assert body["stale"] is True and body["as_of_block"] == -1  # no indexer ran on this node


def test_check_prints_table(cli: CliRunner, reported: bytes) -> None:
    result = cli("check", f"phone={PHONE}")
    assert result.code == 0, result.err
    assert "HIT" in result.out and "money_mule" in result.out and "STALE" in result.out
    last_column = "".join(line.split("│")[-2].strip() for line in result.out.splitlines() if line.startswith("│"))
    assert last_column == "0x" + reported.hex()  # whole, not cut short: an analyst reacts to the hit by it


def test_check_invalid_identifier_fails_with_one_line(cli: CliRunner, reported: bytes) -> None:
    result = cli("check", f"phone={PHONE}", "cn_resident_id=110105194912310021")
    assert result.code == 1
    assert "checksum_failed" in one_error_line(result.err)


def test_check_malformed_argument_fails_with_one_line(cli: CliRunner, reported: bytes) -> None:
    result = cli("check", "13800138000")
    assert result.code == 1
    assert "TYPE=VALUE" in one_error_line(result.err)


def test_check_refusals_number_the_arguments_alike(cli: CliRunner, reported: bytes) -> None:
    """A malformed second argument was "identifier 2", an invalid value in it "identifier 1"."""
    malformed = cli("check", f"phone={PHONE}", "phone")
    invalid = cli("check", f"phone={PHONE}", "phone=abc")
    assert "(identifier 1 is not)" in one_error_line(malformed.err)
    assert "identifier 1: invalid phone" in one_error_line(invalid.err)


def test_check_without_alliance_key_fails_with_one_line(cli: CliRunner, initialised: NodeContext) -> None:
    result = cli("check", f"phone={PHONE}")
    assert result.code == 1
    assert "no alliance key" in one_error_line(result.err)


def test_check_log_finds_the_checks_of_an_identifier(cli: CliRunner, reported: bytes) -> None:
    assert cli("check", f"phone={PHONE}").code == 0
    assert cli("check", "email=someone@example.com").code == 0
    result = cli("check-log", "--identifier", "phone=+86 138 0013 8000", "--json")
    assert result.code == 0, result.err
    (entry,) = json.loads(result.out)["entries"]
    assert entry["key_id"] == "cli" and entry["hits"] == ["0x" + reported.hex()]
    table = cli("check-log", "--limit", "1")
    assert table.code == 0 and "Query log" in table.out and "older entries: --before-id" in table.out


def test_check_log_include_indicators_lists_every_checked_indicator_as_the_api_does(cli: CliRunner, reported: bytes,
                                                                                     initialised: NodeContext) -> None:
    assert cli("check", f"phone={PHONE}", "email=someone@example.com").code == 0
    assert cli("check", "email=other@example.com").code == 0
    result = cli("check-log", "--include-indicators", "--limit", "1", "--before-id", "2", "--json")
    assert result.code == 0, result.err
    body = json.loads(result.out)
    (entry,) = body["entries"]
    key = initialised.keyring.current()[1]
    email = hash_identifier(key, "email", "someone@example.com")[1]
    assert entry["hits"] == ["0x" + reported.hex()]
    assert sorted(entry["indicators"]) == sorted(["0x" + reported.hex(), "0x" + email.hex()])
    assert body["next_before_id"] == 1  # a full page names the next, as GET /v1/checks/log does
    table = cli("check-log", "--include-indicators", "--limit", "1")
    assert table.code == 0, table.err
    assert "older entries: --before-id 2" in table.out
    last_column = "".join(line.split("│")[-2].strip() for line in table.out.splitlines() if line.startswith("│"))
    assert last_column == "0x" + hash_identifier(key, "email", "other@example.com")[1].hex()  # entry 2's one check


def test_check_log_takes_one_bound_with_a_zone_and_one_without(cli: CliRunner, reported: bytes) -> None:
    assert cli("check", f"phone={PHONE}").code == 0
    result = cli("check-log", "--since", "2000-01-01T08:00:00+08:00", "--until", "2100-01-01", "--json")
    assert result.code == 0, result.err
    assert len(json.loads(result.out)["entries"]) == 1


def test_check_log_refusals_are_one_line(cli: CliRunner, reported: bytes) -> None:
    for args, expected in ((["--since", "last tuesday"], "ISO 8601"),
                           (["--identifier", "phone=12"], "bad_length"),
                           (["--indicator", "zz"], "64 hex digits"),
                           (["--identifier", "phone=13800138000", "--indicator", reported.hex()], "not both"),
                           (["--limit", "0"], "limit must be"),
                           (["--since", "9999-12-31T23:59:59-01:00"], "outside the times this node can compare"),
                           (["--before-id", str(2**63)], "before_id must be")):
        result = cli("check-log", *args)
        assert result.code == 1, (args, result)
        assert expected in one_error_line(result.err)


def test_check_log_compares_a_time_without_a_zone_with_one_that_has_one(cli: CliRunner, reported: bytes) -> None:
    """A --since without a zone (UTC) and an --until with one were compared as given: a TypeError traceback (and a
    500 from GET /v1/checks/log)."""
    assert cli("check", f"phone={PHONE}").code == 0
    window = cli("check-log", "--since", "2000-01-01", "--until", "2999-01-01T00:00:00+08:00", "--json")
    assert window.code == 0, window.err
    assert len(json.loads(window.out)["entries"]) == 1
    backwards = cli("check-log", "--since", "2026-01-01T09:00:00", "--until", "2026-01-01T16:00:00+08:00")
    assert backwards.code == 1
    assert "since must be before until" in one_error_line(backwards.err)


@pytest.mark.parametrize(("option", "moment"), [("--since", "0001-01-01T00:00:00+08:00"),
                                                ("--until", "9999-12-31T23:00:00-08:00")])
def test_check_log_with_a_time_that_has_no_utc_equivalent_fails_with_one_line(cli: CliRunner, reported: bytes,
                                                                              option: str, moment: str) -> None:
    """Converting it to UTC raised OverflowError: a traceback (and a 500 from GET /v1/checks/log)."""
    result = cli("check-log", option, moment)
    assert result.code == 1
    assert f"{option.removeprefix('--')} {moment} is outside the times" in one_error_line(result.err)


@pytest.mark.parametrize("before_id", ["0", "-1", str(2**63), "1" + "0" * 40])
def test_check_log_with_a_before_id_no_entry_can_have_fails_with_one_line(cli: CliRunner, reported: bytes,
                                                                          before_id: str) -> None:
    """Past 64 bits it was an OverflowError from SQLite (a traceback; a 500 from GET /v1/checks/log); 0 or below
    an empty page, where the API refused it."""
    assert cli("check", f"phone={PHONE}").code == 0
    result = cli("check-log", "--before-id", before_id)
    assert result.code == 1
    assert f"before_id must be 1..{2**63 - 1}" in one_error_line(result.err)
    assert len(json.loads(cli("check-log", "--before-id", str(2**63 - 1), "--json").out)["entries"]) == 1
