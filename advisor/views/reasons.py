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


def why_not_runner_up(rec: Recommendation) -> str:
    """The runner-up's gaps as one sentence ('DPO lost on risk = high (+0 vs +2), ...'), or ''."""
    if not rec.runner_up_gaps:
        return ""
    parts = [f"{g.factor} ({g.runner_up:+g} vs {g.winner:+g})" for g in rec.runner_up_gaps]
    return f"{label(rec.ranking[1].method)} lost on " + ", ".join(parts)


def rationale(rec: Recommendation) -> list[str]:
    """The sentences a review board reads: why the winner, why not the runner-up, the staged
    path and what to do beside the method."""
    top, second = rec.ranking[0], rec.ranking[1]
    lines = [
        f"{label(top.method)} ranks first with {top.score:g} points, "
        f"{top.score - second.score:g} ahead of {label(second.method)} ({second.score:g})."
    ]
    best = sorted((e for e in top.effects if e.points > 0), key=lambda e: -e.points)[:3]
    if best:
        lines.append("It wins on " + "; ".join(f"{e.factor} ({e.why})" for e in best) + ".")
    lost = why_not_runner_up(rec)
    if lost:
        lines.append(f"Runner-up: {lost}.")
    if rec.hybrid_path:
        lines.append(f"Hybrid path: {rec.hybrid_path}")
    return lines + rec.notes


def recommendation_json(rec: Recommendation) -> dict[str, Any]:
    """`recommend --json`: the recommendation's own dump with each ranking entry's effects as
    records (`effects`) and as sentences (`reasons`), and the `rationale` and
    `why_not_runner_up` sentences the contract promises."""
    dump = rec.model_dump(mode="json")
    for row, entry in zip(rec.ranking, dump["ranking"], strict=True):
        entry["reasons"] = reasons(row)
    payload = {"method": dump.pop("method"), "ranking": dump.pop("ranking")}
    payload["rationale"] = rationale(rec)
    payload["caveats"] = dump.pop("caveats")
    payload["confidence"] = dump.pop("confidence")
    payload["why_not_runner_up"] = why_not_runner_up(rec)
    return payload | dump


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
