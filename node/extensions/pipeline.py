"""The application pipeline: every extension's say on one application, in order, with a trail of who said what.

Stages (hooks): received -> identity signals -> risk signals -> risk score (first answer) -> credit decision
(first answer). Any extension failing in any stage (exception, timeout, an answer of the wrong type) makes
the outcome "review" with the reason `extension_failed:<module>`: a decision that some module could not
contribute to is not one to act on automatically. The trail records every stage's modules, time and
failures, every signal, the score with its reason codes and the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.extensions.manager import HookFailure, HookOutcome, extensions_for
from node.extensions.types import Application, Decision, RiskScore, Signal


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

    record("received", extensions.call("alliance_application_received", node=node, application=application))
    identity = _signals(record("identity", extensions.call(
        "alliance_identity_signals", expect=list, node=node, application=application)), failures)
    risk = _signals(record("risk", extensions.call(
        "alliance_risk_signals", expect=list, node=node, application=application,
        identity_signals=list(identity))), failures)
    signals = identity + risk
    scored = record("score", extensions.call("alliance_risk_score", firstresult=True, expect=RiskScore,
                                             node=node, application=application, signals=list(signals)))
    score = scored.first[1] if scored.first else None
    decided = record("decision", extensions.call("alliance_credit_decision", firstresult=True, expect=Decision,
                                                 node=node, application=application, signals=list(signals),
                                                 score=score))
    decision = decided.first[1] if decided.first else Decision("review", ("no_decision",), "pipeline",
                                                                detail="no extension decided")
    if failures:
        failed = list(dict.fromkeys(f.module for f in failures))
        decision = Decision("review", (*(f"extension_failed:{m}" for m in failed), *decision.reasons), "pipeline",
                            detail=f"extension(s) {', '.join(failed)} failed; without them the outcome would "
                                   f"have been {decision.outcome} (by {decision.module})")
    return PipelineResult(decision, score, signals, failures, stages)


def _signals(outcome: HookOutcome, failures: list[HookFailure]) -> list[Signal]:
    """The Signal answers of a stage; an answer list holding anything else is that module's failure."""
    found: list[Signal] = []
    for module, answer in outcome.results:
        if all(isinstance(s, Signal) for s in answer):
            found.extend(answer)
        else:
            failure = HookFailure(module, "signals", "bad_answer:not_a_signal")
            outcome.failures.append(failure)
            failures.append(failure)
    return found
