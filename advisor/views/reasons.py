"""The engine's effects in words: the 'factor → +2: why' sentences every view shows.

The ranking carries each method's effects as data (`ScoreEffect`); the Rich view, the decision
and session records, the wizard and `recommend --json`'s `reasons` all render them here, so
they say the same thing. Plain strings, no Rich: any view can use them.
"""

from __future__ import annotations

from typing import Any

from advisor.decision.decide import MethodScore, Recommendation
from advisor.decision.method_choice import override
from advisor.decision.names import label
from advisor.decision.rules import ScoreEffect, strongest_reasons
from planner.specs import Method


def sentence(effect: ScoreEffect) -> str:
    """One effect as a 'factor → +2: why' sentence (the why names its paper where it cites one)."""
    return f"{effect.factor} → {effect.points:+g}: {effect.why}"


def reasons(row: MethodScore) -> list[str]:
    """Every effect on one ranked method's score, as sentences in the rules' order."""
    return [sentence(e) for e in row.effects]


def strongest(row: MethodScore, n: int = 3) -> list[str]:
    """The n effects that moved the score most, as sentences in their listed order."""
    return [sentence(e) for e in strongest_reasons(row.effects, n)]


def recommendation_json(rec: Recommendation) -> dict[str, Any]:
    """`recommend --json`: the recommendation's own dump, each ranking entry's effects as
    records (`effects`) and, for readers of the earlier contract, as sentences (`reasons`)."""
    payload = rec.model_dump(mode="json")
    for row, entry in zip(rec.ranking, payload["ranking"], strict=True):
        entry["reasons"] = reasons(row)
    return payload


def override_warning(rec: Recommendation, method: Method) -> str | None:
    """Why the engine ranked `method` below the winner, or None when it is the winner."""
    case = override(rec, method)
    if case is None:
        return None
    parts = [
        f"{label(method)} ranks #{case.place} with {case.score:g} points, "
        f"{case.winner_score - case.score:g} behind {label(case.winner)} ({case.winner_score:g})."
    ]
    if case.against:
        parts.append("Against it: " + "; ".join(sentence(e) for e in case.against) + ".")
    if case.no_fit is not None:
        parts.append(f"Compute: {case.no_fit.summary}.")
    return " ".join(parts)
