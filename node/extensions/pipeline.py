"""The application pipeline: every extension's say on one application, in order, with a trail of who said what.

Stages (hooks): received -> identity signals -> risk signals -> risk score (first answer) -> credit decision
(first answer). Any extension failing in any stage (exception, timeout, an answer of the wrong type) makes
the outcome "review" with the reason `extension_failed:<module>`: a decision that some module could not
contribute to is not one to act on automatically. The trail records every stage's modules, time and
failures, every signal, the score with its reason codes and the decision.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from node.extensions.manager import HookFailure, HookOutcome, extensions_for
from node.extensions.types import OUTCOMES, Application, Decision, Reason, RiskScore, Signal
from node.ledger.identifiers import InvalidIdentifier, normalise

# What the store keeps of a decision (node/store/application_tables.py): the score in an INTEGER column, the limit
# and the rate as text of at most 32 and 16 characters; a booking keeps the limit in minor units (BIGINT) and the
# rate in millionths (INTEGER). The bounds below keep both within those (1000000000000.00 and 100000.0000); an
# answer outside them failed when stored or booked, after the pipeline ran.
MAX_SCORE = 2**31 - 1
MAX_LIMIT = Decimal("1e12")  # as an application's amount (credit_platform.MAX_AMOUNT)
MAX_RATE_PERCENT = Decimal(100_000)


@dataclass
class PipelineResult:
    decision: Decision
    score: RiskScore | None
    signals: list[Signal]
    failures: list[HookFailure]
    stages: list[dict[str, Any]] = field(default_factory=list)

    def trail(self) -> dict[str, Any]:
        return {"stages": self.stages, "signals": [s.to_json() for s in self.signals],
                "score": self.score.to_json() if self.score else None, "decision": self.decision.to_json(),
                "failures": [f.to_json() for f in self.failures]}


def run_pipeline(node: Any, application: Application) -> PipelineResult:
    extensions = extensions_for(node)
    stages: list[dict[str, Any]] = []
    failures: list[HookFailure] = []

    def record(stage: str, outcome: HookOutcome) -> HookOutcome:
        stages.append({"stage": stage, "answered": [module for module, _ in outcome.results],
                       "elapsed_ms": outcome.elapsed_ms, "failures": [f.to_json() for f in outcome.failures]})
        failures.extend(outcome.failures)
        return outcome

    personal = _PersonalValues.of(application)
    record("received", extensions.call("alliance_application_received", node=node, application=application))
    # A signal list is checked whole, in the call: its failure is the hook's, in its stage, as a score's is.
    identity = _signals(record("identity", extensions.call(
        "alliance_identity_signals", expect=list, check=personal.signals_problem, node=node,
        application=application)))
    risk = _signals(record("risk", extensions.call(
        "alliance_risk_signals", expect=list, check=personal.signals_problem, node=node, application=application,
        identity_signals=list(identity))))
    signals = identity + risk
    scored = record("score", extensions.call(
        "alliance_risk_score", firstresult=True, expect=RiskScore,
        check=lambda answer: score_problem(answer) or personal.problem(answer.to_json()),
        node=node, application=application, signals=list(signals)))
    score = scored.first[1] if scored.first else None
    decided = record("decision", extensions.call(
        "alliance_credit_decision", firstresult=True, expect=Decision,
        check=lambda answer: decision_problem(answer) or personal.problem(answer.to_json()),
        node=node, application=application, signals=list(signals), score=score))
    decision = decided.first[1] if decided.first else Decision("review", ("no_decision",), "pipeline",
                                                                detail="no extension decided")
    if failures:
        failed = list(dict.fromkeys(f.module for f in failures))
        decision = Decision("review", (*(f"extension_failed:{m}" for m in failed), *decision.reasons), "pipeline",
                            detail=f"extension(s) {', '.join(failed)} failed; without them the outcome would "
                                   f"have been {decision.outcome} (by {decision.module})")
    return PipelineResult(decision, score, signals, failures, stages)


_DIGITS = re.compile(r"[0-9]+")


class _PersonalValues:
    """The applicant's identifiers as given and in canonical form: what an extension's answer must not carry.

    Answers are kept in the application's trail, which holds codes, counts and module names only (docs/extensions.md,
    "Personal data"); a module echoing the applicant's phone number into a signal's data would store it in clear.
    """

    MIN_LENGTH = 6  # shorter strings (an IP's fragment, say) would match innocent text

    def __init__(self, values: set[str]) -> None:
        # A value of digits only matches a whole run of digits: a short numeric device id ("100000") matched inside
        # a limit of 1000000, and the decision was refused as holding personal data (the application went to review).
        forms = sorted((v for v in values if len(v) >= self.MIN_LENGTH), key=len, reverse=True)
        self._pattern = re.compile("|".join(f"(?<![0-9]){v}(?![0-9])" if _DIGITS.fullmatch(v) else re.escape(v)
                                            for v in forms)) if forms else None

    @classmethod
    def of(cls, application: Application) -> _PersonalValues:
        values: set[str] = set()
        for kind, raw in application.applicant.identifiers():
            values.add(raw.strip())
            try:
                canonical = normalise(kind, raw)
            except InvalidIdentifier:
                continue
            values.update((canonical, "".join(ch for ch in canonical if ch.isdigit()), canonical.removeprefix("+86")))
        return cls(values)

    def problem(self, answer: Any) -> str | None:
        if self._pattern is None:
            return None
        text = json.dumps(answer, ensure_ascii=False, default=str)
        return "holds_personal_data" if self._pattern.search(text) else None

    def signals_problem(self, answer: list[Any]) -> str | None:
        """The first problem of a signal list: an item that is not a well-formed Signal, or one carrying any of the
        applicant's identifiers."""
        return next((p for p in (signal_problem(s) or self.problem(s.to_json()) for s in answer) if p), None)


