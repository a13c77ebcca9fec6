"""Rich rendering of a Plan: components, what is live at the peak, verdict, time, advice."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from planner.constants import GIB
from planner.fit import DEFAULT_SPACE, Objective, SearchSpace
from planner.specs import COMPONENTS, Calibration, Offload, Plan, PlanRequest

LABELS = {
    "weights": "weights",
    "trainable_weights": "trainable (adapter) weights",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "activations": "activations",
    "logits": "logits (+ fp32 loss copies)",
    "reference_model": "reference model",
    "reward_model": "reward model",
    "value_model": "value model (trained)",
    "generation_kv_cache": "rollout KV cache",
    "vllm_engine": "vLLM engine (colocated)",
    "runtime_overhead": "CUDA context, workspaces, fragmentation",
}


def duration(seconds: float) -> str:
    """Seconds as a person reads them: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bar(value: float, scale: float, width: int = 24) -> str:
    filled = 0 if scale <= 0 else min(width, round(width * value / scale))
    return "█" * filled + "·" * (width - filled)


def headline(plan: Plan) -> str:
    """One line: model, method, tuning, GPUs."""
    m = plan.model
    rep = f" (for {m.representative_of})" if m.representative_of else ""
    r = plan.request
    training = plan.gpu.count - plan.gpu.vllm_server
    layout = f"{training}× {plan.gpu.name}"
    if training > 1:
        layout += f", {r.sharding.value}"
    if plan.gpu.vllm_server:
        layout += f" + {plan.gpu.vllm_server} for the vLLM server"
    return (
        f"{m.name}{rep} · {param_count(m.params)} params · {plan.method.value.upper()} · "
        f"{plan.tuning.value} · {layout}"
    )


def param_count(n: int) -> str:
    """A parameter count as people say it: 6.74B, 494.0M, 1.2M, or the number itself below
    a million (a tiny test model is not '0.00B')."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n:,}"


def precision_line(plan: Plan) -> Text:
    """The run's precision as it will hold it: what TRL's `dtype` loads, autocast, master
    weights and the optimizer moments' dtype."""
    p = plan.precision
    autocast = f"{p.autocast} autocast" if p.autocast else "no autocast"
    master = "fp32 master weights" if p.master_weights else "no fp32 master weights"
    return Text(
        f"Precision {plan.request.precision.value}: weights loaded in {p.load_dtype}, {autocast}, "
        f"{master}, optimizer moments in {p.optimizer_state_dtype} "
        f"({p.weight_bytes:g} + {p.gradient_bytes:g} + {p.optimizer_bytes:g} bytes per trained "
        "parameter)",
        style="dim",
    )


def calibration_line(calibration: Calibration) -> str:
    """`runtime overhead calibrated from 3 runs on H100-80GB: +0.4 GiB ± 0.2 …`."""
    runs = f"{calibration.runs} run" + ("s" if calibration.runs != 1 else "")
    return (
        f"Runtime overhead calibrated from {runs} on {calibration.gpu}: "
        f"{calibration.correction_gib:+.1f} GiB ± {calibration.spread_gib:.1f} "
        "(tensor estimate unchanged)"
    )


def model_path_text(plan: Plan) -> Text | None:
    """Which path answered (the general path says so, with the seconds its trace took) and
    what planning the model left out or assumed; None for an analytic plan without notes."""
    m = plan.model
    lines = []
    if m.estimate_path == "traced":
        seconds = f" ({m.trace_seconds:.1f} s)" if m.trace_seconds is not None else ""
        lines.append(
            f"General path: traced step{seconds} — {m.model_type or 'this model'} has no "
            "analytic model; parameters counted on its transformers class (meta device), memory "
            "from one step traced on fake tensors"
        )
    lines += [f"Note: {note}" for note in m.notes]
    return Text("\n".join(lines), style="italic") if lines else None


