"""The derived-state rules of docs/fraud-ledger.md, one test per rule."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.ledger.indicator_state import (
    SECONDS_PER_DAY,
    ReactionFact,
    RecordFact,
    StatePolicy,
    combine_confidences,
    confidence_settled_since,
    decay_factor,
    derive_state,
    derive_state_and_sources,
)
from node.ledger.vocabulary import Category

DAY = SECONDS_PER_DAY
T0 = 1_700_000_000
IND = bytes(range(32))
OTHER = bytes(32)
POLICY = StatePolicy(half_life_days=365.0, dispute_window_days=30)
ONE = 1 << 64


def record(*, reporter: int = 1, batch: int = 1, confidence: int = 80, valid_from: int = T0,
           valid_until: int = T0 + 400 * DAY, category: Category = Category.money_mule, block: int = 10,
           indicator: bytes = IND) -> RecordFact:
    return RecordFact(batch_id=batch, position=0, indicator=indicator, identifier_type=3, category=category,
                      confidence=confidence, valid_from=valid_from, valid_until=valid_until,
                      reporter_member_id=reporter, epoch=1, published_at=valid_from, block_number=block)


def reaction(kind: str, *, member: int, at: int, block: int, batch: int | None = None, value: int = 0,
             indicator: bytes = IND, log_index: int = 0) -> ReactionFact:
    return ReactionFact(kind=kind, indicator=indicator, member_id=member, batch_id=batch,  # type: ignore[arg-type]
                        value=value, at=at, block_number=block, log_index=log_index)


def test_decay_factor_halves_exactly_per_half_life() -> None:
    half_life = 365 * DAY
    assert decay_factor(0, half_life) == ONE
    assert decay_factor(half_life, half_life) == ONE >> 1
    assert decay_factor(3 * half_life, half_life) == ONE >> 3
    assert decay_factor(half_life // 2, half_life) / ONE == pytest.approx(2 ** -0.5, rel=1e-15)
    assert decay_factor(70 * half_life, half_life) == 0


def test_derive_state_decays_confidence_by_half_life() -> None:
    state = derive_state(IND, [record(confidence=80)], [], at=T0 + 365 * DAY, policy=POLICY)
    assert state.active and state.confidence == 40


def test_derive_state_rounds_decayed_confidence_down() -> None:
    # 80 * 2^(-0.5) = 56.57: floor, never half-up, so every node gets 56.
    state = derive_state(IND, [record(confidence=80)], [], at=T0 + round(182.5 * DAY), policy=POLICY)
    assert state.confidence == 56


def test_derive_state_combines_reporters_by_noisy_or() -> None:
    records = [record(reporter=1, batch=1, confidence=50), record(reporter=2, batch=2, confidence=50)]
    state = derive_state(IND, records, [], at=T0, policy=POLICY)
    assert state.confidence == 75
    assert state.reporters == (1, 2) and state.reporter_count == 2


def test_derive_state_counts_one_reporter_once() -> None:
    records = [record(reporter=1, batch=1, confidence=50), record(reporter=1, batch=2, confidence=60)]
    assert derive_state(IND, records, [], at=T0, policy=POLICY).confidence == 60


def test_combine_confidences_keeps_exact_percentages() -> None:
    assert combine_confidences([]) == 0
    assert combine_confidences([100 * ONE]) == 100
    assert combine_confidences([99 * ONE, 1 * ONE]) == 99  # 1 - 0.01 * 0.99 = 0.9901


def test_derive_state_applies_only_inside_validity_window() -> None:
    rec = record(valid_from=T0, valid_until=T0 + 10 * DAY)
    assert not derive_state(IND, [rec], [], at=T0 - 1, policy=POLICY).active
    assert derive_state(IND, [rec], [], at=T0, policy=POLICY).active
    expired = derive_state(IND, [rec], [], at=T0 + 10 * DAY, policy=POLICY)
    assert not expired.active and expired.confidence == 0 and expired.categories == ()
    assert (expired.valid_from, expired.valid_until) == (T0, T0 + 10 * DAY)


def test_derive_state_drops_revoked_record() -> None:
    records = [record(reporter=1, batch=1), record(reporter=2, batch=2, confidence=30)]
    revoke = reaction("revoked", member=1, batch=1, at=T0 + DAY, block=20, value=1)
    state = derive_state(IND, records, [revoke], at=T0 + DAY, policy=POLICY)
    assert state.active and state.reporters == (2,) and state.confidence == 29  # 30 decayed by one day
    assert not state.revoked


def test_derive_state_marks_revoked_when_every_record_is_revoked() -> None:
    revoke = reaction("revoked", member=1, batch=1, at=T0 + DAY, block=20, value=1)
    state = derive_state(IND, [record()], [revoke], at=T0 + DAY, policy=POLICY)
    assert state.revoked and not state.active and state.confidence == 0


def test_derive_state_ignores_revocation_by_another_member() -> None:
    revoke = reaction("revoked", member=2, batch=1, at=T0 + DAY, block=20, value=1)
    state = derive_state(IND, [record(reporter=1)], [revoke], at=T0 + DAY, policy=POLICY)
    assert state.active and not state.revoked


def test_derive_state_keeps_hits_during_dispute_window() -> None:
    dispute = reaction("disputed", member=2, at=T0 + DAY, block=20, value=1)
    state = derive_state(IND, [record(reporter=1)], [dispute], at=T0 + 30 * DAY, policy=POLICY)
    assert state.active and state.disputed


def test_derive_state_lapses_record_after_unanswered_dispute_window() -> None:
    dispute = reaction("disputed", member=2, at=T0 + DAY, block=20, value=1)
    state = derive_state(IND, [record(reporter=1)], [dispute], at=T0 + 31 * DAY, policy=POLICY)
    assert not state.active and state.disputed and state.reporters == ()


def test_derive_state_confirm_answers_dispute() -> None:
    dispute = reaction("disputed", member=2, at=T0 + DAY, block=20, value=1)
    confirm = reaction("confirmed", member=1, batch=1, at=T0 + 2 * DAY, block=21)
    state = derive_state(IND, [record(reporter=1)], [dispute, confirm], at=T0 + 100 * DAY, policy=POLICY)
    assert state.active and not state.disputed


def test_derive_state_confirm_before_dispute_does_not_answer_it() -> None:
    confirm = reaction("confirmed", member=1, batch=1, at=T0 + DAY, block=20)
    dispute = reaction("disputed", member=2, at=T0 + 2 * DAY, block=21, value=1)
    state = derive_state(IND, [record(reporter=1)], [confirm, dispute], at=T0 + 100 * DAY, policy=POLICY)
    assert not state.active and state.disputed


def test_derive_state_confirm_by_other_member_does_not_answer_dispute() -> None:
    dispute = reaction("disputed", member=2, at=T0 + DAY, block=20, value=1)
    confirm = reaction("confirmed", member=3, batch=1, at=T0 + 2 * DAY, block=21)
    state = derive_state(IND, [record(reporter=1)], [dispute, confirm], at=T0 + 100 * DAY, policy=POLICY)
    assert not state.active


def test_derive_state_dispute_applies_per_reporter() -> None:
    records = [record(reporter=1, batch=1, confidence=50), record(reporter=3, batch=3, confidence=50)]
    dispute = reaction("disputed", member=2, at=T0, block=20, value=1)
    confirm = reaction("confirmed", member=3, batch=3, at=T0 + DAY, block=21)
    state = derive_state(IND, records, [dispute, confirm], at=T0 + 40 * DAY, policy=POLICY)
    assert state.reporters == (3,) and state.disputed


def test_derive_state_ignores_dispute_older_than_record() -> None:
    dispute = reaction("disputed", member=2, at=T0 - DAY, block=5, value=1)
    state = derive_state(IND, [record(block=10)], [dispute], at=T0 + 100 * DAY, policy=POLICY)
    assert state.active and not state.disputed


def test_derive_state_adds_endorsement_confidence() -> None:
    endorse = reaction("endorsed", member=2, at=T0, block=20, value=50)
    state = derive_state(IND, [record(confidence=50)], [endorse], at=T0, policy=POLICY)
    assert state.confidence == 75 and state.endorsers == (2,) and state.reporter_count == 1


def test_derive_state_decays_endorsement_from_its_own_time() -> None:
    endorse = reaction("endorsed", member=2, at=T0 + 365 * DAY, block=20, value=100)
    state = derive_state(IND, [record(confidence=0)], [endorse], at=T0 + 365 * DAY, policy=POLICY)
    assert state.confidence == 100


def test_derive_state_counts_latest_endorsement_per_member_and_not_reporters_own() -> None:
    reactions = [reaction("endorsed", member=2, at=T0, block=20, value=90),
                 reaction("endorsed", member=2, at=T0, block=21, value=20),
                 reaction("endorsed", member=1, at=T0, block=22, value=100)]
    state = derive_state(IND, [record(reporter=1, confidence=50)], reactions, at=T0, policy=POLICY)
    assert state.confidence == 60 and state.endorsers == (2,)


def test_derive_state_voids_a_reporters_endorsement_of_its_own_indicator_for_good() -> None:
    """Reporter 1 endorsed its own indicator: it is no endorser, and once its record expired the endorsement did not
    count beside reporter 3's record either (it was counted then, with its own fresher time)."""
    records = [record(reporter=1, batch=1, confidence=50, valid_until=T0 + 10 * DAY),
               record(reporter=3, batch=3, confidence=50, block=11)]
    own = reaction("endorsed", member=1, at=T0 + DAY, block=20, value=100)
    state = derive_state(IND, records, [own], at=T0 + 20 * DAY, policy=POLICY)
    assert state.endorsers == () and state.reporters == (3,)
    assert state.confidence == derive_state(IND, records, [], at=T0 + 20 * DAY, policy=POLICY).confidence == 48


