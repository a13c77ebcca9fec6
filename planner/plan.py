"""`estimate(request) -> Plan`: the one function the CLI, the wizard and the runners call."""

from __future__ import annotations

import math

from planner import parameters
from planner.architectures import SUPPORTED_TYPES, architecture
from planner.calibration import calibrated
from planner.constants import GIB, suggestion
from planner.deepspeed import deepspeed_installed
from planner.errors import InputError
from planner.gpus import resolve_gpu
from planner.memory import MemoryBreakdown, estimate_memory
from planner.methods import sequence_tokens
from planner.models import resolve_model
from planner.precision import learning_rate_warning, precision_plan, runnable_precision
from planner.recipes import recipe
from planner.specs import (
    COMPONENTS,
    GenerationPlan,
    GpuSpec,
    GpuSummary,
    MemoryEstimate,
    Method,
    ModelSpec,
    ModelSummary,
    Offload,
    Plan,
    PlanRequest,
    Sharding,
    TimeEstimate,
    Tuning,
)
from planner.time_model import StepTime, estimate_time, mfu, samples_per_step
from planner.vllm_engine import generation_plan


def _gib(value: float) -> float:
    return round(value / GIB, 2)


def check_request(spec: ModelSpec, gpu: GpuSpec, request: PlanRequest) -> list[str]:
    """Reject impossible settings (InputError); return warnings for doubtful ones."""
    warnings: list[str] = []
    seq, _ = sequence_tokens(request)
    if seq > spec.max_position_embeddings:
        warnings.append(
            f"sequence length {seq} exceeds {spec.name}'s max_position_embeddings "
            f"({spec.max_position_embeddings}): quality degrades past it unless RoPE is scaled"
        )
    if request.precision.half == "bf16" and not gpu.supports_bf16:
        warnings.append(
            f"{gpu.name} has no bf16: the run will use fp16 with fp32 master weights "
            "(planned as --precision fp16-mixed)"
        )
    lr_warning = learning_rate_warning(
        request, recipe(request.method).learning_rate_for(request.tuning).value
    )
    if lr_warning:
        warnings.append(lr_warning)
    problem = recipe(request.method).generation_group_problem(request)
    if problem:
        raise InputError(problem)
    if request.tuning is Tuning.qlora and request.sharding in (Sharding.zero3, Sharding.fsdp):
        warnings.append(
            "QLoRA with ZeRO-3/FSDP needs bnb_4bit_quant_storage set to the compute dtype"
        )
    if request.sharding in (Sharding.zero3, Sharding.fsdp) and request.world_size == 1:
        warnings.append(f"--sharding {request.sharding.value} on one GPU shards nothing")
    scores = request.method in (Method.reward, Method.ppo)
    if scores and not sequence_classifier(spec.model_type):
        what = "a reward model" if request.method is Method.reward else "PPO's value model"
        raise InputError(
            f"{spec.name}: transformers has no sequence-classification class for "
            f"{spec.model_type}, which {what} is built as; pick another method "
            "(dpo, kto, orpo, simpo, grpo with a reward function)"
        )
    if request.sharding.value.startswith("zero") and not deepspeed_installed():
        warnings.append(
            f"--sharding {request.sharding.value} runs under DeepSpeed, which is not installed "
            "here: pip install 'alignment-advisor[deepspeed]' before launching (or --sharding fsdp)"
        )
    return warnings


def sequence_classifier(model_type: str) -> bool:
    """Whether a reward or value model can be built on this architecture (its trait record;
    the general path's own checks cover the rest)."""
    return model_type not in SUPPORTED_TYPES or architecture(model_type).sequence_classifier


def normalised(request: PlanRequest, gpu: GpuSpec) -> PlanRequest:
    """The request as it will actually run: fp16 on cards without bf16 (`runnable_precision`)."""
    runnable = runnable_precision(request.precision, gpu.supports_bf16)
    if runnable is not request.precision:
        return request.model_copy(update={"precision": runnable})
    return request


