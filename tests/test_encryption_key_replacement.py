"""Replacing a bank's X25519 encryption key: data at rest sealed again, key files switched, the public key on chain,
the alliance keys sent again; every step finished by running it again after a crash."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

import node.encryption_key_replacement as replacement
from node.chain.errors import ChainUnavailable
from node.crypto.envelopes import EnvelopeError, open_envelope, public_key_bytes
from node.crypto.vault import LocalVault, VaultError, derive_vault_key
from node.encryption_key_replacement import PublicKeyNotOnChain, replace_encryption_key
from node.errors import Conflict
from node.key_users_lock import EncryptionKeyInUse
from node.ledger.checks import check_identity
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import EncryptionKeyNotOnChain, NotAMember, key_status, rotate, sync_keys
from node.ledger.keyring import alliance_key_ad
from node.ledger.reports import REPORT_ID_PURPOSE, ReportRequest
from node.ledger.republish import republish
from node.modules.credit_platform import submit_application, unseal_applicant
from node.modules.fingerprints import fingerprint_key
from node.node_lock import NodeRunning, node_lock
from node.paths import PROJECT_ROOT
from node.runtime import NodeContext, WrongPassphrase
from node.server import serve
from node.store.application_tables import LoanApplication
from node.store.ledger_tables import AllianceKey, LocalKey
from tests.conftest import LedgerNodes, free_port, make_node, moved_to_store
from tests.modules.workflow import application

PHONE = "13800138000"
REPORT = ReportRequest([("phone", PHONE)], "telecom_fraud", 80)


class Crash(BaseException):
    """The process dies here (a BaseException, as a kill is: nothing catches it on the way out)."""


@dataclass
class BankB:
    """Bank B's node holding the epoch-1 key, a published report and an application, and what must survive."""

    node: NodeContext
    alliance_key: bytes
    report_id: str
    application_id: str
    report_id_key: bytes
    fingerprint_key: bytes
    public_key: bytes
    key_file: bytes


@pytest.fixture
def bank_b(ledger_nodes: LedgerNodes, store_url: str) -> BankB:
    a, original, c = ledger_nodes.nodes
    b = moved_to_store(original, store_url)
    ledger_nodes.nodes[1] = b
    ledger_nodes.nodes.append(original)  # closed with the others
    for node in (a, b, c):
        sync_keys(node)
    report_id = b.report_intake.accept(REPORT, submitted_by="k").report_id
    b.publisher.drain()
    indexer_for(b).sync()
    application_id = str(submit_application(b, application(1), submitted_by="t")["application_id"])
    assert check_identity(b, [("phone", PHONE)], "k").results[0].hit
    return BankB(b, b.keyring.key(1), report_id, application_id, b.local_key(REPORT_ID_PURPOSE), fingerprint_key(b),
                 public_key_bytes(b.encryption_key), b.settings.encryption_key_file.read_bytes())


def _reopened(node: NodeContext, ledger_nodes: LedgerNodes) -> NodeContext:
    """The node started again on the same data dir and store (closed with the others)."""
    fresh = NodeContext(node.settings)
    ledger_nodes.nodes.append(fresh)
    return fresh


def _key_files(node: NodeContext) -> list[str]:
    """The names of the X25519 key files, retired ones without their time."""
    return sorted(re.sub(r"retired-\d{8}T\d{6}Z(-\d+)?", "retired", p.name)
                  for p in node.settings.keys_dir.glob("encryption-key*"))


def _assert_nothing_lost(bank: BankB, node: NodeContext) -> None:
    """Every sealed value opens under the node's (new) key, and its own keyed hashes are those of before."""
    assert public_key_bytes(node.encryption_key) != bank.public_key
    assert node.keyring.key(1) == bank.alliance_key
    assert (node.local_key(REPORT_ID_PURPOSE), fingerprint_key(node)) == (bank.report_id_key, bank.fingerprint_key)
    again = node.report_intake.accept(REPORT, submitted_by="k")
    assert (again.report_id, again.created) == (bank.report_id, False)  # the same report id: found, not added
    with node.store.session() as session:
        assert unseal_applicant(node, session.get_one(LoanApplication, bank.application_id)).phone == "13900000001"
    assert check_identity(node, [("phone", PHONE)], "k").results[0].hit
    assert node.registry().member(node.member_id).encryption_key == public_key_bytes(node.encryption_key)