def test_derive_state_own_endorsement_does_not_replace_an_earlier_one_in_force() -> None:
    """Member 2 endorsed reporter 1's indicator at 90, reported it too, then endorsed it at 10: the second is void,
    so the first stays the one that counts once member 2's record no longer applies."""
    records = [record(reporter=1, batch=1, confidence=50),
               record(reporter=2, batch=2, confidence=40, block=30, valid_until=T0 + 10 * DAY)]
    reactions = [reaction("endorsed", member=2, at=T0, block=20, value=90),
                 reaction("endorsed", member=2, at=T0 + DAY, block=31, value=10)]
    state = derive_state(IND, records, reactions, at=T0 + 10 * DAY, policy=POLICY)
    assert state.endorsers == (2,) and state.reporters == (1,)
    assert state.confidence == derive_state(IND, records[:1], reactions[:1], at=T0 + 10 * DAY,
                                            policy=POLICY).confidence


def test_derive_state_keeps_an_endorsement_made_before_its_member_reported() -> None:
    """Endorsing first and reporting later: the endorsement stays listed, does not count twice beside the member's
    own record, and counts again once the member revoked that record."""
    records = [record(reporter=1, batch=1, confidence=50), record(reporter=2, batch=2, confidence=50, block=30)]
    endorse = reaction("endorsed", member=2, at=T0, block=20, value=50)
    state = derive_state(IND, records, [endorse], at=T0, policy=POLICY)
    assert state.endorsers == (2,) and state.reporters == (1, 2) and state.confidence == 75
    revoke = reaction("revoked", member=2, batch=2, at=T0, block=40, value=1)
    state = derive_state(IND, records, [endorse, revoke], at=T0, policy=POLICY)
    assert state.endorsers == (2,) and state.reporters == (1,) and state.confidence == 75


