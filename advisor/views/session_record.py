"""The wizard's Markdown record: the decision record, the method chosen, the plan, the outcome.

The outcome is read from the run folder `advisor launch` wrote (its validation.json), as JSON,
so the record needs nothing from the runners.

Built on `advisor.views.decision_record`, so a record from the wizard reads like one from
`advisor recommend --report`, with the capacity plan and the launch command added.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from advisor.decision.decide import Recommendation
from advisor.decision.names import label
from advisor.decision.output_file import write_text
from advisor.views.decision_record import decision_record
from advisor.views.plan_view import LABELS, command_line, duration, headline
from advisor.views.reasons import override_warning
from planner.gpus import resolve_gpu
from planner.specs import COMPONENTS, Method, Plan, PlanRequest


def launch_command(request: PlanRequest, rewards: Sequence[str] = ()) -> str:
    """The `advisor launch` line for a request: the same flags as its `advisor plan` line, and
    the rewards it is scored by (GRPO / RLOO / PPO)."""
    flags = "".join(f" --reward {shlex.quote(r)}" for r in rewards)
    return "advisor launch" + command_line(request).removeprefix("advisor plan") + flags


def compute_edited(rec: Recommendation, plan: Plan) -> str | None:
    """A sentence when the plan's model or GPUs are not the ones the interview named (and the
    recommendation's compute check used), else None."""
    answers = rec.answers
    gpus = answers.parsed_gpus()
    request = plan.request
    if answers.model is None and gpus is None:
        return None
    same_model = answers.model is None or answers.model.strip().lower() == request.model.lower()
    same_gpus = gpus is None or (
        resolve_gpu(gpus[0]).name == resolve_gpu(request.gpu).name and gpus[1] == request.world_size
    )
    if same_model and same_gpus:
        return None
    interview = " on ".join(
        part
        for part in (answers.model, f"{gpus[1]}× {gpus[0]}" if gpus else None)
        if part is not None
    )
    return (
        f"The plan below was edited after the recommendation: {request.model} on "
        f"{request.world_size}× {plan.gpu.name}. The recommendation's compute check used the "
        f"interview's {interview}."
    )


def plan_section(plan: Plan, rewards: Sequence[str] = ()) -> list[str]:
    """The plan as Markdown lines: headline, memory by component, verdict, time, commands."""
    mem, t = plan.memory, plan.time
    verdict = (
        f"fits, {mem.headroom_gib:.1f} GiB headroom"
        if plan.fits
        else f"does not fit: {-mem.headroom_gib:.1f} GiB over"
    )
    out = [
        "## Capacity plan",
        "",
        f"- {headline(plan)}",
        f"- Peak per GPU: **{mem.per_gpu_peak_gib:.1f} GiB** of {mem.capacity_gib:.1f} GiB "
        f"({mem.peak_phase}) — {verdict}",
        f"- Step: {duration(t.step_seconds)}, {t.tokens_per_second:,.0f} tokens/s",
    ]
    if t.total_hours is not None:
        out.append(
            f"- Run: {t.total_steps:,} steps for {t.samples:,} rows × "
            f"{plan.request.epochs:g} epochs ≈ {duration(t.total_hours * 3600)}"
        )
    out += ["", "| component | GiB | live at peak |", "|---|---|---|"]
    live = set(mem.live_at_peak)
    for name in COMPONENTS:
        value = mem.components_gib[name]
        if value:
            out.append(f"| {LABELS[name]} | {value:.2f} | {'yes' if name in live else ''} |")
    for title, lines in (("Warnings", plan.warnings), ("Suggestions", plan.suggestions)):
        if lines:
            out += ["", f"{title}:", "", *[f"- {line}" for line in lines]]
    out += [
        "",
        "Reproduce the estimate and launch the run:",
        "",
        "```",
        command_line(plan.request),
        launch_command(plan.request, rewards),
        "```",
    ]
    return out


def outcome_section(run_dir: str | Path | None, status: int | None = None) -> list[str]:
    """The measured outcome: the run folder's validation.json (estimated vs measured), if any."""
    out = ["## Measured outcome", ""]
    if run_dir is None:
        return [*out, "Not run yet: no measured memory or step time."]
    run_dir = Path(run_dir)
    out.append(f"- Run folder: `{run_dir}`")
    if status is not None:
        out.append(f"- `advisor launch` exit status: {status}")
    try:
        found = json.loads((run_dir / "validation.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [*out, "- No validation record: the run did not finish."]

    def number(key: str, unit: str) -> str:
        value = found.get(key)
        return "—" if value is None else f"{value:g} {unit}"

    out += [
        f"- Device: {found.get('device', '?')}, {found.get('steps', 0)} optimizer steps",
        "",
        "| quantity | estimated | measured |",
        "|---|---|---|",
        f"| peak memory per GPU | {number('estimated_peak_gib', 'GiB')} | "
        f"{number('measured_peak_gib', 'GiB')} |",
        f"| seconds per step | {number('estimated_step_seconds', 's')} | "
        f"{number('measured_step_seconds', 's')} |",
    ]
    if found.get("note"):
        out += ["", f"Note: {found['note']}"]
    return out


def session_record(
    rec: Recommendation,
    method: Method,
    plan: Plan | None,
    *,
    source: str | None = None,
    today: dt.date | None = None,
    run_dir: str | Path | None = None,
    launch_status: int | None = None,
    rewards: Sequence[str] = (),
    demo: bool = False,
) -> str:
    """The whole record: decision record, the method chosen (and the warning), plan, outcome.
    Where the plan's model or GPUs differ from the interview's, the record says so: the
    recommendation's compute check used the interview's."""
    out = [decision_record(rec, source=source, today=today).rstrip("\n"), ""]
    out += ["## Method chosen", ""]
    warning = override_warning(rec, method)
    if warning is None:
        out.append(f"{label(method)}, as recommended.")
    else:
        out += [f"{label(method)}, against the recommendation of {label(rec.method)}.", ""]
        out.append(f"> {warning}")
    out.append("")
    if plan is not None:
        edited = compute_edited(rec, plan)
        if edited:
            out += [f"> {edited}", ""]
        out += [*plan_section(plan, rewards), ""]
    if demo and run_dir is not None:
        out += [
            "> The run below is the demo: the same method on a tiny local model with demo "
            "data, on CPU. It shows the run works end to end; its numbers say nothing about "
            "the plan above.",
            "",
        ]
    out += [*outcome_section(run_dir, launch_status), ""]
    return "\n".join(out)


def write_session_record(text: str, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a record to `path`; an existing file raises `FileExists` unless `overwrite`, and a
    path that cannot be written is the user's error."""
    return write_text(path, text, "record", overwrite=overwrite)
