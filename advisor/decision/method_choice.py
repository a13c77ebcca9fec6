"""Choosing a method other than the recommended one: the engine's case against it, as data.

The case is read off the recommendation (scores, effects and compute verdicts the engine
already gave), so the wizard and the decision record say the same thing; the views put it
into words (`advisor.views.reasons.override_warning`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from advisor.decision.compute_check import ComputeCheck
from advisor.decision.decide import Recommendation
from advisor.decision.rules import ScoreEffect
from planner.specs import Method


class Override(BaseModel):
    """Why the engine ranked a chosen method below the winner."""

    method: Method
    place: int = Field(description="its place in the ranking, 1 being the winner")
    score: float
    winner: Method
    winner_score: float
    against: list[ScoreEffect] = Field(
        description="its most negative effects, most negative first (two at most)"
    )
    no_fit: ComputeCheck | None = Field(
        default=None, description="the compute check, where the method does not fit"
    )


def override(rec: Recommendation, method: Method, limit: int = 2) -> Override | None:
    """The case against choosing `method`, or None when it is the winner."""
    if method is rec.method:
        return None
    methods = [row.method for row in rec.ranking]
    top, chosen = rec.ranking[0], rec.ranking[methods.index(method)]
    against = sorted((e for e in chosen.effects if e.points < 0), key=lambda e: e.points)[:limit]
    check = next((c for c in rec.compute if c.method is method), None)
    return Override(
        method=method,
        place=methods.index(method) + 1,
        score=chosen.score,
        winner=top.method,
        winner_score=top.score,
        against=against,
        no_fit=check if check is not None and not check.fits else None,
    )
