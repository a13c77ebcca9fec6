"""The result of a traced step, what can be traced, and ``trace_step`` itself."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from pydantic import BaseModel, Field

from planner.architectures import architecture
from planner.errors import InputError
from planner.precision import load_dtype
from planner.specs import Method, Offload, Optimizer, PlanRequest, Sharding, Tuning
from planner.trace.build import Setup, build
from planner.trace.steps import STEPS
from planner.trace.steps.common import Step
from planner.trace.tracker import run_step

TRACED_METHODS: tuple[Method, ...] = tuple(STEPS)
"""Methods whose step ``trace_step`` runs (those with a loss step in ``planner.trace.steps``);
ppo/grpo/rloo (generation) stay analytic."""

CATEGORIES = (
    "params",
    "adapters",
    "reference_model",
    "buffers",
    "grads",
    "activations",
    "temporaries",
    "optimizer",
    "other",
)
"""Byte categories of a trace. MemTracker's own (params, buffers, grads, activations,
temporaries, optimizer, other) with its parameter bytes split three ways: ``params`` is the
trained model's own weights (for LoRA the frozen base), ``adapters`` what peft adds (LoRA A/B,
``modules_to_save`` copies), ``reference_model`` a separate frozen reference's weights.
``other`` holds the batch's input tensors."""

PHASES = (
    "kl_forward",
    "forward",
    "loss",
    "reference_forward",
    "backward",
    "optimizer_step",
)
"""Parts of the step, in the order TRL 1.12 runs them (KTO's no-grad KL pass first; DPO and KTO
run the reference after the policy forward). ``loss`` is everything done with the policy's
logits: log-probs, the loss and the no-grad metrics (entropy, token accuracy, mean logits).
``reference_forward`` includes the reference's log-probs; ``optimizer_step`` includes gradient
clipping and ``zero_grad``."""

_NOT_TRACED = (
    "--trace covers sft, dpo, kto, orpo, simpo and reward; ppo/grpo/rloo are estimated analytically"
)


class TraceResult(BaseModel):
    """Tensor bytes of one traced training step (no CUDA context, allocator slack or workspaces)."""

    peak_bytes: int = Field(description="total tensor bytes at the step's peak")
    peak_phase: str = Field(description="the phase of the step where the peak falls")
    at_peak_bytes: dict[str, int] = Field(
        description="bytes per category at the moment of the peak"
    )
    max_bytes: dict[str, int] = Field(description="each category's own maximum over the step")
    phase_peaks: dict[str, int] = Field(description="peak total bytes within each phase")
    seconds: float = Field(description="wall time of the trace")
    model_params: int = Field(
        default=0, description="parameters of the trained model (no adapters)"
    )
    trainable_params: int = Field(default=0, description="parameters the optimizer updates")
    reference_params: int = Field(default=0, description="parameters of a separate reference model")
    weight_dtype: str = Field(default="", description="dtype the model's weights are loaded in")
    attention: str = Field(default="", description="attention implementation traced")
    notes: list[str] = Field(default_factory=list, description="what this trace assumed")

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30


# --------------------------------------------------------------------------- validation


def check_traceable(request: PlanRequest) -> None:
    """Raise InputError when ``trace_step`` cannot trace this request (before importing torch)."""
    if request.method not in TRACED_METHODS:
        raise InputError(_NOT_TRACED)
    if request.tuning is Tuning.qlora:
        raise InputError(
            "--trace does not support qlora: bitsandbytes 4-bit layers cannot run on fake CPU "
            "tensors; trace --tuning lora for the same adapters, or drop --trace"
        )
    if request.optimizer in (Optimizer.adamw8bit, Optimizer.paged_adamw8bit):
        raise InputError(
            f"--trace does not support --optimizer {request.optimizer.value}: 8-bit optimizers "
            "(bitsandbytes) cannot run on fake CPU tensors; trace with --optimizer adamw, or drop --trace"
        )
    if request.sharding not in (Sharding.none, Sharding.ddp):
        raise InputError(
            f"--trace traces one unsharded GPU; --sharding {request.sharding.value} is estimated "
            "analytically (drop --trace)"
        )
    if request.offload is not Offload.none:
        raise InputError("--trace does not model CPU offload; drop --trace or --offload")