def test_derive_state_counts_a_record_of_the_same_block_as_earlier_than_an_endorsement() -> None:
    records = [record(reporter=1, batch=1, confidence=50), record(reporter=2, batch=2, confidence=50, block=20)]
    same_block = reaction("endorsed", member=2, at=T0, block=20, log_index=0, value=50)
    assert derive_state(IND, records, [same_block], at=T0, policy=POLICY).endorsers == ()


def test_derive_state_voids_a_reporters_dispute_of_its_own_indicator() -> None:
    """Reporter 1 disputed an indicator it reports, and reporter 3 never answered: 3's record neither shows
    disputed nor lapses."""
    records = [record(reporter=1, batch=1, confidence=50), record(reporter=3, batch=3, confidence=50, block=11)]
    own = reaction("disputed", member=1, at=T0, block=20, value=1)
    state = derive_state(IND, records, [own], at=T0 + 31 * DAY, policy=POLICY)
    assert not state.disputed and state.reporters == (1, 3)


def test_derive_state_counts_a_dispute_made_after_the_disputer_revoked_its_record() -> None:
    """A member that withdrew its own report (its record revoked) may dispute another's record of the indicator."""
    records = [record(reporter=1, batch=1), record(reporter=3, batch=3, block=11)]
    revoke = reaction("revoked", member=1, batch=1, at=T0, block=20, value=1)
    dispute = reaction("disputed", member=1, at=T0, block=20, log_index=1, value=1)
    state = derive_state(IND, records, [revoke, dispute], at=T0 + 31 * DAY, policy=POLICY)
    assert state.disputed and not state.active
    # Revoked after the dispute, the record still made the dispute void.
    late_revoke = reaction("revoked", member=1, batch=1, at=T0, block=21, value=1)
    state = derive_state(IND, records, [dispute, late_revoke], at=T0 + 31 * DAY, policy=POLICY)
    assert not state.disputed and state.reporters == (3,)


