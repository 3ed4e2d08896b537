"""`alliance ledger sync|rebuild|digest` on a real chain, and their refusals as one line with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.config import load_settings
from node.runtime import NodeContext
from tests.cli.conftest import CliRunner
from tests.cli.test_cli import json_error, one_error_line
from tests.conftest import free_port
from tests.ledger.test_indexer import make_records


@pytest.fixture
def published(cli: CliRunner, data_dir: Path) -> int:
    """A one-bank consortium deployed by the CLI, one batch of four records, one revoked; returns the batch's block."""
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    assert cli("contracts", "deploy").code == 0
    node = NodeContext(load_settings(data_dir))
    try:
        records = make_records(4, seed=1)
        batch = node.fraud_ledger(signing=True).publish_batch(1, records)
        node.fraud_ledger(signing=True).revoke(batch.batch_id, records[0].indicator, 1)
        return batch.block_number
    finally:
        node.close()


def test_ledger_sync_rebuild_and_digest_report_as_json(cli: CliRunner, published: int) -> None:
    synced = cli("ledger", "sync", "--json")
    assert synced.code == 0, synced.err
    result = json.loads(synced.out)
    assert (result["batches"], result["records"], result["reactions"], result["complete"]) == (1, 4, 1, True)
    digest = cli("ledger", "digest", "--json")
    assert digest.code == 0, digest.err
    first = json.loads(digest.out)
    assert first["block"] == result["to_block"] and first["indicator_count"] == 4

    rebuilt = cli("ledger", "rebuild", "--json")
    assert rebuilt.code == 0, rebuilt.err
    assert json.loads(rebuilt.out)["records"] == 4
    assert json.loads(cli("ledger", "digest", "--json").out) == first
    at_batch = json.loads(cli("ledger", "digest", "--block", str(published), "--json").out)
    assert at_batch["indicator_count"] == 4 and at_batch["sha256_hex"] != first["sha256_hex"]  # before the revocation


def test_ledger_sync_prints_a_summary(cli: CliRunner, published: int) -> None:
    result = cli("ledger", "sync")
    assert result.code == 0, result.err
    assert "1 batches" in result.out and "4 records" in result.out
    again = cli("ledger", "digest")
    assert again.code == 0 and "4 indicators" in again.out


def test_ledger_sync_with_unreachable_chain_fails(cli: CliRunner, published: int) -> None:
    result = cli("ledger", "sync", env={"ALLIANCE_RPC_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.code == 1
    assert "unreachable" in one_error_line(result.err)


def test_ledger_digest_of_an_unindexed_block_fails(cli: CliRunner, published: int) -> None:
    empty = cli("ledger", "digest")
    assert empty.code == 1 and "ledger sync" in one_error_line(empty.err)
    assert cli("ledger", "sync").code == 0
    result = cli("ledger", "digest", "--block", "1000000", "--json")
    assert json_error(result)["code"] == "block_not_indexed" and "not indexed" in result.err


def test_ledger_rebuild_with_unreachable_chain_fails_and_keeps_the_mirror(cli: CliRunner, published: int) -> None:
    """The mirror was dropped before the chain was asked: the rebuild failed and checks found no indicator."""
    assert cli("ledger", "sync").code == 0
    before = json.loads(cli("ledger", "digest", "--json").out)
    result = cli("ledger", "rebuild", env={"ALLIANCE_RPC_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.code == 1
    assert "unreachable" in one_error_line(result.err)
    assert json.loads(cli("ledger", "digest", "--json").out) == before