def total_samples(request: PlanRequest) -> tuple[int | None, list[str]]:
    """Rows in the run: `--samples`, or the rows of a local `--dataset` file."""
    if request.samples is not None:
        return request.samples, []
    if request.dataset:
        from planner.dataset_stats import dataset_stats

        stats = dataset_stats(request.dataset)
        return stats.rows, [stats.summary()]
    return None, []


FIT_SUGGESTION = "or run `advisor plan ... --fit` to search for the fastest setup that fits"
"""The last suggestion of a plan that does not fit (the wizard names its own key for it)."""


def suggestions(
    spec: ModelSpec, request: PlanRequest, breakdown: MemoryBreakdown, capacity: float
) -> list[str]:
    """What a user could change: cheap memory savers first, when the plan does not fit or is
    tight; speed-ups when there is room."""
    out: list[str] = []
    peak = breakdown.peak
    fits = peak <= capacity
    comp = breakdown.components
    if not fits or peak > suggestion("tight_share") * capacity:
        if (
            not request.grad_checkpointing
            and comp["activations"] > suggestion("checkpointing_activation_share") * peak
        ):
            out.append("turn on gradient checkpointing (--grad-checkpointing)")
        if request.batch_size > 1:
            out.append(
                f"halve the micro-batch (--batch-size {request.batch_size // 2} "
                f"--grad-accum {request.grad_accum * 2}) to keep the effective batch"
            )
        if recipe(request.method).can_precompute_reference(request):
            out.append(
                "precompute reference log-probs (precompute_ref_log_probs) or use LoRA: "
                f"frees {_gib(comp['reference_model'])} GiB of reference model"
            )
        if request.tuning is Tuning.full:
            out.append("use LoRA (--tuning lora): no full-size gradients or optimizer states")
        elif (
            request.tuning is Tuning.lora
            and comp["weights"] > suggestion("qlora_weight_share") * peak
        ):
            out.append("use QLoRA (--tuning qlora): 4-bit base weights")
        if request.world_size == 1 and request.tuning is Tuning.full:
            out.append("shard over more GPUs (--num-gpus 4 --sharding zero3)")
        elif request.sharding in (Sharding.none, Sharding.ddp) and request.world_size > 1:
            out.append("shard model states (--sharding zero3 or fsdp)")
        if request.offload is Offload.none and request.sharding in (Sharding.zero2, Sharding.zero3):
            out.append("offload optimizer states to the CPU (--offload optimizer), slower")
        if not fits:
            out.append(FIT_SUGGESTION)
        elif out:
            out.insert(0, f"it fits with {1 - peak / capacity:.0%} headroom; for more room:")
    elif peak < suggestion("headroom_share") * capacity and request.grad_checkpointing:
        out.append(
            "plenty of headroom: --no-grad-checkpointing skips recomputing the forward pass in "
            "backward, so each step runs faster"
        )
    return out


def vllm_warnings(
    breakdown: MemoryBreakdown, capacity: float, generation: GenerationPlan | None
) -> list[str]:
    """What a vLLM engine that cannot work, or a colocated one that crowds out the training,
    means for the run."""
    if generation is None:
        return []
    out = [] if generation.fits else [generation.summary.removeprefix("Generation: ")]
    engine = breakdown.components["vllm_engine"]
    if engine and breakdown.peak > capacity >= breakdown.peak - engine:
        out.append(
            f"training alone would fit, but not in the {_gib(capacity - engine)} GiB the vLLM "
            "engine leaves: lower --vllm-memory, or use --generation vllm-server"
        )
    return out


def estimate(request: PlanRequest) -> Plan:
    """Memory per GPU, time per step and for the run, verdict and suggestions."""
    spec = resolve_model(request.model)
    return estimate_for(spec, resolve_gpu(request.gpu), request)