def test_derive_state_judges_own_reactions_per_indicator() -> None:
    """Member 1 reported the identifier under epoch 1 (OTHER) and disputes member 3's record under epoch 2 (IND):
    judged on IND alone, as the digest's state of IND is, the dispute stands."""
    records = [record(reporter=1, batch=1, indicator=OTHER), record(reporter=3, batch=3, block=11)]
    dispute = reaction("disputed", member=1, at=T0, block=20, value=1)
    combined = derive_state(IND, records, [dispute], at=T0 + DAY, policy=POLICY)
    alone = derive_state(IND, records[1:], [dispute], at=T0 + DAY, policy=POLICY)
    assert combined.disputed and alone.disputed


def test_derive_state_endorsement_alone_gives_no_hit() -> None:
    endorse = reaction("endorsed", member=2, at=T0, block=20, value=90)
    state = derive_state(IND, [], [endorse], at=T0, policy=POLICY)
    assert not state.active and state.confidence == 0 and state.identifier_type is None


def test_derive_state_reactions_apply_to_their_own_epoch_indicator() -> None:
    old, new = record(reporter=1, batch=1, indicator=OTHER), record(reporter=2, batch=2, indicator=IND)
    revoke = reaction("revoked", member=1, batch=1, at=T0, block=20, indicator=IND)
    state = derive_state(IND, [old, new], [revoke], at=T0, policy=POLICY)
    assert state.reporters == (1, 2)


def test_derive_state_dispute_of_newest_epoch_lapses_old_epoch_copies() -> None:
    # Reporter 1 published the report under epoch 1 (OTHER) and republished it under epoch 2 (IND); member 3
    # disputed the hash it sees, IND, 31 days ago and reporter 1 never answered: neither copy may hit.
    old = record(reporter=1, batch=1, indicator=OTHER, block=10)
    new = record(reporter=1, batch=2, indicator=IND, block=11)
    dispute = reaction("disputed", member=3, at=T0, block=20, indicator=IND, value=1)
    state = derive_state(IND, [old, new], [dispute], at=T0 + 31 * DAY, policy=POLICY)
    assert not state.active and state.disputed and state.reporters == ()


