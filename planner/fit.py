"""`advisor plan --fit`: search the settings a user could change for the best plan that fits.

The search varies tuning mode, gradient checkpointing, micro-batch (gradient accumulation
holding the effective batch = batch × grad-accum × GPUs as requested), precomputed reference
log-probs, ZeRO stage / FSDP with CPU offload, and GPU count within a `SearchSpace` (the GPUs a
user has). Precision is kept as requested. Plans are ranked: keep the requested tuning mode if
anything fits with it (a tuning change changes the result, not only the cost), then by the
`Objective`:

- `time`: the shortest step (seconds per optimizer step), then fewer GPUs;
- `gpus`: the fewest GPUs, then the shortest step;
- `gpu-hours`: the least step time × GPU count, then the shortest step.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import StrEnum

from planner.calibration import calibrated
from planner.constants import GIB, throughput
from planner.errors import InputError
from planner.gpu_counts import GPUS_PER_NODE, MAX_SEARCH_NODES, powers_of_two
from planner.gpus import resolve_gpu
from planner.memory import estimate_memory
from planner.models import resolve_model
from planner.plan import estimate_for, normalised
from planner.recipes import recipe
from planner.specs import (
    GpuSpec,
    ModelSpec,
    Offload,
    Plan,
    PlanRequest,
    Sharding,
    Tuning,
)
from planner.time_model import communication, estimate_time

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)


class Objective(StrEnum):
    """What `--fit` minimises among the setups that fit."""

    time = "time"
    gpus = "gpus"
    gpu_hours = "gpu-hours"

    @property
    def description(self) -> str:
        return {
            Objective.time: "shortest step time, then fewer GPUs",
            Objective.gpus: "fewest GPUs, then shortest step time",
            Objective.gpu_hours: "least GPU time per step (step time × GPUs), then shortest step",
        }[self]


@dataclass(frozen=True)
class SearchSpace:
    """The GPUs the search may use: up to `per_node` GPUs on one node, or up to `nodes` full
    nodes of `per_node`; `reason` says where the range came from."""

    per_node: int = GPUS_PER_NODE
    nodes: int = MAX_SEARCH_NODES
    reason: str = "the default range"

    def counts(self) -> list[int]:
        """GPUs per node to try: powers of two up to `per_node`, and `per_node` itself."""
        return sorted({c for c in powers_of_two(self.per_node)} | {self.per_node})

    def node_counts(self) -> list[int]:
        return sorted(set(powers_of_two(self.nodes)) | {self.nodes})

    def describe(self) -> str:
        """`searched 1–8 GPUs on one node: --num-gpus 8`."""
        if self.nodes > 1:
            where = f"up to {self.nodes} nodes of {_gpus(self.per_node)}"
        elif self.per_node > 1:
            where = f"1–{self.per_node} GPUs on one node"
        else:
            where = "1 GPU"
        return f"searched {where}: {self.reason}"


DEFAULT_SPACE = SearchSpace()


def _gpus(count: int) -> str:
    return f"{count} GPU" + ("" if count == 1 else "s")


def probed_gpu_count() -> int:
    """GPUs `advisor probe` sees on this machine that a run could use (a GPU in MIG mode
    counts through its instances); 0 when NVML sees none. $ADVISOR_FAKE_NVML applies."""
    from planner.nvml import probe

    result = probe()
    if not result.available:
        return 0
    return sum(1 for d in result.devices if d.memory is not None and not d.mig_enabled)


def search_space(num_gpus: int | None, nodes: int | None) -> SearchSpace:
    """The range to search, from the `--num-gpus` / `--nodes` a user gave (None: not given).

    Given flags are the ceiling (GPUs per node × nodes). Without `--num-gpus`, the GPUs per
    node are what NVML sees here, else 8; without `--nodes`, one node when GPUs per node came
    from a flag or from this machine, else up to 4 nodes."""
    flags = []
    if num_gpus is not None:
        flags.append(f"--num-gpus {num_gpus}")
    if nodes is not None:
        flags.append(f"--nodes {nodes}")
    if num_gpus is not None:
        return SearchSpace(num_gpus, nodes or 1, " ".join(flags))
    seen = probed_gpu_count()
    if seen:
        here = f"{_gpus(seen)} seen here (advisor probe)"
        if nodes is None:
            return SearchSpace(seen, 1, f"no --num-gpus given; {here}")
        return SearchSpace(seen, nodes, f"--nodes {nodes}; {here}")
    unseen = "no --num-gpus given and no GPU seen here"
    if nodes is None:
        return SearchSpace(reason=unseen)
    return SearchSpace(GPUS_PER_NODE, nodes, f"--nodes {nodes}; {unseen}")


@dataclass(frozen=True)
class Candidate:
    request: PlanRequest
    peak: float
    step_seconds: float
    rank: tuple


def rank_key(objective: Objective, tuning_changed: bool, gpus: int, seconds: float) -> tuple:
    """The sort key of a fitting setup: the requested tuning first, then the objective."""
    if objective is Objective.time:
        key = (seconds, gpus)
    elif objective is Objective.gpus:
        key = (gpus, seconds)
    else:
        key = (seconds * gpus, seconds)
    return (tuning_changed, *key)


def _layouts(space: SearchSpace) -> list[tuple[int, int, Sharding, Offload]]:
    """(GPUs per node, nodes, sharding, offload) combinations within the space."""
    layouts = []
    for per_node, nodes in itertools.product(space.counts(), space.node_counts()):
        if nodes > 1 and per_node < space.per_node:
            continue  # add nodes only once a node is full
        if per_node * nodes == 1:
            layouts.append((1, 1, Sharding.none, Offload.none))
            layouts.append((1, 1, Sharding.zero2, Offload.optimizer))
            layouts.append((1, 1, Sharding.zero3, Offload.optimizer_params))
            continue
        for sharding in (
            Sharding.ddp,
            Sharding.zero1,
            Sharding.zero2,
            Sharding.zero3,
            Sharding.fsdp,
        ):
            layouts.append((per_node, nodes, sharding, Offload.none))
        layouts.append((per_node, nodes, Sharding.zero3, Offload.optimizer))
        layouts.append((per_node, nodes, Sharding.zero3, Offload.optimizer_params))
    return layouts


def _tunings(request: PlanRequest) -> list[Tuning]:
    order = [Tuning.full, Tuning.lora, Tuning.qlora]
    return order[order.index(request.tuning) :]


def candidates(
    spec: ModelSpec,
    gpu: GpuSpec,
    request: PlanRequest,
    objective: Objective = Objective.time,
    space: SearchSpace = DEFAULT_SPACE,
) -> list[Candidate]:
    """Every setting combination within `space` that fits, ranked best first by `objective`;
    InputError when the request itself cannot run (a generation batch in broken groups)."""
    objective = Objective(objective)
    request = normalised(request, gpu)
    effective = request.rows_per_step()
    problem = recipe(request.method).generation_group_problem(request)
    if problem:
        # No layout holding this effective batch fills whole generation groups: the settings
        # are wrong, not the GPUs, so say so as the plain plan does.
        raise InputError(problem)
    fitting: list[Candidate] = []
    for tuning, checkpointing, layout in itertools.product(
        _tunings(request), (False, True), _layouts(space)
    ):
        per_node, nodes, sharding, offload = layout
        world = per_node * nodes
        if effective % world:
            continue  # this GPU count cannot hold the effective batch
        base = request.model_copy(
            update={
                "tuning": tuning,
                "grad_checkpointing": checkpointing,
                "num_gpus": per_node,
                "nodes": nodes,
                "sharding": sharding,
                "offload": offload,
            }
        )
        precompute = (
            [False, True]
            if recipe(base.method).can_precompute_reference(base)
            else [base.precompute_ref_log_probs]
        )
        for pre in precompute:
            for micro in MICRO_BATCHES:
                if effective % (micro * world):
                    continue
                trial = base.model_copy(
                    update={
                        "batch_size": micro,
                        "grad_accum": effective // (micro * world),
                        "precompute_ref_log_probs": pre,
                    }
                )
                try:
                    breakdown = estimate_memory(spec, trial)
                except InputError:
                    continue
                # Outside the try: a malformed calibration store is the user's to fix.
                breakdown, _ = calibrated(breakdown, gpu.name, trial)
                if breakdown.peak > gpu.memory_bytes:
                    break  # a larger micro-batch needs more memory still
                seconds = estimate_time(spec, trial, gpu).seconds
                rank = rank_key(objective, tuning is not request.tuning, world, seconds)
                fitting.append(Candidate(trial, breakdown.peak, seconds, rank))
    fitting.sort(key=lambda c: c.rank)
    return fitting


def search(
    request: PlanRequest,
    limit: int = 4,
    objective: Objective = Objective.time,
    space: SearchSpace = DEFAULT_SPACE,
) -> list[Plan]:
    """Plans that fit within `space`, best first by `objective` (empty when nothing fits)."""
    spec = resolve_model(request.model)
    gpu = resolve_gpu(request.gpu)
    return search_for(spec, gpu, request, limit, objective, space)


def search_for(
    spec: ModelSpec,
    gpu: GpuSpec,
    request: PlanRequest,
    limit: int = 4,
    objective: Objective = Objective.time,
    space: SearchSpace = DEFAULT_SPACE,
) -> list[Plan]:
    """`search` for an already resolved model and GPU; distinct layouts among the runners-up."""
    if spec.estimate_path == "traced":
        raise InputError(
            f"--fit is not available for {spec.model_type}: it has no analytic model, and each "
            "candidate would need a traced step of its own (seconds each); plan chosen settings "
            "one at a time instead"
        )
    plans: list[Plan] = []
    seen: set[tuple] = set()
    for candidate in candidates(spec, gpu, request, objective, space):
        r = candidate.request
        key = (r.tuning, r.world_size, r.sharding, r.offload, r.grad_checkpointing)
        if key in seen:
            continue
        seen.add(key)
        plan = estimate_for(spec, gpu, r)
        plans.append(plan.model_copy(update={"fit_explanation": explain(spec, gpu, r)}))
        if len(plans) == limit:
            break
    return plans


SHARDING_NAMES = {
    Sharding.none: "one GPU",
    Sharding.ddp: "DDP",
    Sharding.zero1: "ZeRO-1",
    Sharding.zero2: "ZeRO-2",
    Sharding.zero3: "ZeRO-3",
    Sharding.fsdp: "FSDP",
}


def _gb(value: float) -> str:
    return f"{value / 1e9:,.1f} GB"


def communication_line(spec: ModelSpec, gpu: GpuSpec, request: PlanRequest) -> str:
    """What a multi-GPU setup sends per step and how long that takes over its link, written
    so that a user can redo the sum (`planner.time_model.communication`)."""
    comm = communication(spec, request, gpu)
    g = request.world_size
    where = f"{_gpus(g)}" + (f" ({request.nodes} nodes)" if request.nodes > 1 else "")
    name = SHARDING_NAMES[precision_sharding(request)]
    if request.offload is not Offload.none:
        name += f" + offload {request.offload.value}"
    if comm.weight_bytes:
        terms = f"{_gb(comm.weight_bytes)} of weights gathered + {_gb(comm.gradient_bytes)} of gradients"
    else:
        terms = f"2 × {_gb(comm.gradient_bytes)} of gradients"
    hidden = throughput("comm_overlap")
    return (
        f"{name} on {where}: {g - 1}/{g} × ({terms}) = {_gb(comm.volume_bytes)} per GPU per step "
        f"of {comm.collectives} over {comm.link} at {comm.bandwidth_gbps:g} GB/s "
        f"≈ {comm.seconds:.2f} s/step ({hidden:.0%} assumed hidden behind compute)"
    )


def precision_sharding(request: PlanRequest) -> Sharding:
    """`none` on several GPUs runs as DDP."""
    if request.sharding is Sharding.none and request.world_size > 1:
        return Sharding.ddp
    return request.sharding


def explain(spec: ModelSpec, gpu: GpuSpec, request: PlanRequest) -> str | None:
    """Why this sharding on this many GPUs: its traffic over the interconnect, then each other
    sharding on the same GPUs and settings, by memory per GPU and step time (None on one GPU)."""
    if request.world_size == 1:
        return None
    chosen = precision_sharding(request)
    others = []
    for sharding in (Sharding.ddp, Sharding.zero2, Sharding.zero3, Sharding.fsdp):
        if sharding is chosen:
            continue
        other = request.model_copy(update={"sharding": sharding, "offload": Offload.none})
        try:
            breakdown = estimate_memory(spec, other)
        except InputError:
            continue
        breakdown, _ = calibrated(breakdown, gpu.name, other)
        name = SHARDING_NAMES[sharding]
        peak = breakdown.peak / GIB
        if breakdown.peak > gpu.memory_bytes:
            others.append(f"{name} would not fit ({peak:.1f} GiB > {gpu.memory_gib:.1f})")
            continue
        seconds = estimate_time(spec, other, gpu).seconds
        traffic = communication(spec, other, gpu).volume_bytes
        others.append(f"{name} fits at {peak:.1f} GiB, {_gb(traffic)}/step, {seconds:.2f} s/step")
    line = communication_line(spec, gpu, request)
    return line + ("; against it, " + "; ".join(others) if others else "")
