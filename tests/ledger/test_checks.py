"""Checks against mirror rows written directly (the indexer's output), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from node.chain.deployment import DeployedContract, Deployment
from node.config import load_settings
from node.crypto.keyed_hash import hash_identifier
from node.crypto.vault import LocalVault
from node.errors import InvalidInput
from node.ledger.checks import MAX_BATCH, TooManyIdentifiers, check_batch, check_identity
from node.ledger.keyring import KeyRing, NoAllianceKey
from node.ledger.mirror import facts_for, mirror_status
from node.runtime import NodeContext
from node.store.ledger_tables import CheckLogEntry
from tests.ledger.mirror_rows import DAY, LEDGER, Row, add_batch, add_reaction, set_synced

PHONE = "13800138000"
RESIDENT_ID = "11010519491231002X"
NOW = int(time.time())


def node_on_store(data_dir: Path, store_url: str) -> NodeContext:
    """A node context on `store_url` with a keyring and a deployment record, but no chain."""
    node = NodeContext(load_settings(data_dir, database_url=store_url))
    node.__dict__["keyring"] = KeyRing(node.store, LocalVault(LocalVault.generate_key()))
    ledger = DeployedContract(LEDGER, 1, "0x", "")
    node.__dict__["deployment"] = Deployment("test", 31337, "now", {"FraudLedger": ledger})
    return node


def indicator(key: bytes, kind: str, raw: str) -> bytes:
    return hash_identifier(key, kind, raw)[1]


def test_check_identity_finds_reported_phone(node: NodeContext, key: bytes) -> None:
    phone = indicator(key, "phone", PHONE)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(phone, confidence=60, valid_from=NOW - DAY)])
        set_synced(session, last_block=10, synced_at=datetime.now(UTC))
    outcome = check_identity(node, [("phone", "+86 138-0013-8000"), ("cn_resident_id", RESIDENT_ID)], "k1")
    hit, miss = outcome.results
    assert hit.hit and hit.indicator == phone and hit.categories == ("money_mule",)
    assert hit.reporter_count == 1 and hit.confidence == 59 and not hit.disputed  # one day of decay
    assert not miss.hit and miss.indicator == indicator(key, "cn_resident_id", RESIDENT_ID)
    assert outcome.mirror.as_of_block == 10 and not outcome.mirror.stale


def test_check_identity_matches_indicator_of_older_epoch(node: NodeContext, key: bytes) -> None:
    new_key = os.urandom(32)
    node.keyring.store_key(2, new_key, source="envelope")
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(indicator(key, "phone", PHONE), valid_from=NOW)], epoch=1)
    (result,) = check_identity(node, [("phone", PHONE)], "k1").results
    assert result.hit and result.indicator == indicator(new_key, "phone", PHONE)


def test_check_identity_reports_disputed_and_lapsed(node: NodeContext, key: bytes) -> None:
    phone, card = indicator(key, "phone", PHONE), indicator(key, "bank_card", "6222021234567890128")
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(phone, valid_from=NOW - 60 * DAY),
                                                Row(card, identifier_type=4, valid_from=NOW - 60 * DAY)])
        add_reaction(session, "disputed", phone, 3, block=11, at=NOW - DAY, value=1)
        add_reaction(session, "disputed", card, 3, block=12, at=NOW - 31 * DAY, value=1)
    phone_result, card_result = check_identity(
        node, [("phone", PHONE), ("bank_card", "6222 0212 3456 7890 128")], "k1").results
    assert phone_result.hit and phone_result.disputed
    assert not card_result.hit and card_result.disputed


def test_check_dispute_of_republished_hash_stops_old_epoch_hits(node: NodeContext, key: bytes) -> None:
    """Reporter 2 republished its report after a rotation; member 3 disputed the new hash 31 days ago and got
    no answer, so the old-epoch copy must not keep the identifier hitting."""
    new_key = os.urandom(32)
    node.keyring.store_key(2, new_key, source="envelope")
    old, new = indicator(key, "phone", PHONE), indicator(new_key, "phone", PHONE)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(old, valid_from=NOW - 90 * DAY)], epoch=1, block=10)
        add_batch(session, 2, reporter=2, rows=[Row(new, valid_from=NOW - 90 * DAY)], epoch=2, block=11)
        add_reaction(session, "disputed", new, 3, block=12, at=NOW - 31 * DAY, value=1)
    (result,) = check_identity(node, [("phone", PHONE)], "k1").results
    assert not result.hit and result.disputed
    with node.store.transaction() as session:  # the reporter answers by confirming its old-epoch copy
        add_reaction(session, "confirmed", old, 2, block=13, at=NOW - DAY, batch_id=1)
    (result,) = check_identity(node, [("phone", PHONE)], "k1").results
    assert result.hit and not result.disputed and result.reporter_count == 1


def test_check_identity_refuses_invalid_identifier(node: NodeContext, key: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_identity(node, [("phone", PHONE), ("cn_resident_id", "110105194912310021")], "k1")
    assert caught.value.code == "checksum_failed"
    assert caught.value.details == [{"item": 1, "type": "cn_resident_id", "code": "checksum_failed",
                                     "reason": "check digit does not match the 17 digits"}]
    with node.store.session() as session:
        assert session.scalars(select(CheckLogEntry)).all() == []


def test_check_identity_refuses_unknown_type_and_empty_list(node: NodeContext, key: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_identity(node, [("passport", "E12345678")], "k1")
    assert caught.value.code == "unknown_type"
    with pytest.raises(InvalidInput) as empty:
        check_identity(node, [], "k1")
    assert empty.value.code == "no_identifiers"


def test_check_without_alliance_key_raises(node: NodeContext) -> None:
    with pytest.raises(NoAllianceKey):
        check_identity(node, [("phone", PHONE)], "k1")


def test_check_batch_answers_invalid_items_with_errors(node: NodeContext, key: bytes) -> None:
    phone = indicator(key, "phone", PHONE)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(phone, valid_from=NOW)])
    outcome = check_batch(node, [("phone", PHONE), ("phone", "call me"), ("email", "a@b.example")], "k9")
    first, bad, email = outcome.results
    assert first.hit and bad.error_code == "bad_format" and bad.indicator is None and not email.hit
    assert bad.to_json()["error"] == {"code": "bad_format", "reason": bad.error_reason}


def test_check_batch_refuses_more_than_limit(node: NodeContext, key: bytes) -> None:
    with pytest.raises(TooManyIdentifiers) as caught:
        check_batch(node, [("ip", "10.0.0.1")] * (MAX_BATCH + 1), "k1")
    assert caught.value.http_status == 413 and caught.value.code == "too_many_identifiers"


def test_check_batch_looks_up_in_chunks(node: NodeContext, key: bytes) -> None:
    addresses = [f"10.{i // 256}.{i % 256}.1" for i in range(1200)]
    hits = addresses[::100]
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(indicator(key, "ip", a), identifier_type=7, valid_from=NOW)
                                                for a in hits])
    outcome = check_batch(node, [("ip", a) for a in addresses], "k1")
    assert [r.item for r in outcome.results if r.hit] == list(range(0, 1200, 100))


def test_check_writes_query_log(node: NodeContext, key: bytes) -> None:
    phone = indicator(key, "phone", PHONE)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(phone, valid_from=NOW)])
    check_identity(node, [("phone", PHONE), ("ip", "10.0.0.1")], "key-a")
    check_batch(node, [("ip", "10.0.0.2"), ("ip", "bad")], "key-b")
    with node.store.session() as session:
        entries = session.scalars(select(CheckLogEntry).order_by(CheckLogEntry.id)).all()
    assert [(e.key_id, e.kind) for e in entries] == [("key-a", "identity"), ("key-b", "batch")]
    assert json.loads(entries[0].indicators) == [phone.hex(), indicator(key, "ip", "10.0.0.1").hex()]
    assert json.loads(entries[0].hits) == [phone.hex()]
    assert json.loads(entries[1].indicators) == [indicator(key, "ip", "10.0.0.2").hex()]
    assert entries[0].as_of_block == -1 and entries[0].stale


def test_mirror_status_is_stale_without_sync_state(node: NodeContext) -> None:
    with node.store.session() as session:
        status = mirror_status(session, LEDGER, stale_after_s=30)
    assert status.as_of_block == -1 and status.stale and status.lag_s is None


def test_mirror_status_is_stale_when_sync_is_old(node: NodeContext) -> None:
    now = datetime.now(UTC)
    with node.store.transaction() as session:
        set_synced(session, last_block=42, synced_at=now - timedelta(seconds=120), contract=LEDGER.upper())
    with node.store.session() as session:
        old = mirror_status(session, LEDGER, stale_after_s=30, now=now)
        recent = mirror_status(session, LEDGER, stale_after_s=300, now=now)
    assert old.stale and old.as_of_block == 42 and old.lag_s == pytest.approx(120, abs=1)
    assert not recent.stale


def test_facts_for_skips_orphan_reactions_when_asked(node: NodeContext) -> None:
    known, orphan = os.urandom(32), os.urandom(32)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(known)])
        add_reaction(session, "endorsed", known, 3, block=11, at=NOW, value=50)
        add_reaction(session, "endorsed", orphan, 3, block=12, at=NOW, value=50)
    with node.store.session() as session:
        everything = facts_for(session, [known, orphan, os.urandom(32)])
        checked = facts_for(session, [known, orphan], reactions_without_records=False)
    assert set(everything) == {known, orphan} and len(everything[known][1]) == 1
    assert set(checked) == {known}