def _check_in_range(breakdown: MemoryBreakdown, step: StepTime) -> None:
    """InputError unless every quantity is a finite, non-negative number (a safety net: the
    request's and the config's bounds keep them so)."""
    numbers = [breakdown.peak, breakdown.tensor_peak, breakdown.cpu_offload, step.flops]
    numbers += [*breakdown.components.values(), *breakdown.phases.values(), *step.phases.values()]
    if step.seconds > 0 and step.tokens > 0 and all(math.isfinite(x) and x >= 0 for x in numbers):
        return
    raise InputError(
        "these settings are past what the planner can estimate (a number overflowed); "
        "use smaller sizes"
    )


def estimate_for(spec: ModelSpec, gpu: GpuSpec, request: PlanRequest) -> Plan:
    """The estimate for an already resolved model and GPU (the fit search calls this often)."""
    warnings = check_request(spec, gpu, request)
    request = normalised(request, gpu)
    traced = None
    if spec.estimate_path == "traced":
        from planner.general import traced_memory, traced_suggestions  # torch: general path

        traced = traced_memory(spec, request)
        memory_estimate = traced.breakdown
    else:
        memory_estimate = estimate_memory(spec, request, gpu.memory_bytes)
    # Measured runs correct the runtime overhead only, never the tensor-level estimate.
    breakdown, calibration = calibrated(memory_estimate, gpu.name, request)
    generation = generation_plan(spec, gpu, request)
    step = estimate_time(spec, request, gpu, generation)
    _check_in_range(breakdown, step)
    samples, data_notes = total_samples(request)
    total_steps = total_hours = None
    if samples is not None:
        total_steps = max(1, math.ceil(samples * request.epochs / samples_per_step(request)))
        # Four significant digits, not three decimals: a 2-second run is not 0 hours.
        total_hours = float(f"{total_steps * step.seconds / 3600:.4g}")
    capacity = gpu.memory_bytes
    advice = suggestions(spec, request, breakdown, capacity)
    held = precision_plan(request)
    fits = breakdown.peak <= capacity and (generation is None or generation.fits)
    warnings += vllm_warnings(breakdown, capacity, generation)
    memory = MemoryEstimate(
        per_gpu_peak_gib=_gib(breakdown.peak),
        tensor_peak_gib=_gib(breakdown.tensor_peak),
        components_gib={name: _gib(breakdown.components[name]) for name in COMPONENTS},
        live_at_peak=[*breakdown.live_at_peak, "runtime_overhead"],
        peak_phase=breakdown.peak_phase,
        phases_gib={name: _gib(value) for name, value in breakdown.phases.items()},
        capacity_gib=_gib(capacity),
        headroom_gib=_gib(capacity - breakdown.peak),
        cpu_offload_gib=_gib(breakdown.cpu_offload),
        calibration=calibration,
    )
    time = TimeEstimate(
        step_seconds=round(step.seconds, 3),
        tokens_per_second=round(step.tokens / step.seconds, 1),
        total_hours=total_hours,
        total_steps=total_steps,
        samples=samples,
        flops_per_step=step.flops,
        mfu=mfu(request),
        phases_seconds={name: round(value, 3) for name, value in step.phases.items()},
    )
    return Plan(
        model=ModelSummary(
            name=spec.name,
            params=parameters.count_params(spec),
            trainable_params=(
                traced.trainable_params if traced else parameters.trainable_params(spec, request)
            ),
            source=spec.source,
            representative_of=spec.representative_of,
            model_type=spec.model_type,
            estimate_path=spec.estimate_path,
            trace_seconds=traced.seconds if traced else None,
            notes=spec.notes,
        ),
        method=request.method,
        tuning=request.tuning,
        gpu=GpuSummary(
            name=gpu.name,
            memory_gib=gpu.memory_gib,
            count=request.world_size + request.vllm_server_gpu_count,
            per_node=request.num_gpus,
            nodes=request.nodes,
            vllm_server=request.vllm_server_gpu_count,
        ),
        request=request,
        precision=held,
        memory=memory,
        time=time,
        generation=generation,
        fits=fits,
        suggestions=(traced_suggestions(advice) if traced else advice),
        warnings=warnings,
        assumptions=held.notes + breakdown.notes + data_notes,
    )