def plan_renderable(plan: Plan) -> Group:
    mem = plan.memory
    table = Table(title="Peak memory per GPU, by component", title_justify="left", expand=False)
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("at peak", justify="center")
    table.add_column("")
    scale = max(mem.per_gpu_peak_gib, 1e-9)
    live = set(mem.live_at_peak)
    for name in COMPONENTS:
        value = mem.components_gib[name]
        if value == 0 and name not in ("weights", "activations"):
            continue
        table.add_row(LABELS[name], f"{value:.2f}", "●" if name in live else "", _bar(value, scale))
    verdict = Text()
    colour = "green" if plan.fits else "red"
    verdict.append(
        f"Peak {mem.per_gpu_peak_gib:.1f} GiB of {mem.capacity_gib:.1f} GiB ({mem.peak_phase}) — ",
        style="bold",
    )
    if plan.fits:
        verdict.append(f"fits, {mem.headroom_gib:.1f} GiB headroom", style=f"bold {colour}")
    else:
        verdict.append(f"does not fit: {-mem.headroom_gib:.1f} GiB over", style=f"bold {colour}")
    if mem.cpu_offload_gib:
        verdict.append(f"\nCPU memory for offloaded states: {mem.cpu_offload_gib:.1f} GiB")
    if mem.calibration is not None:
        verdict.append(f"\n{calibration_line(mem.calibration)}", style="dim")
    if plan.generation is not None:
        verdict.append(f"\n{plan.generation.summary}", style="" if plan.generation.fits else "red")

    t = plan.time
    timing = Text()
    timing.append(
        f"Step {duration(t.step_seconds)} · {t.tokens_per_second:,.0f} tokens/s "
        f"(MFU {t.mfu:.0%} assumed)"
    )
    if t.total_hours is not None:
        timing.append(
            f" · {t.total_steps:,} steps for {t.samples:,} rows × {plan.request.epochs:g} epochs"
            f" ≈ {duration(t.total_hours * 3600)}"
        )
    else:
        timing.append(" · pass --samples N or --dataset PATH for the run's total")
    phases = ", ".join(f"{k} {duration(v)}" for k, v in t.phases_seconds.items())
    timing.append(f"\n  {phases}", style="dim")

    parts: list = [Text(headline(plan), style="bold")]
    parts += filter(None, [model_path_text(plan)])
    parts += [precision_line(plan), table, verdict, timing]
    if plan.warnings:
        parts.append(Text("\n".join(f"⚠ {w}" for w in plan.warnings), style="yellow"))
    if plan.suggestions:
        parts.append(Text("Suggestions:\n" + "\n".join(f"  • {s}" for s in plan.suggestions)))
    if plan.assumptions:
        parts.append(Text("\n".join(f"  {a}" for a in plan.assumptions), style="dim"))
    return Group(*parts)


def print_plan(plan: Plan, console: Console | None = None) -> None:
    (console or Console()).print(Panel(plan_renderable(plan), title="advisor plan", expand=False))


def print_fit(
    request: PlanRequest,
    plans: list[Plan],
    console: Console | None = None,
    objective: Objective = Objective.time,
    space: SearchSpace = DEFAULT_SPACE,
) -> None:
    """The best setup that fits, how it was ranked and where the search looked, and the
    runners-up with their step time and GPU count."""
    console = console or Console()
    objective = Objective(objective)
    searched = space.describe()
    if not plans:
        console.print(
            Text(
                f"Nothing fits {request.model} ({request.method.value}) on {request.gpu}: "
                f"{searched}. Try a larger GPU (--gpu), more GPUs (--num-gpus, --nodes) or a "
                "shorter --seq-len.",
                style="bold red",
            )
        )
        return
    best, *others = plans
    console.print(
        Text(
            f"Best setup that fits, ranked by --objective {objective.value} "
            f"({objective.description})",
            style="bold green",
        )
    )
    note = searched[0].upper() + searched[1:]
    effective = request.batch_size * request.grad_accum * request.world_size
    if effective < space.per_node * space.nodes:
        note += (
            f" (a GPU count must divide the effective batch of {effective}: "
            "batch × grad-accum × GPUs as requested)"
        )
    console.print(Text(note, style="dim"))
    print_plan(best, console)
    console.print(Text(command_line(best.request), style="cyan"))
    if best.fit_explanation:
        console.print(Text("Why this sharding: " + best.fit_explanation, style="dim"))
    if others:
        console.print(_runners_up(others, objective))


def _runners_up(plans: list[Plan], objective: Objective) -> Text:
    """One line per runner-up: step time and GPUs first (what the objectives rank), then
    the settings that differ between setups."""
    text = Text("Runners-up:", style="bold")
    for place, plan in enumerate(plans, start=2):
        r = plan.request
        step = plan.time.step_seconds
        ranked = f"{duration(step)}/step on {r.world_size}× {plan.gpu.name}"
        if r.nodes > 1:
            ranked += f" ({r.nodes} nodes of {r.num_gpus})"
        if objective is Objective.gpu_hours:
            ranked += f" = {step * r.world_size:,.1f} GPU·s"
        layout = r.sharding.value
        if r.offload is not Offload.none:
            layout += f" + offload {r.offload.value}"
        settings = [
            r.tuning.value,
            layout,
            "checkpointing " + ("on" if r.grad_checkpointing else "off"),
            f"micro-batch {r.batch_size} × accum {r.grad_accum}",
        ]
        if r.precompute_ref_log_probs:
            settings.append("reference log-probs precomputed")
        settings.append(f"{plan.memory.per_gpu_peak_gib:.1f} GiB peak")
        text.append(f"\n  {place}. ")
        text.append(ranked, style="bold")
        text.append(" — " + ", ".join(settings))
        if plan.fit_explanation:
            text.append("\n     " + plan.fit_explanation, style="dim")
    return text


