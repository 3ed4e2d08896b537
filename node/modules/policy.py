"""The bank's credit policy: scorecard, decision rules, velocity limits and ABS eligibility, from one TOML file.

`credit_policy_file` (a setting) names a TOML file whose tables override the defaults below key by key, so
a bank changes one number without restating the rest. docs/extensions.md documents every key. The defaults
are a reasonable starting point for unsecured consumer credit, not a validated model.
"""

from __future__ import annotations

import copy
import math
import tomllib
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from node.assets.loan_tape import SUPPORTED_CURRENCIES
from node.assets.records import Amortisation, LoanPurpose, LoanStatus
from node.errors import InvalidInput
from node.extensions.pipeline import decision_problem
from node.extensions.types import Decision
from node.modules.credit_platform import VELOCITY_KINDS

DEFAULT_POLICY: dict[str, Any] = {
    "scorecard": {
        "base": 650,
        "min": 0,
        "max": 1000,
        # Points per signal code (a code counts once however many identifiers raised it).
        "signals": {
            "alliance_hit": -400,
            "alliance_hit_low_confidence": -120,
            "alliance_hit_disputed": -80,
            "identifier_invalid": -250,
            "optional_identifier_invalid": -40,
            "resident_id_birth_date_mismatch": -200,
            "resident_id_region_mismatch": -80,
            "resident_id_sex_mismatch": -150,
            "applicant_underage": -600,
            "applicant_age_out_of_range": -100,
            "phone_not_mobile": -60,
            "phone_foreign": -40,
            "phone_virtual_operator": -50,
            "velocity_phone": -150,
            "velocity_device_id": -150,
            "velocity_bank_card": -150,
            "velocity_ip": -80,
        },
        # The bank's own inputs: bands [lower, upper) -> points; upper "inf" is open-ended.
        "inputs": {
            "debt_to_income": [[0, 0.3, 40], [0.3, 0.5, 0], [0.5, "inf", -120]],
            "months_at_employer": [[0, 6, -40], [6, 24, 0], [24, "inf", 30]],
            "monthly_income": [[0, 3000, -60], [3000, 10000, 0], [10000, "inf", 40]],
        },
    },
    "decision": {
        # Any of these signals decides by itself, whatever the score.
        "decline_on": ["alliance_hit", "applicant_underage", "identifier_invalid"],
        "review_on": ["velocity_phone", "velocity_device_id", "velocity_bank_card", "alliance_hit_disputed",
                      "alliance_hit_low_confidence", "alliance_unavailable", "alliance_mirror_stale",
                      "resident_id_birth_date_mismatch"],
        "approve_min_score": 620,
        "review_min_score": 520,
        # Limit and price by score, best band first; an approval is capped at its band's limit.
        "bands": [
            {"min_score": 720, "max_limit": "200000", "annual_rate_percent": "4.35"},
            {"min_score": 670, "max_limit": "100000", "annual_rate_percent": "7.20"},
            {"min_score": 620, "max_limit": "50000", "annual_rate_percent": "11.50"},
        ],
    },
    "identity": {
        "alliance_hit_min_confidence": 50,
        "min_age": 18,
        "max_age": 70,
        # Mainland mobile prefixes of virtual operators (MVNO), more often used for throw-away numbers.
        "virtual_operator_prefixes": ["162", "165", "167", "170", "171"],
    },
    "velocity": {
        "window_hours": 168,
        "max_applicants": 2,  # more distinct applicants than this on one phone/device/card/IP: a signal
        "kinds": ["phone", "device_id", "bank_card", "ip"],
    },
    "abs": {
        "eligible_statuses": ["current"],
        "max_borrower_share": 0.2,
        "max_region_share": 0.6,
        "purpose": "consumer",
        "amortisation_type": "annuity",
        "currency": "CNY",  # a pool's loan tape holds one currency: loans in another are not eligible
    },
}


@dataclass(frozen=True)
class Band:
    min_score: int
    max_limit: Decimal
    annual_rate_percent: Decimal


