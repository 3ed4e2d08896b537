"""A running node takes up the signing key `alliance key activate-signer` (another process) put in place, without a
restart: its workers and its signed writes go on with the new key, and a key that does not open stops them cleanly."""

from __future__ import annotations

import json
import logging
import os

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.chain.signer import Signer, keystore_address, write_keystore
from node.ledger.publisher import Publisher
from node.ledger.reports import ReportRequest
from node.private_files import replace_durably
from node.runtime import NodeContext
from node.signer_lock import signer_lock_path
from node.signer_rotation import activate_new_signer, next_signing_key_file, prepare_new_signer
from node.signer_switch import SigningKeyUnusable, retired_signing_key_file, unusable_signing_key
from node.store.ledger_tables import PublishBatch
from node.workers import Loop, node_workers
from tests.cli.conftest import run_cli
from tests.conftest import LedgerNodes
from tests.test_signer_rotation import _outbox_states

OTHER_PASSPHRASE = "not-the-passphrase-the-node-runs-with"


def _loop(node: NodeContext, name: str) -> Loop:
    """One of the running node's loops, its passes run by the test; a report is published at the first pass."""
    node.settings = node.settings.model_copy(update={"publish_max_wait_s": 0.0})
    [loop] = [loop for loop in node_workers(node).loops if loop.name == name]
    return loop


def _accept(node: NodeContext, phone: str) -> str:
    return node.report_intake.accept(ReportRequest([("phone", phone)], "telecom_fraud", 80),
                                     submitted_by="k").report_id


def _published(node: NodeContext) -> list[tuple[str, object]]:
    """(sender, record) of every record on chain, by every member."""
    ledger = node.fraud_ledger()
    published = []
    for log in ledger.contract.events.BatchPublished().get_logs(from_block=0):
        tx_hash = log["transactionHash"].to_0x_hex()
        sender = node.chain.rpc("eth_getTransactionByHash", [tx_hash])["from"].lower()
        published += [(sender, record) for record in ledger.records_of_transaction(tx_hash)[2]]
    return published


def _rotated(ledger_nodes: LedgerNodes, new_address: str) -> None:
    """The other members vote bank A's signer to `new_address`."""
    a, b, c = ledger_nodes.nodes[:3]
    proposal = b.registry(signing=True).propose_signer_rotation(a.member_id, new_address)
    assert c.registry(signing=True).vote(proposal.proposal_id).executed


def _cli_of(node: NodeContext, ledger_nodes: LedgerNodes, passphrase: str | None = None) -> NodeContext:
    """A second process on the node's data dir, as `alliance key ...` is."""
    settings = node.settings if passphrase is None else node.settings.model_copy(
        update={"key_passphrase": SecretStr(passphrase)})
    cli = NodeContext(settings)
    ledger_nodes.nodes.append(cli)  # closed with the others
    return cli


def _voted_with_a_report_queued(ledger_nodes: LedgerNodes) -> tuple[NodeContext, Loop, NodeContext, str, str,
                                                                      Publisher]:
    """Bank A running (its publisher loop), a new key prepared by a CLI process and voted through, a report accepted
    meanwhile, and a publisher of the old key, as the node's was before it took the new key up."""
    a = ledger_nodes.nodes[0]
    a.keyring.store_key(1, os.urandom(32), source="envelope")
    publisher = _loop(a, "publisher")
    cli = _cli_of(a, ledger_nodes)
    new_address = prepare_new_signer(cli).address
    _rotated(ledger_nodes, new_address)
    report = _accept(a, "13800138000")
    old_publisher = Publisher(a.store, a.fraud_ledger(signing=True), batch_size=100, max_wait_s=0)
    return a, publisher, cli, new_address, report, old_publisher