def command_line(request: PlanRequest) -> str:
    """The `advisor plan` command that reproduces a request (non-default flags only)."""
    defaults = PlanRequest()
    parts = ["advisor plan"]
    for name, value in request.model_dump(mode="json").items():
        if value == defaults.model_dump(mode="json")[name] and name not in ("model", "method"):
            continue
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if name == "grad_checkpointing":
                parts.append(flag if value else "--no-grad-checkpointing")
            elif value:
                parts.append(flag)
            continue
        parts.append(f"{flag} {value}")
    return " ".join(parts)


MODEL_FIELDS = ("name", "params", "num_layers", "hidden_size", "num_heads", "num_kv_heads",
                "vocab_size")  # fmt: skip
"""The ModelSpec fields the `--list-models` table shows, as `--list-models --json` names them."""

GPU_FIELDS = ("name", "memory_gib", "bf16_tflops", "fp16_tflops", "supports_bf16", "hbm_gbps",
              "interconnect_gbps")  # fmt: skip
"""The GpuSpec fields the `--list-gpus` table shows, as `--list-gpus --json` names them."""


def model_rows() -> list[dict]:
    """Every model profile as `--list-models --json` prints it: the table's fields."""
    from planner.models import list_models

    return [spec.model_dump(mode="json", include=set(MODEL_FIELDS)) for spec in list_models()]


def gpu_rows() -> list[dict]:
    """Every GPU profile as `--list-gpus --json` prints it: the table's fields."""
    from planner.gpus import list_gpus

    return [gpu.model_dump(mode="json", include=set(GPU_FIELDS)) for gpu in list_gpus()]


def print_models(console: Console | None = None) -> None:
    from planner.models import list_models

    table = Table(title="Model profiles (profiles/models/)")
    for column in ("name", "params", "layers", "hidden", "heads/kv", "vocab"):
        table.add_column(column)
    for spec in list_models():
        table.add_row(
            spec.name,
            param_count(spec.params),
            str(spec.num_layers),
            str(spec.hidden_size),
            f"{spec.num_heads}/{spec.num_kv_heads}",
            str(spec.vocab_size),
        )
    (console or Console()).print(table)


def print_gpus(console: Console | None = None) -> None:
    from planner.gpus import list_gpus

    table = Table(title="GPU profiles (profiles/gpus/)")
    for column in ("name", "GiB", "bf16 TFLOPs", "HBM GB/s", "link GB/s"):
        table.add_column(column)
    for gpu in list_gpus():
        table.add_row(
            gpu.name,
            f"{gpu.memory_gib:.1f}",
            f"{gpu.bf16_tflops:g}" if gpu.supports_bf16 else f"— (fp16 {gpu.fp16_tflops:g})",
            f"{gpu.hbm_gbps:g}",
            f"{gpu.interconnect_gbps:g}",
        )
    (console or Console()).print(table)


def print_trace(plan: Plan, trace, console: Console | None = None) -> None:
    """Traced (fake-tensor step) vs estimated tensor memory."""
    gib = GIB
    table = Table(
        title="Traced step on fake tensors vs the analytic estimate", title_justify="left"
    )
    table.add_column("quantity")
    table.add_column("traced GiB", justify="right")
    table.add_column("estimated GiB", justify="right")
    est = plan.memory.components_gib
    rows = [
        ("tensor peak", trace.peak_bytes / gib, plan.memory.tensor_peak_gib),
        (
            "weights (policy + adapters)",
            (trace.max_bytes.get("params", 0) + trace.max_bytes.get("adapters", 0)) / gib,
            est["weights"] + est["trainable_weights"],
        ),
        ("gradients", trace.max_bytes.get("grads", 0) / gib, est["gradients"]),
        ("optimizer", trace.max_bytes.get("optimizer", 0) / gib, est["optimizer"]),
        (
            "reference model",
            trace.max_bytes.get("reference_model", 0) / gib,
            est["reference_model"],
        ),
    ]
    for name, traced, estimated in rows:
        table.add_row(name, f"{traced:.3f}", f"{estimated:.3f}")
    (console or Console()).print(table)
    (console or Console()).print(
        Text(f"trace peak in {trace.peak_phase}; traced in {trace.seconds:.1f} s", style="dim")
    )
