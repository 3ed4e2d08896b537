"""Endorse, dispute, confirm and withdraw between bank nodes on a real chain, seen through their mirrors."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.chain.errors import ChainUnavailable
from node.errors import Conflict, InvalidInput, NotFound
from node.ledger import checks, reactions
from node.ledger.checks import check_identity
from node.ledger.digest import node_digest, policy_of
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import rotate, sync_keys
from node.ledger.mirror import indicator_history
from node.ledger.publisher import PreparedBatch
from node.ledger.reactions import (
    confirm_report,
    dispute_indicator,
    endorse_indicator,
    parse_indicator,
    withdraw_report,
)
from node.ledger.reports import ReportRequest, report_status
from node.ledger.republish import republish, republish_active_reports
from node.ledger.vocabulary import DisputeReason
from node.runtime import NodeContext
from node.store.ledger_tables import OutboxRecord
from tests.conftest import LedgerNodes, free_port, moved_to_store

PHONE = "13800138000"


def report_and_publish(node: NodeContext, phone: str = PHONE) -> str:
    accepted = node.report_intake.accept(ReportRequest([("phone", phone)], "telecom_fraud", 60), submitted_by="t")
    node.publisher.drain()
    return accepted.report_id


def indicator_of(node: NodeContext, report_id: str) -> bytes:
    with node.store.session() as session:
        return bytes(session.scalars(select(OutboxRecord.indicator).where(OutboxRecord.report_id == report_id))
                     .one())


def check(node: NodeContext, phone: str = PHONE) -> dict[str, object]:
    indexer_for(node).sync()
    return check_identity(node, [("phone", phone)], "test").results[0].to_json()


def test_endorse_dispute_confirm_and_withdraw_change_every_mirror(keyed_banks: list[NodeContext]) -> None:
    a, b, c = keyed_banks
    report_id = report_and_publish(b)
    indicator = indicator_of(b, report_id)
    first = check(a)
    # The reporter's 60, decayed for the seconds since valid_from (rounded down).
    assert first["hit"] is True and first["confidence"] in (59, 60)

    indexer_for(c).sync()
    endorsed = endorse_indicator(c, indicator, 80)
    assert (endorsed.kind, endorsed.indicator) == ("endorsed", "0x" + indicator.hex())
    assert check(a)["confidence"] > 80  # two independent sources combine (noisy-OR)

    dispute_indicator(a, indicator, "mistaken_identity")
    assert check(a)["disputed"] is True
    [confirmed] = confirm_report(b, report_id)
    assert confirmed.batch_id == 1
    assert check(a)["disputed"] is False and check(a)["hit"] is True

    [revoked] = withdraw_report(b, report_id, "reported_in_error")
    assert revoked.kind == "revoked"
    assert check(a)["hit"] is False
    indexer_for(b).sync()
    assert withdraw_report(b, report_id, "reported_in_error") == []  # already revoked: nothing sent twice
    with b.store.session() as session:
        assert report_status(session, report_id).state == "withdrawn"


def test_withdraw_queued_report_is_never_published_nor_republished(keyed_banks: list[NodeContext]) -> None:
    b = keyed_banks[1]
    accepted = b.report_intake.accept(ReportRequest([("phone", PHONE)], "other", 40), submitted_by="t")
    assert withdraw_report(b, accepted.report_id, "superseded") == []
    assert b.publisher.run_once(flush=True).records == 0
    assert b.fraud_ledger().batch_count() == 0
    b.keyring.store_key(2, bytes(32), source="generated")
    assert republish_active_reports(b.store, b.keyring, b.vault).records == 0


def bank_on_store(ledger_nodes: LedgerNodes, bank: NodeContext, store_url: str) -> NodeContext:
    """`bank` with its store at `store_url` (SQLite or PostgreSQL), holding its alliance key of epoch 1."""
    moved = moved_to_store(bank, store_url)
    ledger_nodes.nodes.append(moved)  # closed with the others
    moved.keyring.store_key(1, bank.keyring.key(1), source="envelope")
    return moved


def test_withdraw_while_the_publisher_claims_the_report_refuses_then_revokes(
        ledger_nodes: LedgerNodes, keyed_banks: list[NodeContext], store_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    b = bank_on_store(ledger_nodes, keyed_banks[1], store_url)
    worker = NodeContext(b.settings)  # the node's publisher, in another process than `alliance fraud withdraw`
    ledger_nodes.nodes.append(worker)
    report_id = b.report_intake.accept(ReportRequest([("phone", PHONE)], "other", 40), submitted_by="t").report_id
    claimed: list[PreparedBatch | None] = []
    clock = reactions.utcnow

    def publisher_claims_before_the_withdrawal_is_written() -> datetime:
        # The withdrawal has read the report's records, none of them being published; now the worker claims them.
        if not claimed:
            claimed.append(worker.publisher._prepare(flush=True))  # claimed and signed, not sent yet
        return clock()

    monkeypatch.setattr(reactions, "utcnow", publisher_claims_before_the_withdrawal_is_written)
    with pytest.raises(Conflict) as busy:
        withdraw_report(b, report_id, "superseded")
    monkeypatch.undo()

    assert busy.value.code == "publication_in_progress" and claimed[0] is not None
    with b.store.session() as session:
        assert report_status(session, report_id).state == "publishing"  # not withdrawn: nothing changed
    worker.publisher.drain()  # the signed batch is sent and confirmed
    [revoked] = withdraw_report(b, report_id, "superseded")
    assert (revoked.kind, revoked.batch_id) == ("revoked", 1)
    with b.store.session() as session:
        assert report_status(session, report_id).state == "withdrawn"


def test_reactions_refuse_bad_input_and_send_nothing(keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    report_id = report_and_publish(b)
    indicator = indicator_of(b, report_id)
    indexer_for(a).sync()
    before = a.chain.block_number()
    with pytest.raises(NotFound) as unknown:
        endorse_indicator(a, bytes(32), 50)
    assert unknown.value.code == "unknown_indicator"
    with pytest.raises(InvalidInput) as reason:
        dispute_indicator(a, indicator, "because")
    assert reason.value.code == "unknown_reason"
    with pytest.raises(InvalidInput) as confidence:
        endorse_indicator(a, indicator, 101)
    assert confidence.value.code == "invalid_confidence"
    with pytest.raises(InvalidInput) as malformed:
        parse_indicator("0x1234")
    assert malformed.value.code == "invalid_indicator"
    with pytest.raises(NotFound):
        withdraw_report(a, "0" * 32, "other")
    assert a.chain.block_number() == before


def test_reaction_routes_need_the_analyst_role(keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    report_id = report_and_publish(b)
    indicator = "0x" + indicator_of(b, report_id).hex()
    indexer_for(a).sync()
    with a.store.transaction() as session:
        tokens = {role: create_api_key(session, role, "t").token for role in Role}
    with TestClient(create_app(a)) as client:
        for role in (Role.workflow, Role.auditor, Role.operator):
            refused = client.post(f"/v1/fraud/indicators/{indicator}/disputes", json={"reason": "other"},
                                  headers={"X-API-Key": tokens[role]})
            assert refused.status_code == 403
        made = client.post(f"/v1/fraud/indicators/{indicator}/endorsements", json={"confidence": 70},
                           headers={"X-API-Key": tokens[Role.analyst]})
        assert made.status_code == 201 and made.json()["kind"] == "endorsed"
        missing = client.post(f"/v1/fraud/reports/{'0' * 32}/withdrawal", json={"reason": "other"},
                              headers={"X-API-Key": tokens[Role.analyst]})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "report_not_found"


def test_withdraw_with_the_chain_down_says_it_is_recorded_and_must_be_run_again(keyed_banks: list[NodeContext]) -> None:
    """With the chain down a withdrawal was recorded and its revocations were not sent, and the answer was only
    "chain RPC ... is unreachable": nothing said the report was withdrawn, nor that the revocations needed a rerun."""
    a, b, _c = keyed_banks
    report_id = report_and_publish(b)
    down = NodeContext(b.settings.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}",
                                                     "request_timeout_s": 1.0}))
    try:
        with pytest.raises(ChainUnavailable, match=f"report {report_id} is withdrawn .* withdraw it again"):
            withdraw_report(down, report_id, "reported_in_error")
    finally:
        down.close()
    with b.store.session() as session:
        assert report_status(session, report_id).state == "withdrawn"
    assert check(a)["hit"] is True  # nothing revoked yet
    [revoked] = withdraw_report(b, report_id, "reported_in_error")  # run again: the revocation goes out
    assert revoked.kind == "revoked" and check(a)["hit"] is False


def test_republishing_after_a_rotation_keeps_an_unanswered_dispute_in_force(
        keyed_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    """C disputed B's report and B never answered: once the window passed, it stopped hitting. B's republish after a
    rotation copies the report under the new epoch, after the dispute: the copy was a record the dispute did not
    reach, and the report hit again, unanswered."""
    a, b, c = keyed_banks
    report_id = report_and_publish(b)
    indexer_for(c).sync()
    dispute_indicator(c, indicator_of(b, report_id), "mistaken_identity")
    later = time.time() + 31 * 86_400  # the dispute window (30 days) passed unanswered
    monkeypatch.setattr(checks, "time", SimpleNamespace(time=lambda: later))
    assert check(c)["hit"] is False

    assert rotate(a) == 2
    for node in (b, c):
        sync_keys(node)
    assert republish(b).records == 1
    b.publisher.drain()

    after = check(c)
    assert (after["hit"], after["disputed"]) == (False, True)
    [confirmed, _] = confirm_report(b, report_id)  # B answers: both copies apply again
    assert check(c)["hit"] is True and confirmed.batch_id == 1


def indicator_state_of(node: NodeContext, indicator: bytes, at: int) -> dict[str, object]:
    indexer_for(node).sync()
    with node.store.session() as session:
        return indicator_history(session, indicator, at=at, policy=policy_of(node)).state.to_json()


def test_endorse_or_dispute_of_own_indicator_is_refused_and_sends_nothing(keyed_banks: list[NodeContext],
                                                                         tmp_path: Path) -> None:
    """B endorsed and disputed the indicator it reported itself: both were sent (every node then listed B as an
    endorser of its own report)."""
    a, b, _ = keyed_banks
    report_id = report_and_publish(b)
    indicator = indicator_of(b, report_id)
    queued = b.report_intake.accept(ReportRequest([("phone", "13900139000")], "other", 40), submitted_by="t")
    with b.store.transaction() as session:
        token = create_api_key(session, Role.analyst, "t").token
    before = b.chain.block_number()

    # Published, not yet in B's mirror (the outbox says so); then mirrored.
    with pytest.raises(Conflict, match=f"report {report_id}") as endorsing:
        endorse_indicator(b, indicator, 90)
    assert endorsing.value.code == "own_indicator"
    indexer_for(b).sync()
    with TestClient(create_app(b)) as client:
        for path, body in (("endorsements", {"confidence": 90}), ("disputes", {"reason": "mistaken_identity"})):
            refused = client.post(f"/v1/fraud/indicators/0x{indicator.hex()}/{path}", json=body,
                                  headers={"X-API-Key": token})
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "own_indicator"
    # Queued only, in no mirror yet: refused as this bank's own, not as unknown.
    with pytest.raises(Conflict) as disputing:
        dispute_indicator(b, indicator_of(b, queued.report_id), "other")
    assert disputing.value.code == "own_indicator"
    # A store that lost the report (restored from an older backup) still refuses by the mirror.
    restored = moved_to_store(b, f"sqlite:///{tmp_path / 'restored.db'}")
    try:
        indexer_for(restored).sync()
        with pytest.raises(Conflict, match="a record on chain that this node's store does not hold") as by_mirror:
            endorse_indicator(restored, indicator, 90)
        assert by_mirror.value.code == "own_indicator"
    finally:
        restored.close()

    assert b.chain.block_number() == before
    assert indicator_state_of(a, indicator, int(time.time()))["endorsers"] == []


def test_a_withdrawn_report_no_longer_keeps_its_bank_from_disputing(keyed_banks: list[NodeContext]) -> None:
    """A and C reported the same phone; A withdrew its report (its customer was cleared) and may now dispute C's."""
    a, _, c = keyed_banks
    mine, theirs = report_and_publish(a), report_and_publish(c)
    indicator = indicator_of(a, mine)
    assert indicator == indicator_of(c, theirs)
    indexer_for(a).sync()
    with pytest.raises(Conflict) as refused:
        dispute_indicator(a, indicator, "mistaken_identity")
    assert refused.value.code == "own_indicator"
    withdraw_report(a, mine, "customer_cleared")
    with pytest.raises(Conflict, match=r"withdrawn\).* no revocation of it yet: sync the ledger"):
        dispute_indicator(a, indicator, "mistaken_identity")  # until the mirror shows the revocation
    indexer_for(a).sync()
    assert dispute_indicator(a, indicator, "mistaken_identity").kind == "disputed"
    assert check(c)["disputed"] is True


def test_own_endorsement_and_dispute_sent_past_the_node_are_void_on_every_node(
        keyed_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another implementation sent B's endorsement and dispute of an indicator B reports straight to the contract:
    every node's derived state ignores both (docs/fraud-ledger.md), and the digests agree."""
    a, b, c = keyed_banks
    indicator = indicator_of(b, report_and_publish(b))
    report_and_publish(c)
    ledger = b.fraud_ledger(signing=True)
    ledger.endorse(indicator, 100)
    ledger.dispute(indicator, int(DisputeReason.mistaken_identity))
    now = int(time.time())
    for node in (a, c):
        state = indicator_state_of(node, indicator, now)
        assert (state["endorsers"], state["disputed"], state["reporters"]) == ([], False, [2, 3])
    assert node_digest(a, indexer_for(a)) == node_digest(c, indexer_for(c))
    later = time.time() + 31 * 86_400  # an unanswered dispute would have lapsed C's record by now
    monkeypatch.setattr(checks, "time", SimpleNamespace(time=lambda: later))
    after = check(a)
    assert (after["hit"], after["disputed"], after["reporter_count"]) == (True, False, 2)
