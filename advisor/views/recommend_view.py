"""The recommendation drawn with Rich: the choice, its reasons, the runner-up, what to do next."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from advisor.decision.decide import Confidence, Recommendation
from advisor.decision.names import label
from advisor.views.reasons import rationale, reasons, strongest, why_not_runner_up

CONFIDENCE_STYLE = {Confidence.high: "green", Confidence.medium: "yellow", Confidence.low: "red"}


def headline(rec: Recommendation) -> Panel:
    """The chosen method, the confidence, and the one-line verdict."""
    title = Text.assemble(
        ("Recommended: ", "bold"),
        (label(rec.method), "bold cyan"),
        ("   confidence: ", "bold"),
        (rec.confidence.value, f"bold {CONFIDENCE_STYLE[rec.confidence]}"),
    )
    return Panel(Group(title, Text(rationale(rec)[0])), border_style="cyan")


def ranking_table(rec: Recommendation) -> Table:
    """Every method's score, best first, with its strongest reason."""
    table = Table(title="Ranking", title_justify="left", expand=True)
    table.add_column("#", justify="right", width=2)
    table.add_column("method", style="bold", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("strongest reason")
    for place, row in enumerate(rec.ranking, start=1):
        table.add_row(
            str(place),
            label(row.method),
            f"{row.score:g}",
            strongest(row, 1)[0] if row.effects else "",
        )
    return table


def bullets(title: str, lines: list[str], style: str = "") -> Panel:
    """A titled panel of bullet points."""
    body = Table.grid(padding=(0, 1))
    body.add_column(width=1)
    body.add_column(ratio=1)  # wrapped lines hang under the text, not the bullet
    for line in lines:
        body.add_row("•", Text(line))
    return Panel(body, title=title, title_align="left", border_style=style or "none")


def reasons_panel(rec: Recommendation) -> Panel:
    """Every factor → effect sentence behind the winner's score."""
    return bullets(f"Why {label(rec.method)}", reasons(rec.ranking[0]), "green")


def compute_table(rec: Recommendation) -> Table | None:
    """The planner's verdict per method on the team's GPUs, when model and gpus were given."""
    if not rec.compute:
        return None
    first = rec.compute[0]
    table = Table(
        title=f"Compute check: {first.model} on {first.gpus}× {first.gpu}",
        title_justify="left",
        expand=True,
    )
    table.add_column("method", style="bold", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("GiB per GPU (needed / on card)")
    table.add_column("would take")
    for check in rec.compute:
        verdict = (
            Text(f"fits as {check.setup.value}", "green")
            if check.setup is not None
            else Text("does not fit", "red")
        )
        numbers = ", ".join(
            f"{t.tuning.value} {t.per_gpu_peak_gib:.1f} / {t.capacity_gib:.1f}" for t in check.tried
        )
        table.add_row(label(check.method), verdict, numbers, "; ".join(check.would_take) or "—")
    return table


def compute_list(rec: Recommendation) -> Panel | None:
    """The compute check as one bullet per method, for a pane too narrow for its table (the
    wizard at 80 columns): the verdict, each setup's GiB against the card, what would fit."""
    if not rec.compute:
        return None
    first = rec.compute[0]
    lines = []
    for check in rec.compute:
        verdict = f"fits as {check.setup.value}" if check.setup is not None else "does not fit"
        tried = "; ".join(
            f"{t.tuning.value} {t.per_gpu_peak_gib:.1f} of {t.capacity_gib:.1f} GiB"
            for t in check.tried
        )
        line = f"{label(check.method)}: {verdict} ({tried})."
        if check.would_take:
            line += " Would take: " + "; ".join(check.would_take) + "."
        lines.append(line)
    return bullets(f"Compute check: {first.model} on {first.gpus}× {first.gpu}", lines, "cyan")


def runner_up_panel(rec: Recommendation) -> Panel:
    """The runner-up, its score, and the factors where it fell behind."""
    second = rec.ranking[1]
    lines = [f"{label(second.method)} scored {second.score:g} against {rec.ranking[0].score:g}."]
    lost = why_not_runner_up(rec)
    if lost:
        lines.append(lost + ".")
    if rec.hybrid_path:
        lines.append(f"Hybrid path: {rec.hybrid_path}")
    return bullets(f"Runner-up: {label(second.method)}", lines, "magenta")


def advice_parts(rec: Recommendation, *, narrow: bool = False) -> list[RenderableType]:
    """Notes, the compute check (a list where `narrow`, else a table), caveats and the
    evaluation plan, in reading order."""
    parts: list[RenderableType] = []
    if rec.notes:
        parts.append(bullets("Before you start", rec.notes, "cyan"))
    compute = compute_list(rec) if narrow else compute_table(rec)
    if compute is not None:
        parts.append(compute)
    parts.append(bullets("Caveats", rec.caveats, "yellow"))
    parts.append(bullets("Evaluation plan", rec.evaluation_plan, "blue"))
    return parts


def render_recommendation(rec: Recommendation) -> RenderableType:
    """The whole recommendation as one Rich renderable."""
    parts: list[RenderableType] = [
        headline(rec),
        ranking_table(rec),
        reasons_panel(rec),
        runner_up_panel(rec),
        *advice_parts(rec),
    ]
    stand_in = None if rec.answers.model else "7b stands in for your model"
    parts.append(
        Panel(
            Text(rec.next_command, "bold"),
            title="Next",
            title_align="left",
            subtitle=stand_in,
            subtitle_align="right",
        )
    )
    return Group(*parts)
