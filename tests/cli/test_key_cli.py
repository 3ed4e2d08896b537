"""`alliance key` on a real chain: a one-bank dev consortium, JSON and human output, refusals."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.chain.registry import MemberRole
from node.chain.signer import Signer
from node.config import load_settings
from node.ledger.key_distribution import rotate, sync_keys
from node.runtime import NodeContext
from tests.cli.conftest import CliResult, CliRunner, run_cli
from tests.cli.test_cli import interrupted_while_encrypting, one_error_line
from tests.conftest import TEST_PASSPHRASE, LedgerNodes, free_port


@pytest.fixture
def deployed(cli: CliRunner) -> None:
    assert cli("init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    deploy = cli("contracts", "deploy")
    assert deploy.code == 0, deploy.err


def ok_json(result: CliResult) -> dict[str, Any]:
    assert result.code == 0, result.err
    return dict(json.loads(result.out))


def held_keys_hex(data_dir: Path, rpc_url: str) -> list[str]:
    node = NodeContext(load_settings(data_dir, rpc_url=rpc_url))
    try:
        return [key.hex() for key in node.keyring.keys().values()]
    finally:
        node.close()


def test_key_status_before_sync_shows_the_missing_envelope(cli: CliRunner, deployed: None) -> None:
    status = ok_json(cli("key", "status", "--json"))
    assert status == {"member_id": 1, "chain_epoch": 1, "held": [], "missing": [1],
                      "lacking_envelopes": {"1": [1]}}


def test_key_sync_generates_and_status_shows_the_key(cli: CliRunner, deployed: None, data_dir: Path,
                                                     rpc_url: str) -> None:
    synced = ok_json(cli("key", "sync", "--json"))
    assert (synced["generated"], synced["published"], synced["missing"]) == (
        [1], [{"recipient_member_id": 1, "epoch": 1}], [])
    status = ok_json(cli("key", "status", "--json"))
    assert [(k["epoch"], k["source"]) for k in status["held"]] == [(1, "generated")]
    assert status["lacking_envelopes"] == {"1": []}
    again = ok_json(cli("key", "sync", "--json"))
    assert (again["generated"], again["published"]) == ([], [])
    human = cli("key", "sync")
    assert human.code == 0 and "published 0 envelope(s)" in human.out
    [key] = held_keys_hex(data_dir, rpc_url)
    assert key not in json.dumps(synced) + human.out + json.dumps(status)


def test_key_rotate_starts_a_new_epoch(cli: CliRunner, deployed: None, data_dir: Path, rpc_url: str) -> None:
    assert ok_json(cli("key", "rotate", "--json")) == {"epoch": 2}
    human = cli("key", "rotate")
    assert human.code == 0, human.err
    assert "started key epoch 3" in human.out and "alliance ledger republish" in human.out
    status = cli("key", "status")
    assert status.code == 0 and "chain key epoch 3" in status.out
    held = ok_json(cli("key", "status", "--json"))["held"]
    assert [(k["epoch"], k["source"]) for k in held] == [(1, "generated"), (2, "generated"), (3, "generated")]
    keys = held_keys_hex(data_dir, rpc_url)
    assert len(set(keys)) == 3 and not any(key in human.out + status.out for key in keys)


def test_key_sync_with_wrong_passphrase_fails(cli: CliRunner, deployed: None) -> None:
    result = cli("key", "sync", env={"ALLIANCE_KEY_PASSPHRASE": "not-the-passphrase"})
    assert result.code == 1
    assert "wrong passphrase" in one_error_line(result.err)


def test_key_commands_of_a_bank_not_admitted_fail(cli: CliRunner, deployed: None, data_dir: Path,
                                                  tmp_path: Path) -> None:
    outsider = tmp_path / "outsider"
    assert cli("--data-dir", str(outsider), "init", "--bank-name", "Bank Z", "--bank-code", "BANKZ").code == 0
    env = {"ALLIANCE_DEPLOYMENT_FILE": str(data_dir / "deployments" / "dev.json")}
    for command in ("sync", "rotate", "status"):
        result = cli("--data-dir", str(outsider), "key", command, env=env)
        assert result.code == 1
        assert "is not a member of the alliance" in one_error_line(result.err)


def test_commands_on_a_store_whose_keys_another_node_sealed_fail_with_one_line(cli: CliRunner, deployed: None,
                                                                               data_dir: Path,
                                                                               tmp_path: Path) -> None:
    """Bank B pointed at bank A's store: A's alliance key does not decrypt under B's keys. That was a VaultError
    traceback (an HTTP 500 in the API) instead of one line saying why."""
    assert cli("key", "sync").code == 0
    other = ["--data-dir", str(tmp_path / "bank-b")]
    shared = {"ALLIANCE_DATABASE_URL": f"sqlite:///{data_dir / 'node.db'}",
              "ALLIANCE_DEPLOYMENT_FILE": str(data_dir / "deployments" / "dev.json")}
    assert cli(*other, "init", "--bank-name", "Bank B", "--bank-code", "BANKB", env=shared).code == 0
    for command in (["check", "phone=13800138000"], ["ledger", "republish"]):
        result = cli(*other, *command, env=shared)
        assert result.code == 1, command
        assert ("the alliance key of epoch 1 in the store does not decrypt with this node's keys: the store is "
                "another node's, or the keys directory was replaced") in one_error_line(result.err)


def test_key_new_signer_then_rotate_then_activate_signer(cli: CliRunner, deployed: None, data_dir: Path) -> None:
    """A one-bank alliance: its own rotate proposal passes at once. The node then signs as the new address."""
    before = json.loads(cli("member", "show", "BANKA", "--json").out)["account"]
    prepared = cli("key", "new-signer")
    assert prepared.code == 0, prepared.err
    new_address = prepared.out.split("new signing key ", 1)[1].split()[0]
    assert "alliance member propose rotate BANKA --new-account " + new_address in " ".join(prepared.out.split())

    early = cli("key", "activate-signer")
    assert early.code == 1 and "does not have " + new_address in one_error_line(early.err)
    assert json.loads(cli("node", "status", "--json").out)["next_signer_prepared"] == new_address
    assert f"next signing key prepared: {new_address}" in " ".join(cli("node", "status").out.split())

    assert cli("member", "propose", "rotate", "BANKA", "--new-account", new_address).code == 0
    activated = cli("key", "activate-signer")
    assert activated.code == 0, activated.err
    assert json.loads(cli("member", "show", "BANKA", "--json").out)["account"] == new_address != before
    assert cli("key", "sync").code == 0  # signed with the new key, by member 1
    again = cli("key", "activate-signer")
    assert again.code == 1 and "no new signing key is prepared" in one_error_line(again.err)
    assert json.loads(cli("node", "status", "--json").out)["next_signer_prepared"] is None


def test_key_new_signer_interrupted_while_writing_leaves_no_key_and_can_be_run_again(
        cli: CliRunner, deployed: None, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keystore was created empty before its scrypt: cut short there, it stayed, and `new-signer` then said it
    was there but unreadable, to be deleted by hand."""
    with monkeypatch.context() as interrupted:
        interrupted.setattr(Signer, "encrypt", interrupted_while_encrypting)
        assert cli("key", "new-signer").code != 0
    assert not (data_dir / "keys" / "signing-key.next.json").exists()
    again = cli("key", "new-signer")
    assert again.code == 0, again.err


