"""`advisor plan --fit`: search the settings a user could change for the fastest plan that fits.

The search varies tuning mode, gradient checkpointing, micro-batch (gradient accumulation
holding the effective batch), precomputed reference log-probs, ZeRO stage / FSDP with CPU
offload, and GPU count. Plans are ranked: keep the requested tuning mode if anything fits with
it (a tuning change changes the result, not only the cost), then use as few GPUs as possible,
then the least time per training sample.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from planner.errors import PlanError
from planner.gpus import resolve_gpu
from planner.memory import estimate_memory
from planner.methods import loop
from planner.models import resolve_model
from planner.plan import estimate_for, normalised
from planner.specs import (
    GpuSpec,
    Method,
    ModelSpec,
    Offload,
    Plan,
    PlanRequest,
    Sharding,
    Tuning,
)
from planner.time_model import estimate_time, samples_per_step

GPU_COUNTS = (1, 2, 4, 8)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
MAX_NODES = 4


@dataclass(frozen=True)
class Candidate:
    request: PlanRequest
    peak: float
    seconds_per_sample: float
    rank: tuple


def _layouts(request: PlanRequest) -> list[tuple[int, int, Sharding, Offload]]:
    """(GPUs per node, nodes, sharding, offload) combinations, from the request's GPU count up."""
    layouts = []
    counts = sorted({request.num_gpus, *[c for c in GPU_COUNTS if c >= request.num_gpus]})
    nodes_options = sorted({request.nodes, *range(request.nodes, MAX_NODES + 1)})
    for per_node, nodes in itertools.product(counts, nodes_options):
        if nodes > 1 and per_node < max(GPU_COUNTS):
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


def candidates(spec: ModelSpec, gpu: GpuSpec, request: PlanRequest) -> list[Candidate]:
    """Every setting combination that fits, ranked best first."""
    request = normalised(request, gpu)
    effective = request.batch_size * request.grad_accum * request.world_size
    if request.method in (Method.grpo, Method.rloo) and effective % request.num_generations:
        return []  # no layout holding this effective batch fills whole generation groups
    fitting: list[Candidate] = []
    for tuning, checkpointing, layout in itertools.product(
        _tunings(request), (False, True), _layouts(request)
    ):
        per_node, nodes, sharding, offload = layout
        world = per_node * nodes
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
            [False, True] if loop(base).reference == "copy" else [base.precompute_ref_log_probs]
        )
        for micro, pre in itertools.product(MICRO_BATCHES, precompute):
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
            except PlanError:
                continue
            if breakdown.peak > gpu.memory_bytes:
                continue
            step = estimate_time(spec, trial, gpu)
            per_sample = step.seconds / samples_per_step(trial)
            rank = (tuning is not request.tuning, world, per_sample)
            fitting.append(Candidate(trial, breakdown.peak, per_sample, rank))
    fitting.sort(key=lambda c: c.rank)
    return fitting


def search(request: PlanRequest, limit: int = 4) -> list[Plan]:
    """Plans that fit, best first (empty when nothing within 4 nodes of 8 GPUs fits)."""
    spec = resolve_model(request.model)
    gpu = resolve_gpu(request.gpu)
    return search_for(spec, gpu, request, limit)


def search_for(spec: ModelSpec, gpu: GpuSpec, request: PlanRequest, limit: int = 4) -> list[Plan]:
    """`search` for an already resolved model and GPU; distinct layouts among the runners-up."""
    plans: list[Plan] = []
    seen: set[tuple] = set()
    for candidate in candidates(spec, gpu, request):
        r = candidate.request
        key = (r.tuning, r.world_size, r.sharding, r.offload, r.grad_checkpointing)
        if key in seen:
            continue
        seen.add(key)
        plans.append(estimate_for(spec, gpu, r))
        if len(plans) == limit:
            break
    return plans