def test_replacing_the_encryption_key_keeps_every_sealed_value_and_gets_the_keys_sent_again(
        ledger_nodes: LedgerNodes, bank_b: BankB, tmp_path: Path) -> None:
    a = ledger_nodes.nodes[0]
    b = bank_b.node
    old_key = b.encryption_key

    replaced = replace_encryption_key(b)

    new = _reopened(b, ledger_nodes)
    assert replaced.old_public_key == bank_b.public_key
    assert replaced.public_key == public_key_bytes(new.encryption_key) != bank_b.public_key
    assert replaced.resealed == 3  # the alliance key, the report's identifier, the applicant
    assert replaced.retired_path is not None and replaced.retired_path.read_bytes() == bank_b.key_file
    assert _key_files(new) == ["encryption-key.pem", "encryption-key.retired.pem"]
    _assert_nothing_lost(bank_b, new)
    with pytest.raises(VaultError):  # the old key opens nothing in the store any more
        LocalVault(derive_vault_key(old_key)).decrypt(_sealed_alliance_key(new), associated_data=alliance_key_ad(1))

    assert key_status(a).lacking == {1: [new.member_id]}  # B's envelope was sealed to its old key
    assert sync_keys(a).published == [(new.member_id, 1)]
    assert sync_keys(a).published == []
    assert key_status(a).lacking == {1: []}
    envelope = new.registry().key_envelopes(recipient_member_id=new.member_id)[-1]
    assert open_envelope(envelope=envelope.envelope, recipient_private_key=new.encryption_key,
                         recipient_member_id=new.member_id, epoch=1) == bank_b.alliance_key
    with pytest.raises(EnvelopeError):
        open_envelope(envelope=envelope.envelope, recipient_private_key=old_key, recipient_member_id=new.member_id,
                      epoch=1)
    assert sync_keys(new).received == []  # it holds the key already

    restored = moved_to_store(new, f"sqlite:///{tmp_path / 'restored.db'}")  # the keys directory alone
    ledger_nodes.nodes.append(restored)
    result = sync_keys(restored)
    assert result.received == [1] and len(result.rejected) == 1  # the old envelope does not open, the new one does

    assert rotate(new) == 2  # `ledger republish` opens the sealed identifiers under the new key
    assert republish(new).records == 1