def _encryption_key_files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data_dir / "keys").glob("encryption-key*"))}


def test_key_replace_encryption_key_keeps_the_keys_and_gets_them_sent_again(cli: CliRunner, deployed: None,
                                                                             data_dir: Path, rpc_url: str) -> None:
    assert cli("key", "sync").code == 0
    before = _encryption_key_files(data_dir)
    [key] = held_keys_hex(data_dir, rpc_url)

    replaced = cli("key", "replace-encryption-key")

    assert replaced.code == 0, replaced.err
    after = _encryption_key_files(data_dir)
    [retired] = [name for name in after if name.startswith("encryption-key.retired-")]
    assert after[retired] == before["encryption-key.pem"] != after["encryption-key.pem"]
    out = " ".join(replaced.out.split())
    assert "(1 sealed value(s) sealed again)" in out  # the alliance key of epoch 1
    assert f"{data_dir / 'keys' / retired}" in out and "delete it once none is kept" in out
    assert held_keys_hex(data_dir, rpc_url) == [key] and key not in replaced.out
    synced = ok_json(cli("key", "sync", "--json"))  # the bank is epoch 1's distributor: it sends itself the key again
    assert synced["published"] == [{"recipient_member_id": 1, "epoch": 1}]



def test_store_restore_of_a_backup_older_than_a_replacement_seals_it_under_the_current_key(
        cli: CliRunner, deployed: None, data_dir: Path, rpc_url: str, tmp_path: Path) -> None:
    """The retired key is kept to open such a backup, but `store restore` put it in place as it was: every command
    that read the store then failed (`vault_mismatch`, "the store is another node's")."""
    assert cli("key", "sync").code == 0
    [key] = held_keys_hex(data_dir, rpc_url)
    report = ["fraud", "report", "phone=13800138000", "--category", "telecom_fraud", "--confidence", "90", "--json"]
    report_id = ok_json(cli(*report))["report_id"]
    backup = tmp_path / "before-replacement.db"
    assert cli("store", "backup", str(backup)).code == 0
    assert cli("key", "replace-encryption-key").code == 0
    gc.collect()  # closes the store connections of the commands above, which ran in this process

    restored = cli("store", "restore", str(backup))

    assert restored.code == 0, restored.err
    [retired] = (data_dir / "keys").glob("encryption-key.retired-*.pem")
    assert f"sealed under the retired key {retired.name}" in " ".join(restored.out.split())
    assert held_keys_hex(data_dir, rpc_url) == [key]
    # The report id is a keyed hash under the retired key's report-id key: the same report is still found.
    again = ok_json(cli(*report))
    assert (again["report_id"], again["created"]) == (report_id, False)
    assert cli("key", "rotate").code == 0
    assert ok_json(cli("ledger", "republish", "--json"))["records"] == 1  # its raw identifier opens
    gc.collect()
    again = cli("store", "restore", str(backup))
    assert again.code == 0, again.err
    assert "retired key" in again.out


