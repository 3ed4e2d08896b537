"""Intelligent identity recognition: is the applicant who they claim to be, and does the alliance know them?

Signals (codes are the scorecard's keys, docs/extensions.md):
- validation: `identifier_invalid` (resident ID or phone cannot be normalised), `optional_identifier_invalid`;
- consistency of the resident ID with the application: `resident_id_birth_date_mismatch`,
  `resident_id_region_mismatch` (province of the ID against the declared region), `resident_id_sex_mismatch`,
  `applicant_underage`, `applicant_age_out_of_range`;
- phone plausibility: `phone_foreign`, `phone_not_mobile`, `phone_virtual_operator`;
- velocity: `velocity_<kind>` when more than `velocity.max_applicants` distinct applicants used the same
  phone, device, card or IP within `velocity.window_hours` (a fraud ring shares them);
- alliance: `alliance_hit` per identifier the ledger holds (confidence at least
  `identity.alliance_hit_min_confidence`), `alliance_hit_low_confidence`, `alliance_hit_disputed`,
  `alliance_mirror_stale`, `alliance_unavailable` (no key yet).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import phonenumbers
from sqlalchemy import and_, or_, select

from node.errors import AllianceError
from node.extensions.hookspecs import hookimpl
from node.extensions.types import Application, Signal
from node.ledger.checks import check_identity
from node.ledger.identifiers import InvalidIdentifier, day_in_china, normalise, resident_id_facts
from node.modules.credit_platform import fingerprint_rows
from node.modules.policy import policy_for
from node.store.application_tables import ApplicationFingerprint

NAME = "identity_recognition"
REQUIRED = ("cn_resident_id", "phone")


@hookimpl
def alliance_identity_signals(node: Any, application: Application) -> list[Signal]:
    policy = policy_for(node)
    identity = policy.identity
    signals: list[Signal] = []
    canonical: dict[str, str] = {}
    for kind, raw in application.applicant.identifiers():
        try:
            canonical[kind] = normalise(kind, raw)
        except InvalidIdentifier as exc:
            code = "identifier_invalid" if kind in REQUIRED else "optional_identifier_invalid"
            signals.append(Signal(code, NAME, f"{kind}: {exc.code}", {"type": kind, "reason": str(exc.code)}))
    # Ages count in days in China, as the resident ID's birth date does: by the UTC day, an applicant was a day
    # younger from midnight to 08:00 in Beijing (declined as underage on their 18th birthday).
    received = day_in_china(application.received_at or 0)
    if "cn_resident_id" in canonical:
        signals += _consistency(application, canonical["cn_resident_id"], received, identity)
    if "phone" in canonical:
        signals += _phone(canonical["phone"], identity)
    signals += _velocity(node, application, policy.velocity)
    signals += _alliance(node, application, canonical, identity)
    return signals


def _consistency(application: Application, resident_id: str, on: date, identity: dict[str, Any]) -> list[Signal]:
    facts = resident_id_facts(resident_id)
    declared = application.applicant
    found = []
    if declared.birth_date is not None and declared.birth_date != facts.birth_date:
        found.append(Signal("resident_id_birth_date_mismatch", NAME,
                            "the declared birth date differs from the resident ID's"))
    if declared.region_code and declared.region_code[:2] != facts.region_code[:2]:
        found.append(Signal("resident_id_region_mismatch", NAME,
                            "the declared region is in another province than the resident ID's",
                            {"declared_province": declared.region_code[:2], "id_province": facts.region_code[:2]}))
    if declared.sex is not None and declared.sex != facts.sex:
        found.append(Signal("resident_id_sex_mismatch", NAME, "the declared sex differs from the resident ID's"))
    age = on.year - facts.birth_date.year - ((on.month, on.day) < (facts.birth_date.month, facts.birth_date.day))
    if age < int(identity["min_age"]):
        found.append(Signal("applicant_underage", NAME, f"applicant is {age}", {"age": age}))
    elif age > int(identity["max_age"]):
        found.append(Signal("applicant_age_out_of_range", NAME, f"applicant is {age}", {"age": age}))
    return found


def _phone(e164: str, identity: dict[str, Any]) -> list[Signal]:
    number = phonenumbers.parse(e164)
    if number.country_code != 86:
        return [Signal("phone_foreign", NAME, "not a mainland China number", {"country_code": number.country_code})]
    kind = phonenumbers.number_type(number)
    if kind not in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return [Signal("phone_not_mobile", NAME, "not a mobile number")]
    national = str(number.national_number)
    if any(national.startswith(prefix) for prefix in identity["virtual_operator_prefixes"]):
        return [Signal("phone_virtual_operator", NAME, "a virtual operator's number range",
                       {"prefix": national[:3]})]
    return []


def _velocity(node: Any, application: Application, velocity: dict[str, Any]) -> list[Signal]:
    """Distinct applicants per shared identifier in the window: those stored, plus this application's."""
    mine = [row for row in fingerprint_rows(node, application) if row["kind"] in velocity["kinds"]]
    if not mine:
        return []
    since = (application.received_at or 0) - int(float(velocity["window_hours"]) * 3600)
    F = ApplicationFingerprint
    query = (select(F.kind, F.applicant_fingerprint).distinct()
             .where(F.seen_at >= since, or_(*(and_(F.kind == r["kind"], F.fingerprint == r["fingerprint"])
                                              for r in mine))))
    applicants: dict[str, set[bytes]] = {row["kind"]: {row["applicant_fingerprint"]} for row in mine}
    with node.store.session() as session:
        for kind, person in session.execute(query):
            applicants[kind].add(bytes(person))
    limit = int(velocity["max_applicants"])
    return [Signal(f"velocity_{kind}", NAME, f"{len(people)} applicants used the same {kind} within "
                                              f"{velocity['window_hours']} h",
                   {"type": kind, "applicants": len(people), "window_hours": velocity["window_hours"]})
            for kind, people in sorted(applicants.items()) if len(people) > limit]


def _alliance(node: Any, application: Application, canonical: dict[str, str],
              identity: dict[str, Any]) -> list[Signal]:
    pairs = list(canonical.items())
    if not pairs:
        return []
    try:
        outcome = check_identity(node, pairs, f"application:{application.application_id}")
    except AllianceError as exc:  # no alliance key yet: the blacklist could not be consulted
        return [Signal("alliance_unavailable", NAME, exc.code)]
    found = []
    minimum = int(identity["alliance_hit_min_confidence"])
    for result in outcome.results:
        if not result.hit:
            continue
        data = {"type": result.identifier_type, "categories": list(result.categories),
                "reporter_count": result.reporter_count, "confidence": result.confidence,
                "indicator": "0x" + result.indicator.hex() if result.indicator else None}
        code = ("alliance_hit_disputed" if result.disputed else
                "alliance_hit_low_confidence" if result.confidence < minimum else "alliance_hit")
        found.append(Signal(code, NAME, f"{result.identifier_type} reported by {result.reporter_count} member(s) "
                                        f"as {', '.join(result.categories)}", data))
    if outcome.mirror.stale:
        found.append(Signal("alliance_mirror_stale", NAME, "the ledger mirror is behind the chain",
                            {"as_of_block": outcome.mirror.as_of_block, "lag_s": outcome.mirror.lag_s}))
    return found
