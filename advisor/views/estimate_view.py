"""The plan screen's estimate: a bar per memory component against the card, verdict, times."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from advisor.views.plan_view import command_line, duration, headline, model_path_text
from planner.plan import FIT_SUGGESTION
from planner.specs import COMPONENTS, Plan

SHORT = {
    "weights": "weights",
    "trainable_weights": "adapters",
    "gradients": "gradients",
    "optimizer": "optimizer",
    "activations": "activations",
    "logits": "logits",
    "reference_model": "reference",
    "reward_model": "reward model",
    "value_model": "value model",
    "generation_kv_cache": "rollout KV",
    "vllm_engine": "vLLM engine",
    "runtime_overhead": "CUDA/runtime",
}
"""Component names short enough for an 80-column terminal."""

BAR_WIDTH = 16


def bar(value: float, capacity: float, style: str = "cyan") -> Text:
    """`value` as a bar against the card's capacity; red past the end."""
    filled = 0 if capacity <= 0 else round(BAR_WIDTH * value / capacity)
    if filled > BAR_WIDTH:
        return Text("█" * BAR_WIDTH + "▶", style="red")
    return Text.assemble(("█" * filled, style), ("·" * (BAR_WIDTH - filled), "dim"))


def memory_table(plan: Plan) -> Table:
    """Each non-zero component and the peak, in GiB, with bars scaled to the card; components
    freed before the peak are dim, with a line saying so (a suffix would squeeze the numbers
    out of an 80-column terminal)."""
    mem = plan.memory
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True, min_width=5)
    table.add_column(no_wrap=True, overflow="crop")
    live = set(mem.live_at_peak)
    for name in COMPONENTS:
        value = mem.components_gib[name]
        if value == 0 and name not in ("weights", "activations"):
            continue
        at_peak = name in live
        style = "" if at_peak else "dim"
        table.add_row(
            Text(SHORT[name], style=style),
            Text(f"{value:.1f}", style=style),
            bar(value, mem.capacity_gib, "cyan" if at_peak else "dim cyan"),
        )
    colour = "green" if plan.fits else "red"
    table.add_row(
        Text("peak per GPU", style="bold"),
        Text(f"{mem.per_gpu_peak_gib:.1f}", style="bold"),
        bar(mem.per_gpu_peak_gib, mem.capacity_gib, colour),
    )
    return table


def freed_note(plan: Plan) -> Text | None:
    """The line under the memory table when some components are freed before the peak."""
    mem = plan.memory
    live = set(mem.live_at_peak)
    if any(v and name not in live for name, v in mem.components_gib.items()):
        return Text("dim: freed before the peak", style="dim")
    return None


def verdict(plan: Plan) -> Text:
    """Fits with its headroom, or how far over the card it is."""
    mem = plan.memory
    text = Text(f"{mem.per_gpu_peak_gib:.1f} of {mem.capacity_gib:.1f} GiB: ", style="bold")
    if plan.fits:
        text.append(f"fits, {mem.headroom_gib:.1f} GiB headroom", style="bold green")
    else:
        text.append(f"does not fit, {-mem.headroom_gib:.1f} GiB over", style="bold red")
    return text


def timing(plan: Plan) -> Text:
    """Time per step, and for the run when the rows are known."""
    t = plan.time
    text = Text(f"Step {duration(t.step_seconds)} · {t.tokens_per_second:,.0f} tokens/s")
    if t.total_hours is not None:
        text.append(
            f"\nRun {duration(t.total_hours * 3600)}: {t.total_steps:,} steps, "
            f"{t.samples:,} rows × {plan.request.epochs:g} epochs",
            style="bold",
        )
    else:
        text.append("\nRun: enter the dataset's rows for the run's time", style="dim")
    return text


def estimate_renderable(plan: Plan, fit_key: str | None = None) -> RenderableType:
    """The whole estimate panel; `fit_key` names the key that searches for a setup that fits,
    where the view has one (the wizard's ^f), in place of `advisor plan --fit`."""
    parts: list[RenderableType] = [
        Text(headline(plan), style="bold"),
        *filter(None, [model_path_text(plan)]),
        Text(f"Memory per GPU against the {plan.gpu.name} ({plan.memory.capacity_gib:.1f} GiB)"),
        memory_table(plan),
        *filter(None, [freed_note(plan)]),
        verdict(plan),
        timing(plan),
    ]
    if plan.warnings:
        parts.append(Text("\n".join(f"⚠ {w}" for w in plan.warnings), style="yellow"))
    if plan.suggestions:
        shown = [
            f"or press {fit_key} to search for the fastest setup that fits"
            if fit_key and s == FIT_SUGGESTION
            else s
            for s in plan.suggestions
        ]
        parts.append(Text("\n".join(f"• {s}" for s in shown)))
    parts.append(Text(command_line(plan.request), style="cyan"))
    return Group(*parts)