def test_store_restore_of_another_nodes_store_says_its_secrets_open_under_no_key(
        cli: CliRunner, deployed: None, data_dir: Path, tmp_path: Path) -> None:
    assert cli("key", "sync").code == 0
    assert cli("key", "replace-encryption-key").code == 0
    other = tmp_path / "other"
    assert cli("--data-dir", str(other), "init", "--bank-name", "Bank A", "--bank-code", "BANKA").code == 0
    assert cli("--data-dir", str(other), "contracts", "deploy", "--force").code == 0
    assert cli("--data-dir", str(other), "key", "sync").code == 0
    backup = tmp_path / "other.db"
    assert cli("--data-dir", str(other), "store", "backup", str(backup)).code == 0
    gc.collect()

    result = cli("store", "restore", str(backup))

    assert result.code == 1
    assert "open under neither encryption-key.pem nor a retired key" in one_error_line(result.err)
    assert one_error_line(result.err).endswith("[vault_mismatch]")


def test_key_sync_after_a_replacement_says_once_that_it_skipped_the_old_envelope(cli: CliRunner, deployed: None,
                                                                                data_dir: Path, rpc_url: str) -> None:
    """A node restored from its keys directory after a replacement: its envelope sealed to the old key does not open.
    `key sync` printed that line, and the pass's log warning said it again on stderr."""
    assert cli("key", "sync").code == 0
    assert cli("key", "replace-encryption-key").code == 0
    assert cli("key", "sync").code == 0  # sends the key again, sealed to the new key
    (data_dir / "node.db").unlink()
    assert cli("store", "create").code == 0
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(data_dir), "ALLIANCE_RPC_URL": rpc_url,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    done = subprocess.run([sys.executable, "-c", "from alliance_cli.main import run; run()", "key", "sync"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert "received 1" in done.stdout
    [skipped] = [line for line in (done.stdout + done.stderr).splitlines() if "skipped" in line]
    assert skipped.startswith("skipped an envelope for epoch 1 from member 1 (block ")
    assert skipped.endswith("): it does not open")  # sealed to the replaced key; its sender holds the epoch

@pytest.mark.parametrize("case", ["wrong passphrase", "chain down", "not admitted"])
def test_key_replace_encryption_key_refusals_are_one_line_and_change_nothing(
        cli: CliRunner, deployed: None, data_dir: Path, tmp_path: Path, case: str) -> None:
    assert cli("key", "sync").code == 0
    target, env, expected = data_dir, {}, ""
    if case == "wrong passphrase":
        env, expected = {"ALLIANCE_KEY_PASSPHRASE": "not-the-passphrase"}, "wrong passphrase"
    elif case == "chain down":
        env, expected = {"ALLIANCE_RPC_URL": f"http://127.0.0.1:{free_port()}"}, "127.0.0.1"
    else:
        target = tmp_path / "outsider"
        assert cli("--data-dir", str(target), "init", "--bank-name", "Bank Z", "--bank-code", "BANKZ").code == 0
        env, expected = {"ALLIANCE_DEPLOYMENT_FILE": str(data_dir / "deployments" / "dev.json")}, "not a member"
    before = _encryption_key_files(target)

    result = cli("--data-dir", str(target), "key", "replace-encryption-key", env=env)

    assert result.code == 1
    assert expected in one_error_line(result.err)
    assert _encryption_key_files(target) == before


def test_key_sync_of_a_suspended_or_removed_bank_says_no_key_is_coming(
        ledger_nodes: LedgerNodes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """C suspended, then removed, misses the epoch A starts: its `key sync` said it was still waiting for that key,
    which no member's node sends it; so did an observer's, for every epoch."""
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    for name, value in (("KEY_PASSPHRASE", TEST_PASSPHRASE), ("RPC_URL", ledger_nodes.rpc_url),
                        ("DEPLOYMENT_FILE", str(ledger_nodes.deployment_file))):
        monkeypatch.setenv(f"ALLIANCE_{name}", value)
    sync_c = ("--data-dir", str(c.settings.data_dir), "key", "sync")
    a_registry, b_registry = a.registry(signing=True), b.registry(signing=True)
    assert b_registry.vote(a_registry.propose_suspension(3).proposal_id).executed
    assert rotate(a) == 2

    suspended = run_cli(capsys, *sync_c)

    assert suspended.code == 0, suspended.err
    assert suspended.out.splitlines()[-1] == ("lacking the key of epoch(s) 2: no member sends keys to this bank while "
                                              "it is suspended (reinstated, it receives them)")
    assert b_registry.vote(a_registry.propose_removal(3).proposal_id).executed
    removed = run_cli(capsys, *sync_c, "--json")
    assert removed.code == 0, removed.err
    assert ok_json(removed)["not_sent_because"] == "removed"
    assert "no member sends keys to this bank while it is removed" in run_cli(capsys, *sync_c).out
    assert ok_json(run_cli(capsys, "--data-dir", str(b.settings.data_dir), "key", "sync", "--json"))[
        "not_sent_because"] is None
    observer = ledger_nodes.admit(tmp_path, "OBSERVE-E", MemberRole.observer)
    observed = run_cli(capsys, "--data-dir", str(observer.settings.data_dir), "key", "sync")
    assert observed.code == 0 and observed.out.splitlines()[-1] == (
        "lacking the key of epoch(s) 1, 2: no member sends keys to this bank while it is an observer (observers do "
        "not check identifiers)")
