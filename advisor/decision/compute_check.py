"""Will a method's default setup fit the team's GPUs? The planner answers; this module asks.

For each method it tries full tuning, then LoRA, then QLoRA on the GPUs the team named. Where
full tuning does not fit, the planner's fit search says what would (ZeRO stage, CPU offload,
more GPUs of the same kind); where nothing fits, also what LoRA would take. The planner is imported inside the functions, so the engine that uses
this module imports fast when no compute check is asked for.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError

from advisor.decision.names import label, tuning_label
from planner.errors import InputError
from planner.gpu_counts import layout
from planner.specs import Method, Plan, PlanRequest, Sharding, Tuning, request_problem

TUNING_LADDER = (Tuning.full, Tuning.lora, Tuning.qlora)
"""The default setups, best first: full tuning when it fits, else LoRA, else QLoRA."""


class FitTry(BaseModel):
    """One setup the planner estimated: its tuning, GPUs, and peak memory per GPU."""

    tuning: Tuning
    gpus: int
    sharding: Sharding
    per_gpu_peak_gib: float
    capacity_gib: float
    fits: bool


class ComputeCheck(BaseModel):
    """Whether a method's default setup fits the team's GPUs, and what would make it fit."""

    method: Method
    model: str
    gpu: str = Field(description="the GPU's catalogue name")
    gpus: int = Field(description="how many the team has")
    fits: bool = Field(description="some default setup (full, LoRA or QLoRA) fits")
    setup: Tuning | None = Field(description="the first default setup that fits, if any")
    tried: list[FitTry] = Field(description="the setups estimated on the team's GPUs, in order")
    would_take: list[str] = Field(
        default_factory=list, description="what would fit where the best setup does not"
    )
    summary: str = Field(description="one sentence: the verdict with its numbers")

    def attempt(self, tuning: Tuning) -> FitTry | None:
        """The estimate for one tuning mode on the team's GPUs, if it was made."""
        return next((t for t in self.tried if t.tuning is tuning), None)


def default_sharding(count: int) -> Sharding:
    """One GPU: none; several: ZeRO-3, which shards weights so more GPUs mean less per GPU."""
    return Sharding.none if count == 1 else Sharding.zero3


def default_request(
    method: Method, tuning: Tuning, model: str, gpu: str, count: int
) -> PlanRequest:
    """A method's default setup as a planner request: the planner's defaults plus these."""
    per_node, nodes = layout(count)
    try:
        return PlanRequest(
            model=model,
            method=method,
            tuning=tuning,
            gpu=gpu,
            num_gpus=per_node,
            nodes=nodes,
            sharding=default_sharding(count),
        )
    except ValidationError as error:
        field, message = request_problem(error)
        raise InputError(f"{field or 'gpus'}: {message}") from None


def _try(plan: Plan, count: int) -> FitTry:
    return FitTry(
        tuning=plan.tuning,
        gpus=count,
        sharding=plan.request.sharding,
        per_gpu_peak_gib=round(plan.memory.per_gpu_peak_gib, 1),
        capacity_gib=round(plan.memory.capacity_gib, 1),
        fits=plan.fits,
    )


def describe_change(plan: Plan, default: PlanRequest) -> str:
    """A fitting plan from the planner's search, as what differs from the default setup."""
    req = plan.request
    parts = [f"{tuning_label(plan.tuning)} on {req.world_size}× {plan.gpu.name}"]
    if req.sharding is not default.sharding:
        parts.append(req.sharding.value)
    if req.offload is not default.offload:
        parts.append(f"CPU offload of {req.offload.value}")
    if req.precompute_ref_log_probs and not default.precompute_ref_log_probs:
        parts.append("reference log-probs precomputed")
    if req.grad_checkpointing is not default.grad_checkpointing:
        parts.append(
            "gradient checkpointing" if req.grad_checkpointing else "no gradient checkpointing"
        )
    if req.batch_size != default.batch_size:
        parts.append(f"micro-batch {req.batch_size}")
    numbers = f"{plan.memory.per_gpu_peak_gib:.1f} of {plan.memory.capacity_gib:.1f} GiB per GPU"
    return ", ".join(parts) + f": {numbers}"


def best_fit(request: PlanRequest) -> str | None:
    """The planner's best fitting plan for a request, described (it keeps the tuning if it can)."""
    from planner.fit import search

    try:
        found = search(request)
    except InputError:
        return None
    return describe_change(found[0], request) if found else None


def check_method(method: Method, model: str, gpu: str, count: int) -> ComputeCheck:
    """Estimate a method's default setups on `count` GPUs, best first, and what would fit."""
    from planner.gpus import resolve_gpu
    from planner.models import resolve_model
    from planner.plan import estimate

    gpu_name = resolve_gpu(gpu).name
    resolve_model(model)  # an unknown model is the answers' error, not this method's
    tried: list[FitTry] = []
    setup: Tuning | None = None
    refused: str | None = None
    for tuning in TUNING_LADDER:
        request = default_request(method, tuning, model, gpu, count)
        # The planner may reject a method on this model (no reward-model class) or a setup.
        try:
            plan = estimate(request)
        except InputError as error:
            refused = refused or str(error)
            continue
        tried.append(_try(plan, count))
        if plan.fits:
            setup = tuning
            break

    # What would fit: full tuning where the team's GPUs cannot take it, LoRA where nothing fits.
    wanted = [] if setup is Tuning.full else [Tuning.full]
    if setup is None:
        wanted.append(Tuning.lora)
    would_take: list[str] = []
    for tuning in wanted if tried else []:
        best = best_fit(default_request(method, tuning, model, gpu, count))
        if best and best not in would_take:
            would_take.append(best)
    summary = _summary(method, gpu_name, count, tried, setup)
    if not tried and refused:
        summary = f"{label(method)} cannot run here: {refused}"

    return ComputeCheck(
        method=method,
        model=model,
        gpu=gpu_name,
        gpus=count,
        fits=setup is not None,
        setup=setup,
        tried=tried,
        would_take=would_take,
        summary=summary,
    )


def _summary(
    method: Method, gpu: str, count: int, tried: list[FitTry], setup: Tuning | None
) -> str:
    """The verdict in one sentence, with GiB needed against GiB on the card."""
    where = f"{count}× {gpu}"
    misses = [
        f"{tuning_label(t.tuning)} needs {t.per_gpu_peak_gib:.1f} GiB per GPU"
        for t in tried
        if not t.fits
    ]
    capacity = tried[0].capacity_gib if tried else 0.0
    name = label(method)
    if setup is None:
        return f"{name} does not fit on {where} ({capacity:.1f} GiB each): " + "; ".join(misses)
    hit = next(t for t in tried if t.tuning is setup)
    numbers = f"{hit.per_gpu_peak_gib:.1f} of {hit.capacity_gib:.1f} GiB per GPU"
    if not misses:
        return f"{name} fits on {where} as {tuning_label(setup)}: {numbers}"
    return (
        f"{name} does not fit on {where} as full tuning ({'; '.join(misses)}); "
        f"{tuning_label(setup)} fits: {numbers}"
    )
