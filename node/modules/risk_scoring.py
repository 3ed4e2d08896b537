"""Big-data risk control: a documented, configurable scorecard that turns signals into a score with reasons.

score = base + sum over distinct signal codes of `scorecard.signals[code]` (the largest penalty once per code)
      + for each of the bank's inputs the points of the band [lower, upper) its value falls in
clamped to [min, max]. Reason codes are the signal codes and `input_<name>`, each with its points, largest
penalty first. Unknown signal codes score 0 but stay in the reasons, so a plugin's signal is visible.
"""

from __future__ import annotations

from typing import Any

from node.extensions.hookspecs import hookimpl
from node.extensions.types import Application, Reason, RiskScore, Signal
from node.modules.policy import policy_for

NAME = "risk_scoring"


@hookimpl(trylast=True)
def alliance_risk_score(node: Any, application: Application, signals: list[Signal]) -> RiskScore:
    return score_application(policy_for(node).scorecard, application, signals)


def score_application(card: dict[str, Any], application: Application, signals: list[Signal]) -> RiskScore:
    points: dict[str, Reason] = {}
    for signal in signals:
        value = int(card["signals"].get(signal.code, 0))
        held = points.get(signal.code)
        if held is None or value < held.points:
            points[signal.code] = Reason(signal.code, value, signal.detail)
    for name, bands in card["inputs"].items():
        if name not in application.bank_inputs:
            continue
        given = float(application.bank_inputs[name])
        for lower, upper, band_points in bands:
            if float(lower) <= given < float(upper):
                points[f"input_{name}"] = Reason(f"input_{name}", int(band_points), f"{name} in [{lower}, {upper})")
                break
    total = int(card["base"]) + sum(r.points for r in points.values())
    score = max(int(card["min"]), min(int(card["max"]), total))
    return RiskScore(score, tuple(sorted(points.values(), key=lambda r: (r.points, r.code))), NAME)