@dataclass(frozen=True)
class CreditPolicy:
    raw: dict[str, Any]

    @property
    def scorecard(self) -> dict[str, Any]:
        return dict(self.raw["scorecard"])

    @property
    def decision(self) -> dict[str, Any]:
        return dict(self.raw["decision"])

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.raw["identity"])

    @property
    def velocity(self) -> dict[str, Any]:
        return dict(self.raw["velocity"])

    @property
    def abs(self) -> dict[str, Any]:
        return dict(self.raw["abs"])

    def bands(self) -> list[Band]:
        bands = [Band(int(b["min_score"]), Decimal(str(b["max_limit"])), Decimal(str(b["annual_rate_percent"])))
                 for b in self.raw["decision"]["bands"]]
        return sorted(bands, key=lambda b: -b.min_score)


def load_policy(path: Path | None) -> CreditPolicy:
    """The defaults, overridden by the TOML file at `path` if given (InvalidInput if it cannot be read)."""
    policy = copy.deepcopy(DEFAULT_POLICY)
    if path is not None:
        try:
            overrides = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"credit policy file {path} cannot be read: {exc}", code="invalid_credit_policy") \
                from None
        unknown = set(overrides) - set(policy)
        if unknown:
            raise InvalidInput(f"credit policy file {path}: unknown tables {sorted(unknown)}",
                               code="invalid_credit_policy")
        misspelt = _unknown_keys(overrides)
        if misspelt:
            raise InvalidInput(f"credit policy file {path}: unknown keys {', '.join(misspelt)}",
                               code="invalid_credit_policy")
        _merge(policy, overrides)
        problem = _problem(policy)
        if problem:
            raise InvalidInput(f"credit policy file {path}: {problem}", code="invalid_credit_policy")
    return CreditPolicy(policy)


def _unknown_keys(overrides: dict[str, Any]) -> list[str]:
    """The keys of the file's tables that no module reads (`table.key`). A misspelt key (`aprove_min_score`) was
    merged and never read: the default stayed in force, and the bank believed its own value was. The codes of
    `scorecard.signals` and the inputs of `scorecard.inputs`, one level down, are the bank's to name."""
    found = []
    for table, keys in overrides.items():
        if isinstance(keys, dict):  # not a table: said by _problem, naming it
            found += [f"{table}.{key}" for key in keys if key not in DEFAULT_POLICY[table]]
    return sorted(found)


# The checks below convert each value as the modules do when they use it. A value they cannot use was found only
# by the first application: the module raised in its hook, and every application went to review
# (extension_failed) with nothing said when the node started.
def _problem(policy: dict[str, Any]) -> str | None:
    """What is wrong with a merged policy (naming the key), or None."""
    tables = [(name, policy[name]) for name in DEFAULT_POLICY]
    if isinstance(policy["scorecard"], dict):
        tables += [(f"scorecard.{k}", policy["scorecard"].get(k)) for k in ("signals", "inputs")]
    for name, table in tables:
        if not isinstance(table, dict):
            return f"{name} must be a table"
    if not (isinstance(policy["decision"]["bands"], list)
            and all(isinstance(band, dict) for band in policy["decision"]["bands"])):
        return "decision.bands must be a list of tables"
    for key, value, convert in _conversions(policy):
        try:
            convert(value)
        except (KeyError, TypeError, ValueError, ArithmeticError):  # ArithmeticError: Decimal's InvalidOperation
            return f"{key} = {value!r} cannot be used"
    empty = _empty_range(policy)
    if empty:
        return empty
    for table, key in (("decision", "decline_on"), ("decision", "review_on"),
                       ("identity", "virtual_operator_prefixes"), ("velocity", "kinds"),
                       ("abs", "eligible_statuses")):
        value = policy[table][key]
        if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            return f"{table}.{key} must be a list of strings"
    for table, key, names in (("velocity", "kinds", VELOCITY_KINDS),
                              ("abs", "eligible_statuses", tuple(LoanStatus.__members__))):
        # A misspelt name matched nothing: that velocity check was off, or no loan was ever eligible for a pool.
        unknown = [item for item in policy[table][key] if item not in names]
        if unknown:
            return f"{table}.{key}: unknown {', '.join(map(repr, unknown))}; known: {', '.join(names)}"
    currency = policy["abs"]["currency"]
    if not (isinstance(currency, str) and currency.upper() in SUPPORTED_CURRENCIES):
        return f"abs.currency = {currency!r} cannot be used; one of {', '.join(SUPPORTED_CURRENCIES)}"
    for key, values in (("purpose", LoanPurpose), ("amortisation_type", Amortisation)):
        value = policy["abs"][key]  # written into every pool's loan tape, which refused every row
        if not (isinstance(value, str) and value.lower() in values.__members__):
            return f"abs.{key} = {value!r} cannot be used; one of {', '.join(values.__members__)}"
    for band in CreditPolicy(policy).bands():  # as the pipeline checks the decision carrying them
        if decision_problem(Decision("approve", (), "policy", band.max_limit, band.annual_rate_percent)):
            return (f"decision.bands (from score {band.min_score}): max_limit must be 0 to 10^12 with at most 2 "
                    f"decimals and annual_rate_percent 0 to 100000 with at most 4")
    return None


