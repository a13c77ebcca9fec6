"""The recommendation as a Markdown decision record a lead can forward to a review board."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from advisor.decision.decide import Recommendation
from advisor.decision.names import label
from advisor.decision.output_file import write_text
from advisor.views.reasons import rationale, reasons, strongest, why_not_runner_up

FORCE_HINT = "pass --force to overwrite it"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _list(lines: list[str]) -> list[str]:
    return [f"- {line}" for line in lines]


def decision_record(
    rec: Recommendation, *, source: str | None = None, today: dt.date | None = None
) -> str:
    """The decision record: context, decision, options, reasons, risks, evaluation, next step."""
    today = today or dt.date.today()
    top, runner_up = rec.ranking[0], rec.ranking[1]
    out = [
        f"# Decision record: align with {label(rec.method)}",
        "",
        f"- Date: {today.isoformat()}",
        f"- Decision: **{label(rec.method)}** (confidence: {rec.confidence.value})",
        f"- Runner-up: {label(runner_up.method)} ({runner_up.score:g} vs {top.score:g} points)",
    ]
    if source:
        out.append(f"- Interview answers: `{source}`")
    out += ["", "## Context", "", "| question | answer |", "|---|---|"]
    for field, value in rec.answers.model_dump(mode="json").items():
        if value is not None:
            out.append(
                f"| {field} | {_cell(str(value).lower() if isinstance(value, bool) else str(value))} |"
            )
    out += ["", "## Decision", "", *_list(rationale(rec))]
    out += [
        "",
        "## Options considered",
        "",
        "| # | method | score | strongest reasons |",
        "|---|---|---|---|",
    ]
    for place, row in enumerate(rec.ranking, start=1):
        strongest_three = "; ".join(strongest(row))
        out.append(f"| {place} | {label(row.method)} | {row.score:g} | {_cell(strongest_three)} |")
    out += ["", f"## Why {label(rec.method)}", "", *_list(reasons(top))]
    out += ["", f"## Why not {label(runner_up.method)}", ""]
    lost = why_not_runner_up(rec)
    if lost:
        out += [f"{lost}.", ""]
    out += _list(reasons(runner_up))
    if rec.compute:
        first = rec.compute[0]
        out += [
            "",
            f"## Compute check: {first.model} on {first.gpus}× {first.gpu}",
            "",
            "| method | verdict | GiB per GPU (needed / on card) | would take |",
            "|---|---|---|---|",
        ]
        for check in rec.compute:
            verdict = f"fits as {check.setup.value}" if check.setup else "does not fit"
            numbers = ", ".join(
                f"{t.tuning.value} {t.per_gpu_peak_gib:.1f} / {t.capacity_gib:.1f}"
                for t in check.tried
            )
            take = "; ".join(check.would_take) or "—"
            out.append(f"| {label(check.method)} | {verdict} | {numbers} | {_cell(take)} |")
    out += ["", "## Risks and caveats", "", *_list(rec.caveats)]
    out += ["", "## Evaluation plan", "", *_list(rec.evaluation_plan)]
    out += ["", "## Next step", "", "```", rec.next_command, "```", ""]
    return "\n".join(out)


def write_decision_record(
    rec: Recommendation, path: str | Path, source: str | None = None, *, overwrite: bool = False
) -> Path:
    """Write the decision record to `path`; an existing file is kept unless `overwrite` (the
    error says to pass --force), and a path that cannot be written is the user's error."""
    text = decision_record(rec, source=source)
    return write_text(path, text, "--report", overwrite=overwrite, hint=FORCE_HINT)