def test_a_running_node_publishes_with_the_activated_key_without_a_restart(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    a.keyring.store_key(1, os.urandom(32), source="envelope")
    old_address = a.address.lower()
    publisher, keys = _loop(a, "publisher"), _loop(a, "keys")
    first = _accept(a, "13800138000")
    publisher.run_step()
    assert publisher.status.last_error is None and _outbox_states(a) == {first: "confirmed"}

    # A key file replaced by hand, not by an activation (the key it held kept nowhere): not taken up.
    kept, by_hand = a.settings.keys_dir / "kept.json", a.settings.keys_dir / "by-hand.json"
    os.link(a.settings.signing_key_file, kept)
    write_keystore(by_hand, Signer.generate(), a.passphrase)
    replace_durably(by_hand, a.settings.signing_key_file)
    assert a.signing_chain.signer is not None and a.signing_chain.signer.address.lower() == old_address
    replace_durably(kept, a.settings.signing_key_file)

    cli = _cli_of(a, ledger_nodes)
    new_address = prepare_new_signer(cli).address.lower()
    _rotated(ledger_nodes, new_address)
    second = _accept(a, "13900139000")
    publisher.run_step()  # the old key, rotated away: refused, its report waits in the queue
    assert "FraudLedgerNotMember" in (publisher.status.last_error or "")
    # A batch the old key signed and never sent (a pass stopped after its prepare step), still `signed`.
    third = _accept(a, "13700137000")
    old_publisher = Publisher(a.store, a.fraud_ledger(signing=True), batch_size=100, max_wait_s=0)
    assert old_publisher._prepare(flush=True) is not None
    # An activation cut short after its link: the key file is the old one still, so no switch.
    retired_signing_key_file(a.settings, old_address).hardlink_to(a.settings.signing_key_file)
    assert a.signing_chain.signer is not None and a.signing_chain.signer.address.lower() == old_address

    activate_new_signer(cli)  # finishes the activation: the new key is renamed over the old one

    publisher.run_step()  # the same worker of the same node, not restarted
    assert publisher.status.last_error is None
    assert _outbox_states(a) == {first: "confirmed", second: "confirmed", third: "confirmed"}
    with a.store.session() as session:  # the refused batch stays failed; none is left signed
        assert "signed" not in set(session.scalars(select(PublishBatch.state)))
    published = _published(a)
    assert sorted(sender for sender, _ in published) == sorted([old_address, new_address, new_address])
    assert len({record for _, record in published}) == len(published) == 3  # one record a report, none twice
    # Every signer of the node follows: the keys worker, the API's signed writes, on the new key's lock.
    keys.run_step()
    assert keys.status.last_error is None
    signing = a.signing_chain
    assert signing.signer is not None and signing.signer.address.lower() == new_address
    assert signing.write_lock is not None
    assert signing.write_lock.path == signer_lock_path(a.settings.data_dir, new_address)  # type: ignore[attr-defined]
    assert a.registry(signing=True).chain is signing


@pytest.mark.parametrize("unusable", ["wrong_passphrase", "corrupt"])
def test_a_running_node_whose_activated_key_does_not_open_signs_nothing_and_says_so(
        ledger_nodes: LedgerNodes, unusable: str, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    a = ledger_nodes.nodes[0]
    a.keyring.store_key(1, os.urandom(32), source="envelope")
    old_address = a.address.lower()
    publisher = _loop(a, "publisher")
    first = _accept(a, "13800138000")
    publisher.run_step()
    new_signer = Signer.generate()
    if unusable == "wrong_passphrase":  # activated by a process run with another passphrase than the node's
        cli = _cli_of(a, ledger_nodes, OTHER_PASSPHRASE)
        write_keystore(next_signing_key_file(a.settings), new_signer, OTHER_PASSPHRASE)
    else:
        cli = _cli_of(a, ledger_nodes)
        write_keystore(next_signing_key_file(a.settings), new_signer, a.passphrase)
    _rotated(ledger_nodes, new_signer.address)
    activate_new_signer(cli)
    if unusable == "corrupt":
        damaged = a.settings.keys_dir / "damaged.json"
        damaged.write_text(a.settings.signing_key_file.read_text()[:40])
        replace_durably(damaged, a.settings.signing_key_file)
    second = _accept(a, "13900139000")

    with caplog.at_level(logging.ERROR, logger="node.runtime"):
        assert publisher.run_step() > publisher.interval_s  # the pass fails; the loop goes on
    assert "signing key put in place by `alliance key activate-signer`" in caplog.text
    assert "SigningKeyUnusable" in (publisher.status.last_error or "")
    with pytest.raises(SigningKeyUnusable) as refused:  # an API write: refused, not signed with the old key
        a.fraud_ledger(signing=True)
    assert refused.value.code == "signing_key_unusable" and refused.value.http_status == 503
    assert _outbox_states(a) == {first: "confirmed", second: "queued"}
    note = unusable_signing_key(a.settings)
    assert note is not None
    assert note.address == (new_signer.address if unusable == "wrong_passphrase" else None)
    monkeypatch.setenv("ALLIANCE_DATA_DIR", str(a.settings.data_dir))
    status = run_cli(capsys, "node", "status", "--json")
    assert status.code == 0, status.err
    shown = json.loads(status.out)["signing_key_unusable"]
    assert shown["address"] == note.address and ("wrong passphrase" if unusable == "wrong_passphrase" else
                                                 "corrupt") in shown["error"]
    assert "the running node signs nothing since" in run_cli(capsys, "node", "status").out
    with a.store.transaction() as session:
        token = create_api_key(session, Role.operator, "test").token
    api_status = TestClient(create_app(a)).get("/v1/node/status", headers={"X-API-Key": token})
    assert api_status.status_code == 200 and api_status.json()["signing_key_unusable"] == shown

    # The operator puts the new key there again, encrypted under the node's passphrase: taken up at the next pass.
    repaired = a.settings.keys_dir / "repaired.json"
    write_keystore(repaired, new_signer, a.passphrase)
    replace_durably(repaired, a.settings.signing_key_file)
    publisher.run_step()
    assert publisher.status.last_error is None
    assert _outbox_states(a) == {first: "confirmed", second: "confirmed"}
    assert sorted(sender for sender, _ in _published(a)) == sorted([old_address, new_signer.address.lower()])
    assert unusable_signing_key(a.settings) is None
    assert keystore_address(a.settings.signing_key_file).lower() == new_signer.address.lower()



def test_a_batch_the_old_key_signed_is_signed_again_even_at_a_nonce_the_new_key_reached(
        ledger_nodes: LedgerNodes) -> None:
    """The old key's unsent batch carries a nonce of the old key's count. Once the new key has sent as many
    transactions (votes, key distribution), that nonce is the new key's next one: taken for one of its own and sent
    as stored, the old key's copy was refused by the chain, and the pass failed with its records queued again."""
    a, publisher, cli, new_address, report, old_publisher = _voted_with_a_report_queued(ledger_nodes)
    prepared = old_publisher._prepare(flush=True)
    assert prepared is not None
    with a.store.session() as session:
        old_nonce = session.get_one(PublishBatch, prepared.batch_row_id).nonce
    activate_new_signer(cli)
    signing = a.signing_chain
    for _ in range(old_nonce):  # the new key's own writes
        signing.send_transaction({**signing.transaction_fields(21_000), "to": new_address, "value": 0})
    assert a.fraud_ledger(signing=True).pending_nonce() == old_nonce

    publisher.run_step()

    assert publisher.status.last_error is None and _outbox_states(a) == {report: "confirmed"}
    assert [sender for sender, _ in _published(a)] == [new_address.lower()]


def test_a_batch_the_old_key_sent_is_settled_before_the_new_key_signs_it(ledger_nodes: LedgerNodes) -> None:
    """The old key's transaction of a batch still in the pool when the node takes up the new key (another publisher,
    the node's worker before the switch beside `alliance fraud publish`, waits for it and queues its records again
    once it is refused): the batch is left to it, and the new key publishes the records only after."""
    a, publisher, cli, new_address, report, old_publisher = _voted_with_a_report_queued(ledger_nodes)
    a.chain.rpc("evm_setAutomine", [False])
    try:
        prepared = old_publisher._prepare(flush=True)
        assert prepared is not None
        old_publisher._send(prepared)  # in the pool, not mined
        activate_new_signer(cli)

        publisher.run_step()

        assert "has a transaction not mined yet" in (publisher.status.last_error or "")
        with a.store.session() as session:
            batch = session.get_one(PublishBatch, prepared.batch_row_id)
            assert (batch.state, batch.tx_hash) == ("signed", prepared.tx_hash)  # not signed with the new key
    finally:
        a.chain.rpc("evm_setAutomine", [True])
    a.chain.rpc("evm_mine")  # the old key's transaction, refused: its key is no member's any more
    assert a.chain.receipt_of(prepared.tx_hash) is not None

    publisher.run_step()

    assert publisher.status.last_error is None and _outbox_states(a) == {report: "confirmed"}
    assert [sender for sender, _ in _published(a)] == [new_address.lower()]