def test_a_second_replacement_keeps_the_keyed_hashes_of_the_first_key(
        ledger_nodes: LedgerNodes, bank_b: BankB, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second replacement re-seals the kept report-id and fingerprint keys instead of deriving them from the
    key it replaces (which would give other ones). Both within one second: two retired files, neither overwritten."""
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> FrozenClock:
            return cls(2026, 12, 6, 21, 0, 0, tzinfo=tz)

    monkeypatch.setattr(replacement, "datetime", FrozenClock)
    replace_encryption_key(bank_b.node)
    second = replace_encryption_key(_reopened(bank_b.node, ledger_nodes))

    new = _reopened(bank_b.node, ledger_nodes)
    assert second.resealed == 5  # the alliance key, the identifier, the applicant, the two kept local keys
    assert sorted(p.name for p in new.settings.keys_dir.glob("encryption-key.retired-*")) == [
        "encryption-key.retired-20261206T210000Z-2.pem", "encryption-key.retired-20261206T210000Z.pem"]
    assert (new.settings.keys_dir / "encryption-key.retired-20261206T210000Z.pem").read_bytes() == bank_b.key_file
    _assert_nothing_lost(bank_b, new)
    assert sync_keys(ledger_nodes.nodes[0]).published == [(new.member_id, 1)]


def _sealed_alliance_key(node: NodeContext) -> bytes:
    with node.store.session() as session:
        return bytes(session.scalars(select(AllianceKey.sealed_key).where(AllianceKey.epoch == 1)).one())


def _crash_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def crash(*_args: object, **_kwargs: object) -> None:
        raise Crash(name)
    monkeypatch.setattr(replacement, name, crash)


@pytest.mark.parametrize("step", ["reseal_store", "_switch_key_files", "_publish"])
def test_a_replacement_cut_short_is_finished_by_running_it_again(
        ledger_nodes: LedgerNodes, bank_b: BankB, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Killed before step 2 (the next key written), before step 3 (the store sealed under the next key) or before
    step 4 (the files switched): running again finishes the job, and nothing sealed is lost."""
    b = bank_b.node
    with monkeypatch.context() as crashing:
        _crash_at(crashing, step)
        with pytest.raises(Crash):
            replace_encryption_key(b)
    if step != "_publish":
        assert b.settings.next_encryption_key_file.exists()
        with pytest.raises(Conflict, match="replacement of the encryption key is under way") as refused:
            _reopened(b, ledger_nodes).encryption_key  # noqa: B018 - the node refuses to seal under either key
        assert refused.value.code == "encryption_key_replacement_unfinished"
        with pytest.raises(Conflict, match="replacement of the encryption key is under way"):
            serve(_reopened(b, ledger_nodes), demo=False)  # refused before it binds or starts anything

    replaced = replace_encryption_key(_reopened(b, ledger_nodes))

    new = _reopened(b, ledger_nodes)
    assert (replaced.old_public_key is None) == (step == "_publish")  # after the switch: only the chain was left
    assert _key_files(new) == ["encryption-key.pem", "encryption-key.retired.pem"]
    assert not new.settings.next_encryption_key_file.exists()
    _assert_nothing_lost(bank_b, new)
    assert sync_keys(ledger_nodes.nodes[0]).published == [(new.member_id, 1)]


def test_a_replacement_killed_between_the_link_and_the_rename_keeps_one_retired_file(
        ledger_nodes: LedgerNodes, bank_b: BankB, monkeypatch: pytest.MonkeyPatch) -> None:
    b = bank_b.node
    with monkeypatch.context() as crashing:
        _crash_at(crashing, "_switch_key_files")
        with pytest.raises(Crash):
            replace_encryption_key(b)
    retired = b.settings.keys_dir / "encryption-key.retired-20260101T000000Z.pem"
    retired.hardlink_to(b.settings.encryption_key_file)  # the first half of the switch

    replaced = replace_encryption_key(_reopened(b, ledger_nodes))

    assert replaced.retired_path == retired
    assert sorted(p.name for p in b.settings.keys_dir.glob("encryption-key*")) == [
        "encryption-key.pem", retired.name]
    _assert_nothing_lost(bank_b, _reopened(b, ledger_nodes))


def test_a_replacement_failing_inside_the_store_transaction_changes_nothing_there(
        ledger_nodes: LedgerNodes, bank_b: BankB, monkeypatch: pytest.MonkeyPatch) -> None:
    b = bank_b.node
    sealed_before = _sealed_alliance_key(b)
    calls = []
    real = replacement._reseal_column

    def crash_on_the_third(*args: object) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise Crash("half way through the store")
        return real(*args)  # type: ignore[arg-type]

    with monkeypatch.context() as crashing:
        crashing.setattr(replacement, "_reseal_column", crash_on_the_third)
        with pytest.raises(Crash):
            replace_encryption_key(b)

    assert _sealed_alliance_key(b) == sealed_before
    with b.store.session() as session:
        assert session.scalars(select(LocalKey)).all() == []
    replace_encryption_key(_reopened(b, ledger_nodes))
    _assert_nothing_lost(bank_b, _reopened(b, ledger_nodes))


def test_a_replacement_with_the_chain_down_after_the_switch_sends_the_key_when_run_again(
        ledger_nodes: LedgerNodes, bank_b: BankB, monkeypatch: pytest.MonkeyPatch) -> None:
    b = bank_b.node
    member_id = b.member_id
    with monkeypatch.context() as down:
        def unavailable(*_args: object) -> None:
            raise ChainUnavailable("connection refused")
        down.setattr(type(b.registry(signing=True)), "set_encryption_key", unavailable)
        with pytest.raises(PublicKeyNotOnChain, match="run `alliance key replace-encryption-key` again") as pending:
            replace_encryption_key(b)
    assert pending.value.code == "encryption_key_not_on_chain"
    new = _reopened(b, ledger_nodes)
    assert public_key_bytes(new.encryption_key) != bank_b.public_key  # the node uses its new key meanwhile
    assert new.registry().member(member_id).encryption_key == bank_b.public_key
    assert new.keyring.key(1) == bank_b.alliance_key
    # Meanwhile every key pass fails visibly (the key worker's state in /health, `alliance key sync`): keys sent to
    # this bank are sealed to the chain's key, which this node no longer has. It distributes to others first.
    with pytest.raises(EncryptionKeyNotOnChain, match="run `alliance key replace-encryption-key`") as behind:
        sync_keys(new)
    assert behind.value.code == "encryption_key_not_on_chain"

    again = replace_encryption_key(new)

    assert (again.old_public_key, again.public_key) == (None, public_key_bytes(new.encryption_key))
    assert sync_keys(_reopened(b, ledger_nodes)).missing == []
    _assert_nothing_lost(bank_b, _reopened(b, ledger_nodes))
    assert _key_files(new) == ["encryption-key.pem", "encryption-key.retired.pem"]  # no second replacement


def _unchanged(bank: BankB) -> None:
    node = bank.node
    assert sorted(p.name for p in node.settings.keys_dir.glob("encryption-key*")) == ["encryption-key.pem"]
    assert node.settings.encryption_key_file.read_bytes() == bank.key_file
    assert NodeContext(node.settings).keyring.key(1) == bank.alliance_key


def test_a_replacement_under_a_wrong_passphrase_changes_nothing(ledger_nodes: LedgerNodes, bank_b: BankB) -> None:
    b = bank_b.node
    wrong = NodeContext(b.settings.model_copy(update={"key_passphrase": SecretStr("not-the-passphrase")}))
    ledger_nodes.nodes.append(wrong)
    with pytest.raises(WrongPassphrase):
        replace_encryption_key(wrong)
    _unchanged(bank_b)


def test_a_replacement_with_the_chain_down_changes_nothing(ledger_nodes: LedgerNodes, bank_b: BankB) -> None:
    b = bank_b.node
    offline = NodeContext(b.settings.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"}))
    ledger_nodes.nodes.append(offline)
    with pytest.raises(ChainUnavailable):
        replace_encryption_key(offline)
    _unchanged(bank_b)


def test_a_replacement_beside_a_running_node_is_refused_and_changes_nothing(bank_b: BankB) -> None:
    """A node left running keeps the old key in memory: after the switch it sealed what it wrote under the retired
    key, which the new one cannot open. `node start` holds the data dir's node lock; the replacement takes it first."""
    b = bank_b.node
    with node_lock(b.settings.data_dir, doing="start the node"), \
            pytest.raises(NodeRunning, match=rf"a node is running on {re.escape(str(b.settings.data_dir))} \(pid "):
        replace_encryption_key(b)
    _unchanged(bank_b)


_HOLDING = {"shared": "hold_encryption_key(data_dir)",
            "alone": "alone = encryption_key_alone(data_dir); alone.__enter__()"}


def _process_holding(data_dir: Path, lock: str) -> subprocess.Popen[str]:
    """A process holding the data dir's key lock, `shared` (a command that loaded the key) or `alone` (a replacement
    under way), until its stdin closes."""
    code = ("import sys; from pathlib import Path; from node.key_users_lock import *; data_dir = Path(sys.argv[1]); "
            f"{_HOLDING[lock]}; print('held', flush=True); sys.stdin.read()")
    process = subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_a_replacement_beside_a_command_using_the_key_is_refused_and_changes_nothing(bank_b: BankB) -> None:
    """An `alliance` command that loaded the key before the replacement began (a long fraud import) went on sealing
    under it during and after the resealing: rows the new key cannot open. Each process that loads the key holds the
    data dir's key lock shared; the replacement needs it alone."""
    b = bank_b.node
    command = _process_holding(b.settings.data_dir, "shared")
    try:
        with pytest.raises(EncryptionKeyInUse, match="another process of this data dir is using it"):
            replace_encryption_key(b)
        _unchanged(bank_b)
    finally:
        command.communicate("")
    assert replace_encryption_key(b).public_key != bank_b.public_key  # once it is done


def test_loading_the_key_while_it_is_being_replaced_is_refused(bank_b: BankB, tmp_path: Path) -> None:
    # A copy of the data dir: this test's process holds the original's key lock since the fixture loaded its key.
    copy = tmp_path / "copy"
    shutil.copytree(bank_b.node.settings.data_dir, copy)
    settings = bank_b.node.settings.model_copy(update={"data_dir": copy})
    replacing = _process_holding(copy, "alone")
    try:
        with pytest.raises(EncryptionKeyInUse, match="the encryption key is being replaced"):
            _ = NodeContext(settings).encryption_key
    finally:
        replacing.communicate("")
    assert public_key_bytes(NodeContext(settings).encryption_key) == bank_b.public_key


def test_a_replacement_by_a_bank_not_admitted_changes_nothing(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    outsider = make_node(tmp_path, ledger_nodes.rpc_url, ledger_nodes.deployment_file, "Bank Z", "BANK-Z")
    ledger_nodes.nodes.append(outsider)
    before = outsider.settings.encryption_key_file.read_bytes()
    with pytest.raises(NotAMember, match="not a member"):
        replace_encryption_key(outsider)
    assert sorted(p.name for p in outsider.settings.keys_dir.glob("encryption-key*")) == ["encryption-key.pem"]
    assert outsider.settings.encryption_key_file.read_bytes() == before


def test_a_keys_directory_restored_from_before_a_replacement_is_replaced_again_not_sent_back(
        ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    """The chain has a newer key than the local one both when step 4 was cut short and when the data dir was restored
    from a backup older than a replacement. Only the first is sent alone: sending the second would put back on chain a
    key that was replaced, perhaps because it leaked. That is replaced again instead."""
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    alliance_key, original = b.keyring.key(1), public_key_bytes(b.encryption_key)
    b.close()
    backup = tmp_path / "backup"
    shutil.copytree(b.settings.data_dir, backup)  # keys and store, the node stopped
    first = _reopened(b, ledger_nodes)
    replaced = replace_encryption_key(first)
    first.close()
    shutil.rmtree(b.settings.data_dir)
    shutil.copytree(backup, b.settings.data_dir)

    again = replace_encryption_key(_reopened(b, ledger_nodes))

    assert again.old_public_key == original and again.public_key not in (original, replaced.public_key)
    assert [change.key for change in a.registry().encryption_keys_set() if change.member_id == b.member_id] == [
        original, replaced.public_key, again.public_key]
    assert _reopened(b, ledger_nodes).keyring.key(1) == alliance_key