def _conversions(policy: dict[str, Any]) -> list[tuple[str, Any, Callable[[Any], Any]]]:
    """(key, value, how the modules convert it) of every value they read."""
    found: list[tuple[str, Any, Callable[[Any], Any]]] = [
        (f"{table}.{key}", policy[table][key], int) for table, keys in (
            ("scorecard", ("base", "min", "max")), ("decision", ("approve_min_score", "review_min_score")),
            ("identity", ("alliance_hit_min_confidence", "min_age", "max_age")), ("velocity", ("max_applicants",)))
        for key in keys]
    found += [(f"velocity.{k}", policy["velocity"][k], partial(_number_within, above=0, upper=None))
              for k in ("window_hours",)]
    found += [(f"abs.{k}", policy["abs"][k], partial(_number_within, above=0, upper=1))
              for k in ("max_borrower_share", "max_region_share")]
    found += [(f"scorecard.signals.{code}", points, int) for code, points in policy["scorecard"]["signals"].items()]
    found += [(f"scorecard.inputs.{name}", bands, _input_bands)
              for name, bands in policy["scorecard"]["inputs"].items()]
    found += [(f"decision.bands[{i}]", band, _band) for i, band in enumerate(policy["decision"]["bands"])]
    return found


def _empty_range(policy: dict[str, Any]) -> str | None:
    """A range no value falls in (its bounds converted already), naming the key. Read without a word: with min_age
    above max_age every applicant was signalled underage or out of range (and declined); a scorecard input's band
    [lower, upper) with lower >= upper never gave its points, the bank believing it did."""
    min_age, max_age = int(policy["identity"]["min_age"]), int(policy["identity"]["max_age"])
    if min_age > max_age:
        return f"identity.min_age = {min_age} is above identity.max_age = {max_age}"
    for name, bands in policy["scorecard"]["inputs"].items():
        for lower, upper, _points in bands:
            if float(lower) >= float(upper):
                return (f"scorecard.inputs.{name}: band [{lower}, {upper}) holds no value; its lower bound must be "
                        "below its upper")
    return None


def _number_within(value: Any, *, above: float, upper: float | None) -> None:
    """A finite number over `above` and at most `upper`: `inf` or `nan` converted, and then every application's
    velocity check failed (OverflowError, ValueError: all went to review), or no concentration limit held."""
    number = float(value)
    if not (math.isfinite(number) and number > above and (upper is None or number <= upper)):
        raise ValueError(value)


def _input_bands(bands: Any) -> None:
    for lower, upper, points in bands:
        if math.isnan(float(lower)) or math.isnan(float(upper)):  # a band no value falls in: the input unscored
            raise ValueError(bands)
        int(points)


def _band(band: Any) -> None:
    int(band["min_score"]), Decimal(str(band["max_limit"])), Decimal(str(band["annual_rate_percent"]))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


_policies: weakref.WeakKeyDictionary[Any, CreditPolicy] = weakref.WeakKeyDictionary()


def policy_for(node: Any) -> CreditPolicy:
    """The node's policy, read once per NodeContext."""
    policy = _policies.get(node)
    if policy is None:
        path = node.settings.credit_policy_file
        # Relative to the data dir, like the node's other files (its SQLite store): relative to the working
        # directory, `node start` run from elsewhere (a service manager's /) found no file, or another one.
        policy = _policies[node] = load_policy(node.settings.data_dir / path if path is not None else None)
    return policy