def _signals(outcome: HookOutcome) -> list[Signal]:
    """The Signal answers of a stage (the call left out every list with a problem)."""
    return [signal for _, answer in outcome.results for signal in answer]


# An extension's answer is checked field by field before anything of it is used or stored: dataclasses do not
# check their fields' types, and a value the trail cannot hold as JSON, or the store in its column, was an HTTP
# 500 with the application left undecided. Each function answers the problem as a short code, or None.
def signal_problem(signal: Any) -> str | None:
    if not isinstance(signal, Signal):
        return "not_a_signal"
    if not (_text(signal.code, nonempty=True) and _text(signal.module) and _text(signal.detail)):
        return "signal_field_type"
    if not isinstance(signal.data, dict) or not _json(signal.data):
        return "signal_data_not_json"
    return None


def score_problem(score: RiskScore) -> str | None:
    if not (_integer(score.score) and -MAX_SCORE <= score.score <= MAX_SCORE):
        return "score_not_an_integer_in_range"
    if not (_text(score.module) and isinstance(score.reasons, tuple | list)
            and all(_reason_ok(r) for r in score.reasons)):
        return "score_reasons"
    return None


def decision_problem(decision: Decision) -> str | None:
    if decision.outcome not in OUTCOMES:
        return "unknown_outcome"
    if not (isinstance(decision.reasons, tuple | list) and all(_text(r, nonempty=True) for r in decision.reasons)
            and _text(decision.module) and _text(decision.detail)):
        return "decision_field_type"
    if decision.outcome == "approve" and (decision.limit is None or decision.annual_rate_percent is None):
        # Booking takes the requested amount for a missing limit and 0 % for a missing rate: an approval without
        # terms was booked as an interest-free loan, and went into pools' loan tapes so.
        return "approve_without_terms"
    if decision.limit is not None and not _decimal_within(decision.limit, MAX_LIMIT, places=2):
        return "limit_out_of_range"
    if decision.annual_rate_percent is not None and not _decimal_within(decision.annual_rate_percent,
                                                                        MAX_RATE_PERCENT, places=4):
        return "annual_rate_out_of_range"
    return None


def _text(value: Any, *, nonempty: bool = False) -> bool:
    return isinstance(value, str) and (bool(value) or not nonempty)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reason_ok(reason: Any) -> bool:
    return (isinstance(reason, Reason) and _text(reason.code, nonempty=True) and _integer(reason.points)
            and _text(reason.detail))


def _json(data: Any) -> bool:
    try:
        json.dumps(data, allow_nan=False)  # the API's answers refuse NaN too
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _decimal_within(value: Any, upper: Decimal, *, places: int) -> bool:
    """A finite Decimal in [0, upper] with no more than `places` decimals that are not zero."""
    if not isinstance(value, Decimal) or not value.is_finite() or not 0 <= value <= upper:
        return False
    return value == value.quantize(Decimal(10) ** -places)
