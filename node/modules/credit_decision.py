"""Intelligent credit system: approve / review / decline from configured rules, with limit, price and reasons.

Rules (`[decision]` of the credit policy), first match wins:
1. a signal listed in `decline_on` (e.g. an alliance blacklist hit) declines;
2. a score below `review_min_score` declines;
3. a signal in `review_on` (velocity, a disputed hit, a stale mirror, ...) or a score below
   `approve_min_score` sends to review;
4. otherwise approve, with the limit and annual rate of the best band the score reaches; a requested amount
   above the band's limit is approved at the limit (`limit_reduced`).
The built-in runs last (`trylast`), so a bank's own decision extension answers first when it wants to.
"""

from __future__ import annotations

from typing import Any

from node.extensions.hookspecs import hookimpl
from node.extensions.types import Application, Decision, RiskScore, Signal
from node.modules.policy import CreditPolicy, policy_for

NAME = "credit_decision"


@hookimpl(trylast=True)
def alliance_credit_decision(node: Any, application: Application, signals: list[Signal],
                             score: RiskScore | None) -> Decision:
    return decide(policy_for(node), application, signals, score)


def decide(policy: CreditPolicy, application: Application, signals: list[Signal], score: RiskScore | None) -> Decision:
    rules = policy.decision
    codes = list(dict.fromkeys(s.code for s in signals))
    score_reasons = tuple(r.code for r in score.reasons if r.points < 0) if score else ()
    declining = [c for c in codes if c in rules["decline_on"]]
    if declining:
        return Decision("decline", (*declining, *(c for c in score_reasons if c not in declining)), NAME,
                        detail="a declining signal: " + ", ".join(declining))
    if score is None:
        return Decision("review", ("no_score",), NAME, detail="no module scored the application")
    if score.score < int(rules["review_min_score"]):
        return Decision("decline", ("score_below_review_min", *score_reasons), NAME,
                        detail=f"score {score.score} < {rules['review_min_score']}")
    reviewing = [c for c in codes if c in rules["review_on"]]
    if reviewing or score.score < int(rules["approve_min_score"]):
        reasons = (*reviewing, *([] if reviewing else ["score_below_approve_min"]))
        return Decision("review", (*reasons, *(c for c in score_reasons if c not in reasons)), NAME,
                        detail=f"score {score.score}")
    band = next((b for b in policy.bands() if score.score >= b.min_score), None)
    if band is None:
        return Decision("review", ("no_band_for_score",), NAME, detail=f"score {score.score}")
    limit = min(application.amount, band.max_limit)
    reasons = ("score_approved", *(["limit_reduced"] if limit < application.amount else []))
    return Decision("approve", reasons, NAME, limit=limit, annual_rate_percent=band.annual_rate_percent,
                    detail=f"score {score.score} in the band from {band.min_score}")