def test_derive_state_reporter_answers_a_dispute_through_any_epoch_copy() -> None:
    old = record(reporter=1, batch=1, indicator=OTHER, block=10)
    new = record(reporter=1, batch=2, indicator=IND, block=11)
    dispute = reaction("disputed", member=3, at=T0, block=20, indicator=IND, value=1)
    confirm_old = reaction("confirmed", member=1, batch=1, at=T0 + DAY, block=21, indicator=OTHER)
    state = derive_state(IND, [old, new], [dispute, confirm_old], at=T0 + 31 * DAY, policy=POLICY)
    assert state.active and not state.disputed and state.reporters == (1,)
    # A confirmation by another member, or of a record that is not the reporter's, answers nothing.
    foreign = reaction("confirmed", member=2, batch=1, at=T0 + DAY, block=21, indicator=OTHER)
    state = derive_state(IND, [old, new], [dispute, foreign], at=T0 + 31 * DAY, policy=POLICY)
    assert not state.active


def test_derive_state_reports_categories_and_times() -> None:
    records = [record(reporter=1, batch=1, category=Category.money_mule, valid_from=T0),
               record(reporter=2, batch=2, category=Category.account_takeover, valid_from=T0 + DAY, block=11)]
    state = derive_state(IND, records, [], at=T0 + DAY, policy=POLICY)
    assert state.categories == ("account_takeover", "money_mule")
    assert (state.first_reported, state.last_reported) == (T0, T0 + DAY)


def test_canonical_is_deterministic_sorted_json() -> None:
    state = derive_state(IND, [record()], [], at=T0, policy=POLICY)
    again = derive_state(IND, [record()], [], at=T0, policy=POLICY)
    assert state.canonical() == again.canonical()
    decoded = json.loads(state.canonical())
    assert list(decoded) == sorted(decoded)
    assert decoded["indicator"] == "0x" + IND.hex() and decoded["confidence"] == 80
    assert b" " not in state.canonical()


@settings(max_examples=150, deadline=None)
@given(reported=st.lists(st.tuples(st.integers(1, 3), st.integers(0, 100), st.integers(0, 30)), min_size=1, max_size=4),
       endorsed=st.lists(st.tuples(st.integers(2, 6), st.integers(0, 100), st.integers(0, 30)), max_size=2),
       since_offset=st.integers(0, 5 * DAY), span=st.integers(0, 900 * DAY),
       half_life_days=st.sampled_from([1.0, 30.0, 365.0, 3650.0]))
def test_confidence_settled_since_is_the_second_confidence_reached_its_value(
        reported: list[tuple[int, int, int]], endorsed: list[tuple[int, int, int]], since_offset: int, span: int,
        half_life_days: float) -> None:
    """STIX `modified` follows the decay from this time: the confidence is its value at `at` from there on, and
    not in the second before (unless that is before `since`, when only decay changed anything)."""
    policy = StatePolicy(half_life_days=half_life_days, dispute_window_days=30)
    records = [record(reporter=member, batch=i + 1, confidence=confidence, valid_from=T0 + day * DAY,
                      valid_until=T0 + 4000 * DAY, block=10 + i)
               for i, (member, confidence, day) in enumerate(reported)]
    reactions = [reaction("endorsed", member=member, at=T0 + day * DAY, block=50 + i, value=confidence)
                 for i, (member, confidence, day) in enumerate(endorsed)]
    since = T0 + 31 * DAY + since_offset  # after every record's start and every endorsement
    at = since + span

    def confidence(when: int) -> int:
        return derive_state(IND, records, reactions, at=when, policy=policy).confidence

    state, sources = derive_state_and_sources(IND, records, reactions, at=at, policy=policy)
    settled = confidence_settled_since(sources, state.confidence, since=since, at=at, policy=policy)
    assert since <= settled <= at
    assert confidence(settled) == state.confidence
    assert settled == since or confidence(settled - 1) != state.confidence
