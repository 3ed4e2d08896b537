"""Replacing a bank's signing key: prepared beside the current one, voted on chain, then activated."""

from __future__ import annotations

import json
import os
import stat

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from node.chain.errors import FraudLedgerNotMember
from node.chain.signer import keystore_address
from node.errors import Conflict, InvalidInput
from node.ledger.key_distribution import sync_keys
from node.ledger.reactions import withdraw_report
from node.ledger.reports import ReportRequest
from node.runtime import NodeContext, WrongPassphrase
from node.signer_rotation import activate_new_signer, next_signing_key_file, prepare_new_signer
from node.store.ledger_tables import OutboxRecord
from tests.conftest import LedgerNodes


def _files(node: NodeContext) -> dict[str, str]:
    """The keys directory's keystores, by name, with the address each holds."""
    return {p.name: keystore_address(p).lower() for p in sorted(node.settings.keys_dir.glob("signing-key*.json"))}


def test_a_new_signer_voted_through_replaces_the_old_one(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    old_address, member_id = a.address, a.member_id

    prepared = prepare_new_signer(a)

    assert stat.S_IMODE(prepared.path.stat().st_mode) == 0o600 and prepared.address != old_address
    assert _files(a) == {"signing-key.json": old_address.lower(), "signing-key.next.json": prepared.address.lower()}
    with pytest.raises(Conflict, match="prepared already") as again:
        prepare_new_signer(a)
    assert again.value.code == "new_signer_prepared"
    with pytest.raises(Conflict, match=r"does not have .* as a member's signer yet") as early:
        activate_new_signer(a)  # nobody voted yet: the old key keeps signing
    assert early.value.code == "rotation_pending"
    assert keystore_address(a.settings.signing_key_file).lower() == old_address.lower()

    proposal = b.registry(signing=True).propose_signer_rotation(member_id, prepared.address)
    assert c.registry(signing=True).vote(proposal.proposal_id).executed
    activated = activate_new_signer(a)

    assert (activated.member_id, activated.old_address, activated.new_address) == \
        (member_id, old_address, prepared.address)
    assert _files(a) == {"signing-key.json": prepared.address.lower(),
                         f"signing-key.retired-{old_address.lower()}.json": old_address.lower()}
    restarted = NodeContext(a.settings)
    ledger_nodes.nodes.append(restarted)  # closed with the others
    assert restarted.member_id == member_id
    assert sync_keys(restarted).generated == [1]  # member 1 signs again: it makes and sends the epoch-1 key
    with pytest.raises(InvalidInput, match="no new signing key is prepared") as done:
        activate_new_signer(restarted)
    assert done.value.code == "no_new_signer"


def test_an_activation_cut_short_after_the_link_is_finished_by_running_it_again(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    old_address = a.address
    prepared = prepare_new_signer(a)
    proposal = b.registry(signing=True).propose_signer_rotation(a.member_id, prepared.address)
    assert c.registry(signing=True).vote(proposal.proposal_id).executed
    retired = a.settings.keys_dir / f"signing-key.retired-{old_address.lower()}.json"
    retired.hardlink_to(a.settings.signing_key_file)  # the first step of an activation that then stopped

    activate_new_signer(a)

    assert _files(a) == {"signing-key.json": prepared.address.lower(), retired.name: old_address.lower()}


def test_a_new_signer_under_a_wrong_passphrase_is_refused_and_writes_nothing(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    wrong = NodeContext(a.settings.model_copy(update={"key_passphrase": SecretStr("not-the-passphrase")}))
    ledger_nodes.nodes.append(wrong)
    with pytest.raises(WrongPassphrase):
        prepare_new_signer(wrong)
    assert not next_signing_key_file(a.settings).exists()


def test_an_unreadable_prepared_key_is_refused_before_anything_moves(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    cut_short = next_signing_key_file(a.settings)
    cut_short.write_text(json.dumps({"address": "00" * 20})[:10])  # a write cut short
    with pytest.raises(Conflict, match=r"unreadable .* delete it and run again"):
        prepare_new_signer(a)
    with pytest.raises(InvalidInput, match="the prepared signing key cannot be used") as refused:
        activate_new_signer(a)
    assert refused.value.code == "new_signer_unusable"
    assert keystore_address(a.settings.signing_key_file).lower() == a.address.lower()


def _outbox_states(node: NodeContext) -> dict[str, str]:
    with node.store.session() as session:
        return {report_id: state for report_id, state in session.execute(select(OutboxRecord.report_id,
                                                                              OutboxRecord.state))}


def test_a_node_still_signing_with_the_rotated_away_key_keeps_its_published_batches(
        ledger_nodes: LedgerNodes) -> None:
    """Between the vote and the restart the running node signs with the old key, which the chain no longer maps to
    the member: its batches are not lost from the chain for that (they are the member's), and nothing is published
    twice once the node restarts with the new key."""
    a, b, c = ledger_nodes.nodes
    a.keyring.store_key(1, os.urandom(32), source="envelope")
    published = a.report_intake.accept(ReportRequest([("phone", "13800138000")], "telecom_fraud", 80),
                                       submitted_by="k").report_id
    a.publisher.drain()
    prepared = prepare_new_signer(a)
    proposal = b.registry(signing=True).propose_signer_rotation(a.member_id, prepared.address)
    assert c.registry(signing=True).vote(proposal.proposal_id).executed
    later = a.report_intake.accept(ReportRequest([("phone", "13900139000")], "telecom_fraud", 80),
                                   submitted_by="k").report_id

    with pytest.raises(FraudLedgerNotMember):  # the old key cannot publish any more
        a.publisher.run_once(flush=True)

    assert _outbox_states(a) == {published: "confirmed", later: "queued"}
    with pytest.raises(FraudLedgerNotMember):  # not "withdrawn" with nothing revoked on chain
        withdraw_report(a, published, "reported_in_error")
    activate_new_signer(a)
    restarted = NodeContext(a.settings)
    ledger_nodes.nodes.append(restarted)  # closed with the others
    restarted.publisher.drain()
    assert _outbox_states(restarted) == {published: "confirmed", later: "confirmed"}
    assert [sent.kind for sent in withdraw_report(restarted, published, "reported_in_error")] == ["revoked"]
    ledger = restarted.fraud_ledger()
    logs = ledger.contract.events.BatchPublished().get_logs(from_block=0)
    records = [r for log in logs for r in ledger.records_of_transaction(log["transactionHash"].to_0x_hex())[2]]
    assert len(records) == len(set(records)) == 2