# --------------------------------------------------------------------------- the trace


def trace_step(request: PlanRequest, hf_config: dict[str, Any]) -> TraceResult:
    """Trace one training step of ``request`` on the architecture of ``hf_config`` (a config.json).

    Raises InputError for what cannot be traced: qlora, 8-bit optimizers, ppo/grpo/rloo,
    sharded or offloaded plans, and architectures that do not run on fake tensors.
    """
    return _trace(request, hf_config, fake=True)


def _trace(
    request: PlanRequest,
    hf_config: dict[str, Any],
    fake: bool = True,
    step: Callable[[Step], Any] | None = None,
) -> TraceResult:
    """``trace_step``; ``fake=False`` runs the same step on real CPU tensors and ``step``
    replaces the method's step function (both only to check the emulation against TRL)."""
    check_traceable(request)
    model_type = hf_config.get("model_type")
    if architecture(model_type).is_moe and load_dtype(request) != "bfloat16":
        # torch's grouped_mm (transformers 5.24's default experts) takes bf16 only, on a GPU too.
        raise InputError(
            f"--trace: {model_type}'s experts run as torch grouped_mm, which takes bf16 only, and "
            f"this plan loads {load_dtype(request)} weights, so the step fails (as a real run "
            "would); trace --precision bf16-true, or LoRA over a bf16 base"
        )
    start = time.perf_counter()

    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        FakeTensorMode,
        UnsupportedOperatorException,
    )

    fake_failures = (
        DataDependentOutputException,
        DynamicOutputShapeException,
        UnsupportedOperatorException,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fake_mode = FakeTensorMode() if fake else None
        try:
            with fake_mode if fake_mode is not None else nullcontext():
                setup = build(request, hf_config, fake_mode)
                tracker = run_step(setup, step or STEPS[request.method])
        except InputError:
            raise
        except fake_failures as exc:
            raise InputError(
                f"--trace cannot run {model_type or 'this model'} on fake tensors "
                f"({type(exc).__name__}: data-dependent shapes, e.g. MoE routing); drop --trace"
            ) from exc
        except (RuntimeError, NotImplementedError) as exc:
            # An operator with no fake-tensor (meta) implementation for this architecture.
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(
                f"--trace cannot run {model_type or 'this model'} on fake tensors "
                f"({type(exc).__name__}: {first_line[:160]}); drop --trace"
            ) from exc
    return _result(setup, tracker, time.perf_counter() - start)


def _result(setup: Setup, tracker: Any, seconds: float) -> TraceResult:
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, _MemRefType

    names = {
        _MemRefType.PARAM: "params",
        _MemRefType.BUFFER: "buffers",
        _MemRefType.GRAD: "grads",
        _MemRefType.ACT: "activations",
        _MemRefType.TEMP: "temporaries",
        _MemRefType.OPT: "optimizer",
        _MemRefType.OTH: "other",
    }

    def split(by_type: dict[Any, int]) -> dict[str, int]:
        out = dict.fromkeys(CATEGORIES, 0)
        for key, value in by_type.items():
            if key in names:
                out[names[key]] += value
        # Parameters are never freed during the step, so the split is exact at any moment.
        out["adapters"] = setup.adapter_bytes
        out["reference_model"] = setup.reference_bytes
        out["params"] -= setup.adapter_bytes + setup.reference_bytes
        return out

    peak_snap = next(iter(tracker._peak_mem_snap.values()), {})
    phase_peaks = {p: tracker.phase_peaks[p] for p in PHASES if p in tracker.phase_peaks}
    return TraceResult(
        peak_bytes=int(peak_snap.get(_TOTAL_KEY, 0)),
        peak_phase=tracker.peak_phase,
        at_peak_bytes=split(peak_snap),
        max_bytes=split(tracker.max_by_type),
        phase_peaks=phase_peaks,
        seconds=round(seconds, 3),
        model_params=setup.model_params,
        trainable_params=sum(p.numel() for p in setup.trainable),
        reference_params=setup.reference_params,
        weight_dtype=str(setup.weight_dtype).removeprefix("torch."),
        attention=setup.attention,
        notes=setup.notes,
    )
