"""Choosing a method other than the recommended one: the engine's own warning about it.

The warning is read off the recommendation (scores, reasons and compute verdicts the engine
already gave), so the wizard and the decision record say the same thing.
"""

from __future__ import annotations

from advisor.decision.decide import Recommendation
from advisor.decision.names import label
from advisor.decision.rules import reason_points
from planner.specs import Method


def override_warning(rec: Recommendation, method: Method) -> str | None:
    """Why the engine ranked `method` below the winner, or None when it is the winner."""
    if method is rec.method:
        return None
    rows = {row.method: row for row in rec.ranking}
    place = [row.method for row in rec.ranking].index(method) + 1
    top, chosen = rows[rec.method], rows[method]
    against = sorted(
        (r for r in chosen.reasons if reason_points(r) < 0), key=lambda r: reason_points(r)
    )[:2]
    parts = [
        f"{label(method)} ranks #{place} with {chosen.score:g} points, "
        f"{top.score - chosen.score:g} behind {label(rec.method)} ({top.score:g})."
    ]
    if against:
        parts.append("Against it: " + "; ".join(against) + ".")
    check = next((c for c in rec.compute if c.method is method), None)
    if check is not None and not check.fits:
        parts.append(f"Compute: {check.summary}.")
    return " ".join(parts)
