"""The STIX 2.1 export, validated by hand against the spec's required properties and formats."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

from node.ledger.indicator_state import RecordFact, StatePolicy, derive_state
from node.ledger.stix import export_page, identity_id, identity_object, indicator_id, stix_timestamp
from node.runtime import NodeContext
from tests.ledger.mirror_rows import DAY, T0, Row, add_batch, add_reaction

STIX_ID = re.compile(r"(?P<type>[a-z][a-z0-9-]+[a-z0-9])--[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
REQUIRED = {
    "indicator": {"type", "spec_version", "id", "created", "modified", "pattern", "pattern_type", "valid_from"},
    "identity": {"type", "spec_version", "id", "created", "modified", "name"},
}
POLICY = StatePolicy()
AT = T0 + 10 * DAY


def assert_valid_bundle(bundle: dict[str, Any]) -> None:
    assert bundle["type"] == "bundle" and "spec_version" not in bundle  # 2.1 bundles carry none
    assert STIX_ID.fullmatch(bundle["id"]).group("type") == "bundle"  # type: ignore[union-attr]
    assert bundle.get("objects", ["x"]) != []  # STIX 2.1 lists hold one or more items
    objects = bundle.get("objects", [])
    ids = {o["id"] for o in objects}
    assert len(ids) == len(objects)
    for obj in objects:
        assert REQUIRED[obj["type"]] <= set(obj), obj
        assert obj["spec_version"] == "2.1"
        assert STIX_ID.fullmatch(obj["id"]).group("type") == obj["type"]  # type: ignore[union-attr]
        for field in ("created", "modified", "valid_from", "valid_until"):
            if field in obj:
                assert TIMESTAMP.fullmatch(obj[field]), (field, obj[field])
        assert obj["modified"] >= obj["created"]
        assert all(re.fullmatch(r"x_[a-z0-9_]+", k) for k in obj if k.startswith("x"))
        if obj["type"] == "indicator":
            assert obj["created_by_ref"] in ids
            assert all(ref in ids for ref in obj["x_alliance_reporter_refs"])
            assert obj["valid_until"] > obj["valid_from"]
            assert 0 <= obj["confidence"] <= 100 and isinstance(obj["revoked"], bool)
            assert obj.get("labels", ["x"]) != []
            assert re.fullmatch(r"\[x-alliance-indicator:hash = '[0-9a-f]{64}'\]", obj["pattern"])


def test_stix_timestamp_is_utc_with_milliseconds() -> None:
    assert stix_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert stix_timestamp(1_700_000_000) == "2023-11-14T22:13:20.000Z"


def test_stix_ids_are_deterministic_uuid5() -> None:
    indicator = bytes(range(32))
    assert indicator_id(indicator) == indicator_id(bytes(range(32)))
    assert indicator_id(indicator) != indicator_id(bytes(32))
    assert STIX_ID.fullmatch(indicator_id(indicator)) and STIX_ID.fullmatch(identity_id(5))
    assert indicator_id(indicator)[len("indicator--"):][14] == "5"  # uuid version 5


def test_export_page_maps_state_to_indicators(node: NodeContext) -> None:
    shared, revoked = os.urandom(32), os.urandom(32)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(shared, confidence=50), Row(revoked)], published_at=T0)
        add_batch(session, 2, reporter=4, rows=[Row(shared, confidence=50, category=4)], block=12,
                  published_at=T0 + DAY)
        add_reaction(session, "revoked", revoked, 2, block=13, at=T0 + 2 * DAY, batch_id=1, value=1)
    with node.store.session() as session:
        active_only = export_page(session, at=AT, policy=POLICY).bundle
        everything = export_page(session, at=AT, policy=POLICY, include_inactive=True).bundle
    assert_valid_bundle(active_only)
    assert_valid_bundle(everything)
    identities = [o for o in active_only["objects"] if o["type"] == "identity"]
    assert [o["id"] for o in identities] == [identity_id(2), identity_id(4)]
    (indicator,) = [o for o in active_only["objects"] if o["type"] == "indicator"]
    assert indicator["id"] == indicator_id(shared)
    assert indicator["created_by_ref"] == identity_id(2)
    assert indicator["created"] == stix_timestamp(T0) and indicator["modified"] == stix_timestamp(T0 + DAY)
    assert indicator["labels"] == ["account_takeover", "money_mule"]
    assert indicator["confidence"] == 74 and indicator["revoked"] is False
    assert indicator["x_alliance_identifier_type"] == "phone"
    withdrawn = next(o for o in everything["objects"] if o["id"] == indicator_id(revoked))
    assert withdrawn["revoked"] is True and withdrawn["x_alliance_active"] is False and "labels" not in withdrawn
    assert withdrawn["modified"] == stix_timestamp(T0 + 2 * DAY)


def test_export_page_of_empty_mirror_has_no_objects(node: NodeContext) -> None:
    with node.store.session() as session:
        page = export_page(session, at=AT, policy=POLICY)
    assert_valid_bundle(page.bundle)
    assert "objects" not in page.bundle and page.bundle["type"] == "bundle" and page.next_after is None


def test_export_page_of_only_inactive_indicators_has_no_objects(node: NodeContext) -> None:
    expired = os.urandom(32)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(expired, valid_until=T0 + DAY)])
    with node.store.session() as session:
        page = export_page(session, at=AT, policy=POLICY, limit=1)
    assert_valid_bundle(page.bundle)
    assert "objects" not in page.bundle and page.next_after == expired


def test_export_page_pages_in_indicator_order(node: NodeContext) -> None:
    indicators = sorted(os.urandom(32) for _ in range(5))
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(i) for i in reversed(indicators)])
    seen: list[str] = []
    after = None
    with node.store.session() as session:
        for _ in range(3):
            page = export_page(session, at=AT, policy=POLICY, after=after, limit=2)
            assert_valid_bundle(page.bundle)
            seen += [o["id"] for o in page.bundle.get("objects", []) if o["type"] == "indicator"]
            after = page.next_after
    assert seen == [indicator_id(i) for i in indicators]
    assert after is None


def test_export_page_describes_each_identity_alike_on_every_page(node: NodeContext) -> None:
    # A platform keeps one version of an object per (id, modified) and never a changed `created`: the member's
    # identity must be the same object whichever page (or filter) it is exported with.
    first, second = sorted(os.urandom(32) for _ in range(2))
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(first)], block=10, published_at=T0)
        add_batch(session, 2, reporter=2, rows=[Row(second)], block=12, published_at=T0 + DAY)
        add_reaction(session, "revoked", first, 2, block=13, at=T0 + 2 * DAY, batch_id=1, value=1)
    with node.store.session() as session:
        pages = [export_page(session, at=AT, policy=POLICY, include_inactive=True, limit=1).bundle,
                 export_page(session, at=AT, policy=POLICY, include_inactive=True, after=first, limit=1).bundle,
                 export_page(session, at=AT, policy=POLICY).bundle]
    identities = [[o for o in page["objects"] if o["type"] == "identity"] for page in pages]
    assert all(found == [identity_object(2, T0)] for found in identities), identities


def test_export_page_survives_record_times_beyond_year_9999(node: NodeContext) -> None:
    # Record times are uint40 on chain (up to the year 36812) and such a record is well-formed for the indexer;
    # STIX timestamps have four-digit years, and one such record made the whole page fail.
    shared, far = sorted(os.urandom(32) for _ in range(2))
    late = 2**40 - 2 * DAY
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(shared), Row(far, valid_from=late, valid_until=late + DAY)])
        add_batch(session, 2, reporter=3, rows=[Row(shared, valid_from=late, valid_until=late + DAY)], block=12)
    with node.store.session() as session:
        active = export_page(session, at=AT, policy=POLICY).bundle
        everything = export_page(session, at=AT, policy=POLICY, include_inactive=True).bundle
    for bundle in (active, everything):
        assert_valid_bundle(bundle)
        # `far` cannot apply before the year 10000, which STIX cannot express: it is left out.
        (indicator,) = [o for o in bundle["objects"] if o["type"] == "indicator"]
        assert indicator["id"] == indicator_id(shared)
        assert (indicator["valid_from"], indicator["valid_until"]) == (stix_timestamp(T0), "9999-12-31T23:59:59.000Z")


def _indicators(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in bundle.get("objects", []) if o["type"] == "indicator"]


def test_export_gives_an_indicator_reported_again_after_full_revocation_a_new_id(node: NodeContext) -> None:
    # STIX makes `revoked` final for an object id: a platform that imported the revoked object must not see the
    # same id come back unrevoked when another member reports the identifier later.
    indicator = os.urandom(32)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(indicator, confidence=90)], block=10, published_at=T0)
        add_reaction(session, "endorsed", indicator, 5, block=11, at=T0, value=90)
        add_reaction(session, "revoked", indicator, 2, block=12, at=T0 + DAY, batch_id=1, value=1)
    with node.store.session() as session:
        (revoked,) = _indicators(export_page(session, at=AT, policy=POLICY, include_inactive=True).bundle)
    assert revoked["id"] == indicator_id(indicator) and revoked["revoked"] is True
    with node.store.transaction() as session:
        add_batch(session, 2, reporter=3, rows=[Row(indicator, confidence=40, valid_from=T0 + 2 * DAY)],
                  block=13, published_at=T0 + 2 * DAY)
    with node.store.session() as session:
        bundle = export_page(session, at=AT, policy=POLICY, include_inactive=True).bundle
    assert_valid_bundle(bundle)
    (again,) = _indicators(bundle)
    assert again["id"] == indicator_id(indicator, 1) != revoked["id"]
    assert again["revoked"] is False and again["x_alliance_active"] is True
    # It describes the new report alone: its reporter, its times, no endorsement made before it.
    assert again["created_by_ref"] == identity_id(3) and again["x_alliance_reporter_refs"] == [identity_id(3)]
    assert again["created"] == stix_timestamp(T0 + 2 * DAY) and again["valid_from"] == stix_timestamp(T0 + 2 * DAY)
    assert again["x_alliance_endorser_count"] == 0 and again["confidence"] < 40


def test_export_keeps_the_id_while_some_record_was_never_revoked_at_a_block_end(node: NodeContext) -> None:
    # A new report in the block of the last revocation, or while another reporter's record stands, never showed
    # the indicator revoked: the object (and its id) goes on.
    indicator = os.urandom(32)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(indicator)], block=10)
        add_batch(session, 2, reporter=3, rows=[Row(indicator)], block=11)
        add_reaction(session, "revoked", indicator, 2, block=12, at=T0 + DAY, batch_id=1, value=1)
        add_batch(session, 3, reporter=4, rows=[Row(indicator)], block=13)
        add_reaction(session, "revoked", indicator, 3, block=14, at=T0 + DAY, batch_id=2, value=1)
        add_reaction(session, "revoked", indicator, 4, block=15, at=T0 + DAY, batch_id=3, value=1)
        add_batch(session, 4, reporter=2, rows=[Row(indicator)], block=15)
        # A revocation by someone other than the reporter revokes nothing.
        add_reaction(session, "revoked", indicator, 5, block=16, at=T0 + DAY, batch_id=4, value=1)
        add_batch(session, 5, reporter=3, rows=[Row(indicator)], block=17)
    with node.store.session() as session:
        (exported,) = _indicators(export_page(session, at=AT, policy=POLICY).bundle)
    assert exported["id"] == indicator_id(indicator) and exported["revoked"] is False


def test_modified_moves_when_a_record_expires_or_a_dispute_lapses_without_any_event(node: NodeContext) -> None:
    """Labels and activity changed with the time of the export while `modified` stayed at the last event: an
    importer keeping one version per (id, modified) kept the older labels, or an indicator that no longer hits."""
    expiring, disputed = os.urandom(32), os.urandom(32)
    # A half-life so long that confidence keeps its value over the test's days (its first point falls in the second
    # after valid_from, before any event): only validity and lapse move `modified` here.
    policy = StatePolicy(dispute_window_days=3, half_life_days=10**9)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, published_at=T0,
                  rows=[Row(expiring, valid_until=T0 + 5 * DAY), Row(disputed)])
        add_batch(session, 2, reporter=4, rows=[Row(expiring, category=4)], block=12, published_at=T0 + DAY)
        add_reaction(session, "disputed", disputed, 4, block=13, at=T0 + DAY, value=1)

    def exported(at: int) -> dict[bytes, dict[str, Any]]:
        with node.store.session() as session:
            bundle = export_page(session, at=at, policy=policy, include_inactive=True).bundle
        assert_valid_bundle(bundle)
        return {indicator: next(o for o in _indicators(bundle) if o["id"] == indicator_id(indicator))
                for indicator in (expiring, disputed)}

    early, late = exported(T0 + 2 * DAY), exported(AT)
    assert early[expiring]["labels"] == ["account_takeover", "money_mule"]
    assert early[expiring]["modified"] == stix_timestamp(T0 + DAY)
    assert late[expiring]["labels"] == ["account_takeover"]
    assert late[expiring]["modified"] == stix_timestamp(T0 + 5 * DAY)  # when the first record expired
    assert early[disputed]["x_alliance_active"] is True and early[disputed]["modified"] == stix_timestamp(T0 + DAY)
    assert late[disputed]["x_alliance_active"] is False
    assert late[disputed]["modified"] == stix_timestamp(T0 + 4 * DAY)  # when the dispute lapsed


def test_modified_moves_when_confidence_decays_a_whole_point(node: NodeContext) -> None:
    """Confidence falls with age alone, while `modified` stayed at the last event: an importer keeping one version
    per (id, modified) kept the confidence of the report's day for good. `modified` is now when the exported
    confidence reached its value: it moves as the value falls, and stays while it does not."""
    indicator = os.urandom(32)
    with node.store.transaction() as session:
        add_batch(session, 1, reporter=2, rows=[Row(indicator, confidence=90)], published_at=T0)

    def exported(at: int) -> dict[str, Any]:
        with node.store.session() as session:
            bundle = export_page(session, at=at, policy=POLICY).bundle
        assert_valid_bundle(bundle)
        (found,) = _indicators(bundle)
        return found

    def confidence(at: int) -> int:
        return derive_state(indicator, [RecordFact(1, 0, indicator, 3, 5, 90, T0, T0 + 3650 * DAY, 2, 1, T0, 10)],
                            [], at=at, policy=POLICY).confidence

    late = exported(AT + 100 * DAY)
    modified = stix_seconds(late["modified"])
    assert T0 < modified <= AT + 100 * DAY
    assert late["confidence"] == confidence(AT + 100 * DAY) == confidence(modified) < confidence(modified - 1) < 90
    assert exported(modified)["modified"] == late["modified"]  # the same value since then: the same version
    earlier = exported(AT)
    assert earlier["confidence"] > late["confidence"] and stix_seconds(earlier["modified"]) < modified


def stix_seconds(timestamp: str) -> int:
    return int(datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=UTC).timestamp())
